/**
 * LDPC decoder throughput (docs/ldpc.md, "Decoder speed"): Mbit/s of sifted key decoded, with
 * the codes and rates chooseCode picks for the node (default efficiency target), all frames of
 * a point in one decodeBatch call (SIMD lanes × rayon threads on the 2 cores).
 *
 * Points: QBER 1, 2, 5 % × frames of 2^16 (k = 58983) and 2^18 (k = 235930, the node's default)
 * mother codes. Per point: median over repeats of wall-clock Mbit/s and Mbit/s per CPU-second
 * (process CPU time, all threads: the machine is shared, so wall time varies 2-3x), mean
 * iterations and FER (not converged or not Alice's frame) of the first pass. Beside them, on the
 * same frames: the portable serial kernel (kernel: 'portable', the check-by-check engine the
 * SIMD dispatch replaced, bit-identical results) and, as `baseline`, the scalar f64 sum-product
 * reference decoder on one frame (slow: ~4 s per 2^16 frame, ~20 s per 2^18 frame).
 * Env: LDPC_DEC_FRAMES16 (default 128), LDPC_DEC_FRAMES18 (default 32), LDPC_DEC_REPEATS
 * (default 5), LDPC_DEC_REF=0 skips the reference baseline.
 */
import { chooseCode, decodeBatch, decoderKernel, encodeBatch, type DecodeResult } from '../src/core/ldpc.ts';
import { bsc, randomBits, seededRandom } from '../src/testkit/ldpc.ts';
import { median, type BenchResult } from './stats.ts';

interface Timed<T> {
  wall: number;
  cpu: number;
  out: T;
}

async function timed<T>(fn: () => Promise<T>): Promise<Timed<T>> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const out = await fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1e6, out };
}

function sameBits(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export async function run(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const repeats = Number(process.env.LDPC_DEC_REPEATS ?? 5);
  const withRef = process.env.LDPC_DEC_REF !== '0';
  const sizes: Array<[string, number, number]> = [
    ['2^16', 60_000, Number(process.env.LDPC_DEC_FRAMES16 ?? 128)],
    ['2^18', 250_000, Number(process.env.LDPC_DEC_FRAMES18 ?? 32)],
  ];
  const os = await import('node:os');
  for (const [size, frameBits, nf] of sizes) {
    for (const q of [0.01, 0.02, 0.05]) {
      const rand = seededRandom(Math.round(q * 1e4) * 7 + frameBits);
      const choice = chooseCode(q, frameBits);
      const alice = Array.from({ length: nf }, () => randomBits(rand, choice.keyBits));
      const bob = alice.map((a) => bsc(rand, a, choice.keyBits, q).out);
      const synd = (await encodeBatch(alice, choice.params)).map((e) => e.syndrome);
      const bits = nf * choice.keyBits;
      const decode = (kernel: 'auto' | 'portable') => () => decodeBatch(bob, synd, q, choice.params, { kernel });
      await decode('auto')(); // warm-up (builds the code)
      const runs: Array<Timed<DecodeResult[]>> = [];
      for (let i = 0; i < repeats; i++) runs.push(await timed(decode('auto')));
      const first = runs[0].out;
      const fails = first.filter((r, i) => !r.converged || !sameBits(r.corrected, alice[i])).length;
      const meanIter = first.reduce((s, r) => s + r.iterations, 0) / nf;
      const wall = median(runs.map((r) => r.wall));
      const cpu = median(runs.map((r) => r.cpu));
      // The serial kernel on the same frames: fewer repeats (it is 3-5x slower per CPU-second).
      const serial: Array<Timed<DecodeResult[]>> = [];
      for (let i = 0; i < Math.max(1, Math.ceil(repeats / 2)); i++) serial.push(await timed(decode('portable')));
      const serialIdentical = serial[0].out.every((r, i) => r.converged === first[i].converged
        && r.iterations === first[i].iterations && sameBits(r.corrected, first[i].corrected));
      let baseline: number | undefined;
      let referenceParams = {};
      if (withRef) {
        const ref = await timed(() => decodeBatch([bob[0]], [synd[0]], q, choice.params, { kernel: 'reference' }));
        baseline = +(choice.keyBits / ref.wall / 1e6).toFixed(4);
        referenceParams = { referenceFrames: 1, referenceMbitPerCpuSecond: +(choice.keyBits / ref.cpu / 1e6).toFixed(4),
          referenceIterations: ref.out[0].iterations, referenceConverged: ref.out[0].converged };
      }
      const params = {
        qber: q, frameSize: size, keyBitsPerFrame: choice.keyBits, frames: nf, repeats, code: choice.params,
        kernel: decoderKernel(), medianWallS: +wall.toFixed(4), medianCpuS: +cpu.toFixed(4),
        mbitPerCpuSecond: +(bits / cpu / 1e6).toFixed(2),
        meanIterations: +meanIter.toFixed(2), fer: fails / nf, frameErrors: fails,
        serialKernelMbitPerS: +(bits / median(serial.map((r) => r.wall)) / 1e6).toFixed(2),
        serialKernelMbitPerCpuSecond: +(bits / median(serial.map((r) => r.cpu)) / 1e6).toFixed(2),
        serialKernelIdentical: serialIdentical,
        ...referenceParams,
        loadAverage1m: os.loadavg()[0],
        goal: '>= 200 Mbit/s at QBER 2 % on the 2 cores', anchor: 'Yuan et al. 2018 EC module 55 Mbit/s',
      };
      results.push({
        name: `ldpc.decoder.q${(q * 100).toFixed(0)}pct.${size}`, value: +(bits / wall / 1e6).toFixed(2),
        unit: 'Mbit/s sifted key (wall, 2 cores)', better: 'higher', baseline, params,
      });
      console.error(`ldpc-decoder: q=${q} ${size} ${params.kernel}: ${(bits / wall / 1e6).toFixed(1)} Mbit/s wall, ${params.mbitPerCpuSecond} per CPU-s, iter ${params.meanIterations}, FER ${fails}/${nf}; serial ${params.serialKernelMbitPerS} / ${params.serialKernelMbitPerCpuSecond} (identical ${serialIdentical}); reference ${baseline ?? '-'} Mbit/s`);
    }
  }
  return results;
}
