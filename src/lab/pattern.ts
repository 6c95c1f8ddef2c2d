/**
 * The emulated lab as the timing layer's tests, benches and calibration read it: Alice's intensity
 * pattern of a standalone lab (its own stand-in pattern, regenerated from the lab's seed: tests
 * and calibration on the emulated lab only; a node's Alice reads her source's record instead), and
 * a tag source reading an EmulatedLink. The lab provides these to timing, not the other way round.
 */
import { aliceChoiceFast, aliceThresholds, DOMAIN_ALICE, seedKeys } from './alice.ts';
import type { EmulatedLink } from './link.ts';
import type { LinkPreset } from './presets.ts';
import type { TagBatch } from './types.ts';
import type { AlicePattern } from '../timing/pattern.ts';
import type { TagSource } from '../timing/calibrate.ts';

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

export type { TagSource };

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
