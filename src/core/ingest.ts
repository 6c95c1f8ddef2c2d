/**
 * Typed facade over the native detection-batch ingest (native/node/src/stream.rs): the first
 * consumer of event-stream batches inside the post-processing core. Batches are handed over as
 * the ZeroMQ frame Buffers themselves (napi borrows them: no copy).
 *
 * Concurrency: one ingest per stream. The sync calls run on the JS thread (~1 ns/event) and
 * return when done; the *Async calls run on the libuv pool (for a JS thread with other work) and
 * must be awaited one after the other, buffers untouched until they resolve.
 */
import { native } from './native.ts';
import { ProtocolError } from '../errors.ts';

export interface IngestBatchResult {
  count: number;
  /** Events earlier than the event before them (within the batch or across batches). */
  orderViolations: number;
  /** Pulse indices that are not non-negative integers (float layout only). */
  invalid: number;
}

type NativeIngest = InstanceType<ReturnType<typeof native>['StreamIngest']>;

function mapErr(err: unknown): never {
  const msg = err instanceof Error ? err.message : String(err);
  const m = /^([A-Z_]+): (.*)$/s.exec(msg);
  throw new ProtocolError(m ? m[1] : 'STREAM_BAD_BATCH', m ? m[2] : msg, { cause: err });
}

export class Ingest {
  readonly #n: NativeIngest;
  /**
   * @param binShift histogram bin width is 2^binShift ps (tags) or pulses (pulse layouts)
   * @param bins number of histogram bins per channel, a power of two <= 65536; the histogram is
   *   of time modulo bins * 2^binShift (the phase within a power-of-two period).
   */
  constructor(opts: { binShift?: number; bins?: number } = {}) {
    try {
      this.#n = new (native().StreamIngest)(opts.binShift ?? 6, opts.bins ?? 64);
    } catch (e) {
      mapErr(e);
    }
  }
  /** Layout 1: `times` = count x int64 LE ps relative to epochPs; `channels` = count bytes. */
  tags(epochPs: bigint, times: Uint8Array, channels: Uint8Array): IngestBatchResult {
    try {
      return this.#n.ingestTags(epochPs, times, channels);
    } catch (e) {
      mapErr(e);
    }
  }
  /** `tags` on the libuv thread pool; keep the buffers untouched until it resolves; await in order. */
  async tagsAsync(epochPs: bigint, times: Uint8Array, channels: Uint8Array): Promise<IngestBatchResult> {
    try {
      return await this.#n.ingestTagsAsync(epochPs, times, channels);
    } catch (e) {
      mapErr(e);
    }
  }
  /** `pulses` on the libuv thread pool. */
  async pulsesAsync(indices: Uint8Array, channels: Uint8Array, float: boolean): Promise<IngestBatchResult> {
    try {
      return await this.#n.ingestPulsesAsync(indices, channels, float);
    } catch (e) {
      mapErr(e);
    }
  }
  /** Layouts 2 (float64, `float` true) and 3 (uint64): pulse indices LE, one channel byte each. */
  pulses(indices: Uint8Array, channels: Uint8Array, float: boolean): IngestBatchResult {
    try {
      return this.#n.ingestPulses(indices, channels, float);
    } catch (e) {
      mapErr(e);
    }
  }
  /** Forget the ordering reference (after a gap or a restart). */
  resetOrder(): void {
    this.#n.resetOrder();
  }
  get events(): number { return this.#n.events; }
  get batches(): number { return this.#n.batches; }
  get orderViolations(): number { return this.#n.orderViolations; }
  get invalid(): number { return this.#n.invalid; }
  get lastTimePs(): bigint | null { return this.#n.lastTimePs ?? null; }
  /** Events counted per channel (index = channel 0..255). */
  channelCounts(): number[] { return this.#n.channelCounts(); }
  histogram(channel: number): number[] {
    try {
      return this.#n.histogram(channel);
    } catch (e) {
      mapErr(e);
    }
  }
}
