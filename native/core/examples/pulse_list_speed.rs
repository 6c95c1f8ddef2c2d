use qkd_core::pulse_list::{decode, encode};
use std::time::Instant;
fn main() {
    let n = 1 << 20;
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut x = 0.0f64;
    let p: Vec<f64> = (0..n).map(|_| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; x += 1.0 + (s % 400) as f64; x }).collect();
    let mut e = encode(&p).unwrap();
    let t0 = Instant::now();
    for _ in 0..20 { e = encode(&p).unwrap(); }
    let t1 = Instant::now();
    let mut d = decode(&e, Some(n)).unwrap();
    for _ in 0..20 { d = decode(&e, Some(n)).unwrap(); }
    let t2 = Instant::now();
    println!("encode {:.2} ns/pulse, decode {:.2} ns/pulse ({} bytes, {})", (t1 - t0).as_nanos() as f64 / (20 * n) as f64, (t2 - t1).as_nanos() as f64 / (20 * n) as f64, e.len(), d.len());
}
