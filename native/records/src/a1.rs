//! qcrypto / S-Fifteen time-stamp files (`readevents -a1`), read and written.
//!
//! Layout from qcrypto's own documentation (github.com/kurtsiefer/qcrypto:
//! `remotecrypto/filespec.txt` §0 "raw file format", `timestamp3/readevents3.c` usage text) and
//! S-Fifteen's timestamp7 tools (4 ps units, the `-X` "legacy" word order):
//!
//! ```text
//!  one event = 64 bits
//!   63                                              10 9      4 3      0
//!  ┌─────────────────────────────────────────────────┬────────┬────────┐
//!  │ time in 1/256 ns (≈3.9 ps), 54 bits              │ flags  │ detector│
//!  │ (the 125 ps units of older cards are bits 63..15)│ (0)    │ pattern │
//!  └─────────────────────────────────────────────────┴────────┴────────┘
//!  stored as two u32 little-endian words: low word first (readevents7 default), or high word
//!  first ("legacy", the original struct {msw, lsw} written on x86).
//! ```
//! Detector pattern bit b is detector (channel) b+1. A pattern with several bits is a
//! coincidence within one time unit: it is read as one event per bit at the same time, and the
//! writer merges events of one time unit back into one pattern, so a1 -> events -> a1 is
//! bit-exact (flags are written as 0). Events with an empty pattern are counted, not written.
//! Times convert as ps = round(units x 125 / 32) and back units = round(ps x 32 / 125): a file's
//! own times survive the round trip exactly; integer-ps times from elsewhere move by <= 2 ps.
use crate::{Progress, RecordsError, Result, Stats};

pub const RECORD_BYTES: usize = 8;

#[inline(always)]
fn word(rec: &[u8], legacy: bool) -> u64 {
    let a = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]) as u64;
    let b = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]) as u64;
    if legacy { a << 32 | b } else { b << 32 | a }
}

/// 1/256 ns units -> ps, rounded half up.
#[inline(always)]
pub fn units_to_ps(u: u64) -> i64 {
    ((u * 125 + 16) / 32) as i64
}

/// ps -> 1/256 ns units, rounded half up.
#[inline(always)]
pub fn ps_to_units(ps: i64) -> u64 {
    ((ps as u64) * 64 + 125) / 250
}

#[derive(Debug, Clone)]
pub struct A1Decoder {
    pub legacy: bool,
    pub stats: Stats,
}

impl A1Decoder {
    pub fn new(legacy: bool) -> Self {
        A1Decoder { legacy, stats: Stats::default() }
    }

    /// Decodes whole 8-byte events until the input ends or fewer than 4 output slots remain.
    pub fn decode(&mut self, input: &[u8], time_ps: &mut [i64], channel: &mut [u8]) -> Result<Progress> {
        let cap = time_ps.len().min(channel.len());
        if cap < 4 {
            return Err(RecordsError::new("RECORDS_BAD_ARGUMENT", format!("output room for {cap} events; give at least 4")));
        }
        let (mut r, mut w) = (0usize, 0usize);
        let legacy = self.legacy;
        for rec in input.chunks_exact(RECORD_BYTES) {
            if w + 4 > cap {
                break;
            }
            let v = word(rec, legacy);
            r += 1;
            let t = units_to_ps(v >> 10);
            let p = (v & 0xF) as u8;
            if p.is_power_of_two() {
                let c = p.trailing_zeros() as u8 + 1;
                time_ps[w] = t;
                channel[w] = c;
                self.stats.per_channel[c as usize] += 1;
                w += 1;
            } else if p == 0 {
                self.stats.empty += 1;
            } else {
                for b in 0..4u8 {
                    if p & (1 << b) != 0 {
                        time_ps[w] = t;
                        channel[w] = b + 1;
                        self.stats.per_channel[(b + 1) as usize] += 1;
                        w += 1;
                    }
                }
            }
        }
        Ok(Progress { records: r, events: w })
    }
}

/// Writes events as a1 words. `first_channel` is the channel that becomes detector bit 0 (1 for
/// channels as read from a1 files, 0 for this node's 0-based tagger channels); channels outside
/// `first_channel..first_channel + 4` and times that are negative or go backwards are refused
/// (`RECORDS_BAD_ARGUMENT`, naming the event). Events in one time unit merge into one pattern.
pub fn encode(time_ps: &[i64], channel: &[u8], first_channel: u8, legacy: bool, out: &mut Vec<u8>) -> Result<usize> {
    if time_ps.len() != channel.len() {
        return Err(RecordsError::new("RECORDS_BAD_ARGUMENT", format!("{} times but {} channels", time_ps.len(), channel.len())));
    }
    let mut words = 0usize;
    let mut cur: Option<(u64, u64)> = None; // (units, pattern)
    let mut prev_t = 0i64;
    let mut put = |units: u64, pattern: u64, out: &mut Vec<u8>| {
        let v = units << 10 | pattern;
        let (hi, lo) = ((v >> 32) as u32, v as u32);
        let (a, b) = if legacy { (hi, lo) } else { (lo, hi) };
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
        words += 1;
    };
    for (i, (&t, &c)) in time_ps.iter().zip(channel).enumerate() {
        let bit = c.wrapping_sub(first_channel);
        if bit >= 4 {
            return Err(RecordsError::new(
                "RECORDS_BAD_ARGUMENT",
                format!("event {i} is on channel {c}; a1 holds 4 detectors, channels {first_channel}..{}", first_channel as u16 + 3),
            ));
        }
        if t < 0 || t < prev_t {
            return Err(RecordsError::new("RECORDS_BAD_ARGUMENT", format!("event {i} at {t} ps is negative or earlier than the event before ({prev_t} ps): a1 files are time-ordered")));
        }
        if t >= 1 << 56 {
            return Err(RecordsError::new("RECORDS_BAD_ARGUMENT", format!("event {i} at {t} ps is beyond the 54-bit a1 time range")));
        }
        prev_t = t;
        let u = ps_to_units(t);
        match cur {
            Some((cu, pat)) if cu == u => cur = Some((cu, pat | 1 << bit)),
            Some((cu, pat)) => {
                put(cu, pat, out);
                cur = Some((u, 1 << bit));
            }
            None => cur = Some((u, 1 << bit)),
        }
    }
    if let Some((cu, pat)) = cur {
        put(cu, pat, out);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8], legacy: bool) -> (Vec<(i64, u8)>, Stats) {
        let mut d = A1Decoder::new(legacy);
        let n = bytes.len() / 2 + 4;
        let (mut t, mut c) = (vec![0i64; n], vec![0u8; n]);
        let p = d.decode(bytes, &mut t, &mut c).unwrap();
        assert_eq!(p.records * 8, bytes.len());
        ((0..p.events).map(|i| (t[i], c[i])).collect(), d.stats)
    }

    #[test]
    fn known_answers_both_word_orders() {
        // 1000 units (= 3906.25 ps -> 3906) on detector 3 (bit 2), then 256 units (= 1000 ps) on 1+4.
        let v1: u64 = 1000 << 10 | 0b0100;
        let v2: u64 = 256 << 10 | 0b1001;
        let mut modern = Vec::new();
        let mut legacy = Vec::new();
        for v in [v1, v2, 7 << 10] {
            modern.extend_from_slice(&v.to_le_bytes());
            legacy.extend_from_slice(&((v >> 32) as u32).to_le_bytes());
            legacy.extend_from_slice(&(v as u32).to_le_bytes());
        }
        let want = vec![(3906, 3), (1000, 1), (1000, 4)];
        let (m, st) = dec(&modern, false);
        assert_eq!(m, want);
        assert_eq!(st.empty, 1);
        assert_eq!(dec(&legacy, true).0, want);
        // Times above 2^32 units: the word order matters.
        let big: u64 = (5u64 << 40) << 10 | 1;
        assert_eq!(dec(&big.to_le_bytes(), false).0, vec![(units_to_ps(5 << 40), 1)]);
    }

    #[test]
    fn round_trip_file_bits_exact() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut u = 0u64;
        for legacy in [false, true] {
            let mut bytes = Vec::new();
            for _ in 0..5000 {
                u += rng.gen_range(1..3000); // distinct units: equal ones would merge on writing
                let p: u64 = rng.gen_range(1..16);
                let v = u << 10 | p;
                let (hi, lo) = ((v >> 32) as u32, v as u32);
                let (a, b) = if legacy { (hi, lo) } else { (lo, hi) };
                bytes.extend_from_slice(&a.to_le_bytes());
                bytes.extend_from_slice(&b.to_le_bytes());
            }
            let (ev, _) = dec(&bytes, legacy);
            let t: Vec<i64> = ev.iter().map(|e| e.0).collect();
            let c: Vec<u8> = ev.iter().map(|e| e.1).collect();
            let mut out = Vec::new();
            encode(&t, &c, 1, legacy, &mut out).unwrap();
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn integer_ps_within_two_ps_and_refusals() {
        let t: Vec<i64> = (0..2000).map(|i| i * 7919 + (i % 13)).collect();
        let c: Vec<u8> = (0..2000).map(|i| (i % 4) as u8).collect();
        let mut out = Vec::new();
        assert_eq!(encode(&t, &c, 0, false, &mut out).unwrap(), 2000);
        let (ev, _) = dec(&out, false);
        for (i, e) in ev.iter().enumerate() {
            assert!((e.0 - t[i]).abs() <= 2, "{} vs {}", e.0, t[i]);
            assert_eq!(e.1, c[i] + 1);
        }
        assert_eq!(encode(&[0], &[4], 0, false, &mut out).unwrap_err().code, "RECORDS_BAD_ARGUMENT");
        assert_eq!(encode(&[5, 4], &[0, 0], 0, false, &mut out).unwrap_err().code, "RECORDS_BAD_ARGUMENT");
    }
}
