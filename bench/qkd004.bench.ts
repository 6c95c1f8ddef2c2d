/**
 * ETSI GS QKD 004 for applications (src/delivery/etsi004-app.ts) over mutual TLS 1.3, all four
 * parties in one process: `apps` streams (1 and 8) each loop GET_KEY of one 32-byte key at Alice's
 * KMS then the same index at Bob's KMS, from a store filled first. Keys/s (pairs delivered to both
 * applications) and p50/p99 latency of one pair; baseline: the same loop over ETSI 014 (enc_keys at
 * Alice's KMS, dec_keys at Bob's). One run per figure (a link start costs seconds), not a median.
 */
import { randomBytes } from 'node:crypto';
import { percentiles } from '../src/delivery/http.ts';
import { startLink, until } from '../src/testkit/delivery.ts';
import type { BenchResult } from './stats.ts';

const PER_APP = 60;

async function loop(apps: number, via: '004' | '014'): Promise<{ keysPerS: number; p50: number; p99: number }> {
  const n = apps * PER_APP;
  const L = await startLink({ kms: { linkKeyRateBps: 1e9, rateLimit: { keysPerSecond: 0, burst: 0 } } });
  try {
    const bytes = randomBytes(32 * n);
    await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
    await until(() => L.kmsA.metrics().acked === n && L.kmsB.metrics().acked === n, 120_000, 'acks');
    const a = L.sae('saeA', L.kmsA);
    const b = L.sae('saeB', L.kmsB);
    const ms: number[] = [];
    const one = async () => {
      let id = '';
      if (via === '004') {
        const o = await a.req('POST', '/api/v1/qkd004/open_connect', { source: 'saeA', destination: 'saeB', qos: { timeout: 5000 } });
        id = o.body.key_stream_ID;
        await b.req('POST', '/api/v1/qkd004/open_connect', { source: 'saeA', destination: 'saeB', key_stream_ID: id });
      }
      for (let i = 0; i < PER_APP; i++) {
        const t0 = performance.now();
        if (via === '004') {
          const x = await a.req('POST', '/api/v1/qkd004/get_key', { key_stream_ID: id, index: i });
          const y = await b.req('POST', '/api/v1/qkd004/get_key', { key_stream_ID: id, index: i });
          if (x.body.status !== 0 || y.body.key_buffer !== x.body.key_buffer) throw new Error(`get_key ${x.body.status} ${y.body.status}`);
        } else {
          const enc = await a.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 1 });
          const dec = await b.req('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: enc.body.keys?.[0]?.key_ID }] });
          if (dec.status !== 200) throw new Error(`enc ${enc.status} dec ${dec.status}`);
        }
        ms.push(performance.now() - t0);
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: apps }, one));
    const s = (performance.now() - t0) / 1000;
    const p = percentiles(ms);
    return { keysPerS: n / s, p50: p.p50, p99: p.p99 };
  } finally {
    await L.close();
  }
}

export async function run(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  for (const apps of [1, 8]) {
    const r = await loop(apps, '004');
    const base = await loop(apps, '014');
    const params = { apps, keysPerApp: PER_APP, keyBytes: 32 };
    out.push({ name: `qkd004.get_key_pair.apps${apps}.keys_per_s`, value: r.keysPerS, unit: 'keys/s', better: 'higher', params,
      baseline: base.keysPerS });
    out.push({ name: `qkd004.get_key_pair.apps${apps}.latency_p50`, value: r.p50, unit: 'ms', better: 'lower', params, baseline: base.p50 });
    out.push({ name: `qkd004.get_key_pair.apps${apps}.latency_p99`, value: r.p99, unit: 'ms', better: 'lower', params, baseline: base.p99 });
  }
  return out;
}
