/**
 * The Single Quantum SNSPD driver over real TCP sockets against the emulated controller (control
 * port with 0x17-framed JSON, counts port with CSV lines, both on ephemeral ports): identity,
 * bias and trigger level per detector, enable, count rates, and bad input (garbage and truncated
 * frames and count lines, a silent controller, a wrong identity, a refusal, a dropped connection).
 */
import t from 'tap';
import { ProtocolError, TimeoutError } from '../../src/errors.ts';
import { loadProfile, type TcpJsonSettings } from '../../src/devices/profile.ts';
import { EmulatedSqSnspd } from '../../src/devices/emulated/sq-snspd.ts';
import { TcpJsonTransport, splitJsonObjects } from '../../src/devices/transports/tcp-json.ts';
import { SqSnspdDriver } from '../../src/devices/drivers/sq-snspd.ts';

const profile = loadProfile('sq-snspd');
const settings = profile.transport as TcpJsonSettings;

async function rig(t: { teardown(fn: () => Promise<void>): void }, opts: { detectors?: number; timeoutMs?: number } = {}) {
  const device = new EmulatedSqSnspd({ detectors: opts.detectors ?? 4, periodMs: 20 });
  const address = await device.start();
  const transport = new TcpJsonTransport({ address, frameEnd: settings.frameEnd, timeoutMs: opts.timeoutMs ?? 400 });
  const drv = new SqSnspdDriver({ id: 'lab-snspd', profile, transport, reconnect: { initialMs: 20, maxMs: 50, maxAttempts: 5 } });
  t.teardown(async () => {
    await drv.close();
    await device.stop();
  });
  return { device, drv, transport, address };
}

t.test('frame splitting: concatenated objects, braces in strings, unbalanced', async (t) => {
  t.same(splitJsonObjects('{"a":1}{"b":"}{"}'), ['{"a":1}', '{"b":"}{"}']);
  t.same(splitJsonObjects(' {"a":{"b":2}} '), ['{"a":{"b":2}}']);
  t.equal(splitJsonObjects('{"a":1'), null);
  t.equal(splitJsonObjects('x{"a":1}'), null);
});

t.test('identity, bias and trigger level per detector, enable, counts', async (t) => {
  const { device, drv } = await rig(t);
  const id = await drv.open();
  t.equal(id.vendor, 'Single Quantum');
  t.equal(id.model, 'SNSPD controller (4 detectors)');
  t.same(drv.channels(), [1, 2, 3, 4]);
  t.equal(await drv.get('detectors'), 4);
  await drv.setBiasCurrentUa(2, 12.5);
  t.equal(await drv.get('bias_current:2'), 12.5);
  t.same(device.bias, [0, 12.5, 0, 0], 'only detector 2 changed; the whole array was sent');
  t.ok(device.log.includes('SetAllBiasCurrents'));
  await drv.setTriggerLevelMv(3, 150);
  t.equal(await drv.get('trigger_level:3'), 150);
  await t.rejects(drv.setBiasCurrentUa(1, 45), { code: 'OUT_OF_RANGE', message: /lab-snspd .*above the maximum 30 uA/ });
  await t.rejects(drv.set('detectors', 2), { code: 'READ_ONLY' });
  t.equal(await drv.enabled(), false);
  let c = await drv.countRates();
  t.same(c.ratesPerSec, [0, 0, 0, 0], 'unbiased detectors count nothing');
  await drv.setEnabled(true);
  t.equal(await drv.enabled(), true);
  await drv.set('measurement_period', 50);
  c = await drv.countRates();
  t.equal(c.integrationMs, 50);
  t.same(c.channels, [1, 2, 3, 4]);
  t.same(c.ratesPerSec, device.ratesPerSec().map((r) => (Math.round((r * 50) / 1000) * 1000) / 50), 'counts per period -> rates per second');
  t.ok(c.ratesPerSec[1] > 100_000 && c.ratesPerSec[0] === 100, 'biased detector 2 counts, the others dark counts');
  t.ok(Math.abs((c.deviceTimeMs ?? 0) - Date.now()) < 5000, "the line's time stamp (s) in ms");
});

t.test('a refusal is named; a set the device does not apply is not assumed', async (t) => {
  const { device, drv } = await rig(t);
  await drv.open();
  device.detectors = 3; // the firmware now expects 3 values: the driver's 4 are refused
  await t.rejects(drv.setBiasCurrentUa(1, 5), { code: 'DEVICE_REFUSED', message: /lab-snspd \(sq-snspd\) refused SetAllBiasCurrents .*expected 3 numbers/ });
});

t.test('bad input on the control port: garbage, truncated frame, silence', async (t) => {
  const { device, drv, transport } = await rig(t, { timeoutMs: 250 });
  await drv.open();
  device.fault = 'garbage';
  await t.rejects(drv.get('bias_current:1'), ProtocolError);
  t.ok(transport.stats.garbledFrames >= 1, 'counted');
  device.fault = 'truncate';
  await t.rejects(drv.get('bias_current:1'), { code: 'NO_REPLY', message: /bytes of an unfinished frame arrived: a truncated frame/ });
  device.fault = 'silent';
  await t.rejects(drv.get('enable'), TimeoutError);
  device.fault = 'none';
  // The truncated frame's tail is still in the buffer: the next frame glued to it is not JSON,
  // which is reported, and the one after that is clean.
  await drv.get('enable').catch(() => undefined);
  t.equal(await drv.get('enable'), 0, 'recovers once whole frames come again');
});

t.test('bad input on the counts port: garbage, a truncated line, silence', async (t) => {
  const { device, drv } = await rig(t, { timeoutMs: 250 });
  await drv.open();
  device.countsFault = 'garbage';
  await t.rejects(drv.countRates(), { code: 'BAD_COUNT_LINE', message: /not comma-separated numbers/ });
  device.countsFault = 'truncate';
  await t.rejects(drv.countRates(300), { code: /NO_DATA|BAD_COUNT_LINE/ });
  device.countsFault = 'silent';
  await t.rejects(drv.countRates(200), { code: 'NO_DATA', message: /stopped sending counts/ });
  device.countsFault = 'none';
});

t.test('a wrong identity: another detector count, another protocol', async (t) => {
  const { drv } = await rig(t, { detectors: 2 });
  await t.rejects(drv.open(), { code: 'WRONG_MODEL', message: /reports 2 detectors, the profile has 4/ });
  const other = new EmulatedSqSnspd();
  other.speaks = 'other';
  const address = await other.start();
  t.teardown(() => other.stop());
  const drv2 = new SqSnspdDriver({ id: 'lab-snspd', profile, transport: new TcpJsonTransport({ address, frameEnd: settings.frameEnd, timeoutMs: 300 }) });
  await t.rejects(drv2.open(), { code: 'BAD_IDENTITY', message: /does not speak Single Quantum's JSON protocol/ });
  const refused = new SqSnspdDriver({ id: 'lab-snspd', profile, transport: new TcpJsonTransport({ address: { host: '127.0.0.1', port: 1, countsPort: 2 }, frameEnd: settings.frameEnd, timeoutMs: 300 }) });
  await t.rejects(refused.open(), { code: 'OPEN_FAILED', message: /cannot connect to 127.0.0.1:1 \(control port\): ECONNREFUSED/ });
});

t.test('the controller drops the connection: the driver reconnects', async (t) => {
  const { device, drv } = await rig(t);
  await drv.open();
  const states: string[] = [];
  drv.on('state', (s) => states.push(s.state));
  device.dropConnections();
  for (let i = 0; i < 100 && drv.state !== 'ready'; i++) await new Promise((r) => setTimeout(r, 20));
  for (let i = 0; i < 100 && !states.includes('ready'); i++) await new Promise((r) => setTimeout(r, 20));
  t.same(states.slice(0, 2), ['disconnected', 'reconnecting']);
  t.equal(drv.state, 'ready');
  t.equal(await drv.get('detectors'), 4);
});
