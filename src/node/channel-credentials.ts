/**
 * A node's credentials for the classical channel, and how `qkd run --emulated` provisions them
 * for the pair it plays:
 *
 * - the pre-shared authentication secret (`channel.pskFile`): imported once, then consumed
 *   (src/core/auth.ts); the channel state that replaces it is wrapped at rest under a key derived
 *   from the node's at-rest key (`delivery.spoolKeyFile`, HKDF-SHA256 with its own label, so the
 *   spool and the channel state never share a key);
 * - the CURVE key pair of the transport (`channel.curveKeyFile`, created at first start, public
 *   key in `<file>.pub`) and the peer's public key (`channel.peerPublicKey`), src/channel/curve.ts.
 */
import { hkdfSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ConfigError } from '../errors.ts';
import { shred } from '../core/auth.ts';
import { isZ85Key, loadOrCreateKeyPair, type CurveKeys } from '../channel/curve.ts';
import type { NodeRunConfig } from './config.ts';

type Role = 'alice' | 'bob';

/** Folder of a node's channel state (auth.state, psk-register.json, ledger.json). */
export function channelStateDir(spoolDir: string, role: Role): string {
  return join(dirname(spoolDir), `channel-${role}`);
}

/** The 32-byte key wrapping the channel state at rest, derived from the node's at-rest key file. */
export function channelStateKey(atRestKeyFile: string): Buffer {
  return channelStateKeyFrom(readFileSync(atRestKeyFile), atRestKeyFile);
}

/**
 * The same from the at-rest key's bytes (plain, or unsealed in the node's token: custody.ts);
 * wipes `ikm`.
 */
export function channelStateKeyFrom(ikm: Buffer, where = "the node's at-rest key"): Buffer {
  try {
    if (ikm.length < 32) {
      throw new ConfigError('CHANNEL_STATE_KEY', `${where} holds ${ikm.length} bytes; the node's at-rest key must be 32 random bytes (\`openssl rand 32 > FILE\`).`);
    }
    return Buffer.from(hkdfSync('sha256', ikm, Buffer.alloc(0), 'qkd-node/channel-state/v1', 32));
  } finally {
    ikm.fill(0);
  }
}

/**
 * This node's CURVE credentials from its configuration: the key pair from `channel.curveKeyFile`
 * (created there if missing) and the pinned `channel.peerPublicKey`. Clear ConfigErrors, naming
 * this node's public key so the operator can hand it to the peer.
 */
export function channelKeys(cfg: Pick<NodeRunConfig, 'role' | 'channel'>): CurveKeys {
  const file = cfg.channel.curveKeyFile;
  if (typeof file !== 'string' || !file) {
    throw new ConfigError('CHANNEL_CURVE_KEY', `channel.curveKeyFile is missing from the ${cfg.role} node's configuration: name a file in its state folder (e.g. "secrets/channel.key"); the node creates its CURVE key pair there at first start (docs/run.md).`);
  }
  const { publicKey, secretKey } = loadOrCreateKeyPair(file);
  const peer = cfg.channel.peerPublicKey;
  if (peer === undefined || peer === '') {
    throw new ConfigError('CHANNEL_PEER_KEY', `channel.peerPublicKey is missing: put the peer node's CURVE public key (the contents of its ${'<curveKeyFile>'}.pub) into this node's configuration. This ${cfg.role} node's public key, for the peer's configuration, is ${publicKey} (${file}.pub).`);
  }
  if (!isZ85Key(peer)) {
    throw new ConfigError('CHANNEL_PEER_KEY', `channel.peerPublicKey is not a CURVE public key (40 Z85 characters, got ${String(peer).length} characters): copy it again from the peer's <curveKeyFile>.pub.`);
  }
  if (peer === publicKey) {
    throw new ConfigError('CHANNEL_PEER_KEY', `channel.peerPublicKey is this node's own public key: it must be the peer node's (its <curveKeyFile>.pub).`);
  }
  return { publicKey, secretKey, peerPublicKey: peer };
}

/** What `qkd run --emulated` hands to its two nodes for the channel. */
export interface EmulatedChannel {
  pskFile: Record<Role, string>;
  curve: Record<Role, { keyFile: string; publicKey: string }>;
}

/**
 * Provisions the channel credentials of an emulated pair in `dir` (the run's state folder).
 * Both nodes' CURVE key pairs are created once and kept. The supervisor plays both ends, so it
 * can re-key the link: when both nodes still hold their channel state they resume from it (pads
 * replenished by earlier runs are kept) and no secret is written; otherwise (first run, or one
 * side's state lost) both states are retired and a fresh pre-shared secret is written for each
 * node, which it consumes at import. A secret left by an older version (one shared
 * `secrets/channel-psk.bin`, never consumed) is shredded: starting from it would reuse pads.
 * `pskBytes`: 16 bytes of hash key, then 128-bit pads (32 bytes per round trip).
 */
export function provisionEmulatedChannel(dir: string, pskBytes = 512 * 1024): EmulatedChannel & { rekeyed: boolean } {
  const secrets = join(dir, 'secrets');
  mkdirSync(secrets, { recursive: true, mode: 0o700 });
  const legacy = join(secrets, 'channel-psk.bin');
  if (existsSync(legacy)) shred(legacy);
  const roles: Role[] = ['alice', 'bob'];
  const pskFile = { alice: join(secrets, 'channel-psk-alice.bin'), bob: join(secrets, 'channel-psk-bob.bin') };
  const curve = {} as EmulatedChannel['curve'];
  for (const r of roles) {
    const keyFile = join(secrets, `channel-${r}.key`);
    curve[r] = { keyFile, publicKey: loadOrCreateKeyPair(keyFile).publicKey };
  }
  const state = (r: Role) => join(dir, `channel-${r}`, 'auth.state');
  const resume = roles.every((r) => existsSync(state(r)));
  // Whatever secret files lie here were never imported by a node that is still running on them
  // (a node consumes its file at import): never leave one behind.
  for (const r of roles) if (existsSync(pskFile[r])) shred(pskFile[r]);
  if (!resume) {
    for (const r of roles) if (existsSync(state(r))) shred(state(r));
    const psk = randomBytes(pskBytes);
    try {
      for (const r of roles) writeFileSync(pskFile[r], psk, { mode: 0o600 });
    } finally {
      psk.fill(0);
    }
  }
  return { pskFile, curve, rekeyed: !resume };
}
