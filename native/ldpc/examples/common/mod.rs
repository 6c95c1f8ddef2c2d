//! Shared by the simulation examples: seeded test frames through a BSC, and process CPU time.
use qkd_ldpc::family::FrameParams;
use qkd_ldpc::encode;
use rand::{Rng, SeedableRng};

/// Alice's keys, her puncturing fills, Bob's noisy copies and Alice's syndromes.
pub struct Frames {
    pub alice: Vec<Vec<u8>>,
    pub fills: Vec<Vec<u8>>,
    pub bob: Vec<Vec<u8>>,
    pub synd: Vec<Vec<u8>>,
}

fn random_bits(rng: &mut impl Rng, nbits: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..nbits.div_ceil(8)).map(|_| rng.gen()).collect();
    if nbits % 8 != 0 {
        *v.last_mut().unwrap() &= (1u8 << (nbits % 8)) - 1;
    }
    v
}

pub fn make_frames(fp: &FrameParams, q: f64, count: usize, seed: u64) -> Frames {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let k = fp.key_bits();
    let mut f = Frames { alice: vec![], fills: vec![], bob: vec![], synd: vec![] };
    for _ in 0..count {
        let x = random_bits(&mut rng, k);
        let fill = random_bits(&mut rng, fp.punctured);
        let mut y = x.clone();
        for i in 0..k {
            if rng.gen::<f64>() < q {
                y[i >> 3] ^= 1 << (i & 7);
            }
        }
        f.synd.push(encode(fp, &x, &fill).unwrap());
        f.alice.push(x);
        f.fills.push(fill);
        f.bob.push(y);
    }
    f
}

/// User + system CPU seconds of this process.
#[allow(dead_code)]
pub fn cpu() -> f64 {
    let st = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = st[st.rfind(')').unwrap() + 2..].split(' ').collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
