/**
 * Test and bench helper: an emulated link whose Alice is a source RNG as in a run (ChaCha20 keyed
 * with fresh OS entropy, src/core/source-rng.ts), with her record and Bob's modulator record read
 * the way the nodes read them, for in-process tests of the block dialogue.
 */
import { createSourceRng, type SourceRng } from '../core/source-rng.ts';
import { choiceThresholds } from '../protocol/choices.ts';
import { EmulatedLink, type LinkOptions } from '../lab/link.ts';
import { bobBasisChoicesAt } from '../lab/alice.ts';
import type { LinkPreset } from '../lab/presets.ts';

export function linkWithSource(preset: LinkPreset, opts: Omit<LinkOptions, 'alice'>): { link: EmulatedLink; rng: SourceRng; aliceChoicesAt(pulses: Float64Array): Uint8Array; bobBasesAt(pulses: Float64Array): Uint8Array } {
  const rng = createSourceRng(choiceThresholds(preset));
  const link = new EmulatedLink(preset, { ...opts, alice: rng });
  return {
    link, rng,
    aliceChoicesAt: (pulses) => rng.choicesAt(pulses),
    bobBasesAt: (pulses) => bobBasisChoicesAt(preset, link.bobSeed, pulses),
  };
}
