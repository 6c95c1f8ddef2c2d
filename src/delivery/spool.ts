/**
 * The node's spool: key chunks waiting for their 201, encrypted at rest, surviving a restart.
 *
 * Layout under `dir`:
 *   state.json                       stream table (ids, QoS, next index, registration): no key bytes
 *   pending.bin                      bytes offered but not yet cut into a chunk (sealed)
 *   <key_stream_id>/<index>.chunk    one sealed chunk
 *
 * Sealed file = nonce (12) | AES-256-GCM ciphertext | tag (16); the associated data is the file's
 * role ("chunk:<id>:<index>" or "pending"), so a file renamed to another index fails to open.
 * Plaintext of a chunk = u32be header length | header JSON (provenance, times) | key bytes.
 * Files are written to a temporary name, fsynced, then renamed: a crash leaves the old or the new
 * file, never a torn one. Deleting a chunk file is enough to erase it: its bytes on disk are
 * ciphertext under a key that is not on disk with it (spoolKey comes from config/file).
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

  /** Writes the chunks durably (one fsync each, then one per directory). */
  putChunks(chunks: SpooledChunk[]): void {
    const dirs = new Set<string>();
    for (const ch of chunks) {
      const d = join(this.dir, ch.keyStreamId);
      if (!dirs.has(d)) {
        mkdirSync(d, { recursive: true, mode: 0o700 });
        dirs.add(d);
      }
      const header = Buffer.from(JSON.stringify({ provenance: ch.provenance, offeredAtMs: ch.offeredAtMs,
        expiresAtMs: ch.expiresAtMs }));
      const len = Buffer.alloc(4);
      len.writeUInt32BE(header.length);
      const plain = Buffer.concat([len, header, ch.key]);
      this.writeAtomic(join(d, `${ch.index}.chunk`), this.seal(`chunk:${ch.keyStreamId}:${ch.index}`, plain));
      plain.fill(0);
    }
    for (const d of dirs) this.syncDir(d);
  }

  removeChunk(keyStreamId: string, index: number): void {
    rmSync(join(this.dir, keyStreamId, `${index}.chunk`), { force: true });
  }

  /** Every chunk on disk (after a restart). */
  loadChunks(): SpooledChunk[] {
    const out: SpooledChunk[] = [];
    for (const ent of readdirSync(this.dir, { withFileTypes: true })) {
      if (!ent.isDirectory()) continue;
      const sid = ent.name;
      for (const f of readdirSync(join(this.dir, sid))) {
        const m = /^(\d+)\.chunk$/.exec(f);
        if (!m) continue;
        const index = Number(m[1]);
        const plain = this.open(`chunk:${sid}:${index}`, readFileSync(join(this.dir, sid, f)), `${sid}/${f}`);
        const hl = plain.readUInt32BE(0);
        const h = JSON.parse(plain.subarray(4, 4 + hl).toString('utf8')) as
          { provenance: Provenance; offeredAtMs: number; expiresAtMs: number };
        const key = Buffer.from(plain.subarray(4 + hl));
        plain.fill(0);
        out.push({ keyStreamId: sid, index, key, provenance: h.provenance, offeredAtMs: h.offeredAtMs,
          expiresAtMs: h.expiresAtMs });
      }
    }
    return out.sort((a, b) => a.keyStreamId.localeCompare(b.keyStreamId) || a.index - b.index);
  }

  /** Bytes offered but not yet a whole chunk, with the provenance and time of the first offer. */
  putPending(bytes: Buffer, provenance: Provenance, offeredAtMs: number): void {
    const p = join(this.dir, 'pending.bin');
    if (!bytes.length) {
      rmSync(p, { force: true });
      return;
    }
    const header = Buffer.from(JSON.stringify({ provenance, offeredAtMs }));
    const len = Buffer.alloc(4);
    len.writeUInt32BE(header.length);
    const plain = Buffer.concat([len, header, bytes]);
    this.writeAtomic(p, this.seal('pending', plain));
    plain.fill(0);
  }

  loadPending(): { bytes: Buffer; provenance: Provenance; offeredAtMs: number } | undefined {
    const p = join(this.dir, 'pending.bin');
    if (!existsSync(p)) return undefined;
    const plain = this.open('pending', readFileSync(p), 'pending.bin');
    const hl = plain.readUInt32BE(0);
    const h = JSON.parse(plain.subarray(4, 4 + hl).toString('utf8')) as { provenance: Provenance; offeredAtMs: number };
    const bytes = Buffer.from(plain.subarray(4 + hl));
    plain.fill(0);
    return { bytes, provenance: h.provenance, offeredAtMs: h.offeredAtMs };
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
