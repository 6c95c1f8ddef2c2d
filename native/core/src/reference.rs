//! Slow, obviously-correct references live next to each fast path (`*_reference` functions in
//! sift, verify, toeplitz). This module gathers the sifting one: it works on plain vectors of
//! per-detection records, one pulse at a time, with no bit packing and no wire format.
use crate::rng::Xoshiro256;

/// One party's sifted outcome per announced event, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefEvent {
    pub pulse: u64,
    pub basis: u8,
    pub bit: u8,
}

/// Bob's grouping + squashing, straight from the description: the batch is cut at the first
/// pulse boundary at or after each multiple of `chunk` detections, and chunk c draws its coins
/// from xoshiro256** seeded with the seed whose first 8 bytes are XORed with c.
pub fn bob_events(pulse: &[u64], channel: &[u8], codes: &[u8; 256], seed: &[u8; 32], chunk: usize) -> Vec<RefEvent> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut c = 0u64;
    while start < pulse.len() {
        let mut end = (start / chunk + 1) * chunk;
        while end < pulse.len() && pulse[end] == pulse[end - 1] {
            end += 1;
        }
        let end = end.min(pulse.len());
        let mut s = *seed;
        for k in 0..8 {
            s[k] ^= (c >> (8 * k)) as u8;
        }
        out.extend(bob_events_one(&pulse[start..end], &channel[start..end], codes, &s));
        start = end;
        c += 1;
    }
    out
}

fn bob_events_one(pulse: &[u64], channel: &[u8], codes: &[u8; 256], seed: &[u8; 32]) -> Vec<RefEvent> {
    let mut rng = Xoshiro256::from_seed(seed);
    let mut out = Vec::new();
    let mut i = 0;
    while i < pulse.len() {
        let p = pulse[i];
        let mut clicked = [[false; 2]; 2];
        while i < pulse.len() && pulse[i] == p {
            let c = codes[channel[i] as usize];
            if c <= 3 {
                clicked[(c >> 1) as usize][(c & 1) as usize] = true;
            }
            i += 1;
        }
        let z = clicked[0][0] || clicked[0][1];
        let x = clicked[1][0] || clicked[1][1];
        let (basis, bit) = if !z && !x {
            continue;
        } else if z && x {
            let r = rng.next_u64() >> 62;
            ((r >> 1) as u8, (r & 1) as u8)
        } else {
            let b = if z { 0 } else { 1 };
            if clicked[b][0] && clicked[b][1] {
                (b as u8, rng.bit() as u8)
            } else {
                (b as u8, if clicked[b][1] { 1 } else { 0 })
            }
        };
        out.push(RefEvent { pulse: p, basis, bit });
    }
    out
}

/// One party's sifted strings as plain values: (bits, intensity tags) for Z and for X.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RefSifted {
    pub z: Vec<u8>,
    pub z_int: Vec<u8>,
    pub x: Vec<u8>,
    pub x_int: Vec<u8>,
}

/// Both parties' sifted strings from Bob's events and Alice's choice bytes, event by event:
/// keep an event when Alice's basis equals Bob's, file it under that basis with Alice's intensity.
pub fn sift_both(bob: &[RefEvent], choices: &[u8], first_pulse: u64) -> (RefSifted, RefSifted) {
    let (mut alice, mut bob_s) = (RefSifted::default(), RefSifted::default());
    for e in bob {
        let c = choices[(e.pulse - first_pulse) as usize];
        let (a_bit, a_basis, k) = (c & 1, (c >> 1) & 1, (c >> 2) & 3);
        if a_basis != e.basis {
            continue;
        }
        for (s, bit) in [(&mut alice, a_bit), (&mut bob_s, e.bit)] {
            if e.basis == 0 {
                s.z.push(bit);
                s.z_int.push(k);
            } else {
                s.x.push(bit);
                s.x_int.push(k);
            }
        }
    }
    (alice, bob_s)
}
