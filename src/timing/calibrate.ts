/**
 * Calibration steps a lab engineer runs at bring-up and daily (`qkd calibrate <step>`): each reads
 * tags from a CalibrationRig (the emulated lab, or devices behind the same shape), measures one
 * thing, and returns the result with its uncertainty, the settings used and a plot spec. Records
 * and files are written by the caller (records.ts, the CLI): this module does no I/O.
 *
 * Methods (docs/timing.md has the details):
 * - sync: ClockSync acquisition (offset, drift, confidence, time to lock).
 * - delays / jitter: per-channel histogram against the pulse clock; centroid (delay relative to the
 *   reference channel) and background-subtracted RMS width (combined detector + clock jitter).
 * - window: acceptance window maximising the asymptotic key figure, with its QBER contribution.
 * - dark-counts: source off; clicks per channel per pulse slot and per second.
 * - afterpulsing: source attenuated so clicks are rare; histogram of the time since the previous
 *   click on the same detector; the Poisson background (exponential, fitted on the tail) is
 *   extrapolated and the excess near the dead time is the afterpulse probability; its mean delay
 *   gives the decay constant.
 * - efficiency: clicks per channel with the source on minus dark counts, relative to the best channel.
 */
import { ConfigError } from '../errors.ts';
import type { TagBatch } from '../devices/types.ts';
import { channelTimings, chooseWindow, histogram, peakStats, type Histogram } from './histogram.ts';
import type { AlicePattern } from './pattern.ts';
import type { PlotSpec } from './plot.ts';
import { ClockSync, type IndexedDetections } from './sync.ts';
import { tagTimesToNumbers } from './times.ts';

export const CALIBRATION_STEPS = ['delays', 'window', 'sync', 'dark-counts', 'afterpulsing', 'jitter', 'efficiency'] as const;
export type CalibrationStep = (typeof CALIBRATION_STEPS)[number];

export interface DeviceInfo {
  id: string;
  kind: string;
  model: string;
  emulated: boolean;
}

/** Where calibration data comes from: the emulated lab or real devices. One caller at a time. */
export interface CalibrationRig {
  readonly repRateHz: number;
  readonly pattern: AlicePattern;
  readonly devices: DeviceInfo[];
  /** Profile / preset names in force (compared when records are loaded). */
  readonly profiles: Record<string, string>;
  /** Tags of the next `pulses` pulses at the current source setting. */
  read(pulses: number): Promise<TagBatch>;
  /** Source on/off and intensity scale (1 = nominal intensities). */
  setSource(s: { enabled?: boolean; intensityScale?: number }): Promise<void>;
}

/** A pull source of tag batches: the shape calibration reads (emulated link, replay, or a tagger adapter). */
export interface TagSource {
  /** Next batch, or null at the end of the stream. */
  next(): Promise<TagBatch | null>;
  /** Pulse period in ps of the source that the tags refer to. */
  readonly periodPs: number;
}

export interface StepOptions {
  /** Seconds of data to measure (after lock for timing steps). */
  seconds?: number;
  /** Progress in [0, 1] (the CLI draws it on stderr). */
  onProgress?: (fraction: number, what: string) => void;
  /** Intrinsic QBER for the window figure (default 0.01). */
  intrinsicQber?: number;
  /** Histogram bin, ps (default 2). */
  binPs?: number;
  /** afterpulsing: intensity scale of the attenuated source (default: aim at 1e5 clicks/s). */
  intensityScale?: number;
}

export interface StepResult {
  step: CalibrationStep;
  settings: Record<string, unknown>;
  result: Record<string, unknown>;
  uncertainty: Record<string, unknown>;
  plot: PlotSpec;
  /** One-line human summary. */
  summary: string;
}

const CHUNK_PULSES = 2e7;

/** Runs ClockSync on the rig until locked, then collects `seconds` of indexed detections. */
async function syncAndCollect(rig: CalibrationRig, seconds: number, opts: StepOptions, windowPs?: number): Promise<{ sync: ClockSync; det: IndexedDetections; dataPsToLock: number }> {
  const sync = new ClockSync({ repRateHz: rig.repRateHz, pattern: rig.pattern, windowPs });
  const period = 1e12 / rig.repRateHz;
  const maxLockPulses = Math.round((3e12 / period));
  let read = 0;
  while (!sync.state().locked) {
    if (read >= maxLockPulses) {
      throw new ConfigError('SYNC_NO_LOCK', `calibrate: the clock sync did not lock within ${(read * period / 1e12).toFixed(1)} s of data (confidence ${sync.state().confidence.toFixed(1)}). Check that the source is on, the fibre connected and Alice's pattern/seed right.`);
    }
    sync.push(await rig.read(CHUNK_PULSES));
    read += CHUNK_PULSES;
    opts.onProgress?.(Math.min(0.3, read / maxLockPulses), 'locking');
  }
  const want = Math.round((seconds * 1e12) / period);
  const idx: Float64Array[] = [], ch: Uint8Array[] = [], res: Float32Array[] = [];
  for (let done = 0; done < want; done += CHUNK_PULSES) {
    const d = sync.push(await rig.read(Math.min(CHUNK_PULSES, want - done)));
    idx.push(d.pulseIndex.slice()); ch.push(d.channel.slice()); res.push(d.residualPs.slice());
    opts.onProgress?.(0.3 + 0.7 * Math.min(1, (done + CHUNK_PULSES) / want), 'collecting');
  }
  const cat = <T extends Float64Array | Uint8Array | Float32Array>(parts: T[], make: (n: number) => T): T => {
    const out = make(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) { out.set(p as never, o); o += p.length; }
    return out;
  };
  return {
    sync,
    det: { pulseIndex: cat(idx, (n) => new Float64Array(n)), channel: cat(ch, (n) => new Uint8Array(n)), residualPs: cat(res, (n) => new Float32Array(n)) },
    dataPsToLock: sync.state().timeToLockPs ?? NaN,
  };
}

function round(x: number, digits = 3): number {
  const k = 10 ** digits;
  return Math.round(x * k) / k;
}

function histPlot(title: string, hs: { name: string; h: Histogram }[], xLabel = 'arrival time vs pulse clock (ps)', logY = false): PlotSpec {
  return {
    title, xLabel, yLabel: 'counts', logY,
    series: hs.map(({ name, h }) => ({ name, x: Array.from(h.counts, (_, i) => h.startPs + (i + 0.5) * h.binPs), y: Array.from(h.counts) })),
  };
}

export async function runStep(step: CalibrationStep, rig: CalibrationRig, opts: StepOptions = {}): Promise<StepResult> {
  switch (step) {
    case 'sync': return stepSync(rig, opts);
    case 'delays': return stepDelays(rig, opts, 'delays');
    case 'jitter': return stepDelays(rig, opts, 'jitter');
    case 'window': return stepWindow(rig, opts);
    case 'dark-counts': return stepDark(rig, opts);
    case 'afterpulsing': return stepAfterpulsing(rig, opts);
    case 'efficiency': return stepEfficiency(rig, opts);
    default: throw new ConfigError('UNKNOWN_STEP', `calibrate: unknown step '${step as string}'; steps are ${CALIBRATION_STEPS.join(', ')}.`);
  }
}

async function stepSync(rig: CalibrationRig, opts: StepOptions): Promise<StepResult> {
  const seconds = opts.seconds ?? 0.2;
  const { sync, det } = await syncAndCollect(rig, seconds, opts);
  const s = sync.state();
  const all = histogram(det.residualPs, -500, opts.binPs ?? 2, 500);
  const pk = peakStats(all);
  return {
    step: 'sync',
    settings: { seconds, repRateHz: rig.repRateHz },
    result: {
      locked: s.locked, offsetPs: Math.round(s.offsetPs), driftPpm: round(s.driftPpm, 5), confidence: round(s.confidence, 2),
      timeToLockMs: round((s.timeToLockPs ?? NaN) / 1e9, 2), refChannel: s.refChannel, channelDelaysPs: mapRound(s.channelDelaysPs, 1),
      residualSigmaPs: round(pk.sigmaPs, 1), lockLosses: s.stats.lockLosses,
    },
    uncertainty: { offsetPs: round(pk.centroidErrPs + 1, 1), driftPpm: 1e-3 },
    plot: histPlot('Residual arrival time after sync (all channels)', [{ name: 'all', h: all }]),
    summary: `locked=${s.locked} offset=${Math.round(s.offsetPs)} ps drift=${s.driftPpm.toFixed(4)} ppm confidence=${s.confidence.toFixed(1)} lock after ${((s.timeToLockPs ?? NaN) / 1e9).toFixed(0)} ms of data`,
  };
}

function mapRound(m: Record<number, number>, digits: number): Record<string, number> {
  const o: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) o[k] = round(v, digits);
  return o;
}

async function stepDelays(rig: CalibrationRig, opts: StepOptions, step: 'delays' | 'jitter'): Promise<StepResult> {
  const seconds = opts.seconds ?? 0.2;
  const binPs = opts.binPs ?? 2;
  const { sync, det } = await syncAndCollect(rig, seconds, opts);
  const s = sync.state();
  const tim = channelTimings(det, s.channelDelaysPs, 1e12 / rig.repRateHz, binPs);
  const result: Record<string, unknown> = {}, unc: Record<string, unknown> = {};
  if (step === 'delays') {
    result.referenceChannel = s.refChannel;
    result.relativeDelayPs = Object.fromEntries(tim.map((t) => [t.channel, round(t.relativeDelayPs, 1)]));
    result.centroidPs = Object.fromEntries(tim.map((t) => [t.channel, round(t.peak.centroidPs, 1)]));
    result.sigmaPs = Object.fromEntries(tim.map((t) => [t.channel, round(t.peak.sigmaPs, 1)]));
    unc.relativeDelayPs = Object.fromEntries(tim.map((t) => [t.channel, round(Math.hypot(t.peak.centroidErrPs, tim[0].peak.centroidErrPs) + binPs / Math.sqrt(12) / 10, 2)]));
  } else {
    result.sigmaPs = Object.fromEntries(tim.map((t) => [t.channel, round(t.peak.sigmaPs, 2)]));
    result.fwhmPs = Object.fromEntries(tim.map((t) => [t.channel, round(t.peak.fwhmPs, 1)]));
    unc.sigmaPs = Object.fromEntries(tim.map((t) => [t.channel, round(t.peak.sigmaErrPs, 2)]));
  }
  const summary = step === 'delays'
    ? 'delays relative to channel ' + s.refChannel + ': ' + tim.map((t) => `ch${t.channel} ${t.relativeDelayPs.toFixed(1)} ps`).join(', ')
    : 'timing jitter (sigma): ' + tim.map((t) => `ch${t.channel} ${t.peak.sigmaPs.toFixed(1)} ps`).join(', ');
  return {
    step, settings: { seconds, binPs }, result, uncertainty: unc, summary,
    plot: histPlot(step === 'delays' ? 'Per-channel timing histograms vs pulse clock' : 'Timing peaks (jitter)', tim.map((t) => ({ name: `ch${t.channel}`, h: t.histogram }))),
  };
}

async function stepWindow(rig: CalibrationRig, opts: StepOptions): Promise<StepResult> {
  const seconds = opts.seconds ?? 0.2;
  const binPs = opts.binPs ?? 2;
  const { sync, det } = await syncAndCollect(rig, seconds, opts);
  const period = 1e12 / rig.repRateHz;
  // Residuals are already aligned per channel by the sync: one histogram over a whole period.
  const nBins = Math.floor(period / binPs);
  const h = histogram(det.residualPs, -(nBins * binPs) / 2, binPs, nBins);
  const w = chooseWindow(h, { intrinsicQber: opts.intrinsicQber });
  void sync;
  return {
    step: 'window',
    settings: { seconds, binPs, intrinsicQber: opts.intrinsicQber ?? 0.01, efficiency: 1.1 },
    result: {
      halfWidthPs: w.halfWidthPs, signalKept: round(w.signalKept, 5), backgroundToSignal: round(w.backgroundToSignal, 7),
      qberContribution: round(w.qberContribution, 7), qber: round(w.qber, 6),
    },
    uncertainty: { halfWidthPs: binPs / 2, qberContribution: round(Math.sqrt(Math.max(w.qberContribution, 1e-12) / Math.max(det.residualPs.length, 1)), 7) },
    plot: {
      title: `Gate window: +-${w.halfWidthPs} ps keeps ${(w.signalKept * 100).toFixed(2)} % of signal, QBER contribution ${(w.qberContribution * 100).toFixed(4)} %`,
      xLabel: 'residual arrival time (ps)', yLabel: 'counts', logY: true,
      series: [{ name: 'all channels', x: Array.from(h.counts, (_, i) => h.startPs + (i + 0.5) * binPs), y: Array.from(h.counts) }],
      marks: [{ x: -w.halfWidthPs, label: 'gate' }, { x: w.halfWidthPs, label: 'gate' }],
    },
    summary: `window +-${w.halfWidthPs} ps: signal kept ${(w.signalKept * 100).toFixed(3)} %, background/signal ${w.backgroundToSignal.toExponential(2)}, QBER contribution ${(w.qberContribution * 100).toFixed(4)} %`,
  };
}

async function countPerChannel(rig: CalibrationRig, pulses: number, opts: StepOptions, what: string): Promise<Map<number, number>> {
  const counts = new Map<number, number>();
  for (let done = 0; done < pulses; done += CHUNK_PULSES) {
    const b = await rig.read(Math.min(CHUNK_PULSES, pulses - done));
    for (let i = 0; i < b.channel.length; i++) counts.set(b.channel[i], (counts.get(b.channel[i]) ?? 0) + 1);
    opts.onProgress?.(Math.min(1, (done + CHUNK_PULSES) / pulses), what);
  }
  return counts;
}

async function stepDark(rig: CalibrationRig, opts: StepOptions): Promise<StepResult> {
  const seconds = opts.seconds ?? 1;
  const pulses = Math.round(seconds * rig.repRateHz);
  await rig.setSource({ enabled: false });
  let counts: Map<number, number>;
  try { counts = await countPerChannel(rig, pulses, opts, 'dark counts'); } finally { await rig.setSource({ enabled: true }); }
  const chans = [...counts.keys()].sort((a, b) => a - b);
  const perGate = Object.fromEntries(chans.map((c) => [c, (counts.get(c) ?? 0) / pulses]));
  const perSecond = Object.fromEntries(chans.map((c) => [c, round((counts.get(c) ?? 0) / seconds, 2)]));
  return {
    step: 'dark-counts', settings: { seconds, sourceEnabled: false },
    result: { perGate, perSecond, counts: Object.fromEntries(counts) },
    uncertainty: { perGate: Object.fromEntries(chans.map((c) => [c, Math.sqrt(Math.max(counts.get(c) ?? 0, 1)) / pulses])) },
    plot: { title: 'Dark counts per channel (source off)', xLabel: 'channel', yLabel: 'counts per second', bars: true, series: [{ name: 'dark', x: chans, y: chans.map((c) => (counts.get(c) ?? 0) / seconds) }] },
    summary: 'dark counts: ' + chans.map((c) => `ch${c} ${((counts.get(c) ?? 0) / seconds).toFixed(0)} /s (${((counts.get(c) ?? 0) / pulses).toExponential(2)} per gate)`).join(', '),
  };
}

/**
 * Afterpulse probability and decay from the intervals between consecutive clicks of one detector.
 * Without afterpulses the intervals beyond the dead time D are exponential (Poisson clicks). The
 * rate r is fitted by maximum likelihood on the tail x >= Tt (memoryless: r = n_tail / sum(x - Tt)),
 * the exponential extrapolated back to [D, Tt), and what exceeds it there are afterpulses:
 *   excess = n(D <= x < Tt) - n_tail (e^{rL} - 1),  L = Tt - D,
 *   decay  = [sum_{x<Tt}(x - D) - n_tail (e^{rL} - 1 - rL) / r] / excess.
 * Tt starts at D + 2 us and is moved to D + max(8 decay, 0.5 us) once the decay is known (the
 * excess left beyond 8 decays is 3e-4; a shorter [D, Tt) keeps the Poisson noise of the
 * background subtraction small).
 * Pure function so tests can feed it synthetic intervals.
 */
export function afterpulseFromIntervals(intervalsPs: Float64Array, nClicks: number, binPs: number, maxPs: number): { probability: number; probabilityErr: number; decayPs: number; deadTimePs: number; histogram: Histogram; backgroundAt: (x: number) => number } {
  let dead = Infinity;
  for (let i = 0; i < intervalsPs.length; i++) if (intervalsPs[i] < dead) dead = intervalsPs[i];
  const h = histogram(intervalsPs, 0, binPs, Math.ceil(maxPs / binPs));
  let tail = dead + 2e6;
  let excess = 0, decayPs = 0, nA = 0, r = 0, nB = 0;
  for (let pass = 0; pass < 3; pass++) {
    let sumA = 0, sumB = 0;
    nA = 0; nB = 0;
    for (let i = 0; i < intervalsPs.length; i++) {
      const x = intervalsPs[i];
      if (x < tail) { nA++; sumA += x - dead; } else { nB++; sumB += x - tail; }
    }
    r = nB > 0 && sumB > 0 ? nB / sumB : 0;
    const L = tail - dead;
    const bgCount = r > 0 ? nB * Math.expm1(r * L) : 0;
    const bgTime = r > 0 ? (nB * (Math.expm1(r * L) - r * L)) / r : 0;
    excess = nA - bgCount;
    decayPs = excess > 0 ? (sumA - bgTime) / excess : 0;
    const next = dead + Math.max(8 * decayPs, 5e5);
    if (!(decayPs > 0) || Math.abs(next - tail) < 1000) break;
    tail = next;
  }
  const bgAt = (x: number): number => (x < dead || r <= 0 ? 0 : nB * r * Math.exp(-r * (x - tail)) * binPs);
  return { probability: excess / nClicks, probabilityErr: Math.sqrt(Math.max(nA, 1)) / nClicks, decayPs, deadTimePs: dead, histogram: h, backgroundAt: bgAt };
}

async function stepAfterpulsing(rig: CalibrationRig, opts: StepOptions): Promise<StepResult> {
  const seconds = opts.seconds ?? 1;
  const pulses = Math.round(seconds * rig.repRateHz);
  // Attenuate so that the Poisson background is nearly flat over the afterpulse decay.
  let scale = opts.intensityScale;
  if (scale === undefined) {
    const probe = await countPerChannel(rig, Math.min(pulses, 2e7), {}, 'probe');
    const rate = Math.max(...probe.values(), 1) / (Math.min(pulses, 2e7) / rig.repRateHz);
    scale = Math.min(1, 1e5 / rate);
  }
  await rig.setSource({ intensityScale: scale });
  const last = new Map<number, number>();
  const iv = new Map<number, number[]>();
  const nClicks = new Map<number, number>();
  try {
    for (let done = 0; done < pulses; done += CHUNK_PULSES) {
      const b = await rig.read(Math.min(CHUNK_PULSES, pulses - done));
      const t = tagTimesToNumbers(b.timePs);
      for (let i = 0; i < t.length; i++) {
        const c = b.channel[i];
        const l = last.get(c);
        if (l !== undefined) { let a = iv.get(c); if (!a) iv.set(c, (a = [])); a.push(t[i] - l); }
        last.set(c, t[i]);
        nClicks.set(c, (nClicks.get(c) ?? 0) + 1);
      }
      opts.onProgress?.(Math.min(1, (done + CHUNK_PULSES) / pulses), 'afterpulsing');
    }
  } finally { await rig.setSource({ intensityScale: 1 }); }
  const chans = [...iv.keys()].sort((a, b) => a - b);
  const per = chans.map((c) => {
    const arr = Float64Array.from(iv.get(c)!);
    const mean = arr.reduce((a, b) => a + b, 0) / Math.max(arr.length, 1);
    const maxPs = Math.min(mean * 1.5, 2e8);
    return { c, r: afterpulseFromIntervals(arr, nClicks.get(c) ?? 1, Math.max(1000, maxPs / 2000), maxPs) };
  });
  const first = per[0];
  const shown = first ? first.r.histogram : { startPs: 0, binPs: 1, counts: new Float64Array(1) };
  return {
    step: 'afterpulsing', settings: { seconds, intensityScale: scale },
    result: {
      probability: Object.fromEntries(per.map((p) => [p.c, round(p.r.probability, 5)])),
      decayPs: Object.fromEntries(per.map((p) => [p.c, Math.round(p.r.decayPs)])),
      deadTimePs: Object.fromEntries(per.map((p) => [p.c, Math.round(p.r.deadTimePs)])),
    },
    uncertainty: { probability: Object.fromEntries(per.map((p) => [p.c, round(p.r.probabilityErr, 5)])) },
    plot: {
      title: `Time since previous click, channel ${first?.c ?? '-'} (excess above the exponential = afterpulses)`, xLabel: 'interval (ps)', yLabel: 'counts', logY: true,
      series: [
        { name: 'measured', x: Array.from(shown.counts, (_, i) => (i + 0.5) * shown.binPs), y: Array.from(shown.counts) },
        ...(first ? [{ name: 'Poisson background', x: Array.from(shown.counts, (_, i) => (i + 0.5) * shown.binPs), y: Array.from(shown.counts, (_, i) => first.r.backgroundAt((i + 0.5) * shown.binPs)) }] : []),
      ],
    },
    summary: 'afterpulsing: ' + per.map((p) => `ch${p.c} p=${(p.r.probability * 100).toFixed(2)} % tau=${(p.r.decayPs / 1000).toFixed(1)} ns dead=${(p.r.deadTimePs / 1000).toFixed(1)} ns`).join(', '),
  };
}

async function stepEfficiency(rig: CalibrationRig, opts: StepOptions): Promise<StepResult> {
  const seconds = opts.seconds ?? 0.2;
  const pulses = Math.round(seconds * rig.repRateHz);
  const on = await countPerChannel(rig, pulses, { onProgress: (f, w) => opts.onProgress?.(f * 0.5, w) }, 'source on');
  await rig.setSource({ enabled: false });
  let off: Map<number, number>;
  try { off = await countPerChannel(rig, pulses, { onProgress: (f, w) => opts.onProgress?.(0.5 + f * 0.5, w) }, 'source off'); } finally { await rig.setSource({ enabled: true }); }
  const chans = [...on.keys()].sort((a, b) => a - b);
  const net = new Map(chans.map((c) => [c, Math.max((on.get(c) ?? 0) - (off.get(c) ?? 0), 0)]));
  const best = Math.max(...net.values(), 1);
  const rel = Object.fromEntries(chans.map((c) => [c, round(net.get(c)! / best, 5)]));
  const err = Object.fromEntries(chans.map((c) => {
    const n = net.get(c)!;
    const v = (on.get(c) ?? 0) + (off.get(c) ?? 0);
    return [c, round((n / best) * Math.hypot(Math.sqrt(v) / Math.max(n, 1), Math.sqrt(best) / best), 5)];
  }));
  return {
    step: 'efficiency', settings: { seconds, note: 'relative to the best channel; assumes balanced bit values (Alice) and an even split of light onto the detectors' },
    result: { relative: rel, netCounts: Object.fromEntries(net) },
    uncertainty: { relative: err },
    plot: { title: 'Relative detection efficiency', xLabel: 'channel', yLabel: 'relative efficiency', bars: true, series: [{ name: 'efficiency', x: chans, y: chans.map((c) => net.get(c)! / best) }] },
    summary: 'relative efficiency: ' + chans.map((c) => `ch${c} ${(net.get(c)! / best).toFixed(4)}`).join(', '),
  };
}
