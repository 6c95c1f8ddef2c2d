/**
 * A calibration rig on the emulated lab (src/lab/link.ts): what `qkd calibrate` and the timing
 * tests read when no devices are configured. The lab implements the timing layer's
 * CalibrationRig interface; the timing layer knows nothing of the lab.
 */
import { EmulatedLink, KIND_PHOTON } from './link.ts';
import { loadLinkPreset, type LinkPreset, type LinkPresetOverrides } from './presets.ts';
import type { TagBatch } from './types.ts';
import { alicePatternFromSeed } from './pattern.ts';
import type { CalibrationRig } from '../timing/calibrate.ts';

export interface EmulatedRigOptions {
  seed: bigint;
  distanceKm?: number;
  overrides?: LinkPresetOverrides;
  /**
   * Relative efficiency per channel applied by thinning photon clicks (the lab emulator has one
   * efficiency for all detectors); lets tests inject unequal efficiencies. Default all 1.
   */
  efficiencyScale?: Record<number, number>;
}

/** A rig on the emulated lab (src/lab/EmulatedLink). */
export function emulatedRig(presetName: string, opts: EmulatedRigOptions): CalibrationRig & { link: EmulatedLink; preset: LinkPreset } {
  const preset = loadLinkPreset(presetName, opts.overrides);
  const link = new EmulatedLink(preset, { seed: opts.seed, distanceKm: opts.distanceKm });
  const nominal = { ...link.preset.intensities };
  const scale = opts.efficiencyScale ?? {};
  let rng = Number(opts.seed % 2147483647n) || 1;
  const uniform = (): number => { rng = (Math.imul(rng, 48271) >>> 0) % 2147483647; return rng / 2147483647; };
  return {
    link, preset: link.preset,
    repRateHz: preset.repRateHz,
    pattern: alicePatternFromSeed(link.preset, opts.seed),
    devices: [
      { id: 'emulated-source', kind: 'photon-source', model: `emulated:${preset.name}`, emulated: true },
      { id: 'emulated-detectors', kind: 'spad-detector', model: `emulated:${preset.name}`, emulated: true },
      { id: 'emulated-tagger', kind: 'time-tagger', model: `emulated:${preset.name}`, emulated: true },
    ],
    profiles: { link: preset.name, distanceKm: String(link.preset.distanceKm) },
    async read(pulses: number): Promise<TagBatch> {
      const b = link.nextPulses(pulses);
      if (!Object.keys(scale).length) return b.tags;
      const keep: number[] = [];
      for (let i = 0; i < b.truthKind.length; i++) {
        const s = scale[b.tags.channel[i]] ?? 1;
        if (b.truthKind[i] !== KIND_PHOTON || s >= 1 || uniform() < s) keep.push(i);
      }
      return { timePs: BigInt64Array.from(keep, (i) => b.tags.timePs[i]), channel: Uint8Array.from(keep, (i) => b.tags.channel[i]) };
    },
    async setSource(s) {
      if (s.enabled !== undefined) link.setSource({ enabled: s.enabled });
      if (s.intensityScale !== undefined) {
        const k = s.intensityScale;
        link.setSource({ intensities: { signal: nominal.signal * k, decoy: nominal.decoy * k, vacuum: nominal.vacuum * k } });
      }
    },
  };
}

