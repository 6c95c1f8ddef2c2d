//! Quick simulation: `cargo run --release -p qkd-ldpc --example sim -- <qber> <frame_bits> <frames> [f]`
//! prints FER, efficiency and decode throughput of the fast decoder.
use qkd_ldpc::*;
#[path = "common/mod.rs"]
mod common;
use common::cpu;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let q: f64 = a.get(1).map(|s| s.parse().unwrap()).unwrap_or(0.02);
    let nb: usize = a.get(2).map(|s| s.parse().unwrap()).unwrap_or(60000);
    let nf: usize = a.get(3).map(|s| s.parse().unwrap()).unwrap_or(128);
    let f: Option<f64> = a.get(4).map(|s| s.parse().unwrap());
    let fp = choose(q, nb, f);
    let k = fp.key_bits();
    let common::Frames { alice, bob, synd, .. } = common::make_frames(&fp, q, nf, 1);
    let frames: Vec<BobFrame> = (0..nf).map(|i| BobFrame { frame: &bob[i], syndrome: &synd[i], revealed: &[] }).collect();
    let _ = family::code(fp.code);
    let c0 = cpu();
    let t0 = std::time::Instant::now();
    let mi: u32 = std::env::var("MAXIT").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let res = decode_batch(&fp, q, &frames, 0, DecodeOptions { max_iter: mi, ..DecodeOptions::default() }).unwrap();
    let dt = t0.elapsed().as_secs_f64();
    let dcpu = cpu() - c0;
    println!("cpu {:.2}s => {:.1} Mbit/s per CPU-second", dcpu, (k * nf) as f64 / dcpu / 1e6);
    let mut fails = 0;
    let mut wrong_conv = 0;
    let mut iters = 0u64;
    for (i, r) in res.iter().enumerate() {
        if !r.converged || *r.corrected != alice[i] {
            fails += 1;
            if r.converged { wrong_conv += 1;
                let dist: u32 = r.corrected.iter().zip(alice[i].iter()).map(|(a,b)| (a^b).count_ones()).sum();
                let errs: u32 = bob[i].iter().zip(alice[i].iter()).map(|(a,b)| (a^b).count_ones()).sum();
                let c = family::code(fp.code);
                eprintln!("wrong: dist {dist} errs {errs} 4cyc {} n {} maxdc {}", c.four_cycles_accepted, c.n, c.max_check_degree);
            }
        }
        iters += r.iterations as u64;
    }
    let leak = res[0].leak_bits as f64;
    if let Ok(nr) = std::env::var("REF") {
        let nr: usize = nr.parse().unwrap();
        let mut rf = 0; let mut fastf = 0;
        for i in 0..nr.min(nf) {
            let r = decode_reference_frame(&fp, q, &frames[i], 0, 60).unwrap();
            if !r.converged || *r.corrected != alice[i] { rf += 1; }
            if !res[i].converged || *res[i].corrected != alice[i] { fastf += 1; }
        }
        println!("reference FER {rf}/{nr}, fast on same {fastf}/{nr}");
    }
    println!(
        "q={q} code={:?} p={} s={} k={k} leak={leak} f={:.4} FER={}/{} wrongconv={} avg_iter={:.1} time={:.3}s thr={:.1} Mbit/s kernel={}",
        fp.code, fp.punctured, fp.shortened, leak / (k as f64 * h2(q)), fails, nf, wrong_conv, iters as f64 / nf as f64, dt,
        (k * nf) as f64 / dt / 1e6, decoder::kernel_name(decoder::Kernel::Auto)
    );
}
