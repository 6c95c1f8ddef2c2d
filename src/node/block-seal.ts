/**
 * A block's output sealed on disk before the classical channel commits it, and released (MAC key
 * pool refilled, key offered to the delivery node) exactly once after the commit — after a crash
 * too.
 *
 * Why: the commit is durable in both nodes' ledgers the moment the peer records it. A node that
 * crashed after the commit but before its spool held the key would come back without it, while
 * the peer delivers it: the two KMSs' streams shift against each other and the two MAC key pools
 * differ from then on (every later message fails authentication). So the output is sealed first
 * (AES-256-GCM under the spool key, file written to a temporary name, fsynced, renamed) and the
 * node replays what its ledger says is committed when it starts.
 *
 * Exactly once, per half:
 * - the MAC pool: before refilling, `release.json` records the block and the pool's replenished
 *   bit count (persisted in the channel state); a replay skips the refill when the count already
 *   includes it;
 * - the key: the delivery node's spool stores the offer's tag (the block id) in the same file as
 *   the bytes (`DeliveryNode.lastOfferTag`); a replay skips the offer when the spool has it.
 * Releases happen one at a time in block order (commits are in block order on both nodes).
 *
 * Files: `<dir>/<blockId>.block` (sealed: replenish and deliverable bytes, the public provenance),
 * `<dir>/release.json` (block id and bit counts only). No key bytes leave this module but to the
 * channel's pool and the delivery node.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { QkdError, SecurityError } from '../errors.ts';
import type { Provenance } from '../delivery/types.ts';
import { u32 } from '../delivery/spool.ts';

export interface SealedOutput {
  blockId: number;
  replenish: Uint8Array;
  replenishBits: number;
  deliverable: Uint8Array;
  deliverableBits: number;
  /** Public figures for the KMS (qber, epsilon, times): no key bytes. */
  provenance: Provenance;
}

export class SealedBlocks {
  private readonly key: Buffer;
  constructor(readonly dir: string, key: Uint8Array) {
    if (key.length !== 32) throw new SecurityError('SEAL_KEY', `the sealing key must be 32 bytes (the spool key), got ${key.length}`);
    this.key = Buffer.from(key);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private path(id: number): string {
    return join(this.dir, `${id}.block`);
  }

  private writeAtomic(path: string, data: Buffer): void {
    const tmp = `${path}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    const d = openSync(this.dir, 'r');
    try {
      fsyncSync(d);
    } finally {
      closeSync(d);
    }
  }

  /** Seals a block's output durably (before its commit). */
  seal(o: SealedOutput): void {
    const header = Buffer.from(JSON.stringify({ blockId: o.blockId, replenishBits: o.replenishBits, deliverableBits: o.deliverableBits, provenance: o.provenance }));
    const plain = Buffer.concat([u32(header.length), header, u32(o.replenish.length), o.replenish, u32(o.deliverable.length), o.deliverable]);
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.key, nonce);
    c.setAAD(Buffer.from(`block:${o.blockId}`));
    const ct = Buffer.concat([c.update(plain), c.final()]);
    plain.fill(0);
    this.writeAtomic(this.path(o.blockId), Buffer.concat([nonce, ct, c.getAuthTag()]));
  }

  /** Block ids sealed and not yet released or discarded, ascending. */
  list(): number[] {
    return readdirSync(this.dir).map((f) => /^(\d+)\.block$/.exec(f)).filter((m) => m !== null).map((m) => Number(m[1])).sort((a, b) => a - b);
  }

  has(id: number): boolean {
    return existsSync(this.path(id));
  }

  /** The sealed output of block `id` (the caller wipes the byte arrays). */
  open(id: number): SealedOutput {
    const sealed = readFileSync(this.path(id));
    if (sealed.length < 28) throw new SecurityError('SEAL_CORRUPT', `sealed block ${this.path(id)} is truncated: move it aside and compare both nodes' KMS streams`);
    const d = createDecipheriv('aes-256-gcm', this.key, sealed.subarray(0, 12));
    d.setAAD(Buffer.from(`block:${id}`));
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    let plain: Buffer;
    try {
      plain = Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]);
    } catch (cause) {
      throw new SecurityError('SEAL_CORRUPT', `sealed block ${this.path(id)} fails authentication (wrong spool key or altered file): move it aside and check the spool key`, { cause });
    }
    let off = 0;
    const take = (): Buffer => {
      const n = plain.readUInt32BE(off);
      const b = Buffer.from(plain.subarray(off + 4, off + 4 + n));
      off += 4 + n;
      return b;
    };
    const header = JSON.parse(take().toString('utf8')) as { blockId: number; replenishBits: number; deliverableBits: number; provenance: Provenance };
    const replenish = take();
    const deliverable = take();
    plain.fill(0);
    return { blockId: header.blockId, replenishBits: header.replenishBits, deliverableBits: header.deliverableBits, provenance: header.provenance, replenish, deliverable };
  }

  /** Erases a released or aborted block's file (its bytes are ciphertext under a key kept elsewhere). */
  remove(id: number): void {
    rmSync(this.path(id), { force: true });
  }

  /** What the last release started: the block and the MAC pool's replenished bits before it. */
  journal(): { blockId: number; replenishedBefore: number } | undefined {
    const p = join(this.dir, 'release.json');
    if (!existsSync(p)) return undefined;
    return JSON.parse(readFileSync(p, 'utf8')) as { blockId: number; replenishedBefore: number };
  }

  setJournal(j: { blockId: number; replenishedBefore: number }): void {
    this.writeAtomic(join(this.dir, 'release.json'), Buffer.from(JSON.stringify(j)));
  }

  destroy(): void {
    this.key.fill(0);
  }
}

/** Where a node's pool refill and key delivery go (the classical link and the delivery node). */
export interface ReleaseTargets {
  /** Total bits ever added to the MAC key pool (durable in the channel state). */
  replenishedBits(): number;
  replenish(bytes: Uint8Array, bits: number): void;
  lastOfferTag(): number | undefined;
  offer(bytes: Uint8Array, provenance: Provenance, tag: number): Promise<unknown>;
  /** Health tests on delivered output (optional, P-values only). */
  sample?(bytes: Uint8Array, bits: number): void;
  /** Whether `offer` would take `bytes` now (optional; without it a refused offer is retried every `retryMs`). */
  wouldTake?(bytes: number): boolean;
}

/** What the releaser says while a block waits for room in a full delivery spool. */
export interface ReleaseHoldEvents {
  /** Polling period while held (ms, default 500). */
  retryMs?: number;
  /** Block `blockId` is held: the spool refused it (once per hold). */
  onHeld?(blockId: number, err: Error): void;
  /** Block `blockId` went into the spool after waiting `waitedMs`. */
  onResumed?(blockId: number, waitedMs: number): void;
  /** Releasing block `blockId` failed (not for a full spool): the releaser halts (once). */
  onFailed?(blockId: number, err: Error): void;
}

/**
 * Releases sealed blocks once each, in order. `release(id)` after the block's commit (or at start
 * for blocks the ledger says are committed); `discard(id)` for an aborted one.
 *
 * A full delivery spool (the KMS not taking keys) holds the block, sealed, and every block after
 * it, until the spool has room: both nodes must offer the same bytes in the same order, so a later
 * block may never overtake a refused one (it would shift every key index after it, and the replay
 * would skip the refused block as already offered). A caller awaiting `release` waits with it:
 * Bob's pipeline stops committing new blocks while his KMS is away (back-pressure), and resumes.
 *
 * Any other failure (the sealed file unreadable, the spool's disk failing, the channel pool
 * refusing the replenishment) halts the releaser for good (fail closed): that block and every
 * later one stay sealed and are refused (`RELEASE_HALTED`), for the same reason, until the node
 * restarts and replays them in order. `failed` says which block and why.
 */
export class BlockReleaser {
  private chain: Promise<unknown> = Promise.resolve();
  private stopped = false;
  private wake: (() => void) | undefined;
  /** The block held by a full spool, if any. */
  held: number | undefined;
  /** The block whose release failed (not for a full spool) and why: the releaser has halted. */
  failed: { blockId: number; err: Error } | undefined;
  released = 0;
  replayedSkips = { replenish: 0, offer: 0 };

  constructor(private readonly sealed: SealedBlocks, private readonly to: ReleaseTargets, private readonly onError: (blockId: number, err: Error) => void,
    private readonly hold: ReleaseHoldEvents = {}) {}

  release(id: number): Promise<void> {
    const run = this.chain.then(() => this.releaseWhenRoom(id));
    this.chain = run.catch((err: unknown) => this.onError(id, err as Error));
    return run;
  }

  /** Ends any wait for spool room: the held block (and those after it) stay sealed for the next start. */
  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  private async releaseWhenRoom(id: number): Promise<void> {
    const t0 = Date.now();
    if (this.failed) {
      throw new QkdError('RELEASE_HALTED', `block ${id} not released: the release of block ${this.failed.blockId} failed (${this.failed.err.message}) ` +
        'and no later block may overtake it. Both stay sealed and are delivered in order when the node restarts; fix the cause first.');
    }
    for (;;) {
      if (this.stopped && this.held !== undefined) throw this.stoppedError(id);
      let need = 0;
      try {
        await this.releaseNow(id, (n) => (need = n));
        if (this.held === id) {
          this.held = undefined;
          this.hold.onResumed?.(id, Date.now() - t0);
        }
        return;
      } catch (err) {
        if ((err as { code?: string }).code !== 'DELIVERY_SPOOL_FULL') {
          this.failed = { blockId: id, err: err as Error };
          this.hold.onFailed?.(id, err as Error);
          throw err;
        }
        if (this.stopped) {
          this.held = id; // no later block may overtake it in this run
          throw this.stoppedError(id);
        }
        if (this.held !== id) {
          this.held = id;
          this.hold.onHeld?.(id, err as Error);
        }
        const retryMs = this.hold.retryMs ?? 500;
        do await this.pause(retryMs);
        while (!this.stopped && this.to.wouldTake && !this.to.wouldTake(need));
      }
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  private stoppedError(id: number): QkdError {
    return new QkdError('RELEASE_STOPPED', `the node stopped while block ${id} waited for room in the delivery spool: it stays sealed and is delivered at the next start`);
  }

  discard(id: number): void {
    this.chain = this.chain.then(() => this.sealed.remove(id));
  }

  /** Resolves when every release asked for so far has finished. */
  settled(): Promise<unknown> {
    return this.chain;
  }

  private async releaseNow(id: number, offering: (bytes: number) => void = () => undefined): Promise<void> {
    if (!this.sealed.has(id)) return; // released already (a replay and an event both asked)
    const o = this.sealed.open(id);
    try {
      if (o.replenishBits > 0) {
        const j = this.sealed.journal();
        const before = this.to.replenishedBits();
        const done = j?.blockId === id && before >= j.replenishedBefore + (o.replenishBits >> 3) * 8;
        if (done) this.replayedSkips.replenish++;
        else {
          if (j?.blockId !== id) this.sealed.setJournal({ blockId: id, replenishedBefore: before });
          this.to.replenish(o.replenish, o.replenishBits);
        }
      }
      if (o.deliverableBits >= 8) {
        const last = this.to.lastOfferTag();
        if (last !== undefined && last >= id) this.replayedSkips.offer++;
        else {
          const bytes = o.deliverable.subarray(0, o.deliverableBits >> 3);
          offering(bytes.length);
          if (o.deliverableBits >= 1024 && this.held !== id) this.to.sample?.(o.deliverable, o.deliverableBits);
          await this.to.offer(bytes, o.provenance, id);
        }
      }
      this.sealed.remove(id);
      this.released++;
    } finally {
      o.replenish.fill(0);
      o.deliverable.fill(0);
    }
  }
}
