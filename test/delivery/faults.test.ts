// Delivery under faults, over real sockets and mutual TLS: a lost 201 and its retry, a conflicting
// retry (409), the KMS down for a while (with a node restart in between), TTL expiry on the node
// and in the KMS, wrong client certificates, and a push for another node's stream.
import tap from 'tap';
import { backendTap } from '../../src/testkit/postgres.ts';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { JsonClient } from '../../src/delivery/http.ts';
import { startLink, startLossyProxy, until } from '../../src/testkit/delivery.ts';
import type { Alarm } from '../../src/delivery/node.ts';

// Every test runs on SQLite and on PostgreSQL (`[postgres]`: a named skip without the server binaries).
const t = backendTap(tap);

const CHUNK = 32;

/** Drains every key of the link through ETSI 014 and returns Alice's and Bob's copies. */
async function drain(L: Awaited<ReturnType<typeof startLink>>, n: number) {
  const a = L.sae('saeA', L.kmsA);
  const b = L.sae('saeB', L.kmsB);
  const enc = await a.req('POST', '/api/v1/keys/saeB/enc_keys', { number: n });
  if (enc.status !== 200) throw new Error(`enc_keys ${enc.status} ${JSON.stringify(enc.body)}`);
  const dec = await b.req('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
  const cat = (ks: { key: string }[]) => Buffer.concat(ks.map((k) => Buffer.from(k.key, 'base64')));
  return { alice: cat(enc.body.keys), bob: cat(dec.body.keys) };
}

function anyFileContains(dir: string, needle: Buffer): boolean {
  const walk = (p: string): boolean => readdirSync(p).some((f) => {
    const q = join(p, f);
    return statSync(q).isDirectory() ? walk(q) : readFileSync(q).includes(needle);
  });
  return walk(dir);
}

// The plain push mode (one request per chunk, what a KMS without our batch extension gets): the
// counts below are per request. The batched mode's own faults are in push-batch.test.ts.
const PLAIN = { pushBatch: 0 };

t.test('a lost 201 is retried with the same bytes and stored once', async (t) => {
  const L = await startLink({ kms: PLAIN });
  t.teardown(() => L.close());
  const proxy = await startLossyProxy({ targetUrl: L.kmsA.url, targetId: 'kmsA', serverTls: L.pki.tls('kmsA'),
    clientTls: L.pki.tls('nodeA'), drop: (n) => n === 1 || n === 2 });
  t.teardown(() => proxy.close());
  L.nodeA.setKmsUrl(proxy.url);
  const retries: unknown[] = [];
  L.nodeA.on('retry', (e) => retries.push(e));
  const bytes = randomBytes(CHUNK * 4);
  await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
  await until(() => L.nodeA.metrics().acked === 4 && L.nodeB.metrics().acked === 4, 10_000, 'acks');
  t.equal(proxy.dropped, 2, 'two answers were lost after the KMS stored the key');
  t.ok(retries.length >= 2, 'the node retried');
  const m = L.kmsA.metrics();
  t.equal(m.acked, 4, 'four keys stored');
  t.equal(m.duplicates, 2, 'the retries were recognised as duplicates');
  t.equal(m.held, 4, 'one stored key per index');
  const { alice, bob } = await drain(L, 4);
  t.ok(alice.equals(bytes) && bob.equals(bytes), 'nothing lost, nothing doubled');
});

t.test('property: under random lost answers and 503s every chunk is stored exactly once', async (t) => {
  // A long request timeout: only the scheduled faults may cause retries, not a slow machine.
  const L = await startLink({ node: { retry: { baseMs: 5, maxMs: 40 }, requestTimeoutMs: 30_000 }, kms: PLAIN });
  t.teardown(() => L.close());
  // A seeded generator, so a failure is reproducible.
  let seed = 0x2545f491;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const fate: ('drop' | 'fail' | 'ok')[] = [];
  const pick = (k: number) => (fate[k] ??= rnd() < 0.2 ? 'drop' : rnd() < 0.25 ? 'fail' : 'ok');
  const proxy = await startLossyProxy({ targetUrl: L.kmsA.url, targetId: 'kmsA', serverTls: L.pki.tls('kmsA'),
    clientTls: L.pki.tls('nodeA'), drop: (k) => pick(k) === 'drop', failBefore: (k) => pick(k) === 'fail' });
  t.teardown(() => proxy.close());
  L.nodeA.setKmsUrl(proxy.url);
  const n = 60;
  const bytes = randomBytes(CHUNK * n);
  for (let i = 0; i < 3; i++) {
    const part = bytes.subarray((i * n * CHUNK) / 3, ((i + 1) * n * CHUNK) / 3);
    await Promise.all([L.nodeA.offer(part, {}), L.nodeB.offer(part, {})]);
  }
  await until(() => L.nodeA.metrics().acked === n && L.nodeB.metrics().acked === n, 20_000, 'all acked');
  const dropped = fate.filter((f) => f === 'drop').length;
  const failed = fate.filter((f) => f === 'fail').length;
  t.ok(dropped > 3 && failed > 3, `the schedule lost ${dropped} answers and failed ${failed} requests`);
  const m = L.kmsA.metrics();
  t.equal(m.acked, n, 'each chunk stored once');
  t.equal(m.duplicates, dropped, 'each lost answer came back as exactly one duplicate');
  t.equal(m.held, n);
  t.equal(L.nodeA.metrics().retries, dropped + failed, 'every failure was retried, nothing else');
  const { alice, bob } = await drain(L, n);
  t.ok(alice.equals(bytes) && bob.equals(bytes), 'both SAEs get exactly the offered bytes');
});

t.test('a conflicting retry gets 409 and raises alarms on both sides', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  const sid = L.keyStreamId;
  // Something (a desynchronised or tampered path) already stored other bytes under index 0.
  const asNode = new JsonClient({ url: L.kmsA.url, id: 'kmsA' }, { tls: L.pki.tls('nodeA') });
  t.teardown(() => asNode.close());
  const first = randomBytes(CHUNK);
  const meta = { size: 100, buffer: { key_stream_id: sid } };
  t.equal((await asNode.request('POST', '/api/v1/qkd/etsi004/key-material',
    { status: 0, index: 0, key_buffer: first.toString('base64'), metadata: meta })).status, 201);
  t.equal((await asNode.request('POST', '/api/v1/qkd/etsi004/key-material',
    { status: 0, index: 0, key_buffer: first.toString('base64'), metadata: { size: 100, buffer: JSON.stringify({ key_stream_id: sid }) } })).status,
  201, 'the same bytes again (metadata buffer as a JSON string): 201');
  const nodeAlarms: Alarm[] = [];
  const kmsAlarms: Alarm[] = [];
  L.nodeA.on('alarm', (a) => nodeAlarms.push(a));
  L.kmsA.on('alarm', (a) => kmsAlarms.push(a));
  await L.nodeA.offer(randomBytes(CHUNK), {});
  await until(() => nodeAlarms.length > 0, 5000, 'node alarm');
  t.match(nodeAlarms[0], { code: 'KMS_CONFLICT', httpStatus: 409, index: 0 });
  t.match(kmsAlarms[0], { code: 'KEY_CONFLICT', security: true, index: 0 });
  t.equal(L.kmsA.metrics().conflicts, 1);
  t.equal(L.kmsA.metrics().held, 1);
  t.equal(L.nodeA.metrics().rejected, 1);
  await new Promise((r) => setTimeout(r, 150));
  t.equal(L.kmsA.metrics().conflicts, 1, 'a 4xx is not retried');
  t.same(L.kmsA.audit(sid, 0).map((r) => r.event), ['stored', 'duplicate', 'conflict']);
});

t.test('KMS down for a while, node restarted meanwhile: nothing lost, nothing duplicated', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  const port = Number(new URL(L.kmsA.url).port);
  const bytes = randomBytes(CHUNK * 8);
  const part = (a: number, b: number) => bytes.subarray(a * CHUNK, b * CHUNK);
  await Promise.all([L.nodeA.offer(part(0, 2), {}), L.nodeB.offer(part(0, 2), {})]);
  await until(() => L.kmsA.metrics().acked === 2, 5000, 'first two stored before the outage');
  await L.kmsA.close();
  await Promise.all([L.nodeA.offer(part(2, 5), {}), L.nodeB.offer(part(2, 5), {})]);
  await until(() => L.nodeA.metrics().retries >= 1, 5000, 'retries while the KMS is down');
  t.equal(L.nodeA.metrics().spoolDepth, 3);
  t.notOk(anyFileContains(L.nodeOpts.A.spoolDir, part(2, 3).subarray(0, 16)), 'the spool holds no key bytes in clear');
  const nodeA = await L.restartNode('A');
  t.equal(nodeA.metrics().spoolDepth, 3, 'the spool survived the node restart');
  await Promise.all([nodeA.offer(part(5, 8), {}), L.nodeB.offer(part(5, 8), {})]);
  t.equal(nodeA.metrics().spoolDepth, 6, 'new offers continue the index sequence after the restart');
  await new Promise((r) => setTimeout(r, 300));
  const kms = await L.restartKms('A');
  t.equal(Number(new URL(kms.url).port), port);
  await until(() => nodeA.metrics().spoolDepth === 0, 10_000, 'spool drained');
  t.equal(kms.metrics().held, 8, 'the two keys stored before the outage survived the KMS restart');
  t.equal(kms.metrics().acked, 6);
  t.equal(kms.metrics().duplicates, 0);
  const { alice, bob } = await drain(L, 8);
  t.ok(alice.equals(bytes), 'Alice\'s KMS holds every byte in order');
  t.ok(bob.equals(bytes), 'and so does Bob\'s');
});

t.test('KMS full: 503 keeps the chunk at the node until there is room', async (t) => {
  const L = await startLink({ kms: { capacity: 2 } });
  t.teardown(() => L.close());
  const bytes = randomBytes(CHUNK * 3);
  await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
  await until(() => L.kmsA.metrics().full >= 1 && L.nodeA.metrics().acked === 2, 5000, '503 and two acks');
  t.equal(L.nodeA.metrics().spoolDepth, 1, 'the third chunk waits at the node');
  const first = await drain(L, 2);
  t.ok(first.alice.equals(bytes.subarray(0, 2 * CHUNK)));
  await until(() => L.nodeA.metrics().spoolDepth === 0 && L.nodeB.metrics().spoolDepth === 0, 10_000, 'delivered after room');
  t.ok((await drain(L, 1)).bob.equals(bytes.subarray(2 * CHUNK)));
});

t.test('TTL: unacknowledged chunks are zeroised at the node and reported by range; the KMS erases expired keys', async (t) => {
  let nodeNow = Date.now();
  let kmsNow = Date.now();
  const L = await startLink({ node: { now: () => nodeNow }, kms: { now: () => kmsNow, qos: { ttl: 60 } } });
  t.teardown(() => L.close());
  await L.kmsA.close(); // nothing gets acknowledged at Alice's side
  const alarms: Alarm[] = [];
  L.nodeA.on('alarm', (a) => alarms.push(a));
  const bytes = randomBytes(CHUNK * 5);
  await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
  await until(() => L.kmsB.metrics().held === 5, 5000, 'Bob\'s KMS has them');
  nodeNow += 59_000;
  L.nodeA.sweepExpired();
  t.equal(L.nodeA.metrics().spoolDepth, 5, 'not before the TTL');
  nodeNow += 1_000;
  L.nodeA.sweepExpired();
  t.equal(L.nodeA.metrics().spoolDepth, 0);
  t.equal(L.nodeA.metrics().expired, 5);
  t.match(alarms.find((a) => a.code === 'KEYS_EXPIRED'), { ranges: '0-4' });
  t.equal(readdirSync(join(L.nodeOpts.A.spoolDir, L.keyStreamId)).length, 0, 'and gone from the spool');
  const kmsAlarms: Alarm[] = [];
  L.kmsB.on('alarm', (a) => kmsAlarms.push(a));
  kmsNow += 60_000;
  L.kmsB.expireNow();
  t.equal(L.kmsB.metrics().held, 0);
  t.equal(L.kmsB.metrics().dropped, 5);
  t.match(kmsAlarms.find((a) => a.code === 'KEYS_EXPIRED'), { code: 'KEYS_EXPIRED', ranges: '0-4' });
  t.same(L.kmsB.audit(L.keyStreamId, 2).map((r) => r.event), ['stored', 'expired', 'destroyed']);
});

t.test('wrong client certificates and a push for another node\'s stream are refused', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  const sid = L.keyStreamId;
  const key = randomBytes(CHUNK).toString('base64');
  const push = (c: JsonClient, id: string) => c.request('POST', '/api/v1/qkd/etsi004/key-material',
    { status: 0, index: 0, key_buffer: key, metadata: { size: 100, buffer: { key_stream_id: id } } });
  const asB = new JsonClient({ url: L.kmsA.url, id: 'kmsA' }, { tls: L.pki.tls('nodeB') });
  const asA = new JsonClient({ url: L.kmsA.url, id: 'kmsA' }, { tls: L.pki.tls('nodeA') });
  const rogueA = new JsonClient({ url: L.kmsA.url, id: 'kmsA' }, { tls: L.rogue.tls('nodeA') });
  const rogueSae = new JsonClient({ url: L.kmsA.url, id: 'kmsA' }, { tls: L.rogue.tls('saeA') });
  t.teardown(() => { for (const c of [asB, asA, rogueA, rogueSae]) c.close(); });
  t.equal((await push(asB, sid)).status, 403, 'Bob\'s node pushing into Alice\'s KMS');
  const other = await push(asA, '3f1d0c2b-0000-4000-8000-00000000beef');
  t.equal(other.status, 404, 'a stream this KMS never opened');
  t.equal(other.body.status, 4);
  await t.rejects(push(rogueA, sid), { code: 'DELIVERY_CONNECTION' }, 'a "nodeA" certificate from another CA');
  await t.rejects(rogueSae.request('GET', '/api/v1/keys/saeB/status'), { code: 'DELIVERY_CONNECTION' });
  // An SAE of the same CA but not the pair the key was reserved for cannot read it.
  const bytes = randomBytes(CHUNK);
  await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
  await until(() => L.kmsA.metrics().acked === 1 && L.kmsB.metrics().acked === 1, 5000, 'acks');
  const enc = await L.sae('saeA', L.kmsA).req('POST', '/api/v1/keys/saeB/enc_keys', {});
  t.equal(enc.status, 200);
  const stranger = await L.sae('saeStranger', L.kmsA).req('POST', '/api/v1/keys/saeB/dec_keys',
    { key_IDs: [{ key_ID: enc.body.keys[0].key_ID }] });
  t.equal(stranger.status, 400, 'saeStranger is not an SAE of Bob\'s side');
  const bobWrongMaster = await L.sae('saeB', L.kmsB).req('POST', '/api/v1/keys/saeStranger/dec_keys',
    { key_IDs: [{ key_ID: enc.body.keys[0].key_ID }] });
  t.equal(bobWrongMaster.status, 401, 'reserved for saeA -> saeB, not saeStranger -> saeB: not entitled (ETSI 014 401)');
  const ok = await L.sae('saeB', L.kmsB).req('POST', '/api/v1/keys/saeA/dec_keys',
    { key_IDs: [{ key_ID: enc.body.keys[0].key_ID }] });
  t.ok(Buffer.from(ok.body.keys[0].key, 'base64').equals(bytes));
});

t.test('a stream open that fails at the peer KMS is retried on the same stream: bytes offered before it are not orphaned', async (t) => {
  const L = await startLink({ noStream: true });
  t.teardown(() => L.close());
  // Key made while no KMS had opened a stream waits in both nodes' spools.
  const early = randomBytes(CHUNK * 3);
  await Promise.all([L.nodeA.offer(early), L.nodeB.offer(early)]);
  // First attempt: the node opens the stream, the peer KMS is unreachable.
  const peerUrl = L.kmsB.url;
  L.kmsA.setPeerUrl('https://127.0.0.1:1');
  await t.rejects(L.kmsA.openStream(), { message: /kms-peer\/open-stream/ }, 'first open fails at the peer KMS');
  L.kmsA.setPeerUrl(peerUrl);
  const sid = await L.kmsA.openStream();
  t.ok(L.nodeA.hasStream(sid) && L.nodeB.hasStream(sid), 'both nodes hold the stream of the retry');
  const late = randomBytes(CHUNK * 2);
  await Promise.all([L.nodeA.offer(late), L.nodeB.offer(late)]);
  await until(() => L.kmsA.metrics().held === 5 && L.kmsB.metrics().held === 5, 10_000, 'five keys at both KMSs');
  const { alice, bob } = await drain(L, 5);
  t.ok(bob.equals(alice), 'the SAE pair gets the same keys');
  t.ok(alice.equals(Buffer.concat([early, late])), 'the keys are the early bytes, then the late ones, in order');
});

t.test('a stream open whose answer from the peer KMS is lost is retried idempotently: the peer already receives keys', async (t) => {
  const L = await startLink({ noStream: true });
  t.teardown(() => L.close());
  const early = randomBytes(CHUNK * 3);
  await Promise.all([L.nodeA.offer(early), L.nodeB.offer(early)]);
  // The destination KMS opens the stream on its node (which starts pushing to it), but the source
  // KMS never sees the 201 (a slow machine: its request timed out).
  const proxy = await startLossyProxy({ targetUrl: L.kmsB.url, targetId: 'kmsB', serverTls: L.pki.tls('kmsB'),
    clientTls: L.pki.tls('kmsA'), drop: (n) => n === 0 });
  t.teardown(() => proxy.close());
  const peerUrl = L.kmsB.url;
  L.kmsA.setPeerUrl(proxy.url);
  await t.rejects(L.kmsA.openStream(), 'first open: the answer is lost');
  await until(() => L.kmsB.metrics().held === 3, 10_000, 'the destination KMS holds the early keys');
  L.kmsA.setPeerUrl(peerUrl);
  const sid = await L.kmsA.openStream();
  t.ok(L.nodeA.hasStream(sid) && L.nodeB.hasStream(sid), 'the retry opens the same stream on both sides');
  const late = randomBytes(CHUNK * 2);
  await Promise.all([L.nodeA.offer(late), L.nodeB.offer(late)]);
  await until(() => L.kmsA.metrics().held === 5 && L.kmsB.metrics().held === 5, 10_000, 'five keys at both KMSs');
  const { alice, bob } = await drain(L, 5);
  t.ok(bob.equals(alice), 'the SAE pair gets the same keys');
  t.ok(alice.equals(Buffer.concat([early, late])), 'nothing lost or duplicated, in order');
});
