// Lock kept over 10 emulated minutes with a wandering drift, and automatic re-acquisition after a
// clock jump. To keep the runtime small the link emits 1 ms of data every 100 ms (SparseLink turns
// the source and dark counts off in the gaps); the tracking filter must bridge every gap.
import t from 'tap';
import { SparseLink } from '../../src/testkit/timing.ts';
import { alicePatternFromSeed } from '../../src/lab/pattern.ts';
import { ClockSync } from '../../src/timing/sync.ts';

class Checker {
  truth = new Float64Array(1 << 20);
  n = 0;
  photons = 0;
  wrong = 0;
  add(truth: Float64Array): void {
    if (this.n + truth.length > this.truth.length) { const x = new Float64Array(2 * (this.n + truth.length)); x.set(this.truth.subarray(0, this.n)); this.truth = x; }
    this.truth.set(truth, this.n); this.n += truth.length;
  }
  check(out: { pulseIndex: Float64Array; tagSeq?: Float64Array }): void {
    for (let i = 0; i < out.pulseIndex.length; i++) {
      const tr = this.truth[out.tagSeq![i]];
      if (tr < 0) continue;
      this.photons++;
      if (tr !== out.pulseIndex[i]) this.wrong++;
    }
  }
}

t.test('keeps lock for 10 emulated minutes with a wandering drift', async (t) => {
  const seed = 41n;
  const sl = new SparseLink('reference-decoy', {
    seed, distanceKm: 50, overrides: { clock: { offsetPs: -9e8, driftPpm: -19, jitterPs: 5 } },
    // +-0.5 ppm over 4 minutes: a drift rate of 0.013 ppm/s, far faster than an oven-controlled clock.
    wander: { amplitudePpm: 0.5, periodS: 240 },
  });
  const sync = new ClockSync({ repRateHz: 1e9, pattern: alicePatternFromSeed(sl.preset, seed), withTagSeq: true });
  const chk = new Checker();
  const feed = (pulses: number) => { const b = sl.on(pulses); chk.add(b.truthPulse); chk.check(sync.push(b.tags)); };
  for (let i = 0; i < 4; i++) feed(5e7); // 200 ms continuous
  let minDrift = Infinity, maxDrift = -Infinity;
  for (let w = 0; w < 6000; w++) {
    sl.skip(99e6);
    feed(1e6);
    if (w % 100 === 0) { const d = sync.state().driftPpm; minDrift = Math.min(minDrift, d); maxDrift = Math.max(maxDrift, d); }
  }
  const s = sync.state();
  t.ok(sl.link.pulsesDone * 1e-12 * 1e3 >= 600, `emulated ${(sl.link.pulsesDone / 1e9).toFixed(0)} s`);
  t.ok(s.locked, 'still locked');
  t.equal(s.stats.lockLosses, 0, 'never lost lock');
  t.ok(chk.photons > 5e6, `${chk.photons} photon detections checked`);
  t.ok(chk.wrong / chk.photons < 1e-6, `index errors ${chk.wrong}/${chk.photons}`);
  t.ok(maxDrift - minDrift > 0.8, `tracked drift spanned ${minDrift.toFixed(3)}..${maxDrift.toFixed(3)} ppm (wander +-0.5)`);
  t.ok(Math.abs(s.driftPpm - sl.driftAt(sl.link.pulsesDone)) < 0.01, `final drift ${s.driftPpm.toFixed(4)} vs ${sl.driftAt(sl.link.pulsesDone).toFixed(4)} ppm`);
});

t.test('re-acquires automatically after the clock jumps', async (t) => {
  const seed = 42n;
  const sl = new SparseLink('reference-decoy', { seed, distanceKm: 50, overrides: { clock: { offsetPs: 2.5e8, driftPpm: 6, jitterPs: 5 } } });
  const sync = new ClockSync({ repRateHz: 1e9, pattern: alicePatternFromSeed(sl.preset, seed), withTagSeq: true });
  const chk = new Checker();
  const feed = (pulses: number) => { const b = sl.on(pulses); chk.add(b.truthPulse); chk.check(sync.push(b.tags)); };
  for (let i = 0; i < 4; i++) feed(5e7);
  t.ok(sync.state().locked, 'locked before the jump');
  const before = { photons: chk.photons, wrong: chk.wrong };
  t.equal(before.wrong, 0);
  // Someone resets Bob's clock: +123.456789 us offset jump.
  sl.link.setClock({ offsetPs: 2.5e8 + 123456789 });
  const jumpAt = sl.link.expectedTagTimePs(sl.link.pulsesDone, 0);
  for (let i = 0; i < 8; i++) feed(5e7);
  const s = sync.state();
  t.ok(s.stats.lockLosses >= 1, 'lock loss detected');
  t.ok(s.lastLockLossAt! >= jumpAt && s.lastLockLossAt! < jumpAt + 20e9, `within 20 ms of the jump (${((s.lastLockLossAt! - jumpAt) / 1e9).toFixed(1)} ms)`);
  t.ok(s.locked, 're-locked');
  t.ok(s.stats.acquisitions >= 2);
  // Detections emitted after re-lock are right.
  const c2 = new Checker();
  const sync2Start = chk.n;
  void sync2Start;
  const b = sl.on(5e7);
  chk.add(b.truthPulse);
  const out = sync.push(b.tags);
  c2.truth = chk.truth; c2.n = chk.n;
  c2.check(out);
  t.ok(c2.photons > 5e4 && c2.wrong === 0, `after re-lock ${c2.wrong}/${c2.photons} wrong`);
  t.ok(Math.abs(s.offsetPs - sl.link.expectedTagTimePs(0, s.refChannel)) < 2000, 'new offset found');
});
