import t from 'tap';
import { Packr } from 'msgpackr';
import { decodeHeader, encodeHeader, FLAG, flagNames, LAYOUT, STREAM_SCHEMA_VERSION, type FrameHeader } from '../../src/stream/frame.ts';
import { StreamConsumer } from '../../src/stream/consumer.ts';
import { ProtocolError } from '../../src/errors.ts';

const header = (over: Partial<FrameHeader> = {}): FrameHeader => ({
  version: STREAM_SCHEMA_VERSION, streamId: 'bob/tagger0', seq: 7, epochPs: -(2n ** 62n) + 5n, firstPs: 2n ** 63n - 1n,
  count: 3, layout: LAYOUT.TAGS_I64, flags: FLAG.OVERFLOW, droppedBefore: 2,
  events: [{ type: 2, index: 1, channel: 3, timePs: 123456789012345n, missedEvents: 0 }, { type: 4, index: 2, channel: 1, timePs: -5n, missedEvents: 65535 }],
  ...over,
});

t.test('header round trip keeps every field, int64 extremes exact', async (t) => {
  for (const h of [header(), header({ seq: 2 ** 40, events: [], layout: LAYOUT.PULSES_U64, epochPs: 0n, firstPs: 0n, flags: 0, droppedBefore: 0 })]) {
    t.same(decodeHeader(encodeHeader(h)), h);
  }
});

t.test('an unknown schema version is refused with a clear error', async (t) => {
  const p = new Packr({ useRecords: false });
  const v2 = p.pack([2, 's', 0, 0, 0, 0, 1, 0, 0, []]);
  let err: unknown;
  try { decodeHeader(v2); } catch (e) { err = e; }
  t.ok(err instanceof ProtocolError, 'ProtocolError');
  t.match(err, { code: 'STREAM_SCHEMA_VERSION', message: /version 2 is not supported.*reads version 1/ });
  t.throws(() => decodeHeader(Buffer.from([0xc1])), { code: 'STREAM_BAD_FRAME' });
  t.throws(() => decodeHeader(p.pack({ v: 1 })), { code: 'STREAM_BAD_FRAME' });
  t.throws(() => decodeHeader(p.pack([1, 's', 0, 0, 0, 0, 9, 0, 0, []])), { code: 'STREAM_BAD_FRAME' }, 'unknown layout');
});

t.test('consumer refuses malformed batches and keeps going', async (t) => {
  const c = await StreamConsumer.open({ endpoint: `inproc://frame-${process.pid}`, bind: true, ingest: null });
  t.teardown(() => c.close());
  const h = header({ events: [], flags: 0, droppedBefore: 0, seq: 0 });
  t.throws(() => c.process([encodeHeader(h), Buffer.alloc(24)]), { code: 'STREAM_BAD_FRAME' }, 'missing frame');
  t.throws(() => c.process([encodeHeader(h), Buffer.alloc(23), Buffer.alloc(3)]), { code: 'STREAM_BAD_FRAME' }, 'truncated data');
  const v2 = new Packr({ useRecords: false }).pack([2, 's', 0, 0, 0, 0, 1, 0, 0, []]);
  t.throws(() => c.process([v2, Buffer.alloc(0), Buffer.alloc(0)]), { code: 'STREAM_SCHEMA_VERSION' });
  t.equal(c.stats.refused, 3);
  const ok = c.process([encodeHeader(h), Buffer.alloc(24), Buffer.alloc(3)]);
  t.equal(ok.count, 3);
  t.equal(ok.tainted, false);
});

t.test('gaps, duplicates and restarts are marked from the sequence numbers', async (t) => {
  const c = await StreamConsumer.open({ endpoint: `inproc://seq-${process.pid}`, bind: true, ingest: null });
  t.teardown(() => c.close());
  const msg = (seq: number, flags = 0) => [encodeHeader(header({ seq, events: [], flags, droppedBefore: 0, count: 1 })), Buffer.alloc(8), Buffer.alloc(1)];
  t.equal(c.process(msg(0)).flags, 0);
  t.equal(c.process(msg(1)).flags, 0);
  const g = c.process(msg(4));
  t.ok(g.flags & FLAG.GAP);
  t.equal(g.missingBefore, 2);
  t.ok(g.tainted);
  const d = c.process(msg(3));
  t.ok(d.flags & FLAG.REORDERED, 'late batch marked reordered');
  t.equal(c.process(msg(5)).flags, 0, 'stream continues after the late one');
  t.ok(c.process(msg(0)).flags & FLAG.RESTART);
  t.same(flagNames(FLAG.GAP | FLAG.OVERFLOW), ['OVERFLOW', 'GAP']);
  t.match(c.stats, { gaps: 1, missingBatches: 2, reordered: 1, restarts: 1 });
});
