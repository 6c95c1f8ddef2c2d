/**
 * `qkd node seal-key --config NODE.json`: moves a node's at-rest key (delivery.spoolKeyFile: the
 * spool's key, from which the channel state's wrapping key is derived) into the custody of the
 * PKCS#11 token named by the configuration's custody.pkcs11 (src/node/custody.ts). On a stopped
 * node: the plain key is sealed by a non-extractable key in the token (generated there at first
 * use), the sealed file replaces the plain one atomically, and the plain bytes are shredded.
 * The node's spool and channel state stay readable: the key itself does not change.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { parseOptions } from '../args.ts';
import { ConfigError } from '../../errors.ts';
import { readNodeConfig } from '../../node/config.ts';
import { readAtRestKey, sealAtRestKey } from '../../node/custody.ts';
import { shred } from '../../core/auth.ts';
import { native } from '../../core/native.ts';

export const summary = "seal a node's at-rest key in its PKCS#11 token (qkd node seal-key)";
export const usage = `qkd node seal-key --config NODE.json

Run on a STOPPED node whose configuration names a token in custody.pkcs11 (module, tokenLabel,
keyLabel, pinEnv or pinFile). Seals the plain at-rest key file (delivery.spoolKeyFile) in the token,
replaces the file with the sealed one and shreds the plain bytes. The node then needs the token and
its PIN to start (docs/runbook.md, "Node at-rest key in a token").`;

export const privateFiles = true;

export async function run(args: string[]): Promise<number> {
  const { values, positionals } = parseOptions(args, { config: { type: 'string' } });
  if (positionals[0] !== 'seal-key' || positionals.length !== 1) throw new ConfigError('BAD_OPTION', `expected 'qkd node seal-key', got '${positionals.join(' ')}'.\n${usage}`);
  if (!values.config) throw new ConfigError('BAD_OPTION', `--config NODE.json is required.\n${usage}`);
  const cfg = readNodeConfig(values.config);
  const path = cfg.delivery.spoolKeyFile;
  if (!cfg.custody) throw new ConfigError('NODE_AT_REST_KEY', `${values.config} has no custody.pkcs11 section: name the token (module, tokenLabel, keyLabel, pinEnv/pinFile) first.`);
  if (!existsSync(path)) throw new ConfigError('NODE_AT_REST_KEY', `the at-rest key file ${path} does not exist.`);
  const plain = readFileSync(path);
  if (native().nodeTokenIsSealed(plain)) {
    // Already sealed: prove the token opens it, then say so (nothing changes).
    readAtRestKey(cfg, values.config).fill(0);
    process.stdout.write(`${path} is already sealed in the token and the token opens it: nothing to do\n`);
    return 0;
  }
  if (plain.length !== 32) {
    plain.fill(0);
    throw new ConfigError('NODE_AT_REST_KEY', `${path} holds ${plain.length} bytes; a node's at-rest key is 32 bytes.`);
  }
  let sealed: Buffer;
  try {
    sealed = sealAtRestKey(cfg, values.config, plain);
  } finally {
    plain.fill(0);
  }
  // Check the round trip before the plain key goes, then swap atomically and shred the old file.
  const tmp = `${path}.sealed.tmp`;
  writeFileSync(tmp, sealed, { mode: 0o600, flag: 'wx' });
  const old = `${path}.plain.old`;
  renameSync(path, old);
  renameSync(tmp, path);
  try {
    readAtRestKey(cfg, values.config).fill(0);
  } catch (err) {
    renameSync(old, path); // the token cannot open what it sealed: keep the plain key, report
    throw err;
  }
  shred(old);
  process.stdout.write(`sealed ${path} in the PKCS#11 token (key '${cfg.custody.pkcs11.keyLabel}'); the plain key was shredded\n`);
  return 0;
}
