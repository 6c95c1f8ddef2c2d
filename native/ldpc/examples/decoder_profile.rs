//! Decoder profiling and regression digest:
//! `cargo run --release -p qkd-ldpc --example decoder_profile -- <qber> <frame_bits> <frames> [f] [threads|w8|w16|w32|w64]`
//!
//! Prints throughput (wall and per CPU-second), mean iterations, FER, and an FNV-1a digest over
//! every frame's corrected bits, fill guess, iteration count and convergence flag. The digest is
//! what "bit-identical" means for a decoder change: the same inputs must give the same digest
//! before and after (frames are generated from a fixed seed). `w16` etc. decode on one thread
//! with that lane width (CPU profile without rayon); the default uses `decode_batch`.
//! Env: `MAXIT` (iteration budget, default 60), `REPS` (repeat the timed decode, default 1;
//! the median is printed), `PORTABLE=1` forces the portable kernel.
use qkd_ldpc::decoder::Kernel;
use qkd_ldpc::rng::Fnv64;
use qkd_ldpc::*;
use rand::{Rng, SeedableRng};

fn cpu_seconds() -> f64 {
    let st = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = st[st.rfind(')').unwrap() + 2..].split(' ').collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let q: f64 = a.get(1).map(|s| s.parse().unwrap()).unwrap_or(0.02);
    let nb: usize = a.get(2).map(|s| s.parse().unwrap()).unwrap_or(60000);
    let nf: usize = a.get(3).map(|s| s.parse().unwrap()).unwrap_or(128);
    let f: Option<f64> = a.get(4).and_then(|s| s.parse().ok()).filter(|&x: &f64| x > 0.0);
    let mode = a.get(5).cloned().unwrap_or_else(|| "threads".into());
    let max_iter: u32 = std::env::var("MAXIT").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let reps: usize = std::env::var("REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let kernel = if std::env::var("PORTABLE").is_ok() { Kernel::Portable } else { Kernel::Auto };
    let fp = choose(q, nb, f);
    let k = fp.key_bits();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED ^ nb as u64 ^ (q * 1e6) as u64);
    let (mut alice, mut bob, mut synd) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..nf {
        let mut x: Vec<u8> = (0..k.div_ceil(8)).map(|_| rng.gen()).collect();
        if !k.is_multiple_of(8) {
            *x.last_mut().unwrap() &= (1u8 << (k % 8)) - 1;
        }
        let fill: Vec<u8> = (0..fp.punctured.div_ceil(8)).map(|_| rng.gen()).collect();
        let s = encode(&fp, &x, &fill).unwrap();
        let mut y = x.clone();
        for i in 0..k {
            if rng.gen::<f64>() < q {
                y[i >> 3] ^= 1 << (i & 7);
            }
        }
        alice.push(x);
        bob.push(y);
        synd.push(s);
    }
    let frames: Vec<BobFrame> = (0..nf).map(|i| BobFrame { frame: &bob[i], syndrome: &synd[i], revealed: &[] }).collect();
    let _ = family::code(fp.code); // build outside the timing
    let opts = DecodeOptions { max_iter, kernel, stall: None };
    let run = || match mode.as_str() {
        "w8" => decode_batch_width::<8>(&fp, q, &frames, 0, opts),
        "w16" => decode_batch_width::<16>(&fp, q, &frames, 0, opts),
        "w32" => decode_batch_width::<32>(&fp, q, &frames, 0, opts),
        "w64" => decode_batch_width::<64>(&fp, q, &frames, 0, opts),
        _ => decode_batch(&fp, q, &frames, 0, opts),
    }
    .unwrap();
    let mut samples = Vec::new();
    let mut res = Vec::new();
    for _ in 0..reps {
        let (c0, t0) = (cpu_seconds(), std::time::Instant::now());
        res = run();
        samples.push((t0.elapsed().as_secs_f64(), cpu_seconds() - c0));
    }
    samples.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap());
    let (wall, cpu) = samples[samples.len() / 2];
    let cpu_min = samples.iter().map(|x| x.1).fold(f64::MAX, f64::min);
    let mut h = Fnv64::default();
    let (mut fails, mut iters) = (0usize, 0u64);
    for (i, r) in res.iter().enumerate() {
        for &b in r.corrected.iter().chain(r.fill_guess.iter()) {
            h.write_u32(b as u32);
        }
        h.write_u32(r.iterations);
        h.write_u32(r.converged as u32);
        iters += r.iterations as u64;
        if !r.converged || *r.corrected != alice[i] {
            fails += 1;
        }
    }
    let bits = (k * nf) as f64;
    println!(
        "q={q} k={k} code={:?} p={} s={} frames={nf} mode={mode} kernel={} FER={fails}/{nf} mean_iter={:.2} wall={wall:.3}s cpu={cpu:.2}s cpu_min={cpu_min:.2}s wall_Mbps={:.1} cpu_Mbps={:.1} digest={:016x}",
        fp.code,
        fp.punctured,
        fp.shortened,
        decoder::kernel_name(kernel),
        iters as f64 / nf as f64,
        bits / wall / 1e6,
        bits / cpu.max(1e-9) / 1e6,
        h.finish()
    );
}
