/**
 * SCPI text over a ZeroMQ REQ socket, the way IDQ's Time Controllers (ID900, ID1000) take their
 * commands: the device binds a REP socket on TCP port 5555; every command is one request message
 * (UTF-8 text, no delimiter) and every command, set or query, gets exactly one reply message
 * (a set's reply is empty, a query's is its value; IDQ's Python examples send with `send_string`
 * and read one `recv()` per command).
 *
 * ```
 *  host (REQ)                         device (REP, tcp://<ip>:5555)
 *  ── "INPU1:COUN?" ──────────────────▶
 *  ◀───────────────────────── "12345"
 *  ── "INPU1:THRE 0.5" ───────────────▶
 *  ◀────────────────────────────── ""   (accepted)
 * ```
 *
 * Why REQ with `correlate` + `relaxed`: a plain REQ socket that timed out waiting is stuck (it
 * may not send again until the reply comes). With both options the next command may go out at
 * once and a late reply to the old one is discarded by ZeroMQ itself (request ids), so a reply
 * that comes after its timeout is never handed to the next command.
 *
 * Errors: no reply within the timeout is TimeoutError('NO_REPLY') naming the endpoint (ZeroMQ
 * connects lazily, so a wrong address or a dead device look the same: both are said); a reply that
 * is not printable UTF-8 text is ProtocolError('GARBLED_REPLY'); after close(), calls reject with
 * TransportError('NOT_CONNECTED'). One command at a time: calls are queued.
 */
import { EventEmitter } from 'node:events';
import { Request } from 'zeromq';
import { ProtocolError, TimeoutError, TransportError } from '../../errors.ts';
import type { LineTransport } from '../types.ts';

export interface ZmqTransportOptions {
  /**
   * `tcp://host:port`, or a function resolving it at open (an emulated device started on first
   * use binds an ephemeral port).
   */
  endpoint: string | (() => Promise<string>);
  timeoutMs: number;
}

/** Printable text (plus tab and line breaks, which multi-value replies may hold). */
const PRINTABLE = /^[\t\n\r\x20-\x7e]*$/;

export class ZmqScpiTransport extends EventEmitter implements LineTransport {
  readonly kind = 'zmq' as const;
  description: string;
  private sock: Request | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: ZmqTransportOptions) {
    super();
    this.description = typeof opts.endpoint === 'string' ? `zmq ${opts.endpoint}` : 'zmq (emulated)';
  }

  get isOpen(): boolean {
    return this.sock !== undefined;
  }

  async open(): Promise<void> {
    if (this.sock) return;
    const endpoint = typeof this.opts.endpoint === 'string' ? this.opts.endpoint : await this.opts.endpoint();
    this.description = `zmq ${endpoint}`;
    const sock = new Request({ correlate: true, relaxed: true, linger: 0, receiveTimeout: this.opts.timeoutMs, sendTimeout: this.opts.timeoutMs });
    try {
      sock.connect(endpoint);
    } catch (cause) {
      sock.close();
      throw new TransportError('OPEN_FAILED', `cannot connect to ${endpoint}: ${(cause as Error).message}. Check the address in the node configuration ("host").`, { cause });
    }
    this.sock = sock;
  }

  async close(): Promise<void> {
    const s = this.sock;
    this.sock = undefined;
    s?.close();
  }

  async write(command: string, shown = command): Promise<void> {
    const reply = await this.query(command, undefined, shown);
    // A set the device accepted answers an empty message; anything else is for the driver to judge,
    // so a set's reply is never dropped: the driver gets it through query() when it wants it.
    if (reply !== '') throw new ProtocolError('UNEXPECTED_REPLY', `${this.description}: '${shown}' expected an empty reply, got ${JSON.stringify(reply.slice(0, 80))}.`);
  }

  query(command: string, timeoutMs?: number, shown = command): Promise<string> {
    const run = this.queue.then(() => this.exchange(command, timeoutMs ?? this.opts.timeoutMs, shown));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async exchange(command: string, timeoutMs: number, shown: string): Promise<string> {
    const sock = this.sock;
    if (!sock) throw new TransportError('NOT_CONNECTED', `${this.description} is not open (open the device first).`);
    sock.receiveTimeout = timeoutMs;
    try {
      await sock.send(command);
    } catch (cause) {
      throw new TimeoutError('NO_REPLY', `${this.description}: could not send '${shown}' within ${timeoutMs} ms: is the device on and at this address?`, { cause });
    }
    let msg: Buffer;
    try {
      [msg] = await sock.receive();
    } catch (cause) {
      if (!this.sock) throw new TransportError('NOT_CONNECTED', `${this.description} was closed while waiting for the reply to '${shown}'.`, { cause });
      throw new TimeoutError('NO_REPLY', `${this.description}: no reply to '${shown}' within ${timeoutMs} ms. Check that the device is on, at this address and port, and not busy with another client.`, { cause });
    }
    const text = new TextDecoder('utf-8', { fatal: false }).decode(msg);
    if (text.includes('\ufffd') || !PRINTABLE.test(text)) {
      throw new ProtocolError('GARBLED_REPLY', `${this.description}: the reply to '${shown}' is not text (${msg.length} bytes, starting ${msg.subarray(0, 8).toString('hex')}). Is something else listening on this port?`);
    }
    return text.replace(/\r?\n$/, '');
  }
}
