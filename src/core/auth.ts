/**
 * Typed facade over the native Wegman–Carter authenticator (native/auth, adapter
 * native/node/src/auth.rs). Key bytes go in (pre-shared secret, replenished key) and never come
 * out: JS sees tags (not secret) and counters only.
 *
 * Concurrency: one Authenticator per channel end, used from the JS thread only; sign and verify
 * are synchronous (GB/s hash, messages <= 16 MiB). Errors: SecurityError for every
 * authentication failure (codes AUTH_TAG_MISMATCH, AUTH_REPLAY, AUTH_TOO_OLD, AUTH_KEY_EXHAUSTED,
 * AUTH_SEQ_REUSE), ConfigError for bad key/state files (AUTH_BAD_KEY, AUTH_IO), SecurityError for
 * a start that would reuse pads (AUTH_STATE_LOST, AUTH_PSK_CONSUMED, AUTH_PSK_UNEXPECTED).
 *
 * Custody (`Authenticator.open`): the pre-shared secret file is consumed when imported (overwritten
 * with zeros, synced, deleted), and its fingerprint goes into an import register beside the state
 * file before the state is written. The register outlives the state: with the state gone, a node
 * that has imported a secret refuses to start (AUTH_STATE_LOST) and refuses the same secret again
 * (AUTH_PSK_CONSUMED), because any of its pads may already have been used (the peer's position is
 * unknown) and restarting from it would reuse them with the same hash key. The state file itself
 * is wrapped at rest (AES-256-GCM, native/auth) under a 32-byte state key from the caller.
 */
import { createHash } from 'node:crypto';
import { existsSync, openSync, readFileSync, writeSync, closeSync, fsyncSync, unlinkSync, statSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { native } from './native.ts';
import { ConfigError, QkdError, SecurityError } from '../errors.ts';

export type Role = 'alice' | 'bob';
/** Direction number of the messages a role sends: 0 Alice->Bob, 1 Bob->Alice. */
export const directionOf = (role: Role): 0 | 1 => (role === 'alice' ? 0 : 1);

export interface AuthStats {
  direction: number;
  signed: number;
  verified: number;
  rejected: number;
  /** Pad bits used so far (128 per message signed or verified). */
  usedBits: number;
  /** Pad bits held and not yet used or skipped. */
  availableBits: number;
  replenishedBits: number;
  nextSendSeq: number;
  /** -1 before the first accepted message. */
  lastRecvSeq: number;
  /** Messages this side can still sign before the pool runs dry. */
  messagesLeft: number;
  tagBits: number;
}

type NativeAuth = InstanceType<ReturnType<typeof native>['WcAuthenticator']>;

const SECURITY = new Set(['AUTH_TAG_MISMATCH', 'AUTH_REPLAY', 'AUTH_TOO_OLD', 'AUTH_KEY_EXHAUSTED', 'AUTH_SEQ_REUSE', 'AUTH_TOO_LARGE']);

function mapErr(err: unknown): never {
  const msg = err instanceof Error ? err.message : String(err);
  const m = /^([A-Z_]+): (.*)$/s.exec(msg);
  const code = m ? m[1] : 'AUTH_INTERNAL';
  const text = m ? m[2] : msg;
  if (SECURITY.has(code)) throw new SecurityError(code, text, { cause: err });
  if (code === 'AUTH_BAD_KEY' || code === 'AUTH_IO') throw new ConfigError(code, text, { cause: err });
  throw new QkdError(code, text, { cause: err });
}

function wrap<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    mapErr(e);
  }
}

/** Overwrites a file with zeros, syncs and removes it (the pre-shared secret once imported). */
export function shred(path: string): void {
  const size = statSync(path).size;
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, Buffer.alloc(size), 0, size, 0);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  unlinkSync(path);
}

/** One imported pre-shared secret: its fingerprint (never the secret), for which role, when. */
export interface PskImport {
  fingerprint: string;
  role: Role;
  bytes: number;
  importedAt: string;
}

/**
 * SHA-256 over a domain label and the whole secret (>= 48 random bytes): recognises a secret
 * presented again without keeping any of it.
 */
export function pskFingerprint(psk: Uint8Array): string {
  return createHash('sha256').update('qkd-node/psk-fingerprint/v1\0').update(psk).digest('hex');
}

/** The import register beside a state file (default `<dir of statePath>/psk-register.json`). */
export function readPskRegister(path: string): PskImport[] {
  if (!existsSync(path)) return [];
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as { version: number; imported: PskImport[] };
    if (v.version !== 1 || !Array.isArray(v.imported)) throw new Error('unknown layout');
    return v.imported;
  } catch (cause) {
    throw new ConfigError('AUTH_REGISTER', `The pre-shared secret register ${path} is unreadable (${(cause as Error).message}): restore it from backup; without it this node cannot tell which secrets it has already used.`, { cause });
  }
}

function writePskRegister(path: string, imported: PskImport[]): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, JSON.stringify({ version: 1, note: 'pre-shared secrets this node has imported (fingerprints). Never delete: it stops a lost channel state from reusing one-time pads.', imported }, null, 2));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const d = openSync(dirname(path), 'r');
  try {
    fsyncSync(d);
  } finally {
    closeSync(d);
  }
}

/** How `Authenticator.open` got its state. */
export type AuthOrigin = 'state' | 'psk';

export class Authenticator {
  readonly #n: NativeAuth;
  /** 'psk': a pre-shared secret was imported by this open; 'state': the state file was reopened. */
  origin: AuthOrigin = 'psk';
  private constructor(n: NativeAuth) {
    this.#n = n;
  }

  /** From pre-shared secret bytes (>= 48: 16 bytes hash key, then pads). Zero `psk` afterwards. */
  static fromPsk(psk: Uint8Array, role: Role): Authenticator {
    return new Authenticator(wrap(() => native().WcAuthenticator.fromPsk(psk, directionOf(role))));
  }

  /**
   * Reopens a state file written earlier, unwrapping it with `stateKey` (32 bytes); sequence
   * numbers resume past any pad possibly used. A legacy unwrapped file is rewritten wrapped.
   */
  static load(statePath: string, stateKey: Uint8Array, role?: Role): Authenticator {
    const a = new Authenticator(wrap(() => native().WcAuthenticator.load(statePath, stateKey)));
    a.origin = 'state';
    if (role && a.stats().direction !== directionOf(role)) {
      throw new ConfigError('AUTH_BAD_KEY', `Authentication state ${statePath} belongs to the other role (direction ${a.stats().direction}); configure the ${role} node with its own state file.`);
    }
    return a;
  }

  /**
   * The durable way to open one end (see the module comment for the custody rules):
   * - state file present: reopened; a pre-shared secret file still lying at `pskPath` that this
   *   node already imported is shredded (it is useless and dangerous); an unknown one is refused
   *   (AUTH_PSK_UNEXPECTED: re-keying means retiring the state on both nodes first);
   * - no state file: the secret at `pskPath` is imported if it was never imported here (else
   *   AUTH_PSK_CONSUMED), registered, the state written, and the file shredded (unless
   *   `keepPsk`, for tests whose two ends share one file); no secret but a register entry:
   *   AUTH_STATE_LOST; neither: AUTH_NO_KEY.
   * `stateKey`: 32 bytes wrapping the state file at rest. `registerPath`: default
   * `psk-register.json` beside the state file.
   */
  static open(opts: { role: Role; statePath: string; stateKey: Uint8Array; pskPath?: string; keepPsk?: boolean; registerPath?: string }): Authenticator {
    const registerPath = opts.registerPath ?? join(dirname(opts.statePath), 'psk-register.json');
    const mine = readPskRegister(registerPath).filter((e) => e.role === opts.role);
    const pskThere = !!opts.pskPath && existsSync(opts.pskPath);
    const known = (fp: string) => mine.find((e) => e.fingerprint === fp);
    const fresh = 'provision a fresh pre-shared secret on both nodes (docs/runbook.md, "Channel secret")';
    const Fresh = `P${fresh.slice(1)}`;
    if (existsSync(opts.statePath)) {
      if (pskThere) {
        const psk = readFileSync(opts.pskPath!);
        const seen = known(pskFingerprint(psk));
        psk.fill(0);
        if (!seen) {
          throw new SecurityError('AUTH_PSK_UNEXPECTED', `A pre-shared secret file ${opts.pskPath} is present, but this node already runs on its channel state ${opts.statePath}. If the file is the secret this node started from (left in place by an older version), delete it: starting from it again would reuse one-time pads. To re-key the link instead, stop both nodes and retire the channel state on both first (docs/runbook.md, "Channel secret").`);
        }
        if (!opts.keepPsk) shred(opts.pskPath!);
      }
      return Authenticator.load(opts.statePath, opts.stateKey, opts.role);
    }
    if (!pskThere) {
      if (mine.length) {
        const last = mine[mine.length - 1];
        throw new SecurityError('AUTH_STATE_LOST', `The channel state ${opts.statePath} is gone, but this node already consumed a pre-shared secret (imported ${last.importedAt}, register ${registerPath}): starting over would reuse one-time pads and reveal the hash key. ${Fresh}, and retire the peer's channel state too.`);
      }
      throw new ConfigError('AUTH_NO_KEY', `No authentication state at ${opts.statePath} and no pre-shared secret file${opts.pskPath ? ` at ${opts.pskPath}` : ''}: provision the pre-shared secret (same bytes on both nodes) before the first start.`);
    }
    const psk = readFileSync(opts.pskPath!);
    try {
      const fp = pskFingerprint(psk);
      const seen = known(fp);
      if (seen) {
        throw new SecurityError('AUTH_PSK_CONSUMED', `The pre-shared secret ${opts.pskPath} was already imported by this ${opts.role} node (${seen.importedAt}) and its channel state ${opts.statePath} is gone: starting from it again would reuse one-time pads. Delete the file and ${fresh}, and retire the peer's channel state too.`);
      }
      const a = Authenticator.fromPsk(psk, opts.role);
      // Registered before the state exists: a crash in between refuses the secret next time
      // (safe) rather than importing it twice.
      writePskRegister(registerPath, [...readPskRegister(registerPath), { fingerprint: fp, role: opts.role, bytes: psk.length, importedAt: new Date().toISOString() }]);
      a.attachStateFile(opts.statePath, opts.stateKey);
      if (!opts.keepPsk) shred(opts.pskPath!);
      return a;
    } finally {
      psk.fill(0);
    }
  }

  /**
   * From now on, send sequence numbers are reserved in this file before use; the file is wrapped
   * under `stateKey` (32 bytes, AES-256-GCM). Writes it now.
   */
  attachStateFile(path: string, stateKey: Uint8Array): void {
    wrap(() => this.#n.attachStateFile(path, stateKey));
  }
  /** Writes the state file (block boundaries, after replenishing, at shutdown). */
  save(): void {
    wrap(() => this.#n.save());
  }
  /** Forces the portable GF(2^128) multiplier (tests, benchmarks). */
  usePortable(on: boolean): void {
    this.#n.usePortable(on);
  }
  get nextSendSeq(): number {
    return this.#n.nextSendSeq;
  }
  /** 16-byte tag for our message number `seq` (>= nextSendSeq; consumes that pad). */
  sign(seq: number, aad: Uint8Array, data: Uint8Array): Buffer {
    return wrap(() => this.#n.sign(seq, aad, data));
  }
  /** Throws SecurityError unless `tag` authenticates (aad, data) as the peer's message `seq`. */
  verify(seq: number, aad: Uint8Array, data: Uint8Array, tag: Uint8Array): void {
    wrap(() => this.#n.verify(seq, aad, data, tag));
  }
  /** Appends generated key to the pad pool. Both ends must append the same bytes in the same order. */
  replenish(bytes: Uint8Array): void {
    this.#n.replenish(bytes);
  }
  stats(): AuthStats {
    return this.#n.stats();
  }
}

/** The bare polynomial hash (tests): 16-byte key, returns 16 bytes. */
export function polyHash(key: Uint8Array, aad: Uint8Array, data: Uint8Array, portable = false): Buffer {
  return wrap(() => native().authPolyHash(key, aad, data, portable));
}
/** GF(2^128) product of two 16-byte big-endian elements (tests). */
export function gf128Mul(a: Uint8Array, b: Uint8Array, portable = false): Buffer {
  return wrap(() => native().authGf128Mul(a, b, portable));
}
