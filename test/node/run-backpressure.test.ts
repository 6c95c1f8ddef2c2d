// Back-pressure that loses nothing silently (issue 15): Bob's detection stream set to drop batches
// when post-processing falls behind (a queue of one batch, the emulated lab unpaced). Dropped
// batches are marked, the block holding the loss is refused with a reason naming it, no key comes
// from it, and the detections-lost alarm is raised. Real processes: two `qkd run --config` nodes.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { qkdProcess, until, writeNodeLink } from '../../src/testkit/run.ts';

t.setTimeout(600_000);

t.test('dropped batches are marked, their block refused with the reason, and an alarm raised', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-run-bp-'));
  const { files, sourceLine } = await writeNodeLink(dir, (role, c) => (role === 'bob'
    ? { ...c, speed: 1e6, block: { ...c.block, detections: 2e6 }, stream: { ...c.stream, onBackpressure: 'drop' } }
    : { ...c, speed: 1e6, block: { ...c.block, detections: 2e6 } }));
  const bob = qkdProcess(['run', '--config', files.bob, '--dashboard-port', '0']);
  const procs = [bob];
  t.teardown(async () => {
    if (!t.passing()) for (const p of procs) t.comment(`node said:\n${p.lines.slice(-12).join('\n')}`);
    for (const p of procs) p.p.kill('SIGKILL');
    await sourceLine?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await until('Bob\'s lab on the source line', () => bob.lines.find((l) => /source is on a tty/.test(l)), 120_000);
  procs.push(qkdProcess(['run', '--config', files.alice, '--dashboard-port', '0']));
  const refused = await until('a block refused for lost detections', () => bob.lines.find((l) => /STREAM_TAINTED/.test(l) && /block \d+/.test(l)), 180_000);
  t.match(refused, /batch \d+: .*the producer dropped \d+ batch\(es\) because post-processing fell behind \(back-pressure\)/, `the reason names the drop: ${refused.slice(0, 300)}`);
  t.match(refused, /detections were discarded, no key from them/, 'says no key comes from it');
  const alarm = await until('the detections-lost alarm', () => bob.lines.find((l) => /alarm raised: detections-lost/.test(l)), 60_000);
  t.match(alarm, /a block was refused because detections were lost/, 'the alarm says why');
  const warned = bob.lines.find((l) => /detection stream: batch \d+: .*the block being accumulated is refused/.test(l));
  t.ok(warned, 'the node logs each marked batch');
});
