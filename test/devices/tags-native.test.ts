// Property test: the Rust tag-record decoder and encoder (native/core/src/lab_tagger.rs) give the
// same batches as the TypeScript ones (src/devices/tags.ts: TagRecordDecoder with native: false,
// encodeTimeTags), bit for bit, on random record streams: mostly time tags (any 64-bit time,
// channels 0-255), in-band events (overflow begin/end, missed events, errors), malformed records
// (unknown type, reserved byte set, channel outside 0-255, negative channel), split into random
// transfers (records straddling transfers, unaligned buffers). And the emulated tagger's merge of
// channels with unequal delays (src/devices/emulated/delay-merge.ts): Rust vs the TypeScript
// reference, the same released records and held counts after every pull and flush.
import t, { type Test } from 'tap';
import { decodeTagRecordsSlow, encodeTagRecords, encodeTimeTags, encodeTimeTagsNative, TagRecordDecoder, type TagRecord } from '../../src/devices/tags.ts';
import type { TagStreamBatch } from '../../src/devices/types.ts';
import { DelayMergeTs, nativeDelayMerge } from '../../src/devices/emulated/delay-merge.ts';

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32; };
}

function randomRecord(r: () => number, t0: bigint): TagRecord {
  const u = r();
  const time = t0 + BigInt(Math.floor(r() * 1e6)) - (r() < 0.01 ? BigInt(Math.floor(r() * 2 ** 52)) * 4096n : 0n);
  if (u < 0.9) return { type: 0, missedEvents: 0, channel: Math.floor(r() * 256), timePs: time };
  if (u < 0.95) return { type: 1 + Math.floor(r() * 4), missedEvents: Math.floor(r() * 65536), channel: Math.floor(r() * 8), timePs: time };
  if (u < 0.97) return { type: Math.floor(r() * 256), missedEvents: Math.floor(r() * 65536), channel: Math.floor(r() * 300), timePs: time };
  if (u < 0.985) return { type: 0, reserved: 1 + Math.floor(r() * 255), missedEvents: 0, channel: 1, timePs: time };
  return { type: 0, missedEvents: 0, channel: r() < 0.5 ? -1 - Math.floor(r() * 1e6) : 256 + Math.floor(r() * 1e9), timePs: time };
}

function same(t: Test, what: string, a: TagStreamBatch, b: TagStreamBatch): boolean {
  const ok = a.seq === b.seq && Buffer.from(a.timePs.buffer, a.timePs.byteOffset, a.timePs.byteLength).equals(Buffer.from(b.timePs.buffer, b.timePs.byteOffset, b.timePs.byteLength))
    && Buffer.from(a.channel).equals(Buffer.from(b.channel)) && a.timePs.length === b.timePs.length
    && JSON.stringify(a.events, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) === JSON.stringify(b.events, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
  if (!ok) t.fail(`${what}: native and TypeScript batches differ`);
  return ok;
}

for (let s = 1; s <= 30; s++) {
  t.test(`decoder, seed ${s}`, async (t) => {
    const r = rng(s * 7717);
    const n = Math.floor(r() * 20000);
    const recs: TagRecord[] = [];
    let t0 = BigInt(Math.floor(r() * 2 ** 50));
    for (let i = 0; i < n; i++) { recs.push(randomRecord(r, t0)); t0 += 1000n; }
    const bytes = encodeTagRecords(recs);
    const nat = new TagRecordDecoder(), ts = new TagRecordDecoder({ native: false });
    let ok = true, tags = 0, events = 0;
    for (let at = 0; at < bytes.length && ok;) {
      const k = Math.min(bytes.length - at, r() < 0.3 ? Math.floor(r() * 40) : Math.floor(r() * 70000));
      // an unaligned copy now and then (a transfer buffer at an odd offset)
      const chunk = r() < 0.2 ? new Uint8Array(bytes.subarray(at, at + k).length + 3).subarray(3) : bytes.subarray(at, at + k);
      if (chunk !== bytes.subarray(at, at + k) && chunk.byteOffset === 3) chunk.set(bytes.subarray(at, at + k));
      at += k;
      const a = nat.push(chunk), b = ts.push(chunk);
      ok = same(t, `chunk at ${at}`, a, b);
      tags += a.timePs.length; events += a.events.length;
    }
    // and the whole stream against the slow reference's record list
    const slow = decodeTagRecordsSlow(bytes);
    t.ok(ok, `${n} records: ${tags} tags, ${events} events identical`);
    t.equal(tags + events, slow.length, 'every record is a tag or an event');
  });
}

t.test('encoder', async (t) => {
  const r = rng(5);
  for (let s = 0; s < 20; s++) {
    const n = Math.floor(r() * 5000);
    const time = BigInt64Array.from({ length: n }, () => BigInt(Math.floor((r() * 2 - 1) * 2 ** 53)) * BigInt(1 + Math.floor(r() * 512)));
    const ch = Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
    const delay = s % 3 === 0 ? 0n : BigInt(Math.floor((r() * 2 - 1) * 1e9));
    const shifted = BigInt64Array.from(time, (x) => BigInt.asIntN(64, x + delay));
    const ref = new Uint8Array(n * 16);
    encodeTimeTags(shifted, ch, 0, n, ref);
    t.ok(Buffer.from(encodeTimeTagsNative(time, ch, delay)).equals(Buffer.from(ref)), `${n} tags, delay ${delay}`);
  }
});

t.test('delay merge: native equals the TypeScript reference', async (t) => {
  const r = rng(1515);
  let pulls = 0, records = 0;
  for (let s = 0; s < 40; s++) {
    const nat = nativeDelayMerge(), ts = new DelayMergeTs();
    const chans = 1 + Math.floor(r() * 8);
    // Delays: up to ±1 ms, some channels sharing one, sometimes a tagger with fewer delay entries
    // than channels in the stream (those are not shifted).
    const spread = [10, 1e4, 1e6, 1e9][s % 4];
    let delays = Array.from({ length: chans }, () => BigInt(Math.floor((r() * 2 - 1) * spread)));
    const nDelays = r() < 0.2 ? Math.max(1, chans - 2) : chans;
    let t0 = s % 5 === 0 ? BigInt(Math.floor(r() * 2 ** 52)) * 4096n : BigInt(Math.floor(r() * 1e12)) - 500_000_000n;
    for (let k = 0; k < 25; k++) {
      if (r() < 0.15) delays = delays.map((d) => (r() < 0.3 ? BigInt(Math.floor((r() * 2 - 1) * spread)) : d));
      if (r() < 0.1) {
        const a = nat.flush(), b = ts.flush();
        if (!Buffer.from(a).equals(Buffer.from(b))) { t.fail(`seed ${s}, pull ${k}: flush differs`); return; }
        records += a.length / 16;
        continue;
      }
      const n = 1 + Math.floor(r() * (r() < 0.3 ? 5 : 5000));
      const gap = [1, 50, 3000, 1e6][Math.floor(r() * 4)];
      const times = new BigInt64Array(n), ch = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        t0 += BigInt(r() < 0.2 ? 0 : Math.floor(r() * gap)); // equal times now and then
        times[i] = t0;
        ch[i] = Math.floor(r() * chans);
      }
      const d = delays.slice(0, nDelays);
      const a = nat.push(times, ch, d), b = ts.push(times, ch, d);
      pulls++;
      records += a.length / 16;
      if (!Buffer.from(a).equals(Buffer.from(b)) || nat.held !== ts.held) {
        t.fail(`seed ${s}, pull ${k}: released ${a.length / 16} vs ${b.length / 16} records, held ${nat.held} vs ${ts.held}`);
        return;
      }
    }
    const a = nat.flush(), b = ts.flush();
    if (!Buffer.from(a).equals(Buffer.from(b))) { t.fail(`seed ${s}: final flush differs`); return; }
    records += a.length / 16;
    nat.push(BigInt64Array.of(5n), Uint8Array.of(0), [100n, 0n]);
    t.equal(nat.held, 1, 'a tag that a later pull could precede is held');
    nat.clear();
    t.equal(nat.held, 0, 'clear drops it');
  }
  t.pass(`${pulls} pulls, ${records} records identical`);
});

t.test('delay merge: released records are the sorted shifted tags', async (t) => {
  const m = nativeDelayMerge();
  const times = BigInt64Array.of(1000n, 1100n, 1200n, 1300n), ch = Uint8Array.of(1, 0, 1, 0);
  const dec = (b: Uint8Array) => decodeTagRecordsSlow(b).map((x) => [Number(x.timePs), x.channel]);
  t.same(dec(m.push(times, ch, [0n, 250n])), [[1100, 0], [1250, 1], [1300, 0]], 'up to the horizon (last raw + smallest delay)');
  t.equal(m.held, 1);
  t.same(dec(m.flush()), [[1450, 1]], 'the held tag on flush');
  t.throws(() => m.push(times, ch.subarray(1), [0n]), { code: 'TAG_BAD_ARG' }, 'columns of different lengths refused');
});
