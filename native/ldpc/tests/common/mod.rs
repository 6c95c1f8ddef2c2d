//! Shared by the integration tests: seeded frames of Alice, her fill, Bob's copy through a BSC,
//! and Alice's syndrome.
#![allow(dead_code)]
use qkd_ldpc::encode;
use qkd_ldpc::family::FrameParams;
use rand::{Rng, SeedableRng};

pub struct Frame {
    pub alice: Vec<u8>,
    pub fill: Vec<u8>,
    pub bob: Vec<u8>,
    pub synd: Vec<u8>,
}

pub fn random_bits(rng: &mut impl Rng, nbits: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..nbits.div_ceil(8)).map(|_| rng.gen()).collect();
    if nbits % 8 != 0 {
        *v.last_mut().unwrap() &= (1u8 << (nbits % 8)) - 1;
    }
    v
}

pub fn make_frames(fp: &FrameParams, q: f64, count: usize, seed: u64) -> Vec<Frame> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let k = fp.key_bits();
    (0..count)
        .map(|_| {
            let alice = random_bits(&mut rng, k);
            let fill = random_bits(&mut rng, fp.punctured);
            let synd = encode(fp, &alice, &fill).unwrap();
            let mut bob = alice.clone();
            for i in 0..k {
                if rng.gen::<f64>() < q {
                    bob[i >> 3] ^= 1 << (i & 7);
                }
            }
            Frame { alice, fill, bob, synd }
        })
        .collect()
}
