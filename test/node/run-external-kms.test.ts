// `qkd run --emulated --kms-alice URL --kms-bob URL`: the nodes push to KMSs the run did not start.
// The KMSs here are reference KMS processes (`qkd kms`) started by the test, after the run, from the
// node URLs the run's manifest gives: so the nodes first spool keys with their KMS unreachable, then
// the external source-side KMS opens the key stream on its node (as the push-mode spec says), the
// nodes push what they spooled, and an SAE pair fetches matching keys over ETSI 014. TLS is mutual
// with certificates issued by the run's CA (state-dir/pki), as docs/run.md tells an operator.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, existsSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePki } from '../../src/delivery/pki.ts';
import { freePort, referenceKmsConfig } from '../../src/node/supervisor.ts';
import { qkdProcess, saePairOverPki, until, type QkdProcess } from '../../src/testkit/run.ts';

t.setTimeout(900_000);

t.test('external KMSs: started after the run, they open the stream, receive the spooled keys, serve an SAE pair', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-extkms-'));
  const state = join(dir, 'state');
  const kmsDir = join(dir, 'kms');
  mkdirSync(kmsDir);
  // The operator's PKI: the run reuses the one in its state directory, the KMSs get certificates of the same CA.
  const pki = makePki(join(state, 'pki'), ['nodeA', 'nodeB', 'kmsA', 'kmsB', 'saeA', 'saeB']);
  const kmsPort = { A: await freePort(), B: await freePort() };
  const manifestPath = join(dir, 'manifest.json');
  const run = qkdProcess(['run', '--emulated', '--json', '--state-dir', state, '--manifest', manifestPath, '--dashboard-port', '0',
    '--distance-km', '25', '--seed', '4242', '--speed', '1000', '--block-detections', '10000000', '--duration', '900',
    '--kms-alice', `https://127.0.0.1:${kmsPort.A}`, '--kms-bob', `https://127.0.0.1:${kmsPort.B}`]);
  const kmss: QkdProcess[] = [];
  t.teardown(() => {
    if (!t.passing()) t.comment(`qkd run said:\n${run.lines.slice(-15).join('\n')}\nKMS said:\n${kmss.map((k) => k.lines.slice(-8).join('\n')).join('\n')}`);
    run.p.kill('SIGKILL');
    for (const k of kmss) k.p.kill('SIGKILL');
    if (t.passing() || process.env.CI) rmSync(dir, { recursive: true, force: true });
    else t.comment(`kept ${dir} for inspection`);
  });
  const manifest = await until('the manifest', () => (existsSync(manifestPath) ? JSON.parse(readFileSync(manifestPath, 'utf8')) : undefined), 120_000);
  t.same(manifest.kms, { alice: null, bob: null }, 'the manifest names no reference KMS');

  // Let the nodes produce (and spool) a first block before any KMS exists.
  await until('a spooled block', () => run.lines.find((l) => /block \d+: verified/.test(l)), 420_000);
  const nodeUrl = { A: new URL(manifest.nodes.alice.etsi004).origin, B: new URL(manifest.nodes.bob.etsi004).origin };
  for (const side of ['B', 'A'] as const) {
    const file = join(kmsDir, `kms${side}.json`);
    writeFileSync(file, JSON.stringify(referenceKmsConfig(side, { dir: kmsDir, pki, kmsPort, nodeUrl, nodeKeysDir: state })));
    kmss.push(qkdProcess(['kms', '--config', file]));
  }
  await until('the key stream opened by the external KMS', () => kmss[1].lines.find((l) => l.includes('key stream opened')), 60_000);

  const { enc, dec } = await saePairOverPki(pki, kmsPort);
  t.equal(dec.status, 200, 'dec_keys from Bob\'s external KMS');
  t.same(dec.body.keys.map((k: { key: string }) => k.key), enc.body.keys.map((k: { key: string }) => k.key), 'the SAE pair holds the same keys');

  run.p.kill('SIGINT');
  const { code, stdout } = await run.done;
  t.equal(code, 0, 'clean exit on SIGINT');
  const s = JSON.parse(stdout);
  t.ok(s.keysDelivered.alice >= 2, `keys delivered ${JSON.stringify(s.keysDelivered)}`);
  // Both nodes produced the same keys: each delivered them or still holds them sealed in its spool
  // (a node drains its spool for at most 10 s at stop; on a loaded host one side may not finish).
  const held = (d: { acked: number; spoolDepth: number }) => d.acked + d.spoolDepth;
  t.equal(held(s.delivery.alice), held(s.delivery.bob), `delivered + spooled: alice ${s.delivery.alice.acked} + ${s.delivery.alice.spoolDepth}, bob ${s.delivery.bob.acked} + ${s.delivery.bob.spoolDepth}`);
  for (const k of kmss) k.p.kill('SIGTERM');
  await Promise.all(kmss.map((k) => k.done));
});
