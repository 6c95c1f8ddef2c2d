//! Quasi-cyclic (QC) codes lifted from a protograph by circulant permutations.
//!
//! A protograph (base matrix) B of m_b × n_b entries in {0, 1} is lifted by a factor Z: entry
//! (c, v) = 1 becomes the Z × Z circulant permutation matrix P^s, i.e. check c·Z + i is joined to
//! variable v·Z + ((i + s) mod Z) for i = 0 … Z−1 (Fossorier, "Quasi-cyclic low-density
//! parity-check codes from circulant permutation matrices", IEEE Trans. IT 50(8), 2004). The
//! lifted graph keeps the protograph's degrees, so its density-evolution threshold is the
//! protograph's (Thorpe, "Low-density parity-check (LDPC) codes constructed from protographs",
//! IPN PR 42-154, 2003).
//!
//! Shifts are chosen edge by edge by a progressive-edge-growth rule on the lifted graph (Hu,
//! Eleftheriou, Arnold, "Regular and irregular progressive edge-growth Tanner graphs", IEEE Trans.
//! IT 51(1), 2005), done at the protograph level as in QC-PEG (Li, Kumar, "A class of good
//! quasi-cyclic LDPC codes", ISIT 2004): by the QC symmetry it is enough to grow the
//! breadth-first tree of copy 0 of the new edge's variable; every node of the protograph holds the
//! set of its copies reached so far as a Z-bit set, and one level of the tree is a rotation of these
//! sets along each protograph edge. A shift s joins variable copy 0 to check copy (−s mod Z); if
//! that copy sits at distance d from it the new edge closes a cycle of length d + 1. The rule takes
//! a shift whose check copy was never reached (up to `MAX_DEPTH`), else one reached last, ties by
//! the seeded generator.
//!
//! Here the protograph is the random socket graph of code.rs on n/Z variables and m/Z checks for the
//! family's (DE-designed) degree distribution: a protograph of the same ensemble, with a degree-2
//! zigzag that lifts to Z disjoint chains (the lift of an acyclic graph is acyclic).

use crate::code::{assemble, construct, Code, CodeSpec};
use crate::rng::SplitMix64;

/// Deepest level of the per-edge tree (cycles up to length MAX_DEPTH + 1 are seen).
pub const MAX_DEPTH: usize = 11;

/// A lifted code and its protograph.
pub struct Lifted {
    pub code: Code,
    pub z: usize,
    /// Protograph edges per base column: (base check, shift).
    pub base: Vec<Vec<(u32, u32)>>,
    pub base_checks: usize,
    /// Shortest cycle each edge closed when it was placed (the girth is at most their minimum).
    pub shortest_closed: usize,
}

/// A Z-bit set, Z a multiple of 64.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(z: usize) -> Bits {
        Bits(vec![0; z / 64])
    }
    fn clear(&mut self) {
        self.0.iter_mut().for_each(|w| *w = 0);
    }
    fn get(&self, i: usize) -> bool {
        (self.0[i / 64] >> (i % 64)) & 1 == 1
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn any(&self) -> bool {
        self.0.iter().any(|&w| w != 0)
    }
    /// out |= rotate(self) where bit i moves to bit (i + r) mod Z.
    fn or_rotated_into(&self, r: usize, out: &mut Bits) {
        let nw = self.0.len();
        let z = nw * 64;
        let r = r % z;
        let (ws, bs) = (r / 64, r % 64);
        for i in 0..nw {
            let lo = self.0[(i + nw - ws) % nw];
            let v = if bs == 0 { lo } else { (lo << bs) | (self.0[(i + 2 * nw - ws - 1) % nw] >> (64 - bs)) };
            out.0[i] |= v;
        }
    }
}

/// Lifts `base` (adjacency per base column: base check indices) by Z, choosing shifts by the rule
/// in the module comment. Columns are processed lowest degree first (PEG order), each column's
/// edges in the order given.
pub fn choose_shifts(base_cols: &[Vec<u32>], base_checks: usize, z: usize, rng: &mut SplitMix64) -> (Vec<Vec<(u32, u32)>>, usize) {
    assert!(z % 64 == 0 && z > 0, "lifting factor must be a positive multiple of 64");
    let nb = base_cols.len();
    let mut cols: Vec<Vec<(u32, u32)>> = vec![Vec::new(); nb];
    let mut rows: Vec<Vec<(u32, u32)>> = vec![Vec::new(); base_checks]; // (base var, shift)
    let mut order: Vec<usize> = (0..nb).collect();
    order.sort_by_key(|&v| base_cols[v].len());
    let mut vseen: Vec<Bits> = vec![Bits::new(z); nb];
    let mut cseen: Vec<Bits> = vec![Bits::new(z); base_checks];
    let mut vfront: Vec<Bits> = vec![Bits::new(z); nb];
    let mut cfront: Vec<Bits> = vec![Bits::new(z); base_checks];
    let mut shortest = usize::MAX;
    for &v in &order {
        for &c in &base_cols[v] {
            // Distance (odd) at which each copy of base check c is first reached from var copy 0.
            let mut dist = vec![usize::MAX; z];
            vseen.iter_mut().chain(cseen.iter_mut()).chain(vfront.iter_mut()).chain(cfront.iter_mut()).for_each(|b| b.clear());
            vseen[v].set(0);
            vfront[v].set(0);
            let mut depth = 0;
            while depth < MAX_DEPTH {
                // Variables → checks: var copy j reaches check copy (j − s) mod Z.
                depth += 1;
                let mut grew = false;
                let mut next: Vec<Bits> = vec![Bits::new(z); base_checks];
                for (u, f) in vfront.iter().enumerate() {
                    if !f.any() {
                        continue;
                    }
                    for &(cc, s) in &cols[u] {
                        f.or_rotated_into(z - s as usize, &mut next[cc as usize]);
                    }
                }
                for (cc, nb_) in next.iter_mut().enumerate() {
                    for (w, seen) in nb_.0.iter_mut().zip(cseen[cc].0.iter_mut()) {
                        *w &= !*seen;
                        *seen |= *w;
                        grew |= *w != 0;
                    }
                }
                for i in 0..z {
                    if next[c as usize].get(i) && dist[i] == usize::MAX {
                        dist[i] = depth;
                    }
                }
                cfront = next;
                if !grew || depth >= MAX_DEPTH {
                    break;
                }
                // Checks → variables: check copy i reaches var copy (i + s) mod Z.
                depth += 1;
                let mut next: Vec<Bits> = vec![Bits::new(z); nb];
                for (cc, f) in cfront.iter().enumerate() {
                    if !f.any() {
                        continue;
                    }
                    for &(u, s) in &rows[cc] {
                        f.or_rotated_into(s as usize, &mut next[u as usize]);
                    }
                }
                let mut grew = false;
                for (u, nb_) in next.iter_mut().enumerate() {
                    for (w, seen) in nb_.0.iter_mut().zip(vseen[u].0.iter_mut()) {
                        *w &= !*seen;
                        *seen |= *w;
                        grew |= *w != 0;
                    }
                }
                vfront = next;
                if !grew {
                    break;
                }
            }
            // Shift s joins var copy 0 to check copy (z − s) mod z. Best: the farthest copy.
            let far = (0..z).map(|i| dist[i]).max().unwrap();
            let cands: Vec<usize> = (0..z).filter(|&i| dist[i] == far).collect();
            let copy = cands[rng.below(cands.len())];
            let s = ((z - copy) % z) as u32;
            if far != usize::MAX {
                shortest = shortest.min(far + 1);
            }
            cols[v].push((c, s));
            rows[c as usize].push((v as u32, s));
        }
    }
    (cols, shortest)
}

/// Expands a protograph with shifts into adjacency lists of the lifted graph (check c·Z + i joined
/// to variable v·Z + (i + s) mod Z).
pub fn expand(cols: &[Vec<(u32, u32)>], base_checks: usize, z: usize) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let n = cols.len() * z;
    let m = base_checks * z;
    let mut check_adj: Vec<Vec<u32>> = vec![Vec::new(); m];
    let mut var_adj: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (v, col) in cols.iter().enumerate() {
        for &(c, s) in col {
            for i in 0..z {
                let cc = c as usize * z + i;
                let vv = v * z + (i + s as usize) % z;
                check_adj[cc].push(vv as u32);
                var_adj[vv].push(cc as u32);
            }
        }
    }
    (check_adj, var_adj)
}

/// Builds the QC code of `spec` (n and m multiples of z): protograph = the socket construction of
/// code.rs on (n/z, m/z) with the same λ and seed, shifts by `choose_shifts`, then the untainted
/// puncturing and shortening orders of the lifted graph (code.rs `assemble`).
pub fn construct_qc(spec: &CodeSpec, z: usize) -> Lifted {
    assert!(spec.n % z == 0 && spec.m % z == 0, "n and m must be multiples of the lifting factor");
    let (nb, mb) = (spec.n / z, spec.m / z);
    let base = construct(&CodeSpec { n: nb, m: mb, lambda: spec.lambda.clone(), seed: spec.seed, d: 0 });
    let base_cols: Vec<Vec<u32>> = (0..nb).map(|v| base.col(v).to_vec()).collect();
    let mut rng = SplitMix64::new(spec.seed ^ 0x5143_4C49_4654); // "QCLIFT"
    let (cols, shortest) = choose_shifts(&base_cols, mb, z, &mut rng);
    let (check_adj, var_adj) = expand(&cols, mb, z);
    let code = assemble(spec, check_adj, var_adj, 0, &mut rng);
    Lifted { code, z, base: cols, base_checks: mb, shortest_closed: shortest }
}

/// Girth of a Tanner graph (length of its shortest cycle; usize::MAX if none), by a breadth-first
/// search from every variable node: a non-tree edge between nodes at depths a and b closes a walk
/// of length a + b + 1 containing a cycle; the minimum over all roots is the girth. Searches stop
/// below half the best cycle found. With `qc = Some(z)` only copy 0 of each circulant block is a
/// root (every cycle has a shift of itself through copy 0 of some block).
pub fn girth(code: &Code, qc: Option<usize>) -> usize {
    let (n, m) = (code.n, code.m);
    let roots: Vec<usize> = match qc {
        Some(z) => (0..n).step_by(z).collect(),
        None => (0..n).collect(),
    };
    let mut best = usize::MAX;
    // Node ids: variables 0..n, checks n..n+m.
    let mut depth = vec![u32::MAX; n + m];
    let mut parent = vec![u32::MAX; n + m];
    let mut touched: Vec<u32> = Vec::new();
    let mut queue = std::collections::VecDeque::new();
    for &r in &roots {
        for &t in &touched {
            depth[t as usize] = u32::MAX;
            parent[t as usize] = u32::MAX;
        }
        touched.clear();
        queue.clear();
        depth[r] = 0;
        touched.push(r as u32);
        queue.push_back(r as u32);
        'bfs: while let Some(x) = queue.pop_front() {
            let dx = depth[x as usize] as usize;
            if 2 * dx + 1 >= best {
                break;
            }
            let nbrs: Vec<u32> = if (x as usize) < n {
                code.col(x as usize).iter().map(|&c| c + n as u32).collect()
            } else {
                code.row(x as usize - n).to_vec()
            };
            for y in nbrs {
                if y == parent[x as usize] {
                    continue;
                }
                let dy = depth[y as usize];
                if dy == u32::MAX {
                    depth[y as usize] = dx as u32 + 1;
                    parent[y as usize] = x;
                    touched.push(y);
                    queue.push_back(y);
                } else {
                    best = best.min(dx + dy as usize + 1);
                    if 2 * dx + 1 >= best {
                        break 'bfs;
                    }
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slow reference: the girth is min over edges (u, w) of 1 + the distance from u to w without
    /// that edge (a plain BFS per edge on the explicit bipartite graph).
    fn girth_slow(code: &Code) -> usize {
        let (n, m) = (code.n, code.m);
        let mut adj: Vec<Vec<usize>> = vec![Vec::new(); n + m];
        for v in 0..n {
            for &c in code.col(v) {
                adj[v].push(n + c as usize);
                adj[n + c as usize].push(v);
            }
        }
        let mut best = usize::MAX;
        for v in 0..n {
            for &c in code.col(v) {
                let (a, b) = (v, n + c as usize);
                let mut dist = vec![usize::MAX; n + m];
                dist[a] = 0;
                let mut q = std::collections::VecDeque::from([a]);
                while let Some(x) = q.pop_front() {
                    for &y in &adj[x] {
                        if (x == a && y == b) || (x == b && y == a) || dist[y] != usize::MAX {
                            continue;
                        }
                        dist[y] = dist[x] + 1;
                        q.push_back(y);
                    }
                }
                if dist[b] != usize::MAX {
                    best = best.min(dist[b] + 1);
                }
            }
        }
        best
    }

    #[test]
    fn expansion_of_a_small_protograph_is_the_known_matrix() {
        // Protograph [[1 1 0], [0 1 1]] with shifts (0, 1 / 2, 3) and Z = 4:
        // H = [[I, P^1, 0], [0, P^2, P^3]] where row i of P^s has its 1 in column (i + s) mod 4.
        let cols = vec![vec![(0u32, 0u32)], vec![(0, 1), (1, 2)], vec![(1, 3)]];
        let (rows, _) = expand(&cols, 2, 4);
        let want: [[u8; 12]; 8] = [
            [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
            [0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0],
            [0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
            [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0],
            [0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0],
            [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
        ];
        for (c, row) in rows.iter().enumerate() {
            let mut got = [0u8; 12];
            for &v in row {
                got[v as usize] = 1;
            }
            assert_eq!(got, want[c], "row {c}");
        }
    }

    #[test]
    fn bit_rotation_matches_index_arithmetic() {
        let mut rng = SplitMix64::new(5);
        for z in [64usize, 128, 256] {
            for r in [0usize, 1, 63, 64, 65, 127, z - 1] {
                let mut a = Bits::new(z);
                let ones: Vec<usize> = (0..5).map(|_| rng.below(z)).collect();
                ones.iter().for_each(|&i| a.set(i));
                let mut out = Bits::new(z);
                a.or_rotated_into(r, &mut out);
                for i in 0..z {
                    assert_eq!(out.get(i), ones.iter().any(|&j| (j + r) % z == i), "z {z} r {r} bit {i}");
                }
            }
        }
    }

    #[test]
    fn girth_matches_slow_reference_on_random_small_codes() {
        for seed in 0..12u64 {
            let spec = CodeSpec { n: 60 + 10 * seed as usize, m: 30, lambda: vec![(2, 0.3), (3, 0.5), (4, 0.2)], seed, d: 0 };
            let c = construct(&spec);
            assert_eq!(girth(&c, None), girth_slow(&c), "seed {seed}");
        }
        // And on small lifts (QC roots only vs every root vs the slow reference).
        for seed in 0..4u64 {
            let spec = CodeSpec { n: 12 * 64, m: 6 * 64, lambda: vec![(2, 0.2), (3, 0.5), (5, 0.3)], seed, d: 0 };
            let l = construct_qc(&spec, 64);
            let g = girth(&l.code, Some(64));
            assert_eq!(g, girth(&l.code, None), "seed {seed}");
            assert_eq!(g, girth_slow(&l.code), "seed {seed}");
            assert!(g >= 6, "a QC-PEG lift of a small protograph keeps 4-cycles out (girth {g})");
        }
    }

    #[test]
    fn lifted_code_keeps_the_protograph_degrees_and_is_deterministic() {
        let spec = CodeSpec { n: 32 * 64, m: 8 * 64, lambda: vec![(2, 0.2), (3, 0.4), (8, 0.4)], seed: 3, d: 200 };
        let a = construct_qc(&spec, 64);
        let b = construct_qc(&spec, 64);
        assert_eq!(a.code.checksum(), b.code.checksum());
        for (v, col) in a.base.iter().enumerate() {
            for i in 0..64 {
                assert_eq!(a.code.col(v * 64 + i).len(), col.len());
            }
        }
        let mut seen = vec![0u32; a.code.m];
        for &v in &a.code.punct_order {
            for &c in a.code.col(v as usize) {
                seen[c as usize] += 1;
            }
        }
        assert!(!a.code.punct_order.is_empty() && seen.iter().all(|&k| k <= 1), "puncturing order not untainted");
        assert_eq!(a.code.short_order.len(), 200);
    }
}
