//! Deterministic pseudo-random generator for the code construction (public, not secret).
//!
//! SplitMix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014;
//! constants as in Vigna's reference `splitmix64.c`). It is spelled out here rather than taken from
//! `rand` so that a shipped code's provenance (generator + seed) can never change under a
//! dependency upgrade: the matrices are a pure function of this file and the parameters in
//! `family.rs`. It is NOT used for anything secret (puncturing fill comes from the caller's CSPRNG).

pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish integer in 0..n by the multiply-high method (bias < n/2^64, irrelevant for a
    /// graph construction; what matters is that it is exactly reproducible).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Fisher–Yates shuffle, last index first.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// FNV-1a 64-bit, used as the published checksum of a constructed matrix (integrity, not security).
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn write_u32(&mut self, x: u32) {
        for b in x.to_le_bytes() {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn splitmix_known_answer() {
        // First outputs of splitmix64 seeded with 1234567 (Vigna's reference C code).
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }
    #[test]
    fn fnv_known_answer() {
        // FNV-1a 64 of the bytes 01 00 00 00.
        let mut h = Fnv64::default();
        h.write_u32(1);
        let mut r: u64 = 0xcbf29ce484222325;
        for b in [1u8, 0, 0, 0] {
            r ^= b as u64;
            r = r.wrapping_mul(0x100000001b3);
        }
        assert_eq!(h.finish(), r);
    }
}
