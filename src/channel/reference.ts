/**
 * Slow, obviously correct reference of the MAC hash of native/auth (src/gf128.rs), in BigInt, for
 * known-answer and differential tests. Same definition, written independently from the spec:
 * - GF(2^128) = GF(2)[x]/(x^128 + x^7 + x^2 + x + 1); a 16-byte block is a big-endian integer whose
 *   bit i is the coefficient of x^i.
 * - H_k(A, D): blocks = A zero-padded to 16 B, D zero-padded to 16 B, then
 *   [bitlen(A) u64 BE || bitlen(D) u64 BE]; y = 0; for each block X: y = (y xor X) * k.
 * - tag = H_k(A, D) xor pad, pad = OTP stream bytes [32 n + 16 d, +16).
 * Never used on a real channel (not constant time, slow).
 */
const MASK = (1n << 128n) - 1n;

export function gfMulRef(a: bigint, b: bigint): bigint {
  let r = 0n;
  for (let i = 0n; i < 128n; i++) {
    if ((b >> i) & 1n) r ^= a;
    const carry = a >> 127n;
    a = (a << 1n) & MASK;
    if (carry) a ^= 0x87n;
  }
  return r;
}

export function bytesToBig(b: Uint8Array): bigint {
  let v = 0n;
  for (const x of b) v = (v << 8n) | BigInt(x);
  return v;
}

export function bigToBytes16(v: bigint): Uint8Array {
  const out = new Uint8Array(16);
  for (let i = 15; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

function blocks(b: Uint8Array): bigint[] {
  const out: bigint[] = [];
  for (let o = 0; o < b.length; o += 16) {
    const blk = new Uint8Array(16);
    blk.set(b.subarray(o, Math.min(o + 16, b.length)));
    out.push(bytesToBig(blk));
  }
  return out;
}

export function polyHashRef(key: Uint8Array, aad: Uint8Array, data: Uint8Array): Uint8Array {
  const k = bytesToBig(key);
  let y = 0n;
  const lens = (BigInt(aad.length * 8) << 64n) | BigInt(data.length * 8);
  for (const x of [...blocks(aad), ...blocks(data), lens]) y = gfMulRef(y ^ x, k);
  return bigToBytes16(y);
}

/** Tag of message (direction d, seq n) for a pre-shared secret laid out as hash key || pads. */
export function tagRef(psk: Uint8Array, dir: 0 | 1, seq: number, aad: Uint8Array, data: Uint8Array): Uint8Array {
  const h = bytesToBig(polyHashRef(psk.subarray(0, 16), aad, data));
  const off = 16 + 32 * seq + 16 * dir;
  return bigToBytes16(h ^ bytesToBig(psk.subarray(off, off + 16)));
}
