/**
 * Consumer side of the detection-event stream: a ZeroMQ PULL socket; each multipart message is
 * checked (schema version, frame sizes), compared with the stream's previous sequence number, and
 * optionally handed to the native ingest (src/core/ingest.ts) as the received Buffers themselves.
 *
 * Nothing is silently mixed: every batch carries `flags` (producer marks + GAP / REORDERED /
 * ORDER_VIOLATION / RESTART found here) and `tainted` says whether a block containing it must be
 * marked. A REORDERED (duplicate or late) batch is surfaced but not ingested.
 * Concurrency: one `receive()` at a time (or one `for await` loop). Cancellation: `close()` ends a
 * pending receive / iteration.
 */
import { Pull } from 'zeromq';
import { receiveOpen } from './zmq-receive.ts';
import { ProtocolError, TransportError } from '../errors.ts';
import { Ingest, type IngestBatchResult } from '../core/ingest.ts';
import { decodeHeader, FLAG, LAYOUT, TAINT_FLAGS, type FrameHeader, type Layout } from './frame.ts';

export interface ConsumerOptions {
  endpoint: string;
  /** Connect (default) or bind. */
  bind?: boolean;
  /** Batches queued on the receiving side (default 8). */
  receiveHighWaterMark?: number;
  /** Native ingest fed with every in-order batch; null to only decode. Default: a new Ingest. */
  ingest?: Ingest | null;
  /** Run the native ingest on the libuv pool (receive() awaits it) instead of the JS thread. */
  offThread?: boolean;
}

export interface DetectionBatch {
  header: FrameHeader;
  streamId: string;
  seq: number;
  layout: Layout;
  count: number;
  /** Producer and consumer marks (FLAG). */
  flags: number;
  /** True if any flag in TAINT_FLAGS is set: the block this batch falls in must be marked. */
  tainted: boolean;
  /** Batches missing just before this one (0 unless GAP). */
  missingBefore: number;
  /** The data frame as received (little-endian int64 / float64 / uint64 per layout). */
  data: Buffer;
  /** The channel frame as received. */
  channels: Buffer;
  /** Result of the native ingest, if one is attached and the batch was in order. */
  ingest?: IngestBatchResult;
}

export interface ConsumerStats {
  batches: number;
  events: number;
  gaps: number;
  missingBatches: number;
  reordered: number;
  restarts: number;
  overflowBatches: number;
  backpressureBatches: number;
  droppedByProducer: number;
  orderViolations: number;
  refused: number;
}

/** A typed view of a little-endian 8-byte frame; copies only if the frame is misaligned. */
export function view64<T extends BigInt64Array | BigUint64Array | Float64Array>(
  ctor: { new (b: ArrayBufferLike, o: number, n: number): T; new (n: number): T }, buf: Uint8Array): T {
  const n = buf.byteLength >>> 3;
  if (buf.byteOffset % 8 === 0) return new ctor(buf.buffer, buf.byteOffset, n);
  const out = new ctor(n);
  new Uint8Array(out.buffer).set(buf.subarray(0, n * 8)); // misaligned: one copy, unavoidable for a typed view
  return out;
}

export class StreamConsumer implements AsyncIterable<DetectionBatch> {
  readonly stats: ConsumerStats = { batches: 0, events: 0, gaps: 0, missingBatches: 0, reordered: 0, restarts: 0,
    overflowBatches: 0, backpressureBatches: 0, droppedByProducer: 0, orderViolations: 0, refused: 0 };
  readonly ingest: Ingest | null;
  readonly #sock: Pull;
  readonly #next = new Map<string, number>();
  readonly #offThread: boolean;

  private constructor(sock: Pull, ingest: Ingest | null, offThread: boolean) {
    this.#sock = sock;
    this.ingest = ingest;
    this.#offThread = offThread;
  }

  static async open(opts: ConsumerOptions): Promise<StreamConsumer> {
    const sock = new Pull({ receiveHighWaterMark: opts.receiveHighWaterMark ?? 8, linger: 0 });
    try {
      if (opts.bind) await sock.bind(opts.endpoint);
      else sock.connect(opts.endpoint);
    } catch (cause) {
      sock.close();
      throw new TransportError('STREAM_ENDPOINT', `Cannot ${opts.bind ? 'bind' : 'connect'} the event stream consumer to ${opts.endpoint}: check the address.`, { cause });
    }
    return new StreamConsumer(sock, opts.ingest === undefined ? new Ingest() : opts.ingest, opts.offThread ?? false);
  }

  /**
   * Next batch. Throws ProtocolError (STREAM_SCHEMA_VERSION, STREAM_BAD_FRAME) for a message it
   * refuses; the consumer stays usable, the refused batch is counted and its seq becomes a GAP.
   */
  async receive(): Promise<DetectionBatch> {
    let frames: Buffer[];
    try {
      frames = await receiveOpen(this.#sock);
    } catch (cause) {
      throw new TransportError('STREAM_CLOSED', 'Event stream consumer closed or failed while receiving.', { cause });
    }
    if (!this.#offThread || !this.ingest) return this.process(frames);
    const c = this.#check(frames);
    let ingest: IngestBatchResult | undefined;
    if (c.inOrder) {
      if (c.flags & (FLAG.GAP | FLAG.RESTART)) this.ingest.resetOrder();
      ingest = c.header.layout === LAYOUT.TAGS_I64
        ? await this.ingest.tagsAsync(c.header.epochPs, frames[1], frames[2])
        : await this.ingest.pulsesAsync(frames[1], frames[2], c.header.layout === LAYOUT.PULSES_F64);
    }
    return this.#finish(c, frames, ingest);
  }

  /** Decodes and checks one multipart message, ingesting on this thread (tests, in-process use). */
  process(frames: Buffer[]): DetectionBatch {
    const c = this.#check(frames);
    let ingest: IngestBatchResult | undefined;
    if (c.inOrder && this.ingest) {
      if (c.flags & (FLAG.GAP | FLAG.RESTART)) this.ingest.resetOrder();
      ingest = c.header.layout === LAYOUT.TAGS_I64
        ? this.ingest.tags(c.header.epochPs, frames[1], frames[2])
        : this.ingest.pulses(frames[1], frames[2], c.header.layout === LAYOUT.PULSES_F64);
    }
    return this.#finish(c, frames, ingest);
  }

  #check(frames: Buffer[]): { header: FrameHeader; flags: number; missingBefore: number; inOrder: boolean } {
    let header: FrameHeader;
    try {
      if (frames.length !== 3) {
        throw new ProtocolError('STREAM_BAD_FRAME', `Detection batch has ${frames.length} frames, expected 3 (header, data, channels).`);
      }
      header = decodeHeader(frames[0]);
      if (frames[1].byteLength !== header.count * 8 || frames[2].byteLength !== header.count) {
        throw new ProtocolError('STREAM_BAD_FRAME', `Detection batch ${header.seq} of stream ${header.streamId} declares ${header.count} events but carries ${frames[1].byteLength} data and ${frames[2].byteLength} channel bytes (truncated?).`);
      }
    } catch (e) {
      this.stats.refused++;
      throw e;
    }
    let flags = header.flags;
    let missingBefore = 0;
    const expected = this.#next.get(header.streamId);
    let inOrder = true;
    if (expected !== undefined) {
      if (header.seq === 0 && expected > 0) {
        flags |= FLAG.RESTART;
        this.stats.restarts++;
      } else if (header.seq > expected) {
        flags |= FLAG.GAP;
        missingBefore = header.seq - expected;
        this.stats.gaps++;
        this.stats.missingBatches += missingBefore;
      } else if (header.seq < expected) {
        flags |= FLAG.REORDERED;
        inOrder = false;
        this.stats.reordered++;
      }
    } else if (header.seq > 0) {
      // First batch we see starts late: what came before is unknown to us, which is a gap too.
      flags |= FLAG.GAP;
      missingBefore = header.seq;
      this.stats.gaps++;
      this.stats.missingBatches += missingBefore;
    }
    if (inOrder) this.#next.set(header.streamId, header.seq + 1);
    return { header, flags, missingBefore, inOrder };
  }

  #finish(c: { header: FrameHeader; flags: number; missingBefore: number }, frames: Buffer[], ingest: IngestBatchResult | undefined): DetectionBatch {
    const { header, missingBefore } = c;
    let flags = c.flags;
    if (ingest && (ingest.orderViolations > 0 || ingest.invalid > 0)) {
      flags |= FLAG.ORDER_VIOLATION;
      this.stats.orderViolations += ingest.orderViolations;
    }
    this.stats.batches++;
    this.stats.events += header.count;
    if (flags & FLAG.OVERFLOW) this.stats.overflowBatches++;
    if (flags & FLAG.BACKPRESSURE) this.stats.backpressureBatches++;
    this.stats.droppedByProducer += header.droppedBefore;
    return {
      header, streamId: header.streamId, seq: header.seq, layout: header.layout, count: header.count, flags,
      tainted: (flags & TAINT_FLAGS) !== 0, missingBefore, data: frames[1], channels: frames[2], ingest,
    };
  }

  async *[Symbol.asyncIterator](): AsyncIterator<DetectionBatch> {
    while (!this.#sock.closed) {
      try {
        yield await this.receive();
      } catch (e) {
        if (this.#sock.closed) return;
        throw e;
      }
    }
  }

  close(): void {
    this.#sock.close();
  }
}
