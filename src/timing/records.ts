/**
 * Versioned calibration records in calibration/: written by `qkd calibrate <step>`, loaded by the
 * node at start. A record that is too old, written for other devices or profiles, of an unknown
 * schema version, or unreadable is reported as a problem, never used silently.
 *
 * File name: `<step>-<UTC timestamp>.json` (history kept; the newest per step wins).
 * Format (schema 'qkd-calibration', version 1): see calibration/README.md.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.ts';
import { CALIBRATION_STEPS, type CalibrationStep, type DeviceInfo, type StepResult } from './calibrate.ts';

export const RECORD_SCHEMA = 'qkd-calibration';
export const RECORD_VERSION = 1;

/** Default validity per step, hours (delays and window drift slowly; dark counts with temperature). */
export const DEFAULT_VALID_HOURS: Record<CalibrationStep, number> = {
  delays: 24 * 7, window: 24 * 7, sync: 24, 'dark-counts': 24, afterpulsing: 24 * 7, jitter: 24 * 7, efficiency: 24 * 7,
};

export interface CalibrationRecord {
  schema: typeof RECORD_SCHEMA;
  version: number;
  step: CalibrationStep;
  /** ISO-8601 UTC time of the measurement. */
  createdAt: string;
  validForHours: number;
  devices: DeviceInfo[];
  profiles: Record<string, string>;
  settings: Record<string, unknown>;
  result: Record<string, unknown>;
  uncertainty: Record<string, unknown>;
  software: { name: string; version: string };
  summary: string;
}

export function makeRecord(r: StepResult, ctx: { devices: DeviceInfo[]; profiles: Record<string, string>; software: { name: string; version: string }; now?: Date; validForHours?: number }): CalibrationRecord {
  return {
    schema: RECORD_SCHEMA, version: RECORD_VERSION, step: r.step,
    createdAt: (ctx.now ?? new Date()).toISOString(),
    validForHours: ctx.validForHours ?? DEFAULT_VALID_HOURS[r.step],
    devices: ctx.devices, profiles: ctx.profiles, settings: r.settings, result: r.result, uncertainty: r.uncertainty,
    software: ctx.software, summary: r.summary,
  };
}

function stamp(iso: string): string {
  return iso.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** Writes the record (and optional SVG beside it); returns the JSON path. */
export function writeRecord(dir: string, rec: CalibrationRecord, svg?: string): string {
  mkdirSync(dir, { recursive: true });
  const base = join(dir, `${rec.step}-${stamp(rec.createdAt)}`);
  writeFileSync(`${base}.json`, JSON.stringify(rec, null, 2) + '\n');
  if (svg !== undefined) writeFileSync(`${base}.svg`, svg);
  return `${base}.json`;
}

export type ProblemKind = 'missing' | 'stale' | 'mismatch' | 'invalid' | 'version';

export interface CalibrationProblem {
  step: CalibrationStep | string;
  kind: ProblemKind;
  file?: string;
  message: string;
}

export interface LoadOptions {
  /** Steps the caller needs (default: all). */
  steps?: readonly CalibrationStep[];
  /** The devices and profiles in force now; records for others are mismatched. */
  devices?: DeviceInfo[];
  profiles?: Record<string, string>;
  now?: Date;
}

export interface LoadedCalibration {
  /** Newest valid record per step (only those without problems). */
  records: Partial<Record<CalibrationStep, CalibrationRecord>>;
  problems: CalibrationProblem[];
}

function validate(x: unknown, file: string): CalibrationRecord | CalibrationProblem {
  const r = x as Partial<CalibrationRecord>;
  if (!r || typeof r !== 'object' || r.schema !== RECORD_SCHEMA) return { step: '?', kind: 'invalid', file, message: `${file}: not a calibration record (field 'schema' must be '${RECORD_SCHEMA}').` };
  if (r.version !== RECORD_VERSION) return { step: String(r.step), kind: 'version', file, message: `${file}: record version ${r.version}, this node reads version ${RECORD_VERSION}; re-run 'qkd calibrate ${r.step}'.` };
  for (const f of ['step', 'createdAt', 'validForHours', 'devices', 'profiles', 'result'] as const) {
    if (r[f] === undefined) return { step: String(r.step), kind: 'invalid', file, message: `${file}: field '${f}' is missing; re-run 'qkd calibrate ${r.step ?? '<step>'}'.` };
  }
  if (!CALIBRATION_STEPS.includes(r.step as CalibrationStep)) return { step: String(r.step), kind: 'invalid', file, message: `${file}: unknown step '${r.step}'.` };
  if (Number.isNaN(Date.parse(r.createdAt!))) return { step: String(r.step), kind: 'invalid', file, message: `${file}: createdAt '${r.createdAt}' is not an ISO date.` };
  return r as CalibrationRecord;
}

/**
 * Loads the newest record per step from `dir` and checks it against the current devices,
 * profiles and time. Never throws for bad records: every issue is returned in `problems`.
 */
export function loadCalibration(dir: string, opts: LoadOptions = {}): LoadedCalibration {
  const want = opts.steps ?? CALIBRATION_STEPS;
  const now = (opts.now ?? new Date()).getTime();
  const problems: CalibrationProblem[] = [];
  const newest = new Map<string, { rec: CalibrationRecord; file: string }>();
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.json')).sort() : [];
  for (const f of files) {
    const file = join(dir, f);
    let parsed: unknown;
    try { parsed = JSON.parse(readFileSync(file, 'utf8')); } catch (e) {
      const guess = f.replace(/-\d{8}T.*$/, '');
      if (want.includes(guess as CalibrationStep) || !CALIBRATION_STEPS.includes(guess as CalibrationStep)) problems.push({ step: guess, kind: 'invalid', file, message: `${file}: not valid JSON (${(e as Error).message}); delete it or re-run the calibration.` });
      continue;
    }
    const v = validate(parsed, file);
    if ('kind' in v) { if (want.includes(v.step as CalibrationStep) || v.step === '?') problems.push(v); continue; }
    const prev = newest.get(v.step);
    if (!prev || Date.parse(v.createdAt) > Date.parse(prev.rec.createdAt)) newest.set(v.step, { rec: v, file });
  }
  const records: LoadedCalibration['records'] = {};
  for (const step of want) {
    const n = newest.get(step);
    if (!n && problems.some((p) => p.step === step)) continue; // already reported as unusable
    if (!n) { problems.push({ step, kind: 'missing', message: `no '${step}' calibration in ${dir}; run 'qkd calibrate ${step}'.` }); continue; }
    const { rec, file } = n;
    const ageH = (now - Date.parse(rec.createdAt)) / 3.6e6;
    if (ageH > rec.validForHours) { problems.push({ step, kind: 'stale', file, message: `${file}: '${step}' calibration is ${ageH.toFixed(1)} h old (valid ${rec.validForHours} h); re-run 'qkd calibrate ${step}'.` }); continue; }
    if (ageH < -0.1) { problems.push({ step, kind: 'invalid', file, message: `${file}: created in the future (${rec.createdAt}); check the clock.` }); continue; }
    const mism: string[] = [];
    for (const [k, v] of Object.entries(opts.profiles ?? {})) if (rec.profiles[k] !== undefined && rec.profiles[k] !== v) mism.push(`profile ${k} was '${rec.profiles[k]}', now '${v}'`);
    for (const k of Object.keys(opts.profiles ?? {})) if (rec.profiles[k] === undefined) mism.push(`profile ${k} not recorded`);
    if (opts.devices) {
      const key = (d: DeviceInfo) => `${d.kind}:${d.id}:${d.model}`;
      const now = new Set(opts.devices.map(key)), then = new Set(rec.devices.map(key));
      for (const k of now) if (!then.has(k)) mism.push(`device ${k} not in the record`);
      for (const k of then) if (!now.has(k)) mism.push(`recorded device ${k} is not present`);
    }
    if (mism.length) { problems.push({ step, kind: 'mismatch', file, message: `${file}: '${step}' calibration was made for other hardware: ${mism.join('; ')}. Re-run 'qkd calibrate ${step}'.` }); continue; }
    records[step] = rec;
  }
  return { records, problems };
}

/** loadCalibration, throwing ConfigError('CALIBRATION_INVALID') listing every problem if there is any. */
export function requireCalibration(dir: string, opts: LoadOptions = {}): Partial<Record<CalibrationStep, CalibrationRecord>> {
  const { records, problems } = loadCalibration(dir, opts);
  if (problems.length) throw new ConfigError('CALIBRATION_INVALID', `calibration in ${dir} cannot be used:\n  ${problems.map((p) => p.message).join('\n  ')}`);
  return records;
}
