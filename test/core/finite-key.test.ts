// Finite-key estimation (Lim et al. PRA 89 022307 (2014)): native vs the TypeScript transcription
// of the paper's equations on random inputs, physical validity against the decoy model of
// Ma, Qi, Zhao, Lo PRA 72 012326 (2005) (the bound never exceeds the true single-photon count and
// approaches it for large blocks), monotonicity, and the abort rules.
import t from 'tap';
import { DEFAULT_SECURITY, estimateBounds, planBlock, binaryEntropy, type DecoySettings, type BlockCounts, type Triple } from '../../src/core/estimate.ts';
import { limRef, h2Ref } from '../../src/core/reference.ts';
import { SecurityError } from '../../src/errors.ts';

/** Expected counts from the Ma05 model (anchors.md): N pulses, basis probability qZ. */
function model(N: number, km: number, s: DecoySettings, qZ = 0.9, ed = 0.01, pDark = 1e-6, etaBob = 0.1) {
  const eta = etaBob * 10 ** (-0.2 * km / 10);
  const Y0 = 2 * pDark;
  const Q = (k: number): number => Y0 + 1 - Math.exp(-eta * k);
  const EQ = (k: number): number => Y0 / 2 + ed * (1 - Math.exp(-eta * k));
  const qX = 1 - qZ;
  const nZ = s.mu.map((k, i) => Math.round(N * s.pMu[i] * qZ * qZ * Q(k))) as Triple;
  const nX = s.mu.map((k, i) => Math.round(N * s.pMu[i] * qX * qX * Q(k))) as Triple;
  const mX = s.mu.map((k, i) => Math.round(N * s.pMu[i] * qX * qX * EQ(k))) as Triple;
  const Y1 = Y0 + eta - Y0 * eta;
  const e1 = (Y0 / 2 + ed * eta) / Y1;
  const sZ1True = N * qZ * qZ * Y1 * s.mu.reduce((a, k, i) => a + s.pMu[i] * k * Math.exp(-k), 0);
  return { counts: { nZ, nX, mX } as BlockCounts, sZ1True, e1 };
}

const settings: DecoySettings = { mu: [0.5, 0.1, 0.0002], pMu: [0.7, 0.2, 0.1] };

t.test('native bounds equal the transcription of Lim et al. (random inputs)', async (t) => {
  let seed = 1;
  const r = (): number => { seed = (seed * 16807) % 2147483647; return seed / 2147483647; };
  for (let i = 0; i < 200; i++) {
    const mu3 = r() < 0.5 ? 0 : r() * 0.01;
    const mu2 = mu3 + 0.02 + r() * 0.2;
    const mu1 = mu2 + mu3 + 0.05 + r() * 0.6;
    const pa = 0.3 + r() * 0.6, pb = (1 - pa) * (0.2 + r() * 0.7);
    const s: DecoySettings = { mu: [mu1, mu2, mu3], pMu: [pa, pb, 1 - pa - pb] };
    const N = 10 ** (7 + r() * 5);
    const m = model(N, r() * 120, s, 0.5 + r() * 0.45, r() * 0.05);
    const eps = { epsSec: 10 ** (-6 - r() * 6), epsCor: 10 ** (-9 - r() * 7), qberAbort: 0.5 };
    const leak = Math.round(r() * m.counts.nZ.reduce((a, b) => a + b, 0) * 0.3);
    const ref = limRef({ ...s, ...m.counts, ...eps }, leak);
    const b = estimateBounds(s, m.counts, eps);
    const close = (a: number, b: number): boolean => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
    t.ok(close(b.sZ0, ref.sZ0) && close(b.sZ1, ref.sZ1) && close(b.sX1, ref.sX1) && close(b.vX1, ref.vX1) && close(b.phiZ, ref.phiZ),
      `case ${i}: sZ1 ${b.sZ1} vs ${ref.sZ1}, phi ${b.phiZ} vs ${ref.phiZ}`);
    let ell = 0;
    try {
      ell = planBlock({ settings: s, counts: m.counts, security: eps, leakEcBits: leak, verifyTagBits: 0, authBitsConsumed: 0 }).ell;
    } catch (e) {
      t.ok(e instanceof SecurityError, 'only aborts throw');
    }
    t.ok(Math.abs(ell - ref.ell) <= 1, `case ${i}: ell ${ell} vs ${ref.ell}`);
  }
});

t.test('bounds are valid and tighten with block size (Ma05 model)', async (t) => {
  let prevFrac = -1;
  for (const N of [1e9, 1e10, 1e11, 1e12, 1e14]) {
    const m = model(N, 25, settings);
    const b = estimateBounds(settings, m.counts);
    t.ok(b.sZ1 <= m.sZ1True, `N=${N}: sZ1 ${b.sZ1.toExponential(4)} <= true ${m.sZ1True.toExponential(4)}`);
    t.ok(b.phiZ >= m.e1, `N=${N}: phiZ ${b.phiZ.toFixed(5)} >= e1 ${m.e1.toFixed(5)}`);
    const frac = b.sZ1 / m.sZ1True;
    t.ok(frac > prevFrac, `N=${N}: tighter (${frac.toFixed(4)})`);
    prevFrac = frac;
  }
  const big = model(1e14, 25, settings);
  const b = estimateBounds(settings, big.counts);
  // Large-block limit: only the decoy-state (asymptotic) gap remains, a few percent here.
  t.ok(b.sZ1 / big.sZ1True > 0.95, `asymptotic sZ1 ratio ${(b.sZ1 / big.sZ1True).toFixed(4)}`);
  t.ok(b.phiZ - big.e1 < 0.005, `asymptotic phiZ gap ${(b.phiZ - big.e1).toFixed(5)}`);
});

t.test('finite-key length: formula, leak and auth accounting', async (t) => {
  const m = model(1e11, 25, settings);
  const n = m.counts.nZ.reduce((a, b) => a + b, 0);
  const leak = Math.round(1.1 * n * h2Ref(0.01));
  const st = planBlock({ settings, counts: m.counts, leakEcBits: leak, verifyTagBits: 70, authBitsConsumed: 5000 });
  const b = st.bounds;
  const expect = b.sZ0 + b.sZ1 * (1 - binaryEntropy(b.phiZ)) - (leak + 70) - 6 * Math.log2(21 / 1e-10) - Math.log2(2 / 1e-15);
  t.ok(Math.abs(st.ellRaw - expect) < 1e-6 * Math.abs(expect), 'ell_raw follows the formula with lambda = leak + tag');
  t.equal(st.ell, Math.floor(expect));
  t.equal(st.lambdaEc, leak + 70);
  t.equal(st.n, n);
  t.equal(st.replenishBits, 5000);
  t.equal(st.deliverableBits, st.ell - 5000);
  t.equal(st.netLoss, 0);
  t.ok(st.ell < n * (1 - h2Ref(0.01)) - leak + 1, 'finite key is below the asymptotic bound');
  // More leak -> exactly that many fewer bits.
  const st2 = planBlock({ settings, counts: m.counts, leakEcBits: leak + 1000, verifyTagBits: 70, authBitsConsumed: 5000 });
  t.ok(Math.abs(st.ell - st2.ell - 1000) <= 1);
  // Auth consumed beyond the output: nothing deliverable, loss reported.
  const small = model(3e9, 25, settings);
  const st3 = planBlock({ settings, counts: small.counts, leakEcBits: 0, verifyTagBits: 70, authBitsConsumed: 1e12 });
  t.equal(st3.replenishBits, st3.ell);
  t.equal(st3.deliverableBits, 0);
  t.ok(st3.ell > 0); t.equal(st3.netLoss, 1e12 - st3.ell);
});

t.test('abort rules say why', async (t) => {
  const m = model(1e10, 25, settings, 0.9, 0.2); // 20 % misalignment
  const e = t.throws(() => planBlock({ settings, counts: m.counts, leakEcBits: 0, verifyTagBits: 64, authBitsConsumed: 0 })) as unknown;
  t.ok(e instanceof SecurityError && (e as SecurityError).code === 'PE_ABORT_QBER', 'QBER abort is a SecurityError');
  t.match((e as Error).message, /exceeds the abort threshold/);
  const tiny = model(1e5, 25, settings);
  t.throws(() => planBlock({ settings, counts: tiny.counts, leakEcBits: 0, verifyTagBits: 64, authBitsConsumed: 0 }),
    { code: /PE_ABORT_(BOUNDS|NO_DATA)/ });
  t.throws(() => estimateBounds({ mu: [0.1, 0.2, 0], pMu: [0.5, 0.3, 0.2] }, tiny.counts), { code: 'PE_BAD_INTENSITIES' });
  t.throws(() => estimateBounds({ mu: [0.5, 0.1, 0], pMu: [0.5, 0.3, 0.3] }, tiny.counts), { code: 'PE_BAD_PROBABILITIES' });
  t.throws(() => estimateBounds(settings, tiny.counts, { ...DEFAULT_SECURITY, epsSec: 0 }), { code: 'PE_BAD_EPSILON' });
});
