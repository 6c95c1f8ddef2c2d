//! Fast decoder: layered sum-product in fixed point (8-bit messages, 16-bit posteriors), frames
//! interleaved across SIMD lanes.
//!
//! Algorithm: layered (turbo-decoding message passing) schedule of Mansour & Shanbhag, IEEE Trans.
//! VLSI 11(6), 2003, §III. Check update: the sum-product (box-plus) rule, evaluated by a
//! forward–backward recursion over the check's edges, each box-plus with the piecewise-linear
//! correction of Hu, Eleftheriou, Arnold, Dholakia, GLOBECOM 2001 (see `boxplus`). It replaced
//! normalised min-sum, which lost ≈ 0.1–0.2 in efficiency on the density-evolution-optimised
//! codes (docs/ldpc.md). Syndrome decoding: the check constraint is Σ x_v = s_c, i.e. the
//! outgoing sign is flipped when Alice's syndrome bit is 1.
//!
//! Per check c with neighbours v_j (edge messages R_j, posteriors L_v):
//!   t_j = L_{v_j} − R_j;  R_j ← (−1)^{s_c} ⊞_{i≠j} t_i;  L_{v_j} ← t_j + R_j.
//!
//! Layout for SIMD: W frames of the same code and rate split are decoded together, one per lane;
//! every message is a `[i8; W]`, so each arithmetic step is one (or a few) vector instructions and
//! memory access is contiguous per edge. The lanes never interact, so a frame's result does not
//! depend on which other frames share its batch (a property test checks this). Messages stay in
//! [−127, 127] so negation never overflows; posteriors are i16 clamped to ±LMAX.
//!
//! Frozen positions (shortened, or revealed by a blind retry) hold ±127 and are never updated.
//! Punctured positions start at 0 (erasure). Early stop: before every iteration each lane's hard
//! decision is checked against its syndrome (packed to one word per position, bit k = lane k;
//! the sweep stops once every lane has failed a check); a lane that matches, or that spent the
//! iteration budget, is emitted and immediately refilled with the next frame (its posteriors,
//! messages and syndrome column reset), so a batch costs the average iteration count rather than
//! the worst. `drive` runs this lane loop for both engines.
//!
//! Engines: the serial one here (checks in index order, one `[i8; W]` per message) and, on
//! AVX-512BW CPUs, the grouped one of `decoder_group.rs` (64/W variable-disjoint checks per
//! register, list-scheduled so the result equals the serial sweep's bit for bit).
//! `Kernel::Portable` runs the serial engine compiled for the baseline target (SSE2 on x86-64);
//! `Kernel::Auto` dispatches at run time to the grouped engine (AVX-512BW) or an AVX2 build of the
//! serial one. Integer arithmetic is identical in all, so results are bit-identical (tested, and
//! `examples/decoder_profile.rs` prints a digest of every output to compare builds).

use crate::code::Code;
use zeroize::Zeroizing;

#[path = "decoder_group.rs"]
mod group;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Auto,
    Portable,
}

pub const MAXV: i8 = 127;
/// Posterior range: 16-bit, so posteriors do not saturate at the message range (an 8-bit
/// posterior cost ~2x FER at QBER 8 %).
pub const LMAX: i16 = 4000;

/// Result for one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaneOutcome {
    pub iterations: u32,
    pub converged: bool,
}

/// Where frames come from and where results go. `init` writes frame `i`'s initial posteriors
/// (length n; frozen positions ±127) and syndrome sign masks (length m; 0 or −1). `emit` receives
/// frame `i`'s hard decision (one byte per position, 0/1) and outcome. Both are called on the
/// decoding thread, in no particular frame order.
pub trait FrameSource: Sync {
    fn frames(&self) -> usize;
    fn init(&self, i: usize, llr: &mut [i8], synd: &mut [i8]);
    fn emit(&self, i: usize, bits: &[u8], outcome: LaneOutcome);
    /// Warm start (blind retries): true when this source resumes frames from earlier decodes;
    /// then `warm` is asked at every refill and `save` is called before `emit` of every frame
    /// that did not converge. Messages are in canonical order: one i8 per edge of the full H, in
    /// `code.row_idx` order (0 on the edges of frozen positions). False (the default) leaves the
    /// engines exactly as they were (cold start, nothing saved).
    fn keeps_state(&self) -> bool {
        false
    }
    /// Writes frame i's check-to-variable messages from its previous decode into `msgs` and
    /// returns true, or returns false to start the frame cold.
    fn warm(&self, _i: usize, _msgs: &mut [i8]) -> bool {
        false
    }
    /// Frame i's messages after a decode that did not converge (canonical order).
    fn save(&self, _i: usize, _msgs: &[i8]) {}
}

/// Canonical edge (index into `code.row_idx`) of every swept edge (`swept_rows` order).
pub(crate) fn canonical_map(code: &Code, frozen: &[bool]) -> Vec<u32> {
    let mut out = Vec::with_capacity(code.edges());
    for c in 0..code.m {
        let base = code.row_ptr[c];
        for (j, &v) in code.row(c).iter().enumerate() {
            if !frozen[v as usize] {
                out.push(base + j as u32);
            }
        }
    }
    out
}

/// When a lane gives up before its iteration budget: at lane iterations `from`, `from + every`,
/// `from + 2·every`, … the lane's unsatisfied checks are counted (one sweep over the rows); a lane
/// whose count fell by less than `min_drop_per_mille` ‰ since the previous such count has
/// *stalled* and is emitted as not converged. Why: in the blind plan about half the frames of a
/// first pass, and again of every retry, fail; a failing frame spent the whole budget (60
/// iterations against ≈ 37 for a frame that converges near the threshold), so failed decodes
/// were 55 % (QBER 2 %) to 75 % (1 %) of all the iterations of a block (`examples/blind.rs`).
/// Belief propagation below its threshold settles at a plateau of unsatisfied checks, while a
/// frame that will converge keeps lowering them (Kienle, Wehn, "Low complexity stopping criterion
/// for LDPC code decoders", VTC 2005, use the same observable). The rule is a speed choice with a
/// cost: a frame stopped that would have converged later needs one more retry round (Δf ≈ 0.01 of
/// that frame); docs/ldpc.md gives the measured trade. `None` = the budget only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    pub from: u32,
    pub every: u32,
    pub min_drop_per_mille: u32,
}

/// Iteration budget and early give-up rule of a decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_iter: u32,
    pub stall: Option<Stall>,
}

impl From<u32> for Limits {
    fn from(max_iter: u32) -> Self {
        Limits { max_iter, stall: None }
    }
}

/// Research hook (`examples/stall_trace.rs`): when set, `drive` counts every active lane's
/// unsatisfied checks before every iteration and appends (frame, iteration, count) to `TRACE`.
#[doc(hidden)]
pub static TRACE_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
#[doc(hidden)]
pub static TRACE: std::sync::Mutex<Vec<(usize, u32, u32)>> = std::sync::Mutex::new(Vec::new());
/// Research hook (`examples/node_path.rs`): passes run by every engine since start, and the
/// lanes that held a frame summed over those passes (lane occupancy = LANE_PASSES / (W·PASSES)).
#[doc(hidden)]
pub static PASSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
#[doc(hidden)]
pub static LANE_PASSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Unsatisfied checks per lane (lanes of `lanes_mask`) of the hard decisions `check` packed into
/// `hard` (bit k of word v = lane k), against the syndrome bits (frozen positions folded in).
fn unsat_counts<H: LaneWord>(rows: &Rows<'_>, synd: &[u64], hard: &[H], lanes_mask: u64, out: &mut [u32; 64]) {
    for (c, &s) in synd.iter().enumerate() {
        let mut acc = H::low(s);
        for &v in rows.row(c) {
            // SAFETY: swept rows hold positions < n ≤ hard.len().
            acc ^= unsafe { *hard.get_unchecked(v as usize) };
        }
        let mut bad: u64 = acc.into();
        bad &= lanes_mask;
        while bad != 0 {
            out[bad.trailing_zeros() as usize] += 1;
            bad &= bad - 1;
        }
    }
}

/// Test hook: when set, grouped engines built afterwards use the 12-operation box-plus instead
/// of the VBMI table (same bits), so that both are tested on a CPU that has VBMI.
#[doc(hidden)]
pub static NO_VBMI: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn kernel_name(k: Kernel) -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if k == Kernel::Auto {
            if std::is_x86_feature_detected!("avx512bw") {
                return "avx512bw";
            }
            if std::is_x86_feature_detected!("avx2") {
                return "avx2";
            }
        }
    }
    let _ = k;
    "portable"
}

/// The frames an engine decodes: a range taken in order, or frames shared by several engines
/// (threads), each taking the next frame from a common counter whenever one of its lanes is
/// free, so that no engine idles while another still has a queue (a frame's result does not
/// depend on which engine or lane decodes it).
pub enum Frames<'a> {
    Range(std::ops::Range<usize>),
    Shared { next: &'a std::sync::atomic::AtomicUsize, end: usize },
}

impl Frames<'_> {
    #[inline]
    fn take(&mut self) -> Option<usize> {
        match self {
            Frames::Range(r) => r.next(),
            Frames::Shared { next, end } => {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (i < *end).then_some(i)
            }
        }
    }
    #[inline]
    fn more(&self) -> bool {
        match self {
            Frames::Range(r) => !r.is_empty(),
            Frames::Shared { next, end } => next.load(std::sync::atomic::Ordering::Relaxed) < *end,
        }
    }
}

/// Decodes frames `range` of `src` on the calling thread with a W-lane engine. A lane whose frame
/// is done (syndrome matched or iteration budget spent) is refilled at once with the next frame,
/// so the batch costs the frames' average iteration count, not the worst one.
pub fn decode_frames<const W: usize>(
    code: &Code,
    frozen: &[bool],
    src: &dyn FrameSource,
    range: std::ops::Range<usize>,
    lim: impl Into<Limits>,
    kernel: Kernel,
) {
    let expect = range.len();
    decode_from::<W>(code, frozen, src, Frames::Range(range), expect, lim.into(), kernel)
}

/// Decodes `frames` of `src` on the calling thread with a W-lane engine; `expect` is about how
/// many frames this engine will get (it only picks the grouped engine's lane count).
pub fn decode_from<const W: usize>(
    code: &Code,
    frozen: &[bool],
    src: &dyn FrameSource,
    frames: Frames<'_>,
    expect: usize,
    lim: Limits,
    kernel: Kernel,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if kernel == Kernel::Auto {
            if std::is_x86_feature_detected!("avx512bw") {
                if matches!(W, 8 | 16 | 32 | 64) && std::is_x86_feature_detected!("bmi2") {
                    // SAFETY (all four): the CPU supports AVX-512F/BW and BMI2 (checked just above).
                    return match grouped_width(code, W, expect) {
                        64 => unsafe { group::run_avx512::<64>(code, frozen, src, frames, lim) },
                        32 => unsafe { group::run_avx512::<32>(code, frozen, src, frames, lim) },
                        16 => unsafe { group::run_avx512::<16>(code, frozen, src, frames, lim) },
                        _ => unsafe { group::run_avx512::<8>(code, frozen, src, frames, lim) },
                    };
                }
                // SAFETY: as above.
                return unsafe { run_avx512::<W>(code, frozen, src, frames, lim) };
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { run_avx2::<W>(code, frozen, src, frames, lim) };
            }
        }
    }
    let _ = kernel;
    run_generic::<W>(code, frozen, src, frames, lim)
}

/// Lanes the grouped engine runs with for `frames` frames when up to `w` are allowed: the widest
/// of 64/32/16/8 (≤ w) whose messages and posteriors stay within 12 MiB and that leaves at least
/// 8 frames per lane, else 8. A frame's result does not depend on the lane count, so this is a
/// speed choice only. Both threads' engines share the L3 cache: at 2^18 (≈ 2.1 MB per lane) 8
/// lanes beat 16 by ≈ 15 % per CPU-second (one thread, QBER 2 %). Once a chunk has no frame
/// left to refill, finished lanes idle until the slowest frame ends (up to the iteration budget):
/// with 8+ frames per lane that tail is a small part of the chunk. `decode_batch` on 128 frames of
/// 2^16 (64 per thread): 16 → 8 lanes, 0.51–0.57 → 0.40–0.43 CPU-s; 256 frames of 2^14: 32 → 16
/// lanes, 0.14–0.15 → 0.12–0.13 CPU-s (8 lanes, 0.19: 8-check groups fill badly at 2^14).
fn grouped_width(code: &Code, w: usize, frames: usize) -> usize {
    let per_lane = code.edges() + 2 * code.n;
    [64usize, 32, 16, 8].into_iter().find(|&x| x <= w && x * per_lane <= 12 << 20 && 8 * x <= frames).unwrap_or(8)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
unsafe fn run_avx512<const W: usize>(code: &Code, frozen: &[bool], src: &dyn FrameSource, frames: Frames<'_>, lim: Limits) {
    run_generic::<W>(code, frozen, src, frames, lim)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2<const W: usize>(code: &Code, frozen: &[bool], src: &dyn FrameSource, frames: Frames<'_>, lim: Limits) {
    run_generic::<W>(code, frozen, src, frames, lim)
}

/// Lane state shared by both engines: posteriors (one row of W lanes per position, plus a
/// scratch row that padding edges of the grouped engine read and write), syndrome
/// signs per check, packed hard decisions.
pub(crate) struct Lanes<const W: usize> {
    pub llr: Rows64,
    pub synd: Zeroizing<Vec<[i8; W]>>,
    /// The same signs packed, bit k = lane k (syndrome bit 1).
    pub synd_bits: Zeroizing<Vec<u64>>,
    /// Packed hard decisions, one word per position (u16, u32 or u64 by lane count: a
    /// smaller array stays in cache during the syndrome sweep), then zero words (padding).
    pub hard: Rows64,
    /// Positions.
    pub n: usize,
}

/// Bytes per packed hard-decision word for W lanes (u16, u32 or u64): the word type every
/// engine's `check` packs to.
pub(crate) const fn hard_word_bytes<const W: usize>() -> usize {
    if W <= 16 {
        2
    } else if W <= 32 {
        4
    } else {
        8
    }
}

/// The per-lane work of an engine: `reset_lane` clears lane k's messages (its syndrome column
/// in `synd` is already set); `pass` runs one layered iteration over all lanes.
pub(crate) trait Engine<const W: usize> {
    fn reset_lane(&mut self, k: usize, synd: &[[i8; W]]);
    /// After `reset_lane`: lane k's messages from `msgs` (canonical order; `canon` maps each
    /// swept edge of `rows` to its canonical edge).
    fn load_lane(&mut self, k: usize, rows: &Rows<'_>, canon: &[u32], msgs: &[i8]);
    /// Lane k's messages into `msgs` (canonical order; edges not swept are left as they are).
    fn save_lane(&mut self, k: usize, rows: &Rows<'_>, canon: &[u32], msgs: &mut [i8]);
    fn pass(&mut self, lanes: &mut Lanes<W>);
    /// The swept → canonical edge map of `canonical_map` (warm start). The grouped engine
    /// keeps it with its cached schedule (same key: code and frozen set), so a retry round does
    /// not rebuild it per engine.
    fn canonical(&self, code: &Code, frozen: &[bool]) -> std::sync::Arc<Vec<u32>> {
        std::sync::Arc::new(canonical_map(code, frozen))
    }
    /// Bit k: lane k (of `active`) satisfies every check (see `syndrome_ok`).
    #[inline(always)]
    fn check(&mut self, rows: &Rows<'_>, lanes: &mut Lanes<W>, active: u64, start: &mut usize) -> u64 {
        let n = lanes.n;
        let (llr, synd) = (lanes.llr.rows_mut::<W>(), &lanes.synd_bits[..]);
        match W {
            0..=16 => syndrome_ok::<W, u16>(rows, llr, synd, lanes.hard.words_mut::<u16>(n), active, start),
            17..=32 => syndrome_ok::<W, u32>(rows, llr, synd, lanes.hard.words_mut::<u32>(n), active, start),
            _ => syndrome_ok::<W, u64>(rows, llr, synd, lanes.hard.words_mut::<u64>(n), active, start),
        }
    }
}

/// The lane loop common to every engine: refill free lanes, check syndromes, emit finished
/// frames, iterate. A lane whose frame is done (syndrome matched or iteration budget spent) is
/// refilled at once with the next frame.
#[inline(always)]
pub(crate) fn drive<const W: usize, E: Engine<W>>(
    code: &Code,
    frozen: &[bool],
    rows: &Rows<'_>,
    src: &dyn FrameSource,
    mut frames: Frames<'_>,
    lim: Limits,
    eng: &mut E,
) {
    let max_iter = lim.max_iter;
    let trace = TRACE_ON.load(std::sync::atomic::Ordering::Relaxed);
    let mut lane_unsat = [u32::MAX; W];
    // Iteration of each lane's last stall count: after a refill the loop checks again without a
    // pass (lanes keep their iteration), and the same checkpoint must not count twice.
    let mut lane_probed = [u32::MAX; W];
    assert!(W <= 64, "lane masks are u64");
    let (n, m) = (code.n, code.m);
    let mut lanes = Lanes::<W> {
        llr: Rows64::new((n + 1) * 2 * W),
        synd: Zeroizing::new(vec![[0i8; W]; m]),
        synd_bits: Zeroizing::new(vec![0u64; m]),
        hard: Rows64::new(n * 8 + 64),
        n,
    };
    let mut s_llr: Zeroizing<Vec<i8>> = Zeroizing::new(vec![0i8; n]);
    let mut s_synd: Zeroizing<Vec<i8>> = Zeroizing::new(vec![0i8; m]);
    let mut s_bits: Zeroizing<Vec<u8>> = Zeroizing::new(vec![0u8; n]);
    let mut lane_frame: [Option<usize>; W] = [None; W];
    let mut lane_iter = [0u32; W];
    let mut sweep_start = 0usize;
    let frozen_list: Vec<u32> = (0..n as u32).filter(|&v| frozen[v as usize]).collect();
    // Warm start: the swept → canonical edge map, a frame's messages, per-position sums.
    let warm_on = src.keeps_state();
    let canon: std::sync::Arc<Vec<u32>> = if warm_on { eng.canonical(code, frozen) } else { std::sync::Arc::new(Vec::new()) };
    let mut s_msgs: Zeroizing<Vec<i8>> = Zeroizing::new(vec![0i8; if warm_on { code.edges() } else { 0 }]);
    let mut s_acc: Zeroizing<Vec<i32>> = Zeroizing::new(vec![0i32; if warm_on { n } else { 0 }]);
    loop {
        // Refill free lanes.
        for k in 0..W {
            if lane_frame[k].is_some() {
                continue;
            }
            let Some(next) = frames.take() else { break };
            {
                src.init(next, &mut s_llr, &mut s_synd);
                let llr = lanes.llr.rows_mut::<W>();
                for v in 0..n {
                    // Frozen positions arrive as ±127 and become ±LMAX: certain.
                    let x = s_llr[v] as i16;
                    llr[v][k] = if frozen[v] { x.signum() * LMAX } else { x };
                }
                let synd = &mut lanes.synd;
                for c in 0..m {
                    synd[c][k] = s_synd[c];
                }
                for &v in &frozen_list {
                    let v = v as usize;
                    if s_llr[v] < 0 {
                        for &c in code.col(v) {
                            synd[c as usize][k] = !synd[c as usize][k]; // 0 ↔ −1
                        }
                    }
                }
                for (b, s) in lanes.synd_bits.iter_mut().zip(synd.iter()) {
                    *b = (*b & !(1u64 << k)) | u64::from(s[k] != 0) << k;
                }
                eng.reset_lane(k, synd);
                if warm_on && src.warm(next, &mut s_msgs) {
                    // Resume: the layered decoder keeps L_v = channel + Σ (messages into v)
                    // (exact until a posterior reaches ±LMAX), so the posteriors are rebuilt
                    // from the saved messages on the edges still swept. Edges of positions
                    // frozen since (revealed) are dropped: their value is in the syndrome.
                    s_acc.fill(0);
                    for (&v, &r) in code.row_idx.iter().zip(s_msgs.iter()) {
                        s_acc[v as usize] += r as i32;
                    }
                    let llr = lanes.llr.rows_mut::<W>();
                    for v in 0..n {
                        if !frozen[v] {
                            llr[v][k] = (s_llr[v] as i32 + s_acc[v]).clamp(-(LMAX as i32), LMAX as i32) as i16;
                        }
                    }
                    eng.load_lane(k, rows, &canon, &s_msgs);
                }
                lane_frame[k] = Some(next);
                lane_iter[k] = 0;
                lane_unsat[k] = u32::MAX;
                lane_probed[k] = u32::MAX;
            }
        }
        if lane_frame.iter().all(|f| f.is_none()) {
            break;
        }
        let active = (0..W).fold(0u64, |a, k| if lane_frame[k].is_some() { a | 1 << k } else { a });
        let ok = eng.check(rows, &mut lanes, active, &mut sweep_start);
        // Lanes at a stall checkpoint (or all, when tracing): count their unsatisfied checks.
        let mut probe = 0u64;
        if let Some(st) = lim.stall {
            for k in 0..W {
                let t = lane_iter[k];
                if active & !ok & (1 << k) != 0 && t >= st.from && (t - st.from) % st.every.max(1) == 0 && lane_probed[k] != t {
                    probe |= 1 << k;
                }
            }
        }
        if trace {
            probe |= active & !ok;
        }
        let mut unsat = [0u32; 64];
        if probe != 0 {
            let n = lanes.n;
            match hard_word_bytes::<W>() {
                2 => unsat_counts::<u16>(rows, &lanes.synd_bits, lanes.hard.words_mut::<u16>(n), probe, &mut unsat),
                4 => unsat_counts::<u32>(rows, &lanes.synd_bits, lanes.hard.words_mut::<u32>(n), probe, &mut unsat),
                _ => unsat_counts::<u64>(rows, &lanes.synd_bits, lanes.hard.words_mut::<u64>(n), probe, &mut unsat),
            }
            if trace {
                let mut t = TRACE.lock().unwrap_or_else(|e| e.into_inner());
                for k in 0..W {
                    if let (true, Some(i)) = (probe & (1 << k) != 0, lane_frame[k]) {
                        t.push((i, lane_iter[k], unsat[k]));
                    }
                }
            }
        }
        let mut stalled = 0u64;
        if let Some(st) = lim.stall {
            for k in 0..W {
                let t = lane_iter[k];
                if probe & (1 << k) != 0 && t >= st.from && (t - st.from) % st.every.max(1) == 0 && lane_probed[k] != t {
                    lane_probed[k] = t;
                    let (u, prev) = (unsat[k] as u64, lane_unsat[k] as u64);
                    if prev != u32::MAX as u64 && u * 1000 > prev * (1000 - st.min_drop_per_mille.min(1000) as u64) {
                        stalled |= 1 << k;
                    }
                    lane_unsat[k] = unsat[k];
                }
            }
        }
        let mut finished = false;
        for k in 0..W {
            if let Some(i) = lane_frame[k] {
                let sat = ok & (1 << k) != 0;
                if sat || lane_iter[k] >= max_iter || stalled & (1 << k) != 0 {
                    // `check` packed the current hard decisions (bit k of word v = lane k).
                    let sz = hard_word_bytes::<W>();
                    let (hb, byte, bit) = (lanes.hard.bytes(n * sz), k >> 3, k & 7);
                    for v in 0..n {
                        s_bits[v] = (hb[v * sz + byte] >> bit) & 1;
                    }
                    if warm_on && !sat {
                        s_msgs.fill(0);
                        eng.save_lane(k, rows, &canon, &mut s_msgs);
                        src.save(i, &s_msgs);
                    }
                    src.emit(i, &s_bits, LaneOutcome { iterations: lane_iter[k], converged: sat });
                    lane_frame[k] = None;
                    finished = true;
                }
            }
        }
        if finished && frames.more() {
            continue; // refill and check the new frames before spending an iteration
        }
        if lane_frame.iter().all(|f| f.is_none()) {
            break;
        }
        eng.pass(&mut lanes);
        PASSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LANE_PASSES.fetch_add(lane_frame.iter().filter(|f| f.is_some()).count() as u64, std::sync::atomic::Ordering::Relaxed);
        for k in 0..W {
            lane_iter[k] += 1;
        }
    }
}

/// The rows the engine sweeps: H without the frozen columns. Frozen positions (shortened,
/// revealed) are constants: their bit is folded into each lane's syndrome at refill and their
/// edges are left out of the rows the engine sweeps, so the check loops neither branch on them
/// nor spend work on them (≈ 10 % of the edges at the default 10 % modulation budget).
pub(crate) fn swept_rows(code: &Code, frozen: &[bool]) -> (Vec<u32>, Vec<u32>) {
    let mut row_ptr: Vec<u32> = Vec::with_capacity(code.m + 1);
    let mut row_idx: Vec<u32> = Vec::with_capacity(code.edges());
    row_ptr.push(0);
    for c in 0..code.m {
        row_idx.extend(code.row(c).iter().copied().filter(|&v| !frozen[v as usize]));
        row_ptr.push(row_idx.len() as u32);
    }
    (row_ptr, row_idx)
}

#[inline(always)]
fn run_generic<const W: usize>(code: &Code, frozen: &[bool], src: &dyn FrameSource, frames: Frames<'_>, lim: Limits) {
    let (row_ptr, row_idx) = swept_rows(code, frozen);
    let rows = Rows { ptr: &row_ptr, idx: &row_idx };
    let maxd = (0..code.m).map(|c| rows.row(c).len()).max().unwrap_or(0).max(1);
    let mut eng = Serial::<W> {
        rows: &rows,
        r: Zeroizing::new(vec![[0i8; W]; row_idx.len()]),
        tbuf: Zeroizing::new(vec![[0i16; W]; maxd]),
        mbuf: Zeroizing::new(vec![[0u8; W]; maxd]),
        fbuf: Zeroizing::new(vec![[0u8; W]; maxd]),
        bbuf: Zeroizing::new(vec![[0u8; W]; maxd]),
    };
    drive::<W, _>(code, frozen, &rows, src, frames, lim, &mut eng);
}

/// The portable engine: checks one after another in index order, W lanes per message.
struct Serial<'a, const W: usize> {
    rows: &'a Rows<'a>,
    r: Zeroizing<Vec<[i8; W]>>,
    tbuf: Zeroizing<Vec<[i16; W]>>,
    mbuf: Zeroizing<Vec<[u8; W]>>,
    fbuf: Zeroizing<Vec<[u8; W]>>,
    bbuf: Zeroizing<Vec<[u8; W]>>,
}

impl<const W: usize> Engine<W> for Serial<'_, W> {
    #[inline(always)]
    fn reset_lane(&mut self, k: usize, _synd: &[[i8; W]]) {
        for e in self.r.iter_mut() {
            e[k] = 0;
        }
    }
    fn load_lane(&mut self, k: usize, _rows: &Rows<'_>, canon: &[u32], msgs: &[i8]) {
        for (e, &c) in self.r.iter_mut().zip(canon) {
            e[k] = msgs[c as usize];
        }
    }
    fn save_lane(&mut self, k: usize, _rows: &Rows<'_>, canon: &[u32], msgs: &mut [i8]) {
        for (e, &c) in self.r.iter().zip(canon) {
            msgs[c as usize] = e[k];
        }
    }
    #[inline(always)]
    fn pass(&mut self, lanes: &mut Lanes<W>) {
        layer_pass::<W>(
            self.rows,
            lanes.llr.rows_mut::<W>(),
            &mut self.r,
            &mut self.tbuf,
            &mut self.mbuf,
            &mut self.fbuf,
            &mut self.bbuf,
            &lanes.synd,
        );
    }
}

/// One cache line; buffers of them are 64-byte aligned, so a lane row never straddles lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line(pub [u8; 64]);

impl zeroize::Zeroize for Line {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

/// A zeroised-on-drop, 64-byte-aligned byte buffer viewed as rows of lanes.
pub(crate) struct Rows64 {
    buf: Zeroizing<Vec<Line>>,
    bytes: usize,
}

impl Rows64 {
    pub fn new(bytes: usize) -> Self {
        Rows64 { buf: Zeroizing::new(vec![Line([0; 64]); bytes.div_ceil(64)]), bytes }
    }
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.buf.as_mut_ptr() as *mut u8
    }
    /// The first `count` words of the buffer as integers of type H (u16, u32, u64).
    pub fn words_mut<H: LaneWord>(&mut self, count: usize) -> &mut [H] {
        assert!(count * std::mem::size_of::<H>() <= self.bytes);
        // SAFETY: in bounds (asserted), aligned (64 bytes), every bit pattern is a valid
        // integer; the borrow of `self` is exclusive for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr() as *mut H, count) }
    }
    /// The first `count` bytes.
    pub fn bytes(&self, count: usize) -> &[u8] {
        assert!(count <= self.bytes);
        // SAFETY: in bounds (asserted), initialised; shared borrow of `self`.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr() as *const u8, count) }
    }
    /// The buffer as rows of W i16 lanes.
    pub fn rows_mut<const W: usize>(&mut self) -> &mut [[i16; W]] {
        let rows = self.bytes / (2 * W);
        // SAFETY: the buffer holds at least `bytes` initialised bytes, 64-byte aligned (more
        // than [i16; W] needs); every bit pattern is a valid i16; the borrow of `self` is
        // exclusive for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr() as *mut [i16; W], rows) }
    }
}

/// The rows the engine sweeps: H without the frozen columns (compressed rows).
pub(crate) struct Rows<'a> {
    pub ptr: &'a [u32],
    pub idx: &'a [u32],
}

impl Rows<'_> {
    #[inline(always)]
    pub fn row(&self, c: usize) -> &[u32] {
        &self.idx[self.ptr[c] as usize..self.ptr[c + 1] as usize]
    }
}

/// Bit k of the result: lane k's hard decision of `llr` has syndrome `synd`, for the lanes in
/// `active` (bits of other lanes are 0). Hard decisions are first packed to one u64 per position
/// (bit k = lane k), so the check sweep reads 8 bytes per edge instead of W. The sweep stops as
/// soon as every active lane has an unsatisfied check (then no lane can be done), and starts at
/// `*start`, the check where the previous sweep stopped: the unsatisfied checks of a slow frame
/// persist from one iteration to the next, so most sweeps end after a few checks instead of m.
/// Exact either way: a lane is reported satisfied only after all m checks were seen.
#[inline(always)]
pub(crate) fn syndrome_ok<const W: usize, H: LaneWord>(rows: &Rows<'_>, llr: &[[i16; W]], synd: &[u64], hard: &mut [H], active: u64, start: &mut usize) -> u64 {
    pack_hard::<W, H>(llr, hard);
    syndrome_ok_packed::<H>(rows, synd, hard, active, start)
}

/// `syndrome_ok` on hard decisions already packed into `hard`.
#[inline(always)]
pub(crate) fn syndrome_ok_packed<H: LaneWord>(rows: &Rows<'_>, synd: &[u64], hard: &[H], active: u64, start: &mut usize) -> u64 {
    let m = synd.len();
    let mut bad = !active;
    let from = if *start < m { *start } else { 0 };
    for c in (from..m).chain(0..from) {
        let mut acc = H::low(synd[c]);
        for &v in rows.row(c) {
            // SAFETY: swept rows hold positions < n = hard.len() (built from the code's rows).
            acc ^= unsafe { *hard.get_unchecked(v as usize) };
        }
        let acc: u64 = acc.into();
        bad |= acc;
        if bad == u64::MAX {
            *start = c;
            return 0;
        }
    }
    !bad & active
}

/// Packs the posteriors' signs: bit k of `hard[v]` = lane k's hard decision at position v.
#[inline(always)]
pub(crate) fn pack_hard<const W: usize, H: LaneWord>(llr: &[[i16; W]], hard: &mut [H]) {
    for (h, l) in hard.iter_mut().zip(llr.iter()) {
        let mut x = 0u64;
        for k in 0..W {
            x |= u64::from(l[k] < 0) << k;
        }
        *h = H::low(x);
    }
}

/// A word of lane bits (bit k = lane k).
pub(crate) trait LaneWord: Copy + std::ops::BitXorAssign + Into<u64> {
    /// The low bits of x.
    fn low(x: u64) -> Self;
}
impl LaneWord for u16 {
    fn low(x: u64) -> Self {
        x as u16
    }
}
impl LaneWord for u32 {
    fn low(x: u64) -> Self {
        x as u32
    }
}
impl LaneWord for u64 {
    fn low(x: u64) -> Self {
        x
    }
}

/// Box-plus of two LLR *magnitudes* in decoder units (0..=127), lane by lane: the sum-product
/// check rule 2·atanh(tanh(a/2)·tanh(b/2)) has magnitude min(a, b) + c(a + b) − c(|a − b|),
/// c(x) = ln(1 + e^(−x)), with c replaced by the piecewise-linear max(0, 5/8 − x/4) (in nats) of
/// Hu, Eleftheriou, Arnold, Dholakia, "Efficient implementations of the sum-product algorithm
/// for decoding LDPC codes", GLOBECOM 2001, §III-B. At LLR_SCALE = 12 units per nat that is
/// max(0, 30 − x)/4; the 32 used instead of 30 tilts it up by 0.04 nat to better match ln 2 at 0
/// (≈ 0.67, 0.42, 0.17, 0 nat at x = 0, 1, 2, 2.7 nats; exact: 0.69, 0.31, 0.13, 0.07).
/// The constant is sharp: 28 / 30 / 32 / 33 / 34 / 36 gave FER 52 / 29 / 21 / 24 / 26 / 44 of 128
/// (2^16, QBER 2 %, f = 1.13); a 16-entry table of the exact c at 4-unit steps gave 24, and
/// damping the outgoing magnitude by 15/16 or 7/8 gave 23 and 33. Signs are handled
/// apart (a parity per check, as in min-sum), so everything is unsigned 8-bit and saturating:
/// one AVX-512 instruction covers 64 lanes. Integer only, so every kernel build gives the same
/// bits.
#[inline(always)]
fn boxplus<const W: usize>(a: &[u8; W], b: &[u8; W]) -> [u8; W] {
    let mut o = [0u8; W];
    for k in 0..W {
        let (x, y) = (a[k], b[k]);
        let cp = 32u8.saturating_sub(x.saturating_add(y)) >> 2;
        let cm = 32u8.saturating_sub(x.saturating_sub(y) | y.saturating_sub(x)) >> 2;
        o[k] = (x.min(y) + cp).saturating_sub(cm);
    }
    o
}

#[inline(always)]
fn layer_pass<const W: usize>(
    rows: &Rows<'_>,
    llr: &mut [[i16; W]],
    r: &mut [[i8; W]],
    tbuf: &mut [[i16; W]],
    mbuf: &mut [[u8; W]],
    fbuf: &mut [[u8; W]],
    bbuf: &mut [[u8; W]],
    synd: &[[i8; W]],
) {
    for c in 0..synd.len() {
        let base = rows.ptr[c] as usize;
        let row = rows.row(c);
        let d = row.len();
        if d == 0 {
            continue;
        }
        // Parity of the syndrome bit and of every incoming sign (−1 = odd).
        let mut sgn = synd[c];
        for (j, &v) in row.iter().enumerate() {
            let v = v as usize;
            let l = &llr[v];
            let re = &r[base + j];
            let mut t = [0i16; W];
            for k in 0..W {
                t[k] = l[k] - re[k] as i16;
            }
            let mut a = [0u8; W];
            for k in 0..W {
                // Magnitude saturated to the 8-bit message range; sign from the 16-bit value.
                a[k] = t[k].unsigned_abs().min(MAXV as u16) as u8;
                sgn[k] ^= (t[k] >> 15) as i8;
            }
            tbuf[j] = t;
            mbuf[j] = a;
        }
        // Prefix and suffix box-sums f_j = |t_0| ⊞ … ⊞ |t_j|, b_j = |t_j| ⊞ … ⊞ |t_{d−1}|, built in
        // one loop as two independent dependency chains (the box-plus latency, not its
        // throughput, bounds a single chain); then every outgoing magnitude
        // |R_j| = f_{j−1} ⊞ b_{j+1} is independent of the others (3d − 6 box-plus per check
        // instead of d²).
        if d > 1 {
            let (mut fa, mut ba) = (mbuf[0], mbuf[d - 1]);
            fbuf[0] = fa;
            bbuf[d - 1] = ba;
            for j in 1..d - 1 {
                fa = boxplus::<W>(&fa, &mbuf[j]);
                fbuf[j] = fa;
                let jb = d - 1 - j;
                ba = boxplus::<W>(&mbuf[jb], &ba);
                bbuf[jb] = ba;
            }
        }
        for j in 0..d {
            let v = row[j] as usize;
            let ext = if d == 1 {
                [MAXV as u8; W] // a single-edge check: its bit is certain
            } else if j == 0 {
                bbuf[1]
            } else if j == d - 1 {
                fbuf[d - 2]
            } else {
                boxplus::<W>(&fbuf[j - 1], &bbuf[j + 1])
            };
            let t = tbuf[j];
            let mut rn = [0i8; W];
            for k in 0..W {
                let s = sgn[k] ^ ((t[k] >> 15) as i8);
                let mag = ext[k] as i8;
                rn[k] = (mag ^ s).wrapping_sub(s);
            }
            r[base + j] = rn;
            let l = &mut llr[v];
            for k in 0..W {
                l[k] = (t[k] + rn[k] as i16).clamp(-LMAX, LMAX);
            }
        }
    }
}
