// `qkd run --emulated --kms-alice URL --kms-bob URL`: the nodes push to KMSs the run did not start.
// The KMSs here are reference KMS processes (`qkd kms`) started by the test, after the run, from the
// node URLs the run's manifest gives: so the nodes first spool keys with their KMS unreachable, then
// the external source-side KMS opens the key stream on its node (as the push-mode spec says), the
// nodes push what they spooled, and an SAE pair fetches matching keys over ETSI 014. TLS is mutual
// with certificates issued by the run's CA (state-dir/pki), as docs/run.md tells an operator.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { JsonClient } from '../../src/delivery/http.ts';
import { makePki } from '../../src/delivery/pki.ts';
import { freePort, referenceKmsConfig } from '../../src/node/supervisor.ts';

t.setTimeout(900_000);

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const qkd = join(root, 'bin', 'qkd.js');

function qkdProcess(args: string[]): { p: ChildProcess; out: string[]; done: Promise<{ code: number | null; stdout: string }> } {
  const p = spawn(process.execPath, [qkd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  let stdout = '';
  p.stdout!.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    out.push(...d.split('\n').filter(Boolean));
  });
  p.stderr!.setEncoding('utf8').on('data', (d: string) => out.push(...d.split('\n').filter(Boolean)));
  const done = new Promise<{ code: number | null; stdout: string }>((resolve) => p.on('exit', (code) => resolve({ code, stdout })));
  return { p, out, done };
}

async function until<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

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
  const kmss: ReturnType<typeof qkdProcess>[] = [];
  t.teardown(() => {
    if (!t.passing()) t.comment(`qkd run said:\n${run.out.slice(-15).join('\n')}\nKMS said:\n${kmss.map((k) => k.out.slice(-8).join('\n')).join('\n')}`);
    run.p.kill('SIGKILL');
    for (const k of kmss) k.p.kill('SIGKILL');
    if (t.passing() || process.env.CI) rmSync(dir, { recursive: true, force: true });
    else t.comment(`kept ${dir} for inspection`);
  });
  const manifest = await until('the manifest', () => (existsSync(manifestPath) ? JSON.parse(readFileSync(manifestPath, 'utf8')) : undefined), 120_000);
  t.same(manifest.kms, { alice: null, bob: null }, 'the manifest names no reference KMS');

  // Let the nodes produce (and spool) a first block before any KMS exists.
  await until('a spooled block', () => run.out.find((l) => /block \d+: verified/.test(l)), 420_000);
  const nodeUrl = { A: new URL(manifest.nodes.alice.etsi004).origin, B: new URL(manifest.nodes.bob.etsi004).origin };
  for (const side of ['B', 'A'] as const) {
    const file = join(kmsDir, `kms${side}.json`);
    writeFileSync(file, JSON.stringify(referenceKmsConfig(side, { dir: kmsDir, pki, kmsPort, nodeUrl })));
    kmss.push(qkdProcess(['kms', '--config', file]));
  }
  await until('the key stream opened by the external KMS', () => kmss[1].out.find((l) => l.includes('key stream opened')), 60_000);

  const tlsOf = (name: string) => ({ ca: readFileSync(pki.caPath, 'utf8'), cert: pki.ids[name].cert, key: pki.ids[name].key });
  const saeA = new JsonClient({ url: `https://127.0.0.1:${kmsPort.A}`, id: 'kmsA' }, { tls: tlsOf('saeA') });
  const saeB = new JsonClient({ url: `https://127.0.0.1:${kmsPort.B}`, id: 'kmsB' }, { tls: tlsOf('saeB') });
  t.teardown(() => {
    saeA.close();
    saeB.close();
  });
  const enc = await until('confirmed keys for the SAE pair', async () => {
    const r = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: 2 }).catch(() => undefined);
    return r?.status === 200 ? r : undefined;
  }, 120_000);
  const dec = await saeB.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
  t.equal(dec.status, 200, 'dec_keys from Bob\'s external KMS');
  t.same(dec.body.keys.map((k: { key: string }) => k.key), enc.body.keys.map((k: { key: string }) => k.key), 'the SAE pair holds the same keys');

  run.p.kill('SIGINT');
  const { code, stdout } = await run.done;
  t.equal(code, 0, 'clean exit on SIGINT');
  const s = JSON.parse(stdout);
  t.ok(s.keysDelivered.alice >= 2 && s.keysDelivered.alice === s.keysDelivered.bob, `keys delivered ${JSON.stringify(s.keysDelivered)}`);
  for (const k of kmss) k.p.kill('SIGTERM');
  await Promise.all(kmss.map((k) => k.done));
});
