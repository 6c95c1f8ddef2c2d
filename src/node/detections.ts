/**
 * Bob's detections in the form the sifting core takes: pulse index plus a channel that names
 * (basis, bit). With a passive basis choice the tagger channel already does; with an active one
 * the detector gives the bit and Bob's own modulator RNG gave the basis for that pulse, so the
 * two are combined here into channel = basis·2 + bit.
 */
import { bobBasisFast, bobThreshold, seedKeys, DOMAIN_BOB } from '../lab/alice.ts';
import type { LinkPreset } from '../lab/presets.ts';
import type { DetectorMapping } from '../lab/types.ts';

/** The channel -> (basis, bit) map of what `toSiftChannels` returns. */
export function siftMapping(preset: LinkPreset): DetectorMapping[] {
  if (preset.bobBasisChoice === 'passive') return preset.detectors;
  return [
    { channel: 0, basis: 0, bit: 0 }, { channel: 1, basis: 0, bit: 1 },
    { channel: 2, basis: 1, bit: 0 }, { channel: 3, basis: 1, bit: 1 },
  ];
}

/**
 * Rewrites channels in place (active basis choice) or returns them as they are (passive).
 * `bobSeed` is the seed of Bob's basis RNG (his modulator's record in a real system).
 */
export function toSiftChannels(preset: LinkPreset, bobSeed: bigint, pulse: Float64Array, channel: Uint8Array): Uint8Array {
  if (preset.bobBasisChoice === 'passive') return channel;
  const bitOf = new Uint8Array(256).fill(255);
  for (const d of preset.detectors) bitOf[d.channel] = d.bit;
  const keys = seedKeys(bobSeed, DOMAIN_BOB);
  const th = bobThreshold(preset);
  const out = new Uint8Array(channel.length);
  for (let i = 0; i < channel.length; i++) {
    const bit = bitOf[channel[i]];
    out[i] = bit === 255 ? 255 : bobBasisFast(keys, th, pulse[i]) * 2 + bit;
  }
  return out;
}


