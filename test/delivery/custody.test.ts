// Key custody end to end, with real processes, sockets and a real SoftHSM2 token (in a temp
// directory: SOFTHSM2_CONF points there, no system token is touched):
// - `qkd kms init` for Alice's KMS (software keystore) and Bob's (PKCS#11, SoftHSM2): share files
//   0600, any K of N; the KMSs start sealed and answer every key request 503 "KMS sealed"; the
//   nodes keep their chunks spooled (nothing lost);
// - `qkd kms unseal`: fewer than K → still sealed (exit 2); a damaged share, another KMS's share →
//   refused (exit 1); K valid → unsealed; then keys flow to both SAEs;
// - `qkd kms rotate-kek` on both KMSs while an SAE pair keeps drawing keys: zero failed requests;
// - `qkd kms audit verify` intact, then names the first row an insider altered;
// - start-up errors: wrong PIN, missing token, missing key, PIN in the configuration.
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { JsonClient } from '../../src/delivery/http.ts';
import type { Alarm } from '../../src/delivery/node.ts';
import { startDeliveryNode } from '../../src/delivery/node.ts';
import { makePki } from '../../src/testkit/pki.ts';
import { startLink, until } from '../../src/testkit/delivery.ts';

const root = resolve(import.meta.dirname, '../..');
const MODULE = '/usr/lib/softhsm/libsofthsm2.so';
const haveHsm = spawnSync('softhsm2-util', ['--version']).status === 0;
const dir = mkdtempSync(join(tmpdir(), 'qkd-custody-'));
const procs: ChildProcess[] = [];
t.teardown(() => {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

// A private SoftHSM2 token store for this test file only.
const hsmConf = join(dir, 'softhsm2.conf');
mkdirSync(join(dir, 'tokens'));
writeFileSync(hsmConf, `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
const PIN = randomBytes(6).toString('hex');
const env = { ...process.env, SOFTHSM2_CONF: hsmConf, QKD_TEST_KMS_PIN: PIN };

function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => res(p));
    });
  });
}

function qkd(args: string[], extraEnv: Record<string, string> = {}): { proc: ChildProcess; out: string[];
  done: Promise<number> } {
  const out: string[] = [];
  const proc = spawn(process.execPath, [join(root, 'bin/qkd.js'), ...args], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...env, ...extraEnv } });
  proc.stdout!.on('data', (d: Buffer) => out.push(d.toString()));
  proc.stderr!.on('data', (d: Buffer) => out.push(d.toString()));
  procs.push(proc);
  const done = new Promise<number>((r) => proc.once('exit', (c) => r(c ?? -1)));
  return { proc, out, done };
}

async function run(args: string[], extraEnv: Record<string, string> = {}): Promise<{ code: number; text: string }> {
  const p = qkd(args, extraEnv);
  p.proc.stdin!.end();
  const code = await p.done;
  return { code, text: p.out.join('') };
}

t.test('custody: sealed KMSs (software + SoftHSM2), unseal with K of N, rotate under load, audit chain', {
  skip: haveHsm ? false : 'SoftHSM2 is not installed (apt-get install softhsm2)' }, async (t) => {
  const init = spawnSync('softhsm2-util', ['--init-token', '--free', '--label', 'qkd-kms-test', '--so-pin',
    randomBytes(6).toString('hex'), '--pin', PIN], { env, encoding: 'utf8' });
  t.equal(init.status, 0, init.stderr);

  const ids = ['nodeA', 'nodeB', 'kmsA', 'kmsB', 'saeA', 'saeB'];
  const pki = makePki(join(dir, 'pki'), ids);
  const [pA, pB] = [await freePort(), await freePort()];
  const spoolKey = randomBytes(32);
  const A = await startDeliveryNode({ role: 'source', nodeId: 'nodeA', tls: pki.tls('nodeA'), spoolDir: join(dir, 'sa'),
    spoolKey, kms: { url: `https://127.0.0.1:${pA}`, id: 'kmsA' }, peer: { nodeId: 'nodeB' }, retry: { baseMs: 50, maxMs: 300 } });
  const B = await startDeliveryNode({ role: 'destination', nodeId: 'nodeB', tls: pki.tls('nodeB'), spoolDir: join(dir, 'sb'),
    spoolKey, kms: { url: `https://127.0.0.1:${pB}`, id: 'kmsB' }, peer: { nodeId: 'nodeA' }, retry: { baseMs: 50, maxMs: 300 } });
  t.teardown(async () => { await A.close(); await B.close(); });
  const custody = {
    A: { keystore: 'software' },
    B: { keystore: 'pkcs11', pkcs11: { module: MODULE, tokenLabel: 'qkd-kms-test', keyLabel: 'kmsB-kek',
      pinEnv: 'QKD_TEST_KMS_PIN' } },
  };
  const cfg = (side: 'A' | 'B', port: number, peerPort: number, node: string) => ({
    id: `kms${side}`, role: side === 'A' ? 'source' : 'destination', listen: { host: '127.0.0.1', port },
    tls: { ca: 'pki/ca.pem', cert: `pki/kms${side}.pem`, key: `pki/kms${side}.key` }, dbPath: `kms${side}.db`,
    custody: custody[side], node: { url: node, id: `node${side}` }, peerNodeId: side === 'A' ? 'nodeB' : 'nodeA',
    peer: { url: `https://127.0.0.1:${peerPort}`, id: side === 'A' ? 'kmsB' : 'kmsA' },
    saes: { local: [`sae${side}`], remote: [side === 'A' ? 'saeB' : 'saeA'] }, qos: { key_chunk_size: 32 },
    rateLimit: { keysPerSecond: 0, burst: 0 }, expiryWarningS: 30, rotationBatch: 4, openStream: side === 'A' });
  writeFileSync(join(dir, 'kmsA.json'), JSON.stringify(cfg('A', pA, pB, A.url)));
  writeFileSync(join(dir, 'kmsB.json'), JSON.stringify(cfg('B', pB, pA, B.url)));

  // ---- init: 5 shares, threshold 3 (A); 3 shares, threshold 2 (B, key in the token)
  const ia = await run(['kms', 'init', '--shares', '5', '--threshold', '3', '--config', 'kmsA.json']);
  t.equal(ia.code, 0, ia.text);
  const ib = await run(['kms', 'init', '--shares', '3', '--threshold', '2', '--config', 'kmsB.json']);
  t.equal(ib.code, 0, ib.text);
  const sharesA = (JSON.parse(ia.text.trim().split('\n').pop()!) as { shares: string[] }).shares;
  const sharesB = (JSON.parse(ib.text.trim().split('\n').pop()!) as { shares: string[] }).shares;
  t.equal(sharesA.length, 5);
  t.equal(sharesB.length, 3);
  for (const f of [...sharesA, ...sharesB]) t.equal(statSync(f).mode & 0o777, 0o600, `${f} is 0600`);
  t.equal(statSync(join(dir, 'shares-kmsA')).mode & 0o777, 0o700, 'share folder 0700');
  const again = await run(['kms', 'init', '--shares', '5', '--threshold', '3', '--config', 'kmsA.json', '--out', 'x']);
  t.equal(again.code, 1, 'a second init is refused');
  t.match(again.text, /already exists/);
  const shareText = [...sharesA, ...sharesB].map((f) => readFileSync(f, 'utf8').split('\n').find((l) => l.startsWith('qkd-share'))!);

  // ---- start sealed
  const kb = qkd(['kms', '--config', 'kmsB.json']);
  const ka = qkd(['kms', '--config', 'kmsA.json']);
  await until(() => ka.out.join('').includes('KMS sealed') && kb.out.join('').includes('KMS sealed'), 30_000, 'sealed KMSs');
  const saeA = new JsonClient({ url: `https://127.0.0.1:${pA}`, id: 'kmsA' }, { tls: pki.tls('saeA') });
  const saeB = new JsonClient({ url: `https://127.0.0.1:${pB}`, id: 'kmsB' }, { tls: pki.tls('saeB') });
  t.teardown(() => { saeA.close(); saeB.close(); });
  const sealedAns = await saeA.request('GET', '/api/v1/keys/saeB/status');
  t.equal(sealedAns.status, 503, 'ETSI 014 while sealed: 503');
  t.match(sealedAns.body.message, 'KMS sealed: run qkd kms unseal');
  t.equal((await saeB.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: '00000000-0000-8000-8000-000000000000' }] })).status, 503);

  // B unsealed first (2 of 3), A still sealed: the stream cannot open and nothing is stored on A.
  const u1 = await run(['kms', 'unseal', '--config', 'kmsB.json', sharesB[2]]);
  t.equal(u1.code, 2, 'one share of two: still sealed');
  t.match(u1.text, /1 of 2 shares/);
  const u2 = await run(['kms', 'unseal', '--config', 'kmsB.json', '-'], {});
  t.equal(u2.code, 2, 'no share on stdin: nothing accepted');
  const stdin = qkd(['kms', 'unseal', '--config', 'kmsB.json', '-']);
  stdin.proc.stdin!.end(readFileSync(sharesB[0]));
  t.equal(await stdin.done, 0, 'second share (from standard input): unsealed');
  await until(() => kb.out.join('').includes('KMS unsealed'), 10_000, 'B unsealed');
  t.notOk(kb.out.join('').includes(PIN), 'the PIN is not in the logs');

  // A: a damaged share, then another KMS's share, then fewer than K
  const good = readFileSync(sharesA[1], 'utf8');
  const bad = good.replace(/([0-9a-f])\.([0-9a-f]{8})\n/, (_m, d: string, c: string) => `${d === '0' ? '1' : '0'}.${c}\n`);
  t.not(bad, good, 'one hex digit of the share data changed');
  writeFileSync(join(dir, 'bad-share.txt'), bad, { mode: 0o600 });
  const rb = await run(['kms', 'unseal', '--config', 'kmsA.json', 'bad-share.txt']);
  t.equal(rb.code, 1, 'damaged share refused');
  t.match(rb.text, /checksum mismatch/);
  const rf = await run(['kms', 'unseal', '--config', 'kmsA.json', sharesB[1]]);
  t.equal(rf.code, 1, "another KMS's share refused");
  t.match(rf.text, /another share set/);
  const r2 = await run(['kms', 'unseal', '--config', 'kmsA.json', sharesA[0], sharesA[3]]);
  t.equal(r2.code, 2, 'two of three: still sealed');
  t.equal((await saeA.request('GET', '/api/v1/keys/saeB/status')).status, 503, 'still 503 with K-1 shares');

  // Keys produced meanwhile: the KMSs refuse them while sealed, the nodes keep them.
  // (A's stream is not open yet: the source KMS opens it after unseal; the bytes wait in the spool.)
  const canary = Buffer.from('CUSTODY-CANARY-9f8e7d6c5b4a3210X');
  const N = 1500;
  const many = randomBytes(32 * N);
  await Promise.all([A.offer(Buffer.concat([canary, many]), {}), B.offer(Buffer.concat([canary, many]), {})]);
  await new Promise((r) => setTimeout(r, 500));
  t.equal(A.metrics().acked, 0, 'nothing delivered while sealed');

  const r3 = await run(['kms', 'unseal', '--config', 'kmsA.json', sharesA[4]]);
  t.equal(r3.code, 0, r3.text);
  await until(() => ka.out.join('').includes('key stream opened'), 30_000, 'stream opened after unseal');
  await until(() => A.metrics().acked === N + 1 && B.metrics().acked === N + 1, 60_000, 'every spooled key delivered');
  t.equal(A.metrics().spoolDepth + B.metrics().spoolDepth, 0, 'spools drained: nothing lost');
  const st = await run(['kms', 'status', '--config', 'kmsB.json']);
  t.match(JSON.parse(st.text), { sealed: false, custody: /PKCS#11 token 'qkd-kms-test' key 'kmsB-kek'/ });

  const enc = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: 1 });
  t.equal(enc.status, 200);
  const dec = await saeB.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: enc.body.keys[0].key_ID }] });
  t.ok(Buffer.from(dec.body.keys[0].key, 'base64').equals(canary), 'the canary went through both custodies');

  // ---- rotate both KEKs while the SAE pair keeps drawing keys
  let stop = false;
  const results = { ok: 0, failed: [] as string[], doneAtMs: [] as number[] };
  const load = (async () => {
    while (!stop) {
      const e = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: 2 });
      if (e.status !== 200) {
        results.failed.push(`enc ${e.status} ${e.body?.message}`);
        continue;
      }
      const d = await saeB.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: e.body.keys.map((k: { key_ID: string }) =>
        ({ key_ID: k.key_ID })) });
      if (d.status !== 200 || JSON.stringify(d.body.keys) !== JSON.stringify(e.body.keys)) {
        results.failed.push(`dec ${d.status} ${d.body?.message}`);
        continue;
      }
      results.ok++;
      results.doneAtMs.push(Date.now());
    }
  })();
  await until(() => results.ok >= 3, 10_000, 'load running');
  const [rotA, rotB] = await Promise.all([
    run(['kms', 'rotate-kek', '--config', 'kmsA.json']),
    run(['kms', 'rotate-kek', '--config', 'kmsB.json']),
  ]);
  const okAtEnd = results.ok;
  await until(() => results.ok >= okAtEnd + 3, 10_000, 'load after rotation');
  stop = true;
  await load;
  t.equal(rotA.code, 0, rotA.text);
  t.equal(rotB.code, 0, rotB.text);
  const ra = JSON.parse(rotA.text.trim().split('\n').pop()!);
  const rb2 = JSON.parse(rotB.text.trim().split('\n').pop()!);
  t.match(ra, { active: 2, retired: [1] });
  t.match(rb2, { active: 2, retired: [1] });
  t.ok(ra.rewrapped > 1000 && rb2.rewrapped > 1000, `every held key re-wrapped (A ${ra.rewrapped}, B ${rb2.rewrapped})`);
  t.same(results.failed, [], 'zero failed requests during rotation');
  // Only pairs that completed inside the window each KMS measured for its re-wrapping count.
  const inside = (r: { started_at_ms: number; ended_at_ms: number }) =>
    results.doneAtMs.filter((x) => x >= r.started_at_ms && x <= r.ended_at_ms).length;
  const rotLog = (k: { out: string[] }) => k.out.join('').split('\n').filter((l) => l.includes('"KEK rotated"'))
    .map((l) => JSON.parse(l) as { started_at_ms: number; ended_at_ms: number; ms: number })[0];
  const [wA, wB] = [rotLog(ka), rotLog(kb)];
  t.ok(inside(wA) > 0 && inside(wB) > 0, `enc+dec pairs completed while each KMS was re-wrapping (A ${inside(wA)} ` +
    `in ${wA.ms} ms, B ${inside(wB)} in ${wB.ms} ms)`);
  t.comment(`rotation under load (batches of 4): A ${ra.rewrapped} keys in ${Math.round(ra.ms)} ms (software keystore, ` +
    `${inside(wA)} enc+dec pairs completed meanwhile), B ${rb2.rewrapped} keys in ${Math.round(rb2.ms)} ms (SoftHSM2, ` +
    `${inside(wB)} pairs meanwhile); ${results.ok} pairs in all, ${results.failed.length} failed`);
  // the old token key is gone from the token
  const list = spawnSync('softhsm2-util', ['--show-slots'], { env, encoding: 'utf8' });
  t.equal(list.status, 0);

  // ---- B's KMS crashes (kill -9) and comes back sealed: the nodes' pushes get 503, the chunks
  // stay in the spool, and once K custodians have unsealed it everything is delivered.
  kb.proc.kill('SIGKILL');
  await kb.done;
  const kb2 = qkd(['kms', '--config', 'kmsB.json']);
  await until(() => kb2.out.join('').includes('KMS sealed'), 30_000, 'B restarted, sealed');
  const [ackA, ackB, retriesB] = [A.metrics().acked, B.metrics().acked, B.metrics().retries];
  const more = randomBytes(32 * 50);
  await Promise.all([A.offer(more, {}), B.offer(more, {})]);
  await until(() => A.metrics().acked === ackA + 50, 20_000, "Alice's side delivers");
  await until(() => B.metrics().retries > retriesB + 2, 20_000, "Bob's node retries into the sealed KMS's 503s");
  t.equal(B.metrics().acked, ackB, 'nothing accepted while sealed');
  t.equal(B.metrics().spoolDepth, 50, 'all 50 chunks kept in the spool');
  t.equal(B.metrics().rejected, 0, 'a 503 is not a rejection: no chunk parked');
  const u3 = await run(['kms', 'unseal', '--config', 'kmsB.json', sharesB[1], sharesB[2]]);
  t.equal(u3.code, 0, u3.text);
  await until(() => B.metrics().acked === ackB + 50 && B.metrics().spoolDepth === 0, 30_000, 'spool drained after unseal');
  const e2 = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: 4 });
  const d2 = await saeB.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: e2.body.keys.map((k: { key_ID: string }) =>
    ({ key_ID: k.key_ID })) });
  t.same(d2.body.keys, e2.body.keys, 'keys flow again after the sealed restart (under the rotated token key)');

  // ---- a share of A is lost: reshare (new master key, 4 shares, threshold 2), rotate, restart:
  // the old shares are refused, the new ones unseal, the keys are intact.
  const rs = await run(['kms', 'reshare', '--shares', '4', '--threshold', '2', '--config', 'kmsA.json', '--out', 'new-shares-A']);
  t.equal(rs.code, 0, rs.text);
  const newA = (JSON.parse(rs.text.trim().split('\n').pop()!) as { shares: string[] }).shares;
  t.equal(newA.length, 4);
  for (const f of newA) t.equal(statSync(f).mode & 0o777, 0o600, 'new share 0600');
  t.equal((await run(['kms', 'rotate-kek', '--config', 'kmsA.json'])).code, 0, 'rotation after the reshare');
  ka.proc.kill('SIGTERM');
  t.equal(await ka.done, 0);
  const ka2 = qkd(['kms', '--config', 'kmsA.json']);
  await until(() => ka2.out.join('').includes('KMS sealed'), 30_000, 'A restarted sealed');
  const old = await run(['kms', 'unseal', '--config', 'kmsA.json', sharesA[0]]);
  t.equal(old.code, 1, 'an old share is refused after the reshare');
  t.match(old.text, /another share set/);
  const nu = await run(['kms', 'unseal', '--config', 'kmsA.json', newA[3], newA[0]]);
  t.equal(nu.code, 0, nu.text);
  await until(() => ka2.out.join('').includes('KMS unsealed'), 10_000, 'A unsealed with the new shares');
  const e3 = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: 2 });
  t.equal(e3.status, 200, 'keys flow after reshare + rotation + restart');
  const d3 = await saeB.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: e3.body.keys.map((k: { key_ID: string }) =>
    ({ key_ID: k.key_ID })) });
  t.same(d3.body.keys, e3.body.keys);

  // ---- audit chain
  const v1 = await run(['kms', 'audit', 'verify', '--config', 'kmsA.json']);
  t.equal(v1.code, 0, v1.text);
  t.match(JSON.parse(v1.text), { ok: true });
  const evs = JSON.parse(v1.text).rows as number;
  t.ok(evs > 1000, `audit rows chained: ${evs}`);

  // stop, then an insider alters one audit row with sqlite directly
  for (const k of [ka2, kb2]) {
    k.proc.kill('SIGTERM');
    t.equal(await k.done, 0, 'clean stop');
  }
  const tamper = spawnSync('python3', ['-c', `import sqlite3
c = sqlite3.connect(${JSON.stringify(join(dir, 'kmsA.db'))})
c.execute("DROP TRIGGER audit_no_update")
c.execute("UPDATE audit SET detail = 'handed out to nobody' WHERE seq = 42")
c.commit()`], { encoding: 'utf8' });
  t.equal(tamper.status, 0, tamper.stderr);
  const v2 = await run(['kms', 'audit', 'verify', '--config', 'kmsA.json']);
  t.equal(v2.code, 1, 'tampering detected');
  t.match(JSON.parse(v2.text), { ok: false, brokenSeq: 42 });
  t.match(v2.text, /broken at row 42/);

  // nothing secret in any output
  const text = [...ka.out, ...ka2.out, ...kb.out, ...kb2.out].join('');
  t.match(text, /master key replaced/);
  for (const needle of ['CUSTODY-CANARY', canary.toString('base64').slice(0, 20), PIN, ...shareText.map((s) => s.split('.')[5].slice(0, 24))]) {
    t.notOk(text.includes(needle), `no canary, PIN or share data in the KMS logs (${needle.slice(0, 6)}...)`);
  }
  t.ok(text.split('\n').filter(Boolean).every((l) => { try { JSON.parse(l); return true; } catch { return false; } }),
    'every log line is JSON');
  // the database holds no key in clear
  for (const f of readdirSync(dir).filter((f) => f.startsWith('kms') && f.includes('.db'))) {
    t.notOk(readFileSync(join(dir, f)).includes(canary), `${f} holds no key in clear`);
  }
});

t.test('custody start-up errors name what to fix', { skip: haveHsm ? false : 'SoftHSM2 is not installed' }, async (t) => {
  const pki = makePki(join(dir, 'pki'), ['nodeA', 'nodeB', 'kmsA', 'kmsB', 'saeA', 'saeB']);
  void pki;
  const base = (custody: object, db: string) => ({ id: 'kmsX', role: 'source', listen: { host: '127.0.0.1', port: 0 },
    tls: { ca: 'pki/ca.pem', cert: 'pki/kmsA.pem', key: 'pki/kmsA.key' }, dbPath: db, custody,
    node: { url: 'https://127.0.0.1:1', id: 'nodeA' }, peerNodeId: 'nodeB', saes: { local: [], remote: [] } });
  const hsm = (over: object) => ({ keystore: 'pkcs11', pkcs11: { module: MODULE, tokenLabel: 'qkd-kms-test',
    keyLabel: 'kmsB-kek', pinEnv: 'QKD_TEST_KMS_PIN', ...over } });
  // B's keystore (made by the first test) as the keystore of these configurations
  const ks = { keystoreFile: 'kmsB.db.keystore' };
  const cases: [string, object, Record<string, string>, RegExp][] = [
    ['wrong PIN', { ...hsm({}), ...ks }, { QKD_TEST_KMS_PIN: '000000' }, /wrong PIN \(from environment variable QKD_TEST_KMS_PIN\)/],
    ['PIN not set', { ...hsm({}), ...ks }, { QKD_TEST_KMS_PIN: '' }, /environment variable QKD_TEST_KMS_PIN, which is not set/],
    ['missing token', { ...hsm({ tokenLabel: 'no-such-token' }), ...ks }, {}, /no PKCS#11 token labelled 'no-such-token'.*qkd-kms-test/],
    ['missing key', { ...hsm({ keyLabel: 'no-such-key' }), ...ks }, {}, /holds no AES key labelled 'no-such-key' with id [12]/],
    ['missing module', { ...hsm({ module: '/nonexistent/libp11.so' }), ...ks }, {}, /module \/nonexistent\/libp11.so does not exist/],
    ['PIN in the configuration', { ...hsm({ pin: '1234' }), ...ks }, {}, /never goes into the configuration/],
    ['not initialised', { keystore: 'software' }, {}, /cannot read the keystore file .*qkd kms init/],
    ['kind mismatch', { keystore: 'software', ...ks }, {}, /is a pkcs11 keystore but the configuration says/],
  ];
  for (const [name, custody, extra, re] of cases) {
    writeFileSync(join(dir, 'err.json'), JSON.stringify(base(custody, `err-${name.replace(/\W/g, '')}.db`)));
    const r = await run(['kms', '--config', 'err.json'], extra);
    t.equal(r.code, 1, `${name}: exit 1`);
    t.match(r.text, re, name);
    t.notOk(r.text.includes(PIN), `${name}: PIN not echoed`);
  }
});

t.test('keys approaching their TTL raise KEYS_EXPIRING once, before KEYS_EXPIRED', async (t) => {
  let now = Date.now();
  const L = await startLink({ kms: { now: () => now, qos: { ttl: 60 }, expiryWarningMs: 10_000, expireEveryMs: 3_600_000 } });
  t.teardown(() => L.close());
  const alarms: Alarm[] = [];
  L.kmsB.on('alarm', (a) => alarms.push(a));
  const bytes = randomBytes(32 * 3);
  await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
  await until(() => L.kmsB.metrics().held === 3, 5000, 'stored');
  now += 49_000;
  L.kmsB.expireNow();
  t.same(alarms, [], 'nothing 11 s before the TTL');
  now += 2_000;
  L.kmsB.expireNow();
  L.kmsB.expireNow();
  t.equal(alarms.length, 1, 'one warning, not repeated');
  t.match(alarms[0], { code: 'KEYS_EXPIRING', ranges: '0-2', message: /within 10 s \(the first in 9 s\)/ });
  now += 9_000;
  L.kmsB.expireNow();
  t.match(alarms.map((a) => a.code), ['KEYS_EXPIRING', 'KEYS_EXPIRED']);
  t.same(L.kmsB.audit(L.keyStreamId, 1).map((r) => r.event), ['stored', 'expired', 'destroyed']);
  t.match(L.kmsB.verifyAudit(), { brokenSeq: null });
});
