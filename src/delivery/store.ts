/**
 * Typed facade over the native KmsStore (native/store via native/node/src/store.rs): maps the
 * coded native errors (`STORE_DB:`, `STORE_CRYPTO:`, `STORE_CUSTODY:`, `STORE_SEAL:` ...) to
 * QkdError subclasses. Also the custody entry points: `initCustody` (master key, keystore, share
 * files), `Unsealer` (K of N shares open the store), `verifyAuditChain`.
 */
import { native } from '../core/native.ts';
import { ConfigError, QkdError, SecurityError } from '../errors.ts';

type NativeStore = InstanceType<ReturnType<typeof native>['KmsStore']>;
export type PutOutcome = 'stored' | 'duplicate' | 'conflict' | 'full';

function mapErr(err: unknown): never {
  const msg = (err as Error)?.message ?? String(err);
  const m = /^(STORE_[A-Z]+):\s*(.*)$/s.exec(msg);
  const code = m?.[1] ?? 'STORE_DB';
  const text = m?.[2] ?? msg;
  if (code === 'STORE_CRYPTO') throw new SecurityError(code, `key store: ${text}`, { cause: err });
  if (code === 'STORE_SEAL') throw new SecurityError(code, text, { cause: err });
  if (code === 'STORE_CUSTODY') throw new ConfigError(code, text, { cause: err });
  // PostgreSQL unreachable, login refused, database missing: the message says which and what to do.
  if (code === 'STORE_SERVER') throw new ConfigError(code, `key store: ${text}`, { cause: err });
  if (code === 'STORE_INVALID') throw new ConfigError(code, `key store: ${text}`, { cause: err });
  throw new QkdError(code, `key store: ${text}; check the database path, disk space and permissions`, { cause: err });
}

interface QueuedPut {
  sid: string;
  index: number;
  keyId: string;
  key: Uint8Array;
  meta: string;
  nowMs: number;
  expiresMs: number;
  resolve: (o: PutOutcome) => void;
  reject: (e: unknown) => void;
}

/**
 * Group commit: puts issued while a commit is running are queued and written together in the
 * next transaction (one fsync for all). Each put still resolves only after its own commit, so
 * "durable before 201" holds per key; under concurrency the cost of the fsync is shared.
 */
export class KeyStore {
  private readonly queue: QueuedPut[] = [];
  private committing = false;
  private constructor(private readonly s: NativeStore) {}

  /**
   * Opens the key store with a development keystore: `database` is a SQLite file path (the
   * embedded default) or a postgres:// URL (the production backend; same schema semantics, keys
   * wrapped the same way). `kek` is the 32-byte wrapKeyFile. With `keystoreFile`, KEK generations
   * made by `rotateKek` persist there.
   */
  static open(database: string, kek: Uint8Array, capacity: number, keystoreFile?: string): KeyStore {
    try {
      return new KeyStore(native().KmsStore.open(database, kek, capacity, keystoreFile));
    } catch (e) {
      mapErr(e);
    }
  }

  /** @internal wraps a store the Unsealer opened. */
  static fromNative(s: NativeStore): KeyStore {
    return new KeyStore(s);
  }

  /** Where the keys are (for logs): "SQLite database PATH" or "PostgreSQL user@host:port/db". */
  backend(): string {
    return call(() => this.s.backend());
  }

  /** What holds the KEK (for logs). */
  custody(): string {
    return call(() => this.s.custody());
  }

  /** Keys whose TTL ends within `horizonMs` of `nowMs`, each reported once. */
  expiring(nowMs: number, horizonMs: number) {
    return call(() => this.s.expiring(nowMs, horizonMs));
  }

  /**
   * Re-wraps every stored key under a new KEK generation (or finishes an interrupted rotation),
   * `batch` keys per transaction; between batches the store serves other calls, so requests go
   * on. The older KEKs are destroyed at the end. Resolves with what was done.
   */
  async rotateKek(nowMs: () => number, batch = 256): Promise<{ active: number; rewrapped: number; retired: number[];
    resumed: boolean; ms: number }> {
    const t0 = performance.now();
    const st = call(() => this.s.beginRotation(nowMs()));
    let left = st.pending;
    let done = 0;
    while (left > 0) {
      let now: number;
      try {
        now = await this.s.rotateStep(batch);
      } catch (e) {
        mapErr(e);
      }
      done += left - now;
      left = now;
      // Other calls waiting on the JS side (ETSI 014, pushes) get their turn between batches.
      await new Promise((r) => setImmediate(r));
    }
    const retired = call(() => this.s.finishRotation(nowMs(), done));
    return { active: st.active, rewrapped: done, retired, resumed: st.resumed, ms: performance.now() - t0 };
  }

  /**
   * Replaces the master key: `shares` new share files in `outDir` (any `threshold` reconstruct
   * it), keystore re-sealed; the old shares are revoked. Returns the new files.
   */
  reshare(shares: number, threshold: number, outDir: string, kmsId: string, nowMs: number): string[] {
    return call(() => this.s.reshare(shares, threshold, outDir, kmsId, nowMs));
  }

  /** [active KEK generation, ...other generations still loaded]. */
  kekGenerations(): number[] {
    return call(() => this.s.kekGenerations());
  }

  /** Verifies the audit hash chain (see verifyAuditChain). */
  verifyAudit() {
    return call(() => this.s.verifyAudit());
  }

  /** SQLite: moves the WAL into the file and truncates it. PostgreSQL: nothing (VACUUM is the operator's). */
  checkpoint(): void {
    call(() => this.s.checkpoint());
  }

  /** Ciphertext of a key, null once erased. Tests only (never key bytes). */
  wrappedOf(keyId: string): Buffer | null {
    return call(() => this.s.wrappedOf(keyId)) ?? null;
  }

  /** Stores a key durably; the caller keeps `key` intact until this resolves (then zeroes it). */
  put(sid: string, index: number, keyId: string, key: Uint8Array, meta: string, nowMs: number,
    expiresMs: number): Promise<PutOutcome> {
    return new Promise((resolve, reject) => {
      this.queue.push({ sid, index, keyId, key, meta, nowMs, expiresMs, resolve, reject });
      this.flush();
    });
  }

  private flush(): void {
    if (this.committing || !this.queue.length) return;
    const batch = this.queue.splice(0, 512);
    this.committing = true;
    // Why one concatenated buffer: one napi argument instead of one per key; zeroed after commit.
    const keys = Buffer.concat(batch.map((b) => b.key));
    let p: Promise<PutOutcome[]>;
    try {
      p = this.s.putMany(batch.map((b) => b.sid), batch.map((b) => b.index), batch.map((b) => b.keyId), keys,
        batch.map((b) => b.key.length), batch.map((b) => b.meta), batch.map((b) => b.expiresMs),
        Math.max(...batch.map((b) => b.nowMs)));
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then((outs) => batch.forEach((b, i) => b.resolve(outs[i])), (e) => {
      let mapped: unknown = e;
      try {
        mapErr(e);
      } catch (m) {
        mapped = m;
      }
      for (const b of batch) b.reject(mapped);
    }).finally(() => {
      keys.fill(0);
      this.committing = false;
      this.flush();
    });
  }

  /** Held keys of a stream; with `maxEpsilon` only those labelled with an ε at most that. */
  candidates(sid: string, limit: number, nowMs: number, descending = false, maxEpsilon?: number) {
    try {
      return this.s.candidates(sid, limit, nowMs, descending, maxEpsilon);
    } catch (e) {
      mapErr(e);
    }
  }

  reserve(sid: string, items: { index: number; digest: string }[], holder: string, nowMs: number,
    allOrNothing: boolean): number[] {
    try {
      return this.s.reserve(sid, items.map((i) => i.index), items.map((i) => i.digest), holder, nowMs, allOrNothing);
    } catch (e) {
      mapErr(e);
    }
  }

  /** Hands out (and erases) one key reserved for `holder`, or null. */
  /** Provenance JSON of (stream, index) (labels, the node's commitment), or null. */
  metaOf(sid: string, index: number): string | null {
    return call(() => this.s.metaOf(sid, index)) ?? null;
  }

  /** Returns keys reserved for `holder` to the held pool. */
  unreserve(sid: string, indices: number[], holder: string, nowMs: number): number[] {
    try {
      return this.s.unreserve(sid, indices, holder, nowMs);
    } catch (e) {
      mapErr(e);
    }
  }

  async take(keyId: string, holder: string, nowMs: number) {
    return (await this.takeMany([keyId], holder, nowMs))[0];
  }

  /** Hands out several keys in one transaction; null entries for key_IDs not available to `holder`. */
  async takeMany(keyIds: string[], holder: string, nowMs: number) {
    try {
      return await this.s.takeMany(keyIds, holder, nowMs);
    } catch (e) {
      mapErr(e);
    }
  }

  /**
   * All or nothing: the keys named by `keyIds` reserved for `holder` (a multicast copy is the row
   * `id + suffix`), erased in one transaction; if any is not available nothing is taken and
   * `refused` names each bad position with 'unknown' (unknown, gone) or 'foreign' (reserved for
   * another SAE pair).
   */
  async takeAll(keyIds: string[], holder: string, suffix: string, nowMs: number): Promise<{
    keys: { index: number; keyId: string; key: Buffer }[]; refused: { pos: number; reason: 'unknown' | 'foreign' }[] }> {
    try {
      const r = await this.s.takeAll(keyIds, holder, suffix, nowMs);
      return { keys: r.keys, refused: r.refused.map(([pos, why]) => ({ pos, reason: why === 2 ? 'foreign' : 'unknown' })) };
    } catch (e) {
      mapErr(e);
    }
  }

  /**
   * Reformats chunks of `sid` (held with these digests, or reserved for `fromHolder`) into keys
   * of `sizesBytes`: the chunks' bytes in the given order, cut in turn (no byte twice, the rest
   * discarded); each output `{keyId, holder, key}` becomes a row reserved for `holder`; the chunks
   * are erased. False (nothing changed) unless every chunk is available.
   */
  reformat(sid: string, items: { index: number; digest: string }[], fromHolder: string | null, sizesBytes: number[],
    outputs: { keyId: string; holder: string; key: number }[], meta: string, nowMs: number): boolean {
    return call(() => this.s.reformat(sid, items.map((i) => i.index), items.map((i) => i.digest), fromHolder, sizesBytes,
      outputs.map((o) => o.keyId), outputs.map((o) => o.holder), outputs.map((o) => o.key), meta, nowMs));
  }

  /** `[first, last]` index ranges of the held keys of a stream (optionally at a security level). */
  heldRanges(sid: string, nowMs: number, maxEpsilon?: number): [number, number][] {
    return call(() => this.s.heldRanges(sid, nowMs, maxEpsilon)) as [number, number][];
  }

  expire(nowMs: number) {
    try {
      return this.s.expire(nowMs);
    } catch (e) {
      mapErr(e);
    }
  }

  counts(sid?: string) {
    try {
      return this.s.counts(sid);
    } catch (e) {
      mapErr(e);
    }
  }

  audit(nowMs: number, sid: string, index: number, event: string, detail: string): void {
    try {
      this.s.audit(nowMs, sid, index, event, detail);
    } catch (e) {
      mapErr(e);
    }
  }

  auditTrail(sid: string, index?: number) {
    try {
      return this.s.auditTrail(sid, index);
    } catch (e) {
      mapErr(e);
    }
  }

  execRaw(sql: string): void {
    try {
      this.s.execRaw(sql);
    } catch (e) {
      mapErr(e);
    }
  }

  close(): void {
    this.s.close();
  }
}

function call<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    mapErr(e);
  }
}

/** Where a PKCS#11 KEK lives (the PIN travels separately and never sits in a configuration). */
export interface TokenConfig {
  module: string;
  tokenLabel?: string;
  slot?: number;
  keyLabel: string;
  /** "environment variable X" / "file Y": named in errors, never the PIN itself. */
  pinSource: string;
}

export interface CustodyInit {
  keystoreFile: string;
  kind: 'software' | 'pkcs11';
  shares: number;
  threshold: number;
  outDir: string;
  kmsId: string;
  token?: TokenConfig;
  pin?: Uint8Array;
}

/**
 * Creates the master key, the keystore (a first KEK: sealed in the file, or generated
 * non-extractable in the token) and N share files (0600) in `outDir`, any K of which
 * reconstruct the master key. Share text is written by the native side and never becomes a
 * JavaScript string. Refuses to overwrite an existing keystore. Returns the share files.
 */
export function initCustody(o: CustodyInit): string[] {
  return call(() => native().kmsCustodyInit(o.keystoreFile, o.kind, o.shares, o.threshold, o.outDir, o.kmsId, o.token, o.pin));
}

/** Checks a PKCS#11 keystore's token, PIN and keys at start-up (before any share is given). */
export function probeToken(keystoreFile: string, token: TokenConfig, pin?: Uint8Array): string {
  return call(() => native().kmsProbeToken(keystoreFile, token, pin));
}

export interface ChainReport {
  rows: number;
  /** Hex hash of the last verified row: anchor it elsewhere to detect truncation. */
  head: string;
  brokenSeq?: number | null;
  reason?: string | null;
}

/** Verifies the audit hash chain of the KMS database `dbPath` (a SQLite file, read-only, or a postgres:// URL). */
export function verifyAuditChain(dbPath: string): ChainReport {
  return call(() => native().kmsAuditVerify(dbPath));
}

export interface UnsealProgress {
  accepted: number;
  have: number;
  threshold: number;
  shares: number;
  kind: string;
}

/** Collects shares for a sealed KMS (see native KmsUnsealer). */
export class Unsealer {
  private constructor(private readonly u: InstanceType<ReturnType<typeof native>['KmsUnsealer']>) {}
  static load(keystoreFile: string): Unsealer {
    return new Unsealer(call(() => native().KmsUnsealer.load(keystoreFile)));
  }
  status(): UnsealProgress {
    return call(() => this.u.status());
  }
  /** Adds the share lines in `text` (all or nothing); zeroes `text` afterwards. */
  add(text: Buffer): UnsealProgress {
    try {
      return call(() => this.u.add(text));
    } finally {
      text.fill(0);
    }
  }
  reset(): void {
    call(() => this.u.reset());
  }
  /** With K shares: opens the keystore and the database. Shares are forgotten either way. */
  openStore(dbPath: string, capacity: number, token?: TokenConfig, pin?: Uint8Array): KeyStore {
    return KeyStore.fromNative(call(() => this.u.openStore(dbPath, capacity, token, pin)));
  }
}

export interface DigestInfo {
  digest: string;
  /** 0 held, 1 reserved, 2 delivered, 3 expired. */
  state: number;
}
/** Digest and state of (sid, index) or null (a separate function keeps the class surface small). */
export function digestOf(store: KeyStore, sid: string, index: number): DigestInfo | null {
  try {
    return ((store as unknown as { s: NativeStore }).s).digestOf(sid, index) ?? null;
  } catch (e) {
    mapErr(e);
  }
}
