// Storage thresholds per SAE pair (KmsOptions.watermarks): one alarm per crossing of the low and
// high watermarks, the pair's security level counted, and the figures in metrics().
import tap from 'tap';
import { backendTap } from '../../src/testkit/postgres.ts';
import { randomBytes } from 'node:crypto';
import { startLink, until } from '../../src/testkit/delivery.ts';

// Every test runs on SQLite and on PostgreSQL (`[postgres]`: a named skip without the server binaries).
const t = backendTap(tap);

t.test('low/high watermarks per SAE pair: alarms on crossings, metrics, security level', async (t) => {
  const L = await startLink({ kms: { expireEveryMs: 3_600_000, watermarks: [
    { master: 'saeA', slave: 'saeB', lowKeys: 2, highKeys: 4 },
    { master: 'saeA', slave: 'saeC', lowKeys: 1, highKeys: 100, maxEpsilon: 1e-9 },
  ] } });
  t.teardown(() => L.close());
  const alarms: string[] = [];
  L.kmsA.on('alarm', (a) => { if (a.code.startsWith('KEYS_')) alarms.push(`${a.code} ${a.message.split(':')[0]}`); });
  let acked = 0;
  const fill = async (n: number, prov: Record<string, unknown>) => {
    const b = randomBytes(32 * n);
    await Promise.all([L.nodeA.offer(b, prov), L.nodeB.offer(b, prov)]);
    acked += n;
    await until(() => L.kmsA.metrics().acked === acked && L.kmsB.metrics().acked === acked, 10_000, 'acks');
  };
  L.kmsA.expireNow();
  t.same(alarms.splice(0), ['KEYS_LOW SAE pair saeA>saeB', 'KEYS_LOW SAE pair saeA>saeC'], 'both pairs start empty');
  await fill(3, { epsilon: 1e-6 });
  L.kmsA.expireNow();
  t.same(alarms.splice(0), ['KEYS_LEVEL_OK SAE pair saeA>saeB'], 'keys at 1e-6 do not count for the 1e-9 pair');
  L.kmsA.expireNow();
  t.same(alarms, [], 'no alarm without a crossing');
  await fill(3, { epsilon: 1e-12 });
  L.kmsA.expireNow();
  t.same(alarms.splice(0), ['KEYS_HIGH SAE pair saeA>saeB', 'KEYS_LEVEL_OK SAE pair saeA>saeC']);
  t.same(L.kmsA.metrics().watermarks, {
    'saeA>saeB': { availableKeys: 6, state: 'high', lowKeys: 2, highKeys: 4 },
    'saeA>saeC': { availableKeys: 3, state: 'ok', lowKeys: 1, highKeys: 100 },
  });
  t.equal((await L.sae('saeA', L.kmsA).req('POST', '/api/v1/keys/saeB/enc_keys', { number: 3 })).status, 200);
  L.kmsA.expireNow();
  t.same(alarms.splice(0), ['KEYS_LEVEL_OK SAE pair saeA>saeB'], 'back between the watermarks');
});
