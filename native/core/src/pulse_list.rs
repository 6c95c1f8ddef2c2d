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
pub fn encode(pulses: &[f64]) -> Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(pulses.len() * 2 + 8);
    let mut prev = -1.0f64;
    for (i, &p) in pulses.iter().enumerate() {
        let d = p - prev - 1.0;
        prev = p;
        if d >= 0.0 && d < 2_147_483_648.0 {
            let mut v = d as u32;
            if v as f64 != d {
                return Err(i); // not an integer
            }
            while v >= 0x80 {
                out.push((v & 0x7f) as u8 | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        } else {
            // `!(d >= 0) || !Number.isInteger(d)`: NaN and infinities fail too.
            if !(d >= 0.0) || !d.is_finite() || d != d.floor() {
                return Err(i);
            }
            let mut v = d;
            while v >= 128.0 {
                out.push((v % 128.0) as u8 | 0x80);
                v = (v / 128.0).floor();
            }
            out.push(v as u8);
        }
    }
    Ok(out)
}

/// The indices `buf` encodes; `expected`: the count the message's header gives.
pub fn decode(buf: &[u8], expected: Option<usize>) -> Result<Vec<f64>, CoreError> {
    let mut out = Vec::with_capacity(buf.len());
    let mut prev = -1.0f64;
    let mut i = 0usize;
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
        prev = prev + 1.0 + d;
        out.push(prev);
    }
    if let Some(n) = expected {
        if out.len() != n {
            return Err(CoreError::new("PULSES_COUNT", format!("pulse list holds {} pulses, the header says {n}", out.len())));
        }
    }
    Ok(out)
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
    fn random_lists_against_the_obvious_encoder() {
        let mut s = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
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
}
