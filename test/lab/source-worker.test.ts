/**
 * The emulated PS-1 served from its worker thread (src/devices/emulated/source-worker.ts) on a
 * real socat pty, driven by the real PS-1 driver: settings reach the lab's physics on this thread,
 * the emission horizon is the lab's pulse counter, and the read-back of detected pulses returns
 * exactly what the optics applied (from the device's record for photon candidates, from its
 * keystream for other pulses).
 */
import t from 'tap';
import { loadProfile, type SerialSettings } from '../../src/devices/profile.ts';
import { EmulatedLab } from '../../src/devices/emulated/lab.ts';
import { attachSourceWorkerToTty } from '../../src/devices/emulated/source-worker.ts';
import { SerialLineTransport } from '../../src/devices/transports/serial.ts';
import { PhotonSourceDriver } from '../../src/devices/drivers/scpi.ts';
import { DeviceError } from '../../src/errors.ts';
import { hasSocat, startPtyPair, tempDir } from '../../src/testkit/devices.ts';
import type { LinkBatch } from '../../src/lab/link.ts';

if (!hasSocat()) {
  t.test('emulated source on a worker', { skip: 'socat is not installed (apt-get install socat)' }, async () => {});
} else {
  t.test('emulated source on a worker: settings, horizon, read-back equals what the optics applied', async (t) => {
    const dir = tempDir('qkd-src-worker-');
    const pair = await startPtyPair(dir.path, 'ps1');
    const lab = new EmulatedLab({ preset: 'reference-decoy', seed: 7n, distanceKm: 25, awaitSource: true });
    // What the optics applied: a spy around the real device's view (the handle opened on this thread).
    const applied = new Map<number, number>();
    const attach = lab.attachSourceDevice.bind(lab);
    lab.attachSourceDevice = (dev, choicesAt) => attach(dev, (p) => {
      const c = choicesAt(p);
      for (let i = 0; i < p.length; i++) applied.set(p[i], c[i]);
      return c;
    });
    const att = await attachSourceWorkerToTty(lab, pair.b);
    const profile = loadProfile('emulab-ps1');
    const drv = new PhotonSourceDriver({ id: 'worker-src', profile, transport: new SerialLineTransport({ path: pair.a, settings: profile.transport as SerialSettings }) });
    t.teardown(async () => {
      await drv.close();
      await att.close();
      await pair.kill();
      dir.remove();
    });
    await drv.open();
    t.equal(await drv.emittedPulses(), 0, 'no pulses before the output is on');
    await drv.setIntensity(1, 0.12);
    await drv.setPattern(0);
    await drv.setEnabled(true);
    for (let i = 0; i < 200 && !lab.ready(); i++) await new Promise((r) => setTimeout(r, 10));
    t.ok(lab.ready(), 'the lab starts once the worker has drawn its key and switched on');
    t.equal(lab.settings.intensities.decoy, 0.12, 'a setting made on the worker reached the physics');

    const photon: number[] = [];
    const other: number[] = [];
    for (let b = 0; b < 4; b++) {
      const batch = lab.nextPulses(2_000_000) as LinkBatch;
      for (let i = 0; i < batch.truthKind.length; i++) (batch.truthKind[i] === 0 ? photon : other).push(batch.truthSlot[i]);
    }
    t.equal(await drv.emittedPulses(), 8_000_000, 'horizon = the lab pulse counter (shared memory)');
    t.ok(photon.length > 1000 && other.length > 0, `photon clicks ${photon.length}, dark/afterpulse ${other.length}`);
    t.equal(lab.link!.transmittance > 0, true);

    const pulses = Float64Array.from(new Set([...photon, ...other, 1, 2, 3, 5_000_001])).sort();
    const got = await drv.readChoices(pulses);
    let wrong = 0;
    let compared = 0;
    for (let i = 0; i < pulses.length; i++) {
      const a = applied.get(pulses[i]);
      if (a !== undefined) { compared++; if (got[i] !== a) wrong++; }
    }
    t.ok(compared >= new Set(photon).size, `${compared} read-back pulses were applied by the optics`);
    t.equal(wrong, 0, 'read-back = what the optics applied');
    t.same(await drv.readChoices(pulses), got, 'read-back repeatable (record and keystream agree)');
    const classes = await drv.readClasses(pulses);
    t.same(classes, got.map((c) => (c >> 2) & 3), 'classes = intensity of the choices');
    await t.rejects(drv.readChoices(Float64Array.of(8_000_000)), DeviceError, 'pulse not yet emitted is refused');
  });
}
