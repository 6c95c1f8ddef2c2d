/**
 * Randomness health checks on sampled output blocks, in the style of NIST SP 800-22 rev1a
 * (Rukhin et al., 2010): the frequency (monobit) test §2.1, the runs test §2.3 and the serial test
 * §2.11, with the P-value formulas of those sections (erfc and igamc from ./special.ts).
 *
 * These are health checks, not a certification: they catch a broken pipeline (stuck bits, a block
 * of zeros, a repeated pattern, a bias), which privacy-amplified key must never show. Results are
 * P-values and pass/fail only; the bits are never stored, logged or returned.
 *
 * Bit order: a block is a packed byte array, most significant bit first (bit i of the sequence is
 * `(bytes[i >> 3] >> (7 - (i & 7))) & 1`), optionally cut to `nBits`. All functions are pure and
 * synchronous; a 1 Mbit block takes a few milliseconds (see bench/telemetry.bench.ts).
 */
import { erfc, igamc } from './special.ts';

export type RandomnessTestName = 'frequency' | 'runs' | 'serial';

export interface RandomnessTestResult {
  test: RandomnessTestName;
  /** The test's P-value(s): one for frequency and runs, two (∇ψ², ∇²ψ²) for serial. */
  pValues: number[];
  /** Every P-value ≥ alpha. */
  pass: boolean;
}

export interface RandomnessReport {
  nBits: number;
  alpha: number;
  tests: RandomnessTestResult[];
  pass: boolean;
}

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >> 1];

function checkLength(bytes: Uint8Array, nBits: number | undefined): number {
  const n = nBits ?? bytes.length * 8;
  if (!Number.isInteger(n) || n < 0 || n > bytes.length * 8) {
    throw new RangeError(`nBits must be an integer in [0, ${bytes.length * 8}] for a ${bytes.length}-byte block, got ${n}`);
  }
  return n;
}

/** Number of one bits among the first nBits. */
export function countOnes(bytes: Uint8Array, nBits?: number): number {
  const n = checkLength(bytes, nBits);
  const full = n >> 3;
  let ones = 0;
  for (let i = 0; i < full; i++) ones += POPCOUNT[bytes[i]];
  const rem = n & 7;
  if (rem) ones += POPCOUNT[bytes[full] & (0xff << (8 - rem)) & 0xff];
  return ones;
}

/** SP 800-22 §2.1: P = erfc(|S_n| / √(2n)), S_n = #ones − #zeros. Recommended n ≥ 100. */
export function frequencyTest(bytes: Uint8Array, nBits?: number): number {
  const n = checkLength(bytes, nBits);
  if (n === 0) throw new RangeError('frequency test needs at least one bit');
  const s = 2 * countOnes(bytes, n) - n;
  return erfc(Math.abs(s) / Math.sqrt(n) / Math.SQRT2);
}

/** Number of positions k in [0, n−2] where bit k differs from bit k+1. */
export function countTransitions(bytes: Uint8Array, nBits?: number): number {
  const n = checkLength(bytes, nBits);
  if (n < 2) return 0;
  const full = n >> 3;
  const rem = n & 7;
  let t = 0;
  // Inside a byte, bit k and k+1 of the sequence are byte bits 7−k and 6−k, so b ^ (b >> 1) has
  // one set bit (in 0..6) per transition; across bytes, compare the LSB with the next MSB.
  for (let i = 0; i < full; i++) {
    const b = bytes[i];
    t += POPCOUNT[(b ^ (b >> 1)) & 0x7f];
    if (i + 1 < full || rem) t += (b & 1) ^ (bytes[i + 1] >> 7);
  }
  if (rem) {
    const b = bytes[full];
    const mask = 0x7f & ~((1 << (8 - rem)) - 1);
    t += POPCOUNT[(b ^ (b >> 1)) & mask];
  }
  return t;
}

/**
 * SP 800-22 §2.3. P = erfc(|V_n − 2nπ(1−π)| / (2√(2n)·π(1−π))), V_n = number of runs, π the
 * proportion of ones; if the frequency prerequisite |π − ½| ≥ 2/√n fails the P-value is 0, as in
 * the reference implementation. Recommended n ≥ 100.
 */
export function runsTest(bytes: Uint8Array, nBits?: number): number {
  const n = checkLength(bytes, nBits);
  if (n < 2) throw new RangeError('runs test needs at least two bits');
  const pi = countOnes(bytes, n) / n;
  if (Math.abs(pi - 0.5) >= 2 / Math.sqrt(n)) return 0;
  const v = countTransitions(bytes, n) + 1;
  const q = pi * (1 - pi);
  return erfc(Math.abs(v - 2 * n * q) / (2 * Math.sqrt(2 * n) * q));
}

/**
 * Counts of the 2^m overlapping m-bit patterns of the sequence read circularly (the first m−1 bits
 * appended at the end, SP 800-22 §2.11.4 step 1). Index = the pattern read as a binary number.
 */
export function patternCounts(bytes: Uint8Array, nBits: number | undefined, m: number): Float64Array {
  const n = checkLength(bytes, nBits);
  if (!Number.isInteger(m) || m < 1 || m > 20) throw new RangeError(`pattern length m must be in 1..20 (2^m counters), got ${m}`);
  if (n < m) throw new RangeError(`need at least m = ${m} bits, got ${n}`);
  const mask = (1 << m) - 1;
  const counts = new Float64Array(1 << m);
  let w = 0;
  // Prime the window with the first m−1 bits, then slide over n + m − 1 bits (wrapping around).
  for (let i = 0; i < m - 1; i++) w = (w << 1) | ((bytes[i >> 3] >> (7 - (i & 7))) & 1);
  const total = n + m - 1;
  let i = m - 1;
  // Fast path: whole bytes that lie entirely inside the unwrapped sequence.
  while (i < total && (i & 7) !== 0) {
    const j = i < n ? i : i - n;
    w = ((w << 1) | ((bytes[j >> 3] >> (7 - (j & 7))) & 1)) & mask;
    counts[w]++;
    i++;
  }
  while (i + 8 <= n) {
    const b = bytes[i >> 3];
    for (let k = 7; k >= 0; k--) {
      w = ((w << 1) | ((b >> k) & 1)) & mask;
      counts[w]++;
    }
    i += 8;
  }
  for (; i < total; i++) {
    const j = i < n ? i : i - n;
    w = ((w << 1) | ((bytes[j >> 3] >> (7 - (j & 7))) & 1)) & mask;
    counts[w]++;
  }
  return counts;
}

/** Marginalises circular m-pattern counts to (m−1)-pattern counts: ν(w) = ν(w0) + ν(w1). */
function marginal(counts: Float64Array): Float64Array {
  const out = new Float64Array(counts.length >> 1);
  for (let w = 0; w < out.length; w++) out[w] = counts[2 * w] + counts[2 * w + 1];
  return out;
}

function psi2(counts: Float64Array, n: number): number {
  if (counts.length <= 1) return 0; // ψ²_0 = ψ²_{−1} = 0 by definition
  let s = 0;
  for (let i = 0; i < counts.length; i++) s += counts[i] * counts[i];
  return (counts.length / n) * s - n;
}

/**
 * SP 800-22 §2.11: returns [P1, P2] with P1 = igamc(2^(m−2), ∇ψ²_m/2) and
 * P2 = igamc(2^(m−3), ∇²ψ²_m/2). Needs m ≥ 2; NIST recommends m < ⌊log₂ n⌋ − 2.
 */
export function serialTest(bytes: Uint8Array, nBits: number | undefined, m: number): [number, number] {
  const n = checkLength(bytes, nBits);
  if (!Number.isInteger(m) || m < 2) throw new RangeError(`serial test needs m ≥ 2, got ${m}`);
  const cm = patternCounts(bytes, n, m);
  const cm1 = marginal(cm);
  const cm2 = m >= 3 ? marginal(cm1) : new Float64Array(1);
  const pm = psi2(cm, n);
  const pm1 = psi2(cm1, n);
  const pm2 = m >= 3 ? psi2(cm2, n) : 0;
  const d1 = pm - pm1;
  const d2 = pm - 2 * pm1 + pm2;
  return [igamc(2 ** (m - 2), Math.max(0, d1) / 2), igamc(2 ** (m - 3), Math.max(0, d2) / 2)];
}

/** The serial block length used when none is given: NIST's bound, capped at 8 (256 counters). */
export function defaultSerialM(nBits: number): number {
  return Math.max(2, Math.min(8, Math.floor(Math.log2(Math.max(nBits, 4))) - 3));
}

/** Runs the three tests on one block. Throws RangeError for blocks under 100 bits (too short). */
export function runRandomnessChecks(
  bytes: Uint8Array,
  opts: { nBits?: number; alpha?: number; serialM?: number } = {},
): RandomnessReport {
  const n = checkLength(bytes, opts.nBits);
  if (n < 100) throw new RangeError(`randomness checks need at least 100 bits (SP 800-22 §2.1.7), got ${n}`);
  const alpha = opts.alpha ?? 0.01;
  const m = opts.serialM ?? defaultSerialM(n);
  const mk = (test: RandomnessTestName, pValues: number[]): RandomnessTestResult => ({
    test, pValues, pass: pValues.every((p) => p >= alpha),
  });
  const tests = [
    mk('frequency', [frequencyTest(bytes, n)]),
    mk('runs', [runsTest(bytes, n)]),
    mk('serial', serialTest(bytes, n, m)),
  ];
  return { nBits: n, alpha, tests, pass: tests.every((t) => t.pass) };
}

export interface RandomnessMonitorOptions {
  /** Test one block in every `sampleEvery` offered (default 1: every block). */
  sampleEvery?: number;
  /** Test at most this many bits of a sampled block, from its start (default 2^20). */
  maxBits?: number;
  /** Significance level per test (default 0.01, SP 800-22 §4.2). */
  alpha?: number;
  /** How many recent sampled blocks the pass proportion is computed over (default 100). */
  window?: number;
  /** No verdict on the proportion before this many samples (default 10). */
  minSamples?: number;
  /** A P-value below this on any single block is unhealthy at once (default 1e-6). */
  severePValue?: number;
  serialM?: number;
}

export interface RandomnessSnapshot {
  sampledBlocks: number;
  offeredBlocks: number;
  /** Latest P-values per test (serial_1, serial_2 for the two serial P-values). */
  latest: { test: string; pValue: number; pass: boolean }[];
  latestBits: number;
  /** Proportion of sampled blocks (in the window) that passed all tests. */
  passProportion: number;
  /** SP 800-22 §4.2.1 lower limit: (1−α) − 3√(α(1−α)/k). */
  minPassProportion: number;
  healthy: boolean;
  /** Why it is unhealthy, in words (no data), or '' when healthy. */
  reason: string;
}

/**
 * Samples output blocks and keeps only P-values and verdicts. Not thread-safe (single JS thread);
 * `offer` is synchronous and does not keep a reference to the block.
 */
export class RandomnessMonitor {
  private readonly opts: Required<Omit<RandomnessMonitorOptions, 'serialM'>> & { serialM?: number };
  private offered = 0;
  private sampled = 0;
  private recent: boolean[] = [];
  private last: RandomnessReport | undefined;

  constructor(opts: RandomnessMonitorOptions = {}) {
    this.opts = {
      sampleEvery: opts.sampleEvery ?? 1,
      maxBits: opts.maxBits ?? 1 << 20,
      alpha: opts.alpha ?? 0.01,
      window: opts.window ?? 100,
      minSamples: opts.minSamples ?? 10,
      severePValue: opts.severePValue ?? 1e-6,
      serialM: opts.serialM,
    };
    if (!(this.opts.sampleEvery >= 1)) throw new RangeError('sampleEvery must be ≥ 1');
  }

  /** Offers one output block; returns the report when it was sampled and long enough. */
  offer(bytes: Uint8Array, nBits?: number): RandomnessReport | undefined {
    const n = checkLength(bytes, nBits);
    this.offered++;
    if ((this.offered - 1) % this.opts.sampleEvery !== 0) return undefined;
    const bits = Math.min(n, this.opts.maxBits);
    if (bits < 100) return undefined;
    const report = runRandomnessChecks(bytes, { nBits: bits, alpha: this.opts.alpha, serialM: this.opts.serialM });
    this.sampled++;
    this.last = report;
    this.recent.push(report.pass);
    if (this.recent.length > this.opts.window) this.recent.shift();
    return report;
  }

  snapshot(): RandomnessSnapshot {
    const k = this.recent.length;
    const a = this.opts.alpha;
    const passed = this.recent.filter(Boolean).length;
    // Each block runs 4 P-values; the chance that a random block passes all is about (1−α)^4.
    const p = (1 - a) ** 4;
    const minProp = k ? p - 3 * Math.sqrt((p * (1 - p)) / k) : 0;
    const prop = k ? passed / k : 1;
    const latest = this.last
      ? this.last.tests.flatMap((t) =>
          t.pValues.length === 1
            ? [{ test: t.test, pValue: t.pValues[0], pass: t.pass }]
            : t.pValues.map((pv, i) => ({ test: `${t.test}_${i + 1}`, pValue: pv, pass: pv >= a })),
        )
      : [];
    let reason = '';
    const severe = latest.find((t) => t.pValue < this.opts.severePValue);
    if (severe) reason = `latest block failed the ${severe.test} test with P = ${severe.pValue.toExponential(2)}`;
    else if (k >= this.opts.minSamples && prop < minProp) {
      reason = `only ${passed}/${k} sampled blocks passed (minimum proportion ${minProp.toFixed(3)})`;
    }
    return {
      sampledBlocks: this.sampled,
      offeredBlocks: this.offered,
      latest,
      latestBits: this.last?.nBits ?? 0,
      passProportion: prop,
      minPassProportion: minProp,
      healthy: reason === '',
      reason,
    };
  }
}
