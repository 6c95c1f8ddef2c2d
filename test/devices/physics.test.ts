/**
 * Settings changed through the real drivers reach the emulated physics (EmulatedLink): the tag
 * stream the emulated tagger delivers changes as the physics says it must.
 */
import t from 'tap';
import { loadProfile } from '../../src/devices/profile.ts';
import { EmulatedLab } from '../../src/devices/emulated/lab.ts';
import { EmulatedUsbTagger } from '../../src/devices/emulated/usb-tagger.ts';
import { TimeTaggerDriver } from '../../src/devices/drivers/tagger.ts';
import { emulatedSource, emulatedSpad } from '../../src/testkit/devices.ts';

/** Reads `tags` tags through the tagger driver; rate = tags per pulse over the time they span. */
async function rate(lab: EmulatedLab, tags: number) {
  const drv = new TimeTaggerDriver({ id: 'tt', profile: loadProfile('emulab-tt8'), device: new EmulatedUsbTagger(lab) });
  await drv.open();
  const times: bigint[] = [];
  const chans: number[] = [];
  for await (const b of drv.startStream({ maxTags: tags })) {
    times.push(...b.timePs);
    chans.push(...b.channel);
  }
  await drv.close();
  const pulses = (Number(times[times.length - 1] - times[0]) * lab.preset.repRateHz) / 1e12;
  return { perPulse: (times.length - 1) / pulses, times, chans };
}

t.test('detector efficiency and source enable change the click rate', async (t) => {
  const lab = new EmulatedLab({ seed: 21n, distanceKm: 25 });
  const spad = emulatedSpad({ lab });
  const src = emulatedSource({ lab });
  t.teardown(() => Promise.all([spad.driver.close(), src.driver.close()]));
  await spad.driver.open();
  await src.driver.open();
  const N = 20_000;
  const base = await rate(lab, N);
  await spad.driver.setEfficiency(0.2); // twice the 10 % the preset's eta_Bob corresponds to
  const doubled = await rate(lab, N);
  const ratio = doubled.perPulse / base.perPulse;
  // At 25 km, eta*mu << 1 so the gain is ~linear in eta: ratio ~ 2 (binomial error ~1-2 %).
  t.ok(Math.abs(ratio - 2) < 0.1, `rate ratio ${ratio.toFixed(3)} ~ 2`);
  await src.driver.setEnabled(false);
  const dark = await rate(lab, 200);
  // Dark counts only: y0 (both detectors together) per pulse, ~1.7e-6, vs ~1e-2 with light.
  t.ok(Math.abs(dark.perPulse / lab.preset.y0 - 1) < 0.3, `laser off: dark counts only (${dark.perPulse.toExponential(2)} per pulse, y0 ${lab.preset.y0})`);
});

t.test('dead time set on the detector is respected in the tag stream', async (t) => {
  const lab = new EmulatedLab({ seed: 22n, distanceKm: 0 });
  const spad = emulatedSpad({ lab });
  t.teardown(() => spad.driver.close());
  await spad.driver.open();
  await spad.driver.setDeadTimeNs(100);
  const { times, chans } = await rate(lab, 20_000);
  const last = new Map<number, bigint>();
  let minGap = Infinity;
  for (let i = 0; i < times.length; i++) {
    const p = last.get(chans[i]);
    if (p !== undefined) minGap = Math.min(minGap, Number(times[i] - p));
    last.set(chans[i], times[i]);
  }
  t.ok(times.length > 1000, `${times.length} tags`);
  // Jitter (20 ps rms in the preset) can shorten a gap slightly below the dead time.
  t.ok(minGap >= 100_000 - 200, `no two clicks on one channel closer than the dead time (min gap ${minGap} ps)`);
});
