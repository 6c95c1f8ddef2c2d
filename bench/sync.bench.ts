/**
 * `npm run bench -- sync`: Bob's clock sync.
 * - Detections per second through the locked sync's per-click path (indexing + tracking loop +
 *   pattern checks), native (native/core/src/sync_track.rs) vs the TypeScript reference
 *   (src/timing/tracker.ts) on the same tags in the same run (goal >= 1e8/s native).
 * - Time to lock (ps of data from the first tag), offset error (ps RMS over 10 samples of the
 *   locked state in the following 100 ms, against the emulator's truth) and drift error (ppm) at
 *   25, 50 and 100 km for offsets of +-1 ms and drifts of +-20 ppm (reference-decoy, 1 GHz).
 */
import { EmulatedLink } from '../src/lab/link.ts';
import { loadLinkPreset } from '../src/lab/presets.ts';
import { alicePatternFromSeed } from '../src/lab/pattern.ts';
import { ClockSync, type SyncEngine } from '../src/timing/sync.ts';
import type { TagBatch } from '../src/lab/types.ts';
import { median, medianCpuSeconds, medianSeconds, type BenchResult } from './stats.ts';

async function throughput(): Promise<BenchResult[]> {
  const seed = 78n;
  const preset = loadLinkPreset('reference-decoy', { clock: { offsetPs: 8e8, driftPpm: 17, jitterPs: 5 } });
  const link = new EmulatedLink(preset, { seed, distanceKm: 25 });
  const lockData: TagBatch[] = [];
  for (let i = 0; i < 8; i++) lockData.push(link.nextPulses(3e7).tags);
  const stream: TagBatch[] = [];
  for (let i = 0; i < 10; i++) stream.push(link.nextPulses(5e7).tags);
  const n = stream.reduce((a, b) => a + b.channel.length, 0);
  const locked = (engine: SyncEngine): ClockSync => {
    const s = new ClockSync({ repRateHz: 1e9, pattern: alicePatternFromSeed(link.preset, seed), engine });
    for (const b of lockData) s.push(b);
    if (!s.state().locked) throw new Error('sync bench: no lock on the lock data');
    return s;
  };
  const rate = async (engine: SyncEngine, repeats: number, clock: typeof medianSeconds): Promise<number> => {
    const copies = Array.from({ length: repeats + 1 }, () => locked(engine));
    let k = 0;
    return n / (await clock(() => { const s = copies[k++]; for (const b of stream) s.push(b); }, repeats));
  };
  const params = { preset: 'reference-decoy', distanceKm: 25, detections: n, batchTags: Math.round(n / stream.length), goal: 1e8, baselineIs: 'TypeScript reference tracker (same work)' };
  const nat = await rate('native', 7, medianSeconds);
  const ref = await rate('reference', 3, medianSeconds);
  const natCpu = await rate('native', 7, medianCpuSeconds);
  const refCpu = await rate('reference', 3, medianCpuSeconds);
  return [
    { name: 'sync.locked_throughput', value: nat, unit: 'detections/s', better: 'higher', baseline: ref, params },
    // One thread does this work: per CPU-second it is what a core sustains, whatever else runs.
    { name: 'sync.locked_throughput_cpu', value: natCpu, unit: 'detections per CPU-second', better: 'higher', baseline: refCpu, params },
  ];
}

function lockCase(distanceKm: number, offsetPs: number, driftPpm: number, seed: bigint): { lockMs: number; offsetRmsPs: number; driftErrPpm: number } {
  const preset = loadLinkPreset('reference-decoy', { clock: { offsetPs, driftPpm, jitterPs: 5 } });
  const link = new EmulatedLink(preset, { seed, distanceKm });
  const sync = new ClockSync({ repRateHz: 1e9, pattern: alicePatternFromSeed(link.preset, seed) });
  for (let i = 0; i < 40 && !sync.state().locked; i++) sync.push(link.nextPulses(1e7).tags);
  const s0 = sync.state();
  if (!s0.locked) return { lockMs: NaN, offsetRmsPs: NaN, driftErrPpm: NaN };
  let sq = 0, dmax = 0;
  for (let k = 0; k < 10; k++) {
    sync.push(link.nextPulses(1e7).tags);
    const s = sync.state();
    const e = s.offsetPs - link.expectedTagTimePs(0, s.refChannel);
    sq += e * e;
    dmax = Math.max(dmax, Math.abs(s.driftPpm - driftPpm));
  }
  return { lockMs: s0.timeToLockPs! / 1e9, offsetRmsPs: Math.sqrt(sq / 10), driftErrPpm: dmax };
}

export async function run(): Promise<BenchResult[]> {
  const out: BenchResult[] = await throughput();
  for (const distanceKm of [25, 50, 100]) {
    const cases = [[1e9, 20, 1n], [-1e9, -20, 2n], [1e9, -20, 3n], [-1e9, 20, 4n]] as const;
    const r = cases.map(([o, d, s]) => lockCase(distanceKm, o, d, s + BigInt(distanceKm)));
    const params = { preset: 'reference-decoy', distanceKm, cases: cases.map(([o, d]) => `${o / 1e9} ms, ${d} ppm`), limitMs: 150 };
    out.push({ name: `sync.time_to_lock_${distanceKm}km`, value: Math.max(...r.map((x) => x.lockMs)), unit: 'ms of data (worst case)', better: 'lower', params: { ...params, each: r.map((x) => x.lockMs) } });
    out.push({ name: `sync.offset_error_${distanceKm}km`, value: median(r.map((x) => x.offsetRmsPs)), unit: 'ps RMS (median of cases)', better: 'lower', params: { ...params, each: r.map((x) => x.offsetRmsPs) } });
    out.push({ name: `sync.drift_error_${distanceKm}km`, value: Math.max(...r.map((x) => x.driftErrPpm)), unit: 'ppm (worst case)', better: 'lower', params: { ...params, each: r.map((x) => x.driftErrPpm) } });
  }
  return out;
}
