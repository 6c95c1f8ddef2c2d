// The native regeneration of the emulated lab's choices (Alice's sifting path) against the
// TypeScript generator it replaces (src/lab/alice.ts), on random seeds, thresholds and pulses,
// including the 32-bit word boundary and the top of the 2^53 range; bad pulses are refused.
import t from 'tap';
import { aliceChoiceFast, seedKeys, DOMAIN_ALICE, DOMAIN_BOB } from '../../src/lab/alice.ts';
import { emulatedAliceChoicesAt } from '../../src/core/sift.ts';
import { seededRandom } from '../../src/testkit/ldpc.ts';

t.test('same bytes as aliceChoiceFast on random input', async (t) => {
  const rnd = seededRandom(20261123);
  const u32 = () => Math.floor(rnd() * 2 ** 32);
  let checked = 0;
  for (let trial = 0; trial < 40; trial++) {
    const seed = (BigInt(u32()) << 32n) | BigInt(u32());
    const keys = seedKeys(seed, trial % 2 ? DOMAIN_ALICE : DOMAIN_BOB);
    // Thresholds anywhere in [0, 2^32], the ends included.
    const cut = [u32(), u32()].sort((a, b) => a - b);
    const th = { basisZ: trial === 0 ? 0 : trial === 1 ? 2 ** 32 : u32(), signal: cut[0], decoy: trial === 2 ? 2 ** 32 : cut[1] };
    const n = trial < 3 ? 300_000 : 1 + Math.floor(rnd() * 5000);
    const pulses = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const kind = rnd();
      pulses[i] = kind < 0.3 ? Math.floor(rnd() * 1e6) : kind < 0.5 ? 2 ** 32 - 50 + Math.floor(rnd() * 100)
        : kind < 0.6 ? 2 ** 53 - 1 - Math.floor(rnd() * 1000) : Math.floor(rnd() * 2 ** 53);
    }
    const got = emulatedAliceChoicesAt(keys, th, pulses);
    for (let i = 0; i < n; i++) {
      const want = aliceChoiceFast(keys, th, pulses[i]);
      if (got[i] !== want) {
        t.fail(`seed ${seed}, pulse ${pulses[i]}: native ${got[i]}, TypeScript ${want}`);
        return;
      }
    }
    checked += n;
  }
  t.pass(`${checked} choices identical`);
});

t.test('pulses that are not integers in [0, 2^53) are refused', async (t) => {
  const keys = seedKeys(1n, DOMAIN_ALICE);
  const th = { basisZ: 2 ** 31, signal: 2 ** 31, decoy: 3 * 2 ** 30 };
  for (const bad of [-1, 0.5, 2 ** 53, Number.NaN]) {
    t.throws(() => emulatedAliceChoicesAt(keys, th, Float64Array.of(3, bad)), { code: 'SIFT_PULSE_RANGE' }, `pulse ${bad}`);
  }
  t.throws(() => emulatedAliceChoicesAt(keys, { ...th, decoy: 2 ** 32 + 1 }, Float64Array.of(3)), { code: 'CORE_BAD_ARG' }, 'a threshold above 2^32');
});
