/**
 * `qkd calibrate <step> --replay FILE`: the calibration steps that make sense on a recording
 * (PicoQuant .ptu, quTAG binary, qcrypto a1), read through the replay tagger (src/devices/replay.ts)
 * like a live one. A recording cannot switch or attenuate the source and holds no record of
 * Alice's pulses, so:
 * - dark-counts: counts per channel over the recording (or --seconds of it), per second and per
 *   sync period when the header gives a sync rate. The recording must have been taken with the
 *   source off: the record says so (`settings.sourceState: "as recorded"`).
 * - afterpulsing: the intervals between consecutive clicks of each channel, at the recording's
 *   own intensity (no attenuation step; the record says so).
 * - delays: T3 recordings only (each record carries its time since the sync): per channel, the
 *   histogram of those times and its peak; relative delays = centroid minus the first channel's,
 *   the `relativeDelayPs` a node's sync starts from. A T2 recording has no pulse clock to measure
 *   against: refused (`qkd histogram --mode g2` shows channel-to-channel delays).
 * - window, sync, jitter, efficiency: refused with the reason (Alice's pattern, or a source
 *   switched between two measurements).
 * The recording is scanned once first (natively decoded): its span and per-channel counts, so
 * that --seconds beyond its end and channels it does not hold are clear errors up front.
 */
import { basename } from 'node:path';
import { ConfigError } from '../../errors.ts';
import { MARKER_CHANNEL, openRecording, RECORDING_FORMATS, type Recording, type RecordingFormat } from '../../core/records.ts';
import { ReplayTagger } from '../../devices/replay.ts';
import { deviceRig } from '../../timing/device-rig.ts';
import type { CalibrationRig, CalibrationStep, StepOptions, StepResult } from '../../timing/calibrate.ts';
import type { AlicePattern } from '../../timing/pattern.ts';

/** Steps a recording supports, and why the others are refused. */
export const REPLAY_STEPS: CalibrationStep[] = ['dark-counts', 'afterpulsing', 'delays'];
const REFUSED: Partial<Record<CalibrationStep, string>> = {
  window: "the acceptance window is chosen on the sync's residuals against Alice's pulses, which a recording does not have",
  sync: "the clock sync needs Alice's intensity pattern, which a recording does not have",
  jitter: "the jitter step measures against Alice's pulse clock (for a T3 recording, the delays step reports each channel's peak width)",
  efficiency: 'relative efficiency subtracts a source-off measurement from a source-on one; a recording is one of them (run dark-counts on each recording instead)',
};

export interface ReplayScan {
  rec: Recording;
  /** Events per channel (markers and the sync excluded only where the format has them apart). */
  perChannel: Map<number, number>;
  firstPs: bigint;
  lastPs: bigint;
}

/** Opens and scans a recording (per-channel counts and span). */
export async function scanRecording(file: string, format: string | undefined): Promise<ReplayScan> {
  if (format !== undefined && !RECORDING_FORMATS.includes(format as RecordingFormat)) {
    throw new ConfigError('BAD_OPTION', `--format expects one of ${RECORDING_FORMATS.join(', ')}, got '${format}'.`);
  }
  // A missing file, an unknown format, a truncated one: openRecording's errors name the file.
  const rec = await openRecording(file, format ? { format: format as RecordingFormat } : {});
  const perChannel = new Map<number, number>();
  let firstPs: bigint | undefined;
  let lastPs = 0n;
  for await (const c of rec.chunks()) {
    const n = c.timePs.length;
    for (let i = 0; i < n; i++) {
      const ch = c.channel[i];
      if (ch >= MARKER_CHANNEL) continue;
      perChannel.set(ch, (perChannel.get(ch) ?? 0) + 1);
      const t = c.timePs[i];
      if (firstPs === undefined || t < firstPs) firstPs = t;
      if (t > lastPs) lastPs = t;
    }
  }
  if (firstPs === undefined) throw new ConfigError('RECORDING_EMPTY', `--replay ${file}: the recording holds no events (${rec.info.description}, ${rec.info.records} records). Nothing to calibrate.`);
  return { rec, perChannel, firstPs, lastPs };
}

/** The channels to calibrate: --channels (each must have events in the file) or all with events. */
export function pickChannels(scan: ReplayScan, file: string, list: string | undefined): number[] {
  const present = [...scan.perChannel.keys()].sort((a, b) => a - b);
  if (list === undefined) return present;
  const out: number[] = [];
  for (const part of list.split(',')) {
    const ch = Number(part.trim());
    if (!Number.isInteger(ch) || ch < 0 || ch > 255) throw new ConfigError('BAD_OPTION', `--channels expects channel numbers separated by commas, got '${list}'.`);
    if (!scan.perChannel.get(ch)) {
      throw new ConfigError('CHANNEL_NOT_IN_RECORDING', `--replay ${file}: channel ${ch} is not in the recording (${scan.rec.info.description}; channels with events: ${present.join(', ')}). Channel 0 is the sync / start input, inputs count from 1.`);
    }
    out.push(ch);
  }
  return out;
}

/** The rig and the step's options for a counting step on a recording. */
export async function replayCalibrationRig(step: CalibrationStep, file: string, o: { format?: string; channels?: string; seconds?: number }): Promise<{ rig: CalibrationRig; close(): Promise<void>; opts: Partial<StepOptions>; seconds: number; scan: ReplayScan; channels: number[] }> {
  if (!REPLAY_STEPS.includes(step)) {
    throw new ConfigError('CALIBRATE_REPLAY_STEP', `calibrate ${step} --replay: ${REFUSED[step] ?? 'not available on a recording'}. On a recording run ${REPLAY_STEPS.join(', ')}.`);
  }
  const scan = await scanRecording(file, o.format);
  const channels = pickChannels(scan, file, o.channels);
  const spanS = Number(scan.lastPs - scan.firstPs) / 1e12;
  if (o.seconds !== undefined && o.seconds > spanS) {
    throw new ConfigError('BAD_OPTION', `--seconds ${o.seconds}: ${basename(file)} spans only ${(Math.floor(spanS * 1000) / 1000).toFixed(3)} s of events. Give --seconds up to that, or leave it out for the whole recording.`);
  }
  const info = scan.rec.info;
  // Per-gate figures refer to the sync period when the file has one; otherwise a nominal 1 MHz
  // (only the read granularity and the per-gate column depend on it).
  const repRateHz = info.syncRateHz && info.syncRateHz > 0 ? info.syncRateHz : 1e6;
  // The whole recording: its span plus two periods, so that its last event is inside.
  const seconds = o.seconds ?? spanS + 2 / repRateHz;
  const tagger = new ReplayTagger(file, `replay:${basename(file)}`, info.format ? { format: info.format } : {});
  await tagger.open();
  const pattern: AlicePattern = {
    meanPhotons: [0, 0, 0],
    intensities() {
      throw new ConfigError('CALIBRATE_NO_PATTERN', `calibrate ${step} --replay: a recording holds no record of Alice's pulses.`);
    },
  };
  const base = deviceRig({ tagger, pattern, repRateHz, channels, profiles: { tagger: tagger.profile, recording: basename(file) } });
  // The source state is the recording's: nothing to switch, nothing read ahead to drop.
  const rig: CalibrationRig & { close(): Promise<void> } = { ...base, setSource: async () => undefined };
  // Reads start at the recording's first event; the whole span is read unless --seconds says less.
  const opts: Partial<StepOptions> = step === 'afterpulsing' ? { intensityScale: 1 } : {};
  return { rig, opts, seconds, scan, channels, close: async () => { await base.close(); await tagger.close(); } };
}

/** Marks a step result as measured on a recording (settings, summary). */
export function asRecorded(res: StepResult, file: string, scan: ReplayScan, seconds: number): StepResult {
  const i = scan.rec.info;
  res.settings = {
    ...res.settings,
    seconds,
    replay: { file: basename(file), format: i.format, description: i.description, records: i.records, ...(i.syncRateHz ? { syncRateHz: i.syncRateHz } : {}) },
    sourceState: 'as recorded',
    ...(res.step === 'afterpulsing' ? { intensityScale: 'as recorded (no attenuation step on a recording)' } : {}),
  };
  res.summary = `${basename(file)} (${i.description}): ${res.summary}`;
  return res;
}

/**
 * delays on a T3 recording: per channel, the histogram of the time since the sync (dtime) over
 * one sync period, its peak (background-subtracted centroid and width), and the delays relative
 * to the first channel.
 */
export async function replayDelays(file: string, o: { format?: string; channels?: string; binPs?: number }): Promise<{ res: StepResult; scan: ReplayScan }> {
  const scan = await scanRecording(file, o.format);
  const info = scan.rec.info;
  if (!info.t3 || !info.dtimeResolutionPs || !info.syncPeriodPs) {
    throw new ConfigError('CALIBRATE_REPLAY_STEP', `calibrate delays --replay ${basename(file)}: ${info.description} is not a T3 recording, so it has no pulse clock to measure delays against. Record in T3 mode with the laser's sync, or look at channel-to-channel delays with 'qkd histogram --replay ${basename(file)} --mode g2'.`);
  }
  const channels = pickChannels(scan, file, o.channels);
  const res0 = info.dtimeResolutionPs;
  const binPs = Math.max(res0, Math.round((o.binPs ?? res0) / res0) * res0);
  const nBins = Math.max(1, Math.min(1 << 20, Math.ceil(info.syncPeriodPs / binPs)));
  const per = new Map<number, Float64Array>(channels.map((c) => [c, new Float64Array(nBins)]));
  for await (const c of scan.rec.chunks()) {
    const d = c.dtime!;
    for (let i = 0; i < d.length; i++) {
      const h = per.get(c.channel[i]);
      if (!h) continue;
      const k = Math.floor((d[i] * res0) / binPs);
      if (k < nBins) h[k]++;
    }
  }
  const stats = channels.map((ch) => ({ ch, counts: per.get(ch)!, peak: peakOf(per.get(ch)!, binPs) }));
  const ref = stats[0];
  const rel = Object.fromEntries(stats.map((s) => [s.ch, round(s.peak.peakPs - ref.peak.peakPs, 1)]));
  const unc = binPs / Math.sqrt(12);
  const res: StepResult = {
    step: 'delays',
    settings: { binPs, syncPeriodPs: info.syncPeriodPs, dtimeResolutionPs: res0, marker: 'peak of the 3-bin smoothed histogram (parabolic interpolation)' },
    result: {
      referenceChannel: ref.ch,
      relativeDelayPs: rel,
      peakPs: Object.fromEntries(stats.map((s) => [s.ch, round(s.peak.peakPs, 1)])),
      risePs: Object.fromEntries(stats.map((s) => [s.ch, round(s.peak.risePs, 1)])),
      fwhmPs: Object.fromEntries(stats.map((s) => [s.ch, round(s.peak.fwhmPs, 1)])),
      counts: Object.fromEntries(stats.map((s) => [s.ch, scan.perChannel.get(s.ch) ?? 0])),
    },
    uncertainty: { relativeDelayPs: Object.fromEntries(stats.map((s) => [s.ch, s === ref ? 0 : round(Math.SQRT2 * unc, 1)])) },
    plot: {
      title: 'Per-channel time since the sync (T3 recording)', xLabel: 'time since sync (ps)', yLabel: 'counts', logY: true,
      series: stats.map((s) => ({ name: `ch${s.ch}`, x: Array.from(s.counts, (_, k) => (k + 0.5) * binPs), y: Array.from(s.counts) })),
    },
    summary: `delays relative to channel ${ref.ch}: ` + stats.map((s) => `ch${s.ch} ${(s.peak.peakPs - ref.peak.peakPs).toFixed(1)} ps (peak ${s.peak.peakPs.toFixed(0)} ps after the sync, rise ${s.peak.risePs.toFixed(0)} ps, FWHM ${s.peak.fwhmPs.toFixed(0)} ps)`).join(', '),
  };
  return { res, scan };
}

/**
 * Peak of a timing histogram that may be asymmetric (a fluorescence decay, a detector's diffusion
 * tail): the maximum of the 3-bin moving average with parabolic interpolation; the leading edge
 * at half maximum above the background (median bin) and the FWHM, both linearly interpolated.
 */
export function peakOf(counts: Float64Array, binPs: number): { peakPs: number; risePs: number; fwhmPs: number } {
  const n = counts.length;
  const s = new Float64Array(n);
  for (let k = 0; k < n; k++) s[k] = (counts[Math.max(k - 1, 0)] + counts[k] + counts[Math.min(k + 1, n - 1)]) / 3;
  let m = 0;
  for (let k = 1; k < n; k++) if (s[k] > s[m]) m = k;
  let d = 0;
  if (m > 0 && m < n - 1) {
    const den = s[m - 1] - 2 * s[m] + s[m + 1];
    if (den < 0) d = Math.max(-0.5, Math.min(0.5, (0.5 * (s[m - 1] - s[m + 1])) / den));
  }
  const bg = Float64Array.from(s).sort()[n >> 1];
  const half = bg + (s[m] - bg) / 2;
  let l = m;
  while (l > 0 && s[l - 1] >= half) l--;
  let r = m;
  while (r < n - 1 && s[r + 1] >= half) r++;
  const edge = (a: number, b: number) => (s[a] === s[b] ? 0 : (half - s[a]) / (s[b] - s[a]));
  const left = l > 0 ? l - 1 + edge(l - 1, l) : 0;
  const right = r < n - 1 ? r + edge(r, r + 1) : n - 1;
  return { peakPs: (m + 0.5 + d) * binPs, risePs: (left + 0.5) * binPs, fwhmPs: (right - left) * binPs };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
