/**
 * Typed facade over the native source RNG (native/core/src/emulated_choice.rs): the emulated
 * photon source's ChaCha20 keystream read with random access by pulse index, and the ChaCha20
 * block function for known-answer tests.
 *
 * Key custody: `createSourceRng` draws 256 bits from the OS CSPRNG, hands them to the native
 * object (zeroising Rust memory) and wipes its own copy before returning: afterwards no JS value
 * holds the key, and the object has no method that returns it. Only the emulated device
 * (src/devices/emulated/instruments.ts) creates one; a node never does.
 *
 * Concurrency: `choicesAt`/`choicesRange` run on the calling thread (rayon inside for long lists);
 * `choicesAtAsync` runs on the libuv pool and copies the pulses first.
 */
import { randomBytes } from 'node:crypto';
import type { ChoiceThresholds } from '../protocol/choices.ts';
import { native } from './native.ts';
import { callNative, callNativeAsync } from './native-call.ts';

export interface SourceRng {
  /** Packed choice bytes (src/protocol/choices.ts) at the listed pulses (integers in [0, 2^53)). */
  choicesAt(pulses: Float64Array): Uint8Array;
  choicesAtAsync(pulses: Float64Array): Promise<Uint8Array>;
  /** Choice bytes of pulses [first, first + count). */
  choicesRange(first: number, count: number): Uint8Array;
}

/**
 * A source RNG with a fresh 256-bit key from the OS CSPRNG. `testKey` (32 bytes) replaces it in
 * tests that compare with the slow reference; never pass one anywhere else.
 */
export function createSourceRng(th: ChoiceThresholds, testKey?: Uint8Array): SourceRng {
  const key = testKey ? Uint8Array.from(testKey) : randomBytes(32);
  let rng: InstanceType<ReturnType<typeof native>['SourceRng']>;
  try {
    rng = callNative(() => new (native().SourceRng)(key, th.basisZ, th.signal, th.decoy));
  } finally {
    key.fill(0);
  }
  return {
    choicesAt: (pulses) => callNative(() => rng.choicesAt(pulses)),
    choicesAtAsync: (pulses) => callNativeAsync(() => rng.choicesAtAsync(pulses) as Promise<Uint8Array>),
    choicesRange: (first, count) => callNative(() => rng.choicesRange(first, count)),
  };
}

/** One ChaCha20 block (RFC 8439 §2.3), natively; for known-answer tests. */
export function chacha20BlockNative(key: Uint8Array, counter: number, nonce: Uint8Array): Uint8Array {
  return callNative(() => native().chacha20Block(key, counter, nonce));
}
