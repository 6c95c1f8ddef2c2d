/**
 * Hybrid fallback of the reference KMS (docs/delivery.md, "Hybrid fallback"): per SAE pair a
 * policy `never` | `when-short` | `always`. When the pair's deliverable QKD key is below what an
 * enc_keys request needs (`when-short`), or for every request (`always`), the two KMSs run an
 * ML-KEM-768 exchange over their mutual-TLS KMS↔KMS link (`POST /api/v1/kms-peer/hybrid`) and
 * derive the keys with HKDF-SHA-256 from (QKD key ‖ ML-KEM shared secret) where there is QKD key,
 * from the shared secret alone where there is none (native/node/src/mlkem.rs: libcrux-ml-kem).
 *
 * - The KMS that gets enc_keys (the initiator) makes a fresh key pair, sends the encapsulation
 *   key with the request's shape and the QKD key_IDs it took (if any); the peer KMS (responder)
 *   takes those QKD keys, encapsulates, derives, stores the keys (wrapped at rest, reserved for
 *   the pair, like any key) and answers the ciphertext and a key confirmation. The initiator
 *   decapsulates, derives the same key_IDs and bytes, checks the confirmation, hands out.
 * - Provenance on every key of a pair whose policy is not `never`, in the Table 11
 *   `key_extension`: `{"provenance": "qkd" | "ml-kem-768" | "hybrid(qkd+ml-kem-768)",
 *   "direct_qkd_key": bool, "qkd_epsilon"?: ε}`. A key without QKD key is never labelled as QKD key.
 * - A request with a security level (`qkd_max_epsilon`) never gets an ML-KEM key: it is served
 *   from QKD key alone (or refused), whatever the policy.
 * - Multicast requests (additional_slave_SAE_IDs) are served from QKD key only.
 * The decapsulation key and the shared secret stay in Rust and are zeroed there; nothing here
 * logs key bytes.
 */
import { timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { native } from '../core/native.ts';
import { ConfigError, QkdError } from '../errors.ts';
import type { KeyRequest } from './etsi014.ts';
import type { JsonClient, Res } from './http.ts';
import type { KeyStore } from './store.ts';

export type HybridPolicy = 'never' | 'when-short' | 'always';
const POLICIES: readonly string[] = ['never', 'when-short', 'always'];

/**
 * KMS configuration `hybrid`: `{"saeA->saeB": "when-short", "default": "never", "ttlS": 3600}`.
 * A pair is `master->slave` (the SAE calling enc_keys first). `ttlS`: how long the peer KMS keeps
 * a hybrid key for the slave (default 3600 s).
 */
export type HybridConfig = Record<string, HybridPolicy | number>;

export const PROVENANCE = { qkd: 'qkd', mlkem: 'ml-kem-768', hybrid: 'hybrid(qkd+ml-kem-768)' } as const;

export interface KeyExtension {
  provenance: (typeof PROVENANCE)[keyof typeof PROVENANCE];
  /** As in relayed keys' key_extension (src/network/relay.ts): true only for a key that is QKD key alone. */
  direct_qkd_key: boolean;
  qkd_epsilon?: number;
}

/** The key_extension of a key made of `provenance`. */
export function keyExtension(provenance: KeyExtension['provenance'], epsilon?: number | null): KeyExtension {
  return { provenance, direct_qkd_key: provenance === PROVENANCE.qkd,
    ...(typeof epsilon === 'number' && provenance !== PROVENANCE.mlkem ? { qkd_epsilon: epsilon } : {}) };
}

/** What the QKD path reports to the hybrid layer (filled by Kms.encKeys). */
export interface QkdOutcome {
  /** The QKD key runs short: fewer deliverable keys than the request needs. */
  short?: boolean;
  /** Largest ε of the chunks the keys came from; null if a chunk carries none. */
  epsilon?: number | null;
}

/** Refuses a malformed `hybrid` configuration with what to write instead. */
export function checkHybridConfig(cfg: unknown, where = 'hybrid'): HybridConfig {
  if (!cfg || typeof cfg !== 'object' || Array.isArray(cfg)) {
    throw new ConfigError('CONFIG_KMS', `${where} must be an object like {"saeA->saeB": "when-short", "default": "never"}`);
  }
  for (const [k, v] of Object.entries(cfg as Record<string, unknown>)) {
    if (k === 'ttlS') {
      if (typeof v !== 'number' || !(v > 0)) throw new ConfigError('CONFIG_KMS', `${where}.ttlS must be a positive number of seconds`);
    } else if (k !== 'default' && !/^[^>]+->[^>]+$/.test(k)) {
      throw new ConfigError('CONFIG_KMS', `${where}: key '${k}' must be "default", "ttlS" or an SAE pair "master->slave"`);
    } else if (typeof v !== 'string' || !POLICIES.includes(v)) {
      throw new ConfigError('CONFIG_KMS', `${where}["${k}"] must be one of ${POLICIES.join(', ')}, got ${JSON.stringify(v)}`);
    }
  }
  return cfg as HybridConfig;
}

/** Largest ε over provenance JSONs (null if any has none: the level is unknown). */
export function worstEpsilon(metas: string[]): number | null {
  let worst = 0;
  for (const m of metas) {
    const e = (JSON.parse(m) as { epsilon?: unknown }).epsilon;
    if (typeof e !== 'number') return null;
    worst = Math.max(worst, e);
  }
  return metas.length ? worst : null;
}

/**
 * The context both KMSs bind the exchange to (public): both KMS ids (initiator first), the SAE
 * pair, number and size of keys, and the QKD key_IDs combined in (empty for ML-KEM alone).
 */
export function hybridContext(c: { initiator: string; responder: string; master: string; slave: string; number: number;
  size: number; qkdKeyIds: string[] }): Buffer {
  return Buffer.from(JSON.stringify(['qkd-node hybrid v1', c.initiator, c.responder, c.master, c.slave, c.number, c.size,
    c.qkdKeyIds]));
}

export interface HybridHost {
  id: string;
  peerId?: string;
  peer?: JsonClient;
  saes: { local: string[]; remote: string[] };
  dbPath: string;
  store(): KeyStore;
  now(): number;
  log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
}

interface Label {
  provenance: KeyExtension['provenance'];
  qkd_epsilon?: number;
  expiresMs: number;
}

const B64 = (s: unknown, bytes: number): Buffer | undefined => {
  if (typeof s !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return undefined;
  const b = Buffer.from(s, 'base64');
  return b.length === bytes ? b : undefined;
};

export class Hybrid {
  /** Provenance of hybrid keys held here for a slave SAE (key_ID → label); no key bytes. */
  private readonly labels = new Map<string, Label>();
  private readonly file: string;
  readonly ttlMs: number;
  private readonly m = { exchanges: 0, hybridKeys: 0, mlkemKeys: 0, refused: 0 };

  constructor(private readonly cfg: HybridConfig, private readonly host: HybridHost) {
    checkHybridConfig(cfg);
    this.ttlMs = ((cfg.ttlS as number | undefined) ?? 3600) * 1000;
    this.file = `${host.dbPath}.hybrid.json`;
    if (existsSync(this.file)) {
      const now = host.now();
      for (const [k, v] of Object.entries(JSON.parse(readFileSync(this.file, 'utf8')) as Record<string, Label>)) {
        if (v.expiresMs > now) this.labels.set(k, v);
      }
    }
  }

  policy(master: string, slave: string): HybridPolicy {
    return (this.cfg[`${master}->${slave}`] ?? this.cfg.default ?? 'never') as HybridPolicy;
  }

  metrics() {
    return { ...this.m, held: this.labels.size };
  }

  private save(): void {
    const now = this.host.now();
    for (const [k, v] of this.labels) if (v.expiresMs <= now) this.labels.delete(k);
    writeFileSync(`${this.file}.tmp`, JSON.stringify(Object.fromEntries(this.labels)));
    renameSync(`${this.file}.tmp`, this.file);
  }

  /**
   * enc_keys for `master` under the pair's policy. `qkd(kr, out)` is the KMS's QKD path (it
   * fills `out`). Answers as the QKD path does, with provenance labels unless the policy is never.
   */
  async encKeys(master: string, kr: KeyRequest, qkd: (kr: KeyRequest, out: QkdOutcome) => Promise<Res>): Promise<Res> {
    const slave = kr.slaves[0];
    const policy = this.policy(master, slave);
    if (policy === 'never') return qkd(kr, {});
    const out: QkdOutcome = {};
    const r = await qkd(kr, out);
    const qkdLabel = keyExtension(PROVENANCE.qkd, out.epsilon);
    // A security level asked for, or several slaves: QKD key alone, never ML-KEM.
    if (kr.maxEpsilon !== undefined || kr.slaves.length > 1) return withLabels(r, () => qkdLabel);
    if (r.status === 200 && policy === 'when-short') return withLabels(r, () => qkdLabel);
    if (r.status !== 200 && !out.short) return r; // unreachable peer, mismatch, ...: no fallback hides it
    const keys = r.status === 200 ? (r.body as { keys: { key_ID: string; key: string }[] }).keys : undefined;
    try {
      return await this.exchange(master, slave, kr, keys, keys ? out.epsilon ?? undefined : undefined);
    } finally {
      for (const k of keys ?? []) k.key = '';
    }
  }

  private async exchange(master: string, slave: string, kr: KeyRequest, qkdKeys: { key_ID: string; key: string }[] | undefined,
    epsilon: number | undefined): Promise<Res> {
    const h = this.host;
    if (!h.peer || !h.peerId) return { status: 503, body: { message: 'no peer KMS configured' } };
    const qkdKeyIds = qkdKeys?.map((k) => k.key_ID) ?? [];
    const ctx = hybridContext({ initiator: h.id, responder: h.peerId, master, slave, number: kr.number, size: kr.size, qkdKeyIds });
    const init = new (native().MlKemInitiator)();
    let r;
    try {
      r = await h.peer.request('POST', '/api/v1/kms-peer/hybrid', { master, slave, number: kr.number, size: kr.size,
        qkd_key_ids: qkdKeyIds, qkd_epsilon: epsilon ?? null, encapsulation_key: init.encapsulationKey.toString('base64') });
    } catch (err) {
      h.log('warn', 'peer KMS unreachable for the ML-KEM exchange', { code: (err as QkdError).code });
      return { status: 503, body: { message: `the peer KMS ${h.peerId} is unreachable for the hybrid (ML-KEM) exchange; retry later` } };
    }
    const ct = B64(r.body?.ciphertext, 1088);
    const conf = B64(r.body?.confirmation, 32);
    if (r.status !== 200 || !ct || !conf) {
      this.m.refused++;
      return { status: 503, body: { message: `the peer KMS ${h.peerId} refused the hybrid (ML-KEM) exchange: ` +
        `${r.body?.message ?? `HTTP ${r.status}`}` } };
    }
    const specs = Array.from({ length: kr.number }, (_, i) => ({ bytes: kr.size / 8,
      qkd: qkdKeys ? Buffer.from(qkdKeys[i].key, 'base64') : undefined }));
    let o;
    try {
      o = init.finish(ct, ctx, specs);
    } finally {
      for (const s of specs) s.qkd?.fill(0);
    }
    if (!timingSafeEqual(o.confirmation, conf)) {
      for (const k of o.keys) k.fill(0);
      h.log('error', 'hybrid key confirmation failed: the peer KMS derived other keys; none released', { master, slave });
      return { status: 503, body: { message: 'the peer KMS derived different hybrid keys (key confirmation failed); not released' } };
    }
    this.m.exchanges++;
    const label = keyExtension(qkdKeys ? PROVENANCE.hybrid : PROVENANCE.mlkem, epsilon);
    if (qkdKeys) this.m.hybridKeys += kr.number;
    else this.m.mlkemKeys += kr.number;
    const keys = o.keys.map((k, i) => {
      const e = { key_ID: o.keyIds[i], key: k.toString('base64'), key_extension: label };
      k.fill(0);
      return e;
    });
    h.log('info', 'hybrid keys released', { master, slave, number: kr.number, size: kr.size, provenance: label.provenance,
      transcript: o.transcriptHash.toString('hex').slice(0, 16) });
    return { status: 200, body: { keys } };
  }

  /** The responder's side of `POST /api/v1/kms-peer/hybrid`. */
  async peerExchange(b: Record<string, unknown>): Promise<Res> {
    const h = this.host;
    const { master, slave, number, size } = b;
    const ids = b.qkd_key_ids;
    if (typeof master !== 'string' || !h.saes.remote.includes(master) || typeof slave !== 'string' ||
      !h.saes.local.includes(slave) || !Number.isInteger(number) || (number as number) < 1 || (number as number) > 4096 ||
      !Number.isInteger(size) || (size as number) < 8 || (size as number) % 8 !== 0 || (size as number) > 255 * 256 ||
      !Array.isArray(ids) || !ids.every((x) => typeof x === 'string') || (ids.length !== 0 && ids.length !== number)) {
      return { status: 400, body: { message: 'hybrid needs master (an SAE of the peer), slave (an SAE here), number, size ' +
        '(bits, multiple of 8), qkd_key_ids ([] or one per key) and encapsulation_key' } };
    }
    const ek = B64(b.encapsulation_key, 1184);
    if (!ek) return { status: 400, body: { message: 'encapsulation_key must be an ML-KEM-768 key, 1184 bytes in base64' } };
    if (this.policy(master, slave) === 'never') {
      return { status: 403, body: { message: `the hybrid policy of KMS ${h.id} for the pair ${master}->${slave} is never` } };
    }
    const holder = `${master}>${slave}`;
    const store = h.store();
    let qkd: Buffer[] = [];
    if (ids.length) {
      const t = await store.takeAll(ids as string[], holder, '', h.now());
      if (t.refused.length) {
        for (const k of t.keys) k.key.fill(0);
        return { status: 409, body: { message: 'the QKD keys named are not reserved for this pair here' } };
      }
      qkd = t.keys.map((k) => k.key);
    }
    const ctx = hybridContext({ initiator: h.peerId ?? '', responder: h.id, master, slave, number: number as number,
      size: size as number, qkdKeyIds: ids as string[] });
    let o;
    try {
      o = native().mlkemRespond(ek, ctx, Array.from({ length: number as number }, (_, i) => ({ bytes: (size as number) / 8,
        qkd: qkd[i] })));
    } catch (err) {
      return { status: 400, body: { message: (err as Error).message } };
    } finally {
      for (const k of qkd) k.fill(0);
    }
    const now = h.now();
    const expiresMs = now + this.ttlMs;
    const sid = `hybrid:${o.transcriptHash.toString('hex').slice(0, 32)}`;
    const label: Label = { provenance: qkd.length ? PROVENANCE.hybrid : PROVENANCE.mlkem, expiresMs,
      ...(qkd.length && typeof b.qkd_epsilon === 'number' ? { qkd_epsilon: b.qkd_epsilon } : {}) };
    const meta = JSON.stringify({ provenance: label.provenance, kdf: 'HKDF-SHA-256', kem: 'ML-KEM-768', master, slave,
      initiator: h.peerId, qkd_key_ids: ids });
    try {
      const outcomes = await Promise.all(o.keys.map((k, i) => store.put(sid, i, o.keyIds[i], k, meta, now, expiresMs)));
      if (outcomes.some((x) => x !== 'stored')) {
        return { status: 503, body: { message: `KMS ${h.id} could not store the hybrid keys (${outcomes.find((x) => x !== 'stored')})` } };
      }
    } finally {
      for (const k of o.keys) k.fill(0);
    }
    const items = store.candidates(sid, number as number, now).map((c) => ({ index: c.index, digest: c.digest }));
    if (store.reserve(sid, items, holder, now, true).length !== number) {
      return { status: 503, body: { message: `KMS ${h.id} could not reserve the hybrid keys for ${holder}` } };
    }
    for (const id of o.keyIds) this.labels.set(id, label);
    this.save();
    this.m.exchanges++;
    return { status: 200, body: { ciphertext: o.ciphertext.toString('base64'), confirmation: o.confirmation.toString('base64'),
      key_ids: o.keyIds } };
  }

  /** Labels dec_keys answers (slave side) with provenance, unless the pair's policy is never. */
  labelDecKeys(master: string, slave: string, keys: { key_ID: string; key: string }[]): void {
    if (this.policy(master, slave) === 'never' && !keys.some((k) => this.labels.has(k.key_ID))) return;
    let changed = false;
    for (const k of keys) {
      const l = this.labels.get(k.key_ID);
      (k as { key_extension?: KeyExtension }).key_extension = l ? keyExtension(l.provenance, l.qkd_epsilon)
        : keyExtension(PROVENANCE.qkd);
      changed = this.labels.delete(k.key_ID) || changed;
    }
    if (changed) this.save();
  }
}

function withLabels(r: Res, label: () => KeyExtension): Res {
  if (r.status !== 200) return r;
  for (const k of (r.body as { keys: Record<string, unknown>[] }).keys) k.key_extension = label();
  return r;
}
