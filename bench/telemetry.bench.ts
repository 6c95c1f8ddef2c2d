/**
 * Telemetry costs on the node's hot paths: the randomness health check on a sampled output block
 * (vs the bit-string reference of src/testkit), metric recording and scrape rendering, and a log
 * record through the redaction layer (vs a bare JSON.stringify).
 */
import { medianSeconds, type BenchResult } from './stats.ts';
import { runRandomnessChecks } from '../src/telemetry/randomness.ts';
import { createQkdMetrics } from '../src/telemetry/qkd-metrics.ts';
import { createLogger } from '../src/telemetry/logger.ts';
import { pseudoRandomBytes, refFrequency, refRuns, refSerial, unpackBits } from '../src/testkit/telemetry.ts';

export async function run(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];

  // Randomness checks: 2^20-bit block (the monitor's default cap), serial m = 8.
  const nBits = 1 << 20;
  const block = pseudoRandomBytes(nBits / 8, 42);
  const fast = await medianSeconds(() => runRandomnessChecks(block, { serialM: 8 }), 7);
  const refBits = 1 << 18; // the reference is slow: a quarter of the block, scaled per bit
  const s = unpackBits(block, refBits);
  const ref = await medianSeconds(() => {
    refFrequency(s);
    refRuns(s);
    refSerial(s, 8);
  }, 3);
  out.push({
    name: 'randomness health check (frequency+runs+serial m=8)', value: nBits / fast / 1e6, unit: 'Mbit/s', better: 'higher',
    params: { nBits, serialM: 8 }, baseline: refBits / ref / 1e6,
  });

  // Metric recording: detections per channel, the per-batch call.
  const m = createQkdMetrics();
  const N = 1_000_000;
  const inc = await medianSeconds(() => {
    for (let i = 0; i < N; i++) m.detections.inc({ channel: i & 3 }, 64);
  }, 5);
  out.push({ name: 'counter inc with a label', value: N / inc / 1e6, unit: 'M ops/s', better: 'higher', params: { labels: 1, series: 4 } });

  // Scrape rendering with a realistic registry (16 channels, histograms populated).
  for (let ch = 0; ch < 16; ch++) m.detectorCountRate.set({ channel: ch }, 1e5 + ch);
  for (let i = 0; i < 1000; i++) {
    m.keyPushLatency.observe({ kms: i & 1 ? 'alice' : 'bob' }, i / 1e4);
    m.classicalRtt.observe(i / 1e5);
  }
  const scrape = await medianSeconds(() => m.registry.render(), 21);
  out.push({ name: 'Prometheus scrape render', value: scrape * 1e3, unit: 'ms', better: 'lower', params: { families: m.registry.names().length } });

  // A typical log record through the redaction layer.
  let sinkBytes = 0;
  const log = createLogger({ component: 'bench', sink: (l) => void (sinkBytes += l.length) });
  const fields = { blockId: 12345, keyId: '123e4567-e89b-12d3-a456-426614174000', qber: 0.031, siftedBits: 1 << 20, url: 'https://kms.example:8443/api/v1/kms/etsi004/key-material', key: new Uint8Array(32) };
  const L = 20_000;
  const logged = await medianSeconds(() => {
    for (let i = 0; i < L; i++) log.info('block verified and pushed', fields);
  }, 5);
  const bare = await medianSeconds(() => {
    for (let i = 0; i < L; i++) sinkBytes += JSON.stringify({ ts: new Date().toISOString(), level: 'info', msg: 'block verified and pushed', ...fields, key: undefined }).length;
  }, 5);
  out.push({ name: 'log record with redaction', value: L / logged / 1e3, unit: 'k records/s', better: 'higher', params: { fields: 6 }, baseline: L / bare / 1e3 });
  void sinkBytes;
  return out;
}
