// Key commitments (src/delivery/commitment.ts): a key is released only if both nodes signed its
// digest. The TypeScript digest is checked against the native store's; an impostor with a node's
// TLS identity but not its commitment key cannot get a chosen key stored, and a peer node whose
// commitment does not verify stops the release (nothing handed out).
import tap from 'tap';
import { backendTap } from '../../src/testkit/postgres.ts';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkCommitment, commit, keyDigest, signingKey } from '../../src/delivery/commitment.ts';
import { KeyStore } from '../../src/delivery/store.ts';
import { JsonClient } from '../../src/delivery/http.ts';
import { startLink, until } from '../../src/testkit/delivery.ts';

// Every test runs on SQLite and on PostgreSQL (`[postgres]`: a named skip without the server binaries).
const t = backendTap(tap);

const pair = () => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { priv: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    pub: publicKey.export({ type: 'spki', format: 'pem' }) as string };
};

t.test('the commitment digest is the native store digest; a signature binds node, stream, index and key', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-commit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = KeyStore.open(join(dir, 'k.db'), randomBytes(32), 100);
  t.teardown(() => store.close());
  const sid = '0b1e4a6c-1234-4abc-8def-0123456789ab';
  for (let i = 0; i < 20; i++) {
    const key = randomBytes(1 + (i * 7) % 64);
    await store.put(sid, i * 1000 + 3, `k${i}`, key, '{}', 0, 1e12);
    const c = store.candidates(sid, 100, 1, false).find((x) => x.index === i * 1000 + 3)!;
    t.equal(c.digest, keyDigest(sid, i * 1000 + 3, key).toString('hex'), `digest ${i} agrees with native`);
  }
  const a = pair();
  const k = signingKey(a.priv);
  const key = randomBytes(32);
  const sig = commit(k, 'nodeA', sid, 5, key);
  const pub = (await import('node:crypto')).createPublicKey(a.pub);
  t.ok(checkCommitment(pub, 'nodeA', keyDigest(sid, 5, key), sig));
  t.notOk(checkCommitment(pub, 'nodeB', keyDigest(sid, 5, key), sig), 'another node id');
  t.notOk(checkCommitment(pub, 'nodeA', keyDigest(sid, 6, key), sig), 'another index');
  t.notOk(checkCommitment(pub, 'nodeA', keyDigest(sid, 5, randomBytes(32)), sig), 'another key');
  t.notOk(checkCommitment(pub, 'nodeA', keyDigest(sid, 5, key), sig.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'))), 'altered');
  t.notOk(checkCommitment(pub, 'nodeA', keyDigest(sid, 5, key), undefined), 'missing');
  t.throws(() => signingKey(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' })),
    { code: 'DELIVERY_COMMIT_KEY' });
});

t.test('with commitments both nodes must have produced a key; an impostor node identity cannot inject one', async (t) => {
  const A = pair();
  const B = pair();
  const L = await startLink({ nodeA: { commitKey: A.priv }, nodeB: { commitKey: B.priv },
    kmsA: { commitments: { node: A.pub, peerNode: B.pub } }, kmsB: { commitments: { node: B.pub, peerNode: A.pub } } });
  t.teardown(() => L.close());
  const alarms: string[] = [];
  L.kmsA.on('alarm', (a) => alarms.push(a.code));
  const bytes = randomBytes(64);
  await Promise.all([L.nodeA.offer(bytes, { epsilon: 1e-10 }), L.nodeB.offer(bytes, { epsilon: 1e-10 })]);
  await until(() => L.kmsA.metrics().acked === 2 && L.kmsB.metrics().acked === 2, 10_000, 'acks');
  const saeA = L.sae('saeA', L.kmsA);
  const enc = await saeA.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 1, size: 128, additional_slave_SAE_IDs: ['saeC'] });
  t.equal(enc.status, 200, 'committed by both nodes: released (reformatted, multicast)');
  const dec = await L.sae('saeB', L.kmsB).req('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: enc.body.keys[0].key_ID }] });
  t.same(dec.body.keys[0].key, enc.body.keys[0].key);
  // An impostor with node A's TLS identity (the issue 14 attack) pushes a chosen key.
  const impostor = new JsonClient({ url: L.kmsA.url, id: 'kmsA' }, { tls: L.pki.tls('nodeA') });
  t.teardown(() => impostor.close());
  const chosen = Buffer.alloc(32, 7);
  const sid = L.keyStreamId;
  const forged = commit(signingKey(pair().priv), 'nodeA', sid, 9, chosen);
  for (const commitment of [undefined, forged]) {
    const r = await impostor.request('POST', '/api/v1/qkd/etsi004/key-material', { status: 0, index: 9,
      key_buffer: chosen.toString('base64'), metadata: { size: 400, buffer: { key_stream_id: sid, commitment } } });
    t.equal(r.status, 400, `refused (${commitment ? 'forged' : 'no'} commitment)`);
  }
  t.equal(L.kmsA.metrics().held, 1, 'nothing stored');
  t.ok(alarms.includes('NODE_COMMITMENT_INVALID'));
});

t.test('a peer node commitment that does not verify stops the release', async (t) => {
  const A = pair();
  const B = pair();
  const wrongB = pair();
  // KMS A holds the wrong public key for node B: every release it starts or confirms is refused.
  const L = await startLink({ nodeA: { commitKey: A.priv }, nodeB: { commitKey: B.priv },
    kmsA: { commitments: { node: A.pub, peerNode: wrongB.pub } }, kmsB: { commitments: { node: B.pub, peerNode: A.pub } } });
  t.teardown(() => L.close());
  const alarms: string[] = [];
  L.kmsA.on('alarm', (a) => alarms.push(a.code));
  const bytes = randomBytes(64);
  await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
  await until(() => L.kmsA.metrics().acked === 2 && L.kmsB.metrics().acked === 2, 10_000, 'acks');
  const fromA = await L.sae('saeA', L.kmsA).req('POST', '/api/v1/keys/saeB/enc_keys', {});
  t.equal(fromA.status, 503, 'A does not hand out');
  const fromB = await L.sae('saeB', L.kmsB).req('POST', '/api/v1/keys/saeA/enc_keys', {});
  t.equal(fromB.status, 503, 'A does not confirm B\'s release either');
  t.ok(alarms.includes('PEER_COMMITMENT_INVALID'));
  t.equal(L.kmsA.metrics().delivered + L.kmsB.metrics().delivered, 0, 'no key handed out anywhere');
});
