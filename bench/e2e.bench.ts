/**
 * End to end, both parties in one process: sifted Z block in -> secret key out.
 *   LDPC (src/core/ldpc.ts: Alice encodeBatch, Bob decodeBatch; unconverged frames discarded)
 *   -> verification tags (both) -> planBlock (Lim et al. 2014 finite key, counted leak)
 *   -> Toeplitz PA (both parties, concurrently).
 * Input: Alice's random Z string of n bits, Bob's = Alice's through a BSC at QBER q; the decoy
 * counts (per intensity, Z and X, X errors) are the expectations of the Ma05 model (anchors.md)
 * for the same n, so the finite-key bound sees statistics consistent with the block.
 * Reported: secret bits/s (ℓ / wall time of the whole chain), sifted bits/s, and the ratio of the
 * finite-key secret fraction ℓ/n to the asymptotic one at the same QBER, block size and counted
 * leak: (s0 + s1(1 − h(e1)) − leak)/n with the model's true single-photon yield and error.
 * No baseline: the reference chain (reference LDPC decoder + O(nℓ) Toeplitz) takes minutes here;
 * each stage's own benchmark carries its reference.
 */
import { randomBytes } from 'node:crypto';
import { chooseCode, decodeBatch, encodeBatch } from '../src/core/ldpc.ts';
import { planBlock, binaryEntropy, type DecoySettings, type Triple } from '../src/core/estimate.ts';
import { verifyTag, verifyTagBits, newHashKey, tagsEqual } from '../src/core/verify.ts';
import { newToeplitzSeed, toeplitzHash } from '../src/core/pa.ts';
import { sliceBits } from '../src/core/block.ts';
import { median, type BenchResult } from './stats.ts';

/** Target f for the LDPC code choice: at the time of writing the default choice (f ≈ 1.12) did not
 * converge at QBER 2 % within 60 iterations, 1.3 does; override with QKD_E2E_LDPC_F. */
const LDPC_EFFICIENCY = Number(process.env.QKD_E2E_LDPC_F ?? 1.3);

const settings: DecoySettings = { mu: [0.5, 0.1, 0.0], pMu: [0.7, 0.2, 0.1] };

/** Ma05 expectations scaled so that the Z counts sum to n. */
function model(n: number, q: number, qZ: number, km = 25) {
  const eta = 0.1 * 10 ** (-0.2 * km / 10);
  const Y0 = 2e-6;
  const ed = q; // misalignment error sets the QBER at the signal intensity (dark counts add little)
  const Q = settings.mu.map((k) => Y0 + 1 - Math.exp(-eta * k));
  const EQ = settings.mu.map((k) => Y0 / 2 + ed * (1 - Math.exp(-eta * k)));
  const perPulseZ = settings.pMu.reduce((a, p, i) => a + p * Q[i], 0) * qZ * qZ;
  const pulses = n / perPulseZ;
  const qX = 1 - qZ;
  const nZ = settings.pMu.map((p, i) => Math.round(pulses * p * qZ * qZ * Q[i])) as Triple;
  const nX = settings.pMu.map((p, i) => Math.round(pulses * p * qX * qX * Q[i])) as Triple;
  const mX = settings.pMu.map((p, i) => Math.round(pulses * p * qX * qX * EQ[i])) as Triple;
  const Y1 = Y0 + eta - Y0 * eta;
  const e1 = (Y0 / 2 + ed * eta) / Y1;
  const s0 = pulses * qZ * qZ * settings.pMu.reduce((a, p, i) => a + p * Math.exp(-settings.mu[i]) * Y0, 0);
  const s1 = pulses * qZ * qZ * settings.pMu.reduce((a, p, i) => a + p * settings.mu[i] * Math.exp(-settings.mu[i]) * Y1, 0);
  return { nZ, nX, mX, s0, s1, e1 };
}

function bsc(a: Uint8Array, nBits: number, q: number): Uint8Array {
  const b = Uint8Array.from(a);
  // Geometric skipping: exact Bernoulli(q) error positions without one random draw per bit.
  let i = -1;
  for (;;) {
    i += 1 + Math.floor(Math.log(1 - Math.random()) / Math.log(1 - q));
    if (i >= nBits) break;
    b[i >> 3] ^= 1 << (i & 7);
  }
  return b;
}

async function chain(alice: Uint8Array, bob: Uint8Array, n: number, q: number, frames: number, keyBits: number, m: ReturnType<typeof model>) {
  const t: Record<string, number> = {};
  let t0 = performance.now();
  const choice = chooseCode(q, keyBits, { efficiency: LDPC_EFFICIENCY });
  const fa = Array.from({ length: frames }, (_, i) => sliceBits(alice, i * keyBits, keyBits));
  const fb = Array.from({ length: frames }, (_, i) => sliceBits(bob, i * keyBits, keyBits));
  const enc = await encodeBatch(fa, choice.params);
  t.encode = performance.now() - t0; t0 = performance.now();
  const dec = await decodeBatch(fb, enc.map((e) => e.syndrome), q, choice.params);
  t.decode = performance.now() - t0; t0 = performance.now();
  const keep = dec.map((d) => d.converged);
  const kept = keep.filter(Boolean).length;
  const leak = enc.reduce((a, e) => a + e.leakBits, 0) + dec.reduce((a, d) => a + (d.leakBits - choice.leakBits), 0);
  // Reassemble the kept frames (bit-level concatenation).
  const nKept = kept * keyBits;
  const ka = new Uint8Array(Math.ceil(nKept / 8));
  const kb = new Uint8Array(Math.ceil(nKept / 8));
  let pos = 0;
  for (let f = 0; f < frames; f++) {
    if (!keep[f]) continue;
    for (let j = 0; j < keyBits; j++, pos++) {
      ka[pos >> 3] |= ((fa[f][j >> 3] >> (j & 7)) & 1) << (pos & 7);
      kb[pos >> 3] |= ((dec[f].corrected[j >> 3] >> (j & 7)) & 1) << (pos & 7);
    }
  }
  const tagBits = verifyTagBits(nKept, 1e-15);
  const hk = newHashKey();
  const ok = tagsEqual(verifyTag(ka, nKept, hk, tagBits), verifyTag(kb, nKept, hk, tagBits));
  t.verify = performance.now() - t0; t0 = performance.now();
  if (!ok) throw new Error('verification failed on converged frames');
  const scale = nKept / n; // discarded frames remove their share of each count
  const sc = (v: Triple): Triple => v.map((x) => Math.round(x * scale)) as Triple;
  const nZ = sc(m.nZ);
  nZ[0] += nKept - (nZ[0] + nZ[1] + nZ[2]);
  const st = planBlock({ settings, counts: { nZ, nX: m.nX, mX: m.mX }, leakEcBits: leak, verifyTagBits: tagBits, authBitsConsumed: 0 });
  const seed = newToeplitzSeed(nKept, st.ell);
  const [ya, yb] = await Promise.all([toeplitzHash(ka, nKept, seed, st.ell), toeplitzHash(kb, nKept, seed, st.ell)]);
  t.pa = performance.now() - t0;
  if (Buffer.compare(Buffer.from(ya), Buffer.from(yb)) !== 0) throw new Error('outputs differ');
  return { st, leak, kept, nKept, t, fer: (frames - kept) / frames };
}

export async function run(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  const q = 0.02;
  for (const frames of [16, 64]) {
    const choice = chooseCode(q, 250_000, { efficiency: LDPC_EFFICIENCY });
    const keyBits = choice.keyBits;
    const n = frames * keyBits;
    const alice = randomBytes(Math.ceil(n / 8));
    if (n & 7) alice[alice.length - 1] &= (1 << (n & 7)) - 1;
    const bob = bsc(alice, n, q);
    const m = model(n, q, 0.7);
    await chain(alice, bob, n, q, frames, keyBits, m); // warm-up
    const walls: number[] = [];
    let last: Awaited<ReturnType<typeof chain>> | undefined;
    for (let r = 0; r < 3; r++) {
      const t0 = performance.now();
      last = await chain(alice, bob, n, q, frames, keyBits, m);
      walls.push((performance.now() - t0) / 1000);
    }
    const wall = median(walls);
    const r = last!;
    const finiteFrac = r.st.ell / r.nKept;
    const asymFrac = (m.s0 + m.s1 * (1 - binaryEntropy(m.e1)) - r.leak / (r.nKept / n)) / n;
    const f = r.leak / (r.nKept * binaryEntropy(q));
    const params = { n, frames, ldpcTargetF: LDPC_EFFICIENCY, keyBitsPerFrame: keyBits, qber: q, leakBits: r.leak, f, frameErrorRate: r.fer, ell: r.st.ell,
      phiZ: r.st.bounds.phiZ, sZ1: r.st.bounds.sZ1, epsSec: r.st.epsSec, epsCor: r.st.epsCor, verifyTagBits: r.st.verifyTagBits,
      stageMs: r.t, wallSeconds: wall };
    out.push({ name: `e2e.secret_bits_per_s.n${n}`, value: r.st.ell / wall, unit: 'bit/s', better: 'higher', params });
    out.push({ name: `e2e.sifted_bits_per_s.n${n}`, value: n / wall, unit: 'bit/s', better: 'higher', params: { n, wallSeconds: wall } });
    out.push({ name: `e2e.finite_over_asymptotic.n${n}`, value: finiteFrac / asymFrac, unit: 'ratio', better: 'higher',
      params: { n, qber: q, finiteFraction: finiteFrac, asymptoticFraction: asymFrac } });
  }
  return out;
}
