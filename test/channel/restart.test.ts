/**
 * Restart of either side mid-block, with real processes killed by SIGKILL (no clean shutdown),
 * and a crash between "commit sent" and "commit acknowledged". Checks: the block in flight is
 * aborted on both sides, the ledgers agree on finished blocks, and work resumes with the next
 * block without reusing any one-time pad (a reused sequence number would be refused as replay).
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Authenticator } from '../../src/core/auth.ts';
import { AuthChannel } from '../../src/channel/channel.ts';
import { Relay } from '../../src/channel/mitm.ts';
import { decodeAad, KIND } from '../../src/channel/wire.ts';
import { peerArgv, spawnJson, testStateKey, type JsonChild, type PeerConfig } from '../../src/testkit/netns.ts';

function setup(t: Test) {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-restart-'));
  writeFileSync(join(dir, 'psk'), randomBytes(16 + 32 * 50000));
  const children: JsonChild[] = [];
  t.teardown(() => {
    for (const c of children) c.proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const spawnPeer = (cfg: PeerConfig) => {
    const c = spawnJson(peerArgv('peer', cfg));
    children.push(c);
    return c;
  };
  return { dir, spawnPeer };
}

const ledger = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as { committed: number[]; aborted: number[]; prepared: number | null };

t.test('Bob killed mid-block and restarted', async (t) => {
  const { dir, spawnPeer } = setup(t);
  const bobCfg: PeerConfig = { role: 'bob', endpoint: 'tcp://127.0.0.1:*', bind: true, statePath: join(dir, 'bob.state'), pskPath: join(dir, 'psk'), ledgerPath: join(dir, 'bob.ledger'), retryMs: 50 };
  let bob = spawnPeer(bobCfg);
  const ep = (await bob.waitFor((e) => e.event === 'listening', 20000)).endpoint as string;
  bobCfg.endpoint = ep; // the restarted Bob binds the same port
  const auth = Authenticator.open({ role: 'alice', statePath: join(dir, 'alice.state'), stateKey: testStateKey(join(dir, 'alice.state')), pskPath: join(dir, 'psk'), keepPsk: true });
  const alice = await AuthChannel.open({ role: 'alice', endpoint: ep, bind: false, auth, ledgerPath: join(dir, 'alice.ledger'), retryMs: 50, maxRetryMs: 300, timeoutMs: 15000 });
  t.teardown(() => alice.close());
  let restarts = 0;
  alice.on('peerRestarted', () => restarts++);
  await alice.ready(15000);
  t.same(await alice.request('echo', { x: 1 }, { blockId: 1 }), { x: 1 });
  await alice.commitBlock(1);

  const inFlight = alice.request('slow', { ms: 20000 }, { blockId: 2 }).catch((e: Error) => e);
  await new Promise((r) => setTimeout(r, 300));
  bob.proc.kill('SIGKILL');
  await bob.exited;
  bob = spawnPeer(bobCfg);
  const err = await inFlight;
  t.match(err, { code: 'BLOCK_ABORTED', message: /PEER_RESTARTED/ }, 'the block in flight is aborted');
  t.equal(restarts, 1, 'restart detected from the new instance id');

  t.same(await alice.request('echo', { x: 3 }, { blockId: 3 }), { x: 3 }, 'the next block works: the restarted Bob used fresh pads');
  await alice.commitBlock(3);
  await t.rejects(alice.request('echo', 1, { blockId: 2 }), { code: 'BLOCK_ABORTED' });
  const lb = ledger(join(dir, 'bob.ledger'));
  const la = ledger(join(dir, 'alice.ledger'));
  t.same(lb.committed.sort(), [1, 3]);
  t.same(la.committed.sort(), [1, 3], 'both ledgers agree on finished blocks');
  t.ok(la.aborted.includes(2));
  t.same(alice.stats().rejected, {}, 'no message was refused: no replayed sequence number, no pad reuse');
});

t.test('Alice killed mid-block and restarted', async (t) => {
  const { dir, spawnPeer } = setup(t);
  const auth = Authenticator.open({ role: 'bob', statePath: join(dir, 'bob.state'), stateKey: testStateKey(join(dir, 'bob.state')), pskPath: join(dir, 'psk'), keepPsk: true });
  const bob = await AuthChannel.open({ role: 'bob', endpoint: 'tcp://127.0.0.1:*', bind: true, auth, ledgerPath: join(dir, 'bob.ledger'), retryMs: 50, maxRetryMs: 300, timeoutMs: 15000 });
  t.teardown(() => bob.close());
  const aliceCfg: PeerConfig = { role: 'alice', endpoint: bob.endpoint!, bind: false, statePath: join(dir, 'alice.state'), pskPath: join(dir, 'psk'), ledgerPath: join(dir, 'alice.ledger'), retryMs: 50 };
  let alice = spawnPeer(aliceCfg);
  await alice.waitFor((e) => e.event === 'ready', 20000);
  await bob.ready(5000);
  t.equal(await bob.request('echo', 'a', { blockId: 1 }), 'a');
  await bob.commitBlock(1);
  const inFlight = bob.request('slow', { ms: 20000 }, { blockId: 2 }).catch((e: Error) => e);
  await new Promise((r) => setTimeout(r, 300));
  alice.proc.kill('SIGKILL');
  await alice.exited;
  alice = spawnPeer(aliceCfg);
  t.match(await inFlight, { code: 'BLOCK_ABORTED', message: /PEER_RESTARTED/ });
  await alice.waitFor((e) => e.event === 'ready', 20000);
  t.equal(await bob.request('echo', 'c', { blockId: 3 }), 'c');
  await bob.commitBlock(3);
  await alice.waitFor((e) => e.event === 'blockCommitted' && e.blockId === 3, 5000);
  t.same(ledger(join(dir, 'alice.ledger')).committed.sort(), [1, 3]);
  t.same(bob.stats().rejected, {});
});

t.test('crash after commit sent, before its acknowledgement: settled from the peer ledger on restart', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-commit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const psk = randomBytes(16 + 32 * 10000);
  const bAuth = Authenticator.fromPsk(psk, 'bob');
  const stateKey = randomBytes(32);
  bAuth.attachStateFile(join(dir, 'bob.state'), stateKey);
  const bob = await AuthChannel.open({ role: 'bob', endpoint: 'tcp://127.0.0.1:*', bind: true, auth: bAuth, ledgerPath: join(dir, 'bob.ledger'), retryMs: 50, maxRetryMs: 200, timeoutMs: 5000 });
  const relay = await Relay.open(bob.endpoint!);
  t.teardown(async () => { await bob.close(); relay.close(); });
  const aAuth = Authenticator.fromPsk(psk, 'alice');
  aAuth.attachStateFile(join(dir, 'alice.state'), stateKey);
  const open = (auth: Authenticator) => AuthChannel.open({ role: 'alice', endpoint: relay.aliceEndpoint, bind: false, auth, ledgerPath: join(dir, 'alice.ledger'), retryMs: 50, maxRetryMs: 200, timeoutMs: 5000 });
  let alice = await open(aAuth);
  await alice.ready(5000);
  await alice.request('echo', 1, { blockId: 7 }).catch(() => {}); // no handler on bob: an ERR reply is fine
  relay.tamper = (f, dir) => (dir === 'toAlice' && decodeAad(f[0]).kind === KIND.REP && decodeAad(f[0]).type === '$commit' ? null : f);
  const committing = alice.commitBlock(7, { timeoutMs: 60000 }).catch((e: Error) => e);
  for (let i = 0; i < 100 && !bob.ledger.isCommitted(7); i++) await new Promise((r) => setTimeout(r, 20));
  t.ok(bob.ledger.isCommitted(7), 'Bob committed');
  t.equal(alice.ledger.prepared, 7, 'Alice only prepared');
  await alice.close(); // the "crash": Alice's process state is gone except its files
  await committing;
  relay.tamper = null;
  const blockEvents: number[] = [];
  alice = await open(Authenticator.load(join(dir, 'alice.state'), stateKey, 'alice'));
  alice.on('blockCommitted', (b: number) => blockEvents.push(b));
  t.teardown(() => alice.close());
  await alice.ready(5000);
  t.ok(alice.ledger.isCommitted(7), 'the restarted Alice learns block 7 finished');
  t.same(blockEvents, [7]);
  t.equal(alice.ledger.prepared, null);
});
