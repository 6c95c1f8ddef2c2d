/**
 * Parameter estimation and the per-block security statement (native/core/src/finite_key.rs,
 * block.rs): decoy-state bounds with finite-key statistics after Lim, Curty, Walenta, Xu,
 * Zbinden, PRA 89, 022307 (2014), two decoys, with multiplicative Chernoff bounds ('chernoff2020',
 * the default: Yin et al., Sci. Rep. 10, 14312 (2020) for the counts, a Chernoff–Hoeffding
 * sampling bound for the phase error) or Lim's Hoeffding bounds ('lim2014'), or Rusca, Boaron,
 * Grünenfelder, Martin, Zbinden, APL 112, 171104 (2018), one decoy; see docs/postprocessing.md for
 * the exact formulas, why these bounds (and why not Lim's γ), and the later corrections
 * (Wiesemann et al. 2024).
 *
 * Counts that contradict the configured intensities/probabilities (bounds with more vacuum +
 * single-photon events than events in a basis) throw SecurityError PE_IMPOSSIBLE_COUNTS, from
 * `estimateBounds` as from `planBlock`.
 *
 * The leak is *counted* (every syndrome/retry bit the reconciliation disclosed plus the
 * verification tag), never estimated as f·h(Q).
 */
import { native } from './native.ts';
import { callNative } from './native-call.ts';
import { QkdError } from '../errors.ts';

export type Triple = [number, number, number];

/**
 * The finite-key analysis. 'chernoff2020' (the default): Lim et al. 2014's protocol, decoy
 * equations and ε split with a multiplicative Chernoff bound per intensity (Yin et al. 2020) and a
 * Chernoff–Hoeffding (KL) sampling bound for the phase error. 'lim2014': Lim et al. 2014
 * (Hoeffding per basis) with the same KL phase-error bound in the place of the paper's γ; about
 * half the key of 'chernoff2020' at 1e7 detections. 'rusca2018': one decoy (different
 * intensities, see DecoySettings), KL phase error. 'lim2014-paper-gamma' and
 * 'rusca2018-paper-gamma': the papers as printed, phase error by Lim's γ, an approximation that
 * fails its ε by up to 1.5e3x at small error counts (docs/postprocessing.md §2, issue 13): for
 * reproducing the papers only; a node refuses them and their statement says "APPROXIMATE".
 */
export type FiniteKeyAnalysis = 'chernoff2020' | 'lim2014' | 'rusca2018' | 'lim2014-paper-gamma' | 'rusca2018-paper-gamma';
export const FINITE_KEY_ANALYSES: readonly FiniteKeyAnalysis[] = ['chernoff2020', 'lim2014', 'rusca2018', 'lim2014-paper-gamma', 'rusca2018-paper-gamma'];
/** The analyses whose every statistical step is a strict tail bound: the ones a node may use. */
export type StrictFiniteKeyAnalysis = 'chernoff2020' | 'lim2014' | 'rusca2018';
export const STRICT_FINITE_KEY_ANALYSES: readonly StrictFiniteKeyAnalysis[] = ['chernoff2020', 'lim2014', 'rusca2018'];
/** The analysis used when settings name none (strict, and the tightest of the strict ones). */
export const DEFAULT_FINITE_KEY_ANALYSIS: StrictFiniteKeyAnalysis = 'chernoff2020';

/**
 * Decoy protocol settings. Two decoys (default, Lim et al. 2014): intensities [mu, nu, omega]
 * with mu > nu + omega, nu > omega >= 0. One decoy (`protocol: 'rusca2018'`, Rusca et al. 2018):
 * [mu, nu, 0] with mu > nu > 0 and probabilities [p_mu, p_nu, 0]; better below ~1e8 bits.
 */
export interface DecoySettings {
  mu: Triple;
  /** Probability of each intensity (sums to 1). */
  pMu: Triple;
  /** Which finite-key analysis (default 'chernoff2020', DEFAULT_FINITE_KEY_ANALYSIS). */
  analysis?: FiniteKeyAnalysis;
  /** Older name of `analysis` (kept for callers that select 'rusca2018' with it); give one. */
  protocol?: FiniteKeyAnalysis;
}

export interface SecurityParams {
  /** Secrecy (default 1e-10) and correctness (default 1e-15). */
  epsSec: number;
  epsCor: number;
  /** Abort when the X QBER exceeds this (default 0.11). */
  qberAbort: number;
}

export const DEFAULT_SECURITY: SecurityParams = { epsSec: 1e-10, epsCor: 1e-15, qberAbort: 0.11 };

export interface BlockCounts {
  /** Sifted Z bits per intensity (the key block, n = sum). */
  nZ: Triple;
  /** Sifted X events per intensity and X errors per intensity (X is fully disclosed). */
  nX: Triple;
  mX: Triple;
  /** Z errors per intensity, known after reconciliation: required by the one-decoy bound (its
   * vacuum upper bound uses them), ignored by Lim 2014. */
  mZ?: Triple;
}

export interface Bounds {
  sZ0: number;
  sZ1: number;
  sX0: number;
  sX1: number;
  vX1: number;
  /** Upper bound on the single-photon phase-error rate in Z. */
  phiZ: number;
  qberX: number;
  qberXByIntensity: number[];
  nZTotal: number;
}

/** Everything that makes a block's key secure: it travels with the block's output. */
export interface SecurityStatement {
  /** The finite-key analysis the bounds and ℓ come from, and its reference. */
  analysis: FiniteKeyAnalysis;
  analysisReference: string;
  epsSec: number;
  epsCor: number;
  /** ε_sec = epsSplit · epsEstimate: each statistical estimate (count bounds, phase-error
   * sampling bound, smoothing terms) fails with probability ≤ epsEstimate. */
  epsSplit: number;
  epsEstimate: number;
  /** Z bits entering privacy amplification. */
  n: number;
  bounds: Bounds;
  /** Counted reconciliation leak, verification tag length, and their sum λ_EC. */
  leakEcBits: number;
  verifyTagBits: number;
  /** Z bits of frames discarded after decoding; the bounds were corrected for them (block.rs drop_frames). */
  droppedZBits: number;
  lambdaEc: number;
  /** Collision probability of the verification tag (≤ epsCor). */
  verifyCollision: number;
  /** ℓ before flooring and clamping, then the output length. */
  ellRaw: number;
  ell: number;
  /** MAC key bits the classical channel used for this block; the first `replenishBits` of the
   * output refill the MAC pool, `deliverableBits` go to the KMS, `netLoss` > 0 when the block
   * did not pay for its own authentication. */
  authBitsConsumed: number;
  replenishBits: number;
  deliverableBits: number;
  netLoss: number;
}

/** The analysis `s` selects (throws PE_BAD_INPUT when `analysis` and `protocol` disagree). */
export function analysisOf(s: DecoySettings): FiniteKeyAnalysis {
  if (s.analysis && s.protocol && s.analysis !== s.protocol) {
    throw new QkdError('PE_BAD_INPUT', `settings name two finite-key analyses ('${s.analysis}' and protocol '${s.protocol}'); give only 'analysis'`);
  }
  return s.analysis ?? s.protocol ?? DEFAULT_FINITE_KEY_ANALYSIS;
}

function estimateInput(s: DecoySettings, c: BlockCounts, sec: SecurityParams) {
  return { mu: s.mu, pMu: s.pMu, nZ: c.nZ, nX: c.nX, mX: c.mX, epsSec: sec.epsSec, epsCor: sec.epsCor, qberAbort: sec.qberAbort,
    protocol: analysisOf(s), mZ: c.mZ };
}

/** Decoy-state bounds only (no abort decision; PE_IMPOSSIBLE_COUNTS for impossible counts). */
export function estimateBounds(s: DecoySettings, c: BlockCounts, sec: SecurityParams = DEFAULT_SECURITY): Bounds {
  const input = estimateInput(s, c, sec);
  return callNative(() => native().estimateBounds(input));
}

/**
 * Bounds, abort rule, finite-key ℓ and auth accounting. Throws SecurityError with code
 * PE_ABORT_QBER / PE_ABORT_BOUNDS / PE_ABORT_NO_DATA / PE_IMPOSSIBLE_COUNTS (message says why)
 * when the block must be discarded.
 */
export function planBlock(args: {
  settings: DecoySettings;
  counts: BlockCounts;
  security?: SecurityParams;
  leakEcBits: number;
  verifyTagBits: number;
  authBitsConsumed: number;
  /** Z bits of frames discarded after decoding: `counts` then describe every framed Z bit. */
  droppedZBits?: number;
}): SecurityStatement {
  const sec = args.security ?? DEFAULT_SECURITY;
  const estimate = estimateInput(args.settings, args.counts, sec);
  return callNative(() => native().planBlock({
    estimate,
    leakEcBits: args.leakEcBits,
    verifyTagBits: args.verifyTagBits,
    authBitsConsumed: args.authBitsConsumed,
    droppedZBits: args.droppedZBits ?? 0,
  }) as SecurityStatement);
}

export function binaryEntropy(p: number): number {
  return native().binaryEntropy(p);
}
