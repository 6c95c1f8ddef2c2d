/**
 * The IDQ ID900 driver over a real ZeroMQ REQ socket against the emulated Time Controller on a
 * real REP socket (ephemeral port): identity, input settings with words and limits, counters,
 * histograms, and bad input (garbage, a cut reply, a silent device, a wrong identity, nothing
 * listening).
 */
import t from 'tap';
import { ProtocolError, TimeoutError } from '../../src/errors.ts';
import { loadProfile } from '../../src/devices/profile.ts';
import { EmulatedId900 } from '../../src/devices/emulated/idq-id900.ts';
import { ZmqScpiTransport } from '../../src/devices/transports/zmq.ts';
import { Id900Driver } from '../../src/devices/drivers/idq-id900.ts';

const profile = loadProfile('idq-id900');

async function rig(t: { teardown(fn: () => Promise<void>): void }, timeoutMs = 400) {
  const device = new EmulatedId900();
  const endpoint = await device.start();
  const drv = new Id900Driver({ id: 'lab-id900', profile, transport: new ZmqScpiTransport({ endpoint, timeoutMs }) });
  t.teardown(async () => {
    await drv.close();
    await device.stop();
  });
  return { device, drv, endpoint };
}

t.test('identity, input settings, counters, histogram', async (t) => {
  const { device, drv } = await rig(t);
  t.same(await drv.open(), { vendor: 'ID Quantique', model: 'ID900', serial: 'ID900-0001', firmware: '7.2.1' });
  t.same(drv.inputs(), [1, 2, 3, 4]);
  await drv.set('threshold:2', -0.25);
  t.equal(await drv.get('threshold:2'), -0.25);
  await drv.set('edge:2', 1);
  t.equal(await drv.get('edge:2'), 1, 'FALLING read back as 1');
  t.ok(device.log.includes('INPU2:EDGE'), 'sent as INPU2:EDGE <word>');
  await drv.set('enable:4', 0);
  t.equal(await drv.get('enable:4'), 0);
  await drv.set('count_integration:1', 250);
  t.equal(await drv.get('count_integration:1'), 250, '250 ms = 2.5e11 time-base units on the wire');
  await t.rejects(drv.set('threshold:1', 3), { code: 'OUT_OF_RANGE', message: /lab-id900 .*above the maximum 2 V/ });
  await t.rejects(drv.set('count:1', 5), { code: 'READ_ONLY' });

  const c = await drv.countRates();
  t.same(c.channels, [1, 2, 3, 4]);
  t.equal(c.ratesPerSec[0], 120_000, 'input 1: 30000 counts in 250 ms');
  t.equal(c.ratesPerSec[1], 80_000);
  t.equal(c.ratesPerSec[3], 0, 'disabled input counts nothing');

  await drv.set('hist_min:1', 20_000);
  await drv.set('hist_bin_width:1', 50);
  await drv.set('hist_bin_count:1', 200);
  await drv.set('hist_ref:1', 2);
  t.equal(await drv.get('hist_ref:1'), 2, 'INPU1 as reference');
  const h = await drv.histogram(1);
  t.equal(h.counts.length, 200);
  t.equal(h.binPs, 50);
  t.equal(h.firstBinPs, 20_000);
  const peak = h.counts.indexOf(Math.max(...h.counts));
  t.equal(h.firstBinPs + peak * h.binPs, 24_950, 'peak in the bin holding 25 ns');
});

t.test('the device refuses what its firmware does not allow: named, not dropped', async (t) => {
  const { device, drv } = await rig(t);
  await drv.open();
  // The profile allows 1e9 ps of delay; make the device's own limit lower to see its refusal.
  const handle = device.handle.bind(device);
  device.handle = (text: string) => (text.startsWith('INPU1:DELAY ') ? 'ERROR: -222,"Data out of range"' : handle(text));
  await t.rejects(drv.set('delay:1', 1000), { code: 'DEVICE_REFUSED', message: /lab-id900 .*refused 'INPU1:DELAY 1000': ERROR: -222/ });
});

t.test('bad input: garbage, a cut reply, a silent device', async (t) => {
  const { device, drv } = await rig(t, 300);
  await drv.open();
  device.fault = 'garbage';
  await t.rejects(drv.get('threshold:1'), ProtocolError);
  await t.rejects(drv.get('threshold:1'), { code: 'GARBLED_REPLY', message: /not text .*Is something else listening/ });
  device.fault = 'none';
  await drv.set('hist_bin_count:2', 20);
  // ZeroMQ delivers whole messages, so a cut reply is the device's own: it shows where the reply
  // has structure (a bare number cut short is still a number; the histogram's length is checked).
  const handle = device.handle.bind(device);
  device.handle = (text: string) => {
    const r = handle(text);
    return text === 'HIST2:DATA?' ? r.slice(0, r.lastIndexOf(',')) : r;
  };
  await t.rejects(drv.histogram(2), { code: 'BAD_HISTOGRAM', message: /lab-id900 .*HIST2:DATA\?.*not a bracketed list/ });
  device.handle = (text: string) => {
    const r = handle(text);
    return text === 'HIST2:DATA?' ? r.slice(0, r.lastIndexOf(',')) + ']' : r;
  };
  await t.rejects(drv.histogram(2), { code: 'SHORT_HISTOGRAM', message: /19 bins, the device is set to 20/ });
  device.handle = handle;
  device.fault = 'silent';
  const t0 = Date.now();
  await t.rejects(drv.get('threshold:1'), TimeoutError);
  t.ok(Date.now() - t0 < 2000, 'no hang');
  await t.rejects(drv.get('threshold:1'), { code: 'NO_REPLY', message: /no reply to 'INPU1:THRE\?' within 300 ms/ });
});

t.test('a wrong identity and nothing listening', async (t) => {
  const other = new EmulatedId900();
  other.identity = 'ID Quantique,ID1000,ID1000-0007,7.2.1';
  const endpoint = await other.start();
  t.teardown(() => other.stop());
  const drv = new Id900Driver({ id: 'lab-id900', profile, transport: new ZmqScpiTransport({ endpoint, timeoutMs: 300 }) });
  await t.rejects(drv.open(), { code: 'BAD_IDENTITY', message: /lab-id900 .*does not match the profile's pattern.*ID1000/ });
  t.equal(drv.state, 'closed');
  other.identity = 'Acme,ID900,1,1';
  const ok = await drv.open();
  t.equal(ok.vendor, 'Acme', 'the model decides, the vendor string is reported');
  await drv.close();

  // Nothing on the port: ZeroMQ connects lazily, so the identity query times out, and says so.
  const port = Number(endpoint.split(':').pop());
  await other.stop();
  const none = new Id900Driver({ id: 'lab-id900', profile, transport: new ZmqScpiTransport({ endpoint: `tcp://127.0.0.1:${port}`, timeoutMs: 200 }) });
  await t.rejects(none.open(), { code: 'NO_REPLY', message: /is the device on|Check that the device is on/ });
});

t.test('time values come back with the time-base unit (1500TB), as IDQ\'s example utilities strip it', async (t) => {
  const { drv, endpoint } = await rig(t);
  await drv.open();
  await drv.set('hist_min:2', 1500);
  await drv.set('delay:3', 250);
  const raw = new ZmqScpiTransport({ endpoint, timeoutMs: 400 });
  t.teardown(() => raw.close());
  await raw.open();
  t.equal(await raw.query('HIST2:MIN?'), '1500TB', 'on the wire: the value and its unit');
  t.equal(await raw.query('INPU3:DELAY?'), '250TB');
  t.equal(await drv.get('hist_min:2'), 1500, 'the driver reads it through the profile\'s reply pattern');
  t.equal(await drv.get('delay:3'), 250);
  t.equal(await drv.get('hist_bin_width:1'), 100);
  t.equal(await drv.get('count_integration:2'), 1000);
  for (const p of ['delay', 'count_integration', 'hist_min', 'hist_bin_width']) {
    t.ok(new RegExp(profile.parameters[p].reply!).exec(' 2.5e11TB ')?.[1] === '2.5e11', `${p}: reply pattern takes a TB suffix`);
    t.ok(new RegExp(profile.parameters[p].reply!).exec('42')?.[1] === '42', `${p}: and a bare number`);
  }
});
