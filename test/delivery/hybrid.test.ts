// Hybrid fallback (docs/delivery.md, "Hybrid fallback"): ML-KEM-768 (libcrux-ml-kem via napi)
// against a NIST ACVP known answer, encaps/decaps round trips and implicit rejection, the HKDF
// combiner against node:crypto's HKDF, and the policies end to end between two KMSs over real
// mutual TLS: when-short with no QKD key gives matching ml-kem-768 keys, never gives the 503,
// always combines QKD key in (hybrid label with ε), a security level never gets a non-QKD key.
import t from 'tap';
import { createHash, hkdfSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { native } from '../../src/core/native.ts';
import { checkHybridConfig, hybridContext, worstEpsilon } from '../../src/delivery/hybrid.ts';
import { startLink, until } from '../../src/testkit/delivery.ts';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest();
const CHUNK = 32;
const ENC = '/api/v1/keys/saeB/enc_keys';
const DEC = '/api/v1/keys/saeA/dec_keys';

t.test('ML-KEM-768 encapsulation: NIST ACVP known answer (FIPS 203, tcId 26)', async (t) => {
  const v = JSON.parse(readFileSync(new URL('./fixtures/mlkem768-acvp.json', import.meta.url), 'utf8'));
  const r = native().mlkem768EncapsKat(Buffer.from(v.ek, 'hex'), Buffer.from(v.m, 'hex'));
  t.equal(r.ct.toString('hex').toUpperCase(), v.c, 'ciphertext as NIST');
  t.same(r.ssSha256, sha256(Buffer.from(v.k, 'hex')), 'shared secret as NIST');
  // One bit of m changed: a different ciphertext (the check can fail).
  const m2 = Buffer.from(v.m, 'hex');
  m2[0] ^= 1;
  t.not(native().mlkem768EncapsKat(Buffer.from(v.ek, 'hex'), m2).ct.toString('hex').toUpperCase(), v.c);
});

t.test('ML-KEM-768 round trips: decapsulation recovers the secret; a modified ciphertext is implicitly rejected', async (t) => {
  for (let i = 0; i < 40; i++) {
    const dz = randomBytes(64);
    const m = randomBytes(32);
    const r = native().mlkem768RoundTrip(dz, m, null);
    t.equal(r.ek.length, 1184);
    t.equal(r.ct.length, 1088);
    if (!r.decapsSsSha256.equals(r.ssSha256)) t.fail(`round trip ${i}: decapsulation differs`);
    const bad = Buffer.from(r.ct);
    bad[i % bad.length] ^= 1 << (i % 8);
    const rj = native().mlkem768RoundTrip(dz, m, bad);
    if (rj.decapsSsSha256.equals(r.ssSha256)) t.fail(`round trip ${i}: a modified ciphertext gave the secret`);
    // Deterministic in its inputs.
    if (!native().mlkem768RoundTrip(dz, m, null).ct.equals(r.ct)) t.fail(`round trip ${i}: not deterministic`);
  }
  t.pass('40 round trips');
});

t.test('the combiner is HKDF-SHA-256 over (len ‖ QKD key ‖ ML-KEM secret), as node:crypto computes it', async (t) => {
  for (let i = 0; i < 30; i++) {
    const ss = randomBytes(32);
    const qkd = randomBytes(i % 3 === 0 ? 0 : 1 + (i * 7) % 64);
    const th = randomBytes(32);
    const ctx = randomBytes(10 + i);
    const keyId = `k-${i}`;
    const bytes = 1 + (i * 13) % 100;
    const got = native().hybridDeriveForTests(ss, qkd, th, ctx, keyId, bytes);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(qkd.length);
    const clen = Buffer.alloc(4);
    clen.writeUInt32BE(ctx.length);
    const info = Buffer.concat([Buffer.from('qkd-node hybrid key v1\0'), clen, ctx, Buffer.from(keyId)]);
    const ref = Buffer.from(hkdfSync('sha256', Buffer.concat([len, qkd, ss]), th, info, bytes));
    if (!got.equals(ref)) t.fail(`derivation ${i} differs from the reference`);
  }
  t.pass('30 derivations match');
});

t.test('exchange: both sides derive the same key_IDs, bytes and confirmation; context and QKD part matter', async (t) => {
  const ctx = hybridContext({ initiator: 'kmsA', responder: 'kmsB', master: 'saeA', slave: 'saeB', number: 3, size: 256, qkdKeyIds: [] });
  const specs = [{ bytes: 32 }, { bytes: 32 }, { bytes: 32 }];
  const init = new (native().MlKemInitiator)();
  const resp = native().mlkemRespond(init.encapsulationKey, ctx, specs);
  const fin = init.finish(resp.ciphertext, ctx, specs);
  t.same(fin.keyIds, resp.keyIds);
  t.ok(fin.keys.every((k, i) => k.equals(resp.keys[i])), 'same bytes');
  t.ok(fin.confirmation.equals(resp.confirmation));
  t.equal(new Set(fin.keyIds).size, 3);
  t.ok(fin.keyIds.every((id) => /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(id)), 'UUIDv8');
  t.throws(() => init.finish(resp.ciphertext, ctx, specs), /MLKEM_USED/, 'a decapsulation key is used once');
  // Another context at the initiator: other keys, and the confirmation tells.
  const init2 = new (native().MlKemInitiator)();
  const resp2 = native().mlkemRespond(init2.encapsulationKey, ctx, specs);
  const other = hybridContext({ initiator: 'kmsA', responder: 'kmsX', master: 'saeA', slave: 'saeB', number: 3, size: 256, qkdKeyIds: [] });
  const fin2 = init2.finish(resp2.ciphertext, other, specs);
  t.notOk(fin2.confirmation.equals(resp2.confirmation), 'context mismatch caught by the confirmation');
  t.notOk(fin2.keys[0].equals(resp2.keys[0]));
  // A QKD part on one side only: other keys.
  const init3 = new (native().MlKemInitiator)();
  const q = randomBytes(32);
  const resp3 = native().mlkemRespond(init3.encapsulationKey, ctx, [{ bytes: 32, qkd: q }]);
  const fin3 = init3.finish(resp3.ciphertext, ctx, [{ bytes: 32 }]);
  t.notOk(fin3.keys[0].equals(resp3.keys[0]), 'the QKD key is in the derivation');
  t.throws(() => native().mlkemRespond(randomBytes(1000), ctx, specs), /MLKEM_BAD_INPUT/);
  // An encapsulation key failing the FIPS 203 modulus check (all 0xff coefficients).
  t.throws(() => native().mlkemRespond(Buffer.alloc(1184, 0xff), ctx, specs), /modulus check/);
});

t.test('configuration is checked', async (t) => {
  t.same(checkHybridConfig({ 'saeA->saeB': 'when-short', default: 'never', ttlS: 60 }), { 'saeA->saeB': 'when-short',
    default: 'never', ttlS: 60 });
  t.throws(() => checkHybridConfig({ 'saeA->saeB': 'sometimes' }), /must be one of never, when-short, always/);
  t.throws(() => checkHybridConfig({ saeA: 'always' }), /SAE pair/);
  t.throws(() => checkHybridConfig([]), /must be an object/);
  t.equal(worstEpsilon(['{"epsilon":1e-10}', '{"epsilon":1e-9}']), 1e-9);
  t.equal(worstEpsilon(['{"epsilon":1e-10}', '{}']), null);
});

async function fill(L: Awaited<ReturnType<typeof startLink>>, chunks: number, prov: Record<string, unknown> = { epsilon: 1e-10 }) {
  const [bytes, n] = [randomBytes(CHUNK * chunks), L.kmsA.metrics().acked + chunks];
  await Promise.all([L.nodeA.offer(bytes, prov), L.nodeB.offer(bytes, prov)]);
  return until(() => L.kmsA.metrics().acked >= n && L.kmsB.metrics().acked >= n, 10_000, 'acks').then(() => bytes);
}

const ids = (keys: { key_ID: string }[]) => ({ key_IDs: keys.map((k) => ({ key_ID: k.key_ID })) });

t.test('when-short with no QKD key: matching ml-kem-768 keys at both SAEs; a security level never gets one', async (t) => {
  const L = await startLink({ kms: { hybrid: { 'saeA->saeB': 'when-short', default: 'never' } } });
  t.teardown(() => L.close());
  const saeA = L.sae('saeA', L.kmsA);
  const saeB = L.sae('saeB', L.kmsB);
  const r = await saeA.req('POST', ENC, { number: 3, size: 256 });
  t.equal(r.status, 200, r.body?.message ?? 'served');
  t.equal(r.body.keys.length, 3);
  t.ok(r.body.keys.every((k: { key_extension: unknown }) => JSON.stringify(k.key_extension) ===
    JSON.stringify({ provenance: 'ml-kem-768', direct_qkd_key: false })), 'labelled ml-kem-768, not QKD');
  t.ok(r.body.keys.every((k: { key: string }) => Buffer.from(k.key, 'base64').length === 32));
  const d = await saeB.req('POST', DEC, ids(r.body.keys));
  t.equal(d.status, 200);
  t.same(d.body.keys.map((k: { key_ID: string; key: string }) => [k.key_ID, k.key]),
    r.body.keys.map((k: { key_ID: string; key: string }) => [k.key_ID, k.key]), 'same key_IDs and bytes at both KMSs');
  t.ok(d.body.keys.every((k: { key_extension: { provenance: string } }) => k.key_extension.provenance === 'ml-kem-768'));
  t.equal((await saeB.req('POST', DEC, ids(r.body.keys))).status, 400, 'handed out once');
  // Other sizes.
  const r40 = await saeA.req('POST', ENC, { number: 2, size: 40 });
  t.equal(r40.status, 200);
  t.ok(r40.body.keys.every((k: { key: string }) => Buffer.from(k.key, 'base64').length === 5));
  // A minimum QKD security level: never a key without QKD key.
  const lvl = await saeA.req('POST', ENC, { number: 1, extension_mandatory: [{ qkd_max_epsilon: 1e-6 }] });
  t.equal(lvl.status, 503, 'refused, not served from ML-KEM');
  t.type(lvl.body.message, 'string');
  // Multicast: QKD key only.
  t.equal((await saeA.req('POST', ENC, { number: 1, additional_slave_SAE_IDs: ['saeC'] })).status, 503);
  // With QKD key the pair gets QKD keys, labelled qkd with their ε, bytes as the nodes offered.
  const bytes = await fill(L, 2);
  const q = await saeA.req('POST', ENC, { number: 1 });
  t.equal(q.status, 200);
  t.same(q.body.keys[0].key_extension, { provenance: 'qkd', direct_qkd_key: true, qkd_epsilon: 1e-10 });
  const chunks = [0, 1].map((i) => bytes.subarray(i * CHUNK, (i + 1) * CHUNK).toString('base64'));
  t.ok(chunks.includes(q.body.keys[0].key), 'a QKD key is the QKD chunk itself');
  const qd = await saeB.req('POST', DEC, ids(q.body.keys));
  t.equal(qd.body.keys[0].key, q.body.keys[0].key);
  t.same(qd.body.keys[0].key_extension, { provenance: 'qkd', direct_qkd_key: true });
});

t.test('policy never: the spec 503 when QKD key runs short, no key_extension', async (t) => {
  const L = await startLink({ kms: { hybrid: { default: 'never' } } });
  t.teardown(() => L.close());
  const saeA = L.sae('saeA', L.kmsA);
  const r = await saeA.req('POST', ENC, { number: 1 });
  t.equal(r.status, 503);
  t.same(Object.keys(r.body), ['message'], 'the Error object');
  t.match(r.body.message, /fewer than 1 confirmed keys/);
  await fill(L, 1);
  const q = await saeA.req('POST', ENC, { number: 1 });
  t.equal(q.status, 200);
  t.same(Object.keys(q.body.keys[0]).sort(), ['key', 'key_ID'], 'unchanged answers under never');
});

t.test('always: QKD key combined in (hybrid label with ε, bytes not the QKD key); a level gets QKD key alone', async (t) => {
  const L = await startLink({ kms: { hybrid: { 'saeA->saeB': 'always' } } });
  t.teardown(() => L.close());
  const saeA = L.sae('saeA', L.kmsA);
  const saeB = L.sae('saeB', L.kmsB);
  const bytes = await fill(L, 4, { epsilon: 2e-10 });
  const chunks = [0, 1, 2, 3].map((i) => bytes.subarray(i * CHUNK, (i + 1) * CHUNK).toString('base64'));
  const r = await saeA.req('POST', ENC, { number: 2 });
  t.equal(r.status, 200, r.body?.message ?? 'served');
  t.ok(r.body.keys.every((k: { key_extension: unknown }) => JSON.stringify(k.key_extension) ===
    JSON.stringify({ provenance: 'hybrid(qkd+ml-kem-768)', direct_qkd_key: false, qkd_epsilon: 2e-10 })), 'labelled hybrid with the QKD key ε');
  t.ok(r.body.keys.every((k: { key: string }) => !chunks.includes(k.key)), 'the hybrid key is not the QKD key');
  t.equal(L.kmsA.metrics().held, 2, 'two QKD chunks consumed at A');
  const d = await saeB.req('POST', DEC, ids(r.body.keys));
  t.equal(d.status, 200);
  t.same(d.body.keys, r.body.keys, 'same key_IDs, bytes and labels at B');
  await until(() => L.kmsB.metrics().held === 2, 5000, 'QKD keys combined in erased at B');
  // A security level: QKD key alone.
  const lvl = await saeA.req('POST', ENC, { number: 1, extension_optional: [{ qkd_max_epsilon: 1e-9 }] });
  t.equal(lvl.status, 200);
  t.same(lvl.body.keys[0].key_extension, { provenance: 'qkd', direct_qkd_key: true, qkd_epsilon: 2e-10 });
  t.ok(chunks.includes(lvl.body.keys[0].key));
  // No QKD key left (1 chunk, 2 asked): ML-KEM alone, labelled so.
  const mk = await saeA.req('POST', ENC, { number: 2 });
  t.equal(mk.status, 200);
  t.ok(mk.body.keys.every((k: { key_extension: { provenance: string } }) => k.key_extension.provenance === 'ml-kem-768'));
  t.same((await saeB.req('POST', DEC, ids(mk.body.keys))).body.keys, mk.body.keys);
  // The KMS's metrics say what its keys were made of: 2 combined with QKD key, 2 ML-KEM alone.
  t.match(L.kmsA.metrics().hybrid, { exchanges: 2, hybridKeys: 2, mlkemKeys: 2, refused: 0 }, 'hybrid figures in the KMS metrics');
});

t.test('the peer KMS refuses an exchange its own policy does not allow', async (t) => {
  const L = await startLink({ kmsA: { hybrid: { 'saeA->saeB': 'when-short' } }, kmsB: { hybrid: { default: 'never' } } });
  t.teardown(() => L.close());
  const saeA = L.sae('saeA', L.kmsA);
  const r = await saeA.req('POST', ENC, { number: 1 });
  t.equal(r.status, 503);
  t.match(r.body.message, /policy of KMS kmsB for the pair saeA->saeB is never/);
});
