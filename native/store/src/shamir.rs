//! Shamir's secret sharing over GF(2^8), byte by byte (A. Shamir, "How to share a secret",
//! Communications of the ACM 22(11):612-613, 1979).
//!
//! Field: GF(2^8) with the AES reduction polynomial x^8 + x^4 + x^3 + x + 1 (0x11B, FIPS 197
//! §4.2). For each secret byte `s` a polynomial `f(x) = s + a_1 x + ... + a_{K-1} x^{K-1}` is drawn
//! with every `a_t` uniform in GF(2^8) — including zero for the top coefficient: forcing it
//! non-zero would make the share distribution depend on the secret. Share `i` (i = 1..N) holds
//! `f(i)` for every byte. Any K shares give `f(0)` by Lagrange interpolation at 0:
//! `s = Σ_i y_i · Π_{j≠i} x_j / (x_j - x_i)` (subtraction is XOR). Any K-1 shares are consistent
//! with every value of each secret byte under exactly one polynomial each, so they reveal nothing.
//!
//! Arithmetic on secret data is constant-time: multiplication by shift-and-add with masks (no
//! table indexed by secret bytes, no branch on them); the share abscissae are public.
//!
//! Share text (one line, what a custodian's file holds):
//!
//! ```text
//! qkd-share-v1.<set id: 16 hex>.<K>.<N>.<x>.<f(x) for each byte: hex>.<check: 8 hex>
//! check = first 4 bytes of SHA-256("qkd-kms share v1" || 0x00 || everything before ".<check>")
//! ```
//!
//! The check catches a mistyped or damaged share before it is used; a share that passes it but is
//! wrong (another set's, or forged) is caught when the K shares do not reconstruct the master key
//! the keystore was made with (see keystore.rs).
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Product in GF(2^8) mod 0x11B, constant-time.
pub fn gf_mul(a: u8, b: u8) -> u8 {
    let (mut a, mut b, mut p) = (a, b, 0u8);
    for _ in 0..8 {
        p ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    p
}

/// Inverse in GF(2^8) (a^254; the inverse of 0 is taken as 0), constant-time.
pub fn gf_inv(a: u8) -> u8 {
    // 254 = 0b11111110: fixed (public) exponent, so square-and-multiply has no secret branch.
    let mut r = 1u8;
    let mut base = a;
    let mut e = 254u8;
    while e > 0 {
        let m = 0u8.wrapping_sub(e & 1);
        let t = gf_mul(r, base);
        r = (t & m) | (r & !m);
        base = gf_mul(base, base);
        e >>= 1;
    }
    r
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShamirError {
    /// Parameters out of range (K < 2, K > N, N > 255, empty secret).
    Params(String),
    /// Shares that cannot be combined (duplicate x, x = 0, lengths differ, too few).
    Shares(String),
}
impl std::fmt::Display for ShamirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShamirError::Params(m) | ShamirError::Shares(m) => f.write_str(m),
        }
    }
}

/// One share: the abscissa `x` (1..=255) and `f(x)` for each secret byte. Zeroised on drop.
pub struct Share {
    pub x: u8,
    pub y: Zeroizing<Vec<u8>>,
}

/// Splits `secret` into `n` shares, any `k` of which reconstruct it. `coeffs` supplies the random
/// coefficients: for byte `j`, `a_1..a_{k-1}` are `coeffs[j*(k-1) .. (j+1)*(k-1)]` (tests pass
/// fixed ones to compare with an independent implementation; `split` draws them from the OS).
pub fn split_with_coeffs(secret: &[u8], n: u8, k: u8, coeffs: &[u8]) -> Result<Vec<Share>, ShamirError> {
    if secret.is_empty() {
        return Err(ShamirError::Params("empty secret".into()));
    }
    if k < 2 || k > n {
        return Err(ShamirError::Params(format!("need 2 <= threshold <= shares <= 255, got threshold {k} of {n}")));
    }
    let d = (k - 1) as usize;
    if coeffs.len() != secret.len() * d {
        return Err(ShamirError::Params("wrong number of coefficients".into()));
    }
    let mut out = Vec::with_capacity(n as usize);
    for x in 1..=n {
        let mut y = Zeroizing::new(vec![0u8; secret.len()]);
        for (j, s) in secret.iter().enumerate() {
            // Horner: f(x) = s + x(a_1 + x(a_2 + ... x a_d))
            let c = &coeffs[j * d..(j + 1) * d];
            let mut acc = 0u8;
            for t in (0..d).rev() {
                acc = gf_mul(acc, x) ^ c[t];
            }
            y[j] = gf_mul(acc, x) ^ s;
        }
        out.push(Share { x, y });
    }
    Ok(out)
}

/// Splits `secret` with coefficients from the OS CSPRNG.
pub fn split(secret: &[u8], n: u8, k: u8) -> Result<Vec<Share>, ShamirError> {
    let mut coeffs = Zeroizing::new(vec![0u8; secret.len() * (k.max(1) - 1) as usize]);
    getrandom::getrandom(&mut coeffs).map_err(|e| ShamirError::Params(format!("OS random source failed: {e}")))?;
    split_with_coeffs(secret, n, k, &coeffs)
}

/// Reconstructs the secret from shares (at least the threshold; all are used, so pass exactly K
/// from the same set). Distinct non-zero abscissae and equal lengths are required.
pub fn combine(shares: &[&Share]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    if shares.len() < 2 {
        return Err(ShamirError::Shares("at least 2 shares are needed".into()));
    }
    let len = shares[0].y.len();
    for (i, s) in shares.iter().enumerate() {
        if s.x == 0 || s.y.len() != len || len == 0 {
            return Err(ShamirError::Shares("shares differ in length or have index 0".into()));
        }
        if shares[..i].iter().any(|o| o.x == s.x) {
            return Err(ShamirError::Shares(format!("share index {} given twice", s.x)));
        }
    }
    // Lagrange basis at 0 (depends only on the public abscissae).
    let basis: Vec<u8> = shares
        .iter()
        .map(|si| {
            let (mut num, mut den) = (1u8, 1u8);
            for sj in shares.iter().filter(|sj| sj.x != si.x) {
                num = gf_mul(num, sj.x);
                den = gf_mul(den, sj.x ^ si.x);
            }
            gf_mul(num, gf_inv(den))
        })
        .collect();
    let mut out = Zeroizing::new(vec![0u8; len]);
    for (s, l) in shares.iter().zip(&basis) {
        for (o, y) in out.iter_mut().zip(s.y.iter()) {
            *o ^= gf_mul(*y, *l);
        }
    }
    Ok(out)
}

/// A parsed share line (see the module doc).
pub struct ShareLine {
    pub set_id: [u8; 8],
    pub threshold: u8,
    pub count: u8,
    pub share: Share,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
fn unhex(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    if s.len() % 2 != 0 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut v = Zeroizing::new(Vec::with_capacity(s.len() / 2));
    for i in (0..s.len()).step_by(2) {
        v.push(u8::from_str_radix(&s[i..i + 2], 16).ok()?);
    }
    Some(v)
}
fn check_of(body: &str) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(b"qkd-kms share v1\0");
    h.update(body.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Formats a share as one line (zeroised string).
pub fn format_share(set_id: &[u8; 8], threshold: u8, count: u8, s: &Share) -> Zeroizing<String> {
    let body = Zeroizing::new(format!("qkd-share-v1.{}.{}.{}.{}.{}", hex(set_id), threshold, count, s.x, hex(&s.y)));
    Zeroizing::new(format!("{}.{}", &*body, hex(&check_of(&body))))
}

/// Parses one share line. Errors say what is wrong without echoing the share.
pub fn parse_share(line: &str) -> Result<ShareLine, String> {
    let line = line.trim();
    let Some((body, check)) = line.rsplit_once('.') else {
        return Err("not a share line (expected qkd-share-v1.…)".into());
    };
    let parts: Vec<&str> = body.split('.').collect();
    if parts.len() != 6 || parts[0] != "qkd-share-v1" {
        return Err("not a share line (expected qkd-share-v1.<set>.<K>.<N>.<index>.<data>.<check>)".into());
    }
    let want = check_of(body);
    let got = unhex(check).filter(|c| c.len() == 4).ok_or("checksum field is not 8 hex digits")?;
    if got[..] != want[..] {
        return Err("checksum mismatch: the share is damaged or mistyped".into());
    }
    let set = unhex(parts[1]).filter(|s| s.len() == 8).ok_or("set id is not 16 hex digits")?;
    let threshold: u8 = parts[2].parse().map_err(|_| "threshold is not a number 2..255")?;
    let count: u8 = parts[3].parse().map_err(|_| "share count is not a number 2..255")?;
    let x: u8 = parts[4].parse().map_err(|_| "share index is not a number 1..255")?;
    if threshold < 2 || threshold > count || x == 0 || x > count {
        return Err(format!("share index {x}, threshold {threshold} of {count} are inconsistent"));
    }
    let y = unhex(parts[5]).filter(|y| !y.is_empty()).ok_or("share data is not hex")?;
    let mut set_id = [0u8; 8];
    set_id.copy_from_slice(&set);
    Ok(ShareLine { set_id, threshold, count, share: Share { x, y } })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slow reference: multiplication by repeated doubling with explicit reduction.
    fn ref_mul(a: u8, b: u8) -> u8 {
        let mut r: u16 = 0;
        for i in 0..8 {
            if b >> i & 1 == 1 {
                r ^= (a as u16) << i;
            }
        }
        for i in (8..16).rev() {
            if r >> i & 1 == 1 {
                r ^= 0x11b << (i - 8);
            }
        }
        r as u8
    }

    #[test]
    fn field_against_reference() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(gf_mul(a, b), ref_mul(a, b), "{a}*{b}");
            }
            if a != 0 {
                assert_eq!(gf_mul(a, gf_inv(a)), 1, "inverse of {a}");
            }
        }
        assert_eq!(gf_mul(0x57, 0x83), 0xc1, "FIPS 197 §4.2 example");
    }

    #[test]
    fn vectors_from_the_python_reference() {
        // test/vectors/shamir-gf256.txt, written by test/vectors/shamir_gf256.py (an independent
        // table-based implementation): secret, K, N, coefficients, then the expected shares.
        let text = include_str!("../../../test/vectors/shamir-gf256.txt");
        let mut cases = 0;
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let secret = unhex(f[0]).unwrap();
            let (k, n): (u8, u8) = (f[1].parse().unwrap(), f[2].parse().unwrap());
            let coeffs = if f[3] == "-" { Zeroizing::new(vec![]) } else { unhex(f[3]).unwrap() };
            let shares = split_with_coeffs(&secret, n, k, &coeffs).unwrap();
            assert_eq!(shares.len(), n as usize);
            for (s, want) in shares.iter().zip(&f[4..]) {
                let (x, y) = want.split_once(':').unwrap();
                assert_eq!(s.x, x.parse::<u8>().unwrap());
                assert_eq!(hex(&s.y), y, "case {cases}: share {x}");
            }
            // and back: the first K and the last K shares each give the secret
            let first: Vec<&Share> = shares.iter().take(k as usize).collect();
            let last: Vec<&Share> = shares.iter().rev().take(k as usize).collect();
            assert_eq!(&combine(&first).unwrap()[..], &secret[..]);
            assert_eq!(&combine(&last).unwrap()[..], &secret[..]);
            cases += 1;
        }
        assert!(cases >= 10, "the vector file has {cases} cases");
    }

    /// Every subset of size K of N shares reconstructs; for K = 2..5 and N up to 7, random secrets.
    #[test]
    fn any_k_of_n_reconstruct() {
        for n in 2..=7u8 {
            for k in 2..=n.min(5) {
                let mut secret = [0u8; 32];
                getrandom::getrandom(&mut secret).unwrap();
                let shares = split(&secret, n, k).unwrap();
                for mask in 0u32..(1 << n) {
                    if mask.count_ones() != k as u32 {
                        continue;
                    }
                    let sub: Vec<&Share> = shares.iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).map(|(_, s)| s).collect();
                    assert_eq!(&combine(&sub).unwrap()[..], &secret[..], "n={n} k={k} subset {mask:b}");
                }
            }
        }
    }

    /// K-1 shares reveal nothing: over all coefficient choices, the joint distribution of any K-1
    /// shares of one byte is the same (uniform, each value once) whatever the secret byte.
    /// Exhaustive for K=2 (256 polynomials) and K=3 (65 536 polynomials) over every secret byte.
    #[test]
    fn k_minus_one_shares_reveal_nothing() {
        // K = 2, N = 3: any single share
        for x in 1..=3u8 {
            for s in 0..=255u8 {
                let mut seen = [0u16; 256];
                for a1 in 0..=255u8 {
                    let sh = split_with_coeffs(&[s], 3, 2, &[a1]).unwrap();
                    seen[sh[(x - 1) as usize].y[0] as usize] += 1;
                }
                assert!(seen.iter().all(|&c| c == 1), "K=2: share {x} is not uniform for secret {s}");
            }
        }
        // K = 3, N = 4: shares (1,2), (2,4) and (3,4); every pair of values exactly once
        for (xa, xb) in [(1u8, 2u8), (2, 4), (3, 4)] {
            for s in [0u8, 1, 0x53, 0xca, 0xff] {
                let mut seen = vec![0u8; 65536];
                for a1 in 0..=255u8 {
                    for a2 in 0..=255u8 {
                        let sh = split_with_coeffs(&[s], 4, 3, &[a1, a2]).unwrap();
                        let (ya, yb) = (sh[(xa - 1) as usize].y[0], sh[(xb - 1) as usize].y[0]);
                        seen[(ya as usize) << 8 | yb as usize] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "K=3: shares {xa},{xb} not uniform for secret {s}");
            }
        }
    }

    /// The other half of "nothing revealed": given K-1 shares, every candidate secret byte is
    /// consistent with exactly one polynomial (interpolate through (0, s') and the K-1 points and
    /// check the degree stays below K).
    #[test]
    fn every_secret_consistent_with_k_minus_one_shares() {
        let secret = [0x42u8; 4];
        let shares = split(&secret, 5, 3).unwrap();
        let two = [&shares[1], &shares[3]];
        for cand in 0..=255u8 {
            // Polynomial through (0,cand),(x1,y1),(x2,y2) has degree <= 2 = K-1: evaluating it at a
            // third share's abscissa gives some value; the point is the system always has a
            // solution, i.e. the fake share built from it combines with the two real ones to `cand`.
            let fake_x = 5u8;
            // Lagrange at fake_x through the three points.
            let pts = [(0u8, cand), (two[0].x, two[0].y[0]), (two[1].x, two[1].y[0])];
            let mut y = 0u8;
            for (i, &(xi, yi)) in pts.iter().enumerate() {
                let (mut num, mut den) = (1u8, 1u8);
                for (j, &(xj, _)) in pts.iter().enumerate() {
                    if i != j {
                        num = gf_mul(num, fake_x ^ xj);
                        den = gf_mul(den, xi ^ xj);
                    }
                }
                y ^= gf_mul(yi, gf_mul(num, gf_inv(den)));
            }
            let fake = Share { x: fake_x, y: Zeroizing::new(vec![y]) };
            let a = Share { x: two[0].x, y: Zeroizing::new(vec![two[0].y[0]]) };
            let b = Share { x: two[1].x, y: Zeroizing::new(vec![two[1].y[0]]) };
            assert_eq!(combine(&[&a, &b, &fake]).unwrap()[0], cand);
        }
    }

    #[test]
    fn share_lines_round_trip_and_detect_damage() {
        let set = [1, 2, 3, 4, 5, 6, 7, 8];
        let sh = split(&[9u8; 32], 5, 3).unwrap();
        let line = format_share(&set, 3, 5, &sh[2]);
        let p = parse_share(&line).unwrap();
        assert_eq!((p.set_id, p.threshold, p.count, p.share.x), (set, 3, 5, 3));
        assert_eq!(&p.share.y[..], &sh[2].y[..]);
        // flip one hex digit of the data: the checksum catches it
        let mut bad = line.to_string();
        let pos = bad.len() - 12;
        let c = if &bad[pos..pos + 1] == "0" { "1" } else { "0" };
        bad.replace_range(pos..pos + 1, c);
        assert!(parse_share(&bad).err().unwrap().contains("checksum"));
        assert!(parse_share("hello").is_err());
        assert!(combine(&[&sh[0]]).is_err());
        assert!(combine(&[&sh[0], &sh[0]]).is_err());
        assert!(split(&[1], 3, 4).is_err());
        assert!(split(&[1], 3, 1).is_err());
    }
}
