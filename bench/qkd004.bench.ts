/**
 * ETSI GS QKD 004 for applications (src/delivery/etsi004-app.ts) over mutual TLS 1.3, all four
 * parties in one process: `apps` streams (1 and 8) each loop GET_KEY of one 32-byte key at Alice's
 * KMS then the same index at Bob's KMS, from a store filled first. Keys/s (pairs delivered to both
 * applications) and p50/p99 latency of one pair; baseline: the same loop over ETSI 014 (enc_keys at
 * Alice's KMS, dec_keys at Bob's). One run per figure (a link start costs seconds), not a median.
 *
 * Contention: the nodes push 40 chunks/s (10 240 bit/s, `linkKeyRateBps`) for 10 s while a greedy
 * ETSI 014 application drains the store as fast as it can and one 004 stream with min_bps
 * 5 120 bit/s asks for 20 keys/s (timeout 1 s): the stream's delivered rate and failed GET_KEYs,
 * and what 014 got (baseline: the 004 stream's rate without min_bps, i.e. best effort).
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function contention(minBps: number): Promise<{ streamKeysPerS: number; failed: number; keys014PerS: number;
  suppliedPerS: number }> {
  const L = await startLink({ kms: { linkKeyRateBps: 10_240, expireEveryMs: 100, rateLimit: { keysPerSecond: 0, burst: 0 } } });
  try {
    const a = L.sae('saeA', L.kmsA);
    const b = L.sae('saeB', L.kmsB);
    const o = await a.req('POST', '/api/v1/qkd004/open_connect', { source: 'saeA', destination: 'saeB',
      qos: { min_bps: minBps, timeout: 1000 } });
    const id = o.body.key_stream_ID;
    await b.req('POST', '/api/v1/qkd004/open_connect', { source: 'saeA', destination: 'saeB', key_stream_ID: id });
    const endAt = performance.now() + 10_000;
    const push = (async () => {
      for (let k = 0; performance.now() < endAt; k++) {
        const c = randomBytes(32);
        await Promise.all([L.nodeA.offer(c, {}), L.nodeB.offer(c, {})]);
        await sleep(25);
      }
    })();
    let got014 = 0;
    const greedy = (async () => {
      while (performance.now() < endAt) {
        const enc = await a.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 1 });
        if (enc.status !== 200) {
          await sleep(5);
          continue;
        }
        await b.req('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: enc.body.keys[0].key_ID }] });
        got014++;
      }
    })();
    let ok = 0;
    let failed = 0;
    const app = (async () => {
      for (let i = 0; performance.now() < endAt; i++) {
        const t0 = performance.now();
        const x = await a.req('POST', '/api/v1/qkd004/get_key', { key_stream_ID: id, index: i });
        if (x.body.status === 0) {
          await b.req('POST', '/api/v1/qkd004/get_key', { key_stream_ID: id, index: i });
          ok++;
        } else failed++;
        await sleep(Math.max(0, 50 - (performance.now() - t0)));
      }
    })();
    await Promise.all([push, greedy, app]);
    return { streamKeysPerS: ok / 10, failed, keys014PerS: got014 / 10, suppliedPerS: L.kmsA.metrics().acked / 10 };
  } finally {
    await L.close();
  }
}

export async function run(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  const g = await contention(5120);
  const be = await contention(0);
  out.push({ name: 'qkd004.contention.min_bps_stream.keys_per_s', value: g.streamKeysPerS, unit: 'keys/s', better: 'higher',
    params: { min_bps: 5120, asked_keys_per_s: 20, link_bps: 10_240, failed: g.failed, keys014_per_s: g.keys014PerS,
      supplied_per_s: g.suppliedPerS },
    baseline: be.streamKeysPerS });
  console.error(`bench qkd004: best effort (min_bps 0): ${be.streamKeysPerS} keys/s, ${be.failed} failed, 014 ${be.keys014PerS} keys/s, supplied ${be.suppliedPerS}/s`);
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
