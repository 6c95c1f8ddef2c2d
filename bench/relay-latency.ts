/**
 * Relay latency A -> C through B (part of `npm run bench -- delivery`): a line A-B-C of in-process
 * links (testkit/relay-net.ts: reference KMSs fed by delivery nodes, mutual TLS 1.3 over loopback,
 * fsync on every commit; no optics), one 256-bit key per request, sequential: enc_keys at site A
 * until the key is stored at C, then dec_keys at C. Baseline: the same SAE -> KMS -> SAE round on
 * one link directly (enc_keys + dec_keys at the A-B link KMSs), the cost a relay multiplies.
 * Median (and p90) over KEYS keys, median of 3 runs.
 */
import { JsonClient } from '../src/delivery/http.ts';
import { startRelayNet } from '../src/testkit/relay-net.ts';
import { median, type BenchResult } from './stats.ts';

const KEYS = 25;

function pct(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * q))];
}

async function once(): Promise<{ relay: number[]; direct: number[]; enc: number[] }> {
  const net = await startRelayNet({ sites: ['A', 'B', 'C'], links: [['A', 'B'], ['B', 'C']] }, { keysPerLink: 3 * KEYS + 20 });
  const a = net.sae('A', 'saeA');
  const c = net.sae('C', 'saeC');
  const L = net.links.get('A-B')!;
  const la = new JsonClient({ url: L.kmsA.url, id: 'kmsA' }, { tls: L.pki.tls('saeA') });
  const lb = new JsonClient({ url: L.kmsB.url, id: 'kmsB' }, { tls: L.pki.tls('saeB') });
  try {
    const relay: number[] = [];
    const enc: number[] = [];
    const direct: number[] = [];
    for (let i = 0; i < KEYS; i++) {
      const t0 = performance.now();
      const e = await a.request('POST', '/api/v1/keys/saeC/enc_keys', {});
      const t1 = performance.now();
      const d = await c.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: e.body.keys[0].key_ID }] });
      if (d.body.keys?.[0]?.key !== e.body.keys[0].key) throw new Error(`relay bench: key ${i} differs at C (${e.status}/${d.status})`);
      relay.push(performance.now() - t0);
      enc.push(t1 - t0);
      const s0 = performance.now();
      const de = await la.request('POST', '/api/v1/keys/saeB/enc_keys', {});
      await lb.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: de.body.keys[0].key_ID }] });
      direct.push(performance.now() - s0);
    }
    return { relay, direct, enc };
  } finally {
    a.close();
    c.close();
    la.close();
    lb.close();
    await net.close();
  }
}

export async function relayResults(): Promise<BenchResult[]> {
  const runs = [await once(), await once(), await once()];
  const params = { path: 'A-B-C', keyBits: 256, keysPerRun: KEYS, repeats: 3, sequential: true, tls: 'mutual TLS 1.3',
    durability: 'SQLite WAL synchronous=FULL', baseline: 'enc_keys + dec_keys on one link directly' };
  const m = (f: (r: Awaited<ReturnType<typeof once>>) => number) => median(runs.map(f));
  return [
    { name: 'delivery.relay_a_to_c.latency_p50', value: m((r) => median(r.relay)), unit: 'ms', better: 'lower', params,
      baseline: m((r) => median(r.direct)) },
    { name: 'delivery.relay_a_to_c.latency_p90', value: m((r) => pct(r.relay, 0.9)), unit: 'ms', better: 'lower', params,
      baseline: m((r) => pct(r.direct, 0.9)) },
    { name: 'delivery.relay_a_to_c.enc_keys_p50', value: m((r) => median(r.enc)), unit: 'ms', better: 'lower', params },
  ];
}
