/**
 * The real devices a node's configuration names (entries without `"emulated": true`), opened at
 * start through the device layer's drivers: identity and firmware are checked against the
 * profile (a mismatch refuses the start: fail closed), and the ones the run drives are returned.
 *
 * Alice's photon source: configured for the link (repetition rate, the three mean photon
 * numbers, the probabilities of its internal RNG's choices), internal pattern mode, then switched
 * on. Its RNG is keyed inside the device; what it applied to each pulse is Alice's record, read
 * back over its wire protocol (binary blocks: `readChoices`, `readClasses`) and its pulse counter
 * is her emission horizon (pattern-link.ts). The node never programs or derives a seed.
 *
 * Bob's time-tagger: a real one replaces the emulated lab (his node then has no physics at all).
 */
import { ConfigError } from '../errors.ts';
import { DeviceSet, type DeviceEntry } from '../devices/config.ts';
import { loadProfile } from '../devices/profile.ts';
import type { DeviceIdentity, PhotonSource, TimeTagger } from '../devices/types.ts';
import type { ProtocolSettings } from '../protocol/settings.ts';

export interface OpenedDevice {
  id: string;
  kind: string;
  model: string;
  firmware: string;
  allowedFirmware: string[];
}

export interface NodeDevices {
  /** Every real device opened, with its identity (for the status and the device-info metric). */
  readonly info: OpenedDevice[];
  /** Alice: her source, switched on (internal RNG); her record is its read-back. */
  source?: { device: PhotonSource };
  /** Bob: his real time-tagger, USB (TimeTaggerDriver) or serial (S-Fifteen TDC1); not opened: BobNode opens it. */
  tagger?: TimeTagger;
  close(): Promise<void>;
}

/** The real (not emulated) entries of a device list. */
export function realEntries(devices: DeviceEntry[] | undefined): DeviceEntry[] {
  return (devices ?? []).filter((d) => d.emulated !== true);
}

/** Opens and checks the real devices of a node; switches Alice's source on. */
export async function openNodeDevices(role: 'alice' | 'bob', devices: DeviceEntry[] | undefined, preset: ProtocolSettings, file: string): Promise<NodeDevices> {
  const real = realEntries(devices);
  const set = new DeviceSet({ devices: real, file }, { persist: false });
  const info: OpenedDevice[] = [];
  const out: NodeDevices = { info, close: () => set.close() };
  try {
    for (const e of real) {
      const profile = loadProfile(e.profile);
      const dev = set.get(e.id);
      let id: DeviceIdentity;
      try {
        id = await dev.open();
      } catch (err) {
        throw new ConfigError('RUN_DEVICE_OPEN', `${file}: device '${e.id}' (${e.profile}${e.port ? ` on ${e.port}` : ''}) could not be opened: ${(err as Error).message} The node does not start without it: connect it (\`qkd devices\` lists what it finds) or fix the entry, then start again.`, { cause: err });
      }
      if (role === 'bob' && profile.kind === 'time-tagger') {
        // Checked here (fail fast); the node's tag stream opens it again and reports its identity.
        await dev.close();
        out.tagger = dev as TimeTagger;
        continue;
      }
      info.push({ id: e.id, kind: profile.kind, model: `${id.vendor} ${id.model}`, firmware: id.firmware, allowedFirmware: profile.firmware });
      if (role === 'alice' && profile.kind === 'photon-source') {
        if (!profile.readback) {
          throw new ConfigError('RUN_DEVICE_OPEN', `${file}: device '${e.id}' (${e.profile}) has no read-back of its RNG record ("readback" in the profile): Alice's node cannot learn what it sent. Use a source whose profile declares it.`);
        }
        const src = dev as PhotonSource;
        // A node restarted after a crash finds its source still emitting, its RNG running: it
        // takes it over as it is (reprogramming would be refused, and restarting the RNG would
        // cut the record the peer's sync is locked on) once it has the link's settings.
        if (!(await takeOverSource(src, preset))) await programSource(src, preset);
        out.source = { device: src };
      }
    }
    const closeAll = out.close;
    out.close = async () => {
      if (out.source) await out.source.device.setEnabled(false).catch(() => undefined);
      await closeAll();
    };
    return out;
  } catch (err) {
    await set.close().catch(() => undefined);
    throw err;
  }
}

/** Configures Alice's source for the link (internal RNG) and switches it on. */
export async function programSource(src: PhotonSource, preset: ProtocolSettings): Promise<void> {
  await src.setEnabled(false);
  await src.setRepetitionRateHz(preset.repRateHz);
  await src.setIntensity(0, preset.intensities.signal);
  await src.setIntensity(1, preset.intensities.decoy);
  await src.setIntensity(2, preset.intensities.vacuum);
  await src.setPatternProbabilities({ signal: preset.intensityProbs.signal, decoy: preset.intensityProbs.decoy, basisZ: preset.aliceBasisProbZ });
  await src.setPattern(0);
  await src.setEnabled(true);
}

/**
 * True when the source is already on with the link's repetition rate and intensities (a node
 * restarted while its source kept running): nothing is changed. False when it is off (then it
 * is programmed). On but with other settings: refused, since switching a running source to new
 * settings would start a record the peer does not expect.
 */
export async function takeOverSource(src: PhotonSource, preset: ProtocolSettings): Promise<boolean> {
  if (!(await src.enabled())) return false;
  const rate = await src.repetitionRateHz();
  const mu = [await src.intensity(0), await src.intensity(1), await src.intensity(2)];
  const want = [preset.intensities.signal, preset.intensities.decoy, preset.intensities.vacuum];
  const close = (a: number, b: number) => Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(b));
  if (close(rate, preset.repRateHz) && mu.every((m, i) => close(m, want[i]))) return true;
  throw new ConfigError('RUN_SOURCE_BUSY', `Alice's source is already on with other settings (${rate} Hz, intensities ${mu.join('/')}; the link wants ${preset.repRateHz} Hz, ${want.join('/')}): another run drives it, or it was left on. Switch it off (\`qkd device <id> set output 0\`) and start again.`);
}

/** Device kinds each role's node may drive for real. */
export const REAL_KINDS: Record<'alice' | 'bob', string[]> = { alice: ['photon-source'], bob: ['time-tagger', 'spad-detector'] };
