/**
 * Transport authentication of the classical channel: ZeroMQ CURVE (RFC 26 CurveZMQ over ZMTP 3,
 * Curve25519 + XSalsa20-Poly1305) with pinned keys on both ends.
 *
 * Why, on top of the Wegman–Carter MAC: the MAC makes forgeries fail, but a DEALER socket hands
 * its messages to whichever peer is connected, and verifying (then refusing, then telling the
 * peer) spends pad bits. Without transport authentication anyone who reaches the bound port
 * receives a share of the replies and can make the node abort blocks and burn key with junk.
 * With CURVE:
 * - the connecting side pins the binding side's public key (`curveServerKey`): it talks to no
 *   one else;
 * - the binding side runs a ZAP handler (RFC 27, `inproc://zeromq.zap.01` in the socket's own
 *   ZeroMQ context) that accepts exactly the pinned peer public key and denies everything else
 *   (other CURVE keys; plain ZMTP clients fail the mechanism handshake before ZAP), and
 *   `zapEnforceDomain` makes the socket fail closed if the handler is missing. A refused
 *   connection never becomes a pipe: no message of it reaches the application, none of ours
 *   goes to it, no pad is spent on it.
 *
 * Keys are Z85 strings (40 characters, 32 bytes). A node's secret key lives in a file (mode 0600,
 * in a 0700 folder); its public key is derived from it (X25519) and written beside it as
 * `<file>.pub` for the operator to hand to the peer's configuration.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Context, Reply, curveKeyPair } from 'zeromq';
import { ConfigError } from '../errors.ts';
import { receiveOpen } from '../stream/zmq-receive.ts';

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';
const Z85_KEY = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

/** One end's CURVE credentials: its own key pair and the one peer key it accepts. */
export interface CurveKeys {
  /** This end's public key (Z85). */
  publicKey: string;
  /** This end's secret key (Z85). Never logged. */
  secretKey: string;
  /** The peer's public key (Z85): the only key accepted (binding side) or trusted (connecting side). */
  peerPublicKey: string;
}

export function isZ85Key(s: unknown): s is string {
  return typeof s === 'string' && Z85_KEY.test(s);
}

/** Z85 (ZeroMQ RFC 32) to bytes. The caller checked the format. */
export function z85Decode(s: string): Buffer {
  const out = Buffer.alloc((s.length / 5) * 4);
  for (let i = 0, j = 0; i < s.length; i += 5, j += 4) {
    let v = 0;
    for (let k = 0; k < 5; k++) v = v * 85 + Z85.indexOf(s[i + k]);
    out.writeUInt32BE(v >>> 0, j);
  }
  return out;
}

export function z85Encode(b: Uint8Array): string {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  let s = '';
  for (let i = 0; i < buf.length; i += 4) {
    let v = buf.readUInt32BE(i);
    const c: string[] = [];
    for (let k = 0; k < 5; k++) {
      c.push(Z85[v % 85]);
      v = Math.floor(v / 85);
    }
    s += c.reverse().join('');
  }
  return s;
}

/** The Curve25519 public key of a secret key (both Z85). */
export function curvePublicOf(secretKey: string): string {
  const sk = z85Decode(secretKey);
  // PKCS#8 wrapping of a raw X25519 private key (RFC 8410): fixed 16-byte prefix + 32 bytes.
  const der = Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), sk]);
  try {
    const jwk = createPublicKey(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })).export({ format: 'jwk' });
    return z85Encode(Buffer.from(jwk.x as string, 'base64url'));
  } finally {
    sk.fill(0);
    der.fill(0);
  }
}

/**
 * This node's key pair from `file` (its secret key, Z85), created there if missing (mode 0600,
 * folder 0700) with the public key written to `<file>.pub`. Throws ConfigError
 * 'CHANNEL_CURVE_KEY' for a malformed file.
 */
export function loadOrCreateKeyPair(file: string): { publicKey: string; secretKey: string; created: boolean } {
  let created = false;
  if (!existsSync(file)) {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const kp = curveKeyPair();
    writeFileSync(file, `${kp.secretKey}\n`, { mode: 0o600, flag: 'wx' });
    created = true;
  }
  chmodSync(file, 0o600);
  const secretKey = readFileSync(file, 'utf8').trim();
  if (!isZ85Key(secretKey)) {
    throw new ConfigError('CHANNEL_CURVE_KEY', `${file} is not a CURVE secret key (one line of 40 Z85 characters): move it aside and start again to generate a new key pair, then give the new public key (${file}.pub) to the peer node's configuration.`);
  }
  const publicKey = curvePublicOf(secretKey);
  const pub = `${file}.pub`;
  if (!existsSync(pub) || readFileSync(pub, 'utf8').trim() !== publicKey) writeFileSync(pub, `${publicKey}\n`, { mode: 0o644 });
  return { publicKey, secretKey, created };
}

/** Socket options for one end: the binding end is the CURVE server. */
export function curveSocketOptions(keys: CurveKeys, server: boolean): Record<string, unknown> {
  return server
    ? { curveServer: true, curveSecretKey: keys.secretKey, zapDomain: 'qkd-channel', zapEnforceDomain: true }
    : { curveServerKey: keys.peerPublicKey, curvePublicKey: keys.publicKey, curveSecretKey: keys.secretKey };
}

export interface ZapHandler {
  readonly context: Context;
  readonly stats: { accepted: number; denied: number };
  close(): void;
}

/**
 * Starts the ZAP handler of a fresh ZeroMQ context: accepts CURVE clients with `allowedKey`
 * only. Each binding channel gets its own context (ZeroMQ allows one handler per context), and
 * its socket must be created in `context`.
 */
export async function startZapHandler(allowedKey: string): Promise<ZapHandler> {
  const context = new Context();
  const allowed = z85Decode(allowedKey);
  const sock = new Reply({ context, linger: 0 });
  await sock.bind('inproc://zeromq.zap.01');
  const stats = { accepted: 0, denied: 0 };
  void (async () => {
    for (;;) {
      let msg: Buffer[];
      try {
        // A spurious EAGAIN must not end the handler: every later CURVE handshake would wait
        // for a ZAP reply forever.
        msg = await receiveOpen(sock);
      } catch {
        return; // closed
      }
      // RFC 27 request: version, request id, domain, address, identity, mechanism, credentials...
      const [version, requestId, , , , mechanism, clientKey] = msg;
      const ok = version?.toString() === '1.0' && mechanism?.toString() === 'CURVE' && clientKey?.length === 32 && clientKey.equals(allowed);
      if (ok) stats.accepted++;
      else stats.denied++;
      try {
        await sock.send([version ?? '1.0', requestId ?? '', ok ? '200' : '400', ok ? 'OK' : 'key not pinned', ok ? 'peer' : '', '']);
      } catch {
        return;
      }
    }
  })();
  return { context, stats, close: () => sock.close() };
}
