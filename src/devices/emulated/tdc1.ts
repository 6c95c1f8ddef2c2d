/**
 * An emulated S-Fifteen TDC1 timestamp unit: the firmware side of its USB CDC serial protocol,
 * put on one end of a real pty pair (socat), so the real serial transport and TDC1 driver run on
 * the other end. Its clicks come from a `PulseTagSource` (the emulated lab's detections on Bob's
 * clock, or the lab's light synthetic source in tests): lab channel c is input c+1 (pattern bit c).
 *
 * Wire protocol, as the vendor's open driver uses it (pyS15, S15lib/instruments/
 * usb_counter_fpga.py; docs/devices.md lists what is taken from where):
 * - commands end with CR/LF or ';' (several per line); replies end with CR LF;
 * - `*IDN?` identity; `*RST`; `HELP`;
 * - `TIME?` / `TIME <ms>` integration time 0..65535 ms; the reply is a signed 16-bit number, so
 *   values above 32767 come back negative (the vendor driver adds 65536: "Fixing wrong TDC1
 *   return type");
 * - `MODE?` -> 0 singles, 1 pairs, 3 timestamp; `SINGLES`, `PAIRS`, `TIMESTAMP` set it;
 * - `NIM`, `TTL` input standards; `NEG <v>` / `POS <v>` threshold in volts (-3.3..3.3);
 *   `LEVEL?` -> the threshold, first token a number (the vendor parses `split()[0]`);
 * - `REFCLK?` / `REFCLK <0|1|2>` (auto, force external, force internal), `ECLOCK?`;
 * - `INPKT` (sent by the vendor before a timestamp acquisition; accepted, no reply);
 * - `COUNTS?`: singles mode -> after the integration time, `c1 c2 c3 c4`; pairs mode -> the four
 *   singles and the coincidences 1-3, 1-4, 2-3, 2-4; timestamp mode -> the binary word stream
 *   (tdc1-words.ts) for the integration time (0 = until `ABORT`);
 * - `ABORT` stops a stream or a count; what is already on the line still arrives (drain).
 * Commands it does not know get no reply (the driver's query then times out and says so).
 *
 * Faults for tests: `fault` ('garbage' | 'truncate' | 'silent') on text replies; `stall()` stops
 * the stream mid-way (a unit that stops answering); `slip(lose)` loses (or inserts) 2 bytes at
 * the next stream chunk; `identity` can be changed (a wrong device on the port).
 *
 * Pacing: the stream goes as fast as the host reads (pty back-pressure), or with
 * `realtime: { speed }` emulated time follows the wall clock. Count integrations wait
 * `timeMs x timeScale` of wall time (default 1).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SerialPortStream } from '@serialport/stream';
import { ConfigError, TransportError } from '../../errors.ts';
import { ttyBinding } from '../transports/tty-binding.ts';
import { Tdc1Encoder, tdc1Bytes, TDC1_UNIT_PS } from '../tdc1-words.ts';
import type { PulseTagSource } from './lab.ts';

export type Tdc1Fault = 'none' | 'garbage' | 'truncate' | 'silent';

export interface EmulatedTdc1Options {
  serial?: string;
  firmware?: string;
  /** Pulse rate of the source (default: the lab's settings, else 1 GHz). */
  repRateHz?: number;
  /** Wall time of a count integration per emulated ms (default 1; tests use less). */
  timeScale?: number;
  /** Emulated time follows the wall clock x speed (default: as fast as the host reads). */
  realtime?: { speed?: number };
  /** Words per stream chunk written to the line (default 4096). */
  chunkWords?: number;
}

/** Settings that persist between CLI invocations. */
export interface Tdc1State {
  timeMs: number;
  threshold: number;
  refclk: number;
  mode: number;
}

const NIM_V = -0.4;
const TTL_V = 1.5;

export class EmulatedTdc1 {
  identity: string;
  fault: Tdc1Fault = 'none';
  /** Commands received (headers only). */
  readonly log: string[] = [];
  private state: Tdc1State = { timeMs: 1000, threshold: NIM_V, refclk: 0, mode: 0 };
  private inbuf = '';
  private sink: ((bytes: Buffer) => Promise<void>) | undefined;
  private gen = 0;
  private streaming = false;
  private stalled = false;
  private slipMode: 'lose' | 'insert' | undefined;
  /** Emulated time at the end of what the source produced, in ps (Bob's clock). */
  private pulses = 0;
  private readonly repRateHz: number;
  private readonly timeScale: number;
  private readonly chunkWords: number;
  private countTimer: NodeJS.Timeout | undefined;
  /** Words sent in timestamp mode (for tests and the CLI). */
  wordsSent = 0;

  constructor(
    private readonly source: PulseTagSource,
    private readonly opts: EmulatedTdc1Options = {},
  ) {
    this.identity = `S-Fifteen Instruments,TDC1,${opts.serial ?? 'TDC1-0001'},${opts.firmware ?? '1.0.2'}`;
    this.repRateHz = opts.repRateHz ?? (source as { settings?: { repRateHz?: number } }).settings?.repRateHz ?? 1e9;
    this.timeScale = opts.timeScale ?? 1;
    this.chunkWords = opts.chunkWords ?? 4096;
  }

  snapshot(): Record<string, number> {
    return { ...this.state };
  }

  restore(s: Record<string, number>): void {
    if (Number.isInteger(s.timeMs) && s.timeMs >= 0 && s.timeMs <= 65535) this.state.timeMs = s.timeMs;
    if (typeof s.threshold === 'number' && Math.abs(s.threshold) <= 3.3) this.state.threshold = s.threshold;
    if (s.refclk === 0 || s.refclk === 1 || s.refclk === 2) this.state.refclk = s.refclk;
    if (s.mode === 0 || s.mode === 1 || s.mode === 3) this.state.mode = s.mode;
  }

  get isStreaming(): boolean {
    return this.streaming;
  }

  /** The stream stops sending (the unit hangs); commands still arrive, nothing answers them. */
  stall(): void {
    this.stalled = true;
  }

  /** Loses (or inserts) 2 bytes in the next stream chunk. */
  slip(mode: 'lose' | 'insert' = 'lose'): void {
    this.slipMode = mode;
  }

  /** Connects the host side: `send` resolves when the bytes are on the line (back-pressure). */
  connect(send: (bytes: Buffer) => Promise<void>): void {
    this.sink = send;
  }

  disconnect(): void {
    this.sink = undefined;
    this.stopStream();
  }

  /** Bytes written by the host. */
  receive(bytes: Buffer): void {
    for (const ch of bytes.toString('latin1')) {
      if (ch === '\n' || ch === '\r' || ch === ';') {
        const cmd = this.inbuf.trim();
        this.inbuf = '';
        if (cmd) this.handle(cmd);
      } else if (this.inbuf.length < 256) this.inbuf += ch;
    }
  }

  private reply(text: string): void {
    if (this.stalled) return;
    switch (this.fault) {
      case 'silent':
        return;
      case 'garbage':
        void this.sink?.(Buffer.from([0xf3, 0x81, 0x00, 0xfe, 0x9c, 0x07, 0xc8, 0x0d, 0x0a]));
        return;
      case 'truncate':
        void this.sink?.(Buffer.from(text.slice(0, Math.max(1, text.length >> 1)), 'latin1'));
        return;
      default:
        void this.sink?.(Buffer.from(text + '\r\n', 'latin1'));
    }
  }

  private handle(cmd: string): void {
    const [head, ...rest] = cmd.split(/\s+/);
    const h = head.toUpperCase();
    const arg = rest.join(' ');
    this.log.push(h);
    if (this.log.length > 1000) this.log.splice(0, 500);
    const s = this.state;
    const num = Number(arg);
    switch (h) {
      case '*IDN?':
        return this.reply(this.identity);
      case '*RST':
        this.stopStream();
        this.state = { timeMs: 1000, threshold: NIM_V, refclk: 0, mode: 0 };
        return;
      case 'HELP':
        return this.reply('*IDN? *RST HELP TIME? TIME MODE? SINGLES PAIRS TIMESTAMP NIM TTL NEG POS LEVEL? REFCLK? REFCLK ECLOCK? INPKT COUNTS? ABORT');
      case 'TIME?':
        return this.reply(String(s.timeMs > 32767 ? s.timeMs - 65536 : s.timeMs));
      case 'TIME':
        if (/^\d{1,5}$/.test(arg) && num <= 65535) s.timeMs = num;
        return;
      case 'MODE?':
        return this.reply(String(s.mode));
      case 'SINGLES':
        s.mode = 0;
        return;
      case 'PAIRS':
        s.mode = 1;
        return;
      case 'TIMESTAMP':
        s.mode = 3;
        return;
      case 'NIM':
        s.threshold = NIM_V;
        return;
      case 'TTL':
        s.threshold = TTL_V;
        return;
      case 'NEG':
      case 'POS':
        if (arg !== '' && Number.isFinite(num) && Math.abs(num) <= 3.3 && (h === 'NEG' ? num <= 0 : num >= 0)) s.threshold = num;
        return;
      case 'LEVEL?':
        return this.reply(`${s.threshold.toFixed(3)} V`);
      case 'REFCLK?':
        return this.reply(String(s.refclk));
      case 'REFCLK':
        if (arg === '0' || arg === '1' || arg === '2') s.refclk = num;
        return;
      case 'ECLOCK?':
        return this.reply('0');
      case 'INPKT':
        return;
      case 'ABORT':
        this.stopStream();
        clearTimeout(this.countTimer);
        return;
      case 'COUNTS?':
        if (s.mode === 3) return void this.startStream(s.timeMs);
        return this.count(s.mode === 1);
      default:
        return; // unknown: no reply
    }
  }

  // ---- counting -----------------------------------------------------------------------------

  /** Tags of the next `ms` of emulated time, as (units, pattern) pairs merged per 2 ns unit. */
  private take(pulses: number): { units: bigint[]; pattern: number[] } {
    const { tags } = this.source.nextPulses(pulses);
    this.pulses += pulses;
    const units: bigint[] = [];
    const pattern: number[] = [];
    const u = BigInt(TDC1_UNIT_PS);
    for (let i = 0; i < tags.timePs.length; i++) {
      const c = tags.channel[i];
      if (c > 3) continue; // the TDC1 has four inputs
      const t = tags.timePs[i] < 0n ? 0n : tags.timePs[i] / u;
      const k = units.length - 1;
      // Coincident edges within one 2 ns unit are one word with several pattern bits (and a
      // second edge on the same input within it is not seen).
      if (k >= 0 && units[k] === t) pattern[k] |= 1 << c;
      else {
        units.push(t);
        pattern.push(1 << c);
      }
    }
    return { units, pattern };
  }

  private count(pairs: boolean): void {
    const ms = this.state.timeMs || 1;
    const { units, pattern } = this.take(Math.round((ms / 1000) * this.repRateHz));
    const singles = [0, 0, 0, 0];
    for (const p of pattern) for (let c = 0; c < 4; c++) if (p & (1 << c)) singles[c]++;
    let line = singles.join(' ');
    if (pairs) {
      // Coincidences within one 2 ns unit (or the next): 1-3, 1-4, 2-3, 2-4.
      const pairsOf = [[0, 2], [0, 3], [1, 2], [1, 3]];
      const co = pairsOf.map(([a, b]) => {
        let n = 0;
        for (let i = 0; i < units.length; i++) {
          if (!(pattern[i] & (1 << a))) continue;
          for (let j = Math.max(0, i - 2); j < Math.min(units.length, i + 3); j++) {
            if (pattern[j] & (1 << b) && (units[j] - units[i] <= 1n && units[i] - units[j] <= 1n)) {
              n++;
              break;
            }
          }
        }
        return n;
      });
      line += ' ' + co.join(' ');
    }
    clearTimeout(this.countTimer);
    this.countTimer = setTimeout(() => this.reply(line), ms * this.timeScale);
  }

  // ---- timestamp stream ---------------------------------------------------------------------

  private stopStream(): void {
    this.streaming = false;
    this.gen++;
  }

  private async startStream(durationMs: number): Promise<void> {
    if (this.streaming) return;
    this.streaming = true;
    this.stalled = false;
    const gen = ++this.gen;
    const periodPs = 1e12 / this.repRateHz;
    const startPs = this.pulses * periodPs;
    const enc = new Tdc1Encoder(BigInt(Math.floor(startPs / TDC1_UNIT_PS)));
    const endPs = durationMs > 0 ? startPs + durationMs * 1e9 : Infinity;
    const t0 = performance.now();
    let pulsesPerChunk = 1e5;
    try {
      while (this.streaming && gen === this.gen && !this.stalled) {
        const nowPs = this.pulses * periodPs;
        if (nowPs >= endPs) break;
        if (this.opts.realtime) {
          const due = ((performance.now() - t0) / 1000) * (this.opts.realtime.speed ?? 1) * 1e12 + startPs;
          if (nowPs > due) {
            await new Promise((r) => setTimeout(r, Math.min(50, (nowPs - due) / 1e9 / (this.opts.realtime!.speed ?? 1))));
            continue;
          }
        }
        const pulses = Math.max(1, Math.min(pulsesPerChunk, Math.ceil((endPs - nowPs) / periodPs)));
        const { units, pattern } = this.take(pulses);
        const words = enc.push(units, pattern);
        enc.advanceTo(BigInt(Math.floor((this.pulses * periodPs) / TDC1_UNIT_PS)), words);
        // Aim at about chunkWords words per chunk.
        if (units.length < this.chunkWords / 2) pulsesPerChunk = Math.min(pulsesPerChunk * 2, 1e10);
        else if (units.length > this.chunkWords * 2) pulsesPerChunk = Math.max(1000, Math.floor(pulsesPerChunk / 2));
        if (!words.length) continue;
        let bytes = Buffer.from(tdc1Bytes(words));
        if (this.slipMode) {
          const at = 4 * Math.floor(words.length / 2) + 1;
          bytes = this.slipMode === 'lose' ? Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 2)]) : Buffer.concat([bytes.subarray(0, at), Buffer.from([0x5a, 0xa5]), bytes.subarray(at)]);
          this.slipMode = undefined;
        }
        this.wordsSent += words.length;
        if (!this.sink) break;
        await this.sink(bytes);
      }
    } finally {
      if (gen === this.gen) this.streaming = false;
    }
  }
}

export interface Tdc1Attachment {
  readonly path: string;
  close(): Promise<void>;
}

/** Puts an emulated TDC1 on a tty (one end of a pty pair); the driver opens the other end. */
export async function attachTdc1ToTty(device: EmulatedTdc1, path: string): Promise<Tdc1Attachment> {
  const port = new SerialPortStream({ binding: ttyBinding, path, baudRate: 115200, autoOpen: false });
  await new Promise<void>((resolve, reject) =>
    port.open((err) => (err ? reject(new TransportError('OPEN_FAILED', `emulated TDC1 cannot open ${path}: ${err.message}`, { cause: err })) : resolve())),
  );
  port.on('error', () => {});
  // Resolves when the bytes are written to the pty: a host that does not read holds the stream.
  device.connect((bytes) => new Promise<void>((resolve) => (port.isOpen ? port.write(bytes, () => resolve()) : resolve())));
  port.on('data', (b: Buffer) => device.receive(b));
  return {
    path,
    close: async () => {
      device.disconnect();
      await new Promise<void>((resolve) => (port.isOpen ? port.close(() => resolve()) : resolve()));
    },
  };
}

export interface Tdc1Pty {
  /** The driver's end of the pair. */
  readonly path: string;
  readonly device: EmulatedTdc1;
  /** Kills socat (the line goes away, as an unplugged unit) and removes the links. */
  close(): Promise<void>;
}

/**
 * Starts `socat pty,raw,echo=0,link=A pty,raw,echo=0,link=B` in a fresh temporary folder (or
 * `dir`), attaches `device` to B and returns A. ConfigError('NO_SOCAT') when socat is missing.
 */
export async function startTdc1OnPty(device: EmulatedTdc1, dir?: string): Promise<Tdc1Pty> {
  const own = dir === undefined;
  const folder = dir ?? mkdtempSync(join(tmpdir(), 'qkd-tdc1-'));
  const a = join(folder, 'tdc1-A');
  const b = join(folder, 'tdc1-B');
  const proc = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr?.resume();
  const failed = new Promise<Error>((resolve) => proc.once('error', resolve));
  const deadline = Date.now() + 5000;
  while (!(existsSync(a) && existsSync(b))) {
    const err = await Promise.race([failed, new Promise<undefined>((r) => setTimeout(() => r(undefined), 10))]);
    if (err || proc.exitCode !== null) {
      if (own) rmSync(folder, { recursive: true, force: true });
      throw new ConfigError('NO_SOCAT', `the emulated TDC1 runs over a pty pair made by socat, which ${err ? `could not start (${err.message})` : `exited with ${proc.exitCode}`}. Install it (apt-get install socat).`);
    }
    if (Date.now() > deadline) {
      proc.kill();
      throw new TransportError('OPEN_FAILED', 'socat did not create the pty links within 5 s.');
    }
  }
  const att = await attachTdc1ToTty(device, b);
  return {
    path: a,
    device,
    async close() {
      await att.close();
      if (proc.exitCode === null && proc.signalCode === null) {
        const done = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await done;
      }
      if (own) rmSync(folder, { recursive: true, force: true });
    },
  };
}
