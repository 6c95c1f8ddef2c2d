//! The real PicoQuant recordings in ../shared/data/picoquant (BSD-3 sample files; see its
//! README): what the files say about themselves must match what the decoder makes of them.
use qkd_records::ptu::{parse_header, Out, PtuDecoder, TagValue};
use qkd_records::MARKER_CHANNEL;
use std::path::PathBuf;

fn sample(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/picoquant").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (the sample recordings live in ../shared/data/picoquant next to the repository)", p.display()))
}

struct Decoded {
    records: u64,
    events: u64,
    first: i64,
    last: i64,
    ordered_photons: bool,
    per_channel: [u64; 256],
    overflow_records: u64,
}

fn decode(bytes: &[u8]) -> (qkd_records::ptu::PtuHeader, Decoded) {
    let h = parse_header(bytes).unwrap();
    let mut d = PtuDecoder::from_header(&h).unwrap();
    let data = &bytes[h.data_offset..];
    let room = 4096;
    let (mut t, mut c, mut ns, mut dt) = (vec![0i64; room], vec![0u8; room], vec![0u64; room], vec![0u16; room]);
    let mut at = 0;
    let mut r = Decoded { records: 0, events: 0, first: -1, last: i64::MIN, ordered_photons: true, per_channel: [0; 256], overflow_records: 0 };
    while at + 4 <= data.len() {
        let p = d.decode(&data[at..], Out { time_ps: &mut t, channel: &mut c, nsync: &mut ns, dtime: &mut dt }).unwrap();
        at += p.records * 4;
        r.records += p.records as u64;
        for i in 0..p.events {
            if r.first < 0 { r.first = t[i]; }
            // Markers are coarser and may sit slightly out of order (PicoQuant says so); photons may not.
            if c[i] < MARKER_CHANNEL {
                if t[i] < r.last { r.ordered_photons = false; }
                r.last = t[i];
            }
        }
        r.events += p.events as u64;
    }
    r.per_channel = d.stats.per_channel;
    r.overflow_records = d.stats.overflow_records;
    assert_eq!(d.stats.illegal, 0);
    (h, r)
}

fn int_tag(h: &qkd_records::ptu::PtuHeader, name: &str, idx: i32) -> f64 {
    match h.get(name, idx) {
        Some(TagValue::Int(v)) => *v as f64,
        other => panic!("{name}({idx}): {other:?}"),
    }
}

#[test]
fn every_sample_decodes_to_what_its_header_says() {
    // (file, record type, sync-input events at channel 0 expected)
    for (f, rectype) in [("picoharp/v30_t2.ptu", 0x0001_0203), ("hydraharp/v20_t2.ptu", 0x0101_0204), ("hydraharp/v10_t3.ptu", 0x0001_0304), ("hydraharp/v20_t3.ptu", 0x0101_0304)] {
        let bytes = sample(f);
        let (h, r) = decode(&bytes);
        assert_eq!(h.rectype, rectype, "{f}");
        assert_eq!(r.records, h.num_records, "{f}: records");
        assert_eq!((bytes.len() - h.data_offset) as u64, 4 * h.num_records, "{f}: data section size");
        assert!(r.ordered_photons, "{f}: photon times go backwards");
        assert_eq!(r.per_channel.iter().sum::<u64>(), r.events);
        assert_eq!(r.events + r.overflow_records, r.records, "{f}: no markers in these files: every record is an event or an overflow");
        // The recording lasted TTResult_StopAfter ms: first-to-last event spans (almost) that.
        let stop_after_ps = int_tag(&h, "TTResult_StopAfter", -1) * 1e9;
        let span = (r.last - r.first) as f64;
        assert!(span <= stop_after_ps && span > 0.999 * stop_after_ps, "{f}: span {span} ps vs StopAfter {stop_after_ps} ps");
        let sync = int_tag(&h, "TTResult_SyncRate", -1);
        if h.kind.is_t3() {
            // T3: the global resolution is the sync period.
            assert!((h.global_resolution_ps * sync / 1e12 - 1.0).abs() < 1e-6, "{f}: sync period vs rate");
        }
        if f.starts_with("picoharp") {
            // PicoHarp T2: channel 0 is the sync input, channel 1 input 1; their rates match the
            // rate meters the header recorded (SyncRate, InputRate(0)) within a few percent.
            let secs = span / 1e12;
            let r0 = r.per_channel[0] as f64 / secs;
            let r1 = r.per_channel[1] as f64 / secs;
            assert!((r0 / sync - 1.0).abs() < 0.03, "{f}: channel 0 {r0}/s vs SyncRate {sync}");
            let in0 = int_tag(&h, "TTResult_InputRate", 0);
            assert!((r1 / in0 - 1.0).abs() < 0.03, "{f}: channel 1 {r1}/s vs InputRate(0) {in0}");
            assert!((h.global_resolution_ps - 4.0).abs() < 1e-9);
        }
    }
}
