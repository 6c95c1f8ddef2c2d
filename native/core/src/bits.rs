//! Packed bit strings that hold key material and zeroise on drop.
//!
//! Layout: LSB-first, bit `i` is `(words[i / 64] >> (i % 64)) & 1`; bits past `len` in the last
//! word are always zero (every constructor and mutator keeps that invariant, so word-level
//! operations such as XOR, popcount and hashing need no masking).
use zeroize::{Zeroize, ZeroizeOnDrop};

#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct KeyBits {
    words: Vec<u64>,
    len: usize,
}

impl std::fmt::Debug for KeyBits {
    // Never print key bits (logs, panics, test failures): only the length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyBits(len={})", self.len)
    }
}

#[inline]
pub fn words_for(bits: usize) -> usize {
    bits.div_ceil(64)
}

impl KeyBits {
    pub fn zeros(len: usize) -> Self {
        KeyBits { words: vec![0; words_for(len)], len }
    }

    /// Takes ownership of words; clears any bits past `len`.
    pub fn from_words(mut words: Vec<u64>, len: usize) -> Self {
        words.resize(words_for(len), 0);
        let mut k = KeyBits { words, len };
        k.mask_tail();
        k
    }

    /// From LSB-first packed bytes (the wire/typed-array form). `bytes` may be longer than needed.
    pub fn from_bytes(bytes: &[u8], len: usize) -> Self {
        let mut words = vec![0u64; words_for(len)];
        let nbytes = len.div_ceil(8).min(bytes.len());
        for (i, chunk) in bytes[..nbytes].chunks(8).enumerate() {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            words[i] = u64::from_le_bytes(b);
            b.zeroize();
        }
        Self::from_words(words, len)
    }

    /// LSB-first packed bytes, `ceil(len / 8)` of them. The caller owns (and should wipe) them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.len.div_ceil(8);
        let mut out = Vec::with_capacity(self.words.len() * 8);
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.truncate(n);
        out
    }

    pub fn from_bools(bits: &[bool]) -> Self {
        let mut k = Self::zeros(bits.len());
        for (i, &b) in bits.iter().enumerate() {
            if b {
                k.words[i >> 6] |= 1 << (i & 63);
            }
        }
        k
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    #[inline]
    pub fn words(&self) -> &[u64] {
        &self.words
    }
    /// Mutable words; callers must keep bits past `len` zero (or call `mask_tail`).
    #[inline]
    pub fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        (self.words[i >> 6] >> (i & 63)) & 1 == 1
    }
    #[inline]
    pub fn set(&mut self, i: usize, v: bool) {
        let m = 1u64 << (i & 63);
        if v {
            self.words[i >> 6] |= m;
        } else {
            self.words[i >> 6] &= !m;
        }
    }

    pub fn mask_tail(&mut self) {
        let r = self.len & 63;
        if r != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << r) - 1;
            }
        }
    }

    /// Number of positions where `self` and `other` differ (both must have the same length).
    pub fn hamming(&self, other: &KeyBits) -> usize {
        assert_eq!(self.len, other.len, "hamming: lengths differ");
        self.words.iter().zip(&other.words).map(|(a, b)| (a ^ b).count_ones() as usize).sum()
    }

    /// Bits `[start, start + n)` as a new string.
    pub fn slice(&self, start: usize, n: usize) -> KeyBits {
        assert!(start + n <= self.len, "slice out of range");
        let mut out = KeyBits::zeros(n);
        let (w0, sh) = (start >> 6, start & 63);
        for i in 0..out.words.len() {
            let lo = self.words.get(w0 + i).copied().unwrap_or(0) >> sh;
            let hi = if sh == 0 { 0 } else { self.words.get(w0 + i + 1).copied().unwrap_or(0) << (64 - sh) };
            out.words[i] = lo | hi;
        }
        out.mask_tail();
        out
    }
}

/// Appends bits one at a time (the sifting hot loop): a word accumulator flushed every 64 bits.
#[derive(Default)]
pub struct BitWriter {
    words: Vec<u64>,
    cur: u64,
    n: usize,
}

impl BitWriter {
    pub fn with_capacity(bits: usize) -> Self {
        BitWriter { words: Vec::with_capacity(words_for(bits)), cur: 0, n: 0 }
    }
    #[inline(always)]
    pub fn push(&mut self, b: u64) {
        self.cur |= (b & 1) << (self.n & 63);
        self.n += 1;
        if self.n & 63 == 0 {
            self.words.push(self.cur);
            self.cur = 0;
        }
    }
    /// Appends `b` only when `take` is 1 (branch-free: the sifting loops split events by basis
    /// and match, which are coin flips the branch predictor cannot learn).
    #[inline(always)]
    pub fn push_if(&mut self, b: u64, take: u64) {
        self.cur |= (b & take & 1) << (self.n & 63);
        self.n += take as usize;
        if self.n & 63 == 0 && take == 1 {
            self.words.push(self.cur);
            self.cur = 0;
        }
    }
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn finish(mut self) -> KeyBits {
        if self.n & 63 != 0 {
            self.words.push(self.cur);
        }
        self.cur = 0;
        let words = std::mem::take(&mut self.words);
        KeyBits::from_words(words, self.n)
    }
}

impl Drop for BitWriter {
    fn drop(&mut self) {
        self.words.zeroize();
        self.cur.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn bytes_roundtrip_and_tail() {
        let bytes: Vec<u8> = (0..20u8).map(|i| i.wrapping_mul(37) ^ 0xA5).collect();
        for len in [0usize, 1, 7, 8, 63, 64, 65, 100, 160] {
            let k = KeyBits::from_bytes(&bytes, len);
            for i in 0..len {
                assert_eq!(k.get(i), (bytes[i / 8] >> (i % 8)) & 1 == 1);
            }
            let back = k.to_bytes();
            assert_eq!(back.len(), len.div_ceil(8));
            let k2 = KeyBits::from_bytes(&back, len);
            assert_eq!(k.words(), k2.words());
            // tail bits past len are zero
            if len % 64 != 0 {
                assert_eq!(k.words().last().unwrap() >> (len % 64), 0);
            }
        }
    }
    #[test]
    fn slice_matches_bits() {
        let bools: Vec<bool> = (0..300).map(|i| (i * 7 + i / 3) % 5 < 2).collect();
        let k = KeyBits::from_bools(&bools);
        for (s, n) in [(0, 300), (1, 299), (63, 64), (64, 100), (130, 1), (5, 0)] {
            let sl = k.slice(s, n);
            for i in 0..n {
                assert_eq!(sl.get(i), bools[s + i]);
            }
        }
    }
}
