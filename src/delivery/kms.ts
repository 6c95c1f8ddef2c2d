/**
 * The reference KMS: the real peer of the node's ETSI 004 push client, and the ETSI GS QKD 014
 * server for applications (SAEs).
 *
 * - Southbound (its node): opens streams (open-connect, get-key, close), receives
 *   `POST /api/v1/qkd/etsi004/key-material`, validates it, stores it durably (native/store: SQLite
 *   WAL + synchronous=FULL, keys AES-256-GCM-wrapped) and only then answers 201. Same bytes again
 *   → 201 without a second copy; different bytes under a used index → 409 and a security alarm;
 *   store full → 503 (the node keeps the chunk and retries).
 * - KMS↔KMS (`/api/v1/kms-peer/...`, mutual TLS, the peer bound to its configured identity): the
 *   source-side KMS opens its node, hands the key_stream_id to the peer KMS, which opens the
 *   destination node with it. Before a key is released the two reserve it together, comparing
 *   SHA-256 digests (never keys); a digest mismatch is a security alarm and the key is not released.
 * - Northbound ETSI 014 (`/api/v1/keys/{SAE_ID}/status|enc_keys|dec_keys`): the client
 *   certificate CN is the SAE id; key_IDs are UUIDv8 of (key_stream_id, index), derived alike by
 *   both KMSs; sizes in bits; a key is handed out once and erased in the same transaction.
 *
 * - Custody (docs/delivery.md, "Custody"): with `custody` the KMS starts **sealed**: every key
 *   request (ETSI 014, 004 key-material, KMS↔KMS) is answered 503 "KMS sealed: run qkd kms unseal"
 *   — the node keeps its chunks spooled and retries — until K of the N custodians' Shamir shares
 *   have reconstructed the master key (`unseal`, over the admin socket). The KEK is in a software
 *   keystore or a PKCS#11 token; `rotateKek` re-wraps every stored key while requests go on; TTL
 *   expiry is preceded by a KEYS_EXPIRING alarm (`expiryWarningMs`). With `wrapKey` instead
 *   (development keystore) it starts unsealed.
 *
 * Events: 'alarm' (Alarm), 'log' ({level, msg, ...}), 'unsealed'; none carries key bytes. Metrics
 * are plain numbers (`metrics()`).
 */
import { EventEmitter } from 'node:events';
import type { KeyObject } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { ConfigError, ProtocolError, QkdError } from '../errors.ts';
import { JsonClient, percentiles, Recent, startServer, type Endpoint, type Req, type Res, type Server,
  type TlsConfig } from './http.ts';
import { deriveKeyId } from './keyid.ts';
import { checkCommitment, keyDigest, verifyingKey } from './commitment.ts';
import { parseKeyIds, parseKeyRequest, Refusal, type KeyRequest, type Limits } from './etsi014.ts';
import { chunksNeeded, planKeys, type ReformatPlan } from './reformat.ts';
import { AppSessions, type AppOptions } from './etsi004-app.ts';
import { Hybrid, worstEpsilon, type HybridConfig, type QkdOutcome } from './hybrid.ts';
import { indexRanges, type Alarm } from './node.ts';
import { startAdmin, type AdminServer } from './admin.ts';
import { digestOf, KeyStore, probeToken, Unsealer, type TokenConfig, type UnsealProgress } from './store.ts';
import { KEY_MATERIAL_BATCH, MAX_INDEX, MAX_PUSH_BATCH, STATUS, isUuid, metadataBuffer, nodeName, type Qos, type QosRequest } from './types.ts';

export interface KmsOptions {
  /** This KMS's identity (its certificate CN); also its KME id in ETSI 014 answers. */
  id: string;
  /** 'source': opens the link's streams; 'destination': opens its node with the id the peer sends. */
  role: 'source' | 'destination';
  listen?: { host?: string; port?: number };
  tls?: TlsConfig;
  insecure?: boolean;
  /** SQLite database file (WAL files sit beside it); a `.streams.json` beside it holds stream ids. */
  dbPath: string;
  /** Where the keys are instead of dbPath: a postgres:// URL (or another SQLite path). See store.ts. */
  database?: string;
  /**
   * Development keystore: the 32-byte wrapKeyFile; the KMS starts unsealed. Exclusive with
   * `custody`.
   */
  wrapKey?: Uint8Array;
  /**
   * Keystore file: KEK generations (made by `qkd kms init` with custody; by rotation with a
   * development keystore). Default `<dbPath>.keystore`.
   */
  keystoreFile?: string;
  /**
   * Custody by shares: the KMS starts sealed until `unseal` has K valid shares. `kind` must match
   * the keystore `qkd kms init` made; `token` and `pin` for a PKCS#11 keystore (checked at
   * start-up). Shares given are forgotten if K do not arrive within `unsealTimeoutMs` (10 min).
   */
  custody?: { kind: 'software' | 'pkcs11'; token?: TokenConfig; pin?: Uint8Array; unsealTimeoutMs?: number };
  /** Unix socket (0600) of the local admin endpoint (status, unseal, rotate-kek); none if unset. */
  adminSocket?: string;
  /** Keys re-wrapped per transaction during a KEK rotation (default 256); requests are served between. */
  rotationBatch?: number;
  /** Alarm KEYS_EXPIRING this long before a held key's TTL ends (default 300 000 ms). */
  expiryWarningMs?: number;
  /** Most keys held at once (503 beyond). */
  capacity?: number;
  /** Our node: its 004 server URL and identity (the node id; it pushes to us with that CN). */
  node: Endpoint;
  /** The peer node's id (the destination of our streams when we are the source side). */
  peerNodeId: string;
  /** The peer KMS. */
  peer?: Endpoint;
  /** SAE ids served here (local) and at the peer KMS (remote). */
  saes: { local: string[]; remote: string[] };
  /** QoS requested at open-connect (null fields: the node chooses). */
  qos?: QosRequest;
  maxKeysPerRequest?: number;
  /** Largest ETSI 014 key size in bits (default the larger of the chunk size and 4096). */
  maxKeySizeBits?: number;
  /**
   * Ed25519 public keys (PEM) of our node and the peer node (commitment.ts). With them, every
   * push must carry our node's valid commitment, and a key is released only when the peer node's
   * commitment over the same digest checks out: both nodes produced it.
   */
  commitments?: { node: string | Buffer; peerNode: string | Buffer };
  /**
   * Storage thresholds per SAE pair: keys available to the pair (held, unreserved, unexpired, at
   * its security level) are compared with the watermarks every expiry tick; crossing below
   * `lowKeys` raises KEYS_LOW, above `highKeys` KEYS_HIGH, back between them KEYS_LEVEL_OK (one
   * alarm per crossing). `maxEpsilon` is the pair's level (only keys with ε at most that count).
   */
  watermarks?: { master: string; slave: string; lowKeys: number; highKeys: number; maxEpsilon?: number }[];
  /** Most SAEs in `additional_slave_SAE_IDs` (multicast; ETSI 014 max_SAE_ID_count, default 8). */
  maxSaeIdCount?: number;
  /**
   * Keys each SAE may take per second (enc_keys and dec_keys together), with a burst allowance:
   * one application cannot drain the link's whole store. Beyond it: 429 with Retry-After.
   * `keysPerSecond: 0` turns the limit off. Default 500 keys/s, burst 2 048.
   */
  rateLimit?: { keysPerSecond: number; burst: number };
  /**
   * Hybrid fallback per SAE pair (hybrid.ts): `{"saeA->saeB": "when-short", "default": "never"}`;
   * policies never | when-short | always. Off (never) without it.
   */
  hybrid?: HybridConfig;
  /**
   * The link's key rate (bit/s) that ETSI 004 application streams share: the sum of their
   * admitted min_bps never exceeds it. Without it, the measured inflow of key material.
   */
  linkKeyRateBps?: number;
  /** ETSI 004 for applications (etsi004-app.ts): largest key_chunk_size, reservation ahead. */
  qkd004?: Pick<AppOptions, 'maxKeyBytes' | 'reserveS' | 'inflowWindowMs' | 'prefetchGroups' | 'maxStreamsPerSae'>;
  /**
   * Most chunks per push the node may batch into one request (our extension, asked for in
   * get-key; default 64, at most MAX_PUSH_BATCH). 0 or 1: one request per chunk, the plain push
   * mode (for a node that refuses unknown get-key fields).
   */
  pushBatch?: number;
  /** How often TTL expiry runs (ms). */
  expireEveryMs?: number;
  requestTimeoutMs?: number;
  now?: () => number;
}

interface KmsStream {
  keyStreamId: string;
  source: string;
  destination: string;
  nodeId: string;
  qos: Qos;
}

export interface KmsMetrics {
  pushed: number;
  acked: number;
  duplicates: number;
  conflicts: number;
  full: number;
  rejected: number;
  dropped: number;
  delivered: number;
  held: number;
  reserved: number;
  ackLatencyMs: { p50: number; p90: number; p99: number; count: number };
  /** 1 while sealed (no key served or accepted), else 0. */
  sealed: number;
  /** Requests answered 503 because the KMS was sealed. */
  refusedSealed: number;
  /** Per SAE pair `master>slave` with watermarks: keys available to it and where that stands. */
  watermarks: Record<string, { availableKeys: number; lowKeys: number; highKeys: number; state: WatermarkState }>;
  /** ETSI 004 application streams: counts, admitted min_bps, link capacity and measured inflow (bit/s). */
  qkd004: ReturnType<AppSessions['metrics']>;
  /** Hybrid fallback (when configured): ML-KEM exchanges, keys made with and without QKD key, refusals. */
  hybrid?: ReturnType<Hybrid['metrics']>;
}

export type WatermarkState = 'low' | 'ok' | 'high';

const DEFAULT_RATE = { keysPerSecond: 500, burst: 2048 };
/**
 * Chunks per batched push asked of the node (KmsOptions.pushBatch). One request per 32-byte chunk
 * cost ~150 us of CPU (node + KMS, TLS, HTTP, JSON): ~4 500 chunks/s, 1.2 Mbit/s of key on two
 * cores. docs/delivery.md, "Batched pushes", has the figures with batches.
 */
const DEFAULT_PUSH_BATCH = 64;

const B64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

export class Kms extends EventEmitter {
  readonly id: string;
  url = '';
  private server?: Server;
  private readonly opts: KmsOptions;
  /** Undefined while sealed. */
  private store?: KeyStore;
  private unsealer?: Unsealer;
  private unsealTimer?: NodeJS.Timeout;
  private rotating?: Promise<unknown>;
  private admin?: AdminServer;
  private readonly nodeClient: JsonClient;
  private readonly commitKeys?: { node: KeyObject; peerNode: KeyObject };
  private readonly peerClient?: JsonClient;
  private readonly hybrid?: Hybrid;
  /** ETSI 004 application streams (northbound). */
  readonly apps: AppSessions;
  private readonly streams = new Map<string, KmsStream>();
  /** A stream opened on our node whose peer side or registration has not succeeded yet. */
  private unconfirmedStreamId?: string;
  private readonly now: () => number;
  private expirer?: NodeJS.Timeout;
  private encChain: Promise<unknown> = Promise.resolve();
  private readonly lat = new Recent();
  /** Token bucket per SAE: keys it may still take now, refilled at rateLimit.keysPerSecond. */
  private readonly buckets = new Map<string, { tokens: number; atMs: number }>();
  private readonly levels = new Map<string, { availableKeys: number; state: WatermarkState }>();
  private readonly m = { pushed: 0, acked: 0, duplicates: 0, conflicts: 0, full: 0, rejected: 0, dropped: 0,
    delivered: 0, refusedSealed: 0 };

  constructor(opts: KmsOptions) {
    super();
    this.opts = opts;
    this.id = opts.id;
    this.now = opts.now ?? Date.now;
    const ksFile = opts.keystoreFile ?? `${opts.dbPath}.keystore`;
    if (opts.custody) {
      if (opts.wrapKey) throw new ConfigError('KMS_CUSTODY', 'give either wrapKey (development) or custody, not both');
      // Refuses a missing keystore (run init), a development keystore, and a kind mismatch.
      this.unsealer = Unsealer.load(ksFile);
      const st = this.unsealer.status();
      if (st.kind !== opts.custody.kind) {
        throw new ConfigError('KMS_CUSTODY', `keystore ${ksFile} is a ${st.kind} keystore but the configuration says ` +
          `custody.keystore "${opts.custody.kind}"`);
      }
      // A missing token, wrong PIN or missing KEK is a start-up error, not a surprise at unseal.
      if (opts.custody.kind === 'pkcs11') {
        if (!opts.custody.token) throw new ConfigError('KMS_CUSTODY', 'custody.pkcs11 is required for a PKCS#11 keystore');
        probeToken(ksFile, opts.custody.token, opts.custody.pin);
      }
    } else {
      if (!opts.wrapKey || opts.wrapKey.length !== 32) {
        throw new ConfigError('KMS_WRAP_KEY', `wrapKey must be 32 bytes (AES-256), got ${opts.wrapKey?.length ?? 'none'}; ` +
          'or configure custody');
      }
      this.store = KeyStore.open(opts.database ?? opts.dbPath, opts.wrapKey, opts.capacity ?? 1_000_000, ksFile);
    }
    this.nodeClient = new JsonClient(opts.node, opts);
    if (opts.commitments) {
      this.commitKeys = { node: verifyingKey(opts.commitments.node, `node ${opts.node.id}`),
        peerNode: verifyingKey(opts.commitments.peerNode, `node ${opts.peerNodeId}`) };
    }
    if (opts.peer) this.peerClient = new JsonClient(opts.peer, opts);
    if (opts.hybrid) {
      this.hybrid = new Hybrid(opts.hybrid, { id: opts.id, peerId: opts.peer?.id, peer: this.peerClient, saes: opts.saes,
        dbPath: opts.dbPath, store: () => this.unsealedStore(), now: () => this.now(), log: (l, m, f) => this.log(l, m, f) });
    }
    this.apps = new AppSessions({ id: opts.id, coordinator: opts.role === 'source', saes: opts.saes,
      store: () => this.unsealedStore(), peer: this.peerClient, now: () => this.now(), storedChunks: () => this.m.acked,
      log: (l, m, f) => this.log(l, m, f),
      linkStream: () => {
        const s = [...this.streams.values()].pop();
        return s && { keyStreamId: s.keyStreamId, chunkBytes: s.qos.key_chunk_size };
      },
      ownCommitments: (sid, indices) => this.commitKeys ? indices.map((i) => this.commitmentOf(sid, i)) : undefined,
      badPeerCommitments: (sid, items, c) => this.uncommitted(sid, items, c),
      mismatches: (sid, items) => this.mismatches(sid, items),
    }, { ...opts.qkd004, linkKeyRateBps: opts.linkKeyRateBps, requestTimeoutMs: opts.requestTimeoutMs,
      stateFile: `${opts.dbPath}.qkd004.json` });
    const sf = `${opts.dbPath}.streams.json`;
    if (existsSync(sf)) {
      for (const s of JSON.parse(readFileSync(sf, 'utf8')) as KmsStream[]) this.streams.set(s.keyStreamId, s);
    }
  }

  private saveStreams(): void {
    const sf = `${this.opts.dbPath}.streams.json`;
    writeFileSync(`${sf}.tmp`, JSON.stringify([...this.streams.values()]));
    renameSync(`${sf}.tmp`, sf);
  }

  async start(): Promise<void> {
    this.server = await startServer({ ...this.opts, host: this.opts.listen?.host, port: this.opts.listen?.port,
      name: `KMS ${this.id}` }, (r) => this.handle(r), (err) => this.log('error', 'request handler failed',
      { code: (err as QkdError)?.code, error: (err as Error)?.message }));
    this.url = this.server.url;
    this.expirer = setInterval(() => this.expireNow(), this.opts.expireEveryMs ?? 1000);
    this.expirer.unref();
    if (this.opts.adminSocket) {
      try {
        this.admin = await startAdmin(this, this.opts.adminSocket);
      } catch (err) {
        const msg = `cannot open the admin socket ${this.opts.adminSocket}: ${(err as Error).message}` +
          ' (a Unix socket path must be under 108 bytes; set custody.adminSocket to a shorter one)';
        // Sealed without it nobody could unseal: fail at start-up. A development KMS runs on.
        if (this.opts.custody) {
          await this.server?.close();
          throw new ConfigError('KMS_ADMIN_SOCKET', msg, { cause: err });
        }
        this.log('warn', msg);
      }
    }
  }

  // ------------------------------------------------------------- custody

  /** True until K valid shares have unsealed the KMS (never with a development keystore). */
  get sealed(): boolean {
    return !this.store;
  }

  /** Progress of unsealing (no share material). */
  sealStatus(): { sealed: boolean; have: number; threshold: number; shares: number; kind: string; custody?: string } {
    if (this.store) return { sealed: false, have: 0, threshold: 0, shares: 0, kind: this.opts.custody?.kind ?? 'software',
      custody: this.store.custody() };
    return { sealed: true, ...this.unsealer!.status() };
  }

  /**
   * Gives share(s) to a sealed KMS: `text` holds share lines (a share file's content); it is
   * zeroed. Fewer than K: stays sealed (progress returned). K valid: unseals. A malformed,
   * damaged or foreign share is refused (SecurityError STORE_SEAL, nothing kept from this call);
   * K shares that do not reconstruct the master key are refused and every share given so far is
   * forgotten. Nothing about a share or the key is ever revealed.
   */
  unseal(text: Buffer): UnsealProgress & { sealed: boolean } {
    if (this.store) {
      text.fill(0);
      return { sealed: false, accepted: 0, have: 0, threshold: 0, shares: 0, kind: this.opts.custody?.kind ?? 'software' };
    }
    const u = this.unsealer!;
    let p: UnsealProgress;
    try {
      p = u.add(text);
    } catch (err) {
      this.log('warn', 'unseal: share refused', { code: (err as QkdError).code, error: (err as Error).message });
      throw err;
    }
    if (p.have < p.threshold) {
      if (p.accepted && !this.unsealTimer) {
        this.unsealTimer = setTimeout(() => {
          this.unsealTimer = undefined;
          if (!this.store) {
            u.reset();
            this.log('warn', 'unseal: shares given were forgotten (the threshold was not reached in time)');
          }
        }, this.opts.custody?.unsealTimeoutMs ?? 600_000);
        this.unsealTimer.unref();
      }
      this.log('info', `unseal: ${p.have} of ${p.threshold} shares`, { have: p.have, threshold: p.threshold });
      return { ...p, sealed: true };
    }
    clearTimeout(this.unsealTimer);
    this.unsealTimer = undefined;
    try {
      this.store = u.openStore(this.opts.database ?? this.opts.dbPath, this.opts.capacity ?? 1_000_000, this.opts.custody?.token,
        this.opts.custody?.pin);
    } catch (err) {
      this.log('error', 'unseal refused', { code: (err as QkdError).code, error: (err as Error).message });
      throw err;
    }
    this.unsealer = undefined;
    this.opts.custody?.pin?.fill(0); // the token session stays logged in; the PIN is not needed again
    this.log('info', 'KMS unsealed', { custody: this.store.custody() });
    this.emit('unsealed');
    return { ...p, sealed: false };
  }

  /**
   * Re-wraps every stored key under a new KEK (or finishes an interrupted rotation) while the KMS
   * keeps serving: batches of `batch` keys per transaction, requests in between. Old KEKs are
   * destroyed at the end. One rotation at a time.
   */
  async rotateKek(batch = this.opts.rotationBatch ?? 256): Promise<{ active: number; rewrapped: number; retired: number[]; resumed: boolean; ms: number }> {
    if (!this.store) throw new QkdError('KMS_SEALED', 'KMS sealed: run qkd kms unseal before rotating its KEK');
    if (this.rotating) throw new QkdError('KMS_ROTATING', 'a KEK rotation is already running');
    const run = this.store.rotateKek(this.now, batch);
    this.rotating = run;
    try {
      const r = await run;
      this.log('info', 'KEK rotated', { active: r.active, rewrapped: r.rewrapped, retired: r.retired, ms: Math.round(r.ms),
        started_at_ms: Math.round(Date.now() - r.ms), ended_at_ms: Date.now() });
      return r;
    } finally {
      this.rotating = undefined;
    }
  }

  /**
   * A share was lost or exposed: replaces the master key with a new one split into `shares` files
   * in `outDir` (any `threshold` reconstruct it) and re-seals the keystore; the old shares are
   * revoked. Then rotate the KEK (docs/runbook.md). Needs an unsealed KMS with custody.
   */
  reshare(shares: number, threshold: number, outDir: string): string[] {
    if (!this.opts.custody) {
      throw new ConfigError('KMS_CUSTODY', 'a development keystore (wrapKeyFile) has no shares: configure custody and run qkd kms init');
    }
    if (!Number.isInteger(shares) || !Number.isInteger(threshold) || threshold < 2 || threshold > shares || shares > 255) {
      throw new ConfigError('KMS_RESHARE', 'need whole numbers 2 <= threshold <= shares <= 255');
    }
    const files = this.unsealedStore().reshare(shares, threshold, outDir, this.id, this.now());
    this.log('warn', `master key replaced: ${threshold} of ${shares} new shares written; every previous share is revoked`,
      { shares, threshold, outDir });
    return files;
  }

  /** Verifies the audit log's hash chain. */
  verifyAudit() {
    return this.unsealedStore().verifyAudit();
  }

  private unsealedStore(): KeyStore {
    if (!this.store) throw new QkdError('KMS_SEALED', 'KMS sealed: run qkd kms unseal');
    return this.store;
  }

  private sealedAnswer(): Res {
    this.m.refusedSealed++;
    return { status: 503, headers: { 'retry-after': '5' }, body: { status: STATUS.INSUFFICIENT_KEY,
      message: 'KMS sealed: run qkd kms unseal' } };
  }

  private log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
    this.emit('log', { level, msg, kms: this.id, ...fields });
  }

  private alarm(a: Alarm & { security?: boolean }): void {
    this.emit('alarm', a);
    this.log(a.security ? 'error' : 'warn', a.message, { code: a.code });
  }

  /** Points this KMS at its node's / the peer KMS's (new) URL; same identities. */
  setNodeUrl(url: string): void {
    this.nodeClient.retarget(url);
  }
  setPeerUrl(url: string): void {
    this.peerClient?.retarget(url);
  }

  /** Streams this KMS has opened (ids and QoS). */
  streamIds(): string[] {
    return [...this.streams.keys()];
  }

  /** Runs TTL expiry now (also runs every expireEveryMs). */
  expireNow(): void {
    if (!this.store) return;
    try {
      this.warnExpiring();
      this.checkWatermarks();
      this.apps.tick();
      const gone = this.store.expire(this.now());
      if (!gone.length) return;
      this.m.dropped += gone.length;
      const by = new Map<string, number[]>();
      for (const g of gone) (by.get(g.keyStreamId) ?? by.set(g.keyStreamId, []).get(g.keyStreamId)!).push(g.index);
      for (const [sid, idx] of by) {
        this.alarm({ code: 'KEYS_EXPIRED', key_stream_id: sid, ranges: indexRanges(idx), message: `${idx.length} ` +
          `key(s) of stream ${sid} reached their TTL and were erased: indices ${indexRanges(idx)}` });
      }
    } catch (err) {
      this.log('error', 'TTL expiry failed', { error: (err as Error).message });
    }
  }

  /** Compares each SAE pair's available keys with its watermarks; one alarm per crossing. */
  checkWatermarks(): void {
    for (const w of this.opts.watermarks ?? []) {
      const pair = `${w.master}>${w.slave}`;
      let n = 0;
      for (const s of this.streams.values()) {
        for (const [a, b] of this.store!.heldRanges(s.keyStreamId, this.now(), w.maxEpsilon)) n += b - a + 1;
      }
      const state: WatermarkState = n < w.lowKeys ? 'low' : n > w.highKeys ? 'high' : 'ok';
      const before = this.levels.get(pair)?.state ?? 'ok';
      this.levels.set(pair, { availableKeys: n, state });
      if (state === before) continue;
      const level = w.maxEpsilon !== undefined ? ` at epsilon <= ${w.maxEpsilon}` : '';
      if (state === 'low') {
        this.alarm({ code: 'KEYS_LOW', message: `SAE pair ${pair}: ${n} key(s)${level} available, below the low watermark ` +
          `${w.lowKeys}; its applications may soon get 503` });
      } else if (state === 'high') {
        this.alarm({ code: 'KEYS_HIGH', message: `SAE pair ${pair}: ${n} key(s)${level} available, above the high watermark ` +
          `${w.highKeys}; keys are produced faster than used (they expire at their TTL)` });
      } else {
        this.alarm({ code: 'KEYS_LEVEL_OK', message: `SAE pair ${pair}: ${n} key(s)${level} available, between the watermarks ` +
          `${w.lowKeys} and ${w.highKeys} again` });
      }
    }
  }

  /** One KEYS_EXPIRING alarm per stream for keys whose TTL ends within expiryWarningMs. */
  private warnExpiring(): void {
    const warnMs = this.opts.expiryWarningMs ?? 300_000;
    if (!(warnMs > 0)) return;
    const soon = this.store!.expiring(this.now(), warnMs);
    if (!soon.length) return;
    const by = new Map<string, { idx: number[]; first: number }>();
    for (const e of soon) {
      const b = by.get(e.keyStreamId) ?? by.set(e.keyStreamId, { idx: [], first: e.expiresMs }).get(e.keyStreamId)!;
      b.idx.push(e.index);
      b.first = Math.min(b.first, e.expiresMs);
    }
    for (const [sid, b] of by) {
      this.alarm({ code: 'KEYS_EXPIRING', key_stream_id: sid, ranges: indexRanges(b.idx), message: `${b.idx.length} ` +
        `key(s) of stream ${sid} reach their TTL within ${Math.round(warnMs / 1000)} s (the first in ` +
        `${Math.max(0, Math.round((b.first - this.now()) / 1000))} s) and will then be erased: indices ${indexRanges(b.idx)}` });
    }
  }

  metrics(): KmsMetrics {
    const c = this.store?.counts() ?? { held: 0, reserved: 0 };
    const watermarks: KmsMetrics['watermarks'] = {};
    for (const w of this.opts.watermarks ?? []) {
      const pair = `${w.master}>${w.slave}`;
      const l = this.levels.get(pair) ?? { availableKeys: 0, state: 'ok' as const };
      watermarks[pair] = { ...l, lowKeys: w.lowKeys, highKeys: w.highKeys };
    }
    return { ...this.m, held: c.held, reserved: c.reserved, ackLatencyMs: percentiles(this.lat.values()),
      sealed: this.store ? 0 : 1, watermarks, qkd004: this.apps.metrics(), ...(this.hybrid ? { hybrid: this.hybrid.metrics() } : {}) };
  }

  /** The append-only audit trail of a stream (or of one key). No key bytes. */
  audit(keyStreamId: string, index?: number) {
    return this.unsealedStore().auditTrail(keyStreamId, index);
  }

  // ------------------------------------------------------------- opening streams

  private linkNames(): { source: string; destination: string } {
    return this.opts.role === 'source'
      ? { source: `qkd://${this.opts.node.id}`, destination: `qkd://${this.opts.peerNodeId}` }
      : { source: `qkd://${this.opts.peerNodeId}`, destination: `qkd://${this.opts.node.id}` };
  }

  private async openOnNode(keyStreamId: string | null, qos: QosRequest | undefined): Promise<KmsStream> {
    const names = this.linkNames();
    let q = qos ?? {};
    for (let round = 0; round < 2; round++) {
      const r = await this.nodeClient.request('POST', '/api/v1/kms/etsi004/open-connect',
        { ...names, key_stream_id: keyStreamId, qos: q }, this.opts.requestTimeoutMs);
      if (r.status === 201 && r.body?.status === STATUS.OK && isUuid(r.body.key_stream_id)) {
        const s: KmsStream = { keyStreamId: r.body.key_stream_id.toLowerCase(), source: nodeName(names.source),
          destination: nodeName(names.destination), nodeId: this.opts.node.id, qos: r.body.qos as Qos };
        return s;
      }
      if (r.body?.status === STATUS.QOS_COUNTER_PROPOSAL && round === 0) {
        this.log('info', 'node counter-proposed QoS; accepting it', { qos: r.body.qos });
        q = r.body.qos as QosRequest;
        continue;
      }
      throw new ProtocolError('KMS_OPEN_FAILED', `open-connect on node ${this.opts.node.id} answered HTTP ${r.status} ` +
        `status ${r.body?.status} (${r.body?.message ?? 'no message'})`);
    }
    throw new ProtocolError('KMS_OPEN_FAILED', `node ${this.opts.node.id} kept counter-proposing QoS`);
  }

  private async getKey(s: KmsStream, index: number): Promise<void> {
    const batch = this.opts.pushBatch ?? DEFAULT_PUSH_BATCH;
    // push_batch: our extension (KEY_MATERIAL_BATCH); a node that does not know it ignores it.
    const r = await this.nodeClient.request('GET', '/api/v1/kms/etsi004/get-key',
      { key_stream_id: s.keyStreamId, index, ...(batch > 1 ? { push_batch: batch } : {}) },
      (this.opts.requestTimeoutMs ?? 10_000) + s.qos.timeout);
    if (r.status !== 205 || r.body?.status !== STATUS.OK) {
      throw new ProtocolError('KMS_GET_KEY_FAILED', `get-key on node ${this.opts.node.id} for stream ${s.keyStreamId} ` +
        `answered HTTP ${r.status} status ${r.body?.status} (${r.body?.message ?? 'no message'})`);
    }
  }

  /**
   * Source side: opens a stream on our node (which assigns the id), has the peer KMS open the
   * destination node with it, then registers with get-key. Resolves with the key_stream_id.
   */
  async openStream(qos: QosRequest | undefined = this.opts.qos): Promise<string> {
    if (this.opts.role !== 'source') {
      throw new ConfigError('KMS_ROLE', `KMS ${this.id} is the destination side; streams are opened by the source-side KMS`);
    }
    if (!this.peerClient) throw new ConfigError('KMS_NO_PEER', `KMS ${this.id} has no peer KMS configured`);
    if (!this.store) throw new QkdError('KMS_SEALED', `KMS ${this.id} sealed: run qkd kms unseal before streams open`);
    // A retry after a failure further down re-opens the stream the node already assigned, never a
    // new one: the node cuts its waiting key bytes into the stream it opened, and a second stream
    // would leave those bytes in an orphan the destination side never sees.
    const s = await this.openOnNode(this.unconfirmedStreamId ?? null, qos);
    this.unconfirmedStreamId = s.keyStreamId;
    this.streams.set(s.keyStreamId, s);
    this.saveStreams();
    const r = await this.peerClient.request('POST', '/api/v1/kms-peer/open-stream',
      { key_stream_id: s.keyStreamId, qos: s.qos }, (this.opts.requestTimeoutMs ?? 10_000) * 2);
    if (r.status !== 201) {
      throw new ProtocolError('KMS_PEER_OPEN_FAILED', `peer KMS ${this.opts.peer!.id} could not open stream ` +
        `${s.keyStreamId} (HTTP ${r.status}: ${r.body?.message ?? ''})`);
    }
    await this.getKey(s, 0);
    this.unconfirmedStreamId = undefined;
    this.unsealedStore().audit(this.now(), s.keyStreamId, -1, 'stream-open', `source ${s.source} -> ${s.destination}`);
    this.log('info', 'key stream open', { key_stream_id: s.keyStreamId });
    return s.keyStreamId;
  }

  /** Closes a stream on our node (pushing stops). */
  async closeStream(keyStreamId: string): Promise<void> {
    const r = await this.nodeClient.request('PUT', '/api/v1/kms/etsi004/close', { key_stream_id: keyStreamId });
    if (r.status !== 204) {
      throw new ProtocolError('KMS_CLOSE_FAILED', `close on node ${this.opts.node.id} answered HTTP ${r.status}`);
    }
  }

  // ------------------------------------------------------------- routing

  private async handle(req: Req): Promise<Res> {
    const p = req.path;
    const m = /^\/api\/v1\/keys\/([^/]+)\/(status|enc_keys|dec_keys)$/.exec(p);
    // Sealed: every key request is refused with a clear 503 (the node keeps its chunks spooled
    // and retries); nothing is read from or written to the store.
    if (!this.store && (m || p.startsWith('/api/v1/kms-peer/') || p.startsWith('/api/v1/qkd004/') ||
      p === '/api/v1/qkd/etsi004/key-material' || p === KEY_MATERIAL_BATCH)) {
      return this.sealedAnswer();
    }
    if (p.startsWith('/api/v1/qkd004/')) return this.apps.handle(req);
    if (p === '/api/v1/qkd/etsi004/key-material' && req.method === 'POST') return this.keyMaterial(req);
    if (p === KEY_MATERIAL_BATCH && req.method === 'POST') return this.keyMaterialBatch(req);
    if (p.startsWith('/api/v1/kms-peer/')) return this.peerCall(req);
    if (m) {
      let sae: string;
      try {
        sae = decodeURIComponent(m[1]);
      } catch {
        return { status: 400, body: { message: `the SAE ID in ${p} is not valid percent-encoding (RFC 3986): encode it with encodeURIComponent` } };
      }
      return this.etsi014(req, sae, m[2] as 'status' | 'enc_keys' | 'dec_keys');
    }
    return { status: 404, body: { message: `no route ${req.method} ${p}` } };
  }

  // ------------------------------------------------------------- ETSI 004 key-material

  private keyMaterial(req: Req): Promise<Res> {
    return this.keyMaterialItem(req.clientId, req.body, performance.now());
  }

  /**
   * Vendor extension (docs/delivery.md, "Batched pushes"): `{items: [key-material body, ...]}`,
   * each item handled exactly as its own key-material request, the store's commits shared. The
   * answer is 201 `{status: 0, results: [{index, http, status, message?}]}` in item order, each
   * result what that push alone would have got (201 stored or duplicate, 4xx refused, 503 full).
   * A malformed envelope is 400 and nothing is stored. The node uses it only on streams whose
   * KMS asked for it in get-key (`push_batch`).
   */
  private async keyMaterialBatch(req: Req): Promise<Res> {
    const t0 = performance.now();
    if (req.clientId !== null && req.clientId !== this.opts.node.id) {
      return { status: 403, body: { status: STATUS.NO_QKD_CONNECTION, message: `client '${req.clientId}' is not the node this KMS is bound to` } };
    }
    const items = (req.body as { items?: unknown } | undefined)?.items;
    if (!Array.isArray(items) || items.length === 0 || items.length > MAX_PUSH_BATCH) {
      return { status: 400, body: { status: STATUS.NO_QKD_CONNECTION, message: `key-material-batch needs {items: [...]} ` +
        `with 1 to ${MAX_PUSH_BATCH} key-material bodies` } };
    }
    // Concurrently, so that the store commits them together (one transaction, one fsync).
    const answers = await Promise.all(items.map((it) => this.keyMaterialItem(req.clientId, it, t0)));
    return { status: 201, body: { status: STATUS.OK, results: answers.map((a, i) => {
      const index = (items[i] as { index?: unknown } | null)?.index;
      return { index: typeof index === 'number' ? index : null, http: a.status, ...(a.body as object) };
    }) } };
  }

  /** One pushed chunk (the body of a key-material request), validated and stored. */
  private async keyMaterialItem(clientId: string | null, body: unknown, t0: number): Promise<Res> {
    this.m.pushed++;
    const bad = (http: number, status: number, message: string): Res => {
      this.m.rejected++;
      this.log('warn', 'key-material refused', { http, status, message });
      return { status: http, body: { status, message } };
    };
    if (clientId !== null && clientId !== this.opts.node.id) {
      return bad(403, STATUS.NO_QKD_CONNECTION, `client '${clientId}' is not the node this KMS is bound to`);
    }
    const b = body as Record<string, unknown> | undefined;
    if (!b || typeof b !== 'object') return bad(400, STATUS.NO_QKD_CONNECTION, 'key-material needs a JSON body');
    if (b.status !== STATUS.OK) return bad(400, STATUS.NO_QKD_CONNECTION, 'key-material status must be 0');
    const index = b.index;
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index > MAX_INDEX) {
      return bad(400, STATUS.NO_QKD_CONNECTION, 'index must be an integer 0..2^32-1');
    }
    const md = b.metadata as { size?: unknown; buffer?: unknown } | undefined;
    const buf = metadataBuffer(md);
    if (!md || !buf || typeof md.size !== 'number') {
      return bad(400, STATUS.METADATA_TOO_SMALL, 'metadata {size, buffer:{key_stream_id, ...}} is required');
    }
    const bufLen = typeof md.buffer === 'string' ? md.buffer.length : JSON.stringify(md.buffer).length;
    if (md.size < bufLen) return bad(400, STATUS.METADATA_TOO_SMALL, `metadata.size ${md.size} < buffer length ${bufLen}`);
    const sid = typeof buf.key_stream_id === 'string' ? buf.key_stream_id.toLowerCase() : '';
    if (!isUuid(sid)) return bad(400, STATUS.NO_QKD_CONNECTION, 'metadata.buffer.key_stream_id must be a UUID');
    const s = this.streams.get(sid);
    if (!s) return bad(404, STATUS.NO_QKD_CONNECTION, `unknown key stream ${sid}: this KMS did not open it`);
    if (clientId !== null && s.nodeId !== clientId) {
      return bad(403, STATUS.NO_QKD_CONNECTION, `stream ${sid} belongs to node ${s.nodeId}`);
    }
    const kb = b.key_buffer;
    if (typeof kb !== 'string' || kb.length % 4 !== 0 || !B64_RE.test(kb)) {
      return bad(400, STATUS.INSUFFICIENT_KEY, 'key_buffer must be base64');
    }
    const key = Buffer.from(kb, 'base64');
    if (key.length !== s.qos.key_chunk_size) {
      key.fill(0);
      return bad(400, STATUS.INSUFFICIENT_KEY, `key_buffer holds ${key.length} bytes; the stream's key_chunk_size is ` +
        `${s.qos.key_chunk_size}`);
    }
    if (this.commitKeys && !checkCommitment(this.commitKeys.node, s.nodeId, keyDigest(sid, index, key), buf.commitment)) {
      key.fill(0);
      this.alarm({ code: 'NODE_COMMITMENT_INVALID', security: true, key_stream_id: sid, index, message: `a push for index ` +
        `${index} of stream ${sid} carries no valid commitment of node ${s.nodeId}; refused (a client with the node's TLS ` +
        'identity but not its commitment key, or a misconfigured node)' });
      return bad(400, STATUS.NO_QKD_CONNECTION, `metadata.buffer.commitment must be node ${s.nodeId}'s Ed25519 commitment ` +
        'to this key (docs/delivery.md, "Key commitments")');
    }
    const nowMs = this.now();
    const prov: Record<string, unknown> = {};
    for (const k of ['block_id', 'qber', 'epsilon', 'eps_sec', 'eps_cor', 'analysis', 'acquired_from_ms', 'acquired_to_ms',
      'offered_at_ms', 'pushed_at_ms', 'node_id', 'commitment']) if (k in buf) prov[k] = buf[k];
    const keyId = deriveKeyId(sid, index);
    let outcome;
    try {
      outcome = await this.store!.put(sid, index, keyId, key, JSON.stringify(prov), nowMs, nowMs + s.qos.ttl * 1000);
    } finally {
      key.fill(0);
    }
    if (outcome === 'stored' || outcome === 'duplicate') {
      if (outcome === 'stored') this.m.acked++;
      else this.m.duplicates++;
      this.lat.push(performance.now() - t0);
      return { status: 201, body: { status: STATUS.OK } };
    }
    if (outcome === 'conflict') {
      this.m.conflicts++;
      this.alarm({ code: 'KEY_CONFLICT', security: true, key_stream_id: sid, index, message: `node ${s.nodeId} pushed ` +
        `different bytes under used index ${index} of stream ${sid}; refused (possible tampering or a desynchronised node)` });
      return { status: 409, body: { status: STATUS.OK, message: `index ${index} already holds a different key` } };
    }
    this.m.full++;
    this.alarm({ code: 'KMS_FULL', key_stream_id: sid, index, message: `key store full (${this.opts.capacity} keys); ` +
      'answered 503 so the node keeps buffering' });
    return { status: 503, body: { status: STATUS.INSUFFICIENT_KEY, message: 'key store full; retry later' } };
  }

  // ------------------------------------------------------------- KMS <-> KMS

  private async peerCall(req: Req): Promise<Res> {
    if (!this.opts.peer || (req.clientId !== null && req.clientId !== this.opts.peer.id)) {
      return { status: 403, body: { message: `client '${req.clientId}' is not the peer KMS of ${this.id}` } };
    }
    const b = (req.body ?? {}) as Record<string, unknown>;
    if (req.path === '/api/v1/kms-peer/open-stream' && req.method === 'POST') {
      if (this.opts.role !== 'destination' || !isUuid(b.key_stream_id)) {
        return { status: 400, body: { message: 'open-stream goes to the destination-side KMS with a UUID key_stream_id' } };
      }
      const known = this.streams.get(b.key_stream_id.toLowerCase());
      if (known) {
        // A retry of an open whose answer the source KMS never saw (it timed out): the stream is
        // open here and its node may have pushed keys since, so registering again from index 0
        // would fail for ever. Confirm the stream with the node (open-connect on an existing id
        // is idempotent) and answer as the first time.
        await this.openOnNode(known.keyStreamId, known.qos as QosRequest);
        this.log('info', 'key stream open requested again: already open', { key_stream_id: known.keyStreamId });
        return { status: 201, body: { status: STATUS.OK, key_stream_id: known.keyStreamId, qos: known.qos } };
      }
      const s = await this.openOnNode(b.key_stream_id, b.qos as QosRequest);
      if (JSON.stringify(s.qos) !== JSON.stringify(b.qos)) {
        this.log('warn', 'destination node chose a different QoS than the source', { key_stream_id: s.keyStreamId });
      }
      this.streams.set(s.keyStreamId, s);
      this.saveStreams();
      await this.getKey(s, 0);
      this.store!.audit(this.now(), s.keyStreamId, -1, 'stream-open', `destination ${s.source} -> ${s.destination}`);
      this.log('info', 'key stream open', { key_stream_id: s.keyStreamId });
      return { status: 201, body: { status: STATUS.OK, key_stream_id: s.keyStreamId, qos: s.qos } };
    }
    if (req.path === '/api/v1/kms-peer/reserve' && req.method === 'POST') {
      const sid = typeof b.key_stream_id === 'string' ? b.key_stream_id.toLowerCase() : '';
      const items = Array.isArray(b.items) ? (b.items as { index: number; digest: string }[]) : [];
      const holder = typeof b.holder === 'string' ? b.holder : '';
      if (!this.streams.has(sid) || !holder || !items.every((i) => Number.isInteger(i?.index) &&
        typeof i.digest === 'string' && /^[0-9a-f]{64}$/.test(i.digest))) {
        return { status: 400, body: { message: 'reserve needs a known key_stream_id, holder and items [{index, digest}]' } };
      }
      const mismatched = this.mismatches(sid, items);
      if (mismatched.length) return { status: 409, body: { reserved: [], mismatched } };
      const uncommitted = this.uncommitted(sid, items, (b.commitments ?? []) as unknown[]);
      if (uncommitted.length) return { status: 409, body: { reserved: [], mismatched: [], uncommitted } };
      const commitments = this.commitKeys ? items.map((i) => this.commitmentOf(sid, i.index)) : undefined;
      const owed = this.apps.owedChunks(sid);
      if (owed > 0 && this.store!.heldRanges(sid, this.now()).reduce((n, [a, z]) => n + z - a + 1, 0) - owed < items.length) {
        return { status: 200, body: { reserved: [], commitments } }; // owed to ETSI 004 streams' min_bps
      }
      if (b.slaves === undefined) {
        const reserved = this.store!.reserve(sid, items, holder, this.now(), true);
        return { status: 200, body: { reserved, commitments } };
      }
      // Reformatted and/or multicast keys: the same plan as the releasing KMS, from the same list.
      const slaves = b.slaves;
      const { local, remote } = this.opts.saes;
      if (!Array.isArray(slaves) || !slaves.length || !slaves.every((x) => typeof x === 'string' && local.includes(x)) ||
        typeof b.master !== 'string' || !remote.includes(b.master) || holder !== `${b.master}>${slaves[0]}` ||
        !Number.isInteger(b.number) || !Number.isInteger(b.size) || (b.size as number) % 8 !== 0 || (b.size as number) <= 0 ||
        (b.number as number) <= 0) {
        return { status: 400, body: { message: 'reserve with slaves needs master, slaves (SAEs of this KMS), number and size' } };
      }
      const s = this.streams.get(sid)!;
      const number = b.number as number;
      const size = b.size as number;
      if (chunksNeeded(number, size / 8, s.qos.key_chunk_size) !== items.length) {
        return { status: 400, body: { message: `reserve: ${items.length} chunks do not make ${number} keys of ${size} bits` } };
      }
      const plan = planKeys(sid, items.map((i) => i.index), s.qos.key_chunk_size, number, size / 8);
      const multicast = slaves.length > 1;
      const outputs = plan.keyIds.flatMap((keyId, key) => (slaves as string[]).map((sl) => ({
        keyId: multicast ? `${keyId}#${sl}` : keyId, holder: `${b.master}>${sl}`, key })));
      const ok = this.store!.reformat(sid, items, null, plan.sizes, outputs,
        reformatMeta(sid, plan, { number, size, slaves: slaves as string[] }), this.now());
      return { status: 200, body: { reserved: ok ? items.map((i) => i.index) : [], commitments } };
    }
    if (req.path === '/api/v1/kms-peer/held' && req.method === 'POST') {
      const sid = typeof b.key_stream_id === 'string' ? b.key_stream_id.toLowerCase() : '';
      const eps = b.max_epsilon;
      if (!this.streams.has(sid) || (eps !== null && eps !== undefined && typeof eps !== 'number')) {
        return { status: 400, body: { message: 'held needs a known key_stream_id (and max_epsilon a number or null)' } };
      }
      return { status: 200, body: { ranges: this.store!.heldRanges(sid, this.now(), (eps as number | null) ?? undefined) } };
    }
    if (req.path === '/api/v1/kms-peer/hybrid' && req.method === 'POST' && this.hybrid) return this.hybrid.peerExchange(b);
    if (req.path === '/api/v1/kms-peer/qkd004' && req.method === 'POST') return this.apps.peerRequest(b);
    return { status: 404, body: { message: `no route ${req.method} ${req.path}` } };
  }

  /** Our node's commitment stored with (sid, index). */
  private commitmentOf(sid: string, index: number): string | undefined {
    const m = this.store!.metaOf(sid, index);
    if (!m) return undefined;
    const c = (JSON.parse(m) as { commitment?: unknown }).commitment;
    return typeof c === 'string' ? c : undefined;
  }

  /**
   * With commitments configured: the indices whose peer-node commitment (in `commitments`, by
   * position) is not that node's signature over the digest; raises a security alarm.
   */
  private uncommitted(sid: string, items: { index: number; digest: string }[], commitments: unknown[]): number[] {
    if (!this.commitKeys) return [];
    const bad = items.filter((it, i) => !checkCommitment(this.commitKeys!.peerNode, this.opts.peerNodeId, it.digest,
      commitments[i])).map((it) => it.index);
    if (bad.length) {
      this.alarm({ code: 'PEER_COMMITMENT_INVALID', security: true, key_stream_id: sid, ranges: indexRanges(bad),
        message: `no valid commitment of node ${this.opts.peerNodeId} for indices ${indexRanges(bad)} of stream ${sid}: ` +
          'nothing proves that node produced these keys; not released' });
    }
    return bad;
  }

  /** Indices we hold (in any state) whose digest differs from the peer's: raises a security alarm. */
  private mismatches(sid: string, items: { index: number; digest: string }[]): number[] {
    const bad: number[] = [];
    for (const it of items) {
      const d = digestOf(this.store!, sid, it.index);
      if (d && d.digest !== it.digest) bad.push(it.index);
    }
    if (bad.length) {
      this.alarm({ code: 'PEER_KEY_MISMATCH', security: true, key_stream_id: sid, ranges: indexRanges(bad),
        message: `the peer KMS holds different keys under indices ${indexRanges(bad)} of stream ${sid}; not released` });
    }
    return bad;
  }

  // ------------------------------------------------------------- ETSI 014

  private chunkBits(): number {
    const s = [...this.streams.values()].pop();
    return s ? s.qos.key_chunk_size * 8 : 256;
  }

  private limits(): Limits {
    const bits = this.chunkBits();
    return { keySizeBits: bits, minKeySizeBits: 8, maxKeySizeBits: this.opts.maxKeySizeBits ?? Math.max(bits, 4096),
      maxKeysPerRequest: this.opts.maxKeysPerRequest ?? 128, maxSaeIdCount: this.opts.maxSaeIdCount ?? 8 };
  }

  private async etsi014(req: Req, saeId: string, op: 'status' | 'enc_keys' | 'dec_keys'): Promise<Res> {
    try {
      return await this.etsi014Checked(req, saeId, op);
    } catch (err) {
      if (err instanceof Refusal) return { status: err.status, body: err.body };
      throw err;
    }
  }

  private async etsi014Checked(req: Req, saeId: string, op: 'status' | 'enc_keys' | 'dec_keys'): Promise<Res> {
    const caller = req.clientId;
    const { local, remote } = this.opts.saes;
    if (caller === null || !local.includes(caller)) {
      return { status: 401, body: { message: `client '${caller ?? '(no certificate)'}' is not an SAE of KMS ${this.id}` } };
    }
    const allowed = op === 'status' ? ['GET'] : ['GET', 'POST'];
    if (!allowed.includes(req.method)) {
      return { status: 405, headers: { allow: allowed.join(', ') }, body: { message: `${op} takes ${allowed.join(' or ')}` } };
    }
    if (!remote.includes(saeId)) {
      return { status: 400, body: { message: `SAE '${saeId}' is not reachable through this KMS's peer` } };
    }
    const lim = this.limits();
    if (op === 'status') {
      return { status: 200, body: { source_KME_ID: this.id, target_KME_ID: this.opts.peer?.id ?? '',
        master_SAE_ID: caller, slave_SAE_ID: saeId, key_size: lim.keySizeBits, stored_key_count: await this.deliverable(),
        max_key_count: this.opts.capacity ?? 1_000_000, max_key_per_request: lim.maxKeysPerRequest,
        max_key_size: lim.maxKeySizeBits, min_key_size: lim.minKeySizeBits, max_SAE_ID_count: lim.maxSaeIdCount } };
    }
    const kr = op === 'enc_keys' ? parseKeyRequest(req.method, req.body, req.query, saeId, remote, lim) : undefined;
    const ids = op === 'dec_keys' ? parseKeyIds(req.method, req.body, req.query, lim.maxKeysPerRequest) : [];
    const wait = this.rateLimited(caller, kr ? kr.number : ids.length);
    if (wait > 0) {
      const sec = Math.ceil(wait / 1000);
      this.log('warn', 'SAE over its key rate limit', { sae: caller, retryAfterS: sec });
      return { status: 429, headers: { 'retry-after': String(sec) }, body: { message: `SAE '${caller}' is over its ` +
        `limit of ${this.opts.rateLimit?.keysPerSecond ?? DEFAULT_RATE.keysPerSecond} keys/s; retry after ${sec} s` } };
    }
    if (kr) {
      const run = this.encChain.then(() => this.hybrid ? this.hybrid.encKeys(caller, kr, (k, o) => this.encKeys(caller, k, o))
        : this.encKeys(caller, kr));
      this.encChain = run.catch(() => undefined);
      return run;
    }
    // dec_keys: the caller is the slave, saeId the master. All or nothing: one bad key_ID refuses
    // the request and every key stays reserved for the pair.
    const holder = `${saeId}>${caller}`;
    const r = await this.store!.takeAll(ids, holder, `#${caller}`, this.now());
    if (r.refused.length) {
      const foreign = r.refused.filter((x) => x.reason === 'foreign').map((x) => ids[x.pos]);
      const unknown = r.refused.filter((x) => x.reason === 'unknown').map((x) => ids[x.pos]);
      if (foreign.length) {
        this.log('warn', 'dec_keys for key_IDs released to another SAE pair', { sae: caller, master: saeId, count: foreign.length });
        return { status: 401, body: { message: `SAE '${caller}' is not a slave SAE of key_ID(s) ${foreign.join(', ')} ` +
          `(master ${saeId}); nothing was handed out`, details: [{ key_IDs_unauthorized: foreign }] } };
      }
      return { status: 400, body: { message: `key_ID(s) ${unknown.join(', ')} unknown, expired or already handed out ` +
        `for the pair ${saeId} -> ${caller}; nothing was handed out (the request's other keys are kept)`,
      details: [{ key_IDs_unknown: unknown }] } };
    }
    const keys = r.keys.map((t, i) => {
      const k = { key_ID: ids[i], key: t.key.toString('base64') };
      t.key.fill(0);
      return k;
    });
    this.hybrid?.labelDecKeys(saeId, caller, keys);
    this.m.delivered += keys.length;
    return { status: 200, body: { keys } };
  }

  /**
   * Keys of `key_size` this KME could deliver now: held here and at the peer (index ranges
   * compared), so keys the peer has not received yet are not counted. 0 if the peer is unreachable.
   */
  private async deliverable(maxEpsilon?: number): Promise<number> {
    if (!this.peerClient) return 0;
    let n = 0;
    for (const s of this.streams.values()) {
      const mine = this.store!.heldRanges(s.keyStreamId, this.now(), maxEpsilon);
      if (!mine.length) continue;
      let theirs: [number, number][];
      try {
        const r = await this.peerClient.request('POST', '/api/v1/kms-peer/held', { key_stream_id: s.keyStreamId,
          max_epsilon: maxEpsilon ?? null }, this.opts.requestTimeoutMs ?? 5000);
        if (r.status !== 200 || !Array.isArray(r.body?.ranges)) continue;
        theirs = r.body.ranges as [number, number][];
      } catch {
        continue;
      }
      // Less what ETSI 004 streams' min_bps reservations are owed (known to the source-side KMS).
      n += Math.max(0, overlap(mine, theirs) - this.apps.owedChunks(s.keyStreamId));
    }
    return n;
  }

  /**
   * Takes `n` keys' worth of tokens from the SAE's bucket; returns 0 when allowed, else the ms to
   * wait (nothing taken). Invalid counts pass through: the request's own checks refuse them.
   */
  private rateLimited(sae: string, n: number): number {
    const { keysPerSecond, burst } = this.opts.rateLimit ?? DEFAULT_RATE;
    if (!(keysPerSecond > 0) || !Number.isInteger(n) || n < 1) return 0;
    const now = this.now();
    const bk = this.buckets.get(sae) ?? { tokens: burst, atMs: now };
    bk.tokens = Math.min(burst, bk.tokens + ((now - bk.atMs) / 1000) * keysPerSecond);
    bk.atMs = now;
    this.buckets.set(sae, bk);
    if (bk.tokens >= n) {
      bk.tokens -= n;
      return 0;
    }
    return Math.max(1, ((n - bk.tokens) / keysPerSecond) * 1000);
  }

  /**
   * Releases keys to the master SAE: reserve chunks here, have the peer KMS check the same
   * indices' digests and reserve (or reformat) them for the slave(s), then hand them out. Keys of
   * the stream's chunk size for one slave are the chunks themselves; any other size, or several
   * slaves (multicast), are reformatted from the chunks on both sides alike (reformat.ts). The
   * source-side KMS draws from the oldest keys, the destination side from the newest, so SAEs
   * asking on both sides at once rarely collide; when they do, the loser undoes its reservation
   * and answers 503 (retry).
   */
  private async encKeys(master: string, kr: KeyRequest, out: QkdOutcome = {}): Promise<Res> {
    if (!this.peerClient) return { status: 503, body: { message: 'no peer KMS configured' } };
    const nowMs = this.now();
    const holder = `${master}>${kr.slaves[0]}`;
    const sizeBytes = kr.size / 8;
    for (const s of this.streams.values()) {
      const chunkBytes = s.qos.key_chunk_size;
      const reformat = sizeBytes !== chunkBytes || kr.slaves.length > 1;
      const need = reformat ? chunksNeeded(kr.number, sizeBytes, chunkBytes) : kr.number;
      // Keys owed to ETSI 004 streams' min_bps reservations (the oldest, which they take) are not ours.
      const owed = this.apps.owedChunks(s.keyStreamId);
      const cands = this.store!.candidates(s.keyStreamId, need + owed, nowMs, this.opts.role === 'destination', kr.maxEpsilon)
        .slice(owed);
      if (cands.length < need) continue;
      const items = cands.map((c) => ({ index: c.index, digest: c.digest }));
      const mine = this.store!.reserve(s.keyStreamId, items, holder, nowMs, true);
      if (mine.length !== need) return { status: 503, body: { message: 'keys changed while reserving; retry' } };
      const undo = () => this.store!.unreserve(s.keyStreamId, mine, holder, this.now());
      let r;
      try {
        const commitments = this.commitKeys ? cands.map((c) => (JSON.parse(c.meta) as { commitment?: string }).commitment) : undefined;
        r = await this.peerClient.request('POST', '/api/v1/kms-peer/reserve', { key_stream_id: s.keyStreamId,
          items, holder, commitments, ...(reformat ? { master, slaves: kr.slaves, number: kr.number, size: kr.size } : {}) });
      } catch (err) {
        undo();
        this.log('warn', 'peer KMS unreachable for key confirmation', { code: (err as QkdError).code });
        return { status: 503, body: { message: `the peer KMS ${this.opts.peer!.id} is unreachable; retry later` } };
      }
      if (r.status === 409 && !(Array.isArray(r.body?.uncommitted) && r.body.uncommitted.length)) {
        undo();
        const bad = (r.body?.mismatched ?? []) as number[];
        this.alarm({ code: 'PEER_KEY_MISMATCH', security: true, key_stream_id: s.keyStreamId, ranges: indexRanges(bad),
          message: `the peer KMS reports different keys under indices ${indexRanges(bad)} of stream ${s.keyStreamId}` });
        return { status: 503, body: { message: 'the peer KMS does not hold the same keys; not released' } };
      }
      if (r.status === 409 && Array.isArray(r.body?.uncommitted) && r.body.uncommitted.length) {
        undo();
        return { status: 503, body: { message: 'the peer KMS found no valid commitment of our node for these keys; not released' } };
      }
      if (r.status !== 200 || !Array.isArray(r.body?.reserved) || r.body.reserved.length !== need) {
        undo();
        out.short = true;
        return { status: 503, body: { message: 'the peer KMS does not hold these keys yet (or they are taken); ' +
          'retry shortly' } };
      }
      // Before handing out: the peer node signed the digest of our copy (the peer KMS holds these
      // keys reserved until their TTL if we stop here; they are never handed out on this side).
      if (this.uncommitted(s.keyStreamId, items, Array.isArray(r.body.commitments) ? r.body.commitments : []).length) {
        undo();
        return { status: 503, body: { message: `no valid commitment of node ${this.opts.peerNodeId} for these keys; not released` } };
      }
      let keyIds = cands.map((c) => c.keyId);
      if (reformat) {
        const plan = planKeys(s.keyStreamId, items.map((i) => i.index), chunkBytes, kr.number, sizeBytes);
        keyIds = plan.keyIds;
        const ok = this.store!.reformat(s.keyStreamId, items, holder, plan.sizes,
          plan.keyIds.map((keyId, key) => ({ keyId, holder, key })), reformatMeta(s.keyStreamId, plan, kr), this.now());
        if (!ok) return { status: 503, body: { message: 'keys expired while being released; retry' } };
      }
      const taken = await this.store!.takeAll(keyIds, holder, '', this.now());
      const keys = taken.keys.map((t, i) => {
        const k = { key_ID: keyIds[i], key: t.key.toString('base64') };
        t.key.fill(0);
        return k;
      });
      if (taken.refused.length) return { status: 503, body: { message: 'keys expired while being released; retry' } };
      this.m.delivered += keys.length;
      out.epsilon = worstEpsilon(cands.map((c) => c.meta));
      return { status: 200, body: { keys } };
    }
    out.short = true;
    return { status: 503, body: { message: `fewer than ${kr.number} confirmed keys of ${kr.size} bits` +
      (kr.maxEpsilon !== undefined ? ` at epsilon <= ${kr.maxEpsilon}` : '') + ' available; retry shortly' } };
  }

  async close(): Promise<void> {
    if (this.expirer) clearInterval(this.expirer);
    this.apps.close();
    clearTimeout(this.unsealTimer);
    this.unsealer?.reset();
    await this.admin?.close();
    await this.server?.close();
    this.nodeClient.close();
    this.peerClient?.close();
    await this.encChain;
    await this.rotating?.catch(() => undefined);
    this.store?.close();
  }
}

/** Audit/provenance label of reformatted keys (no key bytes). */
function reformatMeta(sid: string, plan: ReformatPlan, kr: { number: number; size: number; slaves: string[] }): string {
  return JSON.stringify({ reformatted_from: sid, chunks: plan.chunks, size_bits: kr.size, number: kr.number,
    slaves: kr.slaves, discarded_bytes: plan.discardedBytes });
}

/** Number of indices in both sorted, disjoint range lists. */
export function overlap(a: [number, number][], b: [number, number][]): number {
  let i = 0;
  let j = 0;
  let n = 0;
  while (i < a.length && j < b.length) {
    const lo = Math.max(a[i][0], b[j][0]);
    const hi = Math.min(a[i][1], b[j][1]);
    if (hi >= lo) n += hi - lo + 1;
    if (a[i][1] < b[j][1]) i++;
    else j++;
  }
  return n;
}

export async function startKms(opts: KmsOptions): Promise<Kms> {
  const k = new Kms(opts);
  await k.start();
  return k;
}
