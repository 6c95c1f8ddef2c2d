// Property test: the Rust tag-record decoder and encoder (native/core/src/lab_tagger.rs) give the
// same batches as the TypeScript ones (src/devices/tags.ts: TagRecordDecoder with native: false,
// encodeTimeTags), bit for bit, on random record streams: mostly time tags (any 64-bit time,
// channels 0-255), in-band events (overflow begin/end, missed events, errors), malformed records
// (unknown type, reserved byte set, channel outside 0-255, negative channel), split into random
// transfers (records straddling transfers, unaligned buffers).
import t, { type Test } from 'tap';
import { decodeTagRecordsSlow, encodeTagRecords, encodeTimeTags, encodeTimeTagsNative, TagRecordDecoder, type TagRecord } from '../../src/devices/tags.ts';
import type { TagStreamBatch } from '../../src/devices/types.ts';

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
