// Batched pushes (our extension of the ETSI 004 push mode, docs/delivery.md "Batched pushes"), over
// real sockets and mutual TLS: the KMS asks for them in get-key, the node sends up to that many
// chunks per request, and every chunk is still settled on its own (stored once, refused alone,
// retried after a lost answer). A KMS that asked but does not serve the path gets single pushes.
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { JsonClient, type Req } from '../../src/delivery/http.ts';
import { startLink, startLossyProxy, until } from '../../src/testkit/delivery.ts';
import { KEY_MATERIAL_BATCH, MAX_PUSH_BATCH } from '../../src/delivery/types.ts';
import type { Alarm } from '../../src/delivery/node.ts';

const CHUNK = 32;
const SINGLE = '/api/v1/qkd/etsi004/key-material';
type Link = Awaited<ReturnType<typeof startLink>>;

/** Drains every key of the link through ETSI 014 and returns Alice's and Bob's copies. */
async function drain(L: Link, n: number) {
  const cat = (ks: { key: string }[]) => Buffer.concat(ks.map((k) => Buffer.from(k.key, 'base64')));
  const alice: Buffer[] = [];
  const bob: Buffer[] = [];
  for (let got = 0; got < n; got += 128) {
    const enc = await L.sae('saeA', L.kmsA).req('POST', '/api/v1/keys/saeB/enc_keys', { number: Math.min(128, n - got) });
    if (enc.status !== 200) throw new Error(`enc_keys ${enc.status} ${JSON.stringify(enc.body)}`);
    const dec = await L.sae('saeB', L.kmsB).req('POST', '/api/v1/keys/saeA/dec_keys',
      { key_IDs: enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
    alice.push(cat(enc.body.keys));
    bob.push(cat(dec.body.keys));
  }
  return { alice: Buffer.concat(alice), bob: Buffer.concat(bob) };
}

/**
 * A TLS proxy in Alice's KMS's place (testkit's lossy proxy) that records each request's path and
 * chunk count; `fate(k, req)` may answer 404 or 503 itself, or lose the KMS's answer ('drop').
 */
async function proxy(t: Test, L: Link, fate: (k: number, req: Req) => 'ok' | 'drop' | '404' | '503' = () => 'ok') {
  const p = await startLossyProxy({ targetUrl: L.kmsA.url, targetId: 'kmsA', serverTls: L.pki.tls('kmsA'),
    clientTls: L.pki.tls('nodeA'), drop: (k, r) => fate(k, r) === 'drop', failBefore: (k, r) => fate(k, r) === '503',
    notFound: (k, r) => fate(k, r) === '404' });
  t.teardown(() => p.close());
  L.nodeA.setKmsUrl(p.url);
  return p.seen;
}

t.test('the KMS asks for batches in get-key: few requests, every key stored once, both SAEs get the bytes', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  t.equal(L.nodeA.streamInfo(L.keyStreamId)?.pushBatch, 64, 'get-key carried push_batch 64 (the KMS default)');
  const seen = await proxy(t, L);
  const n = 300;
  const bytes = randomBytes(CHUNK * n);
  await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
  await until(() => L.nodeA.metrics().acked === n && L.nodeB.metrics().acked === n, 20_000, 'acks');
  t.ok(seen.every((s) => s.path === KEY_MATERIAL_BATCH), 'only batched pushes');
  t.equal(seen.length, Math.ceil(n / 64), `${n} chunks in ${seen.length} requests of at most 64`);
  t.equal(seen.reduce((a, s) => a + s.items, 0), n, 'each chunk sent once');
  t.match(L.kmsA.metrics(), { acked: n, duplicates: 0, held: n, pushed: n });
  const { alice, bob } = await drain(L, n);
  t.ok(alice.equals(bytes) && bob.equals(bytes), 'the same keys at both ends, in order');
});

t.test('a lost answer to a batch: every chunk of it is retried and recognised as a duplicate', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  const seen = await proxy(t, L, (k) => (k === 0 ? 'drop' : 'ok'));
  const bytes = randomBytes(CHUNK * 10);
  await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
  await until(() => L.nodeA.metrics().acked === 10 && L.nodeB.metrics().acked === 10, 10_000, 'acks');
  t.same(seen.map((s) => s.items), [10, 10], 'the batch, then the same batch again');
  t.equal(L.nodeA.metrics().retries, 10, 'each chunk was retried once');
  t.match(L.kmsA.metrics(), { acked: 10, duplicates: 10, held: 10 });
  const { alice, bob } = await drain(L, 10);
  t.ok(alice.equals(bytes) && bob.equals(bytes), 'nothing lost, nothing doubled');
});

t.test('property: under random lost answers and 503s every chunk is stored exactly once (batched)', async (t) => {
  const L = await startLink({ node: { retry: { baseMs: 5, maxMs: 40 }, requestTimeoutMs: 30_000 }, kms: { pushBatch: 7 } });
  t.teardown(() => L.close());
  let seed = 0x5eed1234;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const fates: string[] = [];
  const seen = await proxy(t, L, (k) => (fates[k] ??= rnd() < 0.2 ? 'drop' : rnd() < 0.25 ? '503' : 'ok') as 'ok' | 'drop' | '503');
  const n = 120;
  const bytes = randomBytes(CHUNK * n);
  for (let i = 0; i < 4; i++) {
    const part = bytes.subarray((i * n * CHUNK) / 4, ((i + 1) * n * CHUNK) / 4);
    await Promise.all([L.nodeA.offer(part, {}), L.nodeB.offer(part, {})]);
  }
  await until(() => L.nodeA.metrics().acked === n && L.nodeB.metrics().acked === n, 30_000, 'all acked');
  const lostItems = seen.filter((_, k) => fates[k] === 'drop').reduce((a, s) => a + s.items, 0);
  const failedItems = seen.filter((_, k) => fates[k] === '503').reduce((a, s) => a + s.items, 0);
  t.ok(lostItems > 5 && failedItems > 5, `the schedule lost answers for ${lostItems} chunks and failed ${failedItems}`);
  t.ok(seen.every((s) => s.items <= 7), 'no batch above what the KMS asked for');
  t.match(L.kmsA.metrics(), { acked: n, duplicates: lostItems, held: n });
  t.equal(L.nodeA.metrics().retries, lostItems + failedItems, 'every failed chunk was retried, nothing else');
  const { alice, bob } = await drain(L, n);
  t.ok(alice.equals(bytes) && bob.equals(bytes), 'both SAEs get exactly the offered bytes');
});

t.test('one refused chunk in a batch is parked alone; the others are stored', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  const sid = L.keyStreamId;
  // Other bytes already stored under index 3 (a desynchronised or tampered path).
  const asNode = new JsonClient({ url: L.kmsA.url, id: 'kmsA' }, { tls: L.pki.tls('nodeA') });
  t.teardown(() => asNode.close());
  t.equal((await asNode.request('POST', SINGLE, { status: 0, index: 3, key_buffer: randomBytes(CHUNK).toString('base64'),
    metadata: { size: 100, buffer: { key_stream_id: sid } } })).status, 201);
  const alarms: Alarm[] = [];
  L.nodeA.on('alarm', (a) => alarms.push(a));
  await L.nodeA.offer(randomBytes(CHUNK * 8), {});
  await until(() => L.nodeA.metrics().acked === 7 && L.nodeA.metrics().rejected === 1, 10_000, 'seven acks, one refusal');
  t.match(alarms, [{ code: 'KMS_CONFLICT', httpStatus: 409, index: 3 }]);
  t.match(L.kmsA.metrics(), { acked: 7 + 1, conflicts: 1, held: 8 });
  t.equal(L.nodeA.metrics().spoolDepth, 1, 'the refused chunk stays parked at the node');
});

t.test('a KMS that asked for batches but does not serve the path: single pushes, with an alarm', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  const seen = await proxy(t, L, (_k, req) => (req.path === KEY_MATERIAL_BATCH ? '404' : 'ok'));
  const alarms: Alarm[] = [];
  L.nodeA.on('alarm', (a) => alarms.push(a));
  const bytes = randomBytes(CHUNK * 5);
  await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
  await until(() => L.nodeA.metrics().acked === 5 && L.nodeB.metrics().acked === 5, 10_000, 'acks');
  t.same(seen.map((s) => s.path), [KEY_MATERIAL_BATCH, SINGLE, SINGLE, SINGLE, SINGLE, SINGLE]);
  t.match(alarms, [{ code: 'KMS_NO_BATCH', httpStatus: 404 }]);
  t.equal(L.nodeA.streamInfo(L.keyStreamId)?.pushBatch, undefined, 'batching is off for the stream');
  t.equal(L.nodeA.metrics().retries, 0, 'the fallback is not counted as a failure');
  const { alice, bob } = await drain(L, 5);
  t.ok(alice.equals(bytes) && bob.equals(bytes));
});

t.test('a KMS configured without batches (pushBatch 0) gets the plain push mode', async (t) => {
  const L = await startLink({ kms: { pushBatch: 0 } });
  t.teardown(() => L.close());
  t.equal(L.nodeA.streamInfo(L.keyStreamId)?.pushBatch, undefined);
  const seen = await proxy(t, L);
  await Promise.all([L.nodeA.offer(randomBytes(CHUNK * 4), {}), L.nodeB.offer(randomBytes(CHUNK * 4), {})]);
  await until(() => L.nodeA.metrics().acked === 4, 10_000, 'acks');
  t.same(seen.map((s) => s.path), [SINGLE, SINGLE, SINGLE, SINGLE]);
});

t.test('the batch endpoint: a malformed envelope stores nothing; a bad item is refused alone', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  const sid = L.keyStreamId;
  const asNode = new JsonClient({ url: L.kmsA.url, id: 'kmsA' }, { tls: L.pki.tls('nodeA') });
  t.teardown(() => asNode.close());
  const item = (index: number, key_buffer = randomBytes(CHUNK).toString('base64')) =>
    ({ status: 0, index, key_buffer, metadata: { size: 100, buffer: { key_stream_id: sid } } });
  for (const body of [{}, { items: 'x' }, { items: [] }, { items: Array.from({ length: MAX_PUSH_BATCH + 1 }, (_, i) => item(i)) }]) {
    const r = await asNode.request('POST', KEY_MATERIAL_BATCH, body);
    t.equal(r.status, 400, `refused: ${JSON.stringify(body).slice(0, 40)}`);
    t.match(r.body.message, /1 to 256 key-material bodies/);
  }
  t.equal(L.kmsA.metrics().held, 0, 'nothing stored');
  const r = await asNode.request('POST', KEY_MATERIAL_BATCH, { items: [item(0), item(1, 'not base64!'), item(2), { status: 0 }] });
  t.equal(r.status, 201);
  t.match(r.body.results, [{ index: 0, http: 201, status: 0 }, { index: 1, http: 400, message: /base64/ },
    { index: 2, http: 201 }, { index: null, http: 400 }]);
  t.equal(L.kmsA.metrics().held, 2, 'the two good items stored');
  const stranger = new JsonClient({ url: L.kmsA.url, id: 'kmsA' }, { tls: L.pki.tls('nodeB') });
  t.teardown(() => stranger.close());
  t.equal((await stranger.request('POST', KEY_MATERIAL_BATCH, { items: [item(5)] })).status, 403, 'only our node may push');
});
