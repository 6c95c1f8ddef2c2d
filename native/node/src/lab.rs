//! Adapters for the emulated lab: the emulated photon source's device object (its ChaCha20 RNG
//! and its record, qkd_core::emulated_record), shareable between JS threads.
//!
//! Why a registry: the emulated source's wire server runs on a worker thread (so that its
//! read-back answers do not wait on Bob's event loop) while the lab's optics, on Bob's JS thread,
//! apply its choices to the photon candidates. A napi object belongs to one JS thread, so the
//! device that draws the key registers its Rust state under a handle and the lab opens a second
//! JS object on the same state. The handle lets its holder ask for choices (as the lab's closure
//! always could), never for the key; it is withdrawn by `unshare()`.
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qkd_core::emulated_choice::{ChoiceKey, ChoiceThresholds};
use qkd_core::emulated_record::SourceDevice;
use qkd_core::CoreError;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

fn core_err(e: CoreError) -> Error {
    Error::new(Status::GenericFailure, format!("{}: {}", e.code, e.message))
}

fn bad(code: &str, msg: impl AsRef<str>) -> Error {
    Error::new(Status::InvalidArg, format!("{code}: {}", msg.as_ref()))
}

fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(Error::new(Status::GenericFailure, format!("CORE_PANIC: internal error in {what}; please report it with the input sizes"))),
    }
}

fn threshold(x: f64, what: &str) -> Result<u64> {
    if !(x >= 0.0 && x <= 4_294_967_296.0 && x.fract() == 0.0) {
        return Err(bad("CORE_BAD_ARG", format!("threshold {what} must be an integer in [0, 2^32]; got {x}")));
    }
    Ok(x as u64)
}

fn registry() -> &'static Mutex<HashMap<u32, Arc<SourceDevice>>> {
    static R: OnceLock<Mutex<HashMap<u32, Arc<SourceDevice>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The emulated source's RNG and record. `applyAt` is the optics (records what it applied),
/// `recordAt` the read-back (a lookup, the keystream where the record holds nothing).
#[napi]
pub struct EmulatedSourceDevice {
    dev: Arc<SourceDevice>,
    handle: Option<u32>,
}

pub struct RecordAtTask {
    dev: Arc<SourceDevice>,
    pulses: Vec<f64>,
}

impl Task for RecordAtTask {
    type Output = Vec<u8>;
    type JsValue = Buffer;
    fn compute(&mut self) -> Result<Vec<u8>> {
        match catch_unwind(AssertUnwindSafe(|| self.dev.record_at(&self.pulses))) {
            Ok(r) => r.map_err(core_err),
            Err(_) => Err(Error::new(Status::GenericFailure, "CORE_PANIC: internal error in EmulatedSourceDevice.recordAtAsync")),
        }
    }
    fn resolve(&mut self, _env: Env, out: Vec<u8>) -> Result<Buffer> {
        Ok(out.into())
    }
}

#[napi(object)]
pub struct SourceRecordStats {
    pub hits: f64,
    pub misses: f64,
    pub entries: f64,
}

#[napi]
impl EmulatedSourceDevice {
    /// `key`: 32 bytes from the OS CSPRNG (copied into zeroising memory; the caller wipes its
    /// copy); thresholds as for `SourceRng`; `recordCapacity`: entries the record keeps (4 bytes each).
    #[napi(constructor)]
    pub fn new(key: Uint8Array, basis_z: f64, signal: f64, decoy: f64, record_capacity: f64) -> Result<Self> {
        let th = ChoiceThresholds { basis_z: threshold(basis_z, "basisZ")?, signal: threshold(signal, "signal")?, decoy: threshold(decoy, "decoy")? };
        if !(record_capacity >= 0.0 && record_capacity <= 1e10 && record_capacity.fract() == 0.0) {
            return Err(bad("CORE_BAD_ARG", format!("recordCapacity must be an integer in [0, 1e10]; got {record_capacity}")));
        }
        let key = ChoiceKey::new(&key).map_err(core_err)?;
        Ok(EmulatedSourceDevice { dev: Arc::new(SourceDevice::new(key, th, record_capacity as usize)), handle: None })
    }

    /// Registers the device for `open` on another JS thread of this process; returns the handle.
    #[napi]
    pub fn share(&mut self) -> Result<u32> {
        if let Some(h) = self.handle {
            return Ok(h);
        }
        let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let h = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        r.insert(h, self.dev.clone());
        self.handle = Some(h);
        Ok(h)
    }

    /// Withdraws the handle (objects already opened keep working).
    #[napi]
    pub fn unshare(&mut self) {
        if let Some(h) = self.handle.take() {
            registry().lock().unwrap_or_else(|e| e.into_inner()).remove(&h);
        }
    }

    /// A second JS object on a shared device.
    #[napi(factory)]
    pub fn open(handle: u32) -> Result<Self> {
        let r = registry().lock().unwrap_or_else(|e| e.into_inner());
        let dev = r.get(&handle).cloned().ok_or_else(|| bad("SOURCE_NOT_SHARED", format!("no emulated source device is shared under handle {handle} (closed, or never shared)")))?;
        Ok(EmulatedSourceDevice { dev, handle: None })
    }

    /// The optics: choices at the strictly increasing `pulses`, recorded.
    #[napi]
    pub fn apply_at(&self, pulses: Float64Array) -> Result<Buffer> {
        guard("EmulatedSourceDevice.applyAt", || Ok(self.dev.apply_at(&pulses).map_err(core_err)?.into()))
    }

    /// The read-back: what was applied at the listed pulses.
    #[napi]
    pub fn record_at(&self, pulses: Float64Array) -> Result<Buffer> {
        guard("EmulatedSourceDevice.recordAt", || Ok(self.dev.record_at(&pulses).map_err(core_err)?.into()))
    }

    /// The same off the JS thread (libuv pool); the pulses are copied first.
    #[napi]
    pub fn record_at_async(&self, pulses: Float64Array) -> AsyncTask<RecordAtTask> {
        AsyncTask::new(RecordAtTask { dev: self.dev.clone(), pulses: pulses.to_vec() })
    }

    #[napi]
    pub fn stats(&self) -> SourceRecordStats {
        let s = self.dev.lookup_stats();
        SourceRecordStats { hits: s.hits as f64, misses: s.misses as f64, entries: self.dev.record_len() as f64 }
    }
}

// ---- the emulated link's per-click physics (qkd_core::lab_link; reference src/lab/link.ts) ----

use qkd_core::lab_link::{Emitted, LinkEngine, LinkParams};
use qkd_core::lab_rng::{AliceThresholds, SeedKeys};

/// What `EmulatedLink.derive()` computes (see src/lab/link.ts for each field).
#[napi(object)]
pub struct LabLinkParams {
    pub period_ps: f64,
    pub ratio: Vec<f64>,
    pub pois_cdf: Vec<Vec<f64>>,
    pub logq_photon: f64,
    pub p_photon_max: f64,
    pub p_dark: f64,
    pub logq_dark: f64,
    pub fibre_delay: f64,
    pub clock_phase: f64,
    pub drift: f64,
    pub jitter_sigma: f64,
    pub det_channel: Vec<u32>,
    pub delays: Vec<f64>,
    pub det_by_basis_bit: Vec<i32>,
    pub passive: bool,
    pub free_running: bool,
    pub dead_time: f64,
    pub ap_prob: f64,
    pub ap_decay: f64,
    pub ed: f64,
    pub eve_fraction: f64,
    pub alice_k0: u32,
    pub alice_k1: u32,
    pub alice_basis_z: f64,
    pub alice_signal: f64,
    pub alice_decoy: f64,
    pub bob_k0: u32,
    pub bob_k1: u32,
    pub bob_threshold: f64,
}

fn link_params(j: LabLinkParams) -> Result<LinkParams> {
    let n = j.det_channel.len();
    if n == 0 || n > 32 || j.delays.len() != n {
        return Err(bad("LAB_BAD_PARAMS", format!("1 to 32 detectors with one delay each expected; got {n} channels and {} delays", j.delays.len())));
    }
    if j.ratio.len() != 3 || j.pois_cdf.len() != 3 || j.pois_cdf.iter().any(|c| c.is_empty()) || j.det_by_basis_bit.len() != 4 {
        return Err(bad("LAB_BAD_PARAMS", "ratio and poisCdf need 3 entries (non-empty CDFs), detByBasisBit 4"));
    }
    if j.det_by_basis_bit.iter().any(|&d| d < 0 || d as usize >= n) || j.det_channel.iter().any(|&c| c > 255) {
        return Err(bad("LAB_BAD_PARAMS", "every basis/bit needs a detector index below the detector count, channels 0-255"));
    }
    let mut cdf = j.pois_cdf.into_iter();
    Ok(LinkParams {
        period_ps: j.period_ps,
        ratio: [j.ratio[0], j.ratio[1], j.ratio[2]],
        pois_cdf: [cdf.next().unwrap(), cdf.next().unwrap(), cdf.next().unwrap()],
        logq_photon: j.logq_photon,
        p_photon_max: j.p_photon_max,
        p_dark: j.p_dark,
        logq_dark: j.logq_dark,
        fibre_delay: j.fibre_delay,
        clock_phase: j.clock_phase,
        drift: j.drift,
        jitter_sigma: j.jitter_sigma,
        det_channel: j.det_channel.iter().map(|&c| c as u8).collect(),
        delays: j.delays,
        det_by_basis_bit: [j.det_by_basis_bit[0] as i8, j.det_by_basis_bit[1] as i8, j.det_by_basis_bit[2] as i8, j.det_by_basis_bit[3] as i8],
        passive: j.passive,
        free_running: j.free_running,
        dead_time: j.dead_time,
        ap_prob: j.ap_prob,
        ap_decay: j.ap_decay,
        ed: j.ed,
        eve_fraction: j.eve_fraction,
        alice_keys: SeedKeys { k0: j.alice_k0, k1: j.alice_k1 },
        alice_th: AliceThresholds {
            basis_z: threshold(j.alice_basis_z, "aliceBasisZ")?,
            signal: threshold(j.alice_signal, "aliceSignal")?,
            decoy: threshold(j.alice_decoy, "aliceDecoy")?,
        },
        bob_keys: SeedKeys { k0: j.bob_k0, k1: j.bob_k1 },
        bob_th: threshold(j.bob_threshold, "bobThreshold")?,
    })
}

fn state4(a: &Uint32Array, what: &str) -> Result<[u32; 4]> {
    if a.len() != 4 {
        return Err(bad("LAB_BAD_PARAMS", format!("{what}: 4 state words expected, got {}", a.len())));
    }
    Ok([a[0], a[1], a[2], a[3]])
}

/// One batch of tags with their truth (as `LinkBatch` in src/lab/link.ts).
#[napi(object)]
pub struct LabLinkBatch {
    pub time_ps: BigInt64Array,
    pub channel: Uint8Array,
    pub truth_pulse: Float64Array,
    pub truth_kind: Uint8Array,
    pub truth_slot: Float64Array,
}

fn batch_js(e: Emitted) -> LabLinkBatch {
    LabLinkBatch {
        time_ps: BigInt64Array::new(e.time_ps),
        channel: Uint8Array::new(e.channel),
        truth_pulse: Float64Array::new(e.truth_pulse),
        truth_kind: Uint8Array::new(e.truth_kind),
        truth_slot: Float64Array::new(e.truth_slot),
    }
}

/// The link's physics state (random streams, schedules, dead time, afterpulses, held-back tags).
/// Called from its JS thread; `nextPulsesSourcedAsync` runs a batch on libuv's pool, holding the
/// state's lock meanwhile (a call made then waits for it; the JavaScript side makes none).
#[napi]
pub struct LabLinkPhysics {
    e: Arc<Mutex<LinkEngine>>,
    /// Alice's source device, when attached: `nextPulsesSourced` asks it for the candidates' choices.
    source: Option<Arc<SourceDevice>>,
}

#[napi]
impl LabLinkPhysics {
    /// `rngState`, `rngSkipState`: the initial words of the two xoshiro128** streams (rng.ts);
    /// `withSource`: Alice's choices come from her source device (see `candidates`); `truth`
    /// (default true): batches carry the truth columns (else empty; the same tags).
    #[napi(constructor)]
    pub fn new(params: LabLinkParams, rng_state: Uint32Array, rng_skip_state: Uint32Array, with_source: bool, truth: Option<bool>) -> Result<Self> {
        let p = link_params(params)?;
        let e = LinkEngine::new(p, state4(&rng_state, "rngState")?, state4(&rng_skip_state, "rngSkipState")?, with_source, truth.unwrap_or(true));
        Ok(LabLinkPhysics { e: Arc::new(Mutex::new(e)), source: None })
    }

    #[napi]
    pub fn set_params(&mut self, params: LabLinkParams) -> Result<()> {
        let p = link_params(params)?;
        guard("LabLinkPhysics.setParams", || {
            self.engine().set_params(p);
            Ok(())
        })
    }

    #[napi]
    pub fn set_clock(&mut self, drift: f64, clock_phase: f64, jitter_sigma: f64) {
        self.engine().set_clock(drift, clock_phase, jitter_sigma);
    }

    /// Photon candidates of pulses up to `endPulse` (with a source device), for its choices.
    #[napi]
    pub fn candidates(&mut self, end_pulse: f64) -> Result<Float64Array> {
        guard("LabLinkPhysics.candidates", || Ok(Float64Array::new(self.engine().candidates(end_pulse).to_vec())))
    }

    /// Emulates pulses up to `endPulse` (exclusive); `choices`: Alice's at the candidates.
    #[napi]
    pub fn next_pulses(&mut self, end_pulse: f64, choices: Option<Uint8Array>) -> Result<LabLinkBatch> {
        let mut e = self.engine();
        check_end(&e, end_pulse)?;
        guard("LabLinkPhysics.nextPulses", || {
            let b = e.next_pulses(end_pulse, choices.as_deref()).map_err(|m| bad("LAB_BAD_ARG", m))?;
            Ok(batch_js(b))
        })
    }

    #[napi]
    pub fn drain(&mut self) -> Result<LabLinkBatch> {
        let mut e = self.engine();
        guard("LabLinkPhysics.drain", || Ok(batch_js(e.drain())))
    }

    /// Alice's source device for `nextPulsesSourced` (its optics: `applyAt`, which records).
    #[napi]
    pub fn attach_source(&mut self, device: &EmulatedSourceDevice) {
        self.source = Some(device.dev.clone());
    }

    /// `candidates(endPulse)`, the attached source device's `applyAt` of them and
    /// `nextPulses(endPulse, choices)` in one call (no round trip of the candidates and choices
    /// through JavaScript).
    #[napi]
    pub fn next_pulses_sourced(&mut self, end_pulse: f64) -> Result<LabLinkBatch> {
        let dev = self.source.clone().ok_or_else(|| bad("LAB_NO_SOURCE", "nextPulsesSourced needs a source device (attachSource)"))?;
        let mut e = self.engine();
        check_end(&e, end_pulse)?;
        guard("LabLinkPhysics.nextPulsesSourced", || sourced_batch(&mut e, &dev, end_pulse)).map(batch_js)
    }

    /// `nextPulsesSourced` on libuv's pool: the batch is emulated off the JS thread (which meanwhile
    /// serves the tagger's consumer: the emulated device's light keeps coming while the host works).
    /// The same tags, in the same order of calls; one at a time (the caller waits for each).
    #[napi]
    pub fn next_pulses_sourced_async(&mut self, end_pulse: f64) -> Result<AsyncTask<SourcedBatchTask>> {
        let dev = self.source.clone().ok_or_else(|| bad("LAB_NO_SOURCE", "nextPulsesSourcedAsync needs a source device (attachSource)"))?;
        check_end(&self.engine(), end_pulse)?;
        Ok(AsyncTask::new(SourcedBatchTask { e: self.e.clone(), dev, end_pulse }))
    }
}

impl LabLinkPhysics {
    /// The engine; a lock poisoned by a panic (caught by `guard`) still holds a usable engine.
    fn engine(&self) -> std::sync::MutexGuard<'_, LinkEngine> {
        self.e.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn check_end(e: &LinkEngine, end_pulse: f64) -> Result<()> {
    if !(end_pulse >= e.pulses_done() && end_pulse <= 9007199254740991.0 && end_pulse.fract() == 0.0) {
        return Err(bad("LAB_BAD_ARG", format!("endPulse must be an integer from {} to 2^53; got {end_pulse}", e.pulses_done())));
    }
    Ok(())
}

/// Candidates, the source device's choices at them, the batch.
fn sourced_batch(e: &mut LinkEngine, dev: &SourceDevice, end_pulse: f64) -> Result<Emitted> {
    let mut err = None;
    let r = e.next_pulses_sourced(end_pulse, |cand| {
        dev.apply_at(cand).map_err(|e| {
            let m = e.message.clone();
            err = Some(e);
            m
        })
    });
    match (r, err) {
        (Ok(b), _) => Ok(b),
        (Err(_), Some(e)) => Err(core_err(e)),
        (Err(m), None) => Err(bad("LAB_BAD_ARG", m)),
    }
}

pub struct SourcedBatchTask {
    e: Arc<Mutex<LinkEngine>>,
    dev: Arc<SourceDevice>,
    end_pulse: f64,
}

impl Task for SourcedBatchTask {
    type Output = Emitted;
    type JsValue = LabLinkBatch;
    fn compute(&mut self) -> Result<Emitted> {
        let mut e = self.e.lock().unwrap_or_else(|p| p.into_inner());
        // checked again: a synchronous call may have moved the engine on since the task was made
        check_end(&e, self.end_pulse)?;
        guard("LabLinkPhysics.nextPulsesSourcedAsync", || sourced_batch(&mut e, &self.dev, self.end_pulse))
    }
    fn resolve(&mut self, _env: Env, out: Emitted) -> Result<LabLinkBatch> {
        Ok(batch_js(out))
    }
}

/// Number of entries of each channel value (256 counts) in `channel`.
#[napi]
pub fn lab_count_channels(channel: Uint8Array) -> Float64Array {
    let mut c = [0u64; 256];
    for &x in channel.iter() {
        c[x as usize] += 1;
    }
    Float64Array::new(c.iter().map(|&v| v as f64).collect())
}

/// An active Bob's modulator basis (0 Z, 1 X) at each listed pulse (src/lab/alice.ts
/// `bobBasisChoicesAt`, the reference): keys of his seed (`seedKeys(bobSeed, DOMAIN_BOB)`) and
/// the Z threshold (`bobThreshold`) as the TypeScript computes them.
#[napi]
pub fn lab_bob_bases_at(k0: u32, k1: u32, threshold_z: f64, pulses: Float64Array) -> Result<Uint8Array> {
    let th = threshold(threshold_z, "thresholdZ")?;
    guard("labBobBasesAt", || {
        let mut out = vec![0u8; pulses.len()];
        qkd_core::lab_rng::bob_bases_at(SeedKeys { k0, k1 }, th, &pulses, &mut out)
            .map_err(|i| bad("LAB_BAD_PULSE", format!("pulses[{i}] = {} is not a pulse index (integer in [0, 2^53))", pulses[i])))?;
        Ok(Uint8Array::new(out))
    })
}

/// `Math.log` as the lab's Rust physics computes it (for the property test against V8's).
#[napi]
pub fn lab_js_log(x: Float64Array) -> Float64Array {
    Float64Array::new(x.iter().map(|&v| qkd_core::lab_rng::js_log(v)).collect())
}

// ---- tag records of the USB tagger path (qkd_core::lab_tagger; reference src/devices/tags.ts) ----

/// Decoded records: tags and the in-band events as columns (tags.ts builds TagEvents from them).
#[napi(object)]
pub struct TagRecordsJs {
    pub time_ps: BigInt64Array,
    pub channel: Uint8Array,
    pub ev_type: Uint8Array,
    pub ev_index: Uint32Array,
    pub ev_channel: Int32Array,
    pub ev_time_ps: BigInt64Array,
    pub ev_missed: Uint16Array,
}

/// Decodes whole 16-byte tag records (`bytes.length` a multiple of 16).
#[napi]
pub fn tag_records_decode(bytes: Uint8Array) -> Result<TagRecordsJs> {
    guard("tagRecordsDecode", || {
        let d = qkd_core::lab_tagger::decode_records(&bytes).map_err(|m| bad("TRUNCATED_TAG_RECORD", m))?;
        Ok(TagRecordsJs {
            time_ps: BigInt64Array::new(d.time_ps),
            channel: Uint8Array::new(d.channel),
            ev_type: Uint8Array::new(d.ev_type),
            ev_index: Uint32Array::new(d.ev_index),
            ev_channel: Int32Array::new(d.ev_channel),
            ev_time_ps: BigInt64Array::new(d.ev_time_ps),
            ev_missed: Uint16Array::new(d.ev_missed),
        })
    })
}

/// Plain time-tag records for `timePs[i] + delayPs` on `channel[i]`.
#[napi]
pub fn tag_records_encode_time_tags(time_ps: BigInt64Array, channel: Uint8Array, delay_ps: BigInt) -> Result<Buffer> {
    if time_ps.len() != channel.len() {
        return Err(bad("TAG_BAD_ARG", format!("timePs and channel differ in length ({} vs {})", time_ps.len(), channel.len())));
    }
    let (d, lossless) = delay_ps.get_i64();
    if !lossless {
        return Err(bad("TAG_BAD_ARG", "delayPs must fit in 64 bits"));
    }
    guard("tagRecordsEncodeTimeTags", || Ok(qkd_core::lab_tagger::encode_time_tags(&time_ps, &channel, d).into()))
}

/// The emulated tagger's merge of channels with different delays (qkd_core::lab_tagger::DelayMerger;
/// reference `DelayMergeTs` in src/devices/emulated/delay-merge.ts). Holds the tags a later pull
/// could still precede. JS thread only.
#[napi]
pub struct TagDelayMerger {
    m: qkd_core::lab_tagger::DelayMerger,
}

#[napi]
impl TagDelayMerger {
    #[napi(constructor)]
    pub fn new() -> Self {
        TagDelayMerger { m: qkd_core::lab_tagger::DelayMerger::new() }
    }

    /// One pull (raw tags in time order, each channel's delay): the records released, in time order.
    #[napi]
    pub fn push(&mut self, time_ps: BigInt64Array, channel: Uint8Array, delays_ps: BigInt64Array) -> Result<Buffer> {
        if time_ps.len() != channel.len() {
            return Err(bad("TAG_BAD_ARG", format!("timePs and channel differ in length ({} vs {})", time_ps.len(), channel.len())));
        }
        guard("TagDelayMerger.push", || Ok(self.m.push(&time_ps, &channel, &delays_ps).into()))
    }

    /// Every held tag as records.
    #[napi]
    pub fn flush(&mut self) -> Result<Buffer> {
        guard("TagDelayMerger.flush", || Ok(self.m.flush().into()))
    }

    /// Drops the held tags.
    #[napi]
    pub fn clear(&mut self) {
        self.m.clear();
    }

    /// Number of held tags.
    #[napi]
    pub fn held(&self) -> u32 {
        self.m.held() as u32
    }
}
