/**
 * Continuous health tests on the record Alice's node reads back from her source's RNG:
 * the repetition count test and the adaptive proportion test of NIST SP 800-90B (2018), §4.4.1
 * and §4.4.2, run on the sequence of read-back choices in pulse order.
 *
 * What is tested: the (bit, basis) part of each choice, a 2-bit symbol. Only detected pulses are
 * read back, and detection depends on the intensity (a signal pulse is ~5x likelier to click than
 * a decoy), so the intensity part of the read-back record is not distributed as the source drew
 * it; the bit and the basis are (detection does not depend on them). The assessed min-entropy per
 * symbol is H = -log2(max(p_Z, 1 - p_Z) / 2) from the protocol's basis probability.
 *
 * Cutoffs (SP 800-90B with false-positive probability alpha = 2^-40 per sample: a block reads back
 * ~1e7 symbols, and 2^-20 would give an alarm every few blocks):
 *   RCT: C = 1 + ceil(40 / H)                                                    (§4.4.1)
 *   APT: window W = 512; C = 1 + the smallest c with P[Binomial(W - 1, 2^-H) >= c] <= alpha   (§4.4.2)
 *        (the first symbol of a window is the reference; the rest are counted against it)
 *
 * A failure latches: the record is no longer trusted, every later read-back is refused
 * (SecurityError SOURCE_RNG_FAILED) and key production stops until the node is restarted with a
 * repaired source. Single-threaded; state carries across calls (a window may span two reads).
 */
import { SecurityError } from '../errors.ts';
import { createHealthTests, type HealthTests } from '../core/health-tests.ts';

export const HEALTH_ALPHA_LOG2 = -40;
export const APT_WINDOW = 512;

export interface SourceHealthState {
  healthy: boolean;
  /** What failed, with the counts (no record content). */
  reason?: string;
  symbolsTested: number;
  rctCutoff: number;
  aptCutoff: number;
}

/** log of the binomial upper tail P[X >= c], X ~ Bin(n, p). */
function logUpperTail(n: number, p: number, c: number): number {
  let logTerm = 0;
  // log P[X = c]
  for (let i = 0; i < c; i++) logTerm += Math.log((n - i) / (i + 1));
  logTerm += c * Math.log(p) + (n - c) * Math.log1p(-p);
  let sum = 0;
  let t = 0;
  for (let k = c; k <= n; k++) {
    sum += Math.exp(t);
    t += Math.log((n - k) / (k + 1)) + Math.log(p) - Math.log1p(-p);
    if (t < -60) break;
  }
  return logTerm + Math.log(sum);
}

export function healthCutoffs(basisProbZ: number): { minEntropy: number; rct: number; apt: number } {
  const pMax = Math.max(basisProbZ, 1 - basisProbZ) / 2;
  const h = -Math.log2(pMax);
  const rct = 1 + Math.ceil(-HEALTH_ALPHA_LOG2 / h);
  const logAlpha = HEALTH_ALPHA_LOG2 * Math.LN2;
  let c = Math.ceil((APT_WINDOW - 1) * pMax);
  while (c < APT_WINDOW && logUpperTail(APT_WINDOW - 1, pMax, c) > logAlpha) c++;
  return { minEntropy: h, rct, apt: 1 + c };
}

/**
 * The latch over the tests. The tests run in the native core by default (~10^7 symbols a block;
 * the TypeScript loop, kept as `referenceHealthTests`, cost ~1 % of a link's CPU on Alice's
 * thread); test/node/source-health.test.ts checks both give the same verdicts.
 */
export class SourceHealth {
  private readonly rctCutoff: number;
  private readonly aptCutoff: number;
  private readonly tests: HealthTests;
  private tested = 0;
  private failure: string | undefined;

  constructor(basisProbZ: number, makeTests: (rct: number, apt: number, window: number) => HealthTests = createHealthTests) {
    const c = healthCutoffs(basisProbZ);
    this.rctCutoff = c.rct;
    this.aptCutoff = c.apt;
    this.tests = makeTests(c.rct, c.apt, APT_WINDOW);
  }

  get state(): SourceHealthState {
    return { healthy: !this.failure, reason: this.failure, symbolsTested: this.tested, rctCutoff: this.rctCutoff, aptCutoff: this.aptCutoff };
  }

  /** Throws SOURCE_RNG_FAILED if the source failed before (latched). */
  assertHealthy(): void {
    if (this.failure) throw new SecurityError('SOURCE_RNG_FAILED', `Alice's source RNG failed its health test (${this.failure}): key production stopped. See docs/runbook.md#source-rng-failed.`);
  }

  /** Runs both tests over read-back choice bytes in pulse order; throws on (latched) failure. */
  check(choices: Uint8Array): void {
    this.assertHealthy();
    const f = this.tests.check(choices);
    if (f) {
      this.failure = f.kind === 'repetition'
        ? `repetition count test: ${f.count} identical (bit, basis) symbols in a row, cutoff ${this.rctCutoff}`
        : `adaptive proportion test: ${f.count} of ${f.seen} (bit, basis) symbols equal the window's first, cutoff ${this.aptCutoff} of ${APT_WINDOW}`;
    }
    this.tested += choices.length;
    this.assertHealthy();
  }
}

/** The tests in TypeScript, one symbol at a time: the slow reference of the native loop. */
export function referenceHealthTests(rctCutoff: number, aptCutoff: number, window: number): HealthTests {
  let last = -1;
  let run = 0;
  let aptRef = -1;
  let aptSeen = 0;
  let aptCount = 0;
  return {
    check(choices) {
      for (let i = 0; i < choices.length; i++) {
        const s = choices[i] & 3; // bit | basis << 1
        // Repetition count test (§4.4.1).
        if (s === last) {
          if (++run >= rctCutoff) return { kind: 'repetition', count: run, seen: run };
        } else {
          last = s;
          run = 1;
        }
        // Adaptive proportion test (§4.4.2); the window's first symbol is its reference.
        if (aptSeen === 0) {
          aptRef = s;
          aptCount = 1;
        } else if (s === aptRef && ++aptCount >= aptCutoff) {
          return { kind: 'proportion', count: aptCount, seen: aptSeen + 1 };
        }
        if (++aptSeen === window) aptSeen = 0;
      }
      return undefined;
    },
  };
}
