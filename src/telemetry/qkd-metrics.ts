/**
 * The node's metric families: one place that fixes names, units, help texts and labels, so the
 * orchestrator, the dashboard and the Prometheus scrape agree. Call `createQkdMetrics(registry)`
 * once per registry; it is idempotent (a second call returns handles to the same metrics).
 *
 * Label values: basis 'Z' | 'X'; channel the detector/tagger channel number; kms 'alice' | 'bob';
 * result 'verified' | 'aborted' with reason (e.g. 'qber', 'verification', 'ldpc', 'finite_key',
 * 'auth', 'none'); test 'frequency' | 'runs' | 'serial_1' | 'serial_2'.
 */
import { MetricsRegistry, type Counter, type Gauge, type Histogram } from './metrics.ts';

export interface QkdMetrics {
  registry: MetricsRegistry;
  pulses: Counter;
  detections: Counter;
  detectorCountRate: Gauge;
  siftedBits: Counter;
  secretBits: Counter;
  secretKeyRate: Gauge;
  qber: Gauge;
  reconciliationEfficiency: Gauge;
  frameErrors: Counter;
  blocks: Counter;
  syncLocked: Gauge;
  syncOffset: Gauge;
  syncDrift: Gauge;
  keyPushLatency: Histogram;
  keysDelivered: Counter;
  keyDeliveryFailures: Counter;
  keyDeliverySuccessRatio: Gauge;
  spoolDepth: Gauge;
  kmsKeysStored: Gauge;
  kmsReachable: Gauge;
  linkAvailability: Gauge;
  classicalRtt: Histogram;
  calibrationAge: Gauge;
  randomnessPValue: Gauge;
  randomnessHealthy: Gauge;
  alarmsActive: Gauge;
  deviceInfo: Gauge;
}

export function createQkdMetrics(registry = new MetricsRegistry()): QkdMetrics {
  const c = (name: string, help: string, labelNames: string[] = []) => registry.counter({ name, help, labelNames });
  const g = (name: string, help: string, labelNames: string[] = []) => registry.gauge({ name, help, labelNames });
  return {
    registry,
    pulses: c('qkd_pulses_total', 'Pulses emitted by Alice.'),
    detections: c('qkd_detections_total', 'Detection events (time tags) received, per detector channel.', ['channel']),
    detectorCountRate: g('qkd_detector_count_rate_hertz', 'Detector count rate over the last second, per channel.', ['channel']),
    siftedBits: c('qkd_sifted_bits_total', 'Bits kept after basis sifting.'),
    secretBits: c('qkd_secret_bits_total', 'Final secret key bits produced (after privacy amplification).'),
    secretKeyRate: g('qkd_secret_key_rate_bits_per_second', 'Secret key rate over the SLI window.'),
    qber: g('qkd_qber_ratio', 'Quantum bit error rate of the last block, per basis (0..1).', ['basis']),
    reconciliationEfficiency: g('qkd_reconciliation_efficiency', 'Reconciliation efficiency f = leak / (n h(QBER)) of the last block (1 is the Shannon limit).'),
    frameErrors: c('qkd_reconciliation_frame_errors_total', 'LDPC frames that failed to decode or verify.'),
    blocks: c('qkd_blocks_total', 'Post-processing blocks finished, by result and abort reason.', ['result', 'reason']),
    syncLocked: g('qkd_sync_locked', '1 when the clock synchronisation is locked, else 0.'),
    syncOffset: g('qkd_sync_offset_seconds', 'Estimated clock offset Bob minus Alice.'),
    syncDrift: g('qkd_sync_drift_ppm', 'Estimated relative clock frequency drift in parts per million.'),
    keyPushLatency: registry.histogram({
      name: 'qkd_key_push_latency_seconds',
      help: 'Latency of an ETSI 004 key push to the KMS, request to acknowledgement.',
      labelNames: ['kms'],
    }),
    keysDelivered: c('qkd_keys_delivered_total', 'Keys acknowledged by the KMS.', ['kms']),
    keyDeliveryFailures: c('qkd_key_delivery_failures_total', 'Key pushes that failed (after retries).', ['kms']),
    keyDeliverySuccessRatio: g('qkd_key_delivery_success_ratio', 'Share of key pushes acknowledged over the SLI window (0..1).'),
    spoolDepth: g('qkd_spool_depth_keys', 'Keys waiting in the node spool for delivery.'),
    kmsKeysStored: g('qkd_kms_keys_stored', 'Keys held by the KMS and available to applications.', ['kms']),
    kmsReachable: g('qkd_kms_reachable', '1 when the last contact with the KMS succeeded, else 0.', ['kms']),
    linkAvailability: g('qkd_link_availability_ratio', 'Share of the SLI window the link was up (synced and producing key), 0..1.'),
    classicalRtt: registry.histogram({
      name: 'qkd_classical_rtt_seconds',
      help: 'Round-trip time of the authenticated classical channel.',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    }),
    calibrationAge: g('qkd_calibration_age_seconds', 'Time since the calibration record in use was made.'),
    randomnessPValue: g('qkd_randomness_test_pvalue', 'P-value of the latest sampled output block, per SP 800-22 style test.', ['test']),
    randomnessHealthy: g('qkd_randomness_healthy', '1 when the sampled output blocks pass the randomness health checks, else 0.'),
    alarmsActive: g('qkd_alarms_active', 'Active alarms by severity.', ['severity']),
    deviceInfo: g('qkd_device_info', 'Connected device identity (value 1); firmware_ok is 0 on a version mismatch.', ['device', 'model', 'firmware', 'firmware_ok']),
  };
}
