/**
 * The TDC1 driver over a real tty: a socat pty pair, the serial transport and driver on one end,
 * the emulated TDC1 (its wire protocol, fed by the emulated lab's synthetic detections) on the
 * other. Settings with read-back, counts, the timestamp stream, and bad input: garbage, a
 * truncated reply, a silent or wrong device, a 2-byte slip, a unit that stops mid-stream, one
 * left streaming by an earlier program.
 */
import t from 'tap';
import { DeviceError, ProtocolError, TimeoutError } from '../../src/errors.ts';
import { loadProfile, type SerialSettings } from '../../src/devices/profile.ts';
import { EmulatedLab } from '../../src/devices/emulated/lab.ts';
import { EmulatedTdc1, startTdc1OnPty, type Tdc1Pty } from '../../src/devices/emulated/tdc1.ts';
import { SerialLineTransport } from '../../src/devices/transports/serial.ts';
import { Tdc1Driver } from '../../src/devices/drivers/tdc1.ts';
import { hasSocat, tempDir } from '../../src/testkit/devices.ts';
import type { TagStreamBatch } from '../../src/devices/types.ts';

if (!hasSocat()) {
  t.test('TDC1 over a pty pair', { skip: 'socat is not installed (apt-get install socat)' }, async () => {});
} else {
  const dir = tempDir('qkd-tdc1-');
  t.teardown(() => dir.remove());
  const profile = loadProfile('s15-tdc1');
  let n = 0;

  async function rig(t: { teardown(fn: () => Promise<void>): void }, opts: { fresh?: (d: EmulatedTdc1) => void | Promise<void> } = {}) {
    const lab = new EmulatedLab({ source: 'synthetic', seed: 5n });
    const device = new EmulatedTdc1(lab, { timeScale: 0.05 });
    const sub = `${dir.path}/${n++}`;
    (await import('node:fs')).mkdirSync(sub);
    const pty: Tdc1Pty = await startTdc1OnPty(device, sub);
    await opts.fresh?.(device);
    const drv = new Tdc1Driver({ id: 'bob-tdc1', profile, transport: new SerialLineTransport({ path: pty.path, settings: profile.transport as SerialSettings }), reconnect: { initialMs: 50, maxMs: 100, maxAttempts: 2 } });
    t.teardown(async () => {
      await drv.close();
      await pty.close();
    });
    return { drv, device, pty, lab };
  }

  t.test('identity, settings with read-back, counts', async (t) => {
    const { drv, device } = await rig(t);
    const id = await drv.open();
    t.same(id, { vendor: 'S-Fifteen Instruments', model: 'TDC1', serial: 'TDC1-0001', firmware: '1.0.2' });
    t.same(drv.channels(), [0, 1, 2, 3]);
    await drv.set('integration_time', 40000);
    t.equal(await drv.get('integration_time'), 40000, 'the signed 16-bit reply (-25536 on the wire) is corrected');
    await drv.setThresholdV(0, -0.5);
    t.equal(await drv.get('trigger_level'), -0.5);
    t.equal(await drv.get('edge:2'), 1, 'negative threshold: falling edge');
    t.ok(device.log.includes('NEG'), 'sent as NEG <v>');
    await drv.set('trigger_level', 1.2);
    t.equal(await drv.get('edge:0'), 0);
    await drv.setReferenceClock(1);
    t.equal(await drv.get('reference_clock'), 1);
    await t.rejects(drv.setEdge(0, 1), DeviceError, 'edge follows the threshold');
    await t.rejects(drv.set('trigger_level', 5), { code: 'OUT_OF_RANGE' });
    await t.rejects(drv.set('mode', 3), { code: 'READ_ONLY' });
    await drv.setDelayPs(1, 1500);
    t.equal(await drv.delayPs(1), 1500, 'host-side delay');
    await drv.set('integration_time', 200);
    const c = await drv.counts();
    t.equal(c.length, 4);
    t.ok(c[0] + c[1] > 0 && c[2] === 0 && c[3] === 0, `clicks on the two detector inputs only (${c})`);
    const p = await drv.pairs();
    t.equal(p.singles.length, 4);
    t.same(Object.keys(p.coincidences), ['1-3', '1-4', '2-3', '2-4']);
    t.equal(await drv.get('mode'), 1, 'pairs mode');
  });

  t.test('timestamp stream: time order, channels, delays applied, line back to text afterwards', async (t) => {
    const { drv, device } = await rig(t);
    await drv.open();
    await drv.setDelayPs(1, 3000);
    const s = drv.startStream({ maxTags: 30000, transferBytes: 4096 });
    const all: bigint[] = [];
    const chans = new Set<number>();
    let events = 0;
    for await (const b of s) {
      all.push(...b.timePs);
      for (const c of b.channel) chans.add(c);
      events += b.events.length;
    }
    t.equal(all.length, 30000);
    t.equal(s.stats.tags, 30000);
    t.equal(events, 0, 'clean stream: no in-band events');
    for (let i = 1; i < all.length; i++) if (all[i] < all[i - 1]) { t.fail(`time order broken at ${i}`); break; }
    t.same([...chans].sort(), [0, 1]);
    t.ok(all.every((x) => x % 1000n === 0n), 'times on the 2 ns grid (+ whole-ns delays)');
    t.ok(device.wordsSent > 0 && !device.isStreaming, 'the unit was aborted');
    t.ok(drv.lastStreamStats, 'decoder figures kept');
    t.equal(await drv.get('mode'), 3, 'text commands work again after the drain');
  });

  t.test('a 2-byte slip mid-stream is marked in band and the stream goes on', async (t) => {
    const { drv, device } = await rig(t);
    await drv.open();
    const s = drv.startStream({ maxTags: 60000, transferBytes: 8192 });
    let got = 0;
    const errs: TagStreamBatch['events'] = [];
    let last = -1n;
    let slipped = false;
    for await (const b of s) {
      if (got > 20000 && !slipped) {
        device.slip('lose');
        slipped = true;
      }
      for (const e of b.events) errs.push(e);
      for (const x of b.timePs) {
        if (x < last) t.fail('time order');
        last = x;
      }
      got += b.timePs.length;
    }
    t.equal(got, 60000);
    t.equal(errs.length, 1, 'one ERROR event marks the gap');
    t.match(errs[0], { type: 1, channel: -1 });
    t.equal(drv.lastStreamStats?.resyncs, 1, 're-aligned once');
    t.equal(s.stats.errors, 1);
  });

  t.test('a unit that stops mid-stream: TimeoutError naming the device', async (t) => {
    const { drv, device } = await rig(t);
    await drv.open();
    const s = drv.startStream({ transferBytes: 4096 });
    let n = 0;
    await t.rejects((async () => {
      for await (const b of s) {
        n += b.timePs.length;
        if (n > 5000) device.stall();
      }
    })(), { name: 'TimeoutError', code: 'NO_DATA', message: /bob-tdc1 \(s15-tdc1\): no timestamp data for 1000 ms.*stopped answering/ });
  });

  t.test('bad text replies and a wrong identity: clear errors naming the device', async (t) => {
    const { drv, device } = await rig(t);
    await drv.open();
    device.fault = 'garbage';
    await t.rejects(drv.get('reference_clock'), ProtocolError, 'garbage');
    device.fault = 'truncate';
    await t.rejects(drv.get('reference_clock'), { name: 'TimeoutError', message: /bob-tdc1.*truncated/ });
    device.fault = 'silent';
    await t.rejects(drv.get('reference_clock'), { name: 'TimeoutError', message: /bob-tdc1.*no reply/ });
    device.fault = 'none';
    t.equal(await drv.get('reference_clock'), 0, 'healthy again');
    await drv.close();
    device.identity = 'EmuLab,SPAD-1,SPD1-0001,2.1.3';
    await t.rejects(drv.open(), { name: 'DeviceError', code: 'WRONG_IDENTITY', message: /bob-tdc1 \(s15-tdc1\).*not a TDC1 identity.*Check which port/ });
    device.identity = 'S-Fifteen Instruments,TDC1,TDC1-0001,0.9';
    await t.rejects(drv.open(), { code: 'FIRMWARE_NOT_ALLOWED' });
    device.fault = 'silent';
    device.identity = 'S-Fifteen Instruments,TDC1,TDC1-0001,1.0.2';
    await t.rejects(drv.open(), { name: 'TimeoutError', message: /bob-tdc1.*Is a TDC1 on/ });
  });

  t.test('a unit left streaming by an earlier program still opens (abort + drain first)', async (t) => {
    const { drv } = await rig(t, { fresh: (d) => { d.receive(Buffer.from('timestamp;time 0;counts?\r\n')); } });
    await new Promise((r) => setTimeout(r, 100));
    const id = await drv.open();
    t.equal(id.model, 'TDC1');
    t.equal(await drv.get('integration_time'), 0);
  });

  void TimeoutError;
}
