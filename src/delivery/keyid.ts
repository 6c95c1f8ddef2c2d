/**
 * key_IDs both KMSs derive alike: a UUIDv8 (RFC 9562 §5.8) whose 122 custom bits are the first bits
 * of SHA-256("qkd-kms key_ID v1" || 0 || key_stream_id || 0 || index as 4 bytes big-endian).
 * Distinct (stream, index) pairs give distinct IDs except with probability ~2^-122 per pair.
 */
import { createHash } from 'node:crypto';

export function deriveKeyId(keyStreamId: string, index: number): string {
  const idx = Buffer.alloc(4);
  idx.writeUInt32BE(index >>> 0);
  const h = createHash('sha256').update('qkd-kms key_ID v1\0').update(keyStreamId.toLowerCase())
    .update('\0').update(idx).digest();
  return uuid8(h);
}

/** One piece of a reformatted key: `length` bytes of chunk `index` from byte `offset`. */
export interface KeyPart {
  index: number;
  offset: number;
  length: number;
}

/**
 * key_ID of a key reformatted from stored chunks (split or merged, see reformat.ts): a UUIDv8 of
 * SHA-256("qkd-kms key_ID v2" || 0 || key_stream_id || 0 || count_be32 || (index, offset,
 * length)_be32 per part). Both KMSs know the parts, so they derive the same ID; no byte is in
 * two keys, so two keys never share their parts (distinct IDs up to ~2^-122). A separate domain
 * from v1: a reformatted key never takes the ID of a chunk.
 */
export function deriveReformattedKeyId(keyStreamId: string, parts: KeyPart[]): string {
  const b = Buffer.alloc(4 + 12 * parts.length);
  b.writeUInt32BE(parts.length, 0);
  parts.forEach((p, i) => {
    b.writeUInt32BE(p.index >>> 0, 4 + 12 * i);
    b.writeUInt32BE(p.offset >>> 0, 8 + 12 * i);
    b.writeUInt32BE(p.length >>> 0, 12 + 12 * i);
  });
  const h = createHash('sha256').update('qkd-kms key_ID v2\0').update(keyStreamId.toLowerCase())
    .update('\0').update(b).digest();
  return uuid8(h);
}

function uuid8(h: Buffer): string {
  h[6] = (h[6] & 0x0f) | 0x80; // version 8
  h[8] = (h[8] & 0x3f) | 0x80; // variant 10
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}
