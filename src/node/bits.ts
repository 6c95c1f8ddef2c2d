/**
 * Packed bit strings (LSB first: bit i is `(a[i >> 3] >> (i & 7)) & 1`, the core's convention)
 * and the compact encodings of pulse lists the post-processing dialogue sends.
 */
import { ProtocolError } from '../errors.ts';
import { sliceBits } from '../core/block.ts';

export { sliceBits };

/** A packed bit string and its length in bits. */
export interface Bits {
  bytes: Uint8Array;
  bits: number;
}

/** Concatenates packed bit strings (byte-wise shifts, not bit by bit). */
export function concatBits(parts: readonly Bits[]): Bits {
  const total = parts.reduce((s, p) => s + p.bits, 0);
  const out = new Uint8Array(Math.ceil(total / 8));
  let pos = 0;
  for (const p of parts) {
    const sh = pos & 7;
    const base = pos >> 3;
    const nBytes = Math.ceil(p.bits / 8);
    for (let i = 0; i < nBytes; i++) {
      let v = p.bytes[i];
      if (i === nBytes - 1 && p.bits & 7) v &= (1 << (p.bits & 7)) - 1;
      out[base + i] |= (v << sh) & 0xff;
      if (sh && base + i + 1 < out.length) out[base + i + 1] |= v >> (8 - sh);
    }
    pos += p.bits;
  }
  return { bytes: out, bits: total };
}

/** Number of positions where two packed strings of `n` bits differ. */
export function hammingDistance(a: Uint8Array, b: Uint8Array, n: number): number {
  let d = 0;
  const full = n >> 3;
  for (let i = 0; i < full; i++) {
    let x = a[i] ^ b[i];
    while (x) {
      x &= x - 1;
      d++;
    }
  }
  for (let i = full * 8; i < n; i++) d += ((a[i >> 3] ^ b[i >> 3]) >> (i & 7)) & 1;
  return d;
}

// The pulse-list encoding is shared with the device layer (the source's read-back): src/protocol.
export { checkPulseListCount, encodePulseList, decodePulseList, encodeDistinctPulses } from '../protocol/pulse-list.ts';
