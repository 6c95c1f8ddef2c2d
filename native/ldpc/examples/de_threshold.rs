//! Density evolution over the BSC (de.rs): `de_threshold run <p> <rows…>` runs one point and
//! prints the outcome; `de_threshold thr <lo> <hi> <steps> <rows…>` bisects the BP threshold.
//! A protograph is given by rows of comma-separated multiplicities, e.g. `3,3` for the
//! (3,6)-regular ensemble; a column whose index is listed in PUNCT=i,j,… is punctured.
use qkd_ldpc::de::{run, threshold, Protograph};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (mode, rest) = (a[1].as_str(), &a[2..]);
    let nargs = if mode == "run" { 1 } else { 3 };
    let rows: Vec<Vec<u8>> = rest[nargs..].iter().map(|r| r.split(',').map(|x| x.parse().unwrap()).collect()).collect();
    let mut pg = Protograph::new(rows);
    if let Ok(p) = std::env::var("PUNCT") {
        for i in p.split(',') {
            pg.punctured[i.parse::<usize>().unwrap()] = true;
        }
    }
    let t = std::time::Instant::now();
    if mode == "run" {
        let p: f64 = rest[0].parse().unwrap();
        println!("rate {:.4} p {p}: {:?} ({:.1}s)", pg.rate(), run(&pg, p, 5000, 1e-7), t.elapsed().as_secs_f64());
    } else {
        let (lo, hi, steps): (f64, f64, usize) = (rest[0].parse().unwrap(), rest[1].parse().unwrap(), rest[2].parse().unwrap());
        let th = threshold(&pg, lo, hi, steps);
        let cap = qkd_ldpc::family::h2_inv(1.0 - pg.rate());
        println!(
            "rate {:.4}: BSC threshold {th:.5} (capacity {cap:.5}, f* = (1-R)/h(p*) = {:.4}) ({:.1}s)",
            pg.rate(),
            (1.0 - pg.rate()) / qkd_ldpc::family::h2(th),
            t.elapsed().as_secs_f64()
        );
    }
}
