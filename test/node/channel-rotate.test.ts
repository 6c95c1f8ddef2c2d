// `qkd channel rotate` (issue 14, emergency rotation of the node's authentication keys), as a
// process on a real state folder: the state and any leftover secret are shredded, the register of
// consumed secrets stays (so the old secret is refused), the CURVE pair is replaced, a fresh
// secret is written 0600 and a node starts from it.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Authenticator } from '../../src/core/auth.ts';
import { channelStateDir, channelStateKey } from '../../src/node/channel-credentials.ts';
import { loadOrCreateKeyPair } from '../../src/channel/curve.ts';
import { QkdError } from '../../src/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'qkd-rotate-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const qkd = (...args: string[]) => spawnSync(process.execPath, ['bin/qkd.js', ...args], { encoding: 'utf8' });

const spoolKeyFile = join(dir, 'spool.key');
writeFileSync(spoolKeyFile, randomBytes(32), { mode: 0o600 });
const cfgFile = join(dir, 'bob.json');
writeFileSync(cfgFile, JSON.stringify({
  role: 'bob', nodeId: 'nodeB', peerNodeId: 'nodeA', lab: { preset: 'reference-decoy', distanceKm: 25, eveFraction: 0, seed: '1' },
  channel: { endpoint: 'tcp://127.0.0.1:1', pskFile: 'psk.bin', sessionId: 's', curveKeyFile: 'channel.key', peerPublicKey: 'x' },
  stream: { endpoint: 'ipc:///tmp/none' },
  delivery: { listenPort: 0, insecure: true, kms: { url: 'https://127.0.0.1:1', id: 'kmsB' }, spoolDir: 'spool', spoolKeyFile: 'spool.key' },
  block: { detections: 1e6, frameBits: 65536, epsSec: 1e-10, epsCor: 1e-15, qberAbort: 0.11 },
}));
const stateDir = channelStateDir(join(dir, 'spool'), 'bob');
mkdirSync(stateDir, { recursive: true, mode: 0o700 });
const statePath = join(stateDir, 'auth.state');
const pskPath = join(dir, 'psk.bin');
const open = (psk?: Uint8Array) => {
  if (psk) writeFileSync(pskPath, psk, { mode: 0o600 });
  const stateKey = channelStateKey(spoolKeyFile);
  try {
    return Authenticator.open({ role: 'bob', statePath, stateKey, pskPath });
  } finally {
    stateKey.fill(0);
  }
};

t.test('rotate retires the state, keeps the register, replaces CURVE keys, writes a fresh secret', async (t) => {
  const oldPsk = randomBytes(16 + 32 * 64);
  t.equal(open(oldPsk).origin, 'psk', 'the node imported its first secret');
  t.ok(existsSync(statePath) && !existsSync(pskPath), 'state written, secret consumed');
  const oldPub = loadOrCreateKeyPair(join(dir, 'channel.key')).publicKey;
  writeFileSync(pskPath, randomBytes(64)); // a leftover secret file predating the rotation

  const newPsk = join(dir, 'new-psk.bin');
  const r = qkd('channel', 'rotate', '--config', cfgFile, '--curve', '--new-psk', newPsk);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /retired the channel state/);
  t.notOk(existsSync(statePath), 'channel state shredded');
  t.notOk(existsSync(pskPath), 'leftover secret shredded');
  t.ok(existsSync(join(stateDir, 'psk-register.json')), 'register kept');
  const newPub = readFileSync(join(dir, 'channel.key.pub'), 'utf8').trim();
  t.not(newPub, oldPub, 'a new CURVE key pair');
  t.ok(r.stdout.includes(newPub), 'its public key is printed for the peer');
  t.equal(statSync(newPsk).mode & 0o777, 0o600, 'fresh secret is 0600');
  t.equal(statSync(newPsk).size, 16 + 32 * 16384);

  let refused: unknown;
  try {
    open(oldPsk);
  } catch (e) {
    refused = e;
  }
  t.ok(refused instanceof QkdError && refused.code === 'AUTH_PSK_CONSUMED', `the old secret is refused after the rotation (${String(refused)})`);
  rmSync(pskPath, { force: true });
  t.equal(open(readFileSync(newPsk)).origin, 'psk', 'the node starts from the fresh secret');

  const again = qkd('channel', 'rotate', '--config', cfgFile, '--new-psk', newPsk);
  t.not(again.status, 0, 'never writes a secret over an existing file');
  t.match(again.stderr, /CHANNEL_ROTATE/);
  t.ok(existsSync(statePath), 'a refused rotation retires nothing');
});
