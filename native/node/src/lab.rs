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
