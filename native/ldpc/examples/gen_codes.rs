//! Regenerates the provenance table of the shipped family:
//! `cargo run --release -p qkd-ldpc --example gen_codes > native/ldpc/codes/checksums.txt`
//! (optionally `-- <max_log2n>`; `-- alist <log2n> <rate‰>` prints one matrix in alist format).
use qkd_ldpc::family::{self, CodeId, LOG2N, RATES_PERMILLE};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.get(1).map(|s| s.as_str()) == Some("alist") {
        let id = CodeId { log2n: a[2].parse().unwrap(), rate_permille: a[3].parse().unwrap() };
        print!("{}", family::code(id).to_alist());
        return;
    }
    let max: u32 = a.get(1).map(|s| s.parse().unwrap()).unwrap_or(20);
    println!("{}", qkd_ldpc::family::CHECKSUM_HEADER);
    for &l in LOG2N.iter().filter(|&&l| l <= max) {
        for &r in RATES_PERMILLE.iter() {
            println!("{}", family::provenance_line(CodeId { log2n: l, rate_permille: r }));
        }
    }
}
