//! `ldpc-peer-export LOG2N RATE_PERMILLE PUNCTURED SHORTENED OUT_DIR`: writes the parity-check
//! matrix of one shipped code as a frame with these rate-adaptation parameters sees it, for an
//! independent decoder (scripts/ldpc_peer.py) to decode the same frames as ours.
//!
//! Columns are renumbered: 0..k are the key bits in frame order (layout().key_pos), k..k+p the
//! punctured fill (unknown to Bob: prior 1/2); shortened columns are dropped (known zeros, they do
//! not change any syndrome). Rows are the mother code's checks, in syndrome bit order.
//! Files: h_rows.u32 and h_cols.u32 (COO, little-endian u32), meta.json.
use qkd_ldpc::family::{check_params, layout, CodeId, FrameParams};
use std::io::Write;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 5 {
        eprintln!("usage: ldpc-peer-export LOG2N RATE_PERMILLE PUNCTURED SHORTENED OUT_DIR");
        std::process::exit(2);
    }
    let num = |i: usize| -> usize {
        a[i].parse().unwrap_or_else(|_| {
            eprintln!("argument {} must be a non-negative integer, got {:?}", i + 1, a[i]);
            std::process::exit(2)
        })
    };
    let fp = FrameParams {
        code: CodeId { log2n: num(0) as u32, rate_permille: num(1) as u32 },
        punctured: num(2),
        shortened: num(3),
    };
    let code = check_params(&fp).unwrap_or_else(|e| {
        eprintln!("bad parameters: {e}; pass chooseCode().params");
        std::process::exit(2)
    });
    let lay = layout(&code, fp.punctured, fp.shortened).expect("checked above");
    let mut new_col = vec![u32::MAX; code.n];
    for (i, &v) in lay.key_pos.iter().chain(lay.punct_pos.iter()).enumerate() {
        new_col[v as usize] = i as u32;
    }
    let (mut rows, mut cols) = (Vec::new(), Vec::new());
    for c in 0..code.m {
        for &v in code.row(c) {
            let nc = new_col[v as usize];
            if nc != u32::MAX {
                rows.push(c as u32);
                cols.push(nc);
            }
        }
    }
    let dir = std::path::Path::new(&a[4]);
    let write = |name: &str, xs: &[u32]| {
        let mut f = std::fs::File::create(dir.join(name)).expect("create output file");
        let bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
        f.write_all(&bytes).expect("write output file");
    };
    write("h_rows.u32", &rows);
    write("h_cols.u32", &cols);
    let meta = format!(
        "{{\"m\":{},\"keyBits\":{},\"punctured\":{},\"shortenedDropped\":{},\"edges\":{},\"checksum\":\"{:016x}\"}}\n",
        code.m,
        lay.key_pos.len(),
        lay.punct_pos.len(),
        fp.shortened,
        rows.len(),
        code.checksum()
    );
    std::fs::write(dir.join("meta.json"), meta).expect("write meta.json");
}
