// Toeplitz privacy amplification: both native algorithms (additive FFT and Karatsuba; hardware
// and portable multiplies, serial and parallel) vs the bit-by-bit TypeScript reference, vs the
// Rust word-level reference on larger shapes, and bit for bit against the independent
// `randextract` Python package (PyPI).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { newToeplitzSeed, toeplitzAlgorithm, toeplitzHash, toeplitzHashSync, toeplitzSeedBits } from '../../src/core/pa.ts';
import { toeplitzRef, getBit } from '../../src/core/reference.ts';

function maskTail(a: Uint8Array, nBits: number): Uint8Array {
  if (nBits & 7) a[a.length - 1] &= (1 << (nBits & 7)) - 1;
  return a;
}
function rand(nBits: number): Uint8Array {
  return maskTail(randomBytes(Math.ceil(nBits / 8)), nBits);
}
const hex = (a: Uint8Array): string => Buffer.from(a).toString('hex');

t.test('fast Toeplitz equals the bit-by-bit reference (odd shapes, all paths)', async (t) => {
  for (const [n, l] of [[1, 1], [2, 1], [7, 3], [63, 63], [64, 64], [65, 1], [65, 65], [200, 131], [129, 128],
    [1000, 999], [1537, 700], [3001, 1500], [2500, 17]]) {
    const x = rand(n);
    const s = newToeplitzSeed(n, l);
    const want = hex(toeplitzRef(x, n, s, l));
    t.equal(hex(toeplitzHashSync(x, n, s, l)), want, `default n=${n} l=${l}`);
    t.equal(hex(toeplitzHashSync(x, n, s, l, { algorithm: 'karatsuba', portable: true, parallelWords: 0, baseWords: 1 })), want,
      `karatsuba portable serial base1 n=${n} l=${l}`);
    t.equal(hex(toeplitzHashSync(x, n, s, l, { algorithm: 'karatsuba', baseWords: 2, parallelWords: 3 })), want,
      `karatsuba tiny base, parallel n=${n} l=${l}`);
    t.equal(hex(toeplitzHashSync(x, n, s, l, { algorithm: 'fft' })), want, `fft n=${n} l=${l}`);
    t.equal(hex(toeplitzHashSync(x, n, s, l, { algorithm: 'fft', portable: true, parallelWords: 0 })), want, `fft portable serial n=${n} l=${l}`);
    t.equal(hex(await toeplitzHash(x, n, s, l)), want, `async n=${n} l=${l}`);
  }
});

t.test('fast Toeplitz equals the word-level reference on larger blocks', async (t) => {
  for (const [n, l] of [[100_003, 40_001], [65_536, 65_536], [200_000, 3_000], [50_000, 49_999]]) {
    const x = rand(n);
    const s = newToeplitzSeed(n, l);
    const want = hex(toeplitzHashSync(x, n, s, l, { reference: true }));
    t.equal(hex(await toeplitzHash(x, n, s, l)), want, `n=${n} l=${l}`);
    t.equal(hex(toeplitzHashSync(x, n, s, l, { portable: true })), want, `portable n=${n} l=${l}`);
    for (const algorithm of ['fft', 'karatsuba'] as const) {
      t.equal(hex(await toeplitzHash(x, n, s, l, { algorithm })), want, `${algorithm} n=${n} l=${l}`);
    }
  }
});

t.test('FFT and Karatsuba agree on a block large enough for auto to pick the FFT', async (t) => {
  const n = 3_000_001, l = 1_400_003;
  t.equal(toeplitzAlgorithm(n, l), 'fft');
  t.equal(toeplitzAlgorithm(2000, 1000), 'karatsuba');
  t.equal(toeplitzAlgorithm(n, l, { algorithm: 'karatsuba' }), 'karatsuba');
  const x = rand(n), s = newToeplitzSeed(n, l);
  const [f, k] = await Promise.all([toeplitzHash(x, n, s, l), toeplitzHash(x, n, s, l, { algorithm: 'karatsuba' })]);
  t.equal(f.length, Math.ceil(l / 8));
  t.equal(hex(f), hex(k), 'same output');
  t.ok(f.some((v) => v !== 0), 'output is not all zero');
});

t.test('linearity and input errors', async (t) => {
  const n = 5000, l = 2100;
  const a = rand(n), b = rand(n), s = newToeplitzSeed(n, l);
  const ab = a.map((v, i) => v ^ b[i]);
  const ha = toeplitzHashSync(a, n, s, l), hb = toeplitzHashSync(b, n, s, l);
  t.equal(hex(toeplitzHashSync(ab, n, s, l)), hex(ha.map((v, i) => v ^ hb[i])), 'T(a xor b) = T(a) xor T(b)');
  t.throws(() => toeplitzHashSync(a, n, s.subarray(0, 10), l), { code: 'PA_BAD_SEED' });
  t.throws(() => toeplitzHashSync(a, n, newToeplitzSeed(n, n + 1), n + 1), { code: 'PA_BAD_LENGTH' });
  t.throws(() => toeplitzHashSync(a.subarray(0, 3), n, s, l), { code: 'CORE_BAD_ARG' });
  t.throws(() => toeplitzHashSync(a, n, s, l, { algorithm: 'ntt' as 'fft' }), { code: 'CORE_BAD_ARG' });
  await t.rejects(toeplitzHash(a, n, s.subarray(0, 10), l), { code: 'PA_BAD_SEED' });
  t.equal(toeplitzSeedBits(n, l), n + l - 1);
});

const PY = `
import sys, json
import numpy as np, galois
from randextract import ToeplitzHashing
GF2 = galois.GF(2)
out = []
for case in json.load(sys.stdin):
    n, l = case['n'], case['l']
    x = np.unpackbits(np.frombuffer(bytes.fromhex(case['x']), dtype=np.uint8), bitorder='little')[:n]
    r = np.unpackbits(np.frombuffer(bytes.fromhex(case['r']), dtype=np.uint8), bitorder='little')[:n + l - 1]
    ext = ToeplitzHashing(input_length=n, output_length=l)
    y = np.array(ext.extract(GF2(x), GF2(r)), dtype=np.uint8)
    out.append(np.packbits(y, bitorder='little').tobytes().hex())
print(json.dumps(out))
`;

const probe = spawnSync('python3', ['-c', 'import randextract, galois, numpy'], { encoding: 'utf8' });
const noRandextract = probe.status !== 0
  ? 'randextract not installed: `pip install randextract` (CI installs it) to run this cross-check' : false;

t.test('bit for bit against randextract (independent implementation, FFT based)', { skip: noRandextract }, async (t) => {
  const cases = [[1, 1], [10, 4], [257, 100], [1000, 400], [4099, 2048], [100_003, 50_001]].map(([n, l]) => {
    const x = rand(n);
    const s = newToeplitzSeed(n, l);
    // randextract: M[i][j] = r[(i - j) mod N]; ours: T[i][j] = s[i - j + n - 1]. Re-index the seed.
    const N = n + l - 1;
    const r = new Uint8Array(Math.ceil(N / 8));
    for (let d = -(n - 1); d <= l - 1; d++) if (getBit(s, d + n - 1)) { const q = (d + N) % N; r[q >> 3] |= 1 << (q & 7); }
    return { n, l, x, s, r };
  });
  const py = spawnSync('python3', ['-c', PY], {
    input: JSON.stringify(cases.map((c) => ({ n: c.n, l: c.l, x: hex(c.x), r: hex(c.r) }))),
    encoding: 'utf8', maxBuffer: 1 << 26,
  });
  t.equal(py.status, 0, `python ran: ${py.stderr.slice(-300)}`);
  const got = JSON.parse(py.stdout) as string[];
  cases.forEach((c, i) => t.equal(hex(toeplitzHashSync(c.x, c.n, c.s, c.l)), got[i], `n=${c.n} l=${c.l}`));
});
