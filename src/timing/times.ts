/**
 * Conversions between the wire form of tag times (int64 picoseconds, BigInt64Array) and the hot-loop
 * form (Float64Array of integers, exact below 2^53 ps = 2.5 h of tagger time).
 *
 * Why not `Number(big[i])`: that allocates a BigInt per element (tens of ns each). Reading the
 * same buffer as two 32-bit halves is ~20x faster and exact for |t| < 2^53.
 */
import { endianness } from 'node:os';

const LITTLE = endianness() === 'LE';
const TWO32 = 4294967296;

/** Copies `src` (int64 ps) into a Float64Array (or into `out` if given, which must be long enough). */
export function tagTimesToNumbers(src: BigInt64Array, out?: Float64Array): Float64Array {
  const n = src.length;
  const dst = out ?? new Float64Array(n);
  const words = new Int32Array(src.buffer, src.byteOffset, n * 2);
  const lo = LITTLE ? 0 : 1;
  const hi = 1 - lo;
  for (let i = 0, w = 0; i < n; i++, w += 2) dst[i] = words[w + hi] * TWO32 + (words[w + lo] >>> 0);
  return dst;
}

/** Inverse of tagTimesToNumbers (values must be integers of magnitude below 2^53). */
export function numbersToTagTimes(src: Float64Array | number[]): BigInt64Array {
  const out = new BigInt64Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = BigInt(Math.round(src[i]));
  return out;
}
