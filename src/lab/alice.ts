/**
 * Alice's (and an active Bob's) per-pulse random choices as a counter-based generator of
 * (seed, pulseIndex): any pulse's choice is recomputed from the seed without state, so Alice's node
 * and the emulator regenerate the same choices for any range of pulses without storing them.
 *
 * This is an EMULATION device, not a source of key randomness: a real source uses a QRNG. The
 * generator is a keyed hash built from the `lowbias32` integer mixer (C. Wellons, "hash
 * prospector", bias 0.17 per cent avalanche) applied to the 53-bit pulse index split in two 32-bit
 * words, with the 64-bit seed folded into the keys; distinct output words use distinct
 * domain constants. Statistical quality is tested in test/lab/alice.test.ts.
 *
 * Thread-safety: pure functions. Cost: about 10 ns per pulse.
 */
import type { LinkPreset } from './presets.ts';
import { packChoice } from './types.ts';

const TWO32 = 4294967296;

/** lowbias32: a bijective 32-bit mixer with good avalanche. */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Two 32-bit keys derived from a 64-bit seed and a domain constant. */
export interface SeedKeys {
  k0: number;
  k1: number;
}

export function seedKeys(seed: bigint, domain: number): SeedKeys {
  const s = BigInt.asUintN(64, seed);
  const lo = Number(s & 0xffffffffn);
  const hi = Number(s >> 32n);
  const k0 = mix32(lo ^ mix32(domain ^ 0x3c6ef372));
  const k1 = mix32(hi ^ mix32(k0 ^ domain ^ 0xa54ff53a));
  return { k0, k1 };
}

export const DOMAIN_ALICE = 0x41_4c_49_43; // "ALIC"
export const DOMAIN_BOB = 0x42_4f_42_42; // "BOBB"

/** The keyed 32-bit hash of a pulse index (integer in [0, 2^53)). */
export function pulseHash(keys: SeedKeys, pulse: number): number {
  const lo = pulse >>> 0;
  const hi = Math.floor(pulse / TWO32) >>> 0;
  const a = mix32(lo ^ keys.k0);
  return mix32((a ^ keys.k1) + Math.imul(hi ^ 0x9e3779b9, 0x85ebca6b));
}

/** Integer thresholds to compare a uniform 32-bit word against. */
export interface AliceThresholds {
  basisZ: number; // word < basisZ  => Z
  signal: number; // word < signal => signal
  decoy: number; // word < decoy  => decoy (else vacuum)
}

export function aliceThresholds(preset: LinkPreset): AliceThresholds {
  const p = preset.intensityProbs;
  return {
    basisZ: Math.min(TWO32, Math.round(preset.aliceBasisProbZ * TWO32)),
    signal: Math.min(TWO32, Math.round(p.signal * TWO32)),
    decoy: Math.min(TWO32, Math.round((p.signal + p.decoy) * TWO32)),
  };
}

/** Alice's packed choice (src/lab/types.ts layout) for one pulse, from precomputed keys. */
export function aliceChoiceFast(keys: SeedKeys, th: AliceThresholds, pulse: number): number {
  const h = pulseHash(keys, pulse);
  const wBasis = mix32(h ^ 0x68e31da4);
  const wInt = mix32(h + 0xb5297a4d);
  const bit = mix32(h ^ 0x1b56c4e9) >>> 31;
  const basis = wBasis < th.basisZ ? 0 : 1;
  const intensity = wInt < th.signal ? 0 : wInt < th.decoy ? 1 : 2;
  return packChoice(bit, basis, intensity);
}

function checkRange(firstPulse: number, count: number): void {
  if (!Number.isSafeInteger(firstPulse) || firstPulse < 0 || !Number.isSafeInteger(count) || count < 0 ||
    firstPulse + count > Number.MAX_SAFE_INTEGER) {
    throw new RangeError(`pulse range [${firstPulse}, +${count}) must be non-negative integers below 2^53`);
  }
}

/**
 * Alice's packed choices (bit, basis, intensity; see src/lab/types.ts) for pulses
 * [firstPulse, firstPulse + count). Writes into `out` when given (length >= count) and returns it.
 */
export function aliceChoices(preset: LinkPreset, seed: bigint, firstPulse: number, count: number, out?: Uint8Array): Uint8Array {
  checkRange(firstPulse, count);
  const res = out ?? new Uint8Array(count);
  if (res.length < count) throw new RangeError(`output buffer holds ${res.length} choices, ${count} requested`);
  const keys = seedKeys(seed, DOMAIN_ALICE);
  const th = aliceThresholds(preset);
  for (let i = 0; i < count; i++) res[i] = aliceChoiceFast(keys, th, firstPulse + i);
  return res;
}

/**
 * Alice's packed choices for the given pulses (any order; integers in [0, 2^53)): out[i] is the
 * choice of pulses[i]. This is the sparse form for sifting, where only the pulses Bob announces
 * matter (~1e-3 of them), so Alice never materialises a choice per emitted pulse.
 */
export function aliceChoicesAt(preset: LinkPreset, seed: bigint, pulses: Float64Array | readonly number[], out?: Uint8Array): Uint8Array {
  const n = pulses.length;
  const res = out ?? new Uint8Array(n);
  if (res.length < n) throw new RangeError(`output buffer holds ${res.length} choices, ${n} requested`);
  const keys = seedKeys(seed, DOMAIN_ALICE);
  const th = aliceThresholds(preset);
  for (let i = 0; i < n; i++) {
    const p = pulses[i];
    if (!(p >= 0) || !Number.isSafeInteger(p)) throw new RangeError(`pulses[${i}] = ${p} is not a pulse index (integer in [0, 2^53))`);
    res[i] = aliceChoiceFast(keys, th, p);
  }
  return res;
}

/** Alice's packed choice for a single pulse. */
export function aliceChoice(preset: LinkPreset, seed: bigint, pulse: number): number {
  checkRange(pulse, 1);
  return aliceChoiceFast(seedKeys(seed, DOMAIN_ALICE), aliceThresholds(preset), pulse);
}

/** Bob's basis for one pulse when his basis choice is active (his modulator's RNG), from keys. */
export function bobBasisFast(keys: SeedKeys, thresholdZ: number, pulse: number): number {
  return mix32(pulseHash(keys, pulse) ^ 0x7a3c5e1f) < thresholdZ ? 0 : 1;
}

export function bobThreshold(preset: LinkPreset): number {
  return Math.min(TWO32, Math.round(preset.bobBasisProbZ * TWO32));
}

/**
 * Bob's modulator basis (0 = Z, 1 = X) for pulses [firstPulse, firstPulse + count) when
 * preset.bobBasisChoice is 'active'. `bobSeed` is EmulatedLink.bobSeed (Bob's own seed, not
 * Alice's). With a passive Bob the basis is given by which detector clicked (preset.detectors).
 */
export function bobBasisChoices(preset: LinkPreset, bobSeed: bigint, firstPulse: number, count: number, out?: Uint8Array): Uint8Array {
  checkRange(firstPulse, count);
  const res = out ?? new Uint8Array(count);
  if (res.length < count) throw new RangeError(`output buffer holds ${res.length} choices, ${count} requested`);
  const keys = seedKeys(bobSeed, DOMAIN_BOB);
  const th = bobThreshold(preset);
  for (let i = 0; i < count; i++) res[i] = bobBasisFast(keys, th, firstPulse + i);
  return res;
}

/** Bob's modulator basis at the listed pulses (integers in [0, 2^53)). */
export function bobBasisChoicesAt(preset: LinkPreset, bobSeed: bigint, pulses: Float64Array): Uint8Array {
  const keys = seedKeys(bobSeed, DOMAIN_BOB);
  const th = bobThreshold(preset);
  const out = new Uint8Array(pulses.length);
  for (let i = 0; i < pulses.length; i++) {
    const p = pulses[i];
    if (!(p >= 0) || !Number.isSafeInteger(p)) throw new RangeError(`pulses[${i}] = ${p} is not a pulse index (integer in [0, 2^53))`);
    out[i] = bobBasisFast(keys, th, p);
  }
  return out;
}

/** Bob's active-modulator basis for one pulse. */
export function bobBasisChoice(preset: LinkPreset, bobSeed: bigint, pulse: number): number {
  checkRange(pulse, 1);
  return bobBasisFast(seedKeys(bobSeed, DOMAIN_BOB), bobThreshold(preset), pulse);
}

/** Default Bob seed derived from the link seed (the emulator's default when none is given). */
export function defaultBobSeed(seed: bigint): bigint {
  return BigInt.asUintN(64, seed * 0x9e3779b97f4a7c15n + 0x2545f4914f6cdd1dn);
}
