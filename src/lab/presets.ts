/**
 * Link presets: the physical parameters of one emulated Alice→Bob decoy-state BB84 link, stored as
 * JSON files in hw-profiles/links/<name>.json and validated at load.
 *
 * Units are in the field names or documented per field: rates in Hz, times in integer
 * picoseconds, losses in dB/km, probabilities and efficiencies as fractions in [0, 1], mean photon
 * numbers per pulse. A validation error names the file, the field and what was expected.
 *
 * Loading is synchronous and touches only the file system; call it at start-up, not on a hot path.
 */
import type { DetectorMapping } from './types.ts';
import {
  fieldChecks, LINK_DIR, listLinks, readLinkFile, validateProtocolSettings, type IntensitySet, type ProtocolSettings,
} from '../protocol/settings.ts';

export type { IntensitySet };

export interface DetectorParams {
  /** Per-detector dead time after any click (photon, dark or afterpulse); clicks inside it are lost. */
  deadTimePs: number;
  /** Probability that a click is followed by one afterpulse (after the dead time). */
  afterpulseProb: number;
  /** Mean of the exponential delay of an afterpulse, counted from the end of the dead time. */
  afterpulseDecayPs: number;
  /** Standard deviation of the Gaussian detector timing jitter. */
  jitterPs: number;
  /**
   * 'gated' (default): dark counts and afterpulses occur only in gates, i.e. at pulse slots (gated
   * InGaAs). 'free-running': they occur at any time, uniformly within a pulse period (SNSPD,
   * free-running InGaAs). Optional: presets written against the original schema omit it.
   */
  mode?: 'gated' | 'free-running';
}

export interface ClockParams {
  /** Bob's tagger clock reads offsetPs when Alice's clock reads 0 (before fibre delay). */
  offsetPs: number;
  /** Frequency offset of Bob's clock relative to Alice's, in parts per million. */
  driftPpm: number;
  /** Standard deviation of the Gaussian jitter of Bob's clock. */
  jitterPs: number;
}

/**
 * A link: its protocol settings (src/protocol/settings.ts: node configuration, read by the lab
 * like by the nodes) and the physics of its emulation.
 */
export interface LinkPreset extends ProtocolSettings {
  description: string;
  fibreLossDbPerKm: number;
  distanceKm: number;
  /** Bob's optics transmittance times detector efficiency. */
  etaBob: number;
  /** Background yield per pulse (Ma et al. 2005): dark counts of the measuring detector pair. */
  y0: number;
  /** Misalignment error e_d: probability that a photon measured in its own basis gives the wrong bit. */
  misalignment: number;
  detector: DetectorParams;
  clock: ClockParams;
  /** Fixed delay of each tagger channel, indexed by channel number (what delay calibration finds). */
  channelDelaysPs: number[];
  /** Fraction of pulses an intercept-resend eavesdropper attacks (0 = no Eve). */
  eveFraction: number;
}

/** Deep partial of LinkPreset, for overrides (`{ detector: { deadTimePs: 0 } }`). */
export type LinkPresetOverrides = {
  [K in keyof LinkPreset]?: LinkPreset[K] extends number[] | DetectorMapping[]
    ? LinkPreset[K]
    : LinkPreset[K] extends object
      ? Partial<LinkPreset[K]>
      : LinkPreset[K];
};

/** Directory holding the preset files (hw-profiles/links/ at the repository root). */
export const LINK_PRESET_DIR = LINK_DIR;

/** Names of the presets shipped in hw-profiles/links/, sorted. */
export function listLinkPresets(): string[] {
  return listLinks();
}

/**
 * Loads a preset by name (a file in hw-profiles/links/) or by path (anything containing a path
 * separator or ending in .json), applies `overrides` (nested objects merged field by field) and
 * validates the result. Throws ConfigError (code LINK_PRESET_NOT_FOUND, LINK_PRESET_PARSE or
 * LINK_PRESET_INVALID) naming the file, the field and what was expected.
 */
export function loadLinkPreset(nameOrPath: string, overrides?: LinkPresetOverrides | Partial<LinkPreset>): LinkPreset {
  const { file, raw } = readLinkFile(nameOrPath);
  const merged = overrides ? deepMerge(raw, overrides) : raw;
  return validateLinkPreset(merged, file);
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function deepMerge(base: unknown, over: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(over)) return over === undefined ? base : over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    out[k] = isPlainObject(v) && isPlainObject(base[k]) ? deepMerge(base[k], v) : v;
  }
  return out;
}

/**
 * Validates an object against the LinkPreset schema (types, ranges, cross-field rules) and returns
 * a fresh, frozen-free copy. `source` names the file (or 'overrides') in error messages.
 */
export function validateLinkPreset(x: unknown, source = '<preset>'): LinkPreset {
  const { fail, obj, num, str, noExtra } = fieldChecks(source);

  const o = obj(x, '<root>');
  noExtra(o, '', ['name', 'description', 'repRateHz', 'intensities', 'intensityProbs', 'aliceBasisProbZ', 'bobBasisProbZ',
    'bobBasisChoice', 'fibreLossDbPerKm', 'distanceKm', 'etaBob', 'y0', 'misalignment', 'detector', 'clock',
    'channelDelaysPs', 'detectors', 'eveFraction', '$comment']);
  const { name, repRateHz, intensities, intensityProbs, aliceBasisProbZ, bobBasisProbZ, bobBasisChoice, detectors } = validateProtocolSettings(o, source);
  const description = str(o, 'description');
  const fibreLossDbPerKm = num(o, 'fibreLossDbPerKm', '', 0, 10, 'a loss in dB/km in [0, 10]');
  const distanceKm = num(o, 'distanceKm', '', 0, 1000, 'a distance in km in [0, 1000]');
  const etaBob = num(o, 'etaBob', '', 0, 1);
  const y0 = num(o, 'y0', '', 0, 0.5, 'a yield per pulse in [0, 0.5]');
  const misalignment = num(o, 'misalignment', '', 0, 0.5);
  const eveFraction = num(o, 'eveFraction', '', 0, 1);

  const d = obj(o.detector, 'detector');
  noExtra(d, 'detector.', ['deadTimePs', 'afterpulseProb', 'afterpulseDecayPs', 'jitterPs', 'mode']);
  const detector: DetectorParams = {
    deadTimePs: num(d, 'deadTimePs', 'detector.', 0, 1e9, 'a time in ps in [0, 1e9]'),
    afterpulseProb: num(d, 'afterpulseProb', 'detector.', 0, 0.5, 'a probability in [0, 0.5]'),
    afterpulseDecayPs: num(d, 'afterpulseDecayPs', 'detector.', 0, 1e9, 'a time in ps in [0, 1e9]'),
    jitterPs: num(d, 'jitterPs', 'detector.', 0, 1e6, 'a time in ps in [0, 1e6]'),
  };
  if (d.mode !== undefined) {
    if (d.mode !== 'gated' && d.mode !== 'free-running') fail('detector.mode', "'gated' or 'free-running'", d.mode);
    detector.mode = d.mode as 'gated' | 'free-running';
  }
  if (detector.afterpulseProb > 0 && detector.afterpulseDecayPs <= 0) {
    fail('detector.afterpulseDecayPs', 'a positive time when detector.afterpulseProb > 0', d.afterpulseDecayPs);
  }
  const c = obj(o.clock, 'clock');
  noExtra(c, 'clock.', ['offsetPs', 'driftPpm', 'jitterPs']);
  const clock: ClockParams = {
    offsetPs: num(c, 'offsetPs', 'clock.', -1e15, 1e15, 'a time in ps in [-1e15, 1e15]'),
    driftPpm: num(c, 'driftPpm', 'clock.', -1000, 1000, 'a frequency offset in ppm in [-1000, 1000]'),
    jitterPs: num(c, 'jitterPs', 'clock.', 0, 1e6, 'a time in ps in [0, 1e6]'),
  };

  if (!Array.isArray(o.channelDelaysPs)) fail('channelDelaysPs', 'an array of delays in ps indexed by channel', o.channelDelaysPs);
  const channelDelaysPs = (o.channelDelaysPs as unknown[]).map((v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || Math.abs(v) > 1e9) fail(`channelDelaysPs[${i}]`, 'a delay in ps in [-1e9, 1e9]', v);
    return v as number;
  });
  const maxChannel = Math.max(...detectors.map((m) => m.channel));
  if (channelDelaysPs.length <= maxChannel) {
    fail('channelDelaysPs', `an array with an entry for every detector channel (length > ${maxChannel})`, o.channelDelaysPs);
  }
  return {
    name, description, repRateHz, intensities, intensityProbs, aliceBasisProbZ, bobBasisProbZ, bobBasisChoice,
    fibreLossDbPerKm, distanceKm, etaBob, y0, misalignment, detector, clock, channelDelaysPs, detectors, eveFraction,
  };
}

/** Pulse period in integer picoseconds. */
export function periodPs(preset: LinkPreset): number {
  return Math.round(1e12 / preset.repRateHz);
}

/**
 * Background yield of the measuring detector pair for detectors with a dark count rate of
 * `darkCountsPerSecond` each (Poisson in time): p_d = 1 − e^(−D/repRate) per period and detector,
 * Y₀ = 1 − (1 − p_d)² = 1 − e^(−2D/repRate).
 */
export function y0FromDarkCountRate(darkCountsPerSecond: number, repRateHz: number): number {
  return -Math.expm1((-2 * darkCountsPerSecond) / repRateHz);
}
