// `kill -9` of Bob's node, then of Alice's, during `qkd run --emulated`: the supervisor restarts
// each (process-restarted alarm), the restarted node resumes the block dialogue (Alice takes
// over her running source; Bob's new lab gets her source switched on again), keys keep reaching
// both KMSs, and on the databases themselves nothing is lost or duplicated, both KMSs hold the
// same bytes under the same IDs and no key comes from a block that was not committed by both.
import t from 'tap';
import { cpSync, existsSync, lstatSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { JsonClient } from '../../src/delivery/http.ts';
import { qkdProcess, until } from '../../src/testkit/run.ts';
import { chaosInvariants, pidsOf, saeClientsOf, violationsOf, type RunManifest } from '../../src/testkit/chaos.ts';

t.setTimeout(900_000);

t.test('a node killed with SIGKILL is restarted and the link resumes with nothing lost', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-node-restart-'));
  const state = join(dir, 'state');
  const manifestPath = join(dir, 'manifest.json');
  const run = qkdProcess(['run', '--emulated', '--json', '--state-dir', state, '--manifest', manifestPath, '--dashboard-port', '0',
    '--distance-km', '25', '--seed', '4712', '--speed', '1000', '--block-detections', '4000000']);
  t.teardown(() => {
    if (!t.passing()) t.comment(`qkd run said:\n${run.lines.slice(-30).join('\n')}`);
    run.p.kill('SIGKILL');
    // QKD_TEST_KEEP_STATE=<dir> keeps the run's state (node and KMS logs, databases) for diagnosis.
    if (process.env.QKD_TEST_KEEP_STATE) cpSync(dir, process.env.QKD_TEST_KEEP_STATE, { recursive: true, filter: (p) => !lstatSync(p).isSocket() });
    rmSync(dir, { recursive: true, force: true });
  });
  const manifest = await until('the manifest', () => (existsSync(manifestPath) ? JSON.parse(readFileSync(manifestPath, 'utf8')) as RunManifest : undefined), 600_000);
  const { saeA, saeB } = saeClientsOf(manifest);
  t.teardown(() => {
    saeA.close();
    saeB.close();
  });
  const stored = async (c: JsonClient, peer: string): Promise<number> => {
    const st = await c.request('GET', `/api/v1/keys/${peer}/status`).catch(() => undefined);
    return st?.status === 200 ? Number(st.body.stored_key_count) : 0;
  };
  const verifiedBlocks = () => run.lines.filter((l) => /block \d+: verified/.test(l)).length;

  for (const victim of ['node-bob', 'node-alice']) {
    const before = await until('keys at both KMSs', async () => {
      const a = await stored(saeA, 'saeB');
      return a >= 1 && (await stored(saeB, 'saeA')) >= 1 ? a : undefined;
    }, 420_000);
    const blocksBefore = verifiedBlocks();
    const pids = pidsOf(`--config ${join(state, `${victim}.json`)}`);
    t.equal(pids.length, 1, `one ${victim} process`);
    process.kill(pids[0], 'SIGKILL');
    await until(`the supervisor restarting ${victim}`, () => (run.lines.some((l) => l.includes(`restarting ${victim}`)) ? true : undefined), 60_000);
    // The log line comes before the fork: on a loaded host the new process shows a moment later.
    const after = await until(`a new ${victim} process`, () => {
      const now = pidsOf(`--config ${join(state, `${victim}.json`)}`);
      return now.length === 1 && now[0] !== pids[0] ? now : undefined;
    }, 30_000).catch(() => pidsOf(`--config ${join(state, `${victim}.json`)}`));
    t.ok(after.length === 1 && after[0] !== pids[0], `a new ${victim} process`);
    t.ok(run.lines.some((l) => l.includes('process-restarted') && l.includes(victim)), `an alarm says ${victim} was restarted`);
    // The dialogue resumes: new verified blocks, and new keys at both KMSs.
    await until(`a verified block after ${victim}'s restart`, () => (verifiedBlocks() > blocksBefore ? true : undefined), 420_000);
    await until(`more keys after ${victim}'s restart`, async () => ((await stored(saeA, 'saeB')) > before ? true : undefined), 300_000);
  }
  const enc = await until('confirmed keys for the SAE pair', async () => {
    const r = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: 2 }).catch(() => undefined);
    return r?.status === 200 ? r : undefined;
  }, 120_000);
  const dec = await saeB.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
  t.equal(dec.status, 200, 'dec_keys at Bob\'s KMS');
  t.ok(dec.body.keys.every((k: { key: string }, i: number) => k.key === enc.body.keys[i].key), 'the SAE pair holds the same keys');

  run.p.kill('SIGINT');
  const { code, stdout } = await run.done;
  t.equal(code, 0, 'clean exit: the crashes did not stop the run');
  t.notOk(run.lines.some((l) => l.includes('process-crash-loop')), 'no crash loop');
  const inv = chaosInvariants(state);
  t.same(violationsOf(inv), [], `invariants on the KMS databases (${inv.keys.A} keys at A, ${inv.common} under the same ID at both, ${inv.blocks} blocks)`);
  t.ok(inv.common >= 2, 'keys checked at both KMSs');
  // The run's count spans the nodes' incarnations (it used to restart from 0 with each): at most
  // the acknowledgements of the last 100 ms before each kill can be missing from it.
  const summary = JSON.parse(stdout) as { keysDelivered: { alice: number; bob: number } };
  t.ok(summary.keysDelivered.alice >= 0.9 * inv.keys.A, `keysDelivered at Alice ${summary.keysDelivered.alice} vs ${inv.keys.A} keys in her KMS`);
  t.ok(summary.keysDelivered.bob >= 0.9 * inv.keys.B, `keysDelivered at Bob ${summary.keysDelivered.bob} vs ${inv.keys.B} keys in his KMS`);
});
