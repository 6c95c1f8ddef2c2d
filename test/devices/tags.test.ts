import t from 'tap';
import { TagRecordDecoder, decodeTagRecordsSlow, encodeTagRecords, encodeTimeTags, TAG_RECORD_BYTES, type TagRecord } from '../../src/devices/tags.ts';
import { encodeBatch } from '../../src/devices/record.ts';
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

t.test('known answer: one record of each type, byte for byte', async (t) => {
  const bytes = encodeTagRecords([
    { type: 0, missedEvents: 0, channel: 3, timePs: 0x0102030405060708n },
    { type: 4, missedEvents: 0x1234, channel: -2, timePs: -1n },
  ]);
  t.equal(Buffer.from(bytes).toString('hex'),
    '00000000' + '03000000' + '0807060504030201' +
    '04003412' + 'feffffff' + 'ffffffffffffffff');
  const b = new TagRecordDecoder().push(bytes);
  t.same(Array.from(b.timePs), [0x0102030405060708n]);
  t.same(Array.from(b.channel), [3]);
  t.same(b.events, [{ type: 4, index: 1, channel: -2, timePs: -1n, missedEvents: 0x1234 }]);
});

/** Random mix of tags and in-band records, including malformed ones. */
function randomRecords(r: () => number, n: number): TagRecord[] {
  const out: TagRecord[] = [];
  let t = BigInt(Math.floor(r() * 1e12));
  for (let i = 0; i < n; i++) {
    t += BigInt(Math.floor(r() * 1e6));
    const u = r();
    if (u < 0.9) out.push({ type: 0, missedEvents: 0, channel: Math.floor(r() * 8), timePs: t });
    else if (u < 0.95) out.push({ type: 2 + Math.floor(r() * 3), missedEvents: Math.floor(r() * 65536), channel: Math.floor(r() * 8), timePs: t });
    else if (u < 0.97) out.push({ type: 1, missedEvents: 0, channel: 0, timePs: t });
    else if (u < 0.98) out.push({ type: 9, missedEvents: 0, channel: 1, timePs: t }); // unknown type
    else if (u < 0.99) out.push({ type: 0, missedEvents: 0, channel: 300, timePs: t }); // channel out of byte range
    else out.push({ type: 0, reserved: 7, missedEvents: 0, channel: 2, timePs: t }); // reserved byte set
  }
  return out;
}

/** Slow reference for what the decoder must output. */
function reference(recs: TagRecord[]) {
  const times: bigint[] = [];
  const chans: number[] = [];
  const events: { type: number; index: number; channel: number; timePs: bigint; missedEvents: number }[] = [];
  for (const r of recs) {
    const plain = r.type === 0 && (r.reserved ?? 0) === 0 && r.missedEvents === 0 && r.channel >= 0 && r.channel <= 255;
    if (plain) {
      times.push(r.timePs);
      chans.push(r.channel);
    } else {
      const ok = r.type >= 1 && r.type <= 4 && (r.reserved ?? 0) === 0;
      events.push({ type: ok ? r.type : 1, index: times.length, channel: r.channel, timePs: r.timePs, missedEvents: r.missedEvents });
    }
  }
  return { times, chans, events };
}

t.test('property: decoder equals the slow reference for any split of the byte stream', async (t) => {
  const r = rng(42);
  for (let trial = 0; trial < 30; trial++) {
    const recs = randomRecords(r, 1 + Math.floor(r() * 3000));
    const bytes = encodeTagRecords(recs);
    t.same(decodeTagRecordsSlow(bytes).map((x) => ({ ...x, reserved: x.reserved || undefined })), recs.map((x) => ({ ...x, reserved: x.reserved || undefined })), 'slow decode inverts encode');
    const ref = reference(recs);
    // Split at random points, including inside records and at odd offsets (misaligned views).
    const dec = new TagRecordDecoder();
    const times: bigint[] = [];
    const chans: number[] = [];
    const events: any[] = [];
    let at = 0;
    let seq = 0;
    while (at < bytes.length) {
      const len = Math.min(bytes.length - at, 1 + Math.floor(r() * 700));
      const padded = new Uint8Array(len + 3);
      padded.set(bytes.subarray(at, at + len), 3);
      const b = dec.push(padded.subarray(3));
      t.equal(b.seq, seq++);
      for (const e of b.events) events.push({ ...e, index: e.index + times.length });
      times.push(...b.timePs);
      chans.push(...b.channel);
      at += len;
    }
    t.equal(dec.pendingBytes, 0);
    t.same(times, ref.times, `trial ${trial}: times`);
    t.same(chans, ref.chans, `trial ${trial}: channels`);
    t.same(events, ref.events, `trial ${trial}: events in band at the right positions`);
  }
});

t.test('a partial record waits for the rest', async (t) => {
  const bytes = encodeTagRecords([{ type: 0, missedEvents: 0, channel: 1, timePs: 77n }]);
  const d = new TagRecordDecoder();
  t.equal(d.push(bytes.subarray(0, 5)).timePs.length, 0);
  t.equal(d.pendingBytes, 5);
  t.same(Array.from(d.push(bytes.subarray(5)).timePs), [77n]);
});

t.test('fast encoder matches the slow one', async (t) => {
  const r = rng(7);
  const n = 1000;
  const times = BigInt64Array.from({ length: n }, () => BigInt(Math.floor(r() * 2 ** 52)) * (r() < 0.5 ? -1n : 1n));
  const chans = Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
  const fast = new Uint8Array(n * TAG_RECORD_BYTES);
  encodeTimeTags(times, chans, 0, n, fast);
  const slow = encodeTagRecords(Array.from(times, (tp, i) => ({ type: 0, missedEvents: 0, channel: chans[i], timePs: tp })));
  t.same(Buffer.from(fast), Buffer.from(slow));
  // Unaligned output goes through the DataView path and gives the same bytes.
  const un = new Uint8Array(n * TAG_RECORD_BYTES + 4).subarray(4);
  encodeTimeTags(times, chans, 0, n, un);
  t.same(Buffer.from(un), Buffer.from(slow));
});

t.test('encodeBatch round-trips a decoded batch with events', async (t) => {
  const r = rng(9);
  const recs = randomRecords(r, 500).filter((x) => (x.type === 0 && x.channel <= 255 && !x.reserved) || (x.type >= 1 && x.type <= 4));
  const b = new TagRecordDecoder().push(encodeTagRecords(recs));
  const again: TagStreamBatch = new TagRecordDecoder().push(encodeBatch(b));
  t.same(Array.from(again.timePs), Array.from(b.timePs));
  t.same(again.events, b.events);
});
