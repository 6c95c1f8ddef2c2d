//! GF(2^64) = GF(2)[z] / (z^64 + z^4 + z^3 + z + 1) and the slice kernels of the additive FFT
//! (`gf2x_fft`): butterflies with a constant twiddle and the pointwise product.
//!
//! Three backends, chosen once per call at run time: AVX-512 + VPCLMULQDQ (8 products per
//! instruction pair), SSE PCLMULQDQ (2 per pair), and a portable table multiply that tests force
//! (`Backend::Portable`) to prove the others agree with it.
use crate::clmul::clmul_portable;

/// Low part of the reduction polynomial: z^64 = z^4 + z^3 + z + 1 (irreducible; a test checks it).
pub const POLY_LOW: u64 = 0x1b;

/// Reduces the 128-bit carry-less product hi·z^64 + lo. hi·(z^4+z^3+z+1) has up to 68 bits; its
/// top 4 bits `o` fold once more and then fit (o < 2^4, o·0x1b < 2^8). Shifts distribute over
/// XOR, so both folds are one multiply of h = hi ^ o by z^4+z^3+z+1 (truncated to 64 bits).
#[inline(always)]
pub fn reduce(lo: u64, hi: u64) -> u64 {
    let h = hi ^ (hi >> 60) ^ (hi >> 61) ^ (hi >> 63);
    lo ^ h ^ (h << 1) ^ (h << 3) ^ (h << 4)
}

/// Field product, portable.
#[inline]
pub fn mul_portable(a: u64, b: u64) -> u64 {
    let (lo, hi) = clmul_portable(a, b);
    reduce(lo, hi)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Portable,
    Pclmul,
    Avx512,
}

impl Backend {
    /// Best backend on this CPU; `portable` forces the portable one.
    pub fn detect(portable: bool) -> Backend {
        if portable || !crate::clmul::hardware_available() {
            return Backend::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("vpclmulqdq")
            {
                return Backend::Avx512;
            }
            if std::is_x86_feature_detected!("sse4.1") {
                return Backend::Pclmul;
            }
        }
        Backend::Portable
    }

    /// Scalar field product (the hardware multiply when available).
    #[inline]
    pub fn mul(self, a: u64, b: u64) -> u64 {
        match self {
            Backend::Portable => mul_portable(a, b),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: non-portable backends are only returned by `detect` after PCLMULQDQ was seen.
            _ => unsafe { x86::mul1(a, b) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => mul_portable(a, b),
        }
    }

    /// Forward butterfly over two halves: lo[j] += s·hi[j]; hi[j] += lo[j].
    pub fn butterfly_fwd(self, lo: &mut [u64], hi: &mut [u64], s: u64) {
        self.butterfly::<true>(lo, hi, s);
    }

    /// Inverse butterfly: hi[j] += lo[j]; lo[j] += s·hi[j].
    pub fn butterfly_inv(self, lo: &mut [u64], hi: &mut [u64], s: u64) {
        self.butterfly::<false>(lo, hi, s);
    }

    fn butterfly<const FWD: bool>(self, lo: &mut [u64], hi: &mut [u64], s: u64) {
        debug_assert_eq!(lo.len(), hi.len());
        if s == 0 {
            xor_into(hi, lo);
            return;
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detect` returned Avx512 only after seeing AVX-512F and VPCLMULQDQ.
            Backend::Avx512 => unsafe { x86::butterfly_avx512::<FWD>(lo, hi, s) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detect` returned Pclmul only after seeing PCLMULQDQ and SSE4.1.
            Backend::Pclmul => unsafe { x86::butterfly_sse::<FWD>(lo, hi, s) },
            _ => {
                for (l, h) in lo.iter_mut().zip(hi.iter_mut()) {
                    if FWD {
                        *l ^= mul_portable(s, *h);
                        *h ^= *l;
                    } else {
                        *h ^= *l;
                        *l ^= mul_portable(s, *h);
                    }
                }
            }
        }
    }

    /// The three bottom layers (halves 4, 2, 1) of every 8-element block of d with AVX-512:
    /// block k has index `first + k` at the layer of half 4, and its sub-blocks 2(first+k)+{0,1}
    /// and 4(first+k)+{0..3} below (`tw` gives a block's twiddle). Returns false (and does
    /// nothing) on other backends, whose callers run the generic loop instead.
    pub fn bottom3<const FWD: bool, F: Fn(usize) -> u64>(self, d: &mut [u64], first: usize, tw: F) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 if d.len() % 8 == 0 => {
                // SAFETY: `detect` returned Avx512 only after seeing AVX-512F and VPCLMULQDQ.
                unsafe { x86::bottom3_avx512::<FWD, F>(d, first, tw) };
                true
            }
            _ => false,
        }
    }

    /// a[j] = a[j]·b[j].
    pub fn mul_pointwise(self, a: &mut [u64], b: &[u64]) {
        debug_assert_eq!(a.len(), b.len());
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `butterfly_fwd`.
            Backend::Avx512 => unsafe { x86::pointwise_avx512(a, b) },
            _ => {
                for (p, &q) in a.iter_mut().zip(b) {
                    *p = self.mul(*p, q);
                }
            }
        }
    }
}

/// dst ^= src (the XOR passes of the basis conversion), with AVX-512 when present.
#[inline]
pub fn xor_into(dst: &mut [u64], src: &[u64]) {
    #[cfg(target_arch = "x86_64")]
    {
        static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *WIDE.get_or_init(|| std::is_x86_feature_detected!("avx512f")) {
            // SAFETY: AVX-512F was detected at run time.
            unsafe { x86::xor_into_avx512(dst, src) };
            return;
        }
    }
    xor_loop(dst, src);
}

#[inline(always)]
fn xor_loop(dst: &mut [u64], src: &[u64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::reduce;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn xor_into_avx512(dst: &mut [u64], src: &[u64]) {
        super::xor_loop(dst, src); // auto-vectorised with 512-bit registers
    }

    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    pub unsafe fn mul1(a: u64, b: u64) -> u64 {
        let r = _mm_clmulepi64_si128(_mm_cvtsi64_si128(a as i64), _mm_cvtsi64_si128(b as i64), 0x00);
        reduce(_mm_cvtsi128_si64(r) as u64, _mm_extract_epi64::<1>(r) as u64)
    }

    /// Reduces two 128-bit products held as (low qwords, high qwords) lane-wise.
    #[inline(always)]
    unsafe fn reduce_sse(lo: __m128i, hi: __m128i) -> __m128i {
        let o = _mm_xor_si128(_mm_xor_si128(_mm_srli_epi64(hi, 60), _mm_srli_epi64(hi, 61)), _mm_srli_epi64(hi, 63));
        let h = _mm_xor_si128(hi, o);
        let h13 = _mm_xor_si128(_mm_slli_epi64(h, 1), _mm_slli_epi64(h, 3));
        _mm_xor_si128(_mm_xor_si128(lo, h), _mm_xor_si128(h13, _mm_slli_epi64(h, 4)))
    }

    /// [v0·s, v1·s] for v = [v0, v1] and s in the low qword of `s`.
    #[inline(always)]
    unsafe fn mul2_const(v: __m128i, s: __m128i) -> __m128i {
        let p0 = _mm_clmulepi64_si128(v, s, 0x00);
        let p1 = _mm_clmulepi64_si128(v, s, 0x01);
        reduce_sse(_mm_unpacklo_epi64(p0, p1), _mm_unpackhi_epi64(p0, p1))
    }

    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    pub unsafe fn butterfly_sse<const FWD: bool>(lo: &mut [u64], hi: &mut [u64], s: u64) {
        let n = lo.len().min(hi.len());
        let sv = _mm_cvtsi64_si128(s as i64);
        let (lp, hp) = (lo.as_mut_ptr(), hi.as_mut_ptr());
        let mut j = 0;
        // SAFETY: j + 2 <= n, so both 16-byte accesses stay inside `lo` and `hi`.
        while j + 2 <= n {
            let mut l = _mm_loadu_si128(lp.add(j) as *const __m128i);
            let mut h = _mm_loadu_si128(hp.add(j) as *const __m128i);
            if FWD {
                l = _mm_xor_si128(l, mul2_const(h, sv));
                h = _mm_xor_si128(h, l);
            } else {
                h = _mm_xor_si128(h, l);
                l = _mm_xor_si128(l, mul2_const(h, sv));
            }
            _mm_storeu_si128(lp.add(j) as *mut __m128i, l);
            _mm_storeu_si128(hp.add(j) as *mut __m128i, h);
            j += 2;
        }
        for k in j..n {
            if FWD {
                lo[k] ^= mul1(s, hi[k]);
                hi[k] ^= lo[k];
            } else {
                hi[k] ^= lo[k];
                lo[k] ^= mul1(s, hi[k]);
            }
        }
    }

    #[inline(always)]
    unsafe fn xor3(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
        _mm512_ternarylogic_epi64::<0x96>(a, b, c)
    }

    /// Reduction of 8 products given as low and high qwords (element order).
    #[inline(always)]
    unsafe fn reduce_avx512(lo: __m512i, hi: __m512i) -> __m512i {
        let h = _mm512_xor_si512(xor3(hi, _mm512_srli_epi64::<60>(hi), _mm512_srli_epi64::<61>(hi)), _mm512_srli_epi64::<63>(hi));
        let a = xor3(_mm512_slli_epi64::<1>(h), _mm512_slli_epi64::<3>(h), _mm512_slli_epi64::<4>(h));
        xor3(lo, h, a)
    }

    /// Products of the 8 qwords of `v` with those of `s` (imm 0x00/0x11) or with the low qword
    /// of each lane of `s` (imm 0x00/0x01, broadcast constant).
    #[inline(always)]
    unsafe fn mul8<const ODD: i32>(v: __m512i, s: __m512i) -> __m512i {
        let p0 = _mm512_clmulepi64_epi128::<0x00>(v, s);
        let p1 = _mm512_clmulepi64_epi128::<ODD>(v, s);
        reduce_avx512(_mm512_unpacklo_epi64(p0, p1), _mm512_unpackhi_epi64(p0, p1))
    }

    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.1")]
    pub unsafe fn butterfly_avx512<const FWD: bool>(lo: &mut [u64], hi: &mut [u64], s: u64) {
        let n = lo.len().min(hi.len());
        let sv = _mm512_set1_epi64(s as i64);
        let (lp, hp) = (lo.as_mut_ptr(), hi.as_mut_ptr());
        let mut j = 0;
        // SAFETY: j + 8 <= n, so the 64-byte accesses stay inside `lo` and `hi`.
        while j + 8 <= n {
            let mut l = _mm512_loadu_si512(lp.add(j) as *const _);
            let mut h = _mm512_loadu_si512(hp.add(j) as *const _);
            if FWD {
                l = _mm512_xor_si512(l, mul8::<0x01>(h, sv));
                h = _mm512_xor_si512(h, l);
            } else {
                h = _mm512_xor_si512(h, l);
                l = _mm512_xor_si512(l, mul8::<0x01>(h, sv));
            }
            _mm512_storeu_si512(lp.add(j) as *mut _, l);
            _mm512_storeu_si512(hp.add(j) as *mut _, h);
            j += 8;
        }
        if j < n {
            butterfly_sse::<FWD>(&mut lo[j..n], &mut hi[j..n], s);
        }
    }

    /// One layer on a block held in a register: partners are `swap(v)`; `lo`/`hi` mask the
    /// lanes of the lower/upper halves; `s` holds each lower lane's twiddle.
    #[inline(always)]
    unsafe fn layer<const FWD: bool>(v: __m512i, s: __m512i, lo: u8, hi: u8, swap: impl Fn(__m512i) -> __m512i) -> __m512i {
        if FWD {
            let v = _mm512_mask_xor_epi64(v, lo, v, mul8::<0x11>(swap(v), s));
            _mm512_mask_xor_epi64(v, hi, v, swap(v))
        } else {
            let v = _mm512_mask_xor_epi64(v, hi, v, swap(v));
            _mm512_mask_xor_epi64(v, lo, v, mul8::<0x11>(swap(v), s))
        }
    }

    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.1")]
    pub unsafe fn bottom3_avx512<const FWD: bool, F: Fn(usize) -> u64>(d: &mut [u64], first: usize, tw: F) {
        let p = d.as_mut_ptr();
        for k in 0..d.len() / 8 {
            let b = first + k;
            let (t2, t1, t0) = (tw(b), tw(2 * b), tw(4 * b));
            let s2 = _mm512_set1_epi64(t2 as i64);
            let s1 = _mm512_mask_blend_epi64(0xf0, _mm512_set1_epi64(t1 as i64), _mm512_set1_epi64(tw(2 * b + 1) as i64));
            let (t01, t02, t03) = (tw(4 * b + 1), tw(4 * b + 2), tw(4 * b + 3));
            let s0 = _mm512_set_epi64(t03 as i64, t03 as i64, t02 as i64, t02 as i64, t01 as i64, t01 as i64, t0 as i64, t0 as i64);
            let sw2 = |v| _mm512_shuffle_i64x2::<0x4e>(v, v);
            let sw1 = |v| _mm512_shuffle_i64x2::<0xb1>(v, v);
            let sw0 = |v| _mm512_permutex_epi64::<0xb1>(v);
            // SAFETY: k·8 + 8 <= d.len().
            let mut v = _mm512_loadu_si512(p.add(8 * k) as *const _);
            if FWD {
                v = layer::<true>(v, s2, 0x0f, 0xf0, sw2);
                v = layer::<true>(v, s1, 0x33, 0xcc, sw1);
                v = layer::<true>(v, s0, 0x55, 0xaa, sw0);
            } else {
                v = layer::<false>(v, s0, 0x55, 0xaa, sw0);
                v = layer::<false>(v, s1, 0x33, 0xcc, sw1);
                v = layer::<false>(v, s2, 0x0f, 0xf0, sw2);
            }
            _mm512_storeu_si512(p.add(8 * k) as *mut _, v);
        }
    }

    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.1")]
    pub unsafe fn pointwise_avx512(a: &mut [u64], b: &[u64]) {
        let n = a.len().min(b.len());
        let (ap, bp) = (a.as_mut_ptr(), b.as_ptr());
        let mut j = 0;
        // SAFETY: j + 8 <= n for both slices.
        while j + 8 <= n {
            let x = _mm512_loadu_si512(ap.add(j) as *const _);
            let y = _mm512_loadu_si512(bp.add(j) as *const _);
            _mm512_storeu_si512(ap.add(j) as *mut _, mul8::<0x11>(x, y));
            j += 8;
        }
        for k in j..n {
            a[k] = mul1(a[k], b[k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow_mul(a: u64, b: u64) -> u64 {
        // Shift-and-add with reduction after every step: independent of `reduce`.
        let (mut acc, mut x) = (0u64, a);
        for i in 0..64 {
            if (b >> i) & 1 == 1 {
                acc ^= x;
            }
            let carry = x >> 63;
            x = (x << 1) ^ if carry == 1 { POLY_LOW } else { 0 };
        }
        acc
    }

    fn xs(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn modulus_is_irreducible() {
        // Rabin: f of degree 64 = 2^6 is irreducible iff z^(2^64) = z mod f and
        // gcd(z^(2^32) - z, f) = 1. Squaring in the field is the Frobenius map.
        let z = 2u64;
        let mut p = z;
        for _ in 0..32 {
            p = slow_mul(p, p);
        }
        let mut q = p;
        for _ in 0..32 {
            q = slow_mul(q, q);
        }
        assert_eq!(q, z);
        // gcd over GF(2)[z] of f and g = z^(2^32) + z (as a polynomial of degree < 64).
        let (mut a, mut b): (u128, u128) = ((1u128 << 64) | POLY_LOW as u128, (p ^ z) as u128);
        let deg = |v: u128| 127 - v.leading_zeros() as i32;
        while b != 0 {
            while a != 0 && deg(a) >= deg(b) {
                a ^= b << (deg(a) - deg(b));
            }
            std::mem::swap(&mut a, &mut b);
        }
        assert_eq!(a, 1, "gcd must be 1");
    }

    #[test]
    fn backends_agree_with_shift_and_add() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for b in [Backend::Portable, Backend::detect(false)] {
            for _ in 0..5000 {
                let (x, y) = (xs(&mut s), xs(&mut s));
                assert_eq!(b.mul(x, y), slow_mul(x, y), "{b:?}");
            }
            assert_eq!(b.mul(u64::MAX, u64::MAX), slow_mul(u64::MAX, u64::MAX));
            assert_eq!(b.mul(1, 0xdead), 0xdead);
        }
    }

    #[test]
    fn slice_kernels_agree() {
        let mut s = 5u64;
        for n in [0usize, 1, 2, 3, 7, 8, 9, 17, 64, 101] {
            let lo0: Vec<u64> = (0..n).map(|_| xs(&mut s)).collect();
            let hi0: Vec<u64> = (0..n).map(|_| xs(&mut s)).collect();
            let t = xs(&mut s);
            let mut want = (lo0.clone(), hi0.clone());
            for j in 0..n {
                want.0[j] ^= slow_mul(t, want.1[j]);
                want.1[j] ^= want.0[j];
            }
            let mut pw = lo0.clone();
            for j in 0..n {
                pw[j] = slow_mul(pw[j], hi0[j]);
            }
            let mut bs = vec![Backend::Portable, Backend::detect(false)];
            if Backend::detect(false) == Backend::Avx512 {
                bs.push(Backend::Pclmul);
            }
            for b in bs {
                let (mut l, mut h) = (lo0.clone(), hi0.clone());
                b.butterfly_fwd(&mut l, &mut h, t);
                assert_eq!((&l, &h), (&want.0, &want.1), "fwd {b:?} n={n}");
                b.butterfly_inv(&mut l, &mut h, t);
                assert_eq!((&l, &h), (&lo0, &hi0), "inv {b:?} n={n}");
                let mut a = lo0.clone();
                b.mul_pointwise(&mut a, &hi0);
                assert_eq!(a, pw, "pointwise {b:?} n={n}");
            }
        }
    }
}
