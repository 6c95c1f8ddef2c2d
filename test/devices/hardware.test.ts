/**
 * Conformance against REAL hardware, per device kind. Each runs only when its environment variable
 * names the device; otherwise it shows as a named skip (never a silent pass):
 *   QKD_HW_SPAD_PORT=/dev/ttyUSB0   [QKD_HW_SPAD_PROFILE=emulab-spad1]
 *   QKD_HW_SOURCE_PORT=/dev/ttyUSB1 [QKD_HW_SOURCE_PROFILE=emulab-ps1]
 *   QKD_HW_TAGGER=1                 [QKD_HW_TAGGER_PROFILE=emulab-tt8]  (found by the profile's VID:PID)
 * The suites are the same functions the emulated tests run (src/testkit/devices.ts).
 */
import t from 'tap';
import { loadProfile, type SerialSettings } from '../../src/devices/profile.ts';
import { SerialLineTransport } from '../../src/devices/transports/serial.ts';
import { openUsbBulkDevice } from '../../src/devices/transports/usb.ts';
import { PhotonSourceDriver, SpadDetectorDriver } from '../../src/devices/drivers/scpi.ts';
import { TimeTaggerDriver } from '../../src/devices/drivers/tagger.ts';
import { sourceConformance, spadConformance, taggerConformance } from '../../src/testkit/devices.ts';

const env = process.env;

t.test('hardware SPAD detector conformance', { skip: env.QKD_HW_SPAD_PORT ? false : 'hardware: set QKD_HW_SPAD_PORT to a SPAD serial port' }, async (t) => {
  const profile = loadProfile(env.QKD_HW_SPAD_PROFILE ?? 'emulab-spad1');
  const d = new SpadDetectorDriver({ id: 'hw-spad', profile, transport: new SerialLineTransport({ path: env.QKD_HW_SPAD_PORT!, settings: profile.transport as SerialSettings }) });
  t.teardown(() => d.close());
  await d.open();
  await spadConformance(t, d);
});

t.test('hardware photon source conformance', { skip: env.QKD_HW_SOURCE_PORT ? false : 'hardware: set QKD_HW_SOURCE_PORT to a source serial port' }, async (t) => {
  const profile = loadProfile(env.QKD_HW_SOURCE_PROFILE ?? 'emulab-ps1');
  const d = new PhotonSourceDriver({ id: 'hw-source', profile, transport: new SerialLineTransport({ path: env.QKD_HW_SOURCE_PORT!, settings: profile.transport as SerialSettings }) });
  t.teardown(() => d.close());
  await d.open();
  await sourceConformance(t, d);
});

t.test('hardware time-tagger conformance', { skip: env.QKD_HW_TAGGER ? false : 'hardware: set QKD_HW_TAGGER=1 with the tagger plugged in' }, async (t) => {
  const profile = loadProfile(env.QKD_HW_TAGGER_PROFILE ?? 'emulab-tt8');
  if (profile.transport.type !== 'usb') throw new Error(`${profile.name} is not a USB profile`);
  const { vendorId, productId } = profile.transport;
  const d = new TimeTaggerDriver({ id: 'hw-tagger', profile, device: () => openUsbBulkDevice(vendorId, productId) });
  t.teardown(() => d.close());
  await d.open();
  await taggerConformance(t, d);
});
