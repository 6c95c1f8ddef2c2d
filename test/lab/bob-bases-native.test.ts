// Property test: an active Bob's modulator bases in Rust (nativeBobBasesAt, native/core/src/
// lab_rng.rs `bob_bases_at`) equal the TypeScript reference (bobBasisChoicesAt in src/lab/alice.ts)
// byte for byte, on random seeds, random Z probabilities (including 0 and 1) and random pulse lists
// (small, near 2^32 and near 2^53, sorted or not, repeated); EmulatedLab.bobBasesAt gives the same
// bytes with either physics; a pulse that is not an index is refused by both.
import t from 'tap';
import { bobBasisChoicesAt } from '../../src/lab/alice.ts';
import { nativeBobBasesAt } from '../../src/lab/native-physics.ts';
import { loadLinkPreset } from '../../src/lab/presets.ts';
import { EmulatedLab } from '../../src/devices/emulated/lab.ts';

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32; };
}

function randomPulses(r: () => number, n: number): Float64Array {
  const p = new Float64Array(n);
  const kind = Math.floor(r() * 4);
  for (let i = 0; i < n; i++) {
    const u = r();
    if (kind === 0) p[i] = Math.floor(u * 1e9);
    else if (kind === 1) p[i] = 2 ** 32 - 50 + Math.floor(u * 100);
    else if (kind === 2) p[i] = Number.MAX_SAFE_INTEGER - Math.floor(u * 1e6);
    else p[i] = Math.floor(u * 2 ** 53);
  }
  if (r() < 0.5) p.sort();
  if (n > 2 && r() < 0.3) p[n - 1] = p[0];
  return p;
}

t.test('bases at random pulses, random seeds and Z probabilities', async (t) => {
  const base = loadLinkPreset('gated-ingaas-lab');
  t.equal(base.bobBasisChoice, 'active', 'the preset has an active Bob');
  const r = rng(15);
  let bytes = 0, ones = 0;
  for (let s = 0; s < 60; s++) {
    const probZ = s === 0 ? 0 : s === 1 ? 1 : r();
    const preset = { ...base, bobBasisProbZ: probZ };
    const seed = BigInt(Math.floor(r() * 2 ** 32)) << 32n | BigInt(Math.floor(r() * 2 ** 32));
    const pulses = randomPulses(r, s < 5 ? s : Math.floor(r() * 50_000));
    const nat = nativeBobBasesAt(preset, seed, pulses);
    const ref = bobBasisChoicesAt(preset, seed, pulses);
    if (!Buffer.from(nat).equals(Buffer.from(ref))) {
      t.fail(`seed ${seed}, probZ ${probZ}, ${pulses.length} pulses: native and TypeScript bases differ`);
      return;
    }
    bytes += nat.length;
    for (const b of nat) ones += b;
  }
  t.pass(`${bytes} bases identical`);
  t.ok(ones > 0 && ones < bytes, 'both bases occur');
});

t.test('pulses that are not indices are refused', async (t) => {
  const preset = loadLinkPreset('gated-ingaas-lab');
  for (const bad of [-1, 0.5, NaN, Infinity, 2 ** 53]) {
    const p = Float64Array.of(3, bad);
    t.throws(() => bobBasisChoicesAt(preset, 7n, p), /pulses\[1\]/, `reference refuses ${bad}`);
    t.throws(() => nativeBobBasesAt(preset, 7n, p), { code: 'LAB_BAD_PULSE', message: /pulses\[1\]/ }, `native refuses ${bad}`);
  }
  t.same(nativeBobBasesAt(preset, 7n, new Float64Array(0)), new Uint8Array(0), 'no pulses, no bases');
});

t.test('EmulatedLab.bobBasesAt: the same record with either physics', async (t) => {
  const pulses = randomPulses(rng(3), 10_000);
  const saved = process.env.QKD_LAB_PHYSICS;
  try {
    const got: Uint8Array[] = [];
    for (const physics of ['native', 'ts']) {
      process.env.QKD_LAB_PHYSICS = physics;
      const lab = new EmulatedLab({ preset: 'gated-ingaas-lab', seed: 99n });
      got.push(lab.bobBasesAt(pulses));
    }
    t.ok(Buffer.from(got[0]).equals(Buffer.from(got[1])), 'same bytes');
  } finally {
    if (saved === undefined) delete process.env.QKD_LAB_PHYSICS;
    else process.env.QKD_LAB_PHYSICS = saved;
  }
});
