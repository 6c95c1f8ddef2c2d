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
