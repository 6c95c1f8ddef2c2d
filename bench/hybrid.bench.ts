/**
 * Hybrid fallback (src/delivery/hybrid.ts): the ML-KEM-768 exchange in-process (key pair +
 * encapsulation + decapsulation + HKDF of one 256-bit key at each side), and SAE -> KMS -> SAE
 * latency of an enc_keys + dec_keys for one 256-bit key over mutual TLS between two KMSs, served
 * from ML-KEM (policy when-short, no QKD key) against served from QKD key (baseline: what the
 * fallback adds on top). Medians.
 */
import { randomBytes } from 'node:crypto';
import { native } from '../src/core/native.ts';
import { hybridContext } from '../src/delivery/hybrid.ts';
import { startLink, until } from '../src/testkit/delivery.ts';
import { median, medianSeconds, type BenchResult } from './stats.ts';

const N = 40;

async function e2eMs(qkd: boolean): Promise<number> {
  const L = await startLink({ kms: { hybrid: { 'saeA->saeB': 'when-short' }, rateLimit: { keysPerSecond: 0, burst: 0 } } });
  try {
    if (qkd) {
      const bytes = randomBytes(32 * N);
      await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
      await until(() => L.kmsA.metrics().acked === N && L.kmsB.metrics().acked === N, 60_000, 'acks');
    }
    const a = L.sae('saeA', L.kmsA);
    const b = L.sae('saeB', L.kmsB);
    const ms: number[] = [];
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      const enc = await a.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 1 });
      const dec = await b.req('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: enc.body.keys[0].key_ID }] });
      if (dec.status !== 200) throw new Error(`dec_keys ${dec.status}`);
      ms.push(performance.now() - t0);
    }
    return median(ms);
  } finally {
    await L.close();
  }
}

export async function run(): Promise<BenchResult[]> {
  const ctx = hybridContext({ initiator: 'kmsA', responder: 'kmsB', master: 'saeA', slave: 'saeB', number: 1, size: 256, qkdKeyIds: [] });
  const s = await medianSeconds(() => {
    for (let i = 0; i < 100; i++) {
      const init = new (native().MlKemInitiator)();
      const r = native().mlkemRespond(init.encapsulationKey, ctx, [{ bytes: 32 }]);
      init.finish(r.ciphertext, ctx, [{ bytes: 32 }]);
    }
  });
  const hybrid = await e2eMs(false);
  const qkd = await e2eMs(true);
  return [
    { name: 'hybrid ML-KEM-768 exchange in-process (both sides, one key)', value: (s / 100) * 1e6, unit: 'µs', better: 'lower', params: {} },
    { name: 'hybrid SAE->KMS->SAE latency, one 256-bit key from ML-KEM (baseline: from QKD key)', value: hybrid, unit: 'ms',
      better: 'lower', params: { keys: N }, baseline: qkd },
  ];
}
