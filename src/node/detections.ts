/**
 * Bob's detections in the form the sifting core takes: pulse index plus a channel that names
 * (basis, bit). With a passive basis choice the tagger channel already does; with an active one
 * the detector gives the bit and Bob's modulator gave the basis for that pulse (its record, read
 * from the device: never derived from a seed here), so the two are combined into
 * channel = basis·2 + bit.
 */
import type { ProtocolSettings } from '../protocol/settings.ts';
import type { DetectorMapping } from '../protocol/choices.ts';

/** The channel -> (basis, bit) map of what `toSiftChannels` returns. */
export function siftMapping(settings: ProtocolSettings): DetectorMapping[] {
  if (settings.bobBasisChoice === 'passive') return settings.detectors;
  return [
    { channel: 0, basis: 0, bit: 0 }, { channel: 1, basis: 0, bit: 1 },
    { channel: 2, basis: 1, bit: 0 }, { channel: 3, basis: 1, bit: 1 },
  ];
}

/**
 * Returns the channels as they are (passive) or, for an active basis choice, new channels
 * basis·2 + bit with `bases[i]` the modulator's basis (0 Z, 1 X) at `pulse[i]` (its record).
 */
export function toSiftChannels(settings: ProtocolSettings, bases: Uint8Array | undefined, channel: Uint8Array): Uint8Array {
  if (settings.bobBasisChoice === 'passive') return channel;
  if (!bases || bases.length !== channel.length) throw new RangeError(`active basis choice: ${channel.length} detections need as many modulator bases (got ${bases?.length ?? 'none'})`);
  const bitOf = new Uint8Array(256).fill(255);
  for (const d of settings.detectors) bitOf[d.channel] = d.bit;
  const out = new Uint8Array(channel.length);
  for (let i = 0; i < channel.length; i++) {
    const bit = bitOf[channel[i]];
    out[i] = bit === 255 ? 255 : bases[i] * 2 + bit;
  }
  return out;
}
