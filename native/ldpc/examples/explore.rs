//! Degree-distribution exploration: `explore <rate> <log2n> <frames> <lambda: d:l,d:l,...> <q...>`
//! FER of the fast decoder on the mother code (no puncturing/shortening), all-zero codeword.
use qkd_ldpc::code::{construct, CodeSpec};
use qkd_ldpc::decoder::{decode_lanes, Kernel, LaneBatch};
use rand::{Rng, SeedableRng};
use zeroize::Zeroizing;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let rate: f64 = a[1].parse().unwrap();
    let n = 1usize << a[2].parse::<u32>().unwrap();
    let nf: usize = a[3].parse().unwrap();
    let lambda: Vec<(usize, f64)> = if a[4] == "auto" { qkd_ldpc::family::lambda_for_rate(rate) } else {
        a[4].split(',').map(|t| { let mut it = t.split(':'); (it.next().unwrap().parse().unwrap(), it.next().unwrap().parse().unwrap()) }).collect() };
    let s: f64 = lambda.iter().map(|x| x.1).sum();
    let lambda: Vec<(usize, f64)> = lambda.into_iter().map(|(d, l)| (d, l / s)).collect();
    let m = ((1.0 - rate) * n as f64).round() as usize;
    let code = construct(&CodeSpec { n, m, lambda, seed: 99, d: 0 });
    println!("4cyc {} maxdc {}", code.four_cycles_accepted, code.max_check_degree);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for qs in &a[5..] {
        let q: f64 = qs.parse().unwrap();
        let ch = qkd_ldpc::quantised_llr(q);
        let mut fails = 0; let mut iters = 0;
        for _ in 0..nf / 64 {
            let mut llr = Zeroizing::new(vec![[ch; 64]; n]);
            let mut synd = Zeroizing::new(vec![[0i8; 64]; m]);
            // random error e; syndrome = H e (Alice's word all zero, Bob = e): same as general case.
            let mut e = vec![[0u8; 64]; n];
            for v in 0..n { for k in 0..64 { if rng.gen::<f64>() < q { e[v][k] = 1; llr[v][k] = -ch; } } }
            for c in 0..m { for &v in code.row(c) { for k in 0..64 { synd[c][k] ^= -(e[v as usize][k] as i8); } } }
            // Alice's word x = 0 => syndrome 0; Bob y = e. Use syndrome 0 (x = 0):
            for c in 0..m { synd[c] = [0; 64]; }
            let t0 = std::time::Instant::now();
            let d = decode_lanes::<64>(&code, LaneBatch { llr, frozen: vec![false; n], synd, active: 64 }, 60, if std::env::var("PORT").is_ok() { Kernel::Portable } else { Kernel::Auto });
            if std::env::var("REF").is_ok() {
                let mut rf = 0;
                for k in 0..8 {
                    let llrf: Vec<f64> = (0..n).map(|v| if e[v][k] == 1 { -((1.0-q)/q).ln() } else { ((1.0-q)/q).ln() }).collect();
                    let r = qkd_ldpc::reference::decode_reference(&code, &llrf, &vec![0u8; m], 60);
                    if !(r.converged && r.bits.iter().all(|&b| b == 0)) { rf += 1; }
                }
                println!("  reference BP fails {rf}/8");
            }
            let it_max = (0..64).map(|k| d.outcome[k].iterations).max().unwrap();
            eprintln!("  group: {:.1} ms, {} iters, {:.1} ns/edge-iter", t0.elapsed().as_secs_f64()*1e3, it_max, t0.elapsed().as_secs_f64()*1e9/(it_max as f64 * code.edges() as f64));
            for k in 0..64 { let ok = d.outcome[k].converged && (0..n).all(|v| d.bits[v][k] == 0); if !ok { fails += 1; } iters += d.outcome[k].iterations; }
        }
        let f = (1.0 - rate) / qkd_ldpc::h2(q);
        println!("q={q} f={f:.3} FER={fails}/{} avg_iter={:.1}", nf / 64 * 64, iters as f64 / (nf / 64 * 64) as f64);
    }
}
