/**
 * The S-Fifteen SPDC board driver over a real tty: a socat pty pair, the serial transport and
 * driver on one end, the emulated board (its text protocol and own limits) on the other.
 * Identity, settings with the profile's limits and the board's LLIMIT, enable/disable as the
 * vendor's sequence, and bad input: garbage, a truncated reply, silence, a wrong identity, a
 * refusal of a set that has no reply.
 */
import t from 'tap';
import { mkdirSync } from 'node:fs';
import { ProtocolError, TimeoutError } from '../../src/errors.ts';
import { loadProfile, type SerialSettings } from '../../src/devices/profile.ts';
import { EmulatedSpdcBoard, startInstrumentOnPty } from '../../src/devices/emulated/s15-spdc.ts';
import { SerialLineTransport } from '../../src/devices/transports/serial.ts';
import { SpdcBoardDriver } from '../../src/devices/drivers/s15-spdc.ts';
import { hasSocat, tempDir } from '../../src/testkit/devices.ts';

if (!hasSocat()) {
  t.test('SPDC board over a pty pair', { skip: 'socat is not installed (apt-get install socat)' }, async () => {});
} else {
  const dir = tempDir('qkd-spdc-');
  t.teardown(() => dir.remove());
  const profile = loadProfile('s15-spdc');
  let n = 0;

  async function rig(t: { teardown(fn: () => Promise<void>): void }) {
    const board = new EmulatedSpdcBoard();
    const sub = `${dir.path}/${n++}`;
    mkdirSync(sub);
    const pty = await startInstrumentOnPty(board, sub);
    const drv = new SpdcBoardDriver({ id: 'alice-pump', profile, transport: new SerialLineTransport({ path: pty.path, settings: profile.transport as SerialSettings }), reconnect: { initialMs: 50, maxMs: 100, maxAttempts: 2 } });
    t.teardown(async () => {
      await drv.close();
      await pty.close();
    });
    return { board, drv, pty };
  }

  t.test('identity, settings with limits, enable and disable', async (t) => {
    const { board, drv } = await rig(t);
    t.same(await drv.open(), { vendor: 'S-Fifteen Instruments', model: 'SPDCSDR', serial: 'SPDC-0001', firmware: '2.0.3' });
    await drv.set('heater_setpoint', 42.5);
    t.equal(await drv.get('heater_setpoint'), 42.5);
    await drv.set('heater_loop', 1);
    await drv.set('power', 1);
    t.equal(await drv.get('heater_temperature'), 42.5, 'the loop holds the set point');
    await t.rejects(drv.set('peltier_setpoint', 60), { code: 'OUT_OF_RANGE', message: /alice-pump .*above the maximum 50 C/ });
    await t.rejects(drv.set('laser_current', 70), { code: 'OUT_OF_RANGE', message: /above the board's own limit LLIMIT 60 mA/ });
    await drv.set('laser_current', 25.125);
    t.equal(await drv.get('laser_current'), 25.125);
    t.equal(await drv.enabled(), false);
    t.equal(board.lasing, false);
    await drv.setEnabled(true);
    t.equal(board.lasing, true, 'power line on, then ON');
    t.equal(await drv.get('enable'), 1);
    t.equal(await drv.get('power'), 3, 'heater line kept');
    t.same(board.log.filter((c) => c === 'ON' || c === 'OFF'), ['ON']);
    await drv.set('enable', 0);
    t.equal(board.lasing, false);
    t.equal(await drv.get('power'), 1, 'laser line off, heater line kept');
  });

  t.test('a set the board refuses (it answers nothing to accepted ones) is not silent', async (t) => {
    const { board, drv } = await rig(t);
    await drv.open();
    // The profile allows 97 mA; the board's LLIMIT is what the driver checks, so lower the
    // firmware side behind the driver's back: the board refuses, the driver says so.
    await drv.set('laser_current_limit', 90);
    board.restore({ ...board.snapshot(), llimit: 10 });
    const err = await drv.set('laser_current', 50).then(() => undefined, (e: Error) => e);
    t.ok(err, 'rejected');
    t.match((err as unknown as { code: string }).code, /OUT_OF_RANGE/, 'the driver reads LLIMIT first');
    // Bypass the LLIMIT pre-check: a board that refuses a heater value its firmware does not take.
    const handle = board.handleLine.bind(board);
    board.handleLine = (line: string) => (line.startsWith('HSETTEMP ') ? 'ERR -222,Data out of range' : handle(line));
    await t.rejects(drv.set('heater_setpoint', 30), { code: /DEVICE_REFUSED|NOT_APPLIED/, message: /alice-pump/ });
    board.handleLine = (line: string) => (line.startsWith('HSETTEMP ') ? null : handle(line));
    await t.rejects(drv.set('heater_setpoint', 31), { code: 'NOT_APPLIED', message: /reads 35 after setting 31: the board did not take it/ });
  });

  t.test('bad input: garbage, truncated reply, silence, wrong identity', async (t) => {
    const { board, drv } = await rig(t);
    await drv.open();
    board.fault = 'garbage';
    await t.rejects(drv.get('laser_current'), ProtocolError);
    board.fault = 'truncate';
    await t.rejects(drv.get('laser_current'), { code: 'NO_REPLY', message: /truncated: 1 byte\(s\) without the line delimiter/ });
    board.fault = 'silent';
    await t.rejects(drv.get('laser_current'), TimeoutError);
    board.fault = 'none';
    t.equal(await drv.get('laser_current'), 0, 'usable again');
    await drv.close();
    board.identity = { ...board.identity, model: 'TDC1' };
    await t.rejects(drv.open(), { code: 'BAD_IDENTITY', message: /alice-pump .*TDC1/ });
  });
}
