//! napi adapters for qkd-ldpc (reconciliation). Conversions and error mapping only.
//!
//! Errors: napi errors whose message is `LDPC_CODE: text` (the convention of src/core/native-call.ts); src/core/ldpc.ts turns them into
//! coded QkdErrors. Messages carry sizes and parameters, never bits.
//! Concurrency: the async tasks borrow the caller's typed arrays while they run on a worker
//! thread; the caller must not modify them until the promise settles (the facade documents it).
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qkd_ldpc as l;
use qkd_ldpc::decoder::Kernel;
use qkd_ldpc::family::{CodeId, FrameParams};

fn coded(code: &str, message: impl std::fmt::Display) -> Error {
    Error::new(Status::InvalidArg, format!("{code}: {message}"))
}

fn from_ldpc(e: l::LdpcError) -> Error {
    coded(e.code, e.message)
}

/// Runs `f`, turning a panic (a bug: the crate's invariants failed) into a coded error so that it
/// never unwinds across the napi boundary or aborts the worker thread.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(Error::new(
            Status::GenericFailure,
            "LDPC_INTERNAL: the LDPC core hit an internal invariant failure; the frame is lost, report it with the parameters used".to_string(),
        )),
    }
}

/// Rate-adaptation parameters of a frame (travel with the syndrome; both sides use the same).
#[napi(object)]
#[derive(Clone)]
pub struct LdpcFrameParams {
    /// Mother code length is 2^log2n.
    #[napi(js_name = "log2n")]
    pub log2n: u32,
    pub rate_permille: u32,
    pub punctured: u32,
    pub shortened: u32,
}

/// What chooseCode picked, with the derived sizes.
#[napi(object)]
pub struct LdpcCodeChoice {
    pub params: LdpcFrameParams,
    /// Key bits per frame (k = n − d).
    pub key_bits: u32,
    /// Syndrome bits sent by Alice (m).
    pub syndrome_bits: u32,
    /// Mother code length n.
    pub mother_length: u32,
    /// Bits disclosed by the syndrome alone (m − p).
    pub leak_bits: u32,
    /// FNV-1a-64 checksum of the mother code (hex), to check both sides built the same matrix.
    pub checksum: String,
}

fn to_fp(p: &LdpcFrameParams) -> FrameParams {
    FrameParams {
        code: CodeId { log2n: p.log2n, rate_permille: p.rate_permille },
        punctured: p.punctured as usize,
        shortened: p.shortened as usize,
    }
}

/// The code's checksum, computed once per mother code: it walks every edge (~1 M at 2^18), and
/// describe() runs several times per block on both sides (it was ~1 % of a link's CPU).
fn checksum_of(id: CodeId, code: &l::code::Code) -> u64 {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static SUMS: OnceLock<Mutex<HashMap<CodeId, u64>>> = OnceLock::new();
    let sums = SUMS.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(&sum) = sums.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return sum;
    }
    let sum = code.checksum();
    sums.lock().unwrap_or_else(|e| e.into_inner()).insert(id, sum);
    sum
}

fn describe(fp: &FrameParams) -> Result<LdpcCodeChoice> {
    let code = l::family::check_params(fp).map_err(|e| coded("LDPC_BAD_PARAMS", e))?;
    Ok(LdpcCodeChoice {
        params: LdpcFrameParams {
            log2n: fp.code.log2n,
            rate_permille: fp.code.rate_permille,
            punctured: fp.punctured as u32,
            shortened: fp.shortened as u32,
        },
        key_bits: fp.key_bits() as u32,
        syndrome_bits: fp.syndrome_bits() as u32,
        mother_length: fp.n() as u32,
        leak_bits: fp.base_leak() as u32,
        checksum: format!("{:016x}", checksum_of(fp.code, &code)),
    })
}

/// Picks mother code, puncturing and shortening for a QBER (fraction) and a preferred number of
/// key bits per frame. `efficiency` overrides the built-in target f (leak ≈ f·k·h(qber)).
#[napi]
pub fn ldpc_choose_code(qber: f64, frame_bits: u32, efficiency: Option<f64>) -> Result<LdpcCodeChoice> {
    if !(qber.is_finite() && qber > 0.0 && qber < 0.5) {
        return Err(coded("LDPC_BAD_QBER", format!("qber must be a fraction in (0, 0.5), got {qber}")));
    }
    if let Some(f) = efficiency {
        if !(f.is_finite() && f >= 1.0 && f < 10.0) {
            return Err(coded("LDPC_BAD_PARAMS", format!("efficiency must be in [1, 10), got {f}")));
        }
    }
    guarded(|| describe(&l::choose(qber, frame_bits as usize, efficiency)))
}

/// A blind-reconciliation plan: the first attempt's code choice and the bits revealed per retry.
#[napi(object)]
pub struct LdpcBlindChoice {
    pub choice: LdpcCodeChoice,
    /// Bits Alice reveals per retry round (punctured fill first, then key bits).
    pub step_bits: u32,
    /// Efficiency of the first attempt, (m − p)/(k·h(qber)).
    pub first_efficiency: f64,
}

/// Blind reconciliation plan (family.rs `choose_blind`) for a QBER and preferred frame size.
#[napi]
pub fn ldpc_choose_blind(qber: f64, frame_bits: u32) -> Result<LdpcBlindChoice> {
    if !(qber.is_finite() && qber > 0.0 && qber < 0.5) {
        return Err(coded("LDPC_BAD_QBER", format!("qber must be a fraction in (0, 0.5), got {qber}")));
    }
    guarded(|| {
        let plan = l::choose_blind(qber, frame_bits as usize);
        Ok(LdpcBlindChoice { choice: describe(&plan.params)?, step_bits: plan.step_bits as u32, first_efficiency: plan.first_efficiency })
    })
}

/// Describes (and validates) given parameters, e.g. ones received from the peer.
#[napi]
pub fn ldpc_describe(params: LdpcFrameParams) -> Result<LdpcCodeChoice> {
    describe(&to_fp(&params))
}

/// Alice: syndrome of one frame (k bits packed LSB first) with a p-bit secret puncturing fill.
#[napi]
pub fn ldpc_encode(params: LdpcFrameParams, key: Uint8Array, fill: Uint8Array) -> Result<Buffer> {
    guarded(|| l::encode(&to_fp(&params), &key, &fill).map(Buffer::from).map_err(from_ldpc))
}

/// Alice, blind retry: the values at reveal positions from .. from + count (packed).
#[napi]
pub fn ldpc_reveal(params: LdpcFrameParams, key: Uint8Array, fill: Uint8Array, from: u32, count: u32) -> Result<Buffer> {
    guarded(|| l::reveal(&to_fp(&params), &key, &fill, from as usize, count as usize).map(Buffer::from).map_err(from_ldpc))
}

pub struct EncodeBatchTask {
    params: LdpcFrameParams,
    keys: Uint8Array,
    fills: Uint8Array,
    count: u32,
}

impl Task for EncodeBatchTask {
    type Output = Vec<u8>;
    type JsValue = Buffer;
    fn compute(&mut self) -> Result<Self::Output> {
        guarded(|| l::encode_batch(&to_fp(&self.params), &self.keys, &self.fills, self.count as usize).map_err(from_ldpc))
    }
    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(Buffer::from(output))
    }
}

/// Alice, many frames: `keys` and `fills` are `count` packed frames back to back; resolves to the
/// concatenated syndromes (ceil(m/8) bytes each).
#[napi]
pub fn ldpc_encode_batch(params: LdpcFrameParams, keys: Uint8Array, fills: Uint8Array, count: u32) -> AsyncTask<EncodeBatchTask> {
    AsyncTask::new(EncodeBatchTask { params, keys, fills, count })
}

#[napi(object)]
pub struct LdpcDecodeOutput {
    /// Corrected key bits, `count` frames of ceil(k/8) bytes back to back (best guess if not converged).
    pub corrected: Buffer,
    /// Estimated punctured fill per frame (ceil(p/8) bytes each); secret like the key.
    pub fill_guess: Buffer,
    pub converged: Vec<bool>,
    pub iterations: Vec<u32>,
    /// Bits disclosed per frame: m − p + revealedCount.
    pub leak_bits: Vec<u32>,
}

pub struct DecodeBatchTask {
    params: LdpcFrameParams,
    qber: f64,
    frames: Uint8Array,
    syndromes: Uint8Array,
    count: u32,
    revealed_count: u32,
    revealed: Uint8Array,
    max_iter: u32,
    portable: bool,
    reference: bool,
    /// Warm start: the store and each frame's id in it.
    warm: Option<(u32, Vec<u32>)>,
    stall: Option<l::decoder::Stall>,
}

/// Warm-start stores (`ldpcWarmOpen`): per store, the decoder state of each frame (by the
/// caller's frame id) that failed its last decode. Held here, not in JS: the state is derived
/// from Bob's key (zeroised when dropped, never copied out).
#[derive(Default)]
struct WarmMap {
    states: std::collections::HashMap<u32, l::WarmState>,
    /// Most bytes of state kept; a state that does not fit is dropped (its frame retries cold).
    max_bytes: usize,
}

impl WarmMap {
    fn bytes(&self) -> usize {
        self.states.values().map(|s| s.bytes()).sum()
    }
}
static WARM: std::sync::Mutex<Option<std::collections::HashMap<u32, WarmMap>>> = std::sync::Mutex::new(None);
static WARM_NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

fn warm_stores() -> std::sync::MutexGuard<'static, Option<std::collections::HashMap<u32, WarmMap>>> {
    WARM.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens a warm-start store for one block's blind retries; returns its id. It keeps at most
/// `maxBytes` of state (one byte per edge per failing frame, ≈ 1.6 MB at 2^18); frames beyond
/// that retry cold (same disclosures, only slower to converge).
#[napi]
pub fn ldpc_warm_open(max_bytes: f64) -> u32 {
    let id = WARM_NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let max_bytes = if max_bytes.is_finite() && max_bytes > 0.0 { max_bytes as usize } else { 0 };
    warm_stores().get_or_insert_with(Default::default).insert(id, WarmMap { states: Default::default(), max_bytes });
    id
}

/// Drops (and zeroises) every state of a store; unknown ids are ignored.
#[napi]
pub fn ldpc_warm_close(id: u32) {
    if let Some(m) = warm_stores().as_mut() {
        m.remove(&id);
    }
}

/// Frames with a state in the store, and the bytes they hold.
#[napi]
pub fn ldpc_warm_size(id: u32) -> Vec<u32> {
    let g = warm_stores();
    let m = g.as_ref().and_then(|m| m.get(&id));
    vec![m.map_or(0, |m| m.states.len() as u32), m.map_or(0, |m| m.bytes() as u32)]
}

pub struct DecodeOut {
    corrected: Vec<u8>,
    fill: Vec<u8>,
    converged: Vec<bool>,
    iterations: Vec<u32>,
    leak: Vec<u32>,
}

impl Task for DecodeBatchTask {
    type Output = DecodeOut;
    type JsValue = LdpcDecodeOutput;
    fn compute(&mut self) -> Result<Self::Output> {
        guarded(|| self.run())
    }
    fn resolve(&mut self, _env: Env, o: Self::Output) -> Result<Self::JsValue> {
        Ok(LdpcDecodeOutput {
            corrected: Buffer::from(o.corrected),
            fill_guess: Buffer::from(o.fill),
            converged: o.converged,
            iterations: o.iterations,
            leak_bits: o.leak,
        })
    }
}

impl DecodeBatchTask {
    fn run(&self) -> Result<DecodeOut> {
        let fp = to_fp(&self.params);
        l::family::check_params(&fp).map_err(|e| coded("LDPC_BAD_PARAMS", e))?;
        let n = self.count as usize;
        let kb = fp.key_bits().div_ceil(8);
        let sb = fp.syndrome_bits().div_ceil(8);
        let rb = (self.revealed_count as usize).div_ceil(8);
        if self.frames.len() != n * kb || self.syndromes.len() != n * sb || self.revealed.len() != n * rb {
            return Err(coded(
                "LDPC_BAD_LENGTH",
                format!(
                    "expected {n} frames of {kb} bytes, {n} syndromes of {sb} bytes and {n} revelations of {rb} bytes; got {}, {} and {} bytes",
                    self.frames.len(),
                    self.syndromes.len(),
                    self.revealed.len()
                ),
            ));
        }
        let frames: Vec<l::BobFrame<'_>> = (0..n)
            .map(|i| l::BobFrame {
                frame: &self.frames[i * kb..(i + 1) * kb],
                syndrome: &self.syndromes[i * sb..(i + 1) * sb],
                revealed: &self.revealed[i * rb..(i + 1) * rb],
            })
            .collect();
        let res: Vec<l::FrameResult> = if self.reference {
            frames
                .iter()
                .map(|f| l::decode_reference_frame(&fp, self.qber, f, self.revealed_count as usize, self.max_iter))
                .collect::<std::result::Result<_, _>>()
                .map_err(from_ldpc)?
        } else {
            let kernel = if self.portable { Kernel::Portable } else { Kernel::Auto };
            let opts = l::DecodeOptions { max_iter: self.max_iter, kernel, stall: self.stall };
            match &self.warm {
                None => l::decode_batch(&fp, self.qber, &frames, self.revealed_count as usize, opts).map_err(from_ldpc)?,
                Some((store, ids)) => {
                    if ids.len() != n {
                        return Err(coded("LDPC_BAD_LENGTH", format!("{} warm-start frame ids for {n} frames; pass one id per frame", ids.len())));
                    }
                    // Take this batch's states out of the store (other batches may run meanwhile).
                    let mut states: Vec<Option<l::WarmState>> = {
                        let mut g = warm_stores();
                        let Some(m) = g.as_mut().and_then(|m| m.get_mut(store)) else {
                            return Err(coded("LDPC_BAD_PARAMS", format!("warm-start store {store} is not open (closed already?); open one with ldpcWarmOpen")));
                        };
                        ids.iter().map(|id| m.states.remove(id)).collect()
                    };
                    let res = l::decode_batch_warm(&fp, self.qber, &frames, self.revealed_count as usize, opts, &mut states);
                    let mut g = warm_stores();
                    // A store closed while this batch ran: its states are dropped here.
                    if let Some(m) = g.as_mut().and_then(|m| m.get_mut(store)) {
                        let mut held = m.bytes();
                        for (id, st) in ids.iter().zip(states) {
                            if let Some(st) = st {
                                if held + st.bytes() <= m.max_bytes {
                                    held += st.bytes();
                                    m.states.insert(*id, st);
                                }
                            }
                        }
                    }
                    res.map_err(from_ldpc)?
                }
            }
        };
        let mut out = DecodeOut {
            corrected: Vec::with_capacity(n * kb),
            fill: Vec::with_capacity(n * fp.punctured.div_ceil(8)),
            converged: Vec::with_capacity(n),
            iterations: Vec::with_capacity(n),
            leak: Vec::with_capacity(n),
        };
        for r in &res {
            out.corrected.extend_from_slice(&r.corrected);
            out.fill.extend_from_slice(&r.fill_guess);
            out.converged.push(r.converged);
            out.iterations.push(r.iterations);
            out.leak.push(r.leak_bits as u32);
        }
        Ok(out)
    }
}

/// Bob, many frames decoded concurrently (SIMD lanes × rayon threads), off the JS thread.
/// `revealed` holds `revealedCount` bits per frame (ceil/8 bytes each, back to back).
/// `portable` forces the baseline (non-SIMD-dispatched) kernel; `reference` runs the slow f64
/// sum-product reference instead (tests and benchmark baseline). `warmStore` (from
/// `ldpcWarmOpen`) with `warmIds` (one id per frame): frames with a state in the store resume
/// from it, and every frame that fails leaves its state there (ignored with `reference`).
/// `stall` = [from, every, minDropPerMille]: the early give-up rule of `decoder::Stall` (absent:
/// the iteration budget only).
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn ldpc_decode_batch(
    params: LdpcFrameParams,
    qber: f64,
    frames: Uint8Array,
    syndromes: Uint8Array,
    count: u32,
    revealed_count: u32,
    revealed: Uint8Array,
    max_iter: u32,
    portable: bool,
    reference: bool,
    warm_store: Option<u32>,
    warm_ids: Option<Vec<u32>>,
    stall: Option<Vec<u32>>,
) -> AsyncTask<DecodeBatchTask> {
    AsyncTask::new(DecodeBatchTask {
        params,
        qber,
        frames,
        syndromes,
        count,
        revealed_count,
        revealed,
        max_iter,
        portable,
        reference,
        warm: warm_store.map(|s| (s, warm_ids.unwrap_or_default())),
        stall: stall.filter(|v| v.len() == 3).map(|v| l::decoder::Stall { from: v[0], every: v[1], min_drop_per_mille: v[2] }),
    })
}

/// The SIMD kernel the decoder dispatches to on this CPU ("avx512bw", "avx2" or "portable").
#[napi]
pub fn ldpc_kernel() -> String {
    l::decoder::kernel_name(Kernel::Auto).to_string()
}

/// Rebuilds one shipped code and returns its provenance line (same format as the shipped table).
#[napi]
pub fn ldpc_provenance(log2n: u32, rate_permille: u32) -> Result<String> {
    let id = CodeId { log2n, rate_permille };
    if !id.is_shipped() {
        return Err(coded("LDPC_BAD_PARAMS", format!("no shipped code with log2n {log2n} and rate {rate_permille} per mille")));
    }
    Ok(l::family::provenance_line(id))
}

/// The shipped provenance table (native/ldpc/codes/checksums.txt, compiled in).
#[napi]
pub fn ldpc_shipped_table() -> String {
    l::family::SHIPPED_TABLE.to_string()
}

pub struct PrepareTask {
    log2n: u32,
}

impl Task for PrepareTask {
    type Output = u32;
    type JsValue = u32;
    fn compute(&mut self) -> Result<Self::Output> {
        let log2n = self.log2n;
        guarded(|| {
            if !l::family::LOG2N.contains(&log2n) {
                return Err(coded("LDPC_BAD_PARAMS", format!("no shipped codes with log2n {log2n}; shipped: {:?}", l::family::LOG2N)));
            }
            Ok(l::family::prepare(log2n) as u32)
        })
    }
    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output)
    }
}

/// Builds (and caches) every shipped code of length 2^log2n off the JS thread, so that the first
/// chooseCode/encode/decode on that size does not block the event loop (a 2^20 code takes ~1 s;
/// the 16 rates are built in parallel on the rayon pool).
/// Resolves to the number of codes built.
#[napi]
pub fn ldpc_prepare(log2n: u32) -> AsyncTask<PrepareTask> {
    AsyncTask::new(PrepareTask { log2n })
}
