import t from 'tap';
import { erfc, igam, igamc, lgamma } from '../../src/telemetry/special.ts';
import {
  countOnes, countTransitions, frequencyTest, runsTest, serialTest, runRandomnessChecks, RandomnessMonitor, patternCounts,
} from '../../src/telemetry/randomness.ts';
import {
  eBits, packBits, piBits, pseudoRandomBytes, refErfc, refFrequency, refIgamc, refRuns, refSerial, unpackBits,
} from '../../src/testkit/telemetry.ts';

// NIST SP 800-22 rev1a worked examples. π's first 100 bits are the input of §2.1.8 and §2.3.8.
const PI100 = '1100100100001111110110101010001000100001011010001100001000110100110001001100011001100010100010111000';
const round6 = (x: number): number => Math.round(x * 1e6) / 1e6;

t.test('special functions against closed forms and slow integration', async (t) => {
  t.ok(Math.abs(lgamma(0.5) - Math.log(Math.sqrt(Math.PI))) < 1e-14, 'lnΓ(½) = ln √π');
  t.ok(Math.abs(lgamma(10) - Math.log(362880)) < 1e-12, 'lnΓ(10) = ln 9!');
  t.ok(Math.abs(erfc(0.5) - 0.4795001221869535) < 1e-15, 'erfc(0.5) tabulated value');
  t.ok(Math.abs(erfc(-1) - 1.8427007929497148) < 1e-15, 'erfc(−1) = 2 − erfc(1)');
  t.equal(igamc(3, 0), 1);
  // Property: igamc agrees with the closed forms for integer and half-integer a (all the serial
  // test ever uses), over a spread of x on both sides of the series/continued-fraction switch.
  let worst = 0;
  for (const a of [0.5, 1, 1.5, 2, 2.5, 4, 7.5, 16, 64, 128]) {
    for (const x of [1e-3, 0.1, 0.7, 1, 1.9, 3, a - 0.1, a, a + 0.5, 2 * a, a + 10 * Math.sqrt(a), 40]) {
      if (x <= 0) continue;
      const ref = refIgamc(a, x);
      if (ref < 1e-250) continue;
      const got = igamc(a, x);
      worst = Math.max(worst, Math.abs(got - ref) / ref);
      t.ok(Math.abs(igam(a, x) + got - 1) < 1e-13, `P + Q = 1 at a=${a}, x=${x}`);
    }
  }
  t.ok(worst < 1e-9, `igamc vs closed form: worst relative error ${worst.toExponential(2)}`);
  let worstErfc = 0;
  for (let x = -3; x <= 6; x += 0.37) worstErfc = Math.max(worstErfc, Math.abs(erfc(x) - refErfc(x)) / refErfc(x));
  t.ok(worstErfc < 1e-10, `erfc vs Simpson: worst relative error ${worstErfc.toExponential(2)}`);
});

t.test('NIST SP 800-22 worked examples (known answers)', async (t) => {
  t.equal(piBits(100), PI100, 'our π expansion reproduces the NIST example input');
  // §2.1.4: ε = 1011010101 → P = 0.527089; §2.1.8: π (100 bits) → 0.109599.
  t.equal(round6(frequencyTest(packBits('1011010101'), 10)), 0.527089, 'frequency §2.1.4');
  t.equal(round6(frequencyTest(packBits(PI100), 100)), 0.109599, 'frequency §2.1.8');
  // §2.3.4: ε = 1001101011 → V = 7, P = 0.147232; §2.3.8: π (100 bits) → 0.500798.
  t.equal(countTransitions(packBits('1001101011'), 10) + 1, 7, 'runs V_n(obs) §2.3.4');
  t.equal(round6(runsTest(packBits('1001101011'), 10)), 0.147232, 'runs §2.3.4');
  t.equal(round6(runsTest(packBits(PI100), 100)), 0.500798, 'runs §2.3.8');
  // §2.11.4: ε = 0011011101, m = 3 → ∇ψ² = 1.6, ∇²ψ² = 0.8, P1 = 0.808792, P2 = 0.670320.
  const [p1, p2] = serialTest(packBits('0011011101'), 10, 3);
  t.equal(round6(p1), 0.808792, 'serial P1 §2.11.4');
  t.equal(round6(p2), 0.67032, 'serial P2 §2.11.4');
});

t.test('NIST examples on 1,000,000 bits of e (§2.1.8 table, §2.3.8, §2.11.8)', async (t) => {
  const e = eBits(1_000_000);
  t.equal(e.slice(0, 24), '101011011111100001010100', 'e = 10.1011011111100001010100…₂');
  const bytes = packBits(e);
  t.equal(round6(frequencyTest(bytes, 1e6)), 0.953749, 'frequency on e');
  t.equal(round6(runsTest(bytes, 1e6)), 0.561917, 'runs on e');
  const [p1, p2] = serialTest(bytes, 1e6, 2);
  t.equal(round6(p1), 0.843764, 'serial m=2 P1 on e');
  t.equal(round6(p2), 0.561915, 'serial m=2 P2 on e');
});

t.test('packed fast paths agree with the bit-string reference (random lengths and offsets)', async (t) => {
  for (let trial = 0; trial < 40; trial++) {
    const n = 100 + ((trial * 7919) % 1400);
    const bytes = pseudoRandomBytes(Math.ceil(n / 8) + 1, 1000 + trial);
    // Bias some inputs so the runs prerequisite and small P-values are exercised too.
    if (trial % 5 === 0) for (let i = 0; i < bytes.length; i += 3) bytes[i] |= 0xa5;
    const s = unpackBits(bytes, n);
    t.equal(countOnes(bytes, n), [...s].filter((c) => c === '1').length);
    const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1e-300, Math.abs(b)) + 1e-300;
    t.ok(close(frequencyTest(bytes, n), refFrequency(s)), `frequency n=${n}`);
    t.ok(close(runsTest(bytes, n), refRuns(s)), `runs n=${n}`);
    for (const m of [2, 3, 5]) {
      const [a1, a2] = serialTest(bytes, n, m);
      const [b1, b2] = refSerial(s, m);
      t.ok(close(a1, b1) && close(a2, b2), `serial n=${n} m=${m}: ${a1},${a2} vs ${b1},${b2}`);
    }
  }
  const counts = patternCounts(packBits('0011011101'), 10, 3);
  t.same(Array.from(counts), [0, 1, 1, 2, 1, 2, 2, 1], 'NIST §2.11.4 counts ν_000…ν_111');
});

t.test('report and monitor: P-values only, broken output flagged', async (t) => {
  const good = pseudoRandomBytes(1 << 14, 7);
  const r = runRandomnessChecks(good);
  t.equal(r.nBits, 1 << 17);
  t.same(r.tests.map((x) => x.test), ['frequency', 'runs', 'serial']);
  t.ok(r.tests.every((x) => x.pValues.every((p) => p >= 0 && p <= 1)));
  t.throws(() => runRandomnessChecks(new Uint8Array(10)), RangeError, 'under 100 bits refused');

  const mon = new RandomnessMonitor({ sampleEvery: 2, minSamples: 3 });
  for (let i = 0; i < 8; i++) mon.offer(pseudoRandomBytes(4096, 100 + i));
  let snap = mon.snapshot();
  t.equal(snap.offeredBlocks, 8);
  t.equal(snap.sampledBlocks, 4, 'one in two sampled');
  t.same(snap.latest.map((x) => x.test), ['frequency', 'runs', 'serial_1', 'serial_2']);
  t.notOk(JSON.stringify(snap).includes('bytes'), 'snapshot has no data field');
  // A stuck output (all zeros) and a periodic pattern are flagged at once.
  mon.offer(new Uint8Array(4096));
  snap = mon.snapshot();
  t.equal(snap.healthy, false);
  t.match(snap.reason, /frequency/);
  const periodic = new Uint8Array(4096).fill(0x55);
  const mon2 = new RandomnessMonitor();
  mon2.offer(periodic);
  t.equal(mon2.snapshot().healthy, false, 'alternating bits fail (runs/serial)');
});
