//! The shipped provenance table (codes/checksums.txt, quoted in docs/ldpc.md) is regenerated from
//! the construction and compared line by line. Small codes always; all sizes with `--ignored`.
use qkd_ldpc::family::{provenance_line, CodeId, LOG2N, RATES_PERMILLE, SHIPPED_TABLE};

fn check(max_log2n: u32) {
    let shipped: Vec<&str> = SHIPPED_TABLE.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(shipped.len(), LOG2N.len() * RATES_PERMILLE.len(), "the table must list every shipped code");
    let mut i = 0;
    for &l in LOG2N.iter() {
        for &r in RATES_PERMILLE.iter() {
            if l <= max_log2n {
                assert_eq!(provenance_line(CodeId { log2n: l, rate_permille: r }), shipped[i], "code 2^{l} rate {r}");
            }
            i += 1;
        }
    }
}

#[test]
fn small_shipped_codes_regenerate_bit_for_bit() {
    check(14);
}

#[test]
#[ignore = "builds every shipped code (~1 min); run with --ignored"]
fn all_shipped_codes_regenerate_bit_for_bit() {
    check(20);
}
