// A three-site line A-B-C as a user starts it: `qkd run --emulated --topology line.json` (two
// emulated links, four link KMSs, three site KMSs, all separate processes over real sockets). An
// SAE at A gets keys shared with an SAE at C, relayed through B over ETSI 014 with the certificates
// the run wrote; C gets the same bytes by key_ID, once only; every link key the relay consumed is
// gone at both ends of its link (at A, at B on both links, at C); provenance names B.
import t from 'tap';
import { rmSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { linkSaeClient, median, relayedKeys, saeClient, startNetwork } from '../../src/testkit/network.ts';
import { pidsOf } from '../../src/testkit/chaos.ts';
import { until } from '../../src/testkit/run.ts';

t.setTimeout(1_500_000);
const fixtures = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

t.test('line A-B-C: a key relayed from A to C through B', async (t) => {
  const net = startNetwork(join(fixtures, 'line.json'));
  t.teardown(() => {
    if (!t.passing()) t.comment(`qkd run said:\n${net.lines.slice(-20).join('\n')}`);
    net.p.kill('SIGKILL');
  });
  const m = await net.manifest();
  t.same(Object.keys(m.sites), ['A', 'B', 'C'], 'three sites');
  t.same(Object.keys(m.links), ['A-B', 'B-C'], 'two links');
  t.ok(net.lines.some((l) => l.includes('curl') && l.includes('/api/v1/keys/saeC/enc_keys')), 'the run prints the curl line for A');
  const a = saeClient(m, 'A', 'saeA');
  const c = saeClient(m, 'C', 'saeC');
  t.teardown(() => {
    a.close();
    c.close();
  });
  const st = await a.request('GET', '/api/v1/keys/saeC/status');
  t.match(st.body, { source_KME_ID: 'siteA', target_KME_ID: 'siteC', master_SAE_ID: 'saeA', slave_SAE_ID: 'saeC', max_SAE_ID_count: 0 });

  const enc = await relayedKeys(a, 'saeC', 2, 900_000);
  t.equal(enc.body.keys.length, 2, 'two keys at A');
  for (const k of enc.body.keys) {
    t.equal(Buffer.from(k.key, 'base64').length, 32, '256-bit key');
    t.match(k.key_extension, { key_origin: 'trusted-node-relay', direct_qkd_key: false, path: ['A', 'B', 'C'], trusted_nodes: ['B'] });
  }
  const ids = enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID }));
  // The wrong SAE (A's own, at C) is refused before anything else.
  const foreign = await saeClient(m, 'C', 'saeC').request('POST', '/api/v1/keys/saeB/dec_keys', { key_IDs: ids });
  t.equal(foreign.status, 401, 'the keys are not for the pair saeB>saeC');
  const dec = await c.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: ids });
  t.equal(dec.status, 200, 'dec_keys at C');
  t.same(dec.body.keys.map((k: { key: string }) => k.key), enc.body.keys.map((k: { key: string }) => k.key), 'A and C hold the same keys');
  const prov = dec.body.keys[0].key_extension;
  t.match(prov, { key_origin: 'trusted-node-relay', direct_qkd_key: false, path: ['A', 'B', 'C'], trusted_nodes: ['B'] }, 'provenance at C');
  t.same(prov.hops.map((h: { link: string }) => h.link), ['A-B', 'B-C'], 'hops A-B then B-C');
  const again = await c.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: ids });
  t.equal(again.status, 400, 'a key is never delivered twice');

  // Every link key the relay drew is gone at both ends of its link: each end's link KMS answers
  // "unknown" for them (had one been left, this request would hand it out and the test fail).
  for (const h of prov.hops as { link: string; link_key_IDs: string[] }[]) {
    t.equal(h.link_key_IDs.length, 3, `${h.link}: 2 pads + 1 MAC key drawn`);
    for (const site of m.links[h.link].sites) {
      const { client, peerSae } = linkSaeClient(m, h.link, site);
      const r = await client.request('POST', `/api/v1/keys/${peerSae}/dec_keys`, { key_IDs: h.link_key_IDs.map((key_ID) => ({ key_ID })) });
      client.close();
      t.equal(r.status, 400, `link ${h.link}: the consumed link keys are gone at site ${site}`);
    }
  }

  // Relay latency A -> C (one key per request, sequentially).
  const ms: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    const r = await relayedKeys(a, 'saeC', 1, 300_000);
    ms.push(performance.now() - t0);
    const d = await c.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: r.body.keys[0].key_ID }] });
    t.equal(d.body.keys?.[0]?.key, r.body.keys[0].key, `key ${i} matches at C`);
  }
  t.comment(`relay latency A->B->C, 20 keys: median ${median(ms).toFixed(1)} ms, min ${Math.min(...ms).toFixed(1)}, max ${Math.max(...ms).toFixed(1)}`);

  // kill -9 of the trusted site B: the orchestrator restarts it on its configuration and
  // database, and relaying through it resumes.
  const needle = `_site --config ${join(m.stateDir, 'site-B.json')}`;
  const [pidB] = pidsOf(needle);
  t.ok(pidB, 'site B runs as its own process');
  process.kill(pidB, 'SIGKILL');
  await until('site B restarted', () => (net.lines.some((l) => l.includes('site-B ready again')) ? true : undefined), 120_000);
  t.ok(net.lines.some((l) => l.includes('process-restarted') && l.includes('site-B')), 'an alarm says site B was restarted');
  const afterRestart = pidsOf(needle);
  t.ok(afterRestart.length === 1 && afterRestart[0] !== pidB, 'a new site B process');
  const r = await relayedKeys(a, 'saeC', 1, 300_000);
  const d = await c.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: r.body.keys[0].key_ID }] });
  t.equal(d.body.keys?.[0]?.key, r.body.keys[0].key, 'a key relayed through the restarted B matches at C');

  net.p.kill('SIGINT');
  const { code, stdout } = await net.done;
  t.equal(code, 0, 'clean exit on SIGINT');
  t.match(JSON.parse(stdout), { network: { sites: ['A', 'B', 'C'] } });
  rmSync(net.dir, { recursive: true, force: true });
});
