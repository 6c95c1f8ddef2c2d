// ETSI GS QKD 004 for applications on the reference KMS (src/delivery/etsi004-app.ts) over real
// mutual TLS: OPEN_CONNECT / GET_KEY / CLOSE at both ends with identical bytes, key sizes other
// than the link chunk, the statuses (1, 2, 3, 5, 6, 7 with a counter-proposal, 8), QoS admission
// and priorities, TTL freeing reserved key, strict bad-input answers, and no byte served twice
// across ETSI 014 and 004. No key bytes in any log line.
import tap, { type Test } from 'tap';
import { backendTap } from '../../src/testkit/postgres.ts';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { startLink, until, type LinkOptions, type Sae } from '../../src/testkit/delivery.ts';

const t = backendTap(tap);

const CHUNK = 32;
const OPEN = '/api/v1/qkd004/open_connect';
const GET = '/api/v1/qkd004/get_key';
const CLOSE = '/api/v1/qkd004/close';

type L = Awaited<ReturnType<typeof startLink>>;

/** Starts a link whose KMSs' log lines are kept (to check that none carries key bytes). */
async function link(t: Test, o: LinkOptions = {}) {
  const L = await startLink({ ...o, kms: { linkKeyRateBps: 100_000, ...o.kms } });
  t.teardown(() => L.close());
  const logs: string[] = [];
  for (const k of [L.kmsA, L.kmsB]) k.on('log', (l) => logs.push(JSON.stringify(l)));
  return { L, logs, A: L.sae('saeA', L.kmsA), B: L.sae('saeB', L.kmsB) };
}

let acked = new WeakMap<L, number>();
async function fill(L: L, chunks: number): Promise<Buffer> {
  const bytes = randomBytes(CHUNK * chunks);
  const before = acked.get(L) ?? 0;
  await Promise.all([L.nodeA.offer(bytes, { epsilon: 1e-10 }), L.nodeB.offer(bytes, { epsilon: 1e-10 })]);
  await until(() => L.kmsA.metrics().acked === before + chunks && L.kmsB.metrics().acked === before + chunks, 10_000, 'acks');
  acked.set(L, before + chunks);
  return bytes;
}

const key = (r: { body: { key_buffer: string } }) => Buffer.from(r.body.key_buffer, 'base64');

/** Opens a stream at Alice's KMS (saeA -> saeB) and joins it at Bob's; returns its id. */
async function pair(t: Test, A: Sae, B: Sae, qos: Record<string, unknown> = {}) {
  const o = await A.req('POST', OPEN, { source: 'qkd://saeA', destination: 'qkd://saeB', qos });
  t.equal(o.status, 200, 'open at A');
  t.equal(o.body.status, 1, 'status 1: opened, the peer application not connected yet');
  const id = o.body.key_stream_ID as string;
  const j = await B.req('POST', OPEN, { source: 'saeA', destination: 'saeB', qos: null, key_stream_ID: id });
  t.equal(j.body.status, 0, 'open at B with the returned id: status 0');
  t.same(j.body.qos, o.body.qos, 'both ends see the same QoS');
  return id;
}

t.test('open, get and close at both ends: the same bytes for the same index, the stream\'s chunks in order', async (t) => {
  const { L, logs, A, B } = await link(t);
  const bytes = await fill(L, 6);
  const id = await pair(t, A, B, { key_chunk_size: 32, timeout: 1000 });
  const a0 = await A.req('POST', GET, { key_stream_ID: id, index: 0 });
  t.equal(a0.status, 200);
  t.match(a0.body, { status: 0, index: 0 });
  const b0 = await B.req('POST', GET, { key_stream_ID: id, index: 0 });
  t.same(key(b0), key(a0), 'index 0: identical bytes at both KMSs');
  // Index omitted: the next one on that side. Bob asks for 2 before Alice: either side can go first.
  const b2 = await B.req('POST', GET, { key_stream_ID: id, index: 2 });
  const a1 = await A.req('POST', GET, { key_stream_ID: id });
  t.equal(a1.body.index, 1, 'no index: the next one');
  const a2 = await A.req('POST', GET, { key_stream_ID: id });
  t.same(key(a2), key(b2));
  // Alice's first GET_KEY assigned chunks to the next indices ahead (prefetchGroups), in order.
  t.same([key(a0), key(a1), key(a2)], [0, 1, 2].map((i) => bytes.subarray(i * CHUNK, (i + 1) * CHUNK)),
    'keys are the link\'s chunks, each once');
  const again = await A.req('POST', GET, { key_stream_ID: id, index: 0 });
  t.equal(again.status, 400);
  t.equal(again.body.status, 2);
  t.match(again.body.message, /already delivered/);
  t.same(await B.req('POST', CLOSE, { key_stream_ID: id }).then((r) => r.body), { status: 0, key_stream_ID: id });
  const after = await A.req('POST', GET, { key_stream_ID: id });
  t.equal(after.status, 404);
  t.equal(after.body.status, 4);
  t.match(after.body.message, /was closed by 'saeB'/);
  // Bob never took index 1: erased with the stream at both KMSs. Chunks 3-5 were never used: back in the pool.
  await until(() => L.kmsA.metrics().reserved === 0 && L.kmsB.metrics().reserved === 0, 5000, 'reservations freed');
  t.equal(L.kmsA.metrics().held, 3);
  t.equal(L.kmsB.metrics().held, 3);
  for (const k of [a0, a1, a2]) t.notOk(logs.some((l) => l.includes(k.body.key_buffer)), 'no key bytes in the logs');
});

t.test('key sizes other than the chunk: split and merged, same bytes at both ends, no byte twice', async (t) => {
  const { L, A, B } = await link(t);
  const bytes = await fill(L, 8);
  const got: Buffer[] = [];
  for (const size of [16, 48]) {
    const id = await pair(t, A, B, { key_chunk_size: size });
    for (let i = 0; i < 3; i++) {
      const a = await A.req('POST', GET, { key_stream_ID: id, index: i });
      const b = await B.req('POST', GET, { key_stream_ID: id, index: i });
      t.equal(a.body.status, 0, `${size} B, index ${i}`);
      t.equal(key(a).length, size);
      t.same(key(b), key(a), `${size} B, index ${i}: same bytes`);
      got.push(key(a));
    }
    await A.req('POST', CLOSE, { key_stream_ID: id });
  }
  // 16 B keys: chunk 0 makes keys 0-1, chunk 1 key 2 (its second half is erased with the stream).
  // 48 B keys: a group is 96 B = chunks 2-4 (keys 0-1), then chunks 5-7 (key 2).
  const all = Buffer.concat(got);
  const C = (i: number) => bytes.subarray(i * CHUNK, (i + 1) * CHUNK);
  t.same(all, Buffer.concat([C(0), C(1).subarray(0, 16), C(2), C(3), C(4), C(5), C(6).subarray(0, 16)]));
});

t.test('a lost group assignment: the peer KMS learns it in the answer to its allocate', async (t) => {
  const { L, A, B } = await link(t);
  await fill(L, 3);
  const id = await pair(t, A, B);
  const apps = L.kmsB.apps;
  const orig = apps.peerRequest.bind(apps);
  let lost = 0;
  apps.peerRequest = async (b) => (b.op === 'group' && lost++ === 0 ? { status: 503, body: { message: 'lost' } } : orig(b));
  const a = [await A.req('POST', GET, { key_stream_ID: id }), await A.req('POST', GET, { key_stream_ID: id })];
  t.equal(lost, 1, 'the assignment of groups 0..2 never reached Bob\'s KMS');
  for (const i of [0, 1]) {
    const b = await B.req('POST', GET, { key_stream_ID: id, index: i });
    t.equal(b.body.status, 0);
    t.same(key(b), key(a[i]), `index ${i}: the same bytes`);
  }
  // Group 2 (the third chunk) never reached Bob's KMS and nobody asked for it: CLOSE releases it there too.
  await A.req('POST', CLOSE, { key_stream_ID: id });
  await until(() => L.kmsA.metrics().reserved === 0 && L.kmsB.metrics().reserved === 0, 5000, 'nothing left reserved');
  t.same([L.kmsA.metrics().held, L.kmsB.metrics().held], [1, 1], 'the unused chunk is back in both pools');
});

t.test('the destination side can open first; both ends get the same keys', async (t) => {
  const { L, A, B } = await link(t);
  await fill(L, 2);
  const o = await B.req('POST', OPEN, { source: 'saeA', destination: 'saeB', qos: { key_chunk_size: 32 } });
  t.equal(o.body.status, 1);
  const early = await B.req('POST', GET, { key_stream_ID: o.body.key_stream_ID });
  t.equal(early.status, 400);
  t.equal(early.body.status, 3, 'GET_KEY before the peer application connected: status 3');
  const j = await A.req('POST', OPEN, { source: 'saeA', destination: 'saeB', qos: null, key_stream_ID: o.body.key_stream_ID });
  t.equal(j.body.status, 0);
  const b = await B.req('POST', GET, { key_stream_ID: o.body.key_stream_ID });
  const a = await A.req('POST', GET, { key_stream_ID: o.body.key_stream_ID });
  t.same(key(a), key(b));
});

t.test('status 5: a key_stream_ID in use, opened twice, or of a closed stream', async (t) => {
  const { L, A, B } = await link(t);
  await fill(L, 1);
  const id = await pair(t, A, B);
  const twice = await A.req('POST', OPEN, { source: 'saeA', destination: 'saeB', key_stream_ID: id });
  t.match([twice.status, twice.body.status], [400, 5]);
  t.match(twice.body.message, /already open for the source application/);
  const other = await L.sae('saeC', L.kmsB).req('POST', OPEN, { source: 'saeA', destination: 'saeC', key_stream_ID: id });
  t.match([other.status, other.body.status], [400, 5]);
  t.match(other.body.message, /another pair of applications/);
  await A.req('POST', CLOSE, { key_stream_ID: id });
  const reuse = await A.req('POST', OPEN, { source: 'saeA', destination: 'saeB', key_stream_ID: id });
  t.equal(reuse.body.status, 5, 'a closed stream\'s id is not reused');
  const own = '7b0a8f8e-5c1e-4b59-9f0e-0d3c2a1b4c5d';
  const chosen = await A.req('POST', OPEN, { source: 'saeA', destination: 'saeB', key_stream_ID: own });
  t.same([chosen.body.status, chosen.body.key_stream_ID], [1, own], 'an application may choose a new id');
});

t.test('QoS admission: min_bps shares the link rate; status 7 with a counter-proposal', async (t) => {
  const { L, A, B } = await link(t, { kms: { linkKeyRateBps: 10_000 } });
  await fill(L, 1);
  const first = await A.req('POST', OPEN, { source: 'saeA', destination: 'saeB', qos: { min_bps: 6000, max_bps: 8000 } });
  t.equal(first.body.status, 1);
  const second = await A.req('POST', OPEN, { source: 'saeA', destination: 'saeB', qos: { min_bps: 6000, max_bps: 8000, priority: 2 } });
  t.equal(second.status, 400);
  t.equal(second.body.status, 7);
  t.equal(second.body.key_stream_ID, null);
  t.match(second.body.qos, { min_bps: 4000, max_bps: 8000, priority: 2, key_chunk_size: 32 }, 'what could be admitted');
  t.match(second.body.message, /min_bps 6000 exceeds what the link can still guarantee: 4000 bit\/s of 10000/);
  const fromB = await B.req('POST', OPEN, { source: 'saeA', destination: 'saeB', qos: { min_bps: 6000 } });
  t.equal(fromB.body.status, 7, 'admission is the same from the destination side (the coordinator decides)');
  const retry = await A.req('POST', OPEN, { source: 'saeA', destination: 'saeB', qos: second.body.qos });
  t.equal(retry.body.status, 1, 'the counter-proposal is admitted');
  t.equal(L.kmsA.metrics().qkd004.admittedMinBps, 10_000);
  const odd = await A.req('POST', OPEN, { source: 'saeA', destination: 'saeB', qos: { key_chunk_size: 33, timeout: 999_999,
    metadata_mimetype: 'text/plain' } });
  t.equal(odd.body.status, 7);
  t.match(odd.body.qos, { key_chunk_size: 32, timeout: 60_000, metadata_mimetype: 'application/json' });
  const joinOther = await B.req('POST', OPEN, { source: 'saeA', destination: 'saeB', key_stream_ID: first.body.key_stream_ID,
    qos: { min_bps: 1 } });
  t.same([joinOther.body.status, joinOther.body.qos.min_bps], [7, 6000], 'joining with another QoS: the stream\'s as counter-proposal');
  await A.req('POST', CLOSE, { key_stream_ID: first.body.key_stream_ID });
  t.equal(L.kmsA.metrics().qkd004.admittedMinBps, 4000, 'closing frees its share');
  // Concurrent opens from both sides cannot overbook the link: 6000 bit/s free, 3 x 2500 asked.
  const race = await Promise.all([A, B, A].map((x) => x.req('POST', OPEN, { source: 'saeA', destination: 'saeB', qos: { min_bps: 2500 } })));
  t.same(race.map((r) => r.body.status).sort(), [1, 1, 7], 'two admitted, one counter-proposal');
  t.equal(L.kmsA.metrics().qkd004.admittedMinBps, 9000);
});

t.test('without linkKeyRateBps, admission shares the measured inflow', async (t) => {
  const { L, A } = await link(t, { kms: { linkKeyRateBps: undefined, expireEveryMs: 100 } });
  t.equal(L.kmsA.metrics().qkd004.capacityBps, 0, 'nothing measured yet: nothing to guarantee');
  const none = await A.req('POST', OPEN, { source: 'saeA', destination: 'saeB', qos: { min_bps: 1 } });
  t.match(none.body, { status: 7, qos: { min_bps: 0 } });
  await new Promise((r) => setTimeout(r, 250)); // a first inflow sample
  await fill(L, 20);
  await until(() => L.kmsA.metrics().qkd004.measuredInflowBps > 0, 5000, 'an inflow measurement');
  const m = L.kmsA.metrics().qkd004;
  t.equal(m.capacityBps, m.measuredInflowBps);
  const r = await A.req('POST', OPEN, { source: 'saeA', destination: 'saeB', qos: { min_bps: 1e9 } });
  t.equal(r.body.status, 7);
  t.ok(r.body.qos.min_bps > 0 && r.body.qos.min_bps <= 20 * 256 * 1000 / 100,
    `counter-proposal ${r.body.qos.min_bps} bit/s: the measured inflow (20 chunks of 256 bits)`);
});

t.test('no QKD link stream open yet: status 4', async (t) => {
  const { A, B } = await link(t, { noStream: true });
  for (const [who, c] of [['Alice', A], ['Bob', B]] as const) {
    const r = await c.req('POST', OPEN, { source: 'saeA', destination: 'saeB' });
    t.match([r.status, r.body.status, r.body.message], [503, 4, /no QKD link stream is open/], `at ${who}'s KMS`);
  }
});

t.test('short of key: status 2 at once, status 6 after the timeout; a waiting GET_KEY gets key that arrives', async (t) => {
  const { L, A, B } = await link(t);
  const now = await pair(t, A, B, { timeout: 0 });
  const short = await A.req('POST', GET, { key_stream_ID: now });
  t.match([short.status, short.body.status], [503, 2]);
  t.match(short.body.message, /insufficient key/);
  const wait = await pair(t, A, B, { timeout: 300 });
  const t0 = Date.now();
  const late = await B.req('POST', GET, { key_stream_ID: wait });
  t.match([late.status, late.body.status], [503, 6]);
  t.ok(Date.now() - t0 >= 280, 'waited for the timeout');
  const patient = await pair(t, A, B, { timeout: 5000 });
  const pending = A.req('POST', GET, { key_stream_ID: patient });
  await new Promise((r) => setTimeout(r, 200));
  const bytes = await fill(L, 1);
  const got = await pending;
  t.equal(got.body.status, 0, 'served once the key arrived');
  t.same(key(got), bytes);
  t.same(key(await B.req('POST', GET, { key_stream_ID: patient })), bytes);
});

t.test('max_bps bounds what one application draws; within the timeout it waits instead', async (t) => {
  const { L, A, B } = await link(t);
  await fill(L, 20); // the first stream's first GET_KEY assigns 8 chunks ahead
  // 1024 bit/s = 4 keys of 32 bytes per second, burst one second.
  const now = await pair(t, A, B, { max_bps: 1024, timeout: 0 });
  for (let i = 0; i < 4; i++) t.equal((await A.req('POST', GET, { key_stream_ID: now })).body.status, 0, `burst key ${i}`);
  const over = await A.req('POST', GET, { key_stream_ID: now });
  t.match([over.status, over.body.status, over.body.message], [503, 2, /would exceed the stream's max_bps 1024/]);
  t.equal((await B.req('POST', GET, { key_stream_ID: now, index: 0 })).body.status, 0, 'each side has its own allowance');
  const wait = await pair(t, A, B, { max_bps: 1024, timeout: 2000 });
  const t0 = Date.now();
  for (let i = 0; i < 4; i++) await A.req('POST', GET, { key_stream_ID: wait });
  t.equal((await A.req('POST', GET, { key_stream_ID: wait })).body.status, 0, 'the fifth waits for the allowance');
  // A full bucket of 4 keys, then 4 keys/s: the fifth no sooner than a quarter second after the first.
  t.ok(Date.now() - t0 >= 245, `5 keys took ${Date.now() - t0} ms, at least 250 ms at max_bps`);
});

t.test('priority: when key is short, the higher priority is served first', async (t) => {
  const { L, A, B } = await link(t);
  const low = await pair(t, A, B, { priority: 1, timeout: 8000 });
  const high = await pair(t, A, B, { priority: 9, timeout: 8000 });
  const order: string[] = [];
  const pLow = A.req('POST', GET, { key_stream_ID: low }).then((r) => { order.push('low'); return r; });
  await new Promise((r) => setTimeout(r, 100));
  const pHigh = A.req('POST', GET, { key_stream_ID: high }).then((r) => { order.push('high'); return r; });
  await until(() => L.kmsA.metrics().qkd004.waiting === 2, 5000, 'both requests waiting');
  const first = await fill(L, 1);
  const h = await pHigh;
  t.same(key(h), first, 'the later but higher-priority request got the key');
  t.same(order, ['high']);
  const second = await fill(L, 1);
  t.same(key(await pLow), second);
});

t.test('min_bps reserves key ahead; TTL ends the stream and returns what it did not use', async (t) => {
  const { L, A, B } = await link(t, { kms: { linkKeyRateBps: 10_000, expireEveryMs: 100 } });
  await fill(L, 6);
  // min_bps 512 bit/s, 2 s ahead: 128 B = 4 chunks reserved at both KMSs.
  const id = await pair(t, A, B, { min_bps: 512, ttl: 1 });
  await until(() => L.kmsA.metrics().reserved === 4 && L.kmsB.metrics().reserved === 4, 5000, 'standing reservation');
  const st = await L.sae('saeA', L.kmsA).req('GET', '/api/v1/keys/saeB/status');
  t.equal(st.body.stored_key_count, 2, 'ETSI 014 sees only the unreserved keys');
  t.equal((await A.req('POST', GET, { key_stream_ID: id })).body.status, 0);
  await until(() => L.kmsA.metrics().qkd004.streams === 0 && L.kmsB.metrics().qkd004.streams === 0, 5000, 'TTL');
  await until(() => L.kmsA.metrics().reserved === 0 && L.kmsB.metrics().reserved === 0, 5000, 'reservation freed');
  t.equal(L.kmsA.metrics().held, 5, 'the key handed out is gone, the other 5 chunks are back in the pool');
  t.equal(L.kmsB.metrics().held, 5);
  const gone = await A.req('POST', GET, { key_stream_ID: id });
  t.match(gone.body.message, /reached its TTL of 1 s/);
  t.equal((await L.sae('saeA', L.kmsA).req('POST', '/api/v1/keys/saeB/enc_keys', { number: 5 })).status, 200,
    'ETSI 014 can use them');
});

t.test('ETSI 014 leaves alone the key a stream\'s min_bps reservation still lacks, at both KMSs', async (t) => {
  const { L, A, B } = await link(t, { kms: { expireEveryMs: 3_600_000, qkd004: { prefetchGroups: 1 } } });
  await fill(L, 6);
  // min_bps 512 bit/s, 2 s ahead: 4 chunks reserved; 2 held.
  const id = await pair(t, A, B, { min_bps: 512 });
  await until(() => L.kmsA.metrics().reserved === 4, 5000, 'standing reservation');
  t.equal((await A.req('POST', GET, { key_stream_ID: id })).body.status, 0, 'a key from the reservation: it lacks one chunk now');
  t.equal(L.kmsA.metrics().qkd004.owedChunks, 1);
  const sae014 = L.sae('saeA', L.kmsA);
  t.equal((await sae014.req('GET', '/api/v1/keys/saeB/status')).body.stored_key_count, 1, '014 status counts what 014 may take');
  t.equal((await sae014.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 2 })).status, 503, '014 at Alice\'s KMS: 2 held, 1 owed');
  t.equal((await sae014.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 1 })).status, 200, 'the one not owed');
  const fromB = await L.sae('saeB', L.kmsB).req('POST', '/api/v1/keys/saeA/enc_keys', { number: 1 });
  t.equal(fromB.status, 503, '014 at Bob\'s KMS: Alice\'s KMS does not confirm the owed chunk');
  L.kmsA.expireNow(); // the tick tops the reservation up
  await until(() => L.kmsA.metrics().qkd004.owedChunks === 0 && L.kmsA.metrics().reserved === 4, 5000, 'topped up');
});

t.test('a KMS restart ends its streams at both KMSs and releases what they held reserved', async (t) => {
  const { L, A, B } = await link(t, { kms: { expireEveryMs: 100 } });
  await fill(L, 6);
  const id = await pair(t, A, B, { min_bps: 512 });
  await until(() => L.kmsA.metrics().reserved === 4 && L.kmsB.metrics().reserved === 4, 5000, 'standing reservation');
  const a0 = await A.req('POST', GET, { key_stream_ID: id });
  t.equal(a0.body.status, 0);
  await new Promise((r) => setTimeout(r, 300)); // a tick notes the reservations in the state file
  await L.restartKms('A');
  await until(() => L.kmsA.metrics().reserved === 0 && L.kmsB.metrics().reserved === 0, 5000, 'reservations released');
  t.equal(L.kmsA.metrics().held, 5, 'Alice\'s KMS: the chunk handed out is gone, the others are back');
  t.equal(L.kmsB.metrics().held, 5, 'Bob\'s KMS: the twin of the key Alice\'s application got is erased');
  const b = await B.req('POST', GET, { key_stream_ID: id, index: 0 });
  t.match([b.status, b.body.status, b.body.message], [404, 4, /was ended when the peer KMS restarted/]);
  t.equal((await L.sae('saeA', L.kmsA).req('POST', '/api/v1/keys/saeB/enc_keys', { number: 5 })).status, 200,
    'ETSI 014 can use the released chunks');
});

t.test('node commitments: keys both nodes signed are served; a peer-node commitment that fails stops them', async (t) => {
  const ed = () => generateKeyPairSync('ed25519');
  const pem = (k: ReturnType<typeof ed>) => ({ priv: k.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    pub: k.publicKey.export({ type: 'spki', format: 'pem' }) as string });
  const [nA, nB, wrong] = [pem(ed()), pem(ed()), pem(ed())];
  for (const good of [true, false]) {
    const { L, A, B } = await link(t, { nodeA: { commitKey: nA.priv }, nodeB: { commitKey: nB.priv },
      kmsA: { commitments: { node: nA.pub, peerNode: good ? nB.pub : wrong.pub } }, kmsB: { commitments: { node: nB.pub, peerNode: nA.pub } } });
    const alarms: string[] = [];
    L.kmsA.on('alarm', (a) => alarms.push(a.code));
    await fill(L, 2);
    const id = await pair(t, A, B);
    const a = await A.req('POST', GET, { key_stream_ID: id });
    if (good) {
      t.equal(a.body.status, 0, 'committed by both nodes: served');
      t.same(key(await B.req('POST', GET, { key_stream_ID: id })), key(a));
    } else {
      t.equal(a.body.status, 2, 'node B\'s commitment does not verify at Alice\'s KMS: not served');
      t.ok(alarms.includes('PEER_COMMITMENT_INVALID'));
      t.equal(L.kmsA.metrics().reserved + L.kmsB.metrics().reserved, 0, 'nothing left reserved');
    }
  }
});

t.test('no byte is served twice across ETSI 014 and 004', async (t) => {
  const { L, A, B } = await link(t);
  const bytes = await fill(L, 10);
  const id = await pair(t, A, B, { key_chunk_size: 16, min_bps: 1024 });
  const sae014 = L.sae('saeA', L.kmsA);
  const out: Buffer[] = [];
  // Interleaved: 004 keys and 014 keys drawn from the same store.
  for (let i = 0; i < 6; i++) {
    const a = await A.req('POST', GET, { key_stream_ID: id });
    t.equal(a.body.status, 0);
    t.same(key(await B.req('POST', GET, { key_stream_ID: id })), key(a));
    out.push(key(a));
    const e = await sae014.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 1 });
    if (e.status === 200) out.push(Buffer.from(e.body.keys[0].key, 'base64'));
  }
  await A.req('POST', CLOSE, { key_stream_ID: id });
  for (;;) {
    const e = await sae014.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 1 });
    if (e.status !== 200) break;
    out.push(Buffer.from(e.body.keys[0].key, 'base64'));
  }
  // Every 16-byte half-chunk of the link appears at most once among all keys handed out.
  const halves = out.flatMap((k) => Array.from({ length: k.length / 16 }, (_, i) => k.subarray(i * 16, (i + 1) * 16).toString('hex')));
  t.equal(new Set(halves).size, halves.length, 'no 16-byte piece twice');
  const link16 = new Set(Array.from({ length: 20 }, (_, i) => bytes.subarray(i * 16, (i + 1) * 16).toString('hex')));
  t.ok(halves.every((h) => link16.has(h)), 'every key is link key material');
  t.ok(halves.length >= 16, `${halves.length} of 20 pieces used (spare reservations went back to 014)`);
});

t.test('bad input: the spec statuses and messages that say what to fix', async (t) => {
  const { L, A, B } = await link(t);
  await fill(L, 1);
  const id = await pair(t, A, B);
  const cases: [string, string, unknown, number, number, RegExp][] = [
    ['open: no body', OPEN, undefined, 400, 4, /needs a JSON object body/],
    ['open: an array', OPEN, [1], 400, 4, /an array/],
    ['open: source a number', OPEN, { source: 5, destination: 'saeB' }, 400, 4, /source must be/],
    ['open: qos a string', OPEN, { source: 'saeA', destination: 'saeB', qos: 'fast' }, 400, 4, /qos must be a JSON object/],
    ['open: min_bps a string', OPEN, { source: 'saeA', destination: 'saeB', qos: { min_bps: '100' } }, 400, 4, /qos.min_bps must be/],
    ['open: unknown qos field', OPEN, { source: 'saeA', destination: 'saeB', qos: { speed: 1 } }, 400, 4, /unknown qos field/],
    ['open: id not a UUID', OPEN, { source: 'saeA', destination: 'saeB', key_stream_ID: 'abc' }, 400, 5, /must be a UUID/],
    ['open: not the caller', OPEN, { source: 'saeC', destination: 'saeB' }, 401, 4, /must be the source or the destination/],
    ['open: unreachable peer app', OPEN, { source: 'saeA', destination: 'saeZ' }, 503, 4, /no QKD connection to application 'saeZ'/],
    ['get: no id', GET, {}, 400, 4, /key_stream_ID \(a UUID string\) is required/],
    ['get: unknown stream', GET, { key_stream_ID: '00000000-0000-4000-8000-000000000000' }, 404, 4, /unknown key stream/],
    ['get: index a string', GET, { key_stream_ID: id, index: '1' }, 400, 2, /index must be an integer/],
    ['get: negative index', GET, { key_stream_ID: id, index: -1 }, 400, 2, /index must be an integer/],
    ['get: metadata a string', GET, { key_stream_ID: id, metadata: 'x' }, 400, 8, /metadata must be/],
    ['get: metadata too small', GET, { key_stream_ID: id, metadata: { size: 10 } }, 400, 8, /metadata.size 10 is too small/],
    ['get: unknown field', GET, { key_stream_ID: id, count: 2 }, 400, 2, /unknown field/],
    ['close: id a number', CLOSE, { key_stream_ID: 7 }, 400, 4, /must be a UUID/],
  ];
  for (const [what, path, body, http, status, msg] of cases) {
    const r = await A.req('POST', path, body);
    t.equal(r.status, http, `${what}: HTTP ${http}`);
    t.equal(r.body?.status, status, `${what}: status ${status}`);
    t.match(r.body?.message, msg, what);
  }
  const small = await A.req('POST', GET, { key_stream_ID: id, metadata: { size: 10 } });
  t.ok(small.body.metadata.size > 10, 'status 8 says the size needed');
  const md = await A.req('POST', GET, { key_stream_ID: id, metadata: { size: small.body.metadata.size } });
  t.equal(md.body.status, 0, 'with that size: served');
  t.match(md.body.metadata.buffer, { key_stream_ID: id, index: 0, source: 'saeA', destination: 'saeB' });
  t.equal((await A.req('GET', GET)).status, 405);
  const stranger = await L.sae('saeStranger', L.kmsA).req('POST', GET, { key_stream_ID: id });
  t.match([stranger.status, stranger.body.status], [401, 4]);
  const notSae = await L.sae('nodeA', L.kmsA).req('POST', OPEN, { source: 'nodeA', destination: 'saeB' });
  t.equal(notSae.status, 401, 'a client that is not an SAE of this KMS');
  t.equal(L.kmsA.metrics().held, 0, 'the good request took the one key; no refused one took any');
});
