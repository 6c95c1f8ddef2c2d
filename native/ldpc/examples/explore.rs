//! Degree-distribution exploration on a mother code (no puncturing/shortening):
//! `explore <rate> <log2n> <frames> <lambda d:l,d:l,...|auto> <q...>` prints the fast decoder's FER.
use qkd_ldpc::code::{construct, CodeSpec};
use qkd_ldpc::decoder::{decode_frames, FrameSource, Kernel, LaneOutcome};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Src {
    errs: Vec<Vec<u8>>,
    frozen: Vec<bool>,
    ch: i8,
    m: usize,
    fails: AtomicUsize,
    iters: AtomicUsize,
}
impl FrameSource for Src {
    fn frames(&self) -> usize {
        self.errs.len()
    }
    fn init(&self, i: usize, llr: &mut [i8], synd: &mut [i8]) {
        // Alice's word 0 (syndrome 0), Bob's word = error pattern.
        for (v, l) in llr.iter_mut().enumerate() {
            *l = if self.frozen[v] {
                127 // shortened: known to Bob
            } else if self.errs[i][v] == 1 {
                -self.ch
            } else {
                self.ch
            };
        }
        synd[..self.m].fill(0);
    }
    fn emit(&self, _i: usize, bits: &[u8], o: LaneOutcome) {
        if !(o.converged && bits.iter().all(|&b| b == 0)) {
            self.fails.fetch_add(1, Ordering::Relaxed);
        }
        self.iters.fetch_add(o.iterations as usize, Ordering::Relaxed);
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let rate: f64 = a[1].parse().unwrap();
    let n = 1usize << a[2].parse::<u32>().unwrap();
    let nf: usize = a[3].parse().unwrap();
    let lambda: Vec<(usize, f64)> = if a[4] == "auto" {
        qkd_ldpc::family::lambda_for_rate(rate)
    } else {
        a[4].split(',').map(|t| {
            let mut it = t.split(':');
            (it.next().unwrap().parse().unwrap(), it.next().unwrap().parse().unwrap())
        }).collect()
    };
    let s: f64 = lambda.iter().map(|x| x.1).sum();
    let lambda: Vec<(usize, f64)> = lambda.into_iter().map(|(d, l)| (d, l / s)).collect();
    let m = ((1.0 - rate) * n as f64).round() as usize;
    let code = construct(&CodeSpec { n, m, lambda, seed: 99, d: 0 });
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let maxit: u32 = std::env::var("MAXIT").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let mut line = format!("4cyc {} maxdc {} |", code.four_cycles_accepted, code.max_check_degree);
    // SHORT=σ: a seeded random fraction σ of the positions is shortened (frozen, known to Bob), as
    // the rate adaptation does with s ≈ d = n/10; f is then (1 − R)/((1 − σ)·h(q)).
    let sigma: f64 = std::env::var("SHORT").ok().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let mut frozen = vec![false; n];
    let mut perm: Vec<usize> = (0..n).collect();
    rand::seq::SliceRandom::shuffle(&mut perm[..], &mut rand::rngs::StdRng::seed_from_u64(11));
    for &v in &perm[..(sigma * n as f64).round() as usize] {
        frozen[v] = true;
    }
    for qs in &a[5..] {
        let q: f64 = qs.parse().unwrap();
        let errs: Vec<Vec<u8>> =
            (0..nf).map(|_| (0..n).map(|v| u8::from(!frozen[v] && rng.gen::<f64>() < q)).collect()).collect();
        let src = Src { errs, frozen: frozen.clone(), ch: qkd_ldpc::quantised_llr(q), m, fails: AtomicUsize::new(0), iters: AtomicUsize::new(0) };
        std::thread::scope(|sc| {
            let h = sc.spawn(|| decode_frames::<16>(&code, &frozen, &src, 0..nf / 2, maxit, Kernel::Auto));
            decode_frames::<16>(&code, &frozen, &src, nf / 2..nf, maxit, Kernel::Auto);
            h.join().unwrap();
        });
        let nref: usize = std::env::var("REF").ok().and_then(|s| s.parse().ok()).unwrap_or(0).min(nf);
        let ref_fails = AtomicUsize::new(0);
        if nref > 0 {
            // The f64 sum-product reference on the first `nref` frames (code quality without the
            // min-sum loss).
            std::thread::scope(|sc| {
                for t in 0..2 {
                    let (src, code, ref_fails) = (&src, &code, &ref_fails);
                    sc.spawn(move || {
                        for i in (t..nref).step_by(2) {
                            let ch = ((1.0 - q) / q).ln();
                            let llr: Vec<f64> = src.errs[i]
                                .iter()
                                .zip(&src.frozen)
                                .map(|(&e, &z)| if z { 40.0 } else if e == 1 { -ch } else { ch })
                                .collect();
                            let o = qkd_ldpc::reference::decode_reference(code, &llr, &vec![0u8; m], 100);
                            if !(o.converged && o.bits.iter().all(|&b| b == 0)) {
                                ref_fails.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
        }
        let f = (1.0 - rate) / ((1.0 - sigma) * qkd_ldpc::h2(q));
        if nref > 0 {
            line += &format!(" refBP FER={}/{nref}", ref_fails.load(Ordering::Relaxed));
        }
        line += &format!(" q={q} f={f:.3} FER={}/{nf} it={:.1} |", src.fails.load(Ordering::Relaxed), src.iters.load(Ordering::Relaxed) as f64 / nf as f64);
    }
    println!("{line}");
}
