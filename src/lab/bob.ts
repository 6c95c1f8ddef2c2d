/**
 * Bob's side of the basis bookkeeping, for sifting code that maps a detection's channel to
 * (basis, bit) with a DetectorMapping table (src/core/sift.ts `channelMap`).
 *
 * - Passive Bob (beam splitter, 4 detectors): the channel says the basis; use preset.detectors.
 * - Active Bob (2 detectors behind a modulator driven by Bob's RNG): the channel says only the bit;
 *   the basis is that of Bob's modulator for the pulse, which Bob's node regenerates from his seed
 *   (EmulatedLink.bobSeed, bobBasisChoices in ./alice.ts), as Alice's node does for her choices.
 *   `labelBobBases` folds that basis into a virtual channel number (channel + 128 for X) so that
 *   the 4-entry table of `bobDetectorMapping` gives the right (basis, bit) for every detection.
 *
 * Usage on Bob's node, after timing has assigned pulses to detections:
 *   const ch = labelBobBases(preset, bobSeed, det.pulse, det.channel);
 *   bobAnnounce({ pulse: det.pulse, channel: ch }, bobDetectorMapping(preset));
 */
import { bobBasisFast, bobThreshold, seedKeys, DOMAIN_BOB } from './alice.ts';
import type { LinkPreset } from './presets.ts';
import type { DetectorMapping } from './types.ts';

/** Offset added to an active Bob's channel number for a detection made in the X basis. */
export const X_BASIS_CHANNEL_OFFSET = 128;

/** The channel → (basis, bit) table to sift Bob's detections with (after labelBobBases). */
export function bobDetectorMapping(preset: LinkPreset): DetectorMapping[] {
  if (preset.bobBasisChoice === 'passive') return preset.detectors.map((m) => ({ ...m }));
  const out: DetectorMapping[] = [];
  for (const m of preset.detectors) {
    if (m.channel >= X_BASIS_CHANNEL_OFFSET) {
      throw new RangeError(`active Bob: detector channel ${m.channel} must be below ${X_BASIS_CHANNEL_OFFSET} to leave room for X-basis labels`);
    }
    out.push({ channel: m.channel, basis: 0, bit: m.bit });
    out.push({ channel: m.channel + X_BASIS_CHANNEL_OFFSET, basis: 1, bit: m.bit });
  }
  return out;
}

/**
 * Channels of Bob's detections relabelled with his basis: unchanged for a passive Bob; for an
 * active Bob, channel + 128 where his modulator was set to X for that pulse. `pulse[i]` is the
 * pulse index of detection i (integer). Writes into `out` when given; may be the input array.
 */
export function labelBobBases(preset: LinkPreset, bobSeed: bigint, pulse: Float64Array, channel: Uint8Array, out?: Uint8Array): Uint8Array {
  const n = channel.length;
  if (pulse.length !== n) throw new RangeError(`pulse and channel arrays differ in length (${pulse.length} vs ${n})`);
  const res = out ?? new Uint8Array(n);
  if (res.length < n) throw new RangeError(`output buffer holds ${res.length} channels, ${n} needed`);
  if (preset.bobBasisChoice === 'passive') {
    if (res !== channel) res.set(channel);
    return res;
  }
  const keys = seedKeys(bobSeed, DOMAIN_BOB);
  const th = bobThreshold(preset);
  for (let i = 0; i < n; i++) {
    const p = pulse[i];
    if (!(p >= 0) || !Number.isSafeInteger(p)) throw new RangeError(`detection ${i}: pulse index ${p} is not a non-negative integer`);
    res[i] = bobBasisFast(keys, th, p) === 1 ? channel[i] + X_BASIS_CHANNEL_OFFSET : channel[i];
  }
  return res;
}
