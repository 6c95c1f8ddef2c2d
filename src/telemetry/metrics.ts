/**
 * A small metrics registry (counters, gauges, histograms with labels) and its rendering in the
 * Prometheus text exposition format 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/). No dependency, no global state:
 * the node creates one registry and hands it to whoever records.
 *
 * Naming (https://prometheus.io/docs/practices/naming/): `qkd_` prefix, base units in the name
 * (`_seconds`, `_bytes`, `_hertz`, `_ratio` for 0..1), counters end in `_total`.
 *
 * Concurrency: single JS thread; recording is synchronous and O(1) per call (a Map lookup on the
 * label values). Label values are never key material (counts, channel numbers, KMS names); the
 * registry refuses label values over 128 characters as a guard against someone putting a blob in.
 */
import { ConfigError } from '../errors.ts';

export type LabelValues = Record<string, string | number>;
export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface MetricOptions {
  name: string;
  help: string;
  labelNames?: readonly string[];
}
export interface HistogramOptions extends MetricOptions {
  /** Upper bounds, strictly increasing (the +Inf bucket is implicit). Default: DEFAULT_SECONDS_BUCKETS. */
  buckets?: readonly number[];
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
/** Buckets for latencies in seconds, 1 ms to 10 s. */
export const DEFAULT_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const MAX_LABEL_VALUE = 128;

/** Formats a sample value as Prometheus expects (Go ParseFloat syntax, ±Inf and NaN spelled out). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v); // JS shortest round-trip form; "1e-7" and "123" both parse in Prometheus
}

function escapeLabelValue(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}
function escapeHelp(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

abstract class Metric<S> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  abstract readonly type: MetricType;
  protected readonly series = new Map<string, { labels: string[]; state: S }>();

  constructor(opts: MetricOptions) {
    if (!METRIC_NAME.test(opts.name)) {
      throw new ConfigError('METRIC_NAME_INVALID', `metric name '${opts.name}' is not a valid Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]*)`);
    }
    const labelNames = opts.labelNames ?? [];
    for (const l of labelNames) {
      if (!LABEL_NAME.test(l) || l.startsWith('__')) {
        throw new ConfigError('METRIC_LABEL_INVALID', `label name '${l}' of metric ${opts.name} is invalid (letters, digits, _; not starting with __)`);
      }
    }
    if (new Set(labelNames).size !== labelNames.length) {
      throw new ConfigError('METRIC_LABEL_INVALID', `metric ${opts.name} lists a label name twice`);
    }
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = [...labelNames];
  }

  protected abstract initial(): S;

  protected slot(labels: LabelValues | undefined): S {
    const values: string[] = [];
    const given = labels ? Object.keys(labels) : [];
    if (given.length !== this.labelNames.length || !this.labelNames.every((l) => labels && l in labels)) {
      throw new ConfigError(
        'METRIC_LABELS_MISMATCH',
        `metric ${this.name} takes labels {${this.labelNames.join(', ')}} but was given {${given.join(', ')}}`,
      );
    }
    for (const l of this.labelNames) {
      const v = String(labels![l]);
      if (v.length > MAX_LABEL_VALUE) {
        throw new ConfigError('METRIC_LABEL_TOO_LONG', `label ${l} of metric ${this.name} is ${v.length} characters; label values are short names (≤ ${MAX_LABEL_VALUE})`);
      }
      values.push(v);
    }
    const key = values.join('\u0000');
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = { labels: values, state: this.initial() }));
    return s.state;
  }

  /** Drops one label combination (e.g. a detector channel that was removed). */
  remove(labels?: LabelValues): void {
    const key = this.labelNames.map((l) => String(labels?.[l])).join('\u0000');
    this.series.delete(key);
  }

  /** Drops every series. */
  reset(): void {
    this.series.clear();
  }

  protected labelText(values: string[], extra?: [string, string]): string {
    const parts = this.labelNames.map((l, i) => `${l}="${escapeLabelValue(values[i])}"`);
    if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
    return parts.length ? `{${parts.join(',')}}` : '';
  }

  /** Sample lines of this family (without HELP/TYPE). */
  abstract samples(): string[];

  render(): string {
    const lines = [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`, ...this.samples()];
    return lines.join('\n') + '\n';
  }
}

function split(a: LabelValues | number | undefined, b: number | undefined, dflt: number): [LabelValues | undefined, number] {
  return typeof a === 'number' ? [undefined, a] : [a, b ?? dflt];
}

/** Monotonic counter. `inc()` / `inc(n)` / `inc({channel: 1}, n)`. */
export class Counter extends Metric<{ v: number }> {
  readonly type = 'counter' as const;
  constructor(opts: MetricOptions) {
    super(opts);
    if (!this.labelNames.length) this.slot(undefined);
  }
  protected initial() {
    return { v: 0 };
  }
  inc(labelsOrValue?: LabelValues | number, value?: number): void {
    const [labels, v] = split(labelsOrValue, value, 1);
    if (!(v >= 0)) throw new ConfigError('METRIC_COUNTER_DECREASE', `counter ${this.name} can only increase (got ${v}); use a gauge`);
    this.slot(labels).v += v;
  }
  get(labels?: LabelValues): number {
    return this.slot(labels).v;
  }
  samples(): string[] {
    return [...this.series.values()].map((s) => `${this.name}${this.labelText(s.labels)} ${formatValue(s.state.v)}`);
  }
}

/** A value that goes up and down. Unlabelled gauges appear in the exposition once first set. */
export class Gauge extends Metric<{ v: number }> {
  readonly type = 'gauge' as const;
  protected initial() {
    return { v: 0 };
  }
  set(labelsOrValue: LabelValues | number, value?: number): void {
    const [labels, v] = split(labelsOrValue, value, NaN);
    this.slot(labels).v = v;
  }
  inc(labelsOrValue?: LabelValues | number, value?: number): void {
    const [labels, v] = split(labelsOrValue, value, 1);
    this.slot(labels).v += v;
  }
  dec(labelsOrValue?: LabelValues | number, value?: number): void {
    const [labels, v] = split(labelsOrValue, value, 1);
    this.slot(labels).v -= v;
  }
  get(labels?: LabelValues): number | undefined {
    const key = this.labelNames.map((l) => String(labels?.[l])).join('\u0000');
    return this.series.get(key)?.state.v;
  }
  samples(): string[] {
    return [...this.series.values()].map((s) => `${this.name}${this.labelText(s.labels)} ${formatValue(s.state.v)}`);
  }
}

interface HistState {
  counts: Float64Array; // per bucket, not cumulative; last = +Inf
  sum: number;
  count: number;
}

/** Cumulative histogram with fixed upper bounds (`le`), plus `_sum` and `_count`. */
export class Histogram extends Metric<HistState> {
  readonly type = 'histogram' as const;
  readonly buckets: readonly number[];
  constructor(opts: HistogramOptions) {
    super(opts);
    if (this.labelNames.includes('le')) throw new ConfigError('METRIC_LABEL_INVALID', `histogram ${opts.name} cannot use the reserved label 'le'`);
    const b = [...(opts.buckets ?? DEFAULT_SECONDS_BUCKETS)].filter((x) => x !== Infinity);
    for (let i = 0; i < b.length; i++) {
      if (!Number.isFinite(b[i]) || (i > 0 && b[i] <= b[i - 1])) {
        throw new ConfigError('METRIC_BUCKETS_INVALID', `histogram ${opts.name}: buckets must be finite and strictly increasing`);
      }
    }
    this.buckets = b;
    if (!this.labelNames.length) this.slot(undefined);
  }
  protected initial(): HistState {
    return { counts: new Float64Array(this.buckets.length + 1), sum: 0, count: 0 };
  }
  observe(labelsOrValue: LabelValues | number, value?: number): void {
    const [labels, v] = split(labelsOrValue, value, NaN);
    if (Number.isNaN(v)) return; // an unmeasurable sample is not an observation
    const s = this.slot(labels);
    let i = 0;
    while (i < this.buckets.length && v > this.buckets[i]) i++;
    s.counts[i]++;
    s.sum += v;
    s.count++;
  }
  /** Cumulative bucket counts, sum and count for one label set. */
  get(labels?: LabelValues): { buckets: { le: number; count: number }[]; sum: number; count: number } {
    const s = this.slot(labels);
    let acc = 0;
    const buckets = [...this.buckets, Infinity].map((le, i) => ({ le, count: (acc += s.counts[i]) }));
    return { buckets, sum: s.sum, count: s.count };
  }
  samples(): string[] {
    const out: string[] = [];
    for (const s of this.series.values()) {
      let acc = 0;
      for (let i = 0; i <= this.buckets.length; i++) {
        acc += s.state.counts[i];
        const le = i < this.buckets.length ? formatValue(this.buckets[i]) : '+Inf';
        out.push(`${this.name}_bucket${this.labelText(s.labels, ['le', le])} ${formatValue(acc)}`);
      }
      out.push(`${this.name}_sum${this.labelText(s.labels)} ${formatValue(s.state.sum)}`);
      out.push(`${this.name}_count${this.labelText(s.labels)} ${formatValue(s.state.count)}`);
    }
    return out;
  }
}

export type AnyMetric = Counter | Gauge | Histogram;

/**
 * Holds metric families by name. Registering a name again returns the existing metric when type
 * and label names match (so two modules can share one), and throws ConfigError otherwise.
 */
export class MetricsRegistry {
  private readonly families = new Map<string, AnyMetric>();
  private readonly collectors: (() => void)[] = [];

  counter(opts: MetricOptions): Counter {
    return this.register(opts, 'counter', () => new Counter(opts)) as Counter;
  }
  gauge(opts: MetricOptions): Gauge {
    return this.register(opts, 'gauge', () => new Gauge(opts)) as Gauge;
  }
  histogram(opts: HistogramOptions): Histogram {
    return this.register(opts, 'histogram', () => new Histogram(opts)) as Histogram;
  }

  private register(opts: MetricOptions, type: MetricType, make: () => AnyMetric): AnyMetric {
    const existing = this.families.get(opts.name);
    if (existing) {
      if (existing.type !== type || existing.labelNames.join(',') !== (opts.labelNames ?? []).join(',')) {
        throw new ConfigError(
          'METRIC_CONFLICT',
          `metric ${opts.name} is already registered as a ${existing.type} with labels {${existing.labelNames.join(', ')}}`,
        );
      }
      return existing;
    }
    for (const suffix of ['_bucket', '_sum', '_count']) {
      const base = opts.name.endsWith(suffix) ? opts.name.slice(0, -suffix.length) : undefined;
      if (base && this.families.get(base)?.type === 'histogram') {
        throw new ConfigError('METRIC_CONFLICT', `metric ${opts.name} collides with the series of histogram ${base}`);
      }
    }
    const m = make();
    this.families.set(opts.name, m);
    return m;
  }

  get(name: string): AnyMetric | undefined {
    return this.families.get(name);
  }

  names(): string[] {
    return [...this.families.keys()];
  }

  /** Registers a function run before each render, to refresh computed gauges (SLIs, levels). */
  onCollect(fn: () => void): void {
    this.collectors.push(fn);
  }

  /** The whole registry in the text exposition format (ends with a newline). */
  render(): string {
    for (const c of this.collectors) c();
    let out = '';
    for (const m of this.families.values()) out += m.render();
    return out;
  }
}

/** Renders one or more registries as one exposition (families must not repeat across them). */
export function renderPrometheus(...registries: MetricsRegistry[]): string {
  return registries.map((r) => r.render()).join('');
}
