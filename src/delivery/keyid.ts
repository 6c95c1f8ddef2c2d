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
  h[6] = (h[6] & 0x0f) | 0x80; // version 8
  h[8] = (h[8] & 0x3f) | 0x80; // variant 10
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}
