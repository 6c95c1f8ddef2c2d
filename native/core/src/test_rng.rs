//! The tests' random numbers: xorshift64 (13, 7, 17), reproducible from a seed. Test-only.

/// A xorshift64 generator from `seed` (0 is replaced: the state must not be 0).
pub(crate) fn xorshift64(seed: u64) -> impl FnMut() -> u64 {
    let mut s = if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed };
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}
