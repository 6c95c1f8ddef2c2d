/**
 * The TDC1 as an operator and a node meet it: `qkd devices`, `qkd device <id> get|set|stream
 * --record` with a node configuration naming an emulated TDC1 (socat pty pair, child processes,
 * own state dir), and Bob's node opening a TDC1 on a serial port as its real time-tagger.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { hasSocat, tempDir } from '../../src/testkit/devices.ts';
import { readRecordingHeader } from '../../src/devices/record.ts';
import { EmulatedLab } from '../../src/devices/emulated/lab.ts';
import { EmulatedTdc1, startTdc1OnPty } from '../../src/devices/emulated/tdc1.ts';
import { openNodeDevices } from '../../src/node/devices.ts';
import { loadProtocolSettings } from '../../src/protocol/settings.ts';

const bin = resolve(import.meta.dirname, '../../bin/qkd.js');

if (!hasSocat()) {
  t.test('TDC1 through the CLI', { skip: 'socat is not installed (apt-get install socat)' }, async () => {});
} else {
  const dir = tempDir('qkd-tdc1-cli-');
  t.teardown(() => dir.remove());
  const config = join(dir.path, 'node.json');
  writeFileSync(config, JSON.stringify({
    emulated: { preset: 'reference-decoy', stateFile: join(dir.path, 'state.json') },
    devices: [
      { id: 'alice-source', profile: 'emulab-ps1', emulated: true },
      { id: 'bob-tdc1', profile: 's15-tdc1', emulated: true },
    ],
  }));
  // The CLI's temporary folders (the emulated TDC1's pty pair) go to a folder of this test's own:
  // other test files running meanwhile make 'qkd-tdc1-' folders in the shared one (CI saw one).
  const cliTmp = join(dir.path, 'tmp');
  mkdirSync(cliTmp);
  const qkd = (...args: string[]) => {
    const r = spawnSync(process.execPath, [bin, args[0], '--config', config, ...args.slice(1)], { encoding: 'utf8', cwd: dir.path, env: { ...process.env, QKD_STATE_DIR: dir.path, TMPDIR: cliTmp }, timeout: 60_000 });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const leftovers = () => readdirSync(cliTmp).filter((f) => f.startsWith('qkd-tdc1-'));

  t.test('qkd devices lists the emulated TDC1 with its identity', async (t) => {
    const before = leftovers().length;
    const r = qkd('devices', '--json');
    t.equal(r.code, 0, r.err);
    const rows = JSON.parse(r.out) as { id: string; kind: string; profile: string; transport: string; state: string; identity: { vendor: string; model: string } }[];
    const tdc = rows.find((x) => x.id === 'bob-tdc1')!;
    t.match(tdc, { kind: 'time-tagger', profile: 's15-tdc1', transport: 'serial (emulated, pty)', state: 'ready', identity: { vendor: 'S-Fifteen Instruments', model: 'TDC1' } });
    t.equal(leftovers().length, before, 'socat stopped and its folder removed');
  });

  t.test('qkd device get/set: limits from the profile, settings persist', async (t) => {
    const list = qkd('device', 'bob-tdc1', 'get');
    t.equal(list.code, 0, list.err);
    t.match(list.out, /trigger_level\s+-0\.4 V\s+-3\.3\.\.3\.3 step 0\.001 V\s+read\/write/);
    t.match(list.out, /edge:0\s+1 \(falling\)/);
    t.match(list.out, /mode\s+0 \(singles\)/);
    t.equal(qkd('device', 'bob-tdc1', 'set', 'integration_time', '40000').code, 0);
    t.match(qkd('device', 'bob-tdc1', 'get', 'integration_time').out, /bob-tdc1 integration_time = 40000 ms/, 'read back across invocations (signed 16-bit reply corrected)');
    t.equal(qkd('device', 'bob-tdc1', 'set', 'trigger_level', '1.5').code, 0);
    t.match(qkd('device', 'bob-tdc1', 'get', 'edge:1').out, /= 0 \(rising\)/);
    const bad = qkd('device', 'bob-tdc1', 'set', 'trigger_level', '9');
    t.equal(bad.code, 1);
    t.match(bad.err, /bob-tdc1 \(s15-tdc1\): trigger_level 9 is above the maximum 3\.3 V.*\[OUT_OF_RANGE\]/);
    t.match(qkd('device', 'bob-tdc1', 'set', 'edge:0', '1').err, /READ_ONLY/);
    // A negative value is a positional after '--' (the CLI says so when it is forgotten).
    t.match(qkd('device', 'bob-tdc1', 'set', 'trigger_level', '-0.4').err, /after '--'/);
    t.equal(qkd('device', 'bob-tdc1', 'set', 'trigger_level', '--', '-0.4').code, 0);
    t.match(qkd('device', 'bob-tdc1', 'get', 'edge:1').out, /= 1 \(falling\)/);
  });

  t.test('qkd device stream --record: tags through the real driver into a recording', async (t) => {
    const file = join(dir.path, 'tdc1.qkdtags');
    const r = qkd('device', 'bob-tdc1', 'stream', '--tags', '20000', '--record', file, '--json');
    t.equal(r.code, 0, r.err);
    const s = JSON.parse(r.out) as { tags: number; errors: number; perChannel: Record<string, number> };
    t.equal(s.tags, 20000);
    t.equal(s.errors, 0);
    t.same(Object.keys(s.perChannel).sort(), ['0', '1']);
    t.ok(existsSync(file));
    const h = await readRecordingHeader(file);
    t.equal(h.header.profile, 's15-tdc1');
    t.equal(h.header.identity.model, 'TDC1');
    t.equal(h.records, 20000);
  });
}

if (hasSocat()) {
  t.test('qkd calibrate --device: the TDC1 as the calibration tagger (counting steps)', async (t) => {
    const d = tempDir('qkd-tdc1-cal-');
    t.teardown(() => d.remove());
    const config = join(d.path, 'node.json');
    writeFileSync(config, JSON.stringify({
      emulated: { preset: 'reference-decoy', stateFile: join(d.path, 'state.json') },
      devices: [{ id: 'alice-source', profile: 'emulab-ps1', emulated: true }, { id: 'bob-tdc1', profile: 's15-tdc1', emulated: true }],
    }));
    const run = (...args: string[]) => spawnSync(process.execPath, [bin, 'calibrate', ...args, '--device', 'bob-tdc1', '--config', config, '--out', join(d.path, 'cal'), '--no-plot'], { encoding: 'utf8', cwd: d.path, env: { ...process.env, QKD_STATE_DIR: d.path }, timeout: 120_000 });
    const r = run('dark-counts', '--seconds', '0.05');
    t.equal(r.status, 0, r.stderr);
    t.match(r.stdout, /dark counts: ch0 \d+ \/s .*ch1 \d+ \/s/);
    const files = readdirSync(join(d.path, 'cal')).filter((f) => f.endsWith('.json'));
    t.equal(files.length, 1);
    const rec = JSON.parse(readFileSync(join(d.path, 'cal', files[0]), 'utf8')) as { devices: { id: string; model: string }[] };
    t.match(rec.devices, [{ id: 'bob-tdc1', model: 's15-tdc1' }, { id: 'alice-source' }], 'the record names the TDC1 it was measured with');
    const bad = run('delays');
    t.equal(bad.status, 1);
    t.match(bad.stderr, /calibrate delays --device bob-tdc1: this step indexes pulses with Alice's intensity pattern.*\[CALIBRATE_DEVICE_STEP\]/);
  });
}

t.test("Bob's node takes a TDC1 on a serial port as its time-tagger", { skip: hasSocat() ? false : 'socat is not installed' }, async (t) => {
  const d = tempDir('qkd-tdc1-node-');
  t.teardown(() => d.remove());
  mkdirSync(join(d.path, 'pty'));
  const pty = await startTdc1OnPty(new EmulatedTdc1(new EmulatedLab({ source: 'synthetic' })), join(d.path, 'pty'));
  t.teardown(() => pty.close());
  const devices = await openNodeDevices('bob', [{ id: 'bob-tagger', profile: 's15-tdc1', port: pty.path }], loadProtocolSettings('reference-decoy'), 'test node config');
  t.teardown(() => devices.close());
  const tagger = devices.tagger!;
  t.equal(tagger.kind, 'time-tagger');
  t.equal(tagger.profile, 's15-tdc1');
  const id = await tagger.open();
  t.equal(id.model, 'TDC1');
  let n = 0;
  for await (const b of tagger.startStream({ transferBytes: 1 << 20, maxTags: 5000 })) n += b.timePs.length;
  t.equal(n, 5000, 'streams as BobNode streams it');
  await tagger.close();
  await t.rejects(openNodeDevices('bob', [{ id: 'bob-tagger', profile: 's15-tdc1', port: join(d.path, 'nothing-here') }], loadProtocolSettings('reference-decoy'), 'test node config'), { code: 'RUN_DEVICE_OPEN', message: /device 'bob-tagger' \(s15-tdc1 on .*nothing-here\) could not be opened/ });
});
