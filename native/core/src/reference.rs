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

/// Bob's grouping + squashing, straight from the description (same RNG draw order as `sift`).
pub fn bob_events(pulse: &[u64], channel: &[u8], codes: &[u8; 256], seed: &[u8; 32]) -> Vec<RefEvent> {
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
