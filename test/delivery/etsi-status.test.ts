// Every ETSI GS QKD 004 status case (0-8) on the node's push-mode server, over real mutual TLS 1.3,
// plus the identity binding of the server (wrong certificate, untrusted CA, no TLS).
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { makePki } from '../../src/testkit/pki.ts';
import { JsonClient } from '../../src/delivery/http.ts';
import { startDeliveryNode, type DeliveryNode } from '../../src/delivery/node.ts';
import { STATUS } from '../../src/delivery/types.ts';
import { until } from '../../src/testkit/delivery.ts';

const dir = mkdtempSync(join(tmpdir(), 'qkd-etsi-status-'));
const pki = makePki(join(dir, 'pki'), ['nodeA', 'nodeB', 'kmsA', 'saeA']);
const rogue = makePki(join(dir, 'rogue'), ['kmsA'], 'rogue-ca');
const peer = { link: true, open: new Set<string>() };
const common = { spoolKey: randomBytes(32), fsync: false, kms: { url: 'https://127.0.0.1:9', id: 'kmsA' },
  retry: { baseMs: 1000, maxMs: 1000 } };
let A: DeliveryNode;
let B: DeliveryNode;
let kms: JsonClient;

t.before(async () => {
  A = await startDeliveryNode({ ...common, role: 'source', nodeId: 'nodeA', tls: pki.tls('nodeA'),
    spoolDir: join(dir, 'sa'), peer: { nodeId: 'nodeB', linkUp: () => peer.link, streamOpened: (id) => peer.open.has(id) } });
  B = await startDeliveryNode({ ...common, role: 'destination', nodeId: 'nodeB', tls: pki.tls('nodeB'),
    spoolDir: join(dir, 'sb'), peer: { nodeId: 'nodeA', streamOpened: (id) => A.hasStream(id) } });
  kms = new JsonClient({ url: A.url, id: 'nodeA' }, { tls: pki.tls('kmsA') });
});
t.teardown(async () => {
  kms.close();
  await A.close();
  await B.close();
  rmSync(dir, { recursive: true, force: true });
});

const link = { source: 'qkd://nodeA', destination: 'qkd://nodeB' };
const open = (body: unknown) => kms.request('POST', '/api/v1/kms/etsi004/open-connect', body);
const getKey = (body: unknown, c = kms) => c.request('GET', '/api/v1/kms/etsi004/get-key', body);

t.test('0: open-connect assigns a UUIDv4 and fills every QoS field; get-key 205; close 204', async (t) => {
  const r = await open({ ...link, key_stream_id: null, qos: { key_chunk_size: 64, ttl: null } });
  t.equal(r.status, 201);
  t.equal(r.body.status, STATUS.OK);
  t.match(r.body.key_stream_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  t.same(Object.keys(r.body.qos).sort(), ['jitter', 'key_chunk_size', 'max_bps', 'metadata_mimetype', 'min_bps',
    'priority', 'timeout', 'ttl']);
  t.equal(r.body.qos.key_chunk_size, 64);
  t.ok(Object.values(r.body.qos).every((v) => v !== null && v !== undefined), 'no null field');
  const again = await open({ ...link, key_stream_id: r.body.key_stream_id, qos: {} });
  t.equal(again.status, 201, 'reopening the same binding is idempotent');
  t.equal(again.body.qos.key_chunk_size, 64);
  peer.open.add(r.body.key_stream_id);
  const g = await getKey({ key_stream_id: r.body.key_stream_id, index: 0 });
  t.equal(g.status, 205);
  t.equal(g.body.status, STATUS.OK);
  const c = await kms.request('PUT', '/api/v1/kms/etsi004/close', { key_stream_id: r.body.key_stream_id });
  t.equal(c.status, 204);
  t.equal(c.body, null, 'a 204 has no body');
  t.equal(c.headers['etsi-status'], '0');
  const c2 = await kms.request('PUT', '/api/v1/kms/etsi004/close', { key_stream_id: r.body.key_stream_id });
  t.equal(c2.status, 404);
  t.equal(c2.body.status, STATUS.NO_QKD_CONNECTION);
});

t.test('get-key accepts its fields as query parameters', async (t) => {
  const r = await open({ ...link, qos: {} });
  peer.open.add(r.body.key_stream_id);
  const g = await kms.request('GET', `/api/v1/kms/etsi004/get-key?key_stream_id=${r.body.key_stream_id}&index=0`);
  t.equal(g.status, 205);
  t.equal(g.body.status, 0);
});

t.test('errors are error statuses: another link is 4 (not 1, a success status), a destination without an id 5, an unknown route no status', async (t) => {
  const r = await open({ source: 'qkd://nodeA', destination: 'qkd://nodeZ', qos: {} });
  t.equal(r.status, 400);
  t.equal(r.body.status, STATUS.NO_QKD_CONNECTION);
  t.equal(r.body.key_stream_id, null);
  const cb = new JsonClient({ url: B.url, id: 'nodeB' }, { tls: pki.tls('kmsA') });
  t.teardown(() => cb.close());
  const d = await cb.request('POST', '/api/v1/kms/etsi004/open-connect', { ...link, key_stream_id: null });
  t.equal(d.status, 400);
  t.equal(d.body.status, STATUS.KSID_IN_USE, 'the destination side needs the source side id');
  const nf = await kms.request('GET', '/api/v1/kms/etsi004/nowhere');
  t.equal(nf.status, 404);
  t.equal(nf.body.status, undefined, 'a 404 for an unknown route carries no ETSI status');
});

// Status 2 (insufficient key: the index asked for was already delivered) needs a real KMS ack:
// it is in test/delivery/link.test.ts.

t.test('3: peer application not connected (timeout 0), 6: timeout (peer never opens)', async (t) => {
  const r = await open({ ...link, qos: { timeout: 0 } });
  const g = await getKey({ key_stream_id: r.body.key_stream_id });
  t.equal(g.status, 400);
  t.equal(g.body.status, STATUS.PEER_APP_NOT_CONNECTED);
  const r6 = await open({ ...link, qos: { timeout: 150 } });
  const t0 = Date.now();
  const g6 = await getKey({ key_stream_id: r6.body.key_stream_id });
  t.equal(g6.status, 500);
  t.equal(g6.body.status, STATUS.TIMEOUT);
  t.ok(Date.now() - t0 >= 140, 'waited for the stream timeout');
  peer.open.add(r6.body.key_stream_id);
  t.equal((await getKey({ key_stream_id: r6.body.key_stream_id })).status, 205, 'then the peer opens: 205');
});

t.test('4: no QKD connection (link down; unknown stream)', async (t) => {
  peer.link = false;
  t.teardown(() => { peer.link = true; });
  const r = await open({ ...link, qos: {} });
  t.equal(r.status, 500);
  t.equal(r.body.status, STATUS.NO_QKD_CONNECTION);
  peer.link = true;
  const g = await getKey({ key_stream_id: '00000000-0000-4000-8000-000000000000' });
  t.equal(g.status, 404);
  t.equal(g.body.status, STATUS.NO_QKD_CONNECTION);
});

t.test('5: key stream id already in use', async (t) => {
  const r = await open({ ...link, qos: {} });
  await kms.request('PUT', '/api/v1/kms/etsi004/close', { key_stream_id: r.body.key_stream_id });
  const again = await open({ ...link, key_stream_id: r.body.key_stream_id, qos: {} });
  t.equal(again.status, 400);
  t.equal(again.body.status, STATUS.KSID_IN_USE);
});

t.test('7: QoS counter-proposal', async (t) => {
  const r = await open({ ...link, qos: { key_chunk_size: 1, max_bps: 1e12, metadata_mimetype: 'text/plain' } });
  t.equal(r.status, 201);
  t.equal(r.body.status, STATUS.QOS_COUNTER_PROPOSAL);
  t.equal(r.body.key_stream_id, null, 'no stream opened');
  t.equal(r.body.qos.key_chunk_size, 16, 'smallest chunk size the node offers');
  t.equal(r.body.qos.metadata_mimetype, 'application/json');
  t.ok(r.body.qos.max_bps <= 10_000_000_000);
  const ok = await open({ ...link, qos: r.body.qos });
  t.equal(ok.body.status, STATUS.OK, 'the counter-proposal is accepted as is');
});

t.test('8: metadata buffer too small', async (t) => {
  const r = await open({ ...link, qos: {} });
  peer.open.add(r.body.key_stream_id);
  const g = await getKey({ key_stream_id: r.body.key_stream_id, metadata: { size: 5, buffer: {} } });
  t.equal(g.status, 400);
  t.equal(g.body.status, STATUS.METADATA_TOO_SMALL);
  t.ok(g.body.metadata.size > 5, 'says how much is needed');
  const ok = await getKey({ key_stream_id: r.body.key_stream_id, metadata: { size: g.body.metadata.size, buffer: '{}' } });
  t.equal(ok.status, 205);
  t.equal(ok.body.metadata.buffer.key_stream_id, r.body.key_stream_id);
});

t.test('identity binding: wrong CN 403, untrusted CA and plain HTTP refused, TLS required', async (t) => {
  const sae = new JsonClient({ url: A.url, id: 'nodeA' }, { tls: pki.tls('saeA') });
  t.teardown(() => sae.close());
  const r = await sae.request('POST', '/api/v1/kms/etsi004/open-connect', { ...link });
  t.equal(r.status, 403, 'a trusted certificate with the wrong identity');
  const bad = new JsonClient({ url: A.url, id: 'nodeA' }, { tls: rogue.tls('kmsA') });
  t.teardown(() => bad.close());
  await t.rejects(bad.request('POST', '/api/v1/kms/etsi004/open-connect', { ...link }), { code: 'DELIVERY_CONNECTION' },
    'a certificate from another CA never gets past the handshake');
  const plain = new JsonClient({ url: A.url.replace('https', 'http'), id: 'nodeA' }, { insecure: true });
  t.teardown(() => plain.close());
  await t.rejects(plain.request('POST', '/api/v1/kms/etsi004/open-connect', { ...link }));
  const wrongServer = new JsonClient({ url: A.url, id: 'nodeB' }, { tls: pki.tls('kmsA') });
  t.teardown(() => wrongServer.close());
  await t.rejects(wrongServer.request('POST', '/api/v1/kms/etsi004/open-connect', { ...link }),
    { code: 'DELIVERY_PEER_IDENTITY' }, 'the client refuses a server presenting another identity');
  await t.rejects(startDeliveryNode({ ...common, role: 'source', nodeId: 'x', spoolDir: join(dir, 'sx'),
    peer: { nodeId: 'y' } }), { code: 'DELIVERY_TLS_REQUIRED' });
});

t.test('index wrap: a stream ends at 2^32-1, the rest waits for a new stream', async (t) => {
  const { Spool } = await import('../../src/delivery/spool.ts');
  const sd = join(dir, 'swrap');
  const sid = '5e1f0000-0000-4000-8000-00000000aaaa';
  const qos = { key_chunk_size: 16, max_bps: 1e9, min_bps: 0, jitter: 0, priority: 0, timeout: 0, ttl: 60,
    metadata_mimetype: 'application/json' };
  // A stream record as a long-running node would have left it, two indices before the end.
  new Spool(sd, common.spoolKey).saveStreams([{ keyStreamId: sid, source: 'nodeA', destination: 'nodeB', qos,
    nextIndex: 0xffff_fffe, registered: false, startIndex: 0, closed: false, exhausted: false }]);
  const n = await startDeliveryNode({ ...common, role: 'source', nodeId: 'nodeA', tls: pki.tls('nodeA'), spoolDir: sd,
    peer: { nodeId: 'nodeB' } });
  t.teardown(() => n.close());
  const alarms: { code: string }[] = [];
  n.on('alarm', (a) => alarms.push(a));
  const r = await n.offer(randomBytes(16 * 3), {});
  t.same(r.indices, [0xffff_fffe, 0xffff_ffff], 'the last two indices, no wrap to 0');
  t.ok(alarms.some((a) => a.code === 'DELIVERY_INDEX_EXHAUSTED'));
  t.equal(n.metrics().pendingBytes, 16, 'the third chunk waits');
  const c = new JsonClient({ url: n.url, id: 'nodeA' }, { tls: pki.tls('kmsA') });
  t.teardown(() => c.close());
  const next = await c.request('POST', '/api/v1/kms/etsi004/open-connect', { ...link, qos: { key_chunk_size: 16 } });
  t.equal(next.body.status, 0);
  await until(() => n.metrics().pendingBytes === 0, 2000, 'the waiting bytes go to the new stream');
  t.equal(n.streamInfo(next.body.key_stream_id)?.nextIndex, 1, 'as its index 0');
});

t.test('bounded spool: offers beyond spoolMaxChunks or maxPendingBytes are refused whole', async (t) => {
  const n = await startDeliveryNode({ ...common, role: 'source', nodeId: 'nodeA', tls: pki.tls('nodeA'),
    spoolDir: join(dir, 'sfull'), peer: { nodeId: 'nodeB' }, spoolMaxChunks: 2, maxPendingBytes: 40 });
  t.teardown(() => n.close());
  t.notOk(n.wouldTake(41), 'wouldTake foresees the refusal of 41 bytes');
  t.ok(n.wouldTake(40), 'and that 40 are taken');
  await t.rejects(n.offer(randomBytes(41), {}), { code: 'DELIVERY_SPOOL_FULL' }, 'no stream: at most 40 bytes wait');
  t.equal(n.metrics().pendingBytes, 0, 'nothing was taken');
  await n.offer(randomBytes(40), {});
  const c = new JsonClient({ url: n.url, id: 'nodeA' }, { tls: pki.tls('kmsA') });
  t.teardown(() => c.close());
  const o = await c.request('POST', '/api/v1/kms/etsi004/open-connect', { ...link, qos: { key_chunk_size: 16 } });
  t.equal(o.body.status, 0);
  t.equal(n.metrics().spoolDepth, 2, 'the waiting 40 bytes became two chunks (8 bytes wait)');
  t.notOk(n.wouldTake(16), 'wouldTake: a third chunk does not fit');
  t.ok(n.wouldTake(4), 'wouldTake: 4 more bytes make no whole chunk and are taken');
  await t.rejects(n.offer(randomBytes(16), {}), { code: 'DELIVERY_SPOOL_FULL' }, 'a third chunk does not fit');
  t.equal(n.metrics().spoolDepth, 2);
  t.equal(n.metrics().pendingBytes, 8);
  await n.offer(randomBytes(4), {});
  t.equal(n.metrics().pendingBytes, 12, 'bytes that make no whole chunk are still taken');
});
