/**
 * JSON over TCP with a second port of count lines: the Single Quantum SNSPD controller's protocol,
 * as Single Quantum's open Python driver (WebSQControl.py, MIT) speaks it.
 *
 * ```
 *  control port (12000)                               counts port (12345)
 *  host → {"request": "labelProps", "value": "None"}  dev → 1733400000.25,1234,987,0,0\n
 *  dev  → {"label": "BiasCurrent", "value": {"value": [12.0, 8.0], ...}}{...}␗      (one line per
 *  host → {"command": "SetAllBiasCurrents", "label": "BiasCurrent", "value": [12.5, 8.0]}   period:
 *  dev  → {"label": "BiasCurrent", "value": [12.5, 8.0]}␗   (broadcast of the new value)  time, then
 *  dev  → {"label": "Error...", "value": "..."}␗             (a refusal)                   counts)
 * ```
 * The host sends bare JSON objects; the device ends each frame with 0x17 (ETB) and may put
 * several objects in one frame (`}{`). Here the two sockets are one transport: `send`, `waitFor`
 * a message matching a predicate (a device error frame rejects every waiter: a refusal is never
 * lost), and `nextCounts` for the next count line after the call.
 *
 * Bad input: a frame that is not JSON rejects the waiters with ProtocolError('GARBLED_FRAME')
 * (and is counted); nothing that matches within the timeout is TimeoutError('NO_REPLY'), saying how
 * many bytes of an unfinished frame arrived (a truncated frame); a count line that is not numbers
 * is ProtocolError('BAD_COUNT_LINE'), and one that arrived while nobody was waiting is reported by
 * the next `nextCounts` (never silently skipped); the peer closing without `close()` emits 'close'
 * (the driver reconnects) and rejects what is pending with TransportError('DISCONNECTED').
 */
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { ProtocolError, TimeoutError, TransportError } from '../../errors.ts';

export interface TcpJsonAddress {
  host: string;
  port: number;
  countsPort: number;
}

export interface TcpJsonTransportOptions {
  /** The address, or a function resolving it at open (an emulated device started on first use). */
  address: TcpJsonAddress | (() => Promise<TcpJsonAddress>);
  frameEnd: string;
  timeoutMs: number;
}

export type JsonMessage = Record<string, unknown>;

interface Waiter {
  match: (m: JsonMessage) => boolean;
  resolve: (m: JsonMessage) => void;
  reject: (e: Error) => void;
}

/** A count line: the device's time stamp (s since the epoch) and the counts of each detector. */
export interface CountLine {
  deviceTimeS: number;
  counts: number[];
}

/**
 * Scans `text` for top-level JSON objects (braces inside strings skipped): the complete objects,
 * what follows the last one (an unfinished object), and whether anything but whitespace stood
 * between objects.
 */
export function scanJsonObjects(text: string): { objects: string[]; rest: string; stray: boolean } {
  const objects: string[] = [];
  let depth = 0;
  let start = -1;
  let end = 0;
  let inString = false;
  let stray = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '{') {
      if (depth++ === 0) start = i;
    } else if (c === '}') {
      if (depth === 0) stray = true;
      else if (--depth === 0) {
        objects.push(text.slice(start, i + 1));
        end = i + 1;
      }
    } else if (depth === 0 && !/\s/.test(c)) stray = true;
  }
  return { objects, rest: text.slice(end), stray };
}

/** Splits a whole frame `{..}{..}` into its JSON texts; null if it holds anything else. */
export function splitJsonObjects(text: string): string[] | null {
  const { objects, rest, stray } = scanJsonObjects(text);
  return stray || rest.trim() !== '' ? null : objects;
}

export class TcpJsonTransport extends EventEmitter {
  readonly kind = 'tcp' as const;
  description = 'tcp (not open)';
  private control: Socket | undefined;
  private counts: Socket | undefined;
  private frameBuf = '';
  private lineBuf = '';
  private waiters = new Set<Waiter>();
  private countWaiters: { resolve: (l: CountLine) => void; reject: (e: Error) => void }[] = [];
  private badLine: string | undefined;
  private closing = false;
  /** Frames that were not JSON, count lines that were not numbers. */
  readonly stats = { frames: 0, garbledFrames: 0, countLines: 0, badCountLines: 0 };

  constructor(private readonly opts: TcpJsonTransportOptions) {
    super();
  }

  get isOpen(): boolean {
    return this.control !== undefined;
  }

  async open(): Promise<void> {
    if (this.control) return;
    const a = typeof this.opts.address === 'function' ? await this.opts.address() : this.opts.address;
    this.description = `tcp ${a.host}:${a.port} (counts :${a.countsPort})`;
    this.closing = false;
    this.frameBuf = '';
    this.lineBuf = '';
    this.badLine = undefined;
    const control = await this.connectOne(a.host, a.port, 'control');
    let counts: Socket;
    try {
      counts = await this.connectOne(a.host, a.countsPort, 'counts');
    } catch (err) {
      control.destroy();
      throw err;
    }
    this.control = control;
    this.counts = counts;
    control.setEncoding('utf8');
    counts.setEncoding('utf8');
    control.on('data', (s: string) => this.onControl(s));
    counts.on('data', (s: string) => this.onCounts(s));
    const lost = (which: string) => (err?: Error) => {
      if (this.closing || this.control !== control) return;
      this.teardown();
      const e = new TransportError('DISCONNECTED', `${this.description}: the ${which} connection closed${err ? ` (${err.message})` : ''}. The controller went away or was restarted.`);
      this.failAll(e);
      this.emit('close', e);
    };
    control.on('close', lost('control'));
    counts.on('close', lost('counts'));
    control.on('error', () => {});
    counts.on('error', () => {});
  }

  private connectOne(host: string, port: number, which: string): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const s = connect({ host, port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new TimeoutError('NO_REPLY', `${host}:${port} (${which} port) did not accept a connection within ${this.opts.timeoutMs} ms. Check the controller's address and that it is on.`));
      }, this.opts.timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new TransportError('OPEN_FAILED', `cannot connect to ${host}:${port} (${which} port): ${err.code ?? err.message}. Check the controller's address ("host") and ports in the profile.`, { cause: err }));
      });
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    this.teardown();
    this.failAll(new TransportError('CLOSED', `${this.description} was closed.`));
  }

  private teardown(): void {
    this.control?.destroy();
    this.counts?.destroy();
    this.control = undefined;
    this.counts = undefined;
  }

  private failAll(e: Error): void {
    for (const w of this.waiters) w.reject(e);
    this.waiters.clear();
    for (const w of this.countWaiters.splice(0)) w.reject(e);
  }

  /** Sends one JSON object on the control port. */
  async send(msg: JsonMessage): Promise<void> {
    const s = this.control;
    if (!s) throw new TransportError('NOT_CONNECTED', `${this.description} is not open (open the device first).`);
    await new Promise<void>((resolve, reject) => s.write(JSON.stringify(msg), (err) => (err ? reject(new TransportError('DISCONNECTED', `${this.description}: write failed (${err.message}).`, { cause: err })) : resolve())));
  }

  /**
   * Sends `msg` (when given) and resolves with the first message after it that `match`es.
   * `what` names the exchange in messages.
   */
  request(msg: JsonMessage | undefined, match: (m: JsonMessage) => boolean, what: string, timeoutMs = this.opts.timeoutMs): Promise<JsonMessage> {
    return new Promise<JsonMessage>((resolve, reject) => {
      const w: Waiter = {
        match,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        const partial = this.frameBuf.length ? ` (${this.frameBuf.length} bytes of an unfinished frame arrived: a truncated frame)` : '';
        reject(new TimeoutError('NO_REPLY', `${this.description}: no answer to ${what} within ${timeoutMs} ms${partial}. Check that the controller is on and not serving another client.`));
      }, timeoutMs);
      this.waiters.add(w);
      if (msg) this.send(msg).catch((e: Error) => (this.waiters.delete(w), w.reject(e)));
    });
  }

  /** The next count line that arrives after this call. */
  nextCounts(timeoutMs: number): Promise<CountLine> {
    if (!this.counts) return Promise.reject(new TransportError('NOT_CONNECTED', `${this.description} is not open (open the device first).`));
    if (this.badLine !== undefined) {
      const bad = this.badLine;
      this.badLine = undefined;
      return Promise.reject(this.badCountLine(bad, 'since the last reading'));
    }
    return new Promise<CountLine>((resolve, reject) => {
      const w = {
        resolve: (l: CountLine) => {
          clearTimeout(timer);
          resolve(l);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.countWaiters = this.countWaiters.filter((x) => x !== w);
        const partial = this.lineBuf.length ? ` (${this.lineBuf.length} bytes of an unfinished line arrived: a truncated line)` : '';
        reject(new TimeoutError('NO_DATA', `${this.description}: no count line within ${timeoutMs} ms${partial}. The controller stopped sending counts: check it is on and its measurement period.`));
      }, timeoutMs);
      this.countWaiters.push(w);
    });
  }

  private badCountLine(line: string, when: string): ProtocolError {
    return new ProtocolError('BAD_COUNT_LINE', `${this.description}: a count line ${when} is not comma-separated numbers (${JSON.stringify(line.slice(0, 60))}). Line noise or another service on the counts port.`);
  }

  private onControl(s: string): void {
    this.frameBuf += s;
    const end = this.opts.frameEnd;
    let at: number;
    while ((at = this.frameBuf.indexOf(end)) >= 0) {
      const frame = this.frameBuf.slice(0, at);
      this.frameBuf = this.frameBuf.slice(at + end.length);
      this.stats.frames++;
      const texts = splitJsonObjects(frame);
      let msgs: JsonMessage[] | undefined;
      try {
        msgs = texts?.map((x) => JSON.parse(x) as JsonMessage).filter((m) => m && typeof m === 'object' && !Array.isArray(m));
      } catch {
        msgs = undefined;
      }
      if (!msgs || msgs.length !== texts!.length) {
        this.stats.garbledFrames++;
        this.failAll(new ProtocolError('GARBLED_FRAME', `${this.description}: a frame of ${frame.length} characters is not JSON (${JSON.stringify(frame.slice(0, 40))}). Line noise or another service on the control port; the request was not confirmed: retry it.`));
        continue;
      }
      for (const m of msgs) this.dispatch(m);
    }
    // A runaway frame (no end byte) is not kept without bound.
    if (this.frameBuf.length > 1 << 20) this.frameBuf = '';
  }

  private dispatch(m: JsonMessage): void {
    this.emit('message', m);
    for (const w of [...this.waiters]) {
      if (w.match(m)) {
        this.waiters.delete(w);
        w.resolve(m);
      }
    }
  }

  private onCounts(s: string): void {
    this.lineBuf += s;
    let nl: number;
    while ((nl = this.lineBuf.indexOf('\n')) >= 0) {
      const line = this.lineBuf.slice(0, nl).replace(/\r$/, '');
      this.lineBuf = this.lineBuf.slice(nl + 1);
      if (!line.trim()) continue;
      this.stats.countLines++;
      const fields = line.split(',').map((f) => f.trim());
      const nums = fields.map(Number);
      if (fields.length < 2 || fields.some((f) => f === '') || nums.some((v) => !Number.isFinite(v))) {
        this.stats.badCountLines++;
        const w = this.countWaiters.shift();
        if (w) w.reject(this.badCountLine(line, 'just received'));
        else this.badLine = line;
        continue;
      }
      const cl = { deviceTimeS: nums[0], counts: nums.slice(1) };
      for (const w of this.countWaiters.splice(0)) w.resolve(cl);
    }
    if (this.lineBuf.length > 1 << 16) this.lineBuf = '';
  }
}
