/**
 * Test helpers of the timing layer (outside test/ so tap does not run them as tests).
 *
 * `SparseLink` wraps an EmulatedLink to emulate long runs cheaply: it produces data only in
 * short windows (e.g. 1 ms every 100 ms), and in the gaps turns the source and the dark counts off
 * so the emulator skips them at no cost; it also makes Bob's drift wander (a sine around the
 * preset's drift) by setting the clock at each window, which the link applies continuously.
 */
import { EmulatedLink, type LinkBatch } from '../lab/link.ts';
import { loadLinkPreset, type LinkPresetOverrides, type LinkPreset } from '../lab/presets.ts';

export interface WanderOptions {
  /** Peak deviation of the drift from its base value, ppm. */
  amplitudePpm: number;
  /** Period of the sinusoidal wander, seconds of emulated time. */
  periodS: number;
}

export class SparseLink {
  readonly link: EmulatedLink;
  readonly preset: LinkPreset;
  private readonly baseDrift: number;
  private readonly y0: number;

  constructor(presetName: string, opts: { seed: bigint; distanceKm?: number; overrides?: LinkPresetOverrides; wander?: WanderOptions }) {
    this.preset = loadLinkPreset(presetName, opts.overrides);
    this.link = new EmulatedLink(this.preset, { seed: opts.seed, distanceKm: opts.distanceKm });
    this.baseDrift = this.preset.clock.driftPpm;
    this.y0 = this.preset.y0;
    this.wander = opts.wander;
  }
  private readonly wander?: WanderOptions;

  get periodPs(): number { return this.link.periodPs; }

  /** Drift (ppm) in force at pulse `p`. */
  driftAt(p: number): number {
    if (!this.wander) return this.baseDrift;
    const s = (p * this.link.periodPs) / 1e12;
    return this.baseDrift + this.wander.amplitudePpm * Math.sin((2 * Math.PI * s) / this.wander.periodS);
  }

  /** Emulates `pulses` pulses with light and dark counts on. */
  on(pulses: number): LinkBatch {
    if (this.wander) this.link.setClock({ driftPpm: this.driftAt(this.link.pulsesDone) });
    return this.link.nextPulses(pulses);
  }

  /** Skips `pulses` pulses with no clicks at all (source and darks off), at almost no cost. */
  skip(pulses: number): void {
    if (this.wander) this.link.setClock({ driftPpm: this.driftAt(this.link.pulsesDone + pulses / 2) });
    this.link.setSource({ enabled: false });
    this.link.setDetector({ y0: 0 });
    this.link.nextPulses(pulses);
    this.link.setSource({ enabled: true });
    this.link.setDetector({ y0: this.y0 });
  }
}

/** Fraction of photon detections (truth >= 0) whose assigned index differs from the truth. */
export function indexErrors(assigned: Float64Array, truth: Float64Array): { photons: number; wrong: number } {
  let photons = 0, wrong = 0;
  for (let i = 0; i < truth.length; i++) {
    if (truth[i] < 0) continue;
    photons++;
    if (assigned[i] !== truth[i]) wrong++;
  }
  return { photons, wrong };
}
