/**
 * Alarm engine: turns measured signals into raised/cleared alarms with thresholds from
 * configuration (JSON), hysteresis (separate raise and clear thresholds) and debounce (a condition
 * must hold `forSeconds` before an alarm is raised and `clearForSeconds` before it clears).
 *
 * Each alarm names its likely cause and the runbook section (docs/runbook.md#<kind>) with the
 * checks and actions. Alarm kinds, one runbook section each:
 *   qber-high, detector-saturation, detector-silent, sync-lost, kms-unreachable, spool-filling,
 *   calibration-stale, firmware-mismatch, randomness-failed, classical-rtt-high, no-key,
 *   source-rng-failed, detections-lost.
 * Per-subject kinds (detector channel, KMS, device) get ids like `detector-silent/ch2`.
 *
 * Usage: call `evaluate(inputs, nowMs)` whenever fresh signals are at hand (e.g. once a second and
 * after each block). Inputs that are absent leave their alarms as they are. Deterministic: time is
 * only what the caller passes (or the injected clock). Single-threaded, synchronous.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.ts';
import type { Gauge } from './metrics.ts';

export type Severity = 'critical' | 'major' | 'minor' | 'warning';
export const SEVERITIES: Severity[] = ['critical', 'major', 'minor', 'warning'];

export type AlarmKind =
  | 'qber-high' | 'detector-saturation' | 'detector-silent' | 'sync-lost' | 'kms-unreachable' | 'spool-filling'
  | 'calibration-stale' | 'firmware-mismatch' | 'randomness-failed' | 'classical-rtt-high' | 'no-key'
  | 'source-rng-failed' | 'detections-lost';

interface RuleBase {
  enabled: boolean;
  severity: Severity;
  /** The condition must hold this long before the alarm is raised. */
  forSeconds: number;
  /** The clear condition must hold this long before the alarm clears. */
  clearForSeconds: number;
}
export interface AlarmConfig {
  qber: RuleBase & { abortThreshold: number; clearBelow: number };
  detectorSaturation: RuleBase & { raiseAboveHz: number; clearBelowHz: number };
  detectorSilence: RuleBase & { raiseBelowHz: number; clearAboveHz: number };
  syncLoss: RuleBase;
  kmsUnreachable: RuleBase;
  spoolFilling: RuleBase & { raiseAboveRatio: number; clearBelowRatio: number };
  calibrationStale: RuleBase & { maxAgeSeconds: number };
  firmwareMismatch: RuleBase;
  randomness: RuleBase;
  classicalRtt: RuleBase & { raiseAboveSeconds: number; clearBelowSeconds: number };
  /** Blocks ending without key because of their statistics (PE_ABORT_BOUNDS, PE_NO_KEY, PE_IMPOSSIBLE_COUNTS). */
  noKey: RuleBase;
  /** Alice's source RNG failed its SP 800-90B health test on the read-back record (key production stopped). */
  sourceRng: RuleBase;
  /** A block refused because its detection stream lost or disordered data (STREAM_TAINTED). */
  detectionsLost: RuleBase;
  /** How many raise/clear events `recent()` keeps. */
  recentLimit: number;
}

/** Deep-partial form accepted from JSON configuration. */
export type AlarmConfigInput = { [K in keyof AlarmConfig]?: AlarmConfig[K] extends object ? Partial<AlarmConfig[K]> : AlarmConfig[K] };

const rule = (severity: Severity, forSeconds = 0, clearForSeconds = 0): RuleBase => ({ enabled: true, severity, forSeconds, clearForSeconds });

/**
 * Defaults. QBER: 11 % is the BB84 asymptotic limit; set `abortThreshold` to the post-processing
 * abort threshold actually in force. Detector rates depend on the detector (profile-specific):
 * saturation at 5 MHz suits SNSPDs with ~50 ns dead time; silence below 1 Hz is below even a cold
 * free-running InGaAs dark count (~1 cps at −110 °C is the lowest anchor).
 */
export const DEFAULT_ALARM_CONFIG: AlarmConfig = {
  qber: { ...rule('critical'), abortThreshold: 0.11, clearBelow: 0.09 },
  detectorSaturation: { ...rule('major', 2, 5), raiseAboveHz: 5e6, clearBelowHz: 4e6 },
  detectorSilence: { ...rule('major', 10, 5), raiseBelowHz: 1, clearAboveHz: 5 },
  syncLoss: rule('critical', 3, 3),
  kmsUnreachable: rule('major', 10, 0),
  spoolFilling: { ...rule('major'), raiseAboveRatio: 0.8, clearBelowRatio: 0.6 },
  calibrationStale: { ...rule('warning'), maxAgeSeconds: 7 * 86400 },
  firmwareMismatch: rule('critical'),
  randomness: rule('major'),
  classicalRtt: { ...rule('warning', 30, 30), raiseAboveSeconds: 0.25, clearBelowSeconds: 0.1 },
  noKey: rule('major'),
  sourceRng: rule('critical'),
  detectionsLost: rule('major'),
  recentLimit: 50,
};

/** Signals the engine watches. Every field is optional: absent means "no news". */
export interface AlarmInputs {
  /** QBER that the abort decision uses (0..1), e.g. of the last block. */
  qber?: number;
  /** Count rate per detector channel, Hz. */
  detectorRatesHz?: Record<string, number>;
  syncLocked?: boolean;
  /** Whether the last contact with each KMS (by name) succeeded. */
  kmsReachable?: Record<string, boolean>;
  /** Spool depth over capacity, 0..1. */
  spoolFillRatio?: number;
  calibrationAgeSeconds?: number;
  /**
   * Device identities read at connect, with the firmware versions the hardware profile allows
   * (patterns, `*` = any run of characters, as in hw-profiles). `allowed`, when given, is the
   * verdict already made by the driver (e.g. open() failed with FIRMWARE_NOT_ALLOWED → false).
   */
  devices?: { id: string; model?: string; firmware: string; allowedFirmware: string[]; allowed?: boolean }[];
  /** From RandomnessMonitor.snapshot(). */
  randomness?: { healthy: boolean; reason?: string };
  classicalRttSeconds?: number;
  /** Health tests on Alice's source's read-back record (src/node/source-health.ts). */
  sourceRng?: { healthy: boolean; reason?: string };
  /** The last finished block: verified, or its abort reason ("CODE: message"). */
  lastBlock?: { verified: boolean; abortReason?: string };
}

export interface Alarm {
  /** Unique per subject: `kind` or `kind/subject`. */
  id: string;
  kind: AlarmKind;
  subject?: string;
  severity: Severity;
  /** What is wrong, with the measured value and the threshold. */
  message: string;
  /** The likely causes, most likely first. */
  cause: string;
  /** Runbook section: docs/runbook.md#<kind>. */
  runbook: string;
  value?: number | string;
  threshold?: number | string;
  raisedAtMs: number;
  clearedAtMs?: number;
}
export interface AlarmEvent {
  type: 'raised' | 'cleared';
  atMs: number;
  alarm: Alarm;
}

export const RUNBOOK_PATH = 'docs/runbook.md';

const CAUSES: Record<AlarmKind, string> = {
  'qber-high': 'eavesdropping, polarisation/phase drift in the fibre, detector afterpulsing or dark counts, or a mis-set detection window',
  'detector-saturation': 'stray light or a light leak, laser power or attenuation wrong, or a detector latched (too high bias)',
  'detector-silent': 'fibre disconnected or broken, source off, detector not biased or not cooled, or tagger input not wired',
  'sync-lost': 'fibre or sync channel interrupted, clock reference lost, or too few coincidences (loss or source power)',
  'kms-unreachable': 'KMS process down, network path or firewall, or TLS certificate expired or rejected',
  'spool-filling': 'KMS not accepting keys (down, full or slow) while the link keeps producing',
  'calibration-stale': 'no calibration run for too long; temperature and fibre changes shift delays and efficiencies',
  'firmware-mismatch': 'device firmware updated or replaced with a version the hardware profile does not list',
  'randomness-failed': 'a bug in post-processing output (stuck or repeated bits), or a broken privacy amplification seed',
  'classical-rtt-high': 'congested or rerouted classical network, or an overloaded peer node',
  'source-rng-failed': "Alice's source random-number generator stuck or biased (hardware fault, failed entropy source, firmware), or a read-back that does not match the pulses (line or firmware fault)",
  'detections-lost': 'post-processing slower than the detection rate (back-pressure dropped batches), a tagger overflow (count rate above its USB/serial throughput), or a tagger restart',
  'no-key': 'blocks too small for the finite-key bound at this loss and ε, or intensities/probabilities in the configuration that do not match the source (impossible counts)',
};

/** Abort codes of parameter estimation that mean "no key from these statistics" (not the QBER). */
const NO_KEY_CODES = ['PE_ABORT_BOUNDS', 'PE_NO_KEY', 'PE_IMPOSSIBLE_COUNTS'];

const SUBJECT_KIND = (k: AlarmKind): boolean => k === 'detector-saturation' || k === 'detector-silent' || k === 'kms-unreachable' || k === 'firmware-mismatch';

interface Verdict {
  /** true: alarm condition; false: clear condition; undefined: inside the hysteresis band. */
  bad: boolean | undefined;
  value?: number | string;
  threshold?: number | string;
  message: string;
}

interface InstanceState {
  active?: Alarm;
  pendingSinceMs?: number;
  clearingSinceMs?: number;
}

const pct = (x: number): string => `${(x * 100).toFixed(2)} %`;
const hz = (x: number): string => (x >= 1e6 ? `${(x / 1e6).toFixed(2)} MHz` : x >= 1e3 ? `${(x / 1e3).toFixed(2)} kHz` : `${x.toFixed(1)} Hz`);

function band(v: number, raiseAbove: number, clearBelow: number): boolean | undefined {
  return v > raiseAbove ? true : v < clearBelow ? false : undefined;
}

export class AlarmEngine {
  readonly config: AlarmConfig;
  private readonly states = new Map<string, InstanceState>();
  private readonly events: AlarmEvent[] = [];
  private readonly clock: () => number;
  private readonly onEvent?: (e: AlarmEvent) => void;

  constructor(config: AlarmConfig | AlarmConfigInput = {}, opts: { clock?: () => number; onEvent?: (e: AlarmEvent) => void } = {}) {
    this.config = parseAlarmConfig(config);
    this.clock = opts.clock ?? Date.now;
    this.onEvent = opts.onEvent;
  }

  /** Feeds fresh signals; returns the raise/clear events this call produced. */
  evaluate(inputs: AlarmInputs, nowMs: number = this.clock()): AlarmEvent[] {
    const c = this.config;
    const out: AlarmEvent[] = [];
    const step = (kind: AlarmKind, r: RuleBase, subject: string | undefined, v: Verdict) => {
      if (!r.enabled) return;
      const ev = this.step(kind, r, subject, v, nowMs);
      if (ev) out.push(ev);
    };
    if (inputs.qber !== undefined && Number.isFinite(inputs.qber)) {
      const q = inputs.qber;
      step('qber-high', c.qber, undefined, {
        bad: band(q, c.qber.abortThreshold, c.qber.clearBelow), value: q, threshold: c.qber.abortThreshold,
        message: `QBER ${pct(q)} is above the abort threshold ${pct(c.qber.abortThreshold)}: blocks are being aborted, no key is produced`,
      });
    }
    for (const [ch, rate] of Object.entries(inputs.detectorRatesHz ?? {})) {
      if (!Number.isFinite(rate)) continue;
      const s = c.detectorSaturation;
      step('detector-saturation', s, `ch${ch}`, {
        bad: band(rate, s.raiseAboveHz, s.clearBelowHz), value: rate, threshold: s.raiseAboveHz,
        message: `detector channel ${ch} counts ${hz(rate)}, above the saturation limit ${hz(s.raiseAboveHz)}`,
      });
      const q = c.detectorSilence;
      step('detector-silent', q, `ch${ch}`, {
        bad: rate < q.raiseBelowHz ? true : rate > q.clearAboveHz ? false : undefined, value: rate, threshold: q.raiseBelowHz,
        message: `detector channel ${ch} counts ${hz(rate)}, below ${hz(q.raiseBelowHz)}: the channel is silent`,
      });
    }
    if (inputs.syncLocked !== undefined) {
      step('sync-lost', c.syncLoss, undefined, {
        bad: !inputs.syncLocked, value: inputs.syncLocked ? 'locked' : 'unlocked', threshold: 'locked',
        message: 'clock synchronisation between Alice and Bob is lost: detections cannot be matched to pulses',
      });
    }
    for (const [kms, ok] of Object.entries(inputs.kmsReachable ?? {})) {
      step('kms-unreachable', c.kmsUnreachable, kms, {
        bad: !ok, value: ok ? 'reachable' : 'unreachable',
        message: `KMS '${kms}' does not answer: keys are spooled, not delivered`,
      });
    }
    if (inputs.spoolFillRatio !== undefined && Number.isFinite(inputs.spoolFillRatio)) {
      const s = c.spoolFilling;
      const v = inputs.spoolFillRatio;
      step('spool-filling', s, undefined, {
        bad: band(v, s.raiseAboveRatio, s.clearBelowRatio), value: v, threshold: s.raiseAboveRatio,
        message: `key spool is ${pct(v)} full (alarm above ${pct(s.raiseAboveRatio)}): when full, new keys are discarded`,
      });
    }
    if (inputs.calibrationAgeSeconds !== undefined && Number.isFinite(inputs.calibrationAgeSeconds)) {
      const s = c.calibrationStale;
      const age = inputs.calibrationAgeSeconds;
      step('calibration-stale', s, undefined, {
        bad: age > s.maxAgeSeconds, value: age, threshold: s.maxAgeSeconds,
        message: `calibration is ${(age / 3600).toFixed(1)} h old (limit ${(s.maxAgeSeconds / 3600).toFixed(1)} h): run 'qkd calibrate'`,
      });
    }
    for (const d of inputs.devices ?? []) {
      const ok = d.allowed ?? firmwareMatches(d.allowedFirmware, d.firmware);
      step('firmware-mismatch', c.firmwareMismatch, d.id, {
        bad: !ok, value: d.firmware, threshold: d.allowedFirmware.join(', '),
        message: `device ${d.id}${d.model ? ` (${d.model})` : ''} runs firmware ${d.firmware}; the hardware profile allows ${d.allowedFirmware.join(', ') || 'none'}`,
      });
    }
    if (inputs.randomness) {
      step('randomness-failed', c.randomness, undefined, {
        bad: !inputs.randomness.healthy, value: inputs.randomness.reason ?? '',
        message: `randomness health check failed on sampled output blocks${inputs.randomness.reason ? `: ${inputs.randomness.reason}` : ''}`,
      });
    }
    if (inputs.classicalRttSeconds !== undefined && Number.isFinite(inputs.classicalRttSeconds)) {
      const s = c.classicalRtt;
      const v = inputs.classicalRttSeconds;
      step('classical-rtt-high', s, undefined, {
        bad: band(v, s.raiseAboveSeconds, s.clearBelowSeconds), value: v, threshold: s.raiseAboveSeconds,
        message: `classical channel round trip ${(v * 1e3).toFixed(1)} ms, above ${(s.raiseAboveSeconds * 1e3).toFixed(0)} ms: post-processing slows down`,
      });
    }
    if (inputs.sourceRng) {
      step('source-rng-failed', c.sourceRng, undefined, {
        bad: !inputs.sourceRng.healthy, value: inputs.sourceRng.reason ?? '',
        message: `Alice's source RNG failed its health test on the read-back record${inputs.sourceRng.reason ? `: ${inputs.sourceRng.reason}` : ''}; key production stopped`,
      });
    }
    if (inputs.lastBlock) {
      // QBER aborts have their own alarm; this one is for blocks the statistics leave keyless.
      const code = (inputs.lastBlock.abortReason ?? '').split(':')[0];
      const keyless = !inputs.lastBlock.verified && NO_KEY_CODES.includes(code);
      step('no-key', c.noKey, undefined, {
        bad: inputs.lastBlock.verified ? false : keyless ? true : undefined, value: code || 'verified',
        message: `blocks end without key: ${inputs.lastBlock.abortReason ?? ''}`,
      });
      // Lost detections are never mixed into a block; the operator must know blocks are refused.
      const lost = !inputs.lastBlock.verified && code === 'STREAM_TAINTED';
      step('detections-lost', c.detectionsLost, undefined, {
        bad: inputs.lastBlock.verified ? false : lost ? true : undefined, value: code || 'verified',
        message: `a block was refused because detections were lost or disordered: ${inputs.lastBlock.abortReason ?? ''}`,
      });
    }
    return out;
  }

  private step(kind: AlarmKind, r: RuleBase, subject: string | undefined, v: Verdict, now: number): AlarmEvent | undefined {
    const id = subject !== undefined && SUBJECT_KIND(kind) ? `${kind}/${subject}` : kind;
    let st = this.states.get(id);
    if (!st) this.states.set(id, (st = {}));
    if (!st.active) {
      if (v.bad !== true) {
        st.pendingSinceMs = undefined;
        return undefined;
      }
      st.pendingSinceMs ??= now;
      if (now - st.pendingSinceMs < r.forSeconds * 1000) return undefined;
      st.pendingSinceMs = undefined;
      st.active = {
        id, kind, subject, severity: r.severity, message: v.message, cause: CAUSES[kind], runbook: `${RUNBOOK_PATH}#${kind}`,
        value: v.value, threshold: v.threshold, raisedAtMs: now,
      };
      return this.emit({ type: 'raised', atMs: now, alarm: { ...st.active } });
    }
    if (v.bad === true) {
      // Still bad: keep the latest measurement in the active alarm for the operator.
      st.clearingSinceMs = undefined;
      st.active.value = v.value;
      st.active.message = v.message;
      return undefined;
    }
    if (v.bad === undefined) {
      st.clearingSinceMs = undefined; // inside the hysteresis band: stays raised
      return undefined;
    }
    st.clearingSinceMs ??= now;
    if (now - st.clearingSinceMs < r.clearForSeconds * 1000) return undefined;
    const cleared: Alarm = { ...st.active, value: v.value, clearedAtMs: now };
    st.active = undefined;
    st.clearingSinceMs = undefined;
    return this.emit({ type: 'cleared', atMs: now, alarm: cleared });
  }

  private emit(e: AlarmEvent): AlarmEvent {
    this.events.push(e);
    if (this.events.length > this.config.recentLimit) this.events.splice(0, this.events.length - this.config.recentLimit);
    try {
      this.onEvent?.(e);
    } catch {
      /* a listener must not stop alarm evaluation */
    }
    return e;
  }

  /** Alarms currently raised, most severe first, then oldest first. */
  active(): Alarm[] {
    const list: Alarm[] = [];
    for (const s of this.states.values()) if (s.active) list.push({ ...s.active });
    return list.sort((a, b) => SEVERITIES.indexOf(a.severity) - SEVERITIES.indexOf(b.severity) || a.raisedAtMs - b.raisedAtMs);
  }

  /** Recent raise/clear events, newest first. */
  recent(limit = this.config.recentLimit): AlarmEvent[] {
    return this.events.slice(-limit).reverse();
  }

  /** Sets qkd_alarms_active{severity} (pass `createQkdMetrics(...)` or any {alarmsActive} gauge). */
  exportTo(m: { alarmsActive: Gauge }): void {
    for (const [sev, n] of Object.entries(this.countsBySeverity())) m.alarmsActive.set({ severity: sev }, n);
  }

  /** Number of active alarms per severity (for qkd_alarms_active{severity}). */
  countsBySeverity(): Record<Severity, number> {
    const out: Record<Severity, number> = { critical: 0, major: 0, minor: 0, warning: 0 };
    for (const a of this.active()) out[a.severity]++;
    return out;
  }
}

/** Whether `version` matches one of the patterns (`*` = any run of characters, the rest literal). */
export function firmwareMatches(patterns: readonly string[], version: string): boolean {
  return patterns.some((p) => new RegExp(`^${p.split('*').map((x) => x.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`).test(version));
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Validates a (partial) alarm configuration and fills in the defaults. Throws ConfigError
 * ALARM_CONFIG_INVALID naming the field and what was expected.
 */
export function parseAlarmConfig(input: unknown, source = 'alarm configuration'): AlarmConfig {
  if (!isObj(input)) throw new ConfigError('ALARM_CONFIG_INVALID', `${source}: expected a JSON object`);
  const out = structuredClone(DEFAULT_ALARM_CONFIG) as unknown as Record<string, unknown>;
  for (const [section, value] of Object.entries(input)) {
    if (!(section in DEFAULT_ALARM_CONFIG)) {
      throw new ConfigError('ALARM_CONFIG_INVALID', `${source}: unknown section '${section}'; known: ${Object.keys(DEFAULT_ALARM_CONFIG).join(', ')}`);
    }
    const dflt = (DEFAULT_ALARM_CONFIG as unknown as Record<string, unknown>)[section];
    if (!isObj(dflt)) {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
        throw new ConfigError('ALARM_CONFIG_INVALID', `${source}: '${section}' must be a positive integer`);
      }
      out[section] = value;
      continue;
    }
    if (!isObj(value)) throw new ConfigError('ALARM_CONFIG_INVALID', `${source}: '${section}' must be an object`);
    const target = out[section] as Record<string, unknown>;
    for (const [k, v] of Object.entries(value)) {
      const field = `${section}.${k}`;
      if (!(k in dflt)) throw new ConfigError('ALARM_CONFIG_INVALID', `${source}: unknown field '${field}'; known: ${Object.keys(dflt).join(', ')}`);
      const want = typeof dflt[k];
      if (k === 'severity') {
        if (!SEVERITIES.includes(v as Severity)) throw new ConfigError('ALARM_CONFIG_INVALID', `${source}: '${field}' must be one of ${SEVERITIES.join(', ')}`);
      } else if (want === 'number') {
        if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ConfigError('ALARM_CONFIG_INVALID', `${source}: '${field}' must be a number ≥ 0`);
      } else if (typeof v !== want) {
        throw new ConfigError('ALARM_CONFIG_INVALID', `${source}: '${field}' must be a ${want}`);
      }
      target[k] = v;
    }
  }
  const cfg = out as unknown as AlarmConfig;
  const order = (section: string, hi: number, lo: number, hiName: string, loName: string) => {
    if (!(lo <= hi)) throw new ConfigError('ALARM_CONFIG_INVALID', `${source}: ${section}.${loName} (${lo}) must not exceed ${section}.${hiName} (${hi})`);
  };
  order('qber', cfg.qber.abortThreshold, cfg.qber.clearBelow, 'abortThreshold', 'clearBelow');
  order('detectorSaturation', cfg.detectorSaturation.raiseAboveHz, cfg.detectorSaturation.clearBelowHz, 'raiseAboveHz', 'clearBelowHz');
  order('detectorSilence', cfg.detectorSilence.clearAboveHz, cfg.detectorSilence.raiseBelowHz, 'clearAboveHz', 'raiseBelowHz');
  order('spoolFilling', cfg.spoolFilling.raiseAboveRatio, cfg.spoolFilling.clearBelowRatio, 'raiseAboveRatio', 'clearBelowRatio');
  order('classicalRtt', cfg.classicalRtt.raiseAboveSeconds, cfg.classicalRtt.clearBelowSeconds, 'raiseAboveSeconds', 'clearBelowSeconds');
  return cfg;
}

/** Reads and validates a JSON alarm configuration file; no path (undefined or '') gives the defaults. */
export function loadAlarmConfig(path?: string): AlarmConfig {
  if (!path) return parseAlarmConfig({});
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('ALARM_CONFIG_UNREADABLE', `cannot read alarm configuration ${path}: check the path and permissions`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('ALARM_CONFIG_INVALID', `${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  return parseAlarmConfig(json, path);
}
