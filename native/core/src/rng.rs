//! xoshiro256** (Blackman & Vigna 2018) seeded by the caller, for the squashing coin flips.
//!
//! Why not a CSPRNG here: the coin only resolves double clicks (a few per million detections);
//! what matters is that Eve cannot predict it, which holds because the 256-bit seed comes from
//! the caller's CSPRNG (`crypto.randomBytes`) and is fresh per batch; the state is wiped on drop.
use zeroize::{Zeroize, ZeroizeOnDrop};

#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let mut s = [0u64; 4];
        for (i, w) in s.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&seed[i * 8..i * 8 + 8]);
            *w = u64::from_le_bytes(b);
        }
        if s == [0; 4] {
            // The all-zero state is a fixed point; any other constant works.
            s[0] = 0x9E37_79B9_7F4A_7C15;
        }
        Xoshiro256 { s }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    #[inline]
    pub fn bit(&mut self) -> u64 {
        self.next_u64() >> 63
    }
}
