/**
 * Typed facade over the native timing histogram (native/records/src/histogram.rs): start-stop
 * (TCSPC / lifetime) and g2 (cross-correlation, both signs) histograms fed with time-ordered
 * chunks of typed arrays, state carried across chunks.
 *
 * - start-stop: for each stop event Δ = t_stop − t_last_start + delayPs; bin ⌊Δ / binPs⌋ for
 *   0 ≤ Δ < bins·binPs (firstBinPs = 0). `pushDtime` does the T3 lifetime: Δ = dtime × res + delay.
 * - g2: every start/stop pair with Δ = t_stop − t_start + delayPs in range; bins centred on
 *   multiples of binPs, bin ⌊bins/2⌋ centred on zero (firstBinPs = −(⌊bins/2⌋ + ½)·binPs).
 *
 * Concurrency: one feeder; calls run on the JS thread (a g2 costs one step per pair in range).
 */
import { native } from './native.ts';
import { errorFromNative } from './native-call.ts';

export type HistogramMode = 'start-stop' | 'g2';

type NativeHistogram = InstanceType<ReturnType<typeof native>['TimingHistogram']>;

function call<T>(fn: () => T): T {
  try {
    return fn();
  } catch (cause) {
    throw errorFromNative(cause);
  }
}

export class TimingHistogram {
  readonly #h: NativeHistogram;
  constructor(readonly opts: { mode: HistogramMode; start: number; stop: number; binPs: number; bins: number; delayPs?: number }) {
    this.#h = call(() => new (native().TimingHistogram)(opts.mode, opts.start, opts.stop, opts.binPs, opts.bins, opts.delayPs ?? 0));
  }
  /** Events in time order (ps) with their channels. */
  push(timePs: BigInt64Array, channel: Uint8Array): void {
    call(() => this.#h.push(timePs, channel));
  }
  /** T3 records: the sync is the start; dtime in bins of `resolutionPs`. */
  pushDtime(dtime: Uint16Array, channel: Uint8Array, resolutionPs: number): void {
    call(() => this.#h.pushDtime(dtime, channel, resolutionPs));
  }
  counts(): number[] {
    return Array.from(this.#h.counts());
  }
  /** Lower edge of bin 0 in ps. */
  get firstBinPs(): number {
    return this.#h.firstBinPs;
  }
  /** Stop events (start-stop) or pairs (g2) looked at, in range or not. */
  get considered(): number {
    return this.#h.considered;
  }
  /** Events that came earlier than the one before them (binned as they came). */
  get orderViolations(): number {
    return this.#h.orderViolations;
  }
}
