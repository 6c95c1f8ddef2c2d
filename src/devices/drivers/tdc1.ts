/**
 * Driver of the S-Fifteen TDC1 timestamp unit (profile s15-tdc1): a time-tagger on a serial line
 * that carries both its text commands and, in timestamp mode, its binary word stream.
 *
 * Commands (as the vendor's pyS15 driver sends them): settings through the profile's templates
 * (`time {value}`, `REFCLK {value}`, `{sign} {value}` for the threshold: NEG below 0, POS from
 * 0), which the unit does not acknowledge, so every set is read back and a value that did not
 * take is a DeviceError('DEVICE_REFUSED'). `counts()` / `pairs()` run a singles / coincidence
 * count (`singles;counts?` after the integration time). The integration time comes back as a
 * signed 16-bit number (the vendor driver's "wrong TDC1 return type"): corrected here.
 *
 * Stream (`startStream`): `timestamp`, `INPKT`, `time 0`, then `counts?` starts the words; the
 * line goes to raw mode (SerialLineTransport.rawReader) and each read is decoded by
 * Tdc1Decoder (roll-overs, time-keeping words, 2-byte slips marked in band). Back-pressure: the
 * next read is taken only when the consumer asks for the next batch; the transport pauses the
 * tty beyond its high-water mark (the unit's own buffer holds the rest). `stop()` / `break`
 * sends `abort` and re-synchronises the line (below); what was still on the line is decoded and
 * counted in `drainedTags`, not delivered (the consumer asked to stop), then the line returns to
 * text mode. A unit that
 * sends nothing for `streamTimeoutMs` (it sends a time-keeping word at least every 134 ms while
 * streaming) ends the stream with TimeoutError('NO_DATA'); a line that goes away with
 * TransportError('DISCONNECTED') (and the reconnect loop of drivers/base.ts).
 *
 * Host-side parameters: `delay` (per input, added to tag times; with unequal delays tags are
 * re-ordered, holding back those a later read could still precede) and `edge` (read-only: the
 * threshold's sign decides it). Channels are inputs - 1 (0..3).
 *
 * Re-synchronising the line after `abort` (`resync`): text replies and stream words share the
 * line and carry no framing, so "quiet for a while" does not prove the stream's tail is over (a
 * loaded host or a full USB/pty buffer can hold it back longer than any quiet period; seen in CI).
 * The driver drains until quiet, then sends a sentinel query (`*IDN?`) and discards everything up
 * to a complete, clean text line that matches the profile's identity pattern: the unit answers in
 * order, so nothing of the stream can follow that reply. No such line (a tail mixed into the
 * reply, nothing at all) is retried once. It runs on open (a unit left streaming by a crashed
 * program would otherwise answer `*IDN?` with timestamp words), at the end of every stream, and
 * when a text query gets a garbled reply: one re-sync and one retry instead of an error.
 */
import { DeviceError, ProtocolError, TimeoutError, TransportError } from '../../errors.ts';
import type { ParameterSpec, SerialSettings } from '../profile.ts';
import type { DeviceIdentity, TagEvent, TagStream, TagStreamBatch, TagStreamOptions, TimeTagger } from '../types.ts';
import type { RawReader, SerialLineTransport } from '../transports/serial.ts';
import { Tdc1Decoder, type Tdc1DecoderStats } from '../tdc1-words.ts';
import { checkValue, DeviceBase, type DriverOptions } from './base.ts';

export interface Tdc1DriverOptions extends DriverOptions {
  transport: SerialLineTransport;
  /** Called before every (re)connect, e.g. to start an emulated unit on its pty. */
  prepare?: () => Promise<void>;
  /** Silence that ends a stream as a dead unit (default 1000 ms: 7 time-keeping periods). */
  streamTimeoutMs?: number;
}

const NUMBER = /^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$/;

function decimalsFor(s: ParameterSpec): number {
  if (s.decimals !== undefined) return s.decimals;
  for (let d = 0; d < 12; d++) {
    const x = s.step * 10 ** d;
    if (Math.abs(x - Math.round(x)) < 1e-9 * Math.max(1, x)) return d;
  }
  return 12;
}

export class Tdc1Driver extends DeviceBase implements TimeTagger {
  readonly kind = 'time-tagger' as const;
  readonly transport: SerialLineTransport;
  private readonly prepare: (() => Promise<void>) | undefined;
  private readonly streamTimeoutMs: number;
  private readonly delays = new Map<number, number>();
  private active: TagStream | undefined;
  /** Decoder figures of the last stream (words, time-keeping words, re-alignments, ...). */
  lastStreamStats: (Tdc1DecoderStats & { drainedTags: number }) | undefined;
  private readonly onClose = (err?: Error) => this.lineLost(err);

  constructor(opts: Tdc1DriverOptions) {
    super(opts);
    if (opts.profile.transport.type !== 'serial') throw new DeviceError('WRONG_TRANSPORT', `${opts.id}: profile ${opts.profile.name} is for ${opts.profile.transport.type}, not serial.`);
    this.transport = opts.transport;
    this.prepare = opts.prepare;
    this.streamTimeoutMs = opts.streamTimeoutMs ?? 1000;
    for (const c of this.channels()) this.delays.set(c, 0);
  }

  private get settings(): SerialSettings {
    return this.spec.transport as SerialSettings;
  }

  protected async connect(): Promise<DeviceIdentity> {
    await this.prepare?.();
    this.transport.off('close', this.onClose);
    await this.transport.open();
    this.transport.on('close', this.onClose);
    await this.quiesce();
    return this.connectIdentity();
  }

  protected async disconnectTransport(): Promise<void> {
    this.transport.off('close', this.onClose);
    await this.transport.close();
  }

  /**
   * On open: re-synchronises the line (a wrong or silent device is left to `connectIdentity`,
   * which names what it found).
   */
  private async quiesce(): Promise<void> {
    await this.resync();
  }

  /**
   * `abort`, drain until quiet, sentinel `*IDN?`, discard up to its reply (see the file comment);
   * up to two retries when the reply was not found in a clean line. Uses `reader` (a stream's) or a raw
   * reader of its own. Bytes before the sentinel's reply go to `onStale`. Returns the last
   * attempt's outcome: 'identity' (in step), 'other-text' (a clean line, not a TDC1 identity),
   * 'silent' (nothing came back), 'garbled' (no clean line: still out of step).
   */
  private async resync(reader?: RawReader, onStale?: (b: Buffer) => void): Promise<SettleOutcome> {
    const own = !reader;
    const r = reader ?? this.transport.rawReader();
    const identity = new RegExp(this.spec.identity!.pattern);
    const replyMs = Math.max(this.settings.timeoutMs, 500) * 2;
    let outcome: SettleOutcome = 'garbled';
    try {
      // Three attempts: under load a held-back tail can outlast two (the CI flake "no garbled
      // reply reached a query" took a third, in the next query's re-sync).
      for (let attempt = 0; attempt < 3; attempt++) {
        outcome = await settle(this.transport, r, identity, replyMs, onStale, attempt + 1);
        this.resyncStats.attempts++;
        if (outcome === 'identity' || outcome === 'other-text') break;
        // A silent line on open: nothing to re-synchronise; the identity query reports it.
        if (outcome === 'silent' && own && this.state !== 'ready') break;
      }
    } finally {
      if (own) r.close();
    }
    if (outcome !== 'identity') this.resyncStats.failed++;
    return outcome;
  }

  /** Re-synchronisations of the line (attempts of `resync`, and those that did not end in step). */
  readonly resyncStats = { attempts: 0, failed: 0, garbledReplies: 0 };

  /**
   * A text query; a garbled reply (stream words still on the line) triggers one re-sync and one
   * retry of `run` instead of an error.
   */
  private async withResync<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (!(err instanceof ProtocolError && err.code === 'GARBLED_REPLY') || this.active) throw this.named(err);
      this.resyncStats.garbledReplies++;
      const outcome = await this.resync().catch(() => 'garbled' as const);
      try {
        return await run();
      } catch (again) {
        throw this.named(again, `A re-sync of the line (abort, drain, '*IDN?') did not help (${outcome}): check the baud rate and cable, power-cycle the TDC1, then open it again.`);
      }
    }
  }

  protected async connectIdentity(): Promise<DeviceIdentity> {
    const idn = this.spec.identity!;
    let reply: string;
    try {
      reply = await this.withResync(() => this.transport.query(idn.query));
    } catch (err) {
      throw this.named(err, `Is a TDC1 on ${this.transport.description}, powered and free (no other program streaming from it)?`);
    }
    const m = new RegExp(idn.pattern).exec(reply);
    if (!m?.groups) {
      throw new DeviceError('WRONG_IDENTITY', `${this.where}: the device on ${this.transport.description} answers '${idn.query}' with ${JSON.stringify(reply.slice(0, 80))}, not a TDC1 identity. Check which port the TDC1 is on (\`qkd devices\`), or the profile's identity pattern.`);
    }
    const g = m.groups;
    return { vendor: g.vendor, model: g.model, serial: g.serial, firmware: g.firmware };
  }

  /** Prefixes a transport/protocol error with this device, keeping its class and code. */
  private named(err: unknown, hint = ''): Error {
    if (!(err instanceof TimeoutError || err instanceof ProtocolError || err instanceof TransportError)) return err as Error;
    if (err.message.startsWith(this.where)) return hint ? new (err.constructor as new (code: string, message: string, options?: { cause?: unknown }) => Error)(err.code, `${err.message} ${hint}`, { cause: err }) : err;
    const Cls = err.constructor as new (code: string, message: string, options?: { cause?: unknown }) => Error;
    return new Cls(err.code, `${this.where}: ${err.message}${hint ? ' ' + hint : ''}`, { cause: err });
  }

  channels(): number[] {
    return [...(this.spec.parameters.delay?.channels ?? [0, 1, 2, 3])];
  }

  private fill(template: string, ref: { channel?: number }, value?: number, spec?: ParameterSpec): string {
    let out = template.replaceAll('{ch}', String(ref.channel ?? ''));
    if (value !== undefined && spec) {
      out = out.replaceAll('{sign}', value < 0 ? 'NEG' : 'POS').replaceAll('{value}', (value * (spec.scale ?? 1)).toFixed(decimalsFor(spec)));
    }
    return out;
  }

  async get(param: string): Promise<number> {
    const ref = this.resolve(param);
    this.requireReady(`read ${param}`);
    if (ref.spec.host) {
      if (ref.name === 'delay') return this.delays.get(ref.channel!) ?? 0;
      if (ref.name === 'edge') return (await this.get('trigger_level')) < 0 ? 1 : 0;
      throw new DeviceError('UNKNOWN_PARAMETER', `${this.where}: the driver does not keep '${ref.name}'.`);
    }
    const command = this.fill(ref.spec.get!, ref);
    let reply: string;
    try {
      reply = await this.withResync(() => this.transport.query(command));
    } catch (err) {
      throw this.named(err);
    }
    const m = (ref.spec.reply ? new RegExp(ref.spec.reply) : NUMBER).exec(reply);
    let v = m ? Number(m[1]) : NaN;
    if (!Number.isFinite(v)) {
      throw new ProtocolError('BAD_REPLY', `${this.where}: reply to '${command}' is not a number (got ${JSON.stringify(reply.slice(0, 80))}). The device or the profile's reply pattern is wrong.`);
    }
    // The unit answers `time?` as a signed 16-bit number (vendor driver: "Fixing wrong TDC1 return type").
    if (ref.name === 'integration_time' && v < 0) v += 65536;
    return v / (ref.spec.scale ?? 1);
  }

  async set(param: string, value: number): Promise<void> {
    const ref = this.resolve(param);
    if (ref.spec.readonly) {
      throw new DeviceError('READ_ONLY', `${this.where}: '${ref.name}' cannot be set${ref.name === 'edge' ? ': the TDC1 triggers on the edge its threshold sign implies; set trigger_level (negative = falling)' : ''}.`);
    }
    checkValue(this.where, param, ref.spec, value);
    this.requireReady(`set ${param}`);
    if (ref.spec.host) {
      this.delays.set(ref.channel!, value);
      return;
    }
    if (this.active) throw new DeviceError('STREAM_BUSY', `${this.where} is streaming; stop the stream before changing ${param}.`);
    const command = this.fill(ref.spec.set!, ref, value, ref.spec);
    try {
      await this.transport.write(command);
    } catch (err) {
      throw this.named(err);
    }
    // The unit does not acknowledge sets: read the value back.
    if (!ref.spec.get) return;
    const back = await this.get(param);
    const tol = Math.max(ref.spec.step / 2, 1e-9 * Math.abs(value));
    if (Math.abs(back - value) > tol) {
      throw new DeviceError('DEVICE_REFUSED', `${this.where} did not take ${param} = ${value} ('${command}'); it reads back ${back}. Check the value against the TDC1's limits and 'qkd device ${this.id} get'.`);
    }
  }

  setDelayPs(channel: number, delayPs: number) {
    return this.set(`delay:${channel}`, delayPs);
  }
  delayPs(channel: number) {
    return this.get(`delay:${channel}`);
  }
  /** One threshold for all inputs: `channel` only selects which input's limits apply. */
  setThresholdV(channel: number, volts: number) {
    void channel;
    return this.set('trigger_level', volts);
  }
  async setEdge(channel: number, edge: 0 | 1): Promise<void> {
    if ((await this.get(`edge:${channel}`)) === edge) return;
    throw new DeviceError('READ_ONLY', `${this.where}: the TDC1 triggers on the edge its threshold sign implies; set trigger_level negative for the falling edge, positive for the rising one.`);
  }
  /** 0 = internal oscillator (REFCLK 2), 1 = external 10 MHz (REFCLK 1). */
  setReferenceClock(source: 0 | 1) {
    return this.set('reference_clock', source === 1 ? 1 : 2);
  }

  /** `NIM` / `TTL` input standard presets (threshold and polarity). */
  async setInputStandard(standard: 'NIM' | 'TTL'): Promise<void> {
    this.requireReady(`select ${standard} inputs`);
    if (this.active) throw new DeviceError('STREAM_BUSY', `${this.where} is streaming; stop the stream first.`);
    await this.transport.write(standard).catch((err) => Promise.reject(this.named(err)));
  }

  /** Singles counts of the four inputs over the integration time (`singles;counts?`). */
  counts(): Promise<number[]> {
    return this.count('singles', 4);
  }

  /** Singles and coincidences 1-3, 1-4, 2-3, 2-4 over the integration time (`pairs;counts?`). */
  async pairs(): Promise<{ singles: number[]; coincidences: { '1-3': number; '1-4': number; '2-3': number; '2-4': number } }> {
    const v = await this.count('pairs', 8);
    return { singles: v.slice(0, 4), coincidences: { '1-3': v[4], '1-4': v[5], '2-3': v[6], '2-4': v[7] } };
  }

  private async count(mode: 'singles' | 'pairs', n: number): Promise<number[]> {
    this.requireReady(`count ${mode}`);
    if (this.active) throw new DeviceError('STREAM_BUSY', `${this.where} is streaming; stop the stream before counting.`);
    const gateMs = await this.get('integration_time');
    let reply: string;
    try {
      // The unit answers at the end of its gate; the margin covers a busy host (a loaded CI machine
      // missed 500 ms) while a dead unit is still reported within a few seconds. A garbled reply
      // re-synchronises the line and counts again (the re-sync's `abort` ends the count).
      reply = await this.withResync(async () => {
        await this.transport.write(mode);
        return this.transport.query('counts?', (gateMs || 1) + Math.max(this.settings.timeoutMs, 3000));
      });
    } catch (err) {
      throw this.named(err);
    }
    const v = reply.trim().split(/\s+/).map(Number);
    if (v.length !== n || !v.every((x) => Number.isInteger(x) && x >= 0)) {
      throw new ProtocolError('BAD_REPLY', `${this.where}: 'counts?' in ${mode} mode should give ${n} counts, got ${JSON.stringify(reply.slice(0, 80))}.`);
    }
    return v;
  }

  override async close(): Promise<void> {
    await this.active?.stop().catch(() => undefined);
    await super.close();
  }

  startStream(options: TagStreamOptions = {}): TagStream {
    if (this.active) throw new DeviceError('STREAM_BUSY', `${this.where} is already streaming; stop that stream first.`);
    this.requireReady('start a tag stream');
    const readBytes = options.transferBytes ?? 64 * 1024;
    if (!(readBytes >= 4)) throw new DeviceError('BAD_VALUE', `${this.where}: transferBytes must be at least 4, got ${readBytes}.`);
    const wanted = options.channels ? new Set(options.channels) : undefined;
    const maxTags = options.maxTags ?? Infinity;
    const stats = { tags: 0, batches: 0, overflows: 0, missedEvents: 0, errors: 0 };
    const self = this;
    const t = this.transport;
    const decoder = new Tdc1Decoder();
    const delayed = new DelayLine(this.channels().map((c) => this.delays.get(c) ?? 0));
    let reader: RawReader | undefined;
    let stopped = false;
    let seq = 0;
    let finishing: Promise<void> | undefined;

    const finish = (): Promise<void> =>
      (finishing ??= (async () => {
        let drainedTags = 0;
        if (reader) {
          // Stop the unit and re-synchronise the line; what was still on it is decoded, counted,
          // not delivered. Out of step after three attempts: the next text query re-syncs again.
          try {
            const bytes: Buffer[] = [];
            await self.resync(reader, (b) => bytes.push(b));
            drainedTags = decoder.push(Buffer.concat(bytes)).timePs.length + decoder.flush().timePs.length;
          } catch {
            /* line gone: nothing to drain */
          }
          reader.close();
          reader = undefined;
        }
        self.lastStreamStats = { ...decoder.stats, drainedTags };
        self.active = undefined;
      })());

    const post = (raw: TagStreamBatch): TagStreamBatch => {
      let b = delayed.push(raw);
      if (wanted) b = filterChannels(b, wanted);
      if (stats.tags + b.timePs.length > maxTags) {
        const keep = maxTags - stats.tags;
        b = { ...b, timePs: b.timePs.slice(0, keep), channel: b.channel.slice(0, keep), events: b.events.filter((e) => e.index <= keep) };
      }
      b.seq = seq++;
      stats.tags += b.timePs.length;
      stats.batches++;
      for (const e of b.events) {
        if (e.type === 2) stats.overflows++;
        else if (e.type === 4) stats.missedEvents += e.missedEvents;
        else if (e.type === 1) stats.errors++;
      }
      return b;
    };

    async function* iterate(): AsyncGenerator<TagStreamBatch> {
      try {
        for (const cmd of ['timestamp', 'INPKT', 'time 0']) await t.write(cmd).catch((err) => Promise.reject(self.named(err)));
        reader = t.rawReader();
        await t.write('counts?').catch((err) => Promise.reject(self.named(err)));
        while (!stopped && stats.tags < maxTags) {
          let chunk: Buffer;
          try {
            chunk = await reader.read(readBytes, self.streamTimeoutMs);
          } catch (err) {
            if (stopped) break;
            if (err instanceof TimeoutError) {
              throw new TimeoutError('NO_DATA', `${self.where}: no timestamp data for ${self.streamTimeoutMs} ms on ${t.description}. A streaming TDC1 sends a time-keeping word at least every 134 ms, so it stopped answering: check its USB cable and power, then open it again. The stream was aborted.`, { cause: err });
            }
            if (err instanceof TransportError && err.code === 'DISCONNECTED') {
              throw new TransportError('DISCONNECTED', `${self.where}: the line went away mid-stream (${err.message}). The driver reconnects; start a new stream when it is ready.`, { cause: err });
            }
            throw self.named(err);
          }
          const b = post(decoder.push(chunk));
          if (b.timePs.length || b.events.length) yield b;
        }
        if (!stopped) {
          // Ended by maxTags: what the delay line still holds goes out if wanted.
          const tail = post(delayed.flush());
          if (tail.timePs.length || tail.events.length) yield tail;
        }
      } finally {
        stopped = true;
        await finish();
      }
    }

    const gen = iterate();
    const stream: TagStream = {
      stats,
      [Symbol.asyncIterator]: () => gen,
      async stop() {
        stopped = true;
        await gen.return(undefined).catch(() => undefined);
        await finish();
      },
    };
    this.active = stream;
    return stream;
  }
}

/**
 * Reads until the line is quiet for `QUIET_MS` (or `capMs` passed); returns the bytes seen.
 * Quiet does not prove the stream is over (see `settle`); it only keeps the sentinel's reply
 * from being buried in a long tail.
 */
const QUIET_MS = 100;
async function drain(reader: RawReader, capMs: number, onBytes?: (b: Buffer) => void): Promise<number> {
  const until = performance.now() + capMs;
  let n = 0;
  for (;;) {
    const left = until - performance.now();
    if (left <= 0) return n;
    try {
      const b = await reader.read(1 << 20, Math.min(QUIET_MS, left));
      n += b.length;
      onBytes?.(b);
    } catch (err) {
      if (err instanceof TimeoutError) return n;
      throw err;
    }
  }
}

export type SettleOutcome = 'identity' | 'other-text' | 'silent' | 'garbled';

/** Printable ASCII plus tab (a clean reply line). */
const TEXT_LINE = /^[\x20-\x7e\t]*$/;

/**
 * One re-sync attempt on a raw line: `abort`, drain until quiet, `*IDN?`, then read until a
 * complete clean text line matches `identity` (in step: the unit answers in order, so no stream
 * word follows it), or the line is quiet after the last byte / `replyMs` passed. Then: the last
 * complete line was clean text and nothing follows it: 'other-text' (a device that is not a
 * TDC1, left to the identity check); nothing came back: 'silent'; else 'garbled'. Everything
 * before the matched line goes to `onStale`.
 *
 * `expect`: sentinels whose replies may still be on their way (this attempt's and those of
 * earlier attempts that got none: a tail held back past an attempt's reply window delivers the
 * earlier reply behind it). The unit answers in order, so the line is in step only after the
 * last of them: an identity line is taken as the earlier attempt's while more are expected, and
 * the read goes on (a reply that never comes costs `replyMs`, then the last line seen counts).
 * Without it a retry took the first attempt's late reply for its own, and the next query read
 * the retry's reply as a garbled answer (a loaded CI host, 1.5 s tail).
 */
export async function settle(t: { write(command: string): Promise<void> }, reader: RawReader, identity: RegExp, replyMs: number, onStale?: (b: Buffer) => void,
  expect = 1): Promise<SettleOutcome> {
  await t.write('abort');
  await drain(reader, 2000, onStale);
  await t.write('*IDN?');
  let until = performance.now() + replyMs;
  let matched = 0;
  let tail = Buffer.alloc(0);
  let seen = 0;
  let lastClean = false;
  for (;;) {
    const left = until - performance.now();
    if (left <= 0) break;
    let b: Buffer;
    try {
      // After bytes, quiet for QUIET_MS ends the attempt, unless an earlier reply came and this
      // attempt's is still due.
      b = await reader.read(1 << 20, seen && !matched ? Math.min(QUIET_MS, left) : left);
    } catch (err) {
      if (err instanceof TimeoutError) break;
      throw err;
    }
    seen += b.length;
    let buf = tail.length ? Buffer.concat([tail, b]) : b;
    let from = 0;
    for (let nl = buf.indexOf(0x0a); nl >= 0; nl = buf.indexOf(0x0a, from)) {
      const text = buf.toString('latin1', from, nl).replace(/\r$/, '');
      lastClean = TEXT_LINE.test(text) && text.length > 0;
      if (lastClean && identity.test(text)) {
        onStale?.(buf.subarray(0, from));
        if (++matched >= expect) return 'identity';
        // An earlier sentinel's reply: stale too; wait for the next one.
        onStale?.(buf.subarray(from, nl + 1));
        buf = buf.subarray(nl + 1);
        from = 0;
        until = performance.now() + replyMs;
        continue;
      }
      from = nl + 1;
    }
    onStale?.(buf.subarray(0, from));
    buf = buf.subarray(from);
    if (buf.length) lastClean = false;
    // A line longer than any reply is stream data: keep only its end for the next read.
    if (buf.length > 4096) {
      onStale?.(buf.subarray(0, buf.length - 4096));
      buf = buf.subarray(buf.length - 4096);
    }
    tail = Buffer.from(buf);
  }
  if (tail.length) onStale?.(tail);
  if (!seen) return 'silent';
  // An earlier attempt's reply came and this attempt's did not: lost, not pending (the window
  // restarted at that reply); the line is quiet after an identity line.
  if (matched > 0 && lastClean && !tail.length) return 'identity';
  return lastClean && !tail.length ? 'other-text' : 'garbled';
}

/**
 * Per-channel host delays. Equal delays: a shift. Unequal ones can swap neighbouring tags, so
 * tags are merged in time order and those a later read could still precede (later than the
 * last raw time + the smallest delay) are held back. Events keep their place among the tags
 * that came before them.
 */
class DelayLine {
  private readonly d: bigint[];
  private readonly equal: boolean;
  private readonly minD: bigint;
  private held: { t: bigint; c: number }[] = [];

  constructor(delaysPs: number[]) {
    this.d = delaysPs.map((x) => BigInt(Math.round(x)));
    this.equal = this.d.every((x) => x === this.d[0]);
    this.minD = this.d.reduce((a, b) => (b < a ? b : a), this.d[0] ?? 0n);
  }

  push(b: TagStreamBatch): TagStreamBatch {
    const n = b.timePs.length;
    if (this.equal) {
      const d = this.d[0] ?? 0n;
      if (d === 0n) return b;
      const t = new BigInt64Array(n);
      for (let i = 0; i < n; i++) t[i] = b.timePs[i] + d;
      return { ...b, timePs: t, events: b.events.map((e) => ({ ...e, timePs: e.timePs + d })) };
    }
    const all = [...this.held.map((h) => ({ ...h, raw: -1 })), ...Array.from({ length: n }, (_, i) => ({ t: b.timePs[i] + (this.d[b.channel[i]] ?? 0n), c: b.channel[i], raw: i }))];
    all.sort((x, y) => (x.t < y.t ? -1 : x.t > y.t ? 1 : 0));
    const horizon = n ? b.timePs[n - 1] + this.minD : undefined;
    const out = horizon === undefined ? [] : all.filter((x) => x.t <= horizon);
    this.held = horizon === undefined ? all.map(({ t, c }) => ({ t, c })) : all.filter((x) => x.t > horizon).map(({ t, c }) => ({ t, c }));
    const events: TagEvent[] = b.events.map((e) => ({ ...e, index: out.filter((x) => x.raw < e.index).length }));
    return { seq: b.seq, timePs: BigInt64Array.from(out, (x) => x.t), channel: Uint8Array.from(out, (x) => x.c), events };
  }

  flush(): TagStreamBatch {
    const h = this.held;
    this.held = [];
    return { seq: 0, timePs: BigInt64Array.from(h, (x) => x.t), channel: Uint8Array.from(h, (x) => x.c), events: [] };
  }
}

function filterChannels(b: TagStreamBatch, wanted: Set<number>): TagStreamBatch {
  const keep: number[] = [];
  for (let i = 0; i < b.channel.length; i++) if (wanted.has(b.channel[i])) keep.push(i);
  if (keep.length === b.channel.length) return b;
  const newIndex = new Int32Array(b.channel.length + 1);
  let k = 0;
  for (let i = 0; i <= b.channel.length; i++) {
    newIndex[i] = k;
    if (i < b.channel.length && wanted.has(b.channel[i])) k++;
  }
  return { seq: b.seq, timePs: BigInt64Array.from(keep, (i) => b.timePs[i]), channel: Uint8Array.from(keep, (i) => b.channel[i]), events: b.events.map((e) => ({ ...e, index: newIndex[e.index] })) };
}
