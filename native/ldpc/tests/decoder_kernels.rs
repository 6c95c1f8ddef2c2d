//! The grouped AVX-512 engine (Kernel::Auto on a CPU with AVX-512BW) against the portable serial
//! engine: bit-identical corrected bits, fill guesses, iteration counts and convergence, at every
//! lane width (8, 16, 32, 64 lanes → 8, 4, 2, 1 checks per register), on frames that converge
//! and frames that fail, and with many positions revealed (frozen), which leaves checks with
//! 0, 1 or 2 swept edges and groups of very unequal degree (padding, masked chain restarts).
//! On a CPU without AVX-512 both runs take the same path and the test still checks determinism.
use qkd_ldpc::decoder::{kernel_name, Kernel, Stall};
use qkd_ldpc::family::FrameParams;
use qkd_ldpc::*;
use rand::{Rng, SeedableRng};

struct Frames {
    alice: Vec<Vec<u8>>,
    fill: Vec<Vec<u8>>,
    bob: Vec<Vec<u8>>,
    synd: Vec<Vec<u8>>,
}

fn make(fp: &FrameParams, q: f64, count: usize, seed: u64) -> Frames {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let k = fp.key_bits();
    let bits = |rng: &mut rand::rngs::StdRng, nb: usize| {
        let mut v: Vec<u8> = (0..nb.div_ceil(8)).map(|_| rng.gen()).collect();
        if !nb.is_multiple_of(8) {
            *v.last_mut().unwrap() &= (1u8 << (nb % 8)) - 1;
        }
        v
    };
    let mut f = Frames { alice: vec![], fill: vec![], bob: vec![], synd: vec![] };
    for _ in 0..count {
        let a = bits(&mut rng, k);
        let fill = bits(&mut rng, fp.punctured);
        let mut b = a.clone();
        for i in 0..k {
            if rng.gen::<f64>() < q {
                b[i >> 3] ^= 1 << (i & 7);
            }
        }
        f.synd.push(encode(fp, &a, &fill).unwrap());
        f.alice.push(a);
        f.fill.push(fill);
        f.bob.push(b);
    }
    f
}

fn decode_ws<const W: usize>(fp: &FrameParams, q: f64, fs: &Frames, revealed: &[Vec<u8>], count: usize, kernel: Kernel, stall: Option<Stall>) -> Vec<FrameResult> {
    let frames: Vec<BobFrame> = (0..fs.bob.len())
        .map(|i| BobFrame { frame: &fs.bob[i], syndrome: &fs.synd[i], revealed: &revealed[i] })
        .collect();
    decode_batch_width::<W>(fp, q, &frames, count, DecodeOptions { max_iter: 30, kernel, stall }).unwrap()
}

fn assert_same(a: &[FrameResult], b: &[FrameResult], what: &str) -> (usize, usize) {
    assert_eq!(a.len(), b.len());
    let mut conv = 0;
    for (x, y) in a.iter().zip(b.iter()) {
        assert_eq!(*x.corrected, *y.corrected, "{what}: corrected bits differ");
        assert_eq!(*x.fill_guess, *y.fill_guess, "{what}: fill guesses differ");
        assert_eq!((x.converged, x.iterations), (y.converged, y.iterations), "{what}: outcome differs");
        conv += usize::from(x.converged);
    }
    (conv, a.len() - conv)
}

fn compare_all_widths(fp: &FrameParams, q: f64, fs: &Frames, revealed: &[Vec<u8>], count: usize, what: &str) -> (usize, usize) {
    compare_all_widths_stall(fp, q, fs, revealed, count, what, None).0
}

/// As `compare_all_widths`, with a stall rule; also returns the portable results.
fn compare_all_widths_stall(fp: &FrameParams, q: f64, fs: &Frames, revealed: &[Vec<u8>], count: usize, what: &str, st: Option<Stall>) -> ((usize, usize), Vec<FrameResult>) {
    let p16 = decode_ws::<16>(fp, q, fs, revealed, count, Kernel::Portable, st);
    let mut tally = (0, 0);
    for (w, auto) in [
        (8, decode_ws::<8>(fp, q, fs, revealed, count, Kernel::Auto, st)),
        (16, decode_ws::<16>(fp, q, fs, revealed, count, Kernel::Auto, st)),
        (32, decode_ws::<32>(fp, q, fs, revealed, count, Kernel::Auto, st)),
        (64, decode_ws::<64>(fp, q, fs, revealed, count, Kernel::Auto, st)),
    ] {
        tally = assert_same(&auto, &p16, &format!("{what}, {} W={w} vs portable W=16", kernel_name(Kernel::Auto)));
    }
    (tally, p16)
}

#[test]
fn grouped_engine_matches_portable_on_converging_and_failing_frames() {
    let (mut conv, mut fail) = (0, 0);
    // (QBER, frame bits, efficiency): generous points converge, f ≈ 1.0 points fail.
    for (q, bits, f, seed) in [(0.02, 4000, 1.5, 1u64), (0.05, 4000, 1.0, 2), (0.08, 15000, 1.02, 3), (0.01, 15000, 1.3, 4)] {
        let fp = choose(q, bits, Some(f));
        let fs = make(&fp, q, 23, seed); // odd count: partly filled engines at every width
        let none = vec![Vec::new(); fs.bob.len()];
        let (c, x) = compare_all_widths(&fp, q, &fs, &none, 0, &format!("q={q} bits={bits} f={f}"));
        conv += c;
        fail += x;
    }
    assert!(conv >= 20 && fail >= 10, "need both outcomes to compare ({conv} converged, {fail} failed)");
}

#[test]
fn grouped_engine_matches_portable_with_most_positions_revealed() {
    let q = 0.05;
    let fp = choose(q, 4000, Some(1.0));
    let fs = make(&fp, q, 9, 7);
    // Reveal most of the frame: many checks keep 0, 1 or 2 unfrozen edges.
    for count in [fp.key_bits() / 3, fp.key_bits() * 9 / 10] {
        let revealed: Vec<Vec<u8>> = (0..fs.bob.len()).map(|i| reveal(&fp, &fs.alice[i], &fs.fill[i], 0, count).unwrap()).collect();
        let (conv, _) = compare_all_widths(&fp, q, &fs, &revealed, count, &format!("{count} revealed"));
        assert!(conv > 0);
    }
}

#[test]
fn grouped_engine_matches_portable_over_retry_rounds() {
    // A blind plan's rounds: each reveals a few more positions than the last, so the grouped
    // engine's schedule is derived from the previous round's (decoder_group `cached_schedule`)
    // instead of list-scheduled: the outputs must still be the serial engine's.
    let q = 0.05;
    let fp = choose(q, 15000, Some(1.0));
    let fs = make(&fp, q, 11, 12);
    let mut conv = 0;
    for count in [0usize, 40, 80, 120, 160] {
        let revealed: Vec<Vec<u8>> = (0..fs.bob.len()).map(|i| reveal(&fp, &fs.alice[i], &fs.fill[i], 0, count).unwrap()).collect();
        conv += compare_all_widths(&fp, q, &fs, &revealed, count, &format!("round with {count} revealed")).0;
    }
    assert!(conv < 5 * fs.bob.len(), "some frames must fail (and run the whole budget)");
}

#[test]
fn grouped_engine_matches_portable_with_the_stall_rule() {
    // The stall rule (the node's retries use it) stops a lane by its own iteration count and
    // unsatisfied checks, whatever the engine and lane width: the same frames stop at the same
    // iterations. A strict rule (from 6, every 3, ≥ 10 % fewer) stops many.
    let q = 0.05;
    let fp = choose(q, 15000, Some(1.02));
    let fs = make(&fp, q, 23, 13);
    let none = vec![Vec::new(); fs.bob.len()];
    let st = Some(Stall { from: 6, every: 3, min_drop_per_mille: 100 });
    let (_, p16) = compare_all_widths_stall(&fp, q, &fs, &none, 0, "stall rule", st);
    let stopped = p16.iter().filter(|r| !r.converged && r.iterations < 30).count();
    assert!(stopped >= 3, "only {stopped} frames stopped early: the test would not see the probes");
}

#[test]
fn grouped_engine_is_deterministic_across_batches() {
    // The same frame decoded alone and among others (different lanes, refills) gives the same result.
    let q = 0.03;
    let fp = choose(q, 15000, Some(1.1));
    let fs = make(&fp, q, 37, 9);
    let none = vec![Vec::new(); fs.bob.len()];
    let all = decode_ws::<16>(&fp, q, &fs, &none, 0, Kernel::Auto, None);
    for i in [0usize, 17, 36] {
        let one = Frames { alice: vec![fs.alice[i].clone()], fill: vec![fs.fill[i].clone()], bob: vec![fs.bob[i].clone()], synd: vec![fs.synd[i].clone()] };
        let r = decode_ws::<8>(&fp, q, &one, &none[..1], 0, Kernel::Auto, None);
        assert_same(&r, &all[i..i + 1], "alone vs batch");
    }
}

#[test]
fn table_and_arithmetic_box_plus_agree() {
    // On a CPU with AVX-512 VBMI the grouped engine looks the box-plus correction up in a table;
    // the hook forces the arithmetic form, whose bits must be the same (on other CPUs both runs
    // take the same path). Frames that converge and frames that fail.
    use std::sync::atomic::Ordering::Relaxed;
    for (q, bits, f, seed) in [(0.02, 15000, 1.15, 11u64), (0.05, 4000, 1.0, 12)] {
        let fp = choose(q, bits, Some(f));
        let fs = make(&fp, q, 19, seed);
        let none = vec![Vec::new(); fs.bob.len()];
        let table = decode_ws::<16>(&fp, q, &fs, &none, 0, Kernel::Auto, None);
        qkd_ldpc::decoder::NO_VBMI.store(true, Relaxed);
        let arith = decode_ws::<16>(&fp, q, &fs, &none, 0, Kernel::Auto, None);
        let arith8 = decode_ws::<8>(&fp, q, &fs, &none, 0, Kernel::Auto, None);
        qkd_ldpc::decoder::NO_VBMI.store(false, Relaxed);
        assert_same(&table, &arith, "VBMI table vs arithmetic box-plus, W=16");
        assert_same(&table, &arith8, "VBMI table vs arithmetic box-plus, W=8");
    }
}
