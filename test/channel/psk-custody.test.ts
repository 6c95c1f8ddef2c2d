/**
 * Custody of the pre-shared channel secret and of the channel state (issue 14, "one-time pads
 * reused"): the node consumes the secret it imports, refuses to start again from scratch once
 * its channel state is gone (instead of restarting at sequence 0 with the same hash key and
 * pads), and keeps the state wrapped at rest.
 *
 * Alice's node end is opened exactly as a node process opens it (openClassicalLink with a node
 * configuration); a tap (a ZeroMQ DEALER holding Bob's transport keys) records what she puts on
 * the wire. Before the fix the second run started again at sequence 0 with the same hash key
 * (the tap saw sequence numbers 1 and 2 tagged in both runs), the secret file stayed in place, and
 * the state file held the hash key and every future pad in the clear.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dealer, curveKeyPair } from 'zeromq';
import { openClassicalLink } from '../../src/node/link.ts';
import { Authenticator } from '../../src/core/auth.ts';
import { loadOrCreateKeyPair } from '../../src/channel/curve.ts';
import { decodeAad } from '../../src/channel/wire.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import type { NodeRunConfig } from '../../src/node/config.ts';
import { freePort } from '../../src/node/supervisor.ts';

const log = createLogger({ component: 'test', level: 'error' });

const bobKeys = curveKeyPair();

async function aliceConfig(dir: string): Promise<{ cfg: NodeRunConfig; psk: Buffer }> {
  mkdirSync(join(dir, 'secrets'), { recursive: true, mode: 0o700 });
  const psk = randomBytes(16 + 32 * 4000);
  writeFileSync(join(dir, 'secrets', 'channel-psk.bin'), psk, { mode: 0o600 });
  writeFileSync(join(dir, 'secrets', 'spool.key'), randomBytes(32), { mode: 0o600 });
  const port = await freePort();
  const cfg = {
    role: 'alice', nodeId: 'nodeA', peerNodeId: 'nodeB',
    channel: { endpoint: `tcp://127.0.0.1:${port}`, pskFile: join(dir, 'secrets', 'channel-psk.bin'), sessionId: 'x',
      curveKeyFile: join(dir, 'secrets', 'channel.key'), peerPublicKey: bobKeys.publicKey },
    delivery: { spoolDir: join(dir, 'spoolA'), spoolKeyFile: join(dir, 'secrets', 'spool.key') },
  } as unknown as NodeRunConfig;
  return { cfg, psk };
}

/** Opens Alice's end, lets a tap connect for `ms`, returns the sequence numbers she sent. */
async function runAlice(cfg: NodeRunConfig, ms = 800): Promise<number[]> {
  const link = await openClassicalLink(cfg, log);
  const alicePublic = loadOrCreateKeyPair(cfg.channel.curveKeyFile).publicKey;
  const tap = new Dealer({ linger: 0, curveServerKey: alicePublic, curvePublicKey: bobKeys.publicKey, curveSecretKey: bobKeys.secretKey });
  const seqs: number[] = [];
  tap.connect(cfg.channel.endpoint);
  const loop = (async () => {
    for await (const f of tap) {
      try { seqs.push(decodeAad(f[0]).seq); } catch { /* not a channel message */ }
    }
  })();
  await new Promise((r) => setTimeout(r, ms));
  tap.close();
  await loop.catch(() => undefined);
  await link.close();
  return seqs;
}

t.test('channel state lost: the node refuses to start instead of reusing pads', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-psk-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { cfg } = await aliceConfig(dir);
  const first = await runAlice(cfg);
  t.ok(first.length > 0, `first run: Alice sent messages ${first.join(',')}`);
  t.notOk(existsSync(cfg.channel.pskFile), 'the provisioned pre-shared secret is consumed on import');
  // The channel state is lost (disk replaced, file deleted by mistake, restored from an old backup).
  rmSync(join(dir, 'channel-alice', 'auth.state'));
  const second = await runAlice(cfg).catch((e: Error & { code?: string }) => e);
  if (Array.isArray(second)) {
    const reused = second.filter((s) => first.includes(s));
    t.same(reused, [], `pads reused: sequence numbers ${reused.join(',')} tagged again with the same hash key`);
    t.fail('the node started again after losing its channel state');
  } else {
    t.match(second, { code: 'AUTH_STATE_LOST', message: /fresh pre-shared secret/ }, 'refused with a clear error');
  }
});

t.test('the channel state is wrapped at rest: no hash key, no pad in the clear', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-psk-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { cfg, psk } = await aliceConfig(dir);
  await runAlice(cfg, 300);
  const state = readFileSync(join(dir, 'channel-alice', 'auth.state'));
  t.equal(state.indexOf(psk.subarray(0, 16)), -1, 'the hash key is not in the state file');
  let clear = 0;
  for (let off = 16 + 32 * 100; off + 16 <= psk.length; off += 32 * 97) if (state.indexOf(psk.subarray(off, off + 16)) >= 0) clear++;
  t.equal(clear, 0, 'no future pad is in the state file');
});

t.test('Authenticator.open: every way of starting again from a used secret is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-psk-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const psk = randomBytes(16 + 32 * 100);
  const pskPath = join(dir, 'psk.bin');
  const statePath = join(dir, 'auth.state');
  const stateKey = randomBytes(32);
  const open = () => Authenticator.open({ role: 'bob', statePath, stateKey, pskPath });
  writeFileSync(pskPath, psk);
  const a = open();
  t.equal(a.origin, 'psk');
  t.notOk(existsSync(pskPath), 'imported secret shredded');
  const register = JSON.parse(readFileSync(join(dir, 'psk-register.json'), 'utf8'));
  t.equal(register.imported.length, 1);
  t.notMatch(JSON.stringify(register), psk.subarray(0, 16).toString('hex'), 'the register holds a fingerprint, not the secret');
  t.equal(open().origin, 'state', 'a restart reopens the state');
  // A backup copy of the used secret reappears while the state is there: useless, removed.
  writeFileSync(pskPath, psk);
  t.equal(open().origin, 'state');
  t.notOk(existsSync(pskPath), 'a used secret found beside the state is shredded');
  // An unknown secret beside a live state: ambiguous (old layout or an unfinished re-key).
  writeFileSync(pskPath, randomBytes(16 + 32 * 100));
  t.throws(open, { code: 'AUTH_PSK_UNEXPECTED', message: /retire the channel state on both/ });
  rmSync(pskPath);
  // The state is lost.
  rmSync(statePath);
  t.throws(open, { code: 'AUTH_STATE_LOST', message: /fresh pre-shared secret/ });
  writeFileSync(pskPath, psk);
  t.throws(open, { code: 'AUTH_PSK_CONSUMED', message: /fresh pre-shared secret/ }, 'the same secret restored from a backup');
  t.ok(existsSync(pskPath), 'a refused secret is left for the operator to see');
  // The documented recovery: a fresh secret.
  writeFileSync(pskPath, randomBytes(16 + 32 * 100));
  t.equal(open().origin, 'psk');
  t.equal(JSON.parse(readFileSync(join(dir, 'psk-register.json'), 'utf8')).imported.length, 2);
  // Alice's register entries do not block Bob's import of the same secret (one file per folder).
  const shared = randomBytes(16 + 32 * 100);
  writeFileSync(pskPath, shared);
  t.equal(Authenticator.open({ role: 'alice', statePath: join(dir, 'alice.state'), stateKey, pskPath, keepPsk: true }).origin, 'psk');
  t.throws(() => Authenticator.open({ role: 'alice', statePath: join(dir, 'alice2.state'), stateKey, pskPath }), { code: 'AUTH_PSK_CONSUMED' });
});

t.test('qkd run --emulated: a second run resumes, a lost state re-keys the pair, the old shared secret is shredded', async (t) => {
  const { provisionEmulatedChannel, channelStateDir } = await import('../../src/node/channel-credentials.ts');
  const dir = mkdtempSync(join(tmpdir(), 'qkd-emu-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'secrets'), { recursive: true });
  writeFileSync(join(dir, 'secrets', 'channel-psk.bin'), randomBytes(4096)); // an older version's shared secret
  const stateKey = randomBytes(32);
  // What each node process does with what the supervisor provisioned (src/node/link.ts).
  const run = () => {
    const ch = provisionEmulatedChannel(dir, 16 + 32 * 200);
    const open = (role: 'alice' | 'bob') => Authenticator.open({ role, stateKey, statePath: join(channelStateDir(join(dir, `spool-${role}`), role), 'auth.state'), pskPath: ch.pskFile[role] });
    for (const r of ['alice', 'bob'] as const) mkdirSync(channelStateDir(join(dir, `spool-${r}`), r), { recursive: true });
    const a = open('alice');
    const b = open('bob');
    // They share a secret: a tag of Alice's verifies at Bob's.
    const seq = a.nextSendSeq;
    b.verify(seq, Buffer.from('h'), Buffer.from('m'), a.sign(seq, Buffer.from('h'), Buffer.from('m')));
    a.save();
    b.save();
    return { ch, a, b };
  };
  const r1 = run();
  t.ok(r1.ch.rekeyed && r1.a.origin === 'psk' && r1.b.origin === 'psk', 'first run: both nodes import a fresh secret');
  t.notOk(existsSync(join(dir, 'secrets', 'channel-psk.bin')), 'the old shared secret is shredded');
  t.notOk(existsSync(r1.ch.pskFile.alice) || existsSync(r1.ch.pskFile.bob), 'each copy consumed by its node');
  const r2 = run();
  t.ok(!r2.ch.rekeyed && r2.a.origin === 'state' && r2.b.origin === 'state', 'second run: both resume from their states');
  t.ok(r2.a.nextSendSeq > 0, `Alice resumes at sequence ${r2.a.nextSendSeq}, not 0`);
  rmSync(join(dir, 'channel-alice', 'auth.state'));
  const r3 = run();
  t.ok(r3.ch.rekeyed && r3.a.origin === 'psk' && r3.b.origin === 'psk', 'Alice\'s state lost: the supervisor re-keys both nodes');
});
