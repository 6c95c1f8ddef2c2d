/**
 * Emulated lab throughput: tags generated per second on one core by EmulatedLink.nextPulses, per
 * preset at its default distance (reference-decoy: 1 GHz, 50 km; target >= 5 M tags/s), with the
 * slow per-pulse reference emulator (src/lab/reference.ts) on the same preset as baseline; and
 * Alice's choice regeneration rate (pulses/s).
 */
import { aliceChoices } from '../src/lab/alice.ts';
import { EmulatedLink } from '../src/lab/link.ts';
import { loadLinkPreset } from '../src/lab/presets.ts';
import { referenceClicks } from '../src/lab/reference.ts';
import { median, medianSeconds, type BenchResult } from './stats.ts';

/** Median CPU seconds (user + system) of `fn`: the machine is shared, so wall time overstates the cost. */
function medianCpuSeconds(fn: () => unknown, repeats: number): number {
  fn();
  const xs: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const c0 = process.cpuUsage();
    fn();
    const c = process.cpuUsage(c0);
    xs.push((c.user + c.system) / 1e6);
  }
  return median(xs);
}

export async function run(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  for (const name of ['reference-decoy', 'gated-ingaas-lab', 'snspd-metro']) {
    const preset = loadLinkPreset(name);
    const link = new EmulatedLink(preset, { seed: 2026n });
    const pulses = name === 'reference-decoy' ? 1e8 : 2e7;
    let tags = 0;
    const s = await medianSeconds(() => { tags = link.nextPulses(pulses).tags.timePs.length; }, 7);
    const cpu = medianCpuSeconds(() => { tags = link.nextPulses(pulses).tags.timePs.length; }, 7);
    const refPulses = 2e6;
    let refTags = 0;
    const rs = await medianSeconds(() => { refTags = referenceClicks(preset, 2026n, 0, refPulses).slot.length; }, 3);
    results.push({
      name: `lab.tags_per_sec.${name}`,
      value: Math.round(tags / s),
      unit: 'tags/s',
      better: 'higher',
      params: { preset: name, repRateHz: preset.repRateHz, distanceKm: preset.distanceKm, pulsesPerCall: pulses, tagsPerCall: tags, tagsPerCpuSecond: Math.round(tags / cpu), pulsesPerSecond: Math.round(pulses / s), baselinePulsesPerSecond: Math.round(refPulses / rs), target: name === 'reference-decoy' ? 5e6 : undefined },
      // The reference has no dead time or afterpulsing: on the presets with dead time it emits more
      // tags per pulse than the physics allows, so there compare pulsesPerSecond as well.
      baseline: Math.round(refTags / rs),
    });
  }
  const preset = loadLinkPreset('reference-decoy');
  const out = new Uint8Array(1e7);
  const s = await medianSeconds(() => aliceChoices(preset, 1n, 0, out.length, out), 5);
  results.push({ name: 'lab.alice_choices_per_sec', value: Math.round(out.length / s), unit: 'pulses/s', better: 'higher', params: { preset: 'reference-decoy' } });
  return results;
}
