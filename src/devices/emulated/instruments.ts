/**
 * The emulated serial instruments of the EmuLab models: a pulsed photon source (PS-1) and a SPAD
 * detector module (SPAD-1). They speak the wire protocol of emulated/scpi.ts with their own
 * register map and firmware limits, and forward the settings that change the physics to the
 * shared EmulatedLab.
 */
import type { EmulatedLab } from './lab.ts';
import { ScpiInstrument, type EmulatedIdentity, type InstrumentState, type Register } from './scpi.ts';

/** Pulsed laser + intensity and polarisation modulators (Alice). */
export class EmulatedPhotonSource extends ScpiInstrument {
  readonly identity: EmulatedIdentity;
  private state = { freq: 1e9, signal: 0.5, decoy: 0.1, vacuum: 0, mode: 0, output: 1 };
  /** The pattern seed is secret: kept, never readable, never in snapshots. */
  private seed: bigint | undefined;
  protected readonly registers: Record<string, Register>;

  constructor(private readonly lab?: EmulatedLab, serial = 'PS1-0001', firmware = '1.2.0') {
    super();
    this.identity = { vendor: 'EmuLab', model: 'PS-1', serial, firmware };
    if (lab) {
      const p = lab.preset;
      Object.assign(this.state, { freq: p.repRateHz, signal: p.intensities.signal, decoy: p.intensities.decoy, vacuum: p.intensities.vacuum });
    }
    const s = this.state;
    const push = () => this.lab?.update({ enabled: s.output === 1, repRateHz: s.freq, intensities: { signal: s.signal, decoy: s.decoy, vacuum: s.vacuum } });
    this.registers = {
      'SOURCE:FREQUENCY': { min: 1e6, max: 2.5e9, get: () => s.freq, set: (v) => ((s.freq = v), push()) },
      'INTENSITY:SIGNAL': { min: 0, max: 2, get: () => s.signal, set: (v) => ((s.signal = v), push()) },
      'INTENSITY:DECOY': { min: 0, max: 2, get: () => s.decoy, set: (v) => ((s.decoy = v), push()) },
      'INTENSITY:VACUUM': { min: 0, max: 0.1, get: () => s.vacuum, set: (v) => ((s.vacuum = v), push()) },
      'PATTERN:MODE': { min: 0, max: 1, integer: true, get: () => s.mode, set: (v) => (s.mode = v) },
      'PATTERN:SEED': { min: 0, max: 2 ** 64, integer: true, set: (v) => this.setSeed(BigInt(v)) },
      'OUTPUT:STATE': { min: 0, max: 1, integer: true, get: () => s.output, set: (v) => ((s.output = v), push()) },
    };
  }

  private setSeed(v: bigint): void {
    this.seed = v;
    this.lab?.setPatternSeed(v);
  }

  /** The seed as received (tests check it arrived; never exposed on the wire). */
  get patternSeed(): bigint | undefined {
    return this.seed;
  }

  override handleLine(line: string): string | null {
    // 64-bit seeds do not survive a trip through a double: parse them exactly.
    const m = /^\s*PATTERN:SEED\s+(\d{1,20})\s*$/i.exec(line);
    if (m) {
      this.log.push('PATTERN:SEED');
      const v = BigInt(m[1]);
      if (v >= 1n << 64n) return 'ERR -222,Data out of range';
      this.setSeed(v);
      return this.ackSets ? 'OK' : null;
    }
    return super.handleLine(line);
  }

  reset(): void {
    Object.assign(this.state, { freq: 1e9, signal: 0.5, decoy: 0.1, vacuum: 0, mode: 0, output: 1 });
    this.seed = undefined;
  }
  snapshot(): InstrumentState {
    return { ...this.state };
  }
  restore(state: InstrumentState): void {
    for (const k of Object.keys(this.state) as (keyof typeof this.state)[]) if (typeof state[k] === 'number') this.state[k] = state[k];
    this.lab?.update({ enabled: this.state.output === 1, repRateHz: this.state.freq, intensities: { signal: this.state.signal, decoy: this.state.decoy, vacuum: this.state.vacuum } });
  }
}

export interface EmulatedSpadOptions {
  serial?: string;
  firmware?: string;
  /** Tagger channel this detector feeds (for its count-rate register). */
  channel?: number;
  /** Cooling speed of the emulated Peltier stage in °C per second (default 50). */
  coolRateCPerSec?: number;
  /** Clock for the temperature model (ms); tests pass a fake one. */
  now?: () => number;
  /**
   * Wire dialect: 'scpi' (firmware 2.x: `DEADTIME:TIME?` -> `100`) or 'terse' (firmware 1.4.x:
   * `DT?` -> `DT=100NS`, `EFF?` -> `EFF=10%`): same device, another profile
   * (emulab-spad1-fw14), which exercises reply patterns.
   */
  dialect?: 'scpi' | 'terse';
}

/** Gated/free-running SPAD module with cooler and counters (Bob). */
export class EmulatedSpadDetector extends ScpiInstrument {
  readonly identity: EmulatedIdentity;
  private state = { efficiencyPct: 10, biasV: 45.5, deadTimeNs: 0, thresholdMv: 50, setpointC: -50 };
  private temp: { fromC: number; atMs: number };
  private readonly now: () => number;
  private readonly coolRate: number;
  protected registers: Record<string, Register>;

  constructor(private readonly lab?: EmulatedLab, opts: EmulatedSpadOptions = {}) {
    super();
    const terse = opts.dialect === 'terse';
    this.identity = { vendor: 'EmuLab', model: 'SPAD-1', serial: opts.serial ?? 'SPD1-0001', firmware: opts.firmware ?? (terse ? '1.4.2' : '2.1.3') };
    this.now = opts.now ?? (() => performance.now());
    this.coolRate = opts.coolRateCPerSec ?? 50;
    if (lab) this.state.deadTimeNs = lab.preset.detector.deadTimePs / 1000;
    this.temp = { fromC: this.state.setpointC, atMs: this.now() };
    const s = this.state;
    const channel = opts.channel ?? 0;
    this.registers = {
      'DETECTOR:EFFICIENCY': { min: 1, max: 40, get: () => s.efficiencyPct, set: (v) => ((s.efficiencyPct = v), this.lab?.update({ efficiencyScale: v / 10 })) },
      'BIAS:VOLTAGE': { min: 0, max: 80, get: () => s.biasV, set: (v) => (s.biasV = v) },
      'DEADTIME:TIME': { min: 0, max: 100_000, get: () => s.deadTimeNs, set: (v) => ((s.deadTimeNs = v), this.lab?.update({ deadTimePs: v * 1000 })) },
      'DISCRIMINATOR:THRESHOLD': { min: 0, max: 1000, get: () => s.thresholdMv, set: (v) => (s.thresholdMv = v) },
      'TEMPERATURE:SETPOINT': {
        min: -120, max: 0,
        get: () => s.setpointC,
        set: (v) => {
          this.temp = { fromC: this.temperatureC(), atMs: this.now() };
          s.setpointC = v;
        },
      },
      'TEMPERATURE:VALUE': { min: -273, max: 100, get: () => Math.round(this.temperatureC() * 100) / 100 },
      'STATUS:READY': { min: 0, max: 1, get: () => (Math.abs(this.temperatureC() - s.setpointC) < 0.5 ? 1 : 0) },
      'COUNTERS:DETECTION_FREQ': { min: 0, max: 1e10, get: () => Math.round(this.lab?.countRatePerSec(channel) ?? 0) },
    };
    if (terse) {
      const r = this.registers;
      const alias = (name: string, reg: Register, unit: string): [string, Register] => [name, { ...reg, format: (v) => `${name}=${v}${unit}` }];
      this.registers = Object.fromEntries([
        alias('EFF', r['DETECTOR:EFFICIENCY'], '%'),
        alias('VB', r['BIAS:VOLTAGE'], 'V'),
        alias('DT', r['DEADTIME:TIME'], 'NS'),
        alias('THR', r['DISCRIMINATOR:THRESHOLD'], 'MV'),
        alias('TSET', r['TEMPERATURE:SETPOINT'], 'C'),
        alias('TEMP', r['TEMPERATURE:VALUE'], 'C'),
        alias('RDY', r['STATUS:READY'], ''),
        alias('CNT', r['COUNTERS:DETECTION_FREQ'], 'HZ'),
      ]);
    }
  }

  /** Linear approach to the set point at `coolRateCPerSec`. */
  temperatureC(): number {
    const dt = (this.now() - this.temp.atMs) / 1000;
    const target = this.state.setpointC;
    const d = target - this.temp.fromC;
    const moved = Math.min(Math.abs(d), this.coolRate * dt);
    return this.temp.fromC + Math.sign(d) * moved;
  }

  reset(): void {
    Object.assign(this.state, { efficiencyPct: 10, biasV: 45.5, deadTimeNs: 0, thresholdMv: 50, setpointC: -50 });
  }
  snapshot(): InstrumentState {
    return { ...this.state };
  }
  restore(state: InstrumentState): void {
    for (const k of Object.keys(this.state) as (keyof typeof this.state)[]) if (typeof state[k] === 'number') this.state[k] = state[k];
    this.temp = { fromC: this.state.setpointC, atMs: this.now() };
    this.lab?.update({ efficiencyScale: this.state.efficiencyPct / 10, deadTimePs: this.state.deadTimeNs * 1000 });
  }
}
