// ETSI GS QKD 014 V1.1.1 against the spec's data model (Tables 9–13) over real mutual TLS: status
// fields and deliverable counts, strict typing of requests, the Error object and its wording,
// all-or-nothing dec_keys, 401 for an SAE that is not a key's slave, sizes other than the chunk
// (split and merge, no byte reused), multicast keys, security levels, and concurrent dec_keys for
// one key_ID (exactly one wins).
import tap from 'tap';
import { backendTap } from '../../src/testkit/postgres.ts';
import { randomBytes } from 'node:crypto';
import { startLink, until } from '../../src/testkit/delivery.ts';

// Every test runs on SQLite and on PostgreSQL (`[postgres]`: a named skip without the server binaries).
const t = backendTap(tap);

const CHUNK = 32;
const ENC = '/api/v1/keys/saeB/enc_keys';
const DEC = '/api/v1/keys/saeA/dec_keys';

async function fill(L: Awaited<ReturnType<typeof startLink>>, chunks: number, prov: Record<string, unknown> = { epsilon: 1e-10 }) {
  const bytes = randomBytes(CHUNK * chunks);
  const before = L.kmsA.metrics().acked;
  await Promise.all([L.nodeA.offer(bytes, prov), L.nodeB.offer(bytes, prov)]);
  await until(() => L.kmsA.metrics().acked === before + chunks && L.kmsB.metrics().acked === before + chunks, 10_000, 'acks');
  return bytes;
}

const isErr = (b: unknown) => !!b && typeof (b as { message?: unknown }).message === 'string';

t.test('status (Table 9): every field, the real limits, and only deliverable keys counted', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  const saeA = L.sae('saeA', L.kmsA);
  // Only Alice's node delivers: Alice's KMS holds the key but cannot deliver it (Bob's KMS lacks it).
  await L.nodeA.offer(randomBytes(CHUNK), {});
  await until(() => L.kmsA.metrics().acked === 1, 5000, 'ack at A');
  let st = await saeA.req('GET', '/api/v1/keys/saeB/status');
  t.equal(st.status, 200);
  t.same(Object.keys(st.body).sort(), ['key_size', 'master_SAE_ID', 'max_SAE_ID_count', 'max_key_count', 'max_key_per_request',
    'max_key_size', 'min_key_size', 'slave_SAE_ID', 'source_KME_ID', 'stored_key_count', 'target_KME_ID'].sort());
  t.match(st.body, { source_KME_ID: 'kmsA', target_KME_ID: 'kmsB', master_SAE_ID: 'saeA', slave_SAE_ID: 'saeB', key_size: 256,
    stored_key_count: 0, max_key_size: 4096, min_key_size: 8, max_SAE_ID_count: 8 });
  t.equal(L.kmsA.metrics().held, 1, 'held at A, but not deliverable');
  t.equal((await saeA.req('POST', ENC, {})).status, 503, 'and indeed not deliverable');
  await L.nodeB.offer(randomBytes(CHUNK), {}); // Bob's node pushes index 0 too (other bytes: a mismatch later, not a count)
  await until(() => L.kmsB.metrics().acked === 1, 5000, 'ack at B');
  st = await saeA.req('GET', '/api/v1/keys/saeB/status');
  t.equal(st.body.stored_key_count, 1, 'held at both KMSs: deliverable');
  t.equal((await saeA.req('POST', '/api/v1/keys/saeB/status')).status, 405);
});

t.test('requests are parsed strictly; every refusal is the Error object (Table 13)', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  await fill(L, 4);
  const saeA = L.sae('saeA', L.kmsA);
  const saeB = L.sae('saeB', L.kmsB);
  const ext = await saeA.req('POST', ENC, { number: 1, extension_mandatory: [{ abc_route_type: 'direct' }, { qkd_max_epsilon: 1e-3 }] });
  t.equal(ext.status, 400);
  t.same(ext.body, { message: 'not all extension_mandatory parameters are supported',
    details: [{ extension_mandatory_unsupported: [{ abc_route_type: 'direct' }] }] }, 'spec wording and details');
  const cases: [string, unknown][] = [
    ['size as a string', { size: '256' }],
    ['number as a string', { number: '1' }],
    ['number 0', { number: 0 }],
    ['number above max_key_per_request', { number: 129 }],
    ['fractional number', { number: 1.5 }],
    ['size not a multiple of 8', { size: 100 }],
    ['size above max_key_size', { size: 4104 }],
    ['size below min_key_size', { size: 0 }],
    ['a JSON array body', [{ number: 1 }]],
    ['a string body', 'number=1'],
    ['an object where the slave list belongs', { additional_slave_SAE_IDs: { id: 'saeC' } }],
    ['a number in the slave list', { additional_slave_SAE_IDs: [7] }],
    ['an unknown additional slave', { additional_slave_SAE_IDs: ['saeZ'] }],
    ['the slave named twice', { additional_slave_SAE_IDs: ['saeB'] }],
    ['too many slaves', { additional_slave_SAE_IDs: Array.from({ length: 9 }, (_, i) => `s${i}`) }],
    ['extension_mandatory not a list', { extension_mandatory: { qkd_max_epsilon: 1e-9 } }],
    ['a bad level', { extension_optional: [{ qkd_max_epsilon: 'high' }] }],
    ['an unknown field', { numbr: 1 }],
  ];
  for (const [what, body] of cases) {
    const r = await saeA.req('POST', ENC, body);
    t.equal(r.status, 400, what);
    t.ok(isErr(r.body) && Object.keys(r.body).every((k) => k === 'message' || k === 'details'), `${what}: an Error object`);
  }
  for (const [what, q] of [['size=abc', '?size=abc'], ['an unknown parameter', '?count=1'], ['number twice', '?number=1&number=2']]) {
    t.equal((await saeA.req('GET', `${ENC}${q}`)).status, 400, `GET with ${what}`);
  }
  t.equal(L.kmsA.metrics().held, 4, 'no refused request took a key');
  t.equal((await saeA.req('POST', ENC, { number: 1, extension_optional: [{ abc_route_type: 'direct' }] })).status, 200,
    'an unsupported optional extension is ignored');
  const decCases: [string, unknown][] = [
    ['a JSON array body', [{ key_ID: '00000000-0000-8000-8000-000000000000' }]],
    ['key_IDs an object', { key_IDs: { key_ID: '00000000-0000-8000-8000-000000000000' } }],
    ['a key_ID not a UUID', { key_IDs: [{ key_ID: 'abc' }] }],
    ['a key_ID a number', { key_IDs: [{ key_ID: 5 }] }],
    ['an entry not an object', { key_IDs: ['00000000-0000-8000-8000-000000000000'] }],
    ['no key_IDs', { key_IDs: [] }],
    ['no body', undefined],
  ];
  for (const [what, body] of decCases) {
    const r = await saeB.req('POST', DEC, body);
    t.equal(r.status, 400, `dec_keys with ${what}`);
    t.ok(isErr(r.body), `dec_keys with ${what}: an Error object`);
  }
  const stranger = await L.sae('saeStranger', L.kmsB).req('GET', '/api/v1/keys/saeA/status');
  t.equal(stranger.status, 401, 'a client that is not an SAE of this KME');
  t.ok(isErr(stranger.body));
});

t.test('dec_keys is all or nothing; an SAE that is not the key\'s slave gets 401', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  const bytes = await fill(L, 3);
  const saeA = L.sae('saeA', L.kmsA);
  const saeB = L.sae('saeB', L.kmsB);
  const enc = await saeA.req('POST', ENC, { number: 2 });
  t.equal(enc.status, 200);
  const ids = (enc.body.keys as { key_ID: string }[]).map((k) => ({ key_ID: k.key_ID }));
  const unknown = { key_ID: '5a3b2c1d-0000-8000-8000-000000000000' };
  const r = await saeB.req('POST', DEC, { key_IDs: [ids[0], unknown, ids[1]] });
  t.equal(r.status, 400);
  t.match(r.body.message, /nothing was handed out/);
  t.same(r.body.details, [{ key_IDs_unknown: [unknown.key_ID] }]);
  const foreign = await L.sae('saeC', L.kmsB).req('POST', DEC, { key_IDs: [ids[0]] });
  t.equal(foreign.status, 401, 'saeC is an SAE of this KME but not the slave of this key');
  t.same(foreign.body.details, [{ key_IDs_unauthorized: [ids[0].key_ID] }]);
  const ok = await saeB.req('POST', DEC, { key_IDs: ids });
  t.equal(ok.status, 200, 'the valid keys were kept for the pair');
  t.same(Buffer.concat(ok.body.keys.map((k: { key: string }) => Buffer.from(k.key, 'base64'))), bytes.subarray(0, 2 * CHUNK));
  t.equal((await saeB.req('GET', `${DEC}?key_ID=${ids[0].key_ID}`)).status, 400, 'handed out once');
});

t.test('reformat: split and merged keys are the stream\'s bytes, at both SAEs, no byte twice', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  const bytes = await fill(L, 8);
  const saeA = L.sae('saeA', L.kmsA);
  const saeB = L.sae('saeB', L.kmsB);
  const got: Buffer[] = [];
  for (const [number, size] of [[3, 128], [1, 512], [2, 40], [1, 256]]) {
    const enc = await saeA.req('POST', ENC, { number, size });
    t.equal(enc.status, 200, `${number} x ${size} bits`);
    const keys = enc.body.keys as { key_ID: string; key: string }[];
    t.equal(keys.length, number);
    const dec = await saeB.req('POST', DEC, { key_IDs: keys.map((k) => ({ key_ID: k.key_ID })) });
    t.equal(dec.status, 200);
    keys.forEach((k, i) => {
      const kb = Buffer.from(k.key, 'base64');
      t.equal(kb.length, size / 8);
      t.same(Buffer.from(dec.body.keys[i].key, 'base64'), kb, 'the slave got the same bytes');
      got.push(kb);
    });
  }
  // Alice's KMS draws chunks from the oldest: 3 x 16 B from chunks 0-1 (16 B discarded),
  // 64 B from chunks 2-3, 2 x 5 B from chunk 4 (22 B discarded), 32 B = chunk 5.
  const C = (i: number) => bytes.subarray(i * CHUNK, (i + 1) * CHUNK);
  const want = [C(0).subarray(0, 16), C(0).subarray(16), C(1).subarray(0, 16), Buffer.concat([C(2), C(3)]),
    C(4).subarray(0, 5), C(4).subarray(5, 10), C(5)];
  t.same(got, want, 'keys are consecutive bytes of the chosen chunks; discarded bytes are never handed out');
  t.equal(L.kmsA.metrics().held, 2, 'chunks 6 and 7 untouched');
  t.equal(L.kmsB.metrics().held, 2);
});

t.test('multicast: one key to several slave SAEs (additional_slave_SAE_IDs)', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  const bytes = await fill(L, 2);
  const saeA = L.sae('saeA', L.kmsA);
  const enc = await saeA.req('POST', ENC, { number: 2, additional_slave_SAE_IDs: ['saeC'] });
  t.equal(enc.status, 200);
  const ids = (enc.body.keys as { key_ID: string }[]).map((k) => ({ key_ID: k.key_ID }));
  for (const sae of ['saeB', 'saeC']) {
    const dec = await L.sae(sae, L.kmsB).req('POST', DEC, { key_IDs: ids });
    t.equal(dec.status, 200, `${sae} gets the keys`);
    t.same(Buffer.concat(dec.body.keys.map((k: { key: string }) => Buffer.from(k.key, 'base64'))), bytes, `${sae}: the same bytes`);
    t.equal((await L.sae(sae, L.kmsB).req('POST', DEC, { key_IDs: ids })).status, 400, `${sae}: once`);
  }
});

t.test('security level: qkd_max_epsilon picks keys whose block epsilon is at most the level', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  await fill(L, 1, { epsilon: 1e-6 });
  const strong = await fill(L, 1, { epsilon: 1e-12 });
  await fill(L, 1, {}); // unlabelled: never meets a level
  const saeA = L.sae('saeA', L.kmsA);
  const enc = await saeA.req('POST', ENC, { extension_mandatory: [{ qkd_max_epsilon: 1e-9 }] });
  t.equal(enc.status, 200);
  t.same(Buffer.from(enc.body.keys[0].key, 'base64'), strong);
  const none = await saeA.req('POST', ENC, { extension_mandatory: [{ qkd_max_epsilon: 1e-9 }] });
  t.equal(none.status, 503, 'no key left at that level');
  t.match(none.body.message, /epsilon <= 1e-9/);
  t.equal((await saeA.req('POST', ENC, {})).status, 200, 'without a level any key does');
});

t.test('concurrent dec_keys for one key_ID over real HTTPS: exactly one wins', async (t) => {
  const L = await startLink();
  t.teardown(() => L.close());
  await fill(L, 1);
  const enc = await L.sae('saeA', L.kmsA).req('POST', ENC, {});
  const body = { key_IDs: [{ key_ID: enc.body.keys[0].key_ID }] };
  // Separate clients: separate TLS connections, truly concurrent requests.
  const clients = Array.from({ length: 12 }, () => L.sae('saeB', L.kmsB));
  const rs = await Promise.all(clients.map((c) => c.req('POST', DEC, body)));
  t.equal(rs.filter((r) => r.status === 200).length, 1, 'one 200');
  t.equal(rs.filter((r) => r.status === 400).length, 11, 'the others 400');
});
