//! Word-level kernels of the sifting fast paths: 64 events at a time as bit masks.
//!
//! The per-event work of sifting is "select the events where a mask is 1 and pack their bits
//! densely" (matched events, then Z or X among them). On 64-event words that is a bit
//! compression (the `compress` of Hacker's Delight, 2nd ed., §7-4; BMI2 `pext`). Two
//! implementations behind [`Compact`]:
//! - [`SoftCompress`]: portable and branch-free; the mask-dependent part (six "move" masks) is
//!   computed once per mask and reused for every value compressed under it (each block compresses
//!   three or four values per mask).
//! - [`Pext`] (x86_64 with BMI2): one instruction. Chosen at run time only where `pext` is fast:
//!   Intel, and AMD from family 19h (Zen 3); Zen 1/2 microcode it (~250 cycles), so they keep the
//!   portable path. Tests force either path (`set_force_portable`) and compare both.
use std::sync::atomic::{AtomicBool, Ordering};
use zeroize::Zeroize;

/// Compression of values under one fixed mask: bits of `x` where `m` is 1, packed to the bottom.
pub trait Compact: Copy {
    fn new(m: u64) -> Self;
    fn apply(&self, x: u64) -> u64;
}

#[derive(Clone, Copy)]
pub struct SoftCompress {
    m: u64,
    mv: [u64; 6],
}

impl Compact for SoftCompress {
    #[inline(always)]
    fn new(m: u64) -> Self {
        // Hacker's Delight Fig. 7-10 with the loop over x split off: mv[i] = bits that move
        // right by 2^i in round i (from a parallel suffix count of the zeros to their right).
        let mut mk = !m << 1;
        let mut mm = m;
        let mut mv = [0u64; 6];
        for (i, v) in mv.iter_mut().enumerate() {
            let mut mp = mk ^ (mk << 1);
            mp ^= mp << 2;
            mp ^= mp << 4;
            mp ^= mp << 8;
            mp ^= mp << 16;
            mp ^= mp << 32;
            let t = mp & mm;
            *v = t;
            mm = (mm ^ t) | (t >> (1u32 << i));
            mk &= !mp;
        }
        SoftCompress { m, mv }
    }
    #[inline(always)]
    fn apply(&self, x: u64) -> u64 {
        let mut x = x & self.m;
        for (i, &v) in self.mv.iter().enumerate() {
            let t = x & v;
            x = (x ^ t) | (t >> (1u32 << i));
        }
        x
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Pext(u64);

#[cfg(target_arch = "x86_64")]
impl Compact for Pext {
    #[inline(always)]
    fn new(m: u64) -> Self {
        Pext(m)
    }
    #[inline(always)]
    fn apply(&self, x: u64) -> u64 {
        // SAFETY: `Pext` is only used inside functions compiled with `target_feature(enable =
        // "bmi2")`, which are only called after `fast_pext()` confirmed the CPU has BMI2.
        unsafe { std::arch::x86_64::_pext_u64(x, self.0) }
    }
}

static FORCE_PORTABLE: AtomicBool = AtomicBool::new(false);

/// Forces the portable compression everywhere (tests; CPUs that misreport).
pub fn set_force_portable(on: bool) {
    FORCE_PORTABLE.store(on, Ordering::SeqCst);
}

/// True when the BMI2 `pext` path will be used: BMI2 present and `pext` not microcoded.
pub fn fast_pext() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static FAST: OnceLock<bool> = OnceLock::new();
        let hw = *FAST.get_or_init(|| {
            if !std::is_x86_feature_detected!("bmi2") || !std::is_x86_feature_detected!("popcnt") {
                return false;
            }
            // SAFETY: cpuid leaves 0 and 1 exist on every x86_64 CPU (newer toolchains call
            // __cpuid safe, hence the allow).
            #[allow(unused_unsafe)]
            let (v, f) = unsafe { (std::arch::x86_64::__cpuid(0), std::arch::x86_64::__cpuid(1)) };
            let amd = v.ebx == 0x6874_7541 && v.edx == 0x6974_6E65 && v.ecx == 0x444D_4163; // "AuthenticAMD"
            let family = ((f.eax >> 8) & 0xF) + if (f.eax >> 8) & 0xF == 0xF { (f.eax >> 20) & 0xFF } else { 0 };
            !amd || family >= 0x19
        });
        hw && !FORCE_PORTABLE.load(Ordering::Relaxed)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[inline(always)]
pub fn low_mask(n: u32) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Bit `s` of each of the 8 bytes of `g`, as an 8-bit value (byte j -> bit j). The multiply
/// gathers the bytes' low bits into the top byte without carries (Hacker's Delight §7-2 idea).
#[inline(always)]
pub fn byte_plane(g: u64, s: u32) -> u64 {
    (((g >> s) & 0x0101_0101_0101_0101).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// Spreads the 32 low bits of `x` to the even bit positions of a u64.
#[inline(always)]
fn spread(x: u64) -> u64 {
    let mut x = x & 0xFFFF_FFFF;
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

/// Inverse of [`spread`]: the even bits of `x` packed into 32 bits.
#[inline(always)]
fn gather_even(x: u64) -> u64 {
    let mut x = x & 0x5555_5555_5555_5555;
    x = (x | (x >> 1)) & 0x3333_3333_3333_3333;
    x = (x | (x >> 2)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x >> 4)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x >> 8)) & 0x0000_FFFF_0000_FFFF;
    (x | (x >> 16)) & 0xFFFF_FFFF
}

/// 2-bit codes from two bit planes: code j = lo_j | hi_j << 1, for 32 codes (bits 0..32).
#[inline(always)]
pub fn interleave(lo: u64, hi: u64) -> u64 {
    spread(lo) | (spread(hi) << 1)
}

/// Inverse of [`interleave`]: (lo plane, hi plane) of 32 2-bit codes.
#[inline(always)]
pub fn deinterleave(x: u64) -> (u64, u64) {
    (gather_even(x), gather_even(x >> 1))
}

/// Append-only bit string written up to 64 bits at a time (LSB-first, KeyBits layout).
/// Holds key bits for some callers: wiped on drop.
pub struct BitSink {
    words: Vec<u64>,
    cur: u64,
    n: usize,
}

impl BitSink {
    pub fn with_capacity(bits: usize) -> Self {
        BitSink { words: Vec::with_capacity(bits / 64 + 2), cur: 0, n: 0 }
    }
    /// Appends the `k` low bits of `v` (`k` ≤ 64; bits of `v` above `k` must be zero).
    #[inline(always)]
    pub fn push(&mut self, v: u64, k: u32) {
        let r = (self.n & 63) as u32;
        self.cur |= v << r; // r < 64; v's bits beyond 64 − r carry over below
        self.n += k as usize;
        if r + k >= 64 {
            self.words.push(self.cur);
            self.cur = if r == 0 { 0 } else { v >> (64 - r) };
        }
    }
    pub fn finish(mut self) -> crate::bits::KeyBits {
        if self.n & 63 != 0 {
            self.words.push(self.cur);
        }
        self.cur = 0;
        crate::bits::KeyBits::from_words(std::mem::take(&mut self.words), self.n)
    }
}

impl Drop for BitSink {
    fn drop(&mut self) {
        self.words.zeroize();
        self.cur.zeroize();
    }
}

/// Reads bits at arbitrary offsets from LSB-first bytes (past the end reads as zero).
pub struct BitSource<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitSource<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BitSource { bytes, pos: 0 }
    }
    /// The next `k` ≤ 64 bits.
    #[inline(always)]
    pub fn take(&mut self, k: u32) -> u64 {
        if k == 0 {
            return 0;
        }
        let (b, sh) = (self.pos >> 3, (self.pos & 7) as u32);
        let lo = load_le(self.bytes, b);
        let mut v = lo >> sh;
        if sh + k > 64 {
            v |= (self.bytes.get(b + 8).copied().unwrap_or(0) as u64) << (64 - sh);
        }
        self.pos += k as usize;
        v & low_mask(k)
    }
}

/// 8 bytes little-endian from `b[i..]`, zero-padded past the end.
#[inline(always)]
pub fn load_le(b: &[u8], i: usize) -> u64 {
    if i + 8 <= b.len() {
        u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
    } else {
        let mut t = [0u8; 8];
        if i < b.len() {
            t[..b.len() - i].copy_from_slice(&b[i..]);
        }
        u64::from_le_bytes(t)
    }
}

/// Byte j of the result = bit j of `b` (j < 8).
const fn spread_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut v = 0;
    while v < 256 {
        let mut j = 0;
        while j < 8 {
            if (v >> j) & 1 == 1 {
                t[v] |= 1u64 << (8 * j);
            }
            j += 1;
        }
        v += 1;
    }
    t
}
static SPREAD8: [u64; 256] = spread_table();

/// One sifted basis being built: bits, one intensity byte per bit, counts per intensity.
pub struct BasisSink {
    pub bits: BitSink,
    pub tags: Vec<u8>,
    pub counts: [u64; 3],
}

impl BasisSink {
    pub fn with_capacity(n: usize) -> Self {
        BasisSink { bits: BitSink::with_capacity(n), tags: Vec::with_capacity(n + 64), counts: [0; 3] }
    }
    /// Appends `k` events: bit values, intensity planes (lo, hi: code = lo | hi << 1).
    #[inline(always)]
    pub fn push(&mut self, bits: u64, lo: u64, hi: u64, k: u32) {
        self.bits.push(bits, k);
        let n1 = (lo & !hi).count_ones() as u64;
        let n2 = (hi & !lo).count_ones() as u64;
        self.counts[1] += n1;
        self.counts[2] += n2;
        self.counts[0] += k as u64 - n1 - n2;
        // Tags 8 at a time through a table; the last group may write past k (truncated below,
        // capacity reserved).
        let len = self.tags.len();
        self.tags.reserve(72);
        let mut g = 0;
        // SAFETY: 72 bytes are reserved beyond `len`; we write k.div_ceil(8) * 8 ≤ 64 bytes and
        // then set the length to len + k, all within the reservation; u8 has no invalid values.
        unsafe {
            let p = self.tags.as_mut_ptr().add(len);
            while g * 8 < k as usize {
                let w = SPREAD8[((lo >> (8 * g)) & 0xFF) as usize] | (SPREAD8[((hi >> (8 * g)) & 0xFF) as usize] << 1);
                std::ptr::write_unaligned(p.add(8 * g) as *mut u64, w.to_le());
                g += 1;
            }
            self.tags.set_len(len + k as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn compress_naive(x: u64, m: u64) -> u64 {
        let (mut out, mut k) = (0u64, 0);
        for i in 0..64 {
            if (m >> i) & 1 == 1 {
                out |= ((x >> i) & 1) << k;
                k += 1;
            }
        }
        out
    }
    #[test]
    fn compress_matches_naive() {
        let mut next = crate::test_rng::xorshift64(0x1234_5678_9abc_def0u64);
        for t in 0..20000 {
            let m = match t % 5 {
                0 => next(),
                1 => next() & next(),
                2 => next() | next(),
                3 => [0, u64::MAX, 1, 1 << 63, 0x5555_5555_5555_5555][t % 5],
                _ => next() & low_mask((t % 65) as u32),
            };
            let x = next();
            assert_eq!(SoftCompress::new(m).apply(x), compress_naive(x, m));
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("bmi2") {
                assert_eq!(Pext::new(m).apply(x), compress_naive(x, m));
            }
        }
    }
    #[test]
    fn planes_interleave_and_sinks() {
        let g = 0x0F0E_0D0C_0B0A_0908u64;
        for s in 0..8 {
            let want = (0..8).fold(0, |a, j| a | ((((g >> (8 * j)) >> s) & 1) << j));
            assert_eq!(byte_plane(g, s), want);
        }
        let (lo, hi) = (0xDEAD_BEEFu64, 0x1234_5678u64);
        let x = interleave(lo, hi);
        for j in 0..32 {
            assert_eq!((x >> (2 * j)) & 3, ((lo >> j) & 1) | (((hi >> j) & 1) << 1));
        }
        assert_eq!(deinterleave(x), (lo, hi));
        let mut sink = BitSink::with_capacity(0);
        let mut want = Vec::new();
        for k in [0u32, 1, 63, 64, 5, 64, 7, 0, 33] {
            let v = 0xA5A5_5A5A_F0F0_0F0Fu64 & low_mask(k);
            sink.push(v, k);
            want.extend((0..k).map(|j| (v >> j) & 1 == 1));
        }
        let got = sink.finish();
        assert_eq!(got.len(), want.len());
        let bytes = got.to_bytes();
        let mut src = BitSource::new(&bytes);
        for (i, &b) in want.iter().enumerate() {
            assert_eq!(got.get(i), b);
            assert_eq!(src.take(1) == 1, b);
        }
    }
}
