//! Bob's side of the node's reconciliation (src/node/postprocess.ts) without the node: blocks of
//! `frames` frames, each planned with `choose_blind` from a QBER estimate that drifts from block
//! to block (q·(1 + DRIFT·sin(1.7·b)), the channel stays q), a first pass, then blind retry rounds
//! with warm start, the stall rule and the node's rescue (1.5×QBER in rounds 4–7), up to 40
//! rounds; a frame still failing is discarded. Prints f (every disclosed bit of every frame, as
//! the ldpc bench counts it), first-pass and final FER, round trips, engine passes and their lane
//! occupancy, CPU seconds and Mbit of sifted key per CPU-second.
//! `node_path <qber> <blocks> [frames per block = 15]`.
//! Env: SEED, DRIFT (0.004), MAXROUNDS (40), STALL (20,10,100 | off), MAXIT (60),
//! MAXIT1 (first pass budget, default MAXIT), F0_PLUS (raise the first attempt's f by this much:
//! fewer punctured positions), RESCUE (node = the node's settings; none), VERBOSE=1 (per round).
use qkd_ldpc::decoder::{Stall, LANE_PASSES, PASSES};
use qkd_ldpc::family::FrameParams;
use qkd_ldpc::*;
use std::sync::atomic::Ordering::Relaxed;
#[path = "common/mod.rs"]
mod common;
use common::cpu;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let q: f64 = a[1].parse().unwrap();
    let blocks: usize = a[2].parse().unwrap();
    let per: usize = a.get(3).map(|s| s.parse().unwrap()).unwrap_or(15);
    let envf = |k: &str, d: f64| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    let envs = |k: &str| std::env::var(k).ok();
    let drift = envf("DRIFT", 0.004);
    let max_rounds = envf("MAXROUNDS", 40.0) as usize;
    let maxit = envf("MAXIT", 60.0) as u32;
    let maxit1 = envf("MAXIT1", maxit as f64) as u32;
    let f0_plus = envf("F0_PLUS", 0.0);
    let seed = envf("SEED", 1.0) as u64;
    let verbose = envs("VERBOSE").is_some();
    let rescue = envs("RESCUE").unwrap_or_else(|| "node".into());
    let parse_stall = |v: Option<String>, d: Option<Stall>| match v.as_deref() {
        None => d,
        Some("off") => None,
        Some(v) => {
            let x: Vec<u32> = v.split(',').map(|t| t.parse().unwrap()).collect();
            Some(Stall { from: x[0], every: x[1], min_drop_per_mille: x[2] })
        }
    };
    let stall = parse_stall(envs("STALL"), Some(Stall { from: 20, every: 10, min_drop_per_mille: 100 }));
    let stall_retry = parse_stall(envs("STALL_RETRY"), stall);
    let kbits = 235930usize;
    let hk = |qq: f64, k: usize| k as f64 * h2(qq);
    let (mut leak_all, mut frames_all, mut first_fail, mut final_fail, mut wrong, mut rt, mut rounds_all) = (0usize, 0usize, 0, 0, 0, 0usize, 0usize);
    let mut dec_cpu = 0.0;
    let mut dec_wall = 0.0;
    let mut kk = 0usize;
    let (p0, l0) = (PASSES.load(Relaxed), LANE_PASSES.load(Relaxed));
    let mut per_round: Vec<(usize, u64, u64)> = vec![(0, 0, 0); max_rounds + 1];
    for b in 0..blocks {
        let qp = q * (1.0 + drift * (1.7 * b as f64).sin());
        let plan = choose_blind(qp, kbits);
        let mut fp: FrameParams = plan.params;
        if f0_plus > 0.0 {
            let d = (f0_plus * hk(qp, fp.key_bits())).ceil() as usize;
            let d = d.min(fp.punctured);
            fp = FrameParams { code: fp.code, punctured: fp.punctured - d, shortened: fp.shortened + d };
        }
        let step = plan.step_bits;
        kk = fp.key_bits();
        let fr = common::make_frames(&fp, q, per, seed * 1_000_003 + b as u64);
        let mut states: Vec<Option<WarmState>> = (0..per).map(|_| None).collect();
        let mut leak = vec![fp.base_leak(); per];
        let mut pending: Vec<usize> = (0..per).collect();
        let c0 = cpu();
        let t0 = std::time::Instant::now();
        for round in 0..=max_rounds {
            if pending.is_empty() {
                break;
            }
            let count = round * step;
            if count > fp.punctured + fp.key_bits() {
                break;
            }
            let rev: Vec<Vec<u8>> = pending.iter().map(|&i| if count == 0 { vec![] } else { reveal(&fp, &fr.alice[i], &fr.fills[i], 0, count).unwrap() }).collect();
            let frames: Vec<BobFrame> = pending.iter().enumerate().map(|(j, &i)| BobFrame { frame: &fr.bob[i], syndrome: &fr.synd[i], revealed: &rev[j] }).collect();
            let qd = if rescue == "node" && (4..8).contains(&round) { (1.5 * qp).min(0.45) } else { qp };
            let opts = if round == 0 {
                DecodeOptions { max_iter: maxit1, stall, ..DecodeOptions::default() }
            } else {
                DecodeOptions { max_iter: maxit, stall: stall_retry, ..DecodeOptions::default() }
            };
            let mut st: Vec<Option<WarmState>> = pending.iter().map(|&i| states[i].take()).collect();
            let (pp, ll) = (PASSES.load(Relaxed), LANE_PASSES.load(Relaxed));
            let res = decode_batch_warm(&fp, qd, &frames, count, opts, &mut st).unwrap();
            let pr = &mut per_round[round];
            pr.0 += pending.len();
            pr.1 += PASSES.load(Relaxed) - pp;
            pr.2 += LANE_PASSES.load(Relaxed) - ll;
            if round > 0 {
                rt += pending.len();
            }
            rounds_all = rounds_all.max(round);
            let mut next = vec![];
            for ((j, &i), s) in pending.iter().enumerate().zip(st) {
                leak[i] = res[j].leak_bits;
                if res[j].converged {
                    if *res[j].corrected != fr.alice[i] {
                        wrong += 1;
                    }
                } else {
                    states[i] = s;
                    next.push(i);
                }
            }
            if round == 0 {
                first_fail += next.len();
            }
            pending = next;
        }
        dec_cpu += cpu() - c0;
        dec_wall += t0.elapsed().as_secs_f64();
        final_fail += pending.len();
        leak_all += leak.iter().sum::<usize>();
        frames_all += per;
    }
    let passes = PASSES.load(Relaxed) - p0;
    let lanes = LANE_PASSES.load(Relaxed) - l0;
    let f = leak_all as f64 / (frames_all as f64 * hk(q, kk));
    let mbit = (frames_all * kk) as f64 / 1e6;
    println!(
        "q={q} blocks={blocks}x{per} f={f:.4} FER1={first_fail}/{frames_all} final={final_fail} wrong={wrong} rt/frame={:.3} maxround={rounds_all} passes={passes} lane-occupancy={:.3} (of 8) passes/block={:.1} | decode cpu {dec_cpu:.2}s wall {dec_wall:.2}s -> {:.2} Mbit/CPU-s, {:.2} Mbit/s wall",
        rt as f64 / frames_all as f64,
        lanes as f64 / passes.max(1) as f64,
        passes as f64 / blocks as f64,
        mbit / dec_cpu,
        mbit / dec_wall
    );
    if verbose {
        for (r, x) in per_round.iter().enumerate().filter(|x| x.1 .0 > 0) {
            println!("  round {r}: frames {} passes {} lane-passes {} ({:.2} busy lanes per pass)", x.0, x.1, x.2, x.2 as f64 / x.1.max(1) as f64);
        }
    }
}
