//! napi adapter for qkd-records: time-tagger recordings (PicoQuant PTU, quTAG binary, qcrypto
//! a1) decoded into caller-owned typed arrays, the a1 writer, and timing histograms.
//!
//! Everything here runs on the JS thread and returns when done: one call decodes at most one
//! output chunk (the caller picks its size, e.g. 64 Ki events ≈ 0.3 ms), so the event loop is
//! never held for long. The typed arrays are borrowed JS memory (no copy); the caller must not
//! touch them during the call, which holds on the JS thread. Errors are "CODE: message" strings
//! (`RECORDS_*`) that src/core/records.ts maps; no panic crosses (caught and reported).
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qkd_records::{a1, histogram, ptu, qutag, Progress, RecordsError, Scale, Stats};
use std::panic::{catch_unwind, AssertUnwindSafe};

fn err(e: RecordsError) -> Error {
    Error::new(Status::GenericFailure, e.to_string())
}

fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(Error::new(Status::GenericFailure, "RECORDS_INTERNAL: internal error in the native record decoder")))
}

#[napi(object)]
pub struct PtuHeaderInfo {
    pub version: String,
    /// TTResultFormat_TTTRRecType.
    pub rectype: u32,
    /// e.g. "HydraHarp v2 T3".
    pub kind_name: String,
    pub t3: bool,
    /// TTResult_NumberOfRecords.
    pub num_records: f64,
    pub global_resolution_ps: f64,
    pub resolution_ps: f64,
    pub sync_rate_hz: Option<f64>,
    /// Byte offset of the first record.
    pub data_offset: u32,
    /// Every tag as a JSON object (`"Name(idx)": value`).
    pub tags_json: String,
}

/// Parses a PTU header from the first bytes of a file (they must hold the whole header).
#[napi]
pub fn records_parse_ptu_header(bytes: Uint8Array) -> Result<PtuHeaderInfo> {
    guarded(|| {
        let h = ptu::parse_header(&bytes).map_err(err)?;
        Ok(PtuHeaderInfo {
            version: h.version.clone(),
            rectype: h.rectype,
            kind_name: h.kind_name.to_string(),
            t3: h.kind.is_t3(),
            num_records: h.num_records as f64,
            global_resolution_ps: h.global_resolution_ps,
            resolution_ps: h.resolution_ps,
            sync_rate_hz: h.sync_rate_hz,
            data_offset: h.data_offset as u32,
            tags_json: ptu::tags_json(&h.tags),
        })
    })
}

#[napi(object)]
pub struct DecodeProgress {
    /// Whole records consumed from the input.
    pub records: u32,
    /// Events written to the output arrays.
    pub events: u32,
}

#[napi(object)]
pub struct DecoderStats {
    /// Events written per channel (256 entries).
    pub per_channel: Vec<f64>,
    pub overflow_records: f64,
    pub markers: f64,
    pub illegal: f64,
    pub empty: f64,
    pub late: f64,
    /// Late (re-ordering) events per channel (256 entries).
    pub late_per_channel: Vec<f64>,
}

enum Inner {
    Ptu(ptu::PtuDecoder),
    Qutag(qutag::QutagDecoder),
    A1(a1::A1Decoder),
}

/// A streaming decoder for one recording; feed it the data section in chunks.
#[napi]
pub struct RecordDecoder {
    inner: Inner,
}

fn progress(p: Progress) -> DecodeProgress {
    DecodeProgress { records: p.records as u32, events: p.events as u32 }
}

#[napi]
impl RecordDecoder {
    /// PTU records of `rectype` (TTResultFormat_TTTRRecType) with the header's resolutions.
    #[napi(factory)]
    pub fn ptu(rectype: u32, global_resolution_ps: f64, resolution_ps: f64) -> Result<Self> {
        let (kind, _) = ptu::RecordKind::from_rectype(rectype).map_err(err)?;
        Ok(RecordDecoder { inner: Inner::Ptu(ptu::PtuDecoder::new(kind, global_resolution_ps, resolution_ps).map_err(err)?) })
    }

    /// quTAG binary events (after the 40-byte header): time unit in ps, re-ordering window in ps.
    #[napi(factory)]
    pub fn qutag(unit_ps: f64, window_ps: i64) -> Result<Self> {
        Ok(RecordDecoder { inner: Inner::Qutag(qutag::QutagDecoder::new(unit_ps, window_ps).map_err(err)?) })
    }

    /// qcrypto a1 words; `legacy`: high word first.
    #[napi(factory)]
    pub fn a1(legacy: bool) -> Self {
        RecordDecoder { inner: Inner::A1(a1::A1Decoder::new(legacy)) }
    }

    /// Decodes from `input` into the arrays (all at least 4 long; `nsync`/`dtime` needed for PTU
    /// T3 only). `last` (quTAG): no input follows, release what the re-ordering holds back.
    #[napi]
    pub fn decode(
        &mut self,
        input: Uint8Array,
        mut time_ps: BigInt64Array,
        mut channel: Uint8Array,
        nsync: Option<BigUint64Array>,
        dtime: Option<Uint16Array>,
        last: Option<bool>,
    ) -> Result<DecodeProgress> {
        guarded(move || {
            // SAFETY: the arrays are borrowed from JS for the duration of this synchronous call
            // on the JS thread; nothing else reads or writes them meanwhile.
            let (t, c) = unsafe { (time_ps.as_mut(), channel.as_mut()) };
            let p = match &mut self.inner {
                Inner::Ptu(d) => {
                    let (mut ns, mut dt) = (nsync, dtime);
                    let (mut e1, mut e2) = ([0u64; 0], [0u16; 0]);
                    // SAFETY: as above.
                    let ns_s: &mut [u64] = match ns.as_mut() { Some(a) => unsafe { a.as_mut() }, None => &mut e1 };
                    let dt_s: &mut [u16] = match dt.as_mut() { Some(a) => unsafe { a.as_mut() }, None => &mut e2 };
                    if d.kind.is_t3() && (ns_s.len() < 4 || dt_s.len() < 4) {
                        return Err(err(RecordsError::new("RECORDS_BAD_ARGUMENT", "T3 records need nsync and dtime output arrays")));
                    }
                    d.decode(&input, ptu::Out { time_ps: t, channel: c, nsync: ns_s, dtime: dt_s }).map_err(err)?
                }
                Inner::Qutag(d) => d.decode(&input, t, c, last.unwrap_or(false)).map_err(err)?,
                Inner::A1(d) => d.decode(&input, t, c).map_err(err)?,
            };
            Ok(progress(p))
        })
    }

    #[napi]
    pub fn stats(&self) -> DecoderStats {
        let s: &Stats = match &self.inner {
            Inner::Ptu(d) => &d.stats,
            Inner::Qutag(d) => &d.stats,
            Inner::A1(d) => &d.stats,
        };
        DecoderStats {
            per_channel: s.per_channel.iter().map(|&v| v as f64).collect(),
            overflow_records: s.overflow_records as f64,
            markers: s.markers as f64,
            illegal: s.illegal as f64,
            empty: s.empty as f64,
            late: s.late as f64,
            late_per_channel: s.late_per_channel.iter().map(|&v| v as f64).collect(),
        }
    }

    /// Events held back by the quTAG re-ordering (0 for other formats).
    #[napi(getter)]
    pub fn pending(&self) -> u32 {
        match &self.inner {
            Inner::Qutag(d) => d.pending() as u32,
            _ => 0,
        }
    }
}

/// Writes events as qcrypto a1 words (see qkd-records `a1::encode`): channel `firstChannel` is
/// detector bit 0; `legacy` puts the high word first.
#[napi]
pub fn records_encode_a1(time_ps: BigInt64Array, channel: Uint8Array, first_channel: u32, legacy: bool) -> Result<Buffer> {
    guarded(|| {
        if first_channel > 255 {
            return Err(err(RecordsError::new("RECORDS_BAD_ARGUMENT", "firstChannel must be 0..255")));
        }
        let mut out = Vec::with_capacity(time_ps.len() * 8);
        a1::encode(&time_ps, &channel, first_channel as u8, legacy, &mut out).map_err(err)?;
        Ok(out.into())
    })
}

/// Start-stop or g2 histogram, fed with time-ordered chunks.
#[napi]
pub struct TimingHistogram {
    h: histogram::Histogram,
}

#[napi]
impl TimingHistogram {
    /// `mode`: "start-stop" or "g2".
    #[napi(constructor)]
    pub fn new(mode: String, start: u32, stop: u32, bin_ps: i64, bins: u32, delay_ps: i64) -> Result<Self> {
        let m = match mode.as_str() {
            "start-stop" => histogram::Mode::StartStop,
            "g2" => histogram::Mode::G2,
            other => return Err(err(RecordsError::new("RECORDS_BAD_ARGUMENT", format!("histogram mode '{other}': use start-stop or g2")))),
        };
        if start > 255 || stop > 255 {
            return Err(err(RecordsError::new("RECORDS_BAD_ARGUMENT", "channels are 0..255")));
        }
        Ok(TimingHistogram { h: histogram::Histogram::new(m, start as u8, stop as u8, bin_ps, bins as usize, delay_ps).map_err(err)? })
    }

    #[napi]
    pub fn push(&mut self, time_ps: BigInt64Array, channel: Uint8Array) -> Result<()> {
        guarded(|| {
            self.h.push(&time_ps, &channel);
            Ok(())
        })
    }

    /// T3 lifetime: start = the sync; Δ = dtime x resolutionPs + delay.
    #[napi]
    pub fn push_dtime(&mut self, dtime: Uint16Array, channel: Uint8Array, resolution_ps: f64) -> Result<()> {
        guarded(|| {
            let s = Scale::from_ps(resolution_ps).map_err(err)?;
            self.h.push_dtime(&dtime, &channel, s);
            Ok(())
        })
    }

    #[napi]
    pub fn counts(&self) -> Float64Array {
        Float64Array::new(self.h.counts.iter().map(|&v| v as f64).collect())
    }

    #[napi(getter)]
    pub fn first_bin_ps(&self) -> f64 {
        self.h.first_bin_ps()
    }

    #[napi(getter)]
    pub fn considered(&self) -> f64 {
        self.h.considered as f64
    }

    #[napi(getter)]
    pub fn order_violations(&self) -> f64 {
        self.h.order_violations as f64
    }
}
