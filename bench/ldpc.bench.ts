/**
 * LDPC reconciliation figures (docs/ldpc.md):
 *  - per QBER point (1, 2, 3, 5, 8 %) and frame size: efficiency f = counted leak / (k·h(QBER))
 *    averaged over frames (syndrome − punctured + every revealed bit of every retry), first-pass
 *    frame error rate, final frame error rate after the blind retries (a frame still failing
 *    after `maxRounds` rounds, or converged to a word other than Alice's; before verification),
 *    round trips per frame, and the median over batches of the decoding throughput (Mbit/s of
 *    sifted key, retries included);
 *  - decoder throughput at QBER 2 % with all frames in one batch on the 2 cores (wall and per
 *    CPU-second) and the f64 sum-product reference decoder on one of the same frames as baseline.
 * Modes: 'blind' = chooseBlind (the plan docs/ldpc.md recommends); 'oneshot' = chooseCode's
 * default target (low first-pass FER) with retries of 0.025·k·h(Q) bits. Blind retries use
 * blindRetrySettings (1.5×QBER from round 4, the f64 reference from round 8: the 8-bit decoder's
 * stuck frames); LDPC_BENCH_RESCUE=0 turns that off, LDPC_BENCH_RESCUE=node does what the node
 * does (src/node/postprocess.ts: 1.5×QBER from round 4, never the f64 reference, ≈ 16 CPU-s
 * per 2^18 frame).
 * Env: LDPC_BENCH_FRAMES (frames per point, default 256; the docs' final figures use 3000),
 * LDPC_BENCH_SIZES (log2 of the mother length, comma separated, default 18; 20 adds the 2^20
 * frames, run with LDPC_BENCH_FRAMES_20, default 64; empty = throughput only), LDPC_BENCH_MODES (default 'blind'),
 * LDPC_BENCH_QBERS (percent, default 1,2,3,5,8), LDPC_BENCH_THROUGHPUT=0 skips the throughput part,
 * LDPC_BENCH_BATCH (frames per block, default 64),
 * LDPC_BENCH_VARIANTS (default 'cold,warm'; also 'cold+stall', 'warm+stall'): how Bob retries —
 * cold re-decodes a failed frame from the channel values (the reference path), warm resumes from
 * the previous round's messages (decodeBatch `warm`), +stall adds the early give-up rule
 * LDPC_BENCH_STALL (from,every,drop‰; default 10,5,100). The variants run block by block on the
 * same frames, alternating, so a loaded machine slows them alike; each reports f, FERs, round
 * trips, the median over blocks of Mbit/s of sifted key per wall second (retries included) and
 * the CPU seconds it used.
 * LDPC_BENCH_DRIFT (default 0): as in the node, plan each block from a QBER estimate that moves a
 * little from block to block (the previous block's measured QBER): block b uses
 * q·(1 + DRIFT·sin(1.7·b)) for chooseBlind and the decoder (the channel stays q), so its
 * parameters — punctured/shortened split, frozen positions — differ from the last block's, as in a
 * run; with 0 every block repeats the same plan and the decoder's per-plan caches always hit.
 */
import {
  binaryEntropy, blindRetrySettings, chooseBlind, chooseCode, decodeBatch, encodeBatch, joinBits, reveal, WarmStore, type CodeChoice,
  type DecodeOptions,
} from '../src/core/ldpc.ts';
import { bsc, randomBits, seededRandom } from '../src/testkit/ldpc.ts';
import { median, type BenchResult } from './stats.ts';

const BATCH = Number(process.env.LDPC_BENCH_BATCH ?? 64);
const MAX_ROUNDS = 60;

interface Plan { choice: CodeChoice; stepBits: number; rescue: boolean | 'node' }

function plan(mode: string, q: number, frameBits: number): Plan {
  if (mode === 'blind') {
    const b = chooseBlind(q, frameBits);
    const r = process.env.LDPC_BENCH_RESCUE;
    return { choice: b, stepBits: b.stepBits, rescue: r === 'node' ? 'node' : r !== '0' };
  }
  const choice = chooseCode(q, frameBits);
  return { choice, stepBits: Math.ceil(0.025 * choice.keyBits * binaryEntropy(q)), rescue: false };
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** How Bob retries: warm start and/or the stall rule. */
interface Variant { name: string; warm: boolean; stall?: DecodeOptions['stall'] }

function variant(name: string): Variant {
  const [from, every, minDropPerMille] = (process.env.LDPC_BENCH_STALL ?? '10,5,100').split(',').map(Number);
  const v: Variant = { name, warm: name.startsWith('warm'), stall: name.endsWith('+stall') ? { from, every, minDropPerMille } : undefined };
  if (!['cold', 'warm', 'cold+stall', 'warm+stall'].includes(name)) throw new Error(`LDPC_BENCH_VARIANTS: unknown variant ${name}`);
  return v;
}

interface Block { alice: Uint8Array[]; bob: Uint8Array[]; enc: Array<{ syndrome: Uint8Array; fill: Uint8Array }> }

async function makeBlock(p: Plan, q: number, frames: number, seed: number): Promise<Block> {
  const { choice } = p;
  const rand = seededRandom(seed);
  const alice = Array.from({ length: frames }, () => randomBits(rand, choice.keyBits));
  const bob = alice.map((a) => bsc(rand, a, choice.keyBits, q).out);
  return { alice, bob, enc: await encodeBatch(alice, choice.params) };
}

/** One block: first pass, then retry rounds for the frames still failing. */
async function reconcileBatch(p: Plan, q: number, blk: Block, v: Variant) {
  const { choice, stepBits } = p;
  const { alice, bob, enc } = blk;
  const frames = alice.length;
  const store = v.warm ? new WarmStore() : undefined;
  const ids = alice.map((_, i) => i);
  const opts = (sel: number[]) => ({ stall: v.stall, warm: store && { store, frameIds: sel.map((i) => ids[i]) } });
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const first = await decodeBatch(bob, enc.map((e) => e.syndrome), q, choice.params, opts(ids));
  const leak = first.map((r) => r.leakBits);
  const ok = first.map((r, i) => r.converged && equal(r.corrected, alice[i]));
  const revealed: Uint8Array[] = first.map(() => new Uint8Array(0));
  let pending = first.map((r, i) => (r.converged ? -1 : i)).filter((i) => i >= 0);
  const firstFails = pending.length;
  let count = 0;
  let roundTrips = 0;
  for (let round = 1; round <= MAX_ROUNDS && pending.length > 0 && count + stepBits <= choice.keyBits; round++) {
    for (const i of pending) {
      revealed[i] = joinBits(revealed[i], count, reveal(alice[i], enc[i].fill, choice.params, count, stepBits), stepBits);
    }
    count += stepBits;
    roundTrips += pending.length;
    const set = p.rescue ? blindRetrySettings(q, round) : { qber: q, kernel: 'auto' as const };
    if (p.rescue === 'node' && set.kernel === 'reference') set.kernel = 'auto';
    const res = await decodeBatch(pending.map((i) => bob[i]), pending.map((i) => enc[i].syndrome), set.qber, choice.params, {
      revealedCount: count, revealedPerFrame: pending.map((i) => revealed[i]), kernel: set.kernel, ...opts(pending),
    });
    pending.forEach((i, j) => {
      leak[i] = res[j].leakBits;
      ok[i] = res[j].converged && equal(res[j].corrected, alice[i]);
    });
    pending = pending.filter((_, j) => !res[j].converged);
  }
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  const cu = process.cpuUsage(c0);
  store?.close();
  return {
    wallS, cpuS: (cu.user + cu.system) / 1e6,
    leak: leak.reduce((a, b) => a + b, 0),
    firstFails,
    finalFails: ok.filter((x) => !x).length,
    wrong: ok.filter((x, i) => !x && !pending.includes(i)).length,
    roundTrips,
    iterations: first.reduce((s, r) => s + r.iterations, 0),
    mbitPerS: (frames * choice.keyBits) / wallS / 1e6,
  };
}

async function efficiencyPoint(mode: string, q: number, log2n: number, frames: number, variants: Variant[]): Promise<BenchResult[]> {
  const n = 2 ** log2n;
  const p = plan(mode, q, n - Math.floor(n / 10));
  const { choice } = p;
  const acc = variants.map(() => ({ leak: 0, firstFails: 0, finalFails: 0, wrong: 0, roundTrips: 0, iterations: 0, wallS: 0, cpuS: 0, rates: [] as number[] }));
  const drift = Number(process.env.LDPC_BENCH_DRIFT ?? 0);
  for (let done = 0, b = 0; done < frames; b++) {
    const size = Math.min(BATCH, frames - done);
    const qPlan = q * (1 + drift * Math.sin(1.7 * b));
    const pb = drift ? plan(mode, qPlan, n - Math.floor(n / 10)) : p;
    const blk = await makeBlock(pb, q, size, 7919 * b + Math.round(q * 1e4) + log2n);
    // Alternate which variant goes first, so a change of load hits each alike.
    for (let j = 0; j < variants.length; j++) {
      const k = (j + b) % variants.length;
      const r = await reconcileBatch(pb, qPlan, blk, variants[k]);
      const a = acc[k];
      a.leak += r.leak; a.firstFails += r.firstFails; a.finalFails += r.finalFails; a.wrong += r.wrong; a.roundTrips += r.roundTrips;
      a.iterations += r.iterations; a.wallS += r.wallS; a.cpuS += r.cpuS;
      a.rates.push(r.mbitPerS);
    }
    done += size;
  }
  const hk = choice.keyBits * binaryEntropy(q);
  const load = (await import('node:os')).loadavg()[0];
  return variants.map((v, k) => {
    const a = acc[k];
    const f = a.leak / (frames * hk);
    const params = {
      mode, variant: v.name, stall: v.stall, rescue: p.rescue, qber: q, qberEstimateDrift: drift, log2n, keyBitsPerFrame: choice.keyBits, frames, framesPerBlock: BATCH,
      code: choice.params, stepBits: p.stepBits,
      fFirstAttempt: +(choice.leakBits / hk).toFixed(4), firstPassFer: `${a.firstFails}/${frames}`, finalFer: `${a.finalFails}/${frames}`,
      finalFerValue: a.finalFails / frames, finalWrongConverged: a.wrong, roundTripsPerFrame: +(a.roundTrips / frames).toFixed(3),
      meanIterationsFirstPass: +(a.iterations / frames).toFixed(1), maxRounds: MAX_ROUNDS,
      medianThroughputMbitPerS: +median(a.rates).toFixed(2),
      mbitPerCpuSecond: +((frames * choice.keyBits) / a.cpuS / 1e6).toFixed(2),
      wallSeconds: +a.wallS.toFixed(1), cpuSeconds: +a.cpuS.toFixed(1), loadAverage1m: load,
      goal: 'f <= 1.05 at final FER <= 1e-3; >= 100 Mbit/s per wall second at 2 % on 2 cores, retries included',
      anchor: 'rate-adaptive LDPC f = 1.08-1.11 at FER <= 1e-3, ~1e6-bit frames (shorter 1.17-1.27); Cascade 1.038',
    };
    console.error(`ldpc: ${mode}/${v.name} q=${q} 2^${log2n} f=${f.toFixed(4)} FER1=${a.firstFails}/${frames} final=${a.finalFails}/${frames} (wrong ${a.wrong}) rt/frame=${params.roundTripsPerFrame} ${params.medianThroughputMbitPerS} Mbit/s (median per block) ${params.mbitPerCpuSecond} Mbit/CPU-s cpu=${params.cpuSeconds}s load=${load.toFixed(1)}`);
    const tag = v.name === 'cold' ? mode : `${mode}-${v.name.replace('+', '-')}`;
    return { name: `ldpc.efficiency.${tag}.q${(q * 100).toFixed(0)}pct.n2e${log2n}`, value: +f.toFixed(4), unit: 'f (counted leak incl. retries / k·h(Q))', better: 'lower', params };
  });
}

async function timed<T>(fn: () => Promise<T>): Promise<{ wall: number; cpu: number }> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1e6 };
}

async function throughput(bits: number, nf: number): Promise<BenchResult> {
  const q = 0.02;
  const rand = seededRandom(4242 + bits);
  const choice = chooseCode(q, bits);
  const alice = Array.from({ length: nf }, () => randomBits(rand, choice.keyBits));
  const bob = alice.map((a) => bsc(rand, a, choice.keyBits, q).out);
  const synd = (await encodeBatch(alice, choice.params)).map((e) => e.syndrome);
  const runs: Array<{ wall: number; cpu: number }> = [];
  await decodeBatch(bob, synd, q, choice.params); // warm-up (also builds the code)
  for (let i = 0; i < 5; i++) runs.push(await timed(() => decodeBatch(bob, synd, q, choice.params)));
  const bitsTotal = nf * choice.keyBits;
  const wall = median(runs.map((x) => x.wall));
  const cpu = median(runs.map((x) => x.cpu));
  // Baseline: the f64 sum-product reference on one of the same frames (~1000x slower).
  const ref = await timed(() => decodeBatch([bob[0]], [synd[0]], q, choice.params, { kernel: 'reference' }));
  return {
    name: `ldpc.throughput.q2pct.k${choice.keyBits}`, value: +(bitsTotal / wall / 1e6).toFixed(2), unit: 'Mbit/s sifted key (wall)', better: 'higher',
    baseline: +(choice.keyBits / ref.wall / 1e6).toFixed(4),
    params: { qber: q, frames: nf, keyBitsPerFrame: choice.keyBits, code: choice.params, medianWallS: wall, medianCpuS: cpu,
      mbitPerCpuSecond: +(bitsTotal / cpu / 1e6).toFixed(2), baselineMbitPerCpuSecond: +(choice.keyBits / ref.cpu / 1e6).toFixed(4),
      referenceFrames: 1, loadAverage1m: (await import('node:os')).loadavg()[0],
      goal: '>= 200 Mbit/s on 2 cores', anchor: '2018 system EC module 55 Mbit/s; Cascade 570 Mbit/s at f 1.038' },
  };
}

export async function run(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const env = process.env;
  const frames = Number(env.LDPC_BENCH_FRAMES ?? 256);
  const frames20 = Number(env.LDPC_BENCH_FRAMES_20 ?? 64);
  const list = (v: string) => v.split(',').filter((x) => x !== '');
  const sizes = list(env.LDPC_BENCH_SIZES ?? '18').map(Number);
  const modes = list(env.LDPC_BENCH_MODES ?? 'blind');
  const qbers = list(env.LDPC_BENCH_QBERS ?? '1,2,3,5,8').map((x) => Number(x) / 100);
  const variants = list(env.LDPC_BENCH_VARIANTS ?? 'cold,warm').map(variant);
  for (const log2n of sizes) {
    for (const mode of modes) {
      for (const q of qbers) results.push(...await efficiencyPoint(mode, q, log2n, log2n >= 20 ? frames20 : frames, variants));
    }
  }
  if (env.LDPC_BENCH_THROUGHPUT !== '0') {
    // Throughput: 2^16 frames and 2^14 frames (whose working set stays in cache).
    results.push(await throughput(60000, 128), await throughput(15000, 512));
  }
  return results;
}
