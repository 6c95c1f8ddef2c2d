//! ChaCha20 blocks (D. J. Bernstein, "ChaCha, a variant of Salsa20", 2008; the IETF form of
//! RFC 8439, §2.3 block function, §2.1 quarter round) at several independent block addresses at
//! once, for the emulated source's random-access keystream (emulated_choice.rs): a photon
//! candidate every ~200 pulses at 25 km needs one keystream block each, at unrelated counters,
//! so a stream cipher's consecutive-block SIMD does not apply and one block per call cost
//! ~120 ns. Here the sixteen state words are held lane by lane ("vertical" layout, one lane per
//! block), so every operation of the quarter round is the same on all lanes and the compiler
//! vectorises across lanes with the SIMD the target has (SSE2 on any x86-64), in portable Rust
//! without `unsafe`.
//!
//! Equal to RustCrypto's `chacha20` (emulated_choice::chacha20_block) block for block: the RFC
//! 8439 §2.3.2 test vector and a property test on random keys and addresses (tests below).
//! Key material: the working state is zeroised before returning; the caller owns (and wipes) the
//! keystream it asked for.

use zeroize::Zeroize;

/// Blocks computed per call (one 512-bit register per state word with AVX-512F).
pub const LANES: usize = 16;

/// "expand 32-byte k" (RFC 8439 §2.3).
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// The 20 rounds (RFC 8439 §2.3: ten times a column round and a diagonal round) with the
/// quarter round macro `$q` on the state words `$x0`..`$x15`.
macro_rules! twenty_rounds {
    ($q:ident, $x0:ident, $x1:ident, $x2:ident, $x3:ident, $x4:ident, $x5:ident, $x6:ident, $x7:ident,
     $x8:ident, $x9:ident, $x10:ident, $x11:ident, $x12:ident, $x13:ident, $x14:ident, $x15:ident) => {
        for _ in 0..10 {
            $q!($x0, $x4, $x8, $x12);
            $q!($x1, $x5, $x9, $x13);
            $q!($x2, $x6, $x10, $x14);
            $q!($x3, $x7, $x11, $x15);
            $q!($x0, $x5, $x10, $x15);
            $q!($x1, $x6, $x11, $x12);
            $q!($x2, $x7, $x8, $x13);
            $q!($x3, $x4, $x9, $x14);
        }
    };
}

type Row = [u32; LANES];

#[inline(always)]
fn add(a: Row, b: Row) -> Row {
    core::array::from_fn(|l| a[l].wrapping_add(b[l]))
}

#[inline(always)]
fn xor_rot<const R: u32>(a: Row, b: Row) -> Row {
    // Shifts rather than rotate_left: SSE2 has no vector rotate, and the vectoriser handles this form.
    core::array::from_fn(|l| {
        let v = a[l] ^ b[l];
        (v << R) | (v >> (32 - R))
    })
}

/// One quarter round (RFC 8439 §2.1) on all lanes.
macro_rules! quarter {
    ($a:ident, $b:ident, $c:ident, $d:ident) => {
        $a = add($a, $b);
        $d = xor_rot::<16>($d, $a);
        $c = add($c, $d);
        $b = xor_rot::<12>($b, $c);
        $a = add($a, $b);
        $d = xor_rot::<8>($d, $a);
        $c = add($c, $d);
        $b = xor_rot::<7>($b, $c);
    };
}

/// Four blocks with SSE2 (baseline on every x86-64): one 128-bit register per state word.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use core::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "sse2")]
    fn rot<const L: i32, const R: i32>(v: __m128i) -> __m128i {
        _mm_or_si128(_mm_slli_epi32::<L>(v), _mm_srli_epi32::<R>(v))
    }

    macro_rules! quarter {
        ($a:ident, $b:ident, $c:ident, $d:ident) => {
            $a = _mm_add_epi32($a, $b);
            $d = rot::<16, 16>(_mm_xor_si128($d, $a));
            $c = _mm_add_epi32($c, $d);
            $b = rot::<12, 20>(_mm_xor_si128($b, $c));
            $a = _mm_add_epi32($a, $b);
            $d = rot::<8, 24>(_mm_xor_si128($d, $a));
            $c = _mm_add_epi32($c, $d);
            $b = rot::<7, 25>(_mm_xor_si128($b, $c));
        };
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn splat(x: u32) -> __m128i {
        _mm_set1_epi32(x as i32)
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn lanes(x: [u32; 4]) -> __m128i {
        _mm_set_epi32(x[3] as i32, x[2] as i32, x[1] as i32, x[0] as i32)
    }

    #[target_feature(enable = "sse2")]
    pub fn blocks4(key: &[u32; 8], counter: [u32; 4], nonce0: [u32; 4], tail: [u32; 2], out: &mut super::Words, at: usize) {
        let init = [
            splat(super::SIGMA[0]), splat(super::SIGMA[1]), splat(super::SIGMA[2]), splat(super::SIGMA[3]),
            splat(key[0]), splat(key[1]), splat(key[2]), splat(key[3]), splat(key[4]), splat(key[5]), splat(key[6]), splat(key[7]),
            lanes(counter), lanes(nonce0), splat(tail[0]), splat(tail[1]),
        ];
        let [mut x0, mut x1, mut x2, mut x3, mut x4, mut x5, mut x6, mut x7, mut x8, mut x9, mut x10, mut x11, mut x12, mut x13, mut x14, mut x15] = init;
        twenty_rounds!(quarter, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15);
        let x = [x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15];
        for i in 0..16 {
            // SAFETY: out[i][at..at + 4] is in bounds (at <= LANES - 4, asserted by the caller's
            // slicing below); an unaligned store of 16 bytes.
            let dst = &mut out[i][at..at + 4];
            unsafe { _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, _mm_add_epi32(x[i], init[i])) };
        }
        // Not wiped: the working registers and any stack slots the compiler spilled them to (the
        // portable path zeroises its arrays; registers have no such handle).
    }
}

/// Eight blocks in 256-bit registers, one per state word (AVX2: the 16- and 8-bit rotates are byte
/// shuffles), and sixteen in 512-bit ones (AVX-512F: native rotates). The emulated source's
/// keystream was 12 % of Bob's process in a 25 km link profile with SSE2's four lanes.
#[cfg(target_arch = "x86_64")]
mod avx {
    use core::arch::x86_64::*;

    macro_rules! blocks8 {
        ($name:ident, $feat:literal, $rot16:expr, $rot12:expr, $rot8:expr, $rot7:expr) => {
            #[target_feature(enable = $feat)]
            pub fn $name(key: &[u32; 8], counter: &[u32; 8], nonce0: &[u32; 8], tail: [u32; 2], out: &mut super::Words, at: usize) {
                let splat = |x: u32| _mm256_set1_epi32(x as i32);
                // SAFETY: [u32; 8] and __m256i have the same size; unaligned loads.
                let lanes = |x: &[u32; 8]| unsafe { _mm256_loadu_si256(x.as_ptr() as *const __m256i) };
                let init = [
                    splat(super::SIGMA[0]), splat(super::SIGMA[1]), splat(super::SIGMA[2]), splat(super::SIGMA[3]),
                    splat(key[0]), splat(key[1]), splat(key[2]), splat(key[3]), splat(key[4]), splat(key[5]), splat(key[6]), splat(key[7]),
                    lanes(counter), lanes(nonce0), splat(tail[0]), splat(tail[1]),
                ];
                let r16 = $rot16;
                let r12 = $rot12;
                let r8 = $rot8;
                let r7 = $rot7;
                macro_rules! quarter {
                    ($a:ident, $b:ident, $c:ident, $d:ident) => {
                        $a = _mm256_add_epi32($a, $b);
                        $d = r16(_mm256_xor_si256($d, $a));
                        $c = _mm256_add_epi32($c, $d);
                        $b = r12(_mm256_xor_si256($b, $c));
                        $a = _mm256_add_epi32($a, $b);
                        $d = r8(_mm256_xor_si256($d, $a));
                        $c = _mm256_add_epi32($c, $d);
                        $b = r7(_mm256_xor_si256($b, $c));
                    };
                }
                let [mut x0, mut x1, mut x2, mut x3, mut x4, mut x5, mut x6, mut x7, mut x8, mut x9, mut x10, mut x11, mut x12, mut x13, mut x14, mut x15] = init;
                twenty_rounds!(quarter, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15);
                let x = [x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15];
                for i in 0..16 {
                    let dst = &mut out[i][at..at + 8];
                    // SAFETY: dst holds 8 words (the slice above is bounds-checked); unaligned store.
                    unsafe { _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, _mm256_add_epi32(x[i], init[i])) };
                }
            }
        };
    }

    /// Byte shuffles for the 16- and 8-bit rotates (each 32-bit lane's bytes moved within it).
    #[inline(always)]
    fn rot_bytes(v: __m256i, m: [i8; 16]) -> __m256i {
        // SAFETY: only reached from the avx2 function below (its target feature is enabled).
        unsafe {
            let mask = _mm256_setr_epi8(
                m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9], m[10], m[11], m[12], m[13], m[14], m[15],
                m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9], m[10], m[11], m[12], m[13], m[14], m[15],
            );
            _mm256_shuffle_epi8(v, mask)
        }
    }
    const ROT16: [i8; 16] = [2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13];
    const ROT8: [i8; 16] = [3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14];

    blocks8!(blocks8_avx2, "avx2",
        |v| rot_bytes(v, ROT16),
        |v| _mm256_or_si256(_mm256_slli_epi32::<12>(v), _mm256_srli_epi32::<20>(v)),
        |v| rot_bytes(v, ROT8),
        |v| _mm256_or_si256(_mm256_slli_epi32::<7>(v), _mm256_srli_epi32::<25>(v)));

    /// Sixteen blocks, one 512-bit register per state word (AVX-512F, native rotates).
    #[target_feature(enable = "avx512f")]
    pub fn blocks16_avx512(key: &[u32; 8], counter: &[u32; 16], nonce0: &[u32; 16], tail: [u32; 2], out: &mut super::Words) {
        let splat = |x: u32| _mm512_set1_epi32(x as i32);
        // SAFETY: [u32; 16] and __m512i have the same size; unaligned loads.
        let lanes = |x: &[u32; 16]| unsafe { _mm512_loadu_si512(x.as_ptr() as *const _) };
        let init = [
            splat(super::SIGMA[0]), splat(super::SIGMA[1]), splat(super::SIGMA[2]), splat(super::SIGMA[3]),
            splat(key[0]), splat(key[1]), splat(key[2]), splat(key[3]), splat(key[4]), splat(key[5]), splat(key[6]), splat(key[7]),
            lanes(counter), lanes(nonce0), splat(tail[0]), splat(tail[1]),
        ];
        macro_rules! quarter {
            ($a:ident, $b:ident, $c:ident, $d:ident) => {
                $a = _mm512_add_epi32($a, $b);
                $d = _mm512_rol_epi32::<16>(_mm512_xor_si512($d, $a));
                $c = _mm512_add_epi32($c, $d);
                $b = _mm512_rol_epi32::<12>(_mm512_xor_si512($b, $c));
                $a = _mm512_add_epi32($a, $b);
                $d = _mm512_rol_epi32::<8>(_mm512_xor_si512($d, $a));
                $c = _mm512_add_epi32($c, $d);
                $b = _mm512_rol_epi32::<7>(_mm512_xor_si512($b, $c));
            };
        }
        let [mut x0, mut x1, mut x2, mut x3, mut x4, mut x5, mut x6, mut x7, mut x8, mut x9, mut x10, mut x11, mut x12, mut x13, mut x14, mut x15] = init;
        twenty_rounds!(quarter, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15);
        let x = [x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15];
        for i in 0..16 {
            // SAFETY: out[i] is 16 words; unaligned store.
            unsafe { _mm512_storeu_si512(out[i].as_mut_ptr() as *mut _, _mm512_add_epi32(x[i], init[i])) };
        }
    }
}

/// The SIMD kernel `chacha20_blocks` uses on this CPU (tests run each one the CPU has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Portable,
    Sse2,
    Avx2,
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU runs (detected once).
    pub fn best() -> Kernel {
        use std::sync::OnceLock;
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return Kernel::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    return Kernel::Avx2;
                }
                return Kernel::Sse2;
            }
            #[allow(unreachable_code)]
            Kernel::Portable
        })
    }

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Sse2 => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// The 256-bit key as the eight little-endian words of the ChaCha state.
pub fn key_words(key: &[u8; 32]) -> [u32; 8] {
    core::array::from_fn(|i| u32::from_le_bytes([key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]]))
}

/// Keystream words of `LANES` blocks, word-major: `w[i][l]` is word i of block l (the layout the
/// vector kernels hold them in, stored without a transposition).
pub type Words = [[u32; LANES]; 16];

/// ChaCha20 blocks for `LANES` (block counter, first nonce word) pairs; the nonce's words 1 and 2
/// (`nonce_tail`) are the same for all lanes. `out[l]` receives block l as its 16 little-endian
/// words (word i = bytes 4i..4i+4 of the serialised block). (A transposition of
/// `chacha20_blocks_words`, which the emulated source uses.)
pub fn chacha20_blocks(key: &[u32; 8], counter: &[u32; LANES], nonce0: &[u32; LANES], nonce_tail: [u32; 2], out: &mut [[u32; 16]; LANES]) {
    chacha20_blocks_with(Kernel::best(), key, counter, nonce0, nonce_tail, out);
}

/// `chacha20_blocks` with a chosen kernel. Panics if this CPU cannot run it (`Kernel::available`).
pub fn chacha20_blocks_with(kernel: Kernel, key: &[u32; 8], counter: &[u32; LANES], nonce0: &[u32; LANES], nonce_tail: [u32; 2], out: &mut [[u32; 16]; LANES]) {
    let mut w = [[0u32; LANES]; 16];
    chacha20_blocks_words_with(kernel, key, counter, nonce0, nonce_tail, &mut w);
    for (i, row) in w.iter().enumerate() {
        for l in 0..LANES {
            out[l][i] = row[l];
        }
    }
    w.zeroize();
}

/// The same blocks word-major (`out[i][l]`: word i of block l), as the kernels compute them.
#[inline]
pub fn chacha20_blocks_words(key: &[u32; 8], counter: &[u32; LANES], nonce0: &[u32; LANES], nonce_tail: [u32; 2], out: &mut Words) {
    chacha20_blocks_words_with(Kernel::best(), key, counter, nonce0, nonce_tail, out);
}

/// `chacha20_blocks_words` with a chosen kernel. Panics if this CPU cannot run it (`Kernel::available`).
pub fn chacha20_blocks_words_with(kernel: Kernel, key: &[u32; 8], counter: &[u32; LANES], nonce0: &[u32; LANES], nonce_tail: [u32; 2], out: &mut Words) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => {
            assert!(kernel.available(), "this CPU lacks AVX-512F");
            // SAFETY: the CPU has the feature the function is compiled for (checked above).
            unsafe { avx::blocks16_avx512(key, counter, nonce0, nonce_tail, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            assert!(kernel.available(), "this CPU lacks {kernel:?}");
            for h in 0..LANES / 8 {
                let r = 8 * h..8 * h + 8;
                let (c, n): (&[u32; 8], &[u32; 8]) = (counter[r.clone()].try_into().unwrap(), nonce0[r].try_into().unwrap());
                // SAFETY: as above.
                unsafe { avx::blocks8_avx2(key, c, n, nonce_tail, out, 8 * h) }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Sse2 => {
            for h in 0..LANES / 4 {
                let r = 4 * h..4 * h + 4;
                // SAFETY: SSE2 is part of the x86-64 baseline, so every x86-64 CPU has the feature
                // blocks4 is compiled for; it only computes on registers and writes through `out`.
                unsafe { sse2::blocks4(key, counter[r.clone()].try_into().unwrap(), nonce0[r].try_into().unwrap(), nonce_tail, out, 4 * h) };
            }
        }
        _ => chacha20_blocks_portable(key, counter, nonce0, nonce_tail, out),
    }
}

/// The same in portable Rust (the path of targets without SSE2; tests force it). Word-major.
pub fn chacha20_blocks_portable(key: &[u32; 8], counter: &[u32; LANES], nonce0: &[u32; LANES], nonce_tail: [u32; 2], out: &mut Words) {
    let k = |i: usize| -> Row { [key[i]; LANES] };
    let s = |i: usize| -> Row { [SIGMA[i]; LANES] };
    let mut init: [Row; 16] = [
        s(0), s(1), s(2), s(3), k(0), k(1), k(2), k(3), k(4), k(5), k(6), k(7),
        *counter, *nonce0, [nonce_tail[0]; LANES], [nonce_tail[1]; LANES],
    ];
    let [mut x0, mut x1, mut x2, mut x3, mut x4, mut x5, mut x6, mut x7, mut x8, mut x9, mut x10, mut x11, mut x12, mut x13, mut x14, mut x15] = init;
    twenty_rounds!(quarter, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15);
    let mut x = [x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15];
    for (i, (row, row0)) in x.iter().zip(init.iter()).enumerate() {
        for l in 0..LANES {
            out[i][l] = row[l].wrapping_add(row0[l]);
        }
    }
    x.zeroize();
    init.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulated_choice::chacha20_block;

    const ALL_KERNELS: [Kernel; 4] = [Kernel::Portable, Kernel::Sse2, Kernel::Avx2, Kernel::Avx512];

    #[test]
    fn this_cpu_runs_its_best_kernel() {
        // On the x86-64 CI machines the vector kernels are what the tests above compare.
        assert!(Kernel::best().available());
        #[cfg(target_arch = "x86_64")]
        assert_ne!(Kernel::best(), Kernel::Portable);
    }

    fn words(b: &[u8; 64]) -> [u32; 16] {
        core::array::from_fn(|i| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]))
    }

    #[test]
    fn rfc8439_block_in_every_lane() {
        // RFC 8439 §2.3.2: key 00..1f, counter 1, nonce 00:00:00:09:00:00:00:4a:00:00:00:00
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let mut out = [[0u32; 16]; LANES];
        chacha20_blocks(&key_words(&key), &[1; LANES], &[0x0900_0000; LANES], [0x4a00_0000, 0], &mut out);
        for k in ALL_KERNELS.into_iter().filter(|k| k.available()) {
            let mut other = [[0u32; 16]; LANES];
            chacha20_blocks_with(k, &key_words(&key), &[1; LANES], &[0x0900_0000; LANES], [0x4a00_0000, 0], &mut other);
            assert_eq!(other, out, "kernel {k:?}");
        }
        let want: [u32; 16] = [
            0xe4e7f110, 0x15593bd1, 0x1fdd0f50, 0xc47120a3, 0xc7f4d1c7, 0x0368c033, 0x9aaa2204, 0x4e6cd4c3,
            0x466482d2, 0x09aa9f07, 0x05d7c214, 0xa2028bd9, 0xd19c12b5, 0xb94e16de, 0xe883d0cb, 0x4e3c50a2,
        ];
        for l in 0..LANES {
            assert_eq!(out[l], want, "lane {l}");
        }
    }

    #[test]
    fn equals_rustcrypto_at_random_addresses() {
        let mut next = crate::test_rng::xorshift64(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..200 {
            let key: [u8; 32] = core::array::from_fn(|_| next() as u8);
            let counter: [u32; LANES] = core::array::from_fn(|l| if l == 0 { u32::MAX } else { next() as u32 });
            let nonce0: [u32; LANES] = core::array::from_fn(|_| (next() >> 40) as u32);
            let tail = [next() as u32, next() as u32];
            let mut out = [[0u32; 16]; LANES];
            chacha20_blocks(&key_words(&key), &counter, &nonce0, tail, &mut out);
            for l in 0..LANES {
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(&nonce0[l].to_le_bytes());
                nonce[4..8].copy_from_slice(&tail[0].to_le_bytes());
                nonce[8..].copy_from_slice(&tail[1].to_le_bytes());
                let mut b = [0u8; 64];
                chacha20_block(&key, counter[l], &nonce, &mut b);
                assert_eq!(out[l], words(&b), "lane {l}, counter {}", counter[l]);
            }
            for k in ALL_KERNELS {
                if !k.available() {
                    continue;
                }
                let mut other = [[0u32; 16]; LANES];
                chacha20_blocks_with(k, &key_words(&key), &counter, &nonce0, tail, &mut other);
                assert_eq!(other, out, "kernel {k:?} equals the default ({:?})", Kernel::best());
            }
        }
    }
}
