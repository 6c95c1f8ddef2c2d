//! napi adapters for qkd-core: sifting, parameter estimation, verification, privacy
//! amplification, block security statement. No algorithm lives here (see native/core).
//!
//! Conventions: bit strings cross as LSB-first packed bytes (Uint8Array in, Buffer out) with an
//! explicit bit length; counts cross as JS numbers (exact below 2^53). Errors are napi errors whose
//! message starts with the core's code (`SIFT_UNSORTED: ...`, `PE_ABORT_QBER: ...`); the facade
//! in src/core/ turns them into QkdError subclasses. Every entry point catches panics so none
//! crosses into Node. Key bytes handed back to JS are the caller's to wipe (`fill(0)`).
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qkd_core::bits::KeyBits;
use qkd_core::block::{self, BlockInput, SecurityStatement};
use qkd_core::finite_key::{self, Bounds, EstimateInput, Protocol};
use qkd_core::sift::{self, ChannelMap, PartyEvents};
use qkd_core::{toeplitz, verify, CoreError};
use std::panic::{catch_unwind, AssertUnwindSafe};

fn core_err(e: CoreError) -> Error {
    Error::new(Status::GenericFailure, format!("{}: {}", e.code, e.message))
}

fn bad(code: &str, msg: impl AsRef<str>) -> Error {
    Error::new(Status::InvalidArg, format!("{code}: {}", msg.as_ref()))
}

/// Runs `f`, turning a panic into a coded error (a bug in the core must not kill the node).
fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(Error::new(Status::GenericFailure, format!(
            "CORE_PANIC: internal error in {what}; please report it with the input sizes"))),
    }
}

fn count_of(x: f64, what: &str) -> Result<usize> {
    if !(x >= 0.0 && x <= 9007199254740991.0 && x.fract() == 0.0) {
        return Err(bad("CORE_BAD_ARG", format!("{what} must be an integer in [0, 2^53); got {x}")));
    }
    Ok(x as usize)
}

fn bits_from(bytes: &[u8], n: usize, what: &str) -> Result<KeyBits> {
    if bytes.len() < n.div_ceil(8) {
        return Err(bad("CORE_BAD_ARG", format!("{what}: {} bytes cannot hold {n} bits", bytes.len())));
    }
    Ok(KeyBits::from_bytes(bytes, n))
}

fn words_from_bytes(bytes: &[u8], nbits: usize) -> Vec<u64> {
    KeyBits::from_bytes(bytes, nbits).words().to_vec()
}

fn words_to_buffer(words: &[u64], nbits: usize) -> Buffer {
    let mut v = Vec::with_capacity(words.len() * 8);
    for w in words {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v.truncate(nbits.div_ceil(8));
    v.into()
}

// ---------------------------------------------------------------- sifting

#[napi(object)]
pub struct SiftStatsJs {
    pub detections: f64,
    pub unmapped: f64,
    pub events: f64,
    pub double_clicks: f64,
    pub multi_clicks: f64,
}

#[napi(object)]
pub struct SiftBobResult {
    /// Message to send to Alice.
    pub announcement: Buffer,
    /// Bob's bit per event (secret), LSB-first, `count` bits.
    pub bits: Buffer,
    /// Bob's basis per event (public), LSB-first, `count` bits.
    pub bases: Buffer,
    pub count: f64,
    pub stats: SiftStatsJs,
}

/// Bob: groups detections (sorted by pulse) per pulse, squashes multi-clicks, announces.
/// `channelMap[ch]` = basis<<1|bit or 255; `squashSeed`: 32 fresh random bytes.
#[napi(catch_unwind)]
pub fn sift_bob_announce(pulse: Float64Array, channel: Uint8Array, channel_map: Uint8Array, squash_seed: Uint8Array) -> Result<SiftBobResult> {
    guard("siftBobAnnounce", || {
        let map = ChannelMap::from_codes(&channel_map).map_err(core_err)?;
        let seed: [u8; 32] = squash_seed.as_ref().try_into()
            .map_err(|_| bad("CORE_BAD_ARG", "squashSeed must be exactly 32 random bytes"))?;
        let r = sift::bob_announce(&pulse, &channel, &map, &seed).map_err(core_err)?;
        let n = r.events.count;
        Ok(SiftBobResult {
            announcement: r.announcement.into(),
            bits: r.events.bits.to_bytes().into(),
            bases: words_to_buffer(&r.events.bases, n),
            count: n as f64,
            stats: SiftStatsJs {
                detections: r.stats.detections as f64,
                unmapped: r.stats.unmapped as f64,
                events: r.stats.events as f64,
                double_clicks: r.stats.double_clicks as f64,
                multi_clicks: r.stats.multi_clicks as f64,
            },
        })
    })
}

#[napi(object)]
pub struct SiftAliceResult {
    /// Message to send back to Bob.
    pub reply: Buffer,
    /// Alice's bit per announced event (secret) and basis (public), LSB-first, `count` bits.
    pub bits: Buffer,
    pub bases: Buffer,
    pub count: f64,
    pub matched: f64,
}

/// Alice: matches Bob's announcement against her choice bytes (`choices[p - firstPulse]`).
#[napi(catch_unwind)]
pub fn sift_alice_match(announcement: Uint8Array, choices: Uint8Array, first_pulse: f64) -> Result<SiftAliceResult> {
    guard("siftAliceMatch", || {
        let first = count_of(first_pulse, "firstPulse")? as u64;
        let r = sift::alice_match(&announcement, &choices, first).map_err(core_err)?;
        let n = r.events.count;
        Ok(SiftAliceResult {
            reply: r.reply.into(),
            bits: r.events.bits.to_bytes().into(),
            bases: words_to_buffer(&r.events.bases, n),
            count: n as f64,
            matched: r.matched as f64,
        })
    })
}

#[napi(object)]
pub struct SiftedJs {
    /// Z (key basis) bits in event order, LSB-first, `zBits` bits; one intensity byte per bit.
    pub z: Buffer,
    pub z_bits: f64,
    pub z_intensity: Buffer,
    /// X (test basis) bits, same layout.
    pub x: Buffer,
    pub x_bits: f64,
    pub x_intensity: Buffer,
    /// Counts per intensity [mu, nu, omega].
    pub n_z: Vec<f64>,
    pub n_x: Vec<f64>,
}

fn sifted_js(s: sift::Sifted) -> SiftedJs {
    SiftedJs {
        z: s.z.to_bytes().into(),
        z_bits: s.z.len() as f64,
        z_intensity: s.z_intensity.into(),
        x: s.x.to_bytes().into(),
        x_bits: s.x.len() as f64,
        x_intensity: s.x_intensity.into(),
        n_z: s.n_z.iter().map(|&v| v as f64).collect(),
        n_x: s.n_x.iter().map(|&v| v as f64).collect(),
    }
}

#[napi(object)]
pub struct SiftAliceOnePass {
    /// Message to send back to Bob.
    pub reply: Buffer,
    pub count: f64,
    pub matched: f64,
    /// Alice's sifted strings (secret bits; the caller wipes them).
    pub sifted: SiftedJs,
}

/// Alice's whole sifting in one pass: match the announcement and produce her sifted strings.
#[napi(catch_unwind)]
pub fn sift_alice(announcement: Uint8Array, choices: Uint8Array, first_pulse: f64) -> Result<SiftAliceOnePass> {
    guard("siftAlice", || {
        let first = count_of(first_pulse, "firstPulse")? as u64;
        let r = sift::alice_match(&announcement, &choices, first).map_err(core_err)?;
        Ok(SiftAliceOnePass { reply: r.reply.into(), count: r.events.count as f64, matched: r.matched as f64, sifted: sifted_js(r.sifted) })
    })
}

/// Both parties: keep matched events, split by basis, tag intensities.
#[napi(catch_unwind)]
pub fn sift_extract(bits: Uint8Array, bases: Uint8Array, count: f64, reply: Uint8Array) -> Result<SiftedJs> {
    guard("siftExtract", || {
        let n = count_of(count, "count")?;
        let ev = PartyEvents {
            count: n,
            bases: {
                if bases.len() < n.div_ceil(8) {
                    return Err(bad("CORE_BAD_ARG", "bases bitmap shorter than count bits"));
                }
                words_from_bytes(&bases, n)
            },
            bits: bits_from(&bits, n, "bits")?,
        };
        let s = sift::extract(&ev, &reply).map_err(core_err)?;
        Ok(sifted_js(s))
    })
}

/// Errors per intensity between two same-basis strings (`intensity.length` bits each).
#[napi(catch_unwind)]
pub fn sift_errors_by_intensity(a: Uint8Array, b: Uint8Array, intensity: Uint8Array) -> Result<Vec<f64>> {
    guard("siftErrorsByIntensity", || {
        let n = intensity.len();
        let ka = bits_from(&a, n, "a")?;
        let kb = bits_from(&b, n, "b")?;
        let e = sift::errors_by_intensity(&ka, &kb, &intensity).map_err(core_err)?;
        Ok(e.iter().map(|&v| v as f64).collect())
    })
}

// ---------------------------------------------------------------- estimation and block

#[napi(object)]
pub struct EstimateInputJs {
    /// [mu, nu, omega] mean photon numbers.
    pub mu: Vec<f64>,
    /// Probabilities of each intensity.
    pub p_mu: Vec<f64>,
    pub n_z: Vec<f64>,
    pub n_x: Vec<f64>,
    pub m_x: Vec<f64>,
    pub eps_sec: f64,
    pub eps_cor: f64,
    pub qber_abort: f64,
    /// The finite-key analysis: "chernoff2020" (default: signal + two decoys, multiplicative
    /// Chernoff bounds and a KL sampling bound for the phase error), "lim2014" (the same protocol
    /// with Hoeffding bounds, KL phase error), "rusca2018" (signal + one decoy; the third
    /// intensity has probability 0 and no counts), or "lim2014-paper-gamma" /
    /// "rusca2018-paper-gamma" (the papers' approximate γ: not ε-secure, for reproducing them).
    pub protocol: Option<String>,
    /// Z errors per intensity (after reconciliation); required by "rusca2018", ignored otherwise.
    pub m_z: Option<Vec<f64>>,
}

#[napi(object)]
pub struct BoundsJs {
    pub s_z0: f64,
    pub s_z1: f64,
    pub s_x0: f64,
    pub s_x1: f64,
    pub v_x1: f64,
    pub phi_z: f64,
    pub qber_x: f64,
    pub qber_x_by_intensity: Vec<f64>,
    pub n_z_total: f64,
}

fn three(v: &[f64], what: &str) -> Result<[f64; 3]> {
    v.try_into().map_err(|_| bad("PE_BAD_INPUT", format!("{what} must have 3 entries [mu, nu, omega]")))
}
fn three_counts(v: &[f64], what: &str) -> Result<[u64; 3]> {
    let a = three(v, what)?;
    Ok([count_of(a[0], what)? as u64, count_of(a[1], what)? as u64, count_of(a[2], what)? as u64])
}

fn est_in(i: &EstimateInputJs) -> Result<EstimateInput> {
    Ok(EstimateInput {
        mu: three(&i.mu, "mu")?,
        p_mu: three(&i.p_mu, "pMu")?,
        n_z: three_counts(&i.n_z, "nZ")?,
        n_x: three_counts(&i.n_x, "nX")?,
        m_x: three_counts(&i.m_x, "mX")?,
        eps_sec: i.eps_sec,
        eps_cor: i.eps_cor,
        qber_abort: i.qber_abort,
        protocol: match i.protocol.as_deref() {
            None => Protocol::default(),
            Some(name) => Protocol::from_name(name).ok_or_else(|| bad("PE_BAD_INPUT",
                format!("finite-key analysis {name:?}: use \"chernoff2020\" (the default), \"lim2014\" or \"rusca2018\" \
                         (\"lim2014-paper-gamma\", \"rusca2018-paper-gamma\": the papers' approximate phase error, for reproducing them)")))?,
        },
        m_z: match (&i.m_z, i.protocol.as_deref()) {
            (Some(v), _) => three_counts(v, "mZ")?,
            (None, Some("rusca2018" | "rusca2018-paper-gamma")) => return Err(bad("PE_BAD_INPUT", "the one-decoy bound needs mZ, the Z errors per intensity after reconciliation")),
            (None, _) => [0; 3],
        },
    })
}

fn bounds_js(b: &Bounds) -> BoundsJs {
    BoundsJs {
        s_z0: b.s_z0,
        s_z1: b.s_z1,
        s_x0: b.s_x0,
        s_x1: b.s_x1,
        v_x1: b.v_x1,
        phi_z: b.phi_z,
        qber_x: b.qber_x,
        qber_x_by_intensity: b.qber_x_by_intensity.to_vec(),
        n_z_total: b.n_z_total as f64,
    }
}

/// Decoy-state bounds (the selected analysis) without the abort decision; PE_IMPOSSIBLE_COUNTS
/// when the counts contradict the configured intensities/probabilities.
#[napi(catch_unwind)]
pub fn estimate_bounds(input: EstimateInputJs) -> Result<BoundsJs> {
    guard("estimateBounds", || {
        let b = finite_key::bounds(&est_in(&input)?).map_err(core_err)?;
        Ok(bounds_js(&b))
    })
}

#[napi(object)]
pub struct BlockInputJs {
    pub estimate: EstimateInputJs,
    pub leak_ec_bits: f64,
    pub verify_tag_bits: u32,
    pub auth_bits_consumed: f64,
    /// Z bits of frames discarded after decoding (the estimate's counts include them).
    pub dropped_z_bits: Option<f64>,
}

#[napi(object)]
pub struct SecurityStatementJs {
    /// Finite-key analysis used ("chernoff2020", "lim2014", "rusca2018", or a "*-paper-gamma"
    /// variant, whose reference starts with "APPROXIMATE") and its reference.
    pub analysis: String,
    pub analysis_reference: String,
    pub eps_sec: f64,
    pub eps_cor: f64,
    /// ε_sec = epsSplit · epsEstimate (each statistical estimate fails with ≤ epsEstimate).
    pub eps_split: f64,
    pub eps_estimate: f64,
    pub n: f64,
    pub bounds: BoundsJs,
    pub leak_ec_bits: f64,
    pub verify_tag_bits: u32,
    pub dropped_z_bits: f64,
    pub lambda_ec: f64,
    pub verify_collision: f64,
    pub ell_raw: f64,
    pub ell: f64,
    pub auth_bits_consumed: f64,
    pub replenish_bits: f64,
    pub deliverable_bits: f64,
    pub net_loss: f64,
}

fn statement_js(s: &SecurityStatement) -> SecurityStatementJs {
    SecurityStatementJs {
        analysis: s.analysis.to_string(),
        analysis_reference: s.analysis_reference.to_string(),
        eps_sec: s.eps_sec,
        eps_cor: s.eps_cor,
        eps_split: s.eps_split,
        eps_estimate: s.eps_estimate,
        n: s.n as f64,
        bounds: bounds_js(&s.bounds),
        leak_ec_bits: s.leak_ec_bits as f64,
        verify_tag_bits: s.verify_tag_bits,
        dropped_z_bits: s.dropped_z_bits as f64,
        lambda_ec: s.lambda_ec as f64,
        verify_collision: s.verify_collision,
        ell_raw: s.ell_raw,
        ell: s.ell as f64,
        auth_bits_consumed: s.auth_bits_consumed as f64,
        replenish_bits: s.replenish_bits as f64,
        deliverable_bits: s.deliverable_bits as f64,
        net_loss: s.net_loss as f64,
    }
}

/// Bounds + abort rule + finite-key length + auth accounting. Throws PE_ABORT_* with the reason.
#[napi(catch_unwind)]
pub fn plan_block(input: BlockInputJs) -> Result<SecurityStatementJs> {
    guard("planBlock", || {
        let bi = BlockInput {
            estimate: est_in(&input.estimate)?,
            leak_ec_bits: count_of(input.leak_ec_bits, "leakEcBits")? as u64,
            verify_tag_bits: input.verify_tag_bits,
            auth_bits_consumed: count_of(input.auth_bits_consumed, "authBitsConsumed")? as u64,
            dropped_z_bits: count_of(input.dropped_z_bits.unwrap_or(0.0), "droppedZBits")? as u64,
        };
        Ok(statement_js(&block::plan(&bi).map_err(core_err)?))
    })
}

/// Binary entropy h(p) (for the facade's asymptotic comparisons).
#[napi]
pub fn binary_entropy(p: f64) -> f64 {
    finite_key::h2(p)
}

// ---------------------------------------------------------------- verification

/// Tag length t so that the collision probability (L+1)/2^t ≤ epsCor (L = ceil(n/128)).
#[napi(catch_unwind)]
pub fn verify_tag_bits(n_bits: f64, eps_cor: f64) -> Result<u32> {
    guard("verifyTagBits", || {
        let n = count_of(n_bits, "nBits")?;
        if !(eps_cor > 0.0 && eps_cor < 1.0) {
            return Err(bad("VERIFY_BAD_EPSILON", "epsCor must be in (0, 1)"));
        }
        Ok(verify::tag_bits(n, eps_cor))
    })
}

#[napi]
pub fn verify_collision_probability(n_bits: f64, tag_bits: u32) -> f64 {
    verify::collision_probability(n_bits.max(0.0) as usize, tag_bits)
}

/// t-bit tag of `key` (`keyBits` bits) under the 16-byte hash key `hashKey` (fresh random per
/// block, drawn by the verifying side after reconciliation). Returns ceil(t/8) bytes: the tag as
/// a right-aligned little-endian integer.
#[napi(catch_unwind)]
pub fn verify_tag(key: Uint8Array, key_bits: f64, hash_key: Uint8Array, tag_bits: u32) -> Result<Buffer> {
    guard("verifyTag", || {
        let n = count_of(key_bits, "keyBits")?;
        let kb = bits_from(&key, n, "key")?;
        let hk: [u8; 16] = hash_key.as_ref().try_into()
            .map_err(|_| bad("CORE_BAD_ARG", "hashKey must be exactly 16 random bytes"))?;
        if tag_bits == 0 || tag_bits > 128 {
            return Err(bad("CORE_BAD_ARG", "tagBits must be in 1..=128"));
        }
        let t = verify::tag(&kb, u128::from_le_bytes(hk), tag_bits);
        let mut v = t.to_le_bytes().to_vec();
        v.truncate((tag_bits as usize).div_ceil(8));
        Ok(v.into())
    })
}

/// Forces (or releases) the portable carry-less multiply in verification (tests/benchmarks).
/// Forces the portable bit compression in sifting (tests compare it with the BMI2 path).
#[napi]
pub fn sift_force_portable(on: bool) {
    sift::set_force_portable(on);
}

/// True when sifting uses BMI2 `pext` (present and not microcoded on this CPU).
#[napi]
pub fn sift_fast_pext() -> bool {
    sift::fast_pext()
}

#[napi]
pub fn core_force_portable_clmul(on: bool) {
    qkd_core::clmul::set_force_portable(on);
}

#[napi]
pub fn core_hardware_clmul() -> bool {
    qkd_core::clmul::hardware_available()
}

// ---------------------------------------------------------------- privacy amplification

#[napi(object)]
pub struct ToeplitzOptionsJs {
    /// "auto" (default: cost model), "karatsuba" or "fft".
    pub algorithm: Option<String>,
    pub base_words: Option<u32>,
    pub parallel_words: Option<u32>,
    pub portable: Option<bool>,
    /// Use the slow reference (word-parallel definition) instead: tests and benchmark baselines.
    pub reference: Option<bool>,
}

fn opts(o: &Option<ToeplitzOptionsJs>) -> Result<(toeplitz::Options, bool)> {
    let mut out = toeplitz::Options::default();
    let mut reference = false;
    if let Some(o) = o {
        out.algorithm = match o.algorithm.as_deref() {
            None | Some("auto") => toeplitz::Algorithm::Auto,
            Some("karatsuba") => toeplitz::Algorithm::Karatsuba,
            Some("fft") => toeplitz::Algorithm::Fft,
            Some(a) => return Err(bad("CORE_BAD_ARG", format!("algorithm '{a}': use auto, karatsuba or fft"))),
        };
        if let Some(b) = o.base_words {
            out.base_words = (b as usize).clamp(1, 64);
        }
        if let Some(p) = o.parallel_words {
            out.parallel_words = if p == 0 { usize::MAX } else { p as usize };
        }
        out.portable = o.portable.unwrap_or(false);
        reference = o.reference.unwrap_or(false);
    }
    Ok((out, reference))
}

fn pa_inputs(key: &[u8], key_bits: f64, seed: &[u8], out_bits: f64) -> Result<(KeyBits, KeyBits, usize)> {
    let n = count_of(key_bits, "keyBits")?;
    let l = count_of(out_bits, "outBits")?;
    let x = bits_from(key, n, "key")?;
    let tn = (n + l).saturating_sub(1);
    if l > 0 && seed.len() * 8 < tn {
        return Err(bad("PA_BAD_SEED", format!("seed has {} bytes; need ceil((n + l - 1)/8) = {}", seed.len(), tn.div_ceil(8))));
    }
    let t = KeyBits::from_bytes(seed, if l > 0 { tn } else { 0 });
    Ok((x, t, l))
}

fn run_pa(x: &KeyBits, t: &KeyBits, l: usize, o: &toeplitz::Options, reference: bool) -> Result<Buffer> {
    let y = if reference {
        toeplitz::toeplitz_hash_reference(x, t, l)
    } else {
        toeplitz::toeplitz_hash_with(x, t, l, o)
    }
    .map_err(core_err)?;
    Ok(y.to_bytes().into())
}

/// The algorithm `toeplitzHash` uses for these lengths and options: "karatsuba", "fft" or
/// "reference" (benchmarks report it).
#[napi]
pub fn toeplitz_algorithm(key_bits: f64, out_bits: f64, options: Option<ToeplitzOptionsJs>) -> Result<String> {
    let (n, l) = (count_of(key_bits, "keyBits")?, count_of(out_bits, "outBits")?);
    let (o, reference) = opts(&options)?;
    Ok(match (reference, toeplitz::chosen_algorithm(n, l, &o)) {
        (true, _) => "reference",
        (false, toeplitz::Algorithm::Fft) => "fft",
        _ => "karatsuba",
    }
    .into())
}

/// Toeplitz hash on the JS thread (small blocks, tests). `seed`: n + l − 1 random bits.
#[napi(catch_unwind)]
pub fn toeplitz_hash_sync(key: Uint8Array, key_bits: f64, seed: Uint8Array, out_bits: f64, options: Option<ToeplitzOptionsJs>) -> Result<Buffer> {
    guard("toeplitzHashSync", || {
        let (x, t, l) = pa_inputs(&key, key_bits, &seed, out_bits)?;
        let (o, r) = opts(&options)?;
        run_pa(&x, &t, l, &o, r)
    })
}

pub struct ToeplitzTask {
    x: KeyBits,
    t: KeyBits,
    l: usize,
    o: toeplitz::Options,
    reference: bool,
}

impl Task for ToeplitzTask {
    type Output = KeyBits;
    type JsValue = Buffer;
    fn compute(&mut self) -> Result<KeyBits> {
        let (x, t, l, o, r) = (&self.x, &self.t, self.l, self.o, self.reference);
        match catch_unwind(AssertUnwindSafe(|| {
            if r { toeplitz::toeplitz_hash_reference(x, t, l) } else { toeplitz::toeplitz_hash_with(x, t, l, &o) }
        })) {
            Ok(r) => r.map_err(core_err),
            Err(_) => Err(Error::new(Status::GenericFailure, "CORE_PANIC: internal error in toeplitzHash")),
        }
    }
    fn resolve(&mut self, _env: Env, out: KeyBits) -> Result<Buffer> {
        Ok(out.to_bytes().into())
    }
}

/// Toeplitz hash off the JS thread (libuv pool + rayon). The inputs are copied into zeroising
/// Rust buffers before this returns, so the caller may wipe its arrays right away.
#[napi(catch_unwind)]
pub fn toeplitz_hash(key: Uint8Array, key_bits: f64, seed: Uint8Array, out_bits: f64, options: Option<ToeplitzOptionsJs>) -> Result<AsyncTask<ToeplitzTask>> {
    let (x, t, l) = pa_inputs(&key, key_bits, &seed, out_bits)?;
    let (o, reference) = opts(&options)?;
    Ok(AsyncTask::new(ToeplitzTask { x, t, l, o, reference }))
}

/// The emulated photon source's random-number generator (qkd_core::emulated_choice: ChaCha20 with
/// random access by pulse index). The 256-bit key is copied into zeroising Rust memory when the
/// object is made and never handed back: JS can ask for choices, not for the key.
#[napi]
pub struct SourceRng {
    key: std::sync::Arc<qkd_core::emulated_choice::ChoiceKey>,
    th: qkd_core::emulated_choice::ChoiceThresholds,
}

fn threshold(x: f64, what: &str) -> Result<u64> {
    if !(x >= 0.0 && x <= 4_294_967_296.0 && x.fract() == 0.0) {
        return Err(bad("CORE_BAD_ARG", format!("threshold {what} must be an integer in [0, 2^32]; got {x}")));
    }
    Ok(x as u64)
}

pub struct SourceChoicesTask {
    key: std::sync::Arc<qkd_core::emulated_choice::ChoiceKey>,
    th: qkd_core::emulated_choice::ChoiceThresholds,
    pulses: Vec<f64>,
}

impl Task for SourceChoicesTask {
    type Output = Vec<u8>;
    type JsValue = Buffer;
    fn compute(&mut self) -> Result<Vec<u8>> {
        match catch_unwind(AssertUnwindSafe(|| qkd_core::emulated_choice::alice_choices_at(&self.key, self.th, &self.pulses))) {
            Ok(r) => r.map_err(core_err),
            Err(_) => Err(Error::new(Status::GenericFailure, "CORE_PANIC: internal error in SourceRng.choicesAtAsync")),
        }
    }
    fn resolve(&mut self, _env: Env, out: Vec<u8>) -> Result<Buffer> {
        Ok(out.into())
    }
}

#[napi]
impl SourceRng {
    /// `key`: 32 bytes (the caller draws them from the OS CSPRNG and wipes its copy right after);
    /// thresholds as in `aliceThresholds` (each an integer in [0, 2^32]).
    #[napi(constructor)]
    pub fn new(key: Uint8Array, basis_z: f64, signal: f64, decoy: f64) -> Result<SourceRng> {
        use qkd_core::emulated_choice::{ChoiceKey, ChoiceThresholds};
        let th = ChoiceThresholds { basis_z: threshold(basis_z, "basisZ")?, signal: threshold(signal, "signal")?, decoy: threshold(decoy, "decoy")? };
        Ok(SourceRng { key: std::sync::Arc::new(ChoiceKey::new(&key).map_err(core_err)?), th })
    }

    /// Packed choice bytes (bit | basis << 1 | intensity << 2) at the listed pulses.
    #[napi]
    pub fn choices_at(&self, pulses: Float64Array) -> Result<Buffer> {
        guard("SourceRng.choicesAt", || Ok(qkd_core::emulated_choice::alice_choices_at(&self.key, self.th, &pulses).map_err(core_err)?.into()))
    }

    /// The same off the JS thread (libuv pool + rayon); the pulses are copied first.
    #[napi]
    pub fn choices_at_async(&self, pulses: Float64Array) -> AsyncTask<SourceChoicesTask> {
        AsyncTask::new(SourceChoicesTask { key: self.key.clone(), th: self.th, pulses: pulses.to_vec() })
    }

    /// Choice bytes of the pulses [first, first + count).
    #[napi]
    pub fn choices_range(&self, first: f64, count: f64) -> Result<Buffer> {
        guard("SourceRng.choicesRange", || {
            let f = count_of(first, "first")? as u64;
            let n = count_of(count, "count")?;
            Ok(qkd_core::emulated_choice::alice_choices_range(&self.key, self.th, f, n).map_err(core_err)?.into())
        })
    }
}

/// One ChaCha20 block (RFC 8439 §2.3), for the known-answer tests of the TypeScript reference.
#[napi]
pub fn chacha20_block(key: Uint8Array, counter: u32, nonce: Uint8Array) -> Result<Buffer> {
    let k: [u8; 32] = key.as_ref().try_into().map_err(|_| bad("CORE_BAD_ARG", "key must be 32 bytes"))?;
    let n: [u8; 12] = nonce.as_ref().try_into().map_err(|_| bad("CORE_BAD_ARG", "nonce must be 12 bytes"))?;
    let mut out = [0u8; 64];
    qkd_core::emulated_choice::chacha20_block(&k, counter, &n, &mut out);
    Ok(out.to_vec().into())
}
