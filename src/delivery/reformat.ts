/**
 * Reformatting on supply: ETSI 014 keys of any size (a multiple of 8 bits) cut from the stored
 * chunks of one key stream, without reusing a bit.
 *
 * The chunks chosen for a request are concatenated in the order the releasing KMS lists them
 * (that list travels to the peer KMS with their digests); key j is bytes [j·S, (j+1)·S) of that
 * string, S the size in bytes. So one chunk can be split into several keys and one key can span
 * several chunks; what is left after the last key (less than one chunk) is discarded with the
 * chunks, never kept for another request: a byte is in at most one key. Both KMSs compute the
 * same plan from the same list, hence the same key_IDs (`deriveReformattedKeyId`) and, in the
 * native store, the same bytes.
 */
import { deriveReformattedKeyId, type KeyPart } from './keyid.ts';

export interface ReformatPlan {
  /** Chunks needed (the first this many of the list). */
  chunks: number;
  /** Size of every key in bytes (all equal). */
  sizes: number[];
  keyIds: string[];
  parts: KeyPart[][];
  /** Bytes of the chunks discarded after the last key. */
  discardedBytes: number;
}

/** Chunks of `chunkBytes` needed for `number` keys of `sizeBytes`. */
export function chunksNeeded(number: number, sizeBytes: number, chunkBytes: number): number {
  return Math.ceil((number * sizeBytes) / chunkBytes);
}

/** The plan for `number` keys of `sizeBytes` from the listed chunk indices (in that order). */
export function planKeys(keyStreamId: string, indices: number[], chunkBytes: number, number: number,
  sizeBytes: number): ReformatPlan {
  if (!(chunkBytes > 0) || !(sizeBytes > 0) || !(number > 0)) throw new RangeError('planKeys: sizes and number must be positive');
  const chunks = chunksNeeded(number, sizeBytes, chunkBytes);
  if (indices.length < chunks) throw new RangeError(`planKeys: ${chunks} chunks needed, ${indices.length} given`);
  const parts: KeyPart[][] = [];
  for (let j = 0; j < number; j++) {
    const p: KeyPart[] = [];
    let at = j * sizeBytes;
    const end = at + sizeBytes;
    while (at < end) {
      const k = Math.floor(at / chunkBytes);
      const offset = at - k * chunkBytes;
      const length = Math.min(chunkBytes - offset, end - at);
      p.push({ index: indices[k], offset, length });
      at += length;
    }
    parts.push(p);
  }
  return { chunks, sizes: parts.map(() => sizeBytes), keyIds: parts.map((p) => deriveReformattedKeyId(keyStreamId, p)),
    parts, discardedBytes: chunks * chunkBytes - number * sizeBytes };
}
