/**
 * Slow, obviously correct TypeScript reference of the emulated source's choices
 * (native/core/src/emulated_choice.rs, layout drawn there): the ChaCha20 block function written
 * out from RFC 8439 §2.1–2.3, one block per pulse. For known-answer and differential tests only
 * (~µs per pulse).
 */
import { packChoice, type ChoiceThresholds } from '../protocol/choices.ts';

const rotl = (x: number, n: number): number => ((x << n) | (x >>> (32 - n))) >>> 0;

function quarterRound(s: Uint32Array, a: number, b: number, c: number, d: number): void {
  // RFC 8439 §2.1
  s[a] = (s[a] + s[b]) >>> 0; s[d] = rotl(s[d] ^ s[a], 16);
  s[c] = (s[c] + s[d]) >>> 0; s[b] = rotl(s[b] ^ s[c], 12);
  s[a] = (s[a] + s[b]) >>> 0; s[d] = rotl(s[d] ^ s[a], 8);
  s[c] = (s[c] + s[d]) >>> 0; s[b] = rotl(s[b] ^ s[c], 7);
}

const le32 = (b: Uint8Array, i: number): number => (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)) >>> 0;

/** The ChaCha20 block function (RFC 8439 §2.3): 64 bytes of keystream. */
export function chacha20BlockReference(key: Uint8Array, counter: number, nonce: Uint8Array): Uint8Array {
  if (key.length !== 32 || nonce.length !== 12) throw new RangeError('ChaCha20: key is 32 bytes, nonce 12');
  const init = new Uint32Array(16);
  init.set([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
  for (let i = 0; i < 8; i++) init[4 + i] = le32(key, 4 * i);
  init[12] = counter >>> 0;
  for (let i = 0; i < 3; i++) init[13 + i] = le32(nonce, 4 * i);
  const s = init.slice();
  for (let r = 0; r < 10; r++) {
    quarterRound(s, 0, 4, 8, 12); quarterRound(s, 1, 5, 9, 13); quarterRound(s, 2, 6, 10, 14); quarterRound(s, 3, 7, 11, 15);
    quarterRound(s, 0, 5, 10, 15); quarterRound(s, 1, 6, 11, 12); quarterRound(s, 2, 7, 8, 13); quarterRound(s, 3, 4, 9, 14);
  }
  const out = new Uint8Array(64);
  for (let i = 0; i < 16; i++) {
    const w = (s[i] + init[i]) >>> 0;
    out[4 * i] = w & 0xff; out[4 * i + 1] = (w >>> 8) & 0xff; out[4 * i + 2] = (w >>> 16) & 0xff; out[4 * i + 3] = w >>> 24;
  }
  return out;
}

const DOMAIN = new TextEncoder().encode('qkd-src0');

/** The choice byte of one pulse (integer in [0, 2^53)) under `key`. */
export function sourceChoiceReference(key: Uint8Array, th: ChoiceThresholds, pulse: number): number {
  const b = Math.floor(pulse / 4);
  const lane = pulse % 4;
  const nonce = new Uint8Array(12);
  const hi = Math.floor(b / 2 ** 32);
  nonce[0] = hi & 0xff; nonce[1] = (hi >>> 8) & 0xff; nonce[2] = (hi >>> 16) & 0xff; nonce[3] = hi >>> 24;
  nonce.set(DOMAIN, 4);
  const block = chacha20BlockReference(key, b % 2 ** 32, nonce);
  const w0 = le32(block, 16 * lane), w1 = le32(block, 16 * lane + 4), w2 = le32(block, 16 * lane + 8);
  const basis = w0 < th.basisZ ? 0 : 1;
  const intensity = w1 < th.signal ? 0 : w1 < th.decoy ? 1 : 2;
  return packChoice(w2 & 1, basis, intensity);
}
