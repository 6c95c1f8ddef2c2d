/**
 * The TDC1 word stream: known answers (hand-built words, roll-overs, coincidences, the vendor
 * notebook's recorded words), the streaming encoder against the slow one, and a property test:
 * random tag sequences encoded by the slow encoder, cut into random chunks, with and without a
 * 2-byte slip (bytes lost or inserted), decoded back.
 */
import t from 'tap';
import { Tdc1Decoder, Tdc1Encoder, encodeTdc1Slow, tdc1Bytes, tdc1Word, TDC1_HALF_UNITS, TDC1_MARKER_LATENCY_UNITS, TDC1_PERIOD_UNITS, type Tdc1Event } from '../../src/devices/tdc1-words.ts';
import type { TagStreamBatch } from '../../src/devices/types.ts';

/** Deterministic PRNG (mulberry32) so failures reproduce. */
function rng(seed: number) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function words(...w: number[]): Uint8Array {
  return tdc1Bytes(w);
}

function collect(batches: TagStreamBatch[]) {
  const times: bigint[] = [];
  const chans: number[] = [];
  const events: { type: number; index: number; channel: number; timePs: bigint; missedEvents: number }[] = [];
  for (const b of batches) {
    for (const e of b.events) events.push({ ...e, index: e.index + times.length });
    times.push(...b.timePs);
    chans.push(...b.channel);
  }
  return { times, chans, events };
}

t.test('known answer: one word, byte for byte', async (t) => {
  // time 5 units (10 ns), input 1: (5 << 5) | 1 = 0xa1.
  t.equal(Buffer.from(words(tdc1Word(5n, false, 1))).toString('hex'), 'a1000000');
  t.equal(tdc1Word(BigInt(TDC1_PERIOD_UNITS) + 7n, true, 0x1), (7 * 32 + 0x11) >>> 0, 'time wraps at 2^27, flag is bit 4');
  const d = new Tdc1Decoder();
  const b = collect([d.push(Buffer.from('a1000000', 'hex')), d.flush()]);
  t.same(b.times, [10_000n]);
  t.same(b.chans, [0]);
  t.same(b.events, []);
});

t.test('known answer: roll-over, coincidence, time-keeping words, channel mapping', async (t) => {
  const top = TDC1_PERIOD_UNITS - 2; // 2 units before the roll-over
  const bytes = words(
    tdc1Word(BigInt(top), false, 0b0010), // input 2 -> channel 1
    tdc1Word(3n, false, 0b0101), // after the roll-over: inputs 1 and 3 together
    tdc1Word(BigInt(TDC1_HALF_UNITS + TDC1_MARKER_LATENCY_UNITS), true, 1), // time-keeping word
    tdc1Word(BigInt(TDC1_PERIOD_UNITS - 1), false, 0b1000), // input 4
    tdc1Word(0n, true, 1), // roll-over carried by a flagged word alone
    tdc1Word(9n, false, 0b0001),
  );
  const d = new Tdc1Decoder();
  const b = collect([d.push(bytes), d.flush()]);
  const P = BigInt(TDC1_PERIOD_UNITS);
  const u = (x: bigint) => x * 2000n;
  t.same(b.times, [u(BigInt(top)), u(P + 3n), u(P + 3n), u(2n * P - 1n), u(2n * P + 9n)]);
  t.same(b.chans, [1, 0, 2, 3, 0]);
  t.same(b.events, []);
  t.equal(d.stats.markers, 2);
  t.equal(d.stats.words, 6);
});

t.test("known answer: the vendor notebook's recorded words (pyS15 examples/TDC1_time_to_digital_converter.ipynb)", async (t) => {
  // Seven words recorded from a real TDC1 in a 1 s acquisition; the notebook prints the two
  // events at 0.31540089 s and 0.8154234 s after the first word's period.
  const recorded = [[67112824, 0x11], [3960, 0x11], [23482717, 0x1], [3960, 0x11], [67112824, 0x11], [3960, 0x11], [5058517, 0x1]];
  const d = new Tdc1Decoder();
  const b = collect([d.push(words(...recorded.map(([tt, p]) => ((tt * 32) | p) >>> 0))), d.flush()]);
  const P = TDC1_PERIOD_UNITS;
  t.same(b.times, [BigInt(P + 23482717) * 2000n, BigInt(3 * P + 5058517) * 2000n]);
  t.equal(Number(b.times[0]) / 1e12, 0.315400890 + 0 * 0, '0.31540089 s as printed (units from the period start)');
  t.same(b.chans, [0, 0]);
  t.equal(d.stats.markers, 5);
  // Our slow encoder's marker rule reproduces the recording's flagged words.
  const enc = encodeTdc1Slow([{ units: BigInt(P + 23482717), pattern: 1 }, { units: BigInt(3 * P + 5058517), pattern: 1 }], 67108864n - 100n, BigInt(3 * P + 5058517));
  t.same(Array.from(new Uint32Array(enc.buffer)), recorded.map(([tt, p]) => ((tt * 32) | p) >>> 0), 'slow encoder = recorded words');
});

t.test('bad words and trailing bytes are reported in band, never dropped', async (t) => {
  const d = new Tdc1Decoder();
  const b = collect([d.push(words(tdc1Word(100n, false, 1), tdc1Word(101n, false, 0), tdc1Word(102n, false, 2))), d.push(Uint8Array.of(0xaa, 0xbb)), d.flush()]);
  t.same(b.times, [200_000n, 204_000n]);
  t.same(b.events.map((e) => [e.type, e.index, e.channel, e.missedEvents]), [[1, 1, -1, 1], [1, 2, -1, 1]], 'empty pattern, then 2 trailing bytes');
  t.equal(d.stats.badWords, 1);
  t.equal(d.stats.discardedBytes, 2);
});

/** Random events: mean step `mean` units, occasional quiet spells; never within 2 latencies after a half boundary (see the module comment). */
function randomEvents(r: () => number, n: number, mean: number, start: bigint): Tdc1Event[] {
  const out: Tdc1Event[] = [];
  let t = start;
  const L = BigInt(2 * TDC1_MARKER_LATENCY_UNITS);
  const H = BigInt(TDC1_HALF_UNITS);
  for (let i = 0; i < n; i++) {
    const quiet = r() < 0.002;
    t += BigInt(Math.floor(quiet ? r() * 3 * TDC1_PERIOD_UNITS : -Math.log(1 - r()) * mean));
    if (t % H < L) t += L;
    const p = r() < 0.9 ? 1 << Math.floor(r() * 4) : 1 + Math.floor(r() * 15);
    out.push({ units: t, pattern: p });
  }
  return out;
}

function expected(events: Tdc1Event[], origin: bigint) {
  const times: bigint[] = [];
  const chans: number[] = [];
  for (const e of events) for (let c = 0; c < 4; c++) if (e.pattern & (1 << c)) { times.push((e.units - origin) * 2000n); chans.push(c); }
  return { times, chans };
}

function chunks(r: () => number, bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; ) {
    const k = Math.min(bytes.length - at, 1 + Math.floor(r() ** 3 * 5000));
    out.push(bytes.subarray(at, at + k));
    at += k;
  }
  return out;
}

t.test('streaming encoder = slow encoder (random events, random pushes)', async (t) => {
  for (let seed = 1; seed <= 40; seed++) {
    const r = rng(seed);
    const start = BigInt(Math.floor(r() * 2 ** 40));
    const ev = randomEvents(r, 300, [30, 3e4, 3e6, 5e7][seed % 4], start);
    const end = ev[ev.length - 1].units + BigInt(Math.floor(r() * 3 * TDC1_PERIOD_UNITS));
    const enc = new Tdc1Encoder(start);
    const w: number[] = [];
    for (let i = 0; i < ev.length; ) {
      const k = 1 + Math.floor(r() * 20);
      const part = ev.slice(i, i + k);
      enc.push(part.map((e) => e.units), part.map((e) => e.pattern), w);
      if (r() < 0.3) enc.advanceTo(part[part.length - 1].units, w);
      i += k;
    }
    enc.advanceTo(end, w);
    const slow = encodeTdc1Slow(ev, start, end);
    if (!t.same(Buffer.from(tdc1Bytes(w)).toString('hex'), Buffer.from(slow).toString('hex'), `seed ${seed}`)) break;
  }
});

t.test('property: random sequences decode back exactly through random chunking', async (t) => {
  for (let seed = 1; seed <= 150; seed++) {
    const r = rng(1000 + seed);
    const mean = [5, 200, 2e4, 1e6, 2e7][seed % 5];
    const start = BigInt(Math.floor(r() * 2 ** 45));
    const ev = randomEvents(r, 200 + Math.floor(r() * 2000), mean, start);
    const bytes = encodeTdc1Slow(ev, start, ev[ev.length - 1].units + 10n);
    const d = new Tdc1Decoder();
    const got = collect([...chunks(r, bytes).map((c) => d.push(c)), d.flush()]);
    // Times count from the first word's raw time: it lies within one period after the start.
    const raw0 = BigInt(new DataView(bytes.buffer).getUint32(0, true) >>> 5);
    const P = BigInt(TDC1_PERIOD_UNITS);
    const t0 = start + ((((raw0 - start) % P) + P) % P);
    const firstUnits = t0 - raw0;
    const want = expected(ev, firstUnits);
    const ok = t.same(got.times, want.times, `seed ${seed}: times (mean step ${mean})`) && t.same(got.chans, want.chans, `seed ${seed}: channels`) && t.same(got.events, [], `seed ${seed}: no events`);
    if (!ok) break;
  }
});

t.test('property: a 2-byte slip (lost or inserted) is detected, re-aligned, marked, and loses only the words at the slip', async (t) => {
  let resynced = 0;
  for (let seed = 1; seed <= 200; seed++) {
    const r = rng(5000 + seed);
    // Dense enough for the look-ahead to tell (>= ~15 k words/s; the TDC1 streams up to ~4 M/s).
    const mean = [3, 50, 125, 1000, 3e4][seed % 5];
    const start = BigInt(Math.floor(r() * 2 ** 45));
    const ev = randomEvents(r, 800 + Math.floor(r() * 1500), mean, start);
    const clean = encodeTdc1Slow(ev, start, ev[ev.length - 1].units + 10n);
    const nWords = clean.length / 4;
    // The slip: somewhere after the first 400 words, at least 40 words before the end, at any byte.
    // Not among time-keeping words (a quiet spell): there the words lost at the slip may carry
    // whole roll-over periods (said in tdc1-words.ts); that case has its own test below.
    const cw = new DataView(clean.buffer);
    let wq = 400 + Math.floor(r() * (nWords - 440));
    const flagged = (i: number) => (cw.getUint32(4 * i, true) & 0x10) !== 0;
    while (wq < nWords - 40 && [-8, -4, -2, -1, 0, 1, 2, 4, 8].some((k) => flagged(wq + k))) wq++;
    const q = 4 * wq + Math.floor(r() * 4);
    const lose = seed % 2 === 0;
    const bytes = lose
      ? Buffer.concat([clean.subarray(0, q), clean.subarray(q + 2)])
      : Buffer.concat([clean.subarray(0, q), Buffer.from([Math.floor(r() * 256), Math.floor(r() * 256)]), clean.subarray(q)]);
    const d = new Tdc1Decoder();
    const got = collect([...chunks(r, bytes).map((c) => d.push(c)), d.flush()]);
    // Reference: the clean decode.
    const ref = new Tdc1Decoder();
    const want = collect([ref.push(clean), ref.flush()]);
    const where = `seed ${seed} (${lose ? 'lost' : 'inserted'} 2 bytes at ${q} of ${clean.length}, mean step ${mean})`;
    // Every decoded tag is a real one, in order; the missing ones are a few consecutive words at the slip.
    const key = (i: number, x: { times: bigint[]; chans: number[] }) => `${x.times[i]}:${x.chans[i]}`;
    const wantKeys = want.times.map((_, i) => key(i, want));
    const gotKeys = got.times.map((_, i) => key(i, got));
    let a = 0;
    while (a < gotKeys.length && gotKeys[a] === wantKeys[a]) a++;
    let b = 0;
    while (b < gotKeys.length - a && gotKeys[gotKeys.length - 1 - b] === wantKeys[wantKeys.length - 1 - b]) b++;
    const ok1 = t.equal(a + b, gotKeys.length, `${where}: no invented or altered tags`);
    const missingTags = wantKeys.length - gotKeys.length;
    const ok2 = t.ok(missingTags >= 0 && missingTags <= 4 * 8, `${where}: ${missingTags} tag(s) lost at the slip`);
    const errs = got.events.filter((e) => e.type === 1 && e.channel === -1);
    const ok3 = t.equal(errs.length, 1, `${where}: one in-band ERROR marks the gap`);
    if (errs.length === 1) {
      // At the slip: where the decoded tags stop matching (equal neighbouring tags can extend the match a little).
      t.ok(errs[0].index <= a && errs[0].index >= a - 32, `${where}: at the slip (${errs[0].index} vs ${a})`);
      t.ok(errs[0].missedEvents >= 1, `${where}: counts what was given up`);
    }
    t.equal(d.stats.resyncs, 1, `${where}: one re-alignment`);
    resynced += d.stats.resyncs;
    if (!(ok1 && ok2 && ok3)) break;
  }
  t.equal(resynced, 200);
});

t.test('rate drop (source switched off) is not taken for a slip', async (t) => {
  const r = rng(77);
  const start = 1000n;
  const busy = randomEvents(r, 3000, 100, start);
  const quietFrom = busy[busy.length - 1].units + 10_000n;
  const sparse = randomEvents(r, 60, 3e6, quietFrom);
  const ev = [...busy, ...sparse];
  const bytes = encodeTdc1Slow(ev, start, ev[ev.length - 1].units + 5n);
  const d = new Tdc1Decoder();
  const got = collect([...chunks(r, bytes).map((c) => d.push(c)), d.flush()]);
  const ref = new Tdc1Decoder();
  const want = collect([ref.push(bytes), ref.flush()]);
  t.equal(got.times.length, expected(ev, 0n).times.length, 'every tag');
  t.same(got.times, want.times);
  t.same(got.events, []);
  t.equal(d.stats.resyncs, 0);
});

t.test('a slip among time-keeping words (a quiet spell) is marked; tags after it keep their order and channels', async (t) => {
  const r = rng(178);
  const start = 1000n;
  const dense1 = randomEvents(r, 500, 1000, start);
  const gapFrom = dense1[dense1.length - 1].units + BigInt(TDC1_PERIOD_UNITS) * 2n;
  const dense2 = randomEvents(r, 500, 1000, gapFrom);
  const ev = [...dense1, ...dense2];
  const clean = encodeTdc1Slow(ev, start, ev[ev.length - 1].units + 5n);
  const cw = new DataView(clean.buffer);
  let wq = 0;
  while (!(cw.getUint32(4 * wq, true) & 0x10)) wq++; // the first time-keeping word
  const bytes = Buffer.concat([clean.subarray(0, 4 * (wq + 2) + 2), clean.subarray(4 * (wq + 2) + 4)]);
  const d = new Tdc1Decoder();
  const got = collect([d.push(bytes), d.flush()]);
  t.equal(got.events.filter((e) => e.type === 1 && e.channel === -1).length, 1, 'the gap is marked');
  t.equal(d.stats.resyncs, 1);
  const want = expected(dense2, 0n);
  const k = want.chans.length - 40; // all but the first few words after the quiet spell
  t.same(got.chans.slice(got.chans.length - k), want.chans.slice(want.chans.length - k), 'the words after the quiet spell come through');
  for (let i = 1; i < got.times.length; i++) if (got.times[i] < got.times[i - 1]) t.fail(`time order broken at ${i}`);
});
