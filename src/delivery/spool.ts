/**
 * The node's spool: key chunks waiting for their 201, encrypted at rest, surviving a restart.
 *
 * Layout under `dir`:
 *   state.json                       stream table (ids, QoS, next index, registration): no key bytes
 *   pending.bin                      bytes offered but not yet cut into a chunk (sealed)
 *   <key_stream_id>/<first>-<last>.batch   the chunks of one offer, sealed together
 *
 * Sealed file = nonce (12) | AES-256-GCM ciphertext | tag (16); the associated data is the file's
 * role ("batch:<id>:<first>:<last>" or "pending"), so a file renamed to other indices fails to open.
 * Plaintext of a batch = u32be count, then per chunk: u32be index | u32be header length | header
 * JSON (provenance, times) | u32be key length | key bytes; then a trailer: the remainder left after
 * this offer (u32be header length | header JSON {seq, provenance, offeredAtMs} | u32be length |
 * bytes). pending.bin carries the same header. Every write takes the next `seq`; on load the
 * remainder with the highest seq wins. Why: a crash between writing a batch and rewriting
 * pending.bin must not leave the old remainder, whose bytes are already in the batch, to be chunked
 * a second time (that would shift this node's indices against the peer's).
 * Why one file per offer and not per chunk: one fsync per offer instead of one per chunk (a 32-byte
 * chunk per fsync held the node to tens of chunks per second). The file is deleted once every chunk
 * in it is acknowledged or expired; until then acknowledged chunks stay on disk as ciphertext, and
 * after a crash they are pushed again and the KMS answers 201 as a duplicate (exactly once in the
 * store). Files are written to a temporary name, fsynced, then renamed: a crash leaves the old or
 * the new file, never a torn one. Deleting a file erases it: its bytes on disk are ciphertext under
 * a key that is not on disk with it (spoolKey comes from config/file).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync,
  existsSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, SecurityError } from '../errors.ts';
import type { Provenance, Qos } from './types.ts';

export interface SpooledChunk {
  keyStreamId: string;
  index: number;
  key: Buffer;
  provenance: Provenance;
  offeredAtMs: number;
  /** When the node zeroises it if still unacknowledged (offer time + stream ttl). */
  expiresAtMs: number;
}

export interface StreamRecord {
  keyStreamId: string;
  source: string;
  destination: string;
  qos: Qos;
  /** Next index to assign to a new chunk. */
  nextIndex: number;
  /** The KMS registered with get-key (pushes flow). */
  registered: boolean;
  /** Index from which get-key asked to push. */
  startIndex: number;
  closed: boolean;
  /** Assigning stopped at MAX_INDEX (no wrap). */
  exhausted: boolean;
  /** Chunks per batched push the KMS asked for in get-key (types.ts KEY_MATERIAL_BATCH); absent: one per request. */
  pushBatch?: number;
}

/** `v` as 4 big-endian bytes (the length prefixes of sealed files; block-seal.ts too). */
export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}

/** Offered bytes not yet a whole chunk. */
export interface Remainder {
  bytes: Buffer;
  provenance: Provenance;
  offeredAtMs: number;
  /**
   * The caller's tag of the newest offer these bytes include (the node: its block id), written
   * in the same file as the bytes: after a crash it tells which offers the spool already holds.
   */
  lastTag?: number;
}

export class Spool {
  private readonly dir: string;
  private readonly key: Buffer;
  private readonly fsync: boolean;

  constructor(dir: string, spoolKey: Uint8Array, opts: { fsync?: boolean } = {}) {
    if (spoolKey.length !== 32) {
      throw new ConfigError('DELIVERY_SPOOL_KEY', `spoolKey must be 32 bytes (AES-256), got ${spoolKey.length}; ` +
        'generate one with `openssl rand 32 > spool.key`');
    }
    this.dir = dir;
    this.key = Buffer.from(spoolKey);
    this.fsync = opts.fsync ?? true;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private seal(aad: string, plain: Buffer): Buffer {
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.key, nonce);
    c.setAAD(Buffer.from(aad));
    const ct = Buffer.concat([c.update(plain), c.final()]);
    return Buffer.concat([nonce, ct, c.getAuthTag()]);
  }

  private open(aad: string, sealed: Buffer, what: string): Buffer {
    if (sealed.length < 28) throw new SecurityError('DELIVERY_SPOOL_CORRUPT', `spool file ${what} is truncated`);
    const d = createDecipheriv('aes-256-gcm', this.key, sealed.subarray(0, 12));
    d.setAAD(Buffer.from(aad));
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    try {
      return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]);
    } catch (cause) {
      throw new SecurityError('DELIVERY_SPOOL_CORRUPT', `spool file ${what} fails authentication: wrong spool key ` +
        'or the file was altered; move it aside and check the spool key configuration', { cause });
    }
  }

  private writeAtomic(path: string, data: Buffer): void {
    const tmp = `${path}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, data);
      if (this.fsync) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  }

  private syncDir(path: string): void {
    if (!this.fsync) return;
    const fd = openSync(path, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /** Outstanding indices per batch file, and the batch file of each (stream, index). */
  private readonly batches = new Map<string, Set<number>>();
  private readonly where = new Map<string, string>();

  /** Writes the chunks (of one stream) durably in one batch file: one fsync, then one for the dir. */
  putChunks(chunks: SpooledChunk[], rest: Remainder): void {
    if (!chunks.length) return;
    const sid = chunks[0].keyStreamId;
    if (chunks.some((c) => c.keyStreamId !== sid)) {
      throw new ConfigError('DELIVERY_SPOOL_BATCH', 'a spool batch holds the chunks of one stream');
    }
    const d = join(this.dir, sid);
    mkdirSync(d, { recursive: true, mode: 0o700 });
    const first = chunks[0].index;
    const last = chunks[chunks.length - 1].index;
    const parts: Buffer[] = [u32(chunks.length)];
    for (const ch of chunks) {
      const header = Buffer.from(JSON.stringify({ provenance: ch.provenance, offeredAtMs: ch.offeredAtMs,
        expiresAtMs: ch.expiresAtMs }));
      parts.push(u32(ch.index), u32(header.length), header, u32(ch.key.length), ch.key);
    }
    const th = Buffer.from(JSON.stringify({ seq: ++this.seq, provenance: rest.provenance, offeredAtMs: rest.offeredAtMs, lastTag: rest.lastTag }));
    parts.push(u32(th.length), th, u32(rest.bytes.length), rest.bytes);
    const plain = Buffer.concat(parts);
    const name = `${first}-${last}.batch`;
    this.writeAtomic(join(d, name), this.seal(`batch:${sid}:${first}:${last}`, plain));
    plain.fill(0);
    this.syncDir(d);
    this.track(sid, name, chunks.map((c) => c.index));
  }

  private track(sid: string, name: string, indices: number[]): void {
    const file = join(sid, name);
    this.batches.set(file, new Set(indices));
    for (const i of indices) this.where.set(`${sid}:${i}`, file);
  }

  /** The chunk is settled (acknowledged, expired or dropped): its batch file goes when all are. */
  removeChunk(keyStreamId: string, index: number): void {
    const k = `${keyStreamId}:${index}`;
    const file = this.where.get(k);
    if (!file) return;
    this.where.delete(k);
    const set = this.batches.get(file);
    set?.delete(index);
    if (!set || set.size === 0) {
      this.batches.delete(file);
      rmSync(join(this.dir, file), { force: true });
    }
  }

  /** Every chunk on disk (after a restart). */
  loadChunks(): SpooledChunk[] {
    const out: SpooledChunk[] = [];
    for (const ent of readdirSync(this.dir, { withFileTypes: true })) {
      if (!ent.isDirectory()) continue;
      const sid = ent.name;
      for (const f of readdirSync(join(this.dir, sid))) {
        const m = /^(\d+)-(\d+)\.batch$/.exec(f);
        if (!m) continue;
        const plain = this.open(`batch:${sid}:${m[1]}:${m[2]}`, readFileSync(join(this.dir, sid, f)), `${sid}/${f}`);
        let off = 0;
        const next = () => {
          const v = plain.readUInt32BE(off);
          off += 4;
          return v;
        };
        const n = next();
        const idx: number[] = [];
        for (let i = 0; i < n; i++) {
          const index = next();
          const hl = next();
          const h = JSON.parse(plain.subarray(off, off + hl).toString('utf8')) as
            { provenance: Provenance; offeredAtMs: number; expiresAtMs: number };
          off += hl;
          const kl = next();
          const key = Buffer.from(plain.subarray(off, off + kl));
          off += kl;
          out.push({ keyStreamId: sid, index, key, provenance: h.provenance, offeredAtMs: h.offeredAtMs,
            expiresAtMs: h.expiresAtMs });
          idx.push(index);
        }
        const thl = next();
        const th = JSON.parse(plain.subarray(off, off + thl).toString('utf8')) as Remainder & { seq: number };
        off += thl;
        const rl = next();
        this.offerRemainder({ seq: th.seq, provenance: th.provenance, offeredAtMs: th.offeredAtMs, lastTag: th.lastTag,
          bytes: Buffer.from(plain.subarray(off, off + rl)) });
        plain.fill(0);
        this.track(sid, f, idx);
      }
    }
    return out.sort((a, b) => a.keyStreamId.localeCompare(b.keyStreamId) || a.index - b.index);
  }

  private seq = 0;
  private newest?: Remainder & { seq: number };

  private offerRemainder(r: Remainder & { seq: number }): void {
    this.seq = Math.max(this.seq, r.seq);
    if (!this.newest || r.seq > this.newest.seq) {
      this.newest?.bytes.fill(0);
      this.newest = r;
    } else r.bytes.fill(0);
  }

  /** Bytes offered but not yet a whole chunk, with the provenance and time of the first offer. */
  putPending(rest: Remainder): void {
    const header = Buffer.from(JSON.stringify({ seq: ++this.seq, provenance: rest.provenance,
      offeredAtMs: rest.offeredAtMs, lastTag: rest.lastTag }));
    const plain = Buffer.concat([u32(header.length), header, rest.bytes]);
    this.writeAtomic(join(this.dir, 'pending.bin'), this.seal('pending', plain));
    plain.fill(0);
  }

  /**
   * The current remainder: the newest of pending.bin and the trailers of the batches on disk.
   * Call after loadChunks().
   */
  loadPending(): Remainder | undefined {
    const p = join(this.dir, 'pending.bin');
    if (existsSync(p)) {
      const plain = this.open('pending', readFileSync(p), 'pending.bin');
      const hl = plain.readUInt32BE(0);
      const h = JSON.parse(plain.subarray(4, 4 + hl).toString('utf8')) as Remainder & { seq: number };
      this.offerRemainder({ seq: h.seq ?? 0, provenance: h.provenance, offeredAtMs: h.offeredAtMs, lastTag: h.lastTag,
        bytes: Buffer.from(plain.subarray(4 + hl)) });
      plain.fill(0);
    }
    const r = this.newest;
    this.newest = undefined;
    return r && { bytes: r.bytes, provenance: r.provenance, offeredAtMs: r.offeredAtMs, lastTag: r.lastTag };
  }

  saveStreams(streams: StreamRecord[]): void {
    this.writeAtomic(join(this.dir, 'state.json'), Buffer.from(JSON.stringify({ version: 1, streams })));
  }

  loadStreams(): StreamRecord[] {
    const p = join(this.dir, 'state.json');
    if (!existsSync(p)) return [];
    const v = JSON.parse(readFileSync(p, 'utf8')) as { version: number; streams: StreamRecord[] };
    return v.streams ?? [];
  }

  /** Zeroes the in-memory copy of the spool key (after the node closed). */
  destroy(): void {
    this.key.fill(0);
  }
}
