/**
 * An emulated S-Fifteen SPDC board (pump laser, laser peltier, crystal heater): the firmware side
 * of its serial text protocol (lines end CR LF), on one end of a real pty pair (socat) with
 * `startInstrumentOnPty`,
 * so the real serial transport and driver (drivers/s15-spdc.ts) run on the other end.
 *
 * Protocol as the vendor's open driver (pyS15, S15lib/instruments/spdc_driver.py) uses it:
 * `*IDN?`; `LCURRENT`, `LLIMIT`, `HSETTEMP`, `PSETTEMP`, `HLOOP`, `PLOOP`, `POWER` set with a value
 * (no reply) and read with `?`; `HTEMP?`, `PTEMP?` read the temperatures; `ON` / `OFF` switch the
 * laser. Its own limits: laser current 0..LLIMIT (LLIMIT 0..97 mA), heater 20..100 C, peltier
 * 20..50 C, POWER 0..3; the laser only lases while POWER bit 1 is set and it was switched ON (a
 * current set while off is kept). Refusals answer `ERR <code>,<text>` (our format: the vendor's
 * driver only says the board "returns an error message").
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, TransportError } from '../../errors.ts';
import { SerialPortStream } from '@serialport/stream';
import { ttyBinding } from '../transports/tty-binding.ts';
import { ScpiEndpoint, ScpiInstrument, type EmulatedIdentity, type InstrumentState, type Register } from './scpi.ts';

export class EmulatedSpdcBoard extends ScpiInstrument {
  identity: EmulatedIdentity;
  laserOn = false;
  private s = { lcurrent: 0, llimit: 60, hset: 35, pset: 25, hloop: 0, ploop: 0, power: 0 };
  protected readonly registers: Record<string, Register>;

  constructor(opts: { serial?: string; firmware?: string } = {}) {
    super();
    this.ackSets = false;
    this.identity = { vendor: 'S-Fifteen Instruments', model: 'SPDCSDR', serial: opts.serial ?? 'SPDC-0001', firmware: opts.firmware ?? '2.0.3' };
    const reg = (key: keyof EmulatedSpdcBoard['s'], min: number, max: number, integer = false): Register => ({
      min, max, integer,
      get: () => this.s[key],
      set: (v) => void (this.s[key] = v),
    });
    this.registers = {
      LCURRENT: { ...reg('lcurrent', 0, 97), set: (v) => {
        if (v > this.s.llimit) throw new Error('above LLIMIT');
        this.s.lcurrent = v;
      } },
      LLIMIT: reg('llimit', 0, 97),
      HSETTEMP: reg('hset', 20, 100),
      PSETTEMP: reg('pset', 20, 50),
      HLOOP: reg('hloop', 0, 1, true),
      PLOOP: reg('ploop', 0, 1, true),
      POWER: reg('power', 0, 3, true),
      // Temperatures settle at the set point while the loop runs, else sit at 24.5 C.
      HTEMP: { min: 0, max: 0, get: () => (this.s.hloop && this.s.power & 1 ? this.s.hset : 24.5) },
      PTEMP: { min: 0, max: 0, get: () => (this.s.ploop && this.s.power & 1 ? this.s.pset : 24.5) },
    };
  }

  /** Is the pump lasing? (its power line on, switched ON, a current above zero) */
  get lasing(): boolean {
    return this.laserOn && (this.s.power & 2) !== 0 && this.s.lcurrent > 0;
  }

  override handleLine(line: string): string | null {
    const cmd = line.trim().toUpperCase();
    if (cmd === 'ON' || cmd === 'OFF') {
      this.log.push(cmd);
      if (cmd === 'ON' && !(this.s.power & 2)) return 'ERR -200,Laser power line is off (POWER bit 1)';
      this.laserOn = cmd === 'ON';
      return null;
    }
    const r = super.handleLine(line);
    // A set above LLIMIT throws in the register: say why rather than a bare execution error.
    if (r === 'ERR -200,Execution error' && cmd.startsWith('LCURRENT ')) return 'ERR -222,Laser current above LLIMIT';
    return r;
  }

  reset(): void {
    this.s = { lcurrent: 0, llimit: 60, hset: 35, pset: 25, hloop: 0, ploop: 0, power: 0 };
    this.laserOn = false;
  }

  snapshot(): InstrumentState {
    return { ...this.s, laserOn: this.laserOn ? 1 : 0 };
  }

  restore(state: InstrumentState): void {
    for (const k of Object.keys(this.s) as (keyof EmulatedSpdcBoard['s'])[]) if (typeof state[k] === 'number') this.s[k] = state[k];
    this.laserOn = state.laserOn === 1;
  }
}

export interface InstrumentPty {
  /** The driver's end of the pair. */
  path: string;
  /** Kills socat (the line goes away, as an unplugged board) and closes the emulator's end. */
  close(): Promise<void>;
}

/**
 * Starts `socat -d -d pty,raw,echo=0,link=<dir>/<name>-A pty,raw,echo=0,link=<dir>/<name>-B`,
 * attaches `instrument` to the B end and resolves with the A end for the driver.
 */
export async function startInstrumentOnPty(instrument: ScpiInstrument, dir: string, name = 'spdc', delimiter = '\r\n'): Promise<InstrumentPty> {
  const a = join(dir, `${name}-A`);
  const b = join(dir, `${name}-B`);
  const proc = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr?.resume();
  let spawnError: Error | undefined;
  proc.once('error', (e) => (spawnError = e));
  const deadline = Date.now() + 5000;
  while (!(existsSync(a) && existsSync(b))) {
    if (spawnError || proc.exitCode !== null) {
      throw new ConfigError('NO_SOCAT', `the emulated ${name} runs over a pty pair made by socat, which ${spawnError ? `could not start (${spawnError.message})` : `exited with ${proc.exitCode}`}. Install it (apt-get install socat).`);
    }
    if (Date.now() > deadline) {
      proc.kill();
      throw new TransportError('OPEN_FAILED', `socat did not create the ${name} pty links within 5 s.`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  // As attachInstrumentToTty, with the board's CR LF line end.
  const port = new SerialPortStream({ binding: ttyBinding, path: b, baudRate: 115200, autoOpen: false });
  await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(new TransportError('OPEN_FAILED', `emulator cannot open ${b}: ${err.message}`, { cause: err })) : resolve())));
  port.on('error', () => {});
  const endpoint = new ScpiEndpoint(instrument, (bytes) => void (port.isOpen && port.write(bytes)), delimiter);
  port.on('data', (bytes: Buffer) => endpoint.receive(bytes));
  return {
    path: a,
    async close() {
      await new Promise<void>((resolve) => (port.isOpen ? port.close(() => resolve()) : resolve()));
      if (proc.exitCode === null && proc.signalCode === null) {
        const done = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await done;
      }
    },
  };
}
