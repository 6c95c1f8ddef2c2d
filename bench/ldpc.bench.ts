/**
 * LDPC reconciliation figures (docs/ldpc.md):
 *  - efficiency f = counted leak / (k·h(QBER)) at QBER 1, 2, 3, 5, 8 % with chooseCode's default
 *    rate adaptation, the first-pass frame error rate (before any retry), and f after blind
 *    retries (every revealed bit counted; frames decoded until all converge);
 *  - decoder throughput (Mbit/s of sifted key) at QBER 2 % with all frames decoded concurrently
 *    on the 2 cores, wall clock and per CPU-second (the machine is shared), and the f64
 *    sum-product reference decoder on the same frames as baseline.
 * Env: LDPC_BENCH_FRAMES (default 128 frames per QBER point), LDPC_BENCH_BITS (default 60000:
 * the 2^16 mother codes, 58983 key bits per frame), LDPC_BENCH_LONG=1 adds a 2^20 point.
 */
import {
  binaryEntropy, chooseCode, decodeBatch, encodeBatch, joinBits, reveal, type CodeChoice, type EncodeResult,
} from '../src/core/ldpc.ts';
import { bsc, randomBits, seededRandom } from '../src/testkit/ldpc.ts';
import { median, type BenchResult } from './stats.ts';

interface Point {
  choice: CodeChoice;
  alice: Uint8Array[];
  bob: Uint8Array[];
  enc: EncodeResult[];
}

async function makePoint(q: number, frameBits: number, frames: number, seed: number): Promise<Point> {
  const rand = seededRandom(seed);
  const choice = chooseCode(q, frameBits);
  const alice = Array.from({ length: frames }, () => randomBits(rand, choice.keyBits));
  const bob = alice.map((a) => bsc(rand, a, choice.keyBits, q).out);
  const enc = await encodeBatch(alice, choice.params);
  return { choice, alice, bob, enc };
}

/** First pass, then blind retries (1 % of k per round trip) on the failed frames. */
async function reconcile(p: Point, q: number) {
  const { choice } = p;
  const first = await decodeBatch(p.bob, p.enc.map((e) => e.syndrome), q, choice.params);
  const firstFails = first.filter((r) => !r.converged).length;
  let leak = first.reduce((s, r) => s + r.leakBits, 0);
  let roundTrips = 0;
  let lost = 0;
  const step = Math.ceil(choice.keyBits / 100);
  for (let i = 0; i < first.length; i++) {
    if (first[i].converged) continue;
    let count = 0;
    let bits: Uint8Array = new Uint8Array(0);
    let ok = false;
    leak -= first[i].leakBits;
    let frameLeak = first[i].leakBits;
    while (!ok && count + step <= choice.keyBits) {
      bits = joinBits(bits, count, reveal(p.alice[i], p.enc[i].fill, choice.params, count, step), step);
      count += step;
      roundTrips++;
      const [r] = await decodeBatch([p.bob[i]], [p.enc[i].syndrome], q, choice.params, {
        revealedCount: count, revealedPerFrame: [bits],
      });
      ok = r.converged;
      frameLeak = r.leakBits;
    }
    if (!ok) lost++;
    leak += frameLeak;
  }
  const frames = first.length;
  return {
    fFirst: (choice.leakBits) / (choice.keyBits * binaryEntropy(q)),
    fAfterRetries: leak / (frames * choice.keyBits * binaryEntropy(q)),
    ferFirstPass: firstFails / frames,
    ferAfterRetries: lost / frames,
    roundTripsPerFrame: roundTrips / frames,
    meanIterations: first.reduce((s, r) => s + r.iterations, 0) / frames,
  };
}

async function timed<T>(fn: () => Promise<T>): Promise<{ wall: number; cpu: number }> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1e6 };
}

export async function run(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const frames = Number(process.env.LDPC_BENCH_FRAMES ?? 128);
  const frameBits = Number(process.env.LDPC_BENCH_BITS ?? 60000);
  const points: Array<[number, number]> = [[0.01, frameBits], [0.02, frameBits], [0.03, frameBits], [0.05, frameBits], [0.08, frameBits]];
  if (process.env.LDPC_BENCH_LONG === '1') points.push([0.02, 1_000_000]);
  for (const [q, bits] of points) {
    const n = bits > 500_000 ? Math.min(frames, 16) : frames;
    const p = await makePoint(q, bits, n, Math.round(q * 1e4) + bits);
    const r = await reconcile(p, q);
    const params = {
      qber: q, keyBitsPerFrame: p.choice.keyBits, frames: n, code: p.choice.params,
      fBeforeRetries: +r.fFirst.toFixed(4), ferFirstPass: r.ferFirstPass, ferAfterRetries: r.ferAfterRetries,
      roundTripsPerFrame: +r.roundTripsPerFrame.toFixed(3), meanIterations: +r.meanIterations.toFixed(1),
      anchor: 'rate-adaptive LDPC f = 1.08-1.11 at FER <= 1e-3, ~1e6-bit frames; goal f <= 1.05',
    };
    results.push({ name: `ldpc.efficiency.q${(q * 100).toFixed(0)}pct.k${p.choice.keyBits}`, value: +r.fAfterRetries.toFixed(4), unit: 'f (leak incl. retries / k·h(Q))', better: 'lower', params });
    console.error(`ldpc: q=${q} k=${p.choice.keyBits} f_first=${r.fFirst.toFixed(3)} FER_first=${r.ferFirstPass} f_final=${r.fAfterRetries.toFixed(3)} lost=${r.ferAfterRetries} rt/frame=${r.roundTripsPerFrame.toFixed(2)}`);
  }

  // Throughput at QBER 2 %: all frames in one concurrent batch (rayon on both cores).
  const q = 0.02;
  const p = await makePoint(q, frameBits, frames, 4242);
  const synd = p.enc.map((e) => e.syndrome);
  const runs: Array<{ wall: number; cpu: number }> = [];
  await decodeBatch(p.bob, synd, q, p.choice.params); // warm-up (also builds the code)
  for (let i = 0; i < 5; i++) runs.push(await timed(() => decodeBatch(p.bob, synd, q, p.choice.params)));
  const bitsTotal = frames * p.choice.keyBits;
  const wall = median(runs.map((x) => x.wall));
  const cpu = median(runs.map((x) => x.cpu));
  // Baseline: the f64 sum-product reference on one of the same frames (it is ~1000x slower).
  const ref = await timed(() => decodeBatch([p.bob[0]], [synd[0]], q, p.choice.params, { kernel: 'reference' }));
  const refMbps = p.choice.keyBits / ref.wall / 1e6;
  results.push({
    name: 'ldpc.throughput.q2pct', value: +(bitsTotal / wall / 1e6).toFixed(2), unit: 'Mbit/s sifted key (wall)', better: 'higher',
    baseline: +refMbps.toFixed(4),
    params: { qber: q, frames, keyBitsPerFrame: p.choice.keyBits, code: p.choice.params, medianWallS: wall, medianCpuS: cpu,
      mbitPerCpuSecond: +(bitsTotal / cpu / 1e6).toFixed(2), referenceFrames: 1, goal: '>= 200 Mbit/s on 2 cores',
      anchor: '2018 system EC module 55 Mbit/s; Cascade 570 Mbit/s at f 1.038' },
  });
  results.push({
    name: 'ldpc.throughput.q2pct.per-cpu-second', value: +(bitsTotal / cpu / 1e6).toFixed(2), unit: 'Mbit/s per CPU-second', better: 'higher',
    baseline: +(p.choice.keyBits / ref.cpu / 1e6).toFixed(4), params: { qber: q, frames, keyBitsPerFrame: p.choice.keyBits },
  });
  return results;
}
