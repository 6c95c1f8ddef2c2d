/**
 * One-time pad and one-time MAC for relay hops. Both consume fresh QKD link key and are
 * information-theoretically secure as long as each key is used once (the link KMS erases a link
 * key when it hands it out, so it cannot be drawn twice).
 *
 * MAC: Wegman–Carter with the polynomial universal hash over GF(p), p = 2^127 − 1
 * (Carter & Wegman, JCSS 22 (1981); Wegman & Carter, JCSS 22 (1981) 265–279; the same
 * construction as Poly1305 over a Mersenne prime). Key (r, s): 32 bytes of link key, each half
 * read big-endian and reduced mod p. The message is cut into 15-byte blocks, each read as an
 * integer with 2^120 added (so trailing zero bytes count), followed by one block holding the byte
 * length; with blocks c_1..c_L
 *
 *     tag = (c_1 r^L + c_2 r^(L−1) + … + c_L r + s) mod p,  16 bytes big-endian.
 *
 * Two different messages of at most L blocks collide for at most L values of r (a non-zero
 * polynomial of degree ≤ L), so a forger who saw one tag succeeds with probability ≤ L / p
 * ≈ L · 2^−127 (s masks the hash: the tag reveals nothing about r). Never reuse (r, s).
 */
import { timingSafeEqual } from 'node:crypto';
import { SecurityError } from '../errors.ts';

export const P127 = (1n << 127n) - 1n;
export const MAC_KEY_BYTES = 32;
export const TAG_BYTES = 16;
const BLOCK = 15;

function bigFrom(b: Uint8Array): bigint {
  let x = 0n;
  for (const v of b) x = (x << 8n) | BigInt(v);
  return x;
}

/** The message's blocks c_1..c_L as integers (see the module comment). */
export function macBlocks(msg: Uint8Array): bigint[] {
  const out: bigint[] = [];
  for (let i = 0; i < msg.length; i += BLOCK) out.push(bigFrom(msg.subarray(i, i + BLOCK)) + (1n << 120n));
  out.push(BigInt(msg.length));
  return out;
}

function macKey(key: Uint8Array): { r: bigint; s: bigint } {
  if (key.length !== MAC_KEY_BYTES) {
    throw new SecurityError('RELAY_MAC_KEY', `a hop MAC key is ${MAC_KEY_BYTES} bytes of link key, got ${key.length}`);
  }
  return { r: bigFrom(key.subarray(0, 16)) % P127, s: bigFrom(key.subarray(16, 32)) % P127 };
}

/** The one-time tag of `msg` under the 32-byte `key` (Horner's rule). */
export function oneTimeMac(key: Uint8Array, msg: Uint8Array): Buffer {
  const { r, s } = macKey(key);
  let h = 0n;
  for (const c of macBlocks(msg)) h = ((h + c) * r) % P127;
  const t = (h + s) % P127;
  const out = Buffer.alloc(TAG_BYTES);
  let x = t;
  for (let i = TAG_BYTES - 1; i >= 0; i--) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}

/** True if `tag` is the tag of `msg` under `key` (constant-time comparison of the tags). */
export function verifyMac(key: Uint8Array, msg: Uint8Array, tag: Uint8Array): boolean {
  const want = oneTimeMac(key, msg);
  return tag.length === want.length && timingSafeEqual(want, tag);
}

/** a XOR b into a new buffer (equal lengths). */
export function xorInto(a: Uint8Array, b: Uint8Array): Buffer {
  if (a.length !== b.length) throw new SecurityError('RELAY_PAD_LENGTH', `pad of ${b.length} bytes for ${a.length} bytes of key`);
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] ^ b[i];
  return out;
}
