//! PicoQuant unified TTTR files (`.ptu`).
//!
//! Layout from PicoQuant's public file-format documentation and demos
//! (github.com/PicoQuant/PicoQuant-Time-Tagged-File-Format-Demos: `doc/apx_tagtypes.html`,
//! `doc/apx_tttrrecords.html`), all little-endian:
//!
//! ```text
//!  0       8       16                                   header end          file end
//!  ┌───────┬───────┬────────────────────────────────────┬───────────────────────┐
//!  │PQTTTR │1.0.00 │ tag, tag, …, tag "Header_End"        │ 32-bit records …      │
//!  │\0\0   │\0\0   │                                     │                       │
//!  └───────┴───────┴────────────────────────────────────┴───────────────────────┘
//!  tag: ┌────────────────┬──────┬──────────┬──────────┬──────────────────────────┐
//!       │ ident 32 B,     │ idx  │ type     │ value    │ for strings, arrays and  │
//!       │ NUL-terminated  │ i32  │ u32      │ 8 B      │ blobs: `value` more bytes │
//!       └────────────────┴──────┴──────────┴──────────┴──────────────────────────┘
//! ```
//! Tag types: Empty8 0xFFFF0008, Bool8 0x00000008, Int8 0x10000008, BitSet64 0x11000008,
//! Color8 0x12000008, Float8 0x20000008, TDateTime 0x21000008 (f64 days since 1899-12-30),
//! Float8Array 0x2001FFFF, AnsiString 0x4001FFFF, WideString 0x4002FFFF (UTF-16LE),
//! BinaryBlob 0xFFFFFFFF. `idx` is -1 for scalars, else the array index (`TTResult_InputRate(1)`).
//!
//! Records (TTResultFormat_TTTRRecType), bits from the MSB:
//! ```text
//!  PicoHarp 300 T2 0x00010203   channel:4 | timetag:28       ch 15 = special: timetag&0xF == 0
//!                                                            overflow (+210698240), else markers
//!  PicoHarp 300 T3 0x00010303   channel:4 | dtime:12 | nsync:16   ch 15 = special: dtime == 0
//!                                                            overflow (+65536), else markers
//!  HydraHarp v1 T2 0x00010204   special:1 | channel:6 | timetag:25   special: ch 63 overflow
//!  HydraHarp v2 T2 0x01010204   (+33552000 v1; v2 and later: timetag x 33554432, 0 means 1),
//!  TimeHarp 260 N/P, MultiHarp  ch 0 sync, ch 1..15 marker bits; regular: input = ch + 1
//!  / generic T2 0x0001020{5,6,7}
//!  HydraHarp v1/v2, TH260,     special:1 | channel:6 | dtime:15 | nsync:10   special: ch 63
//!  MultiHarp T3 0x00010304,     overflow (+1024 v1; later: nsync x 1024, 0 means 1),
//!  0x01010304, 0x0001030{5,6,7}  ch 1..15 marker bits; regular: input = ch + 1
//! ```
//! T2 time = (overflows + timetag) x MeasDesc_GlobalResolution. T3 time = (overflows + nsync) x
//! MeasDesc_GlobalResolution (the sync period) + dtime x MeasDesc_Resolution.
//! Marker records are written as events on [`MARKER_CHANNEL`] + bit (PicoQuant documents that
//! markers have a coarser time and may sit slightly out of order among photons); the PicoHarp T2
//! marker bits occupy the low 4 timetag bits, which are cleared from its time.
use crate::{Progress, RecordsError, Result, Scale, Stats, MARKER_CHANNEL};

pub const MAGIC: &[u8; 8] = b"PQTTTR\0\0";

/// One header tag's value.
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    Empty,
    Bool(bool),
    Int(i64),
    BitSet(u64),
    Color(u64),
    Float(f64),
    /// Days since 1899-12-30 (Delphi TDateTime).
    DateTime(f64),
    /// Float8Array: only its size in bytes is kept.
    FloatArray(u64),
    Text(String),
    /// Binary blob: only its size in bytes is kept.
    Blob(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub name: String,
    /// -1 for scalars.
    pub idx: i32,
    pub value: TagValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    PicoHarpT2,
    PicoHarpT3,
    /// HydraHarp v1 (`v1`), HydraHarp v2, TimeHarp 260 N/P, MultiHarp / PicoHarp 330 generic.
    HydraT2 { v1: bool },
    HydraT3 { v1: bool },
}

impl RecordKind {
    pub fn from_rectype(rt: u32) -> Result<(RecordKind, &'static str)> {
        Ok(match rt {
            0x0001_0203 => (RecordKind::PicoHarpT2, "PicoHarp 300 T2"),
            0x0001_0303 => (RecordKind::PicoHarpT3, "PicoHarp 300 T3"),
            0x0001_0204 => (RecordKind::HydraT2 { v1: true }, "HydraHarp v1 T2"),
            0x0001_0304 => (RecordKind::HydraT3 { v1: true }, "HydraHarp v1 T3"),
            0x0101_0204 => (RecordKind::HydraT2 { v1: false }, "HydraHarp v2 T2"),
            0x0101_0304 => (RecordKind::HydraT3 { v1: false }, "HydraHarp v2 T3"),
            0x0001_0205 => (RecordKind::HydraT2 { v1: false }, "TimeHarp 260 N T2"),
            0x0001_0305 => (RecordKind::HydraT3 { v1: false }, "TimeHarp 260 N T3"),
            0x0001_0206 => (RecordKind::HydraT2 { v1: false }, "TimeHarp 260 P T2"),
            0x0001_0306 => (RecordKind::HydraT3 { v1: false }, "TimeHarp 260 P T3"),
            0x0001_0207 => (RecordKind::HydraT2 { v1: false }, "MultiHarp / generic T2"),
            0x0001_0307 => (RecordKind::HydraT3 { v1: false }, "MultiHarp / generic T3"),
            _ => {
                return Err(RecordsError::new(
                    "RECORDS_UNSUPPORTED",
                    format!("TTTR record type 0x{rt:08x} is not one this build decodes (PicoHarp 300, HydraHarp v1/v2, TimeHarp 260, MultiHarp T2/T3)"),
                ))
            }
        })
    }
    pub fn is_t3(self) -> bool {
        matches!(self, RecordKind::PicoHarpT3 | RecordKind::HydraT3 { .. })
    }
}

/// The header fields the decoder needs, plus every tag.
#[derive(Debug, Clone, PartialEq)]
pub struct PtuHeader {
    pub version: String,
    pub rectype: u32,
    pub kind: RecordKind,
    pub kind_name: &'static str,
    /// TTResult_NumberOfRecords.
    pub num_records: u64,
    /// MeasDesc_GlobalResolution in ps (T2: the timetag unit; T3: the sync period).
    pub global_resolution_ps: f64,
    /// MeasDesc_Resolution in ps (T3: the dtime bin).
    pub resolution_ps: f64,
    /// TTResult_SyncRate in Hz, if present.
    pub sync_rate_hz: Option<f64>,
    /// Byte offset of the first record.
    pub data_offset: usize,
    pub tags: Vec<Tag>,
}

impl PtuHeader {
    pub fn get(&self, name: &str, idx: i32) -> Option<&TagValue> {
        self.tags.iter().find(|t| t.name == name && t.idx == idx).map(|t| &t.value)
    }
    fn number(&self, name: &str) -> Option<f64> {
        match self.get(name, -1)? {
            TagValue::Int(i) => Some(*i as f64),
            TagValue::Float(f) => Some(*f),
            _ => None,
        }
    }
}

fn trunc(what: &str, at: usize) -> RecordsError {
    RecordsError::new("RECORDS_TRUNCATED", format!("the PTU header ends inside {what} at byte {at}: the file is cut short"))
}

/// Parses the tagged header. `bytes` needs to hold at least the whole header (the records may be
/// absent): a header cut short is `RECORDS_TRUNCATED`, a file that is not PTU `RECORDS_NOT_PTU`.
pub fn parse_header(bytes: &[u8]) -> Result<PtuHeader> {
    if bytes.len() < 16 || &bytes[0..8] != MAGIC {
        return Err(RecordsError::new("RECORDS_NOT_PTU", "no PQTTTR magic at the start: not a PicoQuant .ptu file"));
    }
    let version = String::from_utf8_lossy(&bytes[8..16]).trim_end_matches('\0').to_string();
    let mut at = 16usize;
    let mut tags = Vec::new();
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    loop {
        if at + 48 > bytes.len() {
            return Err(trunc("a tag", at));
        }
        let ident = &bytes[at..at + 32];
        let end = ident.iter().position(|&c| c == 0).unwrap_or(32);
        let name = String::from_utf8_lossy(&ident[..end]).to_string();
        let idx = i32::from_le_bytes(bytes[at + 32..at + 36].try_into().unwrap());
        let ty = u32::from_le_bytes(bytes[at + 36..at + 40].try_into().unwrap());
        let raw = u64_at(bytes, at + 40);
        at += 48;
        let extra = |len: u64, at: &mut usize| -> Result<std::ops::Range<usize>> {
            let len = usize::try_from(len).map_err(|_| trunc("a tag value", *at))?;
            if bytes.len() - *at < len {
                return Err(trunc(&format!("the value of tag {name}"), *at));
            }
            let r = *at..*at + len;
            *at += len;
            Ok(r)
        };
        let value = match ty {
            0xFFFF_0008 => TagValue::Empty,
            0x0000_0008 => TagValue::Bool(raw != 0),
            0x1000_0008 => TagValue::Int(raw as i64),
            0x1100_0008 => TagValue::BitSet(raw),
            0x1200_0008 => TagValue::Color(raw),
            0x2000_0008 => TagValue::Float(f64::from_bits(raw)),
            0x2100_0008 => TagValue::DateTime(f64::from_bits(raw)),
            0x2001_FFFF => {
                extra(raw, &mut at)?;
                TagValue::FloatArray(raw)
            }
            0x4001_FFFF => {
                let r = extra(raw, &mut at)?;
                let s = &bytes[r];
                let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
                // Windows software writes these in the system code page: keep what is not UTF-8 as latin-1.
                TagValue::Text(match std::str::from_utf8(&s[..end]) {
                    Ok(t) => t.to_string(),
                    Err(_) => s[..end].iter().map(|&c| c as char).collect(),
                })
            }
            0x4002_FFFF => {
                let r = extra(raw, &mut at)?;
                let units: Vec<u16> = bytes[r].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
                TagValue::Text(String::from_utf16_lossy(&units))
            }
            0xFFFF_FFFF => {
                extra(raw, &mut at)?;
                TagValue::Blob(raw)
            }
            other => {
                return Err(RecordsError::new("RECORDS_BAD_HEADER", format!("tag {name} at byte {} has unknown type 0x{other:08x}", at - 48)));
            }
        };
        let done = name == "Header_End";
        tags.push(Tag { name, idx, value });
        if done {
            break;
        }
    }
    let mut h = PtuHeader {
        version,
        rectype: 0,
        kind: RecordKind::PicoHarpT2,
        kind_name: "",
        num_records: 0,
        global_resolution_ps: 0.0,
        resolution_ps: 0.0,
        sync_rate_hz: None,
        data_offset: at,
        tags,
    };
    let need = |h: &PtuHeader, n: &str| h.number(n).ok_or_else(|| RecordsError::new("RECORDS_BAD_HEADER", format!("the header has no numeric tag {n}")));
    let rt = need(&h, "TTResultFormat_TTTRRecType")? as u32;
    let (kind, kind_name) = RecordKind::from_rectype(rt)?;
    h.rectype = rt;
    h.kind = kind;
    h.kind_name = kind_name;
    h.num_records = need(&h, "TTResult_NumberOfRecords")? as u64;
    h.global_resolution_ps = need(&h, "MeasDesc_GlobalResolution")? * 1e12;
    h.resolution_ps = h.number("MeasDesc_Resolution").map(|r| r * 1e12).unwrap_or(h.global_resolution_ps);
    h.sync_rate_hz = h.number("TTResult_SyncRate");
    if let Some(bits) = h.number("TTResultFormat_BitsPerRecord") {
        if bits != 32.0 {
            return Err(RecordsError::new("RECORDS_UNSUPPORTED", format!("{bits} bits per record; PTU T2/T3 records are 32 bits")));
        }
    }
    Ok(h)
}

/// Renders the tags as a JSON object `{"Name": value, "Name(1)": value, …}` (array elements get
/// their index in the key). Numbers that JSON cannot hold (NaN, inf) become null.
pub fn tags_json(tags: &[Tag]) -> String {
    let mut out = String::from("{");
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let key = if t.idx >= 0 { format!("{}({})", t.name, t.idx) } else { t.name.clone() };
        json_str(&mut out, &key);
        out.push(':');
        let num = |out: &mut String, f: f64| if f.is_finite() { out.push_str(&format!("{f:?}")) } else { out.push_str("null") };
        match &t.value {
            TagValue::Empty => out.push_str("null"),
            TagValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            TagValue::Int(v) => out.push_str(&v.to_string()),
            TagValue::BitSet(v) | TagValue::Color(v) => out.push_str(&v.to_string()),
            TagValue::Float(f) => num(&mut out, *f),
            TagValue::DateTime(d) => {
                // Days since 1899-12-30 -> ISO-like seconds since the Unix epoch.
                num(&mut out, (d - 25569.0) * 86400.0)
            }
            TagValue::FloatArray(n) => out.push_str(&format!("{{\"float8ArrayBytes\":{n}}}")),
            TagValue::Blob(n) => out.push_str(&format!("{{\"blobBytes\":{n}}}")),
            TagValue::Text(s) => json_str(&mut out, s),
        }
    }
    out.push('}');
    out
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Streaming record decoder: feed the data section in chunks of whole 4-byte records.
#[derive(Debug, Clone)]
pub struct PtuDecoder {
    pub kind: RecordKind,
    /// T2: timetag unit. T3: sync period.
    global: Scale,
    /// T3: dtime bin.
    fine: Scale,
    /// Accumulated overflow in timetag units (T2) or syncs (T3).
    ofl: u64,
    pub stats: Stats,
}

const PH_T2_WRAP: u64 = 210_698_240;
const PH_T3_WRAP: u64 = 65_536;
const HH_T2_WRAP_V1: u64 = 33_552_000;
const HH_T2_WRAP: u64 = 33_554_432;
const HH_T3_WRAP: u64 = 1024;

/// Output slices for one decode call. `nsync`/`dtime` are required for T3 records (ignored for
/// T2); every slice must hold at least 4 events (one record can carry 4 marker bits).
pub struct Out<'a> {
    pub time_ps: &'a mut [i64],
    pub channel: &'a mut [u8],
    pub nsync: &'a mut [u64],
    pub dtime: &'a mut [u16],
}

impl PtuDecoder {
    pub fn new(kind: RecordKind, global_resolution_ps: f64, resolution_ps: f64) -> Result<Self> {
        Ok(PtuDecoder { kind, global: Scale::from_ps(global_resolution_ps)?, fine: Scale::from_ps(resolution_ps)?, ofl: 0, stats: Stats::default() })
    }

    pub fn from_header(h: &PtuHeader) -> Result<Self> {
        Self::new(h.kind, h.global_resolution_ps, h.resolution_ps)
    }

    /// Decodes whole records from `input` (a trailing partial record is left unconsumed) until the
    /// input ends or fewer than 4 output slots remain.
    pub fn decode(&mut self, input: &[u8], out: Out<'_>) -> Result<Progress> {
        let mut cap = out.time_ps.len().min(out.channel.len());
        if self.kind.is_t3() {
            cap = cap.min(out.nsync.len()).min(out.dtime.len());
        }
        if cap < 4 {
            return Err(RecordsError::new("RECORDS_BAD_ARGUMENT", format!("output room for {cap} events; give at least 4")));
        }
        Ok(match self.kind {
            RecordKind::PicoHarpT2 => self.ph_t2(input, out, cap),
            RecordKind::PicoHarpT3 => self.ph_t3(input, out, cap),
            RecordKind::HydraT2 { v1 } => self.hh_t2(input, out, cap, v1),
            RecordKind::HydraT3 { v1 } => self.hh_t3(input, out, cap, v1),
        })
    }

    #[inline(always)]
    fn markers_t2(&mut self, bits: u32, t: i64, out: &mut Out<'_>, w: &mut usize) {
        for b in 0..4u8 {
            if bits & (1 << b) != 0 {
                out.time_ps[*w] = t;
                out.channel[*w] = MARKER_CHANNEL + b;
                self.stats.per_channel[(MARKER_CHANNEL + b) as usize] += 1;
                self.stats.markers += 1;
                *w += 1;
            }
        }
    }

    #[inline(always)]
    fn markers_t3(&mut self, bits: u32, ns: u64, out: &mut Out<'_>, w: &mut usize) {
        let t = self.global.apply(ns);
        for b in 0..4u8 {
            if bits & (1 << b) != 0 {
                out.time_ps[*w] = t;
                out.channel[*w] = MARKER_CHANNEL + b;
                out.nsync[*w] = ns;
                out.dtime[*w] = 0;
                self.stats.per_channel[(MARKER_CHANNEL + b) as usize] += 1;
                self.stats.markers += 1;
                *w += 1;
            }
        }
    }

    fn ph_t2(&mut self, input: &[u8], mut out: Out<'_>, cap: usize) -> Progress {
        let (mut r, mut w) = (0usize, 0usize);
        let g = self.global;
        for rec in input.chunks_exact(4) {
            if w + 4 > cap {
                break;
            }
            let v = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
            let ch = v >> 28;
            let tt = (v & 0x0FFF_FFFF) as u64;
            r += 1;
            if ch == 15 {
                let m = (tt & 0xF) as u32;
                if m == 0 {
                    self.ofl += PH_T2_WRAP;
                    self.stats.overflow_records += 1;
                } else {
                    let t = g.apply(self.ofl + (tt & !0xF));
                    self.markers_t2(m, t, &mut out, &mut w);
                }
            } else if ch > 4 {
                self.stats.illegal += 1;
            } else {
                out.time_ps[w] = g.apply(self.ofl + tt);
                out.channel[w] = ch as u8;
                self.stats.per_channel[ch as usize] += 1;
                w += 1;
            }
        }
        Progress { records: r, events: w }
    }

    fn ph_t3(&mut self, input: &[u8], mut out: Out<'_>, cap: usize) -> Progress {
        let (mut r, mut w) = (0usize, 0usize);
        let (g, f) = (self.global, self.fine);
        for rec in input.chunks_exact(4) {
            if w + 4 > cap {
                break;
            }
            let v = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
            let ch = v >> 28;
            let dt = (v >> 16) & 0xFFF;
            let ns = (v & 0xFFFF) as u64;
            r += 1;
            if ch == 15 {
                if dt == 0 {
                    self.ofl += PH_T3_WRAP;
                    self.stats.overflow_records += 1;
                } else {
                    let n = self.ofl + ns;
                    self.markers_t3(dt, n, &mut out, &mut w);
                }
            } else if ch == 0 || ch > 4 {
                self.stats.illegal += 1;
            } else {
                let n = self.ofl + ns;
                out.time_ps[w] = g.apply(n) + f.apply(dt as u64);
                out.channel[w] = ch as u8;
                out.nsync[w] = n;
                out.dtime[w] = dt as u16;
                self.stats.per_channel[ch as usize] += 1;
                w += 1;
            }
        }
        Progress { records: r, events: w }
    }

    fn hh_t2(&mut self, input: &[u8], mut out: Out<'_>, cap: usize, v1: bool) -> Progress {
        let (mut r, mut w) = (0usize, 0usize);
        let g = self.global;
        for rec in input.chunks_exact(4) {
            if w + 4 > cap {
                break;
            }
            let v = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
            let ch = (v >> 25) & 0x3F;
            let tt = (v & 0x01FF_FFFF) as u64;
            r += 1;
            if v >> 31 == 0 {
                let c = (ch + 1) as u8;
                out.time_ps[w] = g.apply(self.ofl + tt);
                out.channel[w] = c;
                self.stats.per_channel[c as usize] += 1;
                w += 1;
            } else if ch == 63 {
                self.ofl += if v1 { HH_T2_WRAP_V1 } else { HH_T2_WRAP * tt.max(1) };
                self.stats.overflow_records += 1;
            } else if ch == 0 {
                out.time_ps[w] = g.apply(self.ofl + tt);
                out.channel[w] = 0;
                self.stats.per_channel[0] += 1;
                w += 1;
            } else if ch <= 15 {
                let t = g.apply(self.ofl + tt);
                self.markers_t2(ch, t, &mut out, &mut w);
            } else {
                self.stats.illegal += 1;
            }
        }
        Progress { records: r, events: w }
    }

    fn hh_t3(&mut self, input: &[u8], mut out: Out<'_>, cap: usize, v1: bool) -> Progress {
        let (mut r, mut w) = (0usize, 0usize);
        let (g, f) = (self.global, self.fine);
        for rec in input.chunks_exact(4) {
            if w + 4 > cap {
                break;
            }
            let v = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
            let ch = (v >> 25) & 0x3F;
            let dt = (v >> 10) & 0x7FFF;
            let ns = (v & 0x3FF) as u64;
            r += 1;
            if v >> 31 == 0 {
                let c = (ch + 1) as u8;
                let n = self.ofl + ns;
                out.time_ps[w] = g.apply(n) + f.apply(dt as u64);
                out.channel[w] = c;
                out.nsync[w] = n;
                out.dtime[w] = dt as u16;
                self.stats.per_channel[c as usize] += 1;
                w += 1;
            } else if ch == 63 {
                self.ofl += if v1 { HH_T3_WRAP } else { HH_T3_WRAP * ns.max(1) };
                self.stats.overflow_records += 1;
            } else if (1..=15).contains(&ch) {
                let n = self.ofl + ns;
                self.markers_t3(ch, n, &mut out, &mut w);
            } else {
                self.stats.illegal += 1;
            }
        }
        Progress { records: r, events: w }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, idx: i32, ty: u32, raw: u64, extra: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 32];
        v[..name.len()].copy_from_slice(name.as_bytes());
        v.extend_from_slice(&idx.to_le_bytes());
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(&raw.to_le_bytes());
        v.extend_from_slice(extra);
        v
    }

    pub fn header(rectype: u32, n: u64, glob_s: f64, res_s: f64) -> Vec<u8> {
        let mut b = b"PQTTTR\0\01.0.00\0\0".to_vec();
        let s = b"hello\0\0\0";
        b.extend(tag("File_Comment", -1, 0x4001_FFFF, s.len() as u64, s));
        b.extend(tag("TTResultFormat_TTTRRecType", -1, 0x1000_0008, rectype as u64, &[]));
        b.extend(tag("TTResult_NumberOfRecords", -1, 0x1000_0008, n, &[]));
        b.extend(tag("MeasDesc_GlobalResolution", -1, 0x2000_0008, glob_s.to_bits(), &[]));
        b.extend(tag("MeasDesc_Resolution", -1, 0x2000_0008, res_s.to_bits(), &[]));
        b.extend(tag("TTResult_InputRate", 1, 0x1000_0008, 1234, &[]));
        b.extend(tag("TTResult_SyncRate", -1, 0x1000_0008, 80_000_000, &[]));
        b.extend(tag("Header_End", -1, 0xFFFF_0008, 0, &[]));
        b
    }

    fn run(kind: RecordKind, g: f64, f: f64, recs: &[u32]) -> (Vec<(i64, u8, u64, u16)>, Stats) {
        let mut d = PtuDecoder::new(kind, g, f).unwrap();
        let bytes: Vec<u8> = recs.iter().flat_map(|r| r.to_le_bytes()).collect();
        let n = recs.len() * 4 + 4;
        let (mut t, mut c, mut ns, mut dt) = (vec![0i64; n], vec![0u8; n], vec![0u64; n], vec![0u16; n]);
        let p = d.decode(&bytes, Out { time_ps: &mut t, channel: &mut c, nsync: &mut ns, dtime: &mut dt }).unwrap();
        assert_eq!(p.records, recs.len());
        ((0..p.events).map(|i| (t[i], c[i], ns[i], dt[i])).collect(), d.stats)
    }

    #[test]
    fn header_fields_and_json() {
        let mut h = header(0x0101_0304, 7, 12.5e-9, 8e-12);
        h.extend_from_slice(&[1, 2, 3, 4]);
        let p = parse_header(&h).unwrap();
        assert_eq!(p.kind, RecordKind::HydraT3 { v1: false });
        assert_eq!(p.num_records, 7);
        assert!((p.global_resolution_ps - 12500.0).abs() < 1e-6);
        assert!((p.resolution_ps - 8.0).abs() < 1e-9);
        assert_eq!(p.sync_rate_hz, Some(80e6));
        assert_eq!(p.data_offset, h.len() - 4);
        let j = tags_json(&p.tags);
        assert!(j.contains("\"File_Comment\":\"hello\""), "{j}");
        assert!(j.contains("\"TTResult_InputRate(1)\":1234"), "{j}");
    }

    #[test]
    fn header_errors() {
        assert_eq!(parse_header(b"RIFF....WAVEfmt ").unwrap_err().code, "RECORDS_NOT_PTU");
        let h = header(0x0001_0203, 1, 4e-12, 4e-12);
        for cut in [20, 100, h.len() - 1] {
            assert_eq!(parse_header(&h[..cut]).unwrap_err().code, "RECORDS_TRUNCATED", "cut {cut}");
        }
        assert_eq!(parse_header(&header(0x0001_0999, 1, 4e-12, 4e-12)).unwrap_err().code, "RECORDS_UNSUPPORTED");
    }

    #[test]
    fn picoharp_t2_known_answers() {
        // ch1 @ 100; overflow; ch0 @ 5; marker bits 0b0101 with timetag 0x30 | 5; illegal ch 7.
        let recs = [1 << 28 | 100, 15 << 28, 5, 15 << 28 | 0x35, 7 << 28 | 9];
        let (ev, st) = run(RecordKind::PicoHarpT2, 4.0, 4.0, &recs);
        let w = PH_T2_WRAP as i64;
        assert_eq!(
            ev.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(),
            vec![(400, 1), ((w + 5) * 4, 0), ((w + 0x30) * 4, MARKER_CHANNEL), ((w + 0x30) * 4, MARKER_CHANNEL + 2)]
        );
        assert_eq!((st.overflow_records, st.markers, st.illegal), (1, 2, 1));
        assert_eq!(st.per_channel[1], 1);
    }

    #[test]
    fn picoharp_t3_known_answers() {
        // ch2 dtime 7 nsync 3; overflow; ch1 dtime 1 nsync 2; marker bit 1 at nsync 9.
        let recs = [2 << 28 | 7 << 16 | 3, 15 << 28 | 5, 1 << 28 | 1 << 16 | 2, 15 << 28 | 2 << 16 | 9];
        let (ev, st) = run(RecordKind::PicoHarpT3, 12500.0, 4.0, &recs);
        let w = PH_T3_WRAP;
        assert_eq!(
            ev,
            vec![
                (3 * 12500 + 28, 2, 3, 7),
                (((w + 2) * 12500 + 4) as i64, 1, w + 2, 1),
                (((w + 9) * 12500) as i64, MARKER_CHANNEL + 1, w + 9, 0)
            ]
        );
        assert_eq!(st.overflow_records, 1);
    }

    #[test]
    fn hydraharp_t2_overflow_v1_v2_sync_markers() {
        let sp = 1u32 << 31;
        // v2: overflow x3, input 0 -> channel 1, sync, marker 0b1000, old-style overflow (0 = 1).
        let recs = [sp | 63 << 25 | 3, 10, sp | 20, sp | 8 << 25 | 30, sp | 63 << 25, 2 << 25 | 40];
        let (ev, st) = run(RecordKind::HydraT2 { v1: false }, 1.0, 1.0, &recs);
        let w = HH_T2_WRAP as i64;
        assert_eq!(
            ev.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(),
            vec![(3 * w + 10, 1), (3 * w + 20, 0), (3 * w + 30, MARKER_CHANNEL + 3), (4 * w + 40, 3)]
        );
        assert_eq!(st.overflow_records, 2);
        // v1: an overflow record always counts one 33552000 period, whatever its timetag.
        let (ev, _) = run(RecordKind::HydraT2 { v1: true }, 1.0, 1.0, &[sp | 63 << 25 | 3, 10]);
        assert_eq!(ev[0].0, HH_T2_WRAP_V1 as i64 + 10);
    }

    #[test]
    fn hydraharp_t3_known_answers() {
        let sp = 1u32 << 31;
        // input 1 (-> ch 2) dtime 100 nsync 5; overflow x2 (v2); marker 0b0011 at nsync 7.
        let recs = [1 << 25 | 100 << 10 | 5, sp | 63 << 25 | 2, sp | 3 << 25 | 7];
        let (ev, _) = run(RecordKind::HydraT3 { v1: false }, 25000.0, 8.0, &recs);
        assert_eq!(ev[0], (5 * 25000 + 800, 2, 5, 100));
        assert_eq!(ev[1], ((2048 + 7) * 25000, MARKER_CHANNEL, 2048 + 7, 0));
        assert_eq!(ev[2].1, MARKER_CHANNEL + 1);
        let (ev, _) = run(RecordKind::HydraT3 { v1: true }, 25000.0, 8.0, &recs);
        assert_eq!(ev[1].2, 1024 + 7, "v1 overflow is one period whatever nsync says");
    }

    #[test]
    fn chunking_is_invisible() {
        // Random records through chunk sizes 1..9 records and output rooms 4..9 give the same events.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let recs: Vec<u32> = (0..5000).map(|_| rng.gen()).collect();
        for kind in [RecordKind::PicoHarpT2, RecordKind::PicoHarpT3, RecordKind::HydraT2 { v1: false }, RecordKind::HydraT3 { v1: true }] {
            let (all, st_all) = run(kind, 4.0, 1.0, &recs);
            let bytes: Vec<u8> = recs.iter().flat_map(|r| r.to_le_bytes()).collect();
            let mut d = PtuDecoder::new(kind, 4.0, 1.0).unwrap();
            let mut got = Vec::new();
            let mut at = 0;
            let mut k = 0;
            while at < bytes.len() {
                let room = 4 + k % 6;
                let take = (1 + k % 9) * 4 + (k % 3);
                let (mut t, mut c, mut ns, mut dt) = (vec![0i64; room], vec![0u8; room], vec![0u64; room], vec![0u16; room]);
                let p = d.decode(&bytes[at..(at + take).min(bytes.len())], Out { time_ps: &mut t, channel: &mut c, nsync: &mut ns, dtime: &mut dt }).unwrap();
                for i in 0..p.events {
                    got.push((t[i], c[i], ns[i], dt[i]));
                }
                at += p.records * 4;
                k += 1;
            }
            let strip = |v: &Vec<(i64, u8, u64, u16)>| -> Vec<(i64, u8, u64, u16)> {
                if kind.is_t3() { v.clone() } else { v.iter().map(|e| (e.0, e.1, 0, 0)).collect() }
            };
            assert_eq!(strip(&got), strip(&all), "{kind:?}");
            assert_eq!(d.stats, st_all);
        }
    }
}
