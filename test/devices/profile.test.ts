import t, { type Test } from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../../src/errors.ts';
import { listProfiles, loadProfile, loadProfileFile, firmwareAllowed, validateSchema, REQUIRED_PARAMETERS } from '../../src/devices/profile.ts';
import { tempDir } from '../../src/testkit/devices.ts';

const dir = tempDir('qkd-profile-');
t.teardown(() => dir.remove());

t.test('every shipped profile loads and declares what its kind needs', async (t) => {
  const names = listProfiles();
  t.ok(names.length >= 3, `profiles: ${names.join(', ')}`);
  for (const n of names) {
    const p = loadProfile(n);
    t.equal(p.name, n);
    for (const need of REQUIRED_PARAMETERS[p.kind]) t.ok(p.parameters[need], `${n} has ${need}`);
  }
});

const good = () => JSON.parse(JSON.stringify(loadProfile('emulab-spad1'), (k, v) => (k === 'file' ? undefined : v)));

/** Writes `mutate(good profile)` to <name>.json and expects ConfigError messages matching every regex. */
function bad(t: Test, name: string, mutate: (p: any) => unknown, ...expect: RegExp[]) {
  const p = good();
  p.name = name;
  const out = mutate(p) ?? p;
  const file = join(dir.path, `${name}.json`);
  writeFileSync(file, typeof out === 'string' ? out : JSON.stringify(out));
  try {
    loadProfileFile(file);
    t.fail(`${name}: expected a ConfigError`);
  } catch (e) {
    t.ok(e instanceof ConfigError, `${name}: ConfigError`);
    t.equal((e as ConfigError).code, 'BAD_PROFILE');
    const m = (e as Error).message;
    t.match(m, new RegExp(`${name}\\.json`), `${name}: names the file`);
    for (const re of expect) t.match(m, re, `${name}: ${re}`);
  }
}

t.test('malformed profiles: errors name file, field and expectation', async (t) => {
  bad(t, 'not-json', () => '{ "name": ', /not valid JSON/);
  bad(t, 'missing-kind', (p) => void delete p.kind, /field "kind": expected it to be present/);
  bad(t, 'wrong-type', (p) => void (p.parameters.dead_time.max = 'ten'), /field "parameters\.dead_time\.max": expected a number, got "ten"/);
  bad(t, 'min-over-max', (p) => void (p.parameters.threshold.min = 600), /field "parameters\.threshold\.max": expected a number >= min \(600\)/);
  bad(t, 'default-outside', (p) => void (p.parameters.bias_voltage.default = 99), /field "parameters\.bias_voltage\.default": expected a value in \[20, 70\], got 99/);
  bad(t, 'missing-param', (p) => void delete p.parameters.count_rate, /field "parameters\.count_rate": expected it to be present \(a spad-detector needs it\)/);
  bad(t, 'set-without-value', (p) => void (p.parameters.threshold.set = 'DISCRIMINATOR:THRESHOLD'), /field "parameters\.threshold\.set": expected the template to contain \{value\}/);
  bad(t, 'unknown-field', (p) => void (p.parameters.threshold.maxx = 3), /field "parameters\.threshold\.maxx": expected no such field/);
  bad(t, 'bad-kind', (p) => void (p.kind = 'kettle'), /field "kind": expected one of "photon-source", "spad-detector", "time-tagger", "time-controller", "snspd-controller", "laser", got "kettle"/);
  bad(t, 'bad-transport', (p) => void (p.transport.type = 'ethernet'), /field "transport\.type": expected one of "serial", "usb", "zmq", "file", "tcp", got "ethernet"/);
  bad(t, 'wrong-kind-transport', (p) => void (p.transport = { type: 'zmq', port: 5555, timeoutMs: 100 }), /field "transport\.type": expected "serial" for a spad-detector, got "zmq"/);
  bad(t, 'bad-baud', (p) => void (p.transport.baudRate = 11.5), /field "transport\.baudRate": expected a whole number/);
  bad(t, 'bad-regex', (p) => void (p.parameters.threshold.reply = '(unclosed'), /field "parameters\.threshold\.reply": expected a valid regular expression/);
  bad(t, 'name-mismatch', (p) => void (p.name = 'something-else'), /field "name": expected the file's base name "name-mismatch"/);
  bad(t, 'no-firmware', (p) => void (p.firmware = []), /field "firmware": expected at least 1 item/);
  bad(t, 'identity-groups', (p) => void (p.identity.pattern = '^(.*)$'), /field "identity\.pattern": expected a named group \(\?<vendor>/);
  // A serial time-tagger is fine (the S-Fifteen TDC1) but must still declare what a tagger needs.
  bad(t, 'tagger-on-serial', (p) => void (p.kind = 'time-tagger'), /field "parameters\.delay": expected it to be present \(a time-tagger needs it\)/);
  bad(t, 'host-with-template', (p) => void (p.parameters.threshold.host = true), /field "parameters\.threshold": expected no get\/set template or control request on a "host" parameter/);
  bad(t, 'channels-without-ch', (p) => void (p.parameters.threshold.channels = [0, 1]), /expected the template "DISCRIMINATOR:THRESHOLD\?" to contain \{ch\}/);
});

t.test('malformed USB (time-tagger) profiles', async (t) => {
  const tagger = () => JSON.parse(JSON.stringify(loadProfile('emulab-tt8'), (k, v) => (k === 'file' ? undefined : v)));
  const cases: [string, (p: any) => void, RegExp][] = [
    ['tt-transfer', (p) => void (p.transport.transferBytes = 1000), /field "transport\.transferBytes": expected a multiple of 16/],
    ['tt-no-control', (p) => void delete p.parameters.delay.control, /field "parameters\.delay\.control": expected \{request, format\} for a USB device/],
    ['tt-format', (p) => void (p.parameters.edge.control.format = 'u8'), /field "parameters\.edge\.control\.format": expected one of "i32", "i64", "f64", got "u8"/],
    ['tt-endpoint', (p) => void (p.transport.endpoint = 1), /field "transport\.endpoint": expected a number >= 129/],
    ['tt-vid', (p) => void (p.transport.vendorId = 70000), /field "transport\.vendorId": expected a number <= 65535/],
    ['tt-requests', (p) => void delete p.transport.requests.stop, /field "transport\.requests\.stop": expected it to be present/],
  ];
  for (const [name, mutate, re] of cases) {
    const p = tagger();
    p.name = name;
    mutate(p);
    const file = join(dir.path, `${name}.json`);
    writeFileSync(file, JSON.stringify(p));
    t.throws(() => loadProfileFile(file), { code: 'BAD_PROFILE', message: re }, name);
  }
});

t.test('malformed network instrument profiles (ZeroMQ SCPI, TCP JSON)', async (t) => {
  const copy = (name: string) => JSON.parse(JSON.stringify(loadProfile(name), (k, v) => (k === 'file' ? undefined : v)));
  const cases: [string, string, (p: any) => void, RegExp][] = [
    ['id-words', 'idq-id900', (p) => void (p.parameters.edge.words = ['RISING']), /field "parameters\.edge\.words": expected 2 words/],
    ['id-port', 'idq-id900', (p) => void (p.transport.port = 0), /field "transport\.port": expected a number >= 1/],
    ['id-no-identity', 'idq-id900', (p) => void delete p.identity, /field "identity": expected \{query, pattern\} for a zmq device/],
    ['id-kind', 'idq-id900', (p) => void (p.transport = { type: 'tcp', port: 1, countsPort: 2, timeoutMs: 100 }), /expected "zmq" for a time-controller, got "tcp"/],
    ['sq-no-label', 'sq-snspd', (p) => void delete p.parameters.bias_current.label, /field "parameters\.bias_current\.label": expected the JSON label/],
    ['sq-no-command', 'sq-snspd', (p) => void delete p.parameters.enable.command, /field "parameters\.enable\.command": expected the command that sets it/],
    ['sq-template', 'sq-snspd', (p) => void (p.parameters.enable.get = 'ENABLE?'), /expected "label"\/"command", not get\/set templates/],
    ['sq-frame-end', 'sq-snspd', (p) => void (p.transport.frameEnd = 'ab'), /field "transport\.frameEnd": expected one character/],
    ['sq-counts-port', 'sq-snspd', (p) => void delete p.transport.countsPort, /field "transport\.countsPort": expected it to be present/],
    ['spdc-no-enable', 's15-spdc', (p) => void delete p.parameters.enable, /field "parameters\.enable": expected it to be present \(a laser needs it\)/],
  ];
  for (const [name, base, mutate, re] of cases) {
    const p = copy(base);
    p.name = name;
    mutate(p);
    const file = join(dir.path, `${name}.json`);
    writeFileSync(file, JSON.stringify(p));
    t.throws(() => loadProfileFile(file), { code: 'BAD_PROFILE', message: re }, name);
  }
  for (const name of ['idq-id900', 'sq-snspd', 's15-spdc']) t.doesNotThrow(() => loadProfile(name), `${name} loads`);
});

t.test('a missing profile names what exists', async (t) => {
  t.throws(() => loadProfile('no-such-model'), { code: 'PROFILE_NOT_FOUND', message: /available: .*emulab-spad1/ });
});

t.test('firmware patterns', async (t) => {
  const p = { firmware: ['2.1.*', '3.0.0'] };
  t.ok(firmwareAllowed(p, '2.1.3'));
  t.ok(firmwareAllowed(p, '3.0.0'));
  t.notOk(firmwareAllowed(p, '3.0.01'));
  t.notOk(firmwareAllowed(p, '2.10'));
  t.notOk(firmwareAllowed(p, '12.1.3'));
});

t.test('schema validator reports every problem with its path', async (t) => {
  const errs = validateSchema({ a: [1, 'x'], b: 3 }, { type: 'object', required: ['c'], properties: { a: { type: 'array', items: { type: 'number' } }, b: { type: 'string' }, c: { type: 'boolean' } }, additionalProperties: false });
  t.equal(errs.length, 3);
  t.match(errs.join('\n'), /field "c": expected it to be present/);
  t.match(errs.join('\n'), /field "a\[1\]": expected a number, got "x"/);
  t.match(errs.join('\n'), /field "b": expected a string, got 3/);
});
