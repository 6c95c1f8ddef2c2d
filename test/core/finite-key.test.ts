// Finite-key estimation (Lim et al. PRA 89 022307 (2014)): native vs the TypeScript transcription
// of the paper's equations on random inputs ('lim2014-paper-gamma' is the paper as printed;
// 'lim2014' the same with the strict KL phase-error bound, issue 13), physical validity against the decoy model of
// Ma, Qi, Zhao, Lo PRA 72 012326 (2005) (the bound never exceeds the true single-photon count and
// approaches it for large blocks), monotonicity, and the abort rules.
import t from 'tap';
import { DEFAULT_SECURITY, estimateBounds, planBlock, binaryEntropy, type DecoySettings, type BlockCounts, type Triple } from '../../src/core/estimate.ts';
import { limRef, h2Ref, ruscaRef } from '../../src/core/reference.ts';
import { phaseBoundRef } from '../../src/core/phase-reference.ts';
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

const settings: DecoySettings = { mu: [0.5, 0.1, 0.0002], pMu: [0.7, 0.2, 0.1], analysis: 'lim2014' };

t.test('native bounds equal the transcription of Lim et al. (random inputs)', async (t) => {
  let seed = 1;
  const r = (): number => { seed = (seed * 16807) % 2147483647; return seed / 2147483647; };
  for (let i = 0; i < 200; i++) {
    const mu3 = r() < 0.5 ? 0 : r() * 0.01;
    const mu2 = mu3 + 0.02 + r() * 0.2;
    const mu1 = mu2 + mu3 + 0.05 + r() * 0.6;
    const pa = 0.3 + r() * 0.6, pb = (1 - pa) * (0.2 + r() * 0.7);
    const s: DecoySettings = { mu: [mu1, mu2, mu3], pMu: [pa, pb, 1 - pa - pb], analysis: 'lim2014-paper-gamma' };
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
    // 'lim2014': the same count bounds, the KL phase-error bound (src/core/phase-reference.ts).
    const st = estimateBounds({ ...s, analysis: 'lim2014' }, m.counts, eps);
    const phi = st.sX1 > 0 && st.sZ1 > 0 ? phaseBoundRef('lim2014', st.vX1 / st.sX1, st.sX1, st.sZ1, eps.epsSec) : 0.5;
    t.ok(close(st.sZ1, ref.sZ1) && close(st.vX1, ref.vX1) && Math.abs(st.phiZ - phi) < 1e-9, `case ${i} (lim2014): phi ${st.phiZ} vs ${phi}`);
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

// ---------------------------------------------------------------------------------------------
// Known answers from the paper itself. Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014),
// Sec. IV and Fig. 1 (dedicated fiber): intensities mu1, mu2 and mu3 = 2e-4; Bob's detectors
// eta_Bob = 10 %, dark count p_dc = 6e-7, after-pulse p_ap = 4e-2; 0.2 dB/km; e_mis = 5e-3;
// lambda_EC = f_EC n_X h(e_obs) with f_EC = 1.16; eps_sec = kappa * ell with kappa = 1e-15;
// eps_cor = 1e-15; key rate R = ell / N optimised over {q_x, p_mu1, p_mu2, mu1, mu2}. Model:
// D_k = 1 - (1 - 2 p_dc) exp(-eta_sys k), R_k = D_k (1 + p_ap), bit-error probability
// e_k = p_dc + e_mis (1 - exp(-eta_sys k)) + p_ap D_k / 2. (The paper prints eta_ch in e_k; with
// eta_ch the QBER would be ~7 % and the 1e7 block has no key at 100 km, contradicting Fig. 1, so
// we read it as eta_sys = eta_ch eta_Bob.) Expected counts are rounded to integers (our API takes
// counts). The paper's key basis X is our Z. The numbers are only in the text:
//   (a) "at a fiber length of 100 km, the secret key rate obtained with n_X = 1e9 is about 1.75
//       times the one based on n_X = 1e7";
//   (b) "even if we use a block size of 1e4, cryptographic keys can still be distributed over a
//       fiber length of 135 km".
// Everything below goes through our planBlock (bounds, abort rule, ell).
// The papers' figures come from their own phase-error term (Lim's γ), so they are reproduced with
// the '*-paper-gamma' analyses (the papers as printed; approximate, refused by a node).
const PAPER = { lim: 'lim2014-paper-gamma', rusca: 'rusca2018-paper-gamma' } as const;
const LIM = { etaBob: 0.1, pdc: 6e-7, pap: 4e-2, dbPerKm: 0.2, emis: 5e-3, fEC: 1.16, kappa: 1e-15, epsCor: 1e-15, mu3: 2e-4 };

/** Lim et al.'s secret key rate per pulse at fiber length L (km), block n_X, free parameters x. */
function limRate(L: number, nX: number, x: number[], sys = LIM): number {
  const [qx, p1, p2, mu1, mu2] = x;
  const p3 = 1 - p1 - p2;
  if (!(p1 > 0 && p2 > 0 && p3 > 0 && mu2 > LIM.mu3 && mu1 > mu2 + LIM.mu3 && mu1 < 2)) return 0;
  return modelRate(L, nX, qx, { mu: [mu1, mu2, LIM.mu3], pMu: [p1, p2, p3], analysis: PAPER.lim }, sys);
}

/** The same system with one decoy (Rusca et al. 2018): x = [q_x, p_mu1, mu1, mu2]. */
function ruscaRate(L: number, nX: number, x: number[], sys = LIM): number {
  const [qx, p1, mu1, mu2] = x;
  if (!(p1 > 0 && p1 < 1 && mu2 > 0 && mu1 > mu2 && mu1 < 2)) return 0;
  return modelRate(L, nX, qx, { mu: [mu1, mu2, 0], pMu: [p1, 1 - p1, 0], protocol: PAPER.rusca }, sys);
}

/** Expected counts of Lim's system model through our planBlock, with eps_sec = kappa * ell. */
function modelRate(L: number, nX: number, qx: number, settings: DecoySettings, sys: typeof LIM): number {
  if (!(qx > 0 && qx < 1)) return 0;
  const { mu, pMu } = settings;
  const etaSys = 10 ** (-sys.dbPerKm * L / 10) * sys.etaBob;
  const D = mu.map((k) => 1 - (1 - 2 * sys.pdc) * Math.exp(-etaSys * k));
  const R = D.map((d) => d * (1 + sys.pap));
  const e = mu.map((k, i) => sys.pdc + sys.emis * (1 - Math.exp(-etaSys * k)) + (sys.pap * D[i]) / 2);
  const N = nX / (qx * qx * pMu.reduce((a, p, i) => a + p * R[i], 0)); // pulses until n_X key events
  const qz = 1 - qx;
  const per = (q: number, f: number[]) => pMu.map((p, i) => Math.round(N * p * q * q * f[i])) as Triple;
  const counts: BlockCounts = { nZ: per(qx, R), nX: per(qz, R), mX: per(qz, e), mZ: per(qx, e) };
  const eObs = pMu.reduce((a, p, i) => a + N * p * qx * qx * e[i], 0) / nX;
  const leakEcBits = Math.round(sys.fEC * nX * h2Ref(eObs));
  // eps_sec = kappa * ell: fixed point (converges in a few steps; ell depends on it weakly).
  let epsSec = 1e-10;
  let ell = 0;
  for (let it = 0; it < 8; it++) {
    try {
      ell = planBlock({ settings, counts, security: { epsSec, epsCor: sys.epsCor, qberAbort: 0.5 },
        leakEcBits, verifyTagBits: 0, authBitsConsumed: 0 }).ellRaw;
    } catch (err) {
      if (err instanceof SecurityError) return 0; // the protocol aborts: no key
      throw err;
    }
    if (ell <= 0) return 0;
    const next = Math.min(sys.kappa * ell, 0.5);
    if (Math.abs(next / epsSec - 1) < 1e-4) break;
    epsSec = next;
  }
  return ell / N;
}

/** Nelder-Mead maximisation (the paper says "numerically optimize" without naming a method). */
function maximise(f: (x: number[]) => number, x0: number[], step: number[], iters: number): { x: number[]; v: number } {
  const n = x0.length;
  let S = [x0, ...x0.map((_, i) => x0.map((v, j) => (i === j ? v + step[j] : v)))];
  let V = S.map(f);
  for (let k = 0; k < iters; k++) {
    const order = V.map((_, i) => i).sort((a, b) => V[b] - V[a]);
    S = order.map((i) => S[i]);
    V = order.map((i) => V[i]);
    const c = S[0].map((_, j) => S.slice(0, n).reduce((a, s) => a + s[j], 0) / n);
    const towards = (t: number) => c.map((v, j) => v + t * (v - S[n][j]));
    const r = towards(1);
    const fr = f(r);
    if (fr > V[0]) {
      const ex = towards(2);
      const fe = f(ex);
      [S[n], V[n]] = fe > fr ? [ex, fe] : [r, fr];
    } else if (fr > V[n - 1]) {
      [S[n], V[n]] = [r, fr];
    } else {
      const co = towards(-0.5);
      const fc = f(co);
      if (fc > V[n]) [S[n], V[n]] = [co, fc];
      else for (let i = 1; i <= n; i++) { S[i] = S[i].map((v, j) => S[0][j] + 0.5 * (v - S[0][j])); V[i] = f(S[i]); }
    }
  }
  const best = V.indexOf(Math.max(...V));
  return { x: S[best], v: V[best] };
}

/** Optimised rate: deterministic random search, then Nelder-Mead from the best few points. */
function limOptimised(L: number, nX: number, samples: number, oneDecoy = false, sys = LIM): number {
  let seed = 20140210;
  const r = (): number => { seed = (seed * 16807) % 2147483647; return seed / 2147483647; };
  const rate = (x: number[]): number => (oneDecoy ? ruscaRate(L, nX, x, sys) : limRate(L, nX, x, sys));
  const pts: { v: number; x: number[] }[] = [];
  for (let i = 0; i < samples; i++) {
    const p1 = r() * 0.95;
    const x = oneDecoy ? [0.02 + 0.96 * r(), 0.02 + 0.96 * r(), 0.1 + r(), 0.01 + r() * 0.4]
      : [0.02 + 0.96 * r(), p1, r() * (1 - p1), 0.1 + r(), 0.01 + r() * 0.4];
    const v = rate(x);
    if (v > 0) pts.push({ v, x });
  }
  pts.sort((a, b) => b.v - a.v);
  const step = (s: number) => (oneDecoy ? [0.02, 0.02, 0.03, 0.01] : [0.02, 0.02, 0.02, 0.03, 0.01]).map((v) => v * s);
  let best = 0;
  for (const p of pts.slice(0, 4)) {
    const a = maximise(rate, p.x, step(1), 800);
    best = Math.max(best, maximise(rate, a.x, step(0.25), 800).v);
  }
  return best;
}

t.test('Lim et al. 2014 (a): at 100 km the 1e9 block gives about 1.75x the rate of the 1e7 block', async (t) => {
  const r9 = limOptimised(100, 1e9, 3000);
  const r7 = limOptimised(100, 1e7, 3000);
  const ratio = r9 / r7;
  // "About 1.75" is a rounded reading by the authors: tolerance +-5 % (1.66-1.84). Measured 1.79.
  t.ok(Math.abs(ratio / 1.75 - 1) <= 0.05, `R(1e9)/R(1e7) at 100 km = ${ratio.toFixed(3)} (paper: about 1.75); R(1e9) = ${r9.toExponential(3)}`);
});

t.test('Lim et al. 2014 (b): a 1e4 block still gives key near 135 km', async (t) => {
  // The reach is where the optimised rate falls to zero: it is steep there, so a few km of
  // difference are a tiny difference in the bound. Tolerance: within 10 % of 135 km, i.e. key at
  // 121.5 km and none beyond 148.5 km. Measured with this search: key up to 125-128 km.
  const near = limOptimised(121.5, 1e4, 30000);
  const beyond = limOptimised(148.5, 1e4, 30000);
  t.ok(near > 0, `key at 121.5 km with n_X = 1e4: rate ${near.toExponential(3)} per pulse`);
  t.equal(beyond, 0, 'no key at 148.5 km with n_X = 1e4');
});

// ---------------------------------------------------------------------------------------------
// One decoy (Rusca, Boaron, Grünenfelder, Martin, Zbinden, APL 112, 171104 (2018)).
const oneDecoy: DecoySettings = { mu: [0.5, 0.15, 0], pMu: [0.8, 0.2, 0], protocol: 'rusca2018' };

/** Ma05 expected counts for the one-decoy settings, Z errors included. */
function model1(N: number, km: number, s: DecoySettings, qZ = 0.9, ed = 0.01) {
  const m = model(N, km, s, qZ, ed);
  const eta = 0.1 * 10 ** (-0.2 * km / 10);
  const EQ = (k: number): number => 1e-6 + ed * (1 - Math.exp(-eta * k));
  const mZ = s.mu.map((k, i) => Math.round(N * s.pMu[i] * qZ * qZ * EQ(k))) as Triple;
  return { ...m, counts: { ...m.counts, mZ } };
}

t.test('one-decoy: native bounds equal the transcription of Rusca et al. (random inputs)', async (t) => {
  let seed = 5;
  const r = (): number => { seed = (seed * 16807) % 2147483647; return seed / 2147483647; };
  for (let i = 0; i < 200; i++) {
    const mu2 = 0.02 + r() * 0.3;
    const mu1 = mu2 + 0.05 + r() * 0.6;
    const p1 = 0.3 + r() * 0.65;
    const s: DecoySettings = { mu: [mu1, mu2, 0], pMu: [p1, 1 - p1, 0], protocol: PAPER.rusca };
    const m = model1(10 ** (6 + r() * 6), r() * 120, s, 0.5 + r() * 0.45, r() * 0.05);
    const eps = { epsSec: 10 ** (-6 - r() * 6), epsCor: 10 ** (-9 - r() * 7), qberAbort: 0.5 };
    const c = m.counts;
    const leak = Math.round(r() * (c.nZ[0] + c.nZ[1]) * 0.3);
    const two = (v: Triple): [number, number] => [v[0], v[1]];
    const ref = ruscaRef({ mu: [mu1, mu2], pMu: [p1, 1 - p1], nZ: two(c.nZ), mZ: two(c.mZ!), nX: two(c.nX), mX: two(c.mX), ...eps }, leak);
    const b = estimateBounds(s, c, eps);
    const close = (a: number, b: number): boolean => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
    t.ok(close(b.sZ0, ref.sZ0) && close(b.sZ1, ref.sZ1) && close(b.sX1, ref.sX1) && close(b.vX1, ref.vX1) && close(b.phiZ, ref.phiZ),
      `case ${i}: sZ1 ${b.sZ1} vs ${ref.sZ1}, phi ${b.phiZ} vs ${ref.phiZ}`);
    let ell = 0;
    try {
      ell = planBlock({ settings: s, counts: c, security: eps, leakEcBits: leak, verifyTagBits: 0, authBitsConsumed: 0 }).ell;
    } catch (e) {
      t.ok(e instanceof SecurityError, 'only aborts throw');
    }
    t.ok(Math.abs(ell - ref.ell) <= 1, `case ${i}: ell ${ell} vs ${ref.ell}`);
    // 'rusca2018': the same count bounds, the KL phase-error bound with ε = ε_sec/19.
    const st = estimateBounds({ ...s, protocol: 'rusca2018' }, c, eps);
    const phi = st.sX1 > 0 && st.sZ1 > 0 ? phaseBoundRef('rusca2018', st.vX1 / st.sX1, st.sX1, st.sZ1, eps.epsSec) : 0.5;
    t.ok(close(st.sZ1, ref.sZ1) && close(st.vX1, ref.vX1) && Math.abs(st.phiZ - phi) < 1e-9, `case ${i} (rusca2018): phi ${st.phiZ} vs ${phi}`);
  }
});

t.test('one-decoy: bounds are valid on the Ma05 model and inputs are checked', async (t) => {
  for (const N of [1e9, 1e11, 1e13]) {
    const m = model1(N, 25, oneDecoy);
    const b = estimateBounds(oneDecoy, m.counts);
    t.ok(b.sZ1 <= m.sZ1True && b.sZ1 > 0, `N=${N}: 0 < sZ1 ${b.sZ1.toExponential(4)} <= true ${m.sZ1True.toExponential(4)}`);
    t.ok(b.phiZ >= m.e1, `N=${N}: phiZ ${b.phiZ.toFixed(5)} >= e1 ${m.e1.toFixed(5)}`);
  }
  const m = model1(1e9, 25, oneDecoy);
  const noMz = { nZ: m.counts.nZ, nX: m.counts.nX, mX: m.counts.mX };
  t.throws(() => estimateBounds(oneDecoy, noMz), { code: 'PE_BAD_INPUT' }, 'mZ is required');
  t.throws(() => estimateBounds({ ...oneDecoy, pMu: [0.7, 0.2, 0.1] }, m.counts), { code: 'PE_BAD_PROBABILITIES' });
  t.throws(() => estimateBounds({ ...oneDecoy, mu: [0.1, 0.2, 0] }, m.counts), { code: 'PE_BAD_INTENSITIES' });
  // The Lim bound ignores mZ: passing it changes nothing.
  const lim = model(1e10, 25, settings);
  t.same(estimateBounds(settings, { ...lim.counts, mZ: [5, 5, 5] }), estimateBounds(settings, lim.counts));
});

t.test('one decoy vs two decoys, optimised on the Lim 2014 system with and without after-pulses', async (t) => {
  // Rusca et al.'s claim: "for practical block sizes of up to 1e8 bits, the 1-decoy protocol
  // achieves for almost all experimental settings higher secret key rates than the 2-decoy
  // protocol". Its one-decoy vacuum bound comes from the errors (vacuum events are errors half
  // the time), so it is loose when most errors are not vacuum: Lim's system has 4 % after-pulses
  // (2 % QBER from them alone). Measured on Lim's system with this optimiser: two decoys win by
  // 7-16 % at 1e5-1e7; without after-pulses one decoy wins. Both are asserted, so a change in
  // either bound that flips them shows up.
  const quiet = { ...LIM, pap: 0 };
  for (const [L, nX] of [[25, 1e5], [50, 1e6], [100, 1e7]] as const) {
    const two = limOptimised(L, nX, 3000, false, quiet);
    const one = limOptimised(L, nX, 3000, true, quiet);
    t.ok(one > two, `no after-pulses, L = ${L} km, n_X = ${nX}: one decoy ${one.toExponential(3)} > two decoys ${two.toExponential(3)}`);
    const twoAp = limOptimised(L, nX, 3000);
    const oneAp = limOptimised(L, nX, 3000, true);
    t.ok(twoAp > oneAp, `4 % after-pulses, L = ${L} km, n_X = ${nX}: two decoys ${twoAp.toExponential(3)} > one decoy ${oneAp.toExponential(3)}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Impossible counts (issue 13, section 1): counts produced with one set of probabilities but
// estimated with another give decoy bounds with more single-photon events than Z events. Before
// the fix the key length was clamped to n (a key as long as the raw key); now the block aborts
// with PE_IMPOSSIBLE_COUNTS, a SecurityError the node reports and alarms on.
t.test('impossible counts abort with PE_IMPOSSIBLE_COUNTS (wrong probabilities configured)', async (t) => {
  const m = model(1e10, 25, settings); // true pMu [0.7, 0.2, 0.1]
  const wrong: DecoySettings = { ...settings, pMu: [0.85, 0.05, 0.1] };
  for (const analysis of [undefined, 'lim2014', 'chernoff2020'] as const) {
    const s: DecoySettings = { ...wrong, analysis };
    const e = t.throws(() => planBlock({ settings: s, counts: m.counts, leakEcBits: 0, verifyTagBits: 64, authBitsConsumed: 0 }),
      { code: 'PE_IMPOSSIBLE_COUNTS' }, `${analysis ?? 'default'}: planBlock aborts`) as unknown;
    t.ok(e instanceof SecurityError, 'a SecurityError (the block is refused, not a fault)');
    t.match((e as Error).message, /contradict the configured intensities/);
    t.throws(() => estimateBounds(s, m.counts), { code: 'PE_IMPOSSIBLE_COUNTS' }, 'already at the estimate step');
  }
  // The right probabilities pass.
  t.doesNotThrow(() => planBlock({ settings, counts: m.counts, leakEcBits: 0, verifyTagBits: 64, authBitsConsumed: 0 }));
});
