/**
 * Splits what a SCPI-style instrument sends into reply frames: text lines ending in the delimiter,
 * and IEEE 488.2 definite-length arbitrary blocks (binary read-back, e.g. the photon source's
 * choice record), which may contain the delimiter byte anywhere:
 *
 * ```text
 *   text line:  ASCII ... <delimiter>
 *   block:      '#' <d: one digit 1-9> <d decimal digits: length L> <L bytes> <delimiter>
 *               e.g.  # 4 0 0 1 2 <12 bytes> \n
 * ```
 *
 * A reply starting with '#' and a digit 1-9 is a block (no text reply of the profiles starts so).
 * A block whose L bytes are not followed by the delimiter is reported as `bad-block` (a framing
 * slip or a device that miscounted); the bytes read in its place are dropped and parsing goes on
 * (a following garbled line is then refused as such by the transport).
 * Blocks are copied once, into a buffer of their announced size, as the bytes arrive.
 */
import { Transform, type TransformCallback } from 'node:stream';

export type ScpiFrame = { kind: 'line'; bytes: Buffer } | { kind: 'block'; bytes: Buffer } | { kind: 'bad-block'; reason: string };

/** Largest block accepted (a longer announcement is taken as line noise). */
export const MAX_BLOCK_BYTES = 256 * 1024 * 1024;

export class ScpiFrameParser extends Transform {
  private buf: Buffer = Buffer.alloc(0);
  private block: { out: Buffer; have: number } | undefined;
  /** After a block's bytes: the delimiter bytes seen so far. */
  private trailer: { out: Buffer; seen: Buffer } | undefined;
  private readonly delim: Buffer;

  constructor(delimiter: string) {
    super({ readableObjectMode: true });
    this.delim = Buffer.from(delimiter, 'latin1');
  }

  /** Bytes of an incomplete frame held (what a truncated reply left behind). */
  pendingBytes(): number {
    return this.buf.length + (this.block?.have ?? 0) + (this.trailer ? this.trailer.out.length + this.trailer.seen.length : 0);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.feed(chunk);
    cb();
  }

  private feed(chunk: Buffer): void {
    let c = chunk;
    while (c.length) {
      if (this.block) {
        const b = this.block;
        const n = Math.min(c.length, b.out.length - b.have);
        c.copy(b.out, b.have, 0, n);
        b.have += n;
        c = c.subarray(n);
        if (b.have === b.out.length) {
          this.block = undefined;
          this.trailer = { out: b.out, seen: Buffer.alloc(0) };
        }
        continue;
      }
      if (this.trailer) {
        const t = this.trailer;
        const need = this.delim.length - t.seen.length;
        const got = c.subarray(0, need);
        t.seen = Buffer.concat([t.seen, got]);
        c = c.subarray(got.length);
        if (!this.delim.subarray(0, t.seen.length).equals(t.seen)) {
          this.trailer = undefined;
          this.push({ kind: 'bad-block', reason: `a block of ${t.out.length} bytes is not followed by the line delimiter` } satisfies ScpiFrame);
          continue;
        }
        if (t.seen.length === this.delim.length) {
          this.trailer = undefined;
          this.push({ kind: 'block', bytes: t.out } satisfies ScpiFrame);
        }
        continue;
      }
      this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
      c = Buffer.alloc(0);
      for (;;) {
        if (this.buf.length >= 1 && this.buf[0] === 0x23 /* # */) {
          if (this.buf.length < 2) break;
          const d = this.buf[1] - 0x30;
          if (d >= 1 && d <= 9) {
            if (this.buf.length < 2 + d) break;
            const digits = this.buf.subarray(2, 2 + d).toString('latin1');
            const len = /^\d+$/.test(digits) ? Number(digits) : NaN;
            if (Number.isSafeInteger(len) && len <= MAX_BLOCK_BYTES) {
              this.block = { out: Buffer.allocUnsafe(len), have: 0 };
              c = this.buf.subarray(2 + d);
              this.buf = Buffer.alloc(0);
              if (len === 0) {
                this.block = undefined;
                this.trailer = { out: Buffer.alloc(0), seen: Buffer.alloc(0) };
              }
              break;
            }
          }
        }
        const i = this.buf.indexOf(this.delim);
        if (i < 0) break;
        const line = this.buf.subarray(0, i);
        this.buf = this.buf.subarray(i + this.delim.length);
        this.push({ kind: 'line', bytes: Buffer.from(line) } satisfies ScpiFrame);
      }
    }
  }
}

/** The IEEE 488.2 definite-length header for `length` bytes (`#<d><length>`). */
export function blockHeader(length: number): Buffer {
  const digits = String(length);
  if (digits.length > 9) throw new RangeError(`block of ${length} bytes is too long for a definite-length header`);
  return Buffer.from(`#${digits.length}${digits}`, 'latin1');
}
