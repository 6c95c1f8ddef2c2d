/**
 * Our LDPC decoder beside an independent one on the same code and the same frames (docs/ldpc.md,
 * "Beside an independent decoder"; issue 13 §3: the ratio measured, not quoted).
 *
 * Peer: Joschka Roffe's `ldpc` (PyPI, v2 `BpDecoder`, C++ core), run by scripts/ldpc_peer.py in a
 * python subprocess. Per QBER (1, 2, 3, 5, 8 %): the code and rate-adaptation chooseCode picks for
 * the node's frames (2^18 mother code, k = 235930 key bits); the parity-check matrix as a frame
 * sees it is dumped by scripts/ldpc-peer-export (a small Rust tool on native/ldpc, built here with
 * cargo on first use); Alice's keys are random, Bob's are Alice's through a BSC at the QBER, Alice's
 * syndromes come from encodeBatch. Ours: decodeBatch (all frames in one call: SIMD lanes × rayon
 * threads on the 2 cores), median over repeats. Peer: one pass, one frame at a time, one thread,
 * the same iteration budget (60). Variants (LDPC_PEER_VARIANTS): `ps-parallel` (default) =
 * sum-product ('product_sum') on a flooding schedule, the peer's fastest variant that decodes these
 * frames; `ps-serial` = sum-product on a serial schedule (the same algorithm as our layered
 * sum-product; ≈ 5-10x slower in the peer); `ms-parallel` / `ms-serial` = normalised min-sum
 * (α = 0.8125, our old min-sum's 13/16), which fails these frames at the efficiency chooseCode
 * targets (as our own min-sum did, docs/ldpc.md "Decoder"). A frame counts as a success only if the
 * decoded key equals Alice's; both decoders' outputs are also checked against the syndrome
 * (params.ourSyndromeOk, params.peerSyndromeOk: frames whose output reproduces it).
 * Results per QBER and variant: `ldpc.peer.q<Q>pct.2^18.<variant>.mbits` (our decoded key Mbit/s
 * per wall second; baseline = the peer's) and `....fer` (baseline = the peer's FER); params hold
 * CPU-second rates and the ratios (ours / peer).
 * Env: LDPC_PEER_FRAMES (default 16), LDPC_PEER_REPEATS (default 3), LDPC_PEER_BITS (frame bits
 * for chooseCode, default 250000 → 2^18), LDPC_PEER_PYTHON (default python3), LDPC_PEER_VARIANTS
 * (comma-separated, default ps-parallel).
 * Without `ldpc` installed the peer is skipped with the install command (ours is still measured).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chooseCode, decodeBatch, decoderKernel, encode, encodeBatch, type DecodeResult } from '../src/core/ldpc.ts';
import { bsc, randomBits, seededRandom } from '../src/testkit/ldpc.ts';
import { median, type BenchResult } from './stats.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const exporterDir = join(root, 'scripts', 'ldpc-peer-export');
const exporter = join(exporterDir, 'target', 'release', 'ldpc-peer-export');
const peerScript = join(root, 'scripts', 'ldpc_peer.py');
const python = process.env.LDPC_PEER_PYTHON ?? 'python3';
const maxIterations = 60;

interface PeerOut {
  peer: string; bpMethod: string; schedule: string; msScaling: number; converged: boolean[]; iterations: number[];
  syndromeSatisfied: boolean[]; wallS: number; cpuS: number;
}

function sameBits(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Why the peer cannot run here (with what to do), or undefined when it can. */
function peerMissing(): string | undefined {
  const r = spawnSync(python, ['-c', 'import ldpc, scipy; from ldpc import BpDecoder'], { encoding: 'utf8' });
  if (r.error) return `${python} not found (${r.error.message}); set LDPC_PEER_PYTHON`;
  if (r.status !== 0) return `python package ldpc (v2, with scipy) not importable; install it with: ${python} -m pip install ldpc`;
  return undefined;
}

function buildExporter(): void {
  execFileSync('cargo', ['build', '--release', '--quiet', '--manifest-path', join(exporterDir, 'Cargo.toml')], { stdio: 'inherit' });
}

/** Peer BP variants: [bp_method, schedule, min-sum scaling]. */
const peerVariants: Record<string, string[]> = {
  'ps-parallel': ['product_sum', 'parallel', '1.0'],
  'ps-serial': ['product_sum', 'serial', '1.0'],
  'ms-parallel': ['minimum_sum', 'parallel', '0.8125'],
  'ms-serial': ['minimum_sum', 'serial', '0.8125'],
};

/** Mbit/s to 4 significant digits (the peer's figures are ~0.005-0.05). */
const mbits = (bits: number, s: number): number => +(bits / s / 1e6).toPrecision(4);

export async function run(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const nf = Number(process.env.LDPC_PEER_FRAMES ?? 16);
  const repeats = Number(process.env.LDPC_PEER_REPEATS ?? 3);
  const frameBits = Number(process.env.LDPC_PEER_BITS ?? 250_000);
  const variants = (process.env.LDPC_PEER_VARIANTS ?? 'ps-parallel').split(',').map((v) => {
    const args = peerVariants[v];
    if (!args) throw new Error(`LDPC_PEER_VARIANTS: unknown variant ${v}; known: ${Object.keys(peerVariants).join(', ')}`);
    return [v, args] as const;
  });
  const missing = peerMissing();
  if (missing) console.error(`ldpc-peer: peer skipped: ${missing}`);
  else buildExporter();
  const dir = mkdtempSync(join(tmpdir(), 'ldpc-peer-'));
  try {
    for (const q of [0.01, 0.02, 0.03, 0.05, 0.08]) {
      const rand = seededRandom(Math.round(q * 1e4) * 13 + frameBits);
      const choice = chooseCode(q, frameBits);
      const size = `2^${choice.params.log2n}`;
      const alice = Array.from({ length: nf }, () => randomBits(rand, choice.keyBits));
      const bob = alice.map((a) => bsc(rand, a, choice.keyBits, q).out);
      const synd = (await encodeBatch(alice, choice.params)).map((e) => e.syndrome);
      const bits = nf * choice.keyBits;
      const decode = (): Promise<DecodeResult[]> => decodeBatch(bob, synd, q, choice.params, { maxIterations });
      await decode(); // warm-up (builds the code)
      const walls: number[] = [];
      const cpus: number[] = [];
      let ours: DecodeResult[] = [];
      for (let i = 0; i < repeats; i++) {
        const c0 = process.cpuUsage();
        const t0 = process.hrtime.bigint();
        ours = await decode();
        walls.push(Number(process.hrtime.bigint() - t0) / 1e9);
        const c = process.cpuUsage(c0);
        cpus.push((c.user + c.system) / 1e6);
      }
      const ourFails = ours.filter((r, i) => !r.converged || !sameBits(r.corrected, alice[i])).length;
      const ourSyndromeOk = ours.filter((r, i) => sameBits(encode(r.corrected, choice.params, r.fillGuess).syndrome, synd[i])).length;
      const ourWall = median(walls);
      const ourCpu = median(cpus);
      const params: Record<string, unknown> = {
        qber: q, frameSize: size, keyBitsPerFrame: choice.keyBits, frames: nf, code: choice.params, maxIterations,
        ours: `qkd-ldpc layered sum-product, kernel ${decoderKernel()}, one decodeBatch call`, repeats,
        ourMedianWallS: +ourWall.toFixed(4), ourMbitPerCpuSecond: mbits(bits, ourCpu), ourFer: ourFails / nf,
        ourFrameErrors: ourFails, ourSyndromeOk, ourMeanIterations: +(ours.reduce((s, r) => s + r.iterations, 0) / nf).toFixed(2),
      };
      const ourMbits = mbits(bits, ourWall);
      const ourFer = ourFails / nf;
      params.loadAverage1m = loadavg()[0];
      const tag = `ldpc.peer.q${(q * 100).toFixed(0)}pct.${size}`;
      if (missing) {
        results.push({ name: `${tag}.mbits`, value: ourMbits, unit: 'Mbit/s decoded key (wall, 2 cores)', better: 'higher', params: { ...params, peer: 'skipped' } });
        results.push({ name: `${tag}.fer`, value: ourFer, unit: 'frame error rate (not Alice\'s key)', better: 'lower', params: { qber: q, frameSize: size, frames: nf } });
        console.error(`ldpc-peer: q=${q} ${size}: ours ${ourMbits} Mbit/s (${String(params.ourMbitPerCpuSecond)}/CPU-s) FER ${ourFails}/${nf}; peer skipped`);
        continue;
      }
      execFileSync(exporter, [choice.params.log2n, choice.params.ratePermille, choice.params.punctured, choice.params.shortened, dir].map(String));
      const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as { keyBits: number; checksum: string; edges: number };
      if (meta.keyBits !== choice.keyBits || meta.checksum !== choice.checksum) {
        throw new Error(`ldpc-peer: exported code (k ${meta.keyBits}, checksum ${meta.checksum}) is not the facade's (k ${choice.keyBits}, ${choice.checksum}); rebuild: cargo build --release --manifest-path scripts/ldpc-peer-export/Cargo.toml`);
      }
      const kb = Math.ceil(choice.keyBits / 8);
      const sb = Math.ceil(choice.syndromeBits / 8);
      writeFileSync(join(dir, 'frames.json'), JSON.stringify({ frames: nf, keyBytes: kb, syndromeBytes: sb }));
      writeFileSync(join(dir, 'bob.bin'), Buffer.concat(bob));
      writeFileSync(join(dir, 'syndrome.bin'), Buffer.concat(synd));
      for (const [variant, args] of variants) {
        const t0 = process.hrtime.bigint();
        const stdout = execFileSync(python, [peerScript, dir, String(q), String(maxIterations), ...args],
          { encoding: 'utf8', maxBuffer: 64 * 2 ** 20, stdio: ['ignore', 'pipe', 'inherit'] });
        const processWall = Number(process.hrtime.bigint() - t0) / 1e9;
        const peer = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as PeerOut;
        const out = readFileSync(join(dir, 'peer_out.bin'));
        rmSync(join(dir, 'peer_out.bin'));
        const peerFails = alice.filter((a, i) => !peer.converged[i] || !sameBits(out.subarray(i * kb, (i + 1) * kb), a)).length;
        const peerMbits = mbits(bits, peer.wallS);
        const peerFer = peerFails / nf;
        const p = {
          ...params, variant,
          peer: `${peer.peer} ${peer.bpMethod} (scaling ${peer.msScaling}) ${peer.schedule}, one thread, frame by frame`, peerEdges: meta.edges,
          peerWallS: +peer.wallS.toFixed(3), peerCpuS: +peer.cpuS.toFixed(3), peerProcessWallS: +processWall.toFixed(3), peerMbitPerCpuSecond: mbits(bits, peer.cpuS),
          peerFer, peerFrameErrors: peerFails, peerSyndromeOk: peer.syndromeSatisfied.filter(Boolean).length,
          peerMeanIterations: +(peer.iterations.reduce((s, x) => s + x, 0) / nf).toFixed(2),
          ratioWall: +(peer.wallS / ourWall).toPrecision(4),
          ratioCpu: +(peer.cpuS / ourCpu).toPrecision(4),
        };
        results.push({
          name: `${tag}.${variant}.mbits`, value: ourMbits,
          unit: 'Mbit/s decoded key (wall; ours 2 cores, peer 1 thread)', better: 'higher', baseline: peerMbits, params: p,
        });
        results.push({
          name: `${tag}.${variant}.fer`, value: ourFer, unit: 'frame error rate (not Alice\'s key)', better: 'lower', baseline: peerFer,
          params: { qber: q, frameSize: size, frames: nf, variant },
        });
        console.error(`ldpc-peer: q=${q} ${size}: ours ${ourMbits} Mbit/s (${String(params.ourMbitPerCpuSecond)}/CPU-s) FER ${ourFails}/${nf}, `
          + `${variant} peer ${peerMbits} Mbit/s (${p.peerMbitPerCpuSecond}/CPU-s) FER ${peerFails}/${nf} (iter ${p.peerMeanIterations} vs ${String(params.ourMeanIterations)}); ratio ${p.ratioWall} wall, ${p.ratioCpu} CPU`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return results;
}
