//! Per-click part of Bob's clock synchronisation: buffering before lock, pulse indexing and the
//! tracking loop once locked, and the periodic pattern check's scoring. The rare, expensive
//! acquisition (FFT cross-correlation over ~150 ms of data) stays in TypeScript
//! (src/timing/acquire.ts); it hands its clock model in through [`Tracker::lock`].
//!
//! This is a line-by-line port of the TypeScript reference tracker (src/timing/sync.ts,
//! `ReferenceTracker`); the property test test/timing/sync-native.test.ts proves both give the
//! same pulse indices, channels, residuals and sequence numbers, bit for bit, on random seeds.
//! Bit-exactness rules followed here: the same floating-point operations in the same order (no
//! FMA, no reassociation), JavaScript's `Math.round` (ties towards +inf, see [`js_round`]), and no
//! transcendental functions (the one the loop needs, the expected in-window fraction, is computed
//! by the caller at lock time, since libm and V8 may differ in the last ulp).
//!
//! Algorithm (docs/timing.md, "Tracking"): each click gets u = pFrac + dt (rate + accel dt / 2),
//! index = pInt + round(u). Per tracking window the trimmed mean residual gives one measurement of
//! the pulse position; a weighted least-squares quadratic through the last second's measurements
//! re-sets phase, rate and rate change. Lock is dropped after `loss_windows` incoherent windows
//! or when a pattern check fails; a slip of up to `max_channel_skew_pulses` is repaired.
//!
//! Control flow is a resumable scan: [`Tracker::scan`] runs over one batch until a click needs
//! Alice's pattern (an acquisition is due, or a pattern check), and returns which; the caller
//! answers (over the classical channel, asynchronously) and calls `scan` again from the cursor.

const HIST_SPAN_PS: f64 = 1e12;
const HIST_MAX: usize = 64;
const HIST_QUAD_MIN_SPAN_PS: f64 = 20e9;

/// What stopped a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The batch (or the drained buffer) is done.
    End = 0,
    /// The acquisition buffer is ready: run an acquisition, then `lock` or `acquire_failed`.
    Acquire = 1,
    /// A pattern check is due: `verify_sample`, `verify_first`, maybe `verify_slip`.
    Verify = 2,
}

#[derive(Debug, Clone)]
pub struct TrackerOptions {
    pub period_ps: f64,
    /// Acceptance half-window around the expected arrival, ps.
    pub window_ps: f64,
    pub acquire_span_ps: f64,
    pub acquire_min_clicks: f64,
    pub max_acquire_span_ps: f64,
    pub track_window_ps: f64,
    pub track_min_clicks: f64,
    pub gap_ps: f64,
    pub verify_every_ps: f64,
    pub verify_clicks: usize,
    pub verify_delay_ps: f64,
    pub loss_windows: u32,
    pub min_confidence: f64,
    pub max_channel_skew_pulses: i32,
    pub first_pulse: f64,
    pub with_seq: bool,
    /// Channels to index (None: all).
    pub channels: Option<Vec<u8>>,
    /// Known per-channel delays removed first, ps.
    pub pre_delay_ps: [f64; 256],
}

/// The clock model (the same fields as the TypeScript `ClockModel`).
#[derive(Debug, Clone)]
pub struct Model {
    pub t_ref_ps: f64,
    pub p_int: f64,
    pub p_frac: f64,
    pub rate_per_ps: f64,
    pub accel_per_ps2: f64,
    pub delay_ps: [f64; 256],
    pub ref_channel: i32,
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub emitted: u64,
    pub outside_window: u64,
    pub ignored_channel: u64,
    pub slips_repaired: u64,
    pub lock_losses: u64,
    pub checks_skipped: u64,
}

/// Detections labelled so far (taken by the caller after each batch).
#[derive(Debug, Default)]
pub struct Output {
    pub pulse: Vec<f64>,
    pub channel: Vec<u8>,
    pub residual_ps: Vec<f32>,
    pub seq: Vec<f64>,
}

/// JavaScript's `Math.round`: nearest integer, ties towards +infinity. `x - floor(x)` is exact.
#[inline(always)]
pub fn js_round(x: f64) -> f64 {
    // floor without a libm call on baseline x86-64 (no SSE4.1 roundsd): truncate through i64,
    // exact for |x| < 2^52 (every value here: pulse offsets within one data span).
    let f = if x.abs() < 4.5e15 {
        let tr = (x as i64) as f64;
        if tr > x {
            tr - 1.0
        } else {
            tr
        }
    } else {
        x.floor()
    };
    if x - f >= 0.5 {
        f + 1.0
    } else {
        f
    }
}

/// `js_round` through `f64::floor`: one `roundsd` where SSE4.1 is enabled (the same value).
#[inline(always)]
fn js_round_floor(x: f64) -> f64 {
    let f = x.floor();
    if x - f >= 0.5 {
        f + 1.0
    } else {
        f
    }
}

/// Why a fast run (`track_run`) stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The batch is done.
    End,
    /// The last click handled made a pattern check due (its window close is owed).
    Due,
    /// The last click handled closed the tracking window.
    Closed,
    /// The next click needs the general path (a gap before it, or a channel not indexed).
    Blocked,
}

pub struct Tracker {
    o: TrackerOptions,
    accept: [bool; 256],
    accept_all: bool,
    locked: bool,
    model: Option<Model>,
    score: [f64; 256],
    sigma: f64,
    expected_in_frac: f64,
    // Acquisition buffer.
    buf_t: Vec<f64>,
    buf_c: Vec<u8>,
    buf_s: Vec<f64>,
    buf_start: f64,
    last_attempt_n: usize,
    seq: f64,
    // Drain of the buffer after a lock.
    drain_t: Vec<f64>,
    drain_c: Vec<u8>,
    drain_s: Vec<f64>,
    drain_pos: usize,
    draining: bool,
    // Tracking window.
    w_n: f64,
    w_in: f64,
    w_sum_r: f64,
    w_sum_dt: f64,
    w_start: f64,
    last_t: f64,
    h_t: [f64; HIST_MAX + 1],
    h_u: [f64; HIST_MAX + 1],
    h_w: [f64; HIST_MAX + 1],
    h_n: usize,
    h_origin: f64,
    bad_windows: u32,
    // Pattern check.
    next_verify_at: f64,
    v_idx: Vec<f64>,
    verify_due_at: f64,
    check_idx: Vec<f64>,
    check_z0: f64,
    check_t: f64,
    /// After a Verify event: the click time whose window close is still owed.
    pending_close: Option<f64>,
    cursor: usize,
    confidence: f64,
    last_lock_loss_at: f64,
    pub stats: Stats,
    /// Tags seen per channel (accepted or not).
    pub tags_per_channel: [u64; 256],
    pub out: Output,
}

impl Tracker {
    pub fn new(o: TrackerOptions) -> Tracker {
        let mut accept = [false; 256];
        let accept_all = o.channels.is_none();
        for &c in o.channels.iter().flatten() {
            accept[c as usize] = true;
        }
        Tracker {
            o,
            accept,
            accept_all,
            locked: false,
            model: None,
            score: [0.0; 256],
            sigma: 1.0,
            expected_in_frac: 1.0,
            buf_t: Vec::with_capacity(1 << 16),
            buf_c: Vec::with_capacity(1 << 16),
            buf_s: Vec::new(),
            buf_start: f64::NAN,
            last_attempt_n: 0,
            seq: 0.0,
            drain_t: Vec::new(),
            drain_c: Vec::new(),
            drain_s: Vec::new(),
            drain_pos: 0,
            draining: false,
            w_n: 0.0,
            w_in: 0.0,
            w_sum_r: 0.0,
            w_sum_dt: 0.0,
            w_start: f64::NAN,
            last_t: f64::NAN,
            h_t: [0.0; HIST_MAX + 1],
            h_u: [0.0; HIST_MAX + 1],
            h_w: [0.0; HIST_MAX + 1],
            h_n: 0,
            h_origin: 0.0,
            bad_windows: 0,
            next_verify_at: f64::NAN,
            v_idx: Vec::new(),
            verify_due_at: f64::NAN,
            check_idx: Vec::new(),
            check_z0: 0.0,
            check_t: f64::NAN,
            pending_close: None,
            cursor: 0,
            confidence: 0.0,
            last_lock_loss_at: f64::NAN,
            stats: Stats::default(),
            tags_per_channel: [0; 256],
            out: Output::default(),
        }
    }

    pub fn locked(&self) -> bool {
        self.locked
    }
    pub fn model(&self) -> Option<&Model> {
        self.model.as_ref()
    }
    pub fn confidence(&self) -> f64 {
        self.confidence
    }
    pub fn set_confidence(&mut self, z: f64) {
        self.confidence = z;
    }
    /// Bob time of the last loss of lock (NaN: none).
    pub fn last_lock_loss_at(&self) -> f64 {
        self.last_lock_loss_at
    }
    /// Input position after the last `scan`.
    pub fn cursor(&self) -> usize {
        self.cursor
    }
    pub fn buffered(&self) -> usize {
        self.buf_t.len()
    }

    fn owe_close(&mut self) {
        if let Some(t) = self.pending_close.take() {
            self.maybe_close_window(t);
        }
    }

    /// Clicks `from..` of the batch until one needs the pattern. `t` are the tagger's times (ps,
    /// exact below 2^53), `ch` their channels (same length, checked by the caller).
    pub fn scan(&mut self, t: &[i64], ch: &[u8], from: usize) -> Event {
        self.owe_close();
        let n = t.len().min(ch.len());
        let mut i = from;
        if self.locked {
            let need = n.saturating_sub(i);
            self.out.pulse.reserve(need);
            self.out.channel.reserve(need);
            self.out.residual_ps.reserve(need);
            if self.o.with_seq {
                self.out.seq.reserve(need);
            }
        }
        while i < n {
            // Fast path: runs of clicks with no gap, no check and no window close due.
            if self.locked {
                let (j, stop) = self.track_run(t, ch, i, n);
                self.seq += (j - i) as f64;
                i = j;
                match stop {
                    Stop::End => break,
                    Stop::Due => {
                        self.cursor = i;
                        return Event::Verify;
                    }
                    Stop::Closed => continue,
                    Stop::Blocked => {} // click i: the general path below
                }
            }
            let c = ch[i];
            // every click of a batch passes here or through track_run once: counted where consumed
            self.tags_per_channel[c as usize] += 1;
            if !self.accept_all && !self.accept[c as usize] {
                self.stats.ignored_channel += 1;
                i += 1;
                self.seq += 1.0;
                continue;
            }
            let ti = t[i] as f64 - self.o.pre_delay_ps[c as usize];
            if !self.locked {
                self.buffer(ti, c);
                i += 1;
                self.seq += 1.0;
                if self.ready_to_acquire() {
                    self.cursor = i;
                    return Event::Acquire;
                }
                continue;
            }
            let s = self.seq;
            self.track(ti, c, s);
            i += 1;
            self.seq += 1.0;
            if ti >= self.verify_due_at {
                self.cursor = i;
                self.pending_close = Some(ti);
                return Event::Verify;
            }
            self.maybe_close_window(ti);
        }
        self.cursor = n;
        Event::End
    }

    /// The common case of `track` + checks, with the model and window in locals: clicks from `i`
    /// on while none has a gap before it, and none makes a check or a window close due (the same
    /// operations in the same order as `track`). Returns the first click it did not handle, or
    /// the one after a click that made a check or close due (having done what `scan` would do).
    fn track_run(&mut self, t: &[i64], ch: &[u8], i: usize, n: usize) -> (usize, Stop) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sse4.1") {
            // SAFETY: the CPU has SSE4.1.
            return unsafe { self.track_run_sse41(t, ch, i, n) };
        }
        self.track_run_with(t, ch, i, n, js_round)
    }

    /// `track_run` compiled with SSE4.1: the rounding is one instruction (same values).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.1")]
    unsafe fn track_run_sse41(&mut self, t: &[i64], ch: &[u8], i: usize, n: usize) -> (usize, Stop) {
        self.track_run_with(t, ch, i, n, js_round_floor)
    }

    #[inline(always)]
    fn track_run_with(&mut self, t: &[i64], ch: &[u8], mut i: usize, n: usize, round: impl Fn(f64) -> f64) -> (usize, Stop) {
        let Some(m) = self.model.as_ref() else { return (i, Stop::Blocked) };
        let (with_seq, seq0, i0) = (self.o.with_seq, self.seq, i);
        let mut stop = Stop::End;
        let (p_int, p_frac, t_ref, rate, acc) = (m.p_int, m.p_frac, m.t_ref_ps, m.rate_per_ps, m.accel_per_ps2);
        // a residual in ps is r · (1/rate): one division per run, not per click (the reference alike)
        let inv_rate = 1.0 / rate;
        let delay = &m.delay_ps;
        let pre = &self.o.pre_delay_ps;
        let (gap, window_ps, min_clicks, track_window) = (self.o.gap_ps, self.o.window_ps, self.o.track_min_clicks, self.o.track_window_ps);
        let (mut w_n, mut w_in, mut w_sum_r, mut w_sum_dt, mut w_start, mut last_t) = (self.w_n, self.w_in, self.w_sum_r, self.w_sum_dt, self.w_start, self.last_t);
        let mut outside = 0u64;
        let per = &mut self.tags_per_channel;
        // the output columns as locals: their lengths stay in registers (not reloaded through self)
        let mut pulse = std::mem::take(&mut self.out.pulse);
        let mut channel = std::mem::take(&mut self.out.channel);
        let mut residual = std::mem::take(&mut self.out.residual_ps);
        while i < n {
            let c = ch[i];
            if !self.accept_all && !self.accept[c as usize] {
                stop = Stop::Blocked;
                break;
            }
            let ti = t[i] as f64 - pre[c as usize];
            if (ti - last_t).abs() > gap {
                stop = Stop::Blocked; // the general path closes the window first
                break;
            }
            last_t = ti;
            if w_start.is_nan() {
                w_start = ti;
            }
            let dt = ti - delay[c as usize] - t_ref;
            let u = p_frac + dt * (rate + 0.5 * acc * dt);
            let idx = round(u);
            let r = u - idx;
            w_n += 1.0;
            if r > -0.25 && r < 0.25 {
                w_in += 1.0;
                w_sum_r += r;
                w_sum_dt += ti - t_ref;
            }
            let r_ps = r * inv_rate;
            i += 1;
            per[c as usize] += 1;
            if r_ps.abs() <= window_ps {
                let p = p_int + idx;
                pulse.push(p);
                channel.push(c);
                residual.push(r_ps as f32);
                if with_seq {
                    self.out.seq.push(seq0 + (i - 1 - i0) as f64);
                }
                if self.next_verify_at.is_nan() {
                    self.next_verify_at = ti;
                }
                if ti >= self.next_verify_at && self.v_idx.len() < self.o.verify_clicks {
                    self.v_idx.push(p);
                    if self.v_idx.len() >= self.o.verify_clicks {
                        self.verify_due_at = ti + self.o.verify_delay_ps;
                    }
                }
            } else {
                outside += 1;
            }
            if ti >= self.verify_due_at {
                self.pending_close = Some(ti);
                stop = Stop::Due;
                break;
            }
            if w_n >= min_clicks && ti - w_start >= track_window {
                stop = Stop::Closed;
                break;
            }
        }
        self.out.pulse = pulse;
        self.out.channel = channel;
        self.out.residual_ps = residual;
        self.w_n = w_n;
        self.w_in = w_in;
        self.w_sum_r = w_sum_r;
        self.w_sum_dt = w_sum_dt;
        self.w_start = w_start;
        self.last_t = last_t;
        self.stats.outside_window += outside;
        if stop == Stop::Closed {
            self.close_window(); // maybe_close_window's condition held (and we are locked)
        }
        (i, stop)
    }

    fn buffer(&mut self, t: f64, c: u8) {
        if self.o.with_seq {
            self.buf_s.push(self.seq);
        }
        if self.buf_t.is_empty() {
            self.buf_start = t;
        }
        self.buf_t.push(t);
        self.buf_c.push(c);
    }

    fn ready_to_acquire(&self) -> bool {
        let n = self.buf_t.len();
        let span = self.buf_t[n - 1] - self.buf_start;
        let nf = n as f64;
        let last = self.last_attempt_n as f64;
        if span >= self.o.max_acquire_span_ps {
            return nf > last * 1.5 + 16.0;
        }
        span >= self.o.acquire_span_ps && nf >= self.o.acquire_min_clicks && nf > last * 1.5
    }

    /// The acquisition buffer (times corrected by the known delays, channels); starts an attempt.
    pub fn acquisition_buffer(&mut self) -> (&[f64], &[u8]) {
        self.last_attempt_n = self.buf_t.len();
        (&self.buf_t, &self.buf_c)
    }

    /// The attempt failed: past the longest span, keep only the newer half and wait for more.
    pub fn acquire_failed(&mut self) {
        let n = self.buf_t.len();
        if n > 0 && self.buf_t[n - 1] - self.buf_start >= self.o.max_acquire_span_ps {
            let h = n >> 1;
            self.buf_t.drain(0..h);
            self.buf_c.drain(0..h);
            if self.o.with_seq {
                self.buf_s.drain(0..h);
            }
            self.buf_start = self.buf_t[0];
            self.last_attempt_n = 0;
        }
    }

    /// Lock with the model an acquisition found; `score`/`sigma` the pattern check's table,
    /// `expected_in_frac` the coherent fraction expected in a tracking window. The buffered clicks
    /// are then labelled by `drain`.
    pub fn lock(&mut self, model: Model, score: &[f64; 256], sigma: f64, expected_in_frac: f64) {
        self.model = Some(model);
        self.score = *score;
        self.sigma = sigma;
        self.expected_in_frac = expected_in_frac;
        self.locked = true;
        self.bad_windows = 0;
        self.reset_window();
        self.h_n = 0;
        self.next_verify_at = f64::NAN;
        self.verify_due_at = f64::NAN;
        self.v_idx.clear();
        std::mem::swap(&mut self.buf_t, &mut self.drain_t);
        std::mem::swap(&mut self.buf_c, &mut self.drain_c);
        std::mem::swap(&mut self.buf_s, &mut self.drain_s);
        self.buf_t.clear();
        self.buf_c.clear();
        self.buf_s.clear();
        self.drain_pos = 0;
        self.draining = true;
        self.last_attempt_n = 0;
    }

    /// Labels the buffered clicks after a lock (End when done, Verify when a check is due).
    pub fn drain(&mut self) -> Event {
        self.owe_close();
        if !self.draining {
            return Event::End;
        }
        let n = self.drain_t.len();
        let need = n - self.drain_pos;
        self.out.pulse.reserve(need);
        self.out.channel.reserve(need);
        self.out.residual_ps.reserve(need);
        while self.drain_pos < n && self.locked {
            let i = self.drain_pos;
            let (t, c) = (self.drain_t[i], self.drain_c[i]);
            let s = if self.o.with_seq { self.drain_s[i] } else { 0.0 };
            self.track(t, c, s);
            self.drain_pos += 1;
            if t >= self.verify_due_at {
                self.pending_close = Some(t);
                return Event::Verify;
            }
            self.maybe_close_window(t);
        }
        self.draining = false;
        self.drain_t.clear();
        self.drain_c.clear();
        self.drain_s.clear();
        Event::End
    }

    fn reset_window(&mut self) {
        self.w_n = 0.0;
        self.w_in = 0.0;
        self.w_sum_r = 0.0;
        self.w_sum_dt = 0.0;
        self.w_start = f64::NAN;
    }

    #[inline(always)]
    fn track(&mut self, t: f64, c: u8, seq: f64) {
        if !self.last_t.is_nan() && (t - self.last_t).abs() > self.o.gap_ps {
            self.close_window();
        }
        self.last_t = t;
        if self.w_start.is_nan() {
            self.w_start = t;
        }
        let m = self.model.as_ref().expect("track without a model");
        let dt = t - m.delay_ps[c as usize] - m.t_ref_ps;
        let u = m.p_frac + dt * (m.rate_per_ps + 0.5 * m.accel_per_ps2 * dt);
        let idx = js_round(u);
        let r = u - idx;
        self.w_n += 1.0;
        if r > -0.25 && r < 0.25 {
            self.w_in += 1.0;
            self.w_sum_r += r;
            self.w_sum_dt += t - m.t_ref_ps;
        }
        let r_ps = r * (1.0 / m.rate_per_ps);
        if r_ps.abs() <= self.o.window_ps {
            let p = m.p_int + idx;
            self.out.pulse.push(p);
            self.out.channel.push(c);
            self.out.residual_ps.push(r_ps as f32);
            if self.o.with_seq {
                self.out.seq.push(seq);
            }
            if self.next_verify_at.is_nan() {
                self.next_verify_at = t;
            }
            if t >= self.next_verify_at && self.v_idx.len() < self.o.verify_clicks {
                self.v_idx.push(p);
                if self.v_idx.len() >= self.o.verify_clicks {
                    self.verify_due_at = t + self.o.verify_delay_ps;
                }
            }
        } else {
            self.stats.outside_window += 1;
        }
    }

    #[inline(always)]
    fn maybe_close_window(&mut self, t: f64) {
        if self.locked && self.w_n >= self.o.track_min_clicks && t - self.w_start >= self.o.track_window_ps {
            self.close_window();
        }
    }

    fn close_window(&mut self) {
        if self.model.is_none() || !self.locked {
            return;
        }
        if self.w_n < self.o.track_min_clicks.min(50.0) {
            self.reset_window();
            return;
        }
        let in_frac = self.w_in / self.w_n;
        if in_frac - 0.5 < 0.35 * (self.expected_in_frac - 0.5) {
            self.bad_windows += 1;
            if self.bad_windows >= self.o.loss_windows {
                let t = self.last_t;
                self.lose_lock(t);
                return;
            }
            self.reset_window();
            return;
        }
        self.bad_windows = 0;
        let e = self.w_sum_r / self.w_in;
        let (p_int, p_frac, t_ref, rate, accel) = {
            let m = self.model.as_ref().unwrap();
            (m.p_int, m.p_frac, m.t_ref_ps, m.rate_per_ps, m.accel_per_ps2)
        };
        let tw = t_ref + self.w_sum_dt / self.w_in;
        let dtw = tw - t_ref;
        let p_pred = p_frac + dtw * (rate + 0.5 * accel * dtw);
        if self.h_n == 0 {
            self.h_origin = p_int;
        }
        let w = self.w_in;
        self.push_history(tw, p_int - self.h_origin + p_pred - e, w);
        let fit = self.fit_history(tw);
        let a = match fit {
            Some((a, _, _)) => a,
            None => p_int - self.h_origin + p_pred - e,
        };
        let fl = a.floor();
        let h_origin = self.h_origin;
        let m = self.model.as_mut().unwrap();
        m.p_int = h_origin + fl;
        m.p_frac = a - fl;
        m.t_ref_ps = tw;
        match fit {
            Some((_, b, c2)) => {
                m.rate_per_ps = b;
                m.accel_per_ps2 = c2;
            }
            None => m.rate_per_ps += m.accel_per_ps2 * dtw,
        }
        self.reset_window();
    }

    fn push_history(&mut self, t: f64, u: f64, w: f64) {
        let mut k = 0;
        while k < self.h_n && (t - self.h_t[k] > HIST_SPAN_PS || self.h_n - k >= HIST_MAX) {
            k += 1;
        }
        if k > 0 {
            self.h_t.copy_within(k..self.h_n, 0);
            self.h_u.copy_within(k..self.h_n, 0);
            self.h_w.copy_within(k..self.h_n, 0);
            self.h_n -= k;
        }
        self.h_t[self.h_n] = t;
        self.h_u[self.h_n] = u;
        self.h_w[self.h_n] = w;
        self.h_n += 1;
    }

    /// Weighted LS fit u = a + b x + c x^2, x = t - tw; returns (a, b, 2c) in unscaled units.
    fn fit_history(&self, tw: f64) -> Option<(f64, f64, f64)> {
        let n = self.h_n;
        if n < 2 {
            return None;
        }
        let span = tw - self.h_t[0];
        if !(span > 0.0) {
            return None;
        }
        let quad = n >= 5 && span >= HIST_QUAD_MIN_SPAN_PS;
        let (mut s0, mut s1, mut s2, mut s3, mut s4, mut y0, mut y1, mut y2) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        let u0 = self.h_u[n - 1];
        for i in 0..n {
            let x = (self.h_t[i] - tw) / span;
            let y = self.h_u[i] - u0;
            let w = self.h_w[i];
            let x2 = x * x;
            s0 += w;
            s1 += w * x;
            s2 += w * x2;
            s3 += w * x2 * x;
            s4 += w * x2 * x2;
            y0 += w * y;
            y1 += w * x * y;
            y2 += w * x2 * y;
        }
        let (a, b, c);
        if quad {
            let det = s0 * (s2 * s4 - s3 * s3) - s1 * (s1 * s4 - s3 * s2) + s2 * (s1 * s3 - s2 * s2);
            if !(det.abs() > 1e-300) {
                return None;
            }
            a = (y0 * (s2 * s4 - s3 * s3) - s1 * (y1 * s4 - s3 * y2) + s2 * (y1 * s3 - s2 * y2)) / det;
            b = (s0 * (y1 * s4 - y2 * s3) - y0 * (s1 * s4 - s3 * s2) + s2 * (s1 * y2 - y1 * s2)) / det;
            c = (s0 * (s2 * y2 - s3 * y1) - s1 * (s1 * y2 - y1 * s2) + y0 * (s1 * s3 - s2 * s2)) / det;
        } else {
            let det = s0 * s2 - s1 * s1;
            if !(det.abs() > 1e-300) {
                return None;
            }
            a = (y0 * s2 - s1 * y1) / det;
            b = (s0 * y1 - s1 * y0) / det;
            c = 0.0;
        }
        Some((a + u0, b / span, (2.0 * c) / (span * span)))
    }

    fn lose_lock(&mut self, t: f64) {
        self.locked = false;
        self.last_lock_loss_at = t;
        self.stats.lock_losses += 1;
        self.buf_t.clear();
        self.buf_c.clear();
        self.buf_s.clear();
        self.last_attempt_n = 0;
        self.reset_window();
        self.last_t = f64::NAN;
    }

    /// Starts the due pattern check: the pulse indices whose classes it needs.
    pub fn verify_sample(&mut self) -> &[f64] {
        let t = self.verify_due_at;
        self.verify_due_at = f64::NAN;
        self.check_t = t;
        self.check_idx = std::mem::take(&mut self.v_idx);
        self.next_verify_at = t + self.o.verify_every_ps;
        &self.check_idx
    }

    fn z_of(&self, cls: &[u8], off: usize, d: f64) -> f64 {
        let n = self.check_idx.len();
        let mut s = 0.0;
        for i in 0..n {
            s += if self.check_idx[i] + d < self.o.first_pulse { 0.0 } else { self.score[cls[off + i] as usize] };
        }
        s / (self.sigma * (n as f64).sqrt())
    }

    /// Scores the sample's classes (255 = unknown). None: the check is over (passed or skipped);
    /// Some(pulses): a slip search needs the classes of these neighbours (`verify_slip`).
    pub fn verify_first(&mut self, cls0: &[u8]) -> Option<Vec<f64>> {
        let n = self.check_idx.len();
        let known = cls0.iter().take(n).filter(|&&c| c != 255).count();
        if (known as f64) < n as f64 / 2.0 {
            self.stats.checks_skipped += 1;
            return None;
        }
        let z0 = self.z_of(cls0, 0, 0.0);
        if z0 >= 4f64.min(self.o.min_confidence / 2.0) {
            self.confidence = z0;
            return None;
        }
        self.check_z0 = z0;
        let r = self.o.max_channel_skew_pulses;
        let mut q = Vec::with_capacity(2 * r as usize * n);
        for d in -r..=r {
            if d == 0 {
                continue;
            }
            for i in 0..n {
                q.push((self.check_idx[i] + d as f64).max(-1.0));
            }
        }
        Some(q)
    }

    /// The slip search's answer: repairs a slip, or drops the lock.
    pub fn verify_slip(&mut self, cls: &[u8]) {
        let n = self.check_idx.len();
        let r = self.o.max_channel_skew_pulses;
        let (mut bd, mut bz) = (0i32, f64::NEG_INFINITY);
        let mut j = 0;
        for d in -r..=r {
            if d == 0 {
                continue;
            }
            let z = self.z_of(cls, j * n, d as f64);
            if z > bz {
                bz = z;
                bd = d;
            }
            j += 1;
        }
        if bz >= 6f64.max(self.o.min_confidence * 0.75) {
            let m = self.model.as_mut().unwrap();
            m.p_int += bd as f64;
            self.h_origin += bd as f64;
            self.stats.slips_repaired += 1;
            self.confidence = bz;
            return;
        }
        self.confidence = self.check_z0;
        let t = self.check_t;
        self.lose_lock(t);
    }

    /// Takes the detections labelled since the last call.
    pub fn take_output(&mut self) -> Output {
        let o = std::mem::take(&mut self.out);
        self.stats.emitted += o.pulse.len() as u64;
        o
    }
}

/// Adds each detection's residual to its channel's histogram: bin floor((r - start) / width),
/// kept if 0 <= bin < bins. `hist` holds 256 x bins counters (channel-major).
pub fn residual_histogram(ch: &[u8], residual_ps: &[f32], start_ps: f64, bin_width_ps: f64, bins: usize, hist: &mut [u32]) {
    // floor(x) is in [0, bins) exactly when x is (bins an integer; NaN in neither), and there
    // floor is the truncation `as usize`: no libm floor per click (baseline x86-64 has no roundsd)
    let nb = bins as f64;
    for (&c, &r) in ch.iter().zip(residual_ps) {
        let x = (r as f64 - start_ps) / bin_width_ps;
        if x >= 0.0 && x < nb {
            let k = c as usize * bins + x as usize;
            hist[k] = hist[k].wrapping_add(1);
        }
    }
}

/// Stable sort of (pulse, channel) pairs by pulse; insertion sort, since the input (a block's
/// detections, emitted in time order with per-channel delays) is nearly sorted.
pub fn sort_by_pulse(pulse: &mut [f64], channel: &mut [u8]) {
    let n = pulse.len().min(channel.len());
    for i in 1..n {
        if pulse[i] >= pulse[i - 1] {
            continue;
        }
        let (vp, vc) = (pulse[i], channel[i]);
        let mut j = i;
        while j > 0 && pulse[j - 1] > vp {
            pulse[j] = pulse[j - 1];
            channel[j] = channel[j - 1];
            j -= 1;
        }
        pulse[j] = vp;
        channel[j] = vc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_round_matches_math_round() {
        for (x, want) in [(0.5, 1.0), (-0.5, -0.0), (-2.5, -2.0), (2.4999999999999996, 2.0), (0.49999999999999994, 0.0), (-1.5, -1.0), (3.7, 4.0), (-3.7, -4.0)] {
            assert_eq!(js_round(x), want, "round({x})");
        }
    }

    /// The SSE4.1 path's rounding equals the baseline one bit for bit: ties, both signs, values
    /// near integers and up to 2^53, random magnitudes.
    #[test]
    fn js_round_floor_equals_js_round() {
        let mut next = crate::test_rng::xorshift64(0x5eed_0f_f100_7u64);
        // (-0 itself differs: Math.round and floor keep its sign, the truncation gives +0; a
        // click's u is a sum and never -0)
        let mut xs = vec![0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 4.5e15, -4.5e15, 9007199254740991.0, -9007199254740991.0];
        for k in 0..200_000 {
            let mag = 2f64.powi((next() % 54) as i32);
            let base = (next() >> 11) as f64 / (1u64 << 53) as f64 * mag;
            let x = match k % 4 {
                0 => base,
                1 => -base,
                2 => base.round() + 0.5 * if next() & 1 == 0 { 1.0 } else { -1.0 },
                _ => f64::from_bits(base.to_bits().wrapping_add(next() % 3)) - 0.5,
            };
            xs.push(x);
        }
        for x in xs.into_iter().filter(|x| x.to_bits() != (-0.0f64).to_bits()) {
            assert_eq!(js_round_floor(x).to_bits(), js_round(x).to_bits(), "round({x:e})");
        }
    }

    #[test]
    fn sort_is_stable_and_sorted() {
        let mut p = vec![3.0, 1.0, 2.0, 1.0, 0.0];
        let mut c = vec![0u8, 1, 2, 3, 4];
        sort_by_pulse(&mut p, &mut c);
        assert_eq!(p, vec![0.0, 1.0, 1.0, 2.0, 3.0]);
        assert_eq!(c, vec![4, 1, 3, 2, 0]);
    }

    /// Against the obvious formula (bin = floor((r - start) / width), kept if in [0, bins)) on
    /// random residuals: in and out of range, on bin edges, just below them, NaN.
    #[test]
    fn residual_histogram_equals_floor_formula() {
        let mut next = crate::test_rng::xorshift64(0x4157_0_9e4d);
        let (start, width, bins) = (-500.0, 10.0, 100usize);
        let mut ch = Vec::new();
        let mut r = Vec::new();
        for k in 0..300_000u32 {
            ch.push((next() % 256) as u8);
            let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
            r.push(match k % 5 {
                0 => (u * 1400.0 - 700.0) as f32,
                1 => (start + width * (next() % 102) as f64 - 10.0) as f32, // on edges
                2 => f32::from_bits(((start + width * (next() % 101) as f64) as f32).to_bits().wrapping_sub(1)),
                3 => (u * 20.0 - 510.0) as f32,
                _ => if u < 0.01 { f32::NAN } else { (u * 1000.0 - 500.0) as f32 },
            });
        }
        let mut fast = vec![0u32; 256 * bins];
        residual_histogram(&ch, &r, start, width, bins, &mut fast);
        let mut slow = vec![0u32; 256 * bins];
        for (&c, &x) in ch.iter().zip(&r) {
            let b = ((x as f64 - start) / width).floor();
            if b >= 0.0 && b < bins as f64 {
                slow[c as usize * bins + b as usize] += 1;
            }
        }
        assert_eq!(fast, slow);
        assert!(fast.iter().map(|&v| v as u64).sum::<u64>() > 150_000);
    }

    #[test]
    fn residual_histogram_bins() {
        let mut h = vec![0u32; 2 * 4];
        residual_histogram(&[0, 1, 1, 1], &[-10.0, 5.0, 19.9, 30.0], -10.0, 10.0, 4, &mut h);
        assert_eq!(h, vec![1, 0, 0, 0, 0, 1, 1, 0]);
    }
}
