// The emulated source's random choices (ChaCha20 with random access by pulse index,
// native/core/src/emulated_choice.rs): the ChaCha20 block function against RFC 8439's test
// vectors, natively and in the slow TypeScript reference; native choices against the reference on
// random keys, thresholds and pulses (block and 2^32-block nonce boundaries, the top of 2^53);
// bad input refused; and the choice frequencies match the thresholds.
import t from 'tap';
import { chacha20BlockReference, sourceChoiceReference } from '../../src/core/source-rng-reference.ts';
import { chacha20BlockNative, createSourceRng } from '../../src/core/source-rng.ts';
import { choiceThresholds } from '../../src/protocol/choices.ts';
import { seededRandom } from '../../src/testkit/ldpc.ts';

const hex = (s: string): Uint8Array => Uint8Array.from(s.match(/../g)!.map((h) => parseInt(h, 16)));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const KEY = Uint8Array.from({ length: 32 }, (_, i) => i);

t.test('ChaCha20 block function: RFC 8439 test vectors', async (t) => {
  for (const [name, block] of [['native', chacha20BlockNative], ['reference', chacha20BlockReference]] as const) {
    // §2.3.2
    t.equal(toHex(block(KEY, 1, hex('000000090000004a00000000'))),
      '10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4ed2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e', `${name}: §2.3.2`);
    // §2.4.2: the "sunscreen" plaintext encrypted from counter 1
    const pt = new TextEncoder().encode("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
    const ct = new Uint8Array(pt.length);
    for (let i = 0; i < pt.length; i += 64) {
      const ks = block(KEY, 1 + i / 64, hex('000000000000004a00000000'));
      for (let j = i; j < Math.min(pt.length, i + 64); j++) ct[j] = pt[j] ^ ks[j - i];
    }
    t.equal(toHex(ct), '6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0bf91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d807ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab77937365af90bbf74a35be6b40b8eedf2785e42874d', `${name}: §2.4.2`);
    // Appendix A.1, test vector #1
    t.equal(toHex(block(new Uint8Array(32), 0, new Uint8Array(12))),
      '76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586', `${name}: A.1 #1`);
  }
});

t.test('native choices equal the slow reference on random input', async (t) => {
  const rnd = seededRandom(20261124);
  const u32 = () => Math.floor(rnd() * 2 ** 32);
  let checked = 0;
  for (let trial = 0; trial < 12; trial++) {
    const key = Uint8Array.from({ length: 32 }, () => u32() & 0xff);
    const cut = [u32(), u32()].sort((a, b) => a - b);
    const th = { basisZ: trial === 0 ? 0 : trial === 1 ? 2 ** 32 : u32(), signal: cut[0], decoy: trial === 2 ? 2 ** 32 : cut[1] };
    const rng = createSourceRng(th, key);
    const n = 1 + Math.floor(rnd() * 1500);
    const pulses = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const kind = rnd();
      pulses[i] = kind < 0.3 ? Math.floor(rnd() * 1e6) : kind < 0.5 ? 2 ** 34 - 50 + Math.floor(rnd() * 100)
        : kind < 0.6 ? 2 ** 53 - 1 - Math.floor(rnd() * 1000) : Math.floor(rnd() * 2 ** 53);
    }
    const got = rng.choicesAt(pulses);
    const gotAsync = await rng.choicesAtAsync(pulses);
    t.same(gotAsync, got, 'async = sync');
    for (let i = 0; i < n; i++) {
      const want = sourceChoiceReference(key, th, pulses[i]);
      if (got[i] !== want) return t.fail(`trial ${trial}, pulse ${pulses[i]}: native ${got[i]}, reference ${want}`);
    }
    const first = trial < 6 ? Math.floor(rnd() * 1e9) : 2 ** 34 - 3000;
    const range = rng.choicesRange(first, 6000);
    for (let i = 0; i < 6000; i += 7) {
      if (range[i] !== sourceChoiceReference(key, th, first + i)) return t.fail(`range: pulse ${first + i}`);
    }
    checked += n + 6000 / 7;
  }
  t.pass(`${Math.round(checked)} choices identical`);
});

t.test('frequencies follow the protocol probabilities; fresh keys differ', async (t) => {
  const th = choiceThresholds({ intensityProbs: { signal: 0.6, decoy: 0.3 }, aliceBasisProbZ: 0.6 });
  const a = createSourceRng(th).choicesRange(0, 1 << 20);
  const b = createSourceRng(th).choicesRange(0, 1 << 20);
  let same = 0;
  const n = a.length;
  const cnt = { z: 0, s: 0, d: 0, bit: 0 };
  for (let i = 0; i < n; i++) {
    if (a[i] === b[i]) same++;
    const c = a[i];
    if (((c >> 1) & 1) === 0) cnt.z++;
    if (((c >> 2) & 3) === 0) cnt.s++;
    if (((c >> 2) & 3) === 1) cnt.d++;
    cnt.bit += c & 1;
  }
  const near = (x: number, p: number, what: string) => t.ok(Math.abs(x / n - p) < 5 * Math.sqrt(p * (1 - p) / n), `${what}: ${(x / n).toFixed(4)} vs ${p}`);
  near(cnt.z, 0.6, 'basis Z');
  near(cnt.s, 0.6, 'signal');
  near(cnt.d, 0.3, 'decoy');
  near(cnt.bit, 0.5, 'bit 1');
  t.ok(same / n < 0.3, `two fresh keys agree on ${(same / n).toFixed(3)} of the choices (independent: ≈ 0.22)`);
});

t.test('bad input is refused', async (t) => {
  const th = { basisZ: 2 ** 31, signal: 2 ** 31, decoy: 3 * 2 ** 30 };
  const rng = createSourceRng(th);
  for (const bad of [-1, 0.5, 2 ** 53, Number.NaN]) {
    t.throws(() => rng.choicesAt(Float64Array.of(3, bad)), { code: 'SIFT_PULSE_RANGE' }, `pulse ${bad}`);
  }
  await t.rejects(rng.choicesAtAsync(Float64Array.of(-1)), { code: 'SIFT_PULSE_RANGE' }, 'async: a negative pulse');
  t.throws(() => createSourceRng({ ...th, decoy: 2 ** 32 + 1 }), { code: 'CORE_BAD_ARG' }, 'a threshold above 2^32');
  t.throws(() => createSourceRng(th, new Uint8Array(16)), { code: 'SOURCE_KEY' }, 'a 128-bit key');
});
