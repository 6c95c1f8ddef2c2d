/**
 * The IDQ Time Controller, the Single Quantum SNSPD controller and the S-Fifteen SPDC board
 * through the CLI (child processes, own state dir), each emulated on its real transport: listed
 * by `qkd devices`, set/get with limits and persistence, counts and histograms.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { hasSocat, tempDir } from '../../src/testkit/devices.ts';

const bin = resolve(import.meta.dirname, '../../bin/qkd.js');
const dir = tempDir('qkd-instr-cli-');
t.teardown(() => dir.remove());
const cfg = join(dir.path, 'lab.json');
writeFileSync(cfg, JSON.stringify({
  emulated: { stateFile: join(dir.path, 'state.json') },
  devices: [
    { id: 'lab-id900', profile: 'idq-id900', emulated: true },
    { id: 'lab-snspd', profile: 'sq-snspd', emulated: true },
    { id: 'alice-pump', profile: 's15-spdc', emulated: true },
  ],
}));

function qkd(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, args[0], '--config', cfg, ...args.slice(1)], { encoding: 'utf8', env: { ...process.env, QKD_STATE_DIR: dir.path }, timeout: 30_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

t.test('qkd devices lists the three, each on its own transport', { skip: hasSocat() ? false : 'socat is not installed' }, async (t) => {
  const r = qkd('devices', '--json');
  t.equal(r.code, 0, r.err + r.out);
  const rows = JSON.parse(r.out) as { id: string; kind: string; transport: string; state: string; identity: { model: string } }[];
  t.same(rows.map((x) => [x.id, x.kind, x.state]), [
    ['lab-id900', 'time-controller', 'ready'],
    ['lab-snspd', 'snspd-controller', 'ready'],
    ['alice-pump', 'laser', 'ready'],
  ]);
  t.same(rows.map((x) => x.transport), ['zmq (emulated, 127.0.0.1)', 'tcp (emulated, 127.0.0.1)', 'serial (emulated, pty)']);
  t.same(rows.map((x) => x.identity.model), ['ID900', 'SNSPD controller (4 detectors)', 'SPDCSDR']);
});

t.test('set and get with limits; settings persist to the next invocation', { skip: hasSocat() ? false : 'socat is not installed' }, async (t) => {
  t.equal(qkd('device', 'lab-id900', 'set', 'threshold:1', '--', '-0.3').code, 0);
  t.match(qkd('device', 'lab-id900', 'get', 'threshold:1').out, /lab-id900 threshold:1 = -0\.3 V/);
  t.equal(qkd('device', 'lab-id900', 'set', 'edge:1', '1').code, 0);
  t.match(qkd('device', 'lab-id900', 'get', 'edge:1').out, /= 1 \(falling\)/);
  const bad = qkd('device', 'lab-id900', 'set', 'threshold:1', '5');
  t.equal(bad.code, 1);
  t.match(bad.err, /threshold:1 5 is above the maximum 2 V/);

  t.equal(qkd('device', 'lab-snspd', 'set', 'bias_current:2', '12.5').code, 0, 'bias');
  t.equal(qkd('device', 'lab-snspd', 'set', 'enable', '1').code, 0);
  t.match(qkd('device', 'lab-snspd', 'get').out, /bias_current:2\s+12\.5 uA\s+0\.\.30 step 0\.1 uA\s+read\/write/);
  const c = JSON.parse(qkd('device', 'lab-snspd', 'counts', '--json').out);
  t.same(c.channels, [1, 2, 3, 4]);
  t.ok(c.ratesPerSec[1] > 100_000, `detector 2 biased and enabled counts: ${c.ratesPerSec}`);

  t.equal(qkd('device', 'alice-pump', 'set', 'laser_current', '20').code, 0);
  t.equal(qkd('device', 'alice-pump', 'set', 'enable', '1').code, 0);
  t.match(qkd('device', 'alice-pump', 'get', 'enable').out, /alice-pump enable = 1 \(on\)/);
  t.match(qkd('device', 'alice-pump', 'set', 'laser_current', '80').err, /above the board's own limit LLIMIT 60 mA/);
});

t.test('counts and histogram of the time controller; verbs a device does not have', { skip: hasSocat() ? false : 'socat is not installed' }, async (t) => {
  const c = qkd('device', 'lab-id900', 'counts');
  t.equal(c.code, 0, c.err);
  t.match(c.out, /1\s+120000 \/s/);
  const h = JSON.parse(qkd('device', 'lab-id900', 'histogram', '1', '--json').out);
  t.equal(h.counts.length, 400);
  t.match(qkd('device', 'lab-id900', 'histogram').out, /lab-id900 histogram 1: 400 bins of 100 ps from 0 ps/);
  t.match(qkd('device', 'alice-pump', 'counts').err, /alice-pump is a laser; counts are read from/);
  t.match(qkd('device', 'lab-snspd', 'stream').err, /only time-taggers stream tags/);
});

t.test('a configuration naming a real network instrument needs its address', async (t) => {
  const bad = join(dir.path, 'bad.json');
  writeFileSync(bad, JSON.stringify({ devices: [{ id: 'x', profile: 'idq-id900' }] }));
  const r = spawnSync(process.execPath, [bin, 'devices', '--config', bad], { encoding: 'utf8', timeout: 30_000 });
  t.equal(r.status, 1);
  t.match(r.stderr, /field "devices\[0\]\.host": expected the instrument's network address/);
  const none = join(dir.path, 'none.json');
  writeFileSync(none, JSON.stringify({ devices: [{ id: 'lab-snspd', profile: 'sq-snspd', host: '127.0.0.1:1' }] }));
  const r2 = spawnSync(process.execPath, [bin, 'devices', '--config', none], { encoding: 'utf8', timeout: 30_000 });
  t.equal(r2.status, 1);
  t.match(r2.stdout, /lab-snspd: cannot connect to 127\.0\.0\.1:1 \(control port\): ECONNREFUSED/);
});
