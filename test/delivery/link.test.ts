// The two-node happy path over real sockets and mutual TLS 1.3: Alice's and Bob's nodes push the
// same bytes under the same (key_stream_id, index) to their KMSs, the KMSs confirm to each other
// and an SAE pair gets matching keys through ETSI 014; and a canary key pushed through the whole
// path never shows in any log, event, error, metric or audit output.
import tap from 'tap';
import { backendTap } from '../../src/testkit/postgres.ts';
import { randomBytes } from 'node:crypto';
import { JsonClient, startServer } from '../../src/delivery/http.ts';
import { deriveKeyId } from '../../src/delivery/keyid.ts';
import { STATUS } from '../../src/delivery/types.ts';
import { startLink, until } from '../../src/testkit/delivery.ts';

// Every test runs on SQLite and on PostgreSQL (`[postgres]`: a named skip without the server binaries).
const t = backendTap(tap);

const CHUNK = 32;

t.test('happy path: identical keys at both KMSs, matching keys for the SAE pair, handed out once', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  const sid = L.keyStreamId;
  t.ok(L.nodeA.hasStream(sid) && L.nodeB.hasStream(sid), 'both nodes opened the same key_stream_id');
  const final = randomBytes(CHUNK * 12 + 7); // a remainder that waits for the next offer
  const prov = { block_id: 41, qber: 0.021, epsilon: 1e-10, acquired_from_ms: 1, acquired_to_ms: 2 };
  const [ra, rb] = await Promise.all([L.nodeA.offer(final, prov), L.nodeB.offer(final, prov)]);
  t.same(ra.indices, [...Array(12).keys()]);
  t.same(rb.indices, ra.indices, 'both nodes cut the same indices');
  const tail = randomBytes(CHUNK - 7);
  await Promise.all([L.nodeA.offer(tail, { block_id: 42 }), L.nodeB.offer(tail, { block_id: 42 })]);
  await until(() => L.kmsA.metrics().acked === 13 && L.kmsB.metrics().acked === 13, 10_000, 'acks');
  await until(() => L.nodeA.metrics().spoolDepth === 0 && L.nodeB.metrics().spoolDepth === 0, 5000, 'spools empty');
  const all = Buffer.concat([final, tail]);
  t.equal(L.kmsA.metrics().held, 13);
  t.equal(L.kmsB.metrics().held, 13);
  t.equal(L.nodeA.metrics().acked, 13);
  t.equal(L.nodeA.metrics().retries, 0);

  const saeA = L.sae('saeA', L.kmsA);
  const saeB = L.sae('saeB', L.kmsB);
  const st = await saeA.req('GET', '/api/v1/keys/saeB/status');
  t.equal(st.status, 200);
  t.match(st.body, { master_SAE_ID: 'saeA', slave_SAE_ID: 'saeB', key_size: 256, stored_key_count: 13 });

  const enc = await saeA.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 3, size: 256 });
  t.equal(enc.status, 200);
  t.equal(enc.body.keys.length, 3);
  const encGet = await saeA.req('GET', '/api/v1/keys/saeB/enc_keys?number=1');
  t.equal(encGet.status, 200, 'enc_keys by GET with query parameters');
  const keys = [...enc.body.keys, ...encGet.body.keys] as { key_ID: string; key: string }[];
  for (let i = 0; i < 4; i++) {
    t.equal(keys[i].key_ID, deriveKeyId(sid, i), `key_ID of index ${i} derived from (stream, index)`);
    t.ok(Buffer.from(keys[i].key, 'base64').equals(all.subarray(i * CHUNK, (i + 1) * CHUNK)),
      `key ${i} is exactly the bytes offered at that position`);
  }
  const dec = await saeB.req('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: keys.slice(0, 3).map((k) => ({ key_ID: k.key_ID })) });
  t.equal(dec.status, 200);
  t.same(dec.body.keys, keys.slice(0, 3), 'Bob\'s SAE gets the same keys under the same IDs');
  const decGet = await saeB.req('GET', `/api/v1/keys/saeA/dec_keys?key_ID=${keys[3].key_ID}`);
  t.same(decGet.body.keys, [keys[3]], 'dec_keys by GET');
  const again = await saeB.req('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: keys[0].key_ID }] });
  t.equal(again.status, 400, 'a key is handed out once');
  t.equal(L.kmsA.metrics().held, 9);
  t.equal(L.kmsB.metrics().held, 9);

  // The rest, in one request: every remaining key matches the offered bytes, on both sides.
  const rest = await saeA.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 9 });
  const restDec = await saeB.req('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: rest.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
  t.same(restDec.body.keys, rest.body.keys);
  t.ok(Buffer.concat(rest.body.keys.map((k: { key: string }) => Buffer.from(k.key, 'base64'))).equals(all.subarray(4 * CHUNK)));
  const empty = await saeA.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 1 });
  t.equal(empty.status, 503, 'no key left: 503, retry later');

  // ETSI 014 refusals
  t.equal((await saeA.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 1, size: 129 })).status, 400, 'size not a multiple of 8');
  t.equal((await saeA.req('GET', '/api/v1/keys/saeZ/status')).status, 400, 'unknown slave SAE');
  const node = L.sae('nodeA', L.kmsA);
  t.equal((await node.req('GET', '/api/v1/keys/saeB/status')).status, 401, 'a node certificate is not an SAE');

  // Status 2: the KMS asks for an index the node already delivered and zeroised.
  const kmsClient = new JsonClient({ url: L.nodeA.url, id: 'nodeA' }, { tls: L.pki.tls('kmsA') });
  t.teardown(() => kmsClient.close());
  const g = await kmsClient.request('GET', '/api/v1/kms/etsi004/get-key', { key_stream_id: sid, index: 0 });
  t.equal(g.body.status, STATUS.INSUFFICIENT_KEY);
  const audit = L.kmsA.audit(sid, 0).map((r) => r.event);
  t.same(audit, ['stored', 'confirmed', 'delivered', 'destroyed'], 'audit trail of one key');
  t.match(L.nodeA.metrics().ackLatencyMs, { count: 13 });
});

t.test('canary: key bytes never appear in logs, events, errors, metrics or audit', async (t) => {
  const captured: string[] = [];
  const origOut = process.stdout.write.bind(process.stdout);
  const origErr = process.stderr.write.bind(process.stderr);
  const L = await startLink();
  t.teardown(() => L.close());
  for (const em of [L.nodeA, L.nodeB, L.kmsA, L.kmsB]) {
    const orig = em.emit.bind(em);
    em.emit = (ev: string | symbol, ...args: unknown[]) => {
      captured.push(`${String(ev)} ${JSON.stringify(args)}`);
      return orig(ev, ...args);
    };
  }
  (process.stdout as { write: unknown }).write = (c: unknown, ...r: unknown[]) => {
    captured.push(String(c));
    return (origOut as (...a: unknown[]) => boolean)(c, ...r);
  };
  (process.stderr as { write: unknown }).write = (c: unknown, ...r: unknown[]) => {
    captured.push(String(c));
    return (origErr as (...a: unknown[]) => boolean)(c, ...r);
  };
  t.teardown(() => {
    (process.stdout as { write: unknown }).write = origOut;
    (process.stderr as { write: unknown }).write = origErr;
  });
  const canary = Buffer.from('QKD-CANARY-d2c1f0e9b8a7-KEYBYTES'); // 32 bytes = one chunk
  t.equal(canary.length, CHUNK);
  const sid = L.keyStreamId;
  await Promise.all([L.nodeA.offer(canary, { block_id: 'c' }), L.nodeB.offer(canary, { block_id: 'c' })]);
  await until(() => L.kmsA.metrics().acked === 1 && L.kmsB.metrics().acked === 1, 10_000, 'acks');

  // Failure paths that see the canary: a conflicting push, a wrong-size push, a push from a
  // wrong identity, a peer-KMS call from an SAE; their answers and alarms are captured too.
  const asNode = new JsonClient({ url: L.kmsA.url, id: 'kmsA' }, { tls: L.pki.tls('nodeA') });
  const asSae = new JsonClient({ url: L.kmsA.url, id: 'kmsA' }, { tls: L.pki.tls('saeA') });
  t.teardown(() => { asNode.close(); asSae.close(); });
  const meta = { size: 100, buffer: { key_stream_id: sid } };
  const flipped = Buffer.from(canary);
  flipped[0] ^= 1;
  const answers = [
    await asNode.request('POST', '/api/v1/qkd/etsi004/key-material', { status: 0, index: 0, key_buffer: flipped.toString('base64'), metadata: meta }),
    await asNode.request('POST', '/api/v1/qkd/etsi004/key-material', { status: 0, index: 1, key_buffer: canary.subarray(0, 20).toString('base64'), metadata: meta }),
    await asSae.request('POST', '/api/v1/qkd/etsi004/key-material', { status: 0, index: 0, key_buffer: canary.toString('base64'), metadata: meta }),
    await asSae.request('POST', '/api/v1/kms-peer/reserve', { key_stream_id: sid, items: [], holder: 'x' }),
  ];
  t.same(answers.map((a) => a.status), [409, 400, 403, 403]);
  t.equal(L.kmsA.metrics().conflicts, 1);
  captured.push(JSON.stringify(answers.map((a) => a.body)));

  // The SAEs legitimately receive the canary through ETSI 014 ...
  const saeA = L.sae('saeA', L.kmsA);
  const saeB = L.sae('saeB', L.kmsB);
  const enc = await saeA.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 1 });
  const dec = await saeB.req('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: enc.body.keys[0].key_ID }] });
  t.ok(Buffer.from(dec.body.keys[0].key, 'base64').equals(canary), 'the canary went through the whole path');
  // ... and nowhere else.
  captured.push(JSON.stringify([L.nodeA.metrics(), L.nodeB.metrics(), L.kmsA.metrics(), L.kmsB.metrics()]));
  captured.push(JSON.stringify([L.kmsA.audit(sid), L.kmsB.audit(sid)]));
  const text = captured.join('\n');
  t.ok(captured.length > 10, `captured ${captured.length} outputs`);
  t.ok(text.includes('KEY_CONFLICT'), 'the capture does see the alarms');
  for (const [form, needle] of [['utf8', 'QKD-CANARY'], ['hex', canary.toString('hex').slice(0, 24)],
    ['base64', canary.toString('base64').slice(0, 24)], ['base64 of the flipped copy', flipped.toString('base64').slice(0, 24)],
    ['base64url', canary.toString('base64url').slice(0, 24)]] as const) {
    t.notOk(text.includes(needle), `no ${form} form of the canary in any output`);
  }
});

t.test('both directions at once: every key goes to exactly one SAE pair', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  const n = 40;
  const all = randomBytes(CHUNK * n);
  await Promise.all([L.nodeA.offer(all, {}), L.nodeB.offer(all, {})]);
  await until(() => L.kmsA.metrics().acked === n && L.kmsB.metrics().acked === n, 10_000, 'acks');
  const saeA = L.sae('saeA', L.kmsA);
  const saeB = L.sae('saeB', L.kmsB);
  /** master asks its KMS for 4 keys until it has `want`; the slave fetches them by key_ID. */
  async function direction(master: typeof saeA, slave: typeof saeA, slaveId: string, masterId: string, want: number) {
    const got: { key_ID: string; key: string }[] = [];
    let refusals = 0;
    while (got.length < want) {
      const enc = await master.req('POST', `/api/v1/keys/${slaveId}/enc_keys`, { number: 4 });
      if (enc.status === 503) {
        refusals++;
        if (refusals > 200) throw new Error('no progress');
        await new Promise((r) => setTimeout(r, 5));
        continue;
      }
      const dec = await slave.req('POST', `/api/v1/keys/${masterId}/dec_keys`,
        { key_IDs: enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
      if (JSON.stringify(dec.body.keys) !== JSON.stringify(enc.body.keys)) throw new Error('slave got other keys');
      got.push(...enc.body.keys);
    }
    return got;
  }
  const [ab, ba] = await Promise.all([direction(saeA, saeB, 'saeB', 'saeA', 20), direction(saeB, saeA, 'saeA', 'saeB', 20)]);
  const ids = new Set([...ab, ...ba].map((k) => k.key_ID));
  t.equal(ids.size, n, 'no key_ID handed out twice');
  const chunks = new Set(Array.from({ length: n }, (_, i) => all.subarray(i * CHUNK, (i + 1) * CHUNK).toString('base64')));
  t.same(new Set([...ab, ...ba].map((k) => k.key)), chunks, 'together they are exactly the offered keys');
  t.equal(L.kmsA.metrics().held + L.kmsA.metrics().reserved, 0, 'nothing left reserved or held at A');
  t.equal(L.kmsB.metrics().held + L.kmsB.metrics().reserved, 0, 'nor at B');
});

t.test('ETSI 014 guards: malformed percent-encoding is a 400, not a 500; one SAE cannot drain the store (429 + Retry-After)', async (t) => {
  let nowMs = 1_000_000;
  const L = await startLink({ kms: { rateLimit: { keysPerSecond: 2, burst: 6 }, now: () => nowMs } });
  t.teardown(() => L.close());
  const n = 12;
  const all = randomBytes(CHUNK * n);
  await Promise.all([L.nodeA.offer(all, {}), L.nodeB.offer(all, {})]);
  await until(() => L.kmsA.metrics().acked === n && L.kmsB.metrics().acked === n, 10_000, 'acks');
  const saeA = L.sae('saeA', L.kmsA);
  const bad = await saeA.req('GET', '/api/v1/keys/sae%E0%A4%A/status');
  t.equal(bad.status, 400, 'bad percent-encoding refused');
  t.match(bad.body.message, /percent-encoding/);

  t.equal((await saeA.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 4 })).status, 200, 'within the burst');
  const over = await saeA.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 4 });
  t.equal(over.status, 429, 'burst spent: refused');
  t.match(over.body.message, /over its limit of 2 keys\/s; retry after 1 s/);
  t.equal(L.kmsA.metrics().held, n - 4, 'a refused request takes nothing');
  nowMs += 1000; // two more tokens: 4 in the bucket
  t.equal((await saeA.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 4 })).status, 200, 'allowed again after the refill');
  const other = await L.sae('saeStranger', L.kmsA).req('POST', '/api/v1/keys/saeB/enc_keys', { number: 2 });
  t.equal(other.status, 200, 'another SAE has its own allowance');
});

t.test('by default the node keeps 32 pushes in flight (a KMS shares one commit among them)', async (t) => {
  // One request per chunk (a KMS without batched pushes): 80 chunks, 32 requests at once.
  const L = await startLink({ kms: { pushBatch: 0 } });
  t.teardown(() => L.close());
  // A TLS proxy in the KMS's place that holds every key-material push 150 ms and counts how many
  // it holds at once.
  const client = new JsonClient({ url: L.kmsA.url, id: 'kmsA' }, { tls: L.pki.tls('nodeA') });
  let held = 0;
  let most = 0;
  const srv = await startServer({ tls: L.pki.tls('kmsA'), name: 'slow proxy' }, async (req) => {
    held++;
    most = Math.max(most, held);
    await new Promise((r) => setTimeout(r, 150));
    held--;
    const r = await client.request(req.method, req.path, req.body);
    return { status: r.status, body: r.body ?? undefined };
  }, () => undefined);
  t.teardown(async () => {
    client.close();
    await srv.close();
  });
  L.nodeA.setKmsUrl(srv.url);
  const bytes = randomBytes(CHUNK * 80);
  await Promise.all([L.nodeA.offer(bytes), L.nodeB.offer(bytes)]);
  await until(() => L.kmsA.metrics().acked === 80 && L.kmsB.metrics().acked === 80, 20_000, 'acks');
  t.equal(most, 32, 'pushes held at once by the KMS side');
});
