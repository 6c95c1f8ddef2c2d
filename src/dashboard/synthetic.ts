/**
 * A synthetic state source for the dashboard: a deterministic, seeded imitation of a running link
 * that drives the real telemetry components (MetricsRegistry via createQkdMetrics, AlarmEngine,
 * SliTracker, RandomnessMonitor) in one-second steps of virtual time. Used by the dashboard tests,
 * the screenshot in docs/, and as a demo (`node --import tsx src/dashboard/demo.ts`) before the
 * emulated lab is wired in. It is not physics: the emulated lab (src/lab/) is.
 *
 * Scripted incidents (all optional, in seconds since start): an intercept-resend episode (QBER to
 * ~25 %, blocks abort, no key), a detector channel going silent, a KMS outage.
 */
import { AlarmEngine, type AlarmConfigInput } from '../telemetry/alarms.ts';
import { createQkdMetrics, type QkdMetrics } from '../telemetry/qkd-metrics.ts';
import { RandomnessMonitor } from '../telemetry/randomness.ts';
import { SliTracker } from '../telemetry/sli.ts';
import type { DashboardState, TimePoint, TimingHistogram } from './types.ts';

export interface SyntheticOptions {
  seed?: number;
  /** Virtual start time, ms since the epoch. */
  startMs?: number;
  /** Points kept per time series (one per second). */
  historySeconds?: number;
  eve?: { fromSec: number; toSec: number };
  silentChannel?: { channel: number; fromSec: number };
  kmsOutage?: { kms: string; fromSec: number; toSec: number };
  alarmConfig?: AlarmConfigInput;
  /** Calibration made this long before the start. */
  calibrationAgeAtStartSec?: number;
}

export interface SyntheticSource {
  metrics: QkdMetrics;
  alarms: AlarmEngine;
  slis: SliTracker;
  /** Simulates up to the given virtual time (one step per second). */
  advanceTo(ms: number): void;
  /** Current virtual time. */
  nowMs(): number;
  state(): DashboardState;
}

/** Small deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CHANNELS = [
  { channel: 0, label: 'Z0', delayPs: -12 },
  { channel: 1, label: 'Z1', delayPs: 8 },
  { channel: 2, label: 'X0', delayPs: 20 },
  { channel: 3, label: 'X1', delayPs: -4 },
];
const PULSE_RATE_HZ = 1e9;
const KEY_BITS = 256;

export function createSyntheticSource(opts: SyntheticOptions = {}): SyntheticSource {
  const rand = rng(opts.seed ?? 1);
  const gauss = (): number => {
    const u = Math.max(1e-12, rand());
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
  };
  const startMs = opts.startMs ?? Date.UTC(2026, 10, 23, 9, 0, 0);
  const hist = opts.historySeconds ?? 300;
  let now = startMs;
  const metrics = createQkdMetrics();
  const alarms = new AlarmEngine({
    ...opts.alarmConfig,
    detectorSaturation: { raiseAboveHz: 2e6, clearBelowHz: 1.5e6, ...opts.alarmConfig?.detectorSaturation },
    detectorSilence: { forSeconds: 5, ...opts.alarmConfig?.detectorSilence },
    kmsUnreachable: { forSeconds: 5, ...opts.alarmConfig?.kmsUnreachable },
  }, { clock: () => now });
  const randomness = new RandomnessMonitor({ minSamples: 5 });
  const slis = new SliTracker({ clock: () => now, randomness, windowSeconds: 3600 });
  slis.setCalibrationTime(startMs - (opts.calibrationAgeAtStartSec ?? 5400) * 1000);

  const series = { qber: [] as TimePoint[], qberZ: [] as TimePoint[], qberX: [] as TimePoint[], skr: [] as TimePoint[], offset: [] as TimePoint[] };
  const kmsSeries: Record<string, TimePoint[]> = { alice: [], bob: [] };
  const push = (s: TimePoint[], p: TimePoint) => {
    s.push(p);
    if (s.length > hist) s.shift();
  };
  const rates = new Map<number, number>();
  const timingCounts = CHANNELS.map(() => new Float64Array(64));
  const totals = { pulses: 0, detections: 0, sifted: 0, secret: 0, verified: 0, aborted: 0, reasons: {} as Record<string, number>, delivered: { alice: 0, bob: 0 } };
  const kms = { alice: { stored: 20000, reachable: true }, bob: { stored: 20000, reachable: true } };
  let offsetS = 3.2e-9;
  let lastF = 1.07;
  let lastQ = { Z: 0.03, X: 0.03 };
  let blockBits = 0;
  let blockRate = 0;
  let sec = 0;

  const step = () => {
    sec++;
    now = startMs + sec * 1000;
    const eve = opts.eve && sec >= opts.eve.fromSec && sec < opts.eve.toSec;
    // Detector rates: ~150 kHz per channel with slow wander; a scripted channel goes silent.
    let det = 0;
    for (const c of CHANNELS) {
      let r = 150e3 * (1 + 0.05 * Math.sin(sec / 50 + c.channel)) * (1 + 0.01 * gauss());
      if (eve) r *= 1.02;
      if (opts.silentChannel && c.channel === opts.silentChannel.channel && sec >= opts.silentChannel.fromSec) r = 0.2 * rand();
      rates.set(c.channel, r);
      const n = Math.round(r);
      det += n;
      metrics.detections.inc({ channel: c.channel }, n);
      slis.recordDetections(c.channel, n);
      // Timing histogram: Gaussian peak (jitter ~35 ps) on a flat dark/afterpulse floor; 10 ps bins.
      const h = timingCounts[CHANNELS.indexOf(c)];
      for (let b = 0; b < h.length; b++) {
        const ps = -320 + (b + 0.5) * 10 - c.delayPs;
        h[b] = h[b] * 0.9 + 0.1 * (r * 0.02 * Math.exp(-(ps * ps) / (2 * 35 * 35)) + r * 0.0004 * (1 + 0.2 * gauss() ** 2));
      }
    }
    totals.pulses += PULSE_RATE_HZ;
    totals.detections += det;
    metrics.pulses.inc(PULSE_RATE_HZ);
    // QBER: ~3 % with drift, or ~25 % under intercept-resend.
    const base = eve ? 0.25 : 0.028 + 0.004 * Math.sin(sec / 37);
    lastQ = { Z: Math.max(0, base + 0.002 * gauss()), X: Math.max(0, base + 0.004 + 0.003 * gauss()) };
    const q = (lastQ.Z + lastQ.X) / 2;
    metrics.qber.set({ basis: 'Z' }, lastQ.Z);
    metrics.qber.set({ basis: 'X' }, lastQ.X);
    push(series.qberZ, [now, lastQ.Z]);
    push(series.qberX, [now, lastQ.X]);
    push(series.qber, [now, q]);
    const sifted = Math.round(det * 0.5 * (opts.silentChannel && sec >= opts.silentChannel.fromSec ? 0.75 : 1));
    totals.sifted += sifted;
    metrics.siftedBits.inc(sifted);
    slis.recordQber(Math.round(sifted * q), sifted);
    // A block every 10 s: verified and delivered, or aborted on QBER.
    blockBits += sifted;
    let secretNow = 0;
    if (sec % 10 === 0) {
      if (q > alarms.config.qber.abortThreshold) {
        totals.aborted++;
        totals.reasons.qber = (totals.reasons.qber ?? 0) + 1;
        metrics.blocks.inc({ result: 'aborted', reason: 'qber' });
      } else {
        totals.verified++;
        metrics.blocks.inc({ result: 'verified', reason: 'none' });
        lastF = 1.06 + 0.02 * rand();
        metrics.reconciliationEfficiency.set(lastF);
        const h2 = (p: number) => (p <= 0 ? 0 : -p * Math.log2(p) - (1 - p) * Math.log2(1 - p));
        secretNow = Math.max(0, Math.round(blockBits * (0.42 - lastF * h2(q) - 0.05)));
        totals.secret += secretNow;
        metrics.secretBits.inc(secretNow);
        slis.recordSecretBits(secretNow);
        const keys = Math.floor(secretNow / KEY_BITS);
        for (const name of ['alice', 'bob'] as const) {
          const out = opts.kmsOutage && opts.kmsOutage.kms === name && sec >= opts.kmsOutage.fromSec && sec < opts.kmsOutage.toSec;
          kms[name].reachable = !out;
          if (!out) {
            kms[name].stored += keys;
            totals.delivered[name] += keys;
            metrics.keysDelivered.inc({ kms: name }, keys);
            metrics.keyPushLatency.observe({ kms: name }, 0.004 + 0.002 * rand());
          } else {
            metrics.keyDeliveryFailures.inc({ kms: name });
          }
          slis.recordDelivery(!out);
        }
        // Sample the output block for the randomness health check (synthetic random bytes here).
        const block = new Uint8Array(4096);
        for (let i = 0; i < block.length; i++) block[i] = (rand() * 256) | 0;
        randomness.offer(block);
        block.fill(0);
      }
      blockBits = 0;
    }
    // Applications consume keys (~120 per second, in bursts); Bob's copies wait while it is down.
    const consumed = Math.round(120 * (1 + 0.5 * gauss()));
    for (const name of ['alice', 'bob'] as const) {
      if (kms.alice.reachable && kms.bob.reachable) kms[name].stored = Math.max(0, kms[name].stored - Math.max(0, consumed));
      push(kmsSeries[name], [now, kms[name].stored]);
      metrics.kmsKeysStored.set({ kms: name }, kms[name].stored);
      metrics.kmsReachable.set({ kms: name }, kms[name].reachable ? 1 : 0);
    }
    // Secret key rate: the last block's secret bits over its 10 s (held between blocks).
    if (sec % 10 === 0) blockRate = secretNow / 10;
    push(series.skr, [now, blockRate]);
    // Clock sync: offset random walk, drift 0.12 ppm compensated.
    offsetS += 0.8e-12 * gauss();
    push(series.offset, [now, offsetS]);
    metrics.syncLocked.set(1);
    metrics.syncOffset.set(offsetS);
    metrics.syncDrift.set(0.12);
    const rtt = 0.0021 + 0.0004 * rand();
    slis.recordRtt(rtt);
    metrics.classicalRtt.observe(rtt);
    slis.recordLinkState(!eve);
    const snap = slis.exportTo(metrics);
    alarms.evaluate({
      qber: q,
      detectorRatesHz: Object.fromEntries([...rates].map(([k, v]) => [String(k), v])),
      syncLocked: true,
      kmsReachable: { alice: kms.alice.reachable, bob: kms.bob.reachable },
      spoolFillRatio: 0.02,
      calibrationAgeSeconds: snap.calibrationAgeSeconds ?? undefined,
      randomness: snap.randomness ?? undefined,
      classicalRttSeconds: rtt,
      devices: [{ id: 'tagger-bob', model: 'emulated-tagger', firmware: '1.4.2', allowedFirmware: ['1.4.2'] }],
    });
    alarms.exportTo(metrics);
  };

  const advanceTo = (ms: number) => {
    while (startMs + (sec + 1) * 1000 <= ms) step();
  };

  const state = (): DashboardState => {
    const snap = slis.snapshot(now);
    const timing: TimingHistogram[] = CHANNELS.map((c, i) => ({
      channel: c.channel, label: c.label, startPs: -320, binWidthPs: 10,
      counts: Array.from(timingCounts[i], (x) => Math.round(x)), windowStartPs: -100, windowEndPs: 100,
    }));
    const active = alarms.active();
    return {
      schema: 1,
      generatedAtMs: now,
      node: { id: 'alice-bob-demo', role: 'link', mode: 'emulated', link: 'synthetic link', startedAtMs: startMs, version: '0.1.0' },
      status: active.some((a) => a.severity === 'critical') ? 'degraded' : 'running',
      series: { qber: [...series.qber], qberZ: [...series.qberZ], qberX: [...series.qberX], secretKeyRateBitsPerSecond: [...series.skr] },
      qberAbortThreshold: alarms.config.qber.abortThreshold,
      detectors: CHANNELS.map((c) => ({ channel: c.channel, label: c.label, countRateHz: rates.get(c.channel) ?? 0, saturationHz: alarms.config.detectorSaturation.raiseAboveHz })),
      timing,
      sync: { locked: true, offsetSeconds: offsetS, driftPpm: 0.12, peakOverNoise: 41.7, offsetSeries: [...series.offset] },
      kms: (['alice', 'bob'] as const).map((name) => ({
        name, reachable: kms[name].reachable, keysStored: kms[name].stored, capacity: 100000, keySizeBits: KEY_BITS, series: [...kmsSeries[name]],
      })),
      alarms: { active, recent: alarms.recent(20) },
      slis: snap,
      summary: {
        pulses: totals.pulses, detections: totals.detections, siftedBits: totals.sifted,
        qber: series.qber.length ? series.qber[series.qber.length - 1][1] : undefined,
        qberByBasis: { Z: lastQ.Z, X: lastQ.X }, reconciliationEfficiency: lastF,
        // Made-up but self-consistent decoy figures (μ = 0.5, ν = 0.1, η ≈ 1.2e-3): display only.
        gain: { signal: 6.0e-4, decoy: 1.2e-4, vacuum: 2.0e-6 },
        errorRate: { signal: lastQ.Z, decoy: lastQ.Z * 1.3, vacuum: 0.5 },
        decoy: { singlePhotonYieldLower: 1.1e-3, singlePhotonErrorUpper: 0.045 },
        frames: { total: totals.verified * 4 + totals.aborted, failed: totals.aborted },
        blocks: { verified: totals.verified, aborted: totals.aborted, reasons: { ...totals.reasons } },
        secretBits: totals.secret,
        secretKeyRate: { perPulse: totals.pulses ? totals.secret / totals.pulses : 0, perSecond: sec ? totals.secret / sec : 0 },
        keysDelivered: { ...totals.delivered },
        // Made-up pipeline figures (display only): a link at 1.4x real time.
        realTimeFactor: 1.4,
        stages: {
          acquire: { detectionsPerSecond: 1.2e8, occupancy: 0.35 },
          postProcess: { detectionsPerSecond: 9.0e6, occupancy: 0.62 },
          delivery: { detectionsPerSecond: 4.0e8, occupancy: 0.03 },
        },
      },
    };
  };

  return { metrics, alarms, slis, advanceTo, nowMs: () => now, state };
}
