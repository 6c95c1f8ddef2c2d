/**
 * Privacy amplification throughput (Toeplitz hash, native/core/src/toeplitz.rs) in Mbit/s of
 * input at n = 1e6, 1e7, 1e8 bits with ℓ = n/2, multi-threaded (rayon on both cores), plus the
 * single-threaded figure at 1e6/1e7. Baseline: the word-level reference (the definition,
 * O(n·ℓ/64)) on the same input in the same run at 1e6; at 1e7/1e8 it would take minutes to hours,
 * so `params.referenceExtrapolated` scales the 1e6 reference time by (n/1e6)^2 instead.
 * Anchors: 108 Mbit/s at 1e8 (Yuan et al. 2018), 71 Mbit/s CPU FFT (Sci. Rep. 2019); goal 300.
 * `params.cpuSeconds` is process CPU time per run (the machine is shared; wall time is noisy).
 */
import { randomBytes } from 'node:crypto';
import { toeplitzHash } from '../src/core/pa.ts';
import { median, medianSeconds, type BenchResult } from './stats.ts';

async function timeRun(fn: () => Promise<unknown>, repeats: number): Promise<{ wall: number; cpu: number }> {
  await fn();
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
  return { wall: median(walls), cpu: median(cpus) };
}

export async function run(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  let refSeconds1e6 = NaN;
  for (const [n, repeats] of [[1e6, 7], [1e7, 5], [1e8, 3]] as const) {
    const l = n / 2;
    const x = randomBytes(n / 8);
    const seed = randomBytes(Math.ceil((n + l - 1) / 8));
    const mt = await timeRun(() => toeplitzHash(x, n, seed, l), repeats);
    let baseline: number | undefined;
    if (n === 1e6) {
      refSeconds1e6 = await medianSeconds(() => toeplitzHash(x, n, seed, l, { reference: true }), 1);
      baseline = n / refSeconds1e6 / 1e6;
    }
    out.push({
      name: `pa.toeplitz.n${n.toExponential(0).replace('+', '')}`, value: n / mt.wall / 1e6, unit: 'Mbit/s', better: 'higher',
      params: { n, outBits: l, threads: 'rayon (2 cores)', wallSeconds: mt.wall, cpuSeconds: mt.cpu,
        referenceExtrapolated: n === 1e6 ? undefined : n / (refSeconds1e6 * (n / 1e6) ** 2) / 1e6, anchor: 108, goal: 300 },
      baseline,
    });
    if (n <= 1e7) {
      const st = await timeRun(() => toeplitzHash(x, n, seed, l, { parallelWords: 0 }), repeats);
      out.push({ name: `pa.toeplitz.n${n.toExponential(0).replace('+', '')}.single_thread`, value: n / st.wall / 1e6, unit: 'Mbit/s',
        better: 'higher', params: { n, outBits: l, wallSeconds: st.wall, cpuSeconds: st.cpu } });
    }
  }
  return out;
}
