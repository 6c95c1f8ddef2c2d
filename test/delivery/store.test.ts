// The KMS key store (native qkd-store through src/delivery/store.ts), the node spool and key_ID
// derivation, each checked against a slow obvious reference or a known answer. The store's tests
// run on both backends (`[sqlite]`, `[postgres]`: a throwaway cluster, src/testkit/postgres.ts).
import tap from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeyStore, digestOf } from '../../src/delivery/store.ts';
import { Spool } from '../../src/delivery/spool.ts';
import { deriveKeyId } from '../../src/delivery/keyid.ts';
import { indexRanges } from '../../src/delivery/node.ts';
import { backendTap, currentBackend, postgresUnavailable, sharedPostgres, testDatabase } from '../../src/testkit/postgres.ts';

const t = backendTap(tap);

const dir = mkdtempSync(join(tmpdir(), 'qkd-store-test-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh database under the running test's backend: a SQLite file in `dir`, or a PostgreSQL URL. */
async function db(name: string): Promise<string> {
  return (await testDatabase(name.replace(/\.db$/, ''))) ?? join(dir, name);
}

/** Where the backend keeps its bytes: the SQLite files, or the whole PostgreSQL cluster (tables, WAL). */
async function storageDir(): Promise<string> {
  return currentBackend() === 'postgres' ? (await sharedPostgres()).dir : dir;
}

/** Reference digest: the construction spelled out byte by byte. */
function refDigest(sid: string, index: number, key: Buffer): string {
  const idx = Buffer.from([(index >>> 24) & 255, (index >>> 16) & 255, (index >>> 8) & 255, index & 255]);
  return createHash('sha256').update(Buffer.concat([Buffer.from('qkd-store/v1'), Buffer.from([0]), Buffer.from(sid),
    Buffer.from([0]), idx, key])).digest('hex');
}

function allFilesContain(d: string, needle: Buffer): boolean {
  const walk = (p: string): boolean => readdirSync(p).some((f) => {
    const q = join(p, f);
    const st = statSync(q);
    return st.isDirectory() ? walk(q) : st.isFile() && readFileSync(q).includes(needle); // not the server's socket
  });
  return walk(d);
}

t.test('put: stored, duplicate, conflict, full; digests match the reference', async (t) => {
  const s = KeyStore.open(await db('a.db'), randomBytes(32), 3);
  t.teardown(() => s.close());
  const sid = '0b1e7e3a-8a53-4d57-9a2b-6f4e1c2d3b4a';
  const keys = [0, 1, 2].map(() => randomBytes(32));
  for (let i = 0; i < 3; i++) t.equal(await s.put(sid, i * 1000 + 7, `id${i}`, keys[i], '{}', 0, 1e15), 'stored');
  t.equal(await s.put(sid, 7, 'id0', keys[0], '{}', 1, 1e15), 'duplicate', 'same bytes again');
  const other = Buffer.from(keys[0]);
  other[31] ^= 1;
  t.equal(await s.put(sid, 7, 'id0', other, '{}', 1, 1e15), 'conflict', 'one flipped bit is a conflict');
  t.equal(await s.put(sid, 9, 'id9', randomBytes(32), '{}', 1, 1e15), 'full', 'capacity 3 reached');
  t.same(s.counts(sid), { held: 3, reserved: 0, delivered: 0, expired: 0 });
  const c = s.candidates(sid, 10, 0);
  t.same(c.map((x) => x.index), [7, 1007, 2007], 'index order');
  for (let i = 0; i < 3; i++) t.equal(c[i].digest, refDigest(sid, c[i].index, keys[i]), `digest ${i} = reference`);
  t.equal(digestOf(s, sid, 7)?.digest, refDigest(sid, 7, keys[0]));
  t.equal(digestOf(s, sid, 8), null);
});

t.test('reserve is all-or-nothing; take hands a key out once; TTL erases; audit is append-only', async (t) => {
  const s = KeyStore.open(await db('b.db'), randomBytes(32), 100);
  t.teardown(() => s.close());
  const sid = 'a0000000-0000-4000-8000-000000000001';
  const k5 = randomBytes(16);
  const k6 = randomBytes(16);
  await s.put(sid, 5, 'k5', k5, '{"qber":0.01}', 0, 1000);
  await s.put(sid, 6, 'k6', k6, '{}', 0, 50);
  const good = { index: 5, digest: refDigest(sid, 5, k5) };
  t.same(s.reserve(sid, [good, { index: 6, digest: '00'.repeat(32) }], 'a>b', 1, true), [], 'one bad digest: none');
  t.same(s.reserve(sid, [good], 'a>b', 1, true), [5]);
  t.equal(await s.take('k5', 'x>y', 2), null, 'another SAE pair cannot take it');
  const got = await s.take('k5', 'a>b', 2);
  t.ok(got && Buffer.from(got.key).equals(k5), 'the same bytes come back');
  t.equal(await s.take('k5', 'a>b', 3), null, 'handed out once');
  t.equal(await s.put(sid, 5, 'k5', k5, '{}', 4, 1000), 'duplicate', 'a late retry after erasure is still a duplicate');
  t.same(s.expire(49), [], 'nothing expires before its time');
  t.same(s.expire(50), [{ keyStreamId: sid, index: 6 }]);
  t.same(s.counts(sid), { held: 0, reserved: 0, delivered: 1, expired: 1 });
  const trail = s.auditTrail(sid, 5).map((r) => r.event);
  t.same(trail, ['stored', 'confirmed', 'delivered', 'destroyed', 'duplicate']);
  t.throws(() => s.execRaw('DELETE FROM audit'), /append-only/);
  t.throws(() => s.execRaw("UPDATE audit SET event='x'"), /append-only/);
});

t.test('keys are wrapped at rest; a wrong wrapping key fails closed', async (t) => {
  const p = await db('c.db');
  const kek = randomBytes(32);
  const canary = Buffer.from('CANARY-7d1f3b9e-at-rest-key-bytes');
  const sid = 'a0000000-0000-4000-8000-000000000002';
  let s = KeyStore.open(p, kek, 10);
  await s.put(sid, 1, 'k1', canary, '{}', 0, 1e15);
  s.reserve(sid, [{ index: 1, digest: refDigest(sid, 1, canary) }], 'h', 0, true);
  s.close();
  t.notOk(allFilesContain(await storageDir(), canary), 'no database file (or PostgreSQL table, WAL) holds the key in clear');
  s = KeyStore.open(p, randomBytes(32), 10);
  await t.rejects(s.take('k1', 'h', 1), { code: 'STORE_CRYPTO' });
  s.close();
  s = KeyStore.open(p, kek, 10);
  const got = await s.take('k1', 'h', 1);
  t.ok(got && Buffer.from(got.key).equals(canary), 'survives reopening with the right key');
  s.close();
  const d = await db('d.db');
  t.throws(() => KeyStore.open(d, randomBytes(16), 1), { code: 'STORE_CRYPTO' });
});

tap.test('spool: sealed at rest, round-trips across instances, detects tampering', async (t) => {
  const d = join(dir, 'spool');
  const key = randomBytes(32);
  const canary = Buffer.from('CANARY-spool-0123456789abcdef0123');
  const sp = new Spool(d, key, { fsync: false });
  sp.putChunks([{ keyStreamId: 's1', index: 3, key: canary, provenance: { qber: 0.02 }, offeredAtMs: 5, expiresAtMs: 9 }],
    { bytes: Buffer.from('OLD-REMAINDER'), provenance: {}, offeredAtMs: 5 });
  sp.putPending({ bytes: Buffer.from('PENDING-CANARY'), provenance: { block_id: 1 }, offeredAtMs: 7 });
  sp.saveStreams([]);
  t.notOk(allFilesContain(d, canary), 'chunk bytes are not on disk in clear');
  t.notOk(allFilesContain(d, Buffer.from('PENDING-CANARY')), 'pending bytes are not on disk in clear');
  const again = new Spool(d, key);
  const [c] = again.loadChunks();
  t.ok(c.key.equals(canary));
  t.same({ i: c.index, p: c.provenance, e: c.expiresAtMs }, { i: 3, p: { qber: 0.02 }, e: 9 });
  t.ok(again.loadPending()?.bytes.equals(Buffer.from('PENDING-CANARY')), 'pending.bin is newer than the batch trailer');
  // moving a sealed batch to other indices must fail (associated data binds the indices)
  writeFileSync(join(d, 's1', '4-4.batch'), readFileSync(join(d, 's1', '3-3.batch')));
  t.throws(() => new Spool(d, key).loadChunks(), { code: 'DELIVERY_SPOOL_CORRUPT' });
  rmSync(join(d, 's1', '4-4.batch'));
  // a batch file goes once all its chunks are settled
  sp.putChunks([5, 6, 7].map((index) => ({ keyStreamId: 's1', index, key: randomBytes(8), provenance: {}, offeredAtMs: 0,
    expiresAtMs: 1 })), { bytes: Buffer.from('REST-AFTER-5-7'), provenance: {}, offeredAtMs: 0 });
  // a crash before pending.bin was rewritten: the batch's trailer is the newest remainder
  const crashed = new Spool(d, key);
  crashed.loadChunks();
  t.ok(crashed.loadPending()?.bytes.equals(Buffer.from('REST-AFTER-5-7')), 'the remainder written with the batch wins');
  t.ok(readdirSync(join(d, 's1')).includes('5-7.batch'));
  sp.removeChunk('s1', 5);
  sp.removeChunk('s1', 7);
  t.ok(readdirSync(join(d, 's1')).includes('5-7.batch'), 'kept while index 6 is outstanding');
  sp.removeChunk('s1', 6);
  t.notOk(readdirSync(join(d, 's1')).includes('5-7.batch'), 'deleted when all are settled');
  t.same(new Spool(d, key).loadChunks().map((c) => c.index), [3]);
  t.throws(() => new Spool(d, randomBytes(32)).loadChunks(), { code: 'DELIVERY_SPOOL_CORRUPT' }, 'wrong key');
  t.throws(() => new Spool(d, randomBytes(31)), { code: 'DELIVERY_SPOOL_KEY' });
});

tap.test('key_ID: UUIDv8, deterministic, distinct, matches the reference construction', async (t) => {
  const sid = '7596a85c-11e4-4403-a783-131614a9620e';
  const seen = new Set<string>();
  let caseless = 0;
  for (let i = 0; i < 2000; i++) {
    const id = deriveKeyId(sid, i);
    if (deriveKeyId(sid.toUpperCase(), i) === id) caseless++;
    seen.add(id);
    if (i < 5) {
      t.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      const h = createHash('sha256').update(Buffer.concat([Buffer.from('qkd-kms key_ID v1\0' + sid + '\0'),
        Buffer.from([0, 0, 0, i])])).digest();
      const hex = h.subarray(0, 16).toString('hex').split('');
      hex[12] = '8';
      hex[16] = ((parseInt(hex[16], 16) & 3) | 8).toString(16);
      t.equal(id.replace(/-/g, ''), hex.join(''), `reference for index ${i}`);
    }
  }
  t.equal(seen.size, 2000, 'distinct');
  t.equal(caseless, 2000, 'case of the stream id does not matter');
  t.not(deriveKeyId(sid, 0), deriveKeyId('7596a85c-11e4-4403-a783-131614a9620f', 0));
  t.equal(indexRanges([9, 1, 2, 3, 7, 10]), '1-3,7,9-10');
});

t.test('group commit: concurrent puts give the outcomes of the same puts one by one', async (t) => {
  const kek = randomBytes(32);
  const a = KeyStore.open(await db('g1.db'), kek, 30);
  const b = KeyStore.open(await db('g2.db'), kek, 30);
  t.teardown(() => { a.close(); b.close(); });
  const sid = 'a0000000-0000-4000-8000-000000000003';
  const keys = Array.from({ length: 45 }, () => randomBytes(16));
  // indices 0..44 with repeats: every 7th put repeats an earlier index with the same bytes,
  // every 11th with other bytes
  const ops = keys.map((k, i) => i % 11 === 10 ? { i: i - 5, k: randomBytes(16) } : i % 7 === 6 ? { i: i - 3, k: keys[i - 3] }
    : { i, k });
  const concurrent = await Promise.all(ops.map((o) => a.put(sid, o.i, `id${o.i}`, o.k, '{}', 0, 1e15)));
  const sequential: string[] = [];
  for (const o of ops) sequential.push(await b.put(sid, o.i, `id${o.i}`, o.k, '{}', 0, 1e15));
  t.same(concurrent, sequential);
  t.ok(concurrent.includes('duplicate') && concurrent.includes('conflict'), 'the input exercises every outcome');
  t.ok(concurrent.includes('full'));
  t.same(a.counts(sid), b.counts(sid));
});

t.test('takeMany: one transaction, per-key results like take one by one', async (t) => {
  const s = KeyStore.open(await db('tm.db'), randomBytes(32), 100);
  t.teardown(() => s.close());
  const sid = 'a0000000-0000-4000-8000-000000000004';
  const keys = [0, 1, 2, 3].map(() => randomBytes(32));
  for (let i = 0; i < 4; i++) await s.put(sid, i, `k${i}`, keys[i], '{}', 0, 1e15);
  const item = (i: number) => ({ index: i, digest: refDigest(sid, i, keys[i]) });
  t.same(s.reserve(sid, [item(0), item(1), item(2)], 'a>b', 0, true), [0, 1, 2]);
  t.same(s.reserve(sid, [item(3)], 'c>d', 0, true), [3]);
  const got = await s.takeMany(['k2', 'k3', 'nope', 'k0', 'k2'], 'a>b', 1);
  t.same(got.map((g) => g && g.index), [2, null, null, 0, null], 'other holder, unknown and repeated ids get null');
  t.ok(Buffer.from(got[0]!.key).equals(keys[2]) && Buffer.from(got[3]!.key).equals(keys[0]));
  t.same(s.counts(sid), { held: 0, reserved: 2, delivered: 2, expired: 0 });
});

const noPg = postgresUnavailable() ?? false;

tap.test('postgres: start-up errors say what was wrong and what to do', { skip: noPg }, async (t) => {
  const pg = await sharedPostgres();
  const good = pg.createDatabase('errs');
  const name = new URL(good).pathname.slice(1);
  const open = (url: string) => () => KeyStore.open(url, randomBytes(32), 10);
  t.throws(open(pg.url(name, 'qkd', 'wrong-password')), { code: 'STORE_SERVER', message: /authentication failed.*password/ });
  t.throws(open(pg.url('no_such_db')), { code: 'STORE_SERVER', message: /database does not exist: create it/ });
  const closed = `postgres://qkd:x@127.0.0.1:${pg.port === 1 ? 2 : 1}/x`;
  t.throws(open(closed), { code: 'STORE_SERVER', message: /cannot reach the PostgreSQL server: is it running/ });
  for (const bad of [open(pg.url(name, 'qkd', 'wrong-password')), open(closed)]) {
    try {
      bad();
    } catch (e) {
      t.notMatch((e as Error).message, /wrong-password/, 'the password is never echoed');
    }
  }
  const s = KeyStore.open(good, randomBytes(32), 10);
  t.match(s.backend(), new RegExp(`^PostgreSQL qkd@127.0.0.1:${pg.port}/${name}$`), 'backend named without the password');
  s.close();
});

tap.test('postgres: two store handles on one database, concurrent takeAll of one key_ID: exactly one wins', { skip: noPg }, async (t) => {
  const url = (await sharedPostgres()).createDatabase('race');
  const kek = randomBytes(32);
  const a = KeyStore.open(url, kek, 1000);
  const b = KeyStore.open(url, kek, 1000);
  t.teardown(() => { a.close(); b.close(); });
  const sid = 'a0000000-0000-4000-8000-000000000005';
  const keys = Array.from({ length: 20 }, () => randomBytes(32));
  for (let i = 0; i < keys.length; i++) await a.put(sid, i, `k${i}`, keys[i], '{}', 0, 1e15);
  t.same(a.reserve(sid, keys.map((k, i) => ({ index: i, digest: refDigest(sid, i, k) })), 'a>b', 0, true).length, keys.length);
  for (let i = 0; i < keys.length; i++) {
    const [x, y] = await Promise.all([a.takeAll([`k${i}`], 'a>b', '#saeB', 1), b.takeAll([`k${i}`], 'a>b', '#saeB', 1)]);
    const won = [x, y].filter((r) => r.keys.length === 1);
    t.equal(won.length, 1, `k${i}: one winner`);
    t.ok(Buffer.from(won[0].keys[0].key).equals(keys[i]), `k${i}: the winner has the key`);
    t.same([x, y].find((r) => r.keys.length === 0)?.refused, [{ pos: 0, reason: 'unknown' }], `k${i}: the loser is told it is gone`);
  }
  t.equal(a.verifyAudit().brokenSeq ?? null, null, 'the audit chain written by two connections is unbroken');
  t.same(b.counts(sid), { held: 0, reserved: 0, delivered: keys.length, expired: 0 });
});
