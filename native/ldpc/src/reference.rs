//! Slow, obviously correct reference decoder: flooding sum-product (belief propagation) in f64,
//! the tanh rule of Gallager (1963) as written in MacKay, "Good error-correcting codes based on
//! very sparse matrices", IEEE Trans. IT 45(2), 1999, §III-B, for syndrome decoding (the check
//! message sign is flipped when the syndrome bit is 1). Leave-one-out products are recomputed per
//! edge (O(d²) per check) so there is no division by a near-zero tanh. Used by tests and as the
//! benchmark baseline; never on the hot path.

use crate::code::Code;

pub struct RefOutcome {
    /// Hard decision per position, one byte per bit.
    pub bits: Vec<u8>,
    pub iterations: u32,
    pub converged: bool,
}

/// `llr[v]` = log(P(x_v = 0) / P(x_v = 1)) given Bob's data; `synd[c]` ∈ {0, 1}.
pub fn decode_reference(code: &Code, llr: &[f64], synd: &[u8], max_iter: u32) -> RefOutcome {
    let e = code.edges();
    // q[e]: variable-to-check message on row-major edge e; r[e]: check-to-variable.
    let mut q = vec![0.0f64; e];
    let mut r = vec![0.0f64; e];
    // Row-major edge index of each (v, its j-th check).
    let mut var_edges: Vec<Vec<usize>> = vec![Vec::new(); code.n];
    for c in 0..code.m {
        let base = code.row_ptr[c] as usize;
        for (j, &v) in code.row(c).iter().enumerate() {
            var_edges[v as usize].push(base + j);
            q[base + j] = llr[v as usize];
        }
    }
    let hard = |total: &[f64]| -> Vec<u8> { total.iter().map(|&x| u8::from(x < 0.0)).collect() };
    let mut total: Vec<f64> = llr.to_vec();
    let mut bits = hard(&total);
    if code.syndrome_unpacked(&bits) == synd {
        return RefOutcome { bits, iterations: 0, converged: true };
    }
    for it in 1..=max_iter {
        for c in 0..code.m {
            let base = code.row_ptr[c] as usize;
            let d = code.row(c).len();
            let sign = if synd[c] == 1 { -1.0 } else { 1.0 };
            for j in 0..d {
                let mut prod = sign;
                for i in 0..d {
                    if i != j {
                        prod *= (q[base + i] / 2.0).tanh();
                    }
                }
                let prod = prod.clamp(-1.0 + 1e-15, 1.0 - 1e-15);
                r[base + j] = 2.0 * prod.atanh();
            }
        }
        for v in 0..code.n {
            let s: f64 = llr[v] + var_edges[v].iter().map(|&e| r[e]).sum::<f64>();
            total[v] = s;
            for &e in &var_edges[v] {
                q[e] = s - r[e];
            }
        }
        bits = hard(&total);
        if code.syndrome_unpacked(&bits) == synd {
            return RefOutcome { bits, iterations: it, converged: true };
        }
    }
    RefOutcome { bits, iterations: max_iter, converged: false }
}
