/**
 * Typed facade over the emulated photon source's device object (native/node/src/lab.rs,
 * native/core/src/emulated_record.rs): its ChaCha20 RNG (as `SourceRng`) plus the record of what
 * its modulators applied to each pulse the lab's optics looked at, so that the read-back of
 * detected pulses is a lookup (a real source stores what it applied) rather than a second
 * ChaCha20 evaluation. The answers are the keystream's either way: the record is a cache.
 *
 * Key custody as in source-rng.ts: 256 bits from the OS CSPRNG go into zeroising Rust memory and
 * the JS copy is wiped before `createSourceDevice` returns; no method returns the key. Only the
 * emulated device (src/devices/emulated/instruments.ts) creates one.
 *
 * Threads: `share()` registers the device for `openSharedSourceDevice(handle)` on another JS
 * thread of the process (the lab's optics on Bob's thread, the device's wire server on a
 * worker); both objects use the same Rust state (the record behind a mutex). All calls but
 * `recordAtAsync` are synchronous on the calling thread.
 */
import { randomBytes } from 'node:crypto';
import type { ChoiceThresholds } from '../protocol/choices.ts';
import { native } from './native.ts';
import { callNative, callNativeAsync } from './native-call.ts';

/** Record entries kept by default: 2^25 × 4 B = 128 MB, ≈ 13 s of candidates at 1 GHz / 25 km. */
export const DEFAULT_RECORD_CAPACITY = 1 << 25;

export interface SourceDevice {
  /** The optics apply their choices to these strictly increasing pulses: packed choice bytes, recorded. */
  applyAt(pulses: Float64Array): Uint8Array;
  /** The read-back: packed choice bytes applied at the listed pulses (integers in [0, 2^53)). */
  recordAt(pulses: Float64Array): Uint8Array;
  /** The same on the libuv pool (the pulses are copied first). */
  recordAtAsync(pulses: Float64Array): Promise<Uint8Array>;
  /** Registers the device for another thread; returns the handle. */
  share(): number;
  /** Withdraws the handle. */
  unshare(): void;
  /** Read-back pulses answered from the record (hits) and from the keystream (misses); entries kept. */
  stats(): { hits: number; misses: number; entries: number };
  /**
   * The native object behind this facade (the same methods; never the key): the lab's Rust physics
   * calls its applyAt directly (src/lab/link.ts, AliceChoiceSource.native).
   */
  readonly native?: NativeDevice;
}

export type NativeDevice = InstanceType<ReturnType<typeof native>['EmulatedSourceDevice']>;

function wrap(d: NativeDevice): SourceDevice {
  return {
    applyAt: (pulses) => callNative(() => d.applyAt(pulses)),
    recordAt: (pulses) => callNative(() => d.recordAt(pulses)),
    recordAtAsync: (pulses) => callNativeAsync(() => d.recordAtAsync(pulses) as Promise<Uint8Array>),
    share: () => callNative(() => d.share()),
    unshare: () => d.unshare(),
    stats: () => d.stats(),
    native: d,
  };
}

/**
 * A source device with a fresh 256-bit key. `testKey` (32 bytes) replaces it in tests that compare
 * with the keystream of a known key; never pass one anywhere else.
 */
export function createSourceDevice(th: ChoiceThresholds, opts: { recordCapacity?: number; testKey?: Uint8Array } = {}): SourceDevice {
  const key = opts.testKey ? Uint8Array.from(opts.testKey) : randomBytes(32);
  try {
    return wrap(callNative(() => new (native().EmulatedSourceDevice)(key, th.basisZ, th.signal, th.decoy, opts.recordCapacity ?? DEFAULT_RECORD_CAPACITY)));
  } finally {
    key.fill(0);
  }
}

/** The device shared under `handle` by another thread of this process. */
export function openSharedSourceDevice(handle: number): SourceDevice {
  return wrap(callNative(() => native().EmulatedSourceDevice.open(handle)));
}
