import t from 'tap';
import { join } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { ConfigError } from '../../src/errors.ts';
import { DEFAULT_NODE_CONFIG, DeviceSet, parseNodeConfig } from '../../src/devices/config.ts';
import type { SpadDetector, TimeTagger } from '../../src/devices/types.ts';
import { tempDir } from '../../src/testkit/devices.ts';

const dir = tempDir('qkd-config-');
t.teardown(() => dir.remove());

t.test('node configuration errors name the file and the field', async (t) => {
  const bad = (raw: unknown, re: RegExp, what: string) => t.throws(() => parseNodeConfig(raw, 'node.json'), { code: 'BAD_NODE_CONFIG', message: re }, what);
  bad({}, /node\.json: field "devices": expected it to be present/, 'no devices');
  bad({ devices: [] }, /field "devices": expected at least 1 item/, 'empty');
  bad({ devices: [{ id: 'a', profile: 'emulab-spad1', emulated: true }, { id: 'a', profile: 'emulab-ps1', emulated: true }] }, /field "devices\[1\]\.id": expected a unique id, got "a" twice/, 'duplicate id');
  bad({ devices: [{ id: 'a', profile: 'emulab-spad1' }] }, /field "devices\[0\]\.port": expected a serial port path/, 'real serial device without port');
  bad({ devices: [{ id: 'a', profile: 'emulab-spad1', emulated: true, port: '/dev/ttyS0' }] }, /expected either "emulated": true or "port", not both/, 'both');
  bad({ emulated: { seed: 'abc' }, devices: [{ id: 'a', profile: 'emulab-spad1', emulated: true }] }, /field "emulated\.seed": expected a decimal integer string/, 'seed');
  bad({ devices: [{ id: 'a', profile: 'emulab-spad1', emulated: true, channel: 300 }] }, /field "devices\[0\]\.channel": expected a number <= 255/, 'channel');
  // Sections owned by other parts of the node are left to them.
  t.ok(parseNodeConfig({ devices: [{ id: 'tt', profile: 'emulab-tt8' }], delivery: { anything: 1 } }, 'node.json'), 'a USB device needs no port; other sections ignored');
});

t.test('device set: unknown ids and bad profiles are clear; emulated state persists through the state file', async (t) => {
  const stateFile = join(dir.path, 'state.json');
  const cfg = { ...structuredClone(DEFAULT_NODE_CONFIG), emulated: { preset: 'reference-decoy', seed: '4', stateFile } };
  cfg.devices.push({ id: 'broken', profile: 'no-such-profile', emulated: true });
  const set = new DeviceSet(cfg, { persist: true });
  t.throws(() => set.get('nope'), ConfigError);
  t.throws(() => set.get('broken'), { code: 'PROFILE_NOT_FOUND' });
  const det = set.get('bob-detector-1') as SpadDetector;
  await det.open();
  await det.setDeadTimeNs(333);
  const tt = set.get('bob-tagger') as TimeTagger;
  await tt.open();
  await tt.setDelayPs(3, -4200);
  await set.close();
  t.ok(existsSync(stateFile));
  t.notMatch(readFileSync(stateFile, 'utf8'), /seed/i, 'no seed in the state file');
  const again = new DeviceSet(cfg, { persist: true });
  const det2 = again.get('bob-detector-1') as SpadDetector;
  await det2.open();
  t.equal(await det2.deadTimeNs(), 333, 'detector setting survived');
  const tt2 = again.get('bob-tagger') as TimeTagger;
  await tt2.open();
  t.equal(await tt2.delayPs(3), -4200, 'tagger setting survived');
  t.equal(again.lab?.settings.deadTimePs, 333_000, 'and reached the physics on restore');
  await again.close();
});
