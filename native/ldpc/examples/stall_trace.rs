//! Trajectories of unsatisfied checks for designing `decoder::Stall`:
//! `stall_trace <qber> <log2n> <frames> [rounds]` runs the blind plan (`choose_blind`) for
//! `rounds` rounds (default 3) without a stall rule and prints, per decode, one line
//! `round frame converged iterations u0 u1 u2 …` (u_t = unsatisfied checks before iteration t).
use qkd_ldpc::decoder::{TRACE, TRACE_ON};
use qkd_ldpc::*;
#[path = "common/mod.rs"]
mod common;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let q: f64 = a[1].parse().unwrap();
    let log2n: u32 = a[2].parse().unwrap();
    let nf: usize = a[3].parse().unwrap();
    let rounds: usize = a.get(4).map(|s| s.parse().unwrap()).unwrap_or(3);
    let seed = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let n = 1usize << log2n;
    let b = choose_blind(q, n - n / 10);
    let fp = b.params;
    let f = common::make_frames(&fp, q, nf, seed);
    TRACE_ON.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut pending: Vec<usize> = (0..nf).collect();
    for round in 0..rounds {
        if pending.is_empty() {
            break;
        }
        let count = round * b.step_bits;
        let rev: Vec<Vec<u8>> =
            pending.iter().map(|&i| if count == 0 { vec![] } else { reveal(&fp, &f.alice[i], &f.fills[i], 0, count).unwrap() }).collect();
        let frames: Vec<BobFrame> =
            pending.iter().enumerate().map(|(j, &i)| BobFrame { frame: &f.bob[i], syndrome: &f.synd[i], revealed: &rev[j] }).collect();
        TRACE.lock().unwrap().clear();
        let stall = std::env::var("STALL").ok().map(|v| {
            let x: Vec<u32> = v.split(',').map(|t| t.parse().unwrap()).collect();
            qkd_ldpc::decoder::Stall { from: x[0], every: x[1], min_drop_per_mille: x[2] }
        });
        let res = decode_batch(&fp, q, &frames, count, DecodeOptions { stall, ..DecodeOptions::default() }).unwrap();
        let tr = TRACE.lock().unwrap().clone();
        let mut next = vec![];
        for (j, &i) in pending.iter().enumerate() {
            let mut u: Vec<(u32, u32)> = tr.iter().filter(|t| t.0 == j).map(|t| (t.1, t.2)).collect();
            u.sort();
            let us: Vec<String> = u.iter().map(|t| t.1.to_string()).collect();
            println!("{round} {i} {} {} {}", res[j].converged as u8, res[j].iterations, us.join(" "));
            if !res[j].converged {
                next.push(i);
            }
        }
        pending = next;
    }
}
