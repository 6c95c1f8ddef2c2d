/**
 * Shared vocabulary of the emulated lab and of everything downstream (timing, sifting).
 *
 * Conventions (fixed for the whole project):
 * - Basis 0 = Z (rectilinear, the key basis), 1 = X (diagonal, the test basis of Lim et al. 2014).
 * - Intensity 0 = signal (mu), 1 = decoy (nu), 2 = vacuum (omega).
 * - Alice's per-pulse choice packed in one byte: bit0 = bit value, bit1 = basis,
 *   bits2..3 = intensity. `packChoice`/`choice*` below are the only place that knows this.
 * - Times are integer picoseconds. On the wire and in files: int64. In hot loops: Float64Array of
 *   integers relative to a batch epoch (exact below 2^53 ps = 2.5 h).
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

/** A batch of raw time tags as a time-tagger delivers them (Bob's clock). */
export interface TagBatch {
  /** Time of each tag in picoseconds on the tagger's own clock. */
  timePs: BigInt64Array;
  /** Input channel of each tag. */
  channel: Uint8Array;
}
