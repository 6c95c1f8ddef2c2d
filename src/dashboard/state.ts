/**
 * Assembles a DashboardState from what a node already keeps: bounded time series (QBER, secret key
 * rate, sync offset, KMS levels), the latest detector rates and timing histograms, plus the alarm
 * engine and SLI tracker. The orchestrator records as things happen and hands `build` to
 * `startDashboard({getState: () => builder.build()})`.
 *
 * Single-threaded; every record call is O(1) amortised; series keep at most `historyPoints`.
 */
import type { AlarmEngine } from '../telemetry/alarms.ts';
import type { SliTracker } from '../telemetry/sli.ts';
import type { DashboardState, DetectorPanel, KmsPanel, SummaryPanel, SyncPanel, TimePoint, TimingHistogram } from './types.ts';

export interface StateBuilderOptions {
  node: DashboardState['node'];
  alarms?: AlarmEngine;
  slis?: SliTracker;
  /** Points kept per series (default 600: ten minutes at one point per second). */
  historyPoints?: number;
  qberAbortThreshold?: number;
  clock?: () => number;
}

class Series {
  readonly points: TimePoint[] = [];
  constructor(private readonly max: number) {}
  push(t: number, v: number): void {
    if (!Number.isFinite(v)) return;
    this.points.push([t, v]);
    if (this.points.length > this.max) this.points.splice(0, this.points.length - this.max);
  }
  copy(): TimePoint[] {
    return this.points.slice();
  }
}

export class DashboardStateBuilder {
  private readonly opts: StateBuilderOptions;
  private readonly clock: () => number;
  private readonly max: number;
  private readonly qber: Series;
  private readonly qberZ: Series;
  private readonly qberX: Series;
  private readonly skr: Series;
  private readonly offset: Series;
  private readonly kmsSeries = new Map<string, Series>();
  private detectors: DetectorPanel[] = [];
  private timing: TimingHistogram[] = [];
  private sync: SyncPanel = { locked: false, offsetSeconds: null, driftPpm: null };
  private kms = new Map<string, KmsPanel>();
  private summary: SummaryPanel = {};
  private status: DashboardState['status'] = 'starting';

  constructor(opts: StateBuilderOptions) {
    this.opts = opts;
    this.clock = opts.clock ?? Date.now;
    this.max = opts.historyPoints ?? 600;
    this.qber = new Series(this.max);
    this.qberZ = new Series(this.max);
    this.qberX = new Series(this.max);
    this.skr = new Series(this.max);
    this.offset = new Series(this.max);
  }

  setStatus(s: DashboardState['status']): void {
    this.status = s;
  }
  /** QBER of a block (0..1), overall and per basis when known. */
  recordQber(q: { overall?: number; Z?: number; X?: number }, tMs = this.clock()): void {
    const overall = q.overall ?? (q.Z !== undefined && q.X !== undefined ? (q.Z + q.X) / 2 : q.Z ?? q.X);
    if (overall !== undefined) this.qber.push(tMs, overall);
    if (q.Z !== undefined) this.qberZ.push(tMs, q.Z);
    if (q.X !== undefined) this.qberX.push(tMs, q.X);
  }
  recordSecretKeyRate(bitsPerSecond: number, tMs = this.clock()): void {
    this.skr.push(tMs, bitsPerSecond);
  }
  setDetectors(d: DetectorPanel[]): void {
    this.detectors = d.map((x) => ({ ...x }));
  }
  setTiming(h: TimingHistogram[]): void {
    this.timing = h.map((x) => ({ ...x, counts: Array.from(x.counts) }));
  }
  setSync(s: Omit<SyncPanel, 'offsetSeries'>, tMs = this.clock()): void {
    this.sync = { ...s };
    if (s.offsetSeconds !== null && s.offsetSeconds !== undefined) this.offset.push(tMs, s.offsetSeconds);
  }
  setKms(k: Omit<KmsPanel, 'series'>, tMs = this.clock()): void {
    this.kms.set(k.name, { ...k });
    let s = this.kmsSeries.get(k.name);
    if (!s) this.kmsSeries.set(k.name, (s = new Series(this.max)));
    s.push(tMs, k.keysStored);
  }
  /** Merges run totals (the `qkd run --json` names). */
  setSummary(s: SummaryPanel): void {
    this.summary = { ...this.summary, ...s };
  }

  build(): DashboardState {
    const now = this.clock();
    const active = this.opts.alarms?.active() ?? [];
    return {
      schema: 1,
      generatedAtMs: now,
      node: { ...this.opts.node },
      status: this.status === 'running' && active.some((a) => a.severity === 'critical') ? 'degraded' : this.status,
      series: {
        qber: this.qber.copy(),
        qberZ: this.qberZ.copy(),
        qberX: this.qberX.copy(),
        secretKeyRateBitsPerSecond: this.skr.copy(),
      },
      qberAbortThreshold: this.opts.qberAbortThreshold ?? this.opts.alarms?.config.qber.abortThreshold,
      detectors: this.detectors.map((d) => ({ ...d })),
      timing: this.timing.map((h) => ({ ...h, counts: h.counts.slice() })),
      sync: { ...this.sync, offsetSeries: this.offset.copy() },
      kms: [...this.kms.values()].map((k) => ({ ...k, series: this.kmsSeries.get(k.name)?.copy() ?? [] })),
      alarms: { active, recent: this.opts.alarms?.recent(20) ?? [] },
      slis: this.opts.slis?.snapshot(now) ?? null,
      summary: { ...this.summary },
    };
  }
}
