/**
 * Emulated SCPI instruments: the firmware side of the serial protocol. An instrument is written
 * against the wire protocol (headers, replies, its own hard limits), independently of the
 * hardware profile, so the profile's templates and the driver are really tested against it.
 *
 * Wire protocol of the emulated "EmuLab" models (documented in docs/devices.md):
 * - `*IDN?` -> `vendor,model,serial,firmware`
 * - `HEADER?` -> the value as a decimal number
 * - `HEADER value` -> `OK`, or `ERR <code>,<text>` (SCPI error codes: -113 undefined header,
 *   -222 data out of range, -224 illegal parameter value, -200 execution error)
 *
 * - `HEADER? #<d><len><bytes>` -> `#<d><len><bytes>`: binary read-back with an IEEE 488.2
 *   definite-length block each way (the photon source's choice record; framing drawn in
 *   transports/scpi-frames.ts); instruments that have such commands implement `handleBlock`.
 *
 * Faults (for the bad-input tests): 'garbage' answers with non-text bytes, 'truncate' sends half
 * a reply without the delimiter, 'silent' does not answer, 'slow' answers after `slowMs`.
 */
import { randomBytes } from 'node:crypto';
import { blockHeader, MAX_BLOCK_BYTES } from '../transports/scpi-frames.ts';

export type FaultMode = 'none' | 'garbage' | 'truncate' | 'silent' | 'slow';

export interface EmulatedIdentity {
  vendor: string;
  model: string;
  serial: string;
  firmware: string;
}

/** One register of an emulated instrument. */
export interface Register {
  /** Reply format of a query (default: the bare number), e.g. `(v) => \`DT=${v}NS\``. */
  format?: (v: string) => string;
  /** Firmware limits (what the device itself refuses, whatever the driver believes). */
  min: number;
  max: number;
  get?: () => number;
  set?: (v: number) => void;
  /** Integer registers reject fractions (-224). */
  integer?: boolean;
}

/**
 * A reply: a text line, a binary block (Buffer), raw bytes as they are (`{raw}`, for fault
 * injection), or null for none.
 */
export type ScpiReply = string | Buffer | { raw: Buffer } | null;

/** Persistable state of an emulated instrument (register name -> value). */
export type InstrumentState = Record<string, number>;

export abstract class ScpiInstrument {
  fault: FaultMode = 'none';
  /** Delay of every reply in 'slow' mode (ms). */
  slowMs = 700;
  /** Answer accepted set commands with `OK` (false: sets are silent, errors still answered). */
  ackSets = true;
  /**
   * Firmware rule of a serial instrument: a binary block argument whose bytes stop arriving for
   * this long is abandoned (the host died mid-command) and the parser starts afresh. Without it a
   * host restarted after a crash mid-write talks into the dead request's block for ever.
   */
  blockIdleMs = 3000;
  /** Incomplete block arguments abandoned so far (see `blockIdleMs`). */
  abandonedBlocks = 0;
  /** Commands received (headers only, never values: seeds travel through here). */
  readonly log: string[] = [];
  abstract readonly identity: EmulatedIdentity;
  /** Header (upper case, e.g. `DEADTIME:TIME`) -> register. */
  protected abstract readonly registers: Record<string, Register>;

  /** Handles one command line; returns the reply line (without delimiter) or null for no reply. */
  handleLine(line: string): string | null {
    const text = line.trim();
    if (!text) return null;
    const sp = text.indexOf(' ');
    const header = (sp < 0 ? text : text.slice(0, sp)).toUpperCase();
    const arg = sp < 0 ? '' : text.slice(sp + 1).trim();
    this.log.push(header);
    if (this.log.length > 1000) this.log.splice(0, 500);
    if (header === '*IDN?') {
      const id = this.identity;
      return `${id.vendor},${id.model},${id.serial},${id.firmware}`;
    }
    if (header === '*RST') {
      this.reset();
      return 'OK';
    }
    const query = header.endsWith('?');
    const reg = this.registers[query ? header.slice(0, -1) : header];
    if (!reg) return `ERR -113,Undefined header ${header.slice(0, 40)}`;
    if (query) {
      if (!reg.get) return 'ERR -224,Write-only register';
      const v = formatNumber(reg.get());
      return reg.format ? reg.format(v) : v;
    }
    if (!reg.set) return 'ERR -200,Read-only register';
    if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(arg)) return 'ERR -224,Illegal parameter value';
    const v = Number(arg);
    if (v < reg.min || v > reg.max) return 'ERR -222,Data out of range';
    if (reg.integer && !Number.isInteger(v)) return 'ERR -224,Illegal parameter value';
    try {
      reg.set(v);
    } catch {
      return 'ERR -200,Execution error';
    }
    return this.ackSets ? 'OK' : null;
  }

  /**
   * A command that carried a binary block (`header` upper-cased, `args` the text between the
   * header and the block). Instruments without block commands refuse it.
   */
  handleBlock(header: string, _args: string, _payload: Buffer): ScpiReply | Promise<ScpiReply> {
    this.log.push(header);
    return `ERR -113,Undefined header ${header.slice(0, 40)}`;
  }

  /** Back to power-on values. */
  abstract reset(): void;
  abstract snapshot(): InstrumentState;
  abstract restore(state: InstrumentState): void;
}

export function formatNumber(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(12)));
}

/**
 * Byte-level endpoint: turns the bytes the host writes into command lines and the instrument's
 * replies into bytes (with the fault applied). `send` pushes bytes to the host.
 */
export class ScpiEndpoint {
  private buf: Buffer = Buffer.alloc(0);
  /** While a long block arrives: its chunks, gathered without copying until `need` bytes are in. */
  private chunks: Buffer[] = [];
  private have = 0;
  private need = 0;
  private idle: NodeJS.Timeout | undefined;
  /** Replies still being computed (block commands may answer asynchronously); replies keep order. */
  private tail: Promise<void> = Promise.resolve();
  private busy = 0;
  constructor(
    readonly instrument: ScpiInstrument,
    private readonly send: (bytes: Buffer) => void,
    private readonly delimiter = '\n',
  ) {}

  receive(bytes: Buffer): void {
    if (this.need) {
      this.chunks.push(Buffer.from(bytes));
      this.have += bytes.length;
      if (this.have < this.need) {
        this.idle?.refresh();
        return;
      }
      this.endBlockWait();
      this.buf = Buffer.concat(this.chunks);
      this.chunks = [];
      this.need = 0;
    } else {
      this.buf = this.buf.length ? Buffer.concat([this.buf, bytes]) : Buffer.from(bytes);
    }
    for (;;) {
      const nl = this.buf.indexOf(0x0a);
      // A block argument (` #<d><len>`) before the end of the line: its bytes may hold newlines.
      const hash = this.buf.indexOf(' #');
      if (hash >= 0 && (nl < 0 || hash < nl)) {
        const h = hash + 2;
        if (this.buf.length < h + 1) return;
        const d = this.buf[h] - 0x30;
        if (d >= 1 && d <= 9) {
          if (this.buf.length < h + 1 + d) return;
          const len = Number(this.buf.subarray(h + 1, h + 1 + d).toString('latin1'));
          if (Number.isSafeInteger(len) && len <= MAX_BLOCK_BYTES) {
            const end = h + 1 + d + len;
            if (this.buf.length < end + 1) {
              this.need = end + 1;
              this.chunks = [this.buf];
              this.have = this.buf.length;
              this.buf = Buffer.alloc(0);
              this.idle = setTimeout(() => this.abandonBlock(), this.instrument.blockIdleMs);
              this.idle.unref();
              return;
            }
            const text = this.buf.subarray(0, hash).toString('latin1').trim();
            const payload = Buffer.from(this.buf.subarray(h + 1 + d, end));
            const terminated = this.buf[end] === 0x0a || (this.buf[end] === 0x0d && this.buf[end + 1] === 0x0a);
            this.buf = this.buf.subarray(end + (this.buf[end] === 0x0d ? 2 : 1));
            if (!terminated) {
              this.queue('ERR -160,Block data error');
              continue;
            }
            const sp = text.indexOf(' ');
            const header = (sp < 0 ? text : text.slice(0, sp)).toUpperCase();
            this.queue(this.instrument.handleBlock(header, sp < 0 ? '' : text.slice(sp + 1).trim(), payload));
            continue;
          }
        }
      }
      if (nl < 0) break;
      const line = this.buf.subarray(0, nl).toString('latin1').replace(/\r$/, '');
      this.buf = this.buf.subarray(nl + 1);
      this.queue(this.instrument.handleLine(line));
    }
    if (this.buf.length > 4096 && this.buf.indexOf(' #') < 0) this.buf = Buffer.alloc(0);
  }

  /** The host went quiet mid-block: drop what arrived of it (no reply: nobody waits for one). */
  private abandonBlock(): void {
    this.idle = undefined;
    if (!this.need) return;
    this.instrument.abandonedBlocks++;
    this.chunks = [];
    this.have = 0;
    this.need = 0;
    this.buf = Buffer.alloc(0);
  }

  private endBlockWait(): void {
    clearTimeout(this.idle);
    this.idle = undefined;
  }

  /** Replies in command order: at once when nothing is pending, else after what is. */
  private queue(r: ScpiReply | Promise<ScpiReply>): void {
    if (!this.busy && !(r instanceof Promise)) {
      if (r !== null) this.reply(r);
      return;
    }
    this.busy++;
    this.tail = this.tail.then(async () => {
      let v: ScpiReply;
      try {
        v = await r;
      } catch {
        v = 'ERR -200,Execution error';
      }
      this.busy--;
      if (v !== null) this.reply(v);
    });
  }

  private reply(r: Exclude<ScpiReply, null>): void {
    if (typeof r === 'object' && !Buffer.isBuffer(r)) {
      this.send(r.raw);
      return;
    }
    const body = Buffer.isBuffer(r) ? Buffer.concat([blockHeader(r.length), r]) : Buffer.from(r, 'latin1');
    switch (this.instrument.fault) {
      case 'silent':
        return;
      case 'garbage': {
        // Line noise: bytes a wrong baud rate produces, never a valid reply.
        const junk = randomBytes(12).map((b) => (b === 0x0a || b === 0x0d ? 0x8a : (b & 0x7f) < 0x20 || b >= 0x80 ? b : b | 0x80));
        this.send(Buffer.concat([junk, Buffer.from(this.delimiter)]));
        return;
      }
      case 'slow':
        setTimeout(() => this.send(Buffer.concat([body, Buffer.from(this.delimiter, 'latin1')])), this.instrument.slowMs);
        return;
      case 'truncate':
        this.send(body.subarray(0, Math.max(1, body.length >> 1)));
        return;
      default:
        this.send(Buffer.concat([body, Buffer.from(this.delimiter, 'latin1')]));
    }
  }
}
