/**
 * The main job as a user runs it: `qkd run --emulated` (Alice's and Bob's node processes, two
 * reference KMSs, the emulated lab behind the tagger's wire protocol, ZeroMQ, sync, the whole
 * post-processing, ETSI 004 delivery) for a fixed wall time, 25 km reference-decoy, seed fixed.
 * Reported per wall second (this machine, shared): detections processed, secret bits delivered
 * and key chunks acknowledged by both KMSs; plus the emulated fraction of real time (a 1 GHz
 * source) and the secret key rate per pulse. Median over QKD_LINK_BENCH_REPEATS runs (default 1:
 * each run is ≈ 90 s + start and stop); QKD_LINK_BENCH_SECONDS sets the run length.
 * No baseline: there is no slow reference of the whole link; each stage's bench carries its own.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, type BenchResult } from './stats.ts';

const qkd = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'qkd.js');
const SECONDS = Number(process.env.QKD_LINK_BENCH_SECONDS ?? 90);
const REPEATS = Number(process.env.QKD_LINK_BENCH_REPEATS ?? 1);
const ARGS = ['--distance-km', '25', '--seed', '12345', '--speed', '1000', '--block-detections', '10000000'];

interface Summary {
  wallSeconds: number;
  emulatedSeconds: number;
  detections: number;
  pulses: number;
  secretBits: number;
  qber: number;
  reconciliationEfficiency: number;
  blocks: { verified: number; aborted: number };
  keysDelivered: { alice: number; bob: number };
  secretKeyRate: { perPulse: number | null };
}

function runOnce(): Promise<Summary> {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-link-bench-'));
  const p = spawn(process.execPath, [qkd, 'run', '--emulated', '--json', '--dashboard-port', '0', '--state-dir', join(dir, 'state'),
    '--duration', String(SECONDS), ...ARGS], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  return new Promise((resolve, reject) => p.on('exit', (code) => {
    rmSync(dir, { recursive: true, force: true });
    if (code !== 0) reject(new Error(`qkd run exited with ${code}`));
    else resolve(JSON.parse(out) as Summary);
  }));
}

export async function run(): Promise<BenchResult[]> {
  const runs: Summary[] = [];
  for (let i = 0; i < REPEATS; i++) runs.push(await runOnce());
  const params = { distanceKm: 25, preset: 'reference-decoy', blockDetections: 1e7, durationS: SECONDS, repeats: REPEATS,
    blocksVerified: runs.map((r) => r.blocks.verified), qber: median(runs.map((r) => r.qber)),
    f: median(runs.map((r) => r.reconciliationEfficiency)), wallSeconds: runs.map((r) => r.wallSeconds) };
  const per = (f: (r: Summary) => number) => median(runs.map((r) => f(r) / r.wallSeconds));
  return [
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
