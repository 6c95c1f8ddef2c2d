/**
 * Timing histograms against the pulse clock, peak statistics, per-channel delay alignment and the
 * acceptance (gate) window choice.
 *
 * Input is what ClockSync emits: for every detection its channel and its residual (arrival time
 * minus the expected arrival of its pulse, Bob ps). Adding back the delay the sync assigned to the
 * channel gives the arrival time relative to the reference channel's pulse clock, i.e. the raw
 * timing histogram a lab engineer looks at.
 *
 * All functions are pure and synchronous.
 */
import { ConfigError } from '../errors.ts';

export interface Histogram {
  /** Left edge of bin 0, ps. */
  startPs: number;
  binPs: number;
  counts: Float64Array;
}

export interface PeakStats {
  /** Background-subtracted centroid, ps. */
  centroidPs: number;
  /** Standard uncertainty of the centroid, ps. */
  centroidErrPs: number;
  /** Background-subtracted RMS width (Gaussian sigma), ps. */
  sigmaPs: number;
  sigmaErrPs: number;
  /** Full width at half maximum (linear interpolation), ps. */
  fwhmPs: number;
  /** Background counts per bin (median of the bins away from the peak). */
  backgroundPerBin: number;
  /** Counts in the peak above background. */
  signal: number;
  total: number;
}

/** Histogram of `values` (ps) in [startPs, startPs + nBins * binPs). */
export function histogram(values: ArrayLike<number>, startPs: number, binPs: number, nBins: number, select?: (i: number) => boolean): Histogram {
  if (!(binPs > 0) || !(nBins > 0)) throw new ConfigError('BAD_HISTOGRAM', `histogram needs binPs > 0 and nBins > 0 (got ${binPs}, ${nBins}).`);
  const counts = new Float64Array(nBins);
  for (let i = 0; i < values.length; i++) {
    if (select && !select(i)) continue;
    const b = Math.floor((values[i] - startPs) / binPs);
    if (b >= 0 && b < nBins) counts[b]++;
  }
  return { startPs, binPs, counts };
}

function median(xs: number[]): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Centroid and width of the single peak of a histogram, robust to a flat background (dark counts,
 * afterpulses): background = median of the bins more than `exclusionPs` from the maximum (or of all
 * bins if none), then an iterated +-4 sigma window around the centroid.
 */
export function peakStats(h: Histogram, exclusionPs?: number): PeakStats {
  const { counts, binPs, startPs } = h;
  const n = counts.length;
  let imax = 0;
  for (let i = 1; i < n; i++) if (counts[i] > counts[imax]) imax = i;
  const excl = exclusionPs ?? (n * binPs) / 4;
  const far: number[] = [];
  for (let i = 0; i < n; i++) if (Math.abs(i - imax) * binPs > excl) far.push(counts[i]);
  const bg = far.length >= 8 ? median(far) : 0;
  const centre = (i: number): number => startPs + (i + 0.5) * binPs;
  let c = centre(imax);
  let w = excl;
  let sig = 0, s1 = 0, s2 = 0;
  for (let it = 0; it < 8; it++) {
    sig = 0; s1 = 0; s2 = 0;
    for (let i = 0; i < n; i++) {
      const x = centre(i);
      if (Math.abs(x - c) > w) continue;
      const y = counts[i] - bg;
      sig += y; s1 += y * x;
    }
    if (!(sig > 0)) break;
    const cNew = s1 / sig;
    for (let i = 0; i < n; i++) {
      const x = centre(i);
      if (Math.abs(x - c) > w) continue;
      s2 += (counts[i] - bg) * (x - cNew) * (x - cNew);
    }
    c = cNew;
    const sd = Math.sqrt(Math.max(s2 / sig, 0));
    const wNew = Math.max(4 * sd, 3 * binPs);
    if (Math.abs(wNew - w) < binPs / 4) { w = wNew; break; }
    w = wNew;
  }
  // Sheppard's correction for the bin width.
  const sigmaPs = Math.sqrt(Math.max(s2 / Math.max(sig, 1) - (binPs * binPs) / 12, 0));
  // FWHM by linear interpolation from the maximum.
  const half = bg + (counts[imax] - bg) / 2;
  let l = imax, r = imax;
  while (l > 0 && counts[l] > half) l--;
  while (r < n - 1 && counts[r] > half) r++;
  const xl = l < imax && counts[l + 1] !== counts[l] ? l + (half - counts[l]) / (counts[l + 1] - counts[l]) : l;
  const xr = r > imax && counts[r - 1] !== counts[r] ? r - (half - counts[r]) / (counts[r - 1] - counts[r]) : r;
  let total = 0;
  for (let i = 0; i < n; i++) total += counts[i];
  const nEff = Math.max(sig, 1);
  return {
    centroidPs: c, centroidErrPs: sigmaPs / Math.sqrt(nEff), sigmaPs, sigmaErrPs: sigmaPs / Math.sqrt(2 * nEff),
    fwhmPs: (xr - xl) * binPs, backgroundPerBin: bg, signal: sig, total,
  };
}

export interface ChannelTiming {
  channel: number;
  histogram: Histogram;
  peak: PeakStats;
  /** Peak centroid relative to the reference channel's, ps: the delay to compensate. */
  relativeDelayPs: number;
}

/**
 * Per-channel timing histograms relative to the reference channel's pulse clock. `syncDelayPs`
 * is ClockSync's state().channelDelaysPs (the per-channel delay it assigned). Each channel's
 * histogram spans one pulse period centred on its own delay; `relativeDelayPs` is what to pass as
 * ClockSync's `channelDelaysPs` (or to subtract in the tagger) so that all channels line up.
 */
export function channelTimings(
  det: { channel: Uint8Array; residualPs: Float32Array },
  syncDelayPs: Record<number, number>,
  periodPs: number,
  binPs = 2,
): ChannelTiming[] {
  const chans = [...new Set(det.channel)].sort((a, b) => a - b);
  const out: ChannelTiming[] = [];
  for (const c of chans) {
    const d = syncDelayPs[c] ?? 0;
    const nBins = Math.ceil(periodPs / binPs);
    const start = d - (nBins * binPs) / 2;
    const vals = new Float64Array(det.residualPs.length);
    for (let i = 0; i < vals.length; i++) vals[i] = det.residualPs[i] + d;
    const h = histogram(vals, start, binPs, nBins, (i) => det.channel[i] === c);
    out.push({ channel: c, histogram: h, peak: peakStats(h), relativeDelayPs: 0 });
  }
  const ref = out.find((x) => (syncDelayPs[x.channel] ?? 0) === 0) ?? out[0];
  for (const x of out) x.relativeDelayPs = ref ? x.peak.centroidPs - ref.peak.centroidPs : 0;
  return out;
}

export interface WindowChoice {
  /** Accepted interval around the peak centroid: [centroid - halfWidthPs, centroid + halfWidthPs]. */
  halfWidthPs: number;
  /** Fraction of the peak's signal kept. */
  signalKept: number;
  /** Background counts kept per signal count kept. */
  backgroundToSignal: number;
  /** QBER contribution of the accepted background (random bits: half of them errors). */
  qberContribution: number;
  /** Total QBER predicted with the intrinsic error rate: (e_d S + B/2) / (S + B). */
  qber: number;
  /** Figure of merit maximised: kept counts times (1 - (1 + f) h(QBER)). */
  merit: number;
  /** The curve: half widths tried and their merit, for plots. */
  curve: { halfWidthPs: number; merit: number; qber: number; signalKept: number }[];
}

function h2(p: number): number {
  if (p <= 0 || p >= 1) return 0;
  return -p * Math.log2(p) - (1 - p) * Math.log2(1 - p);
}

/**
 * Acceptance window around a histogram peak trading signal against flat background (dark counts,
 * afterpulses, detections of neighbouring pulses). For each symmetric half-width w the kept signal
 * S(w) (background-subtracted) and background B(w) give a QBER E = (e_d S + B/2)/(S + B) and the
 * asymptotic BB84 figure (S + B)(1 - (1 + f) h2(E)) (one-way error correction leaking f h2(E)
 * plus privacy amplification h2(E)); the w maximising it is chosen.
 */
export function chooseWindow(h: Histogram, opts: { intrinsicQber?: number; efficiency?: number } = {}): WindowChoice {
  const ed = opts.intrinsicQber ?? 0.01;
  const f = opts.efficiency ?? 1.1;
  const p = peakStats(h);
  const { counts, binPs, startPs } = h;
  const n = counts.length;
  const bg = p.backgroundPerBin;
  const totalSignal = Math.max(p.signal, 1e-12);
  const curve: WindowChoice['curve'] = [];
  let best: WindowChoice | null = null;
  const maxW = (n * binPs) / 2;
  for (let w = binPs / 2; w <= maxW; w += binPs / 2) {
    let kept = 0, nb = 0;
    for (let i = 0; i < n; i++) {
      const x = startPs + (i + 0.5) * binPs;
      if (Math.abs(x - p.centroidPs) <= w) { kept += counts[i]; nb++; }
    }
    const B = bg * nb;
    const S = Math.max(kept - B, 0);
    if (S + B <= 0) continue;
    const E = (ed * S + B / 2) / (S + B);
    const merit = (S + B) * Math.max(0, 1 - (1 + f) * h2(E));
    curve.push({ halfWidthPs: w, merit, qber: E, signalKept: S / totalSignal });
    if (!best || merit > best.merit) {
      best = { halfWidthPs: w, signalKept: S / totalSignal, backgroundToSignal: S > 0 ? B / S : Infinity, qberContribution: B / 2 / (S + B), qber: E, merit, curve };
    }
  }
  if (!best) throw new ConfigError('EMPTY_HISTOGRAM', 'chooseWindow: the histogram has no counts; collect data with the source on and the sync locked.');
  best.curve = curve;
  return best;
}
