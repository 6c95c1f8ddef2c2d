/**
 * Telemetry: metrics (Prometheus), structured logs with redaction, alarms, SLIs and randomness
 * health checks. See docs/operations.md for how the node wires them and docs/runbook.md for alarms.
 */
export { MetricsRegistry, Counter, Gauge, Histogram, renderPrometheus, PROMETHEUS_CONTENT_TYPE, DEFAULT_SECONDS_BUCKETS } from './metrics.ts';
export type { LabelValues, MetricOptions, HistogramOptions } from './metrics.ts';
export { createQkdMetrics, type QkdMetrics } from './qkd-metrics.ts';
export { createLogger, createMemorySink, type Logger, type LogLevel, type LogFields, type LoggerOptions } from './logger.ts';
export { redact, redactString, classifyField } from './redact.ts';
export {
  AlarmEngine, DEFAULT_ALARM_CONFIG, parseAlarmConfig, loadAlarmConfig, firmwareMatches,
  type Alarm, type AlarmEvent, type AlarmInputs, type AlarmConfig, type AlarmConfigInput, type AlarmKind, type Severity,
} from './alarms.ts';
export { SliTracker, WindowedSum, type SliSnapshot, type SliOptions } from './sli.ts';
export {
  RandomnessMonitor, runRandomnessChecks, frequencyTest, runsTest, serialTest,
  type RandomnessReport, type RandomnessSnapshot, type RandomnessMonitorOptions,
} from './randomness.ts';
export { erfc, igamc, igam, lgamma } from './special.ts';
