// `qkd kms` as separate processes (Alice's and Bob's KMS) against in-process delivery nodes:
// config loading, stream opening between the KMSs, delivery, ETSI 014, JSON-line logs that never
// show the canary key, clean stop on SIGTERM. The delivery test runs with the keys in SQLite and
// in PostgreSQL (`"database": "postgres://..."` in the configuration files).
import tap from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { JsonClient } from '../../src/delivery/http.ts';
import { startDeliveryNode } from '../../src/delivery/node.ts';
import { makePki } from '../../src/testkit/pki.ts';
import { until } from '../../src/testkit/delivery.ts';
import { backendTap, currentBackend, testDatabase } from '../../src/testkit/postgres.ts';

const t = backendTap(tap);

const root = resolve(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'qkd-kms-cli-'));
const procs: ChildProcess[] = [];
t.teardown(() => {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => res(p));
    });
  });
}

function qkd(args: string[]): { proc: ChildProcess; out: string[] } {
  const out: string[] = [];
  const proc = spawn(process.execPath, [join(root, 'bin/qkd.js'), ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (d: Buffer) => out.push(d.toString()));
  proc.stderr!.on('data', (d: Buffer) => out.push(d.toString()));
  procs.push(proc);
  return { proc, out };
}

t.test('two qkd kms processes deliver a canary end to end', async (t) => {
  if (!existsSync(join(dir, 'pki'))) {
    const mk = qkd(['kms', '--make-pki', join(dir, 'pki'), 'nodeA', 'nodeB', 'kmsA', 'kmsB', 'saeA', 'saeB']);
    await new Promise((r) => mk.proc.once('exit', r));
    t.equal(mk.proc.exitCode, 0, mk.out.join(''));
  }
  const be = currentBackend();
  const database = { A: await testDatabase('clia'), B: await testDatabase('clib') };
  const pki = makePki(join(dir, 'pki'), ['nodeA', 'nodeB', 'kmsA', 'kmsB', 'saeA', 'saeB']); // reuses the files
  const [pA, pB] = [await freePort(), await freePort()];
  const spoolKey = randomBytes(32);
  const A = await startDeliveryNode({ role: 'source', nodeId: 'nodeA', tls: pki.tls('nodeA'), spoolDir: join(dir, `sa-${be}`),
    spoolKey, kms: { url: `https://127.0.0.1:${pA}`, id: 'kmsA' }, peer: { nodeId: 'nodeB' }, retry: { baseMs: 50, maxMs: 300 } });
  const B = await startDeliveryNode({ role: 'destination', nodeId: 'nodeB', tls: pki.tls('nodeB'), spoolDir: join(dir, `sb-${be}`),
    spoolKey, kms: { url: `https://127.0.0.1:${pB}`, id: 'kmsB' }, peer: { nodeId: 'nodeA' }, retry: { baseMs: 50, maxMs: 300 } });
  t.teardown(async () => { await A.close(); await B.close(); });
  writeFileSync(join(dir, 'wrap.hex'), randomBytes(32).toString('hex') + '\n');
  const cfg = (side: 'A' | 'B', port: number, peerPort: number, node: string) => ({
    id: `kms${side}`, role: side === 'A' ? 'source' : 'destination', listen: { host: '127.0.0.1', port },
    tls: { ca: 'pki/ca.pem', cert: `pki/kms${side}.pem`, key: `pki/kms${side}.key` }, dbPath: `kms${side}-${be}.db`,
    database: database[side], wrapKeyFile: 'wrap.hex', node: { url: node, id: `node${side}` }, peerNodeId: side === 'A' ? 'nodeB' : 'nodeA',
    peer: { url: `https://127.0.0.1:${peerPort}`, id: side === 'A' ? 'kmsB' : 'kmsA' },
    saes: { local: [`sae${side}`], remote: [side === 'A' ? 'saeB' : 'saeA'] }, qos: { key_chunk_size: 32 },
    openStream: side === 'A' });
  writeFileSync(join(dir, 'kmsA.json'), JSON.stringify(cfg('A', pA, pB, A.url)));
  writeFileSync(join(dir, 'kmsB.json'), JSON.stringify(cfg('B', pB, pA, B.url)));
  const kb = qkd(['kms', '--config', 'kmsB.json']);
  const ka = qkd(['kms', '--config', 'kmsA.json']);
  await until(() => ka.out.join('').includes('key stream opened'), 30_000, 'stream opened by the source KMS');
  const sid = (JSON.parse(ka.out.join('').split('\n').find((l) => l.includes('key stream opened'))!) as
    { key_stream_id: string }).key_stream_id;
  t.ok(A.hasStream(sid) && B.hasStream(sid), 'both nodes opened by their own KMS with one id');
  const canary = Buffer.from('CLI-CANARY-5e4d3c2b1a09-KEYBYTES');
  await Promise.all([A.offer(canary, {}), B.offer(canary, {})]);
  await until(() => A.metrics().acked === 1 && B.metrics().acked === 1, 15_000, 'acks from the KMS processes');
  const saeA = new JsonClient({ url: `https://127.0.0.1:${pA}`, id: 'kmsA' }, { tls: pki.tls('saeA') });
  const saeB = new JsonClient({ url: `https://127.0.0.1:${pB}`, id: 'kmsB' }, { tls: pki.tls('saeB') });
  t.teardown(() => { saeA.close(); saeB.close(); });
  const enc = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: 1 });
  t.equal(enc.status, 200);
  const dec = await saeB.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: enc.body.keys[0].key_ID }] });
  t.ok(Buffer.from(dec.body.keys[0].key, 'base64').equals(canary), 'the canary arrived at both SAEs');
  // Reformat on supply across the two processes: split (3 x 128 bits from 2 chunks) and merge
  // (1 x 512 bits from 2 chunks); each process derives the key_IDs and cuts the bytes itself.
  const more = randomBytes(32 * 4);
  await Promise.all([A.offer(more, {}), B.offer(more, {})]);
  await until(() => A.metrics().acked === 5 && B.metrics().acked === 5, 15_000, 'acks of 4 more chunks');
  const split = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: 3, size: 128 });
  const merged = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: 1, size: 512 });
  t.equal(split.status, 200);
  t.equal(merged.status, 200);
  const encKeys = [...split.body.keys, ...merged.body.keys] as { key_ID: string; key: string }[];
  const decR = await saeB.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: encKeys.map((k) => ({ key_ID: k.key_ID })) });
  t.equal(decR.status, 200, 'the peer process derived the same key_IDs');
  t.same(decR.body.keys.map((k: { key: string }) => k.key), encKeys.map((k) => k.key), 'and cut the same bytes');
  t.same(encKeys.map((k) => Buffer.from(k.key, 'base64')), [more.subarray(0, 16), more.subarray(16, 32), more.subarray(32, 48),
    more.subarray(64, 128)], 'consecutive bytes of the chunks; the rest of the split chunk discarded');
  for (const k of [ka, kb]) {
    k.proc.kill('SIGTERM');
    await new Promise((r) => k.proc.once('exit', r));
    t.equal(k.proc.exitCode, 0, 'clean stop on SIGTERM');
  }
  const text = [...ka.out, ...kb.out].join('');
  const lines = text.split('\n').filter(Boolean);
  t.ok(lines.every((l) => { try { JSON.parse(l); return true; } catch { return false; } }), 'every log line is JSON');
  t.ok(text.includes('KMS stopped'));
  for (const needle of ['CLI-CANARY', canary.toString('hex').slice(0, 20), canary.toString('base64').slice(0, 20)]) {
    t.notOk(text.includes(needle), `no form of the canary in the KMS processes' output (${needle.slice(0, 6)}...)`);
  }
});

tap.test('configuration errors are reported with what to do', async (t) => {
  writeFileSync(join(dir, 'bad.json'), JSON.stringify({ id: 'k', role: 'source', dbPath: 'x.db', wrapKeyFile: 'none',
    node: { url: 'https://127.0.0.1:1', id: 'n' }, peerNodeId: 'p', saes: { local: [], remote: [] } }));
  const k = qkd(['kms', '--config', 'bad.json']);
  await new Promise((r) => k.proc.once('exit', r));
  t.equal(k.proc.exitCode, 1);
  t.match(k.out.join(''), /'tls' \{ca, cert, key\} is required/);
  // An unreachable PostgreSQL server is a start-up error that says what to check (no server needed).
  writeFileSync(join(dir, 'nopg.json'), JSON.stringify({ id: 'k', role: 'source', dbPath: 'y.db', insecure: true,
    database: 'postgres://kms:secret-pw@127.0.0.1:1/kmsa', wrapKeyFile: 'wrap.hex',
    node: { url: 'https://127.0.0.1:1', id: 'n' }, peerNodeId: 'p', saes: { local: [], remote: [] } }));
  writeFileSync(join(dir, 'wrap.hex'), randomBytes(32).toString('hex') + '\n');
  const n = qkd(['kms', '--config', 'nopg.json']);
  await new Promise((r) => n.proc.once('exit', r));
  t.equal(n.proc.exitCode, 1);
  t.match(n.out.join(''), /cannot reach the PostgreSQL server: is it running and listening/);
  t.match(n.out.join(''), /kms@127\.0\.0\.1:1\/kmsa/, 'names user, host, port and database');
  t.notMatch(n.out.join(''), /secret-pw/, 'never the password');
});
