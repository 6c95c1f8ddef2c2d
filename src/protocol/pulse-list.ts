/**
 * Pulse lists on the wire (the post-processing dialogue and the photon source's read-back):
 * strictly increasing non-negative integer pulse indices as unsigned LEB128 deltas.
 *
 * ```text
 *   pulses  p0 < p1 < p2 ...         (integers below 2^53)
 *   values  p0, p1 - p0 - 1, p2 - p1 - 1, ...   (each >= 0)
 *   bytes   LEB128 of each value: 7 bits per byte, low group first, bit 7 = more follows
 * ```
 */
import { ProtocolError, QkdError } from '../errors.ts';
import { native } from '../core/native.ts';
import { callNative } from '../core/native-call.ts';

/** Below this many pulses (or bytes) the JavaScript loop beats the cost of a native call. */
const NATIVE_FROM = 64;

/**
 * Strictly increasing non-negative integer pulse indices as unsigned LEB128 deltas (the first
 * delta is from 0). About 2 bytes per detection at the detection densities of a fibre link.
 * Native (native/core/src/pulse_list.rs), equal to `encodePulseListReference` byte for byte.
 */
export function encodePulseList(pulses: Float64Array): Uint8Array {
  if (pulses.length < NATIVE_FROM) return encodePulseListReference(pulses);
  return callNative(() => native().pulseListEncode(pulses));
}

/** The indices of a pulse list (native; equal to `decodePulseListReference`, errors included). */
export function decodePulseList(buf: Uint8Array, expected?: number): Float64Array {
  if (buf.length < NATIVE_FROM || (expected !== undefined && !(Number.isSafeInteger(expected) && expected >= 0))) {
    return decodePulseListReference(buf, expected);
  }
  const out = new Float64Array(buf.length);
  const n = callNative(() => native().pulseListDecodeInto(buf, out));
  if (expected !== undefined && n !== expected) {
    throw new ProtocolError('PULSES_COUNT', `pulse list holds ${n} pulses, the header says ${expected}`);
  }
  return out.slice(0, n);
}

/**
 * Checks that `buf` is a pulse list of `expected` pulses without decoding it (native; the same
 * errors as `decodePulseList`: PULSES_TRUNCATED, PULSES_MALFORMED, PULSES_COUNT). For a list
 * passed on unchanged: Alice forwards Bob's list to her source, whose read-back decodes it.
 */
export function checkPulseListCount(buf: Uint8Array, expected: number): void {
  const n = buf.length < NATIVE_FROM ? decodePulseListReference(buf).length : callNative(() => native().pulseListCount(buf));
  if (n !== expected) throw new ProtocolError('PULSES_COUNT', `pulse list holds ${n} pulses, the header says ${expected}`);
}

/** The slow reference of `encodePulseList` (property tests; short lists). */
export function encodePulseListReference(pulses: Float64Array): Uint8Array {
  const out = new Uint8Array(pulses.length * 8 + 8);
  let o = 0;
  let prev = -1;
  for (let i = 0; i < pulses.length; i++) {
    let d = pulses[i] - prev - 1;
    if (!(d >= 0) || !Number.isInteger(d)) {
      throw new ProtocolError('PULSES_NOT_INCREASING', `pulse list must be strictly increasing integers (index ${i})`);
    }
    prev = pulses[i];
    // Below 2^31 the shifts are exact (almost every delta); above, divide.
    if (d < 0x80000000) {
      while (d >= 0x80) {
        out[o++] = (d & 0x7f) | 0x80;
        d >>>= 7;
      }
    } else {
      while (d >= 0x80) {
        out[o++] = (d % 0x80) | 0x80;
        d = Math.floor(d / 0x80);
      }
    }
    out[o++] = d;
  }
  return out.slice(0, o);
}

/** The slow reference of `decodePulseList` (property tests; short lists). */
export function decodePulseListReference(buf: Uint8Array, expected?: number): Float64Array {
  // Every pulse takes at least one byte: buf.length bounds the count.
  const vals = new Float64Array(buf.length);
  let n = 0;
  let prev = -1;
  let i = 0;
  while (i < buf.length) {
    let b = buf[i++];
    let d = b & 0x7f;
    if (b & 0x80) {
      let mul = 0x80;
      for (;;) {
        if (i >= buf.length) throw new ProtocolError('PULSES_TRUNCATED', 'pulse list ends inside a number: the message was truncated');
        b = buf[i++];
        d += (b & 0x7f) * mul;
        if (!(b & 0x80)) break;
        mul *= 0x80;
        if (mul > 2 ** 56) throw new ProtocolError('PULSES_MALFORMED', 'pulse list holds a number above 2^53');
      }
    }
    prev = prev + 1 + d;
    vals[n++] = prev;
  }
  if (expected !== undefined && n !== expected) {
    throw new ProtocolError('PULSES_COUNT', `pulse list holds ${n} pulses, the header says ${expected}`);
  }
  return vals.slice(0, n);
}

/** A sift part's pulses: the distinct pulses' list, their count, and each detection's rank in it. */
export interface DistinctPulses {
  pulses: Uint8Array;
  count: number;
  rank: Float64Array;
}

/**
 * Bob's sift part (detections sorted by pulse, several clicks may share one): the pulse list of
 * the distinct pulses and, per detection, its pulse's position in that list. Native; equal to
 * `encodeDistinctPulsesReference`, errors included (DETECTIONS_UNSORTED, PULSES_NOT_INCREASING).
 */
export function encodeDistinctPulses(pulses: Float64Array): DistinctPulses {
  if (pulses.length < NATIVE_FROM) return encodeDistinctPulsesReference(pulses);
  const rank = new Float64Array(pulses.length);
  const bytes = callNative(() => native().pulseListEncodeDistinct(pulses, rank));
  return { pulses: bytes, count: pulses.length ? rank[pulses.length - 1] + 1 : 0, rank };
}

/** The slow reference of `encodeDistinctPulses`. */
export function encodeDistinctPulsesReference(pulses: Float64Array): DistinctPulses {
  const distinct = new Float64Array(pulses.length);
  const rank = new Float64Array(pulses.length);
  let nd = 0;
  for (let i = 0; i < pulses.length; i++) {
    if (i === 0 || pulses[i] !== pulses[i - 1]) {
      if (i > 0 && pulses[i] < pulses[i - 1]) throw new QkdError('DETECTIONS_UNSORTED', `detections must be sorted by pulse index (index ${i})`);
      distinct[nd++] = pulses[i];
    }
    rank[i] = nd - 1;
  }
  return { pulses: encodePulseListReference(distinct.subarray(0, nd)), count: nd, rank };
}
