// Hybrid fallback between two `qkd kms` processes (configs with "hybrid", real sockets, mutual
// TLS), no QKD key at all: the SAE pair gets matching ml-kem-768 keys, a security level gets the
// 503, a pair whose policy is never gets the 503, and no derived key shows in the processes' logs.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { JsonClient } from '../../src/delivery/http.ts';
import { makePki } from '../../src/testkit/pki.ts';
import { until } from '../../src/testkit/delivery.ts';

const root = resolve(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'qkd-hybrid-proc-'));
const children: ChildProcess[] = [];
t.teardown(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const port = () => new Promise<number>((ok) => {
  const srv = createServer().listen(0, '127.0.0.1', () => {
    const p = (srv.address() as AddressInfo).port;
    srv.close(() => ok(p));
  });
});

t.test('two qkd kms processes: when-short with no QKD key serves matching ml-kem-768 keys', async (t) => {
  const ids = ['kmsA', 'kmsB', 'saeA', 'saeB', 'saeC'];
  const pki = makePki(join(dir, 'pki'), ids);
  const [pA, pB] = [await port(), await port()];
  writeFileSync(join(dir, 'wrap.hex'), randomBytes(32).toString('hex'));
  // saeA->saeB may fall back; saeA->saeC may not (default never). No node ever pushes.
  const hybrid = { 'saeA->saeB': 'when-short', default: 'never' };
  const conf = (me: 'A' | 'B', listen: number, peer: number) => JSON.stringify({ id: `kms${me}`, role: me === 'A' ? 'source' : 'destination',
    listen: { host: '127.0.0.1', port: listen }, tls: { ca: 'pki/ca.pem', cert: `pki/kms${me}.pem`, key: `pki/kms${me}.key` },
    dbPath: `kms${me}.db`, wrapKeyFile: 'wrap.hex', node: { url: 'https://127.0.0.1:1', id: `node${me}` },
    peerNodeId: me === 'A' ? 'nodeB' : 'nodeA', peer: { url: `https://127.0.0.1:${peer}`, id: me === 'A' ? 'kmsB' : 'kmsA' },
    saes: me === 'A' ? { local: ['saeA'], remote: ['saeB', 'saeC'] } : { local: ['saeB', 'saeC'], remote: ['saeA'] }, hybrid });
  writeFileSync(join(dir, 'a.json'), conf('A', pA, pB));
  writeFileSync(join(dir, 'b.json'), conf('B', pB, pA));
  const logs: string[] = [];
  for (const f of ['b.json', 'a.json']) {
    const c = spawn(process.execPath, [join(root, 'bin/qkd.js'), 'kms', '--config', f], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    c.stdout!.on('data', (d: Buffer) => logs.push(d.toString()));
    c.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
    children.push(c);
  }
  const saeA = new JsonClient({ url: `https://127.0.0.1:${pA}`, id: 'kmsA' }, { tls: pki.tls('saeA') });
  const saeB = new JsonClient({ url: `https://127.0.0.1:${pB}`, id: 'kmsB' }, { tls: pki.tls('saeB') });
  t.teardown(() => { saeA.close(); saeB.close(); });
  let up = false;
  const probe = async () => {
    up = await Promise.all([saeA.request('GET', '/api/v1/keys/saeB/status'), saeB.request('GET', '/api/v1/keys/saeA/status')])
      .then((r) => r.every((x) => x.status === 200), () => false);
  };
  await until(() => (void probe(), up), 60_000, 'both KMS processes answering');
  const enc = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: 4, size: 256 });
  t.equal(enc.status, 200, enc.body?.message ?? 'served');
  const keys = enc.body.keys as { key_ID: string; key: string; key_extension: unknown }[];
  t.ok(keys.every((k) => JSON.stringify(k.key_extension) === JSON.stringify({ provenance: 'ml-kem-768', direct_qkd_key: false })),
    'labelled ml-kem-768');
  const dec = await saeB.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: keys.map((k) => ({ key_ID: k.key_ID })) });
  t.equal(dec.status, 200);
  t.same(dec.body.keys, keys, 'the peer process derived the same key_IDs, bytes and labels');
  t.equal(new Set(keys.map((k) => k.key)).size, 4, 'four different keys');
  const lvl = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: 1, extension_mandatory: [{ qkd_max_epsilon: 1e-9 }] });
  t.equal(lvl.status, 503, 'a security level never gets a non-QKD key');
  const never = await saeA.request('POST', '/api/v1/keys/saeC/enc_keys', { number: 1 });
  t.equal(never.status, 503, 'policy never: the 503');
  t.match(never.body, { message: /fewer than 1 confirmed keys/ });
  for (const c of children) {
    c.kill('SIGTERM');
    if (c.exitCode === null) await new Promise((r) => c.once('exit', r));
  }
  const text = logs.join('');
  t.match(text, /hybrid keys released/);
  for (const k of keys) {
    const hex = Buffer.from(k.key, 'base64').toString('hex');
    if (text.includes(k.key.slice(0, 16)) || text.includes(hex.slice(0, 16))) t.fail('a derived key shows in the logs');
  }
});
