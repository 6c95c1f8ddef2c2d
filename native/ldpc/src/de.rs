//! Discretised density evolution of belief propagation on a protograph over the BSC (Richardson,
//! Urbanke, "The capacity of low-density parity-check codes under message-passing decoding",
//! IEEE Trans. IT 47(2), 2001; the quantised check rule of Chung, Forney, Richardson, Urbanke,
//! "On the design of LDPC codes within 0.0045 dB of the Shannon limit", IEEE Comm. Letters 5(2),
//! 2001; per protograph edge as in Liva, Chiani, "Protograph LDPC codes design based on EXIT
//! analysis", GLOBECOM 2007, with exact densities instead of EXIT curves).
//!
//! Messages are LLR densities on the grid {i·δ : |i| ≤ N}, δ = L_ch / `CH_STEPS` so the channel
//! LLR L_ch = ln((1 − p)/p) sits on the grid exactly; the variable rule is a convolution (saturated
//! at ±N·δ), the check rule the pairwise box-plus 2·atanh(tanh(a/2)·tanh(b/2)) rounded to the grid.
//! All-zero word sent (symmetry). Used to check the thresholds of candidate protographs
//! (`examples/de_threshold.rs`) and, as a known answer, the (3,6)-regular ensemble (≈ 0.084).

/// Grid steps per channel LLR.
pub const CH_STEPS: usize = 40;
/// Largest LLR magnitude on the grid, in nats.
pub const LLR_MAX: f64 = 25.0;

/// A protograph: `mult[c][v]` parallel edges between check c and variable v; punctured variables
/// receive no channel value.
#[derive(Clone, Debug)]
pub struct Protograph {
    pub mult: Vec<Vec<u8>>,
    pub punctured: Vec<bool>,
}

impl Protograph {
    pub fn new(mult: Vec<Vec<u8>>) -> Protograph {
        let nv = mult[0].len();
        Protograph { mult, punctured: vec![false; nv] }
    }
    /// Design rate (n_b − m_b) / (n_b − punctured), as transmitted.
    pub fn rate(&self) -> f64 {
        let nv = self.mult[0].len();
        let np = self.punctured.iter().filter(|&&p| p).count();
        (nv - self.mult.len()) as f64 / (nv - np) as f64
    }
}

/// Rounding errors in the total mass would grow by the degree product at every iteration.
fn normalise(mut d: Vec<f64>) -> Vec<f64> {
    let s: f64 = d.iter().sum();
    d.iter_mut().for_each(|x| *x /= s);
    d
}

struct Grid {
    n: usize,
    delta: f64,
    /// Box-plus of bins i and j (both in 0..2N+1) → bin.
    table: Vec<u16>,
}

impl Grid {
    fn new(p: f64) -> Grid {
        let lch = ((1.0 - p) / p).ln();
        let delta = lch / CH_STEPS as f64;
        let n = (LLR_MAX / delta).ceil() as usize;
        let w = 2 * n + 1;
        let th: Vec<f64> = (0..w).map(|i| (((i as f64 - n as f64) * delta) / 2.0).tanh()).collect();
        let mut table = vec![0u16; w * w];
        for i in 0..w {
            for j in 0..w {
                let t = (th[i] * th[j]).clamp(-1.0 + 1e-16, 1.0 - 1e-16);
                let v = 2.0 * t.atanh();
                let k = (v / delta).round().clamp(-(n as f64), n as f64) as isize + n as isize;
                table[i * w + j] = k as u16;
            }
        }
        Grid { n, delta, table }
    }
    fn width(&self) -> usize {
        2 * self.n + 1
    }
    fn conv(&self, a: &[f64], b: &[f64]) -> Vec<f64> {
        let (w, n) = (self.width(), self.n as isize);
        let mut out = vec![0.0; w];
        for (i, &pa) in a.iter().enumerate() {
            if pa < 1e-300 {
                continue;
            }
            for (j, &pb) in b.iter().enumerate() {
                if pb < 1e-300 {
                    continue;
                }
                let k = (i as isize + j as isize - 2 * n).clamp(-n, n) + n;
                out[k as usize] += pa * pb;
            }
        }
        normalise(out)
    }
    fn boxplus(&self, a: &[f64], b: &[f64]) -> Vec<f64> {
        let w = self.width();
        let mut out = vec![0.0; w];
        for (i, &pa) in a.iter().enumerate() {
            if pa < 1e-300 {
                continue;
            }
            let row = &self.table[i * w..(i + 1) * w];
            for (j, &pb) in b.iter().enumerate() {
                if pb < 1e-300 {
                    continue;
                }
                out[row[j] as usize] += pa * pb;
            }
        }
        normalise(out)
    }
    fn point(&self, bin: isize) -> Vec<f64> {
        let mut d = vec![0.0; self.width()];
        d[(bin + self.n as isize) as usize] = 1.0;
        d
    }
}

/// Outcome of one density-evolution run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeRun {
    pub converged: bool,
    pub iterations: usize,
    /// Largest bit error probability of an unpunctured variable at the end.
    pub error: f64,
}

/// Runs density evolution at crossover p until every unpunctured variable's error probability is
/// below `target`, or it stops falling (a fixed point), or `max_iter`.
pub fn run(pg: &Protograph, p: f64, max_iter: usize, target: f64) -> DeRun {
    let g = Grid::new(p);
    let (mb, nb) = (pg.mult.len(), pg.mult[0].len());
    let ch: Vec<Vec<f64>> = (0..nb)
        .map(|v| {
            if pg.punctured[v] {
                g.point(0)
            } else {
                let mut d = vec![0.0; g.width()];
                d[g.n + CH_STEPS] = 1.0 - p;
                d[g.n - CH_STEPS] = p;
                d
            }
        })
        .collect();
    let edges: Vec<(usize, usize)> = (0..mb).flat_map(|c| (0..nb).map(move |v| (c, v))).filter(|&(c, v)| pg.mult[c][v] > 0).collect();
    // Variable-to-check and check-to-variable densities per protograph edge (one for all parallels).
    let mut v2c: Vec<Vec<f64>> = edges.iter().map(|&(_, v)| ch[v].clone()).collect();
    let mut c2v: Vec<Vec<f64>> = vec![g.point(0); edges.len()];
    let idx = |c: usize, v: usize| edges.iter().position(|&e| e == (c, v)).unwrap();
    let mut history: Vec<f64> = Vec::new();
    for it in 1..=max_iter {
        // Check update: box-plus of all incoming edges but one copy of the output edge.
        for (e, &(c, v)) in edges.iter().enumerate() {
            let mut acc: Option<Vec<f64>> = None;
            for u in 0..nb {
                let k = pg.mult[c][u] as usize - usize::from(u == v);
                for _ in 0..k {
                    let d = &v2c[idx(c, u)];
                    acc = Some(match acc {
                        None => d.clone(),
                        Some(a) => g.boxplus(&a, d),
                    });
                }
            }
            c2v[e] = acc.unwrap_or_else(|| g.point(g.n as isize));
        }
        // Variable update and posteriors.
        let mut worst = 0.0f64;
        for v in 0..nb {
            let incoming: Vec<(usize, usize)> =
                (0..mb).filter(|&c| pg.mult[c][v] > 0).map(|c| (idx(c, v), pg.mult[c][v] as usize)).collect();
            let mut post = ch[v].clone();
            for &(e, k) in &incoming {
                for _ in 0..k {
                    post = g.conv(&post, &c2v[e]);
                }
            }
            for &(e, _) in &incoming {
                let mut out = ch[v].clone();
                for &(e2, k2) in &incoming {
                    for _ in 0..k2 - usize::from(e2 == e) {
                        out = g.conv(&out, &c2v[e2]);
                    }
                }
                v2c[e] = out;
            }
            if !pg.punctured[v] {
                let err: f64 = post[..g.n].iter().sum::<f64>() + 0.5 * post[g.n];
                worst = worst.max(err);
            }
        }
        if std::env::var("DE_TRACE").is_ok() {
            let mass: Vec<f64> = v2c.iter().chain(c2v.iter()).map(|d| d.iter().sum::<f64>()).collect();
            eprintln!("it {it} worst {worst:e} masses {mass:?}");
        }
        history.push(worst);
        if worst < target {
            return DeRun { converged: true, iterations: it, error: worst };
        }
        if it > 60 && worst > 0.999 * history[it - 61] {
            return DeRun { converged: false, iterations: it, error: worst };
        }
    }
    let error = *history.last().unwrap();
    let _ = g.delta;
    DeRun { converged: false, iterations: max_iter, error }
}

/// BP threshold over the BSC by bisection on p in [lo, hi] (`steps` halvings).
pub fn threshold(pg: &Protograph, mut lo: f64, mut hi: f64, steps: usize) -> f64 {
    for _ in 0..steps {
        let mid = 0.5 * (lo + hi);
        if run(pg, mid, 3000, 1e-7).converged {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_3_6_ensemble_threshold_is_the_published_0_084() {
        // The (3,6)-regular ensemble as the protograph [3 3]; its BP threshold over the BSC is
        // 0.084 (Richardson, Urbanke 2001, Table I: ε* = 0.084).
        let pg = Protograph::new(vec![vec![3, 3]]);
        assert!((pg.rate() - 0.5).abs() < 1e-12);
        assert!(run(&pg, 0.082, 3000, 1e-7).converged, "should decode at 0.082");
        assert!(!run(&pg, 0.086, 3000, 1e-7).converged, "should fail at 0.086");
    }
}
