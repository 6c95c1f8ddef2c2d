/**
 * Reading a reference-KMS configuration file (JSON) for `qkd kms` and for `qkd run`. Paths in the
 * file are relative to the file. The wrapping key file holds 32 raw bytes or 64 hex digits.
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
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { ConfigError } from '../errors.ts';
import type { KmsOptions } from './kms.ts';

export interface KmsFileConfig extends Omit<KmsOptions, 'tls' | 'wrapKey'> {
  tls?: { ca: string; cert: string; key: string };
  wrapKeyFile: string;
  /** Source side: open a stream (retrying) once the node and the peer KMS answer. */
  openStream?: boolean;
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
  let cfg: KmsFileConfig;
  try {
    cfg = JSON.parse(readFileSync(file, 'utf8')) as KmsFileConfig;
  } catch (cause) {
    throw new ConfigError('CONFIG_KMS', `cannot read KMS configuration ${file}: ${(cause as Error).message}`, { cause });
  }
  const base = dirname(resolve(file));
  const p = (x: string) => (isAbsolute(x) ? x : resolve(base, x));
  const need = (k: keyof KmsFileConfig) => {
    if (cfg[k] === undefined) throw new ConfigError('CONFIG_KMS', `${file}: field '${String(k)}' is required`);
  };
  for (const k of ['id', 'role', 'dbPath', 'wrapKeyFile', 'node', 'peerNodeId', 'saes'] as const) need(k);
  if (cfg.role !== 'source' && cfg.role !== 'destination') {
    throw new ConfigError('CONFIG_KMS', `${file}: role must be "source" or "destination"`);
  }
  if (!cfg.tls && !cfg.insecure) {
    throw new ConfigError('CONFIG_KMS', `${file}: 'tls' {ca, cert, key} is required (or "insecure": true for a local ` +
      'experiment without authentication)');
  }
  const tls = cfg.tls ? { ca: readFileSync(p(cfg.tls.ca), 'utf8'), cert: readFileSync(p(cfg.tls.cert), 'utf8'),
    key: readFileSync(p(cfg.tls.key), 'utf8') } : undefined;
  const { wrapKeyFile, openStream, ...rest } = cfg;
  return { opts: { ...rest, tls, dbPath: p(cfg.dbPath), wrapKey: readKeyFile(p(wrapKeyFile), 'wrapKeyFile') },
    openStream: !!openStream };
}
