/**
 * The real devices a node's configuration names (entries without `"emulated": true`), opened at
 * start through the device layer's drivers: identity and firmware are checked against the
 * profile (a mismatch refuses the start: fail closed), and the ones the run drives are returned.
 *
 * Alice's photon source: configured for the link (repetition rate, the three mean photon
 * numbers), given a fresh secret pattern seed (PATTERN:SEED: her choices are a function of it, so
 * the seed is her record; it never leaves her node otherwise, and the driver shows it as
 * `<secret>` in every message), then switched on. Its emission start is her clock for what she
 * may reveal of her intensity pattern (pattern-link.ts).
 *
 * Bob's time-tagger: a real one replaces the emulated lab (his node then has no physics at all).
 */
import { randomBytes } from 'node:crypto';
import { ConfigError } from '../errors.ts';
import { DeviceSet, type DeviceEntry } from '../devices/config.ts';
import { loadProfile } from '../devices/profile.ts';
import type { DeviceIdentity, PhotonSource } from '../devices/types.ts';
import { TimeTaggerDriver } from '../devices/drivers/tagger.ts';
import type { LinkPreset } from '../lab/presets.ts';

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
  /** Alice: her source, switched on with `patternSeed`; `emissionStart` in performance.now() ms. */
  source?: { device: PhotonSource; patternSeed: bigint; emissionStart: number };
  /** Bob: his real time-tagger (not opened: BobNode opens it). */
  tagger?: TimeTaggerDriver;
  close(): Promise<void>;
}

/** The real (not emulated) entries of a device list. */
export function realEntries(devices: DeviceEntry[] | undefined): DeviceEntry[] {
  return (devices ?? []).filter((d) => d.emulated !== true);
}

/** Opens and checks the real devices of a node; switches Alice's source on. */
export async function openNodeDevices(role: 'alice' | 'bob', devices: DeviceEntry[] | undefined, preset: LinkPreset, file: string): Promise<NodeDevices> {
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
        out.tagger = dev as TimeTaggerDriver;
        continue;
      }
      info.push({ id: e.id, kind: profile.kind, model: `${id.vendor} ${id.model}`, firmware: id.firmware, allowedFirmware: profile.firmware });
      if (role === 'alice' && profile.kind === 'photon-source') {
        const src = dev as PhotonSource;
        await src.setEnabled(false);
        await src.setRepetitionRateHz(preset.repRateHz);
        await src.setIntensity(0, preset.intensities.signal);
        await src.setIntensity(1, preset.intensities.decoy);
        await src.setIntensity(2, preset.intensities.vacuum);
        const seedBytes = randomBytes(8);
        const patternSeed = seedBytes.readBigUInt64LE(0);
        seedBytes.fill(0);
        await src.setPattern(0, patternSeed);
        await src.setEnabled(true);
        out.source = { device: src, patternSeed, emissionStart: performance.now() };
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

/** Device kinds each role's node may drive for real. */
export const REAL_KINDS: Record<'alice' | 'bob', string[]> = { alice: ['photon-source'], bob: ['time-tagger', 'spad-detector'] };
