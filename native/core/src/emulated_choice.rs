//! The emulated photon source's random choices (bit, basis, intensity per pulse): a ChaCha20
//! keystream (D. J. Bernstein, "ChaCha, a variant of Salsa20", 2008; the IETF form of RFC 8439,
//! §2.3 block function) keyed with 256 bits the device draws from the OS CSPRNG and never lets go
//! of. The keystream is read with random access by pulse index, so the device answers a read-back
//! of any emitted pulse ("what did your RNG apply to pulse k?") without storing a record.
//!
//! Layout (fixed; the TypeScript slow reference src/core/source-rng-reference.ts is bit-exact):
//!
//! ```text
//!  pulse k (integer < 2^53)  ->  block b = k >> 2, lane = k & 3
//!  ChaCha20 block (RFC 8439 §2.3): key K, counter = b mod 2^32,
//!                                  nonce = u32le(b >> 32) || "qkd-src0" (12 bytes)
//!  64-byte block = 4 lanes of 16 bytes; lane = w0 w1 w2 w3 (u32 little-endian)
//!    basis     = w0 < basisZ ? 0 (Z) : 1 (X)
//!    intensity = w1 < signal ? 0 : w1 < decoy ? 1 : 2
//!    bit       = w2 & 1                      (w3 unused)
//!  choice byte = bit | basis << 1 | intensity << 2       (src/protocol/choices.ts)
//! ```
//!
//! A cryptographic PRF of (K, k): revealing the intensity classes of many pulses says nothing
//! about the bases and bits of others, unlike the 32-bit mixing hash this replaced.
//! Key material: the key lives in a zeroising wrapper; so does the cipher state.

use crate::CoreError;
use chacha20::cipher::{KeyIvInit, StreamCipherCore, StreamCipherSeekCore};
use chacha20::ChaChaCore;
use chacha20::cipher::consts::U10;
use zeroize::{Zeroize, Zeroizing};

/// Domain bytes 4..12 of the nonce: keeps this use of a key apart from any other.
pub const NONCE_DOMAIN: [u8; 8] = *b"qkd-src0";

/// The device's 256-bit key (zeroised on drop).
pub struct ChoiceKey(Zeroizing<[u8; 32]>);

impl ChoiceKey {
    pub fn new(bytes: &[u8]) -> Result<Self, CoreError> {
        if bytes.len() != 32 {
            return Err(CoreError::new("SOURCE_KEY", format!("the source key must be 32 bytes (256 bits); got {}", bytes.len())));
        }
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(bytes);
        Ok(ChoiceKey(k))
    }
}

/// Thresholds a uniform 32-bit word is compared against; up to 2^32.
#[derive(Clone, Copy, Debug)]
pub struct ChoiceThresholds {
    pub basis_z: u64,
    pub signal: u64,
    pub decoy: u64,
}

/// One ChaCha20 block (RFC 8439 §2.3) for a 32-bit block counter and a 96-bit nonce.
pub fn chacha20_block(key: &[u8; 32], counter: u32, nonce: &[u8; 12], out: &mut [u8; 64]) {
    let mut core = ChaChaCore::<U10>::new(key.into(), nonce.into());
    core.set_block_pos(counter);
    let mut block = Default::default();
    core.write_keystream_block(&mut block);
    out.copy_from_slice(&block);
    block.zeroize();
}

/// Counter and nonce of keystream block `b` (< 2^51).
#[inline]
fn block_address(b: u64) -> (u32, [u8; 12]) {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&((b >> 32) as u32).to_le_bytes());
    nonce[4..].copy_from_slice(&NONCE_DOMAIN);
    (b as u32, nonce)
}

#[inline]
fn choice_from_lane(lane: &[u8], th: ChoiceThresholds) -> u8 {
    let w = |i: usize| u32::from_le_bytes([lane[4 * i], lane[4 * i + 1], lane[4 * i + 2], lane[4 * i + 3]]);
    choice_from_words(w(0), w(1), w(2), th)
}

/// The choice byte from a lane's first three little-endian words (layout in the module doc).
#[inline]
fn choice_from_words(w0: u32, w1: u32, w2: u32, th: ChoiceThresholds) -> u8 {
    let basis = u8::from(w0 as u64 >= th.basis_z);
    let w1 = w1 as u64;
    // = if w1 < signal { 0 } else if w1 < decoy { 1 } else { 2 }, without branches (a random
    // 60/30/10 branch mispredicts at every other candidate)
    let s = u8::from(w1 >= th.signal);
    let intensity = s + (s & u8::from(w1 >= th.decoy));
    let bit = (w2 & 1) as u8;
    bit | (basis << 1) | (intensity << 2)
}

/// The choice byte of one pulse (an integer below 2^53).
pub fn alice_choice(key: &ChoiceKey, th: ChoiceThresholds, pulse: u64) -> u8 {
    let mut block = Zeroizing::new([0u8; 64]);
    let (ctr, nonce) = block_address(pulse >> 2);
    chacha20_block(&key.0, ctr, &nonce, &mut block);
    let lane = (pulse & 3) as usize * 16;
    choice_from_lane(&block[lane..lane + 16], th)
}

fn check_pulses(pulses: &[f64]) -> Result<(), CoreError> {
    if let Some(&bad) = pulses.iter().find(|&&p| !crate::lab_rng::is_pulse_index(p)) {
        return Err(CoreError::new("SIFT_PULSE_RANGE", format!("pulse index {bad} is not an integer in [0, 2^53)")));
    }
    Ok(())
}

/// Choices at the listed pulses (any order; integers in [0, 2^53)); in parallel for long lists.
/// Neighbouring pulses of one keystream block share its computation; the blocks of
/// `lab_chacha::LANES` runs are computed together (sparse lists: one block per pulse).
pub fn alice_choices_at(key: &ChoiceKey, th: ChoiceThresholds, pulses: &[f64]) -> Result<Vec<u8>, CoreError> {
    check_pulses(pulses)?;
    let mut out = vec![0u8; pulses.len()];
    let kw = Zeroizing::new(crate::lab_chacha::key_words(&key.0));
    let run = |(o, p): (&mut [u8], &[f64])| choices_at_lanes(&kw, th, p, o);
    const CHUNK: usize = 1 << 14;
    if pulses.len() > 2 * CHUNK {
        use rayon::prelude::*;
        out.par_chunks_mut(CHUNK).zip(pulses.par_chunks(CHUNK)).for_each(run);
    } else {
        run((&mut out[..], pulses));
    }
    Ok(out)
}

/// alice_choices_at's loop: runs of pulses in one keystream block, `LANES` runs per ChaCha20 call.
fn choices_at_lanes(kw: &[u32; 8], th: ChoiceThresholds, p: &[f64], o: &mut [u8]) {
    use crate::lab_chacha::{chacha20_blocks_words, LANES};
    let tail = [u32::from_le_bytes(NONCE_DOMAIN[..4].try_into().unwrap()), u32::from_le_bytes(NONCE_DOMAIN[4..].try_into().unwrap())];
    // word-major: ks[i][l] is word i of lane l's block (no transposition of the kernel's registers)
    let mut ks = Zeroizing::new([[0u32; LANES]; 16]);
    let (n, mut j) = (p.len(), 0);
    while j < n {
        // Up to LANES runs of equal block index from j; unused lanes repeat the first block.
        let mut start = [j; LANES + 1];
        let mut ctr = [0u32; LANES];
        let mut n0 = [0u32; LANES];
        let mut m = 0;
        let mut q = j;
        while q < n && m < LANES {
            // p[q] is an index below 2^53 (checked): the signed conversion is exact and one instruction
            let b = (p[q] as i64 as u64) >> 2;
            start[m] = q;
            ctr[m] = b as u32;
            n0[m] = (b >> 32) as u32;
            m += 1;
            q += 1;
            while q < n && (p[q] as i64 as u64) >> 2 == b {
                q += 1;
            }
        }
        start[m] = q;
        for l in m..LANES {
            ctr[l] = ctr[0];
            n0[l] = n0[0];
        }
        chacha20_blocks_words(kw, &ctr, &n0, tail, &mut ks);
        for l in 0..m {
            for t in start[l]..start[l + 1] {
                let i = ((p[t] as i64 as u64) & 3) as usize * 4;
                o[t] = choice_from_words(ks[i][l], ks[i + 1][l], ks[i + 2][l], th);
            }
        }
        j = q;
    }
}

/// Choices of the contiguous pulses [first, first + count) (the device's view of a range).
pub fn alice_choices_range(key: &ChoiceKey, th: ChoiceThresholds, first: u64, count: usize) -> Result<Vec<u8>, CoreError> {
    if first.checked_add(count as u64).map_or(true, |e| e > 1 << 53) {
        return Err(CoreError::new("SIFT_PULSE_RANGE", format!("pulse range [{first}, +{count}) leaves [0, 2^53)")));
    }
    let mut out = vec![0u8; count];
    let run = |(i, o): (usize, &mut [u8])| {
        let mut block = Zeroizing::new([0u8; 64]);
        let mut have = u64::MAX;
        for (j, c) in o.iter_mut().enumerate() {
            let k = first + (i * RANGE_CHUNK + j) as u64;
            if k >> 2 != have {
                have = k >> 2;
                let (ctr, nonce) = block_address(have);
                chacha20_block(&key.0, ctr, &nonce, &mut block);
            }
            let lane = (k & 3) as usize * 16;
            *c = choice_from_lane(&block[lane..lane + 16], th);
        }
    };
    const RANGE_CHUNK: usize = 1 << 16;
    use rayon::prelude::*;
    out.par_chunks_mut(RANGE_CHUNK).enumerate().for_each(run);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // RFC 8439 §2.3.2: the block function test vector.
    #[test]
    fn rfc8439_block_function() {
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let nonce: [u8; 12] = hex("000000090000004a00000000").try_into().unwrap();
        let mut out = [0u8; 64];
        chacha20_block(&key, 1, &nonce, &mut out);
        assert_eq!(out.to_vec(), hex("10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4ed2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"));
    }

    // RFC 8439 §2.4.2 (keystream of the "sunscreen" encryption, counter 1 and 2) and A.1 #1.
    #[test]
    fn rfc8439_encryption_and_appendix() {
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let nonce: [u8; 12] = hex("000000000000004a00000000").try_into().unwrap();
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let want = hex("6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0bf91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d807ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab77937365af90bbf74a35be6b40b8eedf2785e42874d");
        let mut ct = Vec::new();
        for (i, chunk) in pt.chunks(64).enumerate() {
            let mut ks = [0u8; 64];
            chacha20_block(&key, 1 + i as u32, &nonce, &mut ks);
            ct.extend(chunk.iter().zip(ks.iter()).map(|(a, b)| a ^ b));
        }
        assert_eq!(ct, want);
        let mut out = [0u8; 64];
        chacha20_block(&[0u8; 32], 0, &[0u8; 12], &mut out);
        assert_eq!(out.to_vec(), hex("76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"));
    }

    #[test]
    fn sparse_range_and_single_agree() {
        let key = ChoiceKey::new(&[7u8; 32]).unwrap();
        let th = ChoiceThresholds { basis_z: 1 << 31, signal: 3_006_477_107, decoy: 3_865_470_566 };
        let first = (1u64 << 34) - 100_000; // crosses block 2^32 (pulse 2^34), where the nonce word changes
        let range = alice_choices_range(&key, th, first, 200_000).unwrap();
        let pulses: Vec<f64> = (0..200_000u64).map(|i| (first + i) as f64).collect();
        assert_eq!(alice_choices_at(&key, th, &pulses).unwrap(), range);
        for i in [0usize, 1, 99_999, 100_000, 199_999] {
            assert_eq!(alice_choice(&key, th, first + i as u64), range[i]);
        }
        // The top of the range.
        let top = (1u64 << 53) - 1;
        assert_eq!(alice_choices_at(&key, th, &[top as f64]).unwrap()[0], alice_choice(&key, th, top));
    }

    #[test]
    fn sparse_lists_equal_single_choices() {
        // Lists as the lab gives them (sorted, sparse), unsorted ones, repeats, runs in one block,
        // lengths around the lane count and the parallel threshold, across block 2^32.
        let key = ChoiceKey::new(&core::array::from_fn::<u8, 32, _>(|i| (i * 29 + 3) as u8)).unwrap();
        let th = ChoiceThresholds { basis_z: 1 << 31, signal: 3_006_477_107, decoy: 3_865_470_566 };
        let mut next = crate::test_rng::xorshift64(0x2545_f491_4f6c_dd1du64);
        for case in 0..60 {
            let n = [0, 1, 7, 8, 9, 17, 1000, 40_000][case % 8];
            let mut p = (1u64 << 34) - 20_000 * (case as u64 % 3);
            let mut pulses: Vec<f64> = (0..n)
                .map(|_| {
                    p += match next() % 4 { 0 => 0, 1 => 1 + next() % 3, 2 => 1 + next() % 400, _ => next() % 100_000 };
                    p.min((1 << 53) - 1) as f64
                })
                .collect();
            if case % 5 == 4 {
                for i in (1..pulses.len()).rev() {
                    pulses.swap(i, (next() % (i as u64 + 1)) as usize);
                }
            }
            let got = alice_choices_at(&key, th, &pulses).unwrap();
            for (i, &q) in pulses.iter().enumerate() {
                assert_eq!(got[i], alice_choice(&key, th, q as u64), "case {case}, pulse {q}");
            }
        }
    }

    #[test]
    fn choices_reject_bad_input() {
        let key = ChoiceKey::new(&[1u8; 32]).unwrap();
        let th = ChoiceThresholds { basis_z: 1 << 31, signal: 1 << 31, decoy: 3 << 30 };
        assert!(alice_choices_at(&key, th, &[1.5]).is_err());
        assert!(alice_choices_at(&key, th, &[-1.0]).is_err());
        assert!(alice_choices_at(&key, th, &[f64::NAN]).is_err());
        assert!(alice_choices_range(&key, th, (1 << 53) - 1, 2).is_err());
        assert!(ChoiceKey::new(&[0u8; 16]).is_err());
        assert_eq!(alice_choices_at(&key, th, &[0.0, 7.0]).unwrap().len(), 2);
    }
}
