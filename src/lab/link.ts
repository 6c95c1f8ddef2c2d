/**
 * The emulated decoy-state BB84 link: Alice's weak-coherent source, the fibre, an optional
 * intercept-resend eavesdropper, Bob's basis choice (passive or active), his detectors (efficiency,
 * dark counts, dead time, afterpulsing, jitter) and his tagger clock (offset, drift, jitter,
 * per-channel delays). It produces the raw time tags a tagger would deliver, with the truth
 * (which pulse, which kind of click) alongside for tests and for the emulated devices.
 * The model and its equations are in docs/lab.md.
 *
 * Speed: it never loops over pulses. Pulses that yield a detected photon are found by geometric
 * skips at the largest per-intensity click probability p_max = 1 − exp(−η μ_max), then thinned by
 * p_click(intensity)/p_max (exact: each pulse clicks independently with its own probability);
 * dark counts are geometric skips per detector; afterpulses are scheduled events. All sources are
 * merged in physical time so dead time and afterpulsing see clicks in the order they happen.
 *
 * Times: internal physical time τ in ps counts from Alice's pulse 0 (pulse k is emitted at k·T).
 * A click at τ is tagged at
 *   t_B = (1 + drift·1e-6)·(τ + fibreDelay + j_det) + offset + j_clk + channelDelay[ch]
 * with j_det, j_clk Gaussian, drawn together as one Gaussian of the combined width (the same
 * distribution) truncated at 6σ, and rounded to an integer ps. Float64 holds these
 * exactly up to 2^53 ps (2.5 h of emulated time); beyond that the rounding grows (1 ps at 5 h).
 *
 * Ordering: tags are delivered sorted by t_B across batches. Jitter and channel delays can put a
 * tag of the last pulses of a batch after a tag of the next batch, so tags later than a watermark
 * (the earliest time any later pulse can produce) are held back and delivered with the next batch.
 * A batch therefore carries the tags of its pulses minus the last few ns, plus the held-back tags
 * of the previous batch. Setters that move the clock backwards break the order at that instant,
 * as they would on a real tagger.
 *
 * Where the loops run: by default in Rust (native/core/src/lab_link.rs via src/lab/native-physics.ts:
 * physics 'native'); this file computes the derived parameters (derive(), setters) and hands them
 * over, and keeps its own TypeScript loops below as the reference (physics 'ts', or
 * QKD_LAB_PHYSICS=ts). Both draw the same random streams in the same order with the same IEEE
 * arithmetic (Math.log as fdlibm computes it, on both sides), so they give the same tags and
 * truth bit for bit: test/lab/physics-native.test.ts checks it on random seeds and parameters.
 *
 * Concurrency: single-threaded, synchronous; one caller. A call of nextPulses() at 1 GHz / 50 km
 * takes ~0.2 µs per tag in TypeScript, several times less in Rust (bench/lab.bench.ts); call it
 * with batches of 1e6–1e8 pulses. Setters take effect from the next nextPulses() call (i.e. at a
 * pulse boundary).
 */
import {
  aliceChoiceFast, aliceThresholds, bobBasisFast, bobThreshold, defaultBobSeed, seedKeys,
  DOMAIN_ALICE, DOMAIN_BOB, type AliceThresholds, type SeedKeys,
} from './alice.ts';
import {
  periodPs as presetPeriodPs, validateLinkPreset,
  type ClockParams, type DetectorParams, type IntensitySet, type LinkPreset,
} from './presets.ts';
import { Xoshiro128 } from './rng.ts';
import { nativeLinkPhysics, type NativeLinkPhysics, type NativeSourceDevice } from './native-physics.ts';
import { transmittance } from './theory.ts';
import type { TagBatch } from './types.ts';

// Local bindings of the hot imported functions: a transpiler may turn cross-module calls into
// getter calls on a namespace object (tsx/esbuild does), which costs ~20 ns per call here.
const choiceAt = aliceChoiceFast;
const bobBasisAt = bobBasisFast;

/** Group delay of standard single-mode fibre, ps per km (group index 1.468 at 1550 nm). */
export const FIBRE_DELAY_PS_PER_KM = (1e12 * 1.468) / 299792.458;

export const KIND_PHOTON = 0;
export const KIND_DARK = 1;
export const KIND_AFTERPULSE = 2;

export interface LinkOptions {
  /** Seed of Alice's choices (see aliceChoices) and of the physics. */
  seed: bigint;
  /** Overrides preset.distanceKm. */
  distanceKm?: number;
  /** Overrides preset.eveFraction. */
  eveFraction?: number;
  /** Seed of Bob's active basis choice; defaults to defaultBobSeed(seed). */
  bobSeed?: bigint;
  /**
   * Alice's choices from her source device's own RNG (the emulated PS-1: a keyed CSPRNG whose key
   * never leaves it). Without it the lab draws a stand-in pattern from `seed` (lab tests and
   * calibration on the emulated lab; never what a node reads).
   */
  alice?: AliceChoiceSource;
  /**
   * Where the per-click loops run: 'native' (Rust, native/core/src/lab_link.rs) or 'ts' (this
   * file, the reference). Both give the same tags bit for bit (test/lab/physics-native.test.ts).
   * Default: the environment's QKD_LAB_PHYSICS, else 'native'.
   */
  physics?: LabPhysics;
  /**
   * Whether batches carry the truth columns (truthPulse, truthKind, truthSlot; default true).
   * Without, they are empty and the tags the same: a tagger's consumer (the emulated devices of a
   * run) never reads them, and not producing them saves a third of the lab's memory traffic.
   */
  truth?: boolean;
}

export type LabPhysics = 'ts' | 'native';

/** The default of LinkOptions.physics: QKD_LAB_PHYSICS ('ts' or 'native'), else 'native'. */
export function defaultLabPhysics(): LabPhysics {
  const v = process.env.QKD_LAB_PHYSICS;
  if (v === undefined || v === '') return 'native';
  if (v !== 'ts' && v !== 'native') throw new RangeError(`QKD_LAB_PHYSICS must be 'ts' or 'native'; got '${v}'`);
  return v;
}

/** The record of Alice's source: her packed choice byte at each listed pulse (ascending). */
export interface AliceChoiceSource {
  choicesAt(pulses: Float64Array): Uint8Array;
  /**
   * The emulated source device's native object when `choicesAt` is exactly its `applyAt`: the
   * Rust physics then asks it for the candidates' choices itself, one call per batch instead of
   * the candidates and choices crossing into JavaScript and back (the same choices, recorded the
   * same way). The TypeScript physics always calls `choicesAt`.
   */
  native?: NativeSourceDevice;
}

export interface LinkBatch {
  /** First pulse and number of pulses this call emulated. */
  firstPulse: number;
  pulses: number;
  /** Bob's tagger clock, sorted by time (see module doc for the hold-back at batch ends). */
  tags: TagBatch;
  /** Pulse that caused each tag, −1 for dark counts and afterpulses. */
  truthPulse: Float64Array;
  /** 0 photon, 1 dark, 2 afterpulse. */
  truthKind: Uint8Array;
  /** Pulse slot (gate) in which each click happened, for every kind (extension of the API). */
  truthSlot: Float64Array;
}

/** What a device emulator may change on the detectors while the link runs. */
export type DetectorSettings = Partial<DetectorParams> & { etaBob?: number; y0?: number };
/** What a device emulator may change on the source while the link runs. */
export interface SourceSettings {
  intensities?: Partial<IntensitySet>;
  /** Laser on/off: when off, no photons leave Alice (dark counts continue). */
  enabled?: boolean;
}
/** Channel (fibre, optics, eavesdropper) settings. */
export interface ChannelSettings {
  distanceKm?: number;
  fibreLossDbPerKm?: number;
  misalignment?: number;
  eveFraction?: number;
}

/** Largest number of tags (estimated from the click probabilities) one nextPulses() call may produce. */
export const MAX_TAGS_PER_BATCH = 5e7;

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const TWO32 = 4294967296;

/** Growable columns of pending tags. */
class Columns {
  cap: number;
  n = 0;
  time: Float64Array;
  ch: Uint8Array;
  pulse: Float64Array;
  kind: Uint8Array;
  slot: Float64Array;
  constructor(cap: number) {
    this.cap = cap;
    this.time = new Float64Array(cap);
    this.ch = new Uint8Array(cap);
    this.pulse = new Float64Array(cap);
    this.kind = new Uint8Array(cap);
    this.slot = new Float64Array(cap);
  }
  grow(): void {
    const cap = this.cap * 2;
    const t = new Float64Array(cap); t.set(this.time); this.time = t;
    const c = new Uint8Array(cap); c.set(this.ch); this.ch = c;
    const p = new Float64Array(cap); p.set(this.pulse); this.pulse = p;
    const k = new Uint8Array(cap); k.set(this.kind); this.kind = k;
    const s = new Float64Array(cap); s.set(this.slot); this.slot = s;
    this.cap = cap;
  }
}

export class EmulatedLink {
  /** The current parameters (a private copy; setters update it). */
  readonly preset: LinkPreset;
  readonly seed: bigint;
  /** Seed of Bob's active basis choice (what Bob's node regenerates his bases from). */
  readonly bobSeed: bigint;

  private readonly T: number;
  private readonly aliceKeys: SeedKeys;
  private aliceTh: AliceThresholds;
  private readonly bobKeys: SeedKeys;
  private bobTh: number;
  private readonly rng: Xoshiro128;
  /** With a source device: photon candidates are drawn ahead per batch from their own stream. */
  private readonly alice: AliceChoiceSource | undefined;
  private readonly rngSkip: Xoshiro128;
  private sourceEnabled = true;

  // derived parameters (recomputed by derive())
  private eta = 0;
  private ratio = new Float64Array(3); // p_click(i) / p_max
  private poisCdf: Float64Array[] = [new Float64Array(1), new Float64Array(1), new Float64Array(1)];
  private logqPhoton = 0; // log(1 − p_max), or 0 when p_max = 0
  private pPhotonMax = 0;
  private pDark = 0;
  private logqDark = 0;
  private fibreDelay = 0;
  private clockPhase = 0; // offset term of t_B; adjusted on drift changes to keep t_B continuous
  private drift = 0; // driftPpm·1e-6
  private nDet: number;
  private detChannel: Uint8Array;
  private detByBasisBit: Int8Array; // index basis*2+bit -> detector (passive); bit -> detector (active, both bases)
  private delays: Float64Array; // per detector index
  private passive: boolean;
  private freeRunning: boolean;
  // hot-path copies of preset fields (refreshed by derive())
  private deadTime = 0;
  private apProb = 0;
  private apDecay = 0;
  private jitterSigma = 0; // combined detector and clock jitter on Bob's clock
  private ed = 0;
  private eveFraction = 0;

  // state carried across batches
  private nextPulse = 0;
  private nextPhoton = 0; // next candidate pulse (>= nextPulse) or Infinity
  private nextDarkSlot: Float64Array;
  private nextDarkTau: Float64Array;
  private lastClick: Float64Array;
  private apTau: number[][]; // per detector, sorted ascending
  private apSlot: number[][];
  private needRedraw = true;
  private pending = new Columns(1 << 12);
  /** The Rust physics (physics: 'native'); the fields above then only hold the parameters. */
  private readonly engine: NativeLinkPhysics | undefined;
  /** Which implementation runs the per-click loops. */
  readonly physics: LabPhysics;
  /** The native physics calls Alice's source device itself (AliceChoiceSource.native). */
  private sourced = false;
  /** Whether batches carry the truth columns (LinkOptions.truth). */
  readonly truth: boolean;

  constructor(preset: LinkPreset, opts: LinkOptions) {
    if (typeof opts?.seed !== 'bigint') throw new TypeError('EmulatedLink: opts.seed must be a bigint');
    const p = structuredClone(preset);
    if (opts.distanceKm !== undefined) p.distanceKm = opts.distanceKm;
    if (opts.eveFraction !== undefined) p.eveFraction = opts.eveFraction;
    this.preset = validateLinkPreset(p, `EmulatedLink(${preset.name})`);
    this.seed = opts.seed;
    this.bobSeed = opts.bobSeed ?? defaultBobSeed(opts.seed);
    this.T = presetPeriodPs(this.preset);
    this.aliceKeys = seedKeys(this.seed, DOMAIN_ALICE);
    this.alice = opts.alice;
    this.aliceTh = aliceThresholds(this.preset);
    this.bobKeys = seedKeys(this.bobSeed, DOMAIN_BOB);
    this.bobTh = bobThreshold(this.preset);
    this.rng = new Xoshiro128(this.seed, 0x4c_41_42_21);
    this.rngSkip = new Xoshiro128(this.seed, 0x53_4b_49_50);
    this.nDet = this.preset.detectors.length;
    this.detChannel = new Uint8Array(this.nDet);
    this.detByBasisBit = new Int8Array(4).fill(-1);
    this.delays = new Float64Array(this.nDet);
    this.passive = this.preset.bobBasisChoice === 'passive';
    this.freeRunning = this.preset.detector.mode === 'free-running';
    this.preset.detectors.forEach((m, d) => {
      this.detChannel[d] = m.channel;
      if (this.passive) this.detByBasisBit[m.basis * 2 + m.bit] = d;
      else { this.detByBasisBit[m.bit] = d; this.detByBasisBit[2 + m.bit] = d; }
    });
    this.nextDarkSlot = new Float64Array(this.nDet);
    this.nextDarkTau = new Float64Array(this.nDet);
    this.lastClick = new Float64Array(this.nDet).fill(-Infinity);
    this.apTau = Array.from({ length: this.nDet }, () => []);
    this.apSlot = Array.from({ length: this.nDet }, () => []);
    this.drift = this.preset.clock.driftPpm * 1e-6;
    this.clockPhase = this.preset.clock.offsetPs;
    this.physics = opts.physics ?? defaultLabPhysics();
    this.truth = opts.truth ?? true;
    this.derive();
    if (this.physics === 'native') {
      this.engine = nativeLinkPhysics(this.nativeParams(), this.rng.state(), this.rngSkip.state(), this.alice !== undefined, this.truth);
      if (this.alice?.native) {
        this.engine.attachSource(this.alice.native);
        this.sourced = true;
      }
    }
  }

  /** The derived parameters the native physics reads (what derive() and setClock() computed). */
  private nativeParams() {
    return {
      periodPs: this.T, ratio: [...this.ratio], poisCdf: this.poisCdf.map((c) => [...c]),
      logqPhoton: this.logqPhoton, pPhotonMax: this.pPhotonMax, pDark: this.pDark, logqDark: this.logqDark,
      fibreDelay: this.fibreDelay, clockPhase: this.clockPhase, drift: this.drift, jitterSigma: this.jitterSigma,
      detChannel: [...this.detChannel], delays: [...this.delays], detByBasisBit: [...this.detByBasisBit],
      passive: this.passive, freeRunning: this.freeRunning, deadTime: this.deadTime, apProb: this.apProb,
      apDecay: this.apDecay, ed: this.ed, eveFraction: this.eveFraction,
      aliceK0: this.aliceKeys.k0, aliceK1: this.aliceKeys.k1,
      aliceBasisZ: this.aliceTh.basisZ, aliceSignal: this.aliceTh.signal, aliceDecoy: this.aliceTh.decoy,
      bobK0: this.bobKeys.k0, bobK1: this.bobKeys.k1, bobThreshold: this.bobTh,
    };
  }

  /** Pulse period in ps. */
  get periodPs(): number { return this.T; }
  /** Fibre propagation delay in ps at the current distance. */
  get fibreDelayPs(): number { return this.fibreDelay; }
  /** Overall transmittance η (fibre, Bob's optics and detector efficiency). */
  get transmittance(): number { return this.eta; }
  /** Index of the next pulse nextPulses() will emulate. */
  get pulsesDone(): number { return this.nextPulse; }

  /**
   * Noise-free tagger time (ps, not rounded) at which a photon of `pulse` would be tagged on
   * `channel`: the centre of the timing peak that delay calibration looks for.
   */
  expectedTagTimePs(pulse: number, channel: number): number {
    const d = this.preset.detectors.findIndex((m) => m.channel === channel);
    if (d < 0) throw new RangeError(`channel ${channel} is not a detector channel of preset ${this.preset.name}`);
    const t = pulse * this.T + this.fibreDelay;
    return t + this.drift * t + this.clockPhase + this.delays[d];
  }

  private derive(): void {
    const p = this.preset;
    this.eta = transmittance(p, p.distanceKm);
    this.fibreDelay = Math.round(p.distanceKm * FIBRE_DELAY_PS_PER_KM);
    const mus = [p.intensities.signal, p.intensities.decoy, p.intensities.vacuum];
    const pClick = mus.map((mu) => (this.sourceEnabled ? -Math.expm1(-this.eta * mu) : 0));
    this.pPhotonMax = Math.max(...pClick);
    this.logqPhoton = this.pPhotonMax > 0 ? Math.log1p(-this.pPhotonMax) : 0; // −Infinity when p_max = 1
    for (let i = 0; i < 3; i++) {
      this.ratio[i] = this.pPhotonMax > 0 ? pClick[i] / this.pPhotonMax : 0;
      this.poisCdf[i] = truncatedPoissonCdf(this.eta * mus[i]);
    }
    // y0 is the background yield of the measuring pair: 1 − (1 − p_d)^2 = y0.
    this.pDark = 1 - Math.sqrt(1 - p.y0);
    this.logqDark = this.pDark > 0 ? Math.log1p(-this.pDark) : 0;
    p.detectors.forEach((m, d) => { this.delays[d] = p.channelDelaysPs[m.channel]; });
    this.aliceTh = aliceThresholds(p);
    this.bobTh = bobThreshold(p);
    this.deadTime = p.detector.deadTimePs;
    this.apProb = p.detector.afterpulseProb;
    this.apDecay = p.detector.afterpulseDecayPs;
    this.ed = p.misalignment;
    this.eveFraction = p.eveFraction;
    this.updateJitter();
    this.needRedraw = true;
    this.engine?.setParams(this.nativeParams());
  }

  private updateJitter(): void {
    // (1 + drift)·σ_det·z₁ + σ_clk·z₂ is one Gaussian of this width: draw one instead of two.
    const sd = (1 + this.drift) * this.preset.detector.jitterPs;
    this.jitterSigma = Math.sqrt(sd * sd + this.preset.clock.jitterPs * this.preset.clock.jitterPs);
  }

  /** Number of failures before the next success of a Bernoulli(p) sequence, log(1−p) given. */
  private geometric(logq: number, p: number): number {
    if (p <= 0) return Infinity;
    if (p >= 1) return 0;
    return Math.floor(Math.log(this.rng.uniform()) / logq);
  }

  private drawDark(d: number, fromSlot: number): void {
    const s = fromSlot + this.geometric(this.logqDark, this.pDark);
    this.nextDarkSlot[d] = s;
    this.nextDarkTau[d] = s === Infinity ? Infinity
      : this.freeRunning ? s * this.T + (this.rng.uniform() - 0.5) * this.T : s * this.T;
  }

  private redraw(): void {
    const from = this.nextPulse;
    if (this.alice) {
      const p = this.pPhotonMax;
      this.nextPhoton = p <= 0 ? Infinity : p >= 1 ? from : from + Math.floor(Math.log(this.rngSkip.uniform()) / this.logqPhoton);
    } else this.nextPhoton = from + this.geometric(this.logqPhoton, this.pPhotonMax);
    for (let d = 0; d < this.nDet; d++) this.drawDark(d, from);
    this.needRedraw = false;
  }

  /**
   * Emulates the next `pulses` pulses (contiguous with the previous call) and returns the tags
   * they produced (see the module doc for the hold-back at batch ends). The result's arrays are
   * freshly allocated and owned by the caller.
   */
  nextPulses(pulses: number): LinkBatch {
    const { P0, P1 } = this.batchRange(pulses);
    if (this.engine) return this.nextPulsesNative(P0, pulses, P1);
    if (this.needRedraw) this.redraw();
    const start = this.pending.n;
    this.simulate(P1);
    this.nextPulse = P1;
    sortTail(this.pending, start);
    return this.emit(P0, pulses, P1);
  }

  /**
   * Delivers the tags held back at the end of the last batch (pulses: 0). For the end of a run:
   * tags of later batches may be earlier than these, so the stream is no longer sorted across
   * a drain() followed by more nextPulses().
   */
  drain(): LinkBatch {
    if (this.engine) return batchOf(this.nextPulse, 0, this.engine.drain());
    return this.emit(this.nextPulse, 0, Infinity);
  }

  /**
   * `nextPulses` with the batch emulated off the JS thread (libuv's pool), when the physics is
   * Rust and Alice's choices come from her source device's native object (the node's lab);
   * otherwise the same work on the JS thread. The same tags in the same order as `nextPulses`.
   * One batch at a time: no other call may be made on the link until this one settles.
   */
  async nextPulsesAsync(pulses: number): Promise<LinkBatch> {
    const { P0, P1 } = this.batchRange(pulses);
    if (!this.engine || !this.sourced) return this.nextPulses(pulses);
    this.inFlight = true;
    try {
      const b = await this.engine.nextPulsesSourcedAsync(P1);
      this.nextPulse = P1;
      return batchOf(P0, pulses, b);
    } finally {
      this.inFlight = false;
    }
  }

  /** Batch still being emulated by `nextPulsesAsync`. */
  private inFlight = false;

  /** Checks a batch of `pulses` (size, range, nothing in flight) and gives its pulse range. */
  private batchRange(pulses: number): { P0: number; P1: number } {
    if (this.inFlight) throw new Error('EmulatedLink: a batch is still being emulated (nextPulsesAsync); wait for it before the next call.');
    if (!Number.isSafeInteger(pulses) || pulses < 0) throw new RangeError(`pulses must be a non-negative integer, got ${pulses}`);
    const P0 = this.nextPulse;
    const P1 = P0 + pulses;
    if (P1 > Number.MAX_SAFE_INTEGER) throw new RangeError('pulse index would exceed 2^53');
    // Every tag of a batch is held in memory (~26 bytes each): refuse batches that would need GBs.
    const expectedTags = pulses * (this.pPhotonMax * 2 + this.nDet * this.pDark);
    if (expectedTags > MAX_TAGS_PER_BATCH) {
      const ok = Math.floor((pulses * MAX_TAGS_PER_BATCH) / expectedTags);
      throw new RangeError(`nextPulses(${pulses}) would produce ~${expectedTags.toExponential(1)} tags at once; ` +
        `call it with at most ~${ok.toExponential(1)} pulses per batch`);
    }
    return { P0, P1 };
  }

  /** nextPulses on the Rust physics: one call for the candidates (with a source device), one for the batch. */
  private nextPulsesNative(P0: number, pulses: number, P1: number): LinkBatch {
    const e = this.engine!;
    if (this.sourced) {
      const b = e.nextPulsesSourced(P1);
      this.nextPulse = P1;
      return batchOf(P0, pulses, b);
    }
    let choices: Uint8Array | undefined;
    if (this.alice) {
      const cand = e.candidates(P1);
      if (cand.length) choices = this.alice.choicesAt(cand);
    }
    const b = e.nextPulses(P1, choices);
    this.nextPulse = P1;
    return batchOf(P0, pulses, b);
  }

  private simulate(P1: number): void {
    const T = this.T;
    const nDet = this.nDet;
    // next non-photon event (dark or afterpulse) of this batch
    let otherTau = Infinity;
    let otherDet = -1;
    let otherIsAp = false;
    const findOther = (): void => {
      otherTau = Infinity; otherDet = -1; otherIsAp = false;
      for (let d = 0; d < nDet; d++) {
        const td = this.nextDarkSlot[d] < P1 ? this.nextDarkTau[d] : Infinity;
        if (td < otherTau) { otherTau = td; otherDet = d; otherIsAp = false; }
        const q = this.apTau[d];
        if (q.length && this.apSlot[d][0] < P1 && q[0] < otherTau) { otherTau = q[0]; otherDet = d; otherIsAp = true; }
      }
    };
    findOther();
    // With a source device, the batch's photon candidates are drawn first (their own stream) and
    // her choices for all of them fetched in one call: one native call per batch, not per pulse.
    let cand: Float64Array | undefined;
    let candChoice: Uint8Array | undefined;
    let ci = 0;
    let afterCand = Infinity;
    if (this.alice && this.nextPhoton < P1) {
      const list: number[] = [];
      let k = this.nextPhoton;
      while (k < P1) {
        list.push(k);
        k = k + 1 + Math.floor(Math.log(this.rngSkip.uniform()) / this.logqPhoton);
      }
      afterCand = k;
      cand = Float64Array.from(list);
      candChoice = this.alice.choicesAt(cand);
    }
    for (;;) {
      const k = this.nextPhoton;
      const photonTau = k < P1 ? k * T : Infinity;
      if (photonTau === Infinity && otherTau === Infinity) break;
      if (photonTau <= otherTau) {
        const apBefore = this.apScheduled;
        if (cand) {
          this.photonCandidate(k, photonTau, candChoice![ci]);
          this.nextPhoton = ++ci < cand.length ? cand[ci] : afterCand;
        } else {
          this.photonCandidate(k, photonTau, choiceAt(this.aliceKeys, this.aliceTh, k));
          // geometric skip inlined (p_max > 0 here, else nextPhoton would be Infinity); with
          // p_max = 1, log(1 − p) = −Infinity and the skip is 0 as it should be
          this.nextPhoton = k + 1 + Math.floor(Math.log(this.rng.uniform()) / this.logqPhoton);
        }
        if (this.apScheduled !== apBefore) findOther();
      } else {
        const d = otherDet;
        if (otherIsAp) {
          const tau = this.apTau[d].shift()!;
          const slot = this.apSlot[d].shift()!;
          this.click(d, tau, slot, KIND_AFTERPULSE, -1);
        } else {
          const slot = this.nextDarkSlot[d];
          this.click(d, this.nextDarkTau[d], slot, KIND_DARK, -1);
          this.drawDark(d, slot + 1);
        }
        findOther();
      }
    }
  }

  private apScheduled = 0;

  private photonCandidate(k: number, tau: number, c: number): void {
    const rng = this.rng;
    const intensity = (c >> 2) & 3;
    // Thinning: the pulse detects a photon with probability p_click(i) = ratio·p_max. Given
    // acceptance, u/ratio is again uniform on (0, 1): reuse it to draw the photon number.
    const ratio = this.ratio[intensity];
    let u = rng.uniform();
    if (u >= ratio) return; // this pulse detected no photon
    u /= ratio;
    // number of detected photons m >= 1 (Poisson(ημ) conditioned on m >= 1), by inversion
    const cdf = this.poisCdf[intensity];
    let m = 1;
    while (m < cdf.length && u > cdf[m - 1]) m++;
    let sBasis = (c >> 1) & 1;
    let sBit = c & 1;
    if (this.eveFraction > 0 && rng.uniform() < this.eveFraction) {
      // Intercept-resend: Eve measures in a random basis and resends what she got, same photon number.
      const eb = rng.nextU32() & 1;
      const ebit = eb === sBasis ? sBit : rng.nextU32() & 1;
      sBasis = eb; sBit = ebit;
    }
    const ed = this.ed;
    let mask = 0;
    const activeBasis = this.passive ? -1 : bobBasisAt(this.bobKeys, this.bobTh, k);
    for (let j = 0; j < m; j++) {
      const g = activeBasis >= 0 ? activeBasis : (rng.nextU32() < this.bobTh ? 0 : 1);
      let bit: number;
      if (g === sBasis) bit = rng.uniform() < ed ? sBit ^ 1 : sBit;
      else bit = rng.nextU32() & 1;
      mask |= 1 << this.detByBasisBit[g * 2 + bit];
    }
    for (let d = 0; mask; d++, mask >>= 1) {
      if (mask & 1) this.click(d, tau, k, KIND_PHOTON, k);
    }
  }

  /** A detector avalanche attempt at physical time τ; lost inside the dead time. */
  private click(d: number, tau: number, slot: number, kind: number, pulse: number): void {
    const last = this.lastClick[d];
    if (tau === last || tau - last < this.deadTime) return;
    this.lastClick[d] = tau;
    const rng = this.rng;
    if (this.apProb > 0 && rng.uniform() < this.apProb) this.scheduleAfterpulse(d, tau);
    // tag time on Bob's clock: (1 + drift)(τ + fibre + j_det) + phase + j_clk + delay
    const t = tau + this.fibreDelay;
    let tb = t + this.drift * t + this.clockPhase + this.delays[d];
    if (this.jitterSigma > 0) tb += this.jitterSigma * rng.gauss();
    const out = this.pending;
    if (out.n === out.cap) out.grow();
    const i = out.n++;
    out.time[i] = Math.round(tb);
    out.ch[i] = this.detChannel[d];
    out.pulse[i] = pulse;
    out.kind[i] = kind;
    out.slot[i] = slot;
  }

  private scheduleAfterpulse(d: number, tau: number): void {
    let apTau = tau + this.deadTime - this.apDecay * Math.log(this.rng.uniform());
    let apSlot: number;
    if (this.freeRunning) apSlot = Math.floor(apTau / this.T + 0.5);
    else { apSlot = Math.ceil(apTau / this.T); apTau = apSlot * this.T; }
    const q = this.apTau[d];
    const qs = this.apSlot[d];
    let i = q.length;
    while (i > 0 && q[i - 1] > apTau) i--;
    q.splice(i, 0, apTau);
    qs.splice(i, 0, apSlot);
    this.apScheduled++;
  }

  /** Earliest tagger time any pulse >= P1 can produce (minus a margin for rounding). */
  private watermark(P1: number): number {
    if (P1 === Infinity) return Infinity; // drain()
    let minDelay = Infinity;
    for (let d = 0; d < this.nDet; d++) minDelay = Math.min(minDelay, this.delays[d]);
    const t = (P1 - 0.5) * this.T + this.fibreDelay;
    // the combined jitter is a Gaussian truncated at 6σ (rng.gauss); 2 ps covers rounding
    return t + this.drift * t + this.clockPhase + minDelay - 6 * this.jitterSigma - 2;
  }

  private emit(firstPulse: number, pulses: number, P1: number): LinkBatch {
    const src = this.pending;
    const w = this.watermark(P1);
    let n = 0;
    while (n < src.n && src.time[n] < w) n++;
    const timePs = new BigInt64Array(n);
    if (LITTLE_ENDIAN) {
      const i32 = new Int32Array(timePs.buffer);
      for (let i = 0; i < n; i++) {
        const t = src.time[i];
        const hi = Math.floor(t / TWO32);
        i32[2 * i] = (t - hi * TWO32) | 0;
        i32[2 * i + 1] = hi | 0;
      }
    } else {
      for (let i = 0; i < n; i++) timePs[i] = BigInt(src.time[i]);
    }
    const m = this.truth ? n : 0;
    const batch: LinkBatch = {
      firstPulse, pulses,
      tags: { timePs, channel: src.ch.slice(0, n) },
      truthPulse: src.pulse.slice(0, m),
      truthKind: src.kind.slice(0, m),
      truthSlot: src.slot.slice(0, m),
    };
    const rest = src.n - n;
    src.time.copyWithin(0, n, src.n);
    src.ch.copyWithin(0, n, src.n);
    src.pulse.copyWithin(0, n, src.n);
    src.kind.copyWithin(0, n, src.n);
    src.slot.copyWithin(0, n, src.n);
    src.n = rest;
    return batch;
  }

  // ---- setters a device emulator calls when a setting changes (effective from the next batch) ----

  private apply(mut: (p: LinkPreset) => void, what: string): void {
    const p = structuredClone(this.preset);
    mut(p);
    const v = validateLinkPreset(p, `EmulatedLink.${what}`);
    Object.assign(this.preset, v);
  }

  /** Detector settings: dead time, afterpulsing, jitter, mode, efficiency (etaBob), dark yield (y0). */
  setDetector(s: DetectorSettings): void {
    this.apply((p) => {
      const { etaBob, y0, ...det } = s;
      Object.assign(p.detector, det);
      if (etaBob !== undefined) p.etaBob = etaBob;
      if (y0 !== undefined) p.y0 = y0;
    }, 'setDetector');
    this.freeRunning = this.preset.detector.mode === 'free-running';
    this.derive();
  }

  /**
   * Bob's clock. A new drift keeps the tagger time continuous at the current pulse; a new offset
   * makes it jump (as re-setting a clock does).
   */
  setClock(s: Partial<ClockParams>): void {
    const oldDrift = this.drift;
    const oldOffset = this.preset.clock.offsetPs;
    this.apply((p) => Object.assign(p.clock, s), 'setClock');
    const t = this.nextPulse * this.T + this.fibreDelay;
    this.drift = this.preset.clock.driftPpm * 1e-6;
    this.clockPhase += (oldDrift - this.drift) * t + (this.preset.clock.offsetPs - oldOffset);
    this.updateJitter();
    this.engine?.setClock(this.drift, this.clockPhase, this.jitterSigma);
  }

  /** Per-channel delays (indexed by channel number). */
  setChannelDelays(delaysPs: number[]): void {
    this.apply((p) => { p.channelDelaysPs = [...delaysPs]; }, 'setChannelDelays');
    this.derive();
  }

  /** Source: mean photon numbers (not the choice probabilities, which Alice's node shares) and on/off. */
  setSource(s: SourceSettings): void {
    if (s.intensities) this.apply((p) => Object.assign(p.intensities, s.intensities), 'setSource');
    if (s.enabled !== undefined) this.sourceEnabled = s.enabled;
    this.derive();
  }

  /** Fibre length and loss, misalignment, eavesdropper fraction. */
  setChannel(s: ChannelSettings): void {
    this.apply((p) => {
      if (s.distanceKm !== undefined) p.distanceKm = s.distanceKm;
      if (s.fibreLossDbPerKm !== undefined) p.fibreLossDbPerKm = s.fibreLossDbPerKm;
      if (s.misalignment !== undefined) p.misalignment = s.misalignment;
      if (s.eveFraction !== undefined) p.eveFraction = s.eveFraction;
    }, 'setChannel');
    this.derive();
  }
}

function batchOf(firstPulse: number, pulses: number, b: ReturnType<NativeLinkPhysics['drain']>): LinkBatch {
  return {
    firstPulse, pulses, tags: { timePs: b.timePs, channel: b.channel },
    truthPulse: b.truthPulse, truthKind: b.truthKind, truthSlot: b.truthSlot,
  };
}

/** CDF of Poisson(λ) conditioned on >= 1, indexed from m = 1: cdf[m−1] = P(M <= m | M >= 1). */
function truncatedPoissonCdf(lambda: number): Float64Array {
  if (!(lambda > 0)) return new Float64Array([1]);
  const norm = -Math.expm1(-lambda);
  const out: number[] = [];
  let pmf = Math.exp(-lambda) * lambda; // P(M = 1)
  let acc = 0;
  for (let m = 1; m < 200; m++) {
    acc += pmf / norm;
    out.push(Math.min(acc, 1));
    if (1 - acc < 1e-15) break;
    pmf *= lambda / (m + 1);
  }
  out[out.length - 1] = 1;
  return Float64Array.from(out);
}

/** Insertion sort of cols[start..n) into the sorted prefix by time (the data is nearly sorted). */
function sortTail(c: Columns, start: number): void {
  const time = c.time, ch = c.ch, pulse = c.pulse, kind = c.kind, slot = c.slot;
  for (let i = Math.max(1, start); i < c.n; i++) {
    const t = time[i];
    if (time[i - 1] <= t) continue;
    const cc = ch[i], pp = pulse[i], kk = kind[i], ss = slot[i];
    let j = i - 1;
    while (j >= 0 && time[j] > t) {
      time[j + 1] = time[j]; ch[j + 1] = ch[j]; pulse[j + 1] = pulse[j]; kind[j + 1] = kind[j]; slot[j + 1] = slot[j];
      j--;
    }
    time[j + 1] = t; ch[j + 1] = cc; pulse[j + 1] = pp; kind[j + 1] = kk; slot[j + 1] = ss;
  }
}
