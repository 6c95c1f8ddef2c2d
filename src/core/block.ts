/**
 * The last step of a block: privacy amplification to the finite-key length, with the
 * authentication accounting applied to the output (issue 5, stages 5 and 6).
 *
 *   verified key (n bits) ──Toeplitz(seed)──▶ ℓ bits = [ replenishBits | deliverableBits ]
 *                                                       └ MAC key pool  └ KMS (ETSI 004)
 *
 * Both parties call `amplifyBlock` with the same statement and seed and get identical outputs.
 * Concurrency: independent blocks may run concurrently (each call owns its buffers).
 */
import { QkdError } from '../errors.ts';
import type { SecurityStatement } from './estimate.ts';
import { toeplitzHash, toeplitzSeedBits, type ToeplitzOptions } from './pa.ts';
import { wipe } from './native-call.ts';

export interface BlockOutput {
  statement: SecurityStatement;
  /** First `statement.replenishBits` output bits: refill the MAC key pool. */
  replenish: Uint8Array;
  replenishBits: number;
  /** Remaining `statement.deliverableBits` bits: deliver to the KMS. */
  deliverable: Uint8Array;
  deliverableBits: number;
}

/** Bits [start, start + n) of an LSB-first packed string, as a new packed array. */
export function sliceBits(src: Uint8Array, start: number, n: number): Uint8Array {
  const out = new Uint8Array(Math.ceil(n / 8));
  const byte0 = start >> 3;
  const sh = start & 7;
  for (let i = 0; i < out.length; i++) {
    const lo = src[byte0 + i] ?? 0;
    const hi = src[byte0 + i + 1] ?? 0;
    out[i] = sh === 0 ? lo : ((lo >> sh) | (hi << (8 - sh))) & 0xff;
  }
  if (n & 7) out[out.length - 1] &= (1 << (n & 7)) - 1;
  return out;
}

export async function amplifyBlock(args: {
  key: Uint8Array;
  nBits: number;
  statement: SecurityStatement;
  seed: Uint8Array;
  options?: ToeplitzOptions;
}): Promise<BlockOutput> {
  const { key, nBits, statement: st, seed } = args;
  if (nBits !== st.n) {
    throw new QkdError('PA_BAD_LENGTH', `key has ${nBits} bits but the statement was planned for ${st.n}; plan the block with its own counts`);
  }
  if (seed.length * 8 < toeplitzSeedBits(nBits, st.ell)) {
    throw new QkdError('PA_BAD_SEED', `Toeplitz seed has ${seed.length} bytes; need ${Math.ceil(toeplitzSeedBits(nBits, st.ell) / 8)}`);
  }
  const out = st.ell > 0 ? await toeplitzHash(key, nBits, seed, st.ell, args.options) : new Uint8Array(0);
  const replenish = sliceBits(out, 0, st.replenishBits);
  const deliverable = sliceBits(out, st.replenishBits, st.deliverableBits);
  wipe(out);
  return { statement: st, replenish, replenishBits: st.replenishBits, deliverable, deliverableBits: st.deliverableBits };
}
