//! QC family (qc.rs): `qc_codes <log2n> <rate‰…>` builds each QC code and prints its size, edges,
//! lifting factor, untainted puncturing capacity, the shortest cycle its shift search closed,
//! its girth (exact, by breadth-first search from copy 0 of every block), the girth of the random
//! code of the same rate, build time and FNV-1a-64 checksum.
use qkd_ldpc::family::{code, CodeId, Family};
use qkd_ldpc::qc::{construct_qc, girth};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let log2n: u32 = a[1].parse().unwrap();
    let random = std::env::var("RANDOM_GIRTH").is_ok();
    for r in &a[2..] {
        let r: u32 = r.parse().unwrap();
        let id = CodeId::new(log2n, r, Family::Qc);
        let t = std::time::Instant::now();
        let l = construct_qc(&id.spec(), id.lift());
        let dt = t.elapsed().as_secs_f64();
        let g = girth(&l.code, Some(l.z));
        let gr = if random { girth(&code(CodeId::new(log2n, r, Family::Random)), None).to_string() } else { "-".into() };
        println!(
            "2^{log2n} rate {r}: n {} m {} Z {} edges {} punct_max {} shortest_closed {} girth {g} (random code: {gr}) build {dt:.1}s checksum {:016x}",
            l.code.n,
            l.code.m,
            l.z,
            l.code.edges(),
            l.code.punct_order.len(),
            l.shortest_closed,
            l.code.checksum()
        );
    }
}
