/**
 * Public entry of the device layer. Typical uses:
 *
 * ```ts
 * // the configured devices (emulated set by default), as the CLI does
 * const set = new DeviceSet(loadNodeConfig());
 * const tagger = set.get('bob-tagger') as TimeTagger;
 *
 * // an emulated tagger on a link preset, for timing/calibration code and tests
 * const { tagger, lab } = createEmulatedTagger({ preset: 'reference-decoy', seed: 7n, distanceKm: 50 });
 * await tagger.open();
 * for await (const batch of tagger.startStream({ maxTags: 1e6 })) { ... }
 * ```
 */
export * from './types.ts';
export { TagRecordDecoder, encodeTagRecords, decodeTagRecordsSlow, encodeTimeTags, TAG_RECORD_BYTES } from './tags.ts';
export { loadProfile, loadProfileFile, listProfiles, parseProfile, PROFILES_DIR, type DeviceProfile, type ParameterSpec } from './profile.ts';
export { DeviceSet, loadNodeConfig, parseNodeConfig, DEFAULT_NODE_CONFIG, type NodeDeviceConfig, type DeviceEntry } from './config.ts';
export { SerialLineTransport } from './transports/serial.ts';
export { UsbTransport, openUsbBulkDevice } from './transports/usb.ts';
export { PhotonSourceDriver, SpadDetectorDriver, createSerialDriver } from './drivers/scpi.ts';
export { TimeTaggerDriver } from './drivers/tagger.ts';
export { checkValue, type ReconnectPolicy } from './drivers/base.ts';
export { EmulatedLab, SyntheticTagSource, type EmulatedLabOptions, type PulseTagSource } from './emulated/lab.ts';
export { EmulatedUsbTagger } from './emulated/usb-tagger.ts';
export { EmulatedPhotonSource, EmulatedSpadDetector } from './emulated/instruments.ts';
export { EmulatedSerialBinding } from './emulated/serial-binding.ts';
export { attachInstrumentToTty } from './emulated/pty.ts';
export { recordTagStream, openReplayTagger, readRecordingHeader, TagRecorder, type RecordingHeader } from './record.ts';

import { loadProfile } from './profile.ts';
import { EmulatedLab, type EmulatedLabOptions } from './emulated/lab.ts';
import { EmulatedUsbTagger } from './emulated/usb-tagger.ts';
import { TimeTaggerDriver } from './drivers/tagger.ts';

/**
 * An emulated time-tagger (profile emulab-tt8) on its own EmulatedLab: the real USB transport and
 * driver over the transfer-level emulator, tags from the EmulatedLink. Call `open()` on it.
 * `lab.link` is the EmulatedLink once streaming started (truth data for tests lives there).
 */
export function createEmulatedTagger(opts: EmulatedLabOptions & { id?: string } = {}): { tagger: TimeTaggerDriver; lab: EmulatedLab; device: EmulatedUsbTagger } {
  const lab = new EmulatedLab(opts);
  const device = new EmulatedUsbTagger(lab);
  const tagger = new TimeTaggerDriver({ id: opts.id ?? 'bob-tagger', profile: loadProfile('emulab-tt8'), device });
  return { tagger, lab, device };
}
