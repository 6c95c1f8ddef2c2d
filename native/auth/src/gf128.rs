//! Arithmetic in GF(2^128) = GF(2)[x] / (x^128 + x^7 + x^2 + x + 1), and the polynomial hash.
//!
//! Representation (ours, deliberately *not* GHASH's bit-reflected one, so an independent reference
//! is easy to write): a 16-byte block is read as a big-endian `u128`; bit i of that integer is the
//! coefficient of x^i. The reduction polynomial is the one of GCM (NIST SP 800-38D, Sec. 6.3), in
//! this natural bit order: x^128 = x^7 + x^2 + x + 1 = 0x87.
//!
//! Hash (the GHASH construction of SP 800-38D Sec. 6.4 / McGrew & Viega 2004, Sec. 2.3): for
//! authenticated data `A` and data `D`, the block sequence X_1..X_l is `A` zero-padded to 16 bytes,
//! `D` zero-padded to 16 bytes, then one length block `bitlen(A) as u64 BE || bitlen(D) as u64 BE`.
//! H_k(A, D) = sum_i X_i k^(l-i+1), evaluated by Horner: y <- (y ^ X_i) * k.
//! The encoding is injective and the last block carries the lengths, so for two different inputs
//! H_k(M) ^ H_k(M') is a non-zero polynomial in k of degree <= l without constant term: it takes
//! any given value for at most l keys, i.e. the family is epsilon-almost-XOR-universal with
//! epsilon = l / 2^128 (McGrew & Viega 2004, Appendix; Stinson 1994, Def. 2.1).
//!
//! Fast path: carry-less multiplication (x86-64 PCLMULQDQ) with one Karatsuba step; the portable
//! path computes the same 64x64 carry-less products in software. Both share the reduction, and a
//! property test checks both against a bit-by-bit shift-and-add reference (`mul_reference`).

/// Reduction constant: x^128 mod P = x^7 + x^2 + x + 1.
const R: u64 = 0x87;

/// Software 64x64 -> 128 carry-less multiplication (portable path).
#[inline]
pub fn clmul64_soft(a: u64, b: u64) -> u128 {
    // Four-bit windows of `b` select a precomputed multiple of `a`: 16 shifts instead of 64.
    let a = a as u128;
    let mut table = [0u128; 16];
    for (i, entry) in table.iter_mut().enumerate().skip(1) {
        let mut t = 0u128;
        for bit in 0..4 {
            if i & (1 << bit) != 0 {
                t ^= a << bit;
            }
        }
        *entry = t;
    }
    let mut r = 0u128;
    for nib in (0..16).rev() {
        r <<= 4;
        r ^= table[((b >> (nib * 4)) & 0xf) as usize];
    }
    r
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,sse2")]
unsafe fn clmul64_hw(a: u64, b: u64) -> u128 {
    use std::arch::x86_64::*;
    let va = _mm_set_epi64x(0, a as i64);
    let vb = _mm_set_epi64x(0, b as i64);
    let r = _mm_clmulepi64_si128(va, vb, 0x00);
    let mut out = [0u64; 2];
    _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, r);
    (out[0] as u128) | ((out[1] as u128) << 64)
}

/// Which carry-less multiplier to use. `Portable` can be forced in tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Pclmul,
}

impl Backend {
    /// The fastest backend this CPU supports.
    pub fn detect() -> Backend {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("pclmulqdq") {
                return Backend::Pclmul;
            }
        }
        Backend::Portable
    }
}

#[inline(always)]
fn reduce(p3: u64, p2: u64, p1: u64, p0: u64, clmul: impl Fn(u64, u64) -> u128) -> u128 {
    // P = (p3:p2) x^128 + (p1:p0); x^128 = R, so P = (p1:p0) ^ (p3:p2)*R, and (p3:p2)*R has at
    // most 135 bits: the 7 bits above 2^128 are folded once more (c*R < 2^14).
    let t2 = clmul(p2, R);
    let t3 = clmul(p3, R);
    let t2l = t2 as u64;
    let t2h = (t2 >> 64) as u64;
    let t3l = t3 as u64;
    let t3h = (t3 >> 64) as u64;
    let r1 = p1 ^ t3l ^ t2h;
    let r0 = p0 ^ t2l ^ (clmul(t3h, R) as u64);
    ((r1 as u128) << 64) | r0 as u128
}

/// The unreduced 256-bit product a*b as (low 128 bits, high 128 bits): one Karatsuba step.
#[inline(always)]
fn mul_wide(a: u128, b: u128, clmul: impl Fn(u64, u64) -> u128 + Copy) -> (u128, u128) {
    let (a0, a1) = (a as u64, (a >> 64) as u64);
    let (b0, b1) = (b as u64, (b >> 64) as u64);
    let lo = clmul(a0, b0);
    let hi = clmul(a1, b1);
    let mid = clmul(a0 ^ a1, b0 ^ b1) ^ lo ^ hi; // Karatsuba
    (lo ^ (mid << 64), hi ^ (mid >> 64))
}

#[inline(always)]
fn reduce_wide((lo, hi): (u128, u128), clmul: impl Fn(u64, u64) -> u128 + Copy) -> u128 {
    reduce((hi >> 64) as u64, hi as u64, (lo >> 64) as u64, lo as u64, clmul)
}

#[inline(always)]
fn mul_with(a: u128, b: u128, clmul: impl Fn(u64, u64) -> u128 + Copy) -> u128 {
    reduce_wide(mul_wide(a, b, clmul), clmul)
}

/// a*b in GF(2^128), portable path.
pub fn mul_portable(a: u128, b: u128) -> u128 {
    mul_with(a, b, clmul64_soft)
}

/// a*b in GF(2^128) on the chosen backend.
#[inline]
pub fn mul(a: u128, b: u128, backend: Backend) -> u128 {
    match backend {
        Backend::Portable => mul_portable(a, b),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Backend::Pclmul` is only constructed by `detect()` after the CPU reported
        // pclmulqdq (or by tests that check the same); sse2 is baseline on x86-64.
        Backend::Pclmul => unsafe { mul_pclmul(a, b) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,sse2")]
unsafe fn mul_pclmul(a: u128, b: u128) -> u128 {
    // SAFETY: this function is itself only callable where pclmulqdq is available.
    mul_with(a, b, |x, y| unsafe { clmul64_hw(x, y) })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,sse2")]
unsafe fn horner_pclmul(mut y: u128, k: u128, blocks: &[u8]) -> u128 {
    // SAFETY (every unsafe block below): the caller guarantees pclmulqdq.
    let clmul = |a: u64, b: u64| unsafe { clmul64_hw(a, b) };
    // Four blocks per reduction: (y ^ x1) k^4 ^ x2 k^3 ^ x3 k^2 ^ x4 k is four Horner steps, and
    // its four products are independent (no multiply waits for the one before), summed unreduced
    // and reduced once. The channel hashes every message (~10^7 bytes a block each way).
    let mut rest = blocks;
    if blocks.len() >= 256 {
        let k2 = unsafe { mul_pclmul(k, k) };
        let k3 = unsafe { mul_pclmul(k2, k) };
        let k4 = unsafe { mul_pclmul(k3, k) };
        let quads = blocks.chunks_exact(64);
        rest = quads.remainder();
        for q in quads {
            let x = |i: usize| u128::from_be_bytes(q[16 * i..16 * i + 16].try_into().unwrap());
            let (l1, h1) = mul_wide(y ^ x(0), k4, clmul);
            let (l2, h2) = mul_wide(x(1), k3, clmul);
            let (l3, h3) = mul_wide(x(2), k2, clmul);
            let (l4, h4) = mul_wide(x(3), k, clmul);
            y = reduce_wide((l1 ^ l2 ^ l3 ^ l4, h1 ^ h2 ^ h3 ^ h4), clmul);
        }
    }
    for c in rest.chunks_exact(16) {
        let x = u128::from_be_bytes(c.try_into().unwrap());
        y = unsafe { mul_pclmul(y ^ x, k) };
    }
    y
}

fn horner(mut y: u128, k: u128, bytes: &[u8], backend: Backend) -> u128 {
    let full = bytes.len() / 16 * 16;
    #[cfg(target_arch = "x86_64")]
    if backend == Backend::Pclmul {
        // SAFETY: Pclmul backend implies the CPU feature was detected.
        y = unsafe { horner_pclmul(y, k, &bytes[..full]) };
    } else {
        for c in bytes[..full].chunks_exact(16) {
            y = mul_portable(y ^ u128::from_be_bytes(c.try_into().unwrap()), k);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for c in bytes[..full].chunks_exact(16) {
        y = mul_portable(y ^ u128::from_be_bytes(c.try_into().unwrap()), k);
    }
    if full < bytes.len() {
        let mut last = [0u8; 16];
        last[..bytes.len() - full].copy_from_slice(&bytes[full..]);
        y = mul(y ^ u128::from_be_bytes(last), k, backend);
    }
    y
}

/// H_k(A, D) as defined in the module doc.
pub fn poly_hash(k: u128, aad: &[u8], data: &[u8], backend: Backend) -> u128 {
    let mut y = horner(0, k, aad, backend);
    y = horner(y, k, data, backend);
    let len = ((aad.len() as u128 * 8) << 64) | (data.len() as u128 * 8);
    mul(y ^ len, k, backend)
}

/// Number of 16-byte blocks l hashed for inputs of these lengths (for the epsilon bound).
pub fn block_count(aad_len: usize, data_len: usize) -> u64 {
    (aad_len.div_ceil(16) + data_len.div_ceil(16) + 1) as u64
}

/// Bit-by-bit shift-and-add multiplication: the obviously-correct reference for tests.
pub fn mul_reference(a: u128, b: u128) -> u128 {
    let mut r = 0u128;
    let mut a = a;
    for i in 0..128 {
        if (b >> i) & 1 == 1 {
            r ^= a;
        }
        let carry = a >> 127;
        a <<= 1;
        if carry == 1 {
            a ^= R as u128;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn clmul_soft_small() {
        assert_eq!(clmul64_soft(0b11, 0b11), 0b101);
        assert_eq!(clmul64_soft(u64::MAX, 2), (u64::MAX as u128) << 1);
    }

    #[test]
    fn mul_identities() {
        let x = 2u128; // the polynomial x
        assert_eq!(mul_reference(1u128 << 127, x), R as u128);
        assert_eq!(mul_portable(1u128 << 127, x), R as u128);
        assert_eq!(mul_portable(12345, 1), 12345);
    }

    #[test]
    fn backends_agree_with_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let hw = Backend::detect();
        for _ in 0..5000 {
            let a: u128 = rng.gen();
            let b: u128 = rng.gen();
            let r = mul_reference(a, b);
            assert_eq!(mul_portable(a, b), r);
            assert_eq!(mul(a, b, hw), r);
        }
    }

    #[test]
    fn hash_backends_agree() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let hw = Backend::detect();
        // Lengths around the four-block steps of the fast path and its 256-byte threshold.
        for n in [0usize, 1, 15, 16, 17, 63, 64, 65, 100, 255, 256, 257, 319, 320, 1000, 4096 + 48, 100_003] {
            let a: Vec<u8> = (0..n % 37).map(|_| rng.gen()).collect();
            let d: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let k: u128 = rng.gen();
            assert_eq!(poly_hash(k, &a, &d, hw), poly_hash(k, &a, &d, Backend::Portable));
        }
    }
}
