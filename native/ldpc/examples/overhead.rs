//! Fixed cost of one `decode_batch` call (layout, schedule, buffers) on frames that converge at
//! iteration 0: `overhead <qber> <log2n> <frames> [revealed]`.
use qkd_ldpc::*;
#[path = "common/mod.rs"]
mod common;
use common::cpu;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let q: f64 = a[1].parse().unwrap();
    let log2n: u32 = a[2].parse().unwrap();
    let nf: usize = a[3].parse().unwrap();
    let count: usize = a.get(4).map(|s| s.parse().unwrap()).unwrap_or(0);
    let n = 1usize << log2n;
    let b = choose_blind(q, n - n / 10);
    let fp = b.params;
    let f = common::make_frames(&fp, 0.0, nf, 1);
    let rev: Vec<Vec<u8>> = (0..nf).map(|i| if count == 0 { vec![] } else { reveal(&fp, &f.alice[i], &f.fills[i], 0, count).unwrap() }).collect();
    let frames: Vec<BobFrame> = (0..nf).map(|i| BobFrame { frame: &f.alice[i], syndrome: &f.synd[i], revealed: &rev[i] }).collect();
    decode_batch(&fp, q, &frames, count, DecodeOptions::default()).unwrap();
    for _ in 0..3 {
        let (c0, t0) = (cpu(), std::time::Instant::now());
        let r = decode_batch(&fp, q, &frames, count, DecodeOptions::default()).unwrap();
        println!("{nf} frames, revealed {count}: wall {:.1} ms cpu {:.1} ms, it {}", t0.elapsed().as_secs_f64() * 1e3, (cpu() - c0) * 1e3, r[0].iterations);
    }
}
