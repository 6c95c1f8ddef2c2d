/**
 * Acquisition: from a buffer of Bob's click times (his clock) and Alice's intensity pattern, find
 * the pulse clock as seen by Bob (period, phase, per-channel delays) and which of Alice's pulses
 * each click belongs to.
 *
 * Three stages, each a cross-correlation done with the FFT (after qcrypto's `pfind`/`fpfind`,
 * Kurtsiefer et al., and the qubit-based sync of Calderaro et al., Phys. Rev. Applied 13, 054041
 * (2020)):
 *
 * 1. Frequency. Each click is turned into a phasor exp(2 pi i t/T) at Alice's nominal period T.
 *    A clock drift d makes it rotate at f = d/T, so the FFT of the phasors binned in time
 *    (bin ~4 us, Nyquist well above the largest drift) peaks at f. Channels are transformed
 *    separately and their powers added, because their cable delays give them different phases.
 * 2. Fine phase and drift fit. The residual phase (after removing f) is averaged per time segment
 *    and a weighted straight line fitted to the unwrapped segment phases: its slope refines f,
 *    and the per-channel mean phase gives the sub-period arrival time of each detector.
 * 3. Pulse offset, coarse to fine. Knowing the phase, every click has an integer pulse count
 *    relative to the first one; the unknown integer offset J to Alice's numbering (up to
 *    +-maxOffsetPs / T, i.e. ~10^6 pulses) is the peak of the cross-correlation between the
 *    click train and Alice's pattern scored by intensity (see pattern.ts). Coarse: both sequences
 *    binned by B pulses and correlated with one FFT; fine: the best coarse peaks are re-evaluated
 *    pulse by pulse. The confidence is the fine peak in units of its null standard deviation
 *    (peak over noise), and per-channel integer skews are searched around the peak.
 */
import { crossCorrelateReal, fft, nextPowerOfTwo } from './fft.ts';
import { classFrequencies, runSteps, scoreTable, type AlicePattern, type PatternSteps, type ScoreTable } from './pattern.ts';

export interface AcquireOptions {
  /** Alice's nominal pulse period in ps (1e12 / repRateHz). */
  periodPs: number;
  /** Largest clock drift to search, in ppm (default 50). */
  maxDriftPpm?: number;
  /** Expected Bob time at which pulse 0 arrives (fibre delay + nominal clock offset), ps (default 0). */
  expectedOffsetPs?: number;
  /** Half-width of the offset search around expectedOffsetPs, ps (default 1.5 ms). */
  maxOffsetPs?: number;
  /** Coarse bin of the pulse-offset search, in pulses (power of two, default 4; 1 = no coarse stage). */
  coarsePulses?: number;
  /** Largest integer skew between detector channels searched around the common peak, pulses (default 16). */
  maxChannelSkewPulses?: number;
  /** Minimum number of clicks wanted in the pulse-offset block (default: enough for an expected z of 20). */
  minOffsetClicks?: number;
  /** Pulse index that must map to the start of the buffer or later (first pulse of the run, default 0). */
  firstPulse?: number;
}

/** Phase-and-frequency model: pulse position u = pInt + pFrac + (t - delay[c] - tRefPs) * ratePerPs. */
export interface ClockModel {
  tRefPs: number;
  pInt: number;
  pFrac: number;
  /** Alice pulses per Bob picosecond (1 / (T (1 + drift))) at tRefPs. */
  ratePerPs: number;
  /** Change of ratePerPs per Bob ps (drift wander), estimated by the tracking filter. */
  accelPerPs2: number;
  /** Per-channel delay in Bob ps (256 entries), relative to the reference channel. */
  delayPs: Float64Array;
  refChannel: number;
}

export interface FrequencyResult {
  /** Phase rotation rate in cycles per ps (= drift / T). */
  freqPerPs: number;
  t0Ps: number;
  /** Mean phase (cycles, in [0,1)) per channel of exp(2 pi i (t/T - f (t - t0))). */
  phaseByChannel: Map<number, number>;
  /** Mean resultant length per channel (1 = no jitter, 0 = no timing information). */
  coherenceByChannel: Map<number, number>;
  countByChannel: Map<number, number>;
  /** Spectral peak power over the median power (frequency-stage peak over noise). */
  peakOverNoise: number;
}

const TWO_PI = 2 * Math.PI;

function fracPhase(t: number, periodPs: number): number {
  const q = t / periodPs;
  return q - Math.floor(q);
}

/** Stages 1 and 2. `t` need not be sorted. */
export function acquireFrequency(t: Float64Array, ch: Uint8Array, periodPs: number, maxDriftPpm = 50): FrequencyResult {
  const n = t.length;
  let t0 = Infinity, t1 = -Infinity;
  for (let i = 0; i < n; i++) { if (t[i] < t0) t0 = t[i]; if (t[i] > t1) t1 = t[i]; }
  const span = Math.max(t1 - t0, 1);
  const maxF = (maxDriftPpm * 1e-6) / periodPs;
  const binPs = Math.min(4e6, 1 / (2.5 * maxF));
  const m = Math.min(1 << 20, nextPowerOfTwo(Math.ceil(span / binPs) + 1));
  const slotOf = new Int16Array(256).fill(-1);
  const slots: number[] = [];
  for (let i = 0; i < n; i++) if (slotOf[ch[i]] < 0) { slotOf[ch[i]] = slots.length; slots.push(ch[i]); }
  const power = new Float64Array(m);
  for (let s = 0; s < slots.length; s++) {
    const re = new Float64Array(m), im = new Float64Array(m);
    for (let i = 0; i < n; i++) {
      if (slotOf[ch[i]] !== s) continue;
      const b = Math.min(m - 1, Math.floor((t[i] - t0) / binPs));
      const a = TWO_PI * fracPhase(t[i], periodPs);
      re[b] += Math.cos(a);
      im[b] += Math.sin(a);
    }
    fft(re, im);
    for (let k = 0; k < m; k++) power[k] += re[k] * re[k] + im[k] * im[k];
  }
  // Search only frequencies the drift range allows.
  const df = 1 / (m * binPs);
  const kMax = Math.min(m / 2 - 1, Math.ceil((maxF * 1.05) / df));
  let best = 0, bestP = -1;
  for (let kk = -kMax; kk <= kMax; kk++) {
    const p = power[(kk + m) % m];
    if (p > bestP) { bestP = p; best = kk; }
  }
  const pm = power[(best - 1 + m) % m], pp = power[(best + 1) % m];
  const denom = pm - 2 * bestP + pp;
  const delta = denom < 0 ? (0.5 * (pm - pp)) / denom : 0;
  let f = (best + Math.max(-0.5, Math.min(0.5, delta))) * df;
  const sorted = power.slice().sort();
  const peakOverNoise = bestP / Math.max(sorted[m >> 1], 1e-300);

  // Stage 2: two passes of segment-phase line fit.
  const segs = 64;
  const segPs = span / segs + 1e-9;
  let phase = new Map<number, number>(), coh = new Map<number, number>(), cnt = new Map<number, number>();
  for (let pass = 0; pass < 3; pass++) {
    const sr = new Float64Array(slots.length * segs), si = new Float64Array(slots.length * segs);
    const cr = new Float64Array(slots.length), ci = new Float64Array(slots.length), cc = new Float64Array(slots.length);
    for (let i = 0; i < n; i++) {
      const s = slotOf[ch[i]];
      const dt = t[i] - t0;
      const a = TWO_PI * (fracPhase(t[i], periodPs) - f * dt);
      const c = Math.cos(a), sn = Math.sin(a);
      const g = s * segs + Math.min(segs - 1, Math.floor(dt / segPs));
      sr[g] += c; si[g] += sn;
      cr[s] += c; ci[s] += sn; cc[s]++;
    }
    phase = new Map(); coh = new Map(); cnt = new Map();
    const rot: number[] = [];
    for (let s = 0; s < slots.length; s++) {
      const th = Math.atan2(ci[s], cr[s]);
      rot.push(th);
      phase.set(slots[s], ((th / TWO_PI) % 1 + 1) % 1);
      coh.set(slots[s], Math.hypot(cr[s], ci[s]) / Math.max(cc[s], 1));
      cnt.set(slots[s], cc[s]);
    }
    if (pass === 2) break;
    // Combine channels per segment after removing each channel's mean phase, unwrap, fit a line.
    const xs: number[] = [], ys: number[] = [], ws: number[] = [];
    let prev = 0, have = false;
    for (let g = 0; g < segs; g++) {
      let r = 0, q = 0;
      for (let s = 0; s < slots.length; s++) {
        const c = Math.cos(-rot[s]), sn = Math.sin(-rot[s]);
        const a = sr[s * segs + g], b = si[s * segs + g];
        r += a * c - b * sn; q += a * sn + b * c;
      }
      const w = Math.hypot(r, q);
      if (w === 0) continue;
      let ang = Math.atan2(q, r);
      if (have) { while (ang - prev > Math.PI) ang -= TWO_PI; while (ang - prev < -Math.PI) ang += TWO_PI; }
      prev = ang; have = true;
      xs.push((g + 0.5) * segPs); ys.push(ang); ws.push(w);
    }
    if (xs.length < 3) break;
    let sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (let j = 0; j < xs.length; j++) { sw += ws[j]; sx += ws[j] * xs[j]; sy += ws[j] * ys[j]; sxx += ws[j] * xs[j] * xs[j]; sxy += ws[j] * xs[j] * ys[j]; }
    const slope = (sw * sxy - sx * sy) / (sw * sxx - sx * sx);
    if (Number.isFinite(slope)) f += slope / TWO_PI;
  }
  return { freqPerPs: f, t0Ps: t0, phaseByChannel: phase, coherenceByChannel: coh, countByChannel: cnt, peakOverNoise };
}

function wrapHalf(x: number): number {
  return x - Math.round(x);
}

/** Model with the integer part still unknown (pInt = floor(t0/T)), from a frequency result. */
export function modelFromFrequency(fr: FrequencyResult, periodPs: number): ClockModel {
  let ref = -1, refN = -1;
  for (const [c, k] of fr.countByChannel) if (k > refN) { refN = k; ref = c; }
  const rate = 1 / periodPs - fr.freqPerPs;
  const q = fr.t0Ps / periodPs;
  const pInt = Math.floor(q);
  const frac0 = q - pInt;
  const thRef = fr.phaseByChannel.get(ref) ?? 0;
  const delayPs = new Float64Array(256);
  for (const [c, th] of fr.phaseByChannel) delayPs[c] = wrapHalf(th - thRef) / rate;
  // u = t/T - f (t - t0) - th_c: at t0 that is frac0 - th_ref (+ pInt).
  return { tRefPs: fr.t0Ps, pInt, pFrac: frac0 - thRef, ratePerPs: rate, accelPerPs2: 0, delayPs, refChannel: ref };
}

export interface OffsetResult {
  /** Integer to add to the model's pInt. */
  shift: number;
  /** Per-channel integer skew (pulses) found around the common peak, relative to the reference channel. */
  skew: Map<number, number>;
  /** Fine peak over its null standard deviation (z-score). */
  confidence: number;
  /** Coarse-stage peak over the standard deviation of the coarse correlation. */
  coarseConfidence: number;
  clicksUsed: number;
  pulsesSearched: number;
}

/** Expected z-score per sqrt(click) of the pattern correlation at the true offset. */
export function expectedDPrime(table: ScoreTable, meanPhotons: readonly number[]): number {
  let mean = 0, sig = 0;
  for (let c = 0; c < meanPhotons.length; c++) mean += table.frequencies[c] * meanPhotons[c];
  for (let c = 0; c < meanPhotons.length; c++) sig += (table.frequencies[c] * meanPhotons[c] / mean) * table.score[c];
  return sig / table.sigma;
}

/** Relative integer pulse count of each click under a model (pInt excluded). */
function relativeCounts(t: Float64Array, ch: Uint8Array, model: ClockModel): Float64Array {
  const v = new Float64Array(t.length);
  for (let i = 0; i < t.length; i++) v[i] = Math.round(model.pFrac + (t[i] - model.delayPs[ch[i]] - model.tRefPs) * model.ratePerPs);
  return v;
}

/**
 * Stage 3: integer pulse offset. Returns null when there are too few clicks to try. The caller
 * decides on lock from `confidence`.
 */
export function acquireOffset(t: Float64Array, ch: Uint8Array, model: ClockModel, pattern: AlicePattern, opts: AcquireOptions): OffsetResult | null {
  return runSteps(acquireOffsetSteps(t, ch, model, pattern.meanPhotons, opts), pattern);
}

/** {@link acquireOffset} as steps that ask for the pattern (two range requests), for a remote pattern. */
export function* acquireOffsetSteps(t: Float64Array, ch: Uint8Array, model: ClockModel, meanPhotons: readonly number[], opts: AcquireOptions): PatternSteps<OffsetResult | null> {
  const T = opts.periodPs;
  const R = opts.maxChannelSkewPulses ?? 16;
  const H = Math.ceil((opts.maxOffsetPs ?? 1.5e9) / T);
  const firstPulse = opts.firstPulse ?? 0;
  let B = opts.coarsePulses ?? 4;
  // Expected per-click signal d' from a pattern sample: a click picks class c with probability
  // ~ f_c mu_c / mean mu, so E[score | aligned] = sum f_c mu_c s_c / mean mu, null mean 0, sd sigma.
  const sample = yield { kind: 'range', first: Math.max(firstPulse, model.pInt), count: 1 << 14 };
  const t0 = scoreTable(meanPhotons, classFrequencies(sample, meanPhotons.length));
  const minClicks = opts.minOffsetClicks ?? Math.ceil((20 / Math.max(expectedDPrime(t0, meanPhotons), 0.05)) ** 2);
  const v = relativeCounts(t, ch, model);
  let vMin = Infinity, vMax = -Infinity;
  for (let i = 0; i < v.length; i++) { if (v[i] < vMin) vMin = v[i]; if (v[i] > vMax) vMax = v[i]; }
  if (!(v.length > 0)) return null;
  // Block: from the first click, long enough to hold minClicks clicks, but at most 2^22 pulses
  // (the coarse FFT is sized to the search range plus the block). Sized on the clicks themselves,
  // not on the average rate, so data with gaps (bursts) gives a short dense block.
  const sortedV = v.slice().sort();
  const kth = sortedV[Math.min(sortedV.length - 1, minClicks)];
  const L = Math.max(1, Math.min(kth - vMin + 1, 1 << 22));
  const vStart = vMin;
  // Prior: the click at relative count v has Alice index pInt + v + J with J near Jc.
  const jc = Math.round((model.tRefPs - (opts.expectedOffsetPs ?? 0)) * model.ratePerPs + model.pFrac) - model.pInt;
  const base = model.pInt + vStart + jc - H - R;
  const xLen = L + 2 * H + 2 * R;
  // Alice's scored pattern x (pulses before the run score 0: unknown).
  const x = new Float64Array(xLen);
  const from = Math.max(base, firstPulse);
  const cls = from < base + xLen ? yield { kind: 'range', first: from, count: base + xLen - from } : new Uint8Array(0);
  const table: ScoreTable = scoreTable(meanPhotons, classFrequencies(cls, meanPhotons.length));
  for (let k = 0; k < cls.length; k++) x[from - base + k] = table.score[cls[k]];
  // Clicks of the block.
  const js: number[] = [], cs: number[] = [];
  for (let i = 0; i < v.length; i++) {
    const j = v[i] - vStart;
    if (j >= 0 && j < L) { js.push(j); cs.push(ch[i]); }
  }
  const nClicks = js.length;
  if (nClicks < 8) return null;
  const yCount = new Map<number, number>();
  for (const j of js) yCount.set(j, (yCount.get(j) ?? 0) + 1);
  let sumY2 = 0;
  for (const c of yCount.values()) sumY2 += c * c;
  const fine = (kp: number, onlyCh = -1): number => {
    let s = 0;
    for (let i = 0; i < nClicks; i++) if (onlyCh < 0 || cs[i] === onlyCh) s += x[js[i] + kp];
    return s;
  };
  const nK = 2 * H + 2 * R + 1; // k' in [0, 2H + 2R]
  let coarseConfidence = 0;
  let candidates: number[] = [];
  for (;;) {
    // Coarse: Bob's clicks binned by B pulses against Alice's pattern summed over a sliding 2B
    // window (overlapping bins), so a click's partner always falls in exactly one coarse offset
    // whatever the sub-bin phase: the whole signal stays in one peak, at twice the noise variance.
    const nc = nextPowerOfTwo(Math.ceil(xLen / B) + 2);
    const xc = new Float64Array(nc), yc = new Float64Array(nc);
    for (let k = 0; k < xLen; k++) {
      const q = Math.floor(k / B);
      xc[q] += x[k];
      if (q > 0) xc[q - 1] += x[k];
    }
    for (const j of js) yc[Math.floor(j / B)] += 1;
    const corr = crossCorrelateReal(xc, yc);
    const qMax = Math.floor((nK - 1) / B);
    let mean = 0, sq = 0;
    for (let q = 0; q <= qMax; q++) { mean += corr[q]; sq += corr[q] * corr[q]; }
    mean /= qMax + 1;
    const sd = Math.sqrt(Math.max(sq / (qMax + 1) - mean * mean, 1e-300));
    // Top three coarse peaks, not adjacent to each other.
    const tops: number[] = [];
    for (let r = 0; r < 3; r++) {
      let bq = -1, bv = -Infinity;
      for (let q = 0; q <= qMax; q++) {
        if (corr[q] > bv && (tops.length === 0 || tops.every((p) => Math.abs(p - q) > 1))) { bv = corr[q]; bq = q; }
      }
      if (bq >= 0) tops.push(bq);
    }
    coarseConfidence = (corr[tops[0]] - mean) / sd;
    candidates = [];
    // With overlapping bins the true offset k' lies in [qB, qB + B) of its peak q (and the
    // neighbours catch channel skews); search [(q - 1)B, (q + 2)B).
    for (const q of tops) for (let kp = (q - 1) * B; kp < (q + 2) * B; kp++) if (kp >= 0 && kp < nK) candidates.push(kp);
    if (B === 1 || coarseConfidence >= 6) break;
    B = Math.max(1, B >> 2); // weak coarse peak: retry finer (more memory, more SNR)
  }
  let bestK = 0, bestS = -Infinity;
  for (const kp of new Set(candidates)) {
    const s = fine(kp);
    if (s > bestS) { bestS = s; bestK = kp; }
  }
  // Per-channel skew around the peak.
  const skew = new Map<number, number>();
  const chans = [...new Set(cs)];
  for (const c of chans) {
    let bd = 0, bs = -Infinity;
    for (let d = -R; d <= R; d++) {
      const kp = bestK + d;
      if (kp < 0 || kp >= nK) continue;
      const s = fine(kp, c);
      if (s > bs) { bs = s; bd = d; }
    }
    skew.set(c, bd);
  }
  // Confidence with every channel at its own best skew (a split peak would understate it).
  let sAll = 0;
  for (const c of chans) sAll += fine(bestK + (skew.get(c) ?? 0), c);
  const confidence = Math.max(bestS, sAll) / (table.sigma * Math.sqrt(sumY2));
  const refSkew = skew.get(model.refChannel) ?? 0;
  for (const c of chans) skew.set(c, (skew.get(c) ?? 0) - refSkew);
  // Alice index = pInt + v + J with J = jc - H + (k' - R).
  const shift = jc - H + (bestK + refSkew - R);
  return { shift, skew, confidence, coarseConfidence, clicksUsed: nClicks, pulsesSearched: nK };
}
