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
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { ConfigError } from '../errors.ts';

/** The store's digest of a key (same as native/store `digest`). */
export function keyDigest(keyStreamId: string, index: number, key: Uint8Array): Buffer {
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

/** The node's commitment (base64) to `key` under (stream, index). */
export function commit(k: KeyObject, nodeId: string, keyStreamId: string, index: number, key: Uint8Array): string {
  return sign(null, message(nodeId, keyDigest(keyStreamId, index, key)), k).toString('base64');
}

/** True iff `commitment` is `nodeId`'s signature over the key with this store digest (hex or bytes). */
export function checkCommitment(k: KeyObject, nodeId: string, digest: string | Buffer, commitment: unknown): boolean {
  if (typeof commitment !== 'string' || !/^[A-Za-z0-9+/]{86}==$/.test(commitment)) return false;
  const d = typeof digest === 'string' ? Buffer.from(digest, 'hex') : digest;
  return verify(null, message(nodeId, d), k, Buffer.from(commitment, 'base64'));
}
