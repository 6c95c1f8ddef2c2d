//! Blind reconciliation simulator (Martinez-Mateo, Elkouss, Martin 2012):
//! `blind <qber> <log2n> <frames> <f_start> <step_f> [rate‰]`, or
//! `blind <qber> <log2n> <frames> plan` for the shipped plan (`choose_blind`),
//! starts every frame at leak ≈ f_start·k·h(Q) and, while a frame fails, reveals
//! ⌈step_f·k·h(Q)⌉ more bits (punctured fill first). Prints mean f over frames (every disclosed
//! bit counted), first-pass FER, final FER, rounds, and the histogram of rounds needed.
//! Env: MAXIT (iteration budget, default 60), MAXROUNDS (default 40), SEED, FAMILY (qc|random,
//! with `plan`), WARM=1 (retries resume from the previous round's messages), STALL (STALL_RETRY:
//! another rule for the retry rounds); a rate‰ of 1000 + r names the QC code of rate r.
use qkd_ldpc::family::{code, CodeId, FrameParams};
use qkd_ldpc::*;
#[path = "common/mod.rs"]
mod common;
use common::cpu;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let q: f64 = a[1].parse().unwrap();
    let log2n: u32 = a[2].parse().unwrap();
    let nf: usize = a[3].parse().unwrap();
    // FAMILY=qc|random picks the plan's code family (default: `choose_blind`'s choice).
    let kbits = (1usize << log2n) - (1usize << log2n) / 10;
    let plan = (a[4] == "plan").then(|| match std::env::var("FAMILY").ok().as_deref() {
        Some("qc") => qkd_ldpc::family::choose_blind_in(q, kbits, qkd_ldpc::family::Family::Qc),
        Some("random") => qkd_ldpc::family::choose_blind_in(q, kbits, qkd_ldpc::family::Family::Random),
        _ => choose_blind(q, kbits),
    });
    let f0: f64 = plan.map(|p| p.first_efficiency).unwrap_or_else(|| a[4].parse().unwrap());
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    let maxit = env("MAXIT", 60) as u32;
    let max_rounds = env("MAXROUNDS", 40) as usize;
    let n = 1usize << log2n;
    let k = n - n / 10;
    let fp = match a.get(6) {
        _ if plan.is_some() => plan.unwrap().params,
        Some(r) => {
            let id = CodeId { log2n, rate_permille: r.parse().unwrap() };
            let c = code(id);
            let target = (f0 * k as f64 * h2(q)).ceil() as usize;
            let p = c.m.saturating_sub(target).min(c.punct_order.len()).min(c.spec.d);
            FrameParams { code: id, punctured: p, shortened: c.spec.d - p }
        }
        None => choose(q, k, Some(f0)),
    };
    let step = match plan {
        Some(p) => p.step_bits,
        None => (a[5].parse::<f64>().unwrap() * k as f64 * h2(q)).ceil() as usize,
    };
    let common::Frames { alice, fills, bob, synd } = common::make_frames(&fp, q, nf, env("SEED", 1));
    // STALL=from,every,drop‰ sets the early give-up rule (`decoder::Stall`); STALL=off disables it.
    let stall = match std::env::var("STALL").ok().as_deref() {
        None => DecodeOptions::default().stall,
        Some("off") => None,
        Some(v) => {
            let x: Vec<u32> = v.split(',').map(|t| t.parse().unwrap()).collect();
            Some(qkd_ldpc::decoder::Stall { from: x[0], every: x[1], min_drop_per_mille: x[2] })
        }
    };
    let opts = DecodeOptions { max_iter: maxit, stall, ..DecodeOptions::default() };
    // STALL_RETRY=from,every,drop‰ (or off): another rule for the retry rounds (default: STALL's).
    let retry_opts = match std::env::var("STALL_RETRY").ok().as_deref() {
        None => opts,
        Some("off") => DecodeOptions { stall: None, ..opts },
        Some(v) => {
            let x: Vec<u32> = v.split(',').map(|t| t.parse().unwrap()).collect();
            DecodeOptions { stall: Some(qkd_ldpc::decoder::Stall { from: x[0], every: x[1], min_drop_per_mille: x[2] }), ..opts }
        }
    };
    let c0 = cpu();
    let t0 = std::time::Instant::now();
    let mut leak = vec![fp.base_leak(); nf];
    let mut rounds_needed = vec![0usize; nf];
    let mut pending: Vec<usize> = (0..nf).collect();
    // WARM=1: retries resume belief propagation from the previous round (`decode_batch_warm`).
    let warm = std::env::var("WARM").map(|v| v == "1").unwrap_or(false);
    let mut states: Vec<Option<WarmState>> = (0..nf).map(|_| None).collect();
    let mut wrong = 0usize;
    let mut first_fail = 0usize;
    let mut iters_first = 0u64;
    let mut round_its: Vec<(usize, u64, u64)> = Vec::new();
    let mut round_ms: Vec<u64> = Vec::new();
    for round in 0..=max_rounds {
        let count = round * step;
        if count > fp.punctured + fp.key_bits() || pending.is_empty() {
            break;
        }
        let rev: Vec<Vec<u8>> =
            pending.iter().map(|&i| if count == 0 { vec![] } else { reveal(&fp, &alice[i], &fills[i], 0, count).unwrap() }).collect();
        let frames: Vec<BobFrame> =
            pending.iter().enumerate().map(|(j, &i)| BobFrame { frame: &bob[i], syndrome: &synd[i], revealed: &rev[j] }).collect();
        let tr = std::time::Instant::now();
        let opts = if round == 0 { opts } else { retry_opts };
        let res = if warm {
            let mut st: Vec<Option<WarmState>> = pending.iter().map(|&i| states[i].take()).collect();
            let r = decode_batch_warm(&fp, q, &frames, count, opts, &mut st).unwrap();
            for (&i, s) in pending.iter().zip(st) {
                states[i] = s;
            }
            r
        } else {
            decode_batch(&fp, q, &frames, count, opts).unwrap()
        };
        round_ms.push(tr.elapsed().as_millis() as u64);
        let mut next = Vec::new();
        let it_round: u64 = res.iter().map(|r| r.iterations as u64).sum();
        let it_fail: u64 = res.iter().filter(|r| !r.converged).map(|r| r.iterations as u64).sum();
        round_its.push((pending.len(), it_round, it_fail));
        for (j, &i) in pending.iter().enumerate() {
            leak[i] = res[j].leak_bits;
            if round == 0 {
                iters_first += res[j].iterations as u64;
            }
            if res[j].converged {
                rounds_needed[i] = round;
                if *res[j].corrected != alice[i] {
                    wrong += 1;
                }
            } else {
                next.push(i);
            }
        }
        if round == 0 {
            first_fail = next.len();
        }
        pending = next;
    }
    if std::env::var("PROBE").is_ok() {
        // Frames still failing: retry at the last revealed count with 10× the iterations, and
        // with the f64 reference decoder, to tell slow convergence from a decoder fault.
        let count = (max_rounds * step).min(fp.punctured + fp.key_bits());
        for &i in &pending {
            let rev = reveal(&fp, &alice[i], &fills[i], 0, count).unwrap();
            let bf = BobFrame { frame: &bob[i], syndrome: &synd[i], revealed: &rev };
            let long = decode_batch(&fp, q, std::slice::from_ref(&bf), count, DecodeOptions { max_iter: 10 * maxit, ..opts }).unwrap();
            let bf0 = BobFrame { frame: &bob[i], syndrome: &synd[i], revealed: &[] };
            let none = decode_batch(&fp, q, std::slice::from_ref(&bf0), 0, opts).unwrap();
            let r = decode_reference_frame(&fp, q, &bf, count, maxit).unwrap();
            let alt: Vec<String> = [0.7, 0.85, 1.2, 1.5]
                .iter()
                .map(|m| {
                    let x = decode_batch(&fp, q * m, std::slice::from_ref(&bf), count, opts).unwrap();
                    format!("q×{m}: {}", x[0].converged && *x[0].corrected == alice[i])
                })
                .collect();
            println!("  other channel LLRs: {alt:?}");
            let errs: u32 = bob[i].iter().zip(&alice[i]).map(|(a, b)| (a ^ b).count_ones()).sum();
            println!(
                "stuck frame {i}: errors {errs}; revealed {count}: fast x10 iterations converged={} it={}, reference converged={} correct={}; no reveals: converged={}",
                long[0].converged, long[0].iterations, r.converged, *r.corrected == alice[i], none[0].converged
            );
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    let total: u64 = round_its.iter().map(|r| r.1).sum();
    let failed: u64 = round_its.iter().map(|r| r.2).sum();
    println!(
        "frame-iterations per frame {:.1} (in decodes that failed: {:.1}); per round (frames, iterations, of which failing): {:?}",
        total as f64 / nf as f64,
        failed as f64 / nf as f64,
        round_its
    );
    println!("decode wall ms per round: {round_ms:?}");
    let dcpu = cpu() - c0;
    let hk = k as f64 * h2(q);
    let fmean = leak.iter().sum::<usize>() as f64 / (nf as f64 * hk);
    let mut hist = std::collections::BTreeMap::new();
    for (i, &r) in rounds_needed.iter().enumerate() {
        if !pending.contains(&i) {
            *hist.entry(r).or_insert(0usize) += 1;
        }
    }
    let rt: usize = rounds_needed.iter().sum::<usize>() + pending.len() * max_rounds;
    println!(
        "q={q} n=2^{log2n} rate={} p={} s={} f0={:.4} step={step}({:.4}) maxit={maxit} | f={:.4} FER1={}/{nf} final={} wrong={wrong} rt/frame={:.2} it1={:.1} | hist {:?} | cpu {:.1}s wall {:.1}s",
        fp.code.rate_permille,
        fp.punctured,
        fp.shortened,
        fp.base_leak() as f64 / hk,
        step as f64 / hk,
        fmean,
        first_fail,
        pending.len(),
        rt as f64 / nf as f64,
        iters_first as f64 / nf as f64,
        hist,
        dcpu,
        dt
    );
}
