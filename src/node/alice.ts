/**
 * Alice's node: her record of what her source sent is her source's own (its RNG's record, read
 * back over its wire protocol: src/devices/drivers/scpi.ts `readChoices`), never a seed. The
 * answering side of the post-processing dialogue and her delivery node sit on top. She never sees
 * Bob's raw detections, only what he announces.
 */
import type { PhotonSource } from '../devices/types.ts';
import { QkdError } from '../errors.ts';
import { AlicePostProcessor, type BlockConfig, type BlockResult } from './postprocess.ts';
import { SourceHealth } from './source-health.ts';

/** Where Alice's choices come from: her source's read-back (async: a round trip to the device). */
export interface AliceRecord {
  /** Packed choice bytes (src/protocol/choices.ts) of the listed pulses, ascending. Secret: wipe. */
  choicesAt(pulses: Float64Array): Promise<Uint8Array>;
  /** The same for the pulses of an encoded pulse list (src/protocol/pulse-list.ts) of `count` pulses. */
  choicesAtList?(list: Uint8Array, count: number): Promise<Uint8Array>;
}

/**
 * Her record from her source, through the health tests: a read-back that fails them throws
 * SOURCE_RNG_FAILED (the block aborts) and so does every later one (key production stops).
 */
export function sourceRecord(source: PhotonSource, health: SourceHealth, onFailure?: (reason: string) => void): AliceRecord {
  // One read-back through the health tests, whichever form the pulses come in.
  const checked = async (n: number, read: () => Promise<Uint8Array>): Promise<Uint8Array> => {
    health.assertHealthy();
    let c: Uint8Array;
    try {
      c = await read();
    } catch (err) {
      // A device or line fault ends this block (its record is unknown), not the node: the
      // next block reads again, and the device layer reconnects a line that went away.
      const e = err as QkdError;
      throw new QkdError('SOURCE_READBACK_FAILED', `reading back ${n} choices from Alice's source failed (${e.code ?? 'ERROR'}: ${e.message})`, { cause: err });
    }
    try {
      health.check(c);
    } catch (err) {
      c.fill(0);
      onFailure?.(health.state.reason ?? 'failed');
      throw err;
    }
    return c;
  };
  return {
    choicesAt: (pulses) => checked(pulses.length, () => source.readChoices(pulses)),
    choicesAtList: (list, count) => checked(count, () => source.readChoicesOfList(list, count)),
  };
}

export function createAlicePostProcessor(opts: {
  record: AliceRecord;
  config: BlockConfig;
  authBitsConsumed(blockId: number): number;
  onOutput(blockId: number, result: BlockResult): void | Promise<void>;
}): AlicePostProcessor {
  let lastQberZ: number | undefined;
  return new AlicePostProcessor({
    config: opts.config,
    choicesAt: (pulses) => opts.record.choicesAt(pulses),
    choicesAtList: opts.record.choicesAtList?.bind(opts.record),
    authBitsConsumed: opts.authBitsConsumed,
    onOutput: opts.onOutput,
    qberHint: () => lastQberZ,
  });
}
