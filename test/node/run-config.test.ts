// `qkd run --config NODE.json`: one node per host, as a deployment runs it. Alice's and Bob's nodes
// are two `qkd run --config` processes with their own files (classical channel over TCP, each
// pushing to its own reference KMS process over mutual TLS); the optics are emulated. An SAE pair
// gets matching keys; SIGINT stops each node cleanly with its own summary. A real device that is
// not connected stops the start with a message naming it; a device on the wrong node is refused.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkKeysAndStop, nodeSaid, qkdProcess, startNodePair, until, writeNodeLink } from '../../src/testkit/run.ts';

t.setTimeout(900_000);

t.test('a real device that is not there stops the start, naming it and the cause', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-run-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { files } = await writeNodeLink(dir, undefined, { sourceLine: false });
  const bob = JSON.parse(readFileSync(files.bob, 'utf8'));
  bob.devices[0] = { id: 'lab-tagger', profile: 'emulab-tt8' };
  writeFileSync(files.bob, JSON.stringify(bob));
  const r = qkdProcess(['run', '--config', files.bob, '--dashboard-port', '0']);
  const { code } = await r.done;
  t.equal(code, 1, 'refused (exit code 1)');
  t.match(r.lines.join('\n'), /device 'lab-tagger' \(emulab-tt8\) could not be opened: .*\[RUN_DEVICE_OPEN\]/, 'names the device and why');
  const alice = JSON.parse(readFileSync(files.alice, 'utf8'));
  alice.devices = [{ id: 'alice-tagger', profile: 'emulab-tt8' }];
  writeFileSync(files.alice, JSON.stringify(alice));
  const a = qkdProcess(['run', '--config', files.alice]);
  t.equal((await a.done).code, 1, 'a tagger on Alice\'s node is refused');
  t.match(a.lines.join('\n'), /device 'alice-tagger' \(emulab-tt8\) is a real time-tagger, which alice's node does not drive.*\[RUN_REAL_DEVICES\]/, 'says which node drives what');
});

t.test('two nodes from their own configuration files, each with its own KMS, produce matching keys', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-run-config-'));
  const { pki, files, kmsPort, sourceLine } = await writeNodeLink(dir);
  const procs = [qkdProcess(['kms', '--config', files.kmsB]), qkdProcess(['kms', '--config', files.kmsA])];
  t.teardown(async () => {
    if (!t.passing()) for (const p of procs.slice(2)) t.comment(`${p === procs[2] ? 'bob' : 'alice'} said:\n${nodeSaid(p)}`);
    for (const p of procs) p.p.kill('SIGKILL');
    await sourceLine?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const { alice, bob } = await startNodePair(files, procs);
  await until('Bob\'s first verified block', () => bob.lines.find((l) => /^\[qkd run bob\] block \d+: verified/.test(l)), 420_000);
  t.ok(alice.lines.some((l) => /^\[qkd run alice\] node nodeA ready: ETSI 004 at https:/.test(l)), 'Alice says where her node listens');

  // Keys at the SAE pair, then stop as an operator would on two hosts (Bob first).
  const { sa, sb } = await checkKeysAndStop(t, { pki, kmsPort, alice, bob });
  t.equal(sb.role, 'bob');
  t.ok(sb.summary.blocks.verified >= 1, `${sb.summary.blocks.verified} verified blocks in Bob's summary`);
  t.ok(sb.summary.qber > 0.02 && sb.summary.qber < 0.05, `QBER ${sb.summary.qber}`);
  t.equal(sb.summary.sync.locked, true, 'Bob\'s clock sync locked');
  t.ok(sa.delivery.acked >= 2 && sa.delivery.acked === sb.delivery.acked, `both nodes' KMSs acknowledged the same number of keys (${sa.delivery.acked})`);
});
