//! napi adapter for detection-batch ingest: the native consumer of src/stream/ batches.
//!
//! The TypeScript consumer hands the ZeroMQ frame Buffers straight in (a napi Uint8Array borrows
//! the JS memory: no copy). Per batch we do the first real pass of the post-processing core:
//! - validate time (or pulse-index) ordering, also across batch boundaries, counting violations;
//! - count events per channel (256 channels);
//! - accumulate a per-channel phase histogram of `(t >> bin_shift) & (bins - 1)`, i.e. the
//!   arrival time modulo `bins << bin_shift` ps (with a power-of-two pulse period this is the
//!   detection-time histogram the timing stage reads; for pulse indices, pulse index modulo bins).
//!
//! Frame payloads (little-endian, as sent by src/stream/frame.ts):
//!   layout 1 (tags):      times: n x i64 ps relative to `epoch_ps`, channels: n x u8
//!   layout 2 (pulses64f): indices: n x f64 (integers < 2^53),    channels: n x u8
//!   layout 3 (pulses64u): indices: n x u64,                       channels: n x u8
//! Buffers need no alignment (unaligned little-endian loads).
//! `ingestTags`/`ingestPulses` run on the JS thread (~1 ns per event: a 1 M-event batch is ~1 ms,
//! and the ZeroMQ I/O thread keeps receiving meanwhile); the `*Async` variants run the same pass
//! on the libuv pool (AsyncTask) holding references to the JS buffers, for a JS thread that has
//! other work (the classical channel). Await the batches of one ingest in order.
use napi::bindgen_prelude::*;
use napi::{Env, Task};
use napi_derive::napi;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

#[napi(object)]
pub struct IngestBatchResult {
    /// Events in the batch.
    pub count: u32,
    /// Events whose time / index is smaller than the previous event's (within or across batches).
    pub order_violations: u32,
    /// Pulse indices that are not non-negative integers (layout 2 only).
    pub invalid: u32,
}

pub struct Counts {
    count: u32,
    viol: u32,
    invalid: u32,
}

struct State {
    bin_shift: u32,
    bins_log2: u32,
    counts: Vec<u64>,
    hist: Vec<u64>,
    last_time: i64,
    last_index: u64,
    events: u64,
    batches: u64,
    order_violations: u64,
    invalid: u64,
}

fn bad(msg: &str) -> Error {
    Error::new(Status::InvalidArg, format!("STREAM_BAD_BATCH: {msg}"))
}

fn lock(st: &Arc<Mutex<State>>) -> Result<MutexGuard<'_, State>> {
    st.lock().map_err(|_| Error::new(Status::GenericFailure, "STREAM_INTERNAL: ingest state poisoned; create a new ingest"))
}

impl State {
    fn tags(&mut self, epoch: i64, times: &[u8], channels: &[u8]) -> Result<Counts> {
        let n = channels.len();
        if times.len() != n * 8 {
            return Err(bad(&format!("times frame has {} bytes, expected 8 x {n} channels", times.len())));
        }
        let mask = (1u64 << self.bins_log2) - 1;
        let (shift, bl) = (self.bin_shift, self.bins_log2);
        let mut prev = self.last_time;
        let mut viol = 0u32;
        let counts = &mut self.counts[..];
        let hist = &mut self.hist[..];
        for (tb, &c) in times.chunks_exact(8).zip(channels.iter()) {
            let t = epoch.wrapping_add(i64::from_le_bytes(tb.try_into().unwrap()));
            viol += (t < prev) as u32;
            prev = t;
            counts[c as usize] += 1;
            let bin = ((t as u64) >> shift) & mask;
            hist[((c as usize) << bl) | bin as usize] += 1;
        }
        self.last_time = prev;
        Ok(self.finish(n, viol, 0))
    }

    fn pulses(&mut self, indices: &[u8], channels: &[u8], float: bool) -> Result<Counts> {
        let n = channels.len();
        if indices.len() != n * 8 {
            return Err(bad(&format!("indices frame has {} bytes, expected 8 x {n} channels", indices.len())));
        }
        let mask = (1u64 << self.bins_log2) - 1;
        let (shift, bl) = (self.bin_shift, self.bins_log2);
        let mut prev = self.last_index;
        let mut viol = 0u32;
        let mut invalid = 0u32;
        for (ib, &c) in indices.chunks_exact(8).zip(channels.iter()) {
            let raw: [u8; 8] = ib.try_into().unwrap();
            let p = if float {
                let f = f64::from_le_bytes(raw);
                let ok = (0.0..9007199254740992.0).contains(&f) && f.fract() == 0.0;
                invalid += (!ok) as u32;
                if ok { f as u64 } else { prev }
            } else {
                u64::from_le_bytes(raw)
            };
            viol += (p < prev) as u32;
            prev = p;
            self.counts[c as usize] += 1;
            self.hist[((c as usize) << bl) | ((p >> shift) & mask) as usize] += 1;
        }
        self.last_index = prev;
        Ok(self.finish(n, viol, invalid))
    }

    fn finish(&mut self, n: usize, viol: u32, invalid: u32) -> Counts {
        self.events += n as u64;
        self.batches += 1;
        self.order_violations += viol as u64;
        self.invalid += invalid as u64;
        Counts { count: n as u32, viol, invalid }
    }
}

fn to_js(c: Counts) -> IngestBatchResult {
    IngestBatchResult { count: c.count, order_violations: c.viol, invalid: c.invalid }
}

fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(Error::new(Status::GenericFailure, "STREAM_INTERNAL: internal error in the native ingest")))
}

fn epoch_of(epoch_ps: &BigInt) -> Result<i64> {
    let (epoch, lossless) = epoch_ps.get_i64();
    if !lossless {
        return Err(bad("epochPs does not fit in int64"));
    }
    Ok(epoch)
}

pub struct IngestTask {
    st: Arc<Mutex<State>>,
    epoch: i64,
    /// None: tags; Some(float): pulses.
    pulses: Option<bool>,
    data: Uint8Array,
    channels: Uint8Array,
}

impl Task for IngestTask {
    type Output = Counts;
    type JsValue = IngestBatchResult;
    fn compute(&mut self) -> Result<Counts> {
        guarded(|| {
            let mut s = lock(&self.st)?;
            match self.pulses {
                None => s.tags(self.epoch, &self.data, &self.channels),
                Some(f) => s.pulses(&self.data, &self.channels, f),
            }
        })
    }
    fn resolve(&mut self, _env: Env, c: Counts) -> Result<IngestBatchResult> {
        Ok(to_js(c))
    }
}

#[napi]
pub struct StreamIngest {
    st: Arc<Mutex<State>>,
}

#[napi]
impl StreamIngest {
    /// `bin_shift`: histogram bin width is 2^bin_shift ps (or pulses); `bins`: power of two <= 65536.
    #[napi(constructor)]
    pub fn new(bin_shift: u32, bins: u32) -> Result<Self> {
        if !bins.is_power_of_two() || bins > 65536 || bin_shift > 62 {
            return Err(bad("bins must be a power of two <= 65536 and binShift <= 62"));
        }
        let bins_log2 = bins.trailing_zeros();
        Ok(StreamIngest {
            st: Arc::new(Mutex::new(State {
                bin_shift,
                bins_log2,
                counts: vec![0; 256],
                hist: vec![0; 256usize << bins_log2],
                last_time: i64::MIN,
                last_index: 0,
                events: 0,
                batches: 0,
                order_violations: 0,
                invalid: 0,
            })),
        })
    }

    /// Layout 1: `times` holds n little-endian i64 (ps relative to `epoch_ps`), `channels` n bytes.
    #[napi]
    pub fn ingest_tags(&self, epoch_ps: BigInt, times: Uint8Array, channels: Uint8Array) -> Result<IngestBatchResult> {
        let epoch = epoch_of(&epoch_ps)?;
        guarded(|| lock(&self.st)?.tags(epoch, &times, &channels).map(to_js))
    }

    /// Layout 2 (`float`) or 3: n pulse indices (f64 or u64 little-endian) and n channel bytes.
    #[napi]
    pub fn ingest_pulses(&self, indices: Uint8Array, channels: Uint8Array, float: bool) -> Result<IngestBatchResult> {
        guarded(|| lock(&self.st)?.pulses(&indices, &channels, float).map(to_js))
    }

    /// `ingestTags` on the libuv pool; the buffers must stay untouched until it resolves.
    #[napi(ts_return_type = "Promise<IngestBatchResult>")]
    pub fn ingest_tags_async(&self, epoch_ps: BigInt, times: Uint8Array, channels: Uint8Array) -> Result<AsyncTask<IngestTask>> {
        let epoch = epoch_of(&epoch_ps)?;
        Ok(AsyncTask::new(IngestTask { st: self.st.clone(), epoch, pulses: None, data: times, channels }))
    }

    /// `ingestPulses` on the libuv pool.
    #[napi(ts_return_type = "Promise<IngestBatchResult>")]
    pub fn ingest_pulses_async(&self, indices: Uint8Array, channels: Uint8Array, float: bool) -> AsyncTask<IngestTask> {
        AsyncTask::new(IngestTask { st: self.st.clone(), epoch: 0, pulses: Some(float), data: indices, channels })
    }

    /// Forget the ordering reference (after a gap the next batch is not compared with the last).
    #[napi]
    pub fn reset_order(&self) -> Result<()> {
        let mut s = lock(&self.st)?;
        s.last_time = i64::MIN;
        s.last_index = 0;
        Ok(())
    }

    #[napi(getter)]
    pub fn events(&self) -> Result<f64> {
        Ok(lock(&self.st)?.events as f64)
    }
    #[napi(getter)]
    pub fn batches(&self) -> Result<f64> {
        Ok(lock(&self.st)?.batches as f64)
    }
    #[napi(getter)]
    pub fn order_violations(&self) -> Result<f64> {
        Ok(lock(&self.st)?.order_violations as f64)
    }
    #[napi(getter)]
    pub fn invalid(&self) -> Result<f64> {
        Ok(lock(&self.st)?.invalid as f64)
    }
    /// Last event time seen (ps, absolute), or null before the first tag batch.
    #[napi(getter)]
    pub fn last_time_ps(&self) -> Result<Option<BigInt>> {
        let t = lock(&self.st)?.last_time;
        Ok(if t == i64::MIN { None } else { Some(BigInt::from(t)) })
    }

    /// Events per channel 0..255.
    #[napi]
    pub fn channel_counts(&self) -> Result<Vec<f64>> {
        Ok(lock(&self.st)?.counts.iter().map(|&c| c as f64).collect())
    }

    /// The phase histogram of one channel (`bins` entries).
    #[napi]
    pub fn histogram(&self, channel: u32) -> Result<Vec<f64>> {
        if channel > 255 {
            return Err(bad("channel must be 0..255"));
        }
        let s = lock(&self.st)?;
        let b = 1usize << s.bins_log2;
        let o = (channel as usize) << s.bins_log2;
        Ok(s.hist[o..o + b].iter().map(|&c| c as f64).collect())
    }
}
