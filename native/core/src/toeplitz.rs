//! Privacy amplification by Toeplitz hashing (Carter–Wegman 2-universal family; Krawczyk 1994).
//!
//! Definition (matches randextract's `ToeplitzHashing` up to the seed order, see the TS test):
//! input x (n bits), seed t (n + ℓ − 1 bits), output y (ℓ bits),
//!
//!   y_i = XOR_{j<n} T[i][j] · x_j,   T[i][j] = t[i − j + n − 1]
//!
//! i.e. y is bits [n − 1, n + ℓ − 1) of the carry-less product t(z)·x(z): a "middle product".
//!
//! Two algorithms, chosen per size by a cost model fitted to measurements (`Algorithm::Auto`,
//! docs/postprocessing.md §4):
//!
//! - Large blocks: the full product t·x by the additive FFT over GF(2^64) of `gf2x_fft`
//!   (O(N log N), N = (2n + ℓ)/32 points), then the window is cut out.
//! - Small blocks and thin shapes (ℓ ≪ n): the ℓ×n matrix is tiled into m×m Toeplitz blocks;
//!   each block product uses the Toeplitz Karatsuba split
//!   [y0; y1] = [[B, A], [C, B]] · [x0; x1]:   P = B(x0 + x1),  y0 = P + (A + B) x1,  y1 = P + (C + B) x0
//!   (three half-size Toeplitz products; A, B, C are windows of the seed at offsets 0, h, 2h, so
//!   A + B and C + B are Toeplitz again), down to a schoolbook base case on 64-bit words using
//!   carry-less multiplication (PCLMULQDQ). O(m^1.585) word operations per block; the three
//!   sub-products and the tiles run in parallel with rayon above a size threshold.
use crate::bits::{words_for, KeyBits};
use crate::clmul::Clmul;
use crate::gf2x_fft;
use crate::{CoreError, Result};
use zeroize::Zeroize;

/// Which multiplication computes the middle product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// The one with the smaller estimated time (`estimated_seconds`, fitted to measurements).
    Auto,
    Karatsuba,
    /// Additive FFT over GF(2^64) (`gf2x_fft`): full product, then the window is cut out.
    Fft,
}

/// Single-core seconds each algorithm is expected to take, fitted to `crossover` runs on the
/// dev machine (docs/postprocessing.md §4): Karatsuba ≈ 5e-12 s · tiles · m^1.585 (m×m tiles,
/// m = min(n, ℓ)); FFT ≈ 2.5e-9 s · k·2^k (2^k transform points). Both constants drift by 2x
/// between in-cache and memory-bound sizes; they only decide near the crossover (n ≈ 2e5 at
/// ℓ = n/2, n ≈ 2e6 at ℓ = n/10), where the two times are close anyway.
pub fn estimated_seconds(n: usize, out_len: usize) -> (f64, f64) {
    let m = n.min(out_len).max(1) as f64;
    let tiles = (n as f64 / m).ceil() * (out_len as f64 / m).ceil();
    let k = gf2x_fft::log_points(n + out_len - 1, n) as f64;
    (5e-12 * tiles * m.powf(1.585), 2.5e-9 * k * k.exp2())
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub algorithm: Algorithm,
    /// Base-case size in 64-bit words (schoolbook below it).
    pub base_words: usize,
    /// Run sub-products on the rayon pool at or above this size (words); usize::MAX = serial.
    pub parallel_words: usize,
    /// Force the portable carry-less multiply.
    pub portable: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { algorithm: Algorithm::Auto, base_words: 32, parallel_words: 2048, portable: false }
    }
}

/// Scratch vectors that may hold key-derived data are wiped before they are freed.
struct Scratch(Vec<u64>);
impl Drop for Scratch {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Hardware base case, product scanning: for each needed column j = a + b of the word-level
/// product (j in [W−1, 2W−1]) the 128-bit sum of s[j−b]·x[b] over all b stays in a register
/// (two products per pair of 16-byte loads), then y[k] = lo(col k) ^ hi(col k−1). PCLMULQDQ is
/// inlined because this is a `#[target_feature]` function (a call per product was 5x slower).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
unsafe fn base_case_hw(s: &[u64], x: &[u64], y: &mut [u64]) {
    use std::arch::x86_64::*;
    let w = x.len();
    debug_assert!(s.len() == 2 * w && y.len() == w && w >= 1);
    let sp = s.as_ptr();
    let xp = x.as_ptr();
    let mut prev_hi = 0u64;
    for j in (w - 1)..(2 * w) {
        let mut acc0 = _mm_setzero_si128();
        let mut acc1 = _mm_setzero_si128();
        let mut b = 0usize;
        // SAFETY: for b + 1 < w: j − b − 1 >= w − 1 − (w − 2) − 1 = 0 and j − b <= 2w − 1, so the
        // 16-byte loads at s[j−b−1] and x[b] stay inside s (2w words) and x (w words).
        while b + 1 < w {
            let sv = _mm_loadu_si128(sp.add(j - b - 1) as *const __m128i); // [s[j-b-1], s[j-b]]
            let xv = _mm_loadu_si128(xp.add(b) as *const __m128i); // [x[b], x[b+1]]
            acc0 = _mm_xor_si128(acc0, _mm_clmulepi64_si128(sv, xv, 0x01)); // s[j-b]·x[b]
            acc1 = _mm_xor_si128(acc1, _mm_clmulepi64_si128(sv, xv, 0x10)); // s[j-b-1]·x[b+1]
            b += 2;
        }
        if b < w {
            // SAFETY: b = w − 1 here and j − b in [0, w], inside s; x[b] inside x.
            let sv = _mm_loadl_epi64(sp.add(j - b) as *const __m128i);
            let xv = _mm_loadl_epi64(xp.add(b) as *const __m128i);
            acc0 = _mm_xor_si128(acc0, _mm_clmulepi64_si128(sv, xv, 0x00));
        }
        let col = _mm_xor_si128(acc0, acc1);
        if j >= w {
            y[j - w] = (_mm_cvtsi128_si64(col) as u64) ^ prev_hi;
        }
        prev_hi = _mm_extract_epi64::<1>(col) as u64;
    }
}

/// y = words [W, 2W) of s·x  (s: 2W words, x: W words, y: W words).
fn base_case(s: &[u64], x: &[u64], y: &mut [u64], c: &Clmul) {
    #[cfg(target_arch = "x86_64")]
    {
        if c.is_hardware() && x.len() <= 64 {
            // SAFETY: `is_hardware()` is only true after runtime detection of PCLMULQDQ/SSE2; SSE4.1
            // is checked here; lengths are as documented (s = 2·x).
            if std::is_x86_feature_detected!("sse4.1") {
                unsafe { base_case_hw(s, x, y) };
                return;
            }
        }
    }
    base_case_portable(s, x, y, c);
}

fn base_case_portable(s: &[u64], x: &[u64], y: &mut [u64], c: &Clmul) {
    let w = x.len();
    let mut acc = [0u64; 130];
    debug_assert!(2 * w + 2 <= acc.len());
    for (b, &xb) in x.iter().enumerate() {
        if xb == 0 {
            continue;
        }
        let a_lo = (w - 1).saturating_sub(b);
        let a_hi = (2 * w - b).min(2 * w); // exclusive
        for a in a_lo..a_hi {
            let (lo, hi) = c.mul(s[a], xb);
            acc[a + b] ^= lo;
            acc[a + b + 1] ^= hi;
        }
    }
    y.copy_from_slice(&acc[w..2 * w]);
    acc.zeroize();
}

/// Serial recursion without allocation: `scratch` must hold at least 6·W words (each level uses
/// 3·W: x0+x1, A+B, C+B, one temporary; the children reuse the rest). P is computed straight
/// into y0 and copied to y1, then the two corrections are XORed in.
fn mp_serial(s: &[u64], x: &[u64], y: &mut [u64], c: &Clmul, o: &Options, scratch: &mut [u64]) {
    let w = x.len();
    if w <= o.base_words {
        base_case(s, x, y, c);
        return;
    }
    if w % 2 == 1 {
        mp_padded(s, x, y, c, o);
        return;
    }
    let h = w / 2;
    let (x0, x1) = x.split_at(h);
    let (xs, rest) = scratch.split_at_mut(h);
    let (ab, rest) = rest.split_at_mut(2 * h);
    let (cb, rest) = rest.split_at_mut(2 * h);
    let (tmp, rest) = rest.split_at_mut(h);
    for i in 0..h {
        xs[i] = x0[i] ^ x1[i];
    }
    for i in 0..2 * h {
        ab[i] = s[i] ^ s[h + i];
        cb[i] = s[2 * h + i] ^ s[h + i];
    }
    let (y0, y1) = y.split_at_mut(h);
    mp_serial(&s[h..3 * h], xs, y0, c, o, rest);
    y1.copy_from_slice(y0);
    mp_serial(ab, x1, tmp, c, o, rest);
    for i in 0..h {
        y0[i] ^= tmp[i];
    }
    mp_serial(cb, x0, tmp, c, o, rest);
    for i in 0..h {
        y1[i] ^= tmp[i];
    }
}

/// Odd W: pad to W+1 (prefix one zero word to the seed, which shifts the diagonal alignment
/// back, and append a zero word to x); the extra output word is dropped. Tile sizes are chosen
/// as b·2^k so this only happens with unusual base sizes (tests force it).
fn mp_padded(s: &[u64], x: &[u64], y: &mut [u64], c: &Clmul, o: &Options) {
    let w = x.len();
    let mut s2 = Scratch(Vec::with_capacity(2 * w + 2));
    s2.0.push(0);
    s2.0.extend_from_slice(s);
    s2.0.push(0);
    let mut x2 = Scratch(Vec::with_capacity(w + 1));
    x2.0.extend_from_slice(x);
    x2.0.push(0);
    let mut y2 = Scratch(vec![0u64; w + 1]);
    mp(&s2.0, &x2.0, &mut y2.0, c, o);
    y.copy_from_slice(&y2.0[..w]);
}

fn mp(s: &[u64], x: &[u64], y: &mut [u64], c: &Clmul, o: &Options) {
    let w = x.len();
    debug_assert_eq!(s.len(), 2 * w);
    debug_assert_eq!(y.len(), w);
    if w <= o.base_words {
        base_case(s, x, y, c);
        return;
    }
    if w < o.parallel_words && w % 2 == 0 {
        let mut scratch = Scratch(vec![0u64; 6 * w + 8]);
        mp_serial(s, x, y, c, o, &mut scratch.0);
        return;
    }
    if w % 2 == 1 {
        mp_padded(s, x, y, c, o);
        return;
    }
    let h = w / 2;
    let (x0, x1) = x.split_at(h);
    let a = &s[0..2 * h];
    let b = &s[h..3 * h];
    let cc = &s[2 * h..4 * h];
    let xs = Scratch(x0.iter().zip(x1).map(|(p, q)| p ^ q).collect());
    let ab = Scratch(a.iter().zip(b).map(|(p, q)| p ^ q).collect());
    let cb = Scratch(cc.iter().zip(b).map(|(p, q)| p ^ q).collect());
    let mut p = Scratch(vec![0u64; h]);
    let mut q = Scratch(vec![0u64; h]);
    let mut r = Scratch(vec![0u64; h]);
    if w >= o.parallel_words {
        rayon::join(
            || mp(b, &xs.0, &mut p.0, c, o),
            || rayon::join(|| mp(&ab.0, x1, &mut q.0, c, o), || mp(&cb.0, x0, &mut r.0, c, o)),
        );
    } else {
        mp(b, &xs.0, &mut p.0, c, o);
        mp(&ab.0, x1, &mut q.0, c, o);
        mp(&cb.0, x0, &mut r.0, c, o);
    }
    let (y0, y1) = y.split_at_mut(h);
    for i in 0..h {
        y0[i] = p.0[i] ^ q.0[i];
        y1[i] = p.0[i] ^ r.0[i];
    }
}

/// Copy of `src` (len bits) shifted up by `shift` bits into a zeroed vector of `out_words` words.
fn shifted_copy(src: &[u64], len: usize, shift: usize, out_words: usize) -> Vec<u64> {
    let mut out = vec![0u64; out_words];
    let (ws, bs) = (shift / 64, shift % 64);
    let nw = words_for(len);
    for i in 0..nw {
        let v = src[i];
        if ws + i < out_words {
            out[ws + i] |= v << bs;
        }
        if bs != 0 && ws + i + 1 < out_words {
            out[ws + i + 1] |= v >> (64 - bs);
        }
    }
    out
}

fn check(x: &KeyBits, t: &KeyBits, out_len: usize) -> Result<()> {
    if x.is_empty() {
        return Err(CoreError::new("PA_EMPTY", "privacy amplification needs a non-empty input block"));
    }
    if out_len > x.len() {
        return Err(CoreError::new("PA_BAD_LENGTH", format!(
            "output length {out_len} exceeds input length {}; the secret length cannot exceed the block", x.len())));
    }
    if out_len > 0 && t.len() != x.len() + out_len - 1 {
        return Err(CoreError::new("PA_BAD_SEED", format!(
            "Toeplitz seed has {} bits; need n + l - 1 = {} (fresh random per block)",
            t.len(), x.len() + out_len - 1)));
    }
    Ok(())
}

/// The algorithm `o` selects for these lengths (`Auto` resolved).
pub fn chosen_algorithm(n: usize, out_len: usize, o: &Options) -> Algorithm {
    match o.algorithm {
        Algorithm::Auto if out_len == 0 => Algorithm::Karatsuba,
        Algorithm::Auto => {
            let (k, f) = estimated_seconds(n, out_len);
            if f < k { Algorithm::Fft } else { Algorithm::Karatsuba }
        }
        a => a,
    }
}

/// Fast Toeplitz hash with explicit options (tests and benchmarks choose paths).
pub fn toeplitz_hash_with(x: &KeyBits, t: &KeyBits, out_len: usize, o: &Options) -> Result<KeyBits> {
    check(x, t, out_len)?;
    if out_len == 0 {
        return Ok(KeyBits::zeros(0));
    }
    match chosen_algorithm(x.len(), out_len, o) {
        Algorithm::Fft => Ok(by_fft(x, t, out_len, o)),
        _ => Ok(by_karatsuba(x, t, out_len, o)),
    }
}

/// y = bits [n − 1, n + ℓ − 1) of the full product t·x from the additive FFT.
fn by_fft(x: &KeyBits, t: &KeyBits, out_len: usize, o: &Options) -> KeyBits {
    let fo = gf2x_fft::FftOptions::detect(o.portable, o.parallel_words != usize::MAX);
    let n = x.len();
    KeyBits::from_words(gf2x_fft::mul_window(t.words(), t.len(), x.words(), n, n - 1, out_len, &fo), out_len)
}

fn by_karatsuba(x: &KeyBits, t: &KeyBits, out_len: usize, o: &Options) -> KeyBits {
    let c = if o.portable { Clmul::portable() } else { Clmul::detect() };
    let n = x.len();
    // Square tiles of m = 64·W bits, W from the shorter side (at least the base size).
    // W = b·2^k with b <= base: every Karatsuba split is even down to the base case (no padding
    // copies); the round-up wastes at most 1/b of the tile.
    let w0 = words_for(out_len.min(n)).max(1);
    let mut k = 0u32;
    while w0.div_ceil(1 << k) > o.base_words {
        k += 1;
    }
    let w = w0.div_ceil(1 << k) << k;
    let m = 64 * w;
    let rows = out_len.div_ceil(m);
    let cols = n.div_ceil(m);
    // u[p] = t[p − P] with P = cols·m − n + 1, so tile (r, c) reads seed words from
    // (r − c − 1 + cols)·W, always word-aligned and non-negative.
    let pad = cols * m - n + 1;
    let u = Scratch(shifted_copy(t.words(), t.len(), pad, (rows + cols) * w));
    let mut xp = Scratch(vec![0u64; cols * w]);
    xp.0[..x.words().len()].copy_from_slice(x.words());
    let mut y = vec![0u64; rows * w];
    let tile = |r: usize, col: usize| -> Scratch {
        let start = (r + cols - col - 1) * w;
        let mut out = Scratch(vec![0u64; w]);
        mp(&u.0[start..start + 2 * w], &xp.0[col * w..(col + 1) * w], &mut out.0, &c, o);
        out
    };
    use rayon::prelude::*;
    for r in 0..rows {
        let parts: Vec<Scratch> = if w >= o.parallel_words {
            (0..cols).into_par_iter().map(|col| tile(r, col)).collect()
        } else {
            (0..cols).map(|col| tile(r, col)).collect()
        };
        let yr = &mut y[r * w..(r + 1) * w];
        for p in &parts {
            for (a, b) in yr.iter_mut().zip(&p.0) {
                *a ^= b;
            }
        }
    }
    xp.0.zeroize();
    KeyBits::from_words(y, out_len)
}

/// Fast Toeplitz hash (default options: hardware clmul when present, multi-threaded).
pub fn toeplitz_hash(x: &KeyBits, t: &KeyBits, out_len: usize) -> Result<KeyBits> {
    toeplitz_hash_with(x, t, out_len, &Options::default())
}

/// Reference: the definition, word-parallel only in the dot product. With r = reverse(t),
/// y_i = parity(x AND r[ℓ−1−i .. ℓ−1−i+n)). O(n·ℓ/64).
pub fn toeplitz_hash_reference(x: &KeyBits, t: &KeyBits, out_len: usize) -> Result<KeyBits> {
    check(x, t, out_len)?;
    let n = x.len();
    let nt = t.len();
    let mut rev = KeyBits::zeros(nt);
    for q in 0..nt {
        if t.get(nt - 1 - q) {
            rev.set(q, true);
        }
    }
    let mut y = KeyBits::zeros(out_len);
    for i in 0..out_len {
        let win = rev.slice(out_len - 1 - i, n);
        let par = win.words().iter().zip(x.words()).fold(0u32, |acc, (a, b)| acc ^ (a & b).count_ones()) & 1;
        y.set(i, par == 1);
    }
    Ok(y)
}

/// Bit-by-bit reference straight from the definition (tiny sizes only).
pub fn toeplitz_hash_naive(x: &[bool], t: &[bool], out_len: usize) -> Vec<bool> {
    let n = x.len();
    (0..out_len)
        .map(|i| (0..n).fold(false, |acc, j| acc ^ (t[i + n - 1 - j] & x[j])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    fn rnd(seed: &mut u64, n: usize) -> Vec<bool> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed & 1 == 1
            })
            .collect()
    }
    #[test]
    fn naive_vs_reference_vs_fast() {
        let mut s = 77u64;
        for &(n, l) in &[(1, 1), (2, 1), (5, 3), (64, 64), (65, 1), (100, 37), (300, 299), (1000, 10), (777, 500)] {
            let xb = rnd(&mut s, n);
            let tb = rnd(&mut s, n + l - 1);
            let want = toeplitz_hash_naive(&xb, &tb, l);
            let x = KeyBits::from_bools(&xb);
            let t = KeyBits::from_bools(&tb);
            let r = toeplitz_hash_reference(&x, &t, l).unwrap();
            assert_eq!(r.words(), KeyBits::from_bools(&want).words(), "reference n={n} l={l}");
            for o in [
                Options { algorithm: Algorithm::Karatsuba, base_words: 1, parallel_words: usize::MAX, portable: true },
                Options { algorithm: Algorithm::Karatsuba, base_words: 2, parallel_words: 4, portable: false },
                Options::default(),
                Options { algorithm: Algorithm::Fft, ..Options::default() },
                Options { algorithm: Algorithm::Fft, portable: true, parallel_words: usize::MAX, ..Options::default() },
            ] {
                let f = toeplitz_hash_with(&x, &t, l, &o).unwrap();
                assert_eq!(f.words(), r.words(), "fast n={n} l={l} {o:?}");
            }
        }
    }
    #[test]
    fn larger_random_shapes() {
        let mut s = 99u64;
        for &(n, l) in &[(20_000, 9_000), (12_345, 12_345), (50_001, 777), (4_096, 4_000), (30_000, 29_999)] {
            let x = KeyBits::from_bools(&rnd(&mut s, n));
            let t = KeyBits::from_bools(&rnd(&mut s, n + l - 1));
            let r = toeplitz_hash_reference(&x, &t, l).unwrap();
            for o in [Options { algorithm: Algorithm::Karatsuba, base_words: 3, parallel_words: 64, portable: false }, Options::default(),
                Options { algorithm: Algorithm::Fft, ..Options::default() }] {
                assert_eq!(toeplitz_hash_with(&x, &t, l, &o).unwrap().words(), r.words(), "n={n} l={l}");
            }
        }
    }
    #[test]
    fn fft_and_karatsuba_agree_on_random_shapes() {
        // Random n and ℓ (odd lengths, ℓ = 1, n = 1, ℓ = n), plus shapes whose chunk count sits
        // just below / above a power-of-two transform length (the Auto choice is tested separately).
        let mut s = 2024u64;
        let mut next = |m: usize| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % m as u64) as usize
        };
        let mut shapes: Vec<(usize, usize)> = (0..40).map(|_| {
            let n = 1 + next(40_000);
            (n, 1 + next(n))
        }).collect();
        shapes.extend([(1, 1), (2, 1), (2, 2), (31, 31), (32, 1), (33, 33), (4096, 1), (1, 1), (64 * 32 + 1, 64 * 32),
            // 32·(chunks of t + chunks of x − 1) = 2^k·32 exactly and one bit more
            (2048 * 32, 1024 * 32 + 1), (2048 * 32, 1024 * 32 + 2), (300_000, 224_289), (400_000, 1), (1, 1),
            // transforms of 2^18 and 2^20 points: fused top layers in the FFT
            (3_000_001, 1_400_003), (10_000_000, 7_000_001)]);
        for (n, l) in shapes {
            let x = KeyBits::from_bools(&rnd(&mut s, n));
            let t = KeyBits::from_bools(&rnd(&mut s, n + l - 1));
            let k = toeplitz_hash_with(&x, &t, l, &Options { algorithm: Algorithm::Karatsuba, ..Options::default() }).unwrap();
            let f = toeplitz_hash_with(&x, &t, l, &Options { algorithm: Algorithm::Fft, ..Options::default() }).unwrap();
            assert_eq!(f.words(), k.words(), "n={n} l={l}");
            if n * l < 50_000_000 {
                assert_eq!(k.words(), toeplitz_hash_reference(&x, &t, l).unwrap().words(), "ref n={n} l={l}");
            }
        }
    }
    /// Crossover measurement: `cargo test --release -p qkd-core -- --ignored crossover --nocapture`.
    #[test]
    #[ignore]
    fn crossover() {
        let mut s = 5u64;
        for n in [30_000usize, 100_000, 200_000, 400_000, 1_000_000, 3_000_000, 10_000_000] {
            for l in [n / 2, n / 10] {
                let x = KeyBits::from_bools(&rnd(&mut s, n));
                let t = KeyBits::from_bools(&rnd(&mut s, n + l - 1));
                let mut line = format!("n={n} l={l}");
                for par in [usize::MAX] {
                    for a in [Algorithm::Karatsuba, Algorithm::Fft] {
                        let o = Options { algorithm: a, parallel_words: par, ..Options::default() };
                        let mut best = f64::MAX;
                        for _ in 0..5 {
                            let t0 = std::time::Instant::now();
                            let _ = toeplitz_hash_with(&x, &t, l, &o).unwrap();
                            best = best.min(t0.elapsed().as_secs_f64());
                        }
                        line += &format!(" {a:?}/{}={:.4}s", if par == usize::MAX { 1 } else { 2 }, best);
                    }
                }
                eprintln!("{line}");
            }
        }
    }
    #[test]
    fn auto_picks_karatsuba_small_and_fft_large() {
        let o = Options::default();
        assert_eq!(chosen_algorithm(10_000, 5_000, &o), Algorithm::Karatsuba);
        assert_eq!(chosen_algorithm(100_000_000, 50_000_000, &o), Algorithm::Fft);
        assert_eq!(chosen_algorithm(100_000_000, 10_000_000, &o), Algorithm::Fft);
        assert_eq!(chosen_algorithm(10_000, 5_000, &Options { algorithm: Algorithm::Fft, ..o }), Algorithm::Fft);
    }
}
