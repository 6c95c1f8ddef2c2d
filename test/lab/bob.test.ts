/**
 * Active Bob: relabelling detections with his modulator basis lets a channel-table sifter see the
 * right (basis, bit): Z and X events in the expected proportions, QBER = Ma05 E_mu in both bases.
 */
import t from 'tap';
import { aliceChoice, bobBasisChoices } from '../../src/lab/alice.ts';
import { bobDetectorMapping, labelBobBases, X_BASIS_CHANNEL_OFFSET } from '../../src/lab/bob.ts';
import { EmulatedLink, KIND_PHOTON } from '../../src/lab/link.ts';
import { loadLinkPreset } from '../../src/lab/presets.ts';
import { decoyModel } from '../../src/lab/theory.ts';
import { choiceBasis, choiceBit, choiceIntensity } from '../../src/lab/types.ts';
import { slotOfTag, zScore } from '../../src/testkit/lab.ts';

t.test('active Bob: labelled channels give the right basis and bit', async (t) => {
  const p = loadLinkPreset('reference-decoy', { distanceKm: 20, y0: 0, aliceBasisProbZ: 0.9, bobBasisProbZ: 0.9, intensityProbs: { signal: 0.7, decoy: 0.2, vacuum: 0.1 } });
  const link = new EmulatedLink(p, { seed: 9n });
  const b = link.nextPulses(3e7);
  const n = b.tags.channel.length;
  const pulse = new Float64Array(n);
  for (let i = 0; i < n; i++) pulse[i] = slotOfTag(p, Number(b.tags.timePs[i]), b.tags.channel[i]);
  const ch = labelBobBases(p, link.bobSeed, pulse, b.tags.channel);
  const table = new Map(bobDetectorMapping(p).map((m) => [m.channel, m]));
  t.equal(table.size, 4, 'four virtual detectors');
  const bases = bobBasisChoices(p, link.bobSeed, 0, 3e7);
  const matched = [0, 0];
  const errors = [0, 0];
  let labelOk = true;
  for (let i = 0; i < n; i++) {
    if (b.truthKind[i] !== KIND_PHOTON) continue;
    const m = table.get(ch[i])!;
    if (m.basis !== bases[pulse[i]] || (ch[i] >= X_BASIS_CHANNEL_OFFSET) !== (bases[pulse[i]] === 1)) labelOk = false;
    const c = aliceChoice(p, link.seed, pulse[i]);
    if (choiceIntensity(c) !== 0 || choiceBasis(c) !== m.basis) continue;
    matched[m.basis]++;
    if (choiceBit(c) !== m.bit) errors[m.basis]++;
  }
  t.ok(labelOk, 'label agrees with the modulator basis');
  const e = decoyModel(p, 20).errorRate.signal;
  for (const basis of [0, 1]) {
    const z = zScore(errors[basis], matched[basis], e);
    t.ok(Math.abs(z) < 4, `basis ${basis}: QBER ${(errors[basis] / matched[basis]).toFixed(4)} vs ${e.toFixed(4)} over ${matched[basis]} (z = ${z.toFixed(2)})`);
  }
  const expectRatio = (0.9 * 0.9) / (0.1 * 0.1);
  t.ok(Math.abs(matched[0] / matched[1] / expectRatio - 1) < 0.15, `Z:X matched ratio ${(matched[0] / matched[1]).toFixed(1)} vs ${expectRatio}`);
});

t.test('passive Bob: channels unchanged, mapping is the preset', async (t) => {
  const p = loadLinkPreset('snspd-metro');
  const ch = Uint8Array.from([0, 1, 2, 3]);
  t.same(labelBobBases(p, 1n, Float64Array.from([5, 6, 7, 8]), ch), ch);
  t.same(bobDetectorMapping(p), p.detectors);
  t.throws(() => labelBobBases(loadLinkPreset('reference-decoy'), 1n, Float64Array.from([1.5]), Uint8Array.from([0])), RangeError);
});
