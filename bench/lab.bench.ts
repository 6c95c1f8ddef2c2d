/**
 * Emulated lab throughput: tags generated per second on one core by EmulatedLink.nextPulses with
 * the Rust physics (physics: 'native'), per preset at its default distance (reference-decoy:
 * 1 GHz, 50 km; target >= 5 M tags/s), with the TypeScript physics (physics: 'ts', the bit-exact
 * reference) on the same preset and seed in the same run as baseline; the slow per-pulse reference
 * emulator (src/lab/reference.ts) in params; and Alice's choice regeneration rate (pulses/s).
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
    const pulses = name === 'reference-decoy' ? 1e8 : 2e7;
    const measure = async (physics: 'ts' | 'native', repeats: number) => {
      const link = new EmulatedLink(preset, { seed: 2026n, physics });
      let tags = 0;
      const s = await medianSeconds(() => { tags = link.nextPulses(pulses).tags.timePs.length; }, repeats);
      const cpu = medianCpuSeconds(() => { tags = link.nextPulses(pulses).tags.timePs.length; }, repeats);
      return { tags, s, cpu };
    };
    const nat = await measure('native', 7);
    const ts = await measure('ts', 3);
    const refPulses = 2e6;
    let refTags = 0;
    const rs = await medianSeconds(() => { refTags = referenceClicks(preset, 2026n, 0, refPulses).slot.length; }, 3);
    results.push({
      name: `lab.tags_per_sec.${name}`,
      value: Math.round(nat.tags / nat.s),
      unit: 'tags/s',
      better: 'higher',
      params: {
        preset: name, repRateHz: preset.repRateHz, distanceKm: preset.distanceKm, pulsesPerCall: pulses, tagsPerCall: nat.tags,
        physics: 'native', tagsPerCpuSecond: Math.round(nat.tags / nat.cpu), pulsesPerSecond: Math.round(pulses / nat.s),
        baselinePhysics: 'ts', baselineTagsPerCpuSecond: Math.round(ts.tags / ts.cpu), speedup: (nat.tags / nat.s) / (ts.tags / ts.s),
        // The per-pulse reference has no dead time or afterpulsing: on the presets with dead time
        // it emits more tags per pulse than the physics allows; compare its pulses per second.
        referenceEmulatorTagsPerSecond: Math.round(refTags / rs), referenceEmulatorPulsesPerSecond: Math.round(refPulses / rs),
        target: name === 'reference-decoy' ? 5e6 : undefined,
      },
      baseline: Math.round(ts.tags / ts.s),
    });
  }
  const preset = loadLinkPreset('reference-decoy');
  const out = new Uint8Array(1e7);
  const s = await medianSeconds(() => aliceChoices(preset, 1n, 0, out.length, out), 5);
  results.push({ name: 'lab.alice_choices_per_sec', value: Math.round(out.length / s), unit: 'pulses/s', better: 'higher', params: { preset: 'reference-decoy' } });
  return results;
}
