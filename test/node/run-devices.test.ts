// A run whose Alice drives her photon source as a real serial device: her node opens it over a
// pty (socat), checks its identity, programs a fresh secret pattern seed and switches it on; the
// emulated physics on Bob's host answers on the other end of the line and emits nothing until
// then. Nothing is shared between the nodes' configurations but the link settings: Alice's
// `lab.seed` differs from Bob's, so matching keys prove that her record is her source's seed and
// that Bob's sync got her intensity pattern over the authenticated channel.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasSocat, startPtyPair } from '../../src/testkit/devices.ts';
import { qkdProcess, saePairOverPki, stopNodePair, until, writeNodeLink } from '../../src/testkit/run.ts';

t.setTimeout(900_000);

t.test('Alice\'s node drives her source over a serial line; keys match with no shared seed', { skip: hasSocat() ? false : 'needs socat (apt-get install socat)' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-run-devices-'));
  const pty = await startPtyPair(dir, 'ps1');
  const { pki, files, kmsPort } = await writeNodeLink(dir, (role, cfg) => role === 'alice'
    ? { ...cfg, lab: { ...cfg.lab, seed: '977' }, devices: [{ id: 'alice-source', profile: 'emulab-ps1', port: pty.a }] }
    : { ...cfg, lab: { ...cfg.lab, sourceTty: pty.b } });
  const procs = [qkdProcess(['kms', '--config', files.kmsB]), qkdProcess(['kms', '--config', files.kmsA])];
  // Bob first: his host's physics answers on the source's line before Alice's node opens it.
  const bob = qkdProcess(['run', '--config', files.bob, '--json']);
  procs.push(bob);
  t.teardown(async () => {
    if (!t.passing()) {
      t.comment(`bob said:\n${bob.lines.filter((l) => !l.startsWith('{')).slice(-10).join('\n')}`);
      t.comment(`alice said:\n${procs[3]?.lines.filter((l) => !l.startsWith('{')).slice(-10).join('\n')}`);
    }
    for (const p of procs) p.p.kill('SIGKILL');
    await pty.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  await until('Bob\'s lab on the source line', () => bob.lines.find((l) => /source is on a tty/.test(l)), 120_000);
  const alice = qkdProcess(['run', '--config', files.alice, '--json']);
  procs.push(alice);
  await until('Bob\'s first verified block', () => bob.lines.find((l) => /^\[qkd run bob\] block \d+: verified/.test(l)), 420_000);

  const { enc, dec } = await saePairOverPki(pki, kmsPort);
  t.equal(dec.status, 200, 'dec_keys from Bob\'s KMS');
  t.same(dec.body.keys.map((k: { key: string }) => k.key), enc.body.keys.map((k: { key: string }) => k.key), 'the SAE pair holds the same keys');

  const { a, b } = await stopNodePair(alice, bob);
  t.equal(b.code, 0, 'Bob\'s node exits cleanly');
  t.equal(a.code, 0, 'Alice\'s node exits cleanly');
  const sa = JSON.parse(a.stdout);
  const sb = JSON.parse(b.stdout);
  t.ok(sb.summary.blocks.verified >= 1, `${sb.summary.blocks.verified} verified blocks`);
  t.ok(sb.summary.qber > 0.02 && sb.summary.qber < 0.05, `QBER ${sb.summary.qber} (25 km reference link: about 3.3 %)`);
  t.same(sa.devices.map((d: { id: string; model: string; firmware: string }) => [d.id, d.model]), [['alice-source', 'EmuLab PS-1']], 'Alice reports her source\'s identity read over the line');
  t.ok(sa.delivery.acked >= 2 && sa.delivery.acked === sb.delivery.acked, `both KMSs acknowledged the same number of keys (${sa.delivery.acked})`);
  // The seed went to the device as a secret: no log line of either node shows a PATTERN:SEED value.
  const all = [...alice.lines, ...bob.lines].join('\n');
  t.notMatch(all, /PATTERN:SEED\s+\d/, 'the pattern seed never appears in a log');
});
