/**
 * Sequential PRNG of the emulator's physics (photon numbers, detector assignment, dark counts,
 * jitter, Eve): xoshiro128** (Blackman and Vigna, "Scrambled linear pseudorandom number
 * generators", ACM TOMS 47 (2021)), 32-bit words so that V8 runs it on small integers.
 * Emulation only, not for key material.
 */
import { mix32, seedKeys } from './alice.ts';

const INV32 = 1 / 4294967296;

export class Xoshiro128 {
  // State in a typed array: int32 values outside V8's 31-bit small-integer range would otherwise be
  // boxed in object fields.
  private readonly s = new Int32Array(4);
  private spare = 0;
  private hasSpare = false;

  constructor(seed: bigint, domain: number) {
    const k = seedKeys(seed, domain);
    const s = this.s;
    s[0] = mix32(k.k0 ^ 0x01234567);
    s[1] = mix32(k.k1 ^ 0x89abcdef);
    s[2] = mix32(k.k0 + 0x3243f6a8);
    s[3] = mix32(k.k1 + 0x85a308d3);
    if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 1;
  }

  /** The four state words (unsigned): the native physics starts its copy of the stream from them. */
  state(): Uint32Array {
    return Uint32Array.from(this.s, (x) => x >>> 0);
  }

  /** Next uniform 32-bit word (unsigned). */
  nextU32(): number {
    const s = this.s;
    const s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9);
    const t = s1 << 9;
    const n2 = s2 ^ s0;
    const n3 = s3 ^ s1;
    s[1] = s1 ^ n2;
    s[0] = s0 ^ n3;
    s[2] = n2 ^ t;
    s[3] = rotl(n3, 11);
    return r >>> 0;
  }

  /** Uniform in the open interval (0, 1), safe for log(). */
  uniform(): number {
    return (this.nextU32() + 0.5) * INV32;
  }

  /** Standard normal truncated at ±6 (Marsaglia's polar method, the spare value cached). */
  gauss(): number {
    if (this.hasSpare) {
      this.hasSpare = false;
      return this.spare;
    }
    for (;;) {
      const u = 2 * this.uniform() - 1;
      const v = 2 * this.uniform() - 1;
      const s = u * u + v * v;
      if (s >= 1 || s === 0) continue;
      const f = Math.sqrt((-2 * Math.log(s)) / s);
      const z0 = u * f;
      const z1 = v * f;
      if (Math.abs(z0) > 6 || Math.abs(z1) > 6) continue; // |z| > 6 has probability 2e-9
      this.spare = z1;
      this.hasSpare = true;
      return z0;
    }
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
