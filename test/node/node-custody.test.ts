// The node's at-rest key in a PKCS#11 token (issue 14, custody), against a real SoftHSM2 token in
// a private token directory: `qkd node seal-key` seals the plain key file (and shreds it), the
// node unseals it in the token to the same key (so its spool and channel state stay readable),
// and every way it can go wrong is a clear refusal that opens nothing.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { readNodeConfig } from '../../src/node/config.ts';
import { readAtRestKey } from '../../src/node/custody.ts';
import { channelStateKey, channelStateKeyFrom } from '../../src/node/channel-credentials.ts';

const MODULE = '/usr/lib/softhsm/libsofthsm2.so';
const haveHsm = spawnSync('softhsm2-util', ['--version']).status === 0 && existsSync(MODULE);
const dir = mkdtempSync(join(tmpdir(), 'qkd-node-custody-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('at-rest key sealed in a SoftHSM2 token: seal-key, unseal, refusals', { skip: haveHsm ? false : 'SoftHSM2 is not installed (apt-get install softhsm2)' }, async (t) => {
  // A private token store; set before the first PKCS#11 call of this process (C_Initialize reads it).
  const hsmConf = join(dir, 'softhsm2.conf');
  mkdirSync(join(dir, 'tokens'));
  writeFileSync(hsmConf, `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const PIN = randomBytes(6).toString('hex');
  process.env.SOFTHSM2_CONF = hsmConf;
  process.env.QKD_TEST_NODE_PIN = PIN;
  const init = spawnSync('softhsm2-util', ['--init-token', '--free', '--label', 'qkd-node-test', '--so-pin', randomBytes(6).toString('hex'), '--pin', PIN], { encoding: 'utf8' });
  t.equal(init.status, 0, init.stderr);

  const key = randomBytes(32);
  const keyFile = join(dir, 'spool.key');
  writeFileSync(keyFile, key, { mode: 0o600 });
  const expectedStateKey = channelStateKey(keyFile);
  const custody = { pkcs11: { module: MODULE, tokenLabel: 'qkd-node-test', keyLabel: 'nodeB-at-rest', pinEnv: 'QKD_TEST_NODE_PIN' } };
  const base = {
    role: 'bob', nodeId: 'nodeB', peerNodeId: 'nodeA', lab: { preset: 'reference-decoy', distanceKm: 25, eveFraction: 0, seed: '1' },
    channel: { endpoint: 'tcp://127.0.0.1:1', pskFile: 'psk.bin', sessionId: 's', curveKeyFile: 'channel.key', peerPublicKey: 'x' },
    stream: { endpoint: 'ipc:///tmp/none' },
    delivery: { listenPort: 0, insecure: true, kms: { url: 'https://127.0.0.1:1', id: 'kmsB' }, spoolDir: 'spool', spoolKeyFile: 'spool.key' },
    block: { detections: 1e6, frameBits: 65536, epsSec: 1e-10, epsCor: 1e-15, qberAbort: 0.11 },
  };
  const write = (name: string, extra: Record<string, unknown>) => {
    const f = join(dir, name);
    writeFileSync(f, JSON.stringify({ ...base, ...extra }));
    return f;
  };
  const cfgFile = write('bob.json', { custody });
  const qkd = (...args: string[]) => spawnSync(process.execPath, ['bin/qkd.js', ...args], { encoding: 'utf8', env: process.env });

  t.throws(() => readAtRestKey(readNodeConfig(cfgFile)), { code: 'NODE_AT_REST_KEY', message: /plain key: seal it first with `qkd node seal-key/ }, 'a plain key under a token configuration is refused');
  t.throws(() => readNodeConfig(write('pin.json', { custody: { pkcs11: { ...custody.pkcs11, pin: PIN } } })), { message: /must not hold the PIN/ }, 'a PIN in the configuration is refused');

  const r = qkd('node', 'seal-key', '--config', cfgFile);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /sealed .*spool.key in the PKCS#11 token .*plain key was shredded/);
  const sealed = readFileSync(keyFile);
  t.equal(sealed.length, 72, 'the file holds the sealed key (72 bytes)');
  t.equal(sealed.subarray(0, 8).toString('latin1'), 'QKDTOK01');
  t.notOk(sealed.includes(key.subarray(0, 8)), 'no 8 bytes of the plain key in the sealed file');
  t.same(readdirSync(dir).filter((f) => f.startsWith('spool.key.')), [], 'no plain or temporary copy left');

  const opened = readAtRestKey(readNodeConfig(cfgFile));
  t.ok(opened.equals(key), 'the token unseals the same key');
  t.ok(channelStateKeyFrom(opened).equals(expectedStateKey), 'so the channel state (and the spool) stay readable');
  t.match(qkd('node', 'seal-key', '--config', cfgFile).stdout, /already sealed in the token and the token opens it/, 'sealing twice changes nothing');

  process.env.QKD_TEST_NODE_PIN = 'wrong-pin';
  t.throws(() => readAtRestKey(readNodeConfig(cfgFile)), { message: /NODE_CUSTODY: .*wrong PIN \(from environment variable QKD_TEST_NODE_PIN\)/ }, 'a wrong PIN: refused, naming where it came from');
  delete process.env.QKD_TEST_NODE_PIN;
  t.throws(() => readAtRestKey(readNodeConfig(cfgFile)), { message: /QKD_TEST_NODE_PIN, which is not set/ }, 'a missing PIN: says which variable to set');
  process.env.QKD_TEST_NODE_PIN = PIN;
  t.throws(() => readAtRestKey(readNodeConfig(write('other-token.json', { custody: { pkcs11: { ...custody.pkcs11, tokenLabel: 'no-such-token' } } }))),
    { message: /no PKCS#11 token labelled 'no-such-token'.*qkd-node-test/ }, 'a missing token: names the tokens present');
  t.throws(() => readAtRestKey(readNodeConfig(write('other-key.json', { custody: { pkcs11: { ...custody.pkcs11, keyLabel: 'other' } } }))),
    { message: /holds no AES key labelled 'other'/ }, 'a wrong key label: says so');
  t.throws(() => readAtRestKey(readNodeConfig(write('alice.json', { custody, nodeId: 'nodeA' }))),
    { message: /failed to authenticate in token .*nothing was opened/ }, "another node's configuration cannot open this node's sealed key");
  t.throws(() => readAtRestKey(readNodeConfig(write('plain.json', {}))),
    { code: 'NODE_AT_REST_KEY', message: /sealed in a PKCS#11 token, but .* has no custody.pkcs11 section/ }, 'a sealed key without a token configuration: says what to add');
  const tampered = Buffer.from(sealed);
  tampered[40] ^= 1;
  writeFileSync(keyFile, tampered);
  t.throws(() => readAtRestKey(readNodeConfig(cfgFile)), { message: /failed to authenticate/ }, 'a tampered sealed file opens nothing');
});
