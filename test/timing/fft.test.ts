// FFT, correlation, time conversion and pattern scoring against slow obvious references.
import t from 'tap';
import { crossCorrelateReal, dftReference, fft, nextPowerOfTwo } from '../../src/timing/fft.ts';
import { numbersToTagTimes, tagTimesToNumbers } from '../../src/timing/times.ts';
import { classFrequencies, scoreTable } from '../../src/timing/pattern.ts';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 4294967296; };
}

t.test('fft agrees with the O(n^2) DFT, forward and inverse', async (t) => {
  const r = rng(1);
  for (const n of [1, 2, 4, 8, 64, 256]) {
    const re = Float64Array.from({ length: n }, () => r() - 0.5), im = Float64Array.from({ length: n }, () => r() - 0.5);
    for (const inv of [false, true]) {
      const ref = dftReference(re, im, inv);
      const a = re.slice(), b = im.slice();
      fft(a, b, inv);
      let err = 0;
      for (let k = 0; k < n; k++) err = Math.max(err, Math.abs(a[k] - ref.re[k]), Math.abs(b[k] - ref.im[k]));
      t.ok(err < 1e-9, `n=${n} inverse=${inv} max error ${err}`);
    }
  }
  t.throws(() => fft(new Float64Array(6), new Float64Array(6)), RangeError);
  t.equal(nextPowerOfTwo(5), 8);
  t.equal(nextPowerOfTwo(8), 8);
});

t.test('crossCorrelateReal equals the direct circular correlation', async (t) => {
  const r = rng(2);
  for (const n of [8, 128, 1024]) {
    const a = Float64Array.from({ length: n }, () => r() - 0.3), b = Float64Array.from({ length: n }, () => (r() < 0.1 ? 1 : 0));
    const c = crossCorrelateReal(a, b);
    let err = 0;
    for (let k = 0; k < n; k++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += a[(j + k) % n] * b[j];
      err = Math.max(err, Math.abs(s - c[k]));
    }
    t.ok(err < 1e-9, `n=${n} max error ${err}`);
  }
});

t.test('tag time conversion is exact for |t| < 2^53, negative included', async (t) => {
  const r = rng(3);
  const vals = [0, 1, -1, 2 ** 32, -(2 ** 32), 2 ** 32 - 1, 2 ** 53 - 1, -(2 ** 53 - 1)];
  for (let i = 0; i < 1000; i++) vals.push(Math.floor((r() - 0.5) * 2 ** 53));
  const big = numbersToTagTimes(vals);
  const back = tagTimesToNumbers(big);
  let bad = 0;
  for (let i = 0; i < vals.length; i++) if (back[i] !== vals[i] || Number(big[i]) !== vals[i]) bad++;
  t.equal(bad, 0);
});

t.test('score table: centred, unit-consistent, refuses patterns without contrast', async (t) => {
  const tab = scoreTable([0.5, 0.1, 0], [0.7, 0.2, 0.1]);
  const mean = 0.7 * tab.score[0] + 0.2 * tab.score[1] + 0.1 * tab.score[2];
  t.ok(Math.abs(mean) < 1e-12, 'zero mean over the class frequencies');
  t.ok(tab.score[0] > 0 && tab.score[1] < 0 && tab.score[2] < tab.score[1], 'brighter pulses score higher');
  t.equal(tab.score[255], 0, 'unknown class is neutral');
  t.throws(() => scoreTable([0, 0, 0], [0.5, 0.3, 0.2]), { code: 'BAD_PATTERN' });
  t.throws(() => scoreTable([0.5], [1]), { code: 'BAD_PATTERN' });
  t.same(classFrequencies(Uint8Array.from([0, 0, 1, 2, 9]), 3), [0.5, 0.25, 0.25]);
});
