/**
 * Privacy amplification by Toeplitz hashing (native/core/src/toeplitz.rs).
 * y_i = XOR_j T[i][j] x_j with T[i][j] = seed[i − j + n − 1]: seed of n + ℓ − 1 bits, fresh and
 * uniformly random per block (Alice draws it with `newToeplitzSeed`, sends it authenticated;
 * it need not be secret, only independent of the key).
 *
 * Algorithms (docs/postprocessing.md §4): an additive FFT over GF(2^64) for large blocks and
 * Toeplitz Karatsuba on PCLMULQDQ for small or thin ones; `auto` picks by a cost model fitted to
 * measurements, `toeplitzAlgorithm` says which one a call would use.
 *
 * `toeplitzHash` runs off the JS thread (libuv + rayon over both cores) and copies its inputs
 * first, so the caller may wipe them as soon as it returns the promise. Not cancellable once
 * started (about a second at 1e8 bits).
 */
import { randomBytes } from 'node:crypto';
import { native } from './native.ts';
import { callNative, callNativeAsync } from './native-call.ts';

export type ToeplitzAlgorithm = 'auto' | 'karatsuba' | 'fft';

export interface ToeplitzOptions {
  /** Default 'auto': the FFT for large blocks, Karatsuba below the measured crossover. */
  algorithm?: ToeplitzAlgorithm;
  /** Karatsuba: schoolbook base case in 64-bit words (default 32). */
  baseWords?: number;
  /** Karatsuba: parallel above this many words (default 2048); 0 = single-threaded (both). */
  parallelWords?: number;
  /** Force the portable carry-less / GF(2^64) multiply (both algorithms). */
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

/** The algorithm a call with these lengths and options runs: 'karatsuba', 'fft' or 'reference'. */
export function toeplitzAlgorithm(nBits: number, outBits: number, options?: ToeplitzOptions): string {
  return callNative(() => native().toeplitzAlgorithm(nBits, outBits, options));
}
