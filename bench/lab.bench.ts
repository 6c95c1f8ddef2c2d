/**
 * Emulated lab throughput: tags generated per second on one core by EmulatedLink.nextPulses with
 * the Rust physics (physics: 'native'), per preset at its default distance (reference-decoy:
 * 1 GHz, 50 km; target >= 5 M tags/s), with the TypeScript physics (physics: 'ts', the bit-exact
 * reference) on the same preset and seed in the same run as baseline; the slow per-pulse reference
 * emulator (src/lab/reference.ts) in params; and Alice's choice regeneration rate (pulses/s).
 * Also two per-click steps of Bob's path, Rust vs the TypeScript reference in the same run: an
 * active Bob's modulator bases at a block's detections (EmulatedLab.bobBasesAt) and the emulated
 * tagger's merge of channels with unequal delays (src/devices/emulated/delay-merge.ts); and the
 * emulated source's choices at sparse pulses (ChaCha20 by pulse index, eight blocks per call in
 * native/core/src/lab_chacha.rs) against its TypeScript reference (src/core/source-rng-reference.ts).
 */
import { aliceChoices, bobBasisChoicesAt } from '../src/lab/alice.ts';
import { nativeBobBasesAt } from '../src/lab/native-physics.ts';
import { DelayMergeTs, nativeDelayMerge, type DelayMerge } from '../src/devices/emulated/delay-merge.ts';
import { createSourceRng } from '../src/core/source-rng.ts';
import { createSourceDevice } from '../src/core/source-device.ts';
import { sourceChoiceReference } from '../src/core/source-rng-reference.ts';
import { choiceThresholds } from '../src/protocol/choices.ts';
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
  results.push(...(await runPath()));
  results.push(await bobBases(), await delayMerge(), await sourceChoices());
  return results;
}

/**
 * The lab as `qkd run --emulated` runs it (issue 15): reference-decoy at 25 km, Alice's choices
 * from the emulated source device (its ChaCha20 keystream and record: photon candidates, applyAt,
 * the physics; called by the Rust physics itself, as the run's source worker attaches it), no
 * truth columns (Bob's node's setting; both ignored where the options do not exist),
 * batches of 2·10^7 pulses (≈ 9·10^4 tags, a 1 MB tagger transfer's worth); and the source's
 * read-back (recordAt) at those batches' detected pulses. CPU ns per tag and per read-back pulse,
 * medians of 7 repeats.
 */
async function runPath(): Promise<BenchResult[]> {
  const preset = loadLinkPreset('reference-decoy', { distanceKm: 25 });
  const key = Uint8Array.from({ length: 32 }, (_, i) => i * 5 + 3);
  const dev = createSourceDevice(choiceThresholds(preset), { testKey: key });
  const link = new EmulatedLink(preset, { seed: 2026n, alice: { choicesAt: (p) => dev.applyAt(p), native: dev.native }, truth: false });
  const batch = 2e7, batches = 20;
  let tags = 0;
  const cpu = medianCpuSeconds(() => { tags = 0; for (let i = 0; i < batches; i++) tags += link.nextPulses(batch).tags.timePs.length; }, 7);
  // the read-back: a second link with truth (same seed and key), its detected pulses, sorted
  const dev2 = createSourceDevice(choiceThresholds(preset), { testKey: key });
  const link2 = new EmulatedLink(preset, { seed: 2026n, alice: { choicesAt: (p) => dev2.applyAt(p) } });
  const det: number[] = [];
  for (let i = 0; i < batches; i++) { const b = link2.nextPulses(batch); for (const p of b.truthSlot) det.push(p); }
  const q = Float64Array.from([...new Set(det)].sort((a, b) => a - b));
  const rb = medianCpuSeconds(() => dev2.recordAt(q), 7);
  const params = { preset: 'reference-decoy', distanceKm: 25, source: 'emulated source device (ChaCha20, record)', truth: false, pulsesPerCall: batch, tagsPerRepeat: tags };
  return [
    { name: 'lab.run_path.cpu_ns_per_tag', value: (cpu * 1e9) / tags, unit: 'ns/tag', better: 'lower', params: { ...params, tagsPerCpuSecond: Math.round(tags / cpu) } },
    { name: 'lab.run_path.readback_cpu_ns_per_pulse', value: (rb * 1e9) / q.length, unit: 'ns/pulse', better: 'lower', params: { ...params, readbackPulses: q.length, via: 'SourceDevice.recordAt (in process)' } },
  ];
}

/** xorshift32 in [0, 1): the bench's own reproducible randomness. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32; };
}

/** Rust vs TypeScript on the same input in the same run: wall and CPU medians, both ways. */
async function versus(items: number, nat: () => unknown, ts: () => unknown, repeats: number) {
  const natS = await medianSeconds(nat, repeats), natCpu = medianCpuSeconds(nat, repeats);
  const tsS = await medianSeconds(ts, repeats), tsCpu = medianCpuSeconds(ts, repeats);
  return {
    value: Math.round(items / natS), baseline: Math.round(items / tsS),
    params: { perCpuSecond: Math.round(items / natCpu), baselinePerCpuSecond: Math.round(items / tsCpu), speedupCpu: tsCpu / natCpu, speedupWall: tsS / natS },
  };
}

/** An active Bob's bases at 10^6 detected pulses (one block's worth at 25 km, sorted, ~230 pulses apart). */
async function bobBases(): Promise<BenchResult> {
  const preset = loadLinkPreset('reference-decoy');
  const r = rng(7);
  const pulses = new Float64Array(1e6);
  for (let i = 0, p = 1e12; i < pulses.length; i++) pulses[i] = p += 1 + Math.floor(r() * 460);
  const v = await versus(pulses.length, () => nativeBobBasesAt(preset, 99n, pulses), () => bobBasisChoicesAt(preset, 99n, pulses), 9);
  return { name: 'lab.bob_bases_per_sec', value: v.value, unit: 'detections/s', better: 'higher', baseline: v.baseline,
    params: { preset: 'reference-decoy', detections: pulses.length, rust: 'lab_rng.rs bob_bases_at', reference: 'bobBasisChoicesAt (src/lab/alice.ts)', ...v.params } };
}

/** The tagger's merge: 10^6 tags of 2 channels (delays 0 and 1.2 ns, ~230 ps apart) in pulls of 10^5, then a flush. */
async function delayMerge(): Promise<BenchResult> {
  const r = rng(11);
  const n = 1e6, pull = 1e5;
  const times = new BigInt64Array(n), ch = new Uint8Array(n);
  for (let i = 0, t = 5_000_000_000_000; i < n; i++) {
    times[i] = BigInt(t += Math.floor(r() * 460));
    ch[i] = r() < 0.5 ? 0 : 1;
  }
  const delays = [0n, 1200n];
  const run = (m: DelayMerge) => {
    let bytes = 0;
    for (let at = 0; at < n; at += pull) bytes += m.push(times.subarray(at, at + pull), ch.subarray(at, at + pull), delays).length;
    return bytes + m.flush().length;
  };
  const v = await versus(n, () => run(nativeDelayMerge()), () => run(new DelayMergeTs()), 7);
  return { name: 'lab.tagger_delay_merge_tags_per_sec', value: v.value, unit: 'tags/s', better: 'higher', baseline: v.baseline,
    params: { tags: n, tagsPerPull: pull, delaysPs: delays.map(Number), rust: 'lab_tagger.rs DelayMerger', reference: 'DelayMergeTs (src/devices/emulated/delay-merge.ts)', ...v.params } };
}

/**
 * The emulated source's choices at the photon candidates (one every ~170 pulses at 25 km: one
 * ChaCha20 block each): Rust on 10^6 pulses vs the TypeScript reference on the first 10^4.
 */
async function sourceChoices(): Promise<BenchResult> {
  const th = choiceThresholds(loadLinkPreset('reference-decoy'));
  const key = Uint8Array.from({ length: 32 }, (_, i) => i * 7 + 1);
  const rng0 = createSourceRng(th, key);
  const r = rng(13);
  const pulses = new Float64Array(1e6);
  for (let i = 0, p = 1e12; i < pulses.length; i++) pulses[i] = p += 1 + Math.floor(r() * 340);
  const few = pulses.subarray(0, 1e4);
  const nat = () => rng0.choicesAt(pulses);
  const ts = () => { let x = 0; for (const p of few) x ^= sourceChoiceReference(key, th, p); return x; };
  const natS = await medianSeconds(nat, 7), natCpu = medianCpuSeconds(nat, 7);
  const tsS = await medianSeconds(ts, 3), tsCpu = medianCpuSeconds(ts, 3);
  return { name: 'lab.source_choices_at_per_sec', value: Math.round(pulses.length / natS), unit: 'pulses/s', better: 'higher', baseline: Math.round(few.length / tsS),
    params: { pulses: pulses.length, referencePulses: few.length, meanGap: 170, rust: 'emulated_choice.rs alice_choices_at (lab_chacha.rs, 8 blocks per call)', reference: 'sourceChoiceReference (src/core/source-rng-reference.ts)',
      perCpuSecond: Math.round(pulses.length / natCpu), baselinePerCpuSecond: Math.round(few.length / tsCpu), speedupCpu: (few.length / tsCpu) ? (pulses.length / natCpu) / (few.length / tsCpu) : undefined } };
}
