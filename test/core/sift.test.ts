// Sifting: native per-party steps vs the TypeScript reference (src/core/reference.ts) on random
// batches (odd sizes, empty, all double clicks), plus malformed-message and input-error cases.
import t from 'tap';
import { aliceMatch, aliceSift, bobAnnounce, channelMap, errorsByIntensity, extractSifted, siftFastPext, siftForcePortable } from '../../src/core/sift.ts';
import { SIFT_CHUNK, bobEventsRef, packBits, siftRef, unpackBits } from '../../src/core/reference.ts';
import { packChoice, type DetectorMapping } from '../../src/lab/types.ts';
import { QkdError, ProtocolError } from '../../src/errors.ts';

// Deterministic PRNG for test inputs (mulberry32).
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const mapping: DetectorMapping[] = [
  { channel: 1, basis: 0, bit: 0 }, { channel: 2, basis: 0, bit: 1 },
  { channel: 3, basis: 1, bit: 0 }, { channel: 4, basis: 1, bit: 1 },
];

function batch(r: () => number, nDet: number, firstPulse: number, multiProb: number) {
  const pulses: number[] = [];
  const chans: number[] = [];
  let p = firstPulse + Math.floor(r() * 3);
  while (pulses.length < nDet) {
    p += 1 + Math.floor(r() * 40);
    const k = r() < multiProb ? 2 + Math.floor(r() * 2) : 1;
    for (let j = 0; j < k && pulses.length < nDet; j++) {
      pulses.push(p);
      chans.push(r() < 0.05 ? 0 : 1 + Math.floor(r() * 4)); // channel 0 = unmapped (sync)
    }
  }
  const nChoices = p - firstPulse + 1 + Math.floor(r() * 5);
  const choices = new Uint8Array(nChoices);
  for (let i = 0; i < nChoices; i++) {
    const u = r();
    choices[i] = packChoice(r() < 0.5 ? 1 : 0, r() < 0.5 ? 1 : 0, u < 0.6 ? 0 : u < 0.9 ? 1 : 2);
  }
  return { pulse: Float64Array.from(pulses), channel: Uint8Array.from(chans), choices };
}

t.test('native sifting equals the reference on random batches', async (t) => {
  const r = rng(12345);
  const map = channelMap(mapping);
  for (const [nDet, multi, first] of [[0, 0, 0], [1, 0, 7], [2, 1, 0], [63, 0.3, 100], [64, 0.1, 0], [65, 0.5, 3],
    [1001, 0.05, 1e9], [4097, 0.2, 2 ** 40], [20011, 0.01, 0],
    [2 * SIFT_CHUNK + 4321, 0.3, 5] /* three chunks, processed in parallel natively */] as const) {
    const b = batch(r, nDet, first, multi);
    const seed = new Uint8Array(32).map(() => Math.floor(r() * 256));
    const bob = bobAnnounce({ pulse: b.pulse, channel: b.channel }, mapping, seed);
    const refEvents = bobEventsRef(b.pulse, b.channel, map, seed);
    t.equal(bob.events.count, refEvents.length, `events n=${nDet}`);
    t.same(unpackBits(bob.events.bits, bob.events.count), refEvents.map((e) => e.bit), `Bob bits n=${nDet}`);
    t.same(unpackBits(bob.events.bases, bob.events.count), refEvents.map((e) => e.basis), `Bob bases n=${nDet}`);
    t.equal(bob.stats.detections, nDet);
    t.equal(bob.stats.unmapped, Array.from(b.channel).filter((c) => c === 0).length);

    const alice = aliceMatch(bob.announcement, b.choices, first);
    const aS = extractSifted(alice.events, alice.reply);
    const bS = extractSifted(bob.events, alice.reply);
    const ref = siftRef(refEvents, b.choices, first);
    for (const [name, got, want] of [['alice', aS, ref.alice], ['bob', bS, ref.bob]] as const) {
      t.same(unpackBits(got.z, got.zBits), want.z, `${name} Z bits n=${nDet}`);
      t.same(Array.from(got.zIntensity), want.zInt, `${name} Z intensities n=${nDet}`);
      t.same(unpackBits(got.x, got.xBits), want.x, `${name} X bits n=${nDet}`);
      t.same(Array.from(got.xIntensity), want.xInt, `${name} X intensities n=${nDet}`);
      t.same(got.nZ, [0, 1, 2].map((k) => want.zInt.filter((v) => v === k).length));
    }
    t.equal(alice.matched, ref.alice.z.length + ref.alice.x.length);
    // One-pass Alice: same reply and the same strings as match + extract.
    const one = aliceSift(bob.announcement, b.choices, first);
    t.same(Buffer.from(one.reply), Buffer.from(alice.reply), `aliceSift reply n=${nDet}`);
    t.same(one.sifted, aS, `aliceSift strings n=${nDet}`);
    // Per-intensity X errors against a direct count.
    const e = errorsByIntensity(aS.x, bS.x, aS.xIntensity);
    const want = [0, 0, 0];
    ref.alice.x.forEach((v, i) => { if (v !== ref.bob.x[i]) want[ref.alice.xInt[i]]++; });
    t.same(e, want, `X errors by intensity n=${nDet}`);
  }
});

t.test('portable and BMI2 compression agree with the reference (odd sizes, multi-clicks)', async (t) => {
  const r = rng(777);
  const map = channelMap(mapping);
  t.comment(`BMI2 pext in use by default: ${siftFastPext()}`);
  for (const portable of [true, false]) {
    siftForcePortable(portable);
    for (const [nDet, multi] of [[1, 0], [17, 0.5], [64, 0], [129, 0.2], [5003, 0.05], [70001, 0.3]] as const) {
      const b = batch(r, nDet, 11, multi);
      const seed = new Uint8Array(32).map(() => Math.floor(r() * 256));
      const bob = bobAnnounce({ pulse: b.pulse, channel: b.channel }, mapping, seed);
      const ref = siftRef(bobEventsRef(b.pulse, b.channel, map, seed), b.choices, 11);
      const a = aliceSift(bob.announcement, b.choices, 11);
      const bS = extractSifted(bob.events, a.reply);
      for (const [who, got, want] of [['alice', a.sifted, ref.alice], ['bob', bS, ref.bob]] as const) {
        t.same(unpackBits(got.z, got.zBits), want.z, `${who} Z portable=${portable} n=${nDet}`);
        t.same(Array.from(got.zIntensity), want.zInt, `${who} Z tags portable=${portable} n=${nDet}`);
        t.same(unpackBits(got.x, got.xBits), want.x, `${who} X portable=${portable} n=${nDet}`);
        t.same(Array.from(got.xIntensity), want.xInt, `${who} X tags portable=${portable} n=${nDet}`);
      }
    }
  }
  siftForcePortable(false);
});

t.test('squashing: double clicks give a random bit, cross-basis clicks a random basis, both counted', async (t) => {
  const n = 4000;
  const pulse = new Float64Array(2 * n);
  const channel = new Uint8Array(2 * n);
  for (let i = 0; i < n; i++) {
    pulse[2 * i] = pulse[2 * i + 1] = i;
    channel[2 * i] = 1;
    channel[2 * i + 1] = i % 2 ? 2 : 3; // odd pulses: Z double click; even: Z+X cross click
  }
  const bob = bobAnnounce({ pulse, channel }, mapping, new Uint8Array(32).fill(7));
  t.equal(bob.stats.doubleClicks, n / 2);
  t.equal(bob.stats.multiClicks, n / 2);
  const bits = unpackBits(bob.events.bits, n);
  const bases = unpackBits(bob.events.bases, n);
  const odd = bits.filter((_, i) => i % 2 === 1);
  t.ok(Math.abs(odd.reduce((a, b) => a + b, 0) / odd.length - 0.5) < 0.05, 'double-click bits are balanced');
  t.ok(bases.filter((_, i) => i % 2 === 1).every((b) => b === 0), 'double clicks keep their basis');
  const evenBases = bases.filter((_, i) => i % 2 === 0);
  t.ok(Math.abs(evenBases.reduce((a, b) => a + b, 0) / evenBases.length - 0.5) < 0.05, 'cross clicks: random basis');
  // Different seeds give different coins (the coin is not a fixed function of the input).
  const bob2 = bobAnnounce({ pulse, channel }, mapping, new Uint8Array(32).fill(8));
  t.not(Buffer.from(bob2.events.bits).toString('hex'), Buffer.from(bob.events.bits).toString('hex'));
});

t.test('announcement is compact: delta varints + 1 bit basis', async (t) => {
  const n = 100000;
  const pulse = new Float64Array(n);
  const channel = new Uint8Array(n).fill(1);
  for (let i = 0; i < n; i++) pulse[i] = i * 100; // gaps of 100 pulses -> 1-byte deltas
  const bob = bobAnnounce({ pulse, channel }, mapping);
  t.ok(bob.announcement.length <= n * (1 + 1 / 8) + 16, `announcement ${bob.announcement.length} B for ${n} events`);
  const choices = new Uint8Array(n * 100).fill(packChoice(0, 0, 0));
  const a = aliceMatch(bob.announcement, choices, 0);
  t.ok(a.reply.length <= n / 8 + n / 4 + 16, `reply ${a.reply.length} B`);
});

t.test('bad inputs and malformed messages are coded errors', async (t) => {
  const mapArr = channelMap(mapping);
  t.throws(() => bobAnnounce({ pulse: Float64Array.from([5, 3]), channel: Uint8Array.from([1, 1]) }, mapArr),
    { code: 'SIFT_UNSORTED' });
  t.throws(() => bobAnnounce({ pulse: Float64Array.from([1.5]), channel: Uint8Array.from([1]) }, mapArr),
    { code: 'SIFT_BAD_PULSE' });
  t.throws(() => bobAnnounce({ pulse: Float64Array.from([1, 2]), channel: Uint8Array.from([1]) }, mapArr),
    { code: 'SIFT_LENGTH_MISMATCH' });
  t.throws(() => bobAnnounce({ pulse: Float64Array.from([1]), channel: Uint8Array.from([1]) }, mapArr, new Uint8Array(3)),
    { code: 'CORE_BAD_ARG' });
  const bad = new Uint8Array(256).fill(255);
  bad[1] = 9;
  t.throws(() => bobAnnounce({ pulse: Float64Array.from([1]), channel: Uint8Array.from([1]) }, bad), { code: 'SIFT_BAD_MAP' });

  const bob = bobAnnounce({ pulse: Float64Array.from([10, 20, 30]), channel: Uint8Array.from([1, 3, 2]) }, mapArr);
  const choices = new Uint8Array(40);
  t.throws(() => aliceMatch(bob.announcement, choices.subarray(0, 25), 0), { code: 'SIFT_PULSE_RANGE' });
  t.throws(() => aliceMatch(bob.announcement, choices, 11), { code: 'SIFT_PULSE_RANGE' });
  const trunc = bob.announcement.subarray(0, bob.announcement.length - 1);
  const err = t.throws(() => aliceMatch(trunc, choices, 0)) as unknown;
  t.ok(err instanceof ProtocolError, 'truncated announcement is a ProtocolError');
  t.throws(() => aliceMatch(Uint8Array.from([0x00]), choices, 0), { code: 'SIFT_MALFORMED' });
  t.throws(() => aliceMatch(Uint8Array.from([0xb1, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 1]), choices, 0), { code: 'SIFT_MALFORMED' });
  t.throws(() => aliceMatch(Uint8Array.from([0xb1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0]), choices, 0), { code: 'SIFT_MALFORMED' }); // zero delta
  const a = aliceMatch(bob.announcement, choices, 0);
  t.throws(() => extractSifted({ ...bob.events, count: 2 }, a.reply), { code: 'SIFT_MISMATCH' });
  t.throws(() => extractSifted(bob.events, a.reply.subarray(0, a.reply.length - 1)), { code: 'SIFT_MALFORMED' });
  const e = t.throws(() => extractSifted(bob.events, bob.announcement)) as unknown;
  t.ok(e instanceof QkdError && e.message.includes('reply'), 'announcement passed as reply is refused');
  t.same(packBits([1, 0, 1]), Uint8Array.from([5]));
});
