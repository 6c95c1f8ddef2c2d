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

tap.test('v2 Merkle tree: RFC 6962 test vectors, and paths against a slow recursive tree hash', async (t) => {
  const { merkleTree, rootFromPath, leafHash } = await import('../../src/delivery/commitment.ts');
  const { createHash } = await import('node:crypto');
  const h = (...b: Buffer[]) => b.reduce((x, y) => x.update(y), createHash('sha256')).digest();
  // Certificate Transparency's reference vectors (RFC 6962 hashing): leaf data and the roots of the first 1..8 leaves.
  const data = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map((x) => Buffer.from(x, 'hex'));
  const roots = ['6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d', 'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
    'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4', '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
    'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c', '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328'];
  for (let n = 1; n <= 8; n++) {
    const leaves = data.slice(0, n).map((d) => h(Buffer.from([0]), d));
    t.equal(merkleTree(leaves).root.toString('hex'), roots[n - 1], `root of ${n} leaves`);
  }
  // The obvious recursive MTH (RFC 9162 §2.1.1).
  const mth = (l: Buffer[]): Buffer => {
    if (l.length === 1) return l[0];
    let k = 1;
    while (k * 2 < l.length) k *= 2;
    return h(Buffer.from([1]), mth(l.slice(0, k)), mth(l.slice(k)));
  };
  let checked = 0;
  for (let trial = 0; trial < 60; trial++) {
    const n = 1 + ((trial * 37) % 130) + (trial === 59 ? 4096 - 131 : 0);
    const leaves = Array.from({ length: n }, () => leafHash(randomBytes(32)));
    const { root, paths } = merkleTree(leaves);
    if (!root.equals(mth(leaves))) {
      t.fail(`root of ${n} leaves differs from the recursive MTH`);
      return;
    }
    for (let i = 0; i < n; i++) {
      const ok = rootFromPath(leaves[i], i, n, paths[i])?.equals(root) === true;
      const other = (i + 1) % n;
      const wrongIndex = n > 1 && rootFromPath(leaves[i], other, n, paths[i])?.equals(root) === true;
      // (A path can fit more than one tree size with the same root, e.g. leaf 0 of 38 and of 39:
      // the signature binds n, tested below.)
      const wrongLeaf = rootFromPath(leafHash(randomBytes(32)), i, n, paths[i])?.equals(root) === true;
      const shortPath = paths[i].length > 0 && rootFromPath(leaves[i], i, n, paths[i].slice(1))?.equals(root) === true;
      if (!ok || wrongIndex || wrongLeaf || shortPath) {
        t.fail(`n ${n}, leaf ${i}: ok ${ok}, accepted wrong index ${wrongIndex}, leaf ${wrongLeaf}, short path ${shortPath}`);
        return;
      }
      checked++;
    }
  }
  t.ok(checked > 4000, `${checked} inclusion paths checked, tampered ones refused`);
});

tap.test('the native digests, trees and paths equal the TypeScript references', async (t) => {
  const { merkleTree, rootFromPath, leafHash, keyDigestReference } = await import('../../src/delivery/commitment.ts');
  const { native } = await import('../../src/core/native.ts');
  let compared = 0;
  for (let trial = 0; trial < 40; trial++) {
    const n = 1 + ((trial * 53) % 300) + (trial === 39 ? 4096 - 301 : 0);
    const sid = `0b1e4a6c-1234-4abc-8def-${String(trial).padStart(12, '0')}`;
    const keys = Array.from({ length: n }, (_, i) => randomBytes(i % 7 === 3 ? 64 : 32));
    const digests = keys.map((k, i) => keyDigestReference(sid, 1000 * trial + i, k));
    if (!digests.every((d, i) => d.equals(keyDigest(sid, 1000 * trial + i, keys[i])))) return t.fail(`key digests differ, trial ${trial}`);
    const want = merkleTree(digests.map(leafHash));
    const got = native().merkleTreeOfDigests(Buffer.concat(digests));
    if (!got.root.equals(want.root)) return t.fail(`root of ${n} differs`);
    for (let i = 0; i < n; i++) {
      const from = i ? got.ends[i - 1] : 0;
      const path = got.paths.subarray(32 * from, 32 * got.ends[i]);
      if (!path.equals(Buffer.concat(want.paths[i]))) return t.fail(`path ${i} of ${n} differs`);
      const r = native().merkleRootFromPath(digests[i], i, n, path);
      const other = (i + 1) % n;
      const rWrong = native().merkleRootFromPath(digests[i], other, n, path);
      const tsWrong = rootFromPath(leafHash(digests[i]), other, n, want.paths[i]);
      if (!r?.equals(want.root) || String(rWrong?.toString('hex')) !== String(tsWrong?.toString('hex'))) return t.fail(`root from path ${i} of ${n}`);
      compared++;
    }
  }
  t.ok(compared > 9000, `${compared} paths: same bytes, same roots, the same answer for a wrong index`);
  t.throws(() => native().merkleRootFromPath(Buffer.alloc(31), 0, 1, Buffer.alloc(0)), /COMMITMENT_BAD_ARGUMENT/);
  t.throws(() => native().merkleTreeOfDigests(Buffer.alloc(0)), /at least one leaf/);
});

tap.test('v2 commitments: one signature per batch; each key checks out alone; anything altered is refused', async (t) => {
  const { commitBatch } = await import('../../src/delivery/commitment.ts');
  const { createPublicKey } = await import('node:crypto');
  const a = pair();
  const k = signingKey(a.priv);
  const pub = createPublicKey(a.pub);
  const sid = '0b1e4a6c-1234-4abc-8def-0123456789ab';
  const keys = Array.from({ length: 37 }, (_, i) => ({ keyStreamId: sid, index: 100 + i, key: randomBytes(32) }));
  const made = commitBatch(k, 'nodeA', keys);
  t.equal(new Set(made.map((c) => c.split('.')[1])).size, 1, 'one signature for the batch');
  t.ok(made.every((c, i) => checkCommitment(pub, 'nodeA', keyDigest(sid, 100 + i, keys[i].key), c)), 'every key checks out');
  const d5 = keyDigest(sid, 105, keys[5].key);
  t.notOk(checkCommitment(pub, 'nodeB', d5, made[5]), 'another node id');
  t.notOk(checkCommitment(pub, 'nodeA', keyDigest(sid, 106, keys[5].key), made[5]), 'another index');
  t.notOk(checkCommitment(pub, 'nodeA', d5, made[6]), "another key's commitment");
  t.notOk(checkCommitment(pub, 'nodeA', keyDigest(sid, 105, randomBytes(32)), made[5]), 'another key');
  const [v, sig, idx, n, path] = made[5].split('.');
  const flip = (s: string, at: number) => s.slice(0, at) + (s[at] === 'A' ? 'B' : 'A') + s.slice(at + 1);
  t.notOk(checkCommitment(pub, 'nodeA', d5, [v, flip(sig, 3), idx, n, path].join('.')), 'altered signature');
  t.notOk(checkCommitment(pub, 'nodeA', d5, [v, sig, idx, n, flip(path, 10)].join('.')), 'altered path');
  t.notOk(checkCommitment(pub, 'nodeA', d5, [v, sig, '6', n, path].join('.')), 'another leaf index');
  t.notOk(checkCommitment(pub, 'nodeA', d5, [v, sig, idx, '38', path].join('.')), 'another batch size');
  t.notOk(checkCommitment(pub, 'nodeA', d5, [v, sig, idx, n, path + path.slice(0, 44)].join('.')), 'a path too long');
  // A batch signed by another key, with the same shape: refused (the check cache is per key and root).
  const other = commitBatch(signingKey(pair().priv), 'nodeA', keys);
  t.notOk(checkCommitment(pub, 'nodeA', d5, other[5]), "another node's signing key");
  t.ok(checkCommitment(pub, 'nodeA', d5, made[5]), 'the genuine one still checks out');
  t.ok(checkCommitment(pub, 'nodeA', d5, commit(k, 'nodeA', sid, 105, keys[5].key)), 'v1 commitments are still accepted');
});
