//! The emulated link's per-click physics (src/lab/link.ts `EmulatedLink`, the reference), in Rust:
//! photon candidates by geometric skips at p_max, thinning per intensity, photon number by
//! inversion, intercept-resend Eve, Bob's basis (passive or active), misalignment, dark counts by
//! geometric skips per detector, dead time, afterpulsing, jitter, Bob's clock (offset, drift,
//! per-channel delay), the insertion sort of a batch's tags and the hold-back at the batch end.
//!
//! Same random streams, same draws in the same order, same IEEE arithmetic as the TypeScript
//! (see lab_rng.rs), so that the tags, channels and truth columns are bit-identical: the
//! property test test/lab/physics-native.test.ts checks it on random seeds and parameters.
//! The derived parameters (transmittance, click probabilities, Poisson tables, logs of them) are
//! computed once per setting change by the TypeScript (`EmulatedLink.derive`) and passed in: only
//! the per-click loops live here. Pulse indices and times are f64 as in the TypeScript (integers
//! exact below 2^53).
use crate::lab_rng::{alice_choice, bob_basis, floor_fast, js_log, js_round, uniform_of, AliceThresholds, SeedKeys, SkipTable, Xoshiro128};

pub const KIND_PHOTON: u8 = 0;
pub const KIND_DARK: u8 = 1;
pub const KIND_AFTERPULSE: u8 = 2;

/// What `EmulatedLink.derive()` (and `setClock`) compute; see link.ts for each field's meaning.
#[derive(Clone, Debug, Default)]
pub struct LinkParams {
    pub period_ps: f64,
    pub ratio: [f64; 3],
    /// Truncated Poisson CDFs per intensity (link.ts `truncatedPoissonCdf`).
    pub pois_cdf: [Vec<f64>; 3],
    pub logq_photon: f64,
    pub p_photon_max: f64,
    pub p_dark: f64,
    pub logq_dark: f64,
    pub fibre_delay: f64,
    pub clock_phase: f64,
    pub drift: f64,
    pub jitter_sigma: f64,
    /// Per detector index.
    pub det_channel: Vec<u8>,
    pub delays: Vec<f64>,
    /// basis*2+bit -> detector index.
    pub det_by_basis_bit: [i8; 4],
    pub passive: bool,
    pub free_running: bool,
    pub dead_time: f64,
    pub ap_prob: f64,
    pub ap_decay: f64,
    pub ed: f64,
    pub eve_fraction: f64,
    pub alice_keys: SeedKeys,
    pub alice_th: AliceThresholds,
    pub bob_keys: SeedKeys,
    pub bob_th: u64,
}

/// Tag columns (time on Bob's clock, channel, truth). Without `truth` the truth columns stay
/// empty (a tagger's consumer has no use for them).
#[derive(Default, Debug, Clone)]
pub struct Columns {
    pub time: Vec<f64>,
    pub ch: Vec<u8>,
    pub pulse: Vec<f64>,
    pub kind: Vec<u8>,
    pub slot: Vec<f64>,
    pub truth: bool,
}

impl Columns {
    pub fn len(&self) -> usize {
        self.time.len()
    }
    pub fn is_empty(&self) -> bool {
        self.time.is_empty()
    }
    fn reserve(&mut self, n: usize) {
        self.time.reserve(n);
        self.ch.reserve(n);
        if self.truth {
            self.pulse.reserve(n);
            self.kind.reserve(n);
            self.slot.reserve(n);
        }
    }
    #[inline]
    fn push(&mut self, t: f64, ch: u8, pulse: f64, kind: u8, slot: f64) {
        self.time.push(t);
        self.ch.push(ch);
        if self.truth {
            self.pulse.push(pulse);
            self.kind.push(kind);
            self.slot.push(slot);
        }
    }
}

/// One emitted batch: the tags (time as integer ps) and their truth.
#[derive(Default, Debug, Clone)]
pub struct Emitted {
    pub time_ps: Vec<i64>,
    pub channel: Vec<u8>,
    pub truth_pulse: Vec<f64>,
    pub truth_kind: Vec<u8>,
    pub truth_slot: Vec<f64>,
}

pub struct LinkEngine {
    p: LinkParams,
    rng: Xoshiro128,
    rng_skip: Xoshiro128,
    /// Alice's choices come from her source device (candidates drawn ahead from `rng_skip`).
    with_source: bool,
    need_redraw: bool,
    next_pulse: f64,
    next_photon: f64,
    next_dark_slot: Vec<f64>,
    next_dark_tau: Vec<f64>,
    last_click: Vec<f64>,
    ap_tau: Vec<Vec<f64>>,
    ap_slot: Vec<Vec<f64>>,
    ap_scheduled: u64,
    pending: Columns,
    /// Candidates drawn by `candidates()` for the batch being emulated, and the pulse after them.
    cand: Vec<f64>,
    after_cand: f64,
    /// An active Bob's basis at each candidate (simulate's scratch).
    cand_basis: Vec<i8>,
    /// The photon skip `floor(js_log(u) / logq_photon)` by table (lab_rng.rs `SkipTable`).
    photon_skip: SkipTable,
    /// Jitter drawn but not yet evaluated (see `DeferredGauss`), and the pending tags it is for.
    jit: DeferredGauss,
    jit_tag: Vec<JitTag>,
}

/// `Xoshiro128::gauss` (rng.ts: Marsaglia's polar method, truncated at ±6, spare cached) with the
/// same draws, the values left for later: `draw` returns (pair, multiplier) with
/// z = multiplier·f(pair), f = sqrt(-2 log(s) / s), which `finish` evaluates for all pairs at once
/// (the division, square root and logarithm of each click were a latency chain among the
/// per-click branches; in a loop of their own they overlap). Bit for bit `gauss()`: tested below.
#[derive(Default, Debug)]
struct DeferredGauss {
    /// Per pair its s, then (after `finish_pairs`) its factor f.
    pair: Vec<f64>,
    /// The pair whose second value is the spare, and that value's multiplier (v).
    spare: Option<(u32, f64)>,
}

impl DeferredGauss {
    fn draw(&mut self, rng: &mut Xoshiro128) -> (u32, f64) {
        if let Some(z) = rng.take_spare() {
            return (NO_PAIR, z);
        }
        if let Some(sp) = self.spare.take() {
            return sp;
        }
        loop {
            let u = 2.0 * rng.uniform() - 1.0;
            let v = 2.0 * rng.uniform() - 1.0;
            let s = u * u + v * v;
            if s >= 1.0 || s == 0.0 {
                continue;
            }
            if s < GAUSS_SURE_S {
                // the truncation may reject this pair (and draw again): decide it as gauss() does
                let f = ((-2.0 * js_log(s)) / s).sqrt();
                if (u * f).abs() > 6.0 || (v * f).abs() > 6.0 {
                    continue;
                }
            }
            let pair = self.pair.len() as u32;
            self.pair.push(s);
            self.spare = Some((pair, v));
            return (pair, u);
        }
    }

    fn is_idle(&self) -> bool {
        self.pair.is_empty() && self.spare.is_none()
    }

    /// Evaluates f of every pair drawn; `value` then gives the z of a draw.
    fn finish_pairs(&mut self) {
        // each s becomes ((-2.0 * js_log(s)) / s).sqrt(), four lanes at a time
        crate::lab_rng::polar_factors(&mut self.pair);
    }

    #[inline]
    fn value(&self, pair: u32, mult: f64) -> f64 {
        if pair == NO_PAIR {
            mult
        } else {
            mult * self.pair[pair as usize]
        }
    }

    /// After `finish_pairs`: the spare (second value of the last pair) back into the stream's
    /// cache, as gauss() leaves it; the pairs cleared.
    fn finish(&mut self, rng: &mut Xoshiro128) {
        if let Some((pair, v)) = self.spare.take() {
            rng.set_spare(v * self.pair[pair as usize]);
        }
        self.pair.clear();
    }
}

/// A pending tag whose time still lacks its jitter: `time + sigma·z` with `z = mult·f[pair]`, or
/// `z = mult` for a value known already (`pair == NO_PAIR`).
#[derive(Clone, Copy, Debug)]
struct JitTag {
    tag: usize,
    pair: u32,
    mult: f64,
}

const NO_PAIR: u32 = u32::MAX;

/// Below this s of a polar pair (u, v) the ±6 truncation of rng.ts `gauss` may reject it: decided
/// at the draw. Above it |z| <= sqrt(-2 ln s) < 5.3 (u², v² <= s): never rejected.
const GAUSS_SURE_S: f64 = 1e-6;

impl LinkEngine {
    /// `truth`: whether batches carry the truth columns (pulse, kind, slot); the tags are the same.
    pub fn new(p: LinkParams, rng_state: [u32; 4], rng_skip_state: [u32; 4], with_source: bool, truth: bool) -> Self {
        let n = p.det_channel.len();
        LinkEngine {
            rng: Xoshiro128::from_state(rng_state),
            rng_skip: Xoshiro128::from_state(rng_skip_state),
            with_source,
            need_redraw: true,
            next_pulse: 0.0,
            next_photon: 0.0,
            next_dark_slot: vec![0.0; n],
            next_dark_tau: vec![0.0; n],
            last_click: vec![f64::NEG_INFINITY; n],
            ap_tau: vec![Vec::new(); n],
            ap_slot: vec![Vec::new(); n],
            ap_scheduled: 0,
            pending: Columns { truth, ..Columns::default() },
            cand: Vec::new(),
            after_cand: f64::INFINITY,
            cand_basis: Vec::new(),
            photon_skip: SkipTable::new(p.logq_photon),
            jit: DeferredGauss::default(),
            jit_tag: Vec::new(),
            p,
        }
    }

    pub fn pulses_done(&self) -> f64 {
        self.next_pulse
    }

    /// New derived parameters (link.ts `derive()`): photon and dark schedules are redrawn at the
    /// next batch. The detector count must not change.
    pub fn set_params(&mut self, p: LinkParams) {
        assert_eq!(p.det_channel.len(), self.p.det_channel.len(), "detector count changed");
        self.photon_skip.ensure(p.logq_photon);
        self.p = p;
        self.need_redraw = true;
    }

    /// Clock change (link.ts `setClock`): no redraw.
    pub fn set_clock(&mut self, drift: f64, clock_phase: f64, jitter_sigma: f64) {
        self.p.drift = drift;
        self.p.clock_phase = clock_phase;
        self.p.jitter_sigma = jitter_sigma;
    }

    fn geometric(&mut self, logq: f64, p: f64) -> f64 {
        if p <= 0.0 {
            return f64::INFINITY;
        }
        if p >= 1.0 {
            return 0.0;
        }
        floor_fast(js_log(self.rng.uniform()) / logq)
    }

    fn draw_dark(&mut self, d: usize, from_slot: f64) {
        let s = from_slot + self.geometric(self.p.logq_dark, self.p.p_dark);
        self.next_dark_slot[d] = s;
        let t = self.p.period_ps;
        self.next_dark_tau[d] = if s == f64::INFINITY {
            f64::INFINITY
        } else if self.p.free_running {
            s * t + (self.rng.uniform() - 0.5) * t
        } else {
            s * t
        };
    }

    fn redraw(&mut self) {
        let from = self.next_pulse;
        if self.with_source {
            let p = self.p.p_photon_max;
            self.next_photon = if p <= 0.0 {
                f64::INFINITY
            } else if p >= 1.0 {
                from
            } else {
                from + floor_fast(js_log(self.rng_skip.uniform()) / self.p.logq_photon)
            };
        } else {
            self.next_photon = from + self.geometric(self.p.logq_photon, self.p.p_photon_max);
        }
        for d in 0..self.p.det_channel.len() {
            self.draw_dark(d, from);
        }
        self.need_redraw = false;
    }

    /// With a source device: the photon candidates of pulses [next, p1) (redrawing the schedules
    /// first if a setting changed). The caller fetches Alice's choices at them and calls
    /// `simulate(p1, Some(choices))`. Without a source device: empty.
    pub fn candidates(&mut self, p1: f64) -> &[f64] {
        if self.need_redraw {
            self.redraw();
        }
        self.cand.clear();
        self.after_cand = f64::INFINITY;
        if self.with_source && self.next_photon < p1 {
            let mut k = self.next_photon;
            let logq = self.p.logq_photon;
            while k < p1 {
                self.cand.push(k);
                // = k + 1 + floor(js_log(rng_skip.uniform()) / logq), by table
                k = k + 1.0 + self.photon_skip.skip(self.rng_skip.next_u32(), logq);
            }
            self.after_cand = k;
        }
        &self.cand
    }

    /// Emulates pulses up to `p1` (exclusive) into the pending columns, sorts the new tail and
    /// emits what lies before the watermark. `choices`: Alice's choices at the candidates (with a
    /// source device; `candidates(p1)` must have been called just before).
    pub fn next_pulses(&mut self, p1: f64, choices: Option<&[u8]>) -> Result<Emitted, String> {
        if self.need_redraw {
            self.redraw();
        }
        let start = self.pending.len();
        if self.with_source && !self.cand.is_empty() {
            let c = choices.ok_or("a link with a source device needs Alice's choices at the candidates")?;
            if c.len() != self.cand.len() {
                return Err(format!("{} choices given for {} candidates", c.len(), self.cand.len()));
            }
        }
        // capacity for the batch's tags (a hint: photons, both photon numbers' double clicks, dark counts)
        let expect = (p1 - self.next_pulse) * (self.p.p_photon_max * 1.1 + self.p.p_dark * self.p.det_channel.len() as f64);
        if expect.is_finite() && expect > 0.0 {
            self.pending.reserve((expect as usize).min(1 << 26) + 64);
        }
        self.simulate(p1, choices);
        self.finish_jitter();
        self.next_pulse = p1;
        sort_tail(&mut self.pending, start);
        Ok(self.emit(p1))
    }

    /// `candidates(p1)`, Alice's choices at them from `apply` (her source device's optics; not
    /// called without candidates), then `next_pulses(p1, choices)`: what the JavaScript side does
    /// with two calls and a round trip of the candidates and choices, in one.
    pub fn next_pulses_sourced(&mut self, p1: f64, apply: impl FnOnce(&[f64]) -> Result<Vec<u8>, String>) -> Result<Emitted, String> {
        self.candidates(p1);
        let mut choices = if self.cand.is_empty() { None } else { Some(apply(&self.cand)?) };
        let r = self.next_pulses(p1, choices.as_deref());
        if let Some(c) = choices.as_mut() {
            // Alice's bits and bases: not left in freed memory
            zeroize::Zeroize::zeroize(c);
        }
        r
    }

    /// Delivers the held-back tags (link.ts `drain()`).
    pub fn drain(&mut self) -> Emitted {
        self.emit(f64::INFINITY)
    }

    fn find_other(&self, p1: f64) -> (f64, usize, bool) {
        let mut other_tau = f64::INFINITY;
        let mut other_det = usize::MAX;
        let mut other_is_ap = false;
        for d in 0..self.p.det_channel.len() {
            let td = if self.next_dark_slot[d] < p1 { self.next_dark_tau[d] } else { f64::INFINITY };
            if td < other_tau {
                other_tau = td;
                other_det = d;
                other_is_ap = false;
            }
            let q = &self.ap_tau[d];
            if !q.is_empty() && self.ap_slot[d][0] < p1 && q[0] < other_tau {
                other_tau = q[0];
                other_det = d;
                other_is_ap = true;
            }
        }
        (other_tau, other_det, other_is_ap)
    }

    fn simulate(&mut self, p1: f64, choices: Option<&[u8]>) {
        let t = self.p.period_ps;
        let (mut other_tau, mut other_det, mut other_is_ap) = self.find_other(p1);
        let cand = std::mem::take(&mut self.cand);
        let use_cand = self.with_source && !cand.is_empty();
        // An active Bob's basis at every candidate, ahead (a function of the pulse alone): the
        // hashes of a tight loop overlap, where inside photon_candidate each was a latency chain.
        let mut basis = std::mem::take(&mut self.cand_basis);
        basis.clear();
        if use_cand && !self.p.passive {
            crate::lab_rng::bob_bases_extend(self.p.bob_keys, self.p.bob_th, &cand, &mut basis);
        }
        let mut ci = 0usize;
        loop {
            let k = self.next_photon;
            let photon_tau = if k < p1 { k * t } else { f64::INFINITY };
            if photon_tau == f64::INFINITY && other_tau == f64::INFINITY {
                break;
            }
            if photon_tau <= other_tau {
                let ap_before = self.ap_scheduled;
                if use_cand {
                    let c = choices.map(|c| c[ci]).unwrap_or(0);
                    let b = if self.p.passive { -1 } else { basis[ci] as i32 };
                    self.photon_candidate(k, photon_tau, c, b);
                    ci += 1;
                    self.next_photon = if ci < cand.len() { cand[ci] } else { self.after_cand };
                } else {
                    let c = alice_choice(self.p.alice_keys, self.p.alice_th, k);
                    let b = if self.p.passive { -1 } else { bob_basis(self.p.bob_keys, self.p.bob_th, k) as i32 };
                    self.photon_candidate(k, photon_tau, c, b);
                    self.next_photon = k + 1.0 + self.photon_skip.skip(self.rng.next_u32(), self.p.logq_photon);
                }
                if self.ap_scheduled != ap_before {
                    (other_tau, other_det, other_is_ap) = self.find_other(p1);
                }
            } else {
                let d = other_det;
                if other_is_ap {
                    let tau = self.ap_tau[d].remove(0);
                    let slot = self.ap_slot[d].remove(0);
                    self.click(d, tau, slot, KIND_AFTERPULSE, -1.0);
                } else {
                    let slot = self.next_dark_slot[d];
                    self.click(d, self.next_dark_tau[d], slot, KIND_DARK, -1.0);
                    self.draw_dark(d, slot + 1.0);
                }
                (other_tau, other_det, other_is_ap) = self.find_other(p1);
            }
        }
        self.cand = cand;
        self.cand_basis = basis;
    }

    /// `active_basis`: an active Bob's basis at pulse k (0 Z, 1 X), -1 for a passive Bob.
    fn photon_candidate(&mut self, k: f64, tau: f64, c: u8, active_basis: i32) {
        let intensity = ((c >> 2) & 3) as usize;
        let ratio = self.p.ratio[intensity];
        let mut u = self.rng.uniform();
        if u >= ratio {
            return;
        }
        u /= ratio;
        let cdf = &self.p.pois_cdf[intensity];
        let mut m = 1usize;
        while m < cdf.len() && u > cdf[m - 1] {
            m += 1;
        }
        let mut s_basis = ((c >> 1) & 1) as u32;
        let mut s_bit = (c & 1) as u32;
        if self.p.eve_fraction > 0.0 && self.rng.uniform() < self.p.eve_fraction {
            let eb = self.rng.next_u32() & 1;
            let ebit = if eb == s_basis { s_bit } else { self.rng.next_u32() & 1 };
            s_basis = eb;
            s_bit = ebit;
        }
        let ed = self.p.ed;
        let mut mask: u32 = 0;
        for _ in 0..m {
            let g = if active_basis >= 0 {
                active_basis as u32
            } else {
                u32::from(self.rng.next_u32() as u64 >= self.p.bob_th)
            };
            // Either branch draws one word: uniform() < ed in Bob's basis (misalignment), the word's
            // low bit in the other. Selected without a branch (the bases agree at random).
            let r = self.rng.next_u32();
            let flip = u32::from(uniform_of(r) < ed);
            let bit = if g == s_basis { s_bit ^ flip } else { r & 1 };
            // a -1 entry (no detector for this basis and bit) shifts like JS `1 << -1` (bit 31)
            let det = self.p.det_by_basis_bit[(g * 2 + bit) as usize] as i32;
            mask |= 1u32.wrapping_shl(det as u32 & 31);
        }
        // the detectors that clicked, in increasing order
        while mask != 0 {
            let d = mask.trailing_zeros() as usize;
            self.click(d, tau, k, KIND_PHOTON, k);
            mask &= mask - 1;
        }
    }

    fn click(&mut self, d: usize, tau: f64, slot: f64, kind: u8, pulse: f64) {
        // A mask bit beyond the detectors (a missing basis/bit mapping) reads undefined in the
        // TypeScript: every comparison with it is false, so the click is kept with NaN fields.
        // Presets are validated so that this does not happen; mirror it anyway.
        let n = self.p.det_channel.len();
        let last = if d < n { self.last_click[d] } else { f64::NAN };
        if tau == last || tau - last < self.p.dead_time {
            return;
        }
        if d < n {
            self.last_click[d] = tau;
        }
        if self.p.ap_prob > 0.0 && self.rng.uniform() < self.p.ap_prob {
            self.schedule_afterpulse(d, tau);
        }
        let t = tau + self.p.fibre_delay;
        let delay = if d < n { self.p.delays[d] } else { f64::NAN };
        let tb = t + self.p.drift * t + self.p.clock_phase + delay;
        let ch = if d < n { self.p.det_channel[d] } else { 0 };
        if self.p.jitter_sigma > 0.0 {
            // tb + sigma·gauss(), rounded: the Gaussian's words are drawn now (the stream's order),
            // its value computed for the whole batch in finish_jitter
            let (pair, mult) = self.jit.draw(&mut self.rng);
            self.jit_tag.push(JitTag { tag: self.pending.len(), pair, mult });
            self.pending.push(tb, ch, pulse, kind, slot);
        } else {
            self.pending.push(js_round(tb), ch, pulse, kind, slot);
        }
    }

    /// The jitter of the batch's tags (`tb + sigma·z`, rounded, as click() did inline) and the
    /// spare of the last pair back into the random stream's cache.
    fn finish_jitter(&mut self) {
        if self.jit_tag.is_empty() && self.jit.is_idle() {
            return;
        }
        self.jit.finish_pairs();
        let sigma = self.p.jitter_sigma;
        let time = &mut self.pending.time;
        for j in &self.jit_tag {
            let t = &mut time[j.tag];
            *t = js_round(*t + sigma * self.jit.value(j.pair, j.mult));
        }
        self.jit.finish(&mut self.rng);
        self.jit_tag.clear();
    }

    fn schedule_afterpulse(&mut self, d: usize, tau: f64) {
        let mut ap_tau = tau + self.p.dead_time - self.p.ap_decay * js_log(self.rng.uniform());
        let ap_slot;
        let t = self.p.period_ps;
        if self.p.free_running {
            ap_slot = floor_fast(ap_tau / t + 0.5);
        } else {
            ap_slot = (ap_tau / t).ceil();
            ap_tau = ap_slot * t;
        }
        if d < self.ap_tau.len() {
            let q = &mut self.ap_tau[d];
            let mut i = q.len();
            while i > 0 && q[i - 1] > ap_tau {
                i -= 1;
            }
            q.insert(i, ap_tau);
            self.ap_slot[d].insert(i, ap_slot);
        }
        self.ap_scheduled += 1;
    }

    fn watermark(&self, p1: f64) -> f64 {
        if p1 == f64::INFINITY {
            return f64::INFINITY;
        }
        let mut min_delay = f64::INFINITY;
        for &d in &self.p.delays {
            min_delay = min_delay.min(d);
        }
        let t = (p1 - 0.5) * self.p.period_ps + self.p.fibre_delay;
        t + self.p.drift * t + self.p.clock_phase + min_delay - 6.0 * self.p.jitter_sigma - 2.0
    }

    fn emit(&mut self, p1: f64) -> Emitted {
        let w = self.watermark(p1);
        let src = &mut self.pending;
        let mut n = 0;
        while n < src.len() && src.time[n] < w {
            n += 1;
        }
        // Copies out (the JS side owns what it gets): the pending columns keep their capacity, so
        // the next batch writes into pages already mapped (handing the columns themselves out
        // made every batch fault in fresh pages for them: more page clearing than the copies).
        let mut out = Emitted {
            time_ps: src.time[..n].iter().map(|&t| t as i64).collect(),
            channel: src.ch[..n].to_vec(),
            ..Emitted::default()
        };
        src.time.drain(..n);
        src.ch.drain(..n);
        if src.truth {
            out.truth_pulse = src.pulse[..n].to_vec();
            out.truth_kind = src.kind[..n].to_vec();
            out.truth_slot = src.slot[..n].to_vec();
            src.pulse.drain(..n);
            src.kind.drain(..n);
            src.slot.drain(..n);
        }
        out
    }
}

/// Insertion sort of c[start..] into the sorted prefix by time (stable; link.ts `sortTail`).
fn sort_tail(c: &mut Columns, start: usize) {
    if !c.truth {
        return sort_tail_tags(c, start);
    }
    let n = c.len();
    for i in start.max(1)..n {
        let t = c.time[i];
        if c.time[i - 1] <= t {
            continue;
        }
        let (cc, pp, kk, ss) = (c.ch[i], c.pulse[i], c.kind[i], c.slot[i]);
        let mut j = i;
        while j > 0 && c.time[j - 1] > t {
            c.time[j] = c.time[j - 1];
            c.ch[j] = c.ch[j - 1];
            c.pulse[j] = c.pulse[j - 1];
            c.kind[j] = c.kind[j - 1];
            c.slot[j] = c.slot[j - 1];
            j -= 1;
        }
        c.time[j] = t;
        c.ch[j] = cc;
        c.pulse[j] = pp;
        c.kind[j] = kk;
        c.slot[j] = ss;
    }
}

/// `sort_tail` of the time and channel columns alone (no truth columns).
fn sort_tail_tags(c: &mut Columns, start: usize) {
    let n = c.len();
    for i in start.max(1)..n {
        let t = c.time[i];
        if c.time[i - 1] <= t {
            continue;
        }
        let cc = c.ch[i];
        let mut j = i;
        while j > 0 && c.time[j - 1] > t {
            c.time[j] = c.time[j - 1];
            c.ch[j] = c.ch[j - 1];
            j -= 1;
        }
        c.time[j] = t;
        c.ch[j] = cc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_gauss_is_gauss() {
        // Batches of random length (a spare carried over or not), values and the stream's state
        // after each batch equal to gauss() on a twin stream; enough pairs that some fall below
        // GAUSS_SURE_S (the draw-time truncation check).
        let mut sure_checked = 0;
        for seed in 0..3u32 {
            let mut a = Xoshiro128::from_state([seed, 0x1234_5678, 0x9abc_def0, 7]);
            let mut b = a.clone();
            let mut sizes = Xoshiro128::from_state([seed, 1, 2, 3]);
            let mut dg = DeferredGauss::default();
            let mut drawn = 0usize;
            while drawn < 8_000_000 {
                let n = (sizes.next_u32() % 5000) as usize + if sizes.next_u32() % 4 == 0 { 0 } else { 1 };
                let d: Vec<(u32, f64)> = (0..n).map(|_| dg.draw(&mut b)).collect();
                sure_checked += dg.pair.iter().filter(|&&s| s < GAUSS_SURE_S).count();
                dg.finish_pairs();
                for (i, &(p, m)) in d.iter().enumerate() {
                    let want = a.gauss();
                    assert_eq!(dg.value(p, m).to_bits(), want.to_bits(), "seed {seed}, draw {}", drawn + i);
                }
                dg.finish(&mut b);
                drawn += n;
                // same stream position and the same spare
                assert_eq!(a.clone().gauss().to_bits(), b.clone().gauss().to_bits());
                let (mut a2, mut b2) = (a.clone(), b.clone());
                assert_eq!(a2.next_u32(), b2.next_u32());
            }
        }
        assert!(sure_checked > 0, "no pair below GAUSS_SURE_S");
    }
}
