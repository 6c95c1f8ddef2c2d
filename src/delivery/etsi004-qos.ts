/**
 * ETSI GS QKD 004 V2.1.1 for applications (northbound, clause 6): strict parsing of the
 * OPEN_CONNECT / GET_KEY / CLOSE bodies an application (SAE) sends, and QoS admission against a
 * link's key rate. Pure functions; the sessions themselves are in etsi004-app.ts.
 *
 * QoS (clause 6, the `qos` structure; units as in the AIT push-mode profile that follows it):
 * key_chunk_size bytes, max_bps / min_bps / jitter bit/s, priority (here: larger is served first),
 * timeout ms, ttl s, metadata_mimetype. A field that is absent or null is chosen by the KMS.
 *
 * Admission: the sum of the admitted min_bps of every open stream on the link may not exceed the
 * link's key rate. A request that cannot be honoured is answered with status 7 and a
 * counter-proposal: the request with every field this KMS could not meet replaced by the nearest
 * value it can (for min_bps: what is left of the link's rate).
 */
import { STATUS, isUuid, nodeName, QOS_FIELDS, type Qos } from './types.ts';

/** A refusal of a request: HTTP status, ETSI 004 status and a message naming what to fix. */
export class AppRefusal {
  constructor(readonly http: number, readonly status: number, readonly message: string,
    readonly extra: Record<string, unknown> = {}) {}
  body(): Record<string, unknown> {
    return { status: this.status, message: this.message, ...this.extra };
  }
}

export interface QosLimits {
  /** The link's chunk size in bytes (the node's key_chunk_size). */
  linkChunkBytes: number;
  /** Largest key_chunk_size an application may ask for, bytes. */
  maxKeyBytes: number;
  /** Link key rate the admission shares out, bit/s (0: unknown, nothing guaranteed). */
  capacityBps: number;
  /** Sum of min_bps already admitted on the link, bit/s. */
  admittedMinBps: number;
  /** Most chunks one group of keys may span (lcm(key, chunk) / chunk). */
  maxChunksPerGroup: number;
  maxTimeoutMs: number;
  maxTtlS: number;
}

export const MIMETYPE = 'application/json';
const U32 = 0xffff_ffff;

const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

export function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Keys per group and chunks per group: a group is lcm(keyBytes, chunkBytes) bytes. */
export function grouping(keyBytes: number, chunkBytes: number): { keysPerGroup: number; chunksPerGroup: number } {
  const l = (keyBytes / gcd(keyBytes, chunkBytes)) * chunkBytes;
  return { keysPerGroup: l / keyBytes, chunksPerGroup: l / chunkBytes };
}

/** A key_chunk_size near `want` whose groups span at most `maxChunks` chunks (for a counter-proposal). */
function nearestGroupable(want: number, chunk: number, maxKey: number, maxChunks: number): number {
  for (let d = 0; d < maxKey; d++) {
    for (const k of [want - d, want + d]) {
      if (k >= 1 && k <= maxKey && grouping(k, chunk).chunksPerGroup <= maxChunks) return k;
    }
  }
  return chunk;
}

function u32(q: Record<string, unknown>, name: keyof Qos): number | undefined {
  const v = q[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > U32) {
    throw new AppRefusal(400, STATUS.NO_QKD_CONNECTION, `qos.${name} must be an integer 0..2^32-1 (JSON number) or null, ` +
      `got ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * Parses a requested QoS and decides: `{ok: qos}` (every field filled) or `{counter: qos}` (the
 * nearest QoS this KMS can honour, with the reasons). Wrong types throw an AppRefusal (400).
 */
export function admitQos(raw: unknown, lim: QosLimits): { qos: Qos; reasons: string[] } {
  if (raw !== undefined && raw !== null && !isObject(raw)) {
    throw new AppRefusal(400, STATUS.NO_QKD_CONNECTION, 'qos must be a JSON object (ETSI GS QKD 004 clause 6) or null');
  }
  const q = (raw ?? {}) as Record<string, unknown>;
  const unknown = Object.keys(q).filter((k) => !(QOS_FIELDS as string[]).includes(k));
  if (unknown.length) {
    throw new AppRefusal(400, STATUS.NO_QKD_CONNECTION, `unknown qos field(s) ${unknown.join(', ')} (clause 6 has ` +
      `${QOS_FIELDS.join(', ')})`);
  }
  const mt = q.metadata_mimetype;
  if (mt !== undefined && mt !== null && typeof mt !== 'string') {
    throw new AppRefusal(400, STATUS.NO_QKD_CONNECTION, `qos.metadata_mimetype must be a string or null, got ${JSON.stringify(mt)}`);
  }
  const reasons: string[] = [];
  const free = Math.max(0, lim.capacityBps - lim.admittedMinBps);
  let size = u32(q, 'key_chunk_size') ?? lim.linkChunkBytes;
  if (size < 1 || size > lim.maxKeyBytes) {
    reasons.push(`key_chunk_size must be 1..${lim.maxKeyBytes} bytes`);
    size = Math.min(Math.max(size, 1), lim.maxKeyBytes);
  }
  if (grouping(size, lim.linkChunkBytes).chunksPerGroup > lim.maxChunksPerGroup) {
    const near = nearestGroupable(size, lim.linkChunkBytes, lim.maxKeyBytes, lim.maxChunksPerGroup);
    reasons.push(`key_chunk_size ${size} bytes would tie up ${grouping(size, lim.linkChunkBytes).chunksPerGroup} link ` +
      `chunks of ${lim.linkChunkBytes} bytes per group of keys (at most ${lim.maxChunksPerGroup}); ${near} does not`);
    size = near;
  }
  let minBps = u32(q, 'min_bps') ?? 0;
  if (minBps > free) {
    reasons.push(`min_bps ${minBps} exceeds what the link can still guarantee: ${free} bit/s of ` +
      `${lim.capacityBps} (already admitted: ${lim.admittedMinBps})`);
    minBps = free;
  }
  let maxBps = u32(q, 'max_bps') ?? 0;
  if (maxBps !== 0 && maxBps < minBps) {
    reasons.push(`max_bps ${maxBps} is below min_bps ${minBps}`);
    maxBps = minBps;
  }
  let timeout = u32(q, 'timeout') ?? 0;
  if (timeout > lim.maxTimeoutMs) {
    reasons.push(`timeout must be at most ${lim.maxTimeoutMs} ms`);
    timeout = lim.maxTimeoutMs;
  }
  let ttl = u32(q, 'ttl') ?? Math.min(3600, lim.maxTtlS);
  if (ttl < 1 || ttl > lim.maxTtlS) {
    reasons.push(`ttl must be 1..${lim.maxTtlS} s`);
    ttl = Math.min(Math.max(ttl, 1), lim.maxTtlS);
  }
  let mime = typeof mt === 'string' ? mt : MIMETYPE;
  if (mime !== MIMETYPE) {
    reasons.push(`metadata_mimetype must be ${MIMETYPE}`);
    mime = MIMETYPE;
  }
  const qos: Qos = { key_chunk_size: size, max_bps: maxBps, min_bps: minBps, jitter: u32(q, 'jitter') ?? 0,
    priority: u32(q, 'priority') ?? 0, timeout, ttl, metadata_mimetype: mime };
  return { qos, reasons };
}

/** True when every field the application set (not null) equals the stream's. */
export function qosCompatible(raw: unknown, qos: Qos): boolean {
  if (raw === undefined || raw === null) return true;
  if (!isObject(raw)) return false;
  return Object.entries(raw).every(([k, v]) => v === null || v === undefined || (qos as unknown as Record<string, unknown>)[k] === v);
}

export interface OpenRequest {
  source: string;
  destination: string;
  keyStreamId?: string;
  qos: unknown;
}

function refuseFields(b: Record<string, unknown>, known: string[], what: string, status: number): void {
  const unknown = Object.keys(b).filter((k) => !known.includes(k));
  if (unknown.length) throw new AppRefusal(400, status, `unknown field(s) ${unknown.join(', ')} in ${what} (it takes ${known.join(', ')})`);
}

/** The key_stream_ID of a body (`key_stream_ID`, or `key_stream_id` as the push-mode profile spells it). */
function streamIdOf(b: Record<string, unknown>, required: boolean, status: number): string | undefined {
  if (b.key_stream_ID !== undefined && b.key_stream_id !== undefined) {
    throw new AppRefusal(400, status, 'give key_stream_ID once (not also key_stream_id)');
  }
  const v = b.key_stream_ID ?? b.key_stream_id;
  if (v === undefined || v === null) {
    if (required) throw new AppRefusal(400, status, 'key_stream_ID (a UUID string) is required');
    return undefined;
  }
  if (!isUuid(v)) throw new AppRefusal(400, status, `key_stream_ID must be a UUID string, got ${JSON.stringify(v).slice(0, 80)}`);
  return v.toLowerCase();
}

function bodyObject(body: unknown, call: string, status: number): Record<string, unknown> {
  if (!isObject(body)) {
    throw new AppRefusal(400, status, `${call} needs a JSON object body, got ${body === undefined ? 'none' :
      Array.isArray(body) ? 'an array' : typeof body}`);
  }
  return body;
}

export function parseOpen(body: unknown): OpenRequest {
  const b = bodyObject(body, 'OPEN_CONNECT', STATUS.NO_QKD_CONNECTION);
  refuseFields(b, ['source', 'destination', 'qos', 'key_stream_ID', 'key_stream_id'], 'OPEN_CONNECT', STATUS.NO_QKD_CONNECTION);
  for (const f of ['source', 'destination'] as const) {
    if (typeof b[f] !== 'string' || !nodeName(b[f])) {
      throw new AppRefusal(400, STATUS.NO_QKD_CONNECTION, `${f} must be the application's SAE ID (a string, ` +
        `optionally as a URI such as qkd://saeA), got ${JSON.stringify(b[f])}`);
    }
  }
  return { source: nodeName(b.source), destination: nodeName(b.destination),
    keyStreamId: streamIdOf(b, false, STATUS.KSID_IN_USE), qos: b.qos };
}

export interface GetKeyRequest {
  keyStreamId: string;
  index?: number;
  /** metadata.size the application offers (characters), if it asked for metadata. */
  metadataSize?: number;
}

export function parseGetKey(body: unknown): GetKeyRequest {
  const b = bodyObject(body, 'GET_KEY', STATUS.INSUFFICIENT_KEY);
  refuseFields(b, ['key_stream_ID', 'key_stream_id', 'index', 'metadata'], 'GET_KEY', STATUS.INSUFFICIENT_KEY);
  const keyStreamId = streamIdOf(b, true, STATUS.NO_QKD_CONNECTION)!;
  const i = b.index;
  if (i !== undefined && i !== null && (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i > U32)) {
    throw new AppRefusal(400, STATUS.INSUFFICIENT_KEY, `index must be an integer 0..2^32-1 or absent, got ${JSON.stringify(i)}`);
  }
  const m = b.metadata;
  let metadataSize: number | undefined;
  if (m !== undefined && m !== null) {
    if (!isObject(m) || typeof m.size !== 'number' || !Number.isInteger(m.size) || m.size < 0 || m.size > U32) {
      throw new AppRefusal(400, STATUS.METADATA_TOO_SMALL, 'metadata must be {"size": integer characters the application ' +
        'accepts, "buffer": ignored} or absent');
    }
    metadataSize = m.size;
  }
  return { keyStreamId, index: (i ?? undefined) as number | undefined, metadataSize };
}

export function parseClose(body: unknown): string {
  const b = bodyObject(body, 'CLOSE', STATUS.NO_QKD_CONNECTION);
  refuseFields(b, ['key_stream_ID', 'key_stream_id'], 'CLOSE', STATUS.NO_QKD_CONNECTION);
  return streamIdOf(b, true, STATUS.NO_QKD_CONNECTION)!;
}
