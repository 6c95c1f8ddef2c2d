/**
 * Slow, obviously-correct TypeScript references for the native post-processing core, written
 * independently of the Rust code from the definitions (used by test/core and the benchmarks).
 * Plain arrays, one bit / one event at a time, BigInt where 64-bit arithmetic is needed.
 * Not for production use: they are O(n·ℓ) or worse.
 */

/** Bit i of an LSB-first packed array. */
export function getBit(a: Uint8Array, i: number): number {
  return (a[i >> 3] >> (i & 7)) & 1;
}

export function packBits(bits: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(Math.ceil(bits.length / 8));
  for (let i = 0; i < bits.length; i++) if (bits[i]) out[i >> 3] |= 1 << (i & 7);
  return out;
}

export function unpackBits(a: Uint8Array, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(getBit(a, i));
  return out;
}

// ------------------------------------------------------------------ xoshiro256** (squash coin)
const M64 = (1n << 64n) - 1n;
const rotl = (x: bigint, k: bigint): bigint => ((x << k) | (x >> (64n - k))) & M64;

export class Xoshiro256Ref {
  private s: bigint[];
  constructor(seed: Uint8Array) {
    this.s = [0, 1, 2, 3].map((i): bigint => {
      let v: bigint = 0n;
      for (let b = 7; b >= 0; b--) v = (v << 8n) | BigInt(seed[i * 8 + b]);
      return v;
    });
    if (!this.s.some((v) => v !== 0n)) this.s[0] = 0x9e3779b97f4a7c15n;
  }
  next(): bigint {
    const s = this.s;
    const result = (rotl((s[1] * 5n) & M64, 7n) * 9n) & M64;
    const t = (s[1] << 17n) & M64;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45n);
    return result;
  }
}

// ------------------------------------------------------------------ sifting
export interface RefEvent { pulse: number; basis: number; bit: number }

/** Detections per chunk of the native Bob step (native/core/src/sift.rs CHUNK). */
export const SIFT_CHUNK = 1 << 20;

/**
 * Bob: group detections by pulse, squash (double click -> random bit; both bases -> random of 4).
 * The batch is cut at the first pulse boundary at or after each multiple of `chunk`; chunk c
 * draws its coins from xoshiro256** seeded with `seed` whose first 8 bytes are XORed with c.
 */
export function bobEventsRef(pulse: ArrayLike<number>, channel: ArrayLike<number>, map: Uint8Array, seed: Uint8Array,
  chunk = SIFT_CHUNK): RefEvent[] {
  const out: RefEvent[] = [];
  let start = 0;
  for (let c = 0; start < pulse.length; c++) {
    let end = (Math.floor(start / chunk) + 1) * chunk;
    while (end < pulse.length && pulse[end] === pulse[end - 1]) end++;
    end = Math.min(end, pulse.length);
    const s = Uint8Array.from(seed);
    let v = c;
    for (let k = 0; k < 8; k++, v = Math.floor(v / 256)) s[k] ^= v & 0xff;
    bobChunkRef(pulse, channel, start, end, map, s, out);
    start = end;
  }
  return out;
}

function bobChunkRef(pulse: ArrayLike<number>, channel: ArrayLike<number>, start: number, end: number, map: Uint8Array,
  seed: Uint8Array, out: RefEvent[]): void {
  const rng = new Xoshiro256Ref(seed);
  let i = start;
  while (i < end) {
    const p = pulse[i];
    const clicked = [[false, false], [false, false]];
    while (i < end && pulse[i] === p) {
      const c = map[channel[i]];
      if (c <= 3) clicked[c >> 1][c & 1] = true;
      i++;
    }
    const z = clicked[0][0] || clicked[0][1];
    const x = clicked[1][0] || clicked[1][1];
    if (!z && !x) continue;
    if (z && x) {
      const r = Number(rng.next() >> 62n);
      out.push({ pulse: p, basis: r >> 1, bit: r & 1 });
    } else {
      const b = z ? 0 : 1;
      if (clicked[b][0] && clicked[b][1]) out.push({ pulse: p, basis: b, bit: Number(rng.next() >> 63n) });
      else out.push({ pulse: p, basis: b, bit: clicked[b][1] ? 1 : 0 });
    }
  }
}

export interface RefSifted { z: number[]; zInt: number[]; x: number[]; xInt: number[] }

/** Both parties' sifted strings from Bob's events and Alice's choice bytes. */
export function siftRef(bob: RefEvent[], choices: Uint8Array, firstPulse: number): { alice: RefSifted; bob: RefSifted } {
  const alice: RefSifted = { z: [], zInt: [], x: [], xInt: [] };
  const bobS: RefSifted = { z: [], zInt: [], x: [], xInt: [] };
  for (const e of bob) {
    const c = choices[e.pulse - firstPulse];
    const aBit = c & 1;
    const aBasis = (c >> 1) & 1;
    const k = (c >> 2) & 3;
    if (aBasis !== e.basis) continue;
    if (e.basis === 0) {
      alice.z.push(aBit); alice.zInt.push(k); bobS.z.push(e.bit); bobS.zInt.push(k);
    } else {
      alice.x.push(aBit); alice.xInt.push(k); bobS.x.push(e.bit); bobS.xInt.push(k);
    }
  }
  return { alice, bob: bobS };
}

// ------------------------------------------------------------------ GF(2^128) polynomial hash
const M128 = (1n << 128n) - 1n;

/** Shift-and-add multiplication modulo x^128 + x^7 + x^2 + x + 1 (bit i = coefficient of x^i). */
export function gf128MulRef(a: bigint, b: bigint): bigint {
  let acc = 0n;
  let x = a;
  for (let i = 0n; i < 128n; i++) {
    if ((b >> i) & 1n) acc ^= x;
    const carry = x >> 127n;
    x = (x << 1n) & M128;
    if (carry) x ^= 0x87n;
  }
  return acc;
}

/** H_k(m) = Σ m_i k^{L+2-i} + n·k over 128-bit blocks of the LSB-first string. */
export function polyHashRef(bits: Uint8Array, n: number, k: bigint): bigint {
  let acc = 0n;
  for (let start = 0; start < n; start += 128) {
    let m = 0n;
    for (let j = 0; j < 128 && start + j < n; j++) if (getBit(bits, start + j)) m |= 1n << BigInt(j);
    acc = gf128MulRef(acc ^ m, k);
  }
  return gf128MulRef(acc ^ BigInt(n), k);
}

export function bytesToBigLE(b: Uint8Array): bigint {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  return v;
}

// ------------------------------------------------------------------ Toeplitz
/** y_i = XOR_j seed[i - j + n - 1] x_j, bit by bit. */
export function toeplitzRef(x: Uint8Array, n: number, seed: Uint8Array, l: number): Uint8Array {
  const y = new Uint8Array(Math.ceil(l / 8));
  for (let i = 0; i < l; i++) {
    let acc = 0;
    for (let j = 0; j < n; j++) acc ^= getBit(seed, i - j + n - 1) & getBit(x, j);
    if (acc) y[i >> 3] |= 1 << (i & 7);
  }
  return y;
}

// ------------------------------------------------------------------ Lim et al. 2014 bounds
export interface LimInput {
  mu: number[]; pMu: number[]; nZ: number[]; nX: number[]; mX: number[]; epsSec: number; epsCor: number;
}

export const h2Ref = (p: number): number => (p <= 0 || p >= 1 ? 0 : -p * Math.log2(p) - (1 - p) * Math.log2(1 - p));

/** Lim et al. 2014 Eqs. (2)-(5) with X (paper's key basis) and Z swapped, written out directly. */
export function limRef(inp: LimInput, leakBits: number): { sZ0: number; sZ1: number; sX1: number; vX1: number; phiZ: number; ell: number } {
  const [m1, m2, m3] = inp.mu;
  const p = inp.pMu;
  const lnTerm = Math.log(21 / inp.epsSec);
  const tau0 = p[0] * Math.exp(-m1) + p[1] * Math.exp(-m2) + p[2] * Math.exp(-m3);
  const tau1 = p[0] * Math.exp(-m1) * m1 + p[1] * Math.exp(-m2) * m2 + p[2] * Math.exp(-m3) * m3;
  const muK = [m1, m2, m3];
  const pm = (counts: number[], k: number, sign: number): number => {
    const tot = counts[0] + counts[1] + counts[2];
    return (Math.exp(muK[k]) / p[k]) * (counts[k] + sign * Math.sqrt((tot / 2) * lnTerm));
  };
  const s0 = (c: number[]): number => Math.max(0, (tau0 * (m2 * pm(c, 2, -1) - m3 * pm(c, 1, +1))) / (m2 - m3));
  const s1 = (c: number[]): number => {
    const v = (tau1 * m1 * (pm(c, 1, -1) - pm(c, 2, +1) - ((m2 * m2 - m3 * m3) / (m1 * m1)) * (pm(c, 0, +1) - s0(c) / tau0)))
      / (m1 * (m2 - m3) - m2 * m2 + m3 * m3);
    return Math.max(0, v);
  };
  const sZ0 = s0(inp.nZ);
  const sZ1 = s1(inp.nZ);
  const sX1 = s1(inp.nX);
  const vX1 = Math.max(0, (tau1 * (pm(inp.mX, 1, +1) - pm(inp.mX, 2, -1))) / (m2 - m3));
  let phiZ = 0.5;
  if (sX1 > 0 && sZ1 > 0) {
    const b0 = vX1 / sX1;
    if (b0 < 0.5) {
      const b = Math.min(Math.max(b0, 1e-12), 0.5);
      const [c, d] = [sX1, sZ1];
      const g = Math.sqrt(((c + d) * (1 - b) * b) / (c * d * Math.LN2) * Math.log2(((c + d) / (c * d * (1 - b) * b)) * (441 / (inp.epsSec * inp.epsSec))));
      phiZ = Math.min(0.5, b0 + (Number.isFinite(g) ? g : 0));
    }
  }
  const raw = sZ0 + sZ1 * (1 - h2Ref(phiZ)) - leakBits - 6 * Math.log2(21 / inp.epsSec) - Math.log2(2 / inp.epsCor);
  const n = inp.nZ[0] + inp.nZ[1] + inp.nZ[2];
  return { sZ0, sZ1, sX1, vX1, phiZ, ell: Math.min(n, raw > 0 ? Math.floor(raw) : 0) };
}

// ------------------------------------------------------------------ Rusca et al. 2018 (one decoy)
export interface RuscaInput {
  /** [mu1 (signal), mu2 (decoy)] and their probabilities. */
  mu: [number, number]; pMu: [number, number];
  /** Z (key) and X (test) detections and errors per intensity. */
  nZ: [number, number]; mZ: [number, number]; nX: [number, number]; mX: [number, number];
  epsSec: number; epsCor: number;
}

/**
 * Rusca et al., APL 112, 171104 (2018), Appendix A, written out directly: eps_sec = 19 eps,
 * delta(n) = sqrt(n/2 ln(19/eps_sec)); s0 upper from the decoy's errors (A16); s1 lower (A17);
 * s0 lower (A19); v_X1 upper (A22); phase error with Lim's gamma (21^2, conservative); (A25).
 */
export function ruscaRef(inp: RuscaInput, leakBits: number): { sZ0: number; sZ1: number; sX1: number; vX1: number; phiZ: number; ell: number } {
  const [m1, m2] = inp.mu;
  const [p1, p2] = inp.pMu;
  const ln = Math.log(19 / inp.epsSec);
  const d = (n: number): number => Math.sqrt((n / 2) * ln);
  const tau0 = p1 * Math.exp(-m1) + p2 * Math.exp(-m2);
  const tau1 = p1 * m1 * Math.exp(-m1) + p2 * m2 * Math.exp(-m2);
  const w1 = Math.exp(m1) / p1;
  const w2 = Math.exp(m2) / p2;
  const basis = (n: [number, number], m: [number, number]) => {
    const dn = d(n[0] + n[1]);
    const dm = d(m[0] + m[1]);
    const nMinus2 = w2 * (n[1] - dn);
    const nPlus1 = w1 * (n[0] + dn);
    const s0Upper = 2 * (tau0 * w2 * (m[1] + dm) + dn);
    const s1 = ((tau1 * m1) / (m2 * (m1 - m2))) * (nMinus2 - ((m2 * m2) / (m1 * m1)) * nPlus1 - ((m1 * m1 - m2 * m2) / (m1 * m1)) * (s0Upper / tau0));
    const s0 = (tau0 / (m1 - m2)) * (m1 * nMinus2 - m2 * nPlus1);
    return { s0: Math.max(0, s0), s1: Math.max(0, s1) };
  };
  const z = basis(inp.nZ, inp.mZ);
  const x = basis(inp.nX, inp.mX);
  const dmx = d(inp.mX[0] + inp.mX[1]);
  const vX1 = Math.max(0, (tau1 / (m1 - m2)) * (w1 * (inp.mX[0] + dmx) - w2 * (inp.mX[1] - dmx)));
  let phiZ = 0.5;
  if (x.s1 > 0 && z.s1 > 0) {
    const b0 = vX1 / x.s1;
    if (b0 < 0.5) {
      const b = Math.min(Math.max(b0, 1e-12), 0.5);
      const [c, dd] = [x.s1, z.s1];
      const g = Math.sqrt(((c + dd) * (1 - b) * b) / (c * dd * Math.LN2) * Math.log2(((c + dd) / (c * dd * (1 - b) * b)) * (441 / (inp.epsSec * inp.epsSec))));
      phiZ = Math.min(0.5, b0 + (Number.isFinite(g) ? g : 0));
    }
  }
  const raw = z.s0 + z.s1 * (1 - h2Ref(phiZ)) - leakBits - 6 * Math.log2(19 / inp.epsSec) - Math.log2(2 / inp.epsCor);
  const n = inp.nZ[0] + inp.nZ[1];
  return { sZ0: z.s0, sZ1: z.s1, sX1: x.s1, vX1, phiZ, ell: Math.min(n, raw > 0 ? Math.floor(raw) : 0) };
}
