/**
 * Parameter estimation and the per-block security statement (native/core/src/finite_key.rs,
 * block.rs): decoy-state bounds with finite-key statistics after Lim, Curty, Walenta, Xu,
 * Zbinden, PRA 89, 022307 (2014), two decoys, or (option) Rusca, Boaron, Grünenfelder, Martin,
 * Zbinden, APL 112, 171104 (2018), one decoy; see docs/postprocessing.md for the exact formulas,
 * why these bounds, and the later corrections (Wiesemann et al. 2024).
 *
 * The leak is *counted* (every syndrome/retry bit the reconciliation disclosed plus the
 * verification tag), never estimated as f·h(Q).
 */
import { native } from './native.ts';
import { callNative } from './native-call.ts';

export type Triple = [number, number, number];

/**
 * Decoy protocol settings. Two decoys (default, Lim et al. 2014): intensities [mu, nu, omega]
 * with mu > nu + omega, nu > omega >= 0. One decoy (`protocol: 'rusca2018'`, Rusca et al. 2018):
 * [mu, nu, 0] with mu > nu > 0 and probabilities [p_mu, p_nu, 0]; better below ~1e8 bits.
 */
export interface DecoySettings {
  mu: Triple;
  /** Probability of each intensity (sums to 1). */
  pMu: Triple;
  /** Which finite-key decoy bound: 'lim2014' (default) or 'rusca2018' (one decoy). */
  protocol?: 'lim2014' | 'rusca2018';
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
  epsSec: number;
  epsCor: number;
  /** Z bits entering privacy amplification. */
  n: number;
  bounds: Bounds;
  /** Counted reconciliation leak, verification tag length, and their sum λ_EC. */
  leakEcBits: number;
  verifyTagBits: number;
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

function estimateInput(s: DecoySettings, c: BlockCounts, sec: SecurityParams) {
  return { mu: s.mu, pMu: s.pMu, nZ: c.nZ, nX: c.nX, mX: c.mX, epsSec: sec.epsSec, epsCor: sec.epsCor, qberAbort: sec.qberAbort,
    protocol: s.protocol, mZ: c.mZ };
}

/** Decoy-state bounds only (no abort decision). */
export function estimateBounds(s: DecoySettings, c: BlockCounts, sec: SecurityParams = DEFAULT_SECURITY): Bounds {
  return callNative(() => native().estimateBounds(estimateInput(s, c, sec)));
}

/**
 * Bounds, abort rule, finite-key ℓ and auth accounting. Throws SecurityError with code
 * PE_ABORT_QBER / PE_ABORT_BOUNDS / PE_ABORT_NO_DATA (message says why) when the block must be
 * discarded.
 */
export function planBlock(args: {
  settings: DecoySettings;
  counts: BlockCounts;
  security?: SecurityParams;
  leakEcBits: number;
  verifyTagBits: number;
  authBitsConsumed: number;
}): SecurityStatement {
  const sec = args.security ?? DEFAULT_SECURITY;
  return callNative(() => native().planBlock({
    estimate: estimateInput(args.settings, args.counts, sec),
    leakEcBits: args.leakEcBits,
    verifyTagBits: args.verifyTagBits,
    authBitsConsumed: args.authBitsConsumed,
  }));
}

export function binaryEntropy(p: number): number {
  return native().binaryEntropy(p);
}
