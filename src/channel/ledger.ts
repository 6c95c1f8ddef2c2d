/**
 * Which post-processing blocks are finished, as agreed with the peer (see docs/channel.md,
 * "Resumption"). Persisted as JSON (block ids only, no key material), written atomically
 * (tmp + fsync + rename) before any message that depends on it leaves.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { ConfigError } from '../errors.ts';

const KEEP = 4096;

export interface LedgerState {
  /** Recently committed block ids (newest last). */
  committed: number[];
  /** Recently aborted block ids (newest last). */
  aborted: number[];
  /** The block this side asked the peer to commit and whose outcome it does not know yet. */
  prepared: number | null;
}

export class BlockLedger {
  readonly #path: string | undefined;
  readonly #committed = new Set<number>();
  readonly #aborted = new Set<number>();
  #prepared: number | null = null;

  constructor(path?: string) {
    this.#path = path;
    if (path && existsSync(path)) {
      let s: LedgerState;
      try {
        s = JSON.parse(readFileSync(path, 'utf8')) as LedgerState;
      } catch (cause) {
        throw new ConfigError('LEDGER_CORRUPT', `Block ledger ${path} is not valid JSON: restore it from backup; do not delete it (the peer would disagree on finished blocks).`, { cause });
      }
      for (const b of s.committed ?? []) this.#committed.add(b);
      for (const b of s.aborted ?? []) this.#aborted.add(b);
      this.#prepared = s.prepared ?? null;
    }
  }

  isCommitted(b: number): boolean { return this.#committed.has(b); }
  isAborted(b: number): boolean { return this.#aborted.has(b); }
  get prepared(): number | null { return this.#prepared; }
  state(): LedgerState {
    return { committed: [...this.#committed], aborted: [...this.#aborted], prepared: this.#prepared };
  }

  prepare(b: number): void {
    this.#prepared = b;
    this.#save();
  }
  commit(b: number): void {
    if (this.#prepared === b) this.#prepared = null;
    this.#aborted.delete(b);
    add(this.#committed, b);
    this.#save();
  }
  abort(b: number): void {
    if (this.#committed.has(b)) return;
    if (this.#prepared === b) this.#prepared = null;
    add(this.#aborted, b);
    this.#save();
  }

  #save(): void {
    if (!this.#path) return;
    const tmp = `${this.#path}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(this.state()));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.#path);
  }
}

function add(s: Set<number>, b: number): void {
  s.delete(b);
  s.add(b);
  if (s.size > KEEP) s.delete(s.values().next().value as number);
}
