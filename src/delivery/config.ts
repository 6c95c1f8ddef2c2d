/**
 * Reading a reference-KMS configuration file (JSON) for `qkd kms` and for `qkd run`. Paths in the
 * file are relative to the file.
 *
 * Key custody: exactly one of
 * - `"wrapKeyFile": "kmsA.wrap"` — development keystore: 32 raw bytes or 64 hex digits, the KMS
 *   starts unsealed (what `qkd run --emulated` uses). KEK generations made by `qkd kms rotate-kek`
 *   are sealed under it in `<dbPath>.keystore`.
 * - `"custody": {...}` — the KMS starts sealed until K of N custodians' shares unseal it:
 *
 *   "custody": {
 *     "keystore": "software" | "pkcs11",
 *     "keystoreFile": "kmsA.keystore",            // default <dbPath>.keystore
 *     "pkcs11": { "module": "/usr/lib/softhsm/libsofthsm2.so", "tokenLabel": "qkd-kms",
 *                 "keyLabel": "qkd-kms-kek", "pinEnv": "QKD_KMS_PIN" },   // or "pinFile": "pin.txt" (0600), or "slot": 0
 *     "unsealTimeoutS": 600,                      // shares given are forgotten if K do not arrive in time
 *     "adminSocket": "kmsA.admin.sock"            // default <dbPath>.admin.sock (0600): unseal, rotate-kek
 *   }
 *
 * `"database": "postgres://kms:PASSWORD@db.example:5432/kmsa"` — keep the keys in PostgreSQL (the
 *   production backend) instead of the SQLite file `dbPath` (the embedded default); `dbPath` still
 *   names the base of the KMS's state files (keystore, admin socket, stream ids). A value that is
 *   not a postgres:// URL is a SQLite path (relative to this file). docs/delivery.md "Durability
 *   and storage".
 * `"expiryWarningS": 300` — alarm KEYS_EXPIRING that long before a held key's TTL ends.
 * `"rotationBatch": 256` — keys re-wrapped per transaction by `qkd kms rotate-kek`.
 * `"commitments": {"node": "nodeA.commit.pub", "peerNode": "nodeB.commit.pub"}` — Ed25519 public
 *   keys (PEM) of the nodes' commitment keys: keys are released only if both nodes signed them.
 * `"maxKeySizeBits"`, `"maxSaeIdCount"`, `"watermarks"` — see KmsOptions in kms.ts.
 * `"pushBatch": 64` — chunks per push the KMS asks its node for (batched pushes, our extension);
 *   0 keeps one request per chunk (docs/delivery.md "Batched pushes").
 * `"hybrid": {"saeA->saeB": "when-short", "default": "never"}` — hybrid fallback per SAE pair (hybrid.ts).
 * `"linkKeyRateBps": 20000` — the link's key rate ETSI 004 application streams share (the sum of
 *   their min_bps never exceeds it); without it, the measured inflow. `"qkd004": {"maxKeyBytes":
 *   512, "reserveS": 2}` — etsi004-app.ts. docs/delivery.md "ETSI GS QKD 004 for applications".
 *
 * {
 *   "id": "kmsA", "role": "source",
 *   "listen": { "host": "127.0.0.1", "port": 8443 },
 *   "tls": { "ca": "pki/ca.pem", "cert": "pki/kmsA.pem", "key": "pki/kmsA.key" },
 *   "dbPath": "kmsA.db", "wrapKeyFile": "kmsA.wrap", "capacity": 100000,
 *   "node": { "url": "https://127.0.0.1:9001", "id": "nodeA" }, "peerNodeId": "nodeB",
 *   "peer": { "url": "https://127.0.0.1:8444", "id": "kmsB" },
 *   "saes": { "local": ["saeA"], "remote": ["saeB"] },
 *   "qos": { "key_chunk_size": 32, "ttl": 3600 },
 *   "openStream": true
 * }
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { ConfigError } from '../errors.ts';
import type { KmsOptions } from './kms.ts';
import type { TokenConfig } from './store.ts';
import { checkHybridConfig } from './hybrid.ts';

export interface CustodyFileConfig {
  keystore: 'software' | 'pkcs11';
  keystoreFile?: string;
  pkcs11?: { module: string; tokenLabel?: string; slot?: number; keyLabel: string; pinEnv?: string; pinFile?: string };
  unsealTimeoutS?: number;
  adminSocket?: string;
}

export interface KmsFileConfig extends Omit<KmsOptions, 'tls' | 'wrapKey' | 'custody' | 'keystoreFile' | 'adminSocket' |
  'expiryWarningMs' | 'commitments'> {
  /** Files holding the Ed25519 public keys (PEM) of our node's and the peer node's commitment keys. */
  commitments?: { node: string; peerNode: string };
  tls?: { ca: string; cert: string; key: string };
  /** Development keystore (unsealed at start). Exclusive with `custody`. */
  wrapKeyFile?: string;
  custody?: CustodyFileConfig;
  expiryWarningS?: number;
  /** Source side: open a stream (retrying) once the node and the peer KMS answer. */
  openStream?: boolean;
}

/** The files a KMS configuration names, without reading any secret (for the admin commands). */
export interface KmsPaths {
  id: string;
  dbPath: string;
  /** Where the keys are: a postgres:// URL, or the SQLite file (dbPath unless `database` names another). */
  database: string;
  keystoreFile: string;
  adminSocket: string;
  custody?: CustodyFileConfig;
  /** Resolved PKCS#11 settings (no PIN). */
  token?: TokenConfig;
  dir: string;
}

/** True when `database` names a PostgreSQL server (the native store decides the same way). */
export function isPostgresUrl(database: string): boolean {
  return /^postgres(ql)?:\/\//.test(database);
}

function readJson(file: string): KmsFileConfig {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(file, 'utf8'));
  } catch (cause) {
    throw new ConfigError('CONFIG_KMS', `cannot read KMS configuration ${file}: ${(cause as Error).message}`, { cause });
  }
  // Found by fuzzing: `null` or a list threw a TypeError instead of naming the file.
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError('CONFIG_KMS', `${file}: expected a JSON object (the KMS configuration)`);
  return v as KmsFileConfig;
}

/** A path field must be a string (found by fuzzing: other types threw a TypeError). */
function pathField(file: string, field: string, v: unknown, optional = false): void {
  if (!(typeof v === 'string' && v !== '') && !(optional && v === undefined)) {
    throw new ConfigError('CONFIG_KMS', `${file}: field '${field}' must be a file path (a non-empty string)`);
  }
}

/** Reads a file the configuration names; a missing one is a ConfigError naming the field. */
function readNamed(file: string, field: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (cause) {
    throw new ConfigError('CONFIG_KMS', `${file}: ${field} ${path}: cannot read it (${(cause as NodeJS.ErrnoException).code ?? String(cause)})`, { cause });
  }
}

/** Paths and custody settings of a KMS configuration, checked; reads no key, PIN or certificate. */
export function kmsPaths(file: string): KmsPaths {
  const cfg = readJson(file);
  const base = dirname(resolve(file));
  const p = (x: string) => (isAbsolute(x) ? x : resolve(base, x));
  if (typeof cfg.dbPath !== 'string' || typeof cfg.id !== 'string') {
    throw new ConfigError('CONFIG_KMS', `${file}: fields 'id' and 'dbPath' are required`);
  }
  const dbPath = p(cfg.dbPath);
  if (cfg.database !== undefined && (typeof cfg.database !== 'string' || cfg.database === '')) {
    throw new ConfigError('CONFIG_KMS', `${file}: field 'database' must be a postgres:// URL or a SQLite file path`);
  }
  const database = cfg.database === undefined ? dbPath : isPostgresUrl(cfg.database) ? cfg.database : p(cfg.database);
  const c = cfg.custody;
  if (c !== undefined && (typeof c !== 'object' || c === null)) throw new ConfigError('CONFIG_KMS', `${file}: field 'custody' must be an object`);
  pathField(file, 'wrapKeyFile', cfg.wrapKeyFile, true);
  pathField(file, 'custody.keystoreFile', c?.keystoreFile, true);
  pathField(file, 'custody.adminSocket', c?.adminSocket, true);
  if (c && cfg.wrapKeyFile) {
    throw new ConfigError('CONFIG_KMS', `${file}: give either 'wrapKeyFile' (development keystore, starts unsealed) or ` +
      "'custody' (sealed until K shares unseal it), not both");
  }
  if (!c && !cfg.wrapKeyFile) {
    throw new ConfigError('CONFIG_KMS', `${file}: field 'custody' (or, for development only, 'wrapKeyFile') is required`);
  }
  let token: TokenConfig | undefined;
  if (c) {
    if (c.keystore !== 'software' && c.keystore !== 'pkcs11') {
      throw new ConfigError('CONFIG_KMS', `${file}: custody.keystore must be "software" or "pkcs11"`);
    }
    if (c.keystore === 'pkcs11') {
      const k = c.pkcs11;
      if (!k || typeof k !== 'object' || typeof k.module !== 'string' || typeof k.keyLabel !== 'string' || (k.tokenLabel === undefined && k.slot === undefined)) {
        throw new ConfigError('CONFIG_KMS', `${file}: custody.pkcs11 needs module, keyLabel and tokenLabel (or slot)`);
      }
      if ('pin' in (k as object)) {
        throw new ConfigError('CONFIG_KMS', `${file}: custody.pkcs11.pin: the PIN never goes into the configuration; put ` +
          "it in an environment variable ('pinEnv') or a file readable by the KMS's user only ('pinFile')");
      }
      if (!!k.pinEnv === !!k.pinFile || (k.pinEnv !== undefined && typeof k.pinEnv !== 'string')) {
        throw new ConfigError('CONFIG_KMS', `${file}: custody.pkcs11 needs exactly one of 'pinEnv' (environment variable ` +
          "name) or 'pinFile' (a 0600 file)");
      }
      pathField(file, 'custody.pkcs11.pinFile', k.pinFile, true);
      token = { module: k.module, tokenLabel: k.tokenLabel, slot: k.slot, keyLabel: k.keyLabel,
        pinSource: k.pinEnv ? `environment variable ${k.pinEnv}` : `file ${p(k.pinFile!)}` };
    }
  }
  return { id: cfg.id, dbPath, database, dir: base, custody: c, token,
    keystoreFile: c?.keystoreFile ? p(c.keystoreFile) : `${dbPath}.keystore`,
    adminSocket: c?.adminSocket ? p(c.adminSocket) : `${dbPath}.admin.sock` };
}

/** Reads the PKCS#11 PIN from its environment variable or file (never from the configuration). */
export function readPin(file: string, c: CustodyFileConfig): Buffer {
  const k = c.pkcs11!;
  if (k.pinEnv) {
    const v = process.env[k.pinEnv];
    if (!v) {
      throw new ConfigError('CONFIG_KMS_PIN', `${file}: the PKCS#11 PIN is taken from environment variable ${k.pinEnv}, ` +
        'which is not set: export it in the KMS service environment');
    }
    return Buffer.from(v, 'utf8');
  }
  const pf = isAbsolute(k.pinFile!) ? k.pinFile! : resolve(dirname(resolve(file)), k.pinFile!);
  if (!existsSync(pf)) {
    throw new ConfigError('CONFIG_KMS_PIN', `${file}: PIN file ${pf} does not exist`);
  }
  if ((statSync(pf).mode & 0o077) !== 0) {
    throw new ConfigError('CONFIG_KMS_PIN', `PIN file ${pf} is readable by others: chmod 600 ${pf}`);
  }
  const raw = readFileSync(pf);
  const end = raw.length - (raw[raw.length - 1] === 10 ? 1 : 0) - (raw[raw.length - 2] === 13 ? 1 : 0);
  const pin = Buffer.from(raw.subarray(0, end));
  raw.fill(0);
  return pin;
}

/** Reads a 32-byte secret from a file of 32 raw bytes or 64 hex digits (with optional newline). */
export function readKeyFile(path: string, what: string): Buffer {
  if (!existsSync(path)) {
    throw new ConfigError('CONFIG_KEY_FILE', `${what} file ${path} does not exist; create one with ` +
      `\`openssl rand 32 > ${path}\``);
  }
  const raw = readFileSync(path);
  if (raw.length === 32) return raw;
  const hex = raw.toString('latin1').trim();
  if (/^[0-9a-fA-F]{64}$/.test(hex)) return Buffer.from(hex, 'hex');
  throw new ConfigError('CONFIG_KEY_FILE', `${what} file ${path} must hold 32 raw bytes or 64 hex digits`);
}

export function loadKmsConfig(file: string): { opts: KmsOptions; openStream: boolean } {
  const cfg = readJson(file);
  const base = dirname(resolve(file));
  const p = (x: string) => (isAbsolute(x) ? x : resolve(base, x));
  const need = (k: keyof KmsFileConfig) => {
    if (cfg[k] === undefined) throw new ConfigError('CONFIG_KMS', `${file}: field '${String(k)}' is required`);
  };
  for (const k of ['id', 'role', 'dbPath', 'node', 'peerNodeId', 'saes'] as const) need(k);
  if (cfg.role !== 'source' && cfg.role !== 'destination') {
    throw new ConfigError('CONFIG_KMS', `${file}: role must be "source" or "destination"`);
  }
  if (!cfg.tls && !cfg.insecure) {
    throw new ConfigError('CONFIG_KMS', `${file}: 'tls' {ca, cert, key} is required (or "insecure": true for a local ` +
      'experiment without authentication)');
  }
  if (cfg.hybrid !== undefined) checkHybridConfig(cfg.hybrid, `${file}: field 'hybrid'`);
  if (cfg.linkKeyRateBps !== undefined && !(typeof cfg.linkKeyRateBps === 'number' && cfg.linkKeyRateBps >= 0)) {
    throw new ConfigError('CONFIG_KMS', `${file}: field 'linkKeyRateBps' must be the link's key rate in bit/s (a number >= 0)`);
  }
  const q4 = cfg.qkd004 as Record<string, unknown> | undefined;
  if (q4 !== undefined && (typeof q4 !== 'object' || q4 === null || Object.entries(q4).some(([k, v]) =>
    !['maxKeyBytes', 'reserveS', 'inflowWindowMs', 'prefetchGroups', 'maxStreamsPerSae'].includes(k) || typeof v !== 'number' || !(v > 0)))) {
    throw new ConfigError('CONFIG_KMS', `${file}: field 'qkd004' takes positive numbers maxKeyBytes, reserveS, inflowWindowMs, prefetchGroups, maxStreamsPerSae`);
  }
  const paths = kmsPaths(file);
  if (cfg.tls && typeof cfg.tls !== 'object') throw new ConfigError('CONFIG_KMS', `${file}: field 'tls' must be an object {ca, cert, key}`);
  for (const k of ['ca', 'cert', 'key'] as const) if (cfg.tls) pathField(file, `tls.${k}`, cfg.tls[k]);
  const tls = cfg.tls ? { ca: readNamed(file, 'tls.ca', p(cfg.tls.ca)), cert: readNamed(file, 'tls.cert', p(cfg.tls.cert)),
    key: readNamed(file, 'tls.key', p(cfg.tls.key)) } : undefined;
  const { wrapKeyFile, openStream, custody, expiryWarningS, commitments, ...rest } = cfg;
  if (commitments !== undefined && (typeof commitments !== 'object' || commitments === null)) {
    throw new ConfigError('CONFIG_KMS', `${file}: field 'commitments' must be an object {node, peerNode} of public key files`);
  }
  for (const k of ['node', 'peerNode'] as const) if (commitments) pathField(file, `commitments.${k}`, commitments[k]);
  const opts: KmsOptions = { ...rest, tls, dbPath: p(cfg.dbPath), database: paths.database, keystoreFile: paths.keystoreFile,
    commitments: commitments && { node: readNamed(file, 'commitments.node', p(commitments.node)),
      peerNode: readNamed(file, 'commitments.peerNode', p(commitments.peerNode)) },
    adminSocket: paths.adminSocket, expiryWarningMs: expiryWarningS !== undefined ? expiryWarningS * 1000 : undefined };
  if (custody) {
    opts.custody = { kind: custody.keystore, token: paths.token,
      pin: custody.keystore === 'pkcs11' ? readPin(file, custody) : undefined,
      unsealTimeoutMs: (custody.unsealTimeoutS ?? 600) * 1000 };
  } else {
    opts.wrapKey = readKeyFile(p(wrapKeyFile!), 'wrapKeyFile');
  }
  return { opts, openStream: !!openStream };
}
