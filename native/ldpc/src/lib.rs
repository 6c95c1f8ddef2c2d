//! qkd-ldpc: rate-adaptive LDPC error reconciliation for QKD (one-way, syndrome based).
//!
//! Alice sends the m-bit syndrome of her frame under a shipped mother code (family.rs), adapted
//! to the measured QBER by puncturing and shortening; Bob decodes his noisy frame with the syndrome
//! as side information (decoder.rs: layered sum-product, 8-bit fixed-point messages, frames in SIMD
//! lanes, batches in parallel on rayon). A failed decode is a result (best guess, iterations,
//! `converged = false`); Bob may then ask for a blind retry, where Alice reveals the next r bits
//! of the frame's reveal order (punctured fill first). Every disclosed bit is counted:
//! leak = m − p + r (see code.rs for why m − p is a bound, not an estimate).
//!
//! Bits are packed LSB first: bit i of a buffer is `(buf[i >> 3] >> (i & 7)) & 1`; unused high
//! bits of the last byte are ignored on input and zero on output.
//!
//! Key material (frames, fills, decoder state derived from them) lives in `Zeroizing` buffers.

pub mod code;
pub mod de;
pub mod decoder;
pub mod family;
pub mod qc;
pub mod reference;
pub mod rng;

use code::Code;
use decoder::{Kernel, LaneOutcome};
use family::{check_params, FrameParams, Layout, KEY, PUNCT, SHORT};
use rayon::prelude::*;
use zeroize::Zeroizing;

pub use family::{choose, choose_blind, h2, BlindPlan, CodeId};

/// Error with a stable code string the TypeScript facade maps to its error classes. Messages
/// carry lengths and parameters only, never bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdpcError {
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for LdpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
impl std::error::Error for LdpcError {}

fn bad_params(e: family::ParamError) -> LdpcError {
    LdpcError { code: "LDPC_BAD_PARAMS", message: format!("{e}; use the parameters chooseCode returned") }
}

fn need_len(what: &str, got: usize, bits: usize) -> Result<(), LdpcError> {
    let want = bits.div_ceil(8);
    if got != want {
        return Err(LdpcError {
            code: "LDPC_BAD_LENGTH",
            message: format!("{what} must be {want} bytes ({bits} bits packed LSB first), got {got} bytes"),
        });
    }
    Ok(())
}

#[inline]
pub fn get_bit(buf: &[u8], i: usize) -> u8 {
    (buf[i >> 3] >> (i & 7)) & 1
}

pub fn pack_bits(bits: impl Iterator<Item = u8>, nbits: usize) -> Vec<u8> {
    let mut out = vec![0u8; nbits.div_ceil(8)];
    for (i, b) in bits.enumerate().take(nbits) {
        out[i >> 3] |= (b & 1) << (i & 7);
    }
    out
}

/// Alice's full mother word (one byte per bit), zeroised on drop.
fn alice_word(code: &Code, lay: &Layout, key: &[u8], fill: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut w = Zeroizing::new(vec![0u8; code.n]);
    for (i, &v) in lay.key_pos.iter().enumerate() {
        w[v as usize] = get_bit(key, i);
    }
    for (j, &v) in lay.punct_pos.iter().enumerate() {
        w[v as usize] = get_bit(fill, j);
    }
    w
}

/// Alice: syndrome (m bits, packed) of `key` (k bits) with punctured positions filled from `fill`
/// (p bits, which must be fresh secret randomness, used once, and kept for blind retries).
pub fn encode(fp: &FrameParams, key: &[u8], fill: &[u8]) -> Result<Vec<u8>, LdpcError> {
    let code = check_params(fp).map_err(bad_params)?;
    let lay = family::layout_shared(&code, fp).map_err(bad_params)?;
    need_len("frame", key.len(), fp.key_bits())?;
    need_len("puncturing fill", fill.len(), fp.punctured)?;
    let w = alice_word(&code, &lay, key, fill);
    let mut s = vec![0u8; code.m.div_ceil(8)];
    for c in 0..code.m {
        let mut acc = 0u8;
        for &v in code.row(c) {
            acc ^= w[v as usize];
        }
        s[c >> 3] |= acc << (c & 7);
    }
    Ok(s)
}

/// Alice, on a blind retry: the values at reveal positions `from .. from + count` (packed).
pub fn reveal(fp: &FrameParams, key: &[u8], fill: &[u8], from: usize, count: usize) -> Result<Vec<u8>, LdpcError> {
    let code = check_params(fp).map_err(bad_params)?;
    let lay = family::layout_shared(&code, fp).map_err(bad_params)?;
    need_len("frame", key.len(), fp.key_bits())?;
    need_len("puncturing fill", fill.len(), fp.punctured)?;
    if from + count > lay.reveal_order.len() {
        return Err(LdpcError {
            code: "LDPC_REVEAL_EXHAUSTED",
            message: format!(
                "cannot reveal positions {from}..{} of a frame with {} revealable positions; discard the frame",
                from + count,
                lay.reveal_order.len()
            ),
        });
    }
    let w = alice_word(&code, &lay, key, fill);
    Ok(pack_bits(lay.reveal_order[from..from + count].iter().map(|&v| w[v as usize]), count))
}

#[derive(Clone, Copy, Debug)]
pub struct DecodeOptions {
    pub max_iter: u32,
    pub kernel: Kernel,
    /// Early give-up of stalled frames (`decoder::Stall`); `None` = the iteration budget only.
    pub stall: Option<decoder::Stall>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { max_iter: 60, kernel: Kernel::Auto, stall: None }
    }
}

impl DecodeOptions {
    fn limits(&self) -> decoder::Limits {
        decoder::Limits { max_iter: self.max_iter, stall: self.stall }
    }
}

/// Bob's result for one frame.
pub struct FrameResult {
    /// Corrected key bits (k bits packed); Bob's best guess when `converged` is false.
    pub corrected: Zeroizing<Vec<u8>>,
    pub converged: bool,
    pub iterations: u32,
    /// Bits disclosed for this frame so far: m − p + revealed.
    pub leak_bits: usize,
    /// Bob's estimate of Alice's punctured fill (p bits packed): with `corrected` it reproduces
    /// Alice's syndrome when `converged`. Secret like the key; not sent anywhere.
    pub fill_guess: Zeroizing<Vec<u8>>,
}

/// Debug shows outcome and sizes only: never key bits.
impl std::fmt::Debug for FrameResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameResult")
            .field("converged", &self.converged)
            .field("iterations", &self.iterations)
            .field("leak_bits", &self.leak_bits)
            .field("corrected_bytes", &self.corrected.len())
            .finish()
    }
}

/// One frame for Bob: his noisy key bits, Alice's syndrome, and the values revealed so far
/// (`revealed_count` bits of the reveal order, packed; empty when none).
pub struct BobFrame<'a> {
    pub frame: &'a [u8],
    pub syndrome: &'a [u8],
    pub revealed: &'a [u8],
}

/// Decoder units per nat of channel LLR. With the box-plus decoder (2^16, 96 frames per point),
/// scales 6 / 8 / 12 / 16 gave FER 23 / 20 / 17 / 31 of 96 at QBER 2 %, f = 1.13, and 15 / 13 / 13 /
/// 43 at QBER 3 %, f = 1.15: finer steps help the correction term until 8-bit messages saturate
/// too early (127 units = 10.6 nats at 12, 7.9 at 16). `decoder::boxplus` hard-codes its
/// correction for this scale.
pub const LLR_SCALE: f64 = 12.0;

/// Channel LLR magnitude in decoder units (1/LLR_SCALE nat), for crossover probability q.
pub fn quantised_llr(qber: f64) -> i8 {
    let q = qber.clamp(1e-6, 0.499);
    ((LLR_SCALE * ((1.0 - q) / q).ln()).round() as i32).clamp(1, 100) as i8
}

fn validate(fp: &FrameParams, frames: &[BobFrame<'_>], revealed_count: usize, qber: f64) -> Result<(), LdpcError> {
    if !(qber > 0.0 && qber < 0.5) {
        return Err(LdpcError {
            code: "LDPC_BAD_QBER",
            message: format!("qber must be in (0, 0.5), got {qber}; pass the measured error rate as a fraction"),
        });
    }
    let revealable = fp.n() - fp.shortened;
    if revealed_count > revealable {
        return Err(LdpcError {
            code: "LDPC_REVEAL_EXHAUSTED",
            message: format!("revealed count {revealed_count} exceeds the {revealable} revealable positions"),
        });
    }
    for f in frames {
        need_len("frame", f.frame.len(), fp.key_bits())?;
        need_len("syndrome", f.syndrome.len(), fp.syndrome_bits())?;
        need_len("revealed bits", f.revealed.len(), revealed_count)?;
    }
    Ok(())
}

/// Bob: decodes many frames (same parameters, same number of revealed bits) concurrently: one
/// W-lane SIMD engine per rayon thread; each refills a lane as soon as its frame is done, with
/// the next frame of a counter the engines share.
pub fn decode_batch(
    fp: &FrameParams,
    qber: f64,
    frames: &[BobFrame<'_>],
    revealed_count: usize,
    opts: DecodeOptions,
) -> Result<Vec<FrameResult>, LdpcError> {
    decode_batch_in(fp, qber, frames, revealed_count, opts, None)
}

/// A frame's decoder state after a decode that did not converge: its check-to-variable messages
/// (one i8 per edge of the mother code's H). Derived from Bob's key: zeroised on drop, never
/// sent. Valid only for the same frame, syndrome and parameters.
pub struct WarmState {
    params: FrameParams,
    msgs: Zeroizing<Vec<i8>>,
}

impl std::fmt::Debug for WarmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmState").field("params", &self.params).field("edges", &self.msgs.len()).finish()
    }
}

impl WarmState {
    /// Bytes held (one per edge).
    pub fn bytes(&self) -> usize {
        self.msgs.len()
    }
}

/// `decode_batch` with warm start (blind retries; Martinez-Mateo, Elkouss, Martin 2012 re-run
/// belief propagation from scratch each round, this resumes it). `states[i]` belongs to
/// `frames[i]`: when it holds the state of an earlier decode of the same frame (same syndrome,
/// same parameters, fewer revealed bits), belief propagation resumes from its messages with the
/// positions revealed since then frozen to their values; when `None`, the frame starts cold.
/// On return `states[i]` holds the frame's new state if it did not converge, else `None`.
/// What is disclosed does not change (the caller reveals the same bits as with `decode_batch`);
/// only how many rounds a frame needs may. Not bit-identical to `decode_batch` for resumed
/// frames (that is the point); frames without a state decode exactly as in `decode_batch`.
pub fn decode_batch_warm(
    fp: &FrameParams,
    qber: f64,
    frames: &[BobFrame<'_>],
    revealed_count: usize,
    opts: DecodeOptions,
    states: &mut [Option<WarmState>],
) -> Result<Vec<FrameResult>, LdpcError> {
    if states.len() != frames.len() {
        return Err(LdpcError {
            code: "LDPC_BAD_LENGTH",
            message: format!("{} warm states for {} frames; pass one (or None) per frame", states.len(), frames.len()),
        });
    }
    let code = check_params(fp).map_err(bad_params)?;
    for s in states.iter().flatten() {
        if s.params != *fp || s.msgs.len() != code.edges() {
            return Err(LdpcError {
                code: "LDPC_BAD_PARAMS",
                message: "a warm state was saved under other frame parameters; start that frame cold (None)".to_string(),
            });
        }
    }
    let cells: Vec<std::sync::Mutex<Option<WarmState>>> = states.iter_mut().map(|s| std::sync::Mutex::new(s.take())).collect();
    let res = decode_batch_in(fp, qber, frames, revealed_count, opts, Some(&cells));
    for (s, c) in states.iter_mut().zip(cells) {
        *s = c.into_inner().unwrap_or_else(|e| e.into_inner());
    }
    res
}

fn decode_batch_in(
    fp: &FrameParams,
    qber: f64,
    frames: &[BobFrame<'_>],
    revealed_count: usize,
    opts: DecodeOptions,
    warm: Option<&[std::sync::Mutex<Option<WarmState>>]>,
) -> Result<Vec<FrameResult>, LdpcError> {
    let code = check_params(fp).map_err(bad_params)?;
    validate(fp, frames, revealed_count, qber)?;
    let lay = family::layout_shared(&code, fp).map_err(bad_params)?;
    let mut src = Src::new(&code, &lay, quantised_llr(qber), revealed_count, fp, frames);
    src.warm = warm;
    let nf = frames.len();
    // No more engines than give each at least 16 frames (two per lane of an 8-lane engine): an
    // engine has at least 8 lanes and a pass costs the same however many of them hold a frame,
    // so two engines with 4 frames each take as long as one with 8 and twice the CPU (blind
    // retries decode a few frames at a time); and an engine with no frame left to refill its
    // lanes runs on at the occupancy of its slowest frames. The node's blocks hold 10–20 frames
    // of 2^18: with one engine per 8 frames the first pass ran two engines of ≈ 8 frames each
    // (4.6 busy lanes of 8 per pass over a block's rounds); one engine refilling its 8 lanes
    // from all 15 runs 5.0–5.4 busy lanes per pass, ≈ 15 % fewer passes, and one 13 MB working
    // set in the shared L3 instead of two: −15 to −24 % CPU per block (`examples/node_path.rs`,
    // QBER 2 and 3.3 %, bit-identical results), at the price of wall time on an idle second core.
    // At least one engine.
    let engines = rayon::current_num_threads().max(1).min(nf / 16).max(1);
    let per = nf.div_ceil(engines.max(1)).max(1);
    // Lane width: as wide as possible while one engine's working set (8-bit messages per edge,
    // 16-bit posteriors per position, per lane) stays within ~8 MiB, and never below 16 lanes
    // (8 lanes of u8 arithmetic waste most of a vector register). CPU time for 128 frames of the
    // 2^16 rate-0.85 code at QBER 2 %: 8 / 16 / 32 / 64 lanes 1.18 / 0.68 / 0.78 / 0.85 s; 512
    // frames of 2^14: 8 / 16 / 32 lanes 0.66 / 0.36 / 0.33 s. Never wider than an engine's share
    // of the frames (an empty lane costs as much as a full one).
    let bytes_per_lane = code.edges() + 2 * code.n;
    let wmax = [64usize, 32, 16].into_iter().find(|&w| w * bytes_per_lane <= 8 << 20).unwrap_or(16);
    let w = [64usize, 32, 16, 8].into_iter().find(|&w| w <= wmax && w <= per).unwrap_or(8);
    // One engine per thread; each takes the next frame from a shared counter whenever a lane is
    // free, so an engine whose frames need more iterations does not leave the other core idle
    // (with one fixed chunk per thread, the chunk holding a 60-iteration failure ran on alone).
    let next = std::sync::atomic::AtomicUsize::new(0);
    (0..engines).into_par_iter().for_each(|_| {
        let feed = || decoder::Frames::Shared { next: &next, end: nf };
        match w {
            64 => decoder::decode_from::<64>(&code, &src.frozen, &src, feed(), per, opts.limits(), opts.kernel),
            32 => decoder::decode_from::<32>(&code, &src.frozen, &src, feed(), per, opts.limits(), opts.kernel),
            16 => decoder::decode_from::<16>(&code, &src.frozen, &src, feed(), per, opts.limits(), opts.kernel),
            _ => decoder::decode_from::<8>(&code, &src.frozen, &src, feed(), per, opts.limits(), opts.kernel),
        }
    });
    Ok(src.finish())
}

/// Decodes on the calling thread with an explicit lane width (tests use it to show a frame's
/// result does not depend on its batch, lane, or lane refills).
pub fn decode_batch_width<const W: usize>(
    fp: &FrameParams,
    qber: f64,
    frames: &[BobFrame<'_>],
    revealed_count: usize,
    opts: DecodeOptions,
) -> Result<Vec<FrameResult>, LdpcError> {
    let code = check_params(fp).map_err(bad_params)?;
    validate(fp, frames, revealed_count, qber)?;
    let lay = family::layout_shared(&code, fp).map_err(bad_params)?;
    let src = Src::new(&code, &lay, quantised_llr(qber), revealed_count, fp, frames);
    decoder::decode_frames::<W>(&code, &src.frozen, &src, 0..frames.len(), opts.limits(), opts.kernel);
    Ok(src.finish())
}

/// Feeds Bob's frames to the decoder engine and collects the results.
struct Src<'a> {
    lay: &'a Layout,
    ch: i8,
    revealed_count: usize,
    fp: &'a FrameParams,
    frames: &'a [BobFrame<'a>],
    /// Initial posteriors common to all frames: +127 at shortened positions, 0 elsewhere.
    base: Vec<i8>,
    frozen: Vec<bool>,
    m: usize,
    out: Vec<std::sync::Mutex<Option<FrameResult>>>,
    /// Warm start: one cell per frame, read at refill, written for frames that fail.
    warm: Option<&'a [std::sync::Mutex<Option<WarmState>>]>,
}

impl<'a> Src<'a> {
    fn new(code: &Code, lay: &'a Layout, ch: i8, revealed_count: usize, fp: &'a FrameParams, frames: &'a [BobFrame<'a>]) -> Self {
        let mut base = vec![0i8; code.n];
        let mut frozen = vec![false; code.n];
        for v in 0..code.n {
            if lay.kind[v] == SHORT {
                frozen[v] = true;
                base[v] = decoder::MAXV;
            }
        }
        for &v in &lay.reveal_order[..revealed_count] {
            frozen[v as usize] = true;
        }
        let out = (0..frames.len()).map(|_| std::sync::Mutex::new(None)).collect();
        Src { lay, ch, revealed_count, fp, frames, base, frozen, m: code.m, out, warm: None }
    }

    fn finish(self) -> Vec<FrameResult> {
        self.out
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()).expect("every frame is emitted exactly once"))
            .collect()
    }
}

impl decoder::FrameSource for Src<'_> {
    fn frames(&self) -> usize {
        self.frames.len()
    }
    fn init(&self, i: usize, llr: &mut [i8], synd: &mut [i8]) {
        let f = &self.frames[i];
        llr.copy_from_slice(&self.base);
        // A byte of the frame at a time: ±ch by the bit, without a branch ((x ^ m) − m negates
        // x where m = −1).
        let k = self.lay.key_pos.len();
        for (pos, &byte) in self.lay.key_pos.chunks(8).zip(f.frame.iter()) {
            for (j, &v) in pos.iter().enumerate() {
                let m = -(((byte >> j) & 1) as i8);
                llr[v as usize] = (self.ch ^ m).wrapping_sub(m);
            }
        }
        debug_assert_eq!(f.frame.len(), k.div_ceil(8));
        for (pos, &byte) in self.lay.reveal_order[..self.revealed_count].chunks(8).zip(f.revealed.iter()) {
            for (j, &v) in pos.iter().enumerate() {
                let m = -(((byte >> j) & 1) as i8);
                llr[v as usize] = (decoder::MAXV ^ m).wrapping_sub(m);
            }
        }
        for (s8, &byte) in synd[..self.m].chunks_mut(8).zip(f.syndrome.iter()) {
            for (j, s) in s8.iter_mut().enumerate() {
                *s = -(((byte >> j) & 1) as i8);
            }
        }
    }
    fn keeps_state(&self) -> bool {
        self.warm.is_some()
    }
    fn warm(&self, i: usize, msgs: &mut [i8]) -> bool {
        let Some(cells) = self.warm else { return false };
        // Taken (and zeroised on drop): the decode that follows writes the frame's new state.
        match cells[i].lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(st) => {
                msgs.copy_from_slice(&st.msgs);
                true
            }
            None => false,
        }
    }
    fn save(&self, i: usize, msgs: &[i8]) {
        if let Some(cells) = self.warm {
            let st = WarmState { params: *self.fp, msgs: Zeroizing::new(msgs.to_vec()) };
            *cells[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(st);
        }
    }
    fn emit(&self, i: usize, bits: &[u8], o: LaneOutcome) {
        let mut corrected = Zeroizing::new(vec![0u8; self.fp.key_bits().div_ceil(8)]);
        for (j, &v) in self.lay.key_pos.iter().enumerate() {
            corrected[j >> 3] |= bits[v as usize] << (j & 7);
        }
        let mut fill_guess = Zeroizing::new(vec![0u8; self.fp.punctured.div_ceil(8)]);
        for (j, &v) in self.lay.punct_pos.iter().enumerate() {
            fill_guess[j >> 3] |= bits[v as usize] << (j & 7);
        }
        let r = FrameResult {
            corrected,
            converged: o.converged,
            iterations: o.iterations,
            leak_bits: self.fp.base_leak() + self.revealed_count,
            fill_guess,
        };
        *self.out[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    }
}

/// The reference decoder on one frame (f64 sum-product), same inputs and outputs as the fast one.
pub fn decode_reference_frame(
    fp: &FrameParams,
    qber: f64,
    frame: &BobFrame<'_>,
    revealed_count: usize,
    max_iter: u32,
) -> Result<FrameResult, LdpcError> {
    let code = check_params(fp).map_err(bad_params)?;
    validate(fp, std::slice::from_ref(frame), revealed_count, qber)?;
    let lay = family::layout_shared(&code, fp).map_err(bad_params)?;
    let ch = ((1.0 - qber) / qber).ln();
    let big = 40.0;
    let mut llr = Zeroizing::new(vec![0.0f64; code.n]);
    for v in 0..code.n {
        match lay.kind[v] {
            SHORT => llr[v] = big,
            PUNCT => llr[v] = 0.0,
            KEY => {}
            _ => unreachable!(),
        }
    }
    for (i, &v) in lay.key_pos.iter().enumerate() {
        llr[v as usize] = if get_bit(frame.frame, i) == 1 { -ch } else { ch };
    }
    for (i, &v) in lay.reveal_order[..revealed_count].iter().enumerate() {
        llr[v as usize] = if get_bit(frame.revealed, i) == 1 { -big } else { big };
    }
    let synd: Vec<u8> = (0..code.m).map(|c| get_bit(frame.syndrome, c)).collect();
    let out = reference::decode_reference(&code, &llr, &synd, max_iter);
    let bits = Zeroizing::new(out.bits);
    let corrected = Zeroizing::new(pack_bits(lay.key_pos.iter().map(|&v| bits[v as usize]), fp.key_bits()));
    let fill_guess = Zeroizing::new(pack_bits(lay.punct_pos.iter().map(|&v| bits[v as usize]), fp.punctured));
    Ok(FrameResult {
        corrected,
        converged: out.converged,
        iterations: out.iterations,
        leak_bits: fp.base_leak() + revealed_count,
        fill_guess,
    })
}

/// Alice, many frames: `keys` holds `count` packed frames back to back, `fills` the matching
/// fills; returns the syndromes back to back. Frames are encoded in parallel.
pub fn encode_batch(fp: &FrameParams, keys: &[u8], fills: &[u8], count: usize) -> Result<Vec<u8>, LdpcError> {
    let kb = fp.key_bits().div_ceil(8);
    let pb = fp.punctured.div_ceil(8);
    if keys.len() != count * kb || fills.len() != count * pb {
        return Err(LdpcError {
            code: "LDPC_BAD_LENGTH",
            message: format!(
                "expected {count} frames of {kb} bytes and {count} fills of {pb} bytes, got {} and {} bytes",
                keys.len(),
                fills.len()
            ),
        });
    }
    let parts: Result<Vec<Vec<u8>>, LdpcError> = (0..count)
        .into_par_iter()
        .map(|i| encode(fp, &keys[i * kb..(i + 1) * kb], &fills[i * pb..(i + 1) * pb]))
        .collect();
    Ok(parts?.concat())
}
