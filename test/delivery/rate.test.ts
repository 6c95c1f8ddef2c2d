// QoS rates on the push path: the node stays within max_bps and reports a delivered rate below
// min_bps, over real mutual TLS against the reference KMS.
import tap from 'tap';
import { backendTap } from '../../src/testkit/postgres.ts';
import { randomBytes } from 'node:crypto';
import { startLink, until } from '../../src/testkit/delivery.ts';
import type { Alarm } from '../../src/delivery/node.ts';

// Every test runs on SQLite and on PostgreSQL (`[postgres]`: a named skip without the server binaries).
const t = backendTap(tap);

t.test('max_bps bounds the push rate; min_bps shortfalls are reported', async (t) => {
  const chunkBits = 32 * 8;
  const maxBps = chunkBits * 20; // 20 chunks per second
  const L = await startLink({ kms: { qos: { max_bps: maxBps, min_bps: maxBps - 1 } },
    node: { rateWindowMs: 250, maxInFlight: 4 } });
  t.teardown(() => L.close());
  t.equal(L.nodeA.streamInfo(L.keyStreamId)?.qos.max_bps, maxBps, 'the requested QoS was honoured');
  const alarms: Alarm[] = [];
  L.nodeA.on('alarm', (a) => alarms.push(a));
  await until(() => alarms.some((a) => a.code === 'BELOW_MIN_BPS'), 3000, 'min_bps alarm while idle');
  t.ok(L.nodeA.metrics().belowMinBps >= 1);
  const n = 30;
  const bytes = randomBytes(32 * n);
  const t0 = Date.now();
  await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
  await until(() => L.nodeA.metrics().acked === n, 10_000, 'all acked');
  const s = (Date.now() - t0) / 1000;
  // A burst of at most max(4 chunks in flight, 0.1 s of max_bps) = 4 chunks, then 20 chunks/s.
  const minS = (n - 4) / 20;
  t.ok(s >= minS * 0.95, `30 chunks took ${s.toFixed(2)} s, at least ${minS.toFixed(2)} s at max_bps`);
  t.ok(L.kmsA.metrics().held === n);
});
