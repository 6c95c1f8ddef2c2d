// The block dialogue between Bob and Alice (src/node/postprocess.ts) in one process, on detections
// from the emulated lab (pulse indices from the emulator's truth: timing is tested elsewhere):
// both parties end with the same key of the planned length; an eavesdropper's QBER aborts the
// block with a reason and no output; a tampered or replayed dialogue fails closed. Plus the bit
// and pulse-list encodings against slow obvious references.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { loadLinkPreset } from '../../src/lab/presets.ts';
import { linkWithSource } from '../../src/testkit/source.ts';
import { AlicePostProcessor, BobPostProcessor, DEFAULT_BLOCK_CONFIG, type BlockResult } from '../../src/node/postprocess.ts';
import { siftMapping, toSiftChannels } from '../../src/node/detections.ts';
import { concatBits, decodePulseList, encodePulseList, hammingDistance } from '../../src/node/bits.ts';
import { getBit } from '../../src/core/reference.ts';
import { planBlock, type FiniteKeyAnalysis } from '../../src/core/estimate.ts';
import { QkdError } from '../../src/errors.ts';

function detections(eveFraction: number, pulses: number, seed: bigint, intensityProbs?: { signal: number; decoy: number; vacuum: number }) {
  const preset = loadLinkPreset('reference-decoy', { distanceKm: 0, eveFraction, intensityProbs });
  const src = linkWithSource(preset, { seed });
  const link = src.link;
  const P: number[] = [];
  const C: number[] = [];
  for (let done = 0; done < pulses; done += 1e7) {
    const b = link.nextPulses(1e7);
    for (let i = 0; i < b.truthSlot.length; i++) {
      P.push(b.truthSlot[i]);
      C.push(b.tags.channel[i]);
    }
  }
  const order = P.map((_, i) => i).sort((a, b) => P[a] - P[b]);
  const pulse = Float64Array.from(order.map((i) => P[i]));
  const channel = toSiftChannels(preset, src.bobBasesAt(pulse), Uint8Array.from(order.map((i) => C[i])));
  return { preset, pulse, channel, aliceChoicesAt: src.aliceChoicesAt };
}

function pair(preset: ReturnType<typeof loadLinkPreset>, choicesAt: (pulses: Float64Array) => Uint8Array, tamper?: (type: string, p: Record<string, unknown>) => void,
  analysis?: FiniteKeyAnalysis) {
  const config = {
    ...DEFAULT_BLOCK_CONFIG,
    frameBits: 58983,
    // Lax security parameters so that a test-sized block (1e5 bits) has a positive length.
    security: { epsSec: 1e-3, epsCor: 1e-6, qberAbort: 0.11 },
    settings: { mu: [0.5, 0.1, 0] as [number, number, number], pMu: [preset.intensityProbs.signal, preset.intensityProbs.decoy, preset.intensityProbs.vacuum] as [number, number, number], analysis },
  };
  let aliceResult: BlockResult | undefined;
  const alice = new AlicePostProcessor({ config, choicesAt, authBitsConsumed: () => 1024, onOutput: (_id, r) => void (aliceResult = r) });
  const bob = new BobPostProcessor({
    config, mapping: siftMapping(preset),
    request: async (type, p) => {
      const copy = structuredClone(p);
      tamper?.(type, copy);
      return alice.handle(type, copy);
    },
  });
  return { bob, alice: () => aliceResult };
}

t.test('Alice and Bob end a block with the same key of the planned length', async (t) => {
  const seed = 4242n;
  const d = detections(0, 1.2e8, seed);
  const { bob, alice } = pair(d.preset, d.aliceChoicesAt);
  const r = await bob.processBlock(1, d.pulse, d.channel);
  t.ok(r.report.verified, `verified (${r.report.abortReason ?? 'ok'})`);
  t.ok(r.report.qberZ! > 0.02 && r.report.qberZ! < 0.05, `Z QBER ${r.report.qberZ} near e_d = 3.3 %`);
  t.equal(r.report.framesFailed, 0);
  const st = r.report.statement!;
  t.ok(st.ell > 0, `secret length ${st.ell} of ${st.n}`);
  t.equal(st.replenishBits, 1024, 'the MAC key used is paid back first');
  const a = alice()!;
  t.ok(a.output && r.output, 'both have output');
  t.equal(Buffer.from(r.output!.deliverable).toString('hex'), Buffer.from(a.output!.deliverable).toString('hex'), 'identical deliverable key');
  t.equal(Buffer.from(r.output!.replenish).toString('hex'), Buffer.from(a.output!.replenish).toString('hex'), 'identical MAC replenishment');
  t.equal(r.output!.deliverableBits, st.deliverableBits);
  t.equal(st.leakEcBits, r.report.leakBits, 'Alice\'s counted leak equals Bob\'s');
  const n = r.report.keptZ!.reduce((s, x) => s + x, 0);
  t.equal(st.n, n, 'the statement covers exactly the kept Z bits');
});

t.test('one decoy (rusca2018): the block runs end to end with the Z errors per intensity (issue 13 §2)', async (t) => {
  // Rusca et al. 2018's bound needs m_Z,k, the Z errors per intensity, known only after
  // reconciliation. Before the fix no block could use it: the estimate step called the bound
  // without them (PE_BAD_INPUT) and amplify never received them.
  const d = detections(0, 1.2e8, 4243n, { signal: 0.7, decoy: 0.3, vacuum: 0 });
  const { bob, alice } = pair(d.preset, d.aliceChoicesAt, undefined, 'rusca2018');
  const r = await bob.processBlock(4, d.pulse, d.channel);
  t.ok(r.report.verified, `verified (${r.report.abortReason ?? 'ok'})`);
  const st = r.report.statement!;
  t.equal(st.analysis, 'rusca2018');
  t.equal(st.epsSplit, 19, 'Rusca Eq. (A24): eps_sec = 19 eps');
  t.ok(st.ell > 0, `secret length ${st.ell} of ${st.n}`);
  t.equal(st.leakEcBits, r.report.leakBits, 'Alice\'s counted leak (with the announced Z error counts) equals Bob\'s');
  const a = alice()!;
  t.ok(a.output && r.output, 'both have output');
  t.equal(Buffer.from(r.output!.deliverable).toString('hex'), Buffer.from(a.output!.deliverable).toString('hex'), 'identical deliverable key');
  // The statement is the bound fed with the Z errors Bob found (no frame dropped here, so the
  // framed Z bits are the kept ones); with none it would have been larger.
  t.equal(r.report.framesFailed, 0);
  const mZ = r.report.zErrors!;
  t.ok(mZ[0] > 0 && mZ[1] > 0 && mZ[2] === 0, `Z errors per intensity ${mZ.join('/')}`);
  const redo = (m: [number, number, number]) => planBlock({
    settings: { mu: [0.5, 0.1, 0], pMu: [0.7, 0.3, 0], analysis: 'rusca2018' },
    counts: { nZ: r.report.keptZ!, nX: r.report.counts!.nX, mX: r.report.counts!.mX, mZ: m },
    security: { epsSec: 1e-3, epsCor: 1e-6, qberAbort: 0.11 },
    leakEcBits: st.leakEcBits, verifyTagBits: st.verifyTagBits, authBitsConsumed: 1024,
  }).ellRaw;
  t.equal(st.ellRaw, redo(mZ), 'the statement is Rusca\'s bound with the counted Z errors');
  t.ok(redo([0, 0, 0]) > st.ellRaw, 'and smaller than with no Z error');
  // A reply that claims impossible Z error counts is refused.
  const bad = pair(d.preset, d.aliceChoicesAt, (type, p) => {
    if (type === 'amplify') p.mZ = [-1, 0, 0];
  }, 'rusca2018');
  const rb = await bad.bob.processBlock(5, d.pulse, d.channel);
  t.notOk(rb.report.verified);
  t.match(rb.report.abortReason, /mZ must be/);
});

t.test('sift parts: two in flight on the channel, Alice reads back one at a time and in order', async (t) => {
  const d = detections(0, 1.8e8, 515n);
  t.ok(d.pulse.length > 2 * 2 ** 20, `${d.pulse.length} detections: three sift parts`);
  // Alice's read-back takes a varying time, as her source's line does.
  let active = 0;
  let maxActive = 0;
  let lastFirst = -1;
  let ordered = true;
  const choicesAt = async (pulses: Float64Array) => {
    active++;
    maxActive = Math.max(maxActive, active);
    if (pulses[0] <= lastFirst) ordered = false;
    lastFirst = pulses[0];
    await new Promise((r) => setTimeout(r, 5 + Math.floor(Math.random() * 40)));
    active--;
    return d.aliceChoicesAt(pulses);
  };
  const { bob, alice, outstanding } = pairCounting(d.preset, choicesAt);
  const r = await bob.processBlock(11, d.pulse, d.channel);
  t.ok(r.report.verified, `verified (${r.report.abortReason ?? 'ok'})`);
  t.equal(Buffer.from(r.output!.deliverable).toString('hex'), Buffer.from(alice()!.output!.deliverable).toString('hex'), 'identical deliverable key');
  t.equal(outstanding.max, 2, 'Bob had two sift parts in flight at once');
  t.equal(maxActive, 1, 'Alice read back one part at a time');
  t.ok(ordered, 'in the parts\' order');
});

t.test('sift parts: a part that fails at Alice ends the block, the part behind it leaves nothing', async (t) => {
  const d = detections(0, 1.8e8, 516n);
  let calls = 0;
  const choicesAt = async (pulses: Float64Array) => {
    calls++;
    await new Promise((r) => setTimeout(r, 20));
    if (calls === 2) throw new QkdError('SOURCE_READBACK_FAILED', 'reading back the choices failed (test: line dropped)');
    return d.aliceChoicesAt(pulses);
  };
  const { bob, alice, aliceProc, outstanding } = pairCounting(d.preset, choicesAt);
  const r = await bob.processBlock(12, d.pulse, d.channel);
  t.notOk(r.report.verified);
  t.match(r.report.abortReason, /SOURCE_READBACK_FAILED/, `reason: ${r.report.abortReason}`);
  await outstanding.idle();
  t.equal(calls, 2, 'the part behind the failed one was not read back');
  t.equal((aliceProc as unknown as { blocks: Map<number, unknown> }).blocks.size, 0, 'Alice holds nothing of the block');
  t.equal(alice(), undefined);
});

/** pair(), with Bob's requests counted while they are outstanding. */
function pairCounting(preset: ReturnType<typeof loadLinkPreset>, choicesAt: (pulses: Float64Array) => Promise<Uint8Array>) {
  const config = {
    ...DEFAULT_BLOCK_CONFIG,
    frameBits: 58983,
    security: { epsSec: 1e-3, epsCor: 1e-6, qberAbort: 0.11 },
    settings: { mu: [0.5, 0.1, 0] as [number, number, number], pMu: [preset.intensityProbs.signal, preset.intensityProbs.decoy, preset.intensityProbs.vacuum] as [number, number, number] },
  };
  let aliceResult: BlockResult | undefined;
  const aliceProc = new AlicePostProcessor({ config, choicesAt, authBitsConsumed: () => 1024, onOutput: (_id, r) => void (aliceResult = r) });
  const pending = new Set<Promise<unknown>>();
  const outstanding = { now: 0, max: 0, idle: () => Promise.allSettled([...pending]) };
  const bob = new BobPostProcessor({
    config, mapping: siftMapping(preset),
    request: (type, p) => {
      outstanding.max = Math.max(outstanding.max, ++outstanding.now);
      const r = aliceProc.handle(type, structuredClone(p)).finally(() => outstanding.now--);
      pending.add(r);
      return r;
    },
  });
  return { bob, alice: () => aliceResult, aliceProc, outstanding };
}

t.test('two blocks at once: the next sifts while the first reconciles; results, keys and Alice\'s outputs stay in block order', async (t) => {
  const a = detections(0, 1.2e8, 601n);
  const b = detections(0, 1.2e8, 602n);
  const config = {
    ...DEFAULT_BLOCK_CONFIG, frameBits: 58983, security: { epsSec: 1e-3, epsCor: 1e-6, qberAbort: 0.11 },
    settings: { mu: [0.5, 0.1, 0] as [number, number, number], pMu: [a.preset.intensityProbs.signal, a.preset.intensityProbs.decoy, a.preset.intensityProbs.vacuum] as [number, number, number] },
  };
  // Block 32's pulses come later in the run (b's shifted by OFFSET), so Alice's record tells the
  // two blocks' read-backs apart by the pulses asked for.
  const OFFSET = 1e12;
  const bPulse = b.pulse.map((x) => x + OFFSET);
  const choicesAt = async (pulses: Float64Array) => {
    await new Promise((r) => setTimeout(r, 10));
    return pulses[0] >= OFFSET ? b.aliceChoicesAt(pulses.map((x) => x - OFFSET)) : a.aliceChoicesAt(pulses);
  };
  const outputs = new Map<number, BlockResult>();
  const outputOrder: number[] = [];
  const alice = new AlicePostProcessor({ config, choicesAt, authBitsConsumed: () => 1024, onOutput: (id, r) => {
    outputs.set(id, r);
    outputOrder.push(id);
  } });
  const log: string[] = [];
  const bob = new BobPostProcessor({ config, mapping: siftMapping(a.preset), request: async (type, p) => {
    log.push(`${type}:${p.block}`);
    const r = await alice.handle(type, structuredClone(p));
    log.push(`${type}-reply:${p.block}`);
    return r;
  } });
  let siftDoneA!: () => void;
  const siftFreeA = new Promise<void>((r) => (siftDoneA = r));
  const first = bob.processBlock(31, a.pulse, a.channel, { siftDone: siftDoneA, after: Promise.resolve() });
  const settled: number[] = [];
  first.then(() => settled.push(31));
  await siftFreeA;
  const second = bob.processBlock(32, bPulse, b.channel, { siftDone: () => undefined, after: first });
  second.then(() => settled.push(32));
  const [ra, rb] = await Promise.all([first, second]);
  t.ok(ra.report.verified && rb.report.verified, `both verified (${ra.report.abortReason ?? 'ok'}, ${rb.report.abortReason ?? 'ok'})`);
  t.ok(log.indexOf('sift:32') < log.indexOf('amplify:31'), 'block 32 sifted while block 31 was still being reconciled');
  t.ok(log.indexOf('estimate:32') > log.indexOf('amplify-reply:31'), 'block 32 went past its sift only after block 31 was done');
  t.same(settled, [31, 32], 'results in block order');
  t.same(outputOrder, [31, 32], "Alice's outputs in block order");
  for (const [id, r] of [[31, ra], [32, rb]] as const) {
    t.equal(Buffer.from(r.output!.deliverable).toString('hex'), Buffer.from(outputs.get(id)!.output!.deliverable).toString('hex'), `block ${id}: the same key at both ends`);
  }
  t.notSame(Buffer.from(ra.output!.deliverable), Buffer.from(rb.output!.deliverable), 'two different keys');

  // The second block fails during its sift (her line drops): its abort still comes after block 31's result.
  const failing = async (pulses: Float64Array) => {
    await new Promise((r) => setTimeout(r, 10));
    if (pulses[0] >= OFFSET) throw new QkdError('SOURCE_READBACK_FAILED', 'reading back the choices failed (test: line dropped)');
    return a.aliceChoicesAt(pulses);
  };
  const alice2 = new AlicePostProcessor({ config, choicesAt: failing, authBitsConsumed: () => 1024, onOutput: () => undefined });
  const bob2 = new BobPostProcessor({ config, mapping: siftMapping(a.preset), request: (type, p) => alice2.handle(type, structuredClone(p)) });
  let siftDone3!: () => void;
  const siftFree3 = new Promise<void>((r) => (siftDone3 = r));
  const order2: number[] = [];
  const third = bob2.processBlock(41, a.pulse, a.channel, { siftDone: siftDone3, after: Promise.resolve() });
  third.then(() => order2.push(41));
  await siftFree3;
  const fourth = bob2.processBlock(42, bPulse, b.channel, { siftDone: () => undefined, after: third });
  fourth.then(() => order2.push(42));
  const [r3, r4] = await Promise.all([third, fourth]);
  t.ok(r3.report.verified, 'block 41 verified');
  t.match(r4.report.abortReason, /SOURCE_READBACK_FAILED/, 'block 42 aborted with its reason');
  t.same(order2, [41, 42], 'the aborted block reported after the block before it');
});

t.test('an intercept-resend eavesdropper: QBER near 25 %, block aborted with the reason, no output', async (t) => {
  const seed = 99n;
  const d = detections(1, 1.5e7, seed);
  const { bob, alice } = pair(d.preset, d.aliceChoicesAt);
  const r = await bob.processBlock(2, d.pulse, d.channel);
  t.notOk(r.report.verified);
  t.match(r.report.abortReason, /^PE_ABORT_QBER: X-basis QBER 2\d\.\d\d %/);
  t.ok(r.report.qberX! > 0.2 && r.report.qberX! < 0.3, `X QBER ${r.report.qberX}`);
  t.equal(r.output, undefined);
  t.equal(alice(), undefined, 'Alice produced nothing either');
});

t.test('a dialogue that does not add up fails closed', async (t) => {
  const seed = 7n;
  const d = detections(0, 1e7, seed);
  // Bob's X bits altered in transit (the MAC would catch it on the wire; here the protocol must
  // still not produce a key from inconsistent views): the counts differ, so does the key.
  const flip = pair(d.preset, d.aliceChoicesAt, (type, p) => {
    if (type === 'verify') (p.keep as Uint8Array).fill(1);
    if (type === 'sift' && p.part === 0) {
      const a = p.announcement as Uint8Array;
      a[a.length - 1] ^= 0xff;
    }
  });
  const r = await flip.bob.processBlock(3, d.pulse, d.channel);
  t.notOk(r.report.verified, `refused: ${r.report.abortReason}`);
  t.equal(r.output, undefined);
});

t.test('concatBits and hammingDistance against bit-by-bit references', async (t) => {
  for (let trial = 0; trial < 40; trial++) {
    const parts = Array.from({ length: 1 + (trial % 5) }, () => {
      const bits = Math.floor(Math.random() * 200);
      return { bytes: randomBytes(Math.ceil(bits / 8) + 1), bits };
    });
    const c = concatBits(parts);
    const ref: number[] = [];
    for (const p of parts) for (let i = 0; i < p.bits; i++) ref.push(getBit(p.bytes, i));
    let ok = c.bits === ref.length;
    for (let i = 0; i < ref.length; i++) ok &&= getBit(c.bytes, i) === ref[i];
    for (let i = ref.length; i < c.bytes.length * 8; i++) ok &&= getBit(c.bytes, i) === 0;
    t.ok(ok, `concat of ${parts.map((p) => p.bits).join('+')} bits`);
    const b = randomBytes(c.bytes.length);
    let d = 0;
    for (let i = 0; i < c.bits; i++) d += getBit(c.bytes, i) ^ getBit(b, i);
    t.equal(hammingDistance(c.bytes, b, c.bits), d);
  }
});

t.test('pulse lists round-trip; malformed ones are refused with a clear error', async (t) => {
  const p = Float64Array.from([0, 1, 5, 200, 70000, 2 ** 40, 2 ** 52 + 7]);
  t.same(Array.from(decodePulseList(encodePulseList(p), p.length)), Array.from(p));
  t.same(Array.from(decodePulseList(encodePulseList(new Float64Array(0)), 0)), []);
  t.throws(() => encodePulseList(Float64Array.from([3, 3])), { code: 'PULSES_NOT_INCREASING' });
  const enc = encodePulseList(p);
  t.throws(() => decodePulseList(enc.subarray(0, enc.length - 1)), { code: 'PULSES_TRUNCATED' });
  t.throws(() => decodePulseList(enc, p.length + 1), { code: 'PULSES_COUNT' });
});

t.test('property: pulse lists encode as a slow BigInt LEB128 of the deltas does, and decode back', async (t) => {
  const slow = (pulses: number[]): number[] => {
    const out: number[] = [];
    let prev = -1n;
    for (const q of pulses) {
      let d = BigInt(q) - prev - 1n;
      prev = BigInt(q);
      do {
        const b = Number(d & 0x7fn);
        d >>= 7n;
        out.push(d ? b | 0x80 : b);
      } while (d);
    }
    return out;
  };
  let seed = 7;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (let trial = 0; trial < 300; trial++) {
    const n = Math.floor(rnd() * 200);
    const list: number[] = [];
    let p = -1;
    for (let i = 0; i < n && p < 2 ** 52; i++) {
      // Deltas of every size: small, around the 2^31 and 2^32 boundaries, and large.
      const k = rnd();
      const d = k < 0.5 ? Math.floor(rnd() * 300) : k < 0.7 ? 2 ** 31 - 3 + Math.floor(rnd() * 6) : k < 0.8 ? 2 ** 32 - 3 + Math.floor(rnd() * 6) : Math.floor(rnd() * 2 ** 45);
      p = p + 1 + d;
      list.push(p);
    }
    const enc = encodePulseList(Float64Array.from(list));
    const want = slow(list);
    if (!Buffer.from(enc).equals(Buffer.from(want)) || decodePulseList(enc, list.length).some((x, i) => x !== list[i])) {
      t.fail(`list ${list.slice(0, 8).join(',')}…: encoding or round trip differs`);
      return;
    }
  }
  t.pass('300 random lists');
});

t.test('property: the native pulse-list codec equals the TypeScript reference, bytes, values and errors', async (t) => {
  const { encodePulseListReference, decodePulseListReference } = await import('../../src/protocol/pulse-list.ts');
  const outcome = (f: () => ArrayLike<number>) => {
    try {
      return Array.from(f()).join(',');
    } catch (e) {
      return `error ${(e as { code?: string }).code} ${(e as Error).message}`;
    }
  };
  let seed = 99;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  let compared = 0;
  for (let trial = 0; trial < 200; trial++) {
    // Long lists (the native path) with gaps of every size; some broken on purpose.
    const n = 64 + Math.floor(rnd() * 5000);
    const list = new Float64Array(n);
    let p = -1;
    for (let i = 0; i < n; i++) {
      const k = rnd();
      p = p + 1 + (k < 0.6 ? Math.floor(rnd() * 400) : k < 0.9 ? Math.floor(rnd() * 2 ** 20) : Math.floor(rnd() * 2 ** 40));
      list[i] = p;
    }
    if (trial % 5 === 1) list[Math.floor(rnd() * n)] = list[Math.floor(rnd() * n)]; // a repeat or a step back
    if (trial % 7 === 2) list[Math.floor(rnd() * n)] += 0.5;
    if (trial % 11 === 3) list[Math.floor(rnd() * n)] = NaN;
    t.equal(outcome(() => encodePulseList(list)), outcome(() => encodePulseListReference(list)), `encode, trial ${trial}`);
    const enc = encodePulseListReference(trial % 5 === 1 || trial % 7 === 2 || trial % 11 === 3 ? list.map((_, i) => i) : list);
    // Decode: the list, a truncated one, a wrong count, and random garbage bytes.
    const garbage = randomBytes(64 + Math.floor(rnd() * 4000));
    if (trial % 3 === 0) garbage.fill(0xff, 10, 30);
    for (const [buf, expected] of [[enc, n], [enc.subarray(0, enc.length - 1), undefined], [enc, n + 1], [garbage, undefined]] as const) {
      t.equal(outcome(() => decodePulseList(buf, expected)), outcome(() => decodePulseListReference(buf, expected)), `decode, trial ${trial}`);
      compared++;
    }
  }
  t.ok(compared >= 800);
});

/** The code of the error `f` throws, or 'ok'. */
function errorCode(f: () => unknown): string | undefined {
  try {
    f();
    return 'ok';
  } catch (e) {
    return (e as { code?: string }).code;
  }
}

/** Uniform numbers in [0, 1) from a 32-bit LCG (reproducible). */
function lcg(seed: number): () => number {
  return () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
}

t.test('property: a sift part\'s distinct pulses and ranks, native equal to the TypeScript reference', async (t) => {
  const { encodeDistinctPulses, encodeDistinctPulsesReference } = await import('../../src/protocol/pulse-list.ts');
  const rnd = lcg(7);
  for (let trial = 0; trial < 200; trial++) {
    // Detections sorted by pulse, a pulse clicked up to 3 times; some lists broken on purpose.
    const n = 64 + Math.floor(rnd() * 5000);
    const pulses = new Float64Array(n);
    let p = Math.floor(rnd() * 2 ** 40);
    for (let i = 0; i < n; i++) {
      if (i === 0 || rnd() < 0.8) p += 1 + Math.floor(rnd() * (rnd() < 0.9 ? 400 : 2 ** 24));
      pulses[i] = p;
    }
    if (trial % 9 === 4) pulses[1 + Math.floor(rnd() * (n - 1))] -= 2 ** 30; // a step back
    if (trial % 13 === 5) pulses[Math.floor(rnd() * n)] += 0.25;
    const want = errorCode(() => encodeDistinctPulsesReference(pulses));
    if (want !== 'ok') {
      t.equal(errorCode(() => encodeDistinctPulses(pulses)), want, `trial ${trial}: same error`);
      continue;
    }
    const a = encodeDistinctPulses(pulses);
    const b = encodeDistinctPulsesReference(pulses);
    if (a.count !== b.count || !Buffer.from(a.pulses).equals(Buffer.from(b.pulses)) || a.rank.some((r, i) => r !== b.rank[i])) {
      t.fail(`trial ${trial}: list, count or ranks differ`);
      return;
    }
  }
  t.pass('200 random sift parts');
});

t.test('property: checking a pulse list\'s count without decoding it agrees with the decoder, errors included', async (t) => {
  const { checkPulseListCount, decodePulseListReference, encodePulseListReference } = await import('../../src/protocol/pulse-list.ts');
  const rnd = lcg(3);
  for (let trial = 0; trial < 300; trial++) {
    const n = 1 + Math.floor(rnd() * 6000);
    let buf: Uint8Array;
    if (trial % 2 === 0) {
      let p = -1;
      const list = Float64Array.from({ length: n }, () => (p += 1 + Math.floor(rnd() * (rnd() < 0.05 ? 2 ** 40 : 400))));
      buf = encodePulseListReference(list);
      if (trial % 6 === 0) buf = buf.subarray(0, buf.length - 1);
    } else {
      buf = randomBytes(n);
      if (trial % 5 === 1 && n > 40) buf.fill(0xff, 10, 19 + (trial % 3));
    }
    const want = errorCode(() => decodePulseListReference(buf));
    const count = want === 'ok' ? decodePulseListReference(buf).length : 0;
    t.equal(errorCode(() => checkPulseListCount(buf, count)), want, `trial ${trial}: ${want}`);
    if (want === 'ok') t.equal(errorCode(() => checkPulseListCount(buf, count + 1)), 'PULSES_COUNT');
  }
});

t.test("a block Alice's handler refuses is aborted under her code, not the channel's", async (t) => {
  const d = detections(0, 1e7, 11n);
  const { ProtocolError } = await import('../../src/errors.ts');
  const bob = new BobPostProcessor({
    config: { ...DEFAULT_BLOCK_CONFIG, frameBits: 58983, settings: { mu: [0.5, 0.1, 0], pMu: [d.preset.intensityProbs.signal, d.preset.intensityProbs.decoy, d.preset.intensityProbs.vacuum] } },
    mapping: siftMapping(d.preset),
    // What the classical channel rejects with when the peer's handler threw (channel.test.ts checks remoteCode).
    request: async (type) => {
      if (type === 'abort') return {};
      throw Object.assign(new ProtocolError('CHANNEL_REMOTE_ERROR', "Peer's handler for 'sift' failed: [DELIVERY_PAUSED] Alice's delivery spool is full"), { remoteCode: type === 'sift' ? 'DELIVERY_PAUSED' : 'x' });
    },
  });
  const r = await bob.processBlock(5, d.pulse, d.channel);
  t.notOk(r.report.verified);
  t.match(r.report.abortReason, /^DELIVERY_PAUSED: Peer's handler for 'sift' failed/);
});
