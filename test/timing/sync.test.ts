// Clock sync on the emulated lab (reference-decoy, 50 km): lock within 2 s of data with unknown
// offset up to +-1 ms and drift up to +-20 ppm, pulse-index error below 1e-6 against the truth.
import t from 'tap';
import { EmulatedLink } from '../../src/lab/link.ts';
import { loadLinkPreset } from '../../src/lab/presets.ts';
import { alicePatternFromSeed } from '../../src/lab/pattern.ts';
import { ClockSync } from '../../src/timing/sync.ts';
import { tagTimesToNumbers } from '../../src/timing/times.ts';

interface Run { photons: number; wrong: number; sync: ClockSync; link: EmulatedLink }

/** Streams `seconds` of data in chunks of `chunkPulses` and compares indices with the truth. */
function runLink(offsetPs: number, driftPpm: number, seed: bigint, seconds: number, chunkPulses = 3e7): Run {
  const preset = loadLinkPreset('reference-decoy', { clock: { offsetPs, driftPpm, jitterPs: 5 } });
  const link = new EmulatedLink(preset, { seed, distanceKm: 50 });
  const sync = new ClockSync({ repRateHz: preset.repRateHz, pattern: alicePatternFromSeed(link.preset, seed), withTagSeq: true });
  let truth = new Float64Array(1 << 20), n = 0, photons = 0, wrong = 0;
  for (let done = 0; done < seconds * 1e9; done += chunkPulses) {
    const b = link.nextPulses(chunkPulses);
    if (n + b.truthPulse.length > truth.length) { const x = new Float64Array(2 * (n + b.truthPulse.length)); x.set(truth.subarray(0, n)); truth = x; }
    truth.set(b.truthPulse, n); n += b.truthPulse.length;
    const out = sync.push(b.tags);
    for (let i = 0; i < out.pulseIndex.length; i++) {
      const tr = truth[out.tagSeq![i]];
      if (tr < 0) continue;
      photons++;
      if (tr !== out.pulseIndex[i]) wrong++;
    }
  }
  return { photons, wrong, sync, link };
}

for (const [offsetPs, driftPpm, seed] of [[1e9, 20, 11n], [-1e9, -20, 12n], [3.3e8, -7.3, 13n]] as const) {
  t.test(`offset ${offsetPs / 1e9} ms, drift ${driftPpm} ppm`, async (t) => {
    const r = runLink(offsetPs, driftPpm, seed, 0.8);
    const s = r.sync.state();
    t.ok(s.locked, 'locked');
    t.ok(s.timeToLockPs! <= 2e12, `locked after ${(s.timeToLockPs! / 1e9).toFixed(0)} ms of data (limit 2 s)`);
    t.ok(s.confidence >= 5, `confidence ${s.confidence.toFixed(1)}`);
    t.ok(r.photons >= 1e6, `${r.photons} photon detections checked`);
    t.ok(r.wrong / r.photons < 1e-6, `index error rate ${r.wrong}/${r.photons}`);
    t.ok(Math.abs(s.driftPpm - driftPpm) < 0.01, `drift ${s.driftPpm} vs ${driftPpm} ppm (tolerance 0.01)`);
    const trueOffset = r.link.expectedTagTimePs(0, s.refChannel);
    t.ok(Math.abs(s.offsetPs - trueOffset) < 1000, `offset ${s.offsetPs.toFixed(0)} vs ${trueOffset.toFixed(0)} ps (tolerance 1 ns)`);
    const d01 = s.channelDelaysPs[1] - s.channelDelaysPs[0];
    t.ok(Math.abs(d01 - 1200) < 5, `channel delay difference ${d01.toFixed(1)} ps (injected 1200)`);
    t.equal(s.stats.lockLosses, 0);
  });
}

t.test('output does not depend on the chunk size', async (t) => {
  const preset = loadLinkPreset('reference-decoy', { clock: { offsetPs: 4.2e8, driftPpm: 9, jitterPs: 5 } });
  const link = new EmulatedLink(preset, { seed: 21n, distanceKm: 50 });
  const b = link.nextPulses(3e8);
  const make = () => new ClockSync({ repRateHz: 1e9, pattern: alicePatternFromSeed(link.preset, 21n) });
  const whole = make().push(b.tags);
  const s2 = make();
  const parts: number[] = [];
  let i = 0, k = 1;
  while (i < b.tags.channel.length) {
    const n = Math.min(k, b.tags.channel.length - i);
    const o = s2.push({ timePs: b.tags.timePs.subarray(i, i + n), channel: b.tags.channel.subarray(i, i + n) });
    for (const x of o.pulseIndex) parts.push(x);
    i += n; k = (k * 7 + 13) % 50000 + 1;
  }
  t.ok(whole.pulseIndex.length > 1e5, `${whole.pulseIndex.length} detections`);
  t.equal(parts.length, whole.pulseIndex.length);
  let diff = 0;
  for (let j = 0; j < parts.length; j++) if (parts[j] !== whole.pulseIndex[j]) diff++;
  t.equal(diff, 0, 'identical pulse indices');
});

t.test('no false lock on data that is not correlated with the pattern', async (t) => {
  // Right clock, wrong seed: the timing comb is perfect but Alice's pattern is someone else's.
  const preset = loadLinkPreset('reference-decoy');
  const link = new EmulatedLink(preset, { seed: 31n, distanceKm: 50 });
  const sync = new ClockSync({ repRateHz: 1e9, pattern: alicePatternFromSeed(link.preset, 32n), maxAcquireSpanPs: 1.6e11 });
  let emitted = 0;
  for (let i = 0; i < 6; i++) emitted += sync.push(link.nextPulses(3e7).tags).pulseIndex.length;
  const s = sync.state();
  t.notOk(s.locked, 'not locked');
  t.equal(emitted, 0, 'nothing emitted');
  t.ok(s.stats.acquisitions >= 1 && s.confidence < 8, `tried ${s.stats.acquisitions} times, best confidence ${s.confidence.toFixed(1)}`);
});

t.test('bad input is refused with a clear error', async (t) => {
  const preset = loadLinkPreset('reference-decoy');
  const pattern = alicePatternFromSeed(preset, 1n);
  t.throws(() => new ClockSync({ repRateHz: 0, pattern }), { code: 'BAD_REP_RATE' });
  const s = new ClockSync({ repRateHz: 1e9, pattern });
  t.throws(() => s.push({ timePs: new BigInt64Array(3), channel: new Uint8Array(2) }), { code: 'BAD_BATCH' });
  t.same(s.push({ timePs: new BigInt64Array(0), channel: new Uint8Array(0) }).pulseIndex.length, 0);
  void tagTimesToNumbers;
});

t.test('acceptance window and channel selection', async (t) => {
  const preset = loadLinkPreset('reference-decoy', { clock: { offsetPs: 1e8, driftPpm: 3, jitterPs: 5 } });
  const link = new EmulatedLink(preset, { seed: 22n, distanceKm: 50 });
  const b = link.nextPulses(2.5e8);
  const sigma = Math.hypot(preset.detector.jitterPs, 5);
  const s = new ClockSync({ repRateHz: 1e9, pattern: alicePatternFromSeed(link.preset, 22n), windowPs: sigma });
  const out = s.push(b.tags);
  const st = s.state();
  const kept = out.pulseIndex.length / (out.pulseIndex.length + st.stats.outsideWindow);
  // A +-1 sigma window keeps 68.3 % of a Gaussian peak.
  t.ok(Math.abs(kept - 0.683) < 0.02, `kept ${kept.toFixed(3)} inside +-1 sigma (0.683 +- 0.02)`);
  t.ok(out.residualPs.every((r) => Math.abs(r) <= sigma), 'every residual inside the window');
  const only1 = new ClockSync({ repRateHz: 1e9, pattern: alicePatternFromSeed(link.preset, 22n), channels: [1] });
  const o1 = only1.push(b.tags);
  t.ok(o1.channel.length > 0 && o1.channel.every((c) => c === 1), 'only channel 1 indexed');
  t.ok(only1.state().stats.ignoredChannel > 0, 'other channels counted as ignored');
});
