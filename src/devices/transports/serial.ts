/**
 * Serial line transport: SCPI-style text commands over a serial port (`serialport` stream +
 * `@serialport/parser-delimiter`). The binding is injectable, like serialport's own split between
 * `@serialport/bindings-interface` and its implementations: the default is the OS binding (a real
 * /dev/tty*, or one end of a pty pair), and the emulated devices provide a binding that answers on
 * the written side (emulated/serial-binding.ts). The transport code is the same in both cases.
 *
 * Protocol handling:
 * - One query at a time: `query()` calls are queued; each writes `command + delimiter` and takes
 *   the next complete reply line.
 * - A reply that is not printable text (wrong baud rate, line noise) is a ProtocolError
 *   ('GARBLED_REPLY'); the line is consumed, the transport stays usable.
 * - No reply within `timeoutMs`: TimeoutError ('NO_REPLY'). Any partial line received so far
 *   (a truncated reply) is discarded, so it cannot prefix the next reply, and the message says
 *   how many bytes of it arrived.
 * - Binary read-back (`queryBlock`): the command may carry an IEEE 488.2 definite-length block
 *   (`HEADER? #<d><len><bytes>`) and the reply is one (framing in scpi-frames.ts); a reply that
 *   is a text line instead (an `ERR ...` refusal) is handed back as a string for the driver.
 * - Lines nobody asked for (a late reply after a timeout, unsolicited output) are discarded and
 *   counted in `strayLines`. After a timeout the next query first waits one timeout period with
 *   nothing pending, so a reply up to twice the timeout late is dropped, never handed to it.
 * - A request the device stops taking (no byte of it written for `writeStallMs`, after its reply
 *   timed out) would hold every later command behind it: the port is closed and reported lost
 *   ('close' event, TransportError 'LINE_WEDGED'), as if unplugged. A slow device is not: it
 *   still takes bytes (see `watchStalledWrite`).
 * - When the port goes away without `close()` (USB-serial unplugged, pty closed), pending and
 *   later queries reject with TransportError('DISCONNECTED') and a 'close' event carries the
 *   cause; reconnecting is the driver's decision (drivers/base.ts), not the transport's. The
 *   default binding reports a hang-up however the read in progress meets it, parked in poll(2) or
 *   reaching read(2) after it (tty-binding.ts says why the stock binding may miss the latter).
 */
import { EventEmitter } from 'node:events';
import { SerialPortStream } from '@serialport/stream';
import { ScpiFrameParser, blockHeader, type ScpiFrame } from './scpi-frames.ts';
import { ProtocolError, TimeoutError, TransportError } from '../../errors.ts';
import type { LineTransport } from '../types.ts';
import type { SerialSettings } from '../profile.ts';
import { ttyBinding, writeStalledMs } from './tty-binding.ts';

export interface SerialTransportOptions {
  /** Device path (`/dev/ttyUSB0`, a pty link) or, for the emulated binding, its registered name. */
  path: string;
  settings: SerialSettings;
  /** serialport binding; default: the OS binding with hang-up detection (tty-binding.ts). */
  binding?: BindingInterface;
  /**
   * A request still unwritten after its reply timed out, and of which the device has taken no
   * byte for this long (ms), wedges the line: the port is closed and reported lost (LINE_WEDGED).
   * Default WRITE_STALL_MS. Only the OS binding tracks write progress.
   */
  writeStallMs?: number;
}

/**
 * No byte of a request taken for this long: the device stopped reading (see `watchStalledWrite`).
 * Generous: a slow or busy device still takes bytes now and then.
 */
export const WRITE_STALL_MS = 5000;

/**
 * serialport's binding interface, taken through @serialport/stream's types (the
 * bindings-interface package's `exports` map hides its .d.ts from NodeNext resolution).
 */
export type BindingInterface = SerialPortStream['settings']['binding'];
export type BindingPort = NonNullable<SerialPortStream['port']>;
export type BindingOpenOptions = Parameters<BindingInterface['open']>[0];

interface Pending {
  /** The command as it may appear in messages (secrets replaced). */
  command: string;
  /** What the query waits for: a text line, or a block (a text line then is a refusal). */
  expect: 'line' | 'block';
  resolve: (reply: string | Buffer) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * The line handed to a binary stream (a time-tagger's timestamp mode, e.g. the S-Fifteen TDC1):
 * bytes as they arrive, with back-pressure (the port is paused while more than the high-water
 * mark waits unread). One reader at a time; `query` is refused while it is open, `write` is not
 * (a stream is stopped by a command). `close()` hands the line back to line mode.
 */
export interface RawReader {
  /**
   * Up to `maxBytes` of what has arrived; waits for at least one byte. Rejects with
   * TimeoutError('NO_DATA') after `timeoutMs` of silence, TransportError('DISCONNECTED') when the
   * line goes away, TransportError('CLOSED') after close().
   */
  read(maxBytes: number, timeoutMs: number): Promise<Buffer>;
  /** Bytes received and not read yet. */
  readonly buffered: number;
  close(): void;
}

/** Printable ASCII plus tab: what an SCPI reply may contain. */
const TEXT = /^[\x20-\x7e\t]*$/;

export class SerialLineTransport extends EventEmitter implements LineTransport {
  readonly kind = 'serial' as const;
  readonly description: string;
  /** Reply lines that arrived when no query was waiting (discarded). */
  strayLines = 0;
  private port: SerialPortStream | undefined;
  private parser: ScpiFrameParser | undefined;
  private pending: Pending | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private closing = false;
  /** Set by a timeout: the next query first waits out a quiet period (see `query`). */
  private resyncMs = 0;
  private raw: { fail(err: Error): void } | undefined;
  /** Why the transport itself closed the port (a request the device stopped taking). */
  private wedged: Error | undefined;

  constructor(private readonly opts: SerialTransportOptions) {
    super();
    this.description = `serial ${opts.path} ${opts.settings.baudRate} baud`;
  }

  get isOpen(): boolean {
    return !!this.port?.isOpen;
  }

  async open(): Promise<void> {
    if (this.isOpen) return;
    const s = this.opts.settings;
    const port = new SerialPortStream({
      binding: this.opts.binding ?? ttyBinding,
      path: this.opts.path,
      baudRate: s.baudRate,
      dataBits: s.dataBits,
      parity: s.parity,
      stopBits: s.stopBits,
      autoOpen: false,
    });
    await new Promise<void>((resolve, reject) =>
      port.open((err) => (err ? reject(new TransportError('OPEN_FAILED', `cannot open ${this.opts.path}: ${err.message}. Check the port path, permissions (dialout group), that the device is plugged in and that no other program holds the port.`, { cause: err })) : resolve())),
    );
    this.closing = false;
    this.port = port;
    port.on('error', () => {
      /* errors surface through 'close' (disconnect) or the failing call; an unhandled 'error' would crash the process */
    });
    port.on('close', (err?: Error & { disconnected?: boolean }) => {
      this.parser = undefined;
      const cause = err ?? this.wedged ?? (this.closing ? undefined : new Error('port closed'));
      this.wedged = undefined;
      this.failPending(new TransportError('DISCONNECTED', `${this.opts.path} went away${cause ? ` (${cause.message})` : ''} while waiting for the reply to '${this.pending?.command ?? ''}'. The driver will try to reconnect.`, { cause }));
      this.raw?.fail(new TransportError(this.closing ? 'CLOSED' : 'DISCONNECTED', `${this.opts.path} ${this.closing ? 'was closed' : 'went away'} during a binary stream${cause ? ` (${cause.message})` : ''}.`, { cause }));
      if (!this.closing) this.emit('close', cause);
    });
    this.attachParser();
    await this.drainStale(port);
  }

  /** Bytes discarded at open (the tail of a reply to a process that went away). */
  staleBytes = 0;

  /**
   * Discards what the line still carries when it is opened: a node killed in the middle of a
   * long reply (a read-back block) leaves its tail in the line, which the next process would
   * otherwise read as the start of its first reply. Waits until the line has been quiet for
   * 150 ms (at most 5 s), then starts the parser afresh.
   */
  private async drainStale(port: SerialPortStream): Promise<void> {
    const quietMs = 150;
    let last = Date.now();
    const onData = (b: Buffer) => {
      this.staleBytes += b.length;
      last = Date.now();
    };
    port.on('data', onData);
    const t0 = Date.now();
    while (Date.now() - last < quietMs && Date.now() - t0 < 5000 && port.isOpen) await new Promise((r) => setTimeout(r, 25));
    port.off('data', onData);
    if (this.staleBytes) this.attachParser();
  }

  private attachParser(): void {
    if (!this.port) return;
    if (this.parser) {
      this.port.unpipe(this.parser);
      this.parser.removeAllListeners('data');
    }
    const parser = new ScpiFrameParser(this.opts.settings.delimiter);
    parser.on('data', (f: ScpiFrame) => this.onFrame(f));
    this.port.pipe(parser);
    this.parser = parser;
  }

  private onFrame(f: ScpiFrame): void {
    const p = this.pending;
    if (!p) {
      this.strayLines++;
      return;
    }
    this.pending = undefined;
    clearTimeout(p.timer);
    if (f.kind === 'bad-block') {
      p.reject(new ProtocolError('BAD_BLOCK', `reply to '${p.command}' on ${this.opts.path} is a malformed binary block: ${f.reason}. Check the line and the device firmware; retry.`));
      return;
    }
    if (f.kind === 'block') {
      if (p.expect === 'block') p.resolve(f.bytes);
      else p.reject(new ProtocolError('UNEXPECTED_BLOCK', `reply to '${p.command}' on ${this.opts.path} is a binary block (${f.bytes.length} bytes) where a text line was expected. Check the profile.`));
      return;
    }
    const line = f.bytes;
    const text = line.toString('latin1').replace(/\r$/, '');
    if (!TEXT.test(text)) {
      const bad = [...text].findIndex((c) => !TEXT.test(c));
      p.reject(new ProtocolError('GARBLED_REPLY', `reply to '${p.command}' on ${this.opts.path} is not text (${line.length} bytes, first non-printable byte 0x${text.charCodeAt(bad).toString(16).padStart(2, '0')} at ${bad}). Check the baud rate (${this.opts.settings.baudRate}), cabling and the profile.`));
      return;
    }
    p.resolve(text);
  }

  private failPending(err: Error): void {
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    clearTimeout(p.timer);
    p.reject(err);
  }

  private ensureOpen(command: string): SerialPortStream {
    if (!this.port || !this.port.isOpen) {
      throw new TransportError('DISCONNECTED', `${this.opts.path} is not open (sending '${command}'). Open the device first or wait for it to reconnect.`);
    }
    return this.port;
  }

  private send(port: SerialPortStream, command: string, shown: string): Promise<void> {
    return this.sendBytes(port, Buffer.from(command + this.opts.settings.delimiter, 'latin1'), shown);
  }

  private async sendBytes(port: SerialPortStream, bytes: Buffer, shown: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      port.write(bytes, (err) => (err ? reject(new TransportError('WRITE_FAILED', `writing '${shown}' to ${this.opts.path} failed: ${err.message}.`, { cause: err })) : resolve()));
    });
  }

  /** Serialises commands: each starts after the previous one settled. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  write(command: string, shown = command): Promise<void> {
    return this.exclusive(async () => this.send(this.ensureOpen(shown), command, shown));
  }

  query(command: string, timeoutMs = this.opts.settings.timeoutMs, shown = command): Promise<string> {
    return this.request(Buffer.from(command + this.opts.settings.delimiter, 'latin1'), 'line', timeoutMs, shown) as Promise<string>;
  }

  /**
   * Sends `command` with an optional binary block (`command #<d><len><payload>`) and resolves with
   * the reply block's bytes, or with the reply line when the device answered text (a refusal).
   * `timeoutMs` covers the whole reply (a large block takes its transfer time).
   */
  queryBlock(command: string, payload: Uint8Array | undefined, timeoutMs = this.opts.settings.timeoutMs): Promise<Buffer | string> {
    const d = this.opts.settings.delimiter;
    const bytes = payload
      ? Buffer.concat([Buffer.from(`${command} `, 'latin1'), blockHeader(payload.length), payload, Buffer.from(d, 'latin1')])
      : Buffer.from(command + d, 'latin1');
    return this.request(bytes, 'block', timeoutMs, payload ? `${command} <${payload.length} bytes>` : command);
  }

  private request(bytes: Buffer, expect: 'line' | 'block', timeoutMs: number, shown: string): Promise<string | Buffer> {
    return this.exclusive(async () => {
      this.ensureOpen(shown);
      if (this.raw) throw new TransportError('RAW_MODE', `${this.opts.path} carries a binary stream; stop it before sending '${shown}'.`);
      if (this.resyncMs) {
        // SCPI replies carry no sequence number: a reply that comes after its query timed out
        // would be taken for the next query's. So after a timeout, wait one timeout period with
        // no query pending; whatever arrives meanwhile is stale and dropped (strayLines).
        const wait = this.resyncMs;
        this.resyncMs = 0;
        await new Promise((r) => setTimeout(r, wait));
      }
      const port = this.ensureOpen(shown);
      const reply = new Promise<string | Buffer>((resolve, reject) => {
        const timer = setTimeout(() => {
          if (this.pending?.timer !== timer) return;
          this.pending = undefined;
          const partial = this.parser?.pendingBytes() ?? 0;
          // Drop whatever partial line the parser holds: a truncated reply must not prefix the next one.
          this.attachParser();
          this.resyncMs = timeoutMs;
          reject(new TimeoutError('NO_REPLY', partial
            ? `reply to '${shown}' on ${this.opts.path} was truncated: ${partial} byte(s) without the line delimiter within ${timeoutMs} ms. The partial reply was discarded; check the line and retry.`
            : `no reply to '${shown}' from ${this.opts.path} within ${timeoutMs} ms. Check that the device is powered, connected and speaks this profile's protocol.`));
        }, timeoutMs);
        this.pending = { command: shown, expect, resolve, reject, timer };
      });
      // The write itself can outlast the reply timeout (a loaded host, a peer that stopped
      // reading): the timeout then ends the request, written or not. Before, the reply rejected
      // while nobody awaited it yet, and the unhandled rejection killed the process (seen: Alice's
      // node crash-looping under load).
      const mine = this.pending;
      let written = false;
      const sent = this.sendBytes(port, bytes, shown).then(() => {
        written = true;
      }, (err: unknown) => {
        if (this.pending === mine) this.failPending(err as Error);
      });
      await Promise.race([sent, reply.catch(() => undefined)]);
      if (!written) this.watchStalledWrite(port, shown, () => written);
      return reply;
    });
  }

  /**
   * The reply settled (timed out, mostly) before the request was written: the write goes on in
   * the port and every later command queues behind it. A slow device still takes bytes and the
   * write finishes; a device that takes none for `writeStallMs` (flow control held, firmware
   * hung, an emulator's line stuck) would hold the line for ever, so the port is closed (which
   * ends the write) and reported lost: the driver reconnects and re-checks identity. Judged by
   * progress, not by the request's total time: a busy device answering slowly must not be reset
   * over and over, each time losing the half-written request.
   */
  private watchStalledWrite(port: SerialPortStream, shown: string, done: () => boolean): void {
    const stallMs = this.opts.writeStallMs ?? WRITE_STALL_MS;
    const timer = setInterval(() => {
      if (done() || port !== this.port || !port.isOpen) return clearInterval(timer);
      const stalled = writeStalledMs(port.port);
      if (stalled === undefined || stalled < stallMs) return;
      clearInterval(timer);
      this.wedged = new TransportError('LINE_WEDGED', `the device on ${this.opts.path} took no byte of a request ('${shown}') for ${Math.round(stalled)} ms (flow control held or the device hung); the port was closed to clear the line`);
      this.port = undefined;
      port.close(() => undefined);
    }, Math.max(10, Math.min(250, stallMs / 4)));
    timer.unref();
  }

  /** Hands the line to a binary stream (see RawReader); `highWaterBytes` default 4 MiB. */
  rawReader(highWaterBytes = 4 << 20): RawReader {
    const port = this.ensureOpen('a binary stream');
    if (this.raw) throw new TransportError('RAW_MODE', `${this.opts.path} already carries a binary stream.`);
    if (this.parser) {
      port.unpipe(this.parser);
      this.parser.removeAllListeners('data');
      this.parser = undefined;
    }
    const queue: Buffer[] = [];
    let queued = 0;
    let failed: Error | undefined;
    let waiter: { resolve: () => void; reject: (e: Error) => void } | undefined;
    const onData = (b: Buffer) => {
      queue.push(b);
      queued += b.length;
      // Back-pressure: stop reading the tty; the device's own buffer (and flow control) holds the rest.
      if (queued > highWaterBytes) port.pause();
      const w = waiter;
      waiter = undefined;
      w?.resolve();
    };
    port.on('data', onData);
    // Unpiping the parser left the stream paused; a 'data' listener alone does not resume it.
    port.resume();
    const fail = (err: Error) => {
      failed ??= err;
      const w = waiter;
      waiter = undefined;
      w?.reject(err);
    };
    this.raw = { fail };
    const path = this.opts.path;
    const reader: RawReader = {
      get buffered() {
        return queued;
      },
      read: async (maxBytes, timeoutMs) => {
        while (!queued) {
          if (failed) throw failed;
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => {
              waiter = undefined;
              reject(new TimeoutError('NO_DATA', `no data from ${path} for ${timeoutMs} ms during a binary stream.`));
            }, timeoutMs);
            waiter = { resolve: () => (clearTimeout(timer), resolve()), reject: (e) => (clearTimeout(timer), reject(e)) };
          });
        }
        const parts: Buffer[] = [];
        let n = 0;
        while (queue.length && n < maxBytes) {
          const head = queue[0];
          const k = Math.min(head.length, maxBytes - n);
          parts.push(k === head.length ? head : head.subarray(0, k));
          if (k === head.length) queue.shift();
          else queue[0] = head.subarray(k);
          n += k;
        }
        queued -= n;
        if (queued <= highWaterBytes / 2 && port.isPaused()) port.resume();
        return parts.length === 1 ? parts[0] : Buffer.concat(parts, n);
      },
      close: () => {
        if (this.raw?.fail !== fail) return;
        port.off('data', onData);
        fail(new TransportError('CLOSED', `the binary stream on ${path} was closed.`));
        this.raw = undefined;
        queue.length = 0;
        queued = 0;
        if (port.isPaused()) port.resume();
        this.attachParser();
      },
    };
    return reader;
  }

  async close(): Promise<void> {
    this.closing = true;
    const port = this.port;
    this.port = undefined;
    this.failPending(new TransportError('CLOSED', `${this.opts.path} was closed while waiting for a reply.`));
    if (port?.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
  }
}
