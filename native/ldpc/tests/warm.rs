//! Warm-started blind retries (`decode_batch_warm`): a retry resumes belief propagation from the
//! previous round's messages instead of starting from the channel values. Properties: with no
//! state it is `decode_batch` bit for bit; resumed frames give words that reproduce Alice's
//! syndrome and the revealed bits; both kernels resume identically (the grouped engine's message
//! layout round-trips through the canonical order); over many frames the leak is no worse than
//! cold retries, and frames both decode give Alice's key.
use qkd_ldpc::decoder::Kernel;
use qkd_ldpc::family::FrameParams;
use qkd_ldpc::*;

mod common;
use common::{make_frames, Frame};

/// Per frame: final result's (corrected, fill guess, converged, iterations of every round) and
/// the revealed count it converged at (None: still failing after `max_rounds`).
struct Run {
    corrected: Vec<Vec<u8>>,
    fill_guess: Vec<Vec<u8>>,
    revealed_at: Vec<Option<usize>>,
    iterations: Vec<Vec<u32>>,
}

/// The blind plan's loop, as the node runs it: every failing frame gets `step` more revealed
/// bits per round. `warm` resumes retries from the previous round's messages.
fn blind_run(fp: &FrameParams, q: f64, step: usize, fs: &[Frame], warm: bool, kernel: Kernel, max_rounds: usize) -> Run {
    let nf = fs.len();
    let mut run = Run { corrected: vec![vec![]; nf], fill_guess: vec![vec![]; nf], revealed_at: vec![None; nf], iterations: vec![vec![]; nf] };
    let mut states: Vec<Option<WarmState>> = (0..nf).map(|_| None).collect();
    let mut pending: Vec<usize> = (0..nf).collect();
    let opts = DecodeOptions { kernel, ..DecodeOptions::default() };
    for round in 0..=max_rounds {
        let count = round * step;
        if pending.is_empty() || count > fp.punctured + fp.key_bits() {
            break;
        }
        let revs: Vec<Vec<u8>> = pending.iter().map(|&i| reveal(fp, &fs[i].alice, &fs[i].fill, 0, count).unwrap()).collect();
        let bf: Vec<BobFrame> =
            pending.iter().zip(&revs).map(|(&i, r)| BobFrame { frame: &fs[i].bob, syndrome: &fs[i].synd, revealed: r }).collect();
        let res = if warm {
            let mut st: Vec<Option<WarmState>> = pending.iter().map(|&i| states[i].take()).collect();
            let r = decode_batch_warm(fp, q, &bf, count, opts, &mut st).unwrap();
            for (j, &i) in pending.iter().enumerate() {
                assert_eq!(st[j].is_some(), !r[j].converged, "a state is kept exactly for the frames that failed");
                states[i] = st[j].take();
            }
            r
        } else {
            decode_batch(fp, q, &bf, count, opts).unwrap()
        };
        let mut next = Vec::new();
        for (j, &i) in pending.iter().enumerate() {
            assert_eq!(res[j].leak_bits, fp.base_leak() + count, "the leak is the disclosed bits, warm or cold");
            run.iterations[i].push(res[j].iterations);
            run.corrected[i] = res[j].corrected.to_vec();
            run.fill_guess[i] = res[j].fill_guess.to_vec();
            if res[j].converged {
                run.revealed_at[i] = Some(count);
            } else {
                next.push(i);
            }
        }
        pending = next;
    }
    run
}

#[test]
fn without_states_warm_decoding_is_cold_decoding_bit_for_bit() {
    let plan = choose_blind(0.03, 14746);
    let fp = plan.params;
    let fs = make_frames(&fp, 0.03, 40, 71);
    for count in [0, plan.step_bits] {
        let revs: Vec<Vec<u8>> = fs.iter().map(|f| reveal(&fp, &f.alice, &f.fill, 0, count).unwrap()).collect();
        let bf: Vec<BobFrame> = fs.iter().zip(&revs).map(|(f, r)| BobFrame { frame: &f.bob, syndrome: &f.synd, revealed: r }).collect();
        for kernel in [Kernel::Auto, Kernel::Portable] {
            let opts = DecodeOptions { kernel, ..DecodeOptions::default() };
            let cold = decode_batch(&fp, 0.03, &bf, count, opts).unwrap();
            let mut st: Vec<Option<WarmState>> = (0..fs.len()).map(|_| None).collect();
            let warm = decode_batch_warm(&fp, 0.03, &bf, count, opts, &mut st).unwrap();
            for (a, b) in cold.iter().zip(&warm) {
                assert_eq!((&*a.corrected, &*a.fill_guess, a.converged, a.iterations), (&*b.corrected, &*b.fill_guess, b.converged, b.iterations));
            }
            assert!(count > 0 || cold.iter().any(|r| !r.converged), "the test needs failing frames");
        }
    }
}

#[test]
fn warm_retries_resume_identically_on_both_kernels() {
    // The grouped engine (AVX-512) and the serial one store messages in different layouts; the
    // saved state is canonical, so resumed decodes must agree bit for bit (on CPUs without
    // AVX-512 both runs use the serial engine and the test is weaker).
    let mut resumed_twice = 0;
    for (q, log2n, seed) in [(0.02, 14u32, 81u64), (0.05, 14, 82), (0.03, 12, 83)] {
        let n = 1usize << log2n;
        let plan = choose_blind(q, n - n / 10);
        let fs = make_frames(&plan.params, q, 24, seed);
        let a = blind_run(&plan.params, q, plan.step_bits, &fs, true, Kernel::Auto, 12);
        let b = blind_run(&plan.params, q, plan.step_bits, &fs, true, Kernel::Portable, 12);
        assert_eq!(a.iterations, b.iterations, "q={q}");
        assert_eq!(a.revealed_at, b.revealed_at, "q={q}");
        assert_eq!(a.corrected, b.corrected, "q={q}");
        resumed_twice += a.iterations.iter().filter(|it| it.len() > 2).count();
    }
    assert!(resumed_twice > 0, "the test needs frames resumed more than once");
}

#[test]
fn warm_retries_give_syndrome_words_and_no_worse_leak_than_cold() {
    // Over 2 × 64 frames: every warm result that converged reproduces Alice's syndrome with its
    // fill guess and the bits revealed to it (a valid word, whatever the decoder did), frames
    // that both runs decode give Alice's key, and the mean number of revealed bits per frame
    // (the leak above m − p) is no larger with warm retries than with cold ones.
    let (mut warm_rev, mut cold_rev, mut frames) = (0usize, 0usize, 0usize);
    for (q, seed) in [(0.02, 91u64), (0.05, 92)] {
        let plan = choose_blind(q, 14746);
        let fp = plan.params;
        let fs = make_frames(&fp, q, 64, seed);
        let warm = blind_run(&fp, q, plan.step_bits, &fs, true, Kernel::Auto, 40);
        let cold = blind_run(&fp, q, plan.step_bits, &fs, false, Kernel::Auto, 40);
        for (i, f) in fs.iter().enumerate() {
            let (Some(wc), Some(cc)) = (warm.revealed_at[i], cold.revealed_at[i]) else {
                panic!("q={q}: frame {i} still failing after 40 rounds (warm {:?}, cold {:?})", warm.revealed_at[i], cold.revealed_at[i]);
            };
            assert_eq!(encode(&fp, &warm.corrected[i], &warm.fill_guess[i]).unwrap(), f.synd, "q={q} frame {i}: not a word of the syndrome");
            assert_eq!(
                reveal(&fp, &warm.corrected[i], &warm.fill_guess[i], 0, wc).unwrap(),
                reveal(&fp, &f.alice, &f.fill, 0, wc).unwrap(),
                "q={q} frame {i}: disagrees with a revealed bit"
            );
            assert_eq!(warm.corrected[i], f.alice, "q={q} frame {i}: warm decoded another word");
            assert_eq!(cold.corrected[i], f.alice, "q={q} frame {i}: cold decoded another word");
            warm_rev += wc;
            cold_rev += cc;
            frames += 1;
        }
    }
    eprintln!("revealed bits per frame: warm {:.1}, cold {:.1} ({frames} frames)", warm_rev as f64 / frames as f64, cold_rev as f64 / frames as f64);
    assert!(warm_rev <= cold_rev, "warm retries revealed more on average: {warm_rev} vs {cold_rev} bits over {frames} frames");
}

#[test]
fn a_state_from_other_parameters_is_refused() {
    let plan = choose_blind(0.05, 3686);
    let fp = plan.params;
    let fs = make_frames(&fp, 0.2, 8, 5); // far above the code's capacity: every frame fails
    let bf: Vec<BobFrame> = fs.iter().map(|f| BobFrame { frame: &f.bob, syndrome: &f.synd, revealed: &[] }).collect();
    let mut st: Vec<Option<WarmState>> = (0..fs.len()).map(|_| None).collect();
    let r = decode_batch_warm(&fp, 0.05, &bf, 0, DecodeOptions::default(), &mut st).unwrap();
    assert!(r.iter().all(|r| !r.converged) && st.iter().all(|s| s.is_some()));
    let other = FrameParams { punctured: fp.punctured - 1, shortened: fp.shortened + 1, ..fp };
    let fs2 = make_frames(&other, 0.05, 8, 6);
    let bf2: Vec<BobFrame> = fs2.iter().map(|f| BobFrame { frame: &f.bob, syndrome: &f.synd, revealed: &[] }).collect();
    let e = decode_batch_warm(&other, 0.05, &bf2, 0, DecodeOptions::default(), &mut st).unwrap_err();
    assert_eq!(e.code, "LDPC_BAD_PARAMS");
    let e = decode_batch_warm(&fp, 0.05, &bf, 0, DecodeOptions::default(), &mut st[..3]).unwrap_err();
    assert_eq!(e.code, "LDPC_BAD_LENGTH");
}
