/**
 * Node side of ETSI GS QKD 004 push mode: the HTTPS server the KMS opens streams on
 * (`/api/v1/kms/etsi004/{open-connect,get-key,close}`) and the push client that delivers key
 * chunks to `POST {kms}/api/v1/qkd/etsi004/key-material`, exactly once.
 *
 * Exactly once: a chunk is written (sealed) to the spool before `offer()` resolves and is
 * zeroised, in memory and on disk, only after the KMS answered 201 for its (key_stream_id, index).
 * A timeout, connection error or 5xx retries the same index with the same bytes after an
 * exponential back-off with jitter; a 4xx raises an alarm and parks the chunk (never re-sent under
 * another index) until its TTL. The KMS treats a repeat with the same bytes as a duplicate (201),
 * so a lost 201 costs one extra request and never a second key.
 *
 * Concurrency: all methods are called on the JS thread; `offer` may be called at any time and is
 * serialised internally. Events: 'pushed', 'acked', 'retry', 'expired', 'alarm' (see
 * DeliveryEvents). Events and metrics carry ids, indices and counts, never key bytes.
 */
import { EventEmitter } from 'node:events';
import { randomUUID, type KeyObject } from 'node:crypto';
import { commitBatch, signingKey } from './commitment.ts';
import { QkdError } from '../errors.ts';
import { JsonClient, percentiles, Recent, startServer, type Endpoint, type Req, type Res, type Server,
  type TlsConfig } from './http.ts';
import { Spool, type Remainder, type SpooledChunk, type StreamRecord } from './spool.ts';
import { KEY_MATERIAL_BATCH, MAX_INDEX, MAX_PUSH_BATCH, MAX_PUSH_BATCH_BYTES, QOS_FIELDS, STATUS, isUuid, metadataBuffer,
  nodeName, type KeyMaterial, type KeyProvenanceBuffer, type Provenance, type Qos, type QosRequest } from './types.ts';

/** What the node knows about its peer node (the orchestrator wires it to the classical channel). */
export interface PeerLink {
  nodeId: string;
  /** Is the QKD link to the peer up (quantum + authenticated classical channel)? Default true. */
  linkUp?(): boolean;
  /** Has the peer node opened key stream `keyStreamId`? Default true. */
  streamOpened?(keyStreamId: string): boolean | Promise<boolean>;
}

/** What this node can honour; open-connect QoS outside it gets a counter-proposal (status 7). */
export interface Capabilities {
  minChunkBytes: number;
  maxChunkBytes: number;
  maxBps: number;
  maxTtlS: number;
}

export interface DeliveryNodeOptions {
  role: 'source' | 'destination';
  nodeId: string;
  peer: PeerLink;
  /** Where the 004 server listens (default 127.0.0.1, any free port). */
  listen?: { host?: string; port?: number };
  /** Mutual TLS 1.3 material (server and push client). */
  tls?: TlsConfig;
  /** Plain HTTP without authentication: explicit opt-in only. */
  insecure?: boolean;
  /** The KMS: where chunks are pushed, and (by its id) the only client allowed on our server. */
  kms: Endpoint;
  spoolDir: string;
  /** 32-byte AES-256-GCM key sealing the spool at rest (from config or a key file). */
  spoolKey: Uint8Array;
  /**
   * Ed25519 private key (PEM) this node signs every pushed chunk's digest with (commitment.ts):
   * lets both KMSs check that both nodes produced a key. Keep it apart from the TLS key.
   */
  commitKey?: string | Buffer;
  /** Most chunks held unacknowledged; `offer` refuses beyond (DELIVERY_SPOOL_FULL). */
  spoolMaxChunks?: number;
  /** Most bytes waiting for a stream (or for a whole chunk); `offer` refuses beyond. Default 16 MiB. */
  maxPendingBytes?: number;
  capabilities?: Partial<Capabilities>;
  /** QoS used for fields the KMS leaves null. */
  defaultQos?: Partial<Qos>;
  retry?: { baseMs?: number; maxMs?: number };
  requestTimeoutMs?: number;
  /**
   * Pushes in flight at once (all streams; default 32, the push client's socket limit). More in
   * flight lets the KMS share one fsync among them: 16 -> 32 gave +19 % chunks/s and -5 % CPU per
   * chunk (docs/delivery.md, "Benchmark"), at about twice the ack latency.
   */
  maxInFlight?: number;
  /**
   * Batched pushes in flight at once on a stream whose KMS asked for batches (default 4). The
   * delivery bench (3 000 chunks of 32 bytes per node, quiet machine): 2 / 4 / 8 / 32 batches of
   * 64 in flight gave 20 800 / 22 600 / 17 700 / 12 700 chunks/s and 3.7 / 6.4 / 18 / 121 ms of
   * median ack latency: beyond a few, the batches only queue behind the KMS's commits.
   */
  maxBatchesInFlight?: number;
  /** fsync spool writes (default true; benchmarks may turn it off and say so). */
  fsync?: boolean;
  /** Window over which the delivered rate is compared with min_bps. */
  rateWindowMs?: number;
  /** Clock (ms since the epoch) for TTLs and rates; tests inject a fake one. */
  now?: () => number;
  /** Uniform [0,1) source for retry jitter. */
  random?: () => number;
}

export interface Alarm {
  code: string;
  message: string;
  key_stream_id?: string;
  index?: number;
  httpStatus?: number;
  ranges?: string;
}

export interface DeliveryMetrics {
  offeredBytes: number;
  chunksAssigned: number;
  pushed: number;
  acked: number;
  retries: number;
  rejected: number;
  expired: number;
  dropped: number;
  spoolDepth: number;
  pendingBytes: number;
  alarms: number;
  belowMinBps: number;
  deliveredBpsLastWindow: number;
  ackLatencyMs: { p50: number; p90: number; p99: number; count: number };
}

interface ChunkState {
  chunk: SpooledChunk;
  attempts: number;
  nextAtMs: number;
  inFlight: boolean;
  rejected: boolean;
  /** The node's v2 commitment, made for a batch of chunks at the first push of one of them. */
  commitment?: string;
}

type Outcome = 'ack' | 'retry' | 'reject';

/** Chunks committed under one signature (commitment.ts v2): the first push of a batch signs it. */
const COMMIT_BATCH = 4096;

/** Default `maxBatchesInFlight` (see there). */
export const DEFAULT_MAX_BATCHES_IN_FLIGHT = 4;

/** Default `maxInFlight`: JsonClient keeps at most this many sockets per endpoint too. */
export const DEFAULT_MAX_IN_FLIGHT = 32;

const DEFAULT_CAPS: Capabilities = { minChunkBytes: 16, maxChunkBytes: 65_536, maxBps: 10_000_000_000, maxTtlS: 7 * 86_400 };
const DEFAULT_QOS: Qos = { key_chunk_size: 32, max_bps: 1_000_000_000, min_bps: 0, jitter: 0, priority: 0,
  timeout: 2000, ttl: 3600, metadata_mimetype: 'application/json' };

/** "0-4,7,9-10" from a sorted list of indices. */
export function indexRanges(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < s.length;) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j] + 1) j++;
    out.push(i === j ? `${s[i]}` : `${s[i]}-${s[j]}`);
    i = j + 1;
  }
  return out.join(',');
}

export class DeliveryNode extends EventEmitter {
  readonly role: 'source' | 'destination';
  readonly nodeId: string;
  /** Base URL of the 004 server (the KMS's `node.url`). */
  url = '';
  private server?: Server;
  private readonly client: JsonClient;
  private readonly spool: Spool;
  private readonly opts: DeliveryNodeOptions;
  private readonly commitKey?: KeyObject;
  private readonly caps: Capabilities;
  private readonly defaults: Qos;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly streams = new Map<string, StreamRecord>();
  private readonly chunks = new Map<string, Map<number, ChunkState>>();
  private pending: Buffer = Buffer.alloc(0);
  private pendingProv: Provenance = {};
  private pendingAtMs = 0;
  /** Tag of the newest offer the spool holds (see `offer`), durable with the spooled bytes. */
  private lastTag: number | undefined;
  private inFlight = 0;
  private timer?: NodeJS.Timeout;
  private sweeper?: NodeJS.Timeout;
  private holdUntilMs = 0;
  private tokens = 0;
  private tokensAtMs = 0;
  private closed = false;
  private offerChain: Promise<unknown> = Promise.resolve();
  private readonly lat = new Recent();
  private windowBits = 0;
  private windowStartMs = 0;
  private readonly m = { offeredBytes: 0, chunksAssigned: 0, pushed: 0, acked: 0, retries: 0, rejected: 0,
    expired: 0, dropped: 0, alarms: 0, belowMinBps: 0, deliveredBpsLastWindow: 0 };

  constructor(opts: DeliveryNodeOptions) {
    super();
    this.opts = opts;
    if (opts.commitKey) this.commitKey = signingKey(opts.commitKey);
    this.role = opts.role;
    this.nodeId = opts.nodeId;
    this.caps = { ...DEFAULT_CAPS, ...(opts.capabilities ?? {}) };
    this.defaults = { ...DEFAULT_QOS, ...(opts.defaultQos ?? {}) };
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.client = new JsonClient(opts.kms, opts);
    this.spool = new Spool(opts.spoolDir, opts.spoolKey, { fsync: opts.fsync });
    for (const s of this.spool.loadStreams()) this.streams.set(s.keyStreamId, s);
    for (const ch of this.spool.loadChunks()) {
      this.stateOf(ch.keyStreamId).set(ch.index, { chunk: ch, attempts: 0, nextAtMs: 0, inFlight: false, rejected: false });
      const s = this.streams.get(ch.keyStreamId);
      if (s && s.nextIndex <= ch.index) s.nextIndex = ch.index + 1;
    }
    const p = this.spool.loadPending();
    if (p) {
      this.pending = p.bytes;
      this.pendingProv = p.provenance;
      this.pendingAtMs = p.offeredAtMs;
      this.lastTag = p.lastTag;
    }
    this.windowStartMs = this.now();
  }

  /** Starts the 004 server and the push/sweep loops. */
  async start(): Promise<void> {
    const { listen } = this.opts;
    this.server = await startServer({ ...this.opts, host: listen?.host, port: listen?.port,
      name: `delivery node ${this.nodeId}` }, (r) => this.handle(r), (err) => this.alarm({
      code: 'DELIVERY_INTERNAL', message: `a request handler failed: ${(err as Error)?.message ?? String(err)}` }));
    this.url = this.server.url;
    this.sweeper = setInterval(() => {
      this.sweepExpired();
      this.checkRate();
    }, Math.min(1000, this.opts.rateWindowMs ?? 5000));
    this.sweeper.unref();
    this.kick();
  }

  /** Points the push client at the KMS's (new) URL; same identity. */
  setKmsUrl(url: string): void {
    this.client.retarget(url);
    this.kick();
  }

  /** True when this node has `keyStreamId` open (for the peer's PeerLink.streamOpened). */
  hasStream(keyStreamId: string): boolean {
    const s = this.streams.get(keyStreamId);
    return !!s && !s.closed;
  }

  streamInfo(keyStreamId: string): Readonly<StreamRecord> | undefined {
    return this.streams.get(keyStreamId);
  }

  private stateOf(sid: string): Map<number, ChunkState> {
    let m = this.chunks.get(sid);
    if (!m) this.chunks.set(sid, (m = new Map()));
    return m;
  }

  private get depth(): number {
    let n = 0;
    for (const m of this.chunks.values()) n += m.size;
    return n;
  }

  private alarm(a: Alarm): void {
    this.m.alarms++;
    this.emit('alarm', a);
  }

  private saveStreams(): void {
    this.spool.saveStreams([...this.streams.values()]);
  }

  /** The stream new chunks go to: the most recently opened one still open and not exhausted. */
  private activeStream(): StreamRecord | undefined {
    let a: StreamRecord | undefined;
    for (const s of this.streams.values()) if (!s.closed && !s.exhausted) a = s;
    return a;
  }

  /**
   * Offers final key bytes (the same bytes, in the same order, on both nodes). They are cut into
   * key_chunk_size chunks under consecutive indices of the open stream; a remainder (or all of
   * it while no stream is open) waits, sealed in the spool, for the next offer or stream. Resolves
   * once everything is durable in the spool. The caller keeps ownership of `keyBytes` (copied)
   * and should zero it. Throws DELIVERY_SPOOL_FULL (taking nothing) when the spool is full.
   */
  offer(keyBytes: Uint8Array, provenance: Provenance = {}, tag?: number): Promise<{ keyStreamId?: string; indices: number[] }> {
    const copy = Buffer.from(keyBytes);
    const run = this.offerChain.then(() => this.doOffer(copy, provenance, tag));
    this.offerChain = run.catch(() => undefined);
    return run;
  }

  /**
   * Whether `offer` of `bytes` more bytes would be taken now (the same checks as `offer`, nothing
   * changed): a caller holding a refused block waits for this before offering it again.
   */
  wouldTake(bytes: number): boolean {
    const s = this.activeStream();
    const size = s?.qos.key_chunk_size ?? 0;
    const all = this.pending.length + bytes;
    let n = s ? Math.floor(all / size) : 0;
    if (s) n = Math.min(n, MAX_INDEX - s.nextIndex + 1);
    if (n > 0 && this.depth + n > (this.opts.spoolMaxChunks ?? 100_000)) return false;
    return all - n * size <= (this.opts.maxPendingBytes ?? 16 << 20);
  }

  /**
   * The tag of the newest offer already in the spool (durably, with its bytes): an offer made
   * with `tag` (the node gives its block id; tags increase) is in the spool once this is ≥ tag,
   * after a crash too, so a caller replaying offers never offers the same bytes twice.
   */
  lastOfferTag(): number | undefined {
    return this.lastTag;
  }

  private async doOffer(bytes: Buffer, provenance: Provenance, tag?: number): Promise<{ keyStreamId?: string; indices: number[] }> {
    if (this.closed) throw new QkdError('DELIVERY_CLOSED', 'the delivery node is closed; offer keys to a running node');
    const nowMs = this.now();
    const s = this.activeStream();
    const all = Buffer.concat([this.pending, bytes]);
    bytes.fill(0);
    const startProv = this.pending.length ? this.pendingProv : provenance;
    const startAt = this.pending.length ? this.pendingAtMs : nowMs;
    const size = s?.qos.key_chunk_size ?? 0;
    let n = s ? Math.floor(all.length / size) : 0;
    if (s) n = Math.min(n, MAX_INDEX - s.nextIndex + 1);
    const max = this.opts.spoolMaxChunks ?? 100_000;
    if (n > 0 && this.depth + n > max) {
      all.fill(0);
      this.alarm({ code: 'DELIVERY_SPOOL_FULL', message: `spool holds ${this.depth} of ${max} chunks; ${n} more refused` });
      throw new QkdError('DELIVERY_SPOOL_FULL', `the delivery spool is full (${this.depth} of ${max} chunks ` +
        'unacknowledged); the KMS is not taking keys. Check the KMS, or raise spoolMaxChunks.');
    }
    const maxPending = this.opts.maxPendingBytes ?? 16 << 20;
    if (all.length - n * size > maxPending) {
      const have = this.pending.length;
      all.fill(0);
      this.alarm({ code: 'DELIVERY_SPOOL_FULL', message: `${have} bytes already wait for a key stream; offer refused` });
      throw new QkdError('DELIVERY_SPOOL_FULL', `${have} offered bytes wait for a key stream to open (limit ` +
        `${maxPending}); the KMS has not opened one. Check the KMS, or raise maxPendingBytes.`);
    }
    this.m.offeredBytes += bytes.length;
    const made: SpooledChunk[] = [];
    const rest: Remainder = { bytes: Buffer.from(all.subarray(n * size)), provenance: n > 0 ? provenance : startProv,
      offeredAtMs: n > 0 ? nowMs : startAt, lastTag: tag ?? this.lastTag };
    if (s && n > 0) {
      for (let i = 0; i < n; i++) {
        const index = s.nextIndex + i;
        made.push({ keyStreamId: s.keyStreamId, index, key: Buffer.from(all.subarray(i * size, (i + 1) * size)),
          provenance: i === 0 ? startProv : provenance, offeredAtMs: i === 0 ? startAt : nowMs,
          expiresAtMs: (i === 0 ? startAt : nowMs) + s.qos.ttl * 1000 });
      }
      // Order matters for a crash: batch (with the new remainder) first, then the stream table,
      // then pending.bin. On restart the newest remainder wins and nextIndex follows the batches.
      this.spool.putChunks(made, rest);
      s.nextIndex += n;
      if (s.nextIndex > MAX_INDEX) {
        s.exhausted = true;
        this.alarm({ code: 'DELIVERY_INDEX_EXHAUSTED', key_stream_id: s.keyStreamId,
          message: `stream ${s.keyStreamId} reached index ${MAX_INDEX}; indices do not wrap: the KMS must open a new stream` });
      }
      this.saveStreams();
      const st = this.stateOf(s.keyStreamId);
      for (const c of made) st.set(c.index, { chunk: c, attempts: 0, nextAtMs: 0, inFlight: false, rejected: false });
      this.m.chunksAssigned += n;
    }
    all.fill(0);
    if (rest.bytes.length !== this.pending.length || n > 0 || rest.lastTag !== this.lastTag) this.spool.putPending(rest);
    this.lastTag = rest.lastTag;
    this.pending.fill(0);
    this.pending = rest.bytes;
    this.pendingProv = rest.provenance;
    this.pendingAtMs = rest.offeredAtMs;
    this.kick();
    return { keyStreamId: s?.keyStreamId, indices: made.map((c) => c.index) };
  }

  // ---------------------------------------------------------------- push loop

  private kick(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    setImmediate(() => this.pump());
  }

  private refill(nowMs: number, maxBps: number, burstBits: number): void {
    if (this.tokensAtMs === 0) this.tokens = burstBits;
    else this.tokens = Math.min(burstBits, this.tokens + ((nowMs - this.tokensAtMs) * maxBps) / 1000);
    this.tokensAtMs = nowMs;
  }

  private pump(): void {
    if (this.closed) return;
    const maxInFlight = this.opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    const nowMs = this.now();
    let wakeAt = Infinity;
    if (nowMs < this.holdUntilMs) {
      // The KMS just failed (connection error, timeout, 5xx): hold every chunk, not only the one
      // that failed, so a down KMS sees one probe per back-off period instead of the whole spool.
      if (this.timer) clearTimeout(this.timer);
      this.timer = setTimeout(() => this.pump(), Math.max(1, this.holdUntilMs - nowMs));
      return;
    }
    for (const s of this.streams.values()) {
      if (!s.registered || s.closed) continue;
      const st = this.chunks.get(s.keyStreamId);
      if (!st || !st.size) continue;
      const bits = s.qos.key_chunk_size * 8;
      const per = this.batchSize(s);
      const limit = per > 1 ? Math.min(maxInFlight, this.opts.maxBatchesInFlight ?? DEFAULT_MAX_BATCHES_IN_FLIGHT) : maxInFlight;
      const burst = Math.max(bits * maxInFlight, s.qos.max_bps / 10);
      let batch: ChunkState[] = [];
      const send = () => {
        if (!batch.length) return;
        void (per > 1 ? this.pushBatch(s, batch) : this.push(s, batch[0]));
        batch = [];
      };
      // Maps iterate in insertion order, which is index order (chunks are appended in order).
      for (const cs of st.values()) {
        if (this.inFlight >= limit) return send();
        if (cs.inFlight || cs.rejected) continue;
        if (cs.nextAtMs > nowMs) {
          wakeAt = Math.min(wakeAt, cs.nextAtMs);
          continue;
        }
        this.refill(nowMs, s.qos.max_bps, burst);
        if (this.tokens < bits) {
          wakeAt = Math.min(wakeAt, nowMs + Math.ceil(((bits - this.tokens) * 1000) / s.qos.max_bps));
          break;
        }
        this.tokens -= bits;
        cs.inFlight = true;
        batch.push(cs);
        if (batch.length === per) send();
      }
      send();
    }
    if (wakeAt < Infinity) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = setTimeout(() => this.pump(), Math.max(1, wakeAt - this.now()));
    }
  }

  /**
   * Commits `first` and the next chunks of its stream not yet committed (index order, at most
   * COMMIT_BATCH) under one signature; returns `first`'s commitment.
   */
  private commitBatchFrom(keyStreamId: string, first: ChunkState): string {
    const batch: ChunkState[] = [];
    let started = false;
    for (const cs of this.chunks.get(keyStreamId)?.values() ?? []) {
      if (cs === first) started = true;
      if (!started || cs.commitment) continue;
      batch.push(cs);
      if (batch.length === COMMIT_BATCH) break;
    }
    if (!started) batch.push(first);
    const made = commitBatch(this.commitKey!, this.nodeId, batch.map((cs) => cs.chunk));
    batch.forEach((cs, i) => (cs.commitment = made[i]));
    return first.commitment!;
  }

  /** Chunks per request on stream `s`: what its KMS asked for, within the byte limit; 1 without batching. */
  private batchSize(s: StreamRecord): number {
    if (!s.pushBatch || s.pushBatch < 2) return 1;
    return Math.max(1, Math.min(s.pushBatch, MAX_PUSH_BATCH, Math.floor(MAX_PUSH_BATCH_BYTES / s.qos.key_chunk_size)));
  }

  /** The key-material body of a chunk (its commitment made if not yet); counts the push. */
  private keyMaterialBody(cs: ChunkState): KeyMaterial {
    cs.inFlight = true;
    cs.attempts++;
    const { chunk } = cs;
    const buffer: KeyProvenanceBuffer = { ...chunk.provenance, key_stream_id: chunk.keyStreamId, index: chunk.index,
      node_id: this.nodeId, offered_at_ms: chunk.offeredAtMs, pushed_at_ms: this.now() };
    if (this.commitKey) buffer.commitment = cs.commitment ?? this.commitBatchFrom(chunk.keyStreamId, cs);
    this.m.pushed++;
    this.emit('pushed', { key_stream_id: chunk.keyStreamId, index: chunk.index, attempt: cs.attempts });
    return { status: STATUS.OK, index: chunk.index, key_buffer: chunk.key.toString('base64'),
      metadata: { size: JSON.stringify(buffer).length, buffer } };
  }

  /** What an answer to one chunk's push means for it. */
  private static outcomeOf(http: number, message: unknown): { outcome: Outcome; reason: string } {
    if (http === 201) return { outcome: 'ack', reason: '' };
    if (http >= 400 && http < 500) return { outcome: 'reject', reason: typeof message === 'string' ? message : '' };
    return { outcome: 'retry', reason: `HTTP ${http}` };
  }

  private async push(s: StreamRecord, cs: ChunkState): Promise<void> {
    const body = this.keyMaterialBody(cs);
    this.inFlight++;
    const t0 = performance.now();
    let outcome: Outcome = 'retry';
    let reason = '';
    let httpStatus: number | undefined;
    try {
      const r = await this.client.request('POST', '/api/v1/qkd/etsi004/key-material', body,
        this.opts.requestTimeoutMs ?? 5000);
      httpStatus = r.status;
      ({ outcome, reason } = DeliveryNode.outcomeOf(r.status, r.body?.message));
    } catch (err) {
      reason = (err as QkdError).code ?? 'error';
    } finally {
      body.key_buffer = '';
      this.inFlight--;
      cs.inFlight = false;
    }
    this.settle(cs, outcome, httpStatus, reason, t0);
    this.kick();
  }

  /**
   * Pushes `batch` (chunks of stream `s` in index order) in one request to KEY_MATERIAL_BATCH; each
   * chunk is then settled with its own result, exactly as if pushed alone. The whole request
   * failing (timeout, connection, 5xx) retries every chunk; a KMS that does not serve the path
   * (404/405) turns batching off for the stream and the chunks go again one by one at once.
   */
  private async pushBatch(s: StreamRecord, batch: ChunkState[]): Promise<void> {
    const items = batch.map((cs) => this.keyMaterialBody(cs));
    this.inFlight++;
    const t0 = performance.now();
    let results: unknown[] | undefined;
    let whole: { outcome: Outcome | 'unbatch'; reason: string; http?: number } = { outcome: 'retry', reason: '' };
    try {
      const r = await this.client.request('POST', KEY_MATERIAL_BATCH, { items }, this.opts.requestTimeoutMs ?? 5000);
      const res = r.body?.results;
      if (r.status === 201 && Array.isArray(res) && res.length === items.length) results = res;
      else if (r.status === 404 || r.status === 405) whole = { outcome: 'unbatch', reason: '', http: r.status };
      else if (r.status === 201) whole = { outcome: 'retry', reason: 'batch answer without one result per chunk', http: r.status };
      else whole = { ...DeliveryNode.outcomeOf(r.status, r.body?.message), http: r.status };
    } catch (err) {
      whole.reason = (err as QkdError).code ?? 'error';
    } finally {
      for (const it of items) it.key_buffer = '';
      this.inFlight--;
      for (const cs of batch) cs.inFlight = false;
    }
    if (whole.outcome === 'unbatch') {
      delete s.pushBatch;
      this.saveStreams();
      for (const cs of batch) cs.attempts--;
      this.alarm({ code: 'KMS_NO_BATCH', key_stream_id: s.keyStreamId, httpStatus: whole.http, message: `the KMS asked for ` +
        `batched pushes but answered HTTP ${whole.http} on ${KEY_MATERIAL_BATCH}; pushing one chunk per request` });
    } else {
      batch.forEach((cs, i) => {
        const r = results?.[i] as { index?: unknown; http?: unknown; message?: unknown } | undefined;
        if (!results) return this.settle(cs, whole.outcome as Outcome, whole.http, whole.reason, t0);
        if (!r || r.index !== cs.chunk.index || typeof r.http !== 'number') {
          return this.settle(cs, 'retry', undefined, 'batch answer out of order', t0);
        }
        const o = DeliveryNode.outcomeOf(r.http, r.message);
        this.settle(cs, o.outcome, r.http, o.reason, t0);
      });
    }
    this.kick();
  }

  /** Acknowledged: zeroised and forgotten; refused: parked; else retried after a back-off. */
  private settle(cs: ChunkState, outcome: Outcome, httpStatus: number | undefined, reason: string, t0: number): void {
    const { chunk } = cs;
    const st = this.chunks.get(chunk.keyStreamId);
    if (outcome === 'ack') {
      const ms = performance.now() - t0;
      this.lat.push(ms);
      this.m.acked++;
      this.windowBits += chunk.key.length * 8;
      st?.delete(chunk.index);
      this.spool.removeChunk(chunk.keyStreamId, chunk.index);
      chunk.key.fill(0);
      this.emit('acked', { key_stream_id: chunk.keyStreamId, index: chunk.index, attempts: cs.attempts, latencyMs: ms });
    } else if (outcome === 'reject') {
      cs.rejected = true;
      this.m.rejected++;
      this.alarm({ code: httpStatus === 409 ? 'KMS_CONFLICT' : 'KMS_REJECTED', key_stream_id: chunk.keyStreamId,
        index: chunk.index, httpStatus, message: `the KMS refused index ${chunk.index} of stream ${chunk.keyStreamId} ` +
          `with HTTP ${httpStatus}${reason ? ` (${reason})` : ''}; the chunk is parked until its TTL, not re-sent` });
    } else if (!this.closed) {
      const { baseMs = 100, maxMs = 10_000 } = this.opts.retry ?? {};
      const cap = Math.min(maxMs, baseMs * 2 ** Math.min(20, cs.attempts - 1));
      const delay = Math.round(cap / 2 + (this.random() * cap) / 2);
      cs.nextAtMs = this.now() + delay;
      this.holdUntilMs = Math.max(this.holdUntilMs, cs.nextAtMs);
      this.m.retries++;
      this.emit('retry', { key_stream_id: chunk.keyStreamId, index: chunk.index, attempt: cs.attempts, delayMs: delay,
        reason });
    }
  }

  // ---------------------------------------------------------------- TTL and rate

  /** Zeroises chunks whose TTL passed and reports them by index range. Runs every second too. */
  sweepExpired(): void {
    const nowMs = this.now();
    for (const [sid, st] of this.chunks) {
      const gone: number[] = [];
      for (const cs of st.values()) {
        if (!cs.inFlight && cs.chunk.expiresAtMs <= nowMs) gone.push(cs.chunk.index);
      }
      if (!gone.length) continue;
      for (const i of gone) {
        const cs = st.get(i)!;
        cs.chunk.key.fill(0);
        st.delete(i);
        this.spool.removeChunk(sid, i);
      }
      this.m.expired += gone.length;
      const ranges = indexRanges(gone);
      this.emit('expired', { key_stream_id: sid, ranges, count: gone.length });
      this.alarm({ code: 'KEYS_EXPIRED', key_stream_id: sid, ranges, message: `${gone.length} unacknowledged ` +
        `chunk(s) of stream ${sid} passed their TTL and were zeroised: indices ${ranges}` });
    }
  }

  private checkRate(): void {
    const nowMs = this.now();
    const win = this.opts.rateWindowMs ?? 5000;
    if (nowMs - this.windowStartMs < win) return;
    const bps = (this.windowBits * 1000) / (nowMs - this.windowStartMs);
    this.m.deliveredBpsLastWindow = bps;
    this.windowBits = 0;
    this.windowStartMs = nowMs;
    for (const s of this.streams.values()) {
      if (s.registered && !s.closed && s.qos.min_bps > 0 && bps < s.qos.min_bps) {
        this.m.belowMinBps++;
        this.alarm({ code: 'BELOW_MIN_BPS', key_stream_id: s.keyStreamId, message: `stream ${s.keyStreamId} ` +
          `delivered ${Math.round(bps)} bit/s over the last ${win} ms, below its min_bps ${s.qos.min_bps}` });
      }
    }
  }

  metrics(): DeliveryMetrics {
    return { ...this.m, spoolDepth: this.depth, pendingBytes: this.pending.length,
      ackLatencyMs: percentiles(this.lat.values()) };
  }

  // ---------------------------------------------------------------- 004 server

  private negotiate(req: QosRequest | null | undefined): { qos: Qos; changed: boolean } {
    const q: Qos = { ...this.defaults };
    let changed = false;
    const r = req ?? {};
    for (const f of QOS_FIELDS) {
      const v = r[f];
      if (v === null || v === undefined) continue;
      if (f === 'metadata_mimetype') {
        if (v !== 'application/json') changed = true;
        continue;
      }
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_INDEX) {
        changed = true;
        continue;
      }
      (q as unknown as Record<string, number>)[f] = v;
    }
    const clamp = (f: 'key_chunk_size' | 'max_bps' | 'min_bps' | 'ttl', lo: number, hi: number) => {
      const v = Math.min(hi, Math.max(lo, q[f]));
      if (v !== q[f]) changed = true;
      q[f] = v;
    };
    clamp('key_chunk_size', this.caps.minChunkBytes, this.caps.maxChunkBytes);
    clamp('max_bps', q.key_chunk_size * 8, this.caps.maxBps);
    clamp('min_bps', 0, q.max_bps);
    clamp('ttl', 1, this.caps.maxTtlS);
    return { qos: q, changed };
  }

  private async handle(req: Req): Promise<Res> {
    const allowed = [this.opts.kms.id];
    if (req.clientId !== null && !allowed.includes(req.clientId)) {
      return { status: 403, body: { status: STATUS.NO_QKD_CONNECTION, message: `client '${req.clientId}' is not the ` +
        'KMS this node is bound to' } };
    }
    const p = req.path;
    if (p === '/api/v1/kms/etsi004/open-connect' && req.method === 'POST') return this.openConnect(req.body);
    if (p === '/api/v1/kms/etsi004/get-key' && (req.method === 'GET' || req.method === 'POST')) {
      const b = (req.body && typeof req.body === 'object' ? req.body : {}) as Record<string, unknown>;
      const q = req.query;
      const merged: Record<string, unknown> = { ...b };
      if (merged.key_stream_id === undefined && q.has('key_stream_id')) merged.key_stream_id = q.get('key_stream_id');
      if (merged.index === undefined && q.has('index')) merged.index = Number(q.get('index'));
      if (merged.metadata === undefined && q.has('metadata')) {
        try {
          merged.metadata = JSON.parse(q.get('metadata')!);
        } catch {
          return { status: 400, body: { status: STATUS.METADATA_TOO_SMALL, message: 'metadata query parameter is not JSON' } };
        }
      }
      return this.getKey(merged);
    }
    if (p === '/api/v1/kms/etsi004/close' && (req.method === 'PUT' || req.method === 'POST')) {
      const b = (req.body ?? {}) as Record<string, unknown>;
      return this.closeStream(b.key_stream_id ?? req.query.get('key_stream_id'));
    }
    // Not an ETSI 004 call at all: no ETSI status (0 would read as success).
    return { status: 404, body: { message: `no route ${req.method} ${p}` } };
  }

  private async openConnect(body: unknown): Promise<Res> {
    if (!body || typeof body !== 'object') {
      return { status: 400, body: { status: STATUS.NO_QKD_CONNECTION, message: 'open-connect needs a JSON body' } };
    }
    const b = body as { source?: unknown; destination?: unknown; key_stream_id?: unknown; qos?: QosRequest | null };
    const src = nodeName(b.source);
    const dst = nodeName(b.destination);
    const wantSrc = this.role === 'source' ? this.nodeId : this.opts.peer.nodeId;
    const wantDst = this.role === 'source' ? this.opts.peer.nodeId : this.nodeId;
    const { qos, changed } = this.negotiate(b.qos);
    const fail = (http: number, status: number, message: string) =>
      ({ status: http, body: { key_stream_id: null, qos, status, message } });
    if (src !== wantSrc || dst !== wantDst) {
      // Status 1 ("peer not connected") is a success status in ETSI 004: a pair this node does not
      // link has no QKD connection here (4).
      return fail(400, STATUS.NO_QKD_CONNECTION, `this ${this.role} node links ${wantSrc} -> ${wantDst}; ` +
        `the request named ${src || '?'} -> ${dst || '?'}`);
    }
    if (this.opts.peer.linkUp && !this.opts.peer.linkUp()) {
      return fail(500, STATUS.NO_QKD_CONNECTION, `no QKD connection to ${this.opts.peer.nodeId} at the moment`);
    }
    let sid = b.key_stream_id;
    if (sid !== undefined && sid !== null && !isUuid(sid)) {
      return fail(400, STATUS.KSID_IN_USE, 'key_stream_id must be a UUID');
    }
    if (sid === undefined || sid === null) {
      if (this.role === 'destination') {
        return fail(400, STATUS.KSID_IN_USE, 'the destination node is opened with the key_stream_id the ' +
          'source side assigned; open the source node first and pass its id');
      }
      sid = randomUUID();
    }
    const id = String(sid).toLowerCase();
    const existing = this.streams.get(id);
    if (existing) {
      if (existing.source !== src || existing.destination !== dst || existing.closed) {
        return fail(400, STATUS.KSID_IN_USE, `key_stream_id ${id} is already in use`);
      }
      return { status: 201, body: { key_stream_id: id, qos: existing.qos, status: STATUS.OK } };
    }
    if (changed) {
      return { status: 201, body: { key_stream_id: null, qos, status: STATUS.QOS_COUNTER_PROPOSAL,
        message: 'the requested QoS cannot be honoured; this counter-proposal can' } };
    }
    this.streams.set(id, { keyStreamId: id, source: src, destination: dst, qos, nextIndex: 0, registered: false,
      startIndex: 0, closed: false, exhausted: false });
    this.saveStreams();
    // Bytes offered while no stream was open go to this one now.
    if (this.pending.length >= qos.key_chunk_size) await this.offer(Buffer.alloc(0), this.pendingProv);
    return { status: 201, body: { key_stream_id: id, qos, status: STATUS.OK } };
  }

  private async getKey(b: Record<string, unknown>): Promise<Res> {
    const id = typeof b.key_stream_id === 'string' ? b.key_stream_id.toLowerCase() : '';
    const s = this.streams.get(id);
    if (!s || s.closed) {
      return { status: 404, body: { status: STATUS.NO_QKD_CONNECTION, message: `no open key stream '${id}' on this node` } };
    }
    if (this.opts.peer.linkUp && !this.opts.peer.linkUp()) {
      return { status: 500, body: { status: STATUS.NO_QKD_CONNECTION, message: `no QKD connection to ${this.opts.peer.nodeId}` } };
    }
    const index = b.index === undefined || b.index === null ? 0 : b.index;
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index > MAX_INDEX) {
      return { status: 400, body: { status: STATUS.INSUFFICIENT_KEY, message: 'index must be an integer 0..2^32-1' } };
    }
    const held = this.chunks.get(id);
    const lowest = held && held.size ? Math.min(...held.keys()) : s.nextIndex;
    if (index < lowest && index < s.nextIndex) {
      return { status: 500, body: { status: STATUS.INSUFFICIENT_KEY, message: `keys below index ${lowest} of stream ` +
        `${id} are no longer available here (acknowledged or expired)` } };
    }
    const meta = { key_stream_id: id, node_id: this.nodeId, key_chunk_size: s.qos.key_chunk_size, next_index: s.nextIndex };
    const metaLen = JSON.stringify(meta).length;
    if (b.metadata !== undefined) {
      const size = (b.metadata as { size?: unknown })?.size;
      if (typeof size !== 'number' || size < metaLen) {
        return { status: 400, body: { status: STATUS.METADATA_TOO_SMALL, metadata: { size: metaLen, buffer: {} },
          message: `metadata buffer too small: need ${metaLen} characters` } };
      }
    }
    if (this.opts.peer.streamOpened) {
      const deadline = this.now() + s.qos.timeout;
      let open = await this.opts.peer.streamOpened(id);
      if (!open && s.qos.timeout === 0) {
        return { status: 400, body: { status: STATUS.PEER_APP_NOT_CONNECTED, message: `the peer node has not opened ` +
          `stream ${id} yet` } };
      }
      while (!open && this.now() < deadline && !this.closed) {
        await new Promise((r) => setTimeout(r, Math.min(50, s.qos.timeout)));
        open = await this.opts.peer.streamOpened(id);
      }
      if (!open) {
        return { status: 500, body: { status: STATUS.TIMEOUT, message: `the peer node did not open stream ${id} ` +
          `within ${s.qos.timeout} ms` } };
      }
    }
    s.registered = true;
    s.startIndex = index;
    // Our extension: the KMS serves KEY_MATERIAL_BATCH and takes up to this many chunks per request.
    const pb = b.push_batch;
    if (typeof pb === 'number' && Number.isInteger(pb) && pb >= 2) s.pushBatch = Math.min(pb, MAX_PUSH_BATCH);
    else delete s.pushBatch;
    this.saveStreams();
    this.kick();
    return { status: 205, body: b.metadata !== undefined ? { status: STATUS.OK, metadata: { size: metaLen, buffer: meta } }
      : { status: STATUS.OK } };
  }

  private closeStream(sidRaw: unknown): Res {
    const id = typeof sidRaw === 'string' ? sidRaw.toLowerCase() : '';
    const s = this.streams.get(id);
    if (!s || s.closed) {
      return { status: 404, body: { status: STATUS.NO_QKD_CONNECTION, message: `no open key stream '${id}' on this node` } };
    }
    s.closed = true;
    s.registered = false;
    const st = this.chunks.get(id);
    if (st && st.size) {
      const idx = [...st.keys()];
      for (const cs of st.values()) {
        cs.chunk.key.fill(0);
        this.spool.removeChunk(id, cs.chunk.index);
      }
      this.chunks.delete(id);
      this.m.dropped += idx.length;
      this.alarm({ code: 'DROPPED_ON_CLOSE', key_stream_id: id, ranges: indexRanges(idx), message: `stream ${id} ` +
        `closed with ${idx.length} undelivered chunk(s); zeroised: indices ${indexRanges(idx)}` });
    }
    this.saveStreams();
    return { status: 204, headers: { 'etsi-status': String(STATUS.OK) } };
  }

  /** Stops serving and pushing. Unacknowledged chunks stay sealed in the spool for the next start. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.offerChain;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.sweeper) clearInterval(this.sweeper);
    await this.server?.close();
    this.client.close();
    for (const st of this.chunks.values()) for (const cs of st.values()) cs.chunk.key.fill(0);
    this.pending.fill(0);
    this.spool.destroy();
  }
}

/** Creates and starts a delivery node. */
export async function startDeliveryNode(opts: DeliveryNodeOptions): Promise<DeliveryNode> {
  const n = new DeliveryNode(opts);
  await n.start();
  return n;
}
