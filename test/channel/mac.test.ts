/**
 * Known-answer vectors computed by an independent Python implementation (docs/channel.md,
 * appendix), then differential tests: native (fast and portable paths) vs the BigInt reference
 * in src/channel/reference.ts on random inputs; and the Wegman–Carter rules (replay, tampering,
 * exhaustion, no pad reuse across restarts).
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Authenticator, gf128Mul, polyHash } from '../../src/core/auth.ts';
import { gfMulRef, bytesToBig, bigToBytes16, polyHashRef, tagRef } from '../../src/channel/reference.ts';
import { SecurityError } from '../../src/errors.ts';

function stream(label: string, n: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; parts.length * 32 < n; i++) {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(i);
    parts.push(createHash('sha256').update(Buffer.concat([Buffer.from(label), c])).digest());
  }
  return Buffer.concat(parts).subarray(0, n);
}
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// [case, direction, hash hex, tag hex] from /docs/channel.md's Python script.
const KAT: [number, 0 | 1, string, string][] = [
  [0, 0, '00000000000000000000000000000000', '2a008307b04e9c7919b43d9c3eadacc3'],
  [0, 1, '00000000000000000000000000000000', 'd9499ed1d0b3596393152a1ed62832c0'],
  [1, 0, '8c238bab0d712d6bc6e2382e7af90253', 'ed02a13477c5d0f8153bf11b4ad5ed9c'],
  [1, 1, '8c238bab0d712d6bc6e2382e7af90253', '6691f52b9732f24cabd842cef6986e55'],
  [2, 0, 'c56ca4b729d6de7abdb93e12559254ff', 'ad22112c89b293f1338eccfbef10e7aa'],
  [2, 1, 'c56ca4b729d6de7abdb93e12559254ff', '2a041a06fdda4f0d9810d7009aa326fa'],
  [3, 0, 'ae4ad4396cbc9be55ac926aa42041b2e', '24a1d31737b659ca8406dcd22efc3ad1'],
  [3, 1, 'ae4ad4396cbc9be55ac926aa42041b2e', '3c1a695a1c018c305777deaaef374106'],
  [4, 0, '43188db6700969a34d8d7973219f3936', '38c2a4dbe37fe6401ffc0e0888617ee6'],
  [4, 1, '43188db6700969a34d8d7973219f3936', '98a388377c0939511daf4390dbe6541b'],
  [5, 0, 'a669dc0af7189633e1652a42ddce8fe1', '5acd3e9e332e2d0a5756fa2016ad375a'],
  [5, 1, 'a669dc0af7189633e1652a42ddce8fe1', '8e1750510576acbc206c97f30a7b0ba3'],
];
const psk = stream('qkd-auth-kat-psk', 16 + 32 * 8);
const cases: [Buffer, Buffer][] = [
  [Buffer.alloc(0), Buffer.alloc(0)], [Buffer.from('a'), Buffer.alloc(0)], [Buffer.alloc(0), Buffer.from('abc')],
  [stream('A', 16), stream('D', 16)], [stream('A2', 33), stream('D2', 100)], [Buffer.from('hdr'), stream('D3', 1000)],
];

t.test('known-answer vectors (independent Python implementation)', async (t) => {
  const alice = Authenticator.fromPsk(psk, 'alice');
  const bob = Authenticator.fromPsk(psk, 'bob');
  for (const [i, d, h, tag] of KAT) {
    const [a, m] = cases[i];
    for (const portable of [false, true]) t.equal(hex(polyHash(psk.subarray(0, 16), a, m, portable)), h, `hash case ${i} portable=${portable}`);
    t.equal(hex(polyHashRef(psk.subarray(0, 16), a, m)), h, `BigInt reference case ${i}`);
    t.equal(hex((d === 0 ? alice : bob).sign(i, a, m)), tag, `tag case ${i} dir ${d}`);
    t.equal(hex(tagRef(psk, d, i, a, m)), tag);
  }
});

t.test('GF(2^128) multiply: native fast and portable paths vs BigInt reference', async (t) => {
  let bad = 0;
  for (let i = 0; i < 300; i++) {
    const a = randomBytes(16);
    const b = randomBytes(16);
    if (i === 0) a.fill(0xff);
    const want = hex(bigToBytes16(gfMulRef(bytesToBig(a), bytesToBig(b))));
    if (hex(gf128Mul(a, b, false)) !== want || hex(gf128Mul(a, b, true)) !== want) bad++;
  }
  t.equal(bad, 0);
});

t.test('polynomial hash: native vs reference on random lengths; tags verify only for the exact message', async (t) => {
  let bad = 0;
  for (let i = 0; i < 60; i++) {
    const k = randomBytes(16);
    const a = randomBytes(i % 41);
    const m = randomBytes((i * 37) % 300);
    const want = hex(polyHashRef(k, a, m));
    if (hex(polyHash(k, a, m)) !== want || hex(polyHash(k, a, m, true)) !== want) bad++;
  }
  t.equal(bad, 0);
  const key = randomBytes(16 + 32 * 200);
  const al = Authenticator.fromPsk(key, 'alice');
  const bo = Authenticator.fromPsk(key, 'bob');
  bo.usePortable(true);
  for (let n = 0; n < 50; n++) {
    const aad = randomBytes(20);
    const msg = randomBytes(n * 7);
    const tag = al.sign(n, aad, msg);
    // one random bit flip somewhere in aad, msg or tag must be refused, then the genuine one accepted
    const which = n % 3;
    const bufs = [Buffer.from(aad), Buffer.from(msg), Buffer.from(tag)];
    const target = bufs[which].length ? bufs[which] : bufs[2];
    const bit = n * 13 % (target.length * 8);
    target[bit >> 3] ^= 1 << (bit & 7);
    t.throws(() => bo.verify(n, bufs[0], bufs[1], bufs[2]), { code: 'AUTH_TAG_MISMATCH' });
    bo.verify(n, aad, msg, tag);
  }
  t.equal(bo.stats().rejected, 50);
  t.equal(bo.stats().verified, 50);
});

t.test('replay, reorder, truncation, wrong direction, exhaustion', async (t) => {
  const key = randomBytes(16 + 32 * 4);
  const al = Authenticator.fromPsk(key, 'alice');
  const bo = Authenticator.fromPsk(key, 'bob');
  const t0 = al.sign(0, Buffer.from('h'), Buffer.from('m0'));
  const t1 = al.sign(1, Buffer.from('h'), Buffer.from('m1'));
  bo.verify(1, Buffer.from('h'), Buffer.from('m1'), t1);
  let err: unknown;
  try { bo.verify(0, Buffer.from('h'), Buffer.from('m0'), t0); } catch (e) { err = e; }
  t.ok(err instanceof SecurityError, 'reordered message is a SecurityError');
  t.match(err, { code: 'AUTH_REPLAY' });
  t.throws(() => bo.verify(1, Buffer.from('h'), Buffer.from('m1'), t1), { code: 'AUTH_REPLAY' });
  const t2 = al.sign(2, Buffer.from('h'), Buffer.from('message'));
  t.throws(() => bo.verify(2, Buffer.from('h'), Buffer.from('messag'), t2), { code: 'AUTH_TAG_MISMATCH' }, 'truncated');
  t.throws(() => bo.verify(2, Buffer.from('h'), Buffer.from('message'), t2.subarray(0, 15)), { code: 'AUTH_TAG_MISMATCH' }, 'short tag');
  // Bob's own direction-1 tag replayed to Alice as if... Alice refuses a tag made with another pad
  const b2 = bo.sign(2, Buffer.from('h'), Buffer.from('message'));
  t.throws(() => bo.verify(2, Buffer.from('h'), Buffer.from('message'), b2), { code: 'AUTH_TAG_MISMATCH' }, 'reflected');
  al.sign(3, Buffer.alloc(0), Buffer.alloc(0));
  t.throws(() => al.sign(4, Buffer.alloc(0), Buffer.alloc(0)), { code: 'AUTH_KEY_EXHAUSTED' });
  t.throws(() => al.sign(3, Buffer.alloc(0), Buffer.alloc(0)), { code: 'AUTH_SEQ_REUSE' });
  const more = randomBytes(64);
  al.replenish(more);
  bo.replenish(more);
  const t4 = al.sign(4, Buffer.alloc(0), Buffer.from('x'));
  bo.verify(4, Buffer.alloc(0), Buffer.from('x'), t4);
  t.equal(al.stats().replenishedBits, 512);
  t.equal(al.stats().usedBits, 5 * 128);
});

t.test('state file: import shreds the PSK, a restart never reuses a pad', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-mac-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = randomBytes(16 + 32 * 1000);
  writeFileSync(join(dir, 'psk'), key);
  const bo = Authenticator.fromPsk(key, 'bob');
  const stateKey = randomBytes(32);
  let al = Authenticator.open({ role: 'alice', statePath: join(dir, 'a.state'), stateKey, pskPath: join(dir, 'psk') });
  t.notOk(existsSync(join(dir, 'psk')), 'pre-shared secret file removed after import');
  const tags = new Set<string>();
  for (let n = 0; n < 3; n++) {
    const tag = al.sign(al.nextSendSeq, Buffer.alloc(0), Buffer.from('same'));
    tags.add(hex(tag));
    bo.verify(n, Buffer.alloc(0), Buffer.from('same'), tag);
  }
  al = Authenticator.open({ role: 'alice', statePath: join(dir, 'a.state'), stateKey }); // crash + restart
  const n = al.nextSendSeq;
  t.ok(n >= 3, `resumes at ${n}`);
  const tag = al.sign(n, Buffer.alloc(0), Buffer.from('same'));
  t.notOk(tags.has(hex(tag)), 'fresh pad');
  bo.verify(n, Buffer.alloc(0), Buffer.from('same'), tag);
  t.throws(() => Authenticator.open({ role: 'bob', statePath: join(dir, 'a.state'), stateKey }), { code: 'AUTH_BAD_KEY' });
  t.throws(() => Authenticator.open({ role: 'alice', statePath: join(dir, 'a.state'), stateKey: randomBytes(32) }), { code: 'AUTH_BAD_KEY' }, 'wrong state key');
  t.throws(() => Authenticator.open({ role: 'bob', statePath: join(dir, 'none.state'), stateKey }), { code: 'AUTH_NO_KEY' });
});
