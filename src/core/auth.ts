/**
 * Typed facade over the native Wegman–Carter authenticator (native/auth, adapter
 * native/node/src/auth.rs). Key bytes go in (pre-shared secret, replenished key) and never come
 * out: JS sees tags (not secret) and counters only.
 *
 * Concurrency: one Authenticator per channel end, used from the JS thread only; sign and verify
 * are synchronous (GB/s hash, messages <= 16 MiB). Errors: SecurityError for every
 * authentication failure (codes AUTH_TAG_MISMATCH, AUTH_REPLAY, AUTH_TOO_OLD, AUTH_KEY_EXHAUSTED,
 * AUTH_SEQ_REUSE), ConfigError for bad key/state files (AUTH_BAD_KEY, AUTH_IO).
 */
import { existsSync, openSync, readFileSync, writeSync, closeSync, fsyncSync, unlinkSync, statSync } from 'node:fs';
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
function shred(path: string): void {
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

export class Authenticator {
  readonly #n: NativeAuth;
  private constructor(n: NativeAuth) {
    this.#n = n;
  }

  /** From pre-shared secret bytes (>= 48: 16 bytes hash key, then pads). Zero `psk` afterwards. */
  static fromPsk(psk: Uint8Array, role: Role): Authenticator {
    return new Authenticator(wrap(() => native().WcAuthenticator.fromPsk(psk, directionOf(role))));
  }

  /** Reopens a state file written earlier (sequence numbers resume past any pad possibly used). */
  static load(statePath: string, role?: Role): Authenticator {
    const a = new Authenticator(wrap(() => native().WcAuthenticator.load(statePath)));
    if (role && a.stats().direction !== directionOf(role)) {
      throw new ConfigError('AUTH_BAD_KEY', `Authentication state ${statePath} belongs to the other role (direction ${a.stats().direction}); configure the ${role} node with its own state file.`);
    }
    return a;
  }

  /**
   * The durable way to open one end: loads `statePath` if it exists; otherwise imports the
   * pre-shared secret from `pskPath`, writes the state file, and (unless `keepPsk`) shreds the
   * secret file, because starting again from it would reuse pads.
   */
  static open(opts: { role: Role; statePath: string; pskPath?: string; keepPsk?: boolean }): Authenticator {
    if (existsSync(opts.statePath)) return Authenticator.load(opts.statePath, opts.role);
    if (!opts.pskPath || !existsSync(opts.pskPath)) {
      throw new ConfigError('AUTH_NO_KEY', `No authentication state at ${opts.statePath} and no pre-shared secret file${opts.pskPath ? ` at ${opts.pskPath}` : ''}: provision the pre-shared secret (same file on both nodes) before the first start.`);
    }
    const psk = readFileSync(opts.pskPath);
    try {
      const a = Authenticator.fromPsk(psk, opts.role);
      a.attachStateFile(opts.statePath);
      if (!opts.keepPsk) shred(opts.pskPath);
      return a;
    } finally {
      psk.fill(0);
    }
  }

  /** From now on, send sequence numbers are reserved in this file before use. Writes it now. */
  attachStateFile(path: string): void {
    wrap(() => this.#n.attachStateFile(path));
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
