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
 * Where it runs: the per-click work (buffering, indexing, tracking loop, pattern-check scoring) in
 * a Tracker (tracker.ts), native by default (native/core/src/sync_track.rs; JavaScript never loops
 * over clicks), or the TypeScript reference with `engine: 'reference'`; both give the same output
 * bit for bit (test/timing/sync-native.test.ts). The acquisition (acquire.ts) stays in TypeScript.
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
import { runSteps, runStepsAsync, scoreTable, classFrequencies, type AlicePattern, type PatternSteps, type RemoteAlicePattern } from './pattern.ts';
import { ReferenceTracker, TRACK_ACQUIRE, TRACK_END, TRACK_VERIFY, type Tracker, type TrackerOptions } from './tracker.ts';
import { NativeTracker } from './native-sync.ts';

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
  /** Where the per-click loop runs (default 'native'; 'reference': the TypeScript reference, tracker.ts). */
  engine?: SyncEngine;
}

/** Where per-click work runs: natively (default) or in the TypeScript reference (tests, benches). */
export type SyncEngine = 'native' | 'reference';

const EMPTY: IndexedDetections = { pulseIndex: new Float64Array(0), channel: new Uint8Array(0), residualPs: new Float32Array(0) };

export class ClockSync {
  readonly periodPs: number;
  /** Acceptance half-window around the expected arrival, ps (clicks farther out are dropped). */
  get windowPs(): number {
    return this.o.windowPs;
  }
  private readonly o: Required<Omit<ClockSyncOptions, 'channels' | 'channelDelaysPs' | 'pattern' | 'lossWindows' | 'firstPulse' | 'expectedOffsetPs' | 'withTagSeq' | 'minOffsetClicks' | 'engine'>> & { minOffsetClicks?: number } & { lossWindows: number; firstPulse: number; expectedOffsetPs: number };
  private readonly pattern: AlicePattern | RemoteAlicePattern;
  private readonly preDelay = new Float64Array(256);
  /** The per-click state machine (tracker.ts): native, or the TypeScript reference. */
  private readonly tr: Tracker;
  private readonly st: { tags: number; acquisitions: number; lockedAtPs?: number; timeToLockPs?: number };

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
    for (const [c, d] of Object.entries(opts.channelDelaysPs ?? {})) this.preDelay[Number(c)] = d;
    const to: TrackerOptions = {
      periodPs: this.periodPs, windowPs: this.o.windowPs, acquireSpanPs: this.o.acquireSpanPs, acquireMinClicks: this.o.acquireMinClicks,
      maxAcquireSpanPs: this.o.maxAcquireSpanPs, trackWindowPs: this.o.trackWindowPs, trackMinClicks: this.o.trackMinClicks, gapPs: this.o.gapPs,
      verifyEveryPs: this.o.verifyEveryPs, verifyClicks: this.o.verifyClicks, verifyDelayPs: this.o.verifyDelayPs, lossWindows: this.o.lossWindows,
      minConfidence: this.o.minConfidence, maxChannelSkewPulses: this.o.maxChannelSkewPulses, firstPulse: this.o.firstPulse,
      withSeq: opts.withTagSeq ?? false, preDelayPs: this.preDelay, ...(opts.channels ? { channels: opts.channels } : {}),
    };
    this.tr = (opts.engine ?? 'native') === 'native' ? new NativeTracker(to) : new ReferenceTracker(to);
    this.st = { tags: 0, acquisitions: 0 };
  }

  /** Current sync state (a copy). */
  state(): SyncState {
    const ts = this.tr.stats();
    const s: SyncState = {
      locked: this.tr.locked, offsetPs: NaN, driftPpm: NaN, confidence: this.tr.confidence, refChannel: -1, channelDelaysPs: {},
      stats: { tags: this.st.tags, emitted: ts.emitted, outsideWindow: ts.outsideWindow, ignoredChannel: ts.ignoredChannel, acquisitions: this.st.acquisitions, slipsRepaired: ts.slipsRepaired, lockLosses: ts.lockLosses, checksSkipped: ts.checksSkipped },
    };
    if (this.tr.lastLockLossAt === this.tr.lastLockLossAt) s.lastLockLossAt = this.tr.lastLockLossAt;
    if (this.st.lockedAtPs !== undefined) s.lockedAtPs = this.st.lockedAtPs;
    if (this.st.timeToLockPs !== undefined) s.timeToLockPs = this.st.timeToLockPs;
    const m = this.tr.model();
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
    return this.tr.model();
  }

  /** Tags pushed per tagger channel since construction (256 entries, a copy). */
  tagsPerChannel(): Float64Array {
    return this.tr.tagsPerChannel();
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
    this.st.tags += n;
    const tr = this.tr;
    // The per-click loop runs in the tracker and stops only where the pattern is needed; scan is
    // called until END even at the batch's end, so that a window close owed after a check runs.
    for (let from = 0; ;) {
      const ev = tr.scan(batch.timePs, batch.channel, from);
      from = tr.cursor;
      if (ev === TRACK_END) break;
      if (ev === TRACK_ACQUIRE) {
        if (yield* this.acquire()) while (tr.drain() === TRACK_VERIFY) yield* this.verify(); // the whole buffer, this click included
      } else yield* this.verify();
    }
    const out = tr.takeOutput();
    return out.pulseIndex.length ? out : EMPTY;
  }

  /** Runs stages 1-3 on the buffer. On failure the tracker keeps the newest half and waits for more. */
  private *acquire(): PatternSteps<boolean> {
    this.st.acquisitions++;
    const { timePs: t, channel: c } = this.tr.acquisitionBuffer();
    const fr = acquireFrequency(t, c, this.periodPs, this.o.maxDriftPpm);
    const model = modelFromFrequency(fr, this.periodPs);
    // Prior for a re-acquisition: the last model's offset is the best guess.
    const last = this.tr.model();
    const expectedOffsetPs = last ? modelOffsetPs(last) : this.o.expectedOffsetPs;
    const off = yield* acquireOffsetSteps(t, c, model, this.pattern.meanPhotons, {
      periodPs: this.periodPs, maxOffsetPs: this.o.maxOffsetPs, expectedOffsetPs, coarsePulses: this.o.coarsePulses,
      maxChannelSkewPulses: this.o.maxChannelSkewPulses, minOffsetClicks: this.o.minOffsetClicks, firstPulse: this.o.firstPulse,
    });
    this.tr.confidence = off ? off.confidence : 0;
    if (!off || off.confidence < this.o.minConfidence) {
      this.tr.acquireFailed();
      return false;
    }
    model.pInt += off.shift;
    for (const [ch, s] of off.skew) model.delayPs[ch] -= s / model.ratePerPs;
    let sumCoh = 0, sumN = 0;
    for (const [ch, r] of fr.coherenceByChannel) { const w = fr.countByChannel.get(ch) ?? 0; sumCoh += r * w; sumN += w; }
    const coherence0 = sumN ? sumCoh / sumN : 1;
    const sample = yield { kind: 'range', first: Math.max(this.o.firstPulse, model.pInt), count: 1 << 16 };
    const table = scoreTable(this.pattern.meanPhotons, classFrequencies(sample, this.pattern.meanPhotons.length));
    this.st.lockedAtPs = t[t.length - 1];
    this.st.timeToLockPs = t[t.length - 1] - t[0];
    this.tr.lock(model, table.score, table.sigma, expectedInFrac(coherence0));
    return true;
  }

  /**
   * Pattern check on the sampled clicks: one request for their pulses; only if that fails, one for
   * their neighbours within +-maxChannelSkewPulses (slip search). Scoring runs in the tracker.
   */
  private *verify(): PatternSteps<void> {
    const cls0 = yield { kind: 'at', pulses: this.tr.verifySample() };
    const q = this.tr.verifyFirst(cls0);
    if (q) this.tr.verifySlip(yield { kind: 'at', pulses: q });
  }
}

/** Expected fraction of a tracking window's clicks within +-1/4 period, from the acquisition's coherence. */
function expectedInFrac(coherence0: number): number {
  // With mean resultant length R0 at acquisition, a wrapped normal has sigma^2 = -2 ln R0.
  const sigma = Math.sqrt(Math.max(-2 * Math.log(Math.max(coherence0, 1e-6)), 1e-12)) / (2 * Math.PI);
  // P(|N(0, sigma)| < 1/4), blended with the noise floor through the coherence itself.
  const pin = erf(0.25 / (sigma * Math.SQRT2));
  return Math.max(0.55, Math.min(1, pin));
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
