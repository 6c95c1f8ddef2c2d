/**
 * The main job as a user runs it: `qkd run --emulated` (Alice's and Bob's node processes, two
 * reference KMSs, the emulated lab behind the tagger's wire protocol, ZeroMQ, sync, the whole
 * post-processing, ETSI 004 delivery) for a fixed wall time, 25 km reference-decoy, seed fixed.
 * Reported per wall second of the whole run including start and stop, and in steady state (between
 * Bob's first and last block; this machine, shared): detections processed, secret bits delivered
 * and key chunks acknowledged by both KMSs; plus the emulated fraction of real time (a 1 GHz
 * source) and the secret key rate per pulse. Median over QKD_LINK_BENCH_REPEATS runs (default 1:
 * each run is ≈ 90 s + start and stop); QKD_LINK_BENCH_SECONDS sets the run length.
 * No baseline: there is no slow reference of the whole link; each stage's bench carries its own.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, type BenchResult } from './stats.ts';
import type { LinkSummary } from '../src/node/summary.ts';

const qkd = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'qkd.js');
const SECONDS = Number(process.env.QKD_LINK_BENCH_SECONDS ?? 90);
const REPEATS = Number(process.env.QKD_LINK_BENCH_REPEATS ?? 1);
const ARGS = ['--distance-km', '25', '--seed', '12345', '--speed', '1000', '--block-detections', '10000000'];

type Summary = LinkSummary;

/**
 * Steady state from Bob's node log: detections of the blocks after the first, over the wall time
 * between the first and the last block (start-up, sync acquisition and stop left out).
 */
function steadyState(logFile: string): { detectionsPerSecond: number; secretBitsPerSecond: number } | undefined {
  const blocks = readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"msg":"block"'))
    .map((l) => JSON.parse(l) as { ts: string; secretBits: number });
  if (blocks.length < 3) return undefined;
  const dt = (Date.parse(blocks[blocks.length - 1].ts) - Date.parse(blocks[0].ts)) / 1000;
  const later = blocks.slice(1);
  return { detectionsPerSecond: (later.length * 1e7) / dt, secretBitsPerSecond: later.reduce((a, b) => a + b.secretBits, 0) / dt };
}

function runOnce(): Promise<Summary & { steady?: ReturnType<typeof steadyState> }> {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-link-bench-'));
  const p = spawn(process.execPath, [qkd, 'run', '--emulated', '--json', '--dashboard-port', '0', '--state-dir', join(dir, 'state'),
    '--duration', String(SECONDS), ...ARGS], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  return new Promise((resolve, reject) => p.on('exit', (code) => {
    try {
      if (code !== 0) reject(new Error(`qkd run exited with ${code}`));
      else resolve({ ...(JSON.parse(out) as Summary), steady: steadyState(join(dir, 'state', 'logs', 'node-bob.log')) });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }));
}

export async function run(): Promise<BenchResult[]> {
  const runs: (Summary & { steady?: ReturnType<typeof steadyState> })[] = [];
  for (let i = 0; i < REPEATS; i++) runs.push(await runOnce());
  const params = { distanceKm: 25, preset: 'reference-decoy', blockDetections: 1e7, durationS: SECONDS, repeats: REPEATS,
    blocksVerified: runs.map((r) => r.blocks.verified), qber: median(runs.map((r) => r.qber ?? NaN)),
    f: median(runs.map((r) => r.reconciliationEfficiency ?? NaN)), wallSeconds: runs.map((r) => r.wallSeconds) };
  const per = (f: (r: Summary) => number) => median(runs.map((r) => f(r) / r.wallSeconds));
  const steady = runs.map((r) => r.steady).filter((x) => x !== undefined);
  const steadyResults: BenchResult[] = steady.length ? [
    { name: 'link.steady.detections_per_wall_second', value: median(steady.map((x) => x.detectionsPerSecond)), unit: 'detections/s',
      better: 'higher', params: { ...params, note: 'between the first and the last block of a run (start and stop left out)' } },
    { name: 'link.steady.secret_bits_per_wall_second', value: median(steady.map((x) => x.secretBitsPerSecond)), unit: 'bit/s',
      better: 'higher', params: { ...params, note: 'between the first and the last block of a run (start and stop left out)' } },
  ] : [];
  return [
    ...steadyResults,
    { name: 'link.detections_per_wall_second', value: per((r) => r.detections), unit: 'detections/s', better: 'higher', params },
    { name: 'link.secret_bits_per_wall_second', value: per((r) => r.secretBits), unit: 'bit/s', better: 'higher', params },
    { name: 'link.key_chunks_acked_per_wall_second', value: per((r) => Math.min(r.keysDelivered.alice, r.keysDelivered.bob)),
      unit: 'chunks/s', better: 'higher', params: { ...params, chunkBytes: 32 } },
    { name: 'link.emulated_fraction_of_real_time', value: per((r) => r.emulatedSeconds), unit: 'emulated s per wall s',
      better: 'higher', params },
    { name: 'link.secret_key_rate_per_pulse', value: median(runs.map((r) => r.secretKeyRate.perPulse ?? 0)), unit: 'bit/pulse',
      better: 'higher', params },
  ];
}
