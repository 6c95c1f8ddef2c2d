/**
 * Glue between the emulated lab (src/lab/) and the timing layer: Alice's intensity pattern
 * regenerated from her seed, and a tag source reading an EmulatedLink.
 */
import { aliceChoiceFast, aliceThresholds, DOMAIN_ALICE, seedKeys } from '../lab/alice.ts';
import type { EmulatedLink } from '../lab/link.ts';
import type { LinkPreset } from '../lab/presets.ts';
import type { TagBatch } from '../lab/types.ts';
import type { AlicePattern } from './pattern.ts';

/**
 * Alice's intensity classes regenerated from her seed (what her node would send as sync pattern).
 * Only the intensity is exposed: bits and bases never leave this function.
 */
export function alicePatternFromSeed(preset: LinkPreset, seed: bigint): AlicePattern {
  const keys = seedKeys(seed, DOMAIN_ALICE);
  const th = aliceThresholds(preset);
  return {
    meanPhotons: [preset.intensities.signal, preset.intensities.decoy, preset.intensities.vacuum],
    intensities(firstPulse: number, count: number): Uint8Array {
      const out = new Uint8Array(count);
      for (let i = 0; i < count; i++) out[i] = (aliceChoiceFast(keys, th, firstPulse + i) >> 2) & 3;
      return out;
    },
    intensitiesAt(pulses: Float64Array): Uint8Array {
      const out = new Uint8Array(pulses.length);
      for (let i = 0; i < pulses.length; i++) out[i] = pulses[i] < 0 ? 255 : (aliceChoiceFast(keys, th, pulses[i]) >> 2) & 3;
      return out;
    },
  };
}

/** A pull source of tag batches: the shape calibration reads (emulated link, replay, or a tagger adapter). */
export interface TagSource {
  /** Next batch, or null at the end of the stream. */
  next(): Promise<TagBatch | null>;
  /** Pulse period in ps of the source that the tags refer to. */
  readonly periodPs: number;
}

/** Reads `totalPulses` pulses from an EmulatedLink in batches of `batchPulses`. */
export function linkTagSource(link: EmulatedLink, totalPulses: number, batchPulses = 1e7): TagSource {
  let done = 0;
  return {
    periodPs: link.periodPs,
    async next() {
      if (done >= totalPulses) return null;
      const n = Math.min(batchPulses, totalPulses - done);
      done += n;
      return link.nextPulses(n).tags;
    },
  };
}
