/**
 * The native sync tracker (native/core/src/sync_track.rs, adapter native/node/src/sync.rs) behind
 * the {@link Tracker} interface, plus the two other per-click loops of Bob's node done natively:
 * per-channel residual histograms and the block's sort by pulse index.
 *
 * Every call runs on the JS thread and returns when done (one batch: ~1 ms per 10^5 clicks);
 * typed arrays passed in are read (or, for the histogram and the sort, written) during the call
 * only. Errors come back as coded QkdErrors (`SYNC_*`).
 */
import { native } from '../core/native.ts';
import { callNative } from '../core/native-call.ts';
import type { ClockModel } from './acquire.ts';
import type { IndexedDetections } from './sync.ts';
import type { Tracker, TrackerOptions, TrackerStats } from './tracker.ts';

type Native = InstanceType<ReturnType<typeof native>['SyncTracker']>;

export class NativeTracker implements Tracker {
  readonly #t: Native;
  constructor(o: TrackerOptions) {
    this.#t = callNative(() => new (native().SyncTracker)({ ...o, maxChannelSkewPulses: o.maxChannelSkewPulses, channels: o.channels }));
  }
  scan(timePs: BigInt64Array, channel: Uint8Array, from: number): number {
    return callNative(() => this.#t.scan(timePs, channel, from));
  }
  get cursor(): number {
    return this.#t.cursor;
  }
  drain(): number {
    return callNative(() => this.#t.drain());
  }
  acquisitionBuffer(): { timePs: Float64Array; channel: Uint8Array } {
    return callNative(() => this.#t.acquisitionBuffer());
  }
  acquireFailed(): void {
    callNative(() => this.#t.acquireFailed());
  }
  lock(model: ClockModel, score: Float64Array, sigma: number, expectedInFrac: number): void {
    callNative(() => this.#t.lock(model, score, sigma, expectedInFrac));
  }
  verifySample(): Float64Array {
    return callNative(() => this.#t.verifySample());
  }
  verifyFirst(classes: Uint8Array): Float64Array | null {
    return callNative(() => this.#t.verifyFirst(classes));
  }
  verifySlip(classes: Uint8Array): void {
    callNative(() => this.#t.verifySlip(classes));
  }
  takeOutput(): IndexedDetections {
    const o = callNative(() => this.#t.takeOutput());
    const res: IndexedDetections = { pulseIndex: o.pulseIndex, channel: o.channel, residualPs: o.residualPs };
    if (o.tagSeq) res.tagSeq = o.tagSeq;
    return res;
  }
  get locked(): boolean {
    return this.#t.locked;
  }
  get confidence(): number {
    return this.#t.confidence;
  }
  set confidence(z: number) {
    this.#t.confidence = z;
  }
  get lastLockLossAt(): number {
    return this.#t.lastLockLossAt;
  }
  model(): ClockModel | null {
    return this.#t.model();
  }
  stats(): TrackerStats {
    return this.#t.stats();
  }
  tagsPerChannel(): Float64Array {
    return this.#t.tagsPerChannel();
  }
}

/**
 * Adds each detection's residual to its channel's histogram: bin floor((r - startPs) / binWidthPs)
 * if within 0..bins-1. `hist` holds 256 x bins counters, channel-major.
 */
export function residualHistogram(channel: Uint8Array, residualPs: Float32Array, startPs: number, binWidthPs: number, bins: number, hist: Uint32Array): void {
  callNative(() => native().syncResidualHistogram(channel, residualPs, startPs, binWidthPs, bins, hist));
}

/** Sorts (pulse, channel) pairs by pulse index in place, stably (fast on nearly sorted input). */
export function sortByPulse(pulse: Float64Array, channel: Uint8Array): void {
  callNative(() => native().syncSortByPulse(pulse, channel));
}
