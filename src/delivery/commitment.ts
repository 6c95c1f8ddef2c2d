/**
 * Key commitments: proof, checkable by both KMSs, that both *nodes* produced a key — not only
 * that both KMSs received the same bytes (issue 14: whoever holds the nodes' TLS identities could
 * push one chosen key into both KMSs, and digest confirmation between the KMSs would pass it).
 *
 * Each node holds an Ed25519 signing key of its own (`commitKey`, kept apart from its TLS key; the
 * KMSs hold only the public keys). With every chunk it pushes a signature over
 *
 *   "qkd-node key commitment v1" ‖ 0 ‖ node_id ‖ 0 ‖ digest
 *   digest = SHA-256("qkd-store/v1" ‖ 0 ‖ key_stream_id ‖ 0 ‖ index_be32 ‖ key)   (the store's digest)
 *
 * in the key-material metadata (`commitment`, base64). Its KMS verifies it before storing (and
 * refuses the push otherwise) and keeps it with the key's provenance. When a key is released the
 * two KMSs exchange their nodes' commitments with the digests: each verifies the *peer node's*
 * signature over the digest of its *own* copy. A key is released only if both nodes signed the
 * same digest. Forging a release needs both nodes' signing keys, not their TLS identities; a
 * compromised KMS can neither forge a node's commitment nor learn the signing keys.
 *
 * v2 (what the node sends): one signature per batch of chunks instead of one per chunk (a
 * signature and its check cost 22 + 63 µs, ~5 % of a 25 km link's CPU at ~700 chunks/s). The
 * node signs the root of a Merkle tree over the batch's digests (RFC 9162 §2.1: leaf hash
 * SHA-256(0x00 ‖ digest), interior SHA-256(0x01 ‖ left ‖ right), split at the largest power of two
 * below n):
 *
 *   "qkd-node key commitment v2" ‖ 0 ‖ node_id ‖ 0 ‖ root ‖ n_be32
 *
 * and each chunk's commitment is `v2.<signature>.<leaf index>.<n>.<inclusion path>` (base64). A
 * verifier recomputes the root from its own digest and the path (RFC 9162 §2.1.3.2) and checks
 * the signature, once per (key, node, root, n, signature): later chunks of the batch cost a dozen
 * hashes. Forging one needs a signature forgery or a SHA-256 second preimage, as for v1. Both
 * forms are accepted. The digests, trees and paths are hashed natively (native/store/src/merkle.rs:
 * node's createHash cost ~1 µs a hash, a dozen per key pushed); `merkleTree` and `rootFromPath`
 * below are their TypeScript references.
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { ConfigError } from '../errors.ts';
import { callNative } from '../core/native-call.ts';
import { native } from '../core/native.ts';

/** The store's digest of a key (same as native/store `digest`). */
export function keyDigest(keyStreamId: string, index: number, key: Uint8Array): Buffer {
  return callNative(() => native().commitmentKeyDigest(keyStreamId, index >>> 0, key));
}

/** The slow reference of `keyDigest`. */
export function keyDigestReference(keyStreamId: string, index: number, key: Uint8Array): Buffer {
  const idx = Buffer.alloc(4);
  idx.writeUInt32BE(index >>> 0);
  return createHash('sha256').update('qkd-store/v1\0').update(keyStreamId).update('\0').update(idx).update(key).digest();
}

function message(nodeId: string, digest: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`qkd-node key commitment v1\0${nodeId}\0`), digest]);
}

export function signingKey(pem: string | Buffer): KeyObject {
  const k = createPrivateKey(pem);
  if (k.asymmetricKeyType !== 'ed25519') {
    throw new ConfigError('DELIVERY_COMMIT_KEY', `the commitment key must be an Ed25519 private key, got ${k.asymmetricKeyType}; ` +
      'make one with: openssl genpkey -algorithm ed25519');
  }
  return k;
}

export function verifyingKey(pem: string | Buffer, whose: string): KeyObject {
  const k = createPublicKey(pem);
  if (k.asymmetricKeyType !== 'ed25519') {
    throw new ConfigError('KMS_COMMIT_KEY', `${whose}'s commitment key must be an Ed25519 public key, got ${k.asymmetricKeyType}`);
  }
  return k;
}

/** The node's v1 commitment (base64) to `key` under (stream, index): one signature per key. */
export function commit(k: KeyObject, nodeId: string, keyStreamId: string, index: number, key: Uint8Array): string {
  return sign(null, message(nodeId, keyDigest(keyStreamId, index, key)), k).toString('base64');
}

/** True iff `commitment` (v1 or v2) is `nodeId`'s commitment to the key with this store digest (hex or bytes). */
export function checkCommitment(k: KeyObject, nodeId: string, digest: string | Buffer, commitment: unknown): boolean {
  if (typeof commitment !== 'string') return false;
  const d = typeof digest === 'string' ? Buffer.from(digest, 'hex') : digest;
  if (d.length !== 32) return false;
  if (commitment.startsWith(V2_PREFIX)) return checkV2(k, nodeId, d, commitment);
  if (!/^[A-Za-z0-9+/]{86}==$/.test(commitment)) return false;
  return verify(null, message(nodeId, d), k, Buffer.from(commitment, 'base64'));
}

const V2_PREFIX = 'v2.';
const V2 = /^v2\.([A-Za-z0-9+/]{86}==)\.(\d{1,10})\.(\d{1,10})\.((?:[A-Za-z0-9+/]{43}=)*)$/;

const sha = (...parts: Buffer[]): Buffer => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
const LEAF = Buffer.from([0]);
const NODE = Buffer.from([1]);
export const leafHash = (digest: Buffer): Buffer => sha(LEAF, digest);
const nodeHash = (l: Buffer, r: Buffer): Buffer => sha(NODE, l, r);

/** Largest power of two strictly below n (n >= 2). */
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/**
 * The Merkle tree hash of `leaves` (RFC 9162 MTH over leaf hashes) and each leaf's inclusion path
 * (sibling hashes from the leaf up).
 */
export function merkleTree(leaves: Buffer[]): { root: Buffer; paths: Buffer[][] } {
  const paths: Buffer[][] = leaves.map(() => []);
  const build = (lo: number, hi: number): Buffer => {
    if (hi - lo === 1) return leaves[lo];
    const k = lo + split(hi - lo);
    const l = build(lo, k);
    const r = build(k, hi);
    for (let i = lo; i < k; i++) paths[i].push(r);
    for (let i = k; i < hi; i++) paths[i].push(l);
    return nodeHash(l, r);
  };
  if (!leaves.length) throw new RangeError('a Merkle tree needs at least one leaf');
  return { root: build(0, leaves.length), paths };
}

/** The root an inclusion path gives for `leaf` at `index` of `size` (RFC 9162 §2.1.3.2), or undefined if the path cannot fit. */
export function rootFromPath(leaf: Buffer, index: number, size: number, path: Buffer[]): Buffer | undefined {
  if (!(index < size)) return undefined;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of path) {
    if (sn === 0) return undefined;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else r = nodeHash(r, p);
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : undefined;
}

function messageV2(nodeId: string, root: Buffer, size: number): Buffer {
  const n = Buffer.alloc(4);
  n.writeUInt32BE(size);
  return Buffer.concat([Buffer.from(`qkd-node key commitment v2\0${nodeId}\0`), root, n]);
}

/** One v2 commitment per key (stream, index, key), under one signature for the batch (at most 2^16 keys). */
export function commitBatch(k: KeyObject, nodeId: string, keys: { keyStreamId: string; index: number; key: Uint8Array }[]): string[] {
  if (keys.length > 65_536) throw new RangeError('at most 65 536 keys per commitment batch');
  if (!keys.length) return [];
  const digests = Buffer.alloc(32 * keys.length);
  keys.forEach((c, i) => digests.set(keyDigest(c.keyStreamId, c.index, c.key), 32 * i));
  const { root, paths, ends } = callNative(() => native().merkleTreeOfDigests(digests));
  const sig = sign(null, messageV2(nodeId, root, keys.length), k).toString('base64');
  return ends.map((end, i) => {
    let path = '';
    for (let h = i ? ends[i - 1] : 0; h < end; h++) path += paths.toString('base64', 32 * h, 32 * h + 32);
    return `${V2_PREFIX}${sig}.${i}.${keys.length}.${path}`;
  });
}

/** Signatures already checked, per verifying key: `node\0root\0n\0sig` (bounded; oldest dropped first). */
const verified = new WeakMap<KeyObject, Set<string>>();
const VERIFIED_MAX = 1024;

function checkV2(k: KeyObject, nodeId: string, d: Buffer, commitment: string): boolean {
  const m = V2.exec(commitment);
  if (!m) return false;
  const [, sig, idx, size, path] = m;
  const index = Number(idx);
  const n = Number(size);
  if (n < 1 || n > 65_536 || path.length > 44 * 16) return false;
  const siblings = Buffer.alloc((path.length / 44) * 32);
  for (let i = 0; i < path.length; i += 44) siblings.write(path.slice(i, i + 44), (i / 44) * 32, 32, 'base64');
  if (index >= n) return false;
  const root = callNative(() => native().merkleRootFromPath(d, index, n, siblings));
  if (!root) return false;
  const memo = `${nodeId}\0${root.toString('hex')}\0${n}\0${sig}`;
  let seen = verified.get(k);
  if (seen?.has(memo)) return true;
  if (!verify(null, messageV2(nodeId, root, n), k, Buffer.from(sig, 'base64'))) return false;
  if (!seen) verified.set(k, (seen = new Set()));
  if (seen.size >= VERIFIED_MAX) seen.delete(seen.values().next().value as string);
  seen.add(memo);
  return true;
}
