/**
 * Producer side of the detection-event stream: a ZeroMQ PUSH socket sending one multipart
 * message per batch (wire format in ./frame.ts).
 *
 * Back-pressure: every send is first tried without blocking. If the consumer's queues are full
 * (send high-water mark reached, or no consumer connected) the batch is either
 * - 'wait' (default): sent as soon as there is room, marked BACKPRESSURE so the consumer knows
 *   the producer stalled (a real tagger's own buffer may have overflowed meanwhile), or
 * - 'drop': discarded; its sequence number is still consumed, so the consumer sees a GAP, and
 *   the next batch sent carries DROPPED_BEFORE with the number dropped.
 * Concurrency: one send at a time (await each `send*` before the next, as zeromq.js requires);
 * the typed arrays passed in must not be modified until the returned promise resolves (zeromq.js
 * sends frames over 128 B without copying).
 */
import { Push } from 'zeromq';
import { TransportError, TimeoutError } from '../errors.ts';
import type { TagEvent } from '../devices/types.ts';
import { encodeHeader, flagsOfEvents, FLAG, LAYOUT, STREAM_SCHEMA_VERSION, type Layout } from './frame.ts';

export interface PublisherOptions {
  /** ZeroMQ endpoint: inproc://name, ipc:///path, tcp://host:port. */
  endpoint: string;
  /** Bind (default) or connect to `endpoint`. */
  bind?: boolean;
  /** Identifies the stream in every header (e.g. 'bob/tagger0'). */
  streamId: string;
  /** Batches queued per consumer before back-pressure applies (default 8). */
  sendHighWaterMark?: number;
  onBackpressure?: 'wait' | 'drop';
  /** With 'wait': give up (TimeoutError) after this long; default -1 = wait forever. */
  waitTimeoutMs?: number;
}

export interface PublisherStats {
  batches: number;
  events: number;
  /** Sends that found the high-water mark reached. */
  backpressure: number;
  dropped: number;
}

type Send = 'sent' | 'dropped';

function viewOf(a: ArrayBufferView): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

export class StreamPublisher {
  readonly streamId: string;
  readonly stats: PublisherStats = { batches: 0, events: 0, backpressure: 0, dropped: 0 };
  readonly #sock: Push;
  readonly #policy: 'wait' | 'drop';
  readonly #waitMs: number;
  #seq = 0;
  #droppedSinceLast = 0;

  private constructor(sock: Push, opts: PublisherOptions) {
    this.#sock = sock;
    this.streamId = opts.streamId;
    this.#policy = opts.onBackpressure ?? 'wait';
    this.#waitMs = opts.waitTimeoutMs ?? -1;
  }

  static async open(opts: PublisherOptions): Promise<StreamPublisher> {
    const sock = new Push({ sendHighWaterMark: opts.sendHighWaterMark ?? 8, linger: 0 });
    try {
      if (opts.bind ?? true) await sock.bind(opts.endpoint);
      else sock.connect(opts.endpoint);
    } catch (cause) {
      sock.close();
      throw new TransportError('STREAM_ENDPOINT', `Cannot ${opts.bind ?? true ? 'bind' : 'connect'} the event stream to ${opts.endpoint}: check the address is free and well-formed.`, { cause });
    }
    return new StreamPublisher(sock, opts);
  }

  /** The endpoint actually bound (resolves tcp://host:* to the port the OS chose). */
  get endpoint(): string | null {
    return this.#sock.lastEndpoint;
  }

  /** Next sequence number to be used. */
  get seq(): number {
    return this.#seq;
  }

  /**
   * Sends raw tags: `relTimesPs[i]` ps after `epochPs` (pass 0n with absolute times), on
   * `channels[i]`, with the tagger's in-band records (overflow, missed events) of this batch.
   */
  sendTags(epochPs: bigint, relTimesPs: BigInt64Array, channels: Uint8Array, events: readonly TagEvent[] = []): Promise<Send> {
    if (relTimesPs.length !== channels.length) throw new RangeError(`sendTags: ${relTimesPs.length} times but ${channels.length} channels`);
    const first = relTimesPs.length ? epochPs + relTimesPs[0] : epochPs;
    return this.#send(LAYOUT.TAGS_I64, epochPs, first, viewOf(relTimesPs), channels, events);
  }

  /** Sends pulse-indexed detections (Float64Array of integer indices, or BigUint64Array). */
  sendPulses(indices: Float64Array | BigUint64Array, channels: Uint8Array): Promise<Send> {
    if (indices.length !== channels.length) throw new RangeError(`sendPulses: ${indices.length} indices but ${channels.length} channels`);
    const f64 = indices instanceof Float64Array;
    const first = indices.length ? (f64 ? BigInt(indices[0] as number) : (indices[0] as bigint)) : 0n;
    return this.#send(f64 ? LAYOUT.PULSES_F64 : LAYOUT.PULSES_U64, 0n, first, viewOf(indices), channels, []);
  }

  async #send(layout: Layout, epochPs: bigint, firstPs: bigint, data: Buffer, channels: Uint8Array, events: readonly TagEvent[]): Promise<Send> {
    const seq = this.#seq++;
    let flags = flagsOfEvents(events);
    const dropped = this.#droppedSinceLast;
    if (dropped > 0) flags |= FLAG.DROPPED_BEFORE;
    const frames = (f: number): Buffer[] => [
      encodeHeader({ version: STREAM_SCHEMA_VERSION, streamId: this.streamId, seq, epochPs, firstPs, count: channels.length, layout, flags: f, droppedBefore: dropped, events: [...events] }),
      data, viewOf(channels)];
    this.#sock.sendTimeout = 0;
    try {
      await this.#sock.send(frames(flags));
      return this.#sent(channels.length);
    } catch (err) {
      if ((err as { code?: string }).code !== 'EAGAIN') throw new TransportError('STREAM_SEND', `Event stream send failed: ${(err as Error).message}`, { cause: err });
    }
    this.stats.backpressure++;
    if (this.#policy === 'drop') {
      this.#droppedSinceLast++;
      this.stats.dropped++;
      return 'dropped';
    }
    this.#sock.sendTimeout = this.#waitMs;
    try {
      await this.#sock.send(frames(flags | FLAG.BACKPRESSURE));
    } catch (err) {
      this.#seq = seq + 1;
      this.#droppedSinceLast++;
      this.stats.dropped++;
      if ((err as { code?: string }).code === 'EAGAIN') {
        throw new TimeoutError('STREAM_BACKPRESSURE_TIMEOUT', `Event stream consumer did not take batch ${seq} within ${this.#waitMs} ms: the consumer is stalled or gone; the batch was dropped and the next one is marked.`, { cause: err });
      }
      throw new TransportError('STREAM_SEND', `Event stream send failed: ${(err as Error).message}`, { cause: err });
    }
    return this.#sent(channels.length);
  }

  #sent(n: number): Send {
    this.#droppedSinceLast = 0;
    this.stats.batches++;
    this.stats.events += n;
    return 'sent';
  }

  /**
   * Closes the socket. By default queued batches are discarded (linger 0: a tagger must not
   * block on exit); pass `lingerMs` to let ZeroMQ deliver what is queued first, e.g. at the end
   * of a replay.
   */
  close(lingerMs = 0): void {
    this.#sock.linger = lingerMs;
    this.#sock.close();
  }
}
