import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StreamPublisher } from '../../src/stream/publisher.ts';
import { StreamConsumer, view64 } from '../../src/stream/consumer.ts';
import { FLAG, LAYOUT } from '../../src/stream/frame.ts';
import { syntheticBatch } from '../../src/stream/replay.ts';
import { Ingest } from '../../src/core/ingest.ts';

const pid = process.pid;

/** Slow obvious reference of the native ingest: counts and phase histogram per channel. */
function reference(epoch: bigint, rel: BigInt64Array, ch: Uint8Array, shift: number, bins: number) {
  const counts = new Array(256).fill(0);
  const hist = new Map<number, number[]>();
  let viol = 0;
  let prev: bigint | null = null;
  for (let i = 0; i < rel.length; i++) {
    const tt = epoch + rel[i];
    if (prev !== null && tt < prev) viol++;
    prev = tt;
    counts[ch[i]]++;
    const h = hist.get(ch[i]) ?? new Array(bins).fill(0);
    h[Number((BigInt.asUintN(64, tt) >> BigInt(shift)) % BigInt(bins))]++;
    hist.set(ch[i], h);
  }
  return { counts, hist, viol };
}

t.test('native ingest matches the reference on random batches (counts, histograms, order)', async (t) => {
  const ing = new Ingest({ binShift: 4, bins: 32 });
  const b = syntheticBatch(5000, 42, 300, 5);
  b.relTimesPs[100] = 5n; // one out-of-order event: two violations? no: only the step down counts
  const epoch = 123456789n;
  const r = ing.tags(epoch, new Uint8Array(b.relTimesPs.buffer), b.channels);
  const ref = reference(epoch, b.relTimesPs, b.channels, 4, 32);
  t.equal(r.count, 5000);
  t.equal(r.orderViolations, ref.viol);
  t.equal(ref.viol, 1);
  t.same(ing.channelCounts(), ref.counts);
  for (const [c, h] of ref.hist) t.same(ing.histogram(c), h, `histogram channel ${c}`);
  // across batches: a second batch starting before the end of the first is a violation
  const r2 = ing.tags(epoch, new Uint8Array(new BigInt64Array([1n]).buffer), new Uint8Array([0]));
  t.equal(r2.orderViolations, 1);
  // pulse layouts
  const p = new Ingest({ binShift: 0, bins: 4 });
  const f = new Float64Array([0, 1, 2, 2, 7, 1.5, -1]);
  const pr = p.pulses(new Uint8Array(f.buffer), new Uint8Array(7), true);
  t.equal(pr.invalid, 2, 'non-integer and negative indices flagged');
  t.same(p.histogram(0), [1, 1, 2, 3], 'invalid ones are counted at the previous index');
  t.throws(() => p.pulses(new Uint8Array(15), new Uint8Array(2), false), { code: 'STREAM_BAD_BATCH' });
  t.throws(() => new Ingest({ bins: 3 }), { code: 'STREAM_BAD_BATCH' });
});

async function roundTrip(t: Test, ep: string) {
  const pub = await StreamPublisher.open({ endpoint: ep, streamId: 'rt' });
  const con = await StreamConsumer.open({ endpoint: pub.endpoint ?? ep });
  t.teardown(() => { pub.close(); con.close(); });
  const b = syntheticBatch(10000, 3);
  const events = [{ type: 2 as const, index: 10, channel: 0, timePs: 5n, missedEvents: 0 }, { type: 3 as const, index: 12, channel: 0, timePs: 9n, missedEvents: 0 }];
  await pub.sendTags(1000n, b.relTimesPs, b.channels);
  await pub.sendTags(1000n + b.spanPs, b.relTimesPs, b.channels, events);
  const idx = new BigUint64Array([3n, 4n, 2n ** 60n]);
  await pub.sendPulses(idx, new Uint8Array([1, 2, 3]));
  const a = await con.receive();
  t.equal(a.layout, LAYOUT.TAGS_I64);
  t.same(view64(BigInt64Array, a.data), b.relTimesPs);
  t.same(new Uint8Array(a.channels), b.channels);
  t.equal(a.header.firstPs, 1000n + b.relTimesPs[0]);
  // Over tcp the first send may find no consumer connected yet: that is back-pressure, not taint.
  t.equal(a.flags & ~FLAG.BACKPRESSURE, 0);
  t.notOk(a.tainted);
  const o = await con.receive();
  t.ok(o.flags & FLAG.OVERFLOW, 'overflow marked');
  t.ok(o.tainted);
  t.same(o.header.events, events);
  t.equal(o.ingest?.orderViolations, 0, 'epoch rebasing keeps order across batches');
  const p = await con.receive();
  t.same(view64(BigUint64Array, p.data), idx);
  t.equal(con.stats.batches, 3);
  t.equal(con.ingest?.events, 20003);
}

t.test('round trip in-process (inproc)', (t) => roundTrip(t, `inproc://rt-${pid}`));
// Port chosen by the OS (tcp://127.0.0.1:*): parallel test files never collide.
t.test('round trip over tcp loopback', (t) => roundTrip(t, 'tcp://127.0.0.1:*'));

t.test('order violations inside a batch are marked', async (t) => {
  const ep = `inproc://ov-${pid}`;
  const pub = await StreamPublisher.open({ endpoint: ep, streamId: 'ov' });
  const con = await StreamConsumer.open({ endpoint: ep });
  t.teardown(() => { pub.close(); con.close(); });
  await pub.sendTags(0n, new BigInt64Array([10n, 20n, 15n, 30n]), new Uint8Array(4));
  const b = await con.receive();
  t.ok(b.flags & FLAG.ORDER_VIOLATION);
  t.equal(b.ingest?.orderViolations, 1);
  t.ok(b.tainted);
});

for (const offThread of [false, true]) t.test(`across processes over ipc, native ingest ${offThread ? 'off the JS thread' : 'on the JS thread'} checking every event`, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-stream-'));
  const ep = `ipc://${join(dir, 'ev.ipc')}`;
  const con = await StreamConsumer.open({ endpoint: ep, bind: true, offThread });
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '../../src/stream/replay.ts'), ep, '4096', '20', 'connect'], { stdio: 'inherit' });
  t.teardown(() => { con.close(); child.kill(); rmSync(dir, { recursive: true, force: true }); });
  const ref = syntheticBatch(4096);
  const want = new Array(256).fill(0);
  for (const c of ref.channels) want[c] += 20;
  for (let i = 0; i < 20; i++) {
    const b = await con.receive();
    t.equal(b.seq, i);
    t.notOk(b.tainted);
  }
  t.equal(con.ingest?.events, 4096 * 20);
  t.equal(con.ingest?.orderViolations, 0);
  t.same(con.ingest?.channelCounts(), want);
  const code = await new Promise((r) => child.on('exit', r));
  t.equal(code, 0);
});

t.test('back-pressure: a producer that had to wait marks its batches', async (t) => {
  const ep = `inproc://bp-${pid}`;
  const pub = await StreamPublisher.open({ endpoint: ep, streamId: 'bp', sendHighWaterMark: 1 });
  const con = await StreamConsumer.open({ endpoint: ep, receiveHighWaterMark: 1 });
  t.teardown(() => { pub.close(); con.close(); });
  const b = syntheticBatch(64);
  const sending = (async () => { for (let i = 0; i < 6; i++) await pub.sendTags(BigInt(i) * b.spanPs, b.relTimesPs, b.channels); })();
  await new Promise((r) => setTimeout(r, 100)); // consumer stalls; the queue (2 batches) fills
  const got = [];
  for (let i = 0; i < 6; i++) got.push(await con.receive());
  await sending;
  t.ok(pub.stats.backpressure >= 1, `producer saw ${pub.stats.backpressure} full queues`);
  t.equal(got.filter((g) => g.flags & FLAG.BACKPRESSURE).length, pub.stats.backpressure, 'every stalled batch is marked');
  t.equal(got.filter((g) => g.flags & FLAG.GAP).length, 0, 'waiting loses nothing');
  t.equal(con.stats.backpressureBatches, pub.stats.backpressure);
});

t.test('back-pressure with drop policy: dropped batches show as GAP and DROPPED_BEFORE', async (t) => {
  const ep = `inproc://drop-${pid}`;
  const pub = await StreamPublisher.open({ endpoint: ep, streamId: 'drop', sendHighWaterMark: 1, onBackpressure: 'drop' });
  const con = await StreamConsumer.open({ endpoint: ep, receiveHighWaterMark: 1 });
  t.teardown(() => { pub.close(); con.close(); });
  await new Promise((r) => setTimeout(r, 50)); // let the connection form: with no consumer at all, everything is dropped
  const b = syntheticBatch(16);
  const results = [];
  for (let i = 0; i < 6; i++) results.push(await pub.sendTags(BigInt(i) * b.spanPs, b.relTimesPs, b.channels));
  const dropped = results.filter((r) => r === 'dropped').length;
  t.ok(dropped >= 1 && dropped < 6, `${dropped} dropped: ${results.join(' ')}`);
  const within = (ms: number) => Promise.race([con.receive(), new Promise<null>((r) => setTimeout(() => r(null), ms))]);
  const got = [];
  for (let i = 0; i < 6 - dropped; i++) {
    const g = await within(2000);
    if (!g) break;
    got.push(g);
  }
  t.equal(got.length, 6 - dropped, `received every batch sent (seqs ${got.map((g) => g.seq).join(',')})`);
  let r = await pub.sendTags(6n * b.spanPs, b.relTimesPs, b.channels); // the next one carries the mark
  for (let i = 0; r === 'dropped' && i < 20; i++) {
    await new Promise((res) => setTimeout(res, 20));
    r = await pub.sendTags(6n * b.spanPs, b.relTimesPs, b.channels);
  }
  const last = await within(2000);
  t.ok(last, `marked batch arrives (send: ${r})`);
  if (!last) return;
  t.ok(last.flags & FLAG.DROPPED_BEFORE);
  t.ok(last.flags & FLAG.GAP);
  t.equal(con.stats.missingBatches, pub.stats.dropped, 'every dropped batch is accounted for as missing');
  t.equal(last.header.droppedBefore, last.missingBefore, "the producer's drop count and the consumer's gap agree");
});
