import t from 'tap';
import { MetricsRegistry, renderPrometheus, formatValue } from '../../src/telemetry/metrics.ts';
import { createQkdMetrics } from '../../src/telemetry/qkd-metrics.ts';
import { ConfigError } from '../../src/errors.ts';
import { parsePrometheus } from '../../src/testkit/telemetry.ts';

t.test('counters, gauges and histograms round-trip through the text format', async (t) => {
  const r = new MetricsRegistry();
  const det = r.counter({ name: 'qkd_detections_total', help: 'Detections per channel.', labelNames: ['channel'] });
  const q = r.gauge({ name: 'qkd_qber_ratio', help: 'QBER "per" basis\\ (line\nbreak).', labelNames: ['basis'] });
  const h = r.histogram({ name: 'qkd_key_push_latency_seconds', help: 'Push latency.', buckets: [0.01, 0.1, 1] });
  const weird = r.gauge({ name: 'qkd_weird', help: 'Escapes.', labelNames: ['name'] });
  det.inc({ channel: 1 }, 10);
  det.inc({ channel: 1 });
  det.inc({ channel: 2 }, 5);
  q.set({ basis: 'Z' }, 0.0312);
  q.set({ basis: 'X' }, 1e-7);
  for (const v of [0.005, 0.01, 0.05, 0.5, 3]) h.observe(v);
  weird.set({ name: 'a "quoted"\\ back\nslash' }, Infinity);
  const text = renderPrometheus(r);
  const fams = parsePrometheus(text);
  t.equal(fams.get('qkd_detections_total')?.type, 'counter');
  t.same(fams.get('qkd_detections_total')?.samples.map((s) => [s.labels.channel, s.value]), [['1', 11], ['2', 5]]);
  t.equal(fams.get('qkd_qber_ratio')?.help, 'QBER "per" basis\\ (line\nbreak).', 'HELP escaping round-trips');
  t.same(fams.get('qkd_qber_ratio')?.samples.map((s) => s.value), [0.0312, 1e-7]);
  const hist = fams.get('qkd_key_push_latency_seconds')!;
  t.equal(hist.type, 'histogram');
  const buckets = hist.samples.filter((s) => s.name.endsWith('_bucket')).map((s) => [s.labels.le, s.value]);
  // 0.01 is in the le=0.01 bucket (upper bounds are inclusive); cumulative counts.
  t.same(buckets, [['0.01', 2], ['0.1', 3], ['1', 4], ['+Inf', 5]]);
  t.equal(hist.samples.find((s) => s.name.endsWith('_count'))?.value, 5);
  t.ok(Math.abs(hist.samples.find((s) => s.name.endsWith('_sum'))!.value - 3.565) < 1e-12);
  const w = fams.get('qkd_weird')!.samples[0];
  t.equal(w.labels.name, 'a "quoted"\\ back\nslash', 'label value escaping round-trips');
  t.equal(w.value, Infinity);
  t.ok(text.endsWith('\n'));
  t.equal(formatValue(NaN), 'NaN');
  t.equal(formatValue(-Infinity), '-Inf');
});

t.test('misuse is refused with ConfigError codes', async (t) => {
  const r = new MetricsRegistry();
  const c = r.counter({ name: 'x_total', help: 'x', labelNames: ['a'] });
  t.throws(() => r.counter({ name: 'bad-name', help: '' }), { code: 'METRIC_NAME_INVALID' });
  t.throws(() => r.gauge({ name: 'g', help: '', labelNames: ['__x'] }), { code: 'METRIC_LABEL_INVALID' });
  t.throws(() => c.inc({ b: 1 }), { code: 'METRIC_LABELS_MISMATCH' });
  t.throws(() => c.inc({ a: 1 }, -1), { code: 'METRIC_COUNTER_DECREASE' });
  t.throws(() => c.inc({ a: 'f'.repeat(200) }), { code: 'METRIC_LABEL_TOO_LONG' });
  t.throws(() => r.gauge({ name: 'x_total', help: 'x' }), ConfigError, 'same name, other type');
  t.equal(r.counter({ name: 'x_total', help: 'x', labelNames: ['a'] }), c, 'same definition returns the same metric');
  r.histogram({ name: 'lat_seconds', help: '' });
  t.throws(() => r.counter({ name: 'lat_seconds_count', help: '' }), { code: 'METRIC_CONFLICT' });
  t.throws(() => r.histogram({ name: 'h2', help: '', buckets: [1, 1] }), { code: 'METRIC_BUCKETS_INVALID' });
});

t.test('the QKD metric set renders valid exposition with conventional names', async (t) => {
  const m = createQkdMetrics();
  t.equal(createQkdMetrics(m.registry).qber, m.qber, 'idempotent');
  m.qber.set({ basis: 'Z' }, 0.021);
  m.qber.set({ basis: 'X' }, 0.034);
  m.detections.inc({ channel: 0 }, 1000);
  m.blocks.inc({ result: 'aborted', reason: 'qber' });
  m.keyPushLatency.observe({ kms: 'alice' }, 0.012);
  m.syncLocked.set(1);
  let collected = 0;
  m.registry.onCollect(() => {
    collected++;
    m.calibrationAge.set(3600);
  });
  const fams = parsePrometheus(m.registry.render());
  t.equal(collected, 1, 'collectors run on render');
  t.equal(fams.get('qkd_calibration_age_seconds')?.samples[0].value, 3600);
  for (const name of m.registry.names()) {
    const f = fams.get(name)!;
    t.ok(f.help && f.help.length > 5, `${name} has HELP`);
    if (f.type === 'counter') t.match(name, /_total$/, `${name}: counters end in _total`);
    t.match(name, /^qkd_/, `${name}: prefixed`);
  }
  for (const required of ['qkd_qber_ratio', 'qkd_secret_key_rate_bits_per_second', 'qkd_sifted_bits_total', 'qkd_detections_total',
    'qkd_detector_count_rate_hertz', 'qkd_sync_locked', 'qkd_sync_offset_seconds', 'qkd_sync_drift_ppm', 'qkd_reconciliation_efficiency',
    'qkd_blocks_total', 'qkd_key_push_latency_seconds', 'qkd_spool_depth_keys', 'qkd_kms_keys_stored', 'qkd_link_availability_ratio',
    'qkd_classical_rtt_seconds', 'qkd_key_delivery_success_ratio', 'qkd_calibration_age_seconds', 'qkd_randomness_test_pvalue']) {
    t.ok(fams.has(required), `${required} exported`);
  }
  t.same(fams.get('qkd_blocks_total')?.samples[0].labels, { result: 'aborted', reason: 'qber' });
});
