import t from 'tap';
import { SliTracker, WindowedSum } from '../../src/telemetry/sli.ts';
import { RandomnessMonitor } from '../../src/telemetry/randomness.ts';
import { createQkdMetrics } from '../../src/telemetry/qkd-metrics.ts';
import { parsePrometheus, pseudoRandomBytes } from '../../src/testkit/telemetry.ts';

t.test('windowed sums forget old buckets', async (t) => {
  const w = new WindowedSum(10);
  w.add(5, 0);
  w.add(7, 9_999);
  t.same(w.total(9_999), { sum: 12, count: 2 });
  t.same(w.total(10_500), { sum: 7, count: 1 }, 'second 0 left the 10 s window');
  t.same(w.total(9_999, 1), { sum: 7, count: 1 }, 'sub-window');
  w.add(1, 20_000); // reuses bucket 0
  t.same(w.total(20_000), { sum: 1, count: 1 });
});

t.test('SLIs from a scripted hour', async (t) => {
  let now = 1_000_000;
  const mon = new RandomnessMonitor();
  const s = new SliTracker({ windowSeconds: 3600, clock: () => now, randomness: mon });
  s.setCalibrationTime(now - 7200_000);
  // 0..600 s: up; 600..900 s: down; 900..1200 s: up. One record per second.
  for (let sec = 0; sec <= 1200; sec++) {
    now = 1_000_000 + sec * 1000;
    s.recordLinkState(!(sec >= 600 && sec < 900));
    if (sec % 10 === 0 && !(sec >= 600 && sec < 900)) {
      s.recordSecretBits(10_000);
      s.recordQber(30, 1000);
    }
    s.recordDetections(0, 50_000);
    s.recordDetections(1, sec >= 1195 ? 0 : 20_000);
  }
  for (let i = 1; i <= 100; i++) s.recordRtt(i / 1000);
  s.recordDelivery(true);
  s.recordDelivery(true);
  s.recordDelivery(true);
  s.recordDelivery(false);
  mon.offer(pseudoRandomBytes(2048, 3));
  const snap = s.snapshot();
  t.ok(Math.abs(snap.linkAvailabilityRatio! - 900 / 1200) < 0.002, `availability ${snap.linkAvailabilityRatio}`);
  t.equal(snap.secretBits, 91 * 10_000, '61 + 30 blocks while up');
  t.ok(Math.abs(snap.secretKeyRateBitsPerSecond! - 910_000 / 1200) < 1e-9, 'rate over the covered 1200 s');
  t.ok(Math.abs(snap.qber! - 0.03) < 1e-12);
  t.equal(snap.detectorCountRatesHz['0'], 50_000, 'per-second rate over the last 10 s');
  t.equal(snap.detectorCountRatesHz['1'], (4 * 20_000) / 10, 'channel 1 dark for seconds 1195..1200: 4 of the last 10 s counted');
  t.equal(snap.classicalRttSeconds.p50, 0.051);
  t.equal(snap.classicalRttSeconds.p99, 0.1);
  t.equal(snap.keyDeliverySuccessRatio, 0.75);
  t.equal(snap.calibrationAgeSeconds, 7200 + 1200);
  t.equal(snap.randomness?.sampledBlocks, 1);
  // An hour later with no new data, the window has emptied.
  const later = s.snapshot(now + 3700_000);
  t.equal(later.secretBits, 0);
  t.equal(later.qber, null);
  t.equal(later.keyDeliverySuccessRatio, null);
  // Export to Prometheus gauges.
  const m = createQkdMetrics();
  m.registry.onCollect(() => s.exportTo(m));
  const fams = parsePrometheus(m.registry.render());
  t.ok(Math.abs(fams.get('qkd_link_availability_ratio')!.samples[0].value - 0.75) < 0.002);
  t.equal(fams.get('qkd_key_delivery_success_ratio')!.samples[0].value, 0.75);
  t.same(fams.get('qkd_randomness_test_pvalue')!.samples.map((x) => x.labels.test), ['frequency', 'runs', 'serial_1', 'serial_2']);
  t.equal(fams.get('qkd_randomness_healthy')!.samples[0].value, 1);
});

t.test('randomness snapshot from another process', async (t) => {
  const mon = new RandomnessMonitor();
  mon.offer(pseudoRandomBytes(1024, 9));
  const wire = JSON.parse(JSON.stringify(mon.snapshot())); // as it would cross a process boundary
  const s = new SliTracker({ clock: () => 0 });
  t.equal(s.snapshot().randomness, null);
  s.setRandomnessSnapshot(wire);
  t.same(s.snapshot().randomness, mon.snapshot());
});
