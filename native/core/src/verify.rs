//! Key verification: polynomial universal hash over GF(2^128), truncated to t bits.
//!
//! Field: GF(2)[x] / (x^128 + x^7 + x^2 + x + 1), elements as u128 with bit i = coefficient of
//! x^i (plain order, not GHASH's reflected one). The key string (n bits, LSB-first) is cut into
//! L = ceil(n/128) blocks m_1..m_L (last one zero-padded), and
//!
//!   H_k(m) = m_1 k^{L+1} + m_2 k^L + ... + m_L k^2 + n·k        (Horner; n = bit length)
//!
//! For two different strings of the same length, H_k(a) − H_k(b) is a nonzero polynomial in k of
//! degree ≤ L+1, so for a uniformly random k chosen after the strings are fixed the top-t-bit
//! truncations collide with probability ≤ (L+1)·2^(128−t)/2^128 = (L+1)/2^t (each of the
//! 2^(128−t) values with zero top bits has ≤ L+1 roots). With t = ceil(log2((L+1)/ε_cor)) the
//! collision probability is ≤ ε_cor. The t tag bits are disclosed and must be counted in the leak.
use crate::bits::KeyBits;
use crate::clmul::Clmul;

/// Reduction constant x^7 + x^2 + x + 1.
const R: u64 = 0x87;

#[inline(always)]
fn mul_with(c: &Clmul, a: u128, b: u128) -> u128 {
    let (a0, a1) = (a as u64, (a >> 64) as u64);
    let (b0, b1) = (b as u64, (b >> 64) as u64);
    let (l0, l1) = c.mul(a0, b0);
    let (h0, h1) = c.mul(a1, b1);
    let (m0, m1) = c.mul(a0 ^ a1, b0 ^ b1);
    let (m0, m1) = (m0 ^ l0 ^ h0, m1 ^ l1 ^ h1);
    // 256-bit product p3:p2:p1:p0
    let p0 = l0;
    let p1 = l1 ^ m0;
    let p2 = h0 ^ m1;
    let p3 = h1;
    // fold p3:p2 (times x^128) back with x^128 = R
    let (r2l, r2h) = c.mul(p2, R); // contributes at words 0,1
    let (r3l, r3h) = c.mul(p3, R); // contributes at words 1,2
    // r3h (< 2^7) lands at word 2 = x^128 again: fold once more (fits in word 0)
    let (r4l, _) = c.mul(r3h, R);
    let lo = p0 ^ r2l ^ r4l;
    let hi = p1 ^ r2h ^ r3l;
    (lo as u128) | ((hi as u128) << 64)
}

/// Multiplication in GF(2^128) with the detected carry-less multiplier.
pub fn gf128_mul(a: u128, b: u128) -> u128 {
    mul_with(&Clmul::detect(), a, b)
}

/// Obviously-correct shift-and-add multiplication (the reference for tests).
pub fn gf128_mul_reference(a: u128, b: u128) -> u128 {
    let mut acc = 0u128;
    let mut x = a;
    for i in 0..128 {
        if (b >> i) & 1 == 1 {
            acc ^= x;
        }
        let carry = x >> 127;
        x <<= 1;
        if carry == 1 {
            x ^= R as u128;
        }
    }
    acc
}

/// Tag length t (bits) so that the collision probability (L+1)/2^t is ≤ eps_cor; at most 128.
pub fn tag_bits(n_bits: usize, eps_cor: f64) -> u32 {
    let l = n_bits.div_ceil(128) as f64 + 1.0;
    let t = (l / eps_cor).log2().ceil();
    t.clamp(1.0, 128.0) as u32
}

/// Collision probability bound for a t-bit tag on n bits.
pub fn collision_probability(n_bits: usize, t: u32) -> f64 {
    let l = n_bits.div_ceil(128) as f64 + 1.0;
    (l / 2f64.powi(t as i32)).min(1.0)
}

fn hash_with(c: &Clmul, key: &KeyBits, k: u128) -> u128 {
    let w = key.words();
    let mut acc = 0u128;
    let mut i = 0;
    while i < w.len() {
        let lo = w[i] as u128;
        let hi = w.get(i + 1).copied().unwrap_or(0) as u128;
        acc = mul_with(c, acc ^ (lo | (hi << 64)), k);
        i += 2;
    }
    mul_with(c, acc ^ key.len() as u128, k)
}

/// Full 128-bit polynomial hash of `key` under hash key `k` (both parties compute it).
pub fn poly_hash(key: &KeyBits, k: u128) -> u128 {
    hash_with(&Clmul::detect(), key, k)
}

/// Portable-path hash (tests force it to prove the hardware path agrees).
pub fn poly_hash_portable(key: &KeyBits, k: u128) -> u128 {
    hash_with(&Clmul::portable(), key, k)
}

/// The t-bit tag: top t bits of the hash (as a right-aligned u128).
pub fn tag(key: &KeyBits, k: u128, t: u32) -> u128 {
    let h = poly_hash(key, k);
    if t >= 128 { h } else { h >> (128 - t) }
}

/// Reference hash: bit-by-bit Horner with the reference multiplication.
pub fn poly_hash_reference(bits: &[bool], k: u128) -> u128 {
    let mut acc = 0u128;
    for chunk in bits.chunks(128) {
        let mut m = 0u128;
        for (j, &b) in chunk.iter().enumerate() {
            if b {
                m |= 1u128 << j;
            }
        }
        acc = gf128_mul_reference(acc ^ m, k);
    }
    gf128_mul_reference(acc ^ bits.len() as u128, k)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn known_answers() {
        // x * x^127 = x^128 = x^7 + x^2 + x + 1
        assert_eq!(gf128_mul_reference(2, 1u128 << 127), 0x87);
        assert_eq!(gf128_mul(2, 1u128 << 127), 0x87);
        // (x^127)^2 = x^254 = x^126 * x^128 = x^126 (x^7+x^2+x+1) = x^133 + x^128 + x^127 + x^126
        //  x^133 = x^5 (x^7+x^2+x+1) = x^12+x^7+x^6+x^5 ; x^128 = x^7+x^2+x+1
        let expect = (1u128 << 127) | (1u128 << 126) | (1 << 12) | (1 << 6) | (1 << 5) | (1 << 2) | (1 << 1) | 1;
        assert_eq!(gf128_mul_reference(1u128 << 127, 1u128 << 127), expect);
        assert_eq!(gf128_mul(1u128 << 127, 1u128 << 127), expect);
        assert_eq!(gf128_mul(u128::MAX, 1), u128::MAX);
    }
    #[test]
    fn fast_matches_reference_random() {
        let mut next = crate::test_rng::xorshift64(0x0123_4567_89ab_cdefu64);
        for _ in 0..5000 {
            let a = (next() as u128) << 64 | next() as u128;
            let b = (next() as u128) << 64 | next() as u128;
            let r = gf128_mul_reference(a, b);
            assert_eq!(gf128_mul(a, b), r);
            assert_eq!(mul_with(&Clmul::portable(), a, b), r);
        }
        for n in [0usize, 1, 63, 64, 127, 128, 129, 255, 256, 1000, 1031] {
            let bools: Vec<bool> = (0..n).map(|_| next() & 1 == 1).collect();
            let k = (next() as u128) << 64 | next() as u128;
            let kb = KeyBits::from_bools(&bools);
            let r = poly_hash_reference(&bools, k);
            assert_eq!(poly_hash(&kb, k), r, "n={n}");
            assert_eq!(poly_hash_portable(&kb, k), r, "n={n}");
        }
    }
    #[test]
    fn tag_length_meets_eps() {
        let t = tag_bits(100_000_000, 1e-15);
        assert!(collision_probability(100_000_000, t) <= 1e-15);
        assert!(collision_probability(100_000_000, t - 1) > 1e-15);
    }
}
