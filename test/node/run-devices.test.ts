// A run whose Alice drives her photon source as a real serial device: her node opens it over a
// pty (socat), checks its identity, programs the link's probabilities and switches it on; the
// source keys its RNG itself, and the emulated physics on Bob's host answers on the other end of
// the line and emits nothing until then. Nothing is shared between the nodes' configurations but
// the link settings (Alice's `lab.seed` even differs from Bob's), so matching keys prove that her
// record is her source's read-back and that Bob's sync got her intensity classes over the
// authenticated channel. Bob's sync starts from
// calibration records made by `qkd calibrate`; Bob's host serves the dashboard and /metrics.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasSocat, startPtyPair } from '../../src/testkit/devices.ts';
import { checkKeysAndStop, qkdProcess, until, writeNodeLink } from '../../src/testkit/run.ts';

t.setTimeout(900_000);

t.test('Alice\'s node reads her record back from her source over a serial line; keys match with no shared seed', { skip: hasSocat() ? false : 'needs socat (apt-get install socat)' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-run-devices-'));
  const pty = await startPtyPair(dir, 'ps1');
  // Bob's calibration, as a lab engineer makes it (on the emulated lab of the same link).
  const calDir = join(dir, 'calibration');
  for (const step of ['delays', 'window', 'sync']) {
    const r = spawnSync(process.execPath, [join(import.meta.dirname, '..', '..', 'bin', 'qkd.js'), 'calibrate', step, '--distance', '25', '--out', calDir, '--no-plot'], { encoding: 'utf8' });
    t.equal(r.status, 0, `qkd calibrate ${step}`);
  }
  const { pki, files, kmsPort } = await writeNodeLink(dir, (role, cfg) => role === 'alice'
    ? { ...cfg, lab: { ...cfg.lab, seed: '977' }, devices: [{ id: 'alice-source', profile: 'emulab-ps1', port: pty.a }] }
    : { ...cfg, lab: { ...cfg.lab, sourceTty: pty.b }, calibration: calDir }, { sourceLine: false });
  const procs = [qkdProcess(['kms', '--config', files.kmsB]), qkdProcess(['kms', '--config', files.kmsA])];
  // Bob first: his host's physics answers on the source's line before Alice's node opens it.
  const bob = qkdProcess(['run', '--config', files.bob, '--json', '--dashboard-port', '0']);
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
  const alice = qkdProcess(['run', '--config', files.alice, '--json', '--dashboard-port', '0']);
  procs.push(alice);
  await until('Bob\'s first verified block', () => bob.lines.find((l) => /^\[qkd run bob\] block \d+: verified/.test(l)), 420_000);

  for (const step of ['delays', 'window', 'sync']) t.ok(bob.lines.some((l) => l.includes(`calibration applied: ${step}`)), `Bob's sync started from the ${step} calibration`);
  const metricsUrl = bob.lines.map((l) => /^\[qkd run bob\] dashboard \S+ +metrics (\S+)/.exec(l)?.[1]).find(Boolean);
  t.ok(metricsUrl, 'Bob\'s node prints its dashboard and metrics addresses');
  const metrics = await until('the sync and QBER on Bob\'s /metrics', async () => {
    const text = await (await fetch(metricsUrl!)).text();
    return /^qkd_sync_locked 1$/m.test(text) && /^qkd_qber_ratio\{basis="Z"\} 0\.0\d+/m.test(text) ? text : undefined;
  }, 30_000);
  t.match(metrics, /^qkd_calibration_age_seconds \d/m, 'calibration age exported');
  const aliceMetricsUrl = alice.lines.map((l) => /^\[qkd run alice\] dashboard \S+ +metrics (\S+)/.exec(l)?.[1]).find(Boolean);
  const aliceMetrics = await until('Alice\'s source on her /metrics', async () => {
    const text = await (await fetch(aliceMetricsUrl!)).text();
    return /^qkd_device_info\{[^}]*device="alice-source"[^}]*\} 1$/m.test(text) ? text : undefined;
  }, 30_000);
  t.match(aliceMetrics, /qkd_device_info\{[^}]*device="alice-source"[^}]*firmware_ok="1"/, 'her source\'s identity and firmware check exported');

  // Keys at the SAE pair, then stop as an operator would on two hosts (Bob first).
  const { sa, sb } = await checkKeysAndStop(t, { pki, kmsPort, alice, bob });
  t.ok(sb.summary.blocks.verified >= 1, `${sb.summary.blocks.verified} verified blocks`);
  t.ok(sb.summary.qber > 0.02 && sb.summary.qber < 0.05, `QBER ${sb.summary.qber} (25 km reference link: about 3.3 %)`);
  t.same(sa.devices.map((d: { id: string; model: string; firmware: string }) => [d.id, d.model]), [['alice-source', 'EmuLab PS-1']], 'Alice reports her source\'s identity read over the line');
  t.ok(sa.delivery.acked >= 2 && sa.delivery.acked === sb.delivery.acked, `both KMSs acknowledged the same number of keys (${sa.delivery.acked})`);
  // No seed anywhere on the line or in a log: the source keys itself, the node reads back.
  const all = [...alice.lines, ...bob.lines].join('\n');
  t.notMatch(all, /PATTERN:SEED/, 'no pattern seed is ever sent');
  t.match(all, /record is read back/, 'Alice\'s node says her record is read back from the source');
});
