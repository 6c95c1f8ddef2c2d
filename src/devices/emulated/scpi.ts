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
 * Faults (for the bad-input tests): 'garbage' answers with non-text bytes, 'truncate' sends half
 * a reply without the delimiter, 'silent' does not answer, 'slow' answers after `slowMs`.
 */
import { randomBytes } from 'node:crypto';

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

/** Persistable state of an emulated instrument (register name -> value). */
export type InstrumentState = Record<string, number>;

export abstract class ScpiInstrument {
  fault: FaultMode = 'none';
  /** Delay of every reply in 'slow' mode (ms). */
  slowMs = 700;
  /** Answer accepted set commands with `OK` (false: sets are silent, errors still answered). */
  ackSets = true;
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
  private buf = '';
  constructor(
    readonly instrument: ScpiInstrument,
    private readonly send: (bytes: Buffer) => void,
    private readonly delimiter = '\n',
  ) {}

  receive(bytes: Buffer): void {
    this.buf += bytes.toString('latin1');
    for (;;) {
      const i = this.buf.indexOf('\n');
      if (i < 0) break;
      const line = this.buf.slice(0, i).replace(/\r$/, '');
      this.buf = this.buf.slice(i + 1);
      const reply = this.instrument.handleLine(line);
      if (reply !== null) this.reply(reply);
    }
    if (this.buf.length > 4096) this.buf = '';
  }

  private reply(text: string): void {
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
        setTimeout(() => this.send(Buffer.from(text + this.delimiter, 'latin1')), this.instrument.slowMs);
        return;
      case 'truncate':
        this.send(Buffer.from(text.slice(0, Math.max(1, text.length >> 1)), 'latin1'));
        return;
      default:
        this.send(Buffer.from(text + this.delimiter, 'latin1'));
    }
  }
}
