/**
 * The per-click part of ClockSync (sync.ts): buffering before lock, pulse indexing and the
 * tracking loop once locked, and the pattern check's scoring. Two implementations of one
 * interface: {@link ReferenceTracker} here (TypeScript, the slow obvious reference) and the native
 * one (native/core/src/sync_track.rs through native-sync.ts), which the property test
 * test/timing/sync-native.test.ts proves equal, bit for bit, on random seeds.
 *
 * Control flow: `scan` runs over one batch from `from` until a click needs Alice's pattern and
 * returns which (ACQUIRE: the buffer is ready; VERIFY: a pattern check is due), leaving `cursor`
 * past that click; the caller answers and calls `scan` again from the cursor, until END. After a
 * VERIFY the window close owed for the click that triggered it runs at the next `scan`/`drain`.
 *
 * Concurrency: one caller, calls in the order above; not re-entrant.
 */
import type { ClockModel } from './acquire.ts';
import type { IndexedDetections } from './sync.ts';
import { tagTimesToNumbers } from './times.ts';

export const TRACK_END = 0, TRACK_ACQUIRE = 1, TRACK_VERIFY = 2;

export interface TrackerOptions {
  periodPs: number;
  windowPs: number;
  acquireSpanPs: number;
  acquireMinClicks: number;
  maxAcquireSpanPs: number;
  trackWindowPs: number;
  trackMinClicks: number;
  gapPs: number;
  verifyEveryPs: number;
  verifyClicks: number;
  verifyDelayPs: number;
  lossWindows: number;
  minConfidence: number;
  maxChannelSkewPulses: number;
  firstPulse: number;
  withSeq: boolean;
  /** Channels to index (undefined: all). */
  channels?: number[];
  /** Known per-channel delays, 256 entries. */
  preDelayPs: Float64Array;
}

export interface TrackerStats { emitted: number; outsideWindow: number; ignoredChannel: number; slipsRepaired: number; lockLosses: number; checksSkipped: number }

export interface Tracker {
  scan(timePs: BigInt64Array, channel: Uint8Array, from: number): number;
  readonly cursor: number;
  drain(): number;
  /** The acquisition buffer (copies); starts an attempt. */
  acquisitionBuffer(): { timePs: Float64Array; channel: Uint8Array };
  acquireFailed(): void;
  lock(model: ClockModel, score: Float64Array, sigma: number, expectedInFrac: number): void;
  verifySample(): Float64Array;
  verifyFirst(classes: Uint8Array): Float64Array | null;
  verifySlip(classes: Uint8Array): void;
  takeOutput(): IndexedDetections;
  readonly locked: boolean;
  confidence: number;
  /** NaN: never lost. */
  readonly lastLockLossAt: number;
  model(): ClockModel | null;
  stats(): TrackerStats;
  tagsPerChannel(): Float64Array;
}

const HIST_SPAN_PS = 1e12;
const HIST_MAX = 64;
const HIST_QUAD_MIN_SPAN_PS = 20e9;

/** Growable output columns. */
class Columns {
  p = new Float64Array(1 << 12); c = new Uint8Array(1 << 12); r = new Float32Array(1 << 12); s = new Float64Array(1 << 12); k = 0;
  reserve(extra: number): void {
    if (this.k + extra <= this.p.length) return;
    const cap = Math.max(2 * this.p.length, this.k + extra);
    const p = new Float64Array(cap); p.set(this.p.subarray(0, this.k)); this.p = p;
    const c = new Uint8Array(cap); c.set(this.c.subarray(0, this.k)); this.c = c;
    const r = new Float32Array(cap); r.set(this.r.subarray(0, this.k)); this.r = r;
    const s = new Float64Array(cap); s.set(this.s.subarray(0, this.k)); this.s = s;
  }
}

/** The TypeScript reference tracker (see the file comment). */
export class ReferenceTracker implements Tracker {
  private readonly accept = new Uint8Array(256);
  private readonly acceptAll: boolean;
  locked = false;
  confidence = 0;
  lastLockLossAt = NaN;
  cursor = 0;
  private m: ClockModel | null = null;
  private score = new Float64Array(256);
  private sigma = 1;
  private expectedInFrac = 1;
  // Acquisition buffer (times already corrected by preDelay).
  private bufT = new Float64Array(1 << 16);
  private bufC = new Uint8Array(1 << 16);
  private bufS = new Float64Array(1 << 16);
  private bufN = 0;
  private bufStart = NaN;
  private lastAttemptN = 0;
  private seq = 0;
  private drainT = new Float64Array(0); private drainC = new Uint8Array(0); private drainS = new Float64Array(0);
  private drainN = 0; private drainPos = 0; private draining = false;
  // Tracking window accumulators.
  private wN = 0; private wIn = 0; private wSumR = 0; private wSumDt = 0; private wStart = NaN; private lastT = NaN;
  private hT = new Float64Array(HIST_MAX + 1);
  private hU = new Float64Array(HIST_MAX + 1);
  private hW = new Float64Array(HIST_MAX + 1);
  private hN = 0;
  private hOrigin = 0;
  private badWindows = 0;
  // Pattern check.
  private nextVerifyAt = NaN;
  private vIdx: number[] = [];
  /** Bob time of the click that filled the pattern-check sample (NaN: no check due). */
  private verifyDueAt = NaN;
  private checkIdx = new Float64Array(0);
  private checkZ0 = 0;
  private checkT = NaN;
  private pendingClose = NaN;
  private readonly st: TrackerStats = { emitted: 0, outsideWindow: 0, ignoredChannel: 0, slipsRepaired: 0, lockLosses: 0, checksSkipped: 0 };
  private readonly perChannel = new Float64Array(256);
  private out = new Columns();
  private times: { src: BigInt64Array; t: Float64Array } | null = null;

  constructor(private readonly o: TrackerOptions) {
    this.acceptAll = !o.channels;
    for (const c of o.channels ?? []) this.accept[c] = 1;
  }

  model(): ClockModel | null {
    return this.m ? { ...this.m, delayPs: Float64Array.from(this.m.delayPs) } : null;
  }

  stats(): TrackerStats {
    return { ...this.st };
  }

  tagsPerChannel(): Float64Array {
    return Float64Array.from(this.perChannel);
  }

  private oweClose(): void {
    if (this.pendingClose === this.pendingClose) {
      const t = this.pendingClose;
      this.pendingClose = NaN;
      this.maybeCloseWindow(t);
    }
  }

  scan(timePs: BigInt64Array, ch: Uint8Array, from: number): number {
    this.oweClose();
    if (this.times?.src !== timePs) this.times = { src: timePs, t: tagTimesToNumbers(timePs) };
    const t = this.times.t;
    const n = t.length;
    if (this.locked) this.out.reserve(n - from);
    for (let i = from; i < n; i++, this.seq++) {
      const c = ch[i];
      this.perChannel[c]++; // every click of a batch is scanned once
      if (!this.acceptAll && !this.accept[c]) { this.st.ignoredChannel++; continue; }
      const ti = t[i] - this.o.preDelayPs[c];
      if (!this.locked) {
        this.buffer(ti, c);
        if (this.readyToAcquire()) { this.cursor = i + 1; this.seq++; return TRACK_ACQUIRE; }
        continue;
      }
      // If the lock is lost on this click, the next ones go to the acquisition buffer.
      this.track(ti, c, this.seq);
      if (ti >= this.verifyDueAt) { this.cursor = i + 1; this.seq++; this.pendingClose = ti; return TRACK_VERIFY; }
      this.maybeCloseWindow(ti);
    }
    this.cursor = n;
    return TRACK_END;
  }

  private buffer(t: number, c: number): void {
    if (this.bufN === this.bufT.length) {
      const nt = new Float64Array(this.bufT.length * 2); nt.set(this.bufT); this.bufT = nt;
      const nc = new Uint8Array(this.bufC.length * 2); nc.set(this.bufC); this.bufC = nc;
      const ns = new Float64Array(this.bufS.length * 2); ns.set(this.bufS); this.bufS = ns;
    }
    if (this.o.withSeq) this.bufS[this.bufN] = this.seq;
    if (this.bufN === 0) this.bufStart = t;
    this.bufT[this.bufN] = t; this.bufC[this.bufN] = c; this.bufN++;
  }

  private readyToAcquire(): boolean {
    const span = this.bufT[this.bufN - 1] - this.bufStart;
    if (span >= this.o.maxAcquireSpanPs) return this.bufN > this.lastAttemptN * 1.5 + 16;
    return span >= this.o.acquireSpanPs && this.bufN >= this.o.acquireMinClicks && this.bufN > this.lastAttemptN * 1.5;
  }

  acquisitionBuffer(): { timePs: Float64Array; channel: Uint8Array } {
    this.lastAttemptN = this.bufN;
    return { timePs: this.bufT.slice(0, this.bufN), channel: this.bufC.slice(0, this.bufN) };
  }

  acquireFailed(): void {
    if (this.bufN > 0 && this.bufT[this.bufN - 1] - this.bufStart >= this.o.maxAcquireSpanPs) {
      // Drop the older half so the buffer cannot grow without bound on hopeless data.
      const h = this.bufN >> 1;
      this.bufT.copyWithin(0, h, this.bufN); this.bufC.copyWithin(0, h, this.bufN); this.bufS.copyWithin(0, h, this.bufN);
      this.bufN -= h; this.bufStart = this.bufT[0]; this.lastAttemptN = 0;
    }
  }

  lock(model: ClockModel, score: Float64Array, sigma: number, expectedInFrac: number): void {
    this.m = { ...model, delayPs: Float64Array.from(model.delayPs) };
    this.score = Float64Array.from(score);
    this.sigma = sigma;
    this.expectedInFrac = expectedInFrac;
    this.locked = true;
    this.badWindows = 0;
    this.resetWindow();
    this.hN = 0;
    this.nextVerifyAt = NaN;
    this.verifyDueAt = NaN;
    this.vIdx = [];
    this.drainT = this.bufT.slice(0, this.bufN); this.drainC = this.bufC.slice(0, this.bufN); this.drainS = this.bufS.slice(0, this.bufN);
    this.drainN = this.bufN; this.drainPos = 0; this.draining = true;
    this.bufN = 0;
    this.lastAttemptN = 0;
  }

  drain(): number {
    this.oweClose();
    if (!this.draining) return TRACK_END;
    this.out.reserve(this.drainN - this.drainPos);
    while (this.drainPos < this.drainN && this.locked) {
      const i = this.drainPos++;
      const t = this.drainT[i];
      this.track(t, this.drainC[i], this.drainS[i]);
      if (t >= this.verifyDueAt) { this.pendingClose = t; return TRACK_VERIFY; }
      this.maybeCloseWindow(t);
    }
    this.draining = false;
    return TRACK_END;
  }

  private resetWindow(): void {
    this.wN = 0; this.wIn = 0; this.wSumR = 0; this.wSumDt = 0; this.wStart = NaN;
  }

  /** Labels one click with the locked model and feeds the loops. */
  private track(t: number, c: number, seq: number): void {
    if (this.lastT === this.lastT && Math.abs(t - this.lastT) > this.o.gapPs) this.closeWindow();
    this.lastT = t;
    if (this.wStart !== this.wStart) this.wStart = t;
    const m = this.m!;
    const dt = t - m.delayPs[c] - m.tRefPs;
    const u = m.pFrac + dt * (m.ratePerPs + 0.5 * m.accelPerPs2 * dt);
    const idx = Math.round(u);
    const r = u - idx;
    // Trimmed mean of residuals: clicks more than a quarter period off (dark counts, afterpulses)
    // are left out of the loop error but still counted for coherence.
    this.wN++;
    if (r > -0.25 && r < 0.25) { this.wIn++; this.wSumR += r; this.wSumDt += t - m.tRefPs; }
    // r · (1/rate), as the native tracker computes it once per run of clicks (a multiply per click)
    const rPs = r * (1 / m.ratePerPs);
    if (Math.abs(rPs) <= this.o.windowPs) {
      const o = this.out, k = o.k++;
      o.p[k] = m.pInt + idx; o.c[k] = c; o.r[k] = rPs;
      if (this.o.withSeq) o.s[k] = seq;
      if (this.nextVerifyAt !== this.nextVerifyAt) this.nextVerifyAt = t;
      if (t >= this.nextVerifyAt && this.vIdx.length < this.o.verifyClicks) {
        this.vIdx.push(m.pInt + idx);
        if (this.vIdx.length >= this.o.verifyClicks) this.verifyDueAt = t + this.o.verifyDelayPs;
      }
    } else this.st.outsideWindow++;
  }

  private maybeCloseWindow(t: number): void {
    if (this.locked && this.wN >= this.o.trackMinClicks && t - this.wStart >= this.o.trackWindowPs) this.closeWindow();
  }

  private closeWindow(): void {
    const m = this.m;
    if (!m || !this.locked) return;
    if (this.wN < Math.min(50, this.o.trackMinClicks)) { this.resetWindow(); return; }
    // Coherence: fraction inside +-1/4 period, 0.5 for pure noise.
    const inFrac = this.wIn / this.wN;
    if (inFrac - 0.5 < 0.35 * (this.expectedInFrac - 0.5)) {
      this.badWindows++;
      if (this.badWindows >= this.o.lossWindows) { this.loseLock(this.lastT); return; }
      this.resetWindow();
      return;
    }
    this.badWindows = 0;
    const e = this.wSumR / this.wIn;
    const tw = m.tRefPs + this.wSumDt / this.wIn;
    // Drift fit: every window yields one measurement of the pulse position at its mean time,
    // U(tw) = predicted u(tw) - e (a residual r = u - round(u) > 0 means the model runs ahead).
    // A weighted least-squares quadratic through the measurements of the last second (at most
    // 64 windows) gives phase, rate and rate change; the quadratic term predicts across data gaps
    // when the drift wanders. Over one second a sinusoidal wander's cubic term stays below a few ps.
    const dtw = tw - m.tRefPs;
    const pPred = m.pFrac + dtw * (m.ratePerPs + 0.5 * m.accelPerPs2 * dtw);
    if (this.hN === 0) this.hOrigin = m.pInt;
    this.pushHistory(tw, m.pInt - this.hOrigin + pPred - e, this.wIn);
    const fit = this.fitHistory(tw);
    const a = fit ? fit.a : m.pInt - this.hOrigin + pPred - e;
    const fl = Math.floor(a);
    m.pInt = this.hOrigin + fl;
    m.pFrac = a - fl;
    m.tRefPs = tw;
    if (fit) { m.ratePerPs = fit.b; m.accelPerPs2 = fit.c2; } else m.ratePerPs += m.accelPerPs2 * dtw;
    this.resetWindow();
  }

  private pushHistory(t: number, u: number, w: number): void {
    // Drop points older than HIST_SPAN_PS or beyond HIST_MAX.
    let k = 0;
    while (k < this.hN && (t - this.hT[k] > HIST_SPAN_PS || this.hN - k >= HIST_MAX)) k++;
    if (k) { this.hT.copyWithin(0, k, this.hN); this.hU.copyWithin(0, k, this.hN); this.hW.copyWithin(0, k, this.hN); this.hN -= k; }
    this.hT[this.hN] = t; this.hU[this.hN] = u; this.hW[this.hN] = w; this.hN++;
  }

  /** Weighted LS fit u = a + b x + c x^2, x = t - tw (ps); linear with 2-4 points; null with 1. */
  private fitHistory(tw: number): { a: number; b: number; c2: number } | null {
    const n = this.hN;
    if (n < 2) return null;
    const span = tw - this.hT[0];
    if (!(span > 0)) return null;
    const quad = n >= 5 && span >= HIST_QUAD_MIN_SPAN_PS;
    // Scaled abscissa in [-1, 0] for conditioning.
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, y0 = 0, y1 = 0, y2 = 0;
    const u0 = this.hU[n - 1];
    for (let i = 0; i < n; i++) {
      const x = (this.hT[i] - tw) / span, y = this.hU[i] - u0, w = this.hW[i];
      const x2 = x * x;
      s0 += w; s1 += w * x; s2 += w * x2; s3 += w * x2 * x; s4 += w * x2 * x2;
      y0 += w * y; y1 += w * x * y; y2 += w * x2 * y;
    }
    let a: number, b: number, c = 0;
    if (quad) {
      // Solve [[s0 s1 s2][s1 s2 s3][s2 s3 s4]] [a b c] = [y0 y1 y2] by Cramer's rule.
      const det = s0 * (s2 * s4 - s3 * s3) - s1 * (s1 * s4 - s3 * s2) + s2 * (s1 * s3 - s2 * s2);
      if (!(Math.abs(det) > 1e-300)) return null;
      a = (y0 * (s2 * s4 - s3 * s3) - s1 * (y1 * s4 - s3 * y2) + s2 * (y1 * s3 - s2 * y2)) / det;
      b = (s0 * (y1 * s4 - y2 * s3) - y0 * (s1 * s4 - s3 * s2) + s2 * (s1 * y2 - y1 * s2)) / det;
      c = (s0 * (s2 * y2 - s3 * y1) - s1 * (s1 * y2 - y1 * s2) + y0 * (s1 * s3 - s2 * s2)) / det;
    } else {
      const det = s0 * s2 - s1 * s1;
      if (!(Math.abs(det) > 1e-300)) return null;
      a = (y0 * s2 - s1 * y1) / det;
      b = (s0 * y1 - s1 * y0) / det;
    }
    return { a: a + u0, b: b / span, c2: (2 * c) / (span * span) };
  }

  private loseLock(t: number): void {
    this.locked = false;
    this.lastLockLossAt = t;
    this.st.lockLosses++;
    this.bufN = 0;
    this.lastAttemptN = 0;
    this.resetWindow();
    this.lastT = NaN;
  }

  verifySample(): Float64Array {
    const t = this.verifyDueAt;
    this.verifyDueAt = NaN;
    this.checkT = t;
    this.checkIdx = Float64Array.from(this.vIdx);
    this.vIdx = [];
    this.nextVerifyAt = t + this.o.verifyEveryPs;
    return Float64Array.from(this.checkIdx);
  }

  private zOf(cls: Uint8Array, off: number, d: number): number {
    const idx = this.checkIdx, n = idx.length;
    let s = 0;
    for (let i = 0; i < n; i++) s += idx[i] + d < this.o.firstPulse ? 0 : this.score[cls[off + i]];
    return s / (this.sigma * Math.sqrt(n));
  }

  verifyFirst(cls0: Uint8Array): Float64Array | null {
    const idx = this.checkIdx, n = idx.length;
    let known = 0;
    for (let i = 0; i < n; i++) if (cls0[i] !== 255) known++;
    // Alice withheld most of the sample (her hold-back, or her clock behind): no information, so
    // no verdict either way; the next check comes one interval later.
    if (known < n / 2) { this.st.checksSkipped++; return null; }
    const z0 = this.zOf(cls0, 0, 0);
    if (z0 >= Math.min(4, this.o.minConfidence / 2)) { this.confidence = z0; return null; }
    this.checkZ0 = z0;
    const R = this.o.maxChannelSkewPulses;
    const q = new Float64Array(2 * R * n);
    let o = 0;
    for (let d = -R; d <= R; d++) {
      if (d === 0) continue;
      for (let i = 0; i < n; i++) q[o++] = Math.max(idx[i] + d, -1);
    }
    return q;
  }

  verifySlip(cls: Uint8Array): void {
    const n = this.checkIdx.length, R = this.o.maxChannelSkewPulses;
    let bd = 0, bz = -Infinity, j = 0;
    for (let d = -R; d <= R; d++) {
      if (d === 0) continue;
      const z = this.zOf(cls, j++ * n, d);
      if (z > bz) { bz = z; bd = d; }
    }
    if (bz >= Math.max(6, this.o.minConfidence * 0.75)) {
      this.m!.pInt += bd;
      this.hOrigin += bd;
      this.st.slipsRepaired++;
      this.confidence = bz;
      return;
    }
    this.confidence = this.checkZ0;
    this.loseLock(this.checkT);
  }

  takeOutput(): IndexedDetections {
    const o = this.out, k = o.k;
    this.st.emitted += k;
    const res: IndexedDetections = { pulseIndex: o.p.slice(0, k), channel: o.c.slice(0, k), residualPs: o.r.slice(0, k) };
    if (this.o.withSeq) res.tagSeq = o.s.slice(0, k);
    o.k = 0;
    return res;
  }
}
