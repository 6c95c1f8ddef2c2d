/**
 * The emulated serial instruments of the EmuLab models: a pulsed photon source (PS-1) and a SPAD
 * detector module (SPAD-1). They speak the wire protocol of emulated/scpi.ts with their own
 * register map and firmware limits, and forward the settings that change the physics to the
 * shared EmulatedLab.
 */
import type { EmulatedLab, LabSettings } from './lab.ts';
import { ScpiInstrument, type EmulatedIdentity, type InstrumentState, type Register, type ScpiReply } from './scpi.ts';
import { createSourceDevice, type SourceDevice } from '../../core/source-device.ts';
import type { LinkPreset } from '../../lab/presets.ts';
import { choiceThresholds, packChoiceNibbles, packClasses } from '../../protocol/choices.ts';
import { decodePulseList } from '../../protocol/pulse-list.ts';
import { blockHeader } from '../transports/scpi-frames.ts';

/** Faults of the source's random-number generator, for the health-test tests. */
export type RngFault = 'none' | 'stuck' | 'biased';

/**
 * What the emulated source needs of its lab: the preset it starts from, a way to pass its settings
 * to the physics, to hand the optics its RNG, and the lab's pulse counter (the emission horizon).
 * An EmulatedLab on the same thread is one; a worker-hosted source (source-worker.ts) gets a
 * proxy that posts to the lab's thread.
 */
export interface SourceLabPort {
  readonly preset: Pick<LinkPreset, 'repRateHz' | 'intensities' | 'intensityProbs' | 'aliceBasisProbZ'>;
  update(patch: Partial<LabSettings>): void;
  /**
   * The optics take Alice's choices from `device` (applyAt, which records what it applied);
   * `native` (see EmulatedLab.attachSourceDevice) only when `choicesAt` is exactly its applyAt.
   */
  attachSourceDevice(device: SourceDevice, choicesAt: (pulses: Float64Array) => Uint8Array, native?: SourceDevice['native']): void;
  readonly pulsesEmitted: number;
}

/** Largest number of pulses one read-back command may list. */
export const MAX_READBACK_PULSES = 1 << 22;

/**
 * Pulsed laser + intensity and polarisation modulators (Alice), with an internal random-number
 * generator that drives the modulators and keeps the record of what it applied to each pulse.
 *
 * The RNG is a ChaCha20 keystream read with random access by pulse index (src/core/source-device.ts)
 * under 256 bits of fresh OS entropy drawn when the output is first switched on in internal
 * pattern mode (pulse 0 is the first pulse after that). The key never leaves the device: no
 * register, reply or snapshot holds it. The device records the choices it applied to the pulses
 * the lab's optics looked at (its photon candidates), so a read-back of detected pulses is mostly
 * a lookup; other pulses (dark counts) come from the keystream, which gave the recorded values. The host reads back only what the protocol needs, over
 * the wire (docs/devices.md, "Photon source read-back"):
 *
 * ```text
 *   PATTERN:CHOICES? #<d><len><pulse list>   ->  #<d><len><choices, 4 bits per pulse, low nibble first>
 *   PATTERN:CLASSES? #<d><len><pulse list>   ->  #<d><len><intensity classes, 2 bits per pulse, LSB first>
 *   PULSE:COUNT?                             ->  pulses emitted so far (the emission horizon)
 *   pulse list = strictly increasing pulse indices as LEB128 deltas (src/protocol/pulse-list.ts)
 * ```
 *
 * A pulse not yet emitted, a malformed list or one longer than MAX_READBACK_PULSES is refused
 * (`ERR -222` / `ERR -224` / `ERR -223`). With an EmulatedLab attached, the lab's physics takes its
 * Alice from this RNG (the device's own simulation of its optics) and the lab's pulse counter is
 * the emission horizon; without one, the horizon follows the wall clock since the output went on.
 */
export class EmulatedPhotonSource extends ScpiInstrument {
  readonly identity: EmulatedIdentity;
  private state = { freq: 1e9, signal: 0.5, decoy: 0.1, vacuum: 0, mode: 0, output: 1, pSignal: 0.6, pDecoy: 0.3, pZ: 0.6 };
  private rng: SourceDevice | undefined;
  /** Wall-clock emission start (ms) and pulses before it, for a source without a lab. */
  private emitting: { sinceMs: number; before: number } | undefined;
  private pulsesOff = 0;
  /** Fault injection: the RNG's output stuck at one choice, or biased towards signal/Z/0. */
  rngFault: RngFault = 'none';
  /** Fault injection on the read-back: a block one byte short, or without its delimiter. */
  readbackFault: 'none' | 'short' | 'unterminated' = 'none';
  protected readonly registers: Record<string, Register>;

  constructor(private readonly lab?: SourceLabPort, serial = 'PS1-0001', firmware = '1.3.0') {
    super();
    this.identity = { vendor: 'EmuLab', model: 'PS-1', serial, firmware };
    if (lab) {
      const p = lab.preset;
      Object.assign(this.state, { freq: p.repRateHz, signal: p.intensities.signal, decoy: p.intensities.decoy, vacuum: p.intensities.vacuum,
        pSignal: p.intensityProbs.signal, pDecoy: p.intensityProbs.decoy, pZ: p.aliceBasisProbZ });
    }
    this.state.output = lab ? 0 : 1;
    const s = this.state;
    const push = () => this.lab?.update({ enabled: s.output === 1, repRateHz: s.freq, intensities: { signal: s.signal, decoy: s.decoy, vacuum: s.vacuum } });
    // Probabilities are fixed once the RNG has drawn its key (its record must stay what it was).
    const prob = (set: (v: number) => void) => (v: number) => {
      if (this.rng) throw new Error('pattern running');
      set(v);
    };
    this.registers = {
      'SOURCE:FREQUENCY': { min: 1e6, max: 2.5e9, get: () => s.freq, set: (v) => ((s.freq = v), push()) },
      'INTENSITY:SIGNAL': { min: 0, max: 2, get: () => s.signal, set: (v) => ((s.signal = v), push()) },
      'INTENSITY:DECOY': { min: 0, max: 2, get: () => s.decoy, set: (v) => ((s.decoy = v), push()) },
      'INTENSITY:VACUUM': { min: 0, max: 0.1, get: () => s.vacuum, set: (v) => ((s.vacuum = v), push()) },
      'PATTERN:MODE': { min: 0, max: 1, integer: true, get: () => s.mode, set: (v) => (s.mode = v) },
      'PATTERN:PROB:SIGNAL': { min: 0, max: 1, get: () => s.pSignal, set: prob((v) => (s.pSignal = v)) },
      'PATTERN:PROB:DECOY': { min: 0, max: 1, get: () => s.pDecoy, set: prob((v) => (s.pDecoy = v)) },
      'PATTERN:PROB:BASISZ': { min: 0, max: 1, get: () => s.pZ, set: prob((v) => (s.pZ = v)) },
      'PULSE:COUNT': { min: 0, max: 2 ** 53, get: () => this.emittedPulses() },
      'OUTPUT:STATE': { min: 0, max: 1, integer: true, get: () => s.output, set: (v) => this.setOutput(v, push) },
    };
  }

  private setOutput(v: number, push: () => void): void {
    const s = this.state;
    if (v === 1 && s.mode === 0 && !this.rng) {
      if (s.pSignal + s.pDecoy > 1 + 1e-12) throw new Error('probabilities sum above 1');
      const rng = createSourceDevice(choiceThresholds({ intensityProbs: { signal: s.pSignal, decoy: s.pDecoy }, aliceBasisProbZ: s.pZ }));
      this.rng = rng;
      this.lab?.attachSourceDevice(rng, (pulses) => this.applyFault(rng.applyAt(pulses)));
    }
    if (v === 1 && s.output !== 1) this.emitting = { sinceMs: performance.now(), before: this.pulsesOff };
    if (v === 0 && s.output === 1) this.pulsesOff = this.emittedPulses();
    s.output = v;
    push();
  }

  private applyFault(c: Uint8Array): Uint8Array {
    if (this.rngFault === 'stuck') c.fill(c[0] ?? 0);
    else if (this.rngFault === 'biased') for (let i = 0; i < c.length; i++) if (i % 4) c[i] = 0; // 3 in 4: bit 0, Z, signal
    return c;
  }

  /** Pulses emitted so far: the lab's pulse counter, or the wall clock without a lab. */
  emittedPulses(): number {
    if (!this.rng) return 0;
    if (this.lab) return this.lab.pulsesEmitted;
    if (this.state.output !== 1 || !this.emitting) return this.pulsesOff;
    return this.emitting.before + Math.floor(((performance.now() - this.emitting.sinceMs) / 1000) * this.state.freq);
  }

  override handleBlock(header: string, _args: string, payload: Buffer): ScpiReply | Promise<ScpiReply> {
    this.log.push(header);
    if (header !== 'PATTERN:CHOICES?' && header !== 'PATTERN:CLASSES?') return `ERR -113,Undefined header ${header.slice(0, 40)}`;
    if (!this.rng) return 'ERR -200,No pattern record (output never on in internal mode)';
    let pulses: Float64Array;
    try {
      pulses = decodePulseList(payload);
    } catch {
      return 'ERR -224,Illegal pulse list';
    }
    if (pulses.length > MAX_READBACK_PULSES) return `ERR -223,Too much data (at most ${MAX_READBACK_PULSES} pulses)`;
    if (pulses.length && pulses[pulses.length - 1] >= this.emittedPulses()) return 'ERR -222,Pulse not yet emitted';
    // Mostly a lookup in the record (a merge walk, a few ns per pulse); dark counts' pulses and
    // any the record no longer holds from the keystream (~110 ns each), off the JS thread.
    return this.rng.recordAtAsync(pulses).then((c) => {
      this.applyFault(c);
      let out: Uint8Array;
      if (header === 'PATTERN:CHOICES?') out = packChoiceNibbles(c);
      else {
        for (let i = 0; i < c.length; i++) c[i] = (c[i] >> 2) & 3;
        out = packClasses(c);
      }
      c.fill(0);
      const block = Buffer.from(out.buffer, out.byteOffset, out.byteLength);
      if (this.readbackFault === 'short') return block.subarray(0, Math.max(0, block.length - 1));
      if (this.readbackFault === 'unterminated') return { raw: Buffer.concat([blockHeader(block.length), block, Buffer.from('X')]) };
      return block;
    });
  }

  reset(): void {
    Object.assign(this.state, { freq: 1e9, signal: 0.5, decoy: 0.1, vacuum: 0, mode: 0, output: this.lab ? 0 : 1 });
  }
  snapshot(): InstrumentState {
    const { pSignal: _a, pDecoy: _b, pZ: _c, ...rest } = this.state;
    return { ...rest };
  }
  restore(state: InstrumentState): void {
    for (const k of ['freq', 'signal', 'decoy', 'vacuum', 'mode'] as const) if (typeof state[k] === 'number') this.state[k] = state[k];
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
