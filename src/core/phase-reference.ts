/**
 * Slow references for the phase-error step of the finite-key analyses (native/core/src/finite_key.rs,
 * docs/postprocessing.md §2), written apart from the Rust code, and the exact hypergeometric tail
 * that measures any phase-error bound's failure probability. Used by test/core/finite-key*.test.ts.
 * Not for production use: `worstPhaseFailure` is O((n + k)·k).
 */
import type { FiniteKeyAnalysis } from './estimate.ts';

/** Binary relative entropy D(a‖b) in nats, with log1p so that small gaps keep their digits. */
export function klRef(a: number, b: number): number {
  let d = 0;
  if (a > 0) d += -a * Math.log1p((b - a) / a);
  if (a < 1) d += -(1 - a) * Math.log1p((a - b) / (1 - a));
  return d;
}

/** max{mu >= lam : k D(lam||mu) <= beta} by bisection on log(1 - mu) (a different route from the core). */
export function klUpperRef(lam: number, k: number, beta: number): number {
  if (!(k > 0) || lam >= 1) return 1;
  let lo = Math.log1p(-lam); // log(1 - mu) at mu = lam
  let hi = Math.log(1e-300);
  for (let i = 0; i < 400; i++) {
    const mid = (lo + hi) / 2;
    const mu = -Math.expm1(mid);
    if (k * klRef(lam, mu) <= beta) lo = mid; else hi = mid;
  }
  return -Math.expm1(hi);
}

/**
 * The Chernoff–Hoeffding (KL) sampling bound: the phase-error rate of `n` key events from `k` test
 * events with error rate `lam`, failing with probability ≤ e^{−beta}; 0.5 means no key.
 */
export function phaseKlRef(lam: number, k: number, n: number, beta: number): number {
  if (!(k > 0 && n > 0) || lam >= 0.5) return 0.5;
  const u = klUpperRef(lam, k, beta);
  return Math.min(0.5, Math.max(lam, ((n + k) * u - k * lam) / n));
}

/**
 * Lim et al. 2014's γ with the per-step ε written out (the paper's a = ε_sec = 21 ε). Here λ = 0
 * gives no bound (Infinity), where the core clamps λ to 1e-12 (a smaller γ, so the core's
 * under-coverage is if anything larger than what this measures).
 */
export function limGammaRef(n: number, k: number, lam: number, eps: number): number {
  if (!(lam > 0 && lam < 0.5)) return Infinity;
  const v = (((n + k) * (1 - lam) * lam) / (n * k * Math.LN2)) * Math.log2((n + k) / (n * k * (1 - lam) * lam) / (eps * eps));
  return v > 0 ? Math.sqrt(v) : 0;
}

/** ε_sec = split · ε (Lim Eq. (B4): 21; Rusca Eq. (A24): 19). */
export const splitOf = (a: FiniteKeyAnalysis): number => (a.startsWith('rusca2018') ? 19 : 21);

/**
 * The phase-error bound analysis `a` is specified to use (docs/postprocessing.md §2), from the test
 * sample's rate `lam`, `k` test and `n` key single-photon events, at ε_sec: the KL bound with
 * β = ln(split/ε_sec), or for the '*-paper-gamma' variants λ + Lim's γ (which keeps Lim's 21 even
 * for Rusca, the conservative reading). 0.5 means no key.
 */
export function phaseBoundRef(a: FiniteKeyAnalysis, lam: number, k: number, n: number, epsSec: number): number {
  if (a.endsWith('-paper-gamma')) return Math.min(0.5, lam + limGammaRef(n, k, lam, epsSec / 21));
  return phaseKlRef(lam, k, n, Math.log(splitOf(a) / epsSec));
}

/**
 * Exact worst-case failure probability of a phase-error bound: a population of n + k single-photon
 * events with E phase errors (every E up to cap·(n + k) tried: the population is unknown), the k
 * test events a uniformly random subset; failure = the n key events' error rate exceeds
 * bound(test rate) while the bound is below 0.5 (a key is made). Returns the worst probability
 * and the population error rate where it occurs.
 */
export function worstPhaseFailure(n: number, k: number, cap: number, bound: (lam: number) => number): { p: number; rate: number } {
  const bnd = Array.from({ length: k + 1 }, (_, j) => bound(j / k));
  const lf = new Float64Array(n + k + 1); // log i!
  for (let i = 1; i <= n + k; i++) lf[i] = lf[i - 1] + Math.log(i);
  const logC = (a: number, b: number): number => lf[a] - lf[b] - lf[a - b];
  let p = 0, rate = 0;
  for (let E = 0; E <= cap * (n + k); E++) {
    let fail = 0;
    for (let j = Math.max(0, E - n); j <= Math.min(k, E); j++) {
      if (bnd[j] < 0.5 && (E - j) / n > bnd[j] + 1e-12) fail += Math.exp(logC(E, j) + logC(n + k - E, k - j) - logC(n + k, k));
    }
    if (fail > p) { p = fail; rate = E / (n + k); }
  }
  return { p, rate };
}

/** ln x! for integer x ≥ 0: exact sum below 256, Stirling's series above (relative error < 1e-16). */
const LN_FACT_SMALL = (() => {
  const t = new Float64Array(256);
  for (let i = 1; i < 256; i++) t[i] = t[i - 1] + Math.log(i);
  return t;
})();
export function lnFactRef(x: number): number {
  if (x < 256) return LN_FACT_SMALL[x];
  const x2 = x * x;
  return x * Math.log(x) - x + 0.5 * Math.log(2 * Math.PI * x) + 1 / (12 * x) - 1 / (360 * x * x2) + 1 / (1260 * x2 * x2 * x);
}

/** ln Pr[J ≤ j] for J ~ Hypergeometric(population N, E marked, k drawn), by log-sum-exp of the terms. */
export function lnHyperCdfRef(j: number, N: number, E: number, k: number): number {
  const lo = Math.max(0, k - (N - E));
  if (j < lo) return -Infinity;
  const hi = Math.min(j, k, E);
  const c = lnFactRef(E) + lnFactRef(N - E) + lnFactRef(k) + lnFactRef(N - k) - lnFactRef(N);
  const terms = new Float64Array(hi - lo + 1);
  let m = -Infinity;
  for (let i = lo; i <= hi; i++) {
    terms[i - lo] = c - lnFactRef(i) - lnFactRef(E - i) - lnFactRef(k - i) - lnFactRef(N - E - k + i);
    m = Math.max(m, terms[i - lo]);
  }
  let sum = 0;
  for (const x of terms) sum += Math.exp(x - m);
  return m + Math.log(sum);
}

/**
 * The exact (Neyman) phase-error bound, for comparison only (no analysis uses it): with j errors
 * among k test events, the largest population error count E⁺ the lower-tail test at level ε does
 * not reject (Pr_E[J ≤ j] > ε; that probability falls with E), and φ = (E⁺ − j)/n, at most 0.5.
 * Failure means E > E⁺(J), i.e. Pr_E[J' ≤ J] ≤ ε, an event of probability ≤ ε: strict, and never
 * wider than the KL bound (whose Chernoff tail is an upper bound of the same cdf). Integer n, k, j.
 */
export function phaseExactRef(j: number, k: number, n: number, eps: number): number {
  const N = n + k;
  const lnEps = Math.log(eps);
  let lo = j; // Pr_E[J ≤ j] = 1 > ε at E = j
  let hi = N - (k - j) + 1; // exclusive: E must leave k − j unmarked test events
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (lnHyperCdfRef(j, N, mid, k) > lnEps) lo = mid; else hi = mid;
  }
  return Math.min(0.5, (lo - j) / n);
}
