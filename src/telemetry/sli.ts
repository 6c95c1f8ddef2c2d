/**
 * Service-level indicators of a QKD link, over a sliding window (default one hour):
 * link availability, secret key generation rate, QBER, detector count rates, classical-channel
 * round-trip time, key delivery success ratio, calibration age, and the randomness health check.
 *
 * Recording is O(1) (per-second buckets in a ring); `snapshot()` is O(window seconds). Time is what
 * the caller passes (ms since the epoch) or the injected clock, so tests are deterministic.
 * Single-threaded. Nothing here sees key bits: counts, ratios and P-values only.
 */
import type { RandomnessMonitor, RandomnessSnapshot } from './randomness.ts';
import type { QkdMetrics } from './qkd-metrics.ts';

/** Sums and counts in one-second buckets over a ring of `seconds` buckets. */
export class WindowedSum {
  private readonly sums: Float64Array;
  private readonly counts: Float64Array;
  private readonly epochs: Float64Array;
  constructor(readonly seconds: number) {
    if (!Number.isInteger(seconds) || seconds < 1 || seconds > 7 * 86400) throw new RangeError(`window must be 1..604800 s, got ${seconds}`);
    this.sums = new Float64Array(seconds);
    this.counts = new Float64Array(seconds);
    this.epochs = new Float64Array(seconds).fill(-1);
  }
  add(value: number, nowMs: number): void {
    const sec = Math.floor(nowMs / 1000);
    const i = sec % this.seconds;
    if (this.epochs[i] !== sec) {
      this.epochs[i] = sec;
      this.sums[i] = 0;
      this.counts[i] = 0;
    }
    this.sums[i] += value;
    this.counts[i]++;
  }
  /** Sum and count over the last `lastSeconds` (≤ window) whole-or-current seconds up to nowMs. */
  total(nowMs: number, lastSeconds = this.seconds): { sum: number; count: number } {
    const sec = Math.floor(nowMs / 1000);
    const span = Math.min(lastSeconds, this.seconds);
    let sum = 0;
    let count = 0;
    for (let k = 0; k < this.seconds; k++) {
      const e = this.epochs[k];
      if (e > sec - span && e <= sec) {
        sum += this.sums[k];
        count += this.counts[k];
      }
    }
    return { sum, count };
  }
}

export interface SliSnapshot {
  windowSeconds: number;
  /** Seconds of the window actually covered (less than the window right after start). */
  coveredSeconds: number;
  /** Share of observed time the link was up (synced and producing key), 0..1. */
  linkAvailabilityRatio: number | null;
  /** Secret key bits per second over the window. */
  secretKeyRateBitsPerSecond: number | null;
  secretBits: number;
  /** Error-weighted QBER over the window: errors / compared bits. */
  qber: number | null;
  /** Count rate per channel over the last `rateWindowSeconds`. */
  detectorCountRatesHz: Record<string, number>;
  classicalRttSeconds: { last: number | null; p50: number | null; p99: number | null };
  keyDeliverySuccessRatio: number | null;
  keysDelivered: number;
  keyDeliveryFailures: number;
  calibrationAgeSeconds: number | null;
  randomness: RandomnessSnapshot | null;
}

export interface SliOptions {
  windowSeconds?: number;
  /** Window for detector count rates (default 10 s): "now", not the hour. */
  rateWindowSeconds?: number;
  clock?: () => number;
  randomness?: RandomnessMonitor;
}

export class SliTracker {
  readonly windowSeconds: number;
  readonly rateWindowSeconds: number;
  private readonly clock: () => number;
  private readonly randomness?: RandomnessMonitor;
  private readonly startMs: number;
  private readonly upMs: WindowedSum;
  private readonly observedMs: WindowedSum;
  private readonly secret: WindowedSum;
  private readonly qberErrors: WindowedSum;
  private readonly qberBits: WindowedSum;
  private readonly delivered: WindowedSum;
  private readonly failed: WindowedSum;
  private readonly detections = new Map<string, WindowedSum>();
  private rtt: { t: number; v: number }[] = [];
  private lastLink?: { up: boolean; t: number };
  private calibrationMs?: number;
  private remoteRandomness?: RandomnessSnapshot;

  constructor(opts: SliOptions = {}) {
    this.windowSeconds = opts.windowSeconds ?? 3600;
    this.rateWindowSeconds = opts.rateWindowSeconds ?? 10;
    this.clock = opts.clock ?? Date.now;
    this.randomness = opts.randomness;
    this.startMs = this.clock();
    const w = this.windowSeconds;
    this.upMs = new WindowedSum(w);
    this.observedMs = new WindowedSum(w);
    this.secret = new WindowedSum(w);
    this.qberErrors = new WindowedSum(w);
    this.qberBits = new WindowedSum(w);
    this.delivered = new WindowedSum(w);
    this.failed = new WindowedSum(w);
  }

  /**
   * Link state now (up = synced and producing verified key). Time between two calls counts for the
   * earlier state; call it at least every few seconds and on every change.
   */
  recordLinkState(up: boolean, nowMs = this.clock()): void {
    if (this.lastLink) {
      const dt = Math.max(0, nowMs - this.lastLink.t);
      this.observedMs.add(dt, nowMs);
      if (this.lastLink.up) this.upMs.add(dt, nowMs);
    }
    this.lastLink = { up, t: nowMs };
  }
  recordSecretBits(bits: number, nowMs = this.clock()): void {
    this.secret.add(bits, nowMs);
  }
  /** Errors found among `bits` compared bits (a block's estimate or its corrected errors). */
  recordQber(errors: number, bits: number, nowMs = this.clock()): void {
    if (!(bits > 0)) return;
    this.qberErrors.add(errors, nowMs);
    this.qberBits.add(bits, nowMs);
  }
  recordDetections(channel: number | string, count: number, nowMs = this.clock()): void {
    const key = String(channel);
    let w = this.detections.get(key);
    if (!w) this.detections.set(key, (w = new WindowedSum(Math.max(1, this.rateWindowSeconds))));
    w.add(count, nowMs);
  }
  recordRtt(seconds: number, nowMs = this.clock()): void {
    if (!Number.isFinite(seconds) || seconds < 0) return;
    this.rtt.push({ t: nowMs, v: seconds });
    if (this.rtt.length > 10000) this.rtt = this.rtt.slice(-5000);
  }
  recordDelivery(ok: boolean, nowMs = this.clock()): void {
    (ok ? this.delivered : this.failed).add(1, nowMs);
  }
  /**
   * The randomness snapshot when the monitor runs in another process (the node process that holds
   * the key sends its RandomnessMonitor.snapshot() — P-values only — to the supervisor).
   */
  setRandomnessSnapshot(s: RandomnessSnapshot): void {
    this.remoteRandomness = s;
  }
  /** When the calibration record in use was made (ms since the epoch). */
  setCalibrationTime(ms: number): void {
    this.calibrationMs = ms;
  }

  snapshot(nowMs = this.clock()): SliSnapshot {
    const covered = Math.max(0, Math.min(this.windowSeconds, (nowMs - this.startMs) / 1000));
    const up = this.upMs.total(nowMs).sum;
    const observed = this.observedMs.total(nowMs).sum;
    const secretBits = this.secret.total(nowMs).sum;
    const errs = this.qberErrors.total(nowMs).sum;
    const bits = this.qberBits.total(nowMs).sum;
    const ok = this.delivered.total(nowMs).sum;
    const bad = this.failed.total(nowMs).sum;
    const rates: Record<string, number> = {};
    const rateSpan = Math.max(1e-3, Math.min(this.rateWindowSeconds, (nowMs - this.startMs) / 1000));
    for (const [ch, w] of this.detections) rates[ch] = w.total(nowMs, this.rateWindowSeconds).sum / rateSpan;
    const cutoff = nowMs - this.windowSeconds * 1000;
    this.rtt = this.rtt.filter((x) => x.t > cutoff);
    const sorted = this.rtt.map((x) => x.v).sort((a, b) => a - b);
    const q = (p: number): number | null => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null);
    return {
      windowSeconds: this.windowSeconds,
      coveredSeconds: covered,
      linkAvailabilityRatio: observed > 0 ? up / observed : null,
      secretKeyRateBitsPerSecond: covered > 0 ? secretBits / covered : null,
      secretBits,
      qber: bits > 0 ? errs / bits : null,
      detectorCountRatesHz: rates,
      classicalRttSeconds: { last: this.rtt.length ? this.rtt[this.rtt.length - 1].v : null, p50: q(0.5), p99: q(0.99) },
      keyDeliverySuccessRatio: ok + bad > 0 ? ok / (ok + bad) : null,
      keysDelivered: ok,
      keyDeliveryFailures: bad,
      calibrationAgeSeconds: this.calibrationMs !== undefined ? Math.max(0, (nowMs - this.calibrationMs) / 1000) : null,
      randomness: this.randomness ? this.randomness.snapshot() : this.remoteRandomness ?? null,
    };
  }

  /** Copies the snapshot into the gauges of the QKD metric set (call from registry.onCollect). */
  exportTo(m: QkdMetrics, nowMs = this.clock()): SliSnapshot {
    const s = this.snapshot(nowMs);
    if (s.linkAvailabilityRatio !== null) m.linkAvailability.set(s.linkAvailabilityRatio);
    if (s.secretKeyRateBitsPerSecond !== null) m.secretKeyRate.set(s.secretKeyRateBitsPerSecond);
    for (const [ch, r] of Object.entries(s.detectorCountRatesHz)) m.detectorCountRate.set({ channel: ch }, r);
    if (s.keyDeliverySuccessRatio !== null) m.keyDeliverySuccessRatio.set(s.keyDeliverySuccessRatio);
    if (s.calibrationAgeSeconds !== null) m.calibrationAge.set(s.calibrationAgeSeconds);
    if (s.randomness) {
      for (const x of s.randomness.latest) m.randomnessPValue.set({ test: x.test }, x.pValue);
      m.randomnessHealthy.set(s.randomness.healthy ? 1 : 0);
    }
    return s;
  }
}
