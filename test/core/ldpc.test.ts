// LDPC reconciliation through the TypeScript facade: round trips at several QBERs with the
// syndrome property, native fast decoder vs the f64 reference, portable vs SIMD kernel, blind
// retries with counted leak (cold and warm-started), edge cases, coded errors, and the shipped
// codes' provenance.
import t from 'tap';
import { readFileSync } from 'node:fs';
import {
  binaryEntropy, blindRetrySettings, chooseBlind, chooseCode, decode, decodeBatch, decoderKernel, describeCode, encode, encodeBatch, joinBits, prepareCodes, provenance,
  reveal, shippedTable, WARM_STALL, WarmStore,
} from '../../src/core/ldpc.ts';
import { QkdError } from '../../src/errors.ts';
import { bsc, bytesEqual, randomBits, seededRandom } from '../../src/testkit/ldpc.ts';

const FRAME = 4000; // smallest shipped frame (3687 key bits): keeps the test fast

t.test('prepareCodes builds the codes off the JS thread', async (t) => {
  await prepareCodes(FRAME);
  t.equal(chooseCode(0.02, FRAME).motherLength, 4096);
});

t.test('round trip at QBER 1, 2, 3, 5, 8 %: Bob recovers Alice and reproduces her syndrome', async (t) => {
  const rand = seededRandom(1);
  for (const q of [0.01, 0.02, 0.03, 0.05, 0.08]) {
    const c = chooseCode(q, FRAME, { efficiency: 1.6 });
    const alice = Array.from({ length: 8 }, () => randomBits(rand, c.keyBits));
    const enc = await encodeBatch(alice, c.params);
    const bob = alice.map((a) => bsc(rand, a, c.keyBits, q).out);
    const res = await decodeBatch(bob, enc.map((e) => e.syndrome), q, c.params);
    let ok = 0;
    for (let i = 0; i < alice.length; i++) {
      t.equal(res[i].leakBits, c.syndromeBits - c.params.punctured);
      if (!res[i].converged) continue;
      ok++;
      t.ok(bytesEqual(res[i].corrected, alice[i]), `q=${q} frame ${i} corrected`);
      const again = encode(res[i].corrected, c.params, res[i].fillGuess);
      t.ok(bytesEqual(again.syndrome, enc[i].syndrome), `q=${q} frame ${i} syndrome reproduced`);
    }
    t.ok(ok >= 7, `q=${q}: ${ok}/8 frames converged at f = 1.6`);
  }
});

t.test('fast decoder agrees with the f64 sum-product reference', async (t) => {
  const rand = seededRandom(2);
  const q = 0.03;
  const c = chooseCode(q, FRAME, { efficiency: 1.5 });
  const alice = Array.from({ length: 3 }, () => randomBits(rand, c.keyBits));
  const enc = alice.map((a) => encode(a, c.params));
  const bob = alice.map((a) => bsc(rand, a, c.keyBits, q).out);
  const fast = await decodeBatch(bob, enc.map((e) => e.syndrome), q, c.params);
  const ref = await decodeBatch(bob, enc.map((e) => e.syndrome), q, c.params, { kernel: 'reference' });
  for (let i = 0; i < alice.length; i++) {
    t.ok(fast[i].converged && ref[i].converged, 'both decode');
    t.ok(bytesEqual(fast[i].corrected, ref[i].corrected), 'same output');
    t.ok(bytesEqual(fast[i].corrected, alice[i]), 'equal to Alice');
  }
});

t.test('portable kernel is bit-identical to the SIMD one, failures included', async (t) => {
  t.match(decoderKernel(), /^(avx512bw|avx2|portable)$/);
  const rand = seededRandom(3);
  const q = 0.06;
  const c = chooseCode(q, FRAME, { efficiency: 1.05 });
  const alice = Array.from({ length: 12 }, () => randomBits(rand, c.keyBits));
  const enc = await encodeBatch(alice, c.params);
  const bob = alice.map((a) => bsc(rand, a, c.keyBits, q).out);
  const a = await decodeBatch(bob, enc.map((e) => e.syndrome), q, c.params, { maxIterations: 30 });
  const b = await decodeBatch(bob, enc.map((e) => e.syndrome), q, c.params, { maxIterations: 30, kernel: 'portable' });
  t.ok(a.some((r) => !r.converged), 'some frames fail at f = 1.05, so best guesses are compared too');
  for (let i = 0; i < a.length; i++) {
    t.ok(bytesEqual(a[i].corrected, b[i].corrected));
    t.same([a[i].converged, a[i].iterations], [b[i].converged, b[i].iterations]);
  }
});

t.test('blind retries: Alice reveals bits until Bob converges; every bit is counted', async (t) => {
  const rand = seededRandom(4);
  const q = 0.05;
  const c = chooseCode(q, FRAME, { efficiency: 1.0 });
  let retried = 0;
  for (let f = 0; f < 6; f++) {
    const alice = randomBits(rand, c.keyBits);
    const enc = encode(alice, c.params);
    const bob = bsc(rand, alice, c.keyBits, q).out;
    let res = await decode(bob, enc.syndrome, q, c.params);
    let count = 0;
    let bits: Uint8Array = new Uint8Array(0);
    const step = 64;
    while (!res.converged && count + step <= c.keyBits) {
      const more = reveal(alice, enc.fill, c.params, count, step); // Alice's answer
      bits = joinBits(bits, count, more, step);
      count += step;
      res = await decode(bob, enc.syndrome, q, c.params, { revealed: { count, bits } });
      t.equal(res.leakBits, c.syndromeBits - c.params.punctured + count);
    }
    if (count > 0) retried++;
    t.ok(res.converged && bytesEqual(res.corrected, alice), `frame ${f} reconciled after ${count} revealed bits`);
  }
  t.ok(retried > 0, 'at f = 1.0 some frames needed retries');
});

t.test('chooseBlind: first attempt near its f0, retries of stepBits reconcile every frame', async (t) => {
  const rand = seededRandom(6);
  let last = 0;
  for (const q of [0.01, 0.02, 0.05, 0.08]) {
    const b = chooseBlind(q, 15000);
    const hk = b.keyBits * binaryEntropy(q);
    t.ok(Math.abs(b.firstEfficiency - b.leakBits / hk) < 1e-9, `q=${q}: firstEfficiency = leakBits / (k·h)`);
    t.ok(b.firstEfficiency > 1 && b.firstEfficiency < 1.4, `q=${q}: first attempt f = ${b.firstEfficiency}`);
    t.ok(b.stepBits >= 1 && b.stepBits < 0.1 * hk, `q=${q}: step ${b.stepBits} bits`);
    t.ok(b.leakBits >= last, 'first leak grows with QBER');
    last = b.leakBits;
    const { stepBits: _s, firstEfficiency: _f, ...choice } = b;
    t.same(describeCode(b.params), choice, 'the plan is a valid CodeChoice plus the blind fields');
  }
  // Full blind run on 2^14 frames at QBER 3 %: every frame converges to Alice's key, leak counted.
  const q = 0.03;
  const b = chooseBlind(q, 15000);
  const alice = Array.from({ length: 16 }, () => randomBits(rand, b.keyBits));
  const enc = await encodeBatch(alice, b.params);
  const bob = alice.map((a) => bsc(rand, a, b.keyBits, q).out);
  let leak = 0;
  let rounds = 0;
  for (let i = 0; i < alice.length; i++) {
    let res = await decode(bob[i], enc[i].syndrome, q, b.params);
    let count = 0;
    let bits: Uint8Array = new Uint8Array(0);
    while (!res.converged && count < 40 * b.stepBits) {
      bits = joinBits(bits, count, reveal(alice[i], enc[i].fill, b.params, count, b.stepBits), b.stepBits);
      count += b.stepBits;
      rounds++;
      res = await decode(bob[i], enc[i].syndrome, q, b.params, { revealed: { count, bits } });
    }
    t.ok(res.converged && bytesEqual(res.corrected, alice[i]), `frame ${i} reconciled`);
    t.equal(res.leakBits, b.leakBits + count);
    leak += res.leakBits;
  }
  const f = leak / (alice.length * b.keyBits * binaryEntropy(q));
  t.ok(f >= b.firstEfficiency && f < b.firstEfficiency + 0.2, `mean f ${f.toFixed(3)} over ${rounds} retries`);
});

t.test('warm-started blind retries: same disclosures, every frame reconciled, states only for failing frames', async (t) => {
  // The blind loop as the node runs it, once cold and once warm (WarmStore) on the same frames:
  // each frame's leak is m − p + its revealed bits, every frame ends on Alice's key, and a store
  // holds exactly the frames whose last decode failed.
  const rand = seededRandom(17);
  const q = 0.02;
  const b = chooseBlind(q, 15000);
  const alice = Array.from({ length: 24 }, () => randomBits(rand, b.keyBits));
  const enc = await encodeBatch(alice, b.params);
  const bob = alice.map((a) => bsc(rand, a, b.keyBits, q).out);
  const syn = enc.map((e) => e.syndrome);
  const run = async (store?: WarmStore, stall?: typeof WARM_STALL) => {
    const warm = (ids: number[]) => ({ stall, ...(store ? { warm: { store, frameIds: ids } } : {}) });
    const all = alice.map((_, i) => i);
    let res = await decodeBatch(bob, syn, q, b.params, warm(all));
    const revealed: Uint8Array[] = alice.map(() => new Uint8Array(0));
    let pending = all.filter((i) => !res[i].converged);
    const firstFails = pending.length;
    if (store) t.equal(store.size().frames, pending.length, 'a state per failed frame');
    let count = 0;
    while (pending.length > 0 && count < 40 * b.stepBits) {
      for (const i of pending) revealed[i] = joinBits(revealed[i], count, reveal(alice[i], enc[i].fill, b.params, count, b.stepBits), b.stepBits);
      count += b.stepBits;
      const again = await decodeBatch(pending.map((i) => bob[i]), pending.map((i) => syn[i]), q, b.params,
        { revealedCount: count, revealedPerFrame: pending.map((i) => revealed[i]), ...warm(pending) });
      res = res.slice();
      pending.forEach((i, j) => { res[i] = again[j]; });
      pending = pending.filter((_, j) => !again[j].converged);
      if (store) t.equal(store.size().frames, pending.length, `round ${count / b.stepBits}: states only for the failing frames`);
    }
    return { res, firstFails };
  };
  const cold = await run();
  const store = new WarmStore();
  const warm = await run(store);
  t.ok(cold.firstFails > 0, `the test needs retries (${cold.firstFails} of 24 failed the first pass)`);
  t.equal(warm.firstFails, cold.firstFails, 'the first pass is the same decode');
  let leakWarm = 0, leakCold = 0;
  for (let i = 0; i < alice.length; i++) {
    t.ok(warm.res[i].converged && bytesEqual(warm.res[i].corrected, alice[i]), `frame ${i}: warm retries reconcile it`);
    t.ok(cold.res[i].converged && bytesEqual(cold.res[i].corrected, alice[i]), `frame ${i}: cold retries reconcile it`);
    t.equal((warm.res[i].leakBits - b.leakBits) % b.stepBits, 0, 'the leak is m − p plus whole steps');
    leakWarm += warm.res[i].leakBits;
    leakCold += cold.res[i].leakBits;
  }
  t.ok(leakWarm <= leakCold + 2 * b.stepBits, `warm leak ${leakWarm} vs cold ${leakCold} bits`);
  // The node's setting: warm start with the stall rule.
  const store2 = new WarmStore();
  const stalled = await run(store2, WARM_STALL);
  store2.close();
  t.ok(stalled.res.every((r, i) => r.converged && bytesEqual(r.corrected, alice[i])), 'warm + stall reconciles every frame');
  const leakStall = stalled.res.reduce((a, r) => a + r.leakBits, 0);
  t.ok(leakStall <= leakCold + 2 * b.stepBits, `warm + stall leak ${leakStall} vs cold ${leakCold} bits`);
  store.close();
  store.close();
  t.same(store.size(), { frames: 0, bytes: 0 }, 'closed: nothing held');
  // A store with 1 byte of room keeps no state; its frames decode as before (cold retries).
  const small = new WarmStore(1);
  await decodeBatch(bob, syn, q, b.params, { warm: { store: small, frameIds: alice.map((_, i) => i) } });
  t.same(small.size(), { frames: 0, bytes: 0 }, 'maxBytes bounds what is kept');
  small.close();
  await t.rejects(decodeBatch(bob, syn, q, b.params, { warm: { store, frameIds: [1] } }), { code: 'LDPC_BAD_LENGTH' });
  await t.rejects(decodeBatch(bob.slice(0, 1), syn.slice(0, 1), q, b.params, { warm: { store, frameIds: [0] } }), { code: 'LDPC_BAD_PARAMS', message: /not open/ });
});

t.test('blindRetrySettings: plain first rounds, then weaker channel LLRs, then the reference; all decode', async (t) => {
  t.same(blindRetrySettings(0.02, 1), { qber: 0.02, kernel: 'auto' });
  t.same(blindRetrySettings(0.02, 3), { qber: 0.02, kernel: 'auto' });
  t.same(blindRetrySettings(0.02, 4), { qber: 0.03, kernel: 'auto' });
  t.equal(blindRetrySettings(0.4, 5).qber, 0.45, 'capped below 1/2');
  t.same(blindRetrySettings(0.02, 8), { qber: 0.02, kernel: 'reference' });
  // Each round's settings still reconcile an ordinary frame (revealed fill included).
  const rand = seededRandom(7);
  const q = 0.02;
  const b = chooseBlind(q, FRAME);
  const alice = randomBits(rand, b.keyBits);
  const enc = encode(alice, b.params);
  const bob = bsc(rand, alice, b.keyBits, q).out;
  const count = 2 * b.stepBits;
  const revealed = { count, bits: reveal(alice, enc.fill, b.params, 0, count) };
  for (const round of [1, 4, 8]) {
    const s = blindRetrySettings(q, round);
    const r = await decode(bob, enc.syndrome, s.qber, b.params, { revealed, kernel: s.kernel });
    t.ok(r.converged && bytesEqual(r.corrected, alice), `round ${round} settings decode`);
    t.equal(r.leakBits, b.leakBits + count);
  }
});

t.test('edge cases: zero errors, all ones, garbage in the padding bits', async (t) => {
  const c = chooseCode(0.02, FRAME);
  t.ok(c.keyBits % 8 !== 0, 'odd key length exercised');
  const ones = new Uint8Array(Math.ceil(c.keyBits / 8)).fill(0xff);
  ones[ones.length - 1] &= (1 << (c.keyBits % 8)) - 1;
  const zeros = new Uint8Array(ones.length);
  for (const key of [zeros, ones]) {
    const e = encode(key, c.params);
    const r = await decode(key, e.syndrome, 0.02, c.params);
    t.ok(r.converged && r.iterations <= 2 && bytesEqual(r.corrected, key));
  }
  const key = randomBits(seededRandom(5), c.keyBits);
  const e = encode(key, c.params);
  const dirty = key.slice();
  dirty[dirty.length - 1] |= 0xff << (c.keyBits % 8);
  const r = await decode(dirty, e.syndrome, 0.02, c.params);
  t.ok(r.converged && bytesEqual(r.corrected, key), 'padding bits ignored, output padding zero');
});

t.test('rate adaptation: leak grows with QBER and stays above the target', async (t) => {
  let last = 0;
  for (const q of [0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.11]) {
    const c = chooseCode(q, 60000, { efficiency: 1.1 });
    t.ok(c.leakBits >= 1.1 * c.keyBits * (-q * Math.log2(q) - (1 - q) * Math.log2(1 - q)) - 1, `q=${q}`);
    t.ok(c.leakBits >= last);
    last = c.leakBits;
    t.same(describeCode(c.params), c, 'describeCode round-trips the choice');
  }
});

t.test('coded errors, never key bits', async (t) => {
  const c = chooseCode(0.02, FRAME);
  const key = randomBits(seededRandom(6), c.keyBits);
  const check = (fn: () => unknown, code: string) => {
    try {
      fn();
      t.fail(`expected ${code}`);
    } catch (e) {
      t.ok(e instanceof QkdError);
      t.equal((e as QkdError).code, code);
    }
  };
  check(() => encode(key.subarray(1), c.params), 'LDPC_BAD_LENGTH');
  check(() => encode(key, { ...c.params, punctured: c.params.punctured + 1 }), 'LDPC_BAD_PARAMS');
  check(() => chooseCode(0.7, FRAME), 'LDPC_BAD_QBER');
  check(() => describeCode({ ...c.params, log2n: 13 }), 'LDPC_BAD_PARAMS');
  await t.rejects(decode(key, new Uint8Array(3), 0.02, c.params), { code: 'LDPC_BAD_LENGTH' });
  await t.rejects(decode(key, encode(key, c.params).syndrome, 0, c.params), { code: 'LDPC_BAD_QBER' });
});

t.test('shipped codes regenerate bit for bit and the docs quote their checksums', async (t) => {
  const table = shippedTable().split('\n').filter((l) => l && !l.startsWith('#'));
  t.equal(table.length, 80);
  const docs = readFileSync(new URL('../../docs/ldpc.md', import.meta.url), 'utf8');
  for (const line of table) {
    const [log2n, rate] = line.split(' ').map(Number);
    if (log2n <= 12) t.equal(provenance(log2n, rate), line, `2^${log2n} rate ${rate}`);
    t.ok(docs.includes(line.split(' ').at(-1)!), `docs/ldpc.md quotes the checksum of 2^${log2n} rate ${rate}`);
  }
});
