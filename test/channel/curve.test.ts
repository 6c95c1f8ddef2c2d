/**
 * Transport authentication of the classical channel (issue 14, "anyone who reaches Alice's
 * channel port can read her replies and stall the link"): Alice binds with CURVE and a ZAP
 * handler pinned to Bob's public key. Strangers on her port — a plain ZeroMQ client, and a
 * CURVE client that knows her (public) server key but holds an unpinned key of its own — send
 * junk and listen: they get nothing, Alice refuses nothing (no rejection, no abort, no pad spent),
 * and Bob's block goes through. Real sockets on tcp loopback, no mocks.
 *
 * Before the fix (plain DEALER<->DEALER), the same test saw Alice's HELLOs and replies arrive at
 * the strangers, her authenticator refuse the junk (AUTH_KEY_EXHAUSTED), her open block aborted,
 * and pads spent on notices to nobody who mattered.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dealer, curveKeyPair } from 'zeromq';
import { Authenticator } from '../../src/core/auth.ts';
import { AuthChannel } from '../../src/channel/channel.ts';
import { encodeAad, KIND } from '../../src/channel/wire.ts';
import { curvePublicOf, loadOrCreateKeyPair } from '../../src/channel/curve.ts';
import { channelKeys } from '../../src/node/channel-credentials.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Junk a stranger sends: well-formed frames claiming Bob's direction and a far sequence number. */
function junk(i: number): Buffer[] {
  const aad = encodeAad({ version: 1, direction: 1, seq: 1_000_000 + i, sender: randomBytes(16), receiver: new Uint8Array(0),
    kind: KIND.REQ, type: 'sift', msgId: i + 1, blockId: 7, ref: -1 });
  return [Buffer.from(aad), randomBytes(64), randomBytes(16)];
}

/** A stranger's socket on Alice's port: collects whatever it receives. */
function stranger(endpoint: string, opts: ConstructorParameters<typeof Dealer>[0] = {}) {
  const sock = new Dealer({ linger: 0, ...opts });
  const got: Buffer[][] = [];
  sock.connect(endpoint);
  void (async () => {
    try {
      for await (const m of sock) got.push(m);
    } catch { /* closed */ }
  })();
  const send = async (n: number) => {
    sock.sendTimeout = 0;
    let queued = 0;
    for (let i = 0; i < n; i++) await sock.send(junk(i)).then(() => queued++, () => undefined);
    return queued;
  };
  return { sock, got, send };
}

t.test('strangers on Alice\'s channel port get nothing and cost nothing; Bob\'s block goes through', async (t) => {
  const aliceKeys = curveKeyPair();
  const bobKeys = curveKeyPair();
  const psk = randomBytes(16 + 32 * 20000);
  const alice = await AuthChannel.open({ role: 'alice', endpoint: 'tcp://127.0.0.1:*', bind: true, auth: Authenticator.fromPsk(psk, 'alice'),
    retryMs: 50, maxRetryMs: 200, timeoutMs: 5000,
    curve: { publicKey: aliceKeys.publicKey, secretKey: aliceKeys.secretKey, peerPublicKey: bobKeys.publicKey } });
  t.teardown(() => alice.close());
  const ep = alice.endpoint!;
  alice.handle('sift', async (p: { n: number }) => ({ n: p.n + 1 }));

  // Strangers first: they are connected before Bob and while his block runs.
  const plain = stranger(ep);
  const wrongKey = curveKeyPair();
  const curved = stranger(ep, { curveServerKey: aliceKeys.publicKey, curvePublicKey: wrongKey.publicKey, curveSecretKey: wrongKey.secretKey });
  t.teardown(() => { plain.sock.close(); curved.sock.close(); });
  await sleep(300);
  const sentBefore = (await plain.send(12)) + (await curved.send(12));

  const bob = await AuthChannel.open({ role: 'bob', endpoint: ep, bind: false, auth: Authenticator.fromPsk(psk, 'bob'),
    retryMs: 50, maxRetryMs: 200, timeoutMs: 5000,
    curve: { publicKey: bobKeys.publicKey, secretKey: bobKeys.secretKey, peerPublicKey: aliceKeys.publicKey } });
  t.teardown(() => bob.close());
  await bob.ready(5000);
  const results: number[] = [];
  for (let i = 0; i < 10; i++) {
    results.push(((await bob.request('sift', { n: i }, { blockId: 7 })) as { n: number }).n);
    if (i === 4) await Promise.all([plain.send(12), curved.send(12)]); // junk in the middle of the block
  }
  await bob.commitBlock(7);
  t.same(results, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'every request of Bob\'s block answered');
  t.ok(alice.ledger.isCommitted(7) && bob.ledger.isCommitted(7), 'block 7 committed on both sides');
  await sleep(300);

  t.equal(plain.got.length, 0, 'the plain ZeroMQ client received nothing');
  t.equal(curved.got.length, 0, 'the CURVE client with an unpinned key received nothing');
  t.comment(`strangers queued ${sentBefore} junk messages before Bob came (the rest had no connection to go to)`);
  const a = alice.stats();
  const b = bob.stats();
  t.same(a.rejected, {}, 'Alice refused no message: the junk never reached her');
  t.equal(a.auth.rejected, 0, 'her authenticator verified nothing of the strangers');
  t.equal(a.blocksAborted, 0, 'no block aborted');
  t.equal(a.auth.signed, b.auth.verified + a.sendDropped,
    `every pad Alice spent went to Bob (${a.auth.signed} signed = ${b.auth.verified} verified by Bob + ${a.sendDropped} dropped with no peer connected)`);
  t.equal(a.auth.usedBits, (a.auth.signed + a.auth.verified) * 128);
  t.ok(a.transportRefused >= 2, `connections refused at the transport: ${a.transportRefused}`);
});

t.test('an impostor with Bob\'s public key but not his secret key never reaches Alice; malformed keys are refused', async (t) => {
  const aliceKeys = curveKeyPair();
  const bobKeys = curveKeyPair();
  const psk = randomBytes(16 + 32 * 1000);
  const alice = await AuthChannel.open({ role: 'alice', endpoint: 'tcp://127.0.0.1:*', bind: true, auth: Authenticator.fromPsk(psk, 'alice'),
    retryMs: 50, maxRetryMs: 200, curve: { ...aliceKeys, peerPublicKey: bobKeys.publicKey } });
  t.teardown(() => alice.close());
  const impostor = curveKeyPair();
  const bob = await AuthChannel.open({ role: 'bob', endpoint: alice.endpoint!, bind: false, auth: Authenticator.fromPsk(psk, 'bob'),
    retryMs: 50, maxRetryMs: 200, curve: { publicKey: bobKeys.publicKey, secretKey: impostor.secretKey, peerPublicKey: aliceKeys.publicKey } });
  t.teardown(() => bob.close());
  await t.rejects(bob.ready(1500), { code: 'CHANNEL_NO_PEER', message: /CURVE public key/ });
  t.equal(alice.stats().auth.verified, 0, 'nothing reached Alice\'s authenticator');
  t.ok(alice.stats().transportRefused >= 1);
  await t.rejects(AuthChannel.open({ role: 'bob', endpoint: alice.endpoint!, bind: false, auth: Authenticator.fromPsk(psk, 'bob'),
    curve: { ...bobKeys, peerPublicKey: 'not-a-key' } }), { code: 'CHANNEL_CURVE_KEY' });
});

t.test('node keys: created 0600 in a 0700 folder, public key derived and exchanged via configuration, clear errors', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-curve-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'secrets', 'channel.key');
  const cfg = { role: 'alice' as const, channel: { endpoint: '', pskFile: '', sessionId: '', curveKeyFile: file, peerPublicKey: '' } };
  const missingPeer = (() => { try { channelKeys(cfg); } catch (e) { return e as Error & { code: string }; } })();
  t.match(missingPeer, { code: 'CHANNEL_PEER_KEY', message: /peerPublicKey is missing/ }, 'missing peer key: says what to do');
  t.equal(statSync(file).mode & 0o777, 0o600, 'secret key file 0600');
  t.equal(statSync(join(dir, 'secrets')).mode & 0o777, 0o700, 'its folder 0700');
  const pub = readFileSync(`${file}.pub`, 'utf8').trim();
  t.ok(missingPeer!.message.includes(pub), 'the error names this node\'s public key for the peer\'s configuration');
  t.notOk(missingPeer!.message.includes(readFileSync(file, 'utf8').trim()), 'never the secret key');
  t.equal(curvePublicOf(readFileSync(file, 'utf8').trim()), pub, 'public key derived from the secret one');
  const peer = curveKeyPair().publicKey;
  t.same(channelKeys({ ...cfg, channel: { ...cfg.channel, peerPublicKey: peer } }).peerPublicKey, peer);
  t.equal(loadOrCreateKeyPair(file).publicKey, pub, 'the key pair is kept across starts');
  t.throws(() => channelKeys({ ...cfg, channel: { ...cfg.channel, peerPublicKey: 'abc' } }), { code: 'CHANNEL_PEER_KEY', message: /40 Z85 characters/ });
  t.throws(() => channelKeys({ ...cfg, channel: { ...cfg.channel, peerPublicKey: pub } }), { code: 'CHANNEL_PEER_KEY', message: /own public key/ });
  t.throws(() => channelKeys({ ...cfg, channel: { ...cfg.channel, curveKeyFile: undefined as unknown as string } }), { code: 'CHANNEL_CURVE_KEY' });
  const bad = join(dir, 'bad.key');
  (await import('node:fs')).writeFileSync(bad, 'not a key\n', { mode: 0o600 });
  t.throws(() => channelKeys({ ...cfg, channel: { ...cfg.channel, curveKeyFile: bad, peerPublicKey: peer } }), { code: 'CHANNEL_CURVE_KEY', message: /not a CURVE secret key/ });
});
