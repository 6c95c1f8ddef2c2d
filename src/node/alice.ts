/**
 * Alice's node in an emulated run: her source's choices (regenerated from her seed, as her QRNG
 * record would be read back), the answering side of the post-processing dialogue, and her
 * delivery node. She never sees Bob's raw detections, only what he announces.
 */
import { aliceThresholds, seedKeys, DOMAIN_ALICE } from '../lab/alice.ts';
import { emulatedAliceChoicesAt } from '../core/sift.ts';
import type { LinkPreset } from '../lab/presets.ts';
import { AlicePostProcessor, type BlockConfig, type BlockResult } from './postprocess.ts';

/** Alice's packed choice bytes at the listed pulses, from her seed (native; same bits as aliceChoiceFast). */
export function aliceChoicesAt(preset: LinkPreset, seed: bigint): (pulses: Float64Array) => Uint8Array {
  const keys = seedKeys(seed, DOMAIN_ALICE);
  const th = aliceThresholds(preset);
  return (pulses) => emulatedAliceChoicesAt(keys, th, pulses);
}

export function createAlicePostProcessor(opts: {
  preset: LinkPreset;
  seed: bigint;
  config: BlockConfig;
  authBitsConsumed(blockId: number): number;
  onOutput(blockId: number, result: BlockResult): void | Promise<void>;
}): AlicePostProcessor {
  let lastQberZ: number | undefined;
  return new AlicePostProcessor({
    config: opts.config,
    choicesAt: aliceChoicesAt(opts.preset, opts.seed),
    authBitsConsumed: opts.authBitsConsumed,
    onOutput: opts.onOutput,
    qberHint: () => lastQberZ,
  });
}
