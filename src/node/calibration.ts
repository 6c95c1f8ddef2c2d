/**
 * The calibration records (calibration/, written by `qkd calibrate`) a node's clock sync starts
 * from: per-channel delays (`delays`), the acceptance window (`window`) and the expected offset
 * of Alice's pulse 0 on Bob's clock (`sync`, the prior of the offset search: what a free-running
 * tagger needs). Only records for this node's link preset are taken; a missing, stale or foreign
 * record is reported and the sync finds that quantity itself (it can, on an emulated or a good
 * link: the records make a start faster and the window tighter).
 */
import { loadCalibration, type CalibrationRecord } from '../timing/records.ts';

export interface SyncCalibration {
  channelDelaysPs?: Record<number, number>;
  windowPs?: number;
  expectedOffsetPs?: number;
  /** Steps applied, with their record's time. */
  applied: { step: string; createdAt: string }[];
  /** Why a step was not applied (missing, stale, invalid, other link), as the loader says it. */
  problems: string[];
  /** Oldest applied record's time (for the calibration-age alarm), ms since epoch. */
  calibratedAtMs?: number;
}

const num = (x: unknown): number | undefined => (typeof x === 'number' && Number.isFinite(x) ? x : undefined);

function delaysOf(r: CalibrationRecord): Record<number, number> | undefined {
  const d = r.result.relativeDelayPs;
  if (!d || typeof d !== 'object') return undefined;
  const out: Record<number, number> = {};
  for (const [ch, v] of Object.entries(d as Record<string, unknown>)) {
    const x = num(v);
    if (x === undefined || !/^\d+$/.test(ch)) return undefined;
    out[Number(ch)] = x;
  }
  return out;
}

export function syncCalibration(dir: string, linkPreset: string): SyncCalibration {
  const cal = loadCalibration(dir, { steps: ['delays', 'window', 'sync'], profiles: { link: linkPreset } });
  const out: SyncCalibration = { applied: [], problems: cal.problems.map((p) => p.message) };
  const take = (step: 'delays' | 'window' | 'sync', value: unknown, set: () => void): void => {
    const r = cal.records[step];
    if (!r) return;
    if (value === undefined) {
      out.problems.push(`${step} calibration of ${r.createdAt} has no usable result; re-run 'qkd calibrate ${step}'.`);
      return;
    }
    set();
    out.applied.push({ step, createdAt: r.createdAt });
  };
  const delays = cal.records.delays && delaysOf(cal.records.delays);
  take('delays', delays, () => (out.channelDelaysPs = delays));
  const half = cal.records.window && num(cal.records.window.result.halfWidthPs);
  take('window', half !== undefined && half > 0 ? half : undefined, () => (out.windowPs = half));
  const sync = cal.records.sync;
  const offset = sync && sync.result.locked === true ? num(sync.result.offsetPs) : undefined;
  take('sync', offset, () => (out.expectedOffsetPs = offset));
  const times = out.applied.map((a) => Date.parse(a.createdAt));
  if (times.length) out.calibratedAtMs = Math.min(...times);
  return out;
}
