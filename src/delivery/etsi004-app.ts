/**
 * ETSI GS QKD 004 V2.1.1 northbound: key streams for applications (SAEs) on the reference KMS,
 * OPEN_CONNECT / GET_KEY / CLOSE over HTTPS JSON with the ETSI 014 mutual-TLS identity (the
 * client certificate CN is the SAE ID). Routes, QoS semantics and status codes: docs/delivery.md
 * "ETSI GS QKD 004 for applications". Parsing and admission: etsi004-qos.ts.
 *
 * Pairing. The link's source-side KMS is the **coordinator** of every application stream on the
 * link: it admits streams (QoS), reserves link chunks for them and decides which chunks make which
 * keys; the destination-side KMS forwards what it cannot decide (`/api/v1/kms-peer/qkd004`).
 * Keys of a stream come in groups: a group is lcm(key_chunk_size, link chunk) bytes, i.e.
 * `chunksPerGroup` link chunks cut into `keysPerGroup` keys; key `index` is in group
 * floor(index / keysPerGroup). The coordinator assigns chunks to a group once (reserving them at
 * both KMSs for the holder `qkd004:<id>`, digests compared and node commitments checked, as for
 * ETSI 014) and tells the peer; each KMS then cuts the group's chunks into keys in its own store
 * (store.reformat from the reservation) when its application first asks for a key of that group,
 * and hands out the key of that index once. So both applications get the same bytes for the same
 * index, and no byte is served twice: reserved chunks are out of ETSI 014's reach, a reformatted
 * key is erased when handed out.
 *
 * QoS. min_bps is guaranteed by admission (the sum of admitted min_bps never exceeds the link's
 * key rate) and by a standing reservation: every tick the coordinator tops up each stream's spare
 * chunks to `reserveS` seconds of its min_bps, in priority order. GET_KEY beyond what is reserved
 * waits up to the stream's timeout; waiting requests are served by priority (larger first), then
 * arrival. max_bps bounds each side's GET_KEY rate. TTL ends a stream: both KMSs erase its unused
 * keys and return its never-used reserved chunks to the link's pool.
 *
 * A KMS restart ends its application streams: each tick notes what they hold reserved
 * (`stateFile`), and the next start releases it (unused reserved chunks back to the pool, keys cut
 * but not handed out erased).
 *
 * Concurrency: per stream, one GET_KEY at a time on each side (a promise chain); the
 * coordinator's allocation runs one pass at a time (`pumping`).
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { AppRefusal, admitQos, grouping, parseClose, parseGetKey, parseOpen, qosCompatible, type QosLimits } from './etsi004-qos.ts';
import type { JsonClient, Req, Res } from './http.ts';
import { deriveKeyId } from './keyid.ts';
import type { KeyStore } from './store.ts';
import { STATUS, isUuid, type Qos } from './types.ts';
import { answer, appKeyId, checkItems, checkRanges, checkWire, HOLDER, inRanges, PEER_PATH, toRanges, type Item, type Leftover,
  type Side, type StreamBase, type WireStream } from './etsi004-wire.ts';

export interface AppHost {
  id: string;
  /** True on the link's source-side KMS: it admits and allocates. */
  coordinator: boolean;
  saes: { local: string[]; remote: string[] };
  /** The unsealed store (throws while sealed). */
  store(): KeyStore;
  /** The link stream whose chunks serve applications (the newest), with its chunk size. */
  linkStream(): { keyStreamId: string; chunkBytes: number } | undefined;
  peer?: JsonClient;
  /** Chunks stored so far (the inflow: key-material accepted). */
  storedChunks(): number;
  /** Our node's commitments for these indices (undefined: commitments are off). */
  ownCommitments(sid: string, indices: number[]): (string | undefined)[] | undefined;
  /** Indices whose peer-node commitment does not check out (raises the security alarm). */
  badPeerCommitments(sid: string, items: Item[], commitments: unknown[]): number[];
  /** Indices held here whose digest differs from `items` (raises the security alarm). */
  mismatches(sid: string, items: Item[]): number[];
  now(): number;
  log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
}

export interface AppOptions {
  /** The link's key rate admission shares out, bit/s; without it, the measured inflow. */
  linkKeyRateBps?: number;
  /** Largest key_chunk_size, bytes (default 512). */
  maxKeyBytes?: number;
  /** Seconds of min_bps kept reserved ahead per stream (default 2). */
  reserveS?: number;
  /**
   * Most streams one application may have open (default 16): each can hold key reserved, so one
   * application must not lock up the link's store by opening many.
   */
  maxStreamsPerSae?: number;
  /** Groups assigned ahead when a stream's GET_KEY is the only one waiting (default 8). */
  prefetchGroups?: number;
  /** Where the streams' reservations are noted for a restart (none: a restart leaves them to the TTL). */
  stateFile?: string;
  /** Window of the inflow measurement (default 30 000 ms). */
  inflowWindowMs?: number;
  requestTimeoutMs?: number;
}

interface AppStream extends StreamBase {
  keysPerGroup: number;
  chunksPerGroup: number;
  openedMs: number;
  expiresMs: number;
  /** Group → its chunks (same on both KMSs). */
  groups: Map<number, Item[]>;
  /** Groups cut into keys in this store. */
  cut: Set<number>;
  /** Keys handed out here per cut group (a group all handed out needs no erasing). */
  taken: Map<number, number>;
  /** Next index for a GET_KEY without one (this side). */
  next: number;
  /** Coordinator: chunks reserved at both KMSs, not yet in a group. */
  spare: Item[];
  bucket: { bits: number; atMs: number };
  chain: Promise<unknown>;
}

interface Waiter {
  s: AppStream;
  group: number;
  deadlineMs: number;
  seq: number;
  done: (r: 'ok' | 'short' | 'closed' | 'peer') => void;
}

export class AppSessions {
  private readonly streams = new Map<string, AppStream>();
  /** Closed or expired ids (not reusable), with why. */
  private readonly ended = new Map<string, string>();
  private readonly waiters: Waiter[] = [];
  private seq = 0;
  private pumping?: Promise<void>;
  private again = false;
  private pumpTimer?: NodeJS.Timeout;
  private readonly inflow: { atMs: number; chunks: number }[] = [];
  private recovered = false;
  /** Coordinator: streams admitted whose peer KMS is being told (id → min_bps). */
  private readonly admitting = new Map<string, number>();
  /** The state file last written held streams. */
  private saved = true;
  readonly m = { opened: 0, refusedQos: 0, delivered: 0, short: 0, timedOut: 0, closed: 0, expired: 0 };

  constructor(private readonly h: AppHost, private readonly o: AppOptions = {}) {}

  // ------------------------------------------------------------- rates

  /** Measured inflow of the link, bit/s, over the window (0 until two samples). */
  measuredBps(): number {
    const a = this.inflow[0];
    const b = this.inflow[this.inflow.length - 1];
    const chunk = this.h.linkStream()?.chunkBytes ?? 0;
    if (!a || b.atMs <= a.atMs) return 0;
    return Math.floor(((b.chunks - a.chunks) * chunk * 8 * 1000) / (b.atMs - a.atMs));
  }

  capacityBps(): number {
    return this.o.linkKeyRateBps ?? this.measuredBps();
  }

  admittedMinBps(): number {
    let n = 0;
    for (const s of this.streams.values()) n += s.qos.min_bps;
    return n;
  }

  private limits(chunkBytes: number): QosLimits {
    let admitted = 0;
    for (const m of this.admitting.values()) admitted += m;
    for (const s of this.streams.values()) admitted += s.qos.min_bps;
    return { linkChunkBytes: chunkBytes, maxKeyBytes: this.o.maxKeyBytes ?? 512, capacityBps: this.capacityBps(),
      admittedMinBps: admitted, maxChunksPerGroup: 16, maxTimeoutMs: 60_000, maxTtlS: 86_400 };
  }

  metrics() {
    let owedChunks = 0;
    for (const sid of new Set([...this.streams.values()].map((s) => s.sid))) owedChunks += this.owedChunks(sid);
    return { ...this.m, streams: this.streams.size, waiting: this.waiters.length, owedChunks, admittedMinBps: this.admittedMinBps(),
      capacityBps: this.capacityBps(), measuredInflowBps: this.measuredBps() };
  }

  /** Streams open here (ids, parties and QoS; no key material). */
  list(): { key_stream_ID: string; source: string; destination: string; qos: Qos; connected: Record<Side, boolean> }[] {
    return [...this.streams.values()].map((s) => ({ key_stream_ID: s.id, source: s.source, destination: s.destination,
      qos: s.qos, connected: { ...s.connected } }));
  }

  // ------------------------------------------------------------- application routes

  /** `/api/v1/qkd004/{open_connect,get_key,close}`; the KMS has checked that it is unsealed. */
  async handle(req: Req): Promise<Res> {
    const call = req.path.slice('/api/v1/qkd004/'.length);
    if (!['open_connect', 'get_key', 'close'].includes(call)) {
      return answer(STATUS.NO_QKD_CONNECTION, { message: `no route ${req.method} ${req.path} (ETSI 004 calls: ` +
        'open_connect, get_key, close)' }, 404);
    }
    if (req.method !== 'POST') {
      return { status: 405, headers: { allow: 'POST' }, body: { status: STATUS.NO_QKD_CONNECTION, message: `${call} takes POST` } };
    }
    const caller = req.clientId;
    if (caller === null || !this.h.saes.local.includes(caller)) {
      return answer(STATUS.NO_QKD_CONNECTION, { message: `client '${caller ?? '(no certificate)'}' is not an application ` +
        `(SAE) of KMS ${this.h.id}` }, 401);
    }
    try {
      if (call === 'open_connect') return await this.open(caller, req.body);
      if (call === 'get_key') return await this.getKey(caller, req.body);
      return await this.closeCall(caller, req.body);
    } catch (err) {
      if (err instanceof AppRefusal) return { status: err.http, body: err.body() };
      throw err;
    }
  }

  private sideOf(s: AppStream, caller: string): Side | undefined {
    return s.source === caller ? 'source' : s.destination === caller ? 'destination' : undefined;
  }

  private known(id: string, caller: string): AppStream {
    const s = this.streams.get(id);
    if (!s) {
      const why = this.ended.get(id);
      throw new AppRefusal(404, STATUS.NO_QKD_CONNECTION, why ? `key stream ${id} ${why}` : `unknown key stream ${id}: ` +
        'open it with open_connect first');
    }
    if (!this.sideOf(s, caller)) {
      throw new AppRefusal(401, STATUS.NO_QKD_CONNECTION, `application '${caller}' is neither the source nor the destination ` +
        `of key stream ${id}`);
    }
    return s;
  }

  private async open(caller: string, body: unknown): Promise<Res> {
    const r = parseOpen(body);
    const side: Side | undefined = r.source === caller ? 'source' : r.destination === caller ? 'destination' : undefined;
    if (!side) {
      throw new AppRefusal(401, STATUS.NO_QKD_CONNECTION, `application '${caller}' (the certificate's CN) must be the source or ` +
        `the destination of the stream it opens (got ${r.source} -> ${r.destination})`);
    }
    const other = side === 'source' ? r.destination : r.source;
    if (!this.h.saes.remote.includes(other)) {
      throw new AppRefusal(503, STATUS.NO_QKD_CONNECTION, `no QKD connection to application '${other}': it is not an SAE ` +
        "of this KMS's peer");
    }
    const existing = r.keyStreamId ? this.streams.get(r.keyStreamId) : undefined;
    if (existing) return this.join(existing, side, r);
    const cap = this.o.maxStreamsPerSae ?? 16;
    if ([...this.streams.values()].filter((s) => s.source === caller || s.destination === caller).length >= cap) {
      throw new AppRefusal(503, STATUS.NO_QKD_CONNECTION, `application '${caller}' has ${cap} key streams open, the most ` +
        'allowed (qkd004.maxStreamsPerSae): close one first');
    }
    if (r.keyStreamId && this.ended.has(r.keyStreamId)) {
      throw new AppRefusal(400, STATUS.KSID_IN_USE, `key_stream_ID ${r.keyStreamId} was used by a stream that ${this.ended.get(r.keyStreamId)}; ` +
        'open a new stream without key_stream_ID');
    }
    const body2 = { op: 'open', source: r.source, destination: r.destination, side, key_stream_ID: r.keyStreamId ?? null, qos: r.qos };
    if (!this.h.coordinator) {
      // The coordinator admits; it sends the stream record back (and to nobody else).
      const a = await this.peerCall(body2);
      if (!a) throw new AppRefusal(503, STATUS.NO_QKD_CONNECTION, "the peer KMS (the link's coordinator) is unreachable; retry later");
      if (a.body?.stream && !this.streams.has((a.body.stream as WireStream).id)) this.adopt(a.body.stream as WireStream);
      const b = { ...(a.body ?? {}) } as Record<string, unknown>;
      delete b.stream;
      return { status: a.status, body: b };
    }
    return this.create(r.source, r.destination, side, r.keyStreamId, r.qos);
  }

  /** The second application of a stream connects (status 0), or the id is in use (status 5). */
  private async join(s: AppStream, side: Side, r: { source: string; destination: string; qos: unknown }): Promise<Res> {
    if (s.source !== r.source || s.destination !== r.destination) {
      throw new AppRefusal(400, STATUS.KSID_IN_USE, `key_stream_ID ${s.id} is in use by another pair of applications`);
    }
    if (s.connected[side]) {
      throw new AppRefusal(400, STATUS.KSID_IN_USE, `key_stream_ID ${s.id} is already open for the ${side} application ` +
        `'${side === 'source' ? s.source : s.destination}'; close it first or use another id`);
    }
    if (!qosCompatible(r.qos, s.qos)) {
      this.m.refusedQos++;
      return answer(STATUS.QOS_COUNTER_PROPOSAL, { key_stream_ID: s.id, qos: s.qos, message: 'the stream was opened with ' +
        'another QoS; open it again with this one (or null fields)' });
    }
    s.connected[side] = true; // before the await: a concurrent second open of this side gets status 5
    const a = await this.peerCall({ op: 'connected', key_stream_ID: s.id, side });
    if (!a || a.status !== 200) {
      s.connected[side] = false;
      throw new AppRefusal(503, STATUS.NO_QKD_CONNECTION, 'the peer KMS is unreachable; retry later');
    }
    this.h.log('info', 'qkd004 stream connected at both ends', { key_stream_ID: s.id, side });
    return answer(STATUS.OK, { key_stream_ID: s.id, qos: s.qos });
  }

  /** Coordinator: admits a new stream and tells the peer KMS. */
  private async create(source: string, destination: string, side: Side, id: string | undefined, rawQos: unknown,
    fromPeer = false): Promise<Res & { stream?: WireStream }> {
    const link = this.h.linkStream();
    if (!link) throw new AppRefusal(503, STATUS.NO_QKD_CONNECTION, 'no QKD link stream is open on this KMS yet; retry later');
    const { qos, reasons } = admitQos(rawQos, this.limits(link.chunkBytes));
    if (reasons.length) {
      this.m.refusedQos++;
      this.h.log('info', 'qkd004 open: QoS counter-proposed', { source, destination, reasons });
      return answer(STATUS.QOS_COUNTER_PROPOSAL, { key_stream_ID: null, qos, message: `requested QoS cannot be met: ` +
        `${reasons.join('; ')}; the qos in this answer can` });
    }
    const nowMs = this.h.now();
    const g = grouping(qos.key_chunk_size, link.chunkBytes);
    if (id && (this.streams.has(id) || this.admitting.has(id))) {
      throw new AppRefusal(400, STATUS.KSID_IN_USE, `key_stream_ID ${id} is already in use`);
    }
    const s: AppStream = { id: id ?? randomUUID(), source, destination, qos, sid: link.keyStreamId,
      chunkBytes: link.chunkBytes, ...g, openedMs: nowMs, expiresMs: nowMs + qos.ttl * 1000,
      connected: { source: side === 'source', destination: side === 'destination' }, groups: new Map(), cut: new Set(), taken: new Map(),
      next: 0, spare: [], bucket: { bits: 0, atMs: nowMs }, chain: Promise.resolve() };
    this.resetBucket(s);
    const wire = toWire(s);
    if (!fromPeer) {
      // Counted as admitted while the peer learns of it: concurrent opens cannot overbook the link.
      this.admitting.set(s.id, qos.min_bps);
      let a;
      try {
        a = await this.peerCall({ op: 'sync', stream: wire });
      } finally {
        this.admitting.delete(s.id);
      }
      if (!a || a.status !== 200) throw new AppRefusal(503, STATUS.NO_QKD_CONNECTION, 'the peer KMS is unreachable; retry later');
    }
    this.streams.set(s.id, s);
    this.m.opened++;
    this.h.log('info', 'qkd004 stream opened', { key_stream_ID: s.id, source, destination, qos });
    this.topUpSoon();
    return { ...answer(STATUS.PEER_NOT_CONNECTED, { key_stream_ID: s.id, qos }), stream: wire };
  }

  private adopt(w: WireStream): AppStream {
    const nowMs = this.h.now();
    const g = grouping(w.qos.key_chunk_size, w.chunkBytes);
    const s: AppStream = { id: w.id, source: w.source, destination: w.destination, qos: w.qos, sid: w.sid,
      chunkBytes: w.chunkBytes, ...g, openedMs: nowMs, expiresMs: nowMs + w.ttlLeftMs, connected: { ...w.connected },
      groups: new Map(), cut: new Set(), taken: new Map(), next: 0, spare: [], bucket: { bits: 0, atMs: nowMs }, chain: Promise.resolve() };
    this.resetBucket(s);
    this.streams.set(s.id, s);
    this.m.opened++;
    return s;
  }

  private resetBucket(s: AppStream): void {
    s.bucket = { bits: Math.max(s.qos.key_chunk_size * 8, s.qos.max_bps), atMs: this.h.now() };
  }

  private async getKey(caller: string, body: unknown): Promise<Res> {
    const r = parseGetKey(body);
    const s = this.known(r.keyStreamId, caller);
    const run = s.chain.then(() => this.getKeyNow(s, caller, r.index, r.metadataSize));
    s.chain = run.catch(() => undefined);
    return run;
  }

  private async getKeyNow(s: AppStream, caller: string, want: number | undefined, mdSize: number | undefined): Promise<Res> {
    if (!this.streams.has(s.id)) throw new AppRefusal(404, STATUS.NO_QKD_CONNECTION, `key stream ${s.id} ${this.ended.get(s.id) ?? 'ended'}`);
    if (this.h.now() >= s.expiresMs) {
      throw new AppRefusal(404, STATUS.NO_QKD_CONNECTION, `key stream ${s.id} reached its TTL of ${s.qos.ttl} s`);
    }
    const side = this.sideOf(s, caller)!;
    const otherSide: Side = side === 'source' ? 'destination' : 'source';
    if (!s.connected[otherSide]) {
      return answer(STATUS.PEER_APP_NOT_CONNECTED, { message: `the peer application '${side === 'source' ? s.destination :
        s.source}' has not opened key stream ${s.id} yet (open_connect with this key_stream_ID at its KMS)` });
    }
    const index = want ?? s.next;
    const t0 = this.h.now();
    const deadline = t0 + s.qos.timeout;
    const meta = { key_stream_ID: s.id, index, key_size_bytes: s.qos.key_chunk_size, source: s.source,
      destination: s.destination, kms: this.h.id };
    const metaLen = JSON.stringify(meta).length;
    if (mdSize !== undefined && mdSize < metaLen) {
      return answer(STATUS.METADATA_TOO_SMALL, { metadata: { size: metaLen }, message: `metadata.size ${mdSize} is too small: ` +
        `this key's metadata needs ${metaLen} characters` });
    }
    // max_bps: wait for the bucket within the timeout, else refuse.
    const bits = s.qos.key_chunk_size * 8;
    if (s.qos.max_bps > 0) {
      const burst = Math.max(bits, s.qos.max_bps);
      s.bucket.bits = Math.min(burst, s.bucket.bits + ((t0 - s.bucket.atMs) / 1000) * s.qos.max_bps);
      s.bucket.atMs = t0;
      if (s.bucket.bits < bits) {
        const waitMs = Math.ceil(((bits - s.bucket.bits) / s.qos.max_bps) * 1000);
        if (waitMs > s.qos.timeout) return this.short(s, 'over', `the stream's max_bps ${s.qos.max_bps}`);
        await sleep(waitMs);
        s.bucket.bits = Math.min(burst, s.bucket.bits + (waitMs / 1000) * s.qos.max_bps);
        s.bucket.atMs = this.h.now();
      }
    }
    const group = Math.floor(index / s.keysPerGroup);
    if (!s.groups.has(group)) {
      const got = this.h.coordinator ? await this.allocate(s, group, deadline) : await this.allocateAtPeer(s, group, deadline);
      if (got === 'closed') throw new AppRefusal(404, STATUS.NO_QKD_CONNECTION, `key stream ${s.id} ${this.ended.get(s.id) ?? 'ended'}`);
      if (got === 'peer') return answer(STATUS.NO_QKD_CONNECTION, { message: 'the peer KMS is unreachable; retry later' });
      if (got !== 'ok' || !s.groups.has(group)) return this.short(s, s.qos.timeout > 0 ? 'timeout' : 'short', '');
    }
    const store = this.h.store();
    // Keys the size of the link's chunks are the chunks themselves (no reformat: one commit less).
    const direct = s.keysPerGroup === 1 && s.chunksPerGroup === 1;
    if (!direct && !s.cut.has(group)) {
      const items = s.groups.get(group)!;
      const keyIds = Array.from({ length: s.keysPerGroup }, (_, k) => appKeyId(s.id, group * s.keysPerGroup + k));
      const ok = store.reformat(s.sid, items, HOLDER(s.id), keyIds.map(() => s.qos.key_chunk_size),
        keyIds.map((keyId, key) => ({ keyId, holder: HOLDER(s.id), key })), JSON.stringify({ qkd004: s.id, group,
          chunks: items.map((i) => i.index), key_size_bytes: s.qos.key_chunk_size }), this.h.now());
      if (!ok) {
        return answer(STATUS.INSUFFICIENT_KEY, { message: `the link chunks reserved for index ${index} of stream ${s.id} ` +
          'reached their TTL before use; ask for a later index' });
      }
      s.cut.add(group);
    }
    const keyId = direct ? deriveKeyId(s.sid, s.groups.get(group)![0].index) : appKeyId(s.id, index);
    const taken = await store.takeAll([keyId], HOLDER(s.id), '', this.h.now());
    if (direct && !taken.refused.length) s.cut.add(group);
    if (taken.refused.length) {
      return answer(STATUS.INSUFFICIENT_KEY, { message: `index ${index} of key stream ${s.id} was already delivered to ` +
        `'${caller}' (each index is delivered once per application) or expired; ask for index ${Math.max(s.next, index + 1)}` }, 400);
    }
    s.bucket.bits -= bits;
    s.next = Math.max(s.next, index + 1);
    s.taken.set(group, (s.taken.get(group) ?? 0) + 1);
    const key = taken.keys[0].key;
    const kb = key.toString('base64');
    key.fill(0);
    this.m.delivered++;
    return answer(STATUS.OK, { index, key_buffer: kb, ...(mdSize !== undefined ? { metadata: { size: metaLen, buffer: meta } } : {}) });
  }

  private short(s: AppStream, why: 'short' | 'timeout' | 'over', what: string): Res {
    if (why === 'timeout') {
      this.m.timedOut++;
      return answer(STATUS.TIMEOUT, { message: `no key for stream ${s.id} within its timeout of ${s.qos.timeout} ms ` +
        '(the link is short of key or higher-priority streams were served first); retry' });
    }
    this.m.short++;
    return answer(STATUS.INSUFFICIENT_KEY, { message: why === 'over' ? `GET_KEY now would exceed ${what} ` +
      `(timeout ${s.qos.timeout} ms is too short to wait); retry later` : `insufficient key for stream ${s.id} ` +
      '(the link has not produced enough; qos.timeout > 0 waits for it); retry later' });
  }

  private async closeCall(caller: string, body: unknown): Promise<Res> {
    const id = parseClose(body);
    const s = this.known(id, caller);
    if (this.h.coordinator) await this.end(s, `was closed by '${caller}'`);
    else {
      const a = await this.peerCall({ op: 'close-request', key_stream_ID: id, by: caller });
      if (!a || a.status !== 200) this.finish(s, (g) => s.cut.has(g), [], `was closed by '${caller}'`);
    }
    return answer(STATUS.OK, { key_stream_ID: id });
  }

  // ------------------------------------------------------------- allocation (coordinator)

  private allocate(s: AppStream, group: number, deadlineMs: number): Promise<'ok' | 'short' | 'closed' | 'peer'> {
    if (s.groups.has(group)) return Promise.resolve('ok');
    return new Promise((done) => {
      this.waiters.push({ s, group, deadlineMs, seq: this.seq++, done });
      this.pump();
    });
  }

  private async allocateAtPeer(s: AppStream, group: number, deadlineMs: number): Promise<'ok' | 'short' | 'closed' | 'peer'> {
    const waitMs = Math.max(0, deadlineMs - this.h.now());
    const a = await this.peerCall({ op: 'allocate', key_stream_ID: s.id, group, wait_ms: waitMs }, waitMs);
    if (!a) return 'peer';
    const r = a.body?.result;
    const items = checkItems(a.body?.items);
    if (r === 'ok' && !s.groups.has(group) && items?.length === s.chunksPerGroup) s.groups.set(group, items);
    return r === 'ok' || r === 'short' || r === 'closed' ? r : 'peer';
  }

  /** Runs allocation passes until none is asked for; one at a time. */
  private pump(): void {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = (async () => {
      do {
        this.again = false;
        try {
          await this.pass();
        } catch (err) {
          this.h.log('error', 'qkd004 allocation failed', { error: (err as Error).message });
          // A pass that keeps failing must not hold requests past their timeout.
          const nowMs = this.h.now();
          for (const w of this.waiters.filter((x) => nowMs >= x.deadlineMs)) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.done('short');
          }
        }
      } while (this.again);
    })().finally(() => {
      this.pumping = undefined;
      this.schedule();
    });
  }

  /** While requests wait, look again soon (key arrives continuously). */
  private schedule(): void {
    if (this.pumpTimer || !this.waiters.length) return;
    this.pumpTimer = setTimeout(() => {
      this.pumpTimer = undefined;
      this.pump();
    }, 25);
    this.pumpTimer.unref();
  }

  private topUpSoon(): void {
    if (this.h.coordinator) this.pump();
  }

  private byPriority = (a: { s: AppStream; seq?: number }, b: { s: AppStream; seq?: number }) =>
    b.s.qos.priority - a.s.qos.priority || (a.seq ?? a.s.openedMs) - (b.seq ?? b.s.openedMs);

  /** Chunks a stream keeps reserved ahead for its min_bps (0 without one). */
  private reserveTarget(s: AppStream): number {
    if (s.qos.min_bps <= 0) return 0;
    const want = Math.ceil((s.qos.min_bps / 8) * (this.o.reserveS ?? 2) / s.chunkBytes);
    return Math.max(s.chunksPerGroup, Math.ceil(want / s.chunksPerGroup) * s.chunksPerGroup);
  }

  /**
   * Coordinator: held chunks of link stream `sid` that min_bps reservations still lack (the next
   * top-up takes them, oldest first). ETSI 014 leaves that many alone, so a greedy 014
   * application cannot starve a stream's guaranteed rate. 0 on the other KMS.
   */
  owedChunks(sid: string): number {
    if (!this.h.coordinator) return 0;
    let n = 0;
    for (const s of this.streams.values()) if (s.sid === sid) n += Math.max(0, this.reserveTarget(s) - s.spare.length);
    return n;
  }

  /**
   * One allocation pass: standing reservations of min_bps streams first (by priority), then
   * waiting GET_KEYs by priority and arrival. When key is short the pass stops at the first
   * waiter it cannot serve: a lower priority never overtakes a higher one.
   */
  private async pass(): Promise<void> {
    const streams = [...this.streams.values()].sort((a, b) => this.byPriority({ s: a }, { s: b }));
    for (const s of streams) {
      const target = this.reserveTarget(s);
      if (s.spare.length >= target) continue;
      const got = await this.reservePair(s, target - s.spare.length, false);
      if (got === 'peer') return;
      if (s.spare.length < target) break;
    }
    this.waiters.sort((a, b) => this.byPriority(a, b));
    let blocked = false;
    for (const w of [...this.waiters]) {
      const drop = (r: 'ok' | 'short' | 'closed' | 'peer') => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.done(r);
      };
      if (!this.streams.has(w.s.id)) {
        drop('closed');
        continue;
      }
      if (w.s.groups.has(w.group)) {
        drop('ok');
        continue;
      }
      if (!blocked) {
        const cpg = w.s.chunksPerGroup;
        if (w.s.spare.length < cpg) {
          const got = await this.reservePair(w.s, cpg - w.s.spare.length, true);
          if (got === 'peer') {
            drop(this.streams.has(w.s.id) ? 'peer' : 'closed');
            continue;
          }
        }
        if (w.s.spare.length >= cpg) {
          // Alone: assign a few groups ahead (one round trip for several keys); with others waiting, one.
          const want = unassigned(w.s, w.group, this.waiters.length > 1 ? 1 : this.o.prefetchGroups ?? 8);
          if (want.length * cpg > w.s.spare.length) await this.reservePair(w.s, want.length * cpg - w.s.spare.length, false);
          const groups = want.slice(0, Math.floor(w.s.spare.length / cpg)).map((group, k) =>
            ({ group, items: w.s.spare.slice(k * cpg, (k + 1) * cpg) }));
          // The coordinator's assignment is final once made: the peer learns it now or, if this
          // message is lost, in the answer to its own allocate (never a second, different one).
          w.s.spare.splice(0, groups.length * cpg);
          for (const g of groups) w.s.groups.set(g.group, g.items);
          const a = await this.peerCall({ op: 'group', key_stream_ID: w.s.id, groups });
          if (a?.status === 404) {
            await this.end(w.s, 'was ended by the peer KMS (it restarted)');
            drop('closed');
            continue;
          }
          if (a && a.status !== 200) this.h.log('error', 'qkd004: the peer KMS refused a group assignment', { key_stream_ID: w.s.id,
            status: a.status, message: a.body?.message });
          drop('ok');
          continue;
        }
        blocked = true;
      }
      if (this.h.now() >= w.deadlineMs) drop('short');
    }
  }

  /**
   * Reserves `n` held chunks of the stream's link stream at both KMSs for the stream (digests
   * compared, commitments checked as for ETSI 014) and adds them to its spare chunks.
   * `allOrNothing`: fewer than n available → none taken.
   */
  private async reservePair(s: AppStream, n: number, allOrNothing: boolean): Promise<'ok' | 'short' | 'peer'> {
    const store = this.h.store();
    const nowMs = this.h.now();
    const cands = store.candidates(s.sid, n, nowMs, false);
    if (!cands.length || (allOrNothing && cands.length < n)) return 'short';
    const items = cands.map((c) => ({ index: c.index, digest: c.digest }));
    const mine = store.reserve(s.sid, items, HOLDER(s.id), nowMs, true);
    if (mine.length !== items.length) return 'short';
    const undo = () => store.unreserve(s.sid, mine, HOLDER(s.id), this.h.now());
    const commitments = this.h.ownCommitments(s.sid, mine);
    const a = await this.peerCall({ op: 'reserve', key_stream_ID: s.id, items, commitments });
    if (!a || a.status === 404) {
      undo();
      if (a) await this.end(s, 'was ended by the peer KMS (it restarted)');
      return 'peer';
    }
    const reserved = a.body?.reserved;
    if (a.status !== 200 || !Array.isArray(reserved) || reserved.length !== items.length) {
      undo();
      return 'short';
    }
    if (commitments && this.h.badPeerCommitments(s.sid, items, Array.isArray(a.body.commitments) ? a.body.commitments : []).length) {
      undo();
      await this.peerCall({ op: 'unreserve', key_stream_ID: s.id, items });
      return 'short';
    }
    s.spare.push(...items);
    return 'ok';
  }

  // ------------------------------------------------------------- ending streams

  /** Coordinator: ends a stream at both KMSs (close or TTL). */
  private async end(s: AppStream, why: string): Promise<void> {
    if (!this.streams.has(s.id)) return;
    this.streams.delete(s.id);
    // The newest groups too (at most 4 096 chunks: the body stays small): one whose assignment the
    // peer never received would otherwise stay reserved there until the chunks' TTL.
    const groups: { group: number; items: Item[] }[] = [];
    let n = 0;
    for (const [group, items] of [...s.groups].sort((x, y) => y[0] - x[0])) {
      if ((n += items.length) > 4096) break;
      groups.push({ group, items });
    }
    const a = await this.peerCall({ op: 'close', key_stream_ID: s.id, cut: toRanges(s.cut), spare: s.spare, groups, why });
    const theirs = checkRanges(a?.body?.cut);
    if (!a) this.h.log('warn', 'qkd004 close: peer KMS unreachable; its copy ends at the TTL', { key_stream_ID: s.id });
    this.finish(s, (g) => s.cut.has(g) || inRanges(theirs, g), s.spare, why);
  }

  /**
   * Ends a stream here: groups cut into keys at either KMS are erased (their application may hold
   * keys of them), groups never cut and spare chunks go back to the link's pool.
   */
  private finish(s: AppStream, cutAnywhere: (group: number) => boolean, spare: Item[], why: string): void {
    this.streams.delete(s.id);
    this.ended.set(s.id, why);
    if (this.ended.size > 10_000) this.ended.delete(this.ended.keys().next().value!);
    const store = this.h.store();
    const nowMs = this.h.now();
    const back: number[] = spare.map((i) => i.index);
    const erase: string[] = [];
    for (const [g, items] of s.groups) {
      if (s.cut.has(g)) {
        for (let k = 0; k < s.keysPerGroup; k++) erase.push(appKeyId(s.id, g * s.keysPerGroup + k));
      } else if (cutAnywhere(g)) {
        for (const i of items) erase.push(deriveKeyId(s.sid, i.index));
      } else back.push(...items.map((i) => i.index));
    }
    if (back.length) store.unreserve(s.sid, back, HOLDER(s.id), nowMs);
    // Why taken and zeroed: the store erases a key's wrapped bytes when it is handed out; these
    // never leave the KMS.
    void store.takeMany(erase, HOLDER(s.id), nowMs).then((ks) => ks.forEach((k) => k?.key.fill(0)),
      (err: unknown) => this.h.log('error', 'qkd004: erasing unused keys failed', { error: (err as Error).message }));
    for (const w of this.waiters) if (w.s === s) this.pump();
    this.h.log('info', `qkd004 stream ended: it ${why}`, { key_stream_ID: s.id, returned_chunks: back.length,
      erased: erase.length });
  }

  /**
   * What a restart must release, written every tick while streams are open (`stateFile`): per
   * stream the chunks reserved for it here (spare, groups not cut) and the groups cut here whose
   * keys are not all handed out. Not the keys themselves.
   */
  private save(): void {
    const f = this.o.stateFile;
    if (!f || (!this.streams.size && !this.saved)) return;
    const list = [...this.streams.values()].map((s) => ({ id: s.id, sid: s.sid, keysPerGroup: s.keysPerGroup,
      chunksPerGroup: s.chunksPerGroup, spare: s.spare, groups: [...s.groups].filter(([g]) => !s.cut.has(g)),
      cut: toRanges(s.cut), pending: [...s.cut].filter((g) => (s.taken.get(g) ?? 0) < s.keysPerGroup) }));
    writeFileSync(`${f}.tmp`, JSON.stringify(list));
    renameSync(`${f}.tmp`, f);
    this.saved = list.length > 0;
  }

  /** After a restart: the streams of the previous run are ended, their reserved chunks released. */
  private recover(): void {
    this.recovered = true;
    const f = this.o.stateFile;
    if (!f || !existsSync(f)) return;
    let list: Leftover[];
    try {
      list = JSON.parse(readFileSync(f, 'utf8')) as Leftover[];
      if (!Array.isArray(list)) throw new Error('not a list');
    } catch (err) {
      this.h.log('warn', `qkd004: ${f} unreadable; streams of the previous run keep their chunks until the TTL`,
        { error: (err as Error).message });
      return;
    }
    for (const l of list) {
      const s = { id: l.id, sid: l.sid, keysPerGroup: l.keysPerGroup, chunksPerGroup: l.chunksPerGroup,
        groups: new Map([...l.groups, ...l.pending.map((g) => [g, []] as [number, Item[]])]), cut: new Set(l.pending) } as AppStream;
      this.finish(s, (g) => inRanges(l.cut, g), l.spare, 'was ended when its KMS restarted');
      // The peer KMS ends it too (best effort: else it ends at the TTL or at its next call here).
      void this.peerCall({ op: 'close', key_stream_ID: l.id, cut: l.cut, spare: [], why: 'was ended when the peer KMS restarted' });
    }
    this.saved = true;
    this.save();
  }

  /** Every expiry tick: inflow sample, TTL, standing reservations, the state file. */
  tick(): void {
    if (!this.recovered) this.recover();
    const nowMs = this.h.now();
    this.inflow.push({ atMs: nowMs, chunks: this.h.storedChunks() });
    const win = this.o.inflowWindowMs ?? 30_000;
    while (this.inflow.length > 2 && this.inflow[0].atMs < nowMs - win) this.inflow.shift();
    for (const s of [...this.streams.values()]) {
      if (nowMs < s.expiresMs) continue;
      const why = `reached its TTL of ${s.qos.ttl} s`;
      // The destination side waits a little for the coordinator's close, then ends alone.
      if (this.h.coordinator) void this.end(s, why);
      else if (nowMs >= s.expiresMs + 5000) this.finish(s, (g) => s.cut.has(g), [], why);
      else continue;
      this.m.expired++;
    }
    if (this.h.coordinator && this.streams.size) this.pump();
    try {
      this.save();
    } catch (err) {
      this.h.log('error', `qkd004: cannot write ${this.o.stateFile}`, { error: (err as Error).message });
    }
  }

  // ------------------------------------------------------------- KMS <-> KMS

  private async peerCall(body: Record<string, unknown>, extraMs = 0): Promise<{ status: number; body: any } | undefined> {
    if (!this.h.peer) return undefined;
    try {
      return await this.h.peer.request('POST', PEER_PATH, body, (this.o.requestTimeoutMs ?? 10_000) + extraMs);
    } catch (err) {
      this.h.log('warn', 'qkd004: peer KMS call failed', { op: body.op, error: (err as Error).message });
      return undefined;
    }
  }

  /** `POST /api/v1/kms-peer/qkd004` from the peer KMS (already authenticated). */
  async peerRequest(b: Record<string, unknown>): Promise<Res> {
    const bad = (message: string): Res => ({ status: 400, body: { message } });
    const id = typeof b.key_stream_ID === 'string' ? b.key_stream_ID.toLowerCase() : '';
    const s = this.streams.get(id);
    // A stream this KMS no longer has (it restarted, or ended it): the coordinator ends it too.
    if (!s && ['connected', 'reserve', 'unreserve', 'group'].includes(String(b.op))) {
      return { status: 404, body: { message: `unknown key stream ${id}` } };
    }
    switch (b.op) {
      case 'open': {
        if (!this.h.coordinator) return bad('open goes to the coordinator (source-side KMS)');
        try {
          const existing = id ? this.streams.get(id) : undefined;
          const src = String(b.source);
          const dst = String(b.destination);
          const side = b.side === 'source' ? 'source' : 'destination';
          if (id && !isUuid(id)) return bad('open: key_stream_ID must be a UUID or absent');
          if (existing || (id && this.ended.has(id))) {
            return { status: 400, body: { status: STATUS.KSID_IN_USE, message: `key_stream_ID ${id} is already in use` } };
          }
          if (!this.h.saes.remote.includes(side === 'source' ? src : dst)) return bad('the opener is not an SAE of the peer KMS');
          const r = await this.create(src, dst, side, id || undefined, b.qos, true);
          return { status: r.status, body: { ...(r.body as object), stream: r.stream } };
        } catch (err) {
          if (err instanceof AppRefusal) return { status: err.http, body: err.body() };
          throw err;
        }
      }
      case 'sync': {
        const w = checkWire(b.stream);
        if (!w || this.streams.has(w.id)) return bad('sync needs a new stream record');
        this.adopt(w);
        return { status: 200, body: {} };
      }
      case 'connected':
        if (!s || (b.side !== 'source' && b.side !== 'destination')) return bad(`unknown key stream ${id}`);
        s.connected[b.side] = true;
        return { status: 200, body: {} };
      case 'allocate': {
        if (!this.h.coordinator) return bad('allocate goes to the coordinator');
        if (!s) return { status: 200, body: { result: 'closed' } };
        const g = b.group;
        const waitMs = typeof b.wait_ms === 'number' ? Math.min(Math.max(0, b.wait_ms), 60_000) : 0;
        if (!Number.isInteger(g) || (g as number) < 0) return bad('allocate needs a group number');
        const result = await this.allocate(s, g as number, this.h.now() + waitMs);
        return { status: 200, body: { result, items: result === 'ok' ? s.groups.get(g as number) : undefined } };
      }
      case 'reserve': {
        const items = checkItems(b.items);
        if (!s || !items) return bad('reserve needs a known stream and items [{index, digest}]');
        if (this.h.mismatches(s.sid, items).length) return { status: 409, body: { reserved: [] } };
        if (this.h.ownCommitments(s.sid, []) && this.h.badPeerCommitments(s.sid, items,
          Array.isArray(b.commitments) ? b.commitments : []).length) return { status: 409, body: { reserved: [] } };
        const reserved = this.h.store().reserve(s.sid, items, HOLDER(s.id), this.h.now(), true);
        return { status: 200, body: { reserved, commitments: this.h.ownCommitments(s.sid, reserved) } };
      }
      case 'unreserve': {
        const items = checkItems(b.items);
        if (!s || !items) return bad('unreserve needs a known stream and items');
        this.h.store().unreserve(s.sid, items.map((i) => i.index), HOLDER(s.id), this.h.now());
        return { status: 200, body: {} };
      }
      case 'group': {
        const gs = Array.isArray(b.groups) ? (b.groups as { group?: unknown; items?: unknown }[]) : [];
        const ok = gs.map((g) => ({ group: g?.group, items: checkItems(g?.items) }));
        if (!s || !ok.length || !ok.every((g) => Number.isInteger(g.group) && (g.group as number) >= 0 &&
          g.items?.length === s.chunksPerGroup)) return bad('group needs a known stream and groups [{group, items}]');
        // Idempotent: the same assignment again is fine; another one for a group is a bug or an attack.
        const key = (items: Item[]) => items.map((i) => `${i.index}:${i.digest}`).join(',');
        const clash = ok.filter((g) => s.groups.has(g.group as number) && key(s.groups.get(g.group as number)!) !== key(g.items!));
        if (clash.length) {
          this.h.log('error', 'qkd004: the coordinator assigned other chunks to groups already assigned; refused',
            { key_stream_ID: s.id, groups: clash.map((g) => g.group) });
          return { status: 409, body: { message: `groups ${clash.map((g) => g.group).join(', ')} already have other chunks` } };
        }
        for (const g of ok) s.groups.set(g.group as number, g.items!);
        return { status: 200, body: {} };
      }
      case 'close': {
        if (!s) return { status: 200, body: { cut: [] } };
        const theirs = checkRanges(b.cut);
        const mine = [...s.cut];
        for (const g of Array.isArray(b.groups) ? (b.groups as { group?: unknown; items?: unknown }[]) : []) {
          const items = checkItems(g?.items);
          if (Number.isInteger(g?.group) && items && !s.groups.has(g.group as number)) s.groups.set(g.group as number, items);
        }
        this.finish(s, (g) => s.cut.has(g) || inRanges(theirs, g), checkItems(b.spare) ?? [], String(b.why ?? 'was closed'));
        return { status: 200, body: { cut: toRanges(mine) } };
      }
      case 'close-request':
        if (!this.h.coordinator) return bad('close-request goes to the coordinator');
        if (s) await this.end(s, `was closed by '${String(b.by)}'`);
        return { status: 200, body: {} };
      default:
        return bad(`unknown qkd004 peer operation ${JSON.stringify(b.op)}`);
    }
  }

  close(): void {
    clearTimeout(this.pumpTimer);
    try {
      if (this.recovered) this.save();
    } catch {
      /* the next start releases what the last tick's file names */
    }
    for (const w of this.waiters.splice(0)) w.done('closed');
  }
}

function toWire(s: AppStream): WireStream {
  return { id: s.id, source: s.source, destination: s.destination, qos: s.qos, sid: s.sid, chunkBytes: s.chunkBytes,
    ttlLeftMs: s.expiresMs - s.openedMs, connected: s.connected };
}

/** Up to `max` group numbers from `from` on that have no chunks yet. */
function unassigned(s: AppStream, from: number, max: number): number[] {
  const out: number[] = [];
  for (let g = from; out.length < max && g < from + 4 * max; g++) if (!s.groups.has(g)) out.push(g);
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
