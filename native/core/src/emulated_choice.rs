//! The emulated lab's per-pulse choice generator (src/lab/alice.ts), bit for bit: a keyed hash of
//! the pulse index built from the `lowbias32` mixer. Alice's node regenerates her choices at the
//! pulses Bob announces from it (the stand-in for reading back her QRNG record), so it sits on the
//! sifting path: ~30 ns per pulse in TypeScript, ~1 ns here (and split across threads).
//!
//! NOT a cryptographic PRF and not key randomness: an emulation device (see docs/run.md, Limits).

use crate::CoreError;

/// The two 32-bit keys the TypeScript `seedKeys(seed, domain)` derives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChoiceKeys {
    pub k0: u32,
    pub k1: u32,
}

/// Thresholds a uniform 32-bit word is compared against (`aliceThresholds`); up to 2^32.
#[derive(Clone, Copy, Debug)]
pub struct ChoiceThresholds {
    pub basis_z: u64,
    pub signal: u64,
    pub decoy: u64,
}

#[inline(always)]
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

pub fn seed_keys(seed: u64, domain: u32) -> ChoiceKeys {
    let (lo, hi) = (seed as u32, (seed >> 32) as u32);
    let k0 = mix32(lo ^ mix32(domain ^ 0x3c6e_f372));
    let k1 = mix32(hi ^ mix32(k0 ^ domain ^ 0xa54f_f53a));
    ChoiceKeys { k0, k1 }
}

#[inline(always)]
pub fn pulse_hash(k: ChoiceKeys, pulse: u64) -> u32 {
    let a = mix32((pulse as u32) ^ k.k0);
    mix32((a ^ k.k1).wrapping_add(((pulse >> 32) as u32 ^ 0x9e37_79b9).wrapping_mul(0x85eb_ca6b)))
}

/// Alice's packed choice (bit | basis << 1 | intensity << 2) of one pulse.
#[inline(always)]
pub fn alice_choice(k: ChoiceKeys, th: ChoiceThresholds, pulse: u64) -> u8 {
    let h = pulse_hash(k, pulse);
    let w_basis = mix32(h ^ 0x68e3_1da4) as u64;
    let w_int = mix32(h.wrapping_add(0xb529_7a4d)) as u64;
    let bit = (mix32(h ^ 0x1b56_c4e9) >> 31) as u8;
    let basis = u8::from(w_basis >= th.basis_z);
    let intensity = if w_int < th.signal { 0 } else if w_int < th.decoy { 1 } else { 2 };
    bit | (basis << 1) | (intensity << 2)
}

/// Choices at the listed pulses (integers in [0, 2^53)); in parallel for long lists.
pub fn alice_choices_at(k: ChoiceKeys, th: ChoiceThresholds, pulses: &[f64]) -> Result<Vec<u8>, CoreError> {
    if let Some(&bad) = pulses.iter().find(|&&p| !(p >= 0.0 && p < 9_007_199_254_740_992.0 && p.fract() == 0.0)) {
        return Err(CoreError::new("SIFT_PULSE_RANGE", format!("pulse index {bad} is not an integer in [0, 2^53)")));
    }
    let mut out = vec![0u8; pulses.len()];
    let run = |(o, p): (&mut [u8], &[f64])| {
        for (c, &q) in o.iter_mut().zip(p) {
            *c = alice_choice(k, th, q as u64);
        }
    };
    const CHUNK: usize = 1 << 16;
    if pulses.len() > 2 * CHUNK {
        use rayon::prelude::*;
        out.par_chunks_mut(CHUNK).zip(pulses.par_chunks(CHUNK)).for_each(run);
    } else {
        run((&mut out[..], pulses));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers computed with the TypeScript generator (src/lab/alice.ts); the property test
    // against it on random input is test/core/emulated-choice.test.ts.
    #[test]
    fn known_answers_from_the_typescript_generator() {
        assert_eq!([mix32(0), mix32(1), mix32(0xdead_beef), mix32(123_456_789)], [0, 0x6889_90c0, 0xe628_c683, 0xa8f1_db88]);
        let k = seed_keys(0x0123_4567_89ab_cdef, 0x414c_4943);
        assert_eq!(k, ChoiceKeys { k0: 0x2f92_eb23, k1: 0x9550_b9e8 });
        let th = ChoiceThresholds { basis_z: 1 << 31, signal: 3_006_477_107, decoy: 3_865_470_566 };
        let pulses = [0.0, 1.0, 4_294_967_295.0, 4_294_967_296.0, 9_007_199_254_740_991.0];
        assert_eq!(alice_choices_at(k, th, &pulses).unwrap(), vec![1, 3, 4, 4, 3]);
    }

    #[test]
    fn choices_reject_bad_pulses() {
        let k = seed_keys(1, 0x414c_4943);
        let th = ChoiceThresholds { basis_z: 1 << 31, signal: 1 << 31, decoy: 3 << 30 };
        assert!(alice_choices_at(k, th, &[1.5]).is_err());
        assert!(alice_choices_at(k, th, &[-1.0]).is_err());
        assert!(alice_choices_at(k, th, &[f64::NAN]).is_err());
        assert_eq!(alice_choices_at(k, th, &[0.0, 7.0]).unwrap().len(), 2);
    }
}
