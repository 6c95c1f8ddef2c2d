//! Pulse lists on the wire (src/protocol/pulse-list.ts, the reference): strictly increasing
//! non-negative integer pulse indices as unsigned LEB128 deltas, the first from -1
//! (`p0, p1 - p0 - 1, ...`). Used by the sift dialogue and the photon source's read-back, ~2
//! bytes per detection each way; in TypeScript the four encode/decode passes of a link cost ~4 %
//! of its CPU. The arithmetic is the reference's, operation for operation in f64 (the deltas of
//! indices below 2^53 are exact; larger values round exactly as JavaScript's numbers do), so the
//! bytes and the decoded indices are the same bit for bit, errors included.
use crate::CoreError;

/// LEB128 deltas of `pulses`; `Err(i)` when `pulses[i]` does not continue a strictly increasing
/// integer sequence from -1 (not an integer, not above its predecessor, or not finite).
///
/// Deltas below 2^28 (all but a few per block) are written without a branch on their length:
/// the four 7-bit groups are spread into a u32 with the continuation bits of the groups in use,
/// stored whole, and the cursor moves by the length. A branch on a 1-or-2-byte length is a coin
/// flip at a link's detection densities (mean gap ~200 pulses): it cost more than the arithmetic.
pub fn encode(pulses: &[f64]) -> Result<Vec<u8>, usize> {
    let mut out = vec![0u8; pulses.len() * 4 + 16];
    let mut o = 0usize;
    let mut prev = -1.0f64;
    for (i, &p) in pulses.iter().enumerate() {
        let d = p - prev - 1.0;
        prev = p;
        if !put_delta(&mut out, &mut o, d, pulses.len() - i) {
            return Err(i);
        }
    }
    out.truncate(o);
    Ok(out)
}

/// Writes delta `d` at `out[*o..]` and moves `*o` past it; false (nothing written) when `d` is not
/// a non-negative integer. `out` has room for four bytes plus 16 at `*o`, and keeps room for four
/// bytes per pulse of the `left` ones (this one included) after a long number.
#[inline(always)]
fn put_delta(out: &mut Vec<u8>, o: &mut usize, d: f64, left: usize) -> bool {
    if d >= 0.0 && d < 268_435_456.0 {
        let v = d as u32;
        if v as f64 != d {
            return false; // not an integer
        }
        let spread = (v & 0x7f) | ((v << 1) & 0x7f00) | ((v << 2) & 0x7f_0000) | ((v << 3) & 0x7f00_0000);
        let len = 1 + (v >= 1 << 7) as usize + (v >= 1 << 14) as usize + (v >= 1 << 21) as usize;
        // Continuation bits on every group but the last one in use.
        let cont = 0x0080_8080u32 & ((1u64 << (8 * (len - 1))) - 1) as u32;
        out[*o..*o + 4].copy_from_slice(&(spread | cont).to_le_bytes());
        *o += len;
        return true;
    }
    // `!(d >= 0) || !Number.isInteger(d)`: NaN and infinities fail too.
    if !(d >= 0.0) || !d.is_finite() || d != d.floor() {
        return false;
    }
    let mut v = d;
    while v >= 128.0 {
        if *o + 8 > out.len() {
            out.resize(out.len() * 2, 0); // a delta of up to 2^1024 takes 147 bytes
        }
        out[*o] = (v % 128.0) as u8 | 0x80;
        *o += 1;
        v = (v / 128.0).floor();
    }
    out[*o] = v as u8;
    *o += 1;
    // Room again for four bytes per remaining pulse.
    let need = *o + 16 + 4 * left;
    if out.len() < need {
        out.resize(need, 0);
    }
    true
}

/// How many pulses `buf` lists, without decoding them: the bytes that end a number. The list is
/// refused as `decode` refuses it when it ends inside a number (PULSES_TRUNCATED) or holds a
/// number of more than eight bytes (PULSES_MALFORMED). For a list passed on unchanged (Alice
/// forwards Bob's to her source, which decodes it): one branch-free pass instead of a decode and an encode.
pub fn count(buf: &[u8]) -> Result<usize, CoreError> {
    // One pass: numbers end at bytes below 0x80; nine continuation bytes in a row are a number
    // past `decode`'s 2^56 limit.
    let (mut n, mut run) = (0usize, 0u32);
    for &b in buf {
        let more = (b >> 7) as u32;
        n += 1 - more as usize;
        run = (run + 1) * more;
        if run > 8 {
            return Err(CoreError::new("PULSES_MALFORMED", "pulse list holds a number above 2^53"));
        }
    }
    // After the check above, as `decode` meets a long number before the end.
    if run > 0 {
        return Err(CoreError::new("PULSES_TRUNCATED", "pulse list ends inside a number: the message was truncated"));
    }
    Ok(n)
}

/// Why `encode_distinct` refused its input.
#[derive(Debug, PartialEq, Eq)]
pub enum DistinctError {
    /// `pulses[i]` is below its predecessor.
    Unsorted(usize),
    /// `pulses[i]` is not a non-negative integer (as `encode`).
    NotAnIndex(usize),
}

/// Bob's sift part in one pass: the list of the distinct pulses of `pulses` (sorted, a pulse may
/// repeat: one detection per click) encoded as `encode` does, and in `rank[i]` the position of
/// `pulses[i]`'s pulse in that list. Returns the bytes and the number of distinct pulses.
pub fn encode_distinct(pulses: &[f64], rank: &mut [f64]) -> Result<(Vec<u8>, usize), DistinctError> {
    assert!(rank.len() >= pulses.len(), "encode_distinct: rank must hold one entry per pulse");
    // One pass, encoding each new pulse as it is met (no list of the distinct pulses: at 10^7
    // detections that was 80 MB of fresh memory per part). The reference checks the order of the
    // whole list before it encodes, so an unsorted list is refused as such even after a pulse
    // that cannot be encoded: that one is remembered, and the scan goes on.
    let mut out = vec![0u8; pulses.len() * 4 + 16];
    let (mut o, mut nd, mut prev) = (0usize, 0usize, -1.0f64);
    let mut last: Option<f64> = None;
    let mut bad: Option<usize> = None;
    for (i, &p) in pulses.iter().enumerate() {
        match last {
            Some(q) if p == q => {}
            Some(q) if p < q => return Err(DistinctError::Unsorted(i)),
            _ => {
                last = Some(p);
                nd += 1;
                if bad.is_none() {
                    let d = p - prev - 1.0;
                    prev = p;
                    if !put_delta(&mut out, &mut o, d, pulses.len() - i) {
                        bad = Some(i); // the first detection that carries this pulse
                    }
                }
            }
        }
        rank[i] = (nd - 1) as f64;
    }
    if let Some(i) = bad {
        return Err(DistinctError::NotAnIndex(i));
    }
    out.truncate(o);
    Ok((out, nd))
}

/// The indices `buf` encodes; `expected`: the count the message's header gives.
///
/// Numbers of up to four bytes are read eight bytes at a time without a branch on their length;
/// the running index is an integer while it stays below 2^53 (where f64 arithmetic is exact, so
/// the result is the reference's bit for bit), the reference's f64 steps beyond.
pub fn decode(buf: &[u8], expected: Option<usize>) -> Result<Vec<f64>, CoreError> {
    let mut out = vec![0.0; buf.len()];
    let n = decode_into(buf, &mut out)?;
    out.truncate(n);
    if let Some(e) = expected {
        if n != e {
            return Err(CoreError::new("PULSES_COUNT", format!("pulse list holds {n} pulses, the header says {e}")));
        }
    }
    Ok(out)
}

/// `decode` into `out` (at least `buf.len()` long: every pulse takes a byte or more); returns the
/// count. Lets JavaScript hand its own Float64Array (no copy of the result across the boundary).
pub fn decode_into(buf: &[u8], out: &mut [f64]) -> Result<usize, CoreError> {
    assert!(out.len() >= buf.len(), "decode_into: out must hold buf.len() pulses");
    let mut n = 0usize;
    let mut prev = -1i64;
    let mut i = 0usize;
    const SAFE: i64 = 1 << 53;
    while i + 8 <= buf.len() && prev < SAFE - (1 << 29) {
        let x = u64::from_le_bytes(buf[i..i + 8].try_into().unwrap());
        let stop = !x & 0x8080_8080_8080_8080;
        let len = (stop.trailing_zeros() / 8 + 1) as usize; // 9 when no byte ends a number here
        if len > 4 {
            break; // a long number: the general loop below
        }
        let x = x as u32 as u64 & (u64::MAX >> (64 - 8 * len as u32));
        let v = (x & 0x7f) | ((x >> 1) & 0x3f80) | ((x >> 2) & 0x1f_c000) | ((x >> 3) & 0xfe0_0000);
        prev += 1 + v as i64;
        out[n] = prev as f64;
        n += 1;
        i += len;
    }
    let mut prevf = prev as f64;
    while i < buf.len() {
        let mut b = buf[i];
        i += 1;
        let mut d = (b & 0x7f) as f64;
        if b & 0x80 != 0 {
            let mut mul = 128.0f64;
            loop {
                if i >= buf.len() {
                    return Err(CoreError::new("PULSES_TRUNCATED", "pulse list ends inside a number: the message was truncated"));
                }
                b = buf[i];
                i += 1;
                d += (b & 0x7f) as f64 * mul;
                if b & 0x80 == 0 {
                    break;
                }
                mul *= 128.0;
                if mul > 72_057_594_037_927_936.0 {
                    return Err(CoreError::new("PULSES_MALFORMED", "pulse list holds a number above 2^53"));
                }
            }
        }
        prevf = prevf + 1.0 + d;
        out[n] = prevf;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// LEB128 of u64 deltas, the obvious way.
    fn encode_slow(pulses: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev: i128 = -1;
        for &p in pulses {
            let mut d = (p as i128 - prev - 1) as u128;
            prev = p as i128;
            loop {
                let byte = (d & 0x7f) as u8;
                d >>= 7;
                if d == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
        out
    }

    #[test]
    fn known_answers() {
        assert_eq!(encode(&[0.0, 1.0, 5.0, 200.0]).unwrap(), vec![0, 0, 3, 194, 1]);
        assert_eq!(encode(&[]).unwrap(), Vec::<u8>::new());
        assert_eq!(decode(&[0, 0, 3, 194, 1], Some(4)).unwrap(), vec![0.0, 1.0, 5.0, 200.0]);
        assert_eq!(encode(&[1.0, 1.0]), Err(1));
        assert_eq!(encode(&[0.5]), Err(0));
        assert_eq!(encode(&[f64::NAN]), Err(0));
        assert_eq!(encode(&[-1.0]), Err(0));
        assert_eq!(decode(&[0x80], None).unwrap_err().code, "PULSES_TRUNCATED");
        assert_eq!(decode(&[0xff; 12], None).unwrap_err().code, "PULSES_MALFORMED");
        assert_eq!(decode(&[1, 2], Some(3)).unwrap_err().code, "PULSES_COUNT");
    }

    #[test]
    fn near_2_53_and_long_numbers_between_short_ones() {
        // Crosses the integer fast path's limit (2^53 - 2^29) and mixes 1..8-byte numbers.
        let mut p = (1u64 << 53) - (1 << 31);
        let mut pulses = vec![5u64, 6, 1 << 45, (1 << 45) + 1];
        pulses.extend((0..3000).map(|k| {
            p += 1 + (k * 7919 % 1_000_003) as u64 * if k % 97 == 0 { 1000 } else { 1 };
            p
        }).filter(|&x| x < (1 << 53)));
        let f: Vec<f64> = pulses.iter().map(|&x| x as f64).collect();
        let bytes = encode(&f).unwrap();
        assert_eq!(bytes, encode_slow(&pulses));
        assert_eq!(decode(&bytes, Some(f.len())).unwrap(), f);
        for cut in [1, 2, 3, 7, 9] {
            match decode(&bytes[..bytes.len() - cut], None) {
                Ok(v) => assert!(v.len() < f.len() && v[..] == f[..v.len()], "cut {cut}: a prefix"),
                Err(e) => assert_eq!(e.code, "PULSES_TRUNCATED", "cut {cut}"),
            }
        }
    }

    #[test]
    fn random_lists_against_the_obvious_encoder() {
        let mut next = crate::test_rng::xorshift64(0x1234_5678_9abc_def0u64);
        for case in 0..300 {
            let n = (next() % 2000) as usize;
            let mut p = 0u64;
            let pulses: Vec<u64> = (0..n)
                .map(|k| {
                    let gap = match next() % 5 {
                        0 => 0,
                        1 => next() % 128,
                        2 => next() % 100_000,
                        3 => next() % (1 << 40),
                        _ => next() % (1 << 33),
                    };
                    p = if k == 0 && case % 2 == 0 { gap } else { p + 1 + gap };
                    p
                })
                .filter(|&x| x < (1 << 53))
                .collect();
            let f: Vec<f64> = pulses.iter().map(|&x| x as f64).collect();
            let bytes = encode(&f).unwrap();
            assert_eq!(bytes, encode_slow(&pulses));
            assert_eq!(decode(&bytes, Some(f.len())).unwrap(), f);
        }
    }

    #[test]
    fn encode_distinct_equals_dedup_then_encode_with_ranks() {
        let mut next = crate::test_rng::xorshift64(0x0bad_cafe_f00d_u64);
        for _ in 0..300 {
            let n = (next() % 3000) as usize;
            let mut p = 0u64;
            let pulses: Vec<f64> = (0..n)
                .map(|_| {
                    if next() % 4 != 0 {
                        p += next() % 500 + 1;
                    }
                    p as f64
                })
                .collect();
            let mut rank = vec![-1.0; n];
            let (bytes, count) = encode_distinct(&pulses, &mut rank).unwrap();
            let mut distinct = pulses.clone();
            distinct.dedup();
            assert_eq!(count, distinct.len());
            assert_eq!(bytes, encode(&distinct).unwrap());
            for i in 0..n {
                assert_eq!(distinct[rank[i] as usize], pulses[i]);
            }
        }
        let mut rank = vec![0.0; 4];
        assert_eq!(encode_distinct(&[3.0, 3.0, 2.0], &mut rank), Err(DistinctError::Unsorted(2)));
        assert_eq!(encode_distinct(&[1.0, 1.0, 2.5, 2.5], &mut rank), Err(DistinctError::NotAnIndex(2)));
        // the order is checked over the whole list first, as the reference does
        assert_eq!(encode_distinct(&[0.5, 3.0, 2.0], &mut rank), Err(DistinctError::Unsorted(2)));
        assert_eq!(encode_distinct(&[0.0, f64::NAN, 1.0], &mut rank), Err(DistinctError::NotAnIndex(1)));
        assert_eq!(encode_distinct(&[], &mut rank), Ok((vec![], 0)));
    }

    #[test]
    fn count_agrees_with_decode_on_lists_and_garbage() {
        let mut next = crate::test_rng::xorshift64(0x5eed_0f_c0_u64);
        for case in 0..400 {
            let n = (next() % 9000) as usize;
            let buf: Vec<u8> = if case % 2 == 0 {
                // A valid list with long gaps now and then, maybe cut short.
                let mut p = 0u64;
                let pulses: Vec<f64> = (0..n).map(|_| { p += 1 + next() % if next() % 50 == 0 { 1 << 40 } else { 300 }; p as f64 }).collect();
                let mut b = encode(&pulses).unwrap();
                if case % 6 == 0 && !b.is_empty() {
                    b.truncate(b.len() - 1 - (next() % 3) as usize % b.len());
                }
                b
            } else {
                // Garbage, with runs of continuation bytes of every length around the seams.
                let mut b: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                if n > 4100 && case % 3 == 1 {
                    let at = 4096 - (next() % 9) as usize;
                    let len = 7 + (next() % 4) as usize;
                    b[at..at + len].fill(0xff);
                    b[at - 1] = 0;
                    b[at + len] = 0;
                }
                b
            };
            match (decode(&buf, None), count(&buf)) {
                (Ok(v), Ok(k)) => assert_eq!(v.len(), k, "case {case}"),
                (Err(a), Err(b)) => assert_eq!(a.code, b.code, "case {case}"),
                (a, b) => panic!("case {case}: decode {:?} vs count {:?}", a.map(|v| v.len()).map_err(|e| e.code), b.map_err(|e| e.code)),
            }
        }
    }
}
