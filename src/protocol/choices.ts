/**
 * The protocol's vocabulary for Alice's per-pulse choices and Bob's detectors, shared by the node,
 * the devices, the timing layer and the emulated lab (which reads it like the node does).
 *
 * Conventions (fixed for the whole project):
 * - Basis 0 = Z (rectilinear, the key basis), 1 = X (diagonal, the test basis of Lim et al. 2014).
 * - Intensity 0 = signal (mu), 1 = decoy (nu), 2 = vacuum (omega).
 * - Alice's per-pulse choice packed in one byte: bit0 = bit value, bit1 = basis,
 *   bits2..3 = intensity. `packChoice`/`choice*` below are the only place that knows this.
 * - Pulse indices count Alice's pulses from 0 at the start of a run (number, exact below 2^53).
 */
export type Basis = 0 | 1;
export type Intensity = 0 | 1 | 2;

export const BASIS_Z = 0;
export const BASIS_X = 1;
export const SIGNAL = 0;
export const DECOY = 1;
export const VACUUM = 2;

export function packChoice(bit: number, basis: number, intensity: number): number {
  return (bit & 1) | ((basis & 1) << 1) | ((intensity & 3) << 2);
}
export const choiceBit = (c: number): number => c & 1;
export const choiceBasis = (c: number): number => (c >> 1) & 1;
export const choiceIntensity = (c: number): number => (c >> 2) & 3;

/** Bob's detector channels: which basis and bit value a click on that channel means. */
export interface DetectorMapping {
  channel: number;
  basis: Basis;
  bit: 0 | 1;
}

/**
 * Integer thresholds a uniform 32-bit word is compared against to draw a choice with the
 * protocol's probabilities: basis Z when word < basisZ; signal when word < signal, decoy when
 * word < decoy, else vacuum. Each in [0, 2^32].
 */
export interface ChoiceThresholds {
  basisZ: number;
  signal: number;
  decoy: number;
}

const TWO32 = 4294967296;

export function choiceThresholds(p: { intensityProbs: { signal: number; decoy: number }; aliceBasisProbZ: number }): ChoiceThresholds {
  const q = p.intensityProbs;
  return {
    basisZ: Math.min(TWO32, Math.round(p.aliceBasisProbZ * TWO32)),
    signal: Math.min(TWO32, Math.round(q.signal * TWO32)),
    decoy: Math.min(TWO32, Math.round((q.signal + q.decoy) * TWO32)),
  };
}

/** Choice bytes two per byte (low nibble first): what the source's read-back sends. */
export function packChoiceNibbles(choices: Uint8Array): Uint8Array {
  // A pair per output byte, written once (~10^7 choices a block go through here and back).
  const n = choices.length;
  const out = new Uint8Array((n + 1) >> 1);
  const pairs = n >> 1;
  for (let j = 0; j < pairs; j++) out[j] = (choices[2 * j] & 15) | ((choices[2 * j + 1] & 15) << 4);
  if (n & 1) out[pairs] = choices[n - 1] & 15;
  return out;
}

export function unpackChoiceNibbles(packed: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(n);
  const pairs = n >> 1;
  for (let j = 0; j < pairs; j++) {
    const b = packed[j];
    out[2 * j] = b & 15;
    out[2 * j + 1] = b >> 4;
  }
  if (n & 1) out[n - 1] = packed[pairs] & 15;
  return out;
}

/** Code of an intensity class not revealed (not yet emitted, or withheld). */
export const CLASS_UNKNOWN = 255;

/** Intensity classes 2 bits each (LSB first); anything above 2 is sent as 3 = unknown. */
export function packClasses(cls: Uint8Array): Uint8Array {
  const out = new Uint8Array((cls.length + 3) >> 2);
  for (let i = 0; i < cls.length; i++) {
    const c = cls[i] > 2 ? 3 : cls[i];
    out[i >> 2] |= c << ((i & 3) * 2);
  }
  return out;
}

/** The inverse of packClasses (3 becomes CLASS_UNKNOWN); the caller checks the length first. */
export function unpackClasses(packed: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const c = (packed[i >> 2] >> ((i & 3) * 2)) & 3;
    out[i] = c === 3 ? CLASS_UNKNOWN : c;
  }
  return out;
}
