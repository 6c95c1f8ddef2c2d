// `kill -9` of one reference KMS during `qkd run --emulated`: the supervisor restarts it (its
// database and streams are durable), the nodes spool meanwhile, the run goes on, the SAE pair
// still gets matching keys, and both nodes end with the same number of keys delivered.
import t from 'tap';
import { readFileSync, readdirSync, rmSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { JsonClient } from '../../src/delivery/http.ts';
import { qkdProcess, until } from '../../src/testkit/run.ts';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';

t.setTimeout(600_000);

/** Pids of processes whose command line contains `needle` (Linux /proc). */
function pidsOf(needle: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').join(' ').includes(needle)) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

t.test('a reference KMS killed with SIGKILL is restarted and the run goes on with nothing lost', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-kms-restart-'));
  const state = join(dir, 'state');
  const manifestPath = join(dir, 'manifest.json');
  const run = qkdProcess(['run', '--emulated', '--json', '--state-dir', state, '--manifest', manifestPath, '--dashboard-port', '0',
    '--distance-km', '25', '--seed', '4711', '--speed', '1000', '--block-detections', '4000000', '--duration', '600']);
  t.teardown(() => {
    if (!t.passing()) t.comment(`qkd run said:\n${run.lines.slice(-20).join('\n')}`);
    run.p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const manifest = await until('the manifest', () => (existsSync(manifestPath) ? JSON.parse(readFileSync(manifestPath, 'utf8')) : undefined), 120_000);
  const ca = readFileSync(manifest.sae.ca, 'utf8');
  const tlsOf = (s: { cert: string; key: string }) => ({ ca, cert: readFileSync(s.cert, 'utf8'), key: readFileSync(s.key, 'utf8') });
  const saeA = new JsonClient({ url: new URL(manifest.kms.alice.etsi014).origin, id: 'kmsA' }, { tls: tlsOf(manifest.sae.alice) });
  const saeB = new JsonClient({ url: new URL(manifest.kms.bob.etsi014).origin, id: 'kmsB' }, { tls: tlsOf(manifest.sae.bob) });
  t.teardown(() => {
    saeA.close();
    saeB.close();
  });
  const stored = async (): Promise<number | undefined> => {
    const st = await saeA.request('GET', '/api/v1/keys/saeB/status').catch(() => undefined);
    return st?.status === 200 ? st.body.stored_key_count : undefined;
  };
  const before = await until('keys at the KMS', async () => ((await stored()) ?? 0) >= 1 ? stored() : undefined, 300_000);

  const victims = pidsOf(join(state, 'kmsB.json'));
  t.equal(victims.length, 1, 'one kms-bob process');
  process.kill(victims[0], 'SIGKILL');
  await until('the supervisor restarting kms-bob', () => (run.lines.some((l) => l.includes('restarting kms-bob')) ? true : undefined), 60_000);
  const after = pidsOf(join(state, 'kmsB.json'));
  t.ok(after.length === 1 && after[0] !== victims[0], 'a new kms-bob process');
  t.ok(run.lines.some((l) => l.includes('process-restarted')), 'an alarm says the KMS was restarted');

  // Blocks keep coming and keys keep reaching both KMSs after the restart.
  await until('more keys after the restart', async () => (((await stored()) ?? 0) > before! ? true : undefined), 300_000);
  const enc = await until('confirmed keys for the SAE pair', async () => {
    const r = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: 2 });
    return r.status === 200 ? r : undefined;
  }, 120_000);
  const dec = await saeB.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
  t.equal(dec.status, 200, 'dec_keys from the restarted KMS');
  t.same(dec.body.keys.map((k: { key: string }) => k.key), enc.body.keys.map((k: { key: string }) => k.key), 'the SAE pair holds the same keys');

  run.p.kill('SIGINT');
  const { code, stdout } = await run.done;
  t.equal(code, 0, 'clean exit: the crash did not stop the run');
  const s = JSON.parse(stdout);
  t.ok(s.keysDelivered.bob >= 2 && s.keysDelivered.alice === s.keysDelivered.bob,
    `both nodes delivered the same number of keys ${JSON.stringify(s.keysDelivered)}`);

  // Everything the run left in its state directory (keys, secrets, configurations, databases,
  // logs) is its owner's only.
  const open: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const mode = statSync(p).mode & 0o777;
      if (mode & 0o077) open.push(`${p.slice(state.length)} ${mode.toString(8)}`);
      if (e.isDirectory()) walk(p);
    }
  };
  t.equal(statSync(state).mode & 0o777, 0o700, 'state directory 0700');
  t.notOk(existsSync(join(state, 'pki', 'ca.key')), 'the CA private key is not kept in the running system');
  walk(state);
  t.same(open, [], 'no file or folder readable by group or others');
});
