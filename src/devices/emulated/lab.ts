/**
 * The emulated lab as the emulated devices see it: one object per emulated node set that produces
 * Bob's tags (for the emulated time-tagger) and receives the settings the drivers change on the
 * emulated source and detectors, so that a changed efficiency, dead time or intensity changes the
 * physics the tags come from.
 *
 * The tags come from the lab's `EmulatedLink` (src/lab/link.ts); settings reach it through its
 * setters (setSource, setDetector). The `SyntheticTagSource` below is a small stand-in with the
 * same output shape (Bob's clock, sorted, per-channel delays, Poisson clicks at the decoy-model
 * gain) for tests that want tags without the full physics (`source: 'synthetic'`).
 *
 * Limits of the emulation: the link has one detector model for all channels, so an efficiency or
 * dead-time change on any emulated detector applies to all; the repetition rate is fixed by the
 * preset (a rate change is stored and read back but does not re-time the pulses).
 */
import type { TagBatch } from '../types.ts';
import { loadLinkPreset, type LinkPreset } from '../../lab/presets.ts';
import { decoyModel } from '../../lab/theory.ts';
import { defaultLabPhysics, EmulatedLink, type AliceChoiceSource } from '../../lab/link.ts';
import { countChannels, nativeBobBasesAt } from '../../lab/native-physics.ts';
import { bobBasisChoicesAt, defaultBobSeed } from '../../lab/alice.ts';
import type { SourceDevice } from '../../core/source-device.ts';

/** A producer of Bob's tags: `nextPulses(n)` covers the next `n` of Alice's pulses, contiguously. */
export interface PulseTagSource {
  nextPulses(pulses: number): { tags: TagBatch };
  /** The same off the JS thread where the source can (one at a time; no other call meanwhile). */
  nextPulsesAsync?(pulses: number): Promise<{ tags: TagBatch }>;
  /** False while no pulses exist yet (the source has not started): the tagger then sees no time pass. */
  ready?(): boolean;
}

/** Settings the emulated devices forward to the physics. */
export interface LabSettings {
  enabled: boolean;
  repRateHz: number;
  intensities: { signal: number; decoy: number; vacuum: number };
  /** Detector efficiency relative to the preset's (1 = as the preset says). */
  efficiencyScale: number;
  deadTimePs: number;
}

/** SplitMix64-based uniform doubles in [0, 1): seedable, fast, good enough for a stand-in. */
class Rng {
  private s: bigint;
  constructor(seed: bigint) {
    this.s = BigInt.asUintN(64, seed);
  }
  next(): number {
    this.s = BigInt.asUintN(64, this.s + 0x9e3779b97f4a7c15n);
    let z = this.s;
    z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
    z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
    z ^= z >> 31n;
    return Number(z >> 11n) / 2 ** 53;
  }
}

/**
 * Stand-in tag generator: each pulse clicks with the decoy-model gain averaged over the intensity
 * mix (geometric skips, never a loop over silent pulses), on a uniformly chosen detector channel;
 * dead time per channel; Bob's clock = (1 + drift) t + offset + channel delay.
 */
export class SyntheticTagSource implements PulseTagSource {
  private pulse = 0;
  private rng: Rng;
  private lastClickPs: number[];
  constructor(
    private readonly preset: LinkPreset,
    seed: bigint,
    private readonly settings: () => LabSettings,
    private readonly distanceKm = preset.distanceKm,
  ) {
    this.rng = new Rng(seed ^ 0x5f3759dfn);
    this.lastClickPs = preset.detectors.map(() => -Infinity);
  }

  /** Click probability per pulse for the current settings. */
  clickProbability(): number {
    const s = this.settings();
    const p = { ...this.preset, intensities: s.intensities, etaBob: Math.min(1, this.preset.etaBob * s.efficiencyScale) };
    const m = decoyModel(p, this.distanceKm);
    if (!s.enabled) return p.y0;
    const w = this.preset.intensityProbs;
    return w.signal * m.gain.signal + w.decoy * m.gain.decoy + w.vacuum * m.gain.vacuum;
  }

  nextPulses(pulses: number): { tags: TagBatch } {
    const s = this.settings();
    const q = Math.min(1, Math.max(1e-12, this.clickProbability()));
    const periodPs = 1e12 / s.repRateHz;
    const { offsetPs, driftPpm } = this.preset.clock;
    const times: bigint[] = [];
    const chans: number[] = [];
    const end = this.pulse + pulses;
    const logq = Math.log1p(-q);
    let k = this.pulse - 1;
    for (;;) {
      // Geometric skip to the next clicking pulse.
      k += q >= 1 ? 1 : 1 + Math.floor(Math.log(1 - this.rng.next()) / logq);
      if (k >= end) break;
      const d = Math.min(this.preset.detectors.length - 1, Math.floor(this.rng.next() * this.preset.detectors.length));
      const tAlice = k * periodPs;
      if (tAlice - this.lastClickPs[d] < s.deadTimePs) continue;
      this.lastClickPs[d] = tAlice;
      const ch = this.preset.detectors[d].channel;
      const delay = this.preset.channelDelaysPs[ch] ?? 0;
      times.push(BigInt(Math.round(tAlice * (1 + driftPpm * 1e-6) + offsetPs + delay)));
      chans.push(ch);
    }
    this.pulse = end;
    // Channel delays can reorder neighbouring tags: a tagger delivers them in time order.
    const order = times.map((_, i) => i).sort((a, b) => (times[a] < times[b] ? -1 : times[a] > times[b] ? 1 : 0));
    return { tags: { timePs: BigInt64Array.from(order.map((i) => times[i])), channel: Uint8Array.from(order.map((i) => chans[i])) } };
  }
}

export interface EmulatedLabOptions {
  /** Link preset name or object (default 'reference-decoy'). */
  preset?: string | LinkPreset;
  seed?: bigint;
  distanceKm?: number;
  /** Fraction of pulses an intercept-resend eavesdropper attacks (overrides the preset's). */
  eveFraction?: number;
  /** Tag source: 'link' (default, the EmulatedLink physics), 'synthetic', or a factory (tests). */
  source?: 'link' | 'synthetic' | ((lab: EmulatedLab) => PulseTagSource);
  /**
   * Alice's source is a device of this lab (the emulated PS-1, driven by her node over a serial
   * line): no pulse exists until it has drawn its RNG key and its output is on; pulse 0 is the
   * first pulse after that, and the physics takes Alice's choices from the source's RNG (the
   * device's own simulation of its optics; no node ever sees its key).
   */
  awaitSource?: boolean;
  /**
   * Whether the link's batches carry the emulator's truth (default true: tests read it through
   * `nextPulses`); a node's tagger only needs the tags (src/node/bob.ts turns it off).
   */
  truth?: boolean;
}

/**
 * Shared state of one emulated node set. The emulated source and detectors write settings here;
 * the emulated tagger pulls tags from `nextPulses`. Not thread-shared: JS thread only.
 */
export class EmulatedLab {
  readonly preset: LinkPreset;
  readonly seed: bigint;
  readonly distanceKm: number;
  readonly settings: LabSettings;
  private source: PulseTagSource | undefined;
  private readonly makeSource: (lab: EmulatedLab) => PulseTagSource;
  /** Tags delivered per channel and pulses covered, for the detectors' count-rate registers. */
  private counted = { pulses: 0, perChannel: new Map<number, number>() };
  private readonly awaitSeed: boolean;
  private alice: AliceChoiceSource | undefined;

  constructor(opts: EmulatedLabOptions = {}) {
    this.preset = typeof opts.preset === 'object' ? opts.preset
      : loadLinkPreset(opts.preset ?? 'reference-decoy', { distanceKm: opts.distanceKm, eveFraction: opts.eveFraction });
    this.seed = opts.seed ?? 1n;
    this.distanceKm = opts.distanceKm ?? this.preset.distanceKm;
    this.settings = {
      enabled: true,
      repRateHz: this.preset.repRateHz,
      intensities: { ...this.preset.intensities },
      efficiencyScale: 1,
      deadTimePs: this.preset.detector.deadTimePs,
    };
    this.awaitSeed = opts.awaitSource ?? false;
    const truth = opts.truth ?? true;
    const src = opts.source ?? 'link';
    this.makeSource =
      src === 'synthetic' ? (lab) => new SyntheticTagSource(lab.preset, lab.seed, () => lab.settings, lab.distanceKm)
      : src === 'link' ? (lab) => (lab.link = new EmulatedLink(lab.preset, { seed: lab.seed, alice: lab.alice, distanceKm: lab.distanceKm, truth }), lab.pushToLink(), lab.link)
      : src;
  }

  /** The EmulatedLink producing the tags (once the first tags were asked for, with source 'link'). */
  link: EmulatedLink | undefined;

  private pushToLink(): void {
    const l = this.link;
    if (!l) return;
    const s = this.settings;
    l.setSource({ enabled: s.enabled, intensities: s.intensities });
    l.setDetector({ etaBob: Math.min(1, this.preset.etaBob * s.efficiencyScale), deadTimePs: s.deadTimePs });
  }

  /** A device setting changed: record it and pass it to the physics. */
  update(patch: Partial<LabSettings>): void {
    Object.assign(this.settings, patch);
    if (patch.intensities) this.settings.intensities = { ...patch.intensities };
    this.pushToLink();
  }

  /**
   * The lab's emulated source started its RNG: the physics takes Alice's choices from it. Takes
   * effect at pulse 0 only (a running link keeps the record it started with).
   */
  attachSource(alice: AliceChoiceSource): void {
    if (this.source) return;
    this.alice = alice;
  }

  /**
   * The same for the emulated source (instruments.ts SourceLabPort): `choicesAt` is its optics'
   * view of `device` (which records what it applied). `native`: the device's native object, only
   * when `choicesAt` is exactly its `applyAt` (the source worker's case; not with an injected
   * fault): the lab's Rust physics then calls it without a round trip through JavaScript.
   */
  attachSourceDevice(_device: SourceDevice, choicesAt: (pulses: Float64Array) => Uint8Array, native?: SourceDevice['native']): void {
    this.attachSource(native ? { choicesAt, native } : { choicesAt });
  }

  private pulseCounter: BigInt64Array | undefined;

  /**
   * The pulse counter (pulses emitted so far) in shared memory, for a source served on another
   * thread: element 0, read with Atomics.load; updated after each nextPulses().
   */
  sharedPulseCounter(): SharedArrayBuffer {
    this.pulseCounter ??= new BigInt64Array(new SharedArrayBuffer(8));
    Atomics.store(this.pulseCounter, 0, BigInt(this.counted.pulses));
    return this.pulseCounter.buffer as SharedArrayBuffer;
  }

  /**
   * Bob's active basis modulator's record: the basis (0 Z, 1 X) it applied to each listed pulse.
   * The modulator is part of the emulated optics; its RNG is the lab's (a function of the lab's
   * seed, which only the lab holds). Bob's node reads this record, never a seed. In Rust unless
   * the lab's physics is the TypeScript reference (QKD_LAB_PHYSICS=ts): the same bytes.
   */
  bobBasesAt(pulses: Float64Array): Uint8Array {
    const bobSeed = this.link?.bobSeed ?? defaultBobSeed(this.seed);
    const physics = this.link?.physics ?? defaultLabPhysics();
    return physics === 'native' ? nativeBobBasesAt(this.preset, bobSeed, pulses) : bobBasisChoicesAt(this.preset, bobSeed, pulses);
  }

  /** Pulses emitted so far (the source's emission horizon). */
  get pulsesEmitted(): number {
    return this.counted.pulses;
  }

  ready(): boolean {
    return !this.awaitSeed || this.source !== undefined || (this.alice !== undefined && this.settings.enabled);
  }

  nextPulses(pulses: number): { tags: TagBatch } {
    const out = this.started().nextPulses(pulses);
    this.count(pulses, out);
    return out;
  }

  /**
   * `nextPulses` with the physics off the JS thread where it can run there (the Rust link with
   * Alice's source device attached natively: the node's lab). One at a time.
   */
  async nextPulsesAsync(pulses: number): Promise<{ tags: TagBatch }> {
    const src = this.started();
    const out = src.nextPulsesAsync ? await src.nextPulsesAsync(pulses) : src.nextPulses(pulses);
    this.count(pulses, out);
    return out;
  }

  private started(): PulseTagSource {
    if (!this.ready()) throw new Error('EmulatedLab: no pulses before the source has started its RNG and switched its output on (check ready()).');
    return (this.source ??= this.makeSource(this));
  }

  /** The emission horizon and the per-channel counts after a batch. */
  private count(pulses: number, out: { tags: TagBatch }): void {
    this.counted.pulses += pulses;
    if (this.pulseCounter) Atomics.store(this.pulseCounter, 0, BigInt(this.counted.pulses));
    const counts = countChannels(out.tags.channel);
    for (let c = 0; c < 256; c++) if (counts[c]) this.counted.perChannel.set(c, (this.counted.perChannel.get(c) ?? 0) + counts[c]);
  }

  /**
   * Count rate of one detector channel in counts per second: measured from the tags produced so
   * far when there are enough, else the model's expectation.
   */
  countRatePerSec(channel: number): number {
    const n = this.counted.perChannel.get(channel) ?? 0;
    if (this.counted.pulses >= 1e6 && n >= 100) return (n / this.counted.pulses) * this.settings.repRateHz;
    const probe = new SyntheticTagSource(this.preset, this.seed, () => this.settings, this.distanceKm);
    return (probe.clickProbability() / Math.max(1, this.preset.detectors.length)) * this.settings.repRateHz;
  }
}
