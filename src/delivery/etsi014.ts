/**
 * ETSI GS QKD 014 V1.1.1 data model (clause 6, Tables 9–13): strict parsing of the key request
 * (Table 10) and key IDs (Table 12) an SAE sends, as a JSON body or as query parameters, and the
 * Error object (Table 13) every refusal carries. Wrongly typed fields are refused, never coerced:
 * `"size": "256"`, a JSON array where an object belongs, an object where a list belongs.
 *
 * Extensions (Table 10 `extension_mandatory` / `extension_optional`: arrays of objects, each
 * parameter a name and a value). Supported here: `qkd_max_epsilon` (number in (0, 1)): deliver
 * only keys whose block's composable security parameter ε (ε_sec + ε_cor, from the node's
 * provenance) is at most that. A mandatory extension this KME does not support is refused with
 * 400 and the spec's wording; an unsupported optional one is ignored.
 */
import { isUuid } from './types.ts';

/** Table 13: what every 4xx/5xx answer of the 014 interface carries. */
export interface EtsiError {
  message: string;
  details?: Record<string, unknown>[];
}

export class Refusal {
  constructor(readonly status: 400 | 401 | 503, readonly body: EtsiError) {}
}

export const SUPPORTED_EXTENSIONS = ['qkd_max_epsilon'] as const;

export interface KeyRequest {
  number: number;
  /** Bits, a multiple of 8. */
  size: number;
  /** The URL's slave first, then `additional_slave_SAE_IDs`. */
  slaves: string[];
  maxEpsilon?: number;
}

export interface Limits {
  keySizeBits: number;
  minKeySizeBits: number;
  maxKeySizeBits: number;
  maxKeysPerRequest: number;
  /** Most SAE IDs in `additional_slave_SAE_IDs` (Table 9 `max_SAE_ID_count`). */
  maxSaeIdCount: number;
}

const bad = (message: string, details?: Record<string, unknown>[]) =>
  new Refusal(400, details ? { message, details } : { message });

const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/** A query value that must be a decimal integer ("256"), else a refusal naming `name`. */
function queryInt(q: URLSearchParams, name: string): unknown {
  const all = q.getAll(name);
  if (!all.length) return undefined;
  if (all.length > 1) throw bad(`query parameter ${name} given ${all.length} times; give it once`);
  return /^[0-9]{1,9}$/.test(all[0]) ? Number(all[0]) : all[0];
}

function integerField(v: unknown, name: string, min: number, max: number, unit = ''): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw bad(`${name} must be an integer (JSON number), got ${JSON.stringify(v)}`);
  }
  if (v < min || v > max) throw bad(`${name} must be ${min}..${max}${unit}, got ${v}`);
  return v;
}

/** Parses Table 10 extension arrays; returns the supported values. */
function extensions(b: Record<string, unknown>): { maxEpsilon?: number } {
  const out: { maxEpsilon?: number } = {};
  for (const field of ['extension_mandatory', 'extension_optional'] as const) {
    const v = b[field];
    if (v === undefined) continue;
    if (!Array.isArray(v) || !v.every(isObject)) throw bad(`${field} must be an array of objects`);
    const unsupported: Record<string, unknown>[] = [];
    for (const ext of v as Record<string, unknown>[]) {
      for (const [name, value] of Object.entries(ext)) {
        if (name === 'qkd_max_epsilon') {
          if (typeof value !== 'number' || !(value > 0 && value < 1)) {
            throw bad(`${field}: qkd_max_epsilon must be a number in (0, 1), got ${JSON.stringify(value)}`);
          }
          out.maxEpsilon = Math.min(out.maxEpsilon ?? 1, value);
        } else if (field === 'extension_mandatory') {
          unsupported.push({ [name]: value });
        }
      }
    }
    if (unsupported.length) {
      // Wording and details as in the spec's Error example (clause 6.4).
      throw bad('not all extension_mandatory parameters are supported',
        [{ extension_mandatory_unsupported: unsupported }]);
    }
  }
  return out;
}

/**
 * The enc_keys request: a POST body (a JSON object, or none for every default) or GET query
 * parameters `number` and `size`. `slave` is the SAE of the URL; `remote` the SAEs the peer KME
 * serves.
 */
export function parseKeyRequest(method: string, body: unknown, query: URLSearchParams, slave: string, remote: string[],
  lim: Limits): KeyRequest {
  let b: Record<string, unknown>;
  if (method === 'GET') {
    for (const k of query.keys()) {
      if (k !== 'number' && k !== 'size') throw bad(`unknown query parameter ${k} (enc_keys takes number and size)`);
    }
    b = { number: queryInt(query, 'number'), size: queryInt(query, 'size') };
  } else if (body === undefined) {
    b = {};
  } else if (!isObject(body)) {
    throw bad(`the key request must be a JSON object (ETSI GS QKD 014 Table 10), got ${Array.isArray(body) ? 'an array' : typeof body}`);
  } else {
    b = body;
    const known = ['number', 'size', 'additional_slave_SAE_IDs', 'extension_mandatory', 'extension_optional'];
    const unknown = Object.keys(b).filter((k) => !known.includes(k));
    if (unknown.length) throw bad(`unknown field(s) ${unknown.join(', ')} in the key request (Table 10 has ${known.join(', ')})`);
  }
  const number = b.number === undefined ? 1 : integerField(b.number, 'number', 1, lim.maxKeysPerRequest);
  const size = b.size === undefined ? lim.keySizeBits
    : integerField(b.size, 'size', lim.minKeySizeBits, lim.maxKeySizeBits, ' bits');
  if (size % 8 !== 0) throw bad(`size must be a multiple of 8 bits, got ${size}`);
  const slaves = [slave];
  const add = b.additional_slave_SAE_IDs;
  if (add !== undefined) {
    if (!Array.isArray(add) || !add.every((s) => typeof s === 'string')) {
      throw bad('additional_slave_SAE_IDs must be an array of SAE ID strings');
    }
    if (add.length > lim.maxSaeIdCount) {
      throw bad(`additional_slave_SAE_IDs names ${add.length} SAEs; this KME allows ${lim.maxSaeIdCount} (max_SAE_ID_count)`);
    }
    for (const s of add as string[]) {
      if (slaves.includes(s)) throw bad(`SAE '${s}' named twice among the slave SAEs`);
      if (!remote.includes(s)) throw bad(`additional slave SAE '${s}' is not reachable through this KME's peer`);
      slaves.push(s);
    }
  }
  const ext = extensions(b);
  return { number, size, slaves, ...ext };
}

/** The dec_keys request: a POST body `{key_IDs: [{key_ID}]}` (Table 12) or GET `key_ID` parameters. */
export function parseKeyIds(method: string, body: unknown, query: URLSearchParams, maxPer: number): string[] {
  let ids: unknown[];
  if (method === 'GET') {
    for (const k of query.keys()) if (k !== 'key_ID') throw bad(`unknown query parameter ${k} (dec_keys takes key_ID)`);
    ids = query.getAll('key_ID');
  } else {
    if (!isObject(body)) {
      throw bad(`the key IDs must be a JSON object {"key_IDs": [{"key_ID": ...}]} (ETSI GS QKD 014 Table 12), got ` +
        `${body === undefined ? 'no body' : Array.isArray(body) ? 'an array' : typeof body}`);
    }
    const unknown = Object.keys(body).filter((k) => k !== 'key_IDs' && k !== 'key_IDs_extension');
    if (unknown.length) throw bad(`unknown field(s) ${unknown.join(', ')} in the key IDs (Table 12 has key_IDs, key_IDs_extension)`);
    const list = body.key_IDs;
    if (!Array.isArray(list)) throw bad('key_IDs must be an array of {"key_ID": UUID} objects');
    ids = list.map((k, i) => {
      if (!isObject(k)) throw bad(`key_IDs[${i}] must be an object {"key_ID": UUID}`);
      const extra = Object.keys(k).filter((x) => x !== 'key_ID' && x !== 'key_ID_extension');
      if (extra.length) throw bad(`key_IDs[${i}] has unknown field(s) ${extra.join(', ')}`);
      return k.key_ID;
    });
  }
  if (!ids.length || ids.length > maxPer) throw bad(`give 1..${maxPer} key_IDs, got ${ids.length}`);
  ids.forEach((id, i) => {
    if (!isUuid(id)) throw bad(`key_IDs[${i}].key_ID must be a UUID string, got ${JSON.stringify(id)}`);
  });
  const lower = (ids as string[]).map((s) => s.toLowerCase());
  if (new Set(lower).size !== lower.length) throw bad('a key_ID is named twice in one request');
  return lower;
}
