//! Property and differential tests: fast decoder vs the f64 sum-product reference, portable vs
//! SIMD kernel, batch independence, leak accounting, blind retries, edge cases.
use qkd_ldpc::decoder::Kernel;
use qkd_ldpc::family::{self, CodeId, FrameParams};
use qkd_ldpc::*;

mod common;
use common::{make_frames, Frame};

fn bob_frames(fs: &[Frame]) -> Vec<BobFrame<'_>> {
    fs.iter().map(|f| BobFrame { frame: &f.bob, syndrome: &f.synd, revealed: &[] }).collect()
}

/// Slow obvious syndrome: full word from key + fill, then H·x row by row.
fn slow_syndrome(fp: &FrameParams, key: &[u8], fill: &[u8]) -> Vec<u8> {
    let code = family::code(fp.code);
    let lay = family::layout(&code, fp.punctured, fp.shortened).unwrap();
    let mut w = vec![0u8; code.n];
    for (i, &v) in lay.key_pos.iter().enumerate() {
        w[v as usize] = get_bit(key, i);
    }
    for (j, &v) in lay.punct_pos.iter().enumerate() {
        w[v as usize] = get_bit(fill, j);
    }
    pack_bits(code.syndrome_unpacked(&w).into_iter(), code.m)
}

#[test]
fn encode_matches_slow_syndrome() {
    for (q, seed) in [(0.01, 1u64), (0.05, 2), (0.1, 3)] {
        let fp = choose(q, 4000, None);
        for f in make_frames(&fp, q, 3, seed) {
            assert_eq!(f.synd, slow_syndrome(&fp, &f.alice, &f.fill));
        }
    }
}

#[test]
fn fast_agrees_with_reference_and_outputs_satisfy_syndrome() {
    // Several QBERs with generous efficiency so most frames are decodable by both.
    let mut both_ok = 0;
    for (q, seed) in [(0.01, 11u64), (0.02, 12), (0.03, 13), (0.05, 14), (0.08, 15)] {
        let fp = choose(q, 4000, Some(1.6));
        let fs = make_frames(&fp, q, 6, seed);
        let fast = decode_batch(&fp, q, &bob_frames(&fs), 0, DecodeOptions::default()).unwrap();
        for (f, r) in fs.iter().zip(fast.iter()) {
            let bf = BobFrame { frame: &f.bob, syndrome: &f.synd, revealed: &[] };
            let rf = decode_reference_frame(&fp, q, &bf, 0, 60).unwrap();
            if r.converged {
                // Converged means: Bob's word reproduces Alice's syndrome.
                assert_eq!(slow_syndrome(&fp, &r.corrected, &r.fill_guess), f.synd);
            }
            if rf.converged {
                assert_eq!(slow_syndrome(&fp, &rf.corrected, &rf.fill_guess), f.synd);
            }
            if r.converged && rf.converged {
                assert_eq!(*r.corrected, *rf.corrected, "fast and reference disagree at q={q}");
                assert_eq!(*r.corrected, f.alice);
                both_ok += 1;
            }
            assert_eq!(r.leak_bits, fp.syndrome_bits() - fp.punctured);
        }
    }
    assert!(both_ok >= 25, "too few decodable frames ({both_ok}/30): the comparison proves nothing");
}

#[test]
fn portable_and_simd_kernels_are_bit_identical() {
    // Include failing frames (high QBER, tight f) so best guesses are compared too.
    for (q, f, seed) in [(0.03, 1.5, 21u64), (0.06, 1.02, 22)] {
        let fp = choose(q, 4000, Some(f));
        let fs = make_frames(&fp, q, 20, seed);
        let a = decode_batch(&fp, q, &bob_frames(&fs), 0, DecodeOptions { max_iter: 40, kernel: Kernel::Auto, stall: None }).unwrap();
        let b = decode_batch(&fp, q, &bob_frames(&fs), 0, DecodeOptions { max_iter: 40, kernel: Kernel::Portable, stall: None }).unwrap();
        for (x, y) in a.iter().zip(b.iter()) {
            assert_eq!(*x.corrected, *y.corrected);
            assert_eq!((x.converged, x.iterations), (y.converged, y.iterations));
        }
    }
}

#[test]
fn a_frame_result_does_not_depend_on_its_batch() {
    let q = 0.04;
    let fp = choose(q, 4000, Some(1.15));
    let fs = make_frames(&fp, q, 70, 31);
    let batch = decode_batch_width::<64>(&fp, q, &bob_frames(&fs), 0, DecodeOptions::default()).unwrap();
    // 16 lanes for 70 frames: most frames enter a lane refilled after another frame finished.
    let refilled = decode_batch_width::<16>(&fp, q, &bob_frames(&fs), 0, DecodeOptions::default()).unwrap();
    for (a, b) in batch.iter().zip(refilled.iter()) {
        assert_eq!(*a.corrected, *b.corrected);
        assert_eq!((a.converged, a.iterations), (b.converged, b.iterations));
    }
    let mut conv = 0;
    for (i, f) in fs.iter().enumerate().step_by(7) {
        let alone = decode_batch_width::<8>(&fp, q, &bob_frames(std::slice::from_ref(f)), 0, DecodeOptions::default()).unwrap();
        assert_eq!(*alone[0].corrected, *batch[i].corrected);
        assert_eq!((alone[0].converged, alone[0].iterations), (batch[i].converged, batch[i].iterations));
        conv += usize::from(batch[i].converged);
    }
    let _ = conv;
}

#[test]
fn decode_batch_results_do_not_depend_on_its_engine_count() {
    // decode_batch runs one engine below 32 frames (refilling its lanes) and one per thread
    // from there: a frame's result is the same as decoded on its own engine, either way.
    let q = 0.04;
    let fp = choose(q, 4000, Some(1.12));
    let fs = make_frames(&fp, q, 40, 77);
    for nf in [3usize, 15, 31, 40] {
        let part = &fs[..nf];
        let batch = decode_batch(&fp, q, &bob_frames(part), 0, DecodeOptions::default()).unwrap();
        let one = decode_batch_width::<8>(&fp, q, &bob_frames(part), 0, DecodeOptions::default()).unwrap();
        assert!(batch.iter().any(|r| !r.converged) && batch.iter().any(|r| r.converged) || nf < 15, "{nf} frames: the test needs converging and failing frames");
        for (i, (a, b)) in batch.iter().zip(one.iter()).enumerate() {
            assert_eq!(*a.corrected, *b.corrected, "{nf} frames, frame {i}");
            assert_eq!((a.converged, a.iterations), (b.converged, b.iterations), "{nf} frames, frame {i}");
        }
    }
}

#[test]
fn edge_cases_zero_errors_all_ones_odd_lengths() {
    for n in [4000usize, 15000] {
        let fp = choose(0.02, n, None);
        let k = fp.key_bits();
        assert!(k % 8 != 0, "the shipped key lengths are odd-sized; this test relies on it");
        let mut ones = vec![0xffu8; k.div_ceil(8)];
        *ones.last_mut().unwrap() &= (1u8 << (k % 8)) - 1;
        let zeros = vec![0u8; k.div_ceil(8)];
        let fill = vec![0u8; fp.punctured.div_ceil(8)];
        for key in [&zeros, &ones] {
            let s = encode(&fp, key, &fill).unwrap();
            let r = decode_batch(&fp, 0.02, &[BobFrame { frame: key, syndrome: &s, revealed: &[] }], 0, DecodeOptions::default())
                .unwrap();
            assert!(r[0].converged);
            assert_eq!(*r[0].corrected, *key);
        }
        // Zero errors: converged within a couple of iterations (punctured bits are erasures
        // recovered by their private check) and no change to Bob's bits.
        let fs = make_frames(&fp, 0.0, 3, 41);
        let r = decode_batch(&fp, 0.02, &bob_frames(&fs), 0, DecodeOptions::default()).unwrap();
        for (f, x) in fs.iter().zip(r.iter()) {
            assert!(x.converged && x.iterations <= 2);
            assert_eq!(*x.corrected, f.alice);
        }
        // Garbage in the unused high bits of the last byte is ignored.
        let mut dirty = fs[0].bob.clone();
        *dirty.last_mut().unwrap() |= !((1u8 << (k % 8)) - 1);
        let r = decode_batch(&fp, 0.02, &[BobFrame { frame: &dirty, syndrome: &fs[0].synd, revealed: &[] }], 0, DecodeOptions::default())
            .unwrap();
        assert_eq!(*r[0].corrected, fs[0].alice);
    }
}

#[test]
fn blind_retries_reveal_bits_and_count_them() {
    let q = 0.05;
    // Deliberately too little redundancy so the first attempt fails.
    let fp = choose(q, 4000, Some(1.0));
    let fs = make_frames(&fp, q, 8, 51);
    let first = decode_batch(&fp, q, &bob_frames(&fs), 0, DecodeOptions::default()).unwrap();
    let failed: Vec<usize> = (0..fs.len()).filter(|&i| !first[i].converged).collect();
    assert!(!failed.is_empty(), "expected failures at f = 1.0");
    let step = fp.key_bits() / 50;
    for &i in &failed {
        let f = &fs[i];
        let mut r_count = 0;
        let mut done = false;
        while r_count + step <= fp.key_bits() {
            r_count += step;
            let rev = reveal(&fp, &f.alice, &f.fill, 0, r_count).unwrap();
            let r = decode_batch(&fp, q, &[BobFrame { frame: &f.bob, syndrome: &f.synd, revealed: &rev }], r_count, DecodeOptions::default())
                .unwrap();
            assert_eq!(r[0].leak_bits, fp.syndrome_bits() - fp.punctured + r_count);
            if r[0].converged {
                assert_eq!(*r[0].corrected, f.alice);
                done = true;
                break;
            }
        }
        assert!(done, "blind retries never converged");
    }
}

#[test]
fn choose_tracks_qber_and_leak_meets_target() {
    let mut last = 0;
    for q in [0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.11] {
        let fp = choose(q, 60000, Some(1.1));
        let target = (1.1 * fp.key_bits() as f64 * h2(q)).ceil() as usize;
        assert!(fp.base_leak() >= target, "leak below the target at q={q}");
        assert!(fp.base_leak() >= last, "leak not monotone in QBER");
        assert_eq!(fp.punctured + fp.shortened, fp.d());
        last = fp.base_leak();
    }
}

#[test]
fn choose_blind_starts_at_the_schedule_and_leaves_punctured_headroom() {
    for log2n in [12u32, 14, 16] {
        let n = 1usize << log2n;
        let k = n - n / 10;
        let mut last = 0;
        for q in [0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.065, 0.08, 0.11] {
            let plan = choose_blind(q, k);
            let fp = plan.params;
            assert_eq!(fp.code.log2n, log2n);
            assert!(family::check_params(&fp).is_ok());
            let hk = k as f64 * h2(q);
            let s = family::blind_schedule(q, log2n);
            // The first attempt leaks at least f0·k·h(Q) and (when the code can puncture enough)
            // no more than one bit over it.
            let t0 = (s.first_efficiency * hk).ceil() as usize;
            let c = family::code(fp.code);
            if c.m < t0 {
                // Even the lowest-rate mother cannot reach f0 (2^12 at QBER 11 %): no puncturing,
                // the retries reveal key bits.
                assert_eq!((fp.code.rate_permille, fp.punctured), (family::RATES_PERMILLE[0], 0));
                continue;
            }
            assert!(fp.base_leak() >= t0, "q={q} 2^{log2n}: leak {} below f0 target {t0}", fp.base_leak());
            if fp.punctured < c.punct_order.len().min(fp.d()) {
                assert_eq!(fp.base_leak(), t0);
            }
            assert!((plan.first_efficiency - fp.base_leak() as f64 / hk).abs() < 1e-12);
            // The mother covers the headroom with punctured fill, unless it is the lowest rate.
            if fp.code.rate_permille != family::RATES_PERMILLE[0] {
                assert!(c.m as f64 >= (s.first_efficiency + s.headroom) * hk);
            }
            assert_eq!(plan.step_bits, (s.step * hk).ceil() as usize);
            assert!(plan.step_bits >= 1 && s.step > 0.0 && s.headroom >= s.step);
            assert!(fp.base_leak() >= last, "first leak not monotone in QBER");
            last = fp.base_leak();
        }
    }
}

#[test]
fn blind_plan_reconciles_every_frame_and_counts_each_round() {
    // The shipped plan on short frames: a failing frame gets step_bits more revealed bits per
    // round until it converges to Alice's key; leak = m − p + rounds·step exactly.
    for (q, seed) in [(0.02, 61u64), (0.05, 62)] {
        let plan = choose_blind(q, 14746);
        let fp = plan.params;
        let fs = make_frames(&fp, q, 24, seed);
        let mut count = 0;
        let mut pending: Vec<usize> = (0..fs.len()).collect();
        let mut retried = 0;
        while !pending.is_empty() {
            assert!(count <= 40 * plan.step_bits, "q={q}: frames still failing after 40 rounds");
            let revs: Vec<Vec<u8>> = pending.iter().map(|&i| reveal(&fp, &fs[i].alice, &fs[i].fill, 0, count).unwrap()).collect();
            let bf: Vec<BobFrame> = pending
                .iter()
                .zip(&revs)
                .map(|(&i, r)| BobFrame { frame: &fs[i].bob, syndrome: &fs[i].synd, revealed: r })
                .collect();
            let res = decode_batch(&fp, q, &bf, count, DecodeOptions::default()).unwrap();
            let mut next = Vec::new();
            for (j, &i) in pending.iter().enumerate() {
                assert_eq!(res[j].leak_bits, fp.base_leak() + count);
                if res[j].converged {
                    assert_eq!(*res[j].corrected, fs[i].alice);
                } else {
                    next.push(i);
                }
            }
            if count > 0 {
                retried += pending.len();
            }
            pending = next;
            count += plan.step_bits;
        }
        assert!(retried <= 24 * 40);
    }
}

#[test]
fn bad_inputs_are_errors_with_codes() {
    let fp = choose(0.02, 4000, None);
    let e = encode(&fp, &[0u8; 3], &vec![0u8; fp.punctured.div_ceil(8)]).unwrap_err();
    assert_eq!(e.code, "LDPC_BAD_LENGTH");
    let bad = FrameParams { code: CodeId { log2n: 13, rate_permille: 800 }, punctured: 0, shortened: 0 };
    assert_eq!(encode(&bad, &[], &[]).unwrap_err().code, "LDPC_BAD_PARAMS");
    let split = FrameParams { punctured: fp.punctured + 1, ..fp };
    assert_eq!(encode(&split, &[], &[]).unwrap_err().code, "LDPC_BAD_PARAMS");
    let z = vec![0u8; fp.key_bits().div_ceil(8)];
    let s = vec![0u8; fp.syndrome_bits().div_ceil(8)];
    let e = decode_batch(&fp, 0.0, &[BobFrame { frame: &z, syndrome: &s, revealed: &[] }], 0, DecodeOptions::default()).unwrap_err();
    assert_eq!(e.code, "LDPC_BAD_QBER");
}

/// Every shipped rate gets a normalised λ on degrees ≥ 2 whose λ2 respects the BSC stability cap
/// of `lambda_for_rate`; rates ≥ 0.80 take the `DE_DESIGNS` row with the largest design rate ≤ R
/// (proportional to it), lower rates a Table I row; and the constructed 2^12 codes have the
/// designed check-degree concentration (⌊E/m⌋ or ⌈E/m⌉) and no double edges.
#[test]
fn degree_distributions_follow_their_source_rows() {
    for &r in family::RATES_PERMILLE.iter() {
        let rate = r as f64 / 1000.0;
        let lam = family::lambda_for_rate(rate);
        let sum: f64 = lam.iter().map(|x| x.1).sum();
        assert!((sum - 1.0).abs() < 1e-9 && lam.iter().all(|&(d, l)| d >= 2 && l >= 0.0), "rate {rate}");
        let q = family::h2_inv(1.0 - rate);
        let avg_v = 1.0 / lam.iter().map(|&(d, l)| l / d as f64).sum::<f64>();
        let dc = avg_v / (1.0 - rate);
        let l2 = lam.iter().find(|x| x.0 == 2).map_or(0.0, |x| x.1);
        let stab = l2 * (dc - 1.0) * 2.0 * (q * (1.0 - q)).sqrt();
        assert!(stab <= 0.9 + 1e-4, "stability at rate {rate}: {stab}"); // 4-step fixed point of the cap
        let design = family::DE_DESIGNS.iter().find(|d| d.0 <= rate + 1e-9);
        if rate >= 0.8 - 1e-9 {
            let row = design.expect("a design row for every rate >= 0.80").2;
            let t: f64 = row.iter().map(|x| x.1).sum();
            for (&(d, l), &(d0, l0)) in lam.iter().zip(row) {
                assert_eq!(d, d0);
                if d > 3 {
                    assert!((l - l0 / t).abs() < 1e-12, "rate {rate} degree {d}");
                }
            }
        } else {
            assert!(design.is_none());
        }
        let c = family::code(CodeId { log2n: 12, rate_permille: r });
        let e = c.edges();
        for ch in 0..c.m {
            let d = c.row(ch).len();
            assert!(d + 1 >= e / c.m && d <= e.div_ceil(c.m) + 1, "check degree {d} vs E/m = {}", e as f64 / c.m as f64);
        }
    }
}
