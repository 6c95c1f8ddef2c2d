/**
 * Privacy amplification throughput (Toeplitz hash, native/core/src/toeplitz.rs) in Mbit/s of
 * input at n = 1e6, 1e7, 1e8 bits with ℓ = n/2 and ℓ = n/10, multi-threaded (rayon on both
 * cores). Each row is the default `auto` choice (params.algorithm says which one ran: the
 * additive FFT or Toeplitz Karatsuba) and params.karatsuba / params.fft give the other algorithm
 * on the same input in the same run (at 1e8 with one repeat and no warm-up: Karatsuba takes
 * seconds there). Baseline: the word-level reference (the definition, O(n·ℓ/64)) on the same
 * input at 1e6, ℓ = n/2; at 1e7/1e8 it would take minutes to days, so
 * `params.referenceExtrapolated` scales the 1e6 reference time by (n/1e6)^2 instead.
 * Anchors: 108 Mbit/s at 1e8 (Yuan et al. 2018), 71 Mbit/s CPU FFT (Sci. Rep. 2019); goal 300.
 * `params.cpuSeconds` is process CPU time per run (the machine is shared; wall time is noisy).
 */
import { randomBytes } from 'node:crypto';
import { toeplitzAlgorithm, toeplitzHash, type ToeplitzOptions } from '../src/core/pa.ts';
import { median, medianSeconds, type BenchResult } from './stats.ts';

interface Timing { wall: number; cpu: number; repeats: number }

async function timeRun(fn: () => Promise<unknown>, repeats: number, warmUp = true): Promise<Timing> {
  if (warmUp) await fn();
  const walls: number[] = [];
  const cpus: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await fn();
    walls.push(Number(process.hrtime.bigint() - t0) / 1e9);
    const c = process.cpuUsage(c0);
    cpus.push((c.user + c.system) / 1e6);
  }
  return { wall: median(walls), cpu: median(cpus), repeats };
}

const mbps = (n: number, seconds: number): number => n / seconds / 1e6;
const tag = (n: number): string => n.toExponential(0).replace('+', '');

export async function run(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  let refSeconds1e6 = NaN;
  for (const [n, repeats] of [[1e6, 7], [1e7, 5], [1e8, 3]] as const) {
    for (const div of [2, 10]) {
      const l = n / div;
      const x = randomBytes(n / 8);
      const seed = randomBytes(Math.ceil((n + l - 1) / 8));
      const hash = (o?: ToeplitzOptions) => () => toeplitzHash(x, n, seed, l, o);
      const algorithm = toeplitzAlgorithm(n, l);
      const auto = await timeRun(hash(), repeats);
      const other = algorithm === 'fft' ? 'karatsuba' : 'fft';
      const big = n >= 1e8 && other === 'karatsuba';
      const alt = await timeRun(hash({ algorithm: other }), big ? 1 : repeats, !big);
      let baseline: number | undefined;
      if (n === 1e6 && div === 2) {
        refSeconds1e6 = await medianSeconds(hash({ reference: true }), 1);
        baseline = mbps(n, refSeconds1e6);
      }
      const fig = (t: Timing) => ({ mbps: mbps(n, t.wall), wallSeconds: t.wall, cpuSeconds: t.cpu, repeats: t.repeats });
      out.push({
        name: `pa.toeplitz.n${tag(n)}${div === 2 ? '' : `.l_n${div}`}`, value: mbps(n, auto.wall), unit: 'Mbit/s', better: 'higher',
        params: { n, outBits: l, algorithm, threads: 'rayon (2 cores)', wallSeconds: auto.wall, cpuSeconds: auto.cpu,
          [other]: fig(alt),
          referenceExtrapolated: div === 2 && n > 1e6 ? mbps(n, refSeconds1e6 * (n / 1e6) ** 2) : undefined,
          anchor: 108, goal: 300 },
        baseline,
      });
    }
  }
  return out;
}
