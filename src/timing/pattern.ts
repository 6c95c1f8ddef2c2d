/**
 * Alice's sync input: her intensity class per pulse over any pulse range.
 *
 * Why intensities and not bits: the intensity of every detected pulse is announced anyway in the
 * decoy-state protocol (Ma et al., PRA 72, 012326, 2005), so using it to synchronise leaks nothing
 * about the key. Basis and bit values must never be sent for synchronisation.
 *
 * Two forms: {@link AlicePattern} answers synchronously (regenerated from a seed: tests, calibration
 * on the emulated lab); {@link RemoteAlicePattern} answers asynchronously (Bob's node asks Alice's
 * node over the authenticated classical channel, src/node/pattern-link.ts). The sync code asks
 * through {@link PatternNeed} requests, so one implementation serves both (sync.ts, acquire.ts).
 */
import { ConfigError } from '../errors.ts';

export interface AlicePattern {
  /** Mean photon number of each intensity class (index = class: 0 signal, 1 decoy, 2 vacuum). */
  readonly meanPhotons: readonly number[];
  /**
   * Intensity class of pulses firstPulse .. firstPulse + count - 1. Pulses before 0 do not exist:
   * callers never ask for them. Synchronous; may be called with count up to ~2^23.
   */
  intensities(firstPulse: number, count: number): Uint8Array;
  /** Optional sparse lookup (one class per listed pulse index); faster for tracking checks. */
  intensitiesAt?(pulses: Float64Array): Uint8Array;
}

/**
 * An asynchronous pattern: Alice's node answers over the classical channel. Pulses it cannot or
 * may not reveal yet (not yet emitted, or still in flight) come back as 255 = unknown (score 0).
 */
export interface RemoteAlicePattern {
  readonly meanPhotons: readonly number[];
  fetch(need: PatternNeed): Promise<Uint8Array>;
}

/** What the sync code needs from the pattern at one point: a pulse range, or listed pulses. */
export type PatternNeed = { kind: 'range'; first: number; count: number } | { kind: 'at'; pulses: Float64Array };

/** A computation that asks for pattern data (yield a need, receive its classes) and returns T. */
export type PatternSteps<T> = Generator<PatternNeed, T, Uint8Array>;

/** Answers one need from a synchronous pattern. */
export function answerNeed(pattern: AlicePattern, need: PatternNeed): Uint8Array {
  return need.kind === 'range' ? pattern.intensities(need.first, need.count) : patternAt(pattern, need.pulses);
}

/** Runs pattern-asking steps against a synchronous pattern. */
export function runSteps<T>(steps: PatternSteps<T>, pattern: AlicePattern): T {
  let r = steps.next();
  while (!r.done) r = steps.next(answerNeed(pattern, r.value));
  return r.value;
}

/** Runs pattern-asking steps against an asynchronous pattern (a round trip per need). */
export async function runStepsAsync<T>(steps: PatternSteps<T>, pattern: RemoteAlicePattern): Promise<T> {
  let r = steps.next();
  while (!r.done) {
    const need = r.value;
    const got = await pattern.fetch(need);
    const want = need.kind === 'range' ? need.count : need.pulses.length;
    if (got.length !== want) throw new ConfigError('BAD_PATTERN', `Alice's pattern answer has ${got.length} classes for ${want} pulses asked: peer software mismatch.`);
    r = steps.next(got);
  }
  return r.value;
}

/** Sparse lookup through the optional fast path, or one range call per index. */
export function patternAt(pattern: AlicePattern, pulses: Float64Array): Uint8Array {
  if (pattern.intensitiesAt) return pattern.intensitiesAt(pulses);
  const out = new Uint8Array(pulses.length);
  for (let i = 0; i < pulses.length; i++) out[i] = pulses[i] < 0 ? 255 : pattern.intensities(pulses[i], 1)[0];
  return out;
}

/**
 * Per-class correlation score: the log-likelihood ratio log(mu_c / mean mu) that a click came from
 * a pulse of class c rather than from a random pulse, clipped below at -3 so a dark count on a
 * vacuum pulse cannot dominate. Centred with the class frequencies so that an unknown pulse (score 0)
 * and a wrong alignment both have expectation 0: then the peak-over-noise figure is a z-score.
 */
export interface ScoreTable {
  /** Centred score per class (256 entries; unknown classes score 0). */
  readonly score: Float64Array;
  /** Standard deviation of the centred score over random pulses. */
  readonly sigma: number;
  /** Class frequencies the table was centred with. */
  readonly frequencies: number[];
}

export function scoreTable(meanPhotons: readonly number[], frequencies: number[]): ScoreTable {
  const k = meanPhotons.length;
  if (k === 0 || frequencies.length !== k) throw new ConfigError('BAD_PATTERN', 'Alice pattern needs one mean photon number per intensity class.');
  let mean = 0;
  for (let c = 0; c < k; c++) mean += frequencies[c] * meanPhotons[c];
  if (!(mean > 0)) throw new ConfigError('BAD_PATTERN', 'Alice pattern has no light (all mean photon numbers 0): synchronisation needs a non-vacuum pattern.');
  const raw = meanPhotons.map((m) => Math.max(-3, Math.log(Math.max(m, 1e-12) / mean)));
  let centre = 0;
  for (let c = 0; c < k; c++) centre += frequencies[c] * raw[c];
  const score = new Float64Array(256);
  let v = 0;
  for (let c = 0; c < k; c++) {
    score[c] = raw[c] - centre;
    v += frequencies[c] * score[c] * score[c];
  }
  if (!(v > 0)) throw new ConfigError('BAD_PATTERN', 'Alice pattern has a single intensity: the sync needs at least two classes (e.g. signal and vacuum).');
  return { score, sigma: Math.sqrt(v), frequencies };
}

/** Class frequencies of a pattern sample. */
export function classFrequencies(classes: Uint8Array, nClasses: number): number[] {
  const counts = new Array<number>(nClasses).fill(0);
  let n = 0;
  for (let i = 0; i < classes.length; i++) {
    const c = classes[i];
    if (c < nClasses) { counts[c]++; n++; }
  }
  return counts.map((x) => (n ? x / n : 1 / nClasses));
}
