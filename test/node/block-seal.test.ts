// Sealed block outputs are released exactly once, whatever moment a crash interrupts a release.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { BlockReleaser, SealedBlocks, type ReleaseTargets } from '../../src/node/block-seal.ts';

/** The channel pool and the spool as durable counters (what survives a crash). */
function targets(opts: { failOffer?: boolean } = {}) {
  const s = { replenished: 0, replenishCalls: [] as number[], offers: [] as { tag: number; len: number }[], lastTag: undefined as number | undefined };
  const to: ReleaseTargets = {
    replenishedBits: () => s.replenished,
    replenish: (bytes, bits) => {
      s.replenished += (bits >> 3) * 8;
      s.replenishCalls.push(bytes.length);
    },
    lastOfferTag: () => s.lastTag,
    offer: async (bytes, _p, tag) => {
      if (opts.failOffer) throw new Error('crash before the spool write');
      s.offers.push({ tag, len: bytes.length });
      s.lastTag = tag;
    },
  };
  return { s, to };
}

const out = (blockId: number) => ({ blockId, replenish: randomBytes(16), replenishBits: 128, deliverable: randomBytes(64), deliverableBits: 512, provenance: { block_id: blockId } });

t.test('seal, open, release once, in order', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = randomBytes(32);
  const sealed = new SealedBlocks(dir, key);
  const a = out(7);
  const keep = Buffer.from(a.deliverable);
  sealed.seal(a);
  sealed.seal(out(8));
  t.same(sealed.list(), [7, 8]);
  t.same(Buffer.from(sealed.open(7).deliverable), keep, 'the sealed bytes come back');
  const { s, to } = targets();
  const r = new BlockReleaser(sealed, to, (id, e) => t.fail(`${id}: ${e.message}`));
  await Promise.all([r.release(7), r.release(8), r.release(7)]);
  t.same(s.offers.map((o) => o.tag), [7, 8], 'each block offered once, in order');
  t.equal(s.replenishCalls.length, 2);
  t.same(sealed.list(), []);
  t.throws(() => new SealedBlocks(dir, randomBytes(31)), /32 bytes/);
});

t.test('a file sealed under another key or renamed is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  new SealedBlocks(dir, randomBytes(32)).seal(out(1));
  t.throws(() => new SealedBlocks(dir, randomBytes(32)).open(1), { code: 'SEAL_CORRUPT' });
});

t.test('replay after a crash between the pool refill and the spool write: refill not repeated, offer made once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = randomBytes(32);
  const first = targets({ failOffer: true });
  new SealedBlocks(dir, key).seal(out(5));
  let failed = 0;
  await new BlockReleaser(new SealedBlocks(dir, key), first.to, () => failed++).release(5).catch(() => undefined);
  t.equal(first.s.replenishCalls.length, 1, 'refilled before the crash');
  // Restart: same durable pool counter, a working spool.
  const again = targets();
  again.s.replenished = first.s.replenished;
  const sealed = new SealedBlocks(dir, key);
  t.same(sealed.list(), [5], 'still sealed');
  const r = new BlockReleaser(sealed, again.to, (id, e) => t.fail(`${id}: ${e.message}`));
  await r.release(5);
  t.equal(again.s.replenishCalls.length, 0, 'the refill is not repeated');
  t.same(again.s.offers.map((o) => o.tag), [5]);
  t.equal(r.replayedSkips.replenish, 1);
  t.same(sealed.list(), []);
});

t.test('replay after a crash between the spool write and the erase: not offered twice', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = randomBytes(32);
  const sealed = new SealedBlocks(dir, key);
  sealed.seal(out(9));
  const { s, to } = targets();
  // What a completed release left, but the file was not erased yet.
  sealed.setJournal({ blockId: 9, replenishedBefore: 0 });
  s.replenished = 128;
  s.lastTag = 9;
  const r = new BlockReleaser(sealed, to, (id, e) => t.fail(`${id}: ${e.message}`));
  await r.release(9);
  t.same(s.offers, [], 'the spool already had it');
  t.equal(s.replenishCalls.length, 0);
  t.same(r.replayedSkips, { replenish: 1, offer: 1 });
  t.same(sealed.list(), []);
});

t.test('a discarded (aborted) block is erased and never released', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sealed = new SealedBlocks(dir, randomBytes(32));
  sealed.seal(out(3));
  const { s, to } = targets();
  const r = new BlockReleaser(sealed, to, () => undefined);
  r.discard(3);
  await r.settled();
  await r.release(3);
  t.same(s.offers, []);
  t.same(sealed.list(), []);
});

t.test('a full delivery spool holds the block and every later one, in order, until it has room', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sealed = new SealedBlocks(dir, randomBytes(32));
  const { s, to } = targets();
  // The spool's rule: it takes `room` bytes more, then refuses (taking nothing), as DeliveryNode does.
  let room = 64;
  const offer = to.offer;
  to.offer = async (bytes, p, tag) => {
    if (bytes.length > room) throw Object.assign(new Error('the delivery spool is full'), { code: 'DELIVERY_SPOOL_FULL' });
    room -= bytes.length;
    return offer(bytes, p, tag);
  };
  to.wouldTake = (n) => n <= room;
  const events: string[] = [];
  const r = new BlockReleaser(sealed, to, (id, e) => events.push(`error ${id} ${e.message}`), {
    retryMs: 20, onHeld: (id) => events.push(`held ${id}`), onResumed: (id) => events.push(`resumed ${id}`) });
  for (const id of [1, 2, 3]) sealed.seal(out(id));
  const done = [1, 2, 3].map((id) => r.release(id).then(() => events.push(`released ${id}`)));
  await new Promise((res) => setTimeout(res, 150));
  t.same(s.offers.map((o) => o.tag), [1], 'block 1 fits; block 2 is refused');
  t.equal(r.held, 2, 'block 2 is held');
  t.same(sealed.list(), [2, 3], 'blocks 2 and 3 stay sealed');
  t.same(s.replenishCalls.length, 3 - 1, 'block 2 refilled the pool once (block 3 has not started)');
  room = 64; // the KMS took keys: one block fits again
  await new Promise((res) => setTimeout(res, 150));
  t.same(s.offers.map((o) => o.tag), [1, 2], 'block 2 goes in when there is room; block 3, refused, never overtakes it');
  t.equal(r.held, 3);
  room = 1000;
  await Promise.all(done);
  t.same(s.offers.map((o) => o.tag), [1, 2, 3], 'all three, in order');
  t.same(s.replenishCalls.length, 3, 'each block refilled the pool once, retries included');
  t.same(events, ['released 1', 'held 2', 'resumed 2', 'released 2', 'held 3', 'resumed 3', 'released 3']);
  t.same(sealed.list(), []);
});

t.test('stopping while a block is held: it and every later block stay sealed for the next start', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sealed = new SealedBlocks(dir, randomBytes(32));
  const { s, to } = targets();
  const offer = to.offer;
  let full = true;
  to.offer = async (bytes, p, tag) => {
    if (full) throw Object.assign(new Error('the delivery spool is full'), { code: 'DELIVERY_SPOOL_FULL' });
    return offer(bytes, p, tag);
  };
  const errors: string[] = [];
  const r = new BlockReleaser(sealed, to, (_id, e) => errors.push((e as { code?: string }).code ?? e.message), { retryMs: 10_000 });
  for (const id of [4, 5]) sealed.seal(out(id));
  const a = r.release(4);
  const b = r.release(5);
  await new Promise((res) => setTimeout(res, 50));
  const t0 = Date.now();
  r.stop();
  await t.rejects(a, { code: 'RELEASE_STOPPED' }, 'the held release ends at once with a clear reason');
  full = false;
  await t.rejects(b, { code: 'RELEASE_STOPPED' }, 'the later block does not overtake it, even with room');
  t.ok(Date.now() - t0 < 1000, 'stop does not wait for the retry period');
  t.same(s.offers, [], 'nothing offered');
  t.same(sealed.list(), [4, 5], 'both stay sealed');
  t.same(errors, ['RELEASE_STOPPED', 'RELEASE_STOPPED']);
});

t.test('any other release failure halts the releaser: no later block overtakes it; a restart delivers them in order', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = randomBytes(32);
  const sealed = new SealedBlocks(dir, key);
  const { s, to } = targets();
  const offer = to.offer;
  let broken = true;
  to.offer = async (bytes, p, tag) => {
    if (broken && tag === 2) throw Object.assign(new Error('EIO: the spool disk failed'), { code: 'EIO' });
    return offer(bytes, p, tag);
  };
  const failed: string[] = [];
  const errors: string[] = [];
  const r = new BlockReleaser(sealed, to, (id, e) => errors.push(`${id} ${(e as { code?: string }).code}`), { onFailed: (id, e) => failed.push(`${id} ${e.message}`) });
  for (const id of [1, 2, 3]) sealed.seal(out(id));
  await r.release(1);
  await t.rejects(r.release(2), { code: 'EIO' });
  broken = false; // the cause is gone, but this run's releaser stays halted
  await t.rejects(r.release(3), { code: 'RELEASE_HALTED', message: /block 3 not released: the release of block 2 failed \(EIO/ }, 'block 3 does not overtake block 2');
  t.same(failed, ['2 EIO: the spool disk failed'], 'onFailed once, for the block that failed');
  t.same(r.failed?.blockId, 2);
  t.same(errors, ['2 EIO', '3 RELEASE_HALTED']);
  t.same(s.offers.map((o) => o.tag), [1], 'only block 1 offered');
  t.same(sealed.list(), [2, 3], 'blocks 2 and 3 stay sealed');
  // The node restarts: a new releaser replays the sealed blocks in order.
  const again = new BlockReleaser(new SealedBlocks(dir, key), to, () => undefined);
  for (const id of [2, 3]) await again.release(id);
  t.same(s.offers.map((o) => o.tag), [1, 2, 3], 'all three, in order, once');
});
