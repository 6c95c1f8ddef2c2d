// `qkd run --config NODE.json`: one node per host, as a deployment runs it. Alice's and Bob's nodes
// are two `qkd run --config` processes with their own files (classical channel over TCP, each
// pushing to its own reference KMS process over mutual TLS); the optics are emulated. An SAE pair
// gets matching keys; SIGINT stops each node cleanly with its own summary. A real-device entry is
// refused with a message naming the device and what is missing.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePki } from '../../src/delivery/pki.ts';
import { freePort, nodeRunConfig, referenceKmsConfig } from '../../src/node/supervisor.ts';
import { qkdProcess, saePairKeys, until } from '../../src/testkit/run.ts';

t.setTimeout(900_000);

const LINK = { preset: 'reference-decoy', distanceKm: 25, eveFraction: 0, seed: 2026n, blockDetections: 1e7, frameBits: 235930,
  epsSec: 1e-10, epsCor: 1e-15, qberAbort: 0.11, speed: 1000, insecureHttp: false };

async function writeLink(dir: string) {
  const pki = makePki(join(dir, 'pki'), ['nodeA', 'nodeB', 'kmsA', 'kmsB', 'saeA', 'saeB']);
  mkdirSync(join(dir, 'secrets'), { mode: 0o700 });
  const pskFile = join(dir, 'secrets', 'channel-psk.bin');
  const spoolKeyFile = join(dir, 'secrets', 'spool.key');
  writeFileSync(pskFile, randomBytes(512 * 1024), { mode: 0o600 });
  writeFileSync(spoolKeyFile, randomBytes(32), { mode: 0o600 });
  const nodePort = { A: await freePort(), B: await freePort() };
  const kmsPort = { A: await freePort(), B: await freePort() };
  const p = { dir, opts: LINK, pskFile, spoolKeyFile, sessionId: randomBytes(8).toString('hex'), channelPort: await freePort(), nodePort,
    kmsUrl: { A: `https://127.0.0.1:${kmsPort.A}`, B: `https://127.0.0.1:${kmsPort.B}` }, tls: { ca: pki.caPath, ids: pki.ids } };
  const files = { alice: join(dir, 'alice.json'), bob: join(dir, 'bob.json'), kmsA: join(dir, 'kmsA.json'), kmsB: join(dir, 'kmsB.json') };
  writeFileSync(files.alice, JSON.stringify(nodeRunConfig('alice', p)));
  writeFileSync(files.bob, JSON.stringify({ ...nodeRunConfig('bob', p),
    devices: [{ id: 'bob-tagger', profile: 'emulab-tt8', emulated: true }, { id: 'bob-spad-0', profile: 'emulab-spad1', emulated: true, channel: 0 }] }));
  const nodeUrl = { A: `https://127.0.0.1:${nodePort.A}`, B: `https://127.0.0.1:${nodePort.B}` };
  for (const side of ['A', 'B'] as const) writeFileSync(files[`kms${side}`], JSON.stringify(referenceKmsConfig(side, { dir, pki, kmsPort, nodeUrl })));
  return { pki, files, kmsPort };
}

t.test('a real device in the node configuration is refused, naming it and what is missing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-run-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { files } = await writeLink(dir);
  const bob = JSON.parse(readFileSync(files.bob, 'utf8'));
  bob.devices[0] = { id: 'lab-tagger', profile: 'emulab-tt8' };
  writeFileSync(files.bob, JSON.stringify(bob));
  const r = qkdProcess(['run', '--config', files.bob]);
  const { code } = await r.done;
  t.equal(code, 1, 'refused (exit code 1)');
  t.match(r.lines.join('\n'), /device 'lab-tagger' \(emulab-tt8\) is a real device.*qkd devices.*\[RUN_REAL_DEVICES\]/, 'names the device, the reason and what to do');
});

t.test('two nodes from their own configuration files, each with its own KMS, produce matching keys', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-run-config-'));
  const { pki, files, kmsPort } = await writeLink(dir);
  const procs = [qkdProcess(['kms', '--config', files.kmsB]), qkdProcess(['kms', '--config', files.kmsA])];
  const alice = qkdProcess(['run', '--config', files.alice, '--json']);
  const bob = qkdProcess(['run', '--config', files.bob, '--json']);
  procs.push(alice, bob);
  t.teardown(() => {
    if (!t.passing()) t.comment(`bob said:\n${bob.lines.filter((l) => !l.startsWith('{')).slice(-10).join('\n')}`);
    for (const p of procs) p.p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  await until('Bob\'s first verified block', () => bob.lines.find((l) => /^\[qkd run bob\] block \d+: verified/.test(l)), 420_000);
  t.ok(alice.lines.some((l) => /^\[qkd run alice\] node nodeA ready: ETSI 004 at https:/.test(l)), 'Alice says where her node listens');

  const tlsOf = (name: string) => ({ ca: readFileSync(pki.caPath, 'utf8'), cert: pki.ids[name].cert, key: pki.ids[name].key });
  const { enc, dec } = await saePairKeys({ kmsA: `https://127.0.0.1:${kmsPort.A}`, kmsB: `https://127.0.0.1:${kmsPort.B}`,
    saeA: tlsOf('saeA'), saeB: tlsOf('saeB'), number: 2, timeoutMs: 120_000 });
  t.equal(dec.status, 200, 'dec_keys from Bob\'s KMS');
  t.same(dec.body.keys.map((k: { key: string }) => k.key), enc.body.keys.map((k: { key: string }) => k.key), 'the SAE pair holds the same keys');

  // Stop as an operator would on two hosts: Bob first (he finishes his block with Alice), then Alice.
  bob.p.kill('SIGINT');
  const b = await bob.done;
  alice.p.kill('SIGINT');
  const a = await alice.done;
  t.equal(b.code, 0, 'Bob\'s node exits cleanly');
  t.equal(a.code, 0, 'Alice\'s node exits cleanly');
  const sb = JSON.parse(b.stdout);
  const sa = JSON.parse(a.stdout);
  t.equal(sb.role, 'bob');
  t.ok(sb.summary.blocks.verified >= 1, `${sb.summary.blocks.verified} verified blocks in Bob's summary`);
  t.ok(sb.summary.qber > 0.02 && sb.summary.qber < 0.05, `QBER ${sb.summary.qber}`);
  t.equal(sb.summary.sync.locked, true, 'Bob\'s clock sync locked');
  t.ok(sa.delivery.acked >= 2 && sa.delivery.acked === sb.delivery.acked, `both nodes' KMSs acknowledged the same number of keys (${sa.delivery.acked})`);
});
