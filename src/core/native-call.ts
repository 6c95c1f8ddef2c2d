/**
 * Maps the native core's coded errors ("CODE: message") to the node's error classes, so callers
 * switch on `err.code`. Shared by the post-processing facades in this folder (sift, estimate,
 * verify, pa, block). Messages never carry key material: the core only reports lengths/counts.
 */
import { ProtocolError, QkdError, SecurityError } from '../errors.ts';

export function errorFromNative(cause: unknown): QkdError {
  const msg = cause instanceof Error ? cause.message : String(cause);
  const m = /^([A-Z][A-Z0-9_]+): ([\s\S]*)$/.exec(msg);
  if (!m) return new QkdError('CORE_ERROR', `native core failed: ${msg}`, { cause });
  const [, code, text] = m;
  // A peer's malformed or mismatched message is a protocol problem; aborts are security refusals.
  if (code.startsWith('PE_ABORT') || code === 'PE_IMPOSSIBLE_COUNTS') return new SecurityError(code, text, { cause });
  if (code === 'SIFT_MALFORMED' || code === 'SIFT_TRUNCATED' || code === 'SIFT_MISMATCH' || code.startsWith('PULSES_')) {
    return new ProtocolError(code, text, { cause });
  }
  return new QkdError(code, text, { cause });
}

export function callNative<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw errorFromNative(e);
  }
}

export async function callNativeAsync<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw errorFromNative(e);
  }
}

/** Overwrites key material held in JS memory (Buffers from the core are the caller's to wipe). */
export function wipe(...arrays: (Uint8Array | undefined | null)[]): void {
  for (const a of arrays) a?.fill(0);
}
