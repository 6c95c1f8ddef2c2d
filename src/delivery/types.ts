/**
 * ETSI GS QKD 004 (push mode, AIT OpenAPI v1.0.1) vocabulary shared by the node side and the
 * reference KMS. Field names are the wire names (snake_case). See docs/delivery.md for the
 * decisions the spec leaves open.
 */

/** ETSI GS QKD 004 V2.1.1 status codes. */
export const STATUS = {
  OK: 0,
  PEER_NOT_CONNECTED: 1,
  INSUFFICIENT_KEY: 2,
  PEER_APP_NOT_CONNECTED: 3,
  NO_QKD_CONNECTION: 4,
  KSID_IN_USE: 5,
  TIMEOUT: 6,
  QOS_COUNTER_PROPOSAL: 7,
  METADATA_TOO_SMALL: 8,
} as const;
export type EtsiStatus = (typeof STATUS)[keyof typeof STATUS];

/** QoS of a key stream. Sizes in bytes, rates in bit/s, timeout in ms, ttl in s. */
export interface Qos {
  key_chunk_size: number;
  max_bps: number;
  min_bps: number;
  jitter: number;
  priority: number;
  timeout: number;
  ttl: number;
  metadata_mimetype: string;
}
export type QosRequest = { [K in keyof Qos]?: Qos[K] | null };

export const QOS_FIELDS: (keyof Qos)[] = ['key_chunk_size', 'max_bps', 'min_bps', 'jitter', 'priority',
  'timeout', 'ttl', 'metadata_mimetype'];

export interface OpenConnectRequest {
  source: string;
  destination: string;
  key_stream_id?: string | null;
  qos?: QosRequest | null;
}
export interface OpenConnectResponse {
  key_stream_id: string | null;
  qos: Qos;
  status: number;
}
export interface Metadata {
  size: number;
  /** An object; one published schema version sends it as a string holding JSON: accept both. */
  buffer: Record<string, unknown> | string;
}
export interface GetKeyRequest {
  key_stream_id: string;
  index?: number;
  metadata?: Metadata;
}
export interface KeyMaterial {
  status: number;
  index: number;
  key_buffer: string;
  metadata: { size: number; buffer: KeyProvenanceBuffer };
}

/**
 * Provenance carried in key-material metadata (never key bytes). The node fills key_stream_id,
 * index, chunk_size and offered_at_ms; the orchestrator's `offer(bytes, provenance)` adds the rest.
 */
export interface Provenance {
  /** Post-processing block the bytes came from. */
  block_id?: string | number;
  /** Quantum bit error rate of that block, as a fraction. */
  qber?: number;
  /** Composable security parameter epsilon of the block. */
  epsilon?: number;
  /** Start/end of the raw-key acquisition of the block, ms since the epoch. */
  acquired_from_ms?: number;
  acquired_to_ms?: number;
  [extra: string]: unknown;
}
export interface KeyProvenanceBuffer extends Provenance {
  key_stream_id: string;
  index: number;
  node_id: string;
  offered_at_ms: number;
  pushed_at_ms: number;
}

/** The largest index; a stream ends there (no wrap, see docs/delivery.md). */
export const MAX_INDEX = 0xffff_ffff;

/**
 * Batched pushes, our vendor extension of the push mode (docs/delivery.md, "Batched pushes"): a
 * KMS that serves this path says so in get-key (`push_batch`: most chunks per request); the node
 * then sends `{items: [key-material body, ...]}` there instead of one request per chunk.
 */
export const KEY_MATERIAL_BATCH = '/api/v1/qkd/etsi004/key-material-batch';
/** Most chunks in one batched push (the KMS refuses more; the node sends at most what the KMS asked). */
export const MAX_PUSH_BATCH = 256;
/** Most key bytes in one batched push (a request body stays well under the servers' 1 MiB). */
export const MAX_PUSH_BATCH_BYTES = 256 << 10;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: unknown): s is string => typeof s === 'string' && UUID_RE.test(s);

/** `qkd://nodeA` and `nodeA` name the same node. */
export function nodeName(uri: unknown): string {
  if (typeof uri !== 'string') return '';
  return uri.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').replace(/\/+$/, '');
}

/** Parses a metadata buffer sent as an object or as a JSON string. */
export function metadataBuffer(m: unknown): Record<string, unknown> | undefined {
  if (!m || typeof m !== 'object') return undefined;
  const b = (m as { buffer?: unknown }).buffer;
  if (typeof b === 'string') {
    try {
      const v = JSON.parse(b) as unknown;
      return v && typeof v === 'object' ? (v as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  }
  return b && typeof b === 'object' ? (b as Record<string, unknown>) : undefined;
}
