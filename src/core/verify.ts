/**
 * Key verification after reconciliation (native/core/src/verify.rs): polynomial hash over
 * GF(2^128) with a fresh random 128-bit hash key, truncated to t bits; collision probability
 * (L+1)/2^t for L = ceil(n/128), so t = verifyTagBits(n, epsCor) gives ≤ epsCor. The t bits are
 * public and must be counted in the leak (planBlock's verifyTagBits).
 *
 * Protocol: Alice draws `newHashKey()` after reconciliation, sends (hashKey, tag of her block);
 * Bob computes his tag with the same key and compares with `tagsEqual`; on mismatch both discard.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { native } from './native.ts';
import { callNative } from './native-call.ts';

export function verifyTagBits(nBits: number, epsCor: number): number {
  return callNative(() => native().verifyTagBits(nBits, epsCor));
}

export function verifyCollisionProbability(nBits: number, tagBits: number): number {
  return native().verifyCollisionProbability(nBits, tagBits);
}

/** 16 fresh CSPRNG bytes: one hash key per block, never reused. */
export function newHashKey(): Uint8Array {
  return randomBytes(16);
}

/** t-bit tag (ceil(t/8) bytes, little-endian, right-aligned) of `key` (`nBits` bits). */
export function verifyTag(key: Uint8Array, nBits: number, hashKey: Uint8Array, tagBits: number): Uint8Array {
  return callNative(() => native().verifyTag(key, nBits, hashKey, tagBits));
}

export function tagsEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Forces the portable carry-less multiply in verification (tests and benchmarks). */
export function forcePortableClmul(on: boolean): void {
  native().coreForcePortableClmul(on);
}

export function hardwareClmul(): boolean {
  return native().coreHardwareClmul();
}
