/**
 * Differential test: the fast event-driven EmulatedLink against the slow per-pulse reference
 * emulator (src/lab/reference.ts) on the same presets, with independent random streams. Gains,
 * error rates and double-click rates per intensity must agree within 4 standard deviations of
 * their difference. Covers active and passive Bob, Eve, multi-photon pulses (0 km, high mu).
 */
import t from 'tap';
import { EmulatedLink } from '../../src/lab/link.ts';
import { loadLinkPreset, type LinkPresetOverrides } from '../../src/lab/presets.ts';
import { referenceClicks } from '../../src/lab/reference.ts';
import { defaultBobSeed } from '../../src/lab/alice.ts';
import { newTally, runTally, tallyClicks, twoSampleZ } from '../../src/testkit/lab.ts';

const cases: Array<[string, LinkPresetOverrides, number]> = [
  ['reference-decoy', { distanceKm: 0 }, 1.5e7],
  ['reference-decoy', { distanceKm: 0, intensities: { signal: 5, decoy: 1, vacuum: 0 }, eveFraction: 0.5 }, 2e6],
  ['snspd-metro', { distanceKm: 40, y0: 1e-4, detector: { deadTimePs: 0 } }, 4e6],
  ['gated-ingaas-lab', { distanceKm: 0, detector: { deadTimePs: 0, afterpulseProb: 0 } }, 6e6],
];

for (const [name, over, pulses] of cases) {
  t.test(`${name} ${JSON.stringify(over)}: fast emulator matches the per-pulse reference`, async (t) => {
    const p = loadLinkPreset(name, over);
    const seed = 4242n;
    const fast = runTally(new EmulatedLink(p, { seed }), pulses, 5e6);
    const ref = newTally();
    const r = referenceClicks(p, seed, 0, pulses);
    tallyClicks(p, seed, defaultBobSeed(seed), r.slot, r.channel, ref);
    t.ok(ref.tags > 1000, `${ref.tags} reference clicks, ${fast.tags} fast`);
    for (let i = 0; i < 3; i++) {
      if (ref.clickedSlots[i] + fast.clickedSlots[i] < 20) continue;
      const nI = pulses; // same pulses, same Alice choices: per-intensity pulse counts are equal
      const zq = twoSampleZ(fast.clickedSlots[i], nI, ref.clickedSlots[i], nI);
      t.ok(Math.abs(zq) < 4, `intensity ${i}: clicked slots ${fast.clickedSlots[i]} vs ${ref.clickedSlots[i]} (z = ${zq.toFixed(2)})`);
      if (ref.matched[i] > 50) {
        const ze = twoSampleZ(fast.errors[i], fast.matched[i], ref.errors[i], ref.matched[i]);
        t.ok(Math.abs(ze) < 4, `intensity ${i}: error rate ${(fast.errors[i] / fast.matched[i]).toFixed(4)} vs ${(ref.errors[i] / ref.matched[i]).toFixed(4)} (z = ${ze.toFixed(2)})`);
      }
    }
    const zm = twoSampleZ(fast.multiClicks, pulses, ref.multiClicks, pulses);
    t.ok(Math.abs(zm) < 4, `double clicks ${fast.multiClicks} vs ${ref.multiClicks} (z = ${zm.toFixed(2)})`);
  });
}
