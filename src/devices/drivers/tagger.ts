/**
 * USB time-tagger driver generated from a profile: settings by vendor control transfers (request
 * numbers and value formats from the profile), tags by bulk IN transfers decoded by
 * TagRecordDecoder, in-band overflow/missed-event records passed through to the consumer.
 *
 * Streaming and back-pressure: the stream issues the next bulk transfer only when the consumer
 * asks for the next batch (`for await`), one transfer in flight. If the line goes away mid-stream,
 * the device goes 'disconnected' -> 'reconnecting' with back-off, and the stream either throws
 * TransportError('DISCONNECTED') at once (default; the consumer may start a new stream once the
 * state is 'ready'), or, with `resume: true`, yields an in-band ERROR record (channel -1, at the
 * last tag time) marking the gap, waits for the reconnect and carries on (throwing only if the
 * driver gives up). Nothing hangs: `stop()` also ends a stream waiting for a reconnect.
 */
import { DeviceError, TimeoutError, TransportError } from '../../errors.ts';
import { TagRecordDecoder } from '../tags.ts';
import type { UsbSettings, DeviceProfile } from '../profile.ts';
import type { DeviceIdentity, TagStream, TagStreamBatch, TagStreamOptions, TimeTagger, UsbBulkDevice } from '../types.ts';
import { UsbTransport } from '../transports/usb.ts';
import { checkValue, DeviceBase, type DriverOptions } from './base.ts';

export interface TaggerDriverOptions extends DriverOptions {
  /** The USB device, or how to find it again (called on every (re)connect). */
  device: UsbBulkDevice | (() => Promise<UsbBulkDevice>);
}

const SIZE = { i32: 4, i64: 8, f64: 8 } as const;

export class TimeTaggerDriver extends DeviceBase implements TimeTagger {
  readonly kind = 'time-tagger' as const;
  private readonly settings: UsbSettings;
  private readonly findDevice: () => Promise<UsbBulkDevice>;
  private transport: UsbTransport | undefined;
  private active: TagStream | undefined;

  constructor(opts: TaggerDriverOptions) {
    super(opts);
    if (opts.profile.transport.type !== 'usb') {
      throw new DeviceError('WRONG_TRANSPORT', `${opts.id}: profile ${opts.profile.name} is for ${opts.profile.transport.type}, not usb.`);
    }
    this.settings = opts.profile.transport;
    const d = opts.device;
    this.findDevice = typeof d === 'function' ? d : async () => d;
  }

  /** The USB transport in use (for diagnostics). */
  get usb(): UsbTransport | undefined {
    return this.transport;
  }

  private unsubscribe: (() => void) | undefined;

  protected async connect(): Promise<DeviceIdentity> {
    const dev = await this.findDevice();
    this.transport = new UsbTransport(dev, this.settings);
    await this.transport.open();
    this.unsubscribe?.();
    this.unsubscribe = dev.onDisconnect?.(() => this.lineLost(new Error('USB device unplugged')));
    return this.connectIdentity();
  }

  protected async disconnectTransport(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    await this.transport?.close();
  }

  protected async connectIdentity(): Promise<DeviceIdentity> {
    const raw = await this.call((t) => t.controlIn(this.settings.requests.identity, 0, 0, 128));
    const parts = new TextDecoder().decode(raw).split(',');
    if (parts.length !== 4) throw new DeviceError('BAD_IDENTITY', `${this.where}: identity string has ${parts.length} fields, expected vendor,model,serial,firmware.`);
    const [vendor, model, serial, firmware] = parts;
    return { vendor, model, serial, firmware };
  }

  /** Runs a transport call; a vanished device starts the reconnect loop. */
  private async call<T>(fn: (t: UsbTransport) => Promise<T>): Promise<T> {
    const t = this.transport;
    if (!t) throw new TransportError('NOT_CONNECTED', `${this.where} is not open.`);
    try {
      return await fn(t);
    } catch (err) {
      if (err instanceof TransportError && err.code === 'DISCONNECTED') this.lineLost(err);
      throw err;
    }
  }

  channels(): number[] {
    return [...(this.spec.parameters.delay.channels ?? [])];
  }

  async get(param: string): Promise<number> {
    const ref = this.resolve(param);
    this.requireReady(`read ${param}`);
    const c = ref.spec.control!;
    const raw = await this.call((t) => t.controlIn(c.request, 0, ref.channel ?? 0, SIZE[c.format]));
    if (raw.length < SIZE[c.format]) throw new DeviceError('BAD_REPLY', `${this.where}: '${param}' came back with ${raw.length} bytes, expected ${SIZE[c.format]}.`);
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const v = c.format === 'i32' ? dv.getInt32(0, true) : c.format === 'i64' ? Number(dv.getBigInt64(0, true)) : dv.getFloat64(0, true);
    return v / (ref.spec.scale ?? 1);
  }

  async set(param: string, value: number): Promise<void> {
    const ref = this.resolve(param);
    if (ref.spec.readonly) throw new DeviceError('READ_ONLY', `${this.where}: '${ref.name}' cannot be set.`);
    checkValue(this.where, param, ref.spec, value);
    this.requireReady(`set ${param}`);
    const c = ref.spec.control!;
    const data = new Uint8Array(SIZE[c.format]);
    const dv = new DataView(data.buffer);
    const dev = value * (ref.spec.scale ?? 1);
    if (c.format === 'i32') dv.setInt32(0, Math.round(dev), true);
    else if (c.format === 'i64') dv.setBigInt64(0, BigInt(Math.round(dev)), true);
    else dv.setFloat64(0, dev, true);
    try {
      await this.call((t) => t.controlOut(c.request, 0, ref.channel ?? 0, data));
    } catch (err) {
      if (err instanceof TransportError && err.code === 'USB_ERROR') {
        throw new DeviceError('DEVICE_REFUSED', `${this.where} refused ${param} = ${value} (${(err.cause as Error)?.message ?? err.message}).`, { cause: err });
      }
      throw err;
    }
  }

  setDelayPs(channel: number, delayPs: number) {
    return this.set(`delay:${channel}`, delayPs);
  }
  delayPs(channel: number) {
    return this.get(`delay:${channel}`);
  }
  setThresholdV(channel: number, volts: number) {
    return this.set(`trigger_level:${channel}`, volts);
  }
  setEdge(channel: number, edge: 0 | 1) {
    return this.set(`edge:${channel}`, edge);
  }
  setReferenceClock(source: 0 | 1) {
    return this.set('reference_clock', source);
  }

  override async close(): Promise<void> {
    await this.active?.stop().catch(() => undefined);
    await super.close();
  }

  startStream(options: TagStreamOptions = {}): TagStream {
    if (this.active) throw new DeviceError('STREAM_BUSY', `${this.where} is already streaming; stop that stream first.`);
    this.requireReady('start a tag stream');
    const transferBytes = options.transferBytes ?? this.settings.transferBytes;
    if (transferBytes % 16 || transferBytes <= 0) throw new DeviceError('BAD_VALUE', `${this.where}: transferBytes must be a positive multiple of 16, got ${transferBytes}.`);
    const wanted = options.channels ? new Set(options.channels) : undefined;
    const maxTags = options.maxTags ?? Infinity;
    let decoder = new TagRecordDecoder();
    const stats = { tags: 0, batches: 0, overflows: 0, missedEvents: 0, errors: 0 };
    let stopped = false;
    let started = false;
    const self = this;
    const req = this.settings.requests;

    const stopDevice = async () => {
      if (started && self.state === 'ready') await self.call((t) => t.controlOut(req.stop, 0, 0, new Uint8Array(0))).catch(() => undefined);
      started = false;
    };

    let seq = 0;
    let lastTimePs = 0n;
    let wake: (() => void) | undefined;
    const resume = !!options.resume;

    /** Resolves when the driver is ready again; rejects if it gave up or was closed. */
    const waitReady = (cause: Error) =>
      new Promise<void>((resolve, reject) => {
        // The reconnect timer is unref'ed (it must not keep a CLI alive); a consumer waiting here
        // does want the process to stay up until the device is back or given up.
        const keepAlive = setInterval(() => undefined, 1 << 30);
        const done = (fn: () => void) => {
          clearInterval(keepAlive);
          self.off('state', on);
          wake = undefined;
          fn();
        };
        const on = (c: { state: string }) => {
          if (c.state === 'ready') done(resolve);
          else if (c.state === 'failed' || c.state === 'closed') done(() => reject(cause));
        };
        wake = () => done(resolve);
        self.on('state', on);
        if (self.state === 'ready') done(resolve);
      });

    async function* iterate(): AsyncGenerator<TagStreamBatch> {
      try {
        await self.call((t) => t.controlOut(req.start, 0, 0, new Uint8Array(0)));
        started = true;
        while (!stopped && stats.tags < maxTags) {
          let raw: Uint8Array;
          try {
            raw = await self.call((t) => t.bulkIn(transferBytes));
          } catch (err) {
            if (err instanceof TimeoutError) continue; // no input: keep waiting (stop() ends it within one timeout)
            if (err instanceof TransportError && err.code === 'END_OF_STREAM') break; // a replayed recording ended
            if (resume && err instanceof TransportError && err.code === 'DISCONNECTED') {
              // Mark the gap in band (ERROR record, channel -1, at the last time seen), wait for
              // the reconnect, then restart the stream on the device.
              started = false;
              stats.errors++;
              yield { seq: seq++, timePs: new BigInt64Array(0), channel: new Uint8Array(0), events: [{ type: 1, index: 0, channel: -1, timePs: lastTimePs, missedEvents: 0 }] };
              await waitReady(err);
              if (stopped) break;
              decoder = new TagRecordDecoder();
              await self.call((t) => t.controlOut(req.start, 0, 0, new Uint8Array(0)));
              started = true;
              continue;
            }
            throw err;
          }
          let batch = decoder.push(raw);
          batch.seq = seq++;
          if (wanted) batch = filterChannels(batch, wanted);
          if (stats.tags + batch.timePs.length > maxTags) {
            const keep = maxTags - stats.tags;
            batch = { ...batch, timePs: batch.timePs.slice(0, keep), channel: batch.channel.slice(0, keep), events: batch.events.filter((e) => e.index <= keep) };
          }
          if (batch.timePs.length) lastTimePs = batch.timePs[batch.timePs.length - 1];
          stats.tags += batch.timePs.length;
          stats.batches++;
          for (const e of batch.events) {
            if (e.type === 2) stats.overflows++;
            else if (e.type === 4) stats.missedEvents += e.missedEvents;
            else if (e.type === 1) stats.errors++;
          }
          yield batch;
        }
      } finally {
        stopped = true;
        await stopDevice();
        self.active = undefined;
      }
    }

    const gen = iterate();
    const stream: TagStream = {
      stats,
      [Symbol.asyncIterator]: () => gen,
      async stop() {
        stopped = true;
        wake?.();
        // Ends a generator that is suspended at a yield; one that is inside a transfer ends when it returns.
        await gen.return(undefined).catch(() => undefined);
        await stopDevice();
        self.active = undefined;
      },
    };
    this.active = stream;
    return stream;
  }
}

function filterChannels(b: TagStreamBatch, wanted: Set<number>): TagStreamBatch {
  const keep: number[] = [];
  for (let i = 0; i < b.channel.length; i++) if (wanted.has(b.channel[i])) keep.push(i);
  if (keep.length === b.channel.length) return b;
  // Re-index the events onto the filtered tags.
  const newIndex = new Int32Array(b.channel.length + 1);
  let k = 0;
  for (let i = 0; i <= b.channel.length; i++) {
    newIndex[i] = k;
    if (i < b.channel.length && wanted.has(b.channel[i])) k++;
  }
  return {
    seq: b.seq,
    timePs: BigInt64Array.from(keep, (i) => b.timePs[i]),
    channel: Uint8Array.from(keep, (i) => b.channel[i]),
    events: b.events.map((e) => ({ ...e, index: newIndex[e.index] })),
  };
}

/** Builds the USB driver for a time-tagger profile. */
export function createUsbDriver(profile: DeviceProfile, opts: Omit<TaggerDriverOptions, 'profile'>): TimeTaggerDriver {
  return new TimeTaggerDriver({ ...opts, profile });
}
