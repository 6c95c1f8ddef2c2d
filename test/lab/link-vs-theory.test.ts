/**
 * The emulator against the Ma, Qi, Zhao, Lo (2005) model on reference-decoy: gains Q and error
 * rates E per intensity, computed from the tags alone the way sifting would, agree with decoyModel
 * within 4 binomial standard deviations at 0, 25, 50 and 100 km.
 */
import t from 'tap';
import { EmulatedLink } from '../../src/lab/link.ts';
import { loadLinkPreset } from '../../src/lab/presets.ts';
import { decoyModel } from '../../src/lab/theory.ts';
import { runTally, zScore } from '../../src/testkit/lab.ts';

const preset = loadLinkPreset('reference-decoy');
const names = ['signal', 'decoy', 'vacuum'] as const;
// Pulses per distance: about 1.5e6 tags each (the error bars shrink as 1/sqrt of that).
const cases: Array<[number, number]> = [[0, 1e8], [25, 3e8], [50, 1e9], [100, 8e9]];

for (const [km, pulses] of cases) {
  t.test(`reference-decoy at ${km} km: Q and E per intensity within 4 sigma of Ma05`, async (t) => {
    const link = new EmulatedLink(preset, { seed: 1000n + BigInt(km), distanceKm: km });
    const th = decoyModel(preset, km);
    const tally = runTally(link, pulses);
    t.ok(tally.slotMismatches <= tally.tags * 1e-4, `time-derived slot agrees with truth (${tally.slotMismatches}/${tally.tags})`);
    names.forEach((name, i) => {
      // Pulses of intensity i: its expectation. Counting them exactly would mean regenerating every
      // choice (8e9 at 100 km); the binomial spread of the count is below 1/4 of Q's own spread.
      const nI = pulses * preset.intensityProbs[name];
      const qz = zScore(tally.clickedSlots[i], nI, th.gain[name]);
      t.ok(Math.abs(qz) < 4, `Q_${name} = ${(tally.clickedSlots[i] / nI).toExponential(4)} vs ${th.gain[name].toExponential(4)} (z = ${qz.toFixed(2)})`);
      if (tally.matched[i] >= 30) {
        const ez = zScore(tally.errors[i], tally.matched[i], th.errorRate[name]);
        t.ok(Math.abs(ez) < 4, `E_${name} = ${(tally.errors[i] / tally.matched[i]).toFixed(5)} vs ${th.errorRate[name].toFixed(5)} (z = ${ez.toFixed(2)}, n = ${tally.matched[i]})`);
      }
    });
  });
}

t.test('dark counts alone: yield per slot of the measuring pair is y0, error rate 1/2', async (t) => {
  const link = new EmulatedLink(preset, { seed: 77n });
  link.setSource({ enabled: false });
  const pulses = 2e10;
  const tally = runTally(link, pulses, 2e9);
  const clicked = tally.clickedSlots[0] + tally.clickedSlots[1] + tally.clickedSlots[2];
  const z = zScore(clicked, pulses, preset.y0);
  t.ok(Math.abs(z) < 4, `yield ${(clicked / pulses).toExponential(3)} vs y0 ${preset.y0} (z = ${z.toFixed(2)}, ${clicked} clicks)`);
  const matched = tally.matched[0] + tally.matched[1] + tally.matched[2];
  const errors = tally.errors[0] + tally.errors[1] + tally.errors[2];
  const ez = zScore(errors, matched, 0.5);
  t.ok(Math.abs(ez) < 4, `dark error rate ${(errors / matched).toFixed(3)} (z = ${ez.toFixed(2)})`);
});
