/** Test and benchmark helpers for LDPC reconciliation: seeded frames and a binary symmetric channel. */

/** sfc32 (Chris Doty-Humphrey's small fast counter generator) seeded from one integer: test
 *  data only, never key material. (A 32-bit xorshift variant used before was visibly biased.) */
export function seededRandom(seed: number): () => number {
  let a = 0x9e3779b9, b = 0x243f6a88, c = 0xb7e15162, d = seed >>> 0;
  const next = (): number => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    let t = (a + b) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    d = (d + 1) | 0;
    t = (t + d) | 0;
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 15; i++) next();
  return next;
}

/** Random packed bit string of `nbits` bits (unused high bits of the last byte zero). */
export function randomBits(rand: () => number, nbits: number): Uint8Array {
  const b = new Uint8Array(Math.ceil(nbits / 8));
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(rand() * 256);
  if (nbits % 8) b[b.length - 1] &= (1 << (nbits % 8)) - 1;
  return b;
}

/** Copy of `bits` with each of the first `nbits` bits flipped with probability q; returns the copy and the flip count. */
export function bsc(rand: () => number, bits: Uint8Array, nbits: number, q: number): { out: Uint8Array; flips: number } {
  const out = bits.slice();
  let flips = 0;
  for (let i = 0; i < nbits; i++) {
    if (rand() < q) {
      out[i >> 3] ^= 1 << (i & 7);
      flips++;
    }
  }
  return { out, flips };
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
