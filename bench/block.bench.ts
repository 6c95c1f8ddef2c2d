/**
 * End to end as the node does it, both parties in one process: one block of detections from the
 * emulated lab (25 km reference-decoy; pulse indices from the emulator's truth, as after the sync)
 * through Bob's and Alice's post-processing dialogue (src/node/postprocess.ts: sifting, decoy
 * estimation, the blind LDPC plan with its reveal rounds, verification, finite-key length, Toeplitz
 * PA) with Bob's requests answered by Alice's handler directly (no channel, no MAC).
 * Reported (median over QKD_BLOCK_BENCH_REPEATS, default 3): secret bits per wall second and per
 * process-CPU second of the whole chain, detections per second, f (counted leak), and the ratio of
 * the finite-key length ℓ to the asymptotic key of the same pulses (decoy model at the measured f,
 * src/lab/theory.ts: infinite decoys and statistics). Block size QKD_BLOCK_BENCH_DETECTIONS
 * (default 1e7, the run bench's blocks), LDPC frames of 2^18. Stage times per block are printed.
 * No baseline: each stage's own bench carries its reference.
 */
import { loadLinkPreset } from '../src/lab/presets.ts';
import { EmulatedLink } from '../src/lab/link.ts';
import { defaultBobSeed } from '../src/lab/alice.ts';
import { decoyModel } from '../src/lab/theory.ts';
import { AlicePostProcessor, BobPostProcessor, DEFAULT_BLOCK_CONFIG, type BlockResult } from '../src/node/postprocess.ts';
import { aliceChoicesAt } from '../src/node/alice.ts';
import { siftMapping, toSiftChannels } from '../src/node/detections.ts';
import { prepareCodes } from '../src/core/ldpc.ts';
import { median, type BenchResult } from './stats.ts';

const DETECTIONS = Number(process.env.QKD_BLOCK_BENCH_DETECTIONS ?? 1e7);
const REPEATS = Number(process.env.QKD_BLOCK_BENCH_REPEATS ?? 3);
const KM = 25;

/** `n` detections (sorted by pulse) and the pulses they span. */
function detections(seed: bigint, n: number) {
  const preset = loadLinkPreset('reference-decoy', { distanceKm: KM });
  const link = new EmulatedLink(preset, { seed });
  let pulse = new Float64Array(n + (1 << 20));
  let channel = new Uint8Array(pulse.length);
  let k = 0;
  let pulses = 0;
  while (k < n) {
    const b = link.nextPulses(1e8);
    pulses += 1e8;
    if (k + b.truthSlot.length > pulse.length) {
      const p2 = new Float64Array(2 * (k + b.truthSlot.length)); p2.set(pulse.subarray(0, k)); pulse = p2;
      const c2 = new Uint8Array(p2.length); c2.set(channel.subarray(0, k)); channel = c2;
    }
    pulse.set(b.truthSlot, k);
    channel.set(b.tags.channel, k);
    k += b.truthSlot.length;
  }
  // Tags come in time order; the core wants pulse order (stable on ties).
  const order = Array.from({ length: k }, (_, i) => i).sort((a, b) => pulse[a] - pulse[b] || a - b);
  const p = Float64Array.from(order, (i) => pulse[i]);
  const c = toSiftChannels(preset, defaultBobSeed(seed), p, Uint8Array.from(order, (i) => channel[i]));
  return { preset, pulse: p, channel: c, pulses };
}

export async function run(): Promise<BenchResult[]> {
  const seed = 31337n;
  const d = detections(seed, DETECTIONS);
  const { preset } = d;
  const config = {
    ...DEFAULT_BLOCK_CONFIG,
    frameBits: 235930,
    security: { epsSec: 1e-10, epsCor: 1e-15, qberAbort: 0.11 },
    settings: { mu: [preset.intensities.signal, preset.intensities.decoy, preset.intensities.vacuum] as [number, number, number],
      pMu: [preset.intensityProbs.signal, preset.intensityProbs.decoy, preset.intensityProbs.vacuum] as [number, number, number] },
  };
  // As the node does at start: the LDPC codes of the frame size are built before the first block.
  await prepareCodes(config.frameBits);
  const wall: number[] = [], cpu: number[] = [], ell: number[] = [], f: number[] = [];
  let last: BlockResult | undefined;
  for (let r = 0; r < REPEATS; r++) {
    const alice = new AlicePostProcessor({ config, choicesAt: aliceChoicesAt(preset, seed), authBitsConsumed: () => 0, onOutput: () => undefined });
    const bob = new BobPostProcessor({ config, mapping: siftMapping(preset), request: async (type, p) => alice.handle(type, p) });
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const res = await bob.processBlock(r + 1, d.pulse, d.channel);
    wall.push(Number(process.hrtime.bigint() - t0) / 1e9);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1e6);
    if (!res.report.verified || !res.report.statement) throw new Error(`bench block not verified: ${res.report.abortReason}`);
    ell.push(res.report.statement.ell);
    f.push(res.report.reconciliationEfficiency ?? NaN);
    if (res.output) res.output.deliverable.fill(0);
    last = res;
    console.error(`  block ${r + 1}: ℓ = ${res.report.statement.ell}, f = ${res.report.reconciliationEfficiency?.toFixed(3)}, ${wall[r].toFixed(1)} s wall, ${cpu[r].toFixed(1)} s CPU, stages ms ${JSON.stringify(res.report.stageMs)}`);
  }
  const L = median(ell);
  const fm = median(f);
  const asym = decoyModel(preset, KM, { f: fm }).asymptoticKeyRatePerPulse * d.pulses;
  const params = { preset: 'reference-decoy', distanceKm: KM, detections: d.pulse.length, pulses: d.pulses, frameBits: 235930, epsSec: 1e-10, epsCor: 1e-15,
    qberZ: last!.report.qberZ, repeats: REPEATS };
  return [
    { name: 'block.secret_bits_per_wall_second', value: L / median(wall), unit: 'bit/s', better: 'higher', params },
    { name: 'block.secret_bits_per_cpu_second', value: L / median(cpu), unit: 'bit/CPU-s', better: 'higher', params },
    { name: 'block.detections_per_wall_second', value: d.pulse.length / median(wall), unit: 'detections/s', better: 'higher', params },
    { name: 'block.reconciliation_efficiency', value: fm, unit: 'f (counted leak / n·h(Q))', better: 'lower', params },
    { name: 'block.finite_over_asymptotic', value: L / asym, unit: 'ratio ℓ / asymptotic key (same pulses, same f)', better: 'higher', params: { ...params, ell: L, asymptoticBits: asym } },
  ];
}
