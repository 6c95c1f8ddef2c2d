/**
 * The node's at-rest key and where it is kept (issue 14, custody). The 32-byte at-rest key
 * (`delivery.spoolKeyFile`) is the spool's key and, through HKDF, the key wrapping the classical
 * channel's state (hash key and one-time-pad pool: channel-credentials.ts). By default it is a
 * plain 0600 file. With `custody.pkcs11` in the node configuration the file holds the key only
 * sealed by a non-extractable AES key in a PKCS#11 token (native/node/src/node_custody.rs): the
 * node unseals it in the token at start, and a copied state directory opens nothing without the
 * token and its PIN. `qkd node seal-key` converts a plain key file (docs/runbook.md).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { ConfigError } from '../errors.ts';
import { native } from '../core/native.ts';
import { readPin, type CustodyFileConfig } from '../delivery/config.ts';
import type { NodeRunConfig } from './config.ts';

export interface NodeCustodyConfig {
  pkcs11: { module: string; tokenLabel?: string; slot?: number; keyLabel: string; pinEnv?: string; pinFile?: string };
}

/** Checks a node configuration's `custody` section (no PIN, no token access). */
export function checkNodeCustody(c: unknown, file: string): void {
  const bad = (what: string) => {
    throw new ConfigError('CONFIG_INVALID', `${file}: custody.pkcs11 ${what} (docs/runbook.md, "Node at-rest key in a token")`);
  };
  if (typeof c !== 'object' || c === null || typeof (c as { pkcs11?: unknown }).pkcs11 !== 'object' || (c as { pkcs11: unknown }).pkcs11 === null) {
    throw new ConfigError('CONFIG_INVALID', `${file}: 'custody' must be {"pkcs11": {module, tokenLabel, keyLabel, pinEnv|pinFile}}`);
  }
  const k = (c as NodeCustodyConfig).pkcs11 as Record<string, unknown>;
  if (typeof k.module !== 'string' || typeof k.keyLabel !== 'string') bad('needs module and keyLabel (strings)');
  if (k.tokenLabel === undefined && k.slot === undefined) bad('needs tokenLabel (or slot)');
  if ('pin' in k) bad('must not hold the PIN: name an environment variable (pinEnv) or a 0600 file (pinFile)');
  if (!!k.pinEnv === !!k.pinFile) bad("needs exactly one of 'pinEnv' or 'pinFile'");
}

function token(cfg: NodeRunConfig, file: string) {
  const k = cfg.custody!.pkcs11;
  const pinFile = k.pinFile && !isAbsolute(k.pinFile) ? resolve(dirname(resolve(file)), k.pinFile) : k.pinFile;
  const custody: CustodyFileConfig = { keystore: 'pkcs11', pkcs11: { ...k, pinFile } };
  return {
    tok: { module: k.module, tokenLabel: k.tokenLabel, slot: k.slot, keyLabel: k.keyLabel,
      pinSource: k.pinEnv ? `environment variable ${k.pinEnv}` : `file ${pinFile}` },
    pin: () => readPin(file, custody),
  };
}

/**
 * The node's 32-byte at-rest key, unsealed in its token when the configuration names one. The
 * caller wipes the returned buffer after use.
 */
export function readAtRestKey(cfg: NodeRunConfig, configFile = 'the node configuration'): Buffer {
  const path = cfg.delivery.spoolKeyFile;
  if (!existsSync(path)) {
    throw new ConfigError('NODE_AT_REST_KEY', `the node's at-rest key file ${path} (delivery.spoolKeyFile) does not exist: restore it from backup, or for a new node create 32 random bytes (\`openssl rand 32 > ${path}; chmod 600 ${path}\`).`);
  }
  const raw = readFileSync(path);
  const sealed = native().nodeTokenIsSealed(raw);
  if (!cfg.custody) {
    if (sealed) {
      raw.fill(0);
      throw new ConfigError('NODE_AT_REST_KEY', `${path} is sealed in a PKCS#11 token, but ${configFile} has no custody.pkcs11 section: add the token's module, tokenLabel, keyLabel and pinEnv/pinFile.`);
    }
    return raw;
  }
  if (!sealed) {
    raw.fill(0);
    throw new ConfigError('NODE_AT_REST_KEY', `${configFile} keeps the at-rest key in a PKCS#11 token, but ${path} is a plain key: seal it first with \`qkd node seal-key --config ${configFile}\`.`);
  }
  const { tok, pin } = token(cfg, configFile);
  const p = pin();
  try {
    return native().nodeTokenUnseal(tok, p, cfg.nodeId, raw);
  } finally {
    p.fill(0);
  }
}

/** Seals the plain at-rest key `plain` in the configured token; returns the sealed file bytes. */
export function sealAtRestKey(cfg: NodeRunConfig, configFile: string, plain: Buffer): Buffer {
  if (!cfg.custody) throw new ConfigError('NODE_AT_REST_KEY', `${configFile} has no custody.pkcs11 section: name the token (module, tokenLabel, keyLabel, pinEnv/pinFile) first.`);
  const { tok, pin } = token(cfg, configFile);
  const p = pin();
  try {
    return native().nodeTokenSeal(tok, p, cfg.nodeId, plain);
  } finally {
    p.fill(0);
  }
}
