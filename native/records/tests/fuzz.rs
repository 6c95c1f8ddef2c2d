//! Fuzzing of the record-file decoders (issue 14): for any bytes — random, or a real recording
//! (../shared/data/picoquant, and every file of the repository's corpus
//! test/fuzz/corpus/records-{ptu,qutag,a1}/) with byte-level mutations — every decoder either
//! decodes or returns a `RecordsError` with a `RECORDS_*` code: no panic (proptest fails the case
//! and shrinks it), no endless loop (every call that has whole records and output room consumes
//! at least one, checked), bounded time per input. The same corpus feeds the TypeScript fuzz
//! targets (src/testkit/fuzz-targets.ts), which go through the napi adapter.
use proptest::prelude::*;
use qkd_records::a1::A1Decoder;
use qkd_records::ptu::{parse_header, Out, PtuDecoder};
use qkd_records::qutag::{QutagDecoder, HEADER_BYTES};
use qkd_records::RecordsError;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Real inputs: the corpus of `target` and (for PTU) the head of each sample recording.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(repo().join("test/fuzz/corpus").join(target)) {
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        out.extend(files.iter().filter_map(|f| std::fs::read(f).ok()));
    }
    if target == "records-ptu" {
        for f in ["picoharp/v30_t2.ptu", "hydraharp/v20_t2.ptu", "hydraharp/v10_t3.ptu", "hydraharp/v20_t3.ptu"] {
            if let Ok(b) = std::fs::read(repo().join("../shared/data/picoquant").join(f)) {
                out.push(b[..b.len().min(16384)].to_vec());
            }
        }
    }
    assert!(!out.is_empty(), "no seeds for {target}: test/fuzz/corpus/{target}/ is missing");
    out
}

/// Byte edits: (kind, position, byte). Flip a bit, set a byte, insert, delete, truncate.
fn mutate(seed: &[u8], edits: &[(u8, usize, u8)]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for &(op, at, v) in edits {
        let at = if b.is_empty() { 0 } else { at % (b.len() + 1) };
        match op % 5 {
            0 if at < b.len() => b[at] ^= 1 << (v & 7),
            1 if at < b.len() => b[at] = v,
            2 => b.insert(at, v),
            3 if at < b.len() => {
                b.remove(at);
            }
            4 => b.truncate(at),
            _ => {}
        }
    }
    b
}

fn coded(e: &RecordsError) -> bool {
    e.code.starts_with("RECORDS_") && !e.message.is_empty()
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

const SLOW: Duration = Duration::from_secs(2);

/// Parses and decodes a whole PTU file in small chunks into small output slices.
fn run_ptu(bytes: &[u8], room: usize) -> Result<(), String> {
    let t0 = Instant::now();
    let h = match parse_header(bytes) {
        Ok(h) => h,
        Err(e) => return if coded(&e) { Ok(()) } else { Err(format!("uncoded error {e}")) },
    };
    let mut d = match PtuDecoder::from_header(&h) {
        Ok(d) => d,
        Err(e) => return if coded(&e) { Ok(()) } else { Err(format!("uncoded error {e}")) },
    };
    let data = &bytes[h.data_offset.min(bytes.len())..];
    let (mut t, mut c, mut ns, mut dt) = (vec![0i64; room], vec![0u8; room], vec![0u64; room], vec![0u16; room]);
    let mut at = 0;
    while at + 4 <= data.len() {
        let p = d.decode(&data[at..], Out { time_ps: &mut t, channel: &mut c, nsync: &mut ns, dtime: &mut dt }).map_err(|e| e.to_string())?;
        if p.records == 0 {
            return Err(format!("no progress at byte {at} with {room} slots"));
        }
        at += p.records * 4;
        if t0.elapsed() > SLOW {
            return Err("slow".into());
        }
    }
    Ok(())
}

fn run_qutag(bytes: &[u8], unit_ps: f64, window_ps: i64, room: usize) -> Result<(), String> {
    let t0 = Instant::now();
    let mut d = match QutagDecoder::new(unit_ps, window_ps) {
        Ok(d) => d,
        Err(e) => return if coded(&e) { Ok(()) } else { Err(format!("uncoded error {e}")) },
    };
    let data = &bytes[HEADER_BYTES.min(bytes.len())..];
    let (mut t, mut c) = (vec![0i64; room], vec![0u8; room]);
    let mut at = 0;
    let mut written = 0usize;
    loop {
        let p = d.decode(&data[at..], &mut t, &mut c, true).map_err(|e| e.to_string())?;
        at += p.records * 10;
        written += p.events;
        if p.records == 0 && p.events == 0 {
            break;
        }
        if t0.elapsed() > SLOW {
            return Err("slow".into());
        }
    }
    if data.len() - at >= 10 {
        return Err(format!("stopped with {} whole records left", (data.len() - at) / 10));
    }
    if d.pending() != 0 {
        return Err(format!("{} events held back after the last call", d.pending()));
    }
    let _ = written;
    Ok(())
}

fn run_a1(bytes: &[u8], legacy: bool, room: usize) -> Result<(), String> {
    let mut d = A1Decoder::new(legacy);
    let (mut t, mut c) = (vec![0i64; room], vec![0u8; room]);
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let p = match d.decode(&bytes[at..], &mut t, &mut c) {
            Ok(p) => p,
            Err(e) => return if coded(&e) && room < 4 { Ok(()) } else { Err(format!("error {e} with {room} slots")) },
        };
        if p.records == 0 {
            return Err(format!("no progress at byte {at}"));
        }
        at += p.records * 8;
    }
    Ok(())
}

fn edits() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..8)
}

proptest! {
    // 2000 cases per property (about a second in release; PROPTEST_CASES=N for longer runs).
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn ptu_random_bytes(tail in prop::collection::vec(any::<u8>(), 0..2048), room in 4usize..64) {
        // With the magic most inputs get past the first check.
        let mut b = b"PQTTTR\0\01.0.00\0\0".to_vec();
        b.extend(tail);
        prop_assert_eq!(run_ptu(&b, room), Ok(()));
    }

    #[test]
    fn ptu_mutated_real_headers(i in any::<usize>(), e in edits(), room in 4usize..64) {
        let s = seeds("records-ptu");
        let b = mutate(&s[i % s.len()], &e);
        prop_assert_eq!(run_ptu(&b, room), Ok(()));
    }

    #[test]
    fn qutag_any_bytes_any_unit(b in prop::collection::vec(any::<u8>(), 0..1024), unit in prop_oneof![Just(1.0), Just(81.0), any::<f64>()],
        window in prop_oneof![Just(1_000_000i64), any::<i64>()], room in 1usize..64) {
        prop_assert_eq!(run_qutag(&b, unit, window, room), Ok(()));
    }

    #[test]
    fn qutag_mutated(i in any::<usize>(), e in edits(), room in 1usize..64) {
        let s = seeds("records-qutag");
        prop_assert_eq!(run_qutag(&mutate(&s[i % s.len()], &e), 1.0, 1_000_000, room), Ok(()));
    }

    #[test]
    fn a1_any_bytes(b in prop::collection::vec(any::<u8>(), 0..1024), legacy in any::<bool>(), room in 0usize..64) {
        prop_assert_eq!(run_a1(&b, legacy, room), Ok(()));
    }

    #[test]
    fn a1_mutated(i in any::<usize>(), e in edits(), legacy in any::<bool>(), room in 4usize..64) {
        let s = seeds("records-a1");
        prop_assert_eq!(run_a1(&mutate(&s[i % s.len()], &e), legacy, room), Ok(()));
    }
}
