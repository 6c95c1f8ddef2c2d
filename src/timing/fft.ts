/**
 * In-place iterative radix-2 complex FFT on split real/imaginary Float64Arrays.
 *
 * Why hand-written: the sync needs one 2^22-point correlation at acquisition and a few 2^15-point
 * spectra; a dependency-free split-array FFT keeps the hot loop monomorphic and allocation-free.
 * Twiddles are cached per size (cos/sin tables of n/2 entries), so repeated transforms of the same
 * size cost only the butterflies. Cooley & Tukey, Math. Comp. 19, 297 (1965).
 *
 * Concurrency: pure functions on caller-owned arrays; the twiddle cache is module-local and
 * filled synchronously, so any number of callers may interleave.
 */

const twiddleCache = new Map<number, { cos: Float64Array; sin: Float64Array }>();

function twiddles(n: number): { cos: Float64Array; sin: Float64Array } {
  let t = twiddleCache.get(n);
  if (!t) {
    const half = n >> 1;
    const cos = new Float64Array(half);
    const sin = new Float64Array(half);
    for (let k = 0; k < half; k++) {
      const a = (-2 * Math.PI * k) / n;
      cos[k] = Math.cos(a);
      sin[k] = Math.sin(a);
    }
    t = { cos, sin };
    // Keep the cache small: sync uses at most a couple of sizes.
    if (twiddleCache.size > 4) twiddleCache.clear();
    twiddleCache.set(n, t);
  }
  return t;
}

export function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

export function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * Forward (inverse = false: X_k = sum x_j e^{-2 pi i jk/n}) or inverse (unnormalised: the caller
 * divides by n if it needs to) transform of (re, im) in place. n must be a power of two.
 */
export function fft(re: Float64Array, im: Float64Array, inverse = false): void {
  const n = re.length;
  if (im.length !== n || !isPowerOfTwo(n)) throw new RangeError(`fft: length ${n} must be a power of two and re/im equal`);
  // Bit-reversal permutation.
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      let t = re[i]; re[i] = re[j]; re[j] = t;
      t = im[i]; im[i] = im[j]; im[j] = t;
    }
  }
  const { cos, sin } = twiddles(n);
  const sign = inverse ? -1 : 1;
  for (let len = 2; len <= n; len <<= 1) {
    const half = len >> 1;
    const step = n / len;
    for (let start = 0; start < n; start += len) {
      for (let k = 0, w = 0; k < half; k++, w += step) {
        const wr = cos[w];
        const wi = sign * sin[w];
        const a = start + k;
        const b = a + half;
        const xr = re[b] * wr - im[b] * wi;
        const xi = re[b] * wi + im[b] * wr;
        re[b] = re[a] - xr;
        im[b] = im[a] - xi;
        re[a] += xr;
        im[a] += xi;
      }
    }
  }
}

/** Slow O(n^2) DFT: the obvious reference the tests compare `fft` against. */
export function dftReference(re: Float64Array, im: Float64Array, inverse = false): { re: Float64Array; im: Float64Array } {
  const n = re.length;
  const outRe = new Float64Array(n);
  const outIm = new Float64Array(n);
  const sign = inverse ? 1 : -1;
  for (let k = 0; k < n; k++) {
    let sr = 0;
    let si = 0;
    for (let j = 0; j < n; j++) {
      const a = (sign * 2 * Math.PI * ((j * k) % n)) / n;
      sr += re[j] * Math.cos(a) - im[j] * Math.sin(a);
      si += re[j] * Math.sin(a) + im[j] * Math.cos(a);
    }
    outRe[k] = sr;
    outIm[k] = si;
  }
  return { re: outRe, im: outIm };
}

/**
 * Circular cross-correlation of two real sequences of equal power-of-two length n:
 * c[k] = sum_j a[(j + k) mod n] * b[j]. Packs both real inputs into one complex transform
 * (a + i b) so the cost is two FFTs, not three.
 */
export function crossCorrelateReal(a: Float64Array, b: Float64Array): Float64Array {
  const n = a.length;
  if (b.length !== n) throw new RangeError('crossCorrelateReal: lengths differ');
  const re = a.slice();
  const im = b.slice();
  fft(re, im);
  // Z = A + iB. A_k = (Z_k + conj Z_{n-k})/2, B_k = (Z_k - conj Z_{n-k})/(2i). C_k = A_k conj(B_k).
  const cr = new Float64Array(n);
  const ci = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const m = (n - k) & (n - 1);
    const zr = re[k], zi = im[k], wr = re[m], wi = -im[m]; // w = conj Z_{n-k}
    const ar = (zr + wr) / 2, ai = (zi + wi) / 2;
    // (z - w)/(2i) = (zi - wi)/2 - i (zr - wr)/2
    const br = (zi - wi) / 2, bi = -(zr - wr) / 2;
    cr[k] = ar * br + ai * bi;
    ci[k] = ai * br - ar * bi;
  }
  fft(cr, ci, true);
  for (let k = 0; k < n; k++) cr[k] /= n;
  return cr;
}
