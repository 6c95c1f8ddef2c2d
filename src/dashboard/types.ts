/**
 * What the dashboard shows: one JSON document, `DashboardState`, that the orchestrator (src/node/)
 * fills and `startDashboard({getState})` serves at /api/state and pushes over /api/events (SSE).
 * The page (src/dashboard/static/) renders it; nothing else is needed.
 *
 * Units are in the field names. Times are ms since the Unix epoch (wall clock, for display only;
 * the hot path keeps integer picoseconds). Ratios are 0..1. No field ever holds key material:
 * counts, rates, ratios, P-values, ids.
 */
import type { Alarm, AlarmEvent } from '../telemetry/alarms.ts';
import type { SliSnapshot } from '../telemetry/sli.ts';

/** One point of a time series: [time in ms since the epoch, value]. */
export type TimePoint = [number, number];

export interface DetectorPanel {
  channel: number;
  /** e.g. 'Z0', 'Z1', 'X0', 'X1' or 'D1'…; defaults to `ch<channel>`. */
  label?: string;
  countRateHz: number;
  /** Drawn as a marker on the bar when given. */
  saturationHz?: number;
}

/** A timing histogram of detections relative to the expected pulse time, for one channel. */
export interface TimingHistogram {
  channel: number;
  label?: string;
  /** Left edge of bin 0, in ps relative to the expected arrival. */
  startPs: number;
  binWidthPs: number;
  counts: number[];
  /** The acceptance (gate) window, ps, same origin as startPs. */
  windowStartPs?: number;
  windowEndPs?: number;
}

export interface SyncPanel {
  locked: boolean;
  /** Bob minus Alice. */
  offsetSeconds: number | null;
  driftPpm: number | null;
  /** Correlation peak over noise (qcrypto-style confidence), if the sync reports one. */
  peakOverNoise?: number | null;
  offsetSeries?: TimePoint[];
}

export interface KmsPanel {
  /** 'alice' | 'bob' for the reference KMSs, or the external KMS's name. */
  name: string;
  reachable: boolean;
  keysStored: number;
  /** Capacity in keys, when known: the bar shows the fill level. */
  capacity?: number;
  /** Key size in bits (to show the stored amount in bits). */
  keySizeBits?: number;
  /** Level history, drawn as a sparkline under the bar. */
  series?: TimePoint[];
}

/** Per-intensity figures ({signal, decoy, vacuum}), null when not measurable yet. */
export interface IntensityPanel {
  signal: number | null;
  decoy: number | null;
  vacuum: number | null;
}

/**
 * Run totals with the JSON names of the `qkd run --json` summary (issue 7). Every field is
 * optional and may be null (not measured yet), so the orchestrator's LinkSummary (src/node/
 * summary.ts) can be passed as it is.
 */
export interface SummaryPanel {
  pulses?: number | null;
  detections?: number | null;
  siftedBits?: number | null;
  qber?: number | null;
  qberByBasis?: { Z?: number | null; X?: number | null };
  gain?: IntensityPanel;
  errorRate?: IntensityPanel;
  decoy?: { singlePhotonYieldLower?: number | null; singlePhotonErrorUpper?: number | null };
  reconciliationEfficiency?: number | null;
  frames?: { total: number; failed: number; frameErrorRate?: number | null };
  frameErrors?: number | null;
  blocks?: { verified: number; aborted: number; reasons?: Record<string, number> };
  secretBits?: number | null;
  secretKeyRate?: { perPulse?: number | null; perSecond?: number | null };
  keysDelivered?: { alice?: number | null; bob?: number | null };
  /** Emulated seconds per wall second (issue 15). */
  realTimeFactor?: number | null;
  /** Bob's pipeline stages: detections per busy second and occupancy (0..1). */
  stages?: Record<string, { detectionsPerSecond: number | null; occupancy: number }> | null;
}

export interface DashboardState {
  schema: 1;
  generatedAtMs: number;
  node: {
    id: string;
    role: 'alice' | 'bob' | 'link';
    mode: 'emulated' | 'hardware';
    /** Link preset or description, e.g. 'metro-25km'. */
    link?: string;
    startedAtMs: number;
    version?: string;
  };
  status: 'starting' | 'running' | 'degraded' | 'stopped';
  series: {
    /** QBER per block or per interval (0..1). */
    qber: TimePoint[];
    qberZ?: TimePoint[];
    qberX?: TimePoint[];
    secretKeyRateBitsPerSecond: TimePoint[];
  };
  /** Drawn as a dashed line on the QBER chart. */
  qberAbortThreshold?: number;
  detectors: DetectorPanel[];
  timing: TimingHistogram[];
  sync: SyncPanel;
  kms: KmsPanel[];
  alarms: { active: Alarm[]; recent: AlarmEvent[] };
  slis: SliSnapshot | null;
  summary?: SummaryPanel;
}
