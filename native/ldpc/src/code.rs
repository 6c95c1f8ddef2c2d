//! Parity-check matrix construction: an irregular LDPC code from a variable-node degree
//! distribution and a seed, built by a socket (configuration-model) construction that avoids
//! double edges always and length-4 cycles when it can (a bounded-retry variant of the
//! cycle-avoiding random construction of MacKay, "Good error-correcting codes based on very sparse
//! matrices", IEEE Trans. IT 45(2), 1999, §6, with concentrated check degrees as recommended by
//! Richardson, Shokrollahi, Urbanke, IEEE Trans. IT 47(2), 2001, §II).
//!
//! Rate adaptation orders (Elkouss, Martinez-Mateo, Martin, "Untainted puncturing for irregular
//! low-density parity-check codes", IEEE Wireless Comm. Letters 1(6), 2012, Def. 1): the puncturing
//! order only ever contains *untainted* symbols — no check node touches two punctured symbols. The
//! punctured columns therefore have pairwise disjoint, non-empty supports in H, hence are linearly
//! independent over GF(2): with a uniformly random fill of the p punctured positions the syndrome
//! reveals at most m − p bits about the key (H(S | key) = p). This is what makes the leak count
//! `m − p + revealed` an upper bound and not an estimate.
//!
//! Everything here is a pure function of (n, m, λ, seed) and `rng.rs`: the checksum over the
//! adjacency and both orders is published in docs/ldpc.md and native/ldpc/codes/checksums.txt.

use crate::rng::{Fnv64, SplitMix64};

/// Parameters of one mother code.
#[derive(Clone, Debug)]
pub struct CodeSpec {
    /// Mother code length (bits in the full word, including punctured and shortened positions).
    pub n: usize,
    /// Number of parity checks = syndrome bits.
    pub m: usize,
    /// Edge-perspective variable degree distribution λ: (degree, fraction of edges).
    pub lambda: Vec<(usize, f64)>,
    /// Construction seed (public).
    pub seed: u64,
    /// Modulation budget d = p + s (constant for the code, so key bits per frame = n − d).
    pub d: usize,
}

/// A constructed code: H in both compressed-row and compressed-column form, plus the rate
/// adaptation orders.
pub struct Code {
    pub spec: CodeSpec,
    pub n: usize,
    pub m: usize,
    /// Row-major adjacency: variables of check c are `row_idx[row_ptr[c]..row_ptr[c+1]]`.
    pub row_ptr: Vec<u32>,
    pub row_idx: Vec<u32>,
    /// Column-major adjacency: checks of variable v are `col_idx[col_ptr[v]..col_ptr[v+1]]`.
    pub col_ptr: Vec<u32>,
    pub col_idx: Vec<u32>,
    /// Untainted puncturing candidates, in the order they are punctured (p ≤ its length).
    pub punct_order: Vec<u32>,
    /// Shortening order (disjoint from `punct_order`), length d.
    pub short_order: Vec<u32>,
    /// Number of 4-cycles the construction could not avoid (reported, for the docs).
    pub four_cycles_accepted: usize,
    pub max_check_degree: usize,
}

impl Code {
    pub fn edges(&self) -> usize {
        self.row_idx.len()
    }
    pub fn row(&self, c: usize) -> &[u32] {
        &self.row_idx[self.row_ptr[c] as usize..self.row_ptr[c + 1] as usize]
    }
    pub fn col(&self, v: usize) -> &[u32] {
        &self.col_idx[self.col_ptr[v] as usize..self.col_ptr[v + 1] as usize]
    }

    /// FNV-1a 64 over n, m, every column's degree and check indices, then both orders.
    pub fn checksum(&self) -> u64 {
        let mut h = Fnv64::default();
        h.write_u32(self.n as u32);
        h.write_u32(self.m as u32);
        for v in 0..self.n {
            let col = self.col(v);
            h.write_u32(col.len() as u32);
            for &c in col {
                h.write_u32(c);
            }
        }
        h.write_u32(self.punct_order.len() as u32);
        for &v in &self.punct_order {
            h.write_u32(v);
        }
        h.write_u32(self.short_order.len() as u32);
        for &v in &self.short_order {
            h.write_u32(v);
        }
        h.finish()
    }

    /// Syndrome of a full word given as one byte per bit (0/1). Slow and obvious: used by the
    /// reference paths and tests.
    pub fn syndrome_unpacked(&self, word: &[u8]) -> Vec<u8> {
        (0..self.m).map(|c| self.row(c).iter().fold(0u8, |a, &v| a ^ (word[v as usize] & 1))).collect()
    }

    /// The matrix in MacKay's alist format (for cross-checking with other LDPC tools).
    pub fn to_alist(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let maxc = (0..self.n).map(|v| self.col(v).len()).max().unwrap_or(0);
        let maxr = (0..self.m).map(|c| self.row(c).len()).max().unwrap_or(0);
        let _ = writeln!(s, "{} {}", self.n, self.m);
        let _ = writeln!(s, "{} {}", maxc, maxr);
        let cd: Vec<String> = (0..self.n).map(|v| self.col(v).len().to_string()).collect();
        let _ = writeln!(s, "{}", cd.join(" "));
        let rd: Vec<String> = (0..self.m).map(|c| self.row(c).len().to_string()).collect();
        let _ = writeln!(s, "{}", rd.join(" "));
        for v in 0..self.n {
            let mut l: Vec<String> = self.col(v).iter().map(|c| (c + 1).to_string()).collect();
            l.resize(maxc, "0".into());
            let _ = writeln!(s, "{}", l.join(" "));
        }
        for c in 0..self.m {
            let mut l: Vec<String> = self.row(c).iter().map(|v| (v + 1).to_string()).collect();
            l.resize(maxr, "0".into());
            let _ = writeln!(s, "{}", l.join(" "));
        }
        s
    }
}

/// Node-perspective degree counts from an edge-perspective λ (L_i ∝ λ_i / i), rounded so they
/// sum to n (the remainder goes to the most frequent degree).
pub fn degree_counts(n: usize, lambda: &[(usize, f64)]) -> Vec<(usize, usize)> {
    let z: f64 = lambda.iter().map(|&(d, l)| l / d as f64).sum();
    let mut counts: Vec<(usize, usize)> =
        lambda.iter().map(|&(d, l)| (d, ((l / d as f64) / z * n as f64).round() as usize)).collect();
    let total: usize = counts.iter().map(|c| c.1).sum();
    let imax = (0..counts.len()).max_by_key(|&i| counts[i].1).unwrap();
    counts[imax].1 = (counts[imax].1 as isize + n as isize - total as isize) as usize;
    counts
}

/// Builds the code. Deterministic in `spec`.
pub fn construct(spec: &CodeSpec) -> Code {
    let (n, m) = (spec.n, spec.m);
    let mut rng = SplitMix64::new(spec.seed);
    // Variable degrees, assigned to positions by a seeded shuffle.
    let mut vdeg: Vec<usize> = Vec::with_capacity(n);
    for (d, c) in degree_counts(n, &spec.lambda) {
        vdeg.extend(std::iter::repeat(d).take(c));
    }
    // Degree-2 symbols must not form cycles among themselves (a cycle of degree-2 symbols is a
    // low-weight codeword: an error floor). At most m − 1 of them, wired as a chain
    // c_0 − c_1 − … over a seeded check permutation (the zigzag of IRA codes, Jin, Khandekar,
    // McEliece 2000); any excess becomes degree 3.
    let mut n2 = 0usize;
    for d in vdeg.iter_mut() {
        if *d == 2 {
            if n2 + 1 < m {
                n2 += 1;
            } else {
                *d = 3;
            }
        }
    }
    rng.shuffle(&mut vdeg);
    let e: usize = vdeg.iter().sum();
    // Concentrated check degrees: E/m or E/m + 1.
    let lo = e / m;
    let extra = e % m;
    let mut chain: Vec<u32> = (0..m as u32).collect();
    rng.shuffle(&mut chain);
    let mut chain_use = vec![0usize; m];
    for j in 0..n2 {
        chain_use[chain[j] as usize] += 1;
        chain_use[chain[j + 1] as usize] += 1;
    }
    let mut pool: Vec<u32> = Vec::with_capacity(e);
    for c in 0..m {
        let dc = lo + usize::from(c < extra);
        pool.extend(std::iter::repeat(c as u32).take(dc.saturating_sub(chain_use[c])));
    }
    rng.shuffle(&mut pool);

    let mut check_adj: Vec<Vec<u32>> = (0..m).map(|_| Vec::with_capacity(lo + 1)).collect();
    let mut var_adj: Vec<Vec<u32>> = (0..n).map(|v| Vec::with_capacity(vdeg[v])).collect();
    let mut mark = vec![u32::MAX; n]; // mark[u] == v: u is 2 hops from v (shares a check)
    let mut four_cycles = 0usize;
    let mut pos = 0usize;
    const TRIES: usize = 24;
    let mut j2 = 0usize;
    for v in 0..n {
        if vdeg[v] == 2 {
            for c in [chain[j2], chain[j2 + 1]] {
                check_adj[c as usize].push(v as u32);
                var_adj[v].push(c);
            }
            j2 += 1;
        }
    }
    for v in 0..n {
        if vdeg[v] == 2 {
            continue;
        }
        // Mark the 2-hop neighbourhood through checks already attached (none, for non-chain v).
        for _slot in 0..vdeg[v] {
            if pos >= pool.len() {
                break;
            }
            let mut ok = false;
            let mut fallback: Option<usize> = None; // a candidate that is only a 4-cycle
            for t in 0..TRIES {
                let c = pool[pos];
                let dup = var_adj[v].contains(&c);
                if !dup {
                    let cyc = check_adj[c as usize].iter().any(|&u| mark[u as usize] == v as u32);
                    if !cyc {
                        ok = true;
                        break;
                    }
                    if fallback.is_none() {
                        fallback = Some(pos);
                    }
                }
                if t + 1 < TRIES && pos + 1 < pool.len() {
                    let j = pos + 1 + rng.below(pool.len() - pos - 1);
                    pool.swap(pos, j);
                }
            }
            if !ok {
                if let Some(_f) = fallback {
                    // Bring any non-duplicate candidate to `pos` (accepting a 4-cycle).
                    if var_adj[v].contains(&pool[pos]) {
                        let j = (pos + 1..pool.len()).find(|&j| !var_adj[v].contains(&pool[j]));
                        match j {
                            Some(j) => pool.swap(pos, j),
                            None => continue, // only duplicates left: drop this edge
                        }
                    }
                    four_cycles += 1;
                } else {
                    let j = (pos + 1..pool.len()).find(|&j| !var_adj[v].contains(&pool[j]));
                    match j {
                        Some(j) => {
                            pool.swap(pos, j);
                            four_cycles += 1;
                        }
                        None => continue,
                    }
                }
            }
            let c = pool[pos];
            pos += 1;
            for &u in &check_adj[c as usize] {
                mark[u as usize] = v as u32;
            }
            check_adj[c as usize].push(v as u32);
            var_adj[v].push(c);
        }
    }
    // Any sockets left over (edges dropped to avoid double edges) are simply not used.
    assemble(spec, check_adj, var_adj, four_cycles, &mut rng)
}

/// CSR views, untainted puncturing order and shortening order of a graph given as adjacency
/// lists (shared by the random construction and the quasi-cyclic lifting in qc.rs; `rng` continues
/// the construction's stream, so the random family's codes are unchanged by this split).
pub fn assemble(
    spec: &CodeSpec,
    mut check_adj: Vec<Vec<u32>>,
    mut var_adj: Vec<Vec<u32>>,
    four_cycles: usize,
    rng: &mut SplitMix64,
) -> Code {
    let (n, m) = (spec.n, spec.m);
    let e: usize = var_adj.iter().map(|a| a.len()).sum();
    let mut row_ptr = Vec::with_capacity(m + 1);
    let mut row_idx = Vec::with_capacity(e);
    row_ptr.push(0u32);
    for c in 0..m {
        check_adj[c].sort_unstable();
        row_idx.extend_from_slice(&check_adj[c]);
        row_ptr.push(row_idx.len() as u32);
    }
    let mut col_ptr = Vec::with_capacity(n + 1);
    let mut col_idx = Vec::with_capacity(e);
    col_ptr.push(0u32);
    for v in 0..n {
        var_adj[v].sort_unstable();
        col_idx.extend_from_slice(&var_adj[v]);
        col_ptr.push(col_idx.len() as u32);
    }
    let max_check_degree = (0..m).map(|c| check_adj[c].len()).max().unwrap_or(0);

    // Untainted puncturing order: low degree first (ties in seeded random order); accept v when
    // none of its checks already neighbours a punctured symbol.
    let mut order: Vec<u32> = (0..n as u32).collect();
    rng.shuffle(&mut order);
    order.sort_by_key(|&v| var_adj[v as usize].len()); // stable: keeps the shuffle within a degree
    let mut touched = vec![false; m];
    let mut punct_order = Vec::new();
    let mut is_punct = vec![false; n];
    for &v in &order {
        if punct_order.len() >= spec.d {
            break;
        }
        let checks = &var_adj[v as usize];
        if checks.is_empty() || checks.iter().any(|&c| touched[c as usize]) {
            continue;
        }
        for &c in checks {
            touched[c as usize] = true;
        }
        is_punct[v as usize] = true;
        punct_order.push(v);
    }
    let mut rest: Vec<u32> = (0..n as u32).filter(|&v| !is_punct[v as usize]).collect();
    rng.shuffle(&mut rest);
    rest.truncate(spec.d);
    let short_order = rest;

    Code {
        spec: spec.clone(),
        n,
        m,
        row_ptr,
        row_idx,
        col_ptr,
        col_idx,
        punct_order,
        short_order,
        four_cycles_accepted: four_cycles,
        max_check_degree,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CodeSpec {
        CodeSpec { n: 2000, m: 400, lambda: vec![(2, 0.2), (3, 0.4), (8, 0.4)], seed: 7, d: 200 }
    }

    #[test]
    fn construction_is_consistent_and_deterministic() {
        let a = construct(&spec());
        let b = construct(&spec());
        assert_eq!(a.checksum(), b.checksum());
        assert_eq!(a.row_ptr.len(), a.m + 1);
        // Row and column views describe the same edge set, without double edges.
        let mut from_rows: Vec<(u32, u32)> = Vec::new();
        for c in 0..a.m {
            for &v in a.row(c) {
                from_rows.push((v, c as u32));
            }
        }
        let mut from_cols: Vec<(u32, u32)> = Vec::new();
        for v in 0..a.n {
            let col = a.col(v);
            for w in col.windows(2) {
                assert!(w[0] < w[1], "double edge");
            }
            for &c in col {
                from_cols.push((v as u32, c));
            }
        }
        from_rows.sort_unstable();
        assert_eq!(from_rows, from_cols);
        let mut s2 = spec();
        s2.seed = 8;
        assert_ne!(construct(&s2).checksum(), a.checksum());
    }

    #[test]
    fn puncturing_order_is_untainted_and_disjoint_from_shortening() {
        let a = construct(&spec());
        assert!(!a.punct_order.is_empty());
        let mut seen = vec![0u32; a.m];
        for &v in &a.punct_order {
            for &c in a.col(v as usize) {
                seen[c as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&k| k <= 1), "a check touches two punctured symbols");
        for &v in &a.short_order {
            assert!(!a.punct_order.contains(&v));
        }
        assert_eq!(a.short_order.len(), a.spec.d);
    }
}
