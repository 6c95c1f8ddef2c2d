/**
 * Sequential PRNG of the emulator's physics (photon numbers, detector assignment, dark counts,
 * jitter, Eve): xoshiro128** (Blackman and Vigna, "Scrambled linear pseudorandom number
 * generators", ACM TOMS 47 (2021)), 32-bit words so that V8 runs it on small integers.
 * Emulation only, not for key material.
 */
import { mix32, seedKeys } from './alice.ts';

const INV32 = 1 / 4294967296;

export class Xoshiro128 {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare = 0;
  private hasSpare = false;

  constructor(seed: bigint, domain: number) {
    const k = seedKeys(seed, domain);
    this.s0 = mix32(k.k0 ^ 0x01234567) | 0;
    this.s1 = mix32(k.k1 ^ 0x89abcdef) | 0;
    this.s2 = mix32(k.k0 + 0x3243f6a8) | 0;
    this.s3 = mix32(k.k1 + 0x85a308d3) | 0;
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Next uniform 32-bit word (unsigned). */
  nextU32(): number {
    const s0 = this.s0, s1 = this.s1, s2 = this.s2, s3 = this.s3;
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9);
    const t = s1 << 9;
    const n2 = s2 ^ s0;
    const n3 = s3 ^ s1;
    this.s1 = s1 ^ n2;
    this.s0 = s0 ^ n3;
    this.s2 = n2 ^ t;
    this.s3 = rotl(n3, 11);
    return r >>> 0;
  }

  /** Uniform in the open interval (0, 1), safe for log(). */
  uniform(): number {
    return (this.nextU32() + 0.5) * INV32;
  }

  /** Standard normal truncated at ±6 (Box–Muller, the spare value cached). */
  gauss(): number {
    if (this.hasSpare) {
      this.hasSpare = false;
      return this.spare;
    }
    for (;;) {
      const u = this.uniform();
      const v = this.uniform();
      const r = Math.sqrt(-2 * Math.log(u));
      const a = 2 * Math.PI * v;
      const z0 = r * Math.cos(a);
      const z1 = r * Math.sin(a);
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
