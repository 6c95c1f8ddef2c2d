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

/**
 * Strictly increasing non-negative integer pulse indices as unsigned LEB128 deltas (the first
 * delta is from 0). About 2 bytes per detection at the detection densities of a fibre link.
 */
export function encodePulseList(pulses: Float64Array): Uint8Array {
  const out = new Uint8Array(pulses.length * 8 + 8);
  let o = 0;
  let prev = -1;
  for (let i = 0; i < pulses.length; i++) {
    let d = pulses[i] - prev - 1;
    if (!(d >= 0) || !Number.isInteger(d)) {
      throw new ProtocolError('PULSES_NOT_INCREASING', `pulse list must be strictly increasing integers (index ${i})`);
    }
    prev = pulses[i];
    // Below 2^31 the shifts are exact (almost every delta); above, divide.
    if (d < 0x80000000) {
      while (d >= 0x80) {
        out[o++] = (d & 0x7f) | 0x80;
        d >>>= 7;
      }
    } else {
      while (d >= 0x80) {
        out[o++] = (d % 0x80) | 0x80;
        d = Math.floor(d / 0x80);
      }
    }
    out[o++] = d;
  }
  return out.slice(0, o);
}

export function decodePulseList(buf: Uint8Array, expected?: number): Float64Array {
  // Every pulse takes at least one byte: buf.length bounds the count.
  const vals = new Float64Array(buf.length);
  let n = 0;
  let prev = -1;
  let i = 0;
  while (i < buf.length) {
    let b = buf[i++];
    let d = b & 0x7f;
    if (b & 0x80) {
      let mul = 0x80;
      for (;;) {
        if (i >= buf.length) throw new ProtocolError('PULSES_TRUNCATED', 'pulse list ends inside a number: the message was truncated');
        b = buf[i++];
        d += (b & 0x7f) * mul;
        if (!(b & 0x80)) break;
        mul *= 0x80;
        if (mul > 2 ** 56) throw new ProtocolError('PULSES_MALFORMED', 'pulse list holds a number above 2^53');
      }
    }
    prev = prev + 1 + d;
    vals[n++] = prev;
  }
  if (expected !== undefined && n !== expected) {
    throw new ProtocolError('PULSES_COUNT', `pulse list holds ${n} pulses, the header says ${expected}`);
  }
  return vals.slice(0, n);
}
