/** `qkd devices` and `qkd device` as an operator runs them (child processes, own state dir). */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tempDir } from '../../src/testkit/devices.ts';

const bin = resolve(import.meta.dirname, '../../bin/qkd.js');
const dir = tempDir('qkd-cli-');
t.teardown(() => dir.remove());

function qkd(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, QKD_STATE_DIR: dir.path, QKD_NODE_CONFIG: '' }, timeout: 30_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

t.test('qkd devices lists the default emulated set with identity and state', async (t) => {
  const r = qkd('devices', '--json');
  t.equal(r.code, 0, r.err);
  const rows = JSON.parse(r.out) as { id: string; kind: string; state: string; identity: { firmware: string } }[];
  t.same(rows.map((x) => x.id), ['alice-source', 'bob-detector-0', 'bob-detector-1', 'bob-tagger']);
  t.same(rows.map((x) => x.kind), ['photon-source', 'spad-detector', 'spad-detector', 'time-tagger']);
  t.ok(rows.every((x) => x.state === 'ready' && x.identity.firmware), 'all ready with firmware');
  const table = qkd('devices');
  t.match(table.out, /bob-tagger\s+time-tagger\s+emulab-tt8\s+usb \(emulated\)\s+EmuLab TT-8 TT8-0001\s+3\.0\.1\s+ready/);
});

t.test('set persists to the next invocation; limits are checked', async (t) => {
  t.equal(qkd('device', 'bob-detector-0', 'set', 'dead_time', '250').code, 0);
  t.match(qkd('device', 'bob-detector-0', 'get', 'dead_time').out, /bob-detector-0 dead_time = 250 ns/);
  t.match(qkd('device', 'bob-detector-1', 'get', 'dead_time').out, /= 0 ns/, 'the other detector is its own device');
  t.equal(qkd('device', 'bob-tagger', 'set', 'delay:1', '1200').code, 0);
  t.match(qkd('device', 'bob-tagger', 'get', 'delay:1').out, /= 1200 ps/);
  const bad = qkd('device', 'bob-detector-0', 'set', 'efficiency', '0.9');
  t.equal(bad.code, 1);
  t.match(bad.err, /efficiency 0\.9 is above the maximum 0\.3 fraction; allowed: 0\.05 to 0\.3 in steps of 0\.025 fraction\. \[OUT_OF_RANGE\]/);
  t.match(qkd('device', 'bob-detector-0', 'set', 'efficiency', 'lots').err, /'lots' is not a number/);
  t.match(qkd('device', 'nobody', 'get').err, /no device 'nobody'.*devices: alice-source/);
  const list = qkd('device', 'bob-detector-0', 'get');
  t.match(list.out, /dead_time\s+250 ns\s+0\.\.100000 step 1 ns\s+read\/write/);
  t.match(list.out, /count_rate\s+\d+ Hz/);
});

t.test('stream from the emulated tagger, recorded, replays the same tags', async (t) => {
  const file = join(dir.path, 'cli.qkdtags');
  const r = qkd('device', 'bob-tagger', 'stream', '--tags', '5000', '--record', file, '--json');
  t.equal(r.code, 0, r.err);
  const s = JSON.parse(r.out);
  t.equal(s.tags, 5000);
  t.equal(Object.values(s.perChannel as Record<string, number>).reduce((a, b) => a + b, 0), 5000);
  const { openReplayTagger } = await import('../../src/devices/record.ts');
  const replay = await openReplayTagger(file);
  let n = 0;
  for await (const b of replay.startStream()) n += b.timePs.length;
  await replay.close();
  t.equal(n, 5000, 'replay delivers the recorded tags');
  t.match(qkd('device', 'bob-detector-0', 'stream').err, /only time-taggers stream tags/);
});

t.test('the source has no seed to set: its RNG keys itself; its pulse counter is read-only', async (t) => {
  const r = qkd('device', 'alice-source', 'set', 'pattern_seed', '9876543210123');
  t.not(r.code, 0);
  t.match(r.err, /pattern_seed/);
  const get = qkd('device', 'alice-source', 'get').out;
  t.notMatch(get, /pattern_seed/);
  t.match(get, /pulse_count/);
  t.match(get, /prob_signal/);
});

t.test('a node configuration with a mistake names the field; a missing real device is reported, not hung', async (t) => {
  const badCfg = join(dir.path, 'bad.json');
  writeFileSync(badCfg, JSON.stringify({ devices: [{ id: 'x', profile: 'emulab-spad1', emulated: true, chanel: 1 }] }));
  const r = qkd('devices', '--config', badCfg);
  t.equal(r.code, 1);
  t.match(r.err, /bad\.json: field "devices\[0\]\.chanel": expected no such field/);
  const cfg = join(dir.path, 'real.json');
  writeFileSync(cfg, JSON.stringify({ devices: [{ id: 'lab-spad', profile: 'emulab-spad1', port: join(dir.path, 'no-such-tty') }, { id: 'sim', profile: 'emulab-spad1', emulated: true }] }));
  const t0 = Date.now();
  const r2 = qkd('devices', '--config', cfg);
  t.equal(r2.code, 1, 'non-zero when a device is missing');
  t.match(r2.out, /lab-spad\s+spad-detector\s+emulab-spad1\s+serial \S+no-such-tty\s+-\s+-\s+unavailable/);
  t.match(r2.out, /lab-spad: cannot open .*no-such-tty/);
  t.match(r2.out, /sim\s+spad-detector.*ready/);
  t.ok(Date.now() - t0 < 15_000, 'quick');
});
