/**
 * The operator's view of a run, in the supervisor: joins the status messages of the node
 * processes into the dashboard state, Prometheus metrics, alarms and SLIs, and builds the final
 * summary. Everything here is public (counts, rates, ratios): no child ever sends key material.
 */
import { createQkdMetrics } from '../telemetry/qkd-metrics.ts';
import { AlarmEngine, firmwareMatches, loadAlarmConfig } from '../telemetry/alarms.ts';
import { SliTracker } from '../telemetry/sli.ts';
import { createLogger } from '../telemetry/logger.ts';
import { loadCalibration } from '../timing/records.ts';
import { startDashboard, type Dashboard } from '../dashboard/server.ts';
import { DashboardStateBuilder } from '../dashboard/state.ts';
import type { ChildMessage } from './children.ts';
import type { EmulatedRun, RunOptions } from './supervisor.ts';
import type { LinkSummary } from './summary.ts';
import type { BlockReport } from './postprocess.ts';

export interface RunTelemetry {
  dashboardUrl: string;
  metricsUrl: string;
  onBlock(m: ChildMessage): void;
  onAlarm(name: string, m: ChildMessage): void;
  finalSummary(nodeSummaries: Record<string, ChildMessage | undefined>): LinkSummary & { stopReason: string; delivery: Record<string, unknown> };
  close(): Promise<void>;
}

interface DeviceStatus {
  id: string;
  model: string;
  firmware: string;
  allowedFirmware: string[];
}

interface DeliveryStatus {
  acked: number;
  retries?: number;
  rejected?: number;
  spoolDepth: number;
  ackLatencyMs?: { p50: number };
}

/** Where the telemetry reads the nodes' latest status messages ('node-alice', 'node-bob'). */
export type RunStatusSource = Pick<EmulatedRun, 'status' | 'reason'>;

export type TelemetryOptions = Pick<RunOptions, 'alarmsPath' | 'calibrationDir' | 'dashboardPort' | 'distanceKm' | 'preset' | 'qberAbort' | 'say'> & {
  /** Whose view: the whole emulated link (default) or one node on its host. */
  node?: { id: string; role: 'alice' | 'bob' | 'link'; mode: 'emulated' | 'hardware' };
};

export async function startRunTelemetry(run: RunStatusSource, opts: TelemetryOptions): Promise<RunTelemetry> {
  const log = createLogger({ component: 'run', sink: () => undefined });
  const metrics = createQkdMetrics();
  const slis = new SliTracker({});
  const config = loadAlarmConfig(opts.alarmsPath);
  if (!opts.alarmsPath) config.qber = { ...config.qber, abortThreshold: opts.qberAbort, clearBelow: Math.min(config.qber.clearBelow, 0.8 * opts.qberAbort) };
  const alarms = new AlarmEngine(config, {
    onEvent: (e) => opts.say(`alarm ${e.type}: ${e.alarm.id}: ${e.alarm.message}`),
  });
  metrics.registry.onCollect(() => slis.exportTo(metrics));
  const view = new DashboardStateBuilder({
    node: { ...(opts.node ?? { id: 'link', role: 'link', mode: 'emulated' }), link: `${opts.preset} ${opts.distanceKm} km`, startedAtMs: Date.now() },
    alarms,
    slis,
    qberAbortThreshold: opts.qberAbort,
  });
  // Issue 15: how the link keeps up with the light, and what each of Bob's stages sustains.
  const rtfGauge = metrics.registry.gauge({ name: 'qkd_real_time_factor', help: 'Emulated seconds per wall second of the link (>= 1: real time)', labelNames: [] });
  const stageRate = metrics.registry.gauge({ name: 'qkd_stage_detections_per_second', help: 'Detections per busy second sustained by a pipeline stage of Bob', labelNames: ['stage'] });
  const stageOccupancy = metrics.registry.gauge({ name: 'qkd_stage_occupancy_ratio', help: 'Fraction of wall time a pipeline stage of Bob was busy', labelNames: ['stage'] });
  const dash: Dashboard = await startDashboard({ port: opts.dashboardPort, getState: () => view.build(), metrics: metrics.registry, logger: log });
  // Calibration records (calibration/): the emulated lab does not need them (the sync finds
  // offset, drift and delays itself), but their state is reported, never silently used.
  const cal = loadCalibration(opts.calibrationDir, { steps: ['delays', 'sync', 'window'] });
  for (const p of cal.problems) opts.say(`calibration: ${p.message}`);
  const calTimes = Object.values(cal.records).map((r) => Date.parse(r!.createdAt));
  const calibratedAtMs = calTimes.length ? Math.min(...calTimes) : undefined;
  if (calibratedAtMs !== undefined) slis.setCalibrationTime(calibratedAtMs);
  let lastBlockAt = Date.now();
  let lastAcked = { alice: 0, bob: 0 };
  let lastFailed = { alice: 0, bob: 0 };
  let lastPulses = 0;
  let lockedSinceMs: number | undefined;
  let lastTags = new Map<number, number>();
  let lastEmulatedS = 0;

  const deliveryOf = (name: string): DeliveryStatus | undefined => run.status(name)?.delivery as DeliveryStatus | undefined;
  // A node restarted by the supervisor counts its acknowledged keys from 0 again: the run's total
  // carries what earlier incarnations had acknowledged (as of their last status, once a second).
  const acked = { alice: { carried: 0, seen: 0 }, bob: { carried: 0, seen: 0 } };
  const ackedTotal = (side: 'alice' | 'bob', d: DeliveryStatus | undefined): number => {
    if (!d) return acked[side].carried + acked[side].seen;
    if (d.acked < acked[side].seen) acked[side].carried += acked[side].seen;
    acked[side].seen = d.acked;
    return acked[side].carried + d.acked;
  };
  const summaryOf = (): LinkSummary | undefined => run.status('node-bob')?.summary as LinkSummary | undefined;

  const tick = setInterval(() => {
    const bob = run.status('node-bob');
    const sync = bob?.sync as { locked: boolean; offsetPs: number; driftPpm: number; confidence: number } | undefined;
    if (sync) {
      view.setSync({ locked: sync.locked, offsetSeconds: sync.offsetPs / 1e12, driftPpm: sync.driftPpm, peakOverNoise: sync.confidence });
      metrics.syncLocked.set(sync.locked ? 1 : 0);
      metrics.syncOffset.set(sync.offsetPs / 1e12);
      metrics.syncDrift.set(sync.driftPpm);
      // Without calibration records, the delays and offset in force are the ones the sync
      // acquired at its last lock: that is the calibration whose age the operator sees.
      if (sync.locked && lockedSinceMs === undefined && calibratedAtMs === undefined) slis.setCalibrationTime((lockedSinceMs = Date.now()));
      if (!sync.locked) lockedSinceMs = undefined;
    }
    // The channel's smoothed request->reply time includes the peer's handler (an estimate step can
    // take 200 ms), so it is shown and exported but not fed to the network-RTT alarm.
    const chan = bob?.channel as { srttMs?: number } | undefined;
    const rttS = chan?.srttMs ? chan.srttMs / 1000 : undefined;
    if (rttS !== undefined) {
      slis.recordRtt(rttS);
      metrics.classicalRtt.observe(rttS);
    }
    // Detector count rates per channel (per emulated second) and timing histograms.
    const counters = bob?.counters as { emulatedSeconds: number; realTimeFactor?: number | null; stages?: LinkSummary['stages'] } | undefined;
    if (counters?.realTimeFactor != null) rtfGauge.set(counters.realTimeFactor);
    for (const [stage, f] of Object.entries(counters?.stages ?? {})) {
      if (f.detectionsPerSecond != null) stageRate.set({ stage }, f.detectionsPerSecond);
      stageOccupancy.set({ stage }, f.occupancy);
    }
    const dets = bob?.detectors as { channel: number; tags: number }[] | undefined;
    const rates: Record<string, number> = {};
    // A restarted Bob's node counts again from zero (emulated time and tags): start the deltas afresh.
    if (dets && counters && (counters.emulatedSeconds < lastEmulatedS || dets.some((d) => d.tags < (lastTags.get(d.channel) ?? 0)))) {
      lastEmulatedS = 0;
      lastTags = new Map();
    }
    if (dets && counters && counters.emulatedSeconds > lastEmulatedS) {
      const dt = counters.emulatedSeconds - lastEmulatedS;
      const panel = dets.map((d) => {
        const rate = (d.tags - (lastTags.get(d.channel) ?? 0)) / dt;
        rates[String(d.channel)] = rate;
        metrics.detectorCountRate.set({ channel: String(d.channel) }, rate);
        metrics.detections.inc({ channel: String(d.channel) }, d.tags - (lastTags.get(d.channel) ?? 0));
        return { channel: d.channel, label: `D${d.channel}`, countRateHz: rate };
      });
      view.setDetectors(panel);
      lastTags = new Map(dets.map((d) => [d.channel, d.tags]));
      lastEmulatedS = counters.emulatedSeconds;
    }
    const timing = bob?.timing as { channel: number; startPs: number; binWidthPs: number; counts: number[] }[] | undefined;
    if (timing) view.setTiming(timing.map((h) => ({ ...h, label: `D${h.channel}` })));
    // Devices of both nodes (Alice's host has her source, Bob's his tagger and detectors).
    const devices = [...((run.status('node-alice')?.devices ?? []) as DeviceStatus[]), ...((bob?.devices ?? []) as DeviceStatus[])];
    for (const d of devices) {
      metrics.deviceInfo.set({ device: d.id, model: d.model, firmware: d.firmware, firmware_ok: firmwareMatches(d.allowedFirmware, d.firmware) ? '1' : '0' }, 1);
    }
    const rnd = bob?.randomness as Parameters<SliTracker['setRandomnessSnapshot']>[0] | undefined;
    if (rnd) slis.setRandomnessSnapshot(rnd);
    const s = summaryOf();
    if (s) {
      if (s.pulses > lastPulses) metrics.pulses.inc(s.pulses - lastPulses);
      lastPulses = Math.max(lastPulses, s.pulses);
      s.keysDelivered = { alice: ackedTotal('alice', deliveryOf('node-alice')), bob: ackedTotal('bob', deliveryOf('node-bob')) };
      s.stages = counters?.stages ?? s.stages ?? null;
      view.setSummary(s);
      view.setStatus(s.blocks.verified > 0 ? 'running' : 'starting');
    }
    const kmsPanel = [];
    const kmsReachable: Record<string, boolean> = {};
    for (const [side, name] of [['alice', 'node-alice'], ['bob', 'node-bob']] as const) {
      const d = deliveryOf(name);
      if (!d) continue;
      const total = ackedTotal(side, d);
      const newly = total - lastAcked[side];
      lastAcked = { ...lastAcked, [side]: total };
      if (newly > 0) metrics.keysDelivered.inc({ kms: side }, newly);
      // Push attempts that failed (retried or refused) since the last tick, for the delivery SLI.
      const failed = (d.retries ?? 0) + (d.rejected ?? 0);
      const newlyFailed = failed - lastFailed[side];
      lastFailed = { ...lastFailed, [side]: failed };
      for (let i = 0; i < newly; i++) slis.recordDelivery(true);
      for (let i = 0; i < newlyFailed; i++) slis.recordDelivery(false);
      const reachable = !(newlyFailed > 0 && newly === 0);
      kmsReachable[side] = reachable;
      metrics.spoolDepth.set(d.spoolDepth);
      kmsPanel.push({ name: side, reachable, keysStored: total, keySizeBits: 256 });
    }
    for (const k of kmsPanel) view.setKms(k);
    slis.recordLinkState(Boolean(sync?.locked));
    const spool = (deliveryOf('node-alice')?.spoolDepth ?? 0) + (deliveryOf('node-bob')?.spoolDepth ?? 0);
    alarms.evaluate({
      syncLocked: sync?.locked,
      detectorRatesHz: Object.keys(rates).length ? rates : undefined,
      spoolFillRatio: spool / 200_000,
      kmsReachable: Object.keys(kmsReachable).length ? kmsReachable : undefined,
      randomness: rnd && rnd.sampledBlocks > 0 ? { healthy: rnd.healthy, reason: rnd.reason } : undefined,
      calibrationAgeSeconds: calibratedAtMs !== undefined ? (Date.now() - calibratedAtMs) / 1000 : undefined,
      devices: devices.length ? devices : undefined,
      sourceRng: (run.status('node-alice')?.sourceHealth as { healthy: boolean; reason?: string } | undefined) ?? undefined,
    });
    alarms.exportTo(metrics);
  }, 1000);

  return {
    dashboardUrl: dash.url,
    metricsUrl: new URL('metrics', dash.url).href,
    onBlock(m) {
      const r = m.report as BlockReport;
      const now = Date.now();
      metrics.blocks.inc({ result: r.verified ? 'verified' : 'aborted', reason: r.verified ? '' : (r.abortReason ?? '').split(':')[0] });
      if (r.qberZ !== undefined || r.qberX !== undefined) {
        view.recordQber({ overall: r.qberZ ?? r.qberX, Z: r.qberZ, X: r.qberX });
        if (r.qberZ !== undefined) metrics.qber.set({ basis: 'Z' }, r.qberZ);
        if (r.qberX !== undefined) metrics.qber.set({ basis: 'X' }, r.qberX);
      }
      if (r.reconciliationEfficiency) metrics.reconciliationEfficiency.set(r.reconciliationEfficiency);
      const bits = r.statement?.deliverableBits ?? 0;
      if (bits) metrics.secretBits.inc(bits);
      slis.recordSecretBits(bits);
      const zBits = (r.keptZ ?? [0, 0, 0]).reduce((a, b) => a + b, 0);
      const zErr = (r.zErrors ?? [0, 0, 0]).reduce((a, b) => a + b, 0);
      if (zBits) slis.recordQber(zErr, zBits);
      if (r.framesFailed) metrics.frameErrors.inc(r.framesFailed);
      view.recordSecretKeyRate(bits / Math.max(0.001, (now - lastBlockAt) / 1000));
      lastBlockAt = now;
      alarms.evaluate({ qber: r.qberX ?? r.qberZ, lastBlock: { verified: r.verified, abortReason: r.abortReason } });
    },
    onAlarm(name, m) {
      opts.say(`${name}: ${JSON.stringify(m.alarm)}`);
    },
    finalSummary(nodeSummaries) {
      const bob = (nodeSummaries['node-bob']?.summary ?? summaryOf()) as LinkSummary | undefined;
      const dA = (nodeSummaries['node-alice']?.delivery ?? deliveryOf('node-alice')) as DeliveryStatus | undefined;
      const dB = (nodeSummaries['node-bob']?.delivery ?? deliveryOf('node-bob')) as DeliveryStatus | undefined;
      const base = bob ?? ({} as LinkSummary);
      const counters = (nodeSummaries['node-bob']?.counters ?? run.status('node-bob')?.counters) as { stages?: LinkSummary['stages'] } | undefined;
      return {
        ...base,
        stages: counters?.stages ?? base.stages ?? null,
        keysDelivered: { alice: ackedTotal('alice', dA), bob: ackedTotal('bob', dB) },
        stopReason: run.reason,
        delivery: { alice: dA ?? null, bob: dB ?? null },
      };
    },
    async close() {
      clearInterval(tick);
      await dash.close();
    },
  };
}
