// One block end to end through the core, both parties in one process: sift (Bob announce, Alice
// match, both extract) -> X disclosure -> reconciliation stand-in (Bob takes Alice's Z string; the
// leak is the counted syndrome size of the stand-in) -> verification -> planBlock -> amplifyBlock.
// Proves both parties get identical output of the planned length, split per the auth accounting,
// that a wrong key fails verification, and that sliceBits is exact.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { aliceMatch, bobAnnounce, errorsByIntensity, extractSifted } from '../../src/core/sift.ts';
import { planBlock, type DecoySettings } from '../../src/core/estimate.ts';
import { newHashKey, tagsEqual, verifyTag, verifyTagBits } from '../../src/core/verify.ts';
import { newToeplitzSeed } from '../../src/core/pa.ts';
import { amplifyBlock, sliceBits } from '../../src/core/block.ts';
import { getBit, toeplitzRef } from '../../src/core/reference.ts';
import { packChoice, type DetectorMapping } from '../../src/lab/types.ts';

const mapping: DetectorMapping[] = [
  { channel: 0, basis: 0, bit: 0 }, { channel: 1, basis: 0, bit: 1 },
  { channel: 2, basis: 1, bit: 0 }, { channel: 3, basis: 1, bit: 1 },
];
const settings: DecoySettings = { mu: [0.6, 0.2, 0.0], pMu: [0.5, 0.3, 0.2] };

function simulate(nPulses: number, eta: number, ed: number, qZ: number) {
  let s = 987654321;
  const r = (): number => { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; return (s >>> 0) / 4294967296; };
  const choices = new Uint8Array(nPulses);
  const pulse: number[] = [];
  const chan: number[] = [];
  for (let p = 0; p < nPulses; p++) {
    const u = r();
    const k = u < settings.pMu[0] ? 0 : u < settings.pMu[0] + settings.pMu[1] ? 1 : 2;
    const basis = r() < qZ ? 0 : 1;
    const bit = r() < 0.5 ? 1 : 0;
    choices[p] = packChoice(bit, basis, k);
    const pDet = 1 - Math.exp(-eta * settings.mu[k]) + 2e-5;
    if (r() < pDet) {
      const bBasis = r() < qZ ? 0 : 1;
      const bBit = bBasis === basis ? (r() < ed ? 1 - bit : bit) : (r() < 0.5 ? 1 : 0);
      pulse.push(p);
      chan.push(bBasis * 2 + bBit);
    }
  }
  return { choices, det: { pulse: Float64Array.from(pulse), channel: Uint8Array.from(chan) } };
}

t.test('both parties derive the same secret block', async (t) => {
  const sim = simulate(8_000_000, 0.5, 0.01, 0.5);
  const bob = bobAnnounce(sim.det, mapping);
  const alice = aliceMatch(bob.announcement, sim.choices, 0);
  const A = extractSifted(alice.events, alice.reply);
  const B = extractSifted(bob.events, alice.reply);
  t.equal(A.zBits, B.zBits);
  t.same(A.nX, B.nX);
  const mX = errorsByIntensity(A.x, B.x, A.xIntensity);
  const zErr = errorsByIntensity(A.z, B.z, A.zIntensity);
  const qz = zErr.reduce((a, b) => a + b, 0) / A.zBits;
  t.ok(qz > 0.005 && qz < 0.02, `Z QBER ${qz.toFixed(4)} near the simulated 1 %`);

  // Reconciliation stand-in: Bob adopts Alice's string; the leak we count is what a code of
  // efficiency 1.1 would have disclosed (the real reconciliation reports its own count).
  const n = A.zBits;
  const leak = Math.ceil(1.1 * n * (-qz * Math.log2(qz) - (1 - qz) * Math.log2(1 - qz)));
  const bobKey = Uint8Array.from(A.z);
  const tagBits = verifyTagBits(n, 1e-15);
  const hk = newHashKey();
  t.ok(tagsEqual(verifyTag(A.z, n, hk, tagBits), verifyTag(bobKey, n, hk, tagBits)), 'verification passes');
  t.notOk(tagsEqual(verifyTag(A.z, n, hk, tagBits), verifyTag(B.z, n, hk, tagBits)), 'unreconciled key fails verification');

  const st = planBlock({ settings, counts: { nZ: A.nZ, nX: A.nX, mX }, leakEcBits: leak, verifyTagBits: tagBits, authBitsConsumed: 2048 });
  t.ok(st.ell > 0, `secret length ${st.ell} of ${n}`);
  t.equal(st.replenishBits, 2048);
  const seed = newToeplitzSeed(n, st.ell);
  const [outA, outB] = await Promise.all([
    amplifyBlock({ key: A.z, nBits: n, statement: st, seed }),
    amplifyBlock({ key: bobKey, nBits: n, statement: st, seed }),
  ]);
  t.equal(Buffer.from(outA.deliverable).toString('hex'), Buffer.from(outB.deliverable).toString('hex'));
  t.equal(Buffer.from(outA.replenish).toString('hex'), Buffer.from(outB.replenish).toString('hex'));
  t.equal(outA.deliverableBits + outA.replenishBits, st.ell);
  t.equal(outA.deliverable.length, Math.ceil(st.deliverableBits / 8));
  t.equal(outA.statement.epsSec, 1e-10, 'statement travels with the block');
  await t.rejects(amplifyBlock({ key: A.z, nBits: n - 1, statement: st, seed }), { code: 'PA_BAD_LENGTH' });
});

t.test('sliceBits and the output split are exact', async (t) => {
  const src = randomBytes(40);
  for (const [start, n] of [[0, 0], [0, 320], [3, 17], [8, 64], [13, 250], [319, 1]]) {
    const s = sliceBits(src, start, n);
    let ok = s.length === Math.ceil(n / 8);
    for (let i = 0; i < n; i++) ok &&= getBit(s, i) === getBit(src, start + i);
    for (let i = n; i < s.length * 8; i++) ok &&= getBit(s, i) === 0;
    t.ok(ok, `slice ${start}+${n}`);
  }
  // amplifyBlock's two parts concatenate to the plain Toeplitz output.
  const n = 3000, ell = 1000;
  const key = randomBytes(n / 8), seed = newToeplitzSeed(n, ell);
  const st = { epsSec: 1e-10, epsCor: 1e-15, n, ell, replenishBits: 333, deliverableBits: 667 } as Parameters<typeof amplifyBlock>[0]['statement'];
  const out = await amplifyBlock({ key, nBits: n, statement: st, seed });
  const full = toeplitzRef(key, n, seed, ell);
  let ok = true;
  for (let i = 0; i < 333; i++) ok &&= getBit(out.replenish, i) === getBit(full, i);
  for (let i = 0; i < 667; i++) ok &&= getBit(out.deliverable, i) === getBit(full, 333 + i);
  t.ok(ok, 'replenish || deliverable = T·x');
});
