/**
 * Typed facade over the native KmsStore (native/store via native/node/src/store.rs): maps the
 * coded native errors (`STORE_DB:`, `STORE_CRYPTO:` ...) to QkdError subclasses.
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

  /** Opens the SQLite database at `path`; `kek` is the 32-byte key-wrapping key. */
  static open(path: string, kek: Uint8Array, capacity: number): KeyStore {
    try {
      return new KeyStore(native().KmsStore.open(path, kek, capacity));
    } catch (e) {
      mapErr(e);
    }
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

  candidates(sid: string, limit: number, nowMs: number, descending = false) {
    try {
      return this.s.candidates(sid, limit, nowMs, descending);
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
