/**
 * Alice's counter-based choices: statistics (marginals and independence of bit, basis and
 * intensity, no serial correlation), range consistency (any sub-range regenerates the same
 * choices, which is what lets Alice's node and the emulator agree without storing them), seed
 * separation, and Bob's active basis choice.
 */
import t from 'tap';
import { aliceChoice, aliceChoices, aliceChoicesAt, bobBasisChoice, bobBasisChoices } from '../../src/lab/alice.ts';
import { loadLinkPreset } from '../../src/lab/presets.ts';
import { choiceBasis, choiceBit, choiceIntensity } from '../../src/lab/types.ts';

// Pinned values below were computed with these probabilities (the preset file may retune them).
const preset = loadLinkPreset('reference-decoy', { aliceBasisProbZ: 0.9, bobBasisProbZ: 0.9, intensityProbs: { signal: 0.7, decoy: 0.2, vacuum: 0.1 } });
const N = 2_000_000;

t.test('marginals and joint distribution match the preset', async (t) => {
  const c = aliceChoices(preset, 42n, 1e12, N); // far pulse indices exercise the high word
  const cells = new Float64Array(12); // bit x basis x intensity
  for (let i = 0; i < N; i++) cells[choiceBit(c[i]) + 2 * choiceBasis(c[i]) + 4 * choiceIntensity(c[i])]++;
  const pI = [preset.intensityProbs.signal, preset.intensityProbs.decoy, preset.intensityProbs.vacuum];
  const pB = [preset.aliceBasisProbZ, 1 - preset.aliceBasisProbZ];
  let chi2 = 0;
  for (let bit = 0; bit < 2; bit++) for (let b = 0; b < 2; b++) for (let i = 0; i < 3; i++) {
    const e = N * 0.5 * pB[b] * pI[i];
    const o = cells[bit + 2 * b + 4 * i];
    chi2 += ((o - e) * (o - e)) / e;
  }
  // 11 degrees of freedom: P(chi2 > 35) ~ 2.5e-4
  t.ok(chi2 < 35, `chi-square of the 12-cell joint distribution ${chi2.toFixed(1)} (11 dof)`);
  t.equal(cells.filter((x, k) => (k >> 2) === 3 && x > 0).length, 0, 'no intensity code 3');
});

t.test('no serial correlation between neighbouring pulses', async (t) => {
  const c = aliceChoices(preset, 7n, 0, N);
  let same = 0;
  for (let i = 1; i < N; i++) if (choiceBit(c[i]) === choiceBit(c[i - 1])) same++;
  const z = (same / (N - 1) - 0.5) / Math.sqrt(0.25 / (N - 1));
  t.ok(Math.abs(z) < 4, `lag-1 bit agreement z = ${z.toFixed(2)}`);
  let zz = 0;
  for (let i = 1; i < N; i++) if (choiceBasis(c[i]) === 0 && choiceBasis(c[i - 1]) === 0) zz++;
  const p = preset.aliceBasisProbZ ** 2;
  const z2 = (zz / (N - 1) - p) / Math.sqrt((p * (1 - p)) / (N - 1));
  t.ok(Math.abs(z2) < 4, `lag-1 Z,Z pairs z = ${z2.toFixed(2)}`);
});

t.test('any sub-range regenerates the same choices; seeds separate', async (t) => {
  const all = aliceChoices(preset, 5n, 1000, 10_000);
  const part = aliceChoices(preset, 5n, 4321, 100);
  t.same(part, all.subarray(3321, 3421), 'sub-range equals the slice');
  t.equal(aliceChoice(preset, 5n, 1000 + 777), all[777], 'single pulse equals the slice');
  const idx = [9999, 0, 4242, 17, 17];
  t.same(aliceChoicesAt(preset, 5n, Float64Array.from(idx, (i) => 1000 + i)), Uint8Array.from(idx, (i) => all[i]), 'sparse gather equals the slice');
  t.throws(() => aliceChoicesAt(preset, 5n, [1.5]), RangeError);
  const buf = new Uint8Array(200).fill(255);
  const r = aliceChoices(preset, 5n, 1000, 100, buf);
  t.equal(r, buf, 'writes into the given buffer');
  t.same(buf.subarray(0, 100), all.subarray(0, 100));
  t.equal(buf[150], 255, 'untouched beyond count');
  const other = aliceChoices(preset, 6n, 1000, 10_000);
  let eq = 0;
  for (let i = 0; i < other.length; i++) if (other[i] === all[i]) eq++;
  t.ok(eq < 0.5 * other.length, `different seeds give different streams (${eq} equal of ${other.length})`);
  const neg = aliceChoices(preset, -1n, 0, 16);
  t.same(neg, aliceChoices(preset, 0xffffffffffffffffn, 0, 16), 'seed taken modulo 2^64');
  t.throws(() => aliceChoices(preset, 1n, -1, 5), RangeError);
  t.throws(() => aliceChoices(preset, 1n, 0, 5, new Uint8Array(2)), RangeError);
});

t.test('stream pinned (Alice node and emulator must agree across versions)', async (t) => {
  // Regression pin of the generator: changing it silently would desynchronise recorded runs.
  const c = Array.from(aliceChoices(preset, 1n, 0, 16));
  t.same(c, [5, 0, 1, 3, 9, 1, 5, 1, 4, 1, 1, 0, 5, 5, 1, 0], 'reference-decoy seed 1 pulses 0..15');
});

t.test("Bob's active basis choice: frequency, range consistency, independent of Alice", async (t) => {
  const b = bobBasisChoices(preset, 99n, 0, N);
  let z = 0;
  for (let i = 0; i < N; i++) if (b[i] === 0) z++;
  const zs = (z / N - preset.bobBasisProbZ) / Math.sqrt((preset.bobBasisProbZ * (1 - preset.bobBasisProbZ)) / N);
  t.ok(Math.abs(zs) < 4, `P(Z) z = ${zs.toFixed(2)}`);
  t.equal(bobBasisChoice(preset, 99n, 12345), b[12345]);
  const a = aliceChoices(preset, 99n, 0, N);
  let both = 0;
  for (let i = 0; i < N; i++) if (b[i] === 0 && choiceBasis(a[i]) === 0) both++;
  const p = preset.bobBasisProbZ * preset.aliceBasisProbZ;
  const zb = (both / N - p) / Math.sqrt((p * (1 - p)) / N);
  t.ok(Math.abs(zb) < 4, `Alice and Bob bases independent even with the same seed (z = ${zb.toFixed(2)})`);
});
