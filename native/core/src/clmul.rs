//! 64x64 -> 128-bit carry-less multiplication: PCLMULQDQ on x86_64 when the CPU has it, and a
//! portable path that tests can force (`set_force_portable`) to prove both agree.
use std::sync::atomic::{AtomicBool, Ordering};

static FORCE_PORTABLE: AtomicBool = AtomicBool::new(false);

/// Forces the portable carry-less multiplication everywhere (tests, or CPUs that misreport).
pub fn set_force_portable(on: bool) {
    FORCE_PORTABLE.store(on, Ordering::SeqCst);
}

/// True when the hardware path will be used.
pub fn hardware_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !FORCE_PORTABLE.load(Ordering::Relaxed)
            && std::is_x86_feature_detected!("pclmulqdq")
            && std::is_x86_feature_detected!("sse2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Portable carry-less product (lo, hi): 4-bit windowed, constant time in the operands.
#[inline]
pub fn clmul_portable(a: u64, b: u64) -> (u64, u64) {
    // Table of a * t for t in 0..16 (a has 64 bits, products up to 67 bits: keep the top 3 bits
    // of each entry in a separate table).
    let mut lo_t = [0u64; 16];
    let mut hi_t = [0u64; 16];
    for t in 1..16usize {
        let (mut l, mut h) = (0u64, 0u64);
        for k in 0..4 {
            if (t >> k) & 1 == 1 {
                l ^= a << k;
                h ^= if k == 0 { 0 } else { a >> (64 - k) };
            }
        }
        lo_t[t] = l;
        hi_t[t] = h;
    }
    let (mut lo, mut hi) = (0u64, 0u64);
    for i in (0..16).rev() {
        // shift accumulator left by 4
        hi = (hi << 4) | (lo >> 60);
        lo <<= 4;
        let t = ((b >> (4 * i)) & 15) as usize;
        lo ^= lo_t[t];
        hi ^= hi_t[t];
    }
    (lo, hi)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,sse2")]
unsafe fn clmul_hw(a: u64, b: u64) -> (u64, u64) {
    use std::arch::x86_64::*;
    // SAFETY: the caller checked (via `hardware_available`) that the CPU supports PCLMULQDQ and
    // SSE2; the intrinsics only touch registers.
    let x = _mm_set_epi64x(0, a as i64);
    let y = _mm_set_epi64x(0, b as i64);
    let r = _mm_clmulepi64_si128(x, y, 0x00);
    (_mm_cvtsi128_si64(r) as u64, _mm_extract_epi64::<1>(r) as u64)
}

/// A carry-less multiplier chosen once per call site (so the feature test stays out of loops).
#[derive(Clone, Copy)]
pub struct Clmul {
    hw: bool,
}

impl Clmul {
    pub fn detect() -> Self {
        Clmul { hw: hardware_available() }
    }
    pub fn portable() -> Self {
        Clmul { hw: false }
    }
    pub fn is_hardware(&self) -> bool {
        self.hw
    }
    #[inline(always)]
    pub fn mul(&self, a: u64, b: u64) -> (u64, u64) {
        #[cfg(target_arch = "x86_64")]
        {
            if self.hw {
                // SAFETY: `hw` is only true when `hardware_available()` saw PCLMULQDQ and SSE2.
                return unsafe { clmul_hw(a, b) };
            }
        }
        clmul_portable(a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn slow(a: u64, b: u64) -> (u64, u64) {
        let mut r: u128 = 0;
        for i in 0..64 {
            if (b >> i) & 1 == 1 {
                r ^= (a as u128) << i;
            }
        }
        (r as u64, (r >> 64) as u64)
    }
    #[test]
    fn portable_and_hw_match_bitwise() {
        let mut x = 0x1234_5678_9abc_def1u64;
        let hw = Clmul::detect();
        for _ in 0..20000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let y = x.rotate_left(23) ^ 0xdead_beef;
            assert_eq!(clmul_portable(x, y), slow(x, y));
            assert_eq!(hw.mul(x, y), slow(x, y));
        }
        assert_eq!(clmul_portable(u64::MAX, u64::MAX), slow(u64::MAX, u64::MAX));
        assert_eq!(clmul_portable(0, u64::MAX), (0, 0));
    }
}
