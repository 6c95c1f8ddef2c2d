//! Long binary-polynomial multiplication by an additive FFT over GF(2^64).
//!
//! Chen, Cheng, Kuo, Li, Yang, "Faster multiplication for long binary polynomials",
//! arXiv:1708.09746 (2017), on the FFT of Lin, Chung, Han (FOCS 2014, "novel polynomial basis"):
//!
//! 1. Packing (§3 of Chen et al.): a(z) ∈ GF(2)[z] is cut into 32-bit chunks a_m, a = Σ a_m z^{32m};
//!    each chunk is a field element of GF(2^64) = GF(2)[z]/(f) (degree < 32, no reduction), so a is
//!    a polynomial A(Y) = Σ a_m Y^m over GF(2^64). The product of two chunks has degree ≤ 62 < 64,
//!    so the coefficients of A(Y)·B(Y) computed in the field are exactly the binary polynomials
//!    Σ a_i b_{m−i}; overlapping them at 32-bit offsets gives a·b.
//! 2. Cantor basis β_0 = 1, β_i² + β_i = β_{i−1} of GF(2^64): the subspace polynomial of
//!    V_i = span(β_0..β_{i−1}) is W_i = S^{∘i}, S(Y) = Y² + Y, i.e. W_i(Y) = Σ_{j ⊆ i} Y^{2^j}
//!    (Lucas), with binary coefficients and W_i(β_m) = β_{m−i}.
//! 3. Basis conversion to the novel basis X_j = Π W_i^{j_i}: A = A_lo + W_{k−1}·A_hi recursively
//!    (division by the sparse binary W_i: XORs only).
//! 4. LCH butterflies: on the coset λ + V_{i+1}, with s = W_i(λ): lo += s·hi, hi += lo, then the
//!    halves are the cosets λ + V_i and λ + β_i + V_i. For the block with index b at any layer,
//!    s = Σ_m b_m β_{m+1} (from W_i(β_{i+1+m}) = β_{m+1}): one twiddle sequence for all layers.
//! 5. Pointwise product at the 2^k points, inverse butterflies, inverse basis conversion.
//!
//! Cost: 3 transforms of 2^k points with (k−1)·2^{k−1} field products each, k = ⌈log2(chunks of a
//! + chunks of b − 1)⌉. All recursions are depth-first (lower layers run in cache) and split over
//! the rayon pool while blocks are large.
use crate::gf64::{xor_into, Backend};
use std::sync::OnceLock;
use zeroize::Zeroize;

/// β_0..β_63 of the Cantor basis of GF(2^64) for our modulus.
fn cantor_basis() -> &'static [u64; 64] {
    static B: OnceLock<[u64; 64]> = OnceLock::new();
    B.get_or_init(|| {
        let mut b = [0u64; 64];
        b[0] = 1;
        for i in 1..64 {
            b[i] = solve_square_plus_x(b[i - 1]).expect("Cantor basis exists in GF(2^64)");
        }
        b
    })
}

/// A β with β² + β = c (the map is GF(2)-linear; Gaussian elimination on its 64 columns).
fn solve_square_plus_x(c: u64) -> Option<u64> {
    let s = |v: u64| crate::gf64::mul_portable(v, v) ^ v;
    // pivots[bit] = (vector with leading bit `bit`, combination of unit vectors giving it)
    let mut piv: [(u64, u64); 64] = [(0, 0); 64];
    for j in 0..64 {
        let (mut v, mut comb) = (s(1u64 << j), 1u64 << j);
        while v != 0 {
            let top = 63 - v.leading_zeros() as usize;
            if piv[top].0 == 0 {
                piv[top] = (v, comb);
                break;
            }
            v ^= piv[top].0;
            comb ^= piv[top].1;
        }
    }
    let (mut v, mut comb) = (c, 0u64);
    while v != 0 {
        let top = 63 - v.leading_zeros() as usize;
        if piv[top].0 == 0 {
            return None;
        }
        v ^= piv[top].0;
        comb ^= piv[top].1;
    }
    Some(comb)
}

/// Twiddle of block b: Σ_m b_m β_{m+1}, by three 11-bit tables (blocks < 2^33).
struct Twiddles {
    t: [[u64; 2048]; 3],
}

impl Twiddles {
    fn get() -> &'static Twiddles {
        static T: OnceLock<Box<Twiddles>> = OnceLock::new();
        T.get_or_init(|| {
            let beta = cantor_basis();
            let mut tw = Box::new(Twiddles { t: [[0; 2048]; 3] });
            for (g, table) in tw.t.iter_mut().enumerate() {
                for (v, e) in table.iter_mut().enumerate() {
                    *e = (0..11).filter(|m| (v >> m) & 1 == 1).fold(0, |acc, m| acc ^ beta[11 * g + m + 1]);
                }
            }
            tw
        })
    }
    #[inline(always)]
    fn at(&self, b: usize) -> u64 {
        self.t[0][b & 2047] ^ self.t[1][(b >> 11) & 2047] ^ self.t[2][(b >> 22) & 2047]
    }
}

/// Blocks at or below this many elements run their lower layers serially and iteratively.
const LEAF: usize = 1 << 12;

/// Settings of one multiplication.
#[derive(Clone, Copy, Debug)]
pub struct FftOptions {
    pub backend: Backend,
    /// Split recursions over rayon for blocks of at least this many elements (usize::MAX: never).
    pub parallel_elems: usize,
}

impl FftOptions {
    pub fn detect(portable: bool, parallel: bool) -> Self {
        FftOptions { backend: Backend::detect(portable), parallel_elems: if parallel { 1 << 16 } else { usize::MAX } }
    }
}

fn join<A: FnOnce() + Send, B: FnOnce() + Send>(par: bool, a: A, b: B) {
    if par {
        rayon::join(a, b);
    } else {
        a();
        b();
    }
}

/// Offsets H − 2^j of the low terms Y^{2^j} of W_i (j a proper submask of i), H = 2^i.
fn term_offsets(i: usize) -> ([usize; 32], usize) {
    let (mut offs, mut m) = ([0usize; 32], 0);
    for j in (0..i).filter(|&j| j & i == j) {
        offs[m] = (1 << i) - (1 << j);
        m += 1;
    }
    (offs, m)
}

/// In place: f (2H elements) = rem + D·quot with rem → f[..H], quot → f[H..], for a binary
/// divisor D = Y^H + Σ Y^{H−o} (offsets o ≥ H/2). Long division from the top coefficient down:
/// f[c] is the quotient coefficient of Y^{c−H} and is XORed into f[c − o] for each offset.
/// Sources at or above `top` are known to be zero and skipped.
fn divide(f: &mut [u64], offs: &[usize], top: usize) {
    let h = f.len() / 2;
    if h < 16 {
        for c in (h..top).rev() {
            for &o in offs {
                f[c - o] ^= f[c];
            }
        }
        return;
    }
    // Chunks of w ≤ H/2 consecutive sources: every target c − o (o ≥ H/2) lies below the chunk,
    // so a chunk reads its sources before any of them is written (descending order kept).
    let w = (h / 2).min(256);
    let mut c0 = top;
    while c0 > h {
        let len = w.min(c0 - h);
        c0 -= len;
        let (below, src) = f.split_at_mut(c0);
        for &o in offs {
            xor_into(&mut below[c0 - o..c0 - o + len], &src[..len]);
        }
    }
}

/// Inverse of `divide` (all sources): f = rem + D·quot, ascending, same chunking argument.
fn multiply(f: &mut [u64], offs: &[usize]) {
    let h = f.len() / 2;
    if h < 16 {
        for c in h..2 * h {
            for &o in offs {
                f[c - o] ^= f[c];
            }
        }
        return;
    }
    let w = (h / 2).min(256);
    let mut c0 = h;
    while c0 < 2 * h {
        let (below, src) = f.split_at_mut(c0);
        for &o in offs {
            xor_into(&mut below[c0 - o..c0 - o + w], &src[..w]);
        }
        c0 += w;
    }
}

fn divide_by_w(f: &mut [u64], i: usize) {
    let (offs, m) = term_offsets(i);
    divide(f, &offs[..m], f.len());
}

fn multiply_by_w(f: &mut [u64], i: usize) {
    let (offs, m) = term_offsets(i);
    multiply(f, &offs[..m]);
}

/// Layers 3, 2, 1 of the conversion on a 16-element block, unrolled by the compiler (the
/// generic loop costs a call per 2..8 elements there). Layer 0 (W_0 = Y) is the identity.
#[inline(always)]
fn to_novel16(b: &mut [u64; 16]) {
    for c in (8..16).rev() {
        b[c - 7] ^= b[c];
        b[c - 6] ^= b[c];
        b[c - 4] ^= b[c];
    }
    for q in [0, 8] {
        for c in (4..8).rev() {
            b[q + c - 3] ^= b[q + c];
        }
    }
    for q in [0, 4, 8, 12] {
        b[q + 2] ^= b[q + 3];
        b[q + 1] ^= b[q + 2];
    }
}

#[inline(always)]
fn from_novel16(b: &mut [u64; 16]) {
    for q in [0, 4, 8, 12] {
        b[q + 1] ^= b[q + 2];
        b[q + 2] ^= b[q + 3];
    }
    for q in [0, 8] {
        for c in 4..8 {
            b[q + c - 3] ^= b[q + c];
        }
    }
    for c in 8..16 {
        b[c - 7] ^= b[c];
        b[c - 6] ^= b[c];
        b[c - 4] ^= b[c];
    }
}

/// Monomial → novel basis by direct division by each W_i (f.len() a power of two): the
/// obvious form, kept for small sizes and as the tests' reference for `to_novel`.
fn to_novel_direct(f: &mut [u64], o: &FftOptions) {
    let n = f.len();
    if n > LEAF {
        divide_by_w(f, n.trailing_zeros() as usize - 1);
        let (lo, hi) = f.split_at_mut(n / 2);
        join(n >= o.parallel_elems, || to_novel_direct(lo, o), || to_novel_direct(hi, o));
        return;
    }
    let mut size = n;
    while size > 16 || (size > 1 && n < 16) {
        for blk in f.chunks_exact_mut(size) {
            divide_by_w(blk, size.trailing_zeros() as usize - 1);
        }
        size /= 2;
    }
    if n >= 16 {
        for blk in f.chunks_exact_mut(16) {
            to_novel16(blk.try_into().expect("16 elements"));
        }
    }
}

/// Novel → monomial basis, the exact inverse of `to_novel_direct`.
fn from_novel_direct(f: &mut [u64], o: &FftOptions) {
    let n = f.len();
    if n > LEAF {
        {
            let (lo, hi) = f.split_at_mut(n / 2);
            join(n >= o.parallel_elems, || from_novel_direct(lo, o), || from_novel_direct(hi, o));
        }
        multiply_by_w(f, n.trailing_zeros() as usize - 1);
        return;
    }
    let mut size = if n >= 16 { 32 } else { 2 };
    if n >= 16 {
        for blk in f.chunks_exact_mut(16) {
            from_novel16(blk.try_into().expect("16 elements"));
        }
    }
    while size <= n {
        for blk in f.chunks_exact_mut(size) {
            multiply_by_w(blk, size.trailing_zeros() as usize - 1);
        }
        size *= 2;
    }
}

/// Monomial → novel basis of f (length 2^K, coefficients at or above `used` zero), splitting
/// the index at T = 2^a < K ≤ 2^{a+1} (Gao–Mateer; the tensor form of Chen et al. §4):
/// with Z = W_T(Y) = Y^{2^T} + Y and W_i = W_{i−T}∘W_T, X_j(Y) = X_{j mod 2^T}(Y)·X_{j >> T}(Z). So
/// (1) expand f = Σ_r h_r(Y) Z^r (deg h_r < τ = 2^T; h_r is row r of a 2^{K−T} × τ grid) by
/// divisions by the binomials Z^R = Y^{τR} + Y^R, (2) convert every row in Y (recursively),
/// (3) convert every column in Z. Each step is one sweep over memory with one stream instead of
/// a sweep per term of every W_i.
fn to_novel(f: &mut [u64], used: usize, o: &FftOptions) {
    let n = f.len();
    let kk = n.trailing_zeros() as usize;
    if kk <= 4 {
        to_novel_direct(f, o);
        return;
    }
    let tau = 1usize << (1usize << (kk - 1).ilog2());
    radix_expand(f, tau, n / tau / 2, used.min(n), o);
    let used_rows = used.min(n).div_ceil(tau);
    for_rows(f, tau, used_rows, o, |row| to_novel(row, tau, o));
    columns(f, tau, used_rows.next_power_of_two(), o, true);
}

/// Novel → monomial basis: the exact inverse of `to_novel`, steps reversed.
fn from_novel(f: &mut [u64], o: &FftOptions) {
    let n = f.len();
    let kk = n.trailing_zeros() as usize;
    if kk <= 4 {
        from_novel_direct(f, o);
        return;
    }
    let tau = 1usize << (1usize << (kk - 1).ilog2());
    columns(f, tau, n / tau, o, false);
    for_rows(f, tau, n / tau, o, |row| from_novel(row, o));
    radix_unexpand(f, tau, n / tau / 2, o);
}

/// f (2τR elements) → rows h_r with f = Σ h_r Z^r: divide by Z^R = Y^{τR} + Y^R, recurse.
fn radix_expand(f: &mut [u64], tau: usize, r: usize, used: usize, o: &FftOptions) {
    if r == 0 || used == 0 {
        return;
    }
    let h = tau * r;
    if used > h {
        binomial(f, r, used, true, o);
    }
    let (lo, hi) = f.split_at_mut(h);
    let hi_used = used.saturating_sub(h);
    let par = f_len_par(2 * h, o) && hi_used > 0;
    join(par, || radix_expand(lo, tau, r / 2, used.min(h), o), || radix_expand(hi, tau, r / 2, hi_used, o));
}

fn radix_unexpand(f: &mut [u64], tau: usize, r: usize, o: &FftOptions) {
    if r == 0 {
        return;
    }
    let h = tau * r;
    {
        let (lo, hi) = f.split_at_mut(h);
        join(f_len_par(2 * h, o), || radix_unexpand(lo, tau, r / 2, o), || radix_unexpand(hi, tau, r / 2, o));
    }
    binomial(f, r, 2 * h, false, o);
}

/// Division (fwd) by, or multiplication by, D = Y^H + Y^r on f of 2H elements (sources below
/// `top` only): f[c − (H − r)] ^= f[c] for c ≥ H. Only the top r sources hit other sources
/// (targets [H, H + r)); the bulk, sources [H, 2H − r) → targets [r, H), is one parallel XOR of
/// disjoint ranges. Division does the top part first, multiplication last.
fn binomial(f: &mut [u64], r: usize, top: usize, fwd: bool, o: &FftOptions) {
    let h = f.len() / 2;
    let off = h - r;
    let top_part = |f: &mut [u64]| {
        let cs = (2 * h - r).max(h)..top.max(2 * h - r);
        if fwd {
            cs.rev().for_each(|c| f[c - off] ^= f[c]);
        } else {
            cs.for_each(|c| f[c - off] ^= f[c]);
        }
    };
    if fwd {
        top_part(f);
    }
    let end = top.min(2 * h - r);
    if end > h {
        let (low, high) = f.split_at_mut(h);
        let (dst, src) = (&mut low[r..end - off], &high[..end - h]);
        if f_len_par(2 * h, o) {
            use rayon::prelude::*;
            dst.par_chunks_mut(1 << 14).zip(src.par_chunks(1 << 14)).for_each(|(d, s)| xor_into(d, s));
        } else {
            xor_into(dst, src);
        }
    }
    if !fwd {
        top_part(f);
    }
}

fn f_len_par(n: usize, o: &FftOptions) -> bool {
    n >= o.parallel_elems
}

/// Runs `op` on the first `rows` rows of τ elements (in parallel for large grids).
fn for_rows<F: Fn(&mut [u64]) + Sync>(f: &mut [u64], tau: usize, rows: usize, o: &FftOptions, op: F) {
    let body = &mut f[..rows * tau];
    if f_len_par(body.len(), o) {
        use rayon::prelude::*;
        body.par_chunks_mut(tau).for_each(|row| op(row));
    } else {
        body.chunks_mut(tau).for_each(op);
    }
}

/// Converts the columns of the first `rows` rows (a polynomial in Z whose coefficients are
/// rows): `to_novel_direct` (fwd) or its inverse on tiles of w columns, in place. A tile's rows
/// are τ apart; w is chosen so the tile (rows × w elements) stays in L2 while it is converted.
fn columns(f: &mut [u64], tau: usize, rows: usize, o: &FftOptions, fwd: bool) {
    if rows < 2 {
        return;
    }
    assert!(f.len() >= rows * tau);
    let w = (32_768 / rows).clamp(8, tau);
    let tiles = tau / w;
    let run = |t0: usize, t1: usize, base: SyncPtr| {
        for t in t0..t1 {
            // SAFETY: `base` is f's start; the tile's columns [t·w, (t+1)·w) of rows < `rows` are
            // inside f (asserted above) and each worker takes its own tiles.
            unsafe { convert_tile(base.0.add(t * w), tau, w, rows, fwd) };
        }
    };
    let base = SyncPtr(f.as_mut_ptr());
    if f_len_par(rows * tau, o) && tiles >= 2 {
        use rayon::prelude::*;
        (0..tiles).into_par_iter().with_min_len(4).for_each(|t| run(t, t + 1, base));
    } else {
        run(0, tiles, base);
    }
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut u64);
// SAFETY: only used by `columns` and `fused_layers`, whose workers write disjoint parts of one
// live slice (distinct tiles / column ranges).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// The pointer (a method, so closures capture the Sync wrapper rather than its field).
    fn ptr(self) -> *mut u64 {
        self.0
    }
}

/// Layer by layer like `to_novel_direct` (or `from_novel_direct`), the elements being row
/// segments of w words at `tile + row·τ`.
///
/// # Safety
/// `tile + r·τ + [0, w)` must be valid, exclusively owned memory for every r < rows, w ≤ τ.
unsafe fn convert_tile(tile: *mut u64, tau: usize, w: usize, rows: usize, fwd: bool) {
    let xor_row = |dst: usize, src: usize| {
        // SAFETY: rows dst ≠ src (offsets > 0) are disjoint segments inside the tile.
        let (d, s) = unsafe {
            (std::slice::from_raw_parts_mut(tile.add(dst * tau), w), std::slice::from_raw_parts(tile.add(src * tau), w))
        };
        xor_into(d, s);
    };
    let layers = rows.trailing_zeros() as usize;
    for step in 0..layers {
        let i = if fwd { layers - 1 - step } else { step };
        let (offs, m) = term_offsets(i);
        let h = 1usize << i;
        for blk in (0..rows).step_by(2 * h) {
            for q in 0..h {
                let c = blk + if fwd { 2 * h - 1 - q } else { h + q };
                for &off in &offs[..m] {
                    xor_row(c - off, c);
                }
            }
        }
    }
}

/// Forward LCH transform of the block with index `b` (its layer is log2(len) − 1).
fn fft(d: &mut [u64], b: usize, tw: &Twiddles, o: &FftOptions) {
    let n = d.len();
    if n <= LEAF {
        fft_leaf(d, b, tw, o.backend);
        return;
    }
    if n > FUSE_ABOVE {
        let l = (n / FUSE_ABOVE).trailing_zeros().min(3) as usize;
        fused_layers::<true>(d, b, l, tw, o);
        for_groups(d, l, o, |grp, q| fft(grp, (b << l) + q, tw, o));
        return;
    }
    let (lo, hi) = d.split_at_mut(n / 2);
    top_butterfly::<true>(lo, hi, tw.at(b), o);
    join(n >= o.parallel_elems, || fft(lo, 2 * b, tw, o), || fft(hi, 2 * b + 1, tw, o));
}

fn fft_leaf(d: &mut [u64], b: usize, tw: &Twiddles, be: Backend) {
    let n = d.len();
    let mut half = n / 2;
    let mut blocks = 1usize;
    while half >= 1 {
        if half == 4 && be.bottom3::<true, _>(d, b * blocks, |i| tw.at(i)) {
            return;
        }
        for k in 0..blocks {
            let blk = &mut d[2 * half * k..2 * half * (k + 1)];
            let (lo, hi) = blk.split_at_mut(half);
            be.butterfly_fwd(lo, hi, tw.at(b * blocks + k));
        }
        half /= 2;
        blocks *= 2;
    }
}

fn ifft(d: &mut [u64], b: usize, tw: &Twiddles, o: &FftOptions) {
    let n = d.len();
    if n <= LEAF {
        ifft_leaf(d, b, tw, o.backend);
        return;
    }
    if n > FUSE_ABOVE {
        let l = (n / FUSE_ABOVE).trailing_zeros().min(3) as usize;
        for_groups(d, l, o, |grp, q| ifft(grp, (b << l) + q, tw, o));
        fused_layers::<false>(d, b, l, tw, o);
        return;
    }
    let (lo, hi) = d.split_at_mut(n / 2);
    join(n >= o.parallel_elems, || ifft(lo, 2 * b, tw, o), || ifft(hi, 2 * b + 1, tw, o));
    top_butterfly::<false>(lo, hi, tw.at(b), o);
}

/// Blocks larger than this (1 MiB, half of L2) run their top layers fused: L ≤ 3 layers in one
/// sweep over memory (radix 2^L) instead of one sweep per layer.
const FUSE_ABOVE: usize = 1 << 17;

/// Runs `op(group, q)` on the 2^l equal groups of d (in parallel for large blocks).
fn for_groups<F: Fn(&mut [u64], usize) + Sync>(d: &mut [u64], l: usize, o: &FftOptions, op: F) {
    let m = d.len() >> l;
    if d.len() >= o.parallel_elems {
        use rayon::prelude::*;
        d.par_chunks_mut(m).enumerate().for_each(|(q, g)| op(g, q));
    } else {
        d.chunks_mut(m).enumerate().for_each(|(q, g)| op(g, q));
    }
}

/// The top l layers of block b (forward: top layer first; inverse: bottom first), chunk by
/// chunk: for columns [j, j + 256) of the 2^l groups all l layers run while the 2^l chunks are in
/// L1, so the block is swept once instead of l times.
fn fused_layers<const FWD: bool>(d: &mut [u64], b: usize, l: usize, tw: &Twiddles, o: &FftOptions) {
    const CHUNK: usize = 256;
    let g = 1usize << l;
    let m = d.len() / g;
    let be = o.backend;
    let base = SyncPtr(d.as_mut_ptr());
    let work = move |j0: usize, j1: usize| {
        let mut j = j0;
        while j < j1 {
            let c = CHUNK.min(j1 - j);
            for step in 0..l {
                let lay = if FWD { step } else { l - 1 - step };
                let half = g >> (lay + 1);
                for k in 0..1usize << lay {
                    let s = tw.at((b << lay) + k);
                    for p in 0..half {
                        let lo_g = 2 * half * k + p;
                        // SAFETY: groups lo_g ≠ lo_g + half are disjoint ranges [q·m, (q+1)·m) of d
                        // and j + c ≤ m; the workers take disjoint column ranges.
                        let (lo, hi) = unsafe {
                            (std::slice::from_raw_parts_mut(base.ptr().add(lo_g * m + j), c),
                             std::slice::from_raw_parts_mut(base.ptr().add((lo_g + half) * m + j), c))
                        };
                        if FWD { be.butterfly_fwd(lo, hi, s) } else { be.butterfly_inv(lo, hi, s) }
                    }
                }
            }
            j += c;
        }
    };
    if d.len() >= o.parallel_elems {
        // 16 pieces rather than 2, so a core can take over work of one that was preempted.
        use rayon::prelude::*;
        (0..16).into_par_iter().for_each(|p| work(p * m / 16, (p + 1) * m / 16));
    } else {
        work(0, m);
    }
}

/// One butterfly layer of a large block, split in two so both cores share it (memory-bound).
fn top_butterfly<const FWD: bool>(lo: &mut [u64], hi: &mut [u64], s: u64, o: &FftOptions) {
    let be = o.backend;
    let run = move |l: &mut [u64], h: &mut [u64]| if FWD { be.butterfly_fwd(l, h, s) } else { be.butterfly_inv(l, h, s) };
    if 2 * lo.len() >= o.parallel_elems {
        use rayon::prelude::*;
        let piece = lo.len().div_ceil(16);
        lo.par_chunks_mut(piece).zip(hi.par_chunks_mut(piece)).for_each(|(l, h)| run(l, h));
    } else {
        run(lo, hi);
    }
}

fn ifft_leaf(d: &mut [u64], b: usize, tw: &Twiddles, be: Backend) {
    let n = d.len();
    let mut half = 1usize;
    let mut blocks = n / 2;
    if n >= 8 && be.bottom3::<false, _>(d, b * (n / 8), |i| tw.at(i)) {
        half = 8;
        blocks = n / 16;
    }
    while half < n {
        for k in 0..blocks {
            let blk = &mut d[2 * half * k..2 * half * (k + 1)];
            let (lo, hi) = blk.split_at_mut(half);
            be.butterfly_inv(lo, hi, tw.at(b * blocks + k));
        }
        half *= 2;
        blocks /= 2;
    }
}

/// Transform buffer (key-derived field elements): zeroed on creation, wiped on drop. Large
/// buffers are 2 MiB aligned and advised as transparent huge pages: a fresh 64 MiB buffer
/// otherwise costs 16k page faults and its strided passes miss the TLB. Wiped large buffers go
/// to a small pool (`POOL_MAX`) for the next block: the kernel would otherwise clear every fresh
/// huge page again (15 % of a 1e8-bit product). The pool only ever holds all-zero memory.
struct Points(Buf);

struct Buf {
    ptr: std::ptr::NonNull<u64>,
    len: usize,
    layout: std::alloc::Layout,
}

/// Wiped buffers kept for reuse (at most this many; 2 × 64 MiB at n = 1e8).
const POOL_MAX: usize = 2;
static POOL: std::sync::Mutex<Vec<Buf>> = std::sync::Mutex::new(Vec::new());

// SAFETY: Buf owns its allocation exclusively (like Vec<u64>).
unsafe impl Send for Buf {}
unsafe impl Sync for Buf {}

const HUGE_PAGE: usize = 2 << 20;

impl Buf {
    fn zeroed(len: usize) -> Buf {
        let bytes = (len * 8).max(8);
        let align = if bytes >= HUGE_PAGE { HUGE_PAGE } else { 64 };
        if bytes >= HUGE_PAGE {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = pool.iter().position(|b| b.layout.size() == bytes) {
                return pool.swap_remove(i); // wiped when it was returned
            }
        }
        let layout = std::alloc::Layout::from_size_align(bytes, align).expect("transform buffer layout");
        // SAFETY: non-zero size; the pointer is checked for null below.
        let raw = unsafe { std::alloc::alloc(layout) } as *mut u64;
        let Some(ptr) = std::ptr::NonNull::new(raw) else { std::alloc::handle_alloc_error(layout) };
        #[cfg(target_os = "linux")]
        if bytes >= HUGE_PAGE {
            extern "C" {
                fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
            }
            // SAFETY: [raw, raw + bytes) is our allocation, 2 MiB aligned; MADV_HUGEPAGE = 14 is
            // only a hint (failure is harmless), given before the pages are first touched.
            unsafe { madvise(raw as *mut std::ffi::c_void, bytes, 14) };
        }
        // SAFETY: `len` u64s fit in the allocation; zeroing makes every element initialised.
        unsafe { std::ptr::write_bytes(raw, 0, len) };
        Buf { ptr, len, layout }
    }
}

impl std::ops::Deref for Buf {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        // SAFETY: ptr is valid for len initialised u64s for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u64] {
        // SAFETY: as in `deref`, and &mut self is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if self.len >= 1 << 20 {
            use rayon::prelude::*;
            self.par_chunks_mut(1 << 16).for_each(|c| c.zeroize()); // 64 MiB: both cores
        } else {
            self.zeroize();
        }
        if self.layout.size() >= HUGE_PAGE {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL_MAX {
                // Hand the (now all-zero) allocation to the pool; the emptied shell frees nothing.
                let shell = Buf { ptr: self.ptr, len: self.len, layout: self.layout };
                self.layout = std::alloc::Layout::new::<()>();
                self.len = 0;
                pool.push(shell);
                return;
            }
        }
        if self.layout.size() > 0 {
            // SAFETY: allocated in `zeroed` with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr() as *mut u8, self.layout) };
        }
    }
}

/// 32-bit chunks of the first `bits` bits of `w` as field elements, zero-padded to `len`.
fn chunks(w: &[u64], bits: usize, len: usize) -> Points {
    let m = bits.div_ceil(32);
    let mut out = Points(Buf::zeroed(len));
    for (k, e) in out.0[..m].iter_mut().enumerate() {
        *e = (w[k / 2] >> (32 * (k % 2))) & 0xffff_ffff;
    }
    if bits % 32 != 0 {
        out.0[m - 1] &= (1u64 << (bits % 32)) - 1;
    }
    out
}

/// Number of transform points (log2) for a product of `a_bits` by `b_bits`.
pub fn log_points(a_bits: usize, b_bits: usize) -> usize {
    let m = a_bits.div_ceil(32) + b_bits.div_ceil(32) - 1;
    m.next_power_of_two().trailing_zeros() as usize
}

/// Words of the product a·b (a_bits + b_bits − 1 bits, LSB-first, ⌈that/64⌉ words).
/// Bits of the inputs past `a_bits`/`b_bits` are ignored.
pub fn mul(a: &[u64], a_bits: usize, b: &[u64], b_bits: usize, o: &FftOptions) -> Vec<u64> {
    mul_window(a, a_bits, b, b_bits, 0, a_bits + b_bits - 1, o)
}

/// Bits [start, start + len) of the product a·b as ⌈len/64⌉ words (bits past the product are 0).
pub fn mul_window(a: &[u64], a_bits: usize, b: &[u64], b_bits: usize, start: usize, len: usize, o: &FftOptions) -> Vec<u64> {
    assert!(a_bits > 0 && b_bits > 0 && a.len() * 64 >= a_bits && b.len() * 64 >= b_bits);
    let k = log_points(a_bits, b_bits);
    assert!(k <= 34, "product too long for the twiddle tables");
    let n = 1usize << k;
    let tw = Twiddles::get();
    let forward = |w: &[u64], bits: usize| {
        let mut p = chunks(w, bits, n);
        to_novel(&mut p.0, bits.div_ceil(32), o);
        fft(&mut p.0, 0, tw, o);
        p
    };
    let (mut pa, pb) = if o.parallel_elems != usize::MAX {
        rayon::join(|| forward(a, a_bits), || forward(b, b_bits))
    } else {
        (forward(a, a_bits), forward(b, b_bits))
    };
    if n >= o.parallel_elems {
        use rayon::prelude::*;
        pa.0.par_chunks_mut(1 << 14)
            .zip(pb.0.par_chunks(1 << 14))
            .for_each(|(x, y)| o.backend.mul_pointwise(x, y));
    } else {
        o.backend.mul_pointwise(&mut pa.0, &pb.0);
    }
    drop(pb);
    ifft(&mut pa.0, 0, tw, o);
    from_novel(&mut pa.0, o);
    // Overlap the 63-bit coefficients at 32-bit offsets: word w = c[2w] ^ c[2w−1]>>32 ^ c[2w+1]<<32.
    let c = &pa.0;
    let at = |i: usize| if i < n { c[i] } else { 0 };
    let word = |w: usize| at(2 * w) ^ (if w > 0 { at(2 * w - 1) >> 32 } else { 0 }) ^ (at(2 * w + 1) << 32);
    let (w0, sh) = (start / 64, start % 64);
    let mut out: Vec<u64> = (0..len.div_ceil(64))
        .map(|i| if sh == 0 { word(w0 + i) } else { (word(w0 + i) >> sh) | (word(w0 + i + 1) << (64 - sh)) })
        .collect();
    if len % 64 != 0 {
        *out.last_mut().expect("len > 0") &= (1u64 << (len % 64)) - 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gf64::mul_portable;

    fn xs(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Schoolbook carry-less product (bits), the obvious reference.
    fn slow_mul(a: &[u64], a_bits: usize, b: &[u64], b_bits: usize) -> Vec<u64> {
        let bit = |v: &[u64], i: usize| (v[i / 64] >> (i % 64)) & 1;
        let pb = a_bits + b_bits - 1;
        let mut out = vec![0u64; pb.div_ceil(64)];
        for i in 0..a_bits {
            if bit(a, i) == 1 {
                for j in 0..b_bits {
                    out[(i + j) / 64] ^= bit(b, j) << ((i + j) % 64);
                }
            }
        }
        out
    }

    #[test]
    fn cantor_basis_properties() {
        let b = cantor_basis();
        assert_eq!(b[0], 1);
        for i in 1..64 {
            assert_eq!(mul_portable(b[i], b[i]) ^ b[i], b[i - 1], "β_{i}");
        }
        // Linear independence: Gaussian elimination keeps 64 pivots.
        let mut rows: Vec<u64> = b.to_vec();
        let mut rank = 0;
        for bit in (0..64).rev() {
            if let Some(p) = (rank..64).find(|&r| (rows[r] >> bit) & 1 == 1) {
                rows.swap(rank, p);
                for r in 0..64 {
                    if r != rank && (rows[r] >> bit) & 1 == 1 {
                        rows[r] ^= rows[rank];
                    }
                }
                rank += 1;
            }
        }
        assert_eq!(rank, 64);
    }

    #[test]
    fn transforms_evaluate_at_the_subspace_points() {
        // fft(to_novel(f)) must hold f(ω_j) with ω_j = Σ j_m β_m: check by Horner at each point.
        let be = Backend::detect(false);
        let o = FftOptions { backend: be, parallel_elems: usize::MAX };
        let tw = Twiddles::get();
        let beta = cantor_basis();
        let mut s = 3u64;
        // 18..20: blocks above FUSE_ABOVE (fused layers, l = 1, 2, 3).
        for k in [1usize, 2, 3, 4, 5, 6, 8, 9, 13, 17, 18, 20] {
            let n = 1 << k;
            let f: Vec<u64> = (0..n).map(|_| xs(&mut s)).collect();
            let mut d = f.clone();
            let mut direct = f.clone();
            to_novel_direct(&mut direct, &o);
            to_novel(&mut d, n, &o);
            assert_eq!(d, direct, "split conversion = direct conversion k={k}");
            let mut back = d.clone();
            from_novel(&mut back, &o);
            assert_eq!(back, f, "basis conversion round trip k={k}");
            fft(&mut d, 0, tw, &o);
            for j in (0..n).step_by(1 + n / 37) {
                let w = (0..k).filter(|m| (j >> m) & 1 == 1).fold(0, |acc, m| acc ^ beta[m]);
                let v = f.iter().rev().fold(0u64, |acc, &c| be.mul(acc, w) ^ c);
                assert_eq!(d[j], v, "k={k} j={j}");
            }
            ifft(&mut d, 0, tw, &o);
            from_novel(&mut d, &o);
            assert_eq!(d, f, "inverse k={k}");
        }
    }

    #[test]
    fn split_conversion_matches_direct_on_sparse_inputs() {
        let mut s = 8u64;
        for k in [5usize, 9, 12, 17, 18] {
            let n = 1usize << k;
            for used in [1, 17, n / 3, n / 2, n / 2 + 1, n - 5, n] {
                let mut f: Vec<u64> = (0..n).map(|_| xs(&mut s)).collect();
                f[used..].iter_mut().for_each(|v| *v = 0);
                let (mut a, mut b) = (f.clone(), f.clone());
                for par in [false, true] {
                    let o = FftOptions { backend: Backend::Portable, parallel_elems: if par { 64 } else { usize::MAX } };
                    a.copy_from_slice(&f);
                    to_novel(&mut a, used, &o);
                    b.copy_from_slice(&f);
                    to_novel_direct(&mut b, &o);
                    assert_eq!(a, b, "k={k} used={used} par={par}");
                    assert!(a[used..].iter().all(|&v| v == 0), "novel basis is triangular");
                    from_novel(&mut a, &o);
                    assert_eq!(a, f, "round trip k={k} used={used}");
                }
            }
        }
    }

    #[test]
    fn windows_of_the_product_match_schoolbook() {
        let mut s = 21u64;
        let bit = |v: &[u64], i: usize| (v.get(i / 64).copied().unwrap_or(0) >> (i % 64)) & 1;
        for (ab, bb) in [(1usize, 1usize), (100, 37), (1000, 2999), (4096, 64)] {
            let a: Vec<u64> = (0..ab.div_ceil(64)).map(|_| xs(&mut s)).collect();
            let b: Vec<u64> = (0..bb.div_ceil(64)).map(|_| xs(&mut s)).collect();
            let full = slow_mul(&a, ab, &b, bb);
            let o = FftOptions::detect(false, false);
            for _ in 0..20 {
                let start = (xs(&mut s) as usize) % (ab + bb);
                let len = 1 + (xs(&mut s) as usize) % (ab + bb + 70 - start);
                let got = mul_window(&a, ab, &b, bb, start, len, &o);
                assert_eq!(got.len(), len.div_ceil(64));
                for i in 0..got.len() * 64 {
                    let want = if i < len { bit(&full, start + i) } else { 0 };
                    assert_eq!(bit(&got, i), want, "{ab}x{bb} start={start} len={len} bit {i}");
                }
            }
        }
    }

    #[test]
    fn known_answer_small_products() {
        let o = FftOptions::detect(false, false);
        // (z + 1)^2 = z^2 + 1; (z^2 + z + 1)(z + 1) = z^3 + 1; 0xff·0xff = 0x5555 (carry-less).
        assert_eq!(mul(&[0b11], 2, &[0b11], 2, &o), vec![0b101]);
        assert_eq!(mul(&[0b111], 3, &[0b11], 2, &o), vec![0b1001]);
        assert_eq!(mul(&[0xff], 8, &[0xff], 8, &o), vec![0x5555]);
        // 1 · z^100 across a word boundary.
        assert_eq!(mul(&[1], 1, &[0, 1 << 36], 101, &o), vec![0, 1 << 36]);
    }

    #[test]
    fn random_products_match_schoolbook() {
        let mut s = 11u64;
        let shapes: [(usize, usize); 13] = [(1, 1), (1, 64), (31, 33), (32, 32), (33, 1), (64, 64), (65, 129), (100, 1000), (1000, 777),
            (4095, 4097), (20_000, 3), (12_345, 6_789), (70_001, 30_000)];
        for (ab, bb) in shapes {
            let a: Vec<u64> = (0..ab.div_ceil(64)).map(|_| xs(&mut s)).collect();
            let b: Vec<u64> = (0..bb.div_ceil(64)).map(|_| xs(&mut s)).collect();
            let want = slow_mul(&a, ab, &b, bb);
            let mut opts = vec![FftOptions::detect(false, false), FftOptions::detect(false, true),
                FftOptions { backend: Backend::detect(false), parallel_elems: 4 }];
            if ab * bb < 2_000_000 {
                opts.push(FftOptions::detect(true, false));
            }
            if Backend::detect(false) == Backend::Avx512 {
                opts.push(FftOptions { backend: Backend::Pclmul, parallel_elems: usize::MAX });
            }
            for o in opts {
                assert_eq!(mul(&a, ab, &b, bb, &o), want, "{ab}x{bb} {o:?}");
            }
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clk: i32, tp: *mut Timespec) -> i32;
    }
    /// Process CPU seconds (the machine is shared: wall time is noisy).
    fn cpu() -> f64 {
        let mut t = Timespec { sec: 0, nsec: 0 };
        // SAFETY: CLOCK_PROCESS_CPUTIME_ID = 2 on Linux; `t` is a valid out-pointer.
        unsafe { clock_gettime(2, &mut t) };
        t.sec as f64 + t.nsec as f64 * 1e-9
    }

    /// `cargo test --release -p qkd-core -- --ignored fft_timing --nocapture` (PA_N=bits).
    #[test]
    #[ignore]
    fn fft_timing() {
        let n: usize = std::env::var("PA_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000_000);
        let (ab, bb) = (n + n / 2 - 1, n);
        let a: Vec<u64> = (0..ab.div_ceil(64)).map(|i| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
        let b: Vec<u64> = (0..bb.div_ceil(64)).map(|i| (i as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)).collect();
        for par in [false, true] {
            let o = FftOptions::detect(false, par);
            let tw = Twiddles::get();
            let len = 1usize << log_points(ab, bb);
            let mut p = chunks(&a, ab, len);
            let mut line = format!("n={n} par={par} {:?} 2^{} cpu s:", o.backend, len.trailing_zeros());
            let mut lap = |name: &str, t: &mut f64| {
                let now = cpu();
                line += &format!(" {name} {:.3}", now - *t);
                *t = now;
            };
            let mut t = cpu();
            to_novel(&mut p.0, ab.div_ceil(32), &o);
            lap("to_novel", &mut t);
            fft(&mut p.0, 0, tw, &o);
            lap("fft", &mut t);
            ifft(&mut p.0, 0, tw, &o);
            lap("ifft", &mut t);
            from_novel(&mut p.0, &o);
            lap("from_novel", &mut t);
            let w0 = std::time::Instant::now();
            let _ = mul(&a, ab, &b, bb, &o);
            lap("| mul", &mut t);
            eprintln!("{line} (wall {:.3})", w0.elapsed().as_secs_f64());
        }
        // Repeated full products on both cores: wall and CPU seconds of each run
        // (PA_BACKEND=pclmul measures the SSE path of CPUs without AVX-512).
        let mut o = FftOptions::detect(false, true);
        if std::env::var("PA_BACKEND").as_deref() == Ok("pclmul") && o.backend == Backend::Avx512 {
            o.backend = Backend::Pclmul;
        }
        let runs: Vec<String> = (0..5).map(|_| {
            let (c0, w0) = (cpu(), std::time::Instant::now());
            let _ = mul(&a, ab, &b, bb, &o);
            format!("{:.3}/{:.3}", w0.elapsed().as_secs_f64(), cpu() - c0)
        }).collect();
        eprintln!("n={n} {:?} mul wall/cpu s: {}", o.backend, runs.join(" "));
    }
}
