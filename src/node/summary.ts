/**
 * Running figures of a link, built from Bob's block reports (everything in them is public:
 * counts, error counts, bounds, lengths) and from the ingest counters. This is the shape of
 * `qkd run --json` and of the live view; names are fixed by issue 7.
 */
import type { ProtocolSettings } from '../protocol/settings.ts';
import type { Triple } from '../core/estimate.ts';
import type { BlockReport } from './postprocess.ts';
import { binaryEntropy } from '../core/ldpc.ts';

export interface IntensityFigures {
  signal: number | null;
  decoy: number | null;
  vacuum: number | null;
}

export interface LinkSummary {
  link: { preset: string; distanceKm: number; eveFraction: number; repRateHz: number };
  emulatedSeconds: number;
  wallSeconds: number;
  /** Emulated seconds per wall second (>= 1: the link keeps up with the light); null before any time passed. */
  realTimeFactor: number | null;
  /** Bob's pipeline stages: detections per busy second each sustained, and occupancy (issue 15). */
  stages: Record<'acquire' | 'postProcess' | 'delivery', { detections: number; busySeconds: number; detectionsPerSecond: number | null; occupancy: number }> | null;
  pulses: number;
  detections: number;
  siftedBits: number;
  qber: number | null;
  qberByBasis: { Z: number | null; X: number | null };
  gain: IntensityFigures;
  errorRate: IntensityFigures;
  decoy: { singlePhotonYieldLower: number | null; singlePhotonErrorUpper: number | null; singlePhotonFractionZ: number | null };
  reconciliationEfficiency: number | null;
  frames: { total: number; failed: number; frameErrorRate: number | null };
  blocks: { verified: number; aborted: number; reasons: Record<string, number> };
  secretBits: number;
  secretKeyRate: { perPulse: number | null; perSecond: number | null };
  keysDelivered: { alice: number; bob: number };
  sync: Record<string, unknown> | null;
}

const ratio = (a: number, b: number): number | null => (b > 0 ? a / b : null);

/** Accumulates block reports into a LinkSummary. */
export class SummaryBuilder {
  private pulses = 0;
  private detections = 0;
  private siftedBits = 0;
  private nZ: Triple = [0, 0, 0];
  private nX: Triple = [0, 0, 0];
  private mX: Triple = [0, 0, 0];
  private zErr: Triple = [0, 0, 0];
  private zChecked: Triple = [0, 0, 0];
  private leak = 0;
  private leakH = 0;
  private frames = 0;
  private framesFailed = 0;
  private verified = 0;
  private aborted = 0;
  private reasons: Record<string, number> = {};
  private secretBits = 0;
  private sZ1 = 0;
  private nZkept = 0;
  private phiMax: number | null = null;
  private pulsesInVerified = 0;
  /** Pulses covered by blocks whose sifted counts are known (the denominators of the gains). */
  private pulsesCounted = 0;
  keysDelivered = { alice: 0, bob: 0 };
  sync: Record<string, unknown> | null = null;

  constructor(private readonly preset: ProtocolSettings, private readonly distanceKm: number, private readonly eveFraction: number) {}

  addPulses(pulses: number, detections: number): void {
    this.pulses += pulses;
    this.detections += detections;
  }

  addBlock(r: BlockReport, pulsesInBlock: number): void {
    this.siftedBits += r.siftedZ + r.siftedX;
    if (r.counts) {
      this.pulsesCounted += pulsesInBlock;
      for (let k = 0; k < 3; k++) {
        this.nZ[k] += r.counts.nZ[k];
        this.nX[k] += r.counts.nX[k];
        this.mX[k] += r.counts.mX[k];
      }
    }
    if (r.zErrors && r.keptZ) {
      for (let k = 0; k < 3; k++) {
        this.zErr[k] += r.zErrors[k];
        this.zChecked[k] += r.keptZ[k];
      }
    }
    if (r.frames !== undefined) {
      this.frames += r.frames;
      this.framesFailed += r.framesFailed ?? 0;
    }
    if (r.verified && r.statement) {
      this.verified++;
      this.secretBits += r.statement.deliverableBits;
      this.leak += r.statement.leakEcBits;
      const q = r.qberZ ?? 0;
      this.leakH += r.statement.n * binaryEntropy(q);
      this.sZ1 += r.statement.bounds.sZ1;
      this.nZkept += r.statement.bounds.nZTotal;
      this.phiMax = Math.max(this.phiMax ?? 0, r.statement.bounds.phiZ);
      this.pulsesInVerified += pulsesInBlock;
    } else if (!r.verified) {
      this.aborted++;
      const reason = (r.abortReason ?? 'unknown').split(':')[0];
      this.reasons[reason] = (this.reasons[reason] ?? 0) + 1;
    }
  }

  build(emulatedSeconds: number, wallSeconds: number): LinkSummary {
    const p = this.preset;
    const probs = [p.intensityProbs.signal, p.intensityProbs.decoy, p.intensityProbs.vacuum];
    const pMatch = p.aliceBasisProbZ * p.bobBasisProbZ + (1 - p.aliceBasisProbZ) * (1 - p.bobBasisProbZ);
    const per = (f: (k: number) => number | null): IntensityFigures => ({ signal: f(0), decoy: f(1), vacuum: f(2) });
    const siftedPulses = this.pulsesCounted;
    const zErrTotal = this.zErr[0] + this.zErr[1] + this.zErr[2];
    const zTotal = this.zChecked[0] + this.zChecked[1] + this.zChecked[2];
    const xErr = this.mX[0] + this.mX[1] + this.mX[2];
    const xTotal = this.nX[0] + this.nX[1] + this.nX[2];
    const qZ = ratio(zErrTotal, zTotal);
    const qX = ratio(xErr, xTotal);
    const mu = [p.intensities.signal, p.intensities.decoy, p.intensities.vacuum];
    const tau1 = mu.reduce((s, m, k) => s + probs[k] * m * Math.exp(-m), 0);
    const zPulses = this.pulsesInVerified * p.aliceBasisProbZ * p.bobBasisProbZ;
    return {
      link: { preset: p.name, distanceKm: this.distanceKm, eveFraction: this.eveFraction, repRateHz: p.repRateHz },
      emulatedSeconds,
      wallSeconds,
      realTimeFactor: ratio(emulatedSeconds, wallSeconds),
      stages: null,
      pulses: this.pulses,
      detections: this.detections,
      siftedBits: this.siftedBits,
      qber: qZ ?? qX,
      qberByBasis: { Z: qZ, X: qX },
      // Gain of intensity k from the basis-matched events: E[nZ_k + nX_k] = N p_k pMatch Q_k.
      gain: per((k) => ratio(this.nZ[k] + this.nX[k], siftedPulses * probs[k] * pMatch)),
      // Error rate per intensity: X errors are counted directly, Z errors by reconciliation.
      errorRate: per((k) => ratio(this.mX[k] + this.zErr[k], this.nX[k] + this.zChecked[k])),
      decoy: {
        singlePhotonYieldLower: ratio(this.sZ1, zPulses * tau1),
        singlePhotonErrorUpper: this.phiMax,
        singlePhotonFractionZ: ratio(this.sZ1, this.nZkept),
      },
      reconciliationEfficiency: ratio(this.leak, this.leakH),
      frames: { total: this.frames, failed: this.framesFailed, frameErrorRate: ratio(this.framesFailed, this.frames) },
      blocks: { verified: this.verified, aborted: this.aborted, reasons: { ...this.reasons } },
      secretBits: this.secretBits,
      secretKeyRate: { perPulse: ratio(this.secretBits, this.pulses), perSecond: ratio(this.secretBits, emulatedSeconds) },
      keysDelivered: { ...this.keysDelivered },
      sync: this.sync,
    };
  }
}
