/**
 * The authenticated channel end to end over tcp loopback, through a fault-injecting relay:
 * request/reply, loss and retries, every kind of tampering refused (block aborted, nothing used),
 * and commit resolution when the commit or its answer is lost.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Authenticator } from '../../src/core/auth.ts';
import { AuthChannel } from '../../src/channel/channel.ts';
import { Relay, type Tamper } from '../../src/channel/mitm.ts';
import { decodeAad, encodeAad, KIND } from '../../src/channel/wire.ts';
import { SecurityError } from '../../src/errors.ts';

async function pair(t: Test, opts: { timeoutMs?: number; pads?: number; keyLowMessages?: number } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-chan-'));
  const psk = randomBytes(16 + 32 * (opts.pads ?? 20000));
  const aAuth = Authenticator.fromPsk(psk, 'alice');
  const stateKey = randomBytes(32);
  aAuth.attachStateFile(join(dir, 'alice.state'), stateKey);
  const bAuth = Authenticator.fromPsk(psk, 'bob');
  bAuth.attachStateFile(join(dir, 'bob.state'), stateKey);
  const bob = await AuthChannel.open({ role: 'bob', endpoint: 'tcp://127.0.0.1:*', bind: true, auth: bAuth, ledgerPath: join(dir, 'bob.ledger'), retryMs: 50, maxRetryMs: 200, timeoutMs: opts.timeoutMs ?? 3000 });
  const relay = await Relay.open(bob.endpoint!);
  const alice = await AuthChannel.open({ role: 'alice', endpoint: relay.aliceEndpoint, bind: false, auth: aAuth, ledgerPath: join(dir, 'alice.ledger'), retryMs: 50, maxRetryMs: 200, timeoutMs: opts.timeoutMs ?? 3000, keyLowMessages: opts.keyLowMessages });
  t.teardown(async () => {
    await alice.close();
    await bob.close();
    relay.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await Promise.all([alice.ready(3000), bob.ready(3000)]);
  const seen: unknown[] = [];
  bob.handle('echo', async (p) => { seen.push(p); return { echo: p }; });
  return { alice, bob, relay, seen };
}

async function until(cond: () => boolean, ms = 2000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 10))) if (cond()) return true;
  return cond();
}

const isReq = (f: Buffer[]) => { try { return decodeAad(f[0]).kind === KIND.REQ; } catch { return false; } };

t.test('typed request/reply with binary payloads; key use accounted', async (t) => {
  const { alice, bob, seen } = await pair(t);
  const syndrome = randomBytes(4096);
  const r = await alice.request<{ echo: { s: Uint8Array; n: number } }>('echo', { s: syndrome, n: 7 }, { blockId: 1 });
  t.ok(Buffer.from(r.echo.s).equals(syndrome), 'Uint8Array field round trips');
  t.equal(r.echo.n, 7);
  const many = await Promise.all(Array.from({ length: 20 }, (_, i) => alice.request<{ echo: number }>('echo', i, { blockId: 1 })));
  t.same(many.map((m) => m.echo), Array.from({ length: 20 }, (_, i) => i), 'concurrent requests matched to their replies');
  t.equal(seen.length, 21);
  const a = alice.stats().auth;
  t.equal(a.usedBits, (a.signed + a.verified) * 128, '128 pad bits per message');
  t.ok(a.signed >= 21 && a.verified >= 21);
  await t.rejects(alice.request('nope', 1), { code: 'CHANNEL_REMOTE_ERROR', remoteCode: 'CHANNEL_NO_HANDLER', message: /CHANNEL_NO_HANDLER/ });
  bob.handle('fail', () => { throw new Error('secret detail 0xdeadbeef'); });
  const e = (await alice.request('fail', 1).catch((x: Error) => x)) as Error;
  t.notMatch(e.message, /deadbeef/, 'non-QkdError details do not cross the channel');
  await alice.commitBlock(1);
  t.ok(alice.ledger.isCommitted(1) && bob.ledger.isCommitted(1), 'both ledgers agree');
  await t.rejects(alice.request('echo', 1, { blockId: 1 }), { code: 'CHANNEL_REMOTE_ERROR', message: /BLOCK_FINISHED/ });
});

t.test('lost request and lost reply: retried, handler runs once', async (t) => {
  const { alice, relay, seen } = await pair(t);
  let dropReq = 1;
  let dropRep = 1;
  relay.tamper = (f, dir) => {
    if (dir === 'toBob' && isReq(f) && dropReq-- > 0) return null;
    if (dir === 'toAlice' && decodeAad(f[0]).kind === KIND.REP && dropRep-- > 0) return null;
    return f;
  };
  const r = await alice.request<{ echo: string }>('echo', 'x', { blockId: 2 });
  t.equal(r.echo, 'x');
  t.equal(seen.length, 1, 'handler ran once despite the retries');
  t.ok(alice.stats().retries >= 2);
});

interface Attack { name: string; code: RegExp; tamper: (f: Buffer[]) => Buffer[] }
const flip = (b: Buffer, i: number) => { const c = Buffer.from(b); c[i % c.length] ^= 0x10; return c; };
const attacks: Attack[] = [
  { name: 'payload bit flipped', code: /AUTH_TAG_MISMATCH/, tamper: (f) => [f[0], flip(f[1], 5), f[2]] },
  { name: 'tag bit flipped', code: /AUTH_TAG_MISMATCH/, tamper: (f) => [f[0], f[1], flip(f[2], 3)] },
  { name: 'payload truncated', code: /AUTH_TAG_MISMATCH/, tamper: (f) => [f[0], f[1].subarray(0, f[1].length - 1), f[2]] },
  { name: 'payload extended', code: /AUTH_TAG_MISMATCH/, tamper: (f) => [f[0], Buffer.concat([f[1], Buffer.from([0])]), f[2]] },
  { name: 'header: block id changed', code: /AUTH_TAG_MISMATCH/, tamper: (f) => { const a = decodeAad(f[0]); return [encodeAad({ ...a, blockId: a.blockId + 1 }), f[1], f[2]]; } },
  { name: 'header: sequence number changed', code: /AUTH_TAG_MISMATCH/, tamper: (f) => { const a = decodeAad(f[0]); return [encodeAad({ ...a, seq: a.seq + 1 }), f[1], f[2]]; } },
  { name: 'header: type changed', code: /AUTH_TAG_MISMATCH/, tamper: (f) => { const a = decodeAad(f[0]); return [encodeAad({ ...a, type: 'echo2' }), f[1], f[2]]; } },
  { name: 'header: direction reflected', code: /AUTH_WRONG_DIRECTION/, tamper: (f) => { const a = decodeAad(f[0]); return [encodeAad({ ...a, direction: 1 }), f[1], f[2]]; } },
  { name: 'tag frame missing', code: /AUTH_MALFORMED/, tamper: (f) => [f[0], f[1]] },
];

for (const atk of attacks) {
  t.test(`tampering refused: ${atk.name}`, async (t) => {
    const { alice, bob, relay, seen } = await pair(t);
    const rejected: string[] = [];
    bob.on('rejected', (r: { code: string }) => rejected.push(r.code));
    let once = 1;
    relay.tamper = (f, dir) => (dir === 'toBob' && isReq(f) && once-- > 0 ? atk.tamper(f) : f);
    const err = await alice.request('echo', { key: 'part' }, { blockId: 9 }).catch((e: Error) => e);
    t.match(err, { code: 'BLOCK_ABORTED' }, 'the request fails with the block aborted');
    t.match(rejected.join(), atk.code);
    t.equal(seen.length, 0, 'the handler never saw the tampered message, nor its retry');
    t.ok(await until(() => bob.isAborted(9) && alice.isAborted(9)), 'block aborted on both sides');
    const ok = await alice.request<{ echo: number }>('echo', 5, { blockId: 100 });
    t.equal(ok.echo, 5, 'a new block works afterwards');
  });
}

t.test('replayed and reordered messages are refused', async (t) => {
  const { alice, bob, relay, seen } = await pair(t);
  const rejected: string[] = [];
  bob.on('rejected', (r: { code: string }) => rejected.push(r.code));
  await alice.request('echo', 'first', { blockId: 20 });
  const old = relay.seen.toBob.filter(isReq).at(-1)!;
  await relay.inject('toBob', old);
  await new Promise((r) => setTimeout(r, 100));
  t.same(rejected, ['AUTH_REPLAY']);
  t.equal(seen.length, 1, 'replay not handled');
  t.ok(bob.isAborted(20), 'block aborted');
  // reorder: hold the first request of block 21, deliver the second, then the first
  let held: Buffer[] | null = null;
  relay.tamper = (f, dir) => {
    if (dir !== 'toBob' || !isReq(f)) return f;
    if (!held) { held = f; return null; }
    const out = [f, held];
    held = Buffer.alloc(0) as unknown as Buffer[]; // hold only once
    return out;
  };
  const a = alice.request('echo', 'A', { blockId: 21 }).catch((e: Error) => e);
  await new Promise((r) => setTimeout(r, 5));
  const b = alice.request('echo', 'B', { blockId: 21 }).catch((e: Error) => e);
  const [ra, rb] = await Promise.all([a, b]);
  t.ok(rejected.includes('AUTH_REPLAY'), 'the older sequence number arriving late is refused');
  t.ok(ra instanceof Error || rb instanceof Error, 'block 21 failed');
  t.ok(bob.isAborted(21));
  t.ok(bob.stats().rejected.AUTH_REPLAY >= 2);
  t.ok(bob.stats().auth.rejected >= 2, 'counted by the native authenticator too');
});

t.test('security aborts surface as SecurityError on the side that saw the forgery', async (t) => {
  const { alice, bob, relay } = await pair(t);
  bob.handle('slowEcho', async (p) => { await new Promise((r) => setTimeout(r, 300)); return p; });
  let once = 1;
  relay.tamper = (f, dir) => (dir === 'toAlice' && decodeAad(f[0]).kind === KIND.REP && once-- > 0 ? [f[0], flip(f[1], 1), f[2]] : f);
  const e = await bob.request('x', 1, { blockId: 30 }).catch((x: Error) => x); // no handler on alice: ERR reply
  t.ok(e instanceof Error);
  const err = await alice.request('slowEcho', 1, { blockId: 31 }).catch((x: Error) => x);
  t.ok(err instanceof SecurityError, `got ${err?.constructor?.name}`);
  t.match(err, { code: 'BLOCK_ABORTED', message: /AUTH_TAG_MISMATCH/ });
});

t.test('commit: lost answer and lost request are settled by the handshake', async (t) => {
  const { alice, bob, relay } = await pair(t, { timeoutMs: 800 });
  const isCommit = (f: Buffer[]) => { const a = decodeAad(f[0]); return a.kind === KIND.REQ && a.type === '$commit'; };
  const isCommitRep = (f: Buffer[]) => { const a = decodeAad(f[0]); return a.kind === KIND.REP && a.type === '$commit'; };
  await alice.request('echo', 1, { blockId: 40 });
  // Every answer to the commit is lost: Bob committed, Alice learns it from the HELLO_ACK.
  relay.tamper = (f, dir) => (dir === 'toAlice' && isCommitRep(f) ? null : f);
  await alice.commitBlock(40, { timeoutMs: 3000 });
  t.ok(alice.ledger.isCommitted(40) && bob.ledger.isCommitted(40));
  // Every commit request is lost: Bob never committed; the HELLO fences it and both abort.
  await alice.request('echo', 1, { blockId: 41 });
  relay.tamper = (f, dir) => (dir === 'toBob' && isCommit(f) ? null : f);
  await t.rejects(alice.commitBlock(41, { timeoutMs: 3000 }), { code: 'BLOCK_ABORTED' });
  t.ok(await until(() => alice.isAborted(41) && bob.isAborted(41)));
  t.notOk(bob.ledger.isCommitted(41));
  // A late copy of the old commit request can no longer commit it (lower sequence number).
  const stale = relay.seen.toBob.filter(isCommit).at(-1)!;
  relay.tamper = null;
  await relay.inject('toBob', stale);
  await new Promise((r) => setTimeout(r, 100));
  t.notOk(bob.ledger.isCommitted(41), 'fenced');
  t.equal(alice.ledger.prepared, null);
});

t.test('key exhaustion fails closed with a clear error; replenishing on both sides resumes', async (t) => {
  const { alice, bob } = await pair(t, { pads: 40, keyLowMessages: 10 });
  let low = 0;
  alice.on('keyLow', () => low++);
  let err: unknown;
  for (let i = 0; i < 40 && !err; i++) err = await alice.request('echo', i, { blockId: 50 }).then(() => undefined, (e: Error) => e);
  t.ok(err instanceof SecurityError, 'SecurityError');
  t.match(err, { code: 'AUTH_KEY_EXHAUSTED', message: /replenish/ });
  t.ok(low >= 1, 'keyLow was announced before');
  const fresh = randomBytes(32 * 100);
  alice.replenish(fresh);
  bob.replenish(fresh);
  t.equal(await alice.request('echo', 'again', { blockId: 51 }).then((r) => (r as { echo: string }).echo), 'again');
  t.equal(alice.stats().auth.replenishedBits, fresh.length * 8);
});

t.test('slow link (300 ms round trip): retries back off to the measured RTT instead of flooding', async (t) => {
  const { delayProxy } = await import('../../src/testkit/netns.ts');
  const psk = randomBytes(16 + 32 * 5000);
  const bob = await AuthChannel.open({ role: 'bob', endpoint: 'tcp://127.0.0.1:*', bind: true, auth: Authenticator.fromPsk(psk, 'bob'), retryMs: 50, maxRetryMs: 200 });
  const port = Number(bob.endpoint!.split(':').at(-1));
  const proxy = await delayProxy({ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port }, 150);
  const alice = await AuthChannel.open({ role: 'alice', endpoint: `tcp://127.0.0.1:${proxy.port}`, bind: false, auth: Authenticator.fromPsk(psk, 'alice'), retryMs: 50, maxRetryMs: 200, timeoutMs: 10000 });
  t.teardown(async () => { await alice.close(); await bob.close(); proxy.close(); });
  bob.handle('echo', (p) => p);
  await alice.ready(10000);
  await alice.request('echo', 0); // first one: RTT unknown, retried at 50, 100, 200 ms
  const before = alice.stats().retries;
  for (let i = 1; i <= 8; i++) t.equal(await alice.request('echo', i, { blockId: 60 }), i);
  const s = alice.stats();
  t.ok(s.srttMs >= 250, `measured RTT ${s.srttMs.toFixed(0)} ms`);
  t.ok(s.retries - before <= 1, `${s.retries - before} retries for 8 requests once the RTT is known`);
  t.same(s.rejected, {});
});
