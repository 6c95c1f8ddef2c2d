/**
 * Privacy amplification by Toeplitz hashing (native/core/src/toeplitz.rs).
 * y_i = XOR_j T[i][j] x_j with T[i][j] = seed[i − j + n − 1]: seed of n + ℓ − 1 bits, fresh and
 * uniformly random per block (Alice draws it with `newToeplitzSeed`, sends it authenticated;
 * it need not be secret, only independent of the key).
 *
 * `toeplitzHash` runs off the JS thread (libuv + rayon over both cores) and copies its inputs
 * first, so the caller may wipe them as soon as it returns the promise. Not cancellable once
 * started (≤ seconds even at 1e8 bits).
 */
import { randomBytes } from 'node:crypto';
import { native } from './native.ts';
import { callNative, callNativeAsync } from './native-call.ts';

export interface ToeplitzOptions {
  /** Schoolbook base case in 64-bit words (default 32). */
  baseWords?: number;
  /** Parallel above this many words; 0 = single-threaded (default 2048). */
  parallelWords?: number;
  /** Force the portable carry-less multiply. */
  portable?: boolean;
  /** Use the slow reference instead (tests and benchmark baselines). */
  reference?: boolean;
}

export function toeplitzSeedBits(nBits: number, outBits: number): number {
  return outBits > 0 ? nBits + outBits - 1 : 0;
}

export function newToeplitzSeed(nBits: number, outBits: number): Uint8Array {
  return randomBytes(Math.ceil(toeplitzSeedBits(nBits, outBits) / 8));
}

/** ℓ-bit output (ceil(ℓ/8) bytes, LSB-first) of the Toeplitz hash of `key` (`nBits` bits). */
export async function toeplitzHash(key: Uint8Array, nBits: number, seed: Uint8Array, outBits: number,
  options?: ToeplitzOptions): Promise<Uint8Array> {
  return callNativeAsync(() => native().toeplitzHash(key, nBits, seed, outBits, options) as Promise<Uint8Array>);
}

/** Same, on the calling thread (small blocks, tests). */
export function toeplitzHashSync(key: Uint8Array, nBits: number, seed: Uint8Array, outBits: number,
  options?: ToeplitzOptions): Uint8Array {
  return callNative(() => native().toeplitzHashSync(key, nBits, seed, outBits, options));
}
