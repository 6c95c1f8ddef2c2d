/**
 * ClockSync: streaming clock synchronisation and pulse-index assignment.
 *
 * Feed Bob's raw tag batches (any chunk size, in arrival order) with `push`; get back detections
 * labelled with Alice's pulse index, so that sifting never sees raw times. Internally:
 *
 *   unlocked --(enough data buffered: acquisition, see acquire.ts)--> locked
 *   locked: every click -> u = pInt + pFrac + (t - delay[c] - tRef) * rate; index = round(u);
 *           per tracking window (~1 ms) the trimmed mean residual drives a second-order loop
 *           (phase and frequency), so a slowly wandering drift is followed;
 *           every `verifyEveryPs` a few hundred indexed clicks are re-scored against Alice's
 *           pattern: a one-pulse slip is repaired by a local search, anything worse drops the lock
 *   lock lost (coherence gone for several windows, or pattern check failed) -> unlocked, and the
 *           acquisition starts again on the data that follows (`lastLockLossAt` records when).
 *
 * Detections buffered before lock are labelled and emitted once the lock is found; detections
 * outside the acceptance window (`windowPs` around the expected arrival) are dropped and counted.
 *
 * Concurrency: one ClockSync per tag stream; `push` (pattern regenerated locally) is synchronous,
 * `pushAsync` (pattern asked of Alice's node, a round trip per acquisition or pattern check)
 * awaits; neither is re-entrant: await one push before the next. The one expensive call is an
 * acquisition (one FFT cross-correlation, ~0.1-1 s for a +-1.5 ms search); it runs inside the
 * push that completes the acquisition buffer. Cancellation: drop the object.
 */
import { ConfigError } from '../errors.ts';
import type { TagBatch } from '../devices/types.ts';
import { acquireFrequency, acquireOffsetSteps, modelFromFrequency, type AcquireOptions, type ClockModel } from './acquire.ts';
import { runSteps, runStepsAsync, scoreTable, classFrequencies, type AlicePattern, type PatternSteps, type RemoteAlicePattern, type ScoreTable } from './pattern.ts';
import { tagTimesToNumbers } from './times.ts';

export interface SyncState {
  locked: boolean;
  /** Bob time (ps, his clock) at which Alice's pulse 0 arrives on the reference channel. */
  offsetPs: number;
  /** Bob's clock rate relative to Alice's, in ppm (positive: Bob's clock runs fast). */
  driftPpm: number;
  /** Peak over noise of the last acquisition or pattern check (z-score; >= minConfidence to lock). */
  confidence: number;
  /** Bob time (ps) of the last loss of lock, if any. */
  lastLockLossAt?: number;
  /** Bob time (ps) at which the current lock was declared. */
  lockedAtPs?: number;
  /** Data time (ps) from the start of acquisition data to lock, for the current lock. */
  timeToLockPs?: number;
  refChannel: number;
  /** Per-channel delay (ps) relative to the reference channel, as found by the sync. */
  channelDelaysPs: Record<number, number>;
  /** Counters since construction. */
  stats: { tags: number; emitted: number; outsideWindow: number; ignoredChannel: number; acquisitions: number; slipsRepaired: number; lockLosses: number; checksSkipped: number };
}

export interface IndexedDetections {
  /** Alice's pulse index of each detection (integer-valued). */
  pulseIndex: Float64Array;
  channel: Uint8Array;
  /** Arrival time minus expected arrival of that pulse, in Bob ps (for histograms and windows). */
  residualPs: Float32Array;
  /** Sequence number of each detection's tag in the input stream (0 = first tag pushed); only with `withTagSeq`. */
  tagSeq?: Float64Array;
}

export interface ClockSyncOptions extends Omit<AcquireOptions, 'periodPs'> {
  /** Alice's repetition rate in Hz (the preset's repRateHz). */
  repRateHz: number;
  /** Alice's intensity pattern: regenerated locally (use `push`), or asked of her node (use `pushAsync`). */
  pattern: AlicePattern | RemoteAlicePattern;
  /** Detector channels to index (default: every channel seen). */
  channels?: number[];
  /** Known per-channel delays (ps) to remove before anything else (from `qkd calibrate delays`). */
  channelDelaysPs?: Record<number, number>;
  /** Acceptance half-window around the expected arrival, ps (default: half a period = keep all). */
  windowPs?: number;
  /** Data span buffered before an acquisition, ps (default 150 ms). */
  acquireSpanPs?: number;
  /** Minimum clicks before an acquisition (default 3000; the span grows up to maxAcquireSpanPs). */
  acquireMinClicks?: number;
  /** Give up growing the acquisition buffer after this span and try anyway, ps (default 1.5 s). */
  maxAcquireSpanPs?: number;
  /** Minimum acquisition confidence (z) to declare lock (default 8: the null maximum over 3e6 offsets is ~5.5). */
  minConfidence?: number;
  /** Tracking window, ps of Bob time (default 1 ms), and minimum clicks in it (default 300). */
  trackWindowPs?: number;
  trackMinClicks?: number;
  /** A gap in the data longer than this closes the tracking window (default 20 ms). */
  gapPs?: number;
  /** Pattern check interval (default 100 ms of Bob time) and clicks per check (default 300). */
  verifyEveryPs?: number;
  verifyClicks?: number;
  /**
   * Delay between filling the pattern-check sample and asking for the pattern, ps of Bob time
   * (default 0). With a remote pattern set it above Alice's hold-back (she reveals a pulse's class
   * only once it is that old), or every check would come back unknown.
   */
  verifyDelayPs?: number;
  /** Consecutive incoherent tracking windows that drop the lock (default 3). */
  lossWindows?: number;
  /** Also return each detection's input sequence number (for tests against the emulator's truth). */
  withTagSeq?: boolean;
}

const HIST_SPAN_PS = 1e12;
const HIST_MAX = 64;
const HIST_QUAD_MIN_SPAN_PS = 20e9;

/** Where the per-click scan of one batch stands. */
interface Scan { out: Float64Array; outC: Uint8Array; outR: Float32Array; k: number; i: number; ti?: number }
const SCAN_END = 0, SCAN_ACQUIRE = 1, SCAN_VERIFY = 2;

const EMPTY: IndexedDetections = { pulseIndex: new Float64Array(0), channel: new Uint8Array(0), residualPs: new Float32Array(0) };

export class ClockSync {
  readonly periodPs: number;
  /** Acceptance half-window around the expected arrival, ps (clicks farther out are dropped). */
  get windowPs(): number {
    return this.o.windowPs;
  }
  private readonly o: Required<Omit<ClockSyncOptions, 'channels' | 'channelDelaysPs' | 'pattern' | 'lossWindows' | 'firstPulse' | 'expectedOffsetPs' | 'withTagSeq' | 'minOffsetClicks'>> & { minOffsetClicks?: number } & { lossWindows: number; firstPulse: number; expectedOffsetPs: number };
  private readonly pattern: AlicePattern | RemoteAlicePattern;
  private readonly accept = new Uint8Array(256);
  private readonly acceptAll: boolean;
  private readonly preDelay = new Float64Array(256);
  private model: ClockModel | null = null;
  private table: ScoreTable | null = null;
  // Acquisition buffer (times already corrected by preDelay).
  private bufT: Float64Array = new Float64Array(1 << 16);
  private bufC: Uint8Array = new Uint8Array(1 << 16);
  private bufS: Float64Array = new Float64Array(1 << 16);
  private bufN = 0;
  private readonly withSeq: boolean;
  private seq = 0;
  private outS: Float64Array = new Float64Array(0);
  private bufStart = NaN;
  private lastAttemptN = 0;
  // Tracking window accumulators.
  private wN = 0; private wIn = 0; private wSumR = 0; private wSumDt = 0; private wStart = NaN; private lastT = NaN;
  private hT = new Float64Array(HIST_MAX + 1);
  private hU = new Float64Array(HIST_MAX + 1);
  private hW = new Float64Array(HIST_MAX + 1);
  private hN = 0;
  private hOrigin = 0;
  private coherence0 = 1;
  private badWindows = 0;
  // Pattern check.
  private nextVerifyAt = NaN;
  private vIdx: number[] = []; private vCh: number[] = [];
  /** Bob time of the click that filled the pattern-check sample (NaN: no check due). */
  private verifyDueAt = NaN;
  private st: SyncState;

  constructor(opts: ClockSyncOptions) {
    if (!(opts.repRateHz > 0)) throw new ConfigError('BAD_REP_RATE', `ClockSync: repRateHz must be > 0, got ${opts.repRateHz}.`);
    this.periodPs = 1e12 / opts.repRateHz;
    this.pattern = opts.pattern;
    this.o = {
      repRateHz: opts.repRateHz,
      maxDriftPpm: opts.maxDriftPpm ?? 50,
      expectedOffsetPs: opts.expectedOffsetPs ?? 0,
      maxOffsetPs: opts.maxOffsetPs ?? 1.5e9,
      coarsePulses: opts.coarsePulses ?? 4,
      minOffsetClicks: opts.minOffsetClicks,
      maxChannelSkewPulses: opts.maxChannelSkewPulses ?? 16,
      firstPulse: opts.firstPulse ?? 0,
      windowPs: opts.windowPs ?? this.periodPs / 2,
      acquireSpanPs: opts.acquireSpanPs ?? 150e9,
      acquireMinClicks: opts.acquireMinClicks ?? 3000,
      maxAcquireSpanPs: opts.maxAcquireSpanPs ?? 1.5e12,
      minConfidence: opts.minConfidence ?? 8,
      trackWindowPs: opts.trackWindowPs ?? 1e9,
      trackMinClicks: opts.trackMinClicks ?? 300,
      gapPs: opts.gapPs ?? 20e9,
      verifyEveryPs: opts.verifyEveryPs ?? 100e9,
      verifyClicks: opts.verifyClicks ?? 300,
      verifyDelayPs: opts.verifyDelayPs ?? 0,
      lossWindows: opts.lossWindows ?? 3,
    };
    this.withSeq = opts.withTagSeq ?? false;
    this.acceptAll = !opts.channels;
    for (const c of opts.channels ?? []) this.accept[c] = 1;
    for (const [c, d] of Object.entries(opts.channelDelaysPs ?? {})) this.preDelay[Number(c)] = d;
    this.st = {
      locked: false, offsetPs: NaN, driftPpm: NaN, confidence: 0, refChannel: -1, channelDelaysPs: {},
      stats: { tags: 0, emitted: 0, outsideWindow: 0, ignoredChannel: 0, acquisitions: 0, slipsRepaired: 0, lockLosses: 0, checksSkipped: 0 },
    };
  }

  /** Current sync state (a copy). */
  state(): SyncState {
    const s = { ...this.st, stats: { ...this.st.stats }, channelDelaysPs: { ...this.st.channelDelaysPs } };
    const m = this.model;
    if (m) {
      s.offsetPs = modelOffsetPs(m);
      s.driftPpm = (1 / (m.ratePerPs * this.periodPs) - 1) * 1e6;
      s.refChannel = m.refChannel;
      for (let c = 0; c < 256; c++) if (m.delayPs[c] !== 0 || c === m.refChannel) s.channelDelaysPs[c] = m.delayPs[c] + this.preDelay[c];
    }
    return s;
  }

  /** The current clock model (for histograms), or null before the first lock. */
  clockModel(): ClockModel | null {
    return this.model ? { ...this.model, delayPs: Float64Array.from(this.model.delayPs) } : null;
  }

  /** Consumes one batch; returns the detections it could label now (possibly earlier buffered ones). */
  push(batch: TagBatch): IndexedDetections {
    if (!('intensities' in this.pattern)) throw new ConfigError('ASYNC_PATTERN', 'ClockSync.push needs a local pattern; with a remote one (Alice\'s node) use pushAsync.');
    return runSteps(this.steps(batch), this.pattern);
  }

  /** `push` for a remote pattern: awaits Alice's node when an acquisition or pattern check needs it. */
  pushAsync(batch: TagBatch): Promise<IndexedDetections> {
    if ('intensities' in this.pattern) return Promise.resolve(this.push(batch));
    return runStepsAsync(this.steps(batch), this.pattern);
  }

  private *steps(batch: TagBatch): PatternSteps<IndexedDetections> {
    const n = batch.timePs.length;
    if (batch.channel.length !== n) throw new ConfigError('BAD_BATCH', `ClockSync.push: timePs has ${n} entries but channel has ${batch.channel.length}.`);
    this.st.stats.tags += n;
    const t = tagTimesToNumbers(batch.timePs);
    // Worst case: the whole buffer is released by a lock inside this batch, plus the batch itself.
    const out = new Float64Array(this.bufN + 2 * n);
    const outC = new Uint8Array(out.length);
    const outR = new Float32Array(out.length);
    if (this.withSeq) this.outS = new Float64Array(out.length);
    const o: Scan = { out, outC, outR, k: 0, i: 0 };
    // The per-click loop runs in a plain method (scan) and stops only where the pattern is needed:
    // a generator body is markedly slower per click.
    while (o.i < n) {
      const ev = this.scan(t, batch.channel, n, o);
      if (ev === SCAN_ACQUIRE) {
        if (yield* this.acquire()) o.k = yield* this.drainBuffer(out, outC, outR, o.k); // the whole buffer, this click included
      } else if (ev === SCAN_VERIFY) {
        yield* this.verify();
        this.maybeCloseWindow(o.ti!);
      }
    }
    const k = o.k;
    this.st.stats.emitted += k;
    if (k === 0) return EMPTY;
    const res: IndexedDetections = { pulseIndex: out.subarray(0, k), channel: outC.subarray(0, k), residualPs: outR.subarray(0, k) };
    if (this.withSeq) res.tagSeq = this.outS.subarray(0, k);
    return res;
  }

  /** Clicks from o.i on, until one needs the pattern (returns which; o.i is past that click). */
  private scan(t: Float64Array, ch: Uint8Array, n: number, o: Scan): number {
    let k = o.k;
    const { out, outC, outR } = o;
    for (let i = o.i; i < n; i++, this.seq++) {
      const c = ch[i];
      if (!this.acceptAll && !this.accept[c]) { this.st.stats.ignoredChannel++; continue; }
      const ti = t[i] - this.preDelay[c];
      if (!this.st.locked) {
        this.buffer(ti, c);
        if (this.readyToAcquire()) { o.k = k; o.i = i + 1; this.seq++; return SCAN_ACQUIRE; }
        continue;
      }
      // If the lock is lost on this click, the next ones go to the acquisition buffer.
      k = this.track(ti, c, out, outC, outR, k, this.seq);
      if (ti >= this.verifyDueAt) { o.k = k; o.i = i + 1; o.ti = ti; this.seq++; return SCAN_VERIFY; }
      this.maybeCloseWindow(ti);
    }
    o.k = k;
    o.i = n;
    return SCAN_END;
  }

  private buffer(t: number, c: number): void {
    if (this.bufN === this.bufT.length) {
      const nt = new Float64Array(this.bufT.length * 2); nt.set(this.bufT); this.bufT = nt;
      const nc = new Uint8Array(this.bufC.length * 2); nc.set(this.bufC); this.bufC = nc;
      if (this.withSeq) { const ns = new Float64Array(this.bufS.length * 2); ns.set(this.bufS); this.bufS = ns; }
    }
    if (this.withSeq) this.bufS[this.bufN] = this.seq;
    if (this.bufN === 0) this.bufStart = t;
    this.bufT[this.bufN] = t; this.bufC[this.bufN] = c; this.bufN++;
  }

  private readyToAcquire(): boolean {
    const span = this.bufT[this.bufN - 1] - this.bufStart;
    if (span >= this.o.maxAcquireSpanPs) return this.bufN > this.lastAttemptN * 1.5 + 16;
    return span >= this.o.acquireSpanPs && this.bufN >= this.o.acquireMinClicks && this.bufN > this.lastAttemptN * 1.5;
  }

  /** Runs stages 1-3 on the buffer. On failure keeps the newest half of the buffer and waits for more. */
  private *acquire(): PatternSteps<boolean> {
    this.st.stats.acquisitions++;
    this.lastAttemptN = this.bufN;
    const t = this.bufT.subarray(0, this.bufN), c = this.bufC.subarray(0, this.bufN);
    const fr = acquireFrequency(t, c, this.periodPs, this.o.maxDriftPpm);
    const model = modelFromFrequency(fr, this.periodPs);
    // Prior for a re-acquisition: the last model's offset is the best guess.
    const expectedOffsetPs = this.model ? modelOffsetPs(this.model) : this.o.expectedOffsetPs;
    const off = yield* acquireOffsetSteps(t, c, model, this.pattern.meanPhotons, {
      periodPs: this.periodPs, maxOffsetPs: this.o.maxOffsetPs, expectedOffsetPs, coarsePulses: this.o.coarsePulses,
      maxChannelSkewPulses: this.o.maxChannelSkewPulses, minOffsetClicks: this.o.minOffsetClicks, firstPulse: this.o.firstPulse,
    });
    this.st.confidence = off ? off.confidence : 0;
    if (!off || off.confidence < this.o.minConfidence) {
      if (this.bufT[this.bufN - 1] - this.bufStart >= this.o.maxAcquireSpanPs) {
        // Drop the older half so the buffer cannot grow without bound on hopeless data.
        const h = this.bufN >> 1;
        this.bufT.copyWithin(0, h, this.bufN); this.bufC.copyWithin(0, h, this.bufN);
        if (this.withSeq) this.bufS.copyWithin(0, h, this.bufN);
        this.bufN -= h; this.bufStart = this.bufT[0]; this.lastAttemptN = 0;
      }
      return false;
    }
    model.pInt += off.shift;
    for (const [ch, s] of off.skew) model.delayPs[ch] -= s / model.ratePerPs;
    this.model = model;
    let sumCoh = 0, sumN = 0;
    for (const [ch, r] of fr.coherenceByChannel) { const w = fr.countByChannel.get(ch) ?? 0; sumCoh += r * w; sumN += w; }
    this.coherence0 = sumN ? sumCoh / sumN : 1;
    const sample = yield { kind: 'range', first: Math.max(this.o.firstPulse, model.pInt), count: 1 << 16 };
    this.table = scoreTable(this.pattern.meanPhotons, classFrequencies(sample, this.pattern.meanPhotons.length));
    this.st.locked = true;
    this.st.lockedAtPs = this.bufT[this.bufN - 1];
    this.st.timeToLockPs = this.bufT[this.bufN - 1] - this.bufStart;
    this.badWindows = 0;
    this.resetWindow(NaN);
    this.hN = 0;
    this.nextVerifyAt = NaN;
    this.verifyDueAt = NaN;
    this.vIdx = []; this.vCh = [];
    return true;
  }

  private *drainBuffer(out: Float64Array, outC: Uint8Array, outR: Float32Array, k: number): PatternSteps<number> {
    const n = this.bufN;
    this.bufN = 0;
    this.lastAttemptN = 0;
    for (let i = 0; i < n && this.st.locked; i++) {
      k = this.track(this.bufT[i], this.bufC[i], out, outC, outR, k, this.bufS[i]);
      if (this.bufT[i] >= this.verifyDueAt) yield* this.verify();
      this.maybeCloseWindow(this.bufT[i]);
    }
    return k;
  }

  private resetWindow(t: number): void {
    this.wN = 0; this.wIn = 0; this.wSumR = 0; this.wSumDt = 0; this.wStart = t;
  }

  /**
   * Labels one click with the locked model, feeds the loops; returns the new output count. A due
   * pattern check (verifyDueAt) and the window close (maybeCloseWindow) follow in the caller,
   * because the check may have to wait for Alice's node.
   */
  private track(t: number, c: number, out: Float64Array, outC: Uint8Array, outR: Float32Array, k: number, seq: number): number {
    const m = this.model!;
    if (this.lastT === this.lastT && Math.abs(t - this.lastT) > this.o.gapPs) this.closeWindow();
    this.lastT = t;
    if (this.wStart !== this.wStart) this.wStart = t;
    const dt = t - m.delayPs[c] - m.tRefPs;
    const u = m.pFrac + dt * (m.ratePerPs + 0.5 * m.accelPerPs2 * dt);
    const idx = Math.round(u);
    const r = u - idx;
    // Trimmed mean of residuals: clicks more than a quarter period off (dark counts, afterpulses)
    // are left out of the loop error but still counted for coherence.
    this.wN++;
    if (r > -0.25 && r < 0.25) { this.wIn++; this.wSumR += r; this.wSumDt += t - m.tRefPs; }
    const rPs = r / m.ratePerPs;
    if (Math.abs(rPs) <= this.o.windowPs) {
      out[k] = m.pInt + idx; outC[k] = c; outR[k] = rPs;
      if (this.withSeq) this.outS[k] = seq;
      k++;
      if (this.nextVerifyAt !== this.nextVerifyAt) this.nextVerifyAt = t;
      if (t >= this.nextVerifyAt && this.vIdx.length < this.o.verifyClicks) {
        this.vIdx.push(m.pInt + idx); this.vCh.push(c);
        if (this.vIdx.length >= this.o.verifyClicks) this.verifyDueAt = t + this.o.verifyDelayPs;
      }
    } else this.st.stats.outsideWindow++;
    return k;
  }

  private maybeCloseWindow(t: number): void {
    if (this.st.locked && this.wN >= this.o.trackMinClicks && t - this.wStart >= this.o.trackWindowPs) this.closeWindow();
  }

  private closeWindow(): void {
    const m = this.model;
    if (!m || !this.st.locked) return;
    if (this.wN < Math.min(50, this.o.trackMinClicks)) { this.resetWindow(NaN); return; }
    // Coherence: fraction inside +-1/4 period, 0.5 for pure noise.
    const inFrac = this.wIn / this.wN;
    if (inFrac - 0.5 < 0.35 * (this.expectedInFrac() - 0.5)) {
      this.badWindows++;
      if (this.badWindows >= this.o.lossWindows) { this.loseLock(this.lastT); return; }
      this.resetWindow(NaN);
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
    this.resetWindow(NaN);
  }

  private pushHistory(t: number, u: number, w: number): void {
    // Drop points older than HIST_SPAN_PS or beyond HIST_MAX.
    let k = 0;
    while (k < this.hN && (t - this.hT[k] > HIST_SPAN_PS || this.hN - k >= HIST_MAX)) k++;
    if (k) { this.hT.copyWithin(0, k, this.hN); this.hU.copyWithin(0, k, this.hN); this.hW.copyWithin(0, k, this.hN); this.hN -= k; }
    this.hT[this.hN] = t; this.hU[this.hN] = u; this.hW[this.hN] = w; this.hN++;
  }

  /** Weighted LS fit u = a + b x + c x^2, x = t - tw (ps); linear with 2-3 points; null with 1. */
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

  private expectedInFrac(): number {
    // With mean resultant length R0 at acquisition, a wrapped normal has sigma^2 = -2 ln R0.
    const sigma = Math.sqrt(Math.max(-2 * Math.log(Math.max(this.coherence0, 1e-6)), 1e-12)) / (2 * Math.PI);
    // P(|N(0, sigma)| < 1/4), blended with the noise floor through the coherence itself.
    const pin = erf(0.25 / (sigma * Math.SQRT2));
    return Math.max(0.55, Math.min(1, pin));
  }

  /**
   * Pattern check on the sampled clicks: one request for their pulses; only if that fails, one for
   * their neighbours within +-maxChannelSkewPulses (slip search).
   */
  private *verify(): PatternSteps<void> {
    const t = this.verifyDueAt;
    this.verifyDueAt = NaN;
    const m = this.model!;
    const table = this.table!;
    const idx = Float64Array.from(this.vIdx);
    const n = idx.length;
    this.vIdx = []; this.vCh = [];
    this.nextVerifyAt = t + this.o.verifyEveryPs;
    const R = this.o.maxChannelSkewPulses;
    const zOf = (cls: Uint8Array, off: number, d: number): number => {
      let s = 0;
      for (let i = 0; i < n; i++) s += idx[i] + d < this.o.firstPulse ? 0 : table.score[cls[off + i]];
      return s / (table.sigma * Math.sqrt(n));
    };
    const cls0 = yield { kind: 'at', pulses: idx };
    let known = 0;
    for (let i = 0; i < n; i++) if (cls0[i] !== 255) known++;
    // Alice withheld most of the sample (her hold-back, or her clock behind): no information, so
    // no verdict either way; the next check comes one interval later.
    if (known < n / 2) { this.st.stats.checksSkipped++; return; }
    const z0 = zOf(cls0, 0, 0);
    if (z0 >= Math.min(4, this.o.minConfidence / 2)) { this.st.confidence = z0; return; }
    const q = new Float64Array(2 * R * n);
    const ds: number[] = [];
    for (let d = -R; d <= R; d++) {
      if (d === 0) continue;
      const o = ds.length * n;
      for (let i = 0; i < n; i++) q[o + i] = Math.max(idx[i] + d, -1);
      ds.push(d);
    }
    const cls = yield { kind: 'at', pulses: q };
    let bd = 0, bz = -Infinity;
    for (let j = 0; j < ds.length; j++) {
      const z = zOf(cls, j * n, ds[j]);
      if (z > bz) { bz = z; bd = ds[j]; }
    }
    if (bz >= Math.max(6, this.o.minConfidence * 0.75)) {
      m.pInt += bd;
      this.hOrigin += bd;
      this.st.stats.slipsRepaired++;
      this.st.confidence = bz;
      return;
    }
    this.st.confidence = z0;
    this.loseLock(t);
  }

  private loseLock(t: number): void {
    this.st.locked = false;
    this.st.lastLockLossAt = t;
    this.st.stats.lockLosses++;
    this.bufN = 0;
    this.lastAttemptN = 0;
    this.resetWindow(NaN);
    this.lastT = NaN;
  }
}

/** Bob time at which pulse 0 arrives on the reference channel under a model. */
export function modelOffsetPs(m: ClockModel): number {
  return m.tRefPs - (m.pInt + m.pFrac) / m.ratePerPs;
}

/** Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7). */
export function erf(x: number): number {
  const s = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  const tt = 1 / (1 + 0.3275911 * a);
  const y = 1 - ((((1.061405429 * tt - 1.453152027) * tt + 1.421413741) * tt - 0.284496735) * tt + 0.254829592) * tt * Math.exp(-a * a);
  return s * y;
}
