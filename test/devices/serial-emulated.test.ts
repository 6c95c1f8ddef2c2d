/**
 * The real serial transport + drivers against the emulated instruments over the answering
 * serialport binding: conformance, limits, and every bad-input case of issue 2.
 */
import t from 'tap';
import { encodePulseList } from '../../src/protocol/pulse-list.ts';
import { DeviceError, ProtocolError, TimeoutError, TransportError } from '../../src/errors.ts';
import { loadProfile } from '../../src/devices/profile.ts';
import type { SerialSettings } from '../../src/devices/profile.ts';
import { EmulatedLab } from '../../src/devices/emulated/lab.ts';
import { EmulatedSerialBinding } from '../../src/devices/emulated/serial-binding.ts';
import { EmulatedSpadDetector } from '../../src/devices/emulated/instruments.ts';
import { SerialLineTransport } from '../../src/devices/transports/serial.ts';
import { SpadDetectorDriver } from '../../src/devices/drivers/scpi.ts';
import { emulatedSource, emulatedSpad, sourceConformance, spadConformance, waitForState } from '../../src/testkit/devices.ts';

t.test('SPAD detector conformance (emulated, serial binding)', async (t) => {
  const rig = emulatedSpad();
  t.teardown(() => rig.driver.close());
  const id = await rig.driver.open();
  t.same(id, { vendor: 'EmuLab', model: 'SPAD-1', serial: 'SPD1-0001', firmware: '2.1.3' });
  await spadConformance(t, rig.driver);
  // Profile scale: the API speaks fractions, the module percent.
  await rig.driver.setEfficiency(0.25);
  t.equal(rig.instrument.snapshot().efficiencyPct, 25, 'efficiency reached the device in percent');
  t.equal(await rig.driver.efficiency(), 0.25);
});

t.test('another firmware dialect, another profile: reply patterns parse named replies with units', async (t) => {
  const lab = new EmulatedLab({ source: 'synthetic' });
  const binding = new EmulatedSerialBinding();
  const instrument = new EmulatedSpadDetector(lab, { dialect: 'terse' });
  const path = binding.attach('spad-fw14', instrument);
  const profile = loadProfile('emulab-spad1-fw14');
  const driver = new SpadDetectorDriver({ id: 'old-spad', profile, transport: new SerialLineTransport({ path, settings: profile.transport as SerialSettings, binding }) });
  t.teardown(() => driver.close());
  t.equal((await driver.open()).firmware, '1.4.2');
  await spadConformance(t, driver);
  await driver.setDeadTimeNs(120);
  t.equal(instrument.handleLine('DT?'), 'DT=120NS', 'the device speaks its own dialect');
  t.equal(await driver.deadTimeNs(), 120);
  // The 2.x profile on the 1.4 device is refused at open (firmware list), not half-working.
  const wrong = new SpadDetectorDriver({ id: 'old-spad-2', profile: loadProfile('emulab-spad1'), transport: new SerialLineTransport({ path: binding.attach('spad-fw14-b', new EmulatedSpadDetector(lab, { dialect: 'terse' })), settings: profile.transport as SerialSettings, binding }) });
  await t.rejects(wrong.open(), { code: 'FIRMWARE_NOT_ALLOWED' });
});

t.test('photon source conformance; its RNG record is read back in binary blocks, nothing else leaves it', async (t) => {
  const conf = emulatedSource();
  t.teardown(() => conf.driver.close());
  await conf.driver.open();
  await sourceConformance(t, conf.driver);
  const rig = emulatedSource();
  t.teardown(() => rig.driver.close());
  await rig.driver.open();
  await t.rejects(rig.driver.readChoices(Float64Array.of(0)), { code: 'DEVICE_REFUSED', message: /No pattern record/ }, 'no record before the RNG ran');
  await rig.driver.setPatternProbabilities({ signal: 0.6, decoy: 0.3, basisZ: 0.6 });
  await rig.driver.setPattern(0);
  await rig.driver.setEnabled(true);
  t.equal(await rig.driver.emittedPulses(), 0, 'the pulse counter starts at 0');
  rig.lab.nextPulses(3_000_000);
  t.equal(await rig.driver.emittedPulses(), 3_000_000, 'the counter follows the emitted pulses');
  await t.rejects(rig.driver.set('prob_signal', 0.5), { code: 'DEVICE_REFUSED' }, 'probabilities are fixed once the pattern runs');
  // 2^20 + 5 pulses: more than one block's worth of pulse-list bytes contain the delimiter byte.
  const n = (1 << 20) + 5;
  const pulses = Float64Array.from({ length: n }, (_, i) => i * 2 + 1);
  const c = await rig.driver.readChoices(pulses);
  t.equal(c.length, n);
  t.same(await rig.driver.readChoices(pulses), c, 'the record is the same when read again');
  // The same read-back from an encoded list passed on as it is (Alice forwards Bob's).
  t.same(await rig.driver.readChoicesOfList(encodePulseList(pulses), n), c, 'an encoded pulse list reads back the same choices');
  const sparse = Float64Array.from({ length: 5000 }, (_, i) => i * 599 + 7);
  t.same(await rig.driver.readChoicesOfList(encodePulseList(sparse), sparse.length), await rig.driver.readChoices(sparse), 'sparse pulses too');
  await t.rejects(rig.driver.readChoicesOfList(encodePulseList(sparse), sparse.length + 1), { code: 'SHORT_READBACK' },
    'a count that does not match the list is caught by the reply length');
  const cls = await rig.driver.readClasses(pulses);
  t.ok(cls.every((k, i) => k === ((c[i] >> 2) & 3)), 'the classes are the intensity part of the choices');
  const z = c.reduce((a, x) => a + (((x >> 1) & 1) === 0 ? 1 : 0), 0) / n;
  const sig = c.reduce((a, x) => a + (((x >> 2) & 3) === 0 ? 1 : 0), 0) / n;
  t.ok(Math.abs(z - 0.6) < 0.005 && Math.abs(sig - 0.6) < 0.005, `Z ${z.toFixed(4)}, signal ${sig.toFixed(4)} as programmed`);
  // Any order and repeats: answered in the caller's order.
  const mixed = Float64Array.of(21, 3, 21, 1, 2_999_999);
  const want = [c[10], c[1], c[10], c[0]];
  const got = await rig.driver.readChoices(mixed);
  t.same([...got.subarray(0, 4)], want, 'unsorted and repeated pulses come back in the caller\'s order');
  await t.rejects(rig.driver.readChoices(Float64Array.of(5, 3_000_000)), { code: 'DEVICE_REFUSED', message: /not yet emitted/ }, 'a pulse not yet emitted is refused');
  // Bad answers: a block one byte short, a block without its delimiter.
  rig.instrument.readbackFault = 'short';
  await t.rejects(rig.driver.readChoices(pulses.subarray(0, 1001)), { code: 'SHORT_READBACK', message: /answered 500 bytes, expected 501/ });
  rig.instrument.readbackFault = 'unterminated';
  await t.rejects(rig.driver.readClasses(pulses.subarray(0, 64)), { code: 'BAD_BLOCK', message: /not followed by the line delimiter/ });
  rig.instrument.readbackFault = 'none';
  t.same(await rig.driver.readChoices(pulses.subarray(0, 8)), c.subarray(0, 8), 'the line resynchronises after a bad block');
  rig.instrument.fault = 'truncate';
  const e = await rig.driver.readChoices(pulses.subarray(0, 4000)).catch((x) => x);
  t.equal(e.code, 'NO_REPLY', 'a truncated block times out');
  t.match(e.message, /truncated: \d+ byte\(s\)/);
  rig.instrument.fault = 'none';
  t.same([...rig.instrument.log].filter((h) => !/^[*A-Z:?]+$/.test(h)), [], 'the instrument log holds headers only');
});

t.test('out-of-range values are refused by the driver before anything is sent', async (t) => {
  const rig = emulatedSpad();
  t.teardown(() => rig.driver.close());
  await rig.driver.open();
  const sent = rig.instrument.log.length;
  const e1 = await rig.driver.setBiasV(99).catch((e) => e);
  t.ok(e1 instanceof DeviceError && e1.code === 'OUT_OF_RANGE');
  t.match(e1.message, /bias_voltage 99 is above the maximum 70 V; allowed: 20 to 70 in steps of 0.1 V/);
  const e2 = await rig.driver.setThresholdMv(10.5).catch((e) => e);
  t.match(e2.message, /not on the 1 mV grid/);
  await t.rejects(rig.driver.set('no_such', 1), { code: 'UNKNOWN_PARAMETER' });
  await t.rejects(rig.driver.set('threshold', Number.NaN), { code: 'BAD_VALUE' });
  t.equal(rig.instrument.log.length, sent, 'nothing reached the device');
});

t.test('a device refusal (firmware limits narrower than the profile) is a clear DeviceError', async (t) => {
  const profile = loadProfile('emulab-spad1');
  profile.parameters.threshold = { ...profile.parameters.threshold, max: 5000 }; // firmware stops at 1000
  const rig = emulatedSpad({ profile });
  t.teardown(() => rig.driver.close());
  await rig.driver.open();
  const err = await rig.driver.setThresholdMv(2000).catch((e) => e);
  t.ok(err instanceof DeviceError && err.code === 'DEVICE_REFUSED', 'refused');
  t.match(err.message, /refused 'DISCRIMINATOR:THRESHOLD 2000': ERR -222,Data out of range/);
  t.equal(await rig.driver.get('threshold'), 50, 'value unchanged and the line still works');
});

t.test('firmware outside the profile list is refused at open', async (t) => {
  const rig = emulatedSource({ firmware: '9.9.9' });
  await t.rejects(rig.driver.open(), { code: 'FIRMWARE_NOT_ALLOWED', message: /firmware 9\.9\.9 .* not in the profile's allowed list \(1\.3\.0\)/ });
  t.equal(rig.driver.state, 'closed');
});

t.test('garbage, truncated replies and silence: clear errors, then the line works again', async (t) => {
  const rig = emulatedSpad();
  t.teardown(() => rig.driver.close());
  await rig.driver.open();
  for (const [fault, cls, re] of [
    ['garbage', ProtocolError, /is not text .* first non-printable byte/],
    ['truncate', TimeoutError, /was truncated: \d+ byte\(s\) without the line delimiter/],
    ['silent', TimeoutError, /no reply to 'DEADTIME:TIME\?' .* within 500 ms/],
  ] as const) {
    rig.instrument.fault = fault;
    const t0 = performance.now();
    const err = await rig.driver.deadTimeNs().catch((e) => e);
    t.ok(err instanceof cls, `${fault}: ${cls.name}`);
    t.match(err.message, re, `${fault}: message`);
    t.ok(performance.now() - t0 < 1500, `${fault}: no hang`);
    rig.instrument.fault = 'none';
    t.equal(await rig.driver.deadTimeNs(), 0, `${fault}: next query answered correctly`);
    t.equal(rig.driver.state, 'ready');
  }
});

t.test('a reply that comes after its timeout is never taken for the next query', async (t) => {
  const rig = emulatedSpad();
  t.teardown(() => rig.driver.close());
  await rig.driver.open();
  rig.instrument.fault = 'slow'; // replies 700 ms late, the profile waits 500 ms
  await t.rejects(rig.driver.deadTimeNs(), { code: 'NO_REPLY' });
  rig.instrument.fault = 'none';
  // The stale '0' (dead time) arrives while the transport waits out its quiet period.
  t.equal(await rig.driver.get('threshold'), 50, 'threshold query gets the threshold, not the stale dead time');
  t.ok(rig.transport.strayLines >= 1, `stale line dropped (${rig.transport.strayLines})`);
});

t.test('devices whose set commands have no reply (no setAck in the profile)', async (t) => {
  const profile = loadProfile('emulab-spad1');
  delete profile.setAck;
  const rig = emulatedSpad({ profile });
  rig.instrument.ackSets = false;
  t.teardown(() => rig.driver.close());
  await rig.driver.open();
  await rig.driver.setThresholdMv(70);
  await rig.driver.setDeadTimeNs(20);
  t.equal(await rig.driver.get('threshold'), 70);
  t.equal(await rig.driver.deadTimeNs(), 20);
  t.equal(rig.transport.strayLines, 0, 'no unexpected replies');
});

t.test('unplugged: state change, pending query rejected, reconnect with back-off', async (t) => {
  const rig = emulatedSpad({ reconnect: { initialMs: 20, maxMs: 80, maxAttempts: 50 } });
  t.teardown(() => rig.driver.close());
  await rig.driver.open();
  rig.instrument.fault = 'silent'; // the query will be waiting when the cable goes
  const pending = rig.driver.deadTimeNs().catch((e) => e);
  const lost = waitForState(rig.driver, 'reconnecting');
  setTimeout(() => rig.binding.unplug(rig.path), 20);
  const err = await pending;
  t.ok(err instanceof TransportError && err.code === 'DISCONNECTED', 'pending query rejected with DISCONNECTED');
  const seen = await lost;
  t.same(seen.map((s) => s.state), ['disconnected', 'reconnecting']);
  await t.rejects(rig.driver.deadTimeNs(), { code: 'NOT_CONNECTED', message: /reconnecting/ }, 'calls fail fast while away');
  rig.instrument.fault = 'none';
  await new Promise((r) => setTimeout(r, 150)); // a few failed attempts
  rig.binding.replug(rig.path);
  const back = await waitForState(rig.driver, 'ready', 3000);
  t.match(back.at(-1)?.reason ?? '', /reconnected after \d+ attempt/);
  t.equal(await rig.driver.deadTimeNs(), 0, 'works after reconnect');
});

t.test('unplugged for good: gives up with state failed, no hang', async (t) => {
  const rig = emulatedSpad({ reconnect: { initialMs: 5, maxMs: 10, maxAttempts: 3 } });
  t.teardown(() => rig.driver.close());
  await rig.driver.open();
  rig.binding.unplug(rig.path);
  const seen = await waitForState(rig.driver, 'failed', 3000);
  t.match(seen.at(-1)?.reason ?? '', /gave up after 3 attempts/);
  await t.rejects(rig.driver.efficiency(), { code: 'NOT_CONNECTED', message: /gave up/ });
});

t.test('settings reach the emulated physics', async (t) => {
  const rig = emulatedSpad();
  t.teardown(() => rig.driver.close());
  await rig.driver.open();
  await rig.driver.setEfficiency(0.2);
  t.equal(rig.lab.settings.efficiencyScale, 2, 'efficiency 20 % = twice the preset');
  await rig.driver.setDeadTimeNs(50);
  t.equal(rig.lab.settings.deadTimePs, 50_000);
  const src = emulatedSource({ lab: rig.lab });
  t.teardown(() => src.driver.close());
  await src.driver.open();
  await src.driver.setIntensity(0, 0.7);
  await src.driver.setEnabled(false);
  t.same(rig.lab.settings.intensities, { signal: 0.7, decoy: 0.1, vacuum: 0 });
  t.equal(rig.lab.settings.enabled, false);
});

t.test('cooling: ready only once the set point is reached (fake clock)', async (t) => {
  let now = 0;
  const rig = emulatedSpad({ now: () => now });
  t.teardown(() => rig.driver.close());
  await rig.driver.open();
  await rig.driver.setTemperatureSetpointC(-100); // from -50 at 50 °C/s: 1 s
  t.equal(await rig.driver.ready(), false);
  now = 500;
  t.equal(await rig.driver.temperatureC(), -75);
  t.equal(await rig.driver.ready(), false);
  now = 1000;
  t.equal(await rig.driver.ready(), true);
});

t.test('open() after the driver gave up takes over cleanly', async (t) => {
  const rig = emulatedSpad({ reconnect: { initialMs: 5, maxMs: 10, maxAttempts: 2 } });
  t.teardown(() => rig.driver.close());
  await rig.driver.open();
  rig.binding.unplug(rig.path);
  await waitForState(rig.driver, 'failed', 3000);
  await t.rejects(rig.driver.open(), { code: 'OPEN_FAILED' }, 'still unplugged: open fails with the reason');
  t.equal(rig.driver.state, 'closed');
  rig.binding.replug(rig.path);
  await rig.driver.open();
  t.equal(rig.driver.state, 'ready');
  t.equal(await rig.driver.deadTimeNs(), 0);
});

t.test('applyDefaults on open sets every profile default; without it the device keeps its settings', async (t) => {
  const keep = emulatedSpad();
  keep.instrument.handleLine('DISCRIMINATOR:THRESHOLD 99');
  await keep.driver.open();
  t.equal(await keep.driver.get('threshold'), 99, 'kept');
  await keep.driver.close();
  const rig = emulatedSpad();
  rig.instrument.handleLine('DISCRIMINATOR:THRESHOLD 99');
  rig.instrument.handleLine('BIAS:VOLTAGE 60');
  const drv = new SpadDetectorDriver({ id: 'd', profile: loadProfile('emulab-spad1'), transport: rig.transport, applyDefaults: true });
  t.teardown(() => drv.close());
  await drv.open();
  t.equal(await drv.get('threshold'), 50);
  t.equal(await drv.get('bias_voltage'), 45.5);
  t.equal(await drv.efficiency(), 0.1);
});
