/**
 * The link's protocol settings: node configuration that both nodes hold and the emulated lab reads
 * like they do (it is not emulation). Repetition rate, the three mean photon numbers and their
 * probabilities, the basis probabilities, Bob's basis choice and his detector mapping. They live
 * in the link file hw-profiles/links/<name>.json beside the emulated physics of that link
 * (src/lab/presets.ts reads the whole file and validates these fields with the function below).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../errors.ts';
import type { DetectorMapping } from './choices.ts';

export interface IntensitySet {
  signal: number;
  decoy: number;
  vacuum: number;
}

export interface ProtocolSettings {
  /** Name of the link (the file's `name`). */
  name: string;
  /** Alice's pulse repetition rate in Hz; 1e12 / repRateHz must be an integer number of ps. */
  repRateHz: number;
  /** Mean photon numbers per pulse (Poisson). */
  intensities: IntensitySet;
  /** Probabilities of choosing each intensity; sum to 1. */
  intensityProbs: IntensitySet;
  /** Probability that Alice prepares in Z (basis 0). */
  aliceBasisProbZ: number;
  /** Probability that Bob measures in Z: beam-splitter ratio (passive) or his RNG bias (active). */
  bobBasisProbZ: number;
  /** 'passive': beam splitter and 4 detectors; 'active': modulator driven by Bob's RNG, 2 detectors. */
  bobBasisChoice: 'passive' | 'active';
  /**
   * Channel → (basis, bit). Passive: 4 detectors, one per (basis, bit). Active: 2 detectors, one
   * per bit; their `basis` field is ignored (the basis is that of Bob's modulator for the pulse).
   */
  detectors: DetectorMapping[];
}

/** Directory holding the link files (hw-profiles/links/ at the repository root). */
export const LINK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../hw-profiles/links');

/** Names of the links shipped in hw-profiles/links/, sorted. */
export function listLinks(): string[] {
  if (!existsSync(LINK_DIR)) return [];
  return readdirSync(LINK_DIR).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();
}

/** The file of a link by name (hw-profiles/links/) or path (with a separator or ending in .json). */
export function linkFile(nameOrPath: string): string {
  const isPath = nameOrPath.includes('/') || nameOrPath.includes('\\') || nameOrPath.endsWith('.json');
  return isPath ? resolve(nameOrPath) : join(LINK_DIR, `${nameOrPath}.json`);
}

/** Reads a link file as JSON; ConfigError LINK_PRESET_NOT_FOUND / LINK_PRESET_PARSE naming it. */
export function readLinkFile(nameOrPath: string): { file: string; raw: unknown } {
  const file = linkFile(nameOrPath);
  if (!existsSync(file)) {
    throw new ConfigError('LINK_PRESET_NOT_FOUND',
      `link preset '${nameOrPath}' not found (looked for ${file}); known presets: ${listLinks().join(', ') || 'none'}. ` +
      'Pass one of those names or a path to a preset JSON file.');
  }
  try {
    return { file, raw: JSON.parse(readFileSync(file, 'utf8')) };
  } catch (cause) {
    throw new ConfigError('LINK_PRESET_PARSE', `${file}: not valid JSON (${(cause as Error).message}); fix the file.`, { cause });
  }
}

/** Validator helpers shared with the lab's preset validation (errors name file and field). */
export function fieldChecks(source: string) {
  const fail = (field: string, expected: string, got: unknown): never => {
    throw new ConfigError('LINK_PRESET_INVALID',
      `${source}: field '${field}' must be ${expected}, got ${JSON.stringify(got)}. Fix the preset file or the override.`);
  };
  const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  const obj = (v: unknown, field: string): Record<string, unknown> => (isObj(v) ? v : fail(field, 'an object', v));
  const num = (o: Record<string, unknown>, key: string, prefix: string, min: number, max: number, what?: string): number => {
    const v = o[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) fail(prefix + key, what ?? `a number in [${min}, ${max}]`, v);
    return v as number;
  };
  const str = (o: Record<string, unknown>, key: string, allowed?: string[]): string => {
    const v = o[key];
    if (typeof v !== 'string' || v.length === 0 || (allowed && !allowed.includes(v))) {
      fail(key, allowed ? `one of ${allowed.map((a) => `'${a}'`).join(', ')}` : 'a non-empty string', v);
    }
    return v as string;
  };
  const noExtra = (o: Record<string, unknown>, prefix: string, allowed: string[]): void => {
    for (const k of Object.keys(o)) if (!allowed.includes(k)) fail(prefix + k, `absent (unknown field; known: ${allowed.join(', ')})`, o[k]);
  };
  return { fail, obj, num, str, noExtra };
}

/** Validates the protocol fields of a link object (other fields are left to the caller). */
export function validateProtocolSettings(o: Record<string, unknown>, source: string): ProtocolSettings {
  const { fail, obj, num, str, noExtra } = fieldChecks(source);
  const name = str(o, 'name');
  const repRateHz = num(o, 'repRateHz', '', 1e3, 1e11, 'a rate in Hz in [1e3, 1e11]');
  const periodPs = 1e12 / repRateHz;
  if (Math.abs(periodPs - Math.round(periodPs)) > 1e-9 * periodPs) {
    fail('repRateHz', 'a rate whose period 1e12/repRateHz is an integer number of picoseconds', repRateHz);
  }
  const trio = (key: string, min: number, max: number): IntensitySet => {
    const t = obj(o[key], key);
    noExtra(t, `${key}.`, ['signal', 'decoy', 'vacuum']);
    return { signal: num(t, 'signal', `${key}.`, min, max), decoy: num(t, 'decoy', `${key}.`, min, max), vacuum: num(t, 'vacuum', `${key}.`, min, max) };
  };
  const intensities = trio('intensities', 0, 100);
  if (!(intensities.signal > intensities.decoy && intensities.decoy >= intensities.vacuum)) {
    fail('intensities', 'ordered signal > decoy >= vacuum >= 0', o.intensities);
  }
  const intensityProbs = trio('intensityProbs', 0, 1);
  const psum = intensityProbs.signal + intensityProbs.decoy + intensityProbs.vacuum;
  if (Math.abs(psum - 1) > 1e-9) fail('intensityProbs', `probabilities summing to 1 (sum is ${psum})`, o.intensityProbs);
  const aliceBasisProbZ = num(o, 'aliceBasisProbZ', '', 0, 1);
  const bobBasisProbZ = num(o, 'bobBasisProbZ', '', 0, 1);
  const bobBasisChoice = str(o, 'bobBasisChoice', ['passive', 'active']) as 'passive' | 'active';
  if (!Array.isArray(o.detectors)) fail('detectors', 'an array of {channel, basis, bit}', o.detectors);
  const detectors: DetectorMapping[] = (o.detectors as unknown[]).map((m, i) => {
    const mo = obj(m, `detectors[${i}]`);
    noExtra(mo, `detectors[${i}].`, ['channel', 'basis', 'bit']);
    const channel = num(mo, 'channel', `detectors[${i}].`, 0, 255, 'an integer channel in [0, 255]');
    if (!Number.isInteger(channel)) fail(`detectors[${i}].channel`, 'an integer channel in [0, 255]', channel);
    const basis = mo.basis;
    const bit = mo.bit;
    if (basis !== 0 && basis !== 1) fail(`detectors[${i}].basis`, '0 (Z) or 1 (X)', basis);
    if (bit !== 0 && bit !== 1) fail(`detectors[${i}].bit`, '0 or 1', bit);
    return { channel, basis: basis as 0 | 1, bit: bit as 0 | 1 };
  });
  const channels = new Set(detectors.map((m) => m.channel));
  if (channels.size !== detectors.length) fail('detectors', 'distinct channels', o.detectors);
  if (bobBasisChoice === 'passive') {
    const combos = new Set(detectors.map((m) => m.basis * 2 + m.bit));
    if (detectors.length !== 4 || combos.size !== 4) {
      fail('detectors', "4 detectors covering each (basis, bit) once when bobBasisChoice is 'passive'", o.detectors);
    }
  } else {
    const bits = new Set(detectors.map((m) => m.bit));
    if (detectors.length !== 2 || bits.size !== 2) fail('detectors', "2 detectors, one per bit value, when bobBasisChoice is 'active'", o.detectors);
  }
  return { name, repRateHz, intensities, intensityProbs, aliceBasisProbZ, bobBasisProbZ, bobBasisChoice, detectors };
}

/** The protocol settings of a link (by name or path), validated; physics fields are not read. */
export function loadProtocolSettings(nameOrPath: string): ProtocolSettings {
  const { file, raw } = readLinkFile(nameOrPath);
  const { obj } = fieldChecks(file);
  return validateProtocolSettings(obj(raw, '<root>'), file);
}

/** Pulse period in integer picoseconds. */
export function periodPsOf(s: { repRateHz: number }): number {
  return Math.round(1e12 / s.repRateHz);
}
