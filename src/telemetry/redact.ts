/**
 * The redaction layer every log record passes through. Its job is to make it impossible to log
 * key bytes or secrets by accident, at the price of sometimes hiding something harmless.
 *
 * Rules, applied recursively to the record (objects, arrays, Maps, Sets, Errors and their causes):
 * 1. Binary: any Buffer, typed array, ArrayBuffer, SharedArrayBuffer or DataView becomes
 *    `[redacted N bytes]`, wherever it is and whatever its field is called.
 * 2. Secret-looking field names: a field whose name contains a word from SECRET_WORDS (key, secret,
 *    seed, otp, password, private, token, …; words split on camelCase, `_`, `-`, `.`) has its value
 *    replaced by `[redacted]`. Exception: when the name ends in a metadata word (id, count, size,
 *    length, rate, total, delivered, stored, path, …) a number or boolean passes, and a short string
 *    passes if rule 3 does not catch it (so `keyId`, `keysDelivered`, `secretBits` stay readable
 *    while `key`, `keyBuffer`, `key_buffer`, `macKey`, `seed` never do).
 * 3. Blob-looking strings anywhere (field values, messages, error messages and stacks): a run of
 *    ≥ 32 hex digits, or a run of ≥ 20 base64/base64url characters that looks random (see
 *    `looksLikeBase64Blob`), is replaced by `[redacted blob]`. UUIDs survive.
 *    Passwords in URLs (`//user:pass@`) and query parameters with secret names (`?token=`)
 *    are replaced too.
 *    A string that is mostly control/latin1-high/U+FFFD characters (bytes decoded as text) is
 *    replaced whole.
 * 4. Arrays of ≥ 16 integers all in 0..255 (key bytes spread into a plain array, or Buffer's
 *    JSON form) become `[redacted N bytes]`.
 * Also: arrays over 100 items and strings over 8192 characters are cut, BigInt → decimal string, functions and symbols dropped, cycles → `[circular]`, depth > 8 →
 * `[depth]`, objects with `toJSON` are not trusted (Buffer.toJSON would print the bytes).
 */

export const SECRET_WORDS = new Set([
  'key', 'keys', 'secret', 'secrets', 'seed', 'seeds', 'otp', 'password', 'passwd', 'passphrase', 'pwd', 'private', 'privkey',
  'token', 'tokens', 'credential', 'credentials', 'psk', 'pad', 'pads', 'keybuffer', 'keymaterial', 'material',
]);
const METADATA_WORDS = new Set([
  'id', 'ids', 'uuid', 'index', 'idx', 'count', 'counts', 'size', 'length', 'len', 'rate', 'total', 'delivered', 'stored', 'bits',
  'age', 'ms', 'seconds', 'path', 'file', 'version', 'type', 'status', 'algorithm', 'alg', 'stream', 'streams', 'level', 'levels',
  'capacity', 'depth', 'ratio', 'expected', 'available', 'name', 'label', 'mode', 'source', 'kind', 'format', 'url', 'uri',
]);

const HEX_RUN = /[0-9a-fA-F]{32,}/g;
const B64_RUN = /[A-Za-z0-9+/_=-]{18,}/g;
const UUID = /\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b/g;
const MAX_DEPTH = 8;
/** Log records stay readable: long arrays and strings are cut (after redaction rules apply). */
const MAX_ARRAY = 100;
const MAX_STRING = 8192;
const URL_CREDENTIALS = /(\/\/[^/\s:@]+:)[^@\s/]+@/g;
const SECRET_QUERY = /([?&;])([A-Za-z0-9_.-]+)=[^&#\s]*/g;

/** Splits a field name into lower-case words: `keyBufferId` → key, buffer, id; `key_ID` → key, id. */
export function nameWords(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .split(/[\s_\-.:/]+/)
    .filter(Boolean)
    .map((w) => w.toLowerCase());
}

export type FieldClass = 'plain' | 'secret' | 'secret-metadata';

const classCache = new Map<string, FieldClass>();

/** How a field name is treated (see rule 2). Memoised: field names repeat from record to record. */
export function classifyField(name: string): FieldClass {
  let c = classCache.get(name);
  if (c === undefined) {
    c = classifyUncached(name);
    if (classCache.size > 4096) classCache.clear(); // bound memory if names are generated
    classCache.set(name, c);
  }
  return c;
}

function classifyUncached(name: string): FieldClass {
  const words = nameWords(name);
  if (!words.some((w) => SECRET_WORDS.has(w))) return 'plain';
  const last = words[words.length - 1];
  return METADATA_WORDS.has(last) && !SECRET_WORDS.has(last) ? 'secret-metadata' : 'secret';
}

const charClass = (c: number): number => (c >= 97 && c <= 122 ? 1 : c >= 65 && c <= 90 ? 2 : c >= 48 && c <= 57 ? 3 : 0);
/** Identifier grammar: Capitalised or lower-case words, acronyms, numbers (PascalCase, SAE_B, v2). */
const WORDY = /^(?:[A-Z]?[a-z]{2,}|[A-Z]{2,}|[0-9]+)+$/;

/**
 * Whether a run of base64/base64url characters is an encoding of random bytes rather than a word,
 * identifier or URL path. In random base64 the character class (lower, upper, digit) changes
 * between ~62 % of adjacent alphanumeric pairs, separators are rare (2 in 64) and isolated
 * single letters abound; identifiers change class rarely or parse as words. Measured on random
 * keys (test/telemetry/logger.test.ts re-checks it): a 16-byte key in base64 is caught 98.7 % of
 * the time in free text, 24 bytes 99.5 %, 32 bytes 99.95 %. This is the safety net; the field-name
 * and binary rules are the guarantee.
 */
export function looksLikeBase64Blob(run: string): boolean {
  let alnum = 0;
  let pairs = 0;
  let changes = 0;
  let prev = 0;
  let seps = 0;
  for (let i = 0; i < run.length; i++) {
    const k = charClass(run.charCodeAt(i));
    if (!k) {
      if (run[i] !== '=') seps++;
      prev = 0;
      continue;
    }
    alnum++;
    if (prev) {
      pairs++;
      if (prev !== k) changes++;
    }
    prev = k;
  }
  if (alnum < 18 || seps * 6 > alnum || pairs === 0 || changes / pairs < 0.3) return false;
  return !run.split(/[^A-Za-z0-9]+/).filter(Boolean).every((seg) => WORDY.test(seg));
}

/**
 * Bytes decoded as latin1 or utf8 (`key.toString('latin1')`): random bytes give ~60 % characters
 * that are control characters, U+0080..U+00FF or U+FFFD; text in any language gives few.
 */
function looksLikeBinaryText(s: string): boolean {
  if (s.length < 12) return false;
  let odd = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c < 0x20 && c !== 9 && c !== 10 && c !== 13) || (c >= 0x7f && c <= 0xff) || c === 0xfffd) odd++;
  }
  return odd / s.length >= 0.3;
}

/** Rule 3 on one string. */
export function redactString(s: string): string {
  if (looksLikeBinaryText(s)) return `[redacted binary text ${s.length} chars]`;
  if (s.length < 12) return s;
  // UUIDs (key_IDs, stream ids) are identifiers, not secrets: set them aside during the scan.
  const uuids: string[] = [];
  let out = s.replace(UUID, (u) => `\u0000${uuids.push(u) - 1}\u0000`);
  // Credentials inside URLs: https://user:pass@host and ?token=…&key=… query parameters.
  out = out.replace(URL_CREDENTIALS, '$1[redacted]@').replace(SECRET_QUERY, (_m, pre: string, name: string) =>
    classifyField(name) === 'secret' ? `${pre}${name}=[redacted]` : _m);
  out = out.replace(HEX_RUN, '[redacted blob]');
  out = out.replace(B64_RUN, (run) => (looksLikeBase64Blob(run) ? '[redacted blob]' : run));
  return uuids.length ? out.replace(/\u0000(\d+)\u0000/g, (_m, i: string) => uuids[Number(i)]) : out;
}

/** Stricter test for strings in secret-metadata fields (keyId, secretPath…): short blobs too. */
function suspiciousMetadataString(s: string): boolean {
  if (s.length > 128 || /[0-9a-fA-F]{16,}/.test(s.replace(UUID, ''))) return true;
  const runs = s.replace(UUID, ' ').match(/[A-Za-z0-9+/_=-]{16,}/g) ?? [];
  return runs.some((r) => /[0-9]/.test(r) && /[A-Za-z]/.test(r) && /[a-z]/.test(r) && /[A-Z]/.test(r));
}

function isBinary(v: unknown): v is ArrayBufferView | ArrayBuffer | SharedArrayBuffer {
  return (
    ArrayBuffer.isView(v) || v instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && v instanceof SharedArrayBuffer)
  );
}
function byteLength(v: ArrayBufferView | ArrayBuffer | SharedArrayBuffer): number {
  return v.byteLength;
}

function looksLikeByteArray(a: unknown[]): boolean {
  if (a.length < 16) return false;
  for (const x of a) if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > 255) return false;
  return true;
}

/** Returns a JSON-safe deep copy of `value` with the rules above applied. Never throws. */
export function redact(value: unknown, fieldName = '', depth = 0, seen: WeakSet<object> = new WeakSet()): unknown {
  const cls = fieldName ? classifyField(fieldName) : 'plain';
  if (isBinary(value)) return `[redacted ${byteLength(value)} bytes]`;
  if (cls === 'secret') return value === undefined || value === null ? value : '[redacted]';
  switch (typeof value) {
    case 'string': {
      if (cls === 'secret-metadata' && suspiciousMetadataString(value)) return '[redacted]';
      // Redact first, then cut: a cut through a blob must not leave a short unredacted tail.
      const r = redactString(value);
      return r.length > MAX_STRING ? `${r.slice(0, MAX_STRING)}[+${r.length - MAX_STRING} chars]` : r;
    }
    case 'number':
      return Number.isFinite(value) ? value : String(value);
    case 'boolean':
      return value;
    case 'bigint':
      return value.toString();
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (value === null) return null;
  const obj = value as object;
  if (seen.has(obj)) return '[circular]';
  if (depth >= MAX_DEPTH) return '[depth]';
  seen.add(obj);
  try {
    if (value instanceof Error) return redactError(value, depth, seen);
    if (value instanceof Date) return Number.isNaN(value.getTime()) ? 'Invalid Date' : value.toISOString();
    if (Array.isArray(value)) {
      if (looksLikeByteArray(value)) return `[redacted ${value.length} bytes]`;
      const items = value.slice(0, MAX_ARRAY).map((x) => redact(x, '', depth + 1, seen) ?? null);
      if (value.length > MAX_ARRAY) items.push(`[+${value.length - MAX_ARRAY} more]`);
      return items;
    }
    if (value instanceof Map) {
      const out: Record<string, unknown> = {};
      for (const [k, v] of value) out[String(k)] = redact(v, String(k), depth + 1, seen);
      return out;
    }
    if (value instanceof Set) return [...value].map((x) => redact(x, '', depth + 1, seen) ?? null);
    if (value instanceof RegExp) return redactString(String(value));
    if (value instanceof URL) return redactString(value.href);
    const tag = Object.prototype.toString.call(value);
    if (tag === '[object KeyObject]' || (obj as { type?: unknown }).type === 'secret' && 'symmetricKeySize' in obj) {
      return '[redacted KeyObject]';
    }
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(obj)) {
      let v: unknown;
      try {
        v = (obj as Record<string, unknown>)[k];
      } catch {
        v = '[unreadable]';
      }
      const r = redact(v, k, depth + 1, seen);
      if (r !== undefined) out[redactString(k)] = r;
    }
    return out;
  } finally {
    seen.delete(obj);
  }
}

function redactError(err: Error, depth: number, seen: WeakSet<object>): Record<string, unknown> {
  const out: Record<string, unknown> = { name: err.name, message: redactString(String(err.message)) };
  const code = (err as { code?: unknown }).code;
  if (code !== undefined) out.code = redact(code, 'code', depth + 1, seen);
  if (err.stack) out.stack = redactString(err.stack);
  // Own enumerable fields of custom errors (e.g. status, device) follow the same rules.
  for (const k of Object.keys(err)) {
    if (k === 'code' || k === 'cause' || k === 'message' || k === 'stack') continue;
    const r = redact((err as unknown as Record<string, unknown>)[k], k, depth + 1, seen);
    if (r !== undefined) out[redactString(k)] = r;
  }
  if (err instanceof AggregateError) out.errors = err.errors.map((e) => redact(e, '', depth + 1, seen));
  if ('cause' in err && err.cause !== undefined) out.cause = redact(err.cause, 'cause', depth + 1, seen);
  return out;
}
