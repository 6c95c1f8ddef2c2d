// A triangle A-B, B-C, A-C as a user starts it (`qkd run --emulated --topology triangle.json`,
// every link and site KMS its own process). Keys A->C go direct over A-C; with the A-C link's two
// KMS processes killed, the next key A->C goes through B (the same request routes around the
// failure); with the A-B link's KMSs frozen (SIGSTOP: a link that hangs rather than drops), keys
// A->B go through C. Every key arrives once, the same at both ends.
import t, { type Test } from 'tap';
import { rmSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { JsonClient } from '../../src/delivery/http.ts';
import { relayedKeys, saeClient, startNetwork } from '../../src/testkit/network.ts';
import { until } from '../../src/testkit/run.ts';

t.setTimeout(1_500_000);
const fixtures = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

/** One key from `from` (master) to `to` (slave) by enc_keys then dec_keys; returns its path. */
async function oneKey(t: Test, from: JsonClient, to: JsonClient, master: string, slave: string): Promise<string[]> {
  const enc = await relayedKeys(from, slave, 1, 600_000);
  const id = enc.body.keys[0].key_ID;
  const dec = await to.request('POST', `/api/v1/keys/${master}/dec_keys`, { key_IDs: [{ key_ID: id }] });
  t.equal(dec.body.keys?.[0]?.key, enc.body.keys[0].key, `${master} and ${slave} hold the same key`);
  const again = await to.request('POST', `/api/v1/keys/${master}/dec_keys`, { key_IDs: [{ key_ID: id }] });
  t.equal(again.status, 400, 'and only once');
  return enc.body.keys[0].key_extension.path;
}


t.test('triangle: direct, then around a killed A-C link, then around a frozen A-B link', async (t) => {
  const net = startNetwork(join(fixtures, 'triangle.json'));
  const frozen: number[] = [];
  t.teardown(() => {
    if (!t.passing()) t.comment(`qkd run said:\n${net.lines.slice(-25).join('\n')}`);
    for (const pid of frozen) process.kill(pid, 'SIGCONT');
    net.p.kill('SIGKILL');
  });
  const m = await net.manifest();
  t.same(Object.keys(m.links), ['A-B', 'B-C', 'A-C'], 'three links');
  const a = saeClient(m, 'A', 'saeA');
  const b = saeClient(m, 'B', 'saeB');
  const c = saeClient(m, 'C', 'saeC');
  t.teardown(() => [a, b, c].forEach((x) => x.close()));
  // Every link holds key at both of its sites before the routing checks.
  await until('key on every link', async () => {
    const counts = await Promise.all([a, c].map(async (x) => (await x.request('GET', '/api/v1/relay/status').catch(() => undefined))?.body?.links));
    const all = counts.flatMap((l) => (l ? Object.values(l) as { storedKeys: number | null }[] : [{ storedKeys: 0 }]));
    return all.length === 4 && all.every((x) => (x.storedKeys ?? 0) >= 8) ? true : undefined;
  }, 900_000);
  t.same(await oneKey(t, a, c, 'saeA', 'saeC'), ['A', 'C'], 'A->C direct over A-C');

  // Kill the A-C link's KMSs: the next request finds A-C down and goes through B.
  for (const n of ['kms-alice', 'kms-bob']) process.kill(m.links['A-C'].pids[n]!, 'SIGKILL');
  t.same(await oneKey(t, a, c, 'saeA', 'saeC'), ['A', 'B', 'C'], 'A->C through B with A-C killed');

  // Freeze the A-B link's KMSs: A's link poll times out, A-B is left out; A->B goes through C.
  for (const n of ['kms-alice', 'kms-bob']) {
    const pid = m.links['A-B'].pids[n]!;
    process.kill(pid, 'SIGSTOP');
    frozen.push(pid);
  }
  await until('A sees A-B unreachable', async () => {
    const st = await a.request('GET', '/api/v1/relay/status');
    return st.body.links['A-B'].reachable === false ? true : undefined;
  }, 60_000);
  // By now the killed A-C KMSs have been restarted by the link's supervisor: A-C carries again.
  t.same(await oneKey(t, a, b, 'saeA', 'saeB'), ['A', 'C', 'B'], 'A->B through C with A-B frozen');
  for (const pid of frozen.splice(0)) process.kill(pid, 'SIGCONT');

  net.p.kill('SIGINT');
  const { code } = await net.done;
  t.equal(code, 0, 'clean exit on SIGINT');
  rmSync(net.dir, { recursive: true, force: true });
});
