/**
 * The site KMS of a trusted-node network: one per site, serving that site's SAEs over ETSI GS QKD
 * 014 for keys shared with an SAE at any other site, by hop-by-hop one-time-pad relay over the
 * QKD links (ETSI GS QKD 020's "key relay through trusted nodes", as far as it fits; see
 * docs/network.md for the message and the security argument).
 *
 * Behind it, each of the site's links has its own reference KMS (src/delivery/kms.ts) fed by that
 * link's node; the site KMS is an SAE of each of them (its identity on the link's PKI) and draws
 * link keys with enc_keys / dec_keys like any application, so link keys are confirmed by both
 * link KMSs (digests, node commitments) and erased when drawn: a link key can be used once only.
 *
 * A request at site A for an SAE at site C:
 *   1. A picks a path (routing.ts: fewest hops over links not marked down and with enough key);
 *   2. A draws n+m keys from its link to the next site: the first n ARE the relayed keys K, the
 *      next m give a 32-byte one-time MAC key; it sends the hop message (key_IDs, path, link
 *      key_IDs, tag) to the next site's KMS over mutual TLS;
 *   3. each site on the path takes the same link keys from its side (dec_keys: erased there too),
 *      checks the tag, recovers K (hop 1: the pads themselves; later hops: ciphertext XOR pads),
 *      then draws fresh keys on its link to the next site, sends K XOR pads' with a new tag, and
 *      forgets K (zeroed) once the answer is back;
 *   4. the last site stores K durably (wrapped at rest, src/delivery/store.ts) reserved for the
 *      SAE pair and answers; only then does A hand K to its SAE.
 * A failure on a hop comes back as 503 naming the link; A marks that link down for `linkDownMs`
 * and tries the next path. The relayed key carries its provenance (path, trusted nodes) in the
 * ETSI 014 `key_extension` and is never labelled a direct QKD key.
 *
 * Concurrency: requests are served concurrently; each link KMS serialises its own releases.
 * Events: 'log' ({level, msg, ...}) and 'alarm'; none carries key bytes.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { ConfigError, type QkdError } from '../errors.ts';
import { JsonClient, percentiles, Recent, startServer, type Endpoint, type Req, type Res, type Server,
  type TlsConfig } from '../delivery/http.ts';
import { parseKeyIds, parseKeyRequest, Refusal, type KeyRequest, type Limits } from '../delivery/etsi014.ts';
import { digestOf, KeyStore } from '../delivery/store.ts';
import { isUuid } from '../delivery/types.ts';
import { candidatePaths, linkName } from './routing.ts';
import { MAC_KEY_BYTES, oneTimeMac, verifyMac, xorInto } from './otp.ts';
import { linkBetween, siteIdentity, siteOfSae, type Topology } from './topology.ts';

/** One of the site's links: its link KMS and the site KMS's SAE identity there. */
export interface SiteLink {
  /** The neighbour site at the other end. */
  peer: string;
  /** The link KMS on this site's side (ETSI 014 base URL and its certificate CN). */
  kms: Endpoint;
  /** Mutual TLS material on the link's PKI: the site KMS's client identity there. */
  tls: TlsConfig;
  /** Our SAE id and the neighbour site KMS's SAE id on that link. */
  mySae: string;
  peerSae: string;
}

export interface RelaySiteOptions {
  site: string;
  topology: Topology;
  listen?: { host?: string; port?: number };
  /** Network PKI: this site KMS's identity (CN site<Name>); SAEs and neighbour sites chain to its CA. */
  tls: TlsConfig;
  links: SiteLink[];
  /** Site KMS base URL of each neighbour. */
  peers: Record<string, string>;
  /** Relayed keys waiting for the slave SAE (SQLite, wrapped at rest with `wrapKey`). */
  dbPath: string;
  wrapKey: Uint8Array;
  /** Lifetime of a relayed key waiting at the destination (s, default 3600). */
  ttlS?: number;
  /** A link that failed is left out of routing this long (ms, default 5000). */
  linkDownMs?: number;
  /** How often the site's own links' key counts are read (ms, default 1000). */
  pollMs?: number;
  requestTimeoutMs?: number;
  now?: () => number;
}

interface LinkState {
  /** Deliverable keys at our link KMS (its ETSI 014 status); null before the first answer. */
  storedKeys: number | null;
  reachable: boolean;
  downUntilMs: number;
  reason?: string;
}

/** A hop or link that failed: the source marks `link` down and tries another path. */
class HopFailure extends Error {
  /** `belowLevel`: the link KMS has no key at the relay's ε bound (not a fault of the link: it is not marked down). */
  constructor(readonly link: string, readonly reason: string, readonly status = 503, readonly belowLevel = false) {
    super(reason);
  }
}

/** Drawn or taken link keys with the largest ε their link KMS labelled them with (null: unlabelled). */
interface LinkKeys {
  ids: string[];
  keys: Buffer[];
  epsilon: number | null;
}

/** Limits of relayed keys (each hop draws number + macKeys(size) link keys of `size` bits). */
export const RELAY_LIMITS: Limits = { keySizeBits: 256, minKeySizeBits: 64, maxKeySizeBits: 4096, maxKeysPerRequest: 32,
  maxSaeIdCount: 0 };

/** Link keys of `sizeBits` that make one 32-byte MAC key. */
export const macKeys = (sizeBits: number): number => Math.ceil((MAC_KEY_BYTES * 8) / sizeBits);

/**
 * Upper bound on the chance of forging one hop's one-time MAC (otp.ts: L / p for L blocks of 15
 * bytes). A site KMS reads at most 1 MiB of body, so L < 2^17 and L / p < 2^-110; 2^-100 is kept.
 */
export const MAC_FORGERY_PER_HOP = 2 ** -100;

/**
 * ε of one relayed key of `size` bits over `hopEps.length` hops (docs/network.md, "Security
 * level"): on each hop the key depends on its own pad and on the macKeys(size) link keys of the
 * hop's MAC key, plus the MAC's forgery chance. `hopEps[i]` is the largest ε of the link keys
 * drawn on hop i; undefined if a hop's ε is unknown.
 */
export function relayedEpsilon(hopEps: (number | null | undefined)[], size: number): number | undefined {
  let sum = 0;
  for (const e of hopEps) {
    if (typeof e !== 'number') return undefined;
    sum += (1 + macKeys(size)) * e + MAC_FORGERY_PER_HOP;
  }
  return sum;
}

/**
 * The ε every link key must meet so that a relayed key over `hops` hops meets `maxEpsilon`: the
 * inverse of relayedEpsilon with every hop at the bound, shrunk by 2^-40 so that rounding in the
 * sum never takes the result above `maxEpsilon`. Not positive: no link key can meet the level.
 */
export function linkEpsilonFor(maxEpsilon: number, hops: number, size: number): number {
  return ((maxEpsilon - hops * MAC_FORGERY_PER_HOP) / (hops * (1 + macKeys(size)))) * (1 - 2 ** -40);
}

/** A hop as listed in the hop message: its link, the link key_IDs drawn on it and (v2) their ε. */
export interface HopRecord {
  link: string;
  link_key_IDs: string[];
  /** v2: largest ε of those link keys as labelled by the link KMS (key_extension qkd_epsilon); null if unlabelled. */
  link_epsilon?: number | null;
}

/**
 * The wire form of one hop (docs/network.md, "Hop message"). Version 2 adds `max_link_epsilon`
 * and each hop's `link_epsilon`, both under the tag; version 1 (no security level) is still read.
 */
export interface HopMessage {
  v: 1 | 2;
  relay_id: string;
  key_IDs: string[];
  master_SAE_ID: string;
  slave_SAE_ID: string;
  /** Bits per relayed key. */
  size: number;
  path: string[];
  /** Index in `path` of the receiving site (1 = the first hop). */
  hop: number;
  /** Links used so far and the link key_IDs drawn on each (provenance; no key bytes). */
  hops: HopRecord[];
  /**
   * v2: the ε every link key of this relay must meet (each site draws its next link's keys with
   * qkd_max_epsilon this); null when the SAE asked for no level.
   */
  max_link_epsilon?: number | null;
  /** Base64 of K XOR pads (all keys concatenated); null on the first hop (the pads are K). */
  ct: string | null;
  /** Base64 of the 16-byte one-time tag over authBytes(message). */
  tag: string;
}

/** What the tag covers: every field but the tag, in a fixed order, then the ciphertext bytes. */
export function authBytes(m: Omit<HopMessage, 'tag'>, ct: Uint8Array): Buffer {
  const fields: unknown[] = ['qkd-relay-hop', m.v, m.relay_id, m.key_IDs, m.master_SAE_ID, m.slave_SAE_ID, m.size, m.path,
    m.hop, m.hops];
  if (m.v !== 1) fields.push(m.max_link_epsilon ?? null);
  const head = JSON.stringify(fields);
  return Buffer.concat([Buffer.from(head + '\0'), ct]);
}

export interface RelayMetrics {
  /** Keys this site handed to its SAEs after a relay it started, and relays it started that failed. */
  relayedOut: number;
  failedOut: number;
  /** Hop messages accepted (forwarded or stored), refused. */
  hopsIn: number;
  hopsRefused: number;
  /** Relayed keys stored here for local SAEs, and handed out to them. */
  stored: number;
  delivered: number;
  latencyMs: { p50: number; p90: number; p99: number; count: number };
  links: Record<string, { peer: string; storedKeys: number | null; reachable: boolean; down: boolean; reason?: string }>;
}

export class RelaySite extends EventEmitter {
  readonly site: string;
  url = '';
  private server?: Server;
  private readonly o: RelaySiteOptions;
  private readonly store: KeyStore;
  private readonly linkClients = new Map<string, JsonClient>();
  private readonly peerClients = new Map<string, JsonClient>();
  private readonly linkState = new Map<string, LinkState>();
  private readonly seen = new Set<string>();
  private readonly lat = new Recent();
  private poller?: NodeJS.Timeout;
  private readonly now: () => number;
  private readonly m = { relayedOut: 0, failedOut: 0, hopsIn: 0, hopsRefused: 0, stored: 0, delivered: 0 };

  constructor(o: RelaySiteOptions) {
    super();
    this.o = o;
    this.site = o.site;
    this.now = o.now ?? Date.now;
    if (!o.topology.sites.includes(o.site)) throw new ConfigError('RELAY_SITE', `site ${o.site} is not in the topology`);
    for (const l of o.links) {
      if (!linkBetween(o.topology, o.site, l.peer)) {
        throw new ConfigError('RELAY_SITE', `site ${o.site} has a link KMS towards ${l.peer} but the topology has no such link`);
      }
      if (!o.peers[l.peer]) throw new ConfigError('RELAY_SITE', `no site KMS URL for neighbour ${l.peer}`);
      this.linkClients.set(l.peer, new JsonClient(l.kms, { tls: l.tls }));
      this.peerClients.set(l.peer, new JsonClient({ url: o.peers[l.peer], id: siteIdentity(l.peer) }, { tls: o.tls }));
      this.linkState.set(l.peer, { storedKeys: null, reachable: false, downUntilMs: 0 });
    }
    this.store = KeyStore.open(o.dbPath, o.wrapKey, 1_000_000);
  }

  async start(): Promise<void> {
    this.server = await startServer({ tls: this.o.tls, host: this.o.listen?.host, port: this.o.listen?.port,
      name: `site KMS ${this.site}` }, (r) => this.handle(r), (err) => this.log('error', 'request handler failed',
      { code: (err as QkdError)?.code, error: (err as Error)?.message }));
    this.url = this.server.url;
    await this.pollLinks();
    this.poller = setInterval(() => void this.pollLinks(), this.o.pollMs ?? 1000);
    this.poller.unref();
  }

  private log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
    this.emit('log', { level, msg, site: this.site, ...fields });
  }

  private link(peer: string): SiteLink {
    return this.o.links.find((l) => l.peer === peer)!;
  }

  private linkId(x: string, y: string): string {
    return linkName(this.o.topology, x, y);
  }

  /** Reads each own link's deliverable key count (ETSI 014 status at our link KMS). */
  async pollLinks(): Promise<void> {
    await Promise.all(this.o.links.map(async (l) => {
      const st = this.linkState.get(l.peer)!;
      try {
        const r = await this.linkClients.get(l.peer)!.request('GET', `/api/v1/keys/${encodeURIComponent(l.peerSae)}/status`,
          undefined, 5000);
        st.reachable = r.status === 200;
        st.storedKeys = r.status === 200 && typeof r.body?.stored_key_count === 'number' ? r.body.stored_key_count : 0;
      } catch {
        st.reachable = false;
        st.storedKeys = 0;
      }
    }));
  }

  private markDown(link: string, reason: string): void {
    const [x, y] = link.split('-');
    const peer = x === this.site ? y : y === this.site ? x : undefined;
    const until = this.now() + (this.o.linkDownMs ?? 5000);
    this.down.set(link, { untilMs: until, reason });
    if (peer && this.linkState.has(peer)) Object.assign(this.linkState.get(peer)!, { downUntilMs: until, reason });
    this.log('warn', `link ${link} left out of routing for ${this.o.linkDownMs ?? 5000} ms: ${reason}`, { link });
  }

  /** Links (any in the network) that failed recently, as learnt from hop answers. */
  private readonly down = new Map<string, { untilMs: number; reason: string }>();

  /** Usable for a relay needing `need` link keys per hop: not marked down; own links reachable with key. */
  private usable(x: string, y: string, need: number): boolean {
    const d = this.down.get(this.linkId(x, y));
    if (d && d.untilMs > this.now()) return false;
    const peer = x === this.site ? y : y === this.site ? x : undefined;
    if (peer === undefined) return true;
    const st = this.linkState.get(peer);
    return !!st && st.reachable && (st.storedKeys ?? 0) >= need;
  }

  // ------------------------------------------------------------- requests

  private async handle(req: Req): Promise<Res> {
    try {
      if (req.path === '/api/v1/relay/hop' && req.method === 'POST') return await this.hop(req);
      if (req.path === '/api/v1/relay/status' && req.method === 'GET') return { status: 200, body: this.metrics() };
      const m = /^\/api\/v1\/keys\/([^/]+)\/(status|enc_keys|dec_keys)$/.exec(req.path);
      if (m) {
        let other: string;
        try {
          other = decodeURIComponent(m[1]);
        } catch {
          return { status: 400, body: { message: `the SAE ID in ${req.path} is not valid percent-encoding` } };
        }
        return await this.etsi014(req, other, m[2] as 'status' | 'enc_keys' | 'dec_keys');
      }
      return { status: 404, body: { message: `no route ${req.method} ${req.path}` } };
    } catch (err) {
      if (err instanceof Refusal) return { status: err.status, body: err.body };
      throw err;
    }
  }

  private async etsi014(req: Req, other: string, op: 'status' | 'enc_keys' | 'dec_keys'): Promise<Res> {
    const t = this.o.topology;
    const caller = req.clientId;
    if (caller === null || !t.saes[this.site].includes(caller)) {
      return { status: 401, body: { message: `client '${caller ?? '(no certificate)'}' is not an SAE of site ${this.site}` } };
    }
    const allowed = op === 'status' ? ['GET'] : ['GET', 'POST'];
    if (!allowed.includes(req.method)) {
      return { status: 405, headers: { allow: allowed.join(', ') }, body: { message: `${op} takes ${allowed.join(' or ')}` } };
    }
    const dst = siteOfSae(t, other);
    if (!dst || dst === this.site) {
      return { status: 400, body: { message: dst ? `SAE '${other}' is at this site (${this.site}); a relayed key joins SAEs at ` +
        'two different sites' : `SAE '${other}' is not an SAE of any site in the topology` } };
    }
    const remote = t.sites.filter((s) => s !== this.site).flatMap((s) => t.saes[s]);
    const lim = RELAY_LIMITS;
    if (op === 'status') {
      const need = 1 + macKeys(lim.keySizeBits);
      const first = Math.max(0, ...this.o.links.map((l) => (this.usable(this.site, l.peer, need) ? this.linkState.get(l.peer)!.storedKeys ?? 0 : 0)));
      return { status: 200, body: { source_KME_ID: siteIdentity(this.site), target_KME_ID: siteIdentity(dst), master_SAE_ID: caller,
        slave_SAE_ID: other, key_size: lim.keySizeBits, stored_key_count: Math.floor(first / need), max_key_count: 1_000_000,
        max_key_per_request: lim.maxKeysPerRequest, max_key_size: lim.maxKeySizeBits, min_key_size: lim.minKeySizeBits,
        max_SAE_ID_count: lim.maxSaeIdCount } };
    }
    if (op === 'enc_keys') {
      return this.relayKeys(caller, other, dst, parseKeyRequest(req.method, req.body, req.query, other, remote, lim));
    }
    // dec_keys: the caller is the slave, `other` the master; all or nothing.
    const ids = parseKeyIds(req.method, req.body, req.query, lim.maxKeysPerRequest);
    const metas = ids.map((id) => this.store.metaOf(id, 0));
    const r = await this.store.takeAll(ids, `${other}>${caller}`, '', this.now());
    if (r.refused.length) {
      const foreign = r.refused.filter((x) => x.reason === 'foreign').map((x) => ids[x.pos]);
      const unknown = r.refused.filter((x) => x.reason === 'unknown').map((x) => ids[x.pos]);
      if (foreign.length) {
        return { status: 401, body: { message: `SAE '${caller}' is not the slave SAE of key_ID(s) ${foreign.join(', ')} ` +
          `(master ${other}); nothing was handed out`, details: [{ key_IDs_unauthorized: foreign }] } };
      }
      return { status: 400, body: { message: `key_ID(s) ${unknown.join(', ')} unknown, expired or already handed out for ` +
        `the pair ${other} -> ${caller}; nothing was handed out (the request's other keys are kept)`,
      details: [{ key_IDs_unknown: unknown }] } };
    }
    const keys = r.keys.map((k, i) => {
      const out = { key_ID: ids[i], key: k.key.toString('base64'), key_extension: provenanceOf(metas[i]) };
      k.key.fill(0);
      return out;
    });
    this.m.delivered += keys.length;
    return { status: 200, body: { keys } };
  }

  // ------------------------------------------------------------- source side

  /**
   * With a security level (qkd_max_epsilon x), a path of h hops is tried only if its link keys can
   * meet e = linkEpsilonFor(x, h, size) > 0; every site on it draws with qkd_max_epsilon e. A link
   * whose KMS has no key at e is skipped for this request at bounds ≤ e, not marked down.
   */
  private async relayKeys(master: string, slave: string, dst: string, kr: KeyRequest): Promise<Res> {
    const t0 = performance.now();
    const need = kr.number + macKeys(kr.size);
    const tried: string[] = [];
    const level = kr.maxEpsilon;
    const boundFor = (path: string[]) => (level === undefined ? null : linkEpsilonFor(level, path.length - 1, kr.size));
    const short = new Map<string, number>(); // link -> largest bound its link KMS could not meet (this request)
    const meets = (path: string[]) => {
      const e = boundFor(path);
      if (e === null) return true;
      return e > 0 && path.slice(1).every((s, i) => !((short.get(this.linkId(path[i], s)) ?? -1) >= e));
    };
    for (let attempt = 0; attempt < 4; attempt++) {
      const path = candidatePaths(this.o.topology, this.site, dst, (x, y) => this.usable(x, y, need)).find(meets);
      if (!path) break;
      const relayId = randomUUID();
      const keyIds = Array.from({ length: kr.number }, () => randomUUID());
      const e = boundFor(path);
      try {
        const { k, epsilon } = await this.firstHop(path, relayId, keyIds, master, slave, kr.size, e);
        const ms = performance.now() - t0;
        this.lat.push(ms);
        this.m.relayedOut += kr.number;
        this.log('info', 'keys relayed', { relay_id: relayId, path, keys: kr.number, ms: Math.round(ms * 10) / 10 });
        const prov = provenance(path, relayId, epsilon);
        const keys = k.map((b, i) => {
          const out = { key_ID: keyIds[i], key: b.toString('base64'), key_extension: prov };
          b.fill(0);
          return out;
        });
        return { status: 200, body: { keys } };
      } catch (err) {
        if (!(err instanceof HopFailure)) throw err;
        tried.push(`${path.join('>')}: ${err.reason}`);
        if (err.belowLevel && e !== null) short.set(err.link, Math.max(e, short.get(err.link) ?? 0));
        else this.markDown(err.link, err.reason);
      }
    }
    this.m.failedOut++;
    const at = level === undefined ? '' : ` for keys at qkd_max_epsilon ${level} (each link key at epsilon <= ` +
      `${level} / (hops * ${1 + macKeys(kr.size)}))`;
    return { status: 503, body: { message: `no usable path from site ${this.site} to site ${dst} now${at}` +
      (tried.length ? ` (tried ${tried.join('; ')})` : ' (every route lacks link key or is down)') + '; retry shortly' +
      (level === undefined ? '' : ' or ask for a larger qkd_max_epsilon') } };
  }

  /**
   * Draws keys on the link to `peer` at our link KMS (erased there, reserved at the peer's); with
   * `maxEpsilon`, only keys at that level (qkd_max_epsilon at the link KMS).
   */
  private async drawLinkKeys(peer: string, number: number, size: number, maxEpsilon: number | null): Promise<LinkKeys> {
    const l = this.link(peer);
    const link = this.linkId(this.site, peer);
    let r;
    try {
      r = await this.linkClients.get(peer)!.request('POST', `/api/v1/keys/${encodeURIComponent(l.peerSae)}/enc_keys`,
        { number, size, ...(maxEpsilon === null ? {} : { extension_mandatory: [{ qkd_max_epsilon: maxEpsilon }] }) },
        this.o.requestTimeoutMs ?? 10_000);
    } catch (err) {
      this.linkState.get(peer)!.reachable = false;
      throw new HopFailure(link, `link KMS ${l.kms.id} of ${link} unreachable (${(err as Error).message})`);
    }
    if (r.status !== 200 || !Array.isArray(r.body?.keys) || r.body.keys.length !== number) {
      const level = maxEpsilon === null ? '' : ` at epsilon <= ${maxEpsilon}`;
      throw new HopFailure(link, `link KMS of ${link} gave no keys${level} (HTTP ${r.status}: ${r.body?.message ?? ''})`, 503,
        maxEpsilon !== null && r.status === 503);
    }
    return linkKeysOf(link, r.body.keys, 503);
  }

  /** Takes the link keys the previous site drew (dec_keys at our link KMS: erased there). */
  private async takeLinkKeys(peer: string, ids: string[]): Promise<LinkKeys> {
    const l = this.link(peer);
    const link = this.linkId(peer, this.site);
    let r;
    try {
      r = await this.linkClients.get(peer)!.request('POST', `/api/v1/keys/${encodeURIComponent(l.peerSae)}/dec_keys`,
        { key_IDs: ids.map((key_ID) => ({ key_ID })) }, this.o.requestTimeoutMs ?? 10_000);
    } catch (err) {
      throw new HopFailure(link, `link KMS ${l.kms.id} of ${link} unreachable (${(err as Error).message})`);
    }
    if (r.status !== 200 || !Array.isArray(r.body?.keys) || r.body.keys.length !== ids.length) {
      throw new HopFailure(link, `link keys of ${link} not available at site ${this.site} (HTTP ${r.status}: ` +
        `${r.body?.message ?? ''})`, 409);
    }
    return linkKeysOf(link, r.body.keys, 409);
  }

  /**
   * Sends K (the pads of our first link) on its way: the hop message to path[1], drawing link
   * keys at ε ≤ `maxLinkEps` when not null. Resolves with K and its ε (as the destination stored
   * it; else our bound) once the destination stored it; throws HopFailure naming the failed link.
   */
  private async firstHop(path: string[], relayId: string, keyIds: string[], master: string, slave: string, size: number,
    maxLinkEps: number | null): Promise<{ k: Buffer[]; epsilon: number | undefined }> {
    const n = keyIds.length;
    const drawn = await this.drawLinkKeys(path[1], n + macKeys(size), size, maxLinkEps);
    const k = drawn.keys.slice(0, n);
    let stored: Record<string, unknown>;
    try {
      stored = await this.send(path[1], { v: 2, relay_id: relayId, key_IDs: keyIds, master_SAE_ID: master, slave_SAE_ID: slave,
        size, path, hop: 1, hops: [{ link: this.linkId(path[0], path[1]), link_key_IDs: drawn.ids, link_epsilon: drawn.epsilon }],
        max_link_epsilon: maxLinkEps, ct: null }, Buffer.alloc(0), drawn.keys.slice(n));
    } catch (err) {
      for (const b of k) b.fill(0);
      throw err;
    }
    // The destination summed the ε the sites on the path labelled; it can be no worse than our bound.
    const bound = maxLinkEps === null ? undefined : relayedEpsilon(path.slice(1).map(() => maxLinkEps), size);
    const got = stored.qkd_epsilon;
    const epsilon = typeof got === 'number' && got >= 0 && (bound === undefined || got <= bound) ? got : bound;
    return { k, epsilon };
  }

  /**
   * Tags and sends a hop message to `next`; resolves with the answer's body, a failure comes back
   * as HopFailure. Zeroes `macParts`.
   */
  private async send(next: string, m: Omit<HopMessage, 'tag'>, ct: Buffer, macParts: Buffer[]): Promise<Record<string, unknown>> {
    const macKey = Buffer.concat(macParts).subarray(0, MAC_KEY_BYTES);
    const tag = oneTimeMac(macKey, authBytes(m, ct));
    for (const b of macParts) b.fill(0);
    macKey.fill(0);
    const msg: HopMessage = { ...m, ct: m.ct === null ? null : ct.toString('base64'), tag: tag.toString('base64') };
    const link = this.linkId(this.site, next);
    let r;
    try {
      r = await this.peerClients.get(next)!.request('POST', '/api/v1/relay/hop', msg, (this.o.requestTimeoutMs ?? 10_000) *
        Math.max(1, m.path.length - m.hop));
    } catch (err) {
      throw new HopFailure(link, `site KMS ${next} unreachable (${(err as Error).message})`);
    }
    if (r.status !== 200) {
      const failed = typeof r.body?.failed_link === 'string' ? r.body.failed_link : link;
      throw new HopFailure(failed, `${r.body?.message ?? `site ${next} answered HTTP ${r.status}`}`, 503,
        r.body?.below_level === true);
    }
    return r.body && typeof r.body === 'object' ? r.body : {};
  }

  // ------------------------------------------------------------- hops

  private refuse(status: number, message: string, failedLink?: string, belowLevel = false): Res {
    this.m.hopsRefused++;
    this.log('warn', 'relay hop refused', { status, message });
    return { status, body: { message, ...(failedLink ? { failed_link: failedLink } : {}), ...(belowLevel ? { below_level: true } : {}) } };
  }

  private async hop(req: Req): Promise<Res> {
    const t = this.o.topology;
    const m = req.body as HopMessage;
    const bad = checkHop(t, m, this.site);
    if (bad) return this.refuse(400, `hop message refused: ${bad}`);
    const prev = m.path[m.hop - 1];
    if (req.clientId !== siteIdentity(prev)) {
      return this.refuse(403, `client '${req.clientId}' is not the site KMS of ${prev}, the previous site on the path`);
    }
    // A replayed message is refused twice over: its link keys are gone at our link KMS, and we
    // remember relay_ids seen (in memory, bounded).
    if (this.seen.has(m.relay_id)) return this.refuse(409, `relay ${m.relay_id} seen before (replay?)`);
    this.seen.add(m.relay_id);
    if (this.seen.size > 100_000) this.seen.delete(this.seen.values().next().value!);
    const n = m.key_IDs.length;
    const ct = m.ct === null ? Buffer.alloc(0) : Buffer.from(m.ct, 'base64');
    const bytes = m.size / 8;
    if (m.hop > 1 && ct.length !== n * bytes) return this.refuse(400, `ct holds ${ct.length} bytes, not ${n} keys of ${m.size} bits`);
    const inLink = this.linkId(prev, this.site);
    let linkKeys: Buffer[];
    try {
      linkKeys = (await this.takeLinkKeys(prev, m.hops[m.hops.length - 1].link_key_IDs)).keys;
    } catch (err) {
      const f = err as HopFailure;
      return this.refuse(f.status ?? 503, f.message, inLink);
    }
    if (linkKeys.some((k) => k.length !== bytes)) {
      for (const b of linkKeys) b.fill(0);
      return this.refuse(400, `link keys of ${inLink} are not ${m.size} bits`);
    }
    const macKey = Buffer.concat(linkKeys.slice(n)).subarray(0, MAC_KEY_BYTES);
    const { tag, ...unsigned } = m;
    const ok = verifyMac(macKey, authBytes(unsigned, ct), Buffer.from(typeof tag === 'string' ? tag : '', 'base64'));
    macKey.fill(0);
    for (const b of linkKeys.slice(n)) b.fill(0);
    const pads = linkKeys.slice(0, n);
    if (!ok) {
      for (const b of pads) b.fill(0);
      this.emit('alarm', { code: 'RELAY_HOP_AUTH', security: true, message: `hop message of relay ${m.relay_id} from site ` +
        `${prev} failed its one-time MAC on link ${inLink}: tampered or corrupted; nothing relayed` });
      return this.refuse(401, `hop message failed authentication on link ${inLink}`, inLink);
    }
    const k = m.hop === 1 ? pads : pads.map((p, i) => xorInto(ct.subarray(i * bytes, (i + 1) * bytes), p));
    if (m.hop > 1) for (const b of pads) b.fill(0);
    this.m.hopsIn++;
    try {
      if (m.hop === m.path.length - 1) {
        const epsilon = await this.storeRelayed(m, k);
        return { status: 200, body: { stored: n, ...(epsilon === undefined ? {} : { qkd_epsilon: epsilon }) } };
      }
      const next = m.path[m.hop + 1];
      const v2 = m.v === 2;
      try {
        const drawn = await this.drawLinkKeys(next, n + macKeys(m.size), m.size, v2 ? m.max_link_epsilon ?? null : null);
        const out = Buffer.concat(k.map((x, i) => xorInto(x, drawn.keys[i])));
        for (const b of drawn.keys.slice(0, n)) b.fill(0);
        const hop: HopRecord = { link: this.linkId(this.site, next), link_key_IDs: drawn.ids,
          ...(v2 ? { link_epsilon: drawn.epsilon } : {}) };
        const body = await this.send(next, { ...unsigned, hop: m.hop + 1, hops: [...m.hops, hop], ct: '' }, out,
          drawn.keys.slice(n));
        this.log('info', 'relay forwarded', { relay_id: m.relay_id, from: prev, to: next });
        return { status: 200, body: { stored: n, ...(typeof body.qkd_epsilon === 'number' ? { qkd_epsilon: body.qkd_epsilon } : {}) } };
      } catch (err) {
        if (!(err instanceof HopFailure)) throw err;
        return this.refuse(503, `site ${this.site}: ${err.reason}`, err.link, err.belowLevel);
      }
    } finally {
      for (const b of k) b.fill(0);
    }
  }

  /** The destination: K stored durably, reserved for the SAE pair (one row per key_ID); resolves with its ε if known. */
  private async storeRelayed(m: HopMessage, k: Buffer[]): Promise<number | undefined> {
    const now = this.now();
    const epsilon = hopsEpsilon(m);
    const meta = JSON.stringify({ ...provenance(m.path, m.relay_id, epsilon), hops: m.hops, stored_at_ms: now });
    const outs = await Promise.all(k.map((key, i) => this.store.put(m.key_IDs[i], 0, m.key_IDs[i], key, meta, now,
      now + (this.o.ttlS ?? 3600) * 1000)));
    if (outs.some((o) => o !== 'stored')) {
      throw new ConfigError('RELAY_STORE', `relayed keys of ${m.relay_id} not stored (${outs.join(', ')})`);
    }
    const holder = `${m.master_SAE_ID}>${m.slave_SAE_ID}`;
    for (const id of m.key_IDs) this.store.reserve(id, [{ index: 0, digest: digestOf(this.store, id, 0)!.digest }], holder, now, true);
    this.m.stored += k.length;
    this.log('info', 'relayed keys stored', { relay_id: m.relay_id, path: m.path, keys: k.length });
    return epsilon;
  }

  metrics(): RelayMetrics {
    const links: RelayMetrics['links'] = {};
    for (const l of this.o.links) {
      const st = this.linkState.get(l.peer)!;
      const d = this.down.get(this.linkId(this.site, l.peer));
      links[this.linkId(this.site, l.peer)] = { peer: l.peer, storedKeys: st.storedKeys, reachable: st.reachable,
        down: !!d && d.untilMs > this.now(), ...(d ? { reason: d.reason } : {}) };
    }
    return { ...this.m, latencyMs: percentiles(this.lat.values()), links };
  }

  async close(): Promise<void> {
    clearInterval(this.poller);
    await this.server?.close();
    for (const c of [...this.linkClients.values(), ...this.peerClients.values()]) c.close();
    this.store.close();
  }
}

/**
 * Provenance of a relayed key (ETSI 014 key_extension): never a direct QKD key; `qkd_epsilon`
 * (relayedEpsilon) when the ε of every hop's link keys is known.
 */
export function provenance(path: string[], relayId: string, epsilon?: number): Record<string, unknown> {
  return { key_origin: path.length > 2 ? 'trusted-node-relay' : 'qkd-link-via-site-kms', direct_qkd_key: false,
    path, trusted_nodes: path.slice(1, -1), relay_id: relayId, ...(epsilon === undefined ? {} : { qkd_epsilon: epsilon }) };
}

function provenanceOf(meta: string | null): Record<string, unknown> | undefined {
  if (!meta) return undefined;
  const p = JSON.parse(meta) as Record<string, unknown>;
  return { key_origin: p.key_origin, direct_qkd_key: false, path: p.path, trusted_nodes: p.trusted_nodes, relay_id: p.relay_id,
    ...(typeof p.qkd_epsilon === 'number' ? { qkd_epsilon: p.qkd_epsilon } : {}), hops: p.hops };
}

/**
 * ε of a relayed key from its (authenticated) hop message: each hop at its link keys' labelled ε,
 * or at max_link_epsilon where unlabelled (its link KMS drew under that bound); undefined if unknown.
 */
export function hopsEpsilon(m: Pick<HopMessage, 'v' | 'hops' | 'size' | 'max_link_epsilon'>): number | undefined {
  if (m.v === 1) return undefined;
  return relayedEpsilon(m.hops.map((h) => h.link_epsilon ?? m.max_link_epsilon), m.size);
}

/**
 * Reads link keys from a link KMS's answer (keys with key_ID, key and maybe key_extension).
 * Refuses keys labelled as anything but direct QKD key (a hybrid or ML-KEM key must never be
 * relayed as QKD key); zeroes what it read when it refuses.
 */
function linkKeysOf(link: string, raw: { key_ID: string; key: string; key_extension?: unknown }[], status: number): LinkKeys {
  const keys = raw.map((k) => Buffer.from(typeof k.key === 'string' ? k.key : '', 'base64'));
  let epsilon: number | null = 0;
  for (const k of raw) {
    const x = (k.key_extension && typeof k.key_extension === 'object' ? k.key_extension : {}) as Record<string, unknown>;
    if (x.direct_qkd_key === false || (x.provenance !== undefined && x.provenance !== 'qkd')) {
      for (const b of keys) b.fill(0);
      throw new HopFailure(link, `the link KMS of ${link} served keys that are not QKD key (provenance ` +
        `${JSON.stringify(x.provenance ?? null)}); not relayed: set its hybrid policy for the site KMS to never`, status);
    }
    const e = x.qkd_epsilon;
    epsilon = epsilon === null || typeof e !== 'number' || !(e >= 0) ? null : Math.max(epsilon, e);
  }
  return { ids: raw.map((k) => k.key_ID), keys, epsilon: raw.length ? epsilon : null };
}

/** Why a hop message is malformed for site `self`, or undefined if it is well formed. */
export function checkHop(t: Topology, m: unknown, self: string): string | undefined {
  if (!m || typeof m !== 'object' || Array.isArray(m)) return 'not a JSON object';
  const h = m as Partial<HopMessage>;
  if (h.v !== 1 && h.v !== 2) return 'v must be 1 or 2';
  if (!isUuid(h.relay_id)) return 'relay_id must be a UUID';
  if (!Array.isArray(h.path) || h.path.length < 2 || !h.path.every((s) => typeof s === 'string' && t.sites.includes(s))) {
    return 'path must list at least two sites of the topology';
  }
  if (new Set(h.path).size !== h.path.length) return 'path visits a site twice';
  for (let i = 1; i < h.path.length; i++) if (!linkBetween(t, h.path[i - 1], h.path[i])) return `no link ${h.path[i - 1]}-${h.path[i]}`;
  if (!Number.isInteger(h.hop) || h.hop! < 1 || h.hop! >= h.path.length || h.path[h.hop!] !== self) {
    return `hop must index this site (${self}) in path`;
  }
  if (!Array.isArray(h.key_IDs) || !h.key_IDs.length || h.key_IDs.length > RELAY_LIMITS.maxKeysPerRequest ||
    !h.key_IDs.every(isUuid)) return `key_IDs must be 1..${RELAY_LIMITS.maxKeysPerRequest} UUIDs`;
  if (!Number.isInteger(h.size) || h.size! % 8 || h.size! < RELAY_LIMITS.minKeySizeBits || h.size! > RELAY_LIMITS.maxKeySizeBits) {
    return 'size must be a multiple of 8 bits within the relay limits';
  }
  if (typeof h.master_SAE_ID !== 'string' || siteOfSae(t, h.master_SAE_ID) !== h.path[0]) return 'master_SAE_ID is not an SAE of the first site';
  if (typeof h.slave_SAE_ID !== 'string' || siteOfSae(t, h.slave_SAE_ID) !== h.path[h.path.length - 1]) {
    return 'slave_SAE_ID is not an SAE of the last site';
  }
  const need = h.key_IDs.length + macKeys(h.size!);
  if (!Array.isArray(h.hops) || h.hops.length !== h.hop || !h.hops.every((x, i) => x && typeof x === 'object' &&
    x.link === linkName(t, h.path![i], h.path![i + 1]) && Array.isArray(x.link_key_IDs) && x.link_key_IDs.length === need &&
    x.link_key_IDs.every(isUuid))) return `hops must name each link so far with its ${need} link key_IDs`;
  if (h.hop === 1 ? h.ct !== null : typeof h.ct !== 'string') return 'ct must be null on the first hop and base64 after';
  if (h.v === 2) {
    const eps = (x: unknown) => typeof x === 'number' && x > 0 && x < 1;
    if (h.max_link_epsilon !== null && !eps(h.max_link_epsilon)) return 'v2: max_link_epsilon must be null or a number in (0, 1)';
    const max = h.max_link_epsilon ?? 1;
    if (!h.hops.every((x) => x.link_epsilon === null || (typeof x.link_epsilon === 'number' && x.link_epsilon >= 0 &&
      x.link_epsilon <= max))) return `v2: each hop's link_epsilon must be null or a number in [0, ${max}]`;
  } else if (h.max_link_epsilon !== undefined || h.hops.some((x) => 'link_epsilon' in x)) {
    return 'v1 has no max_link_epsilon or link_epsilon (they are not under its tag): send v 2';
  }
  if (typeof h.tag !== 'string') return 'tag must be base64';
  return undefined;
}
