/**
 * `qkd channel rotate`: emergency rotation of a node's classical-channel authentication keys
 * (issue 14), for a compromise suspected or a disk that left the site. On a stopped node:
 *
 * 1. the channel state (`channel-<role>/auth.state`: hash key and the unused one-time pads) is
 *    shredded (overwritten, synced, deleted); the register of consumed secrets
 *    (`psk-register.json`) and the block ledger stay, so no earlier secret can be used again;
 * 2. a secret file still lying at `channel.pskFile` predates the rotation and is shredded too;
 * 3. `--curve`: the node's CURVE key pair is shredded and a new one made (the peer's
 *    `channel.peerPublicKey` must then be updated with the printed key);
 * 4. `--new-psk FILE`: a fresh pre-shared secret for the pair is written to FILE (0600; never over
 *    an existing file), to be moved to both nodes' `channel.pskFile` over a trusted path.
 *
 * Both nodes must be rotated (the peer's state holds the same hash key). docs/runbook.md,
 * "Channel secret and keys".
 */
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseOptions, numberOption } from '../args.ts';
import { ConfigError } from '../../errors.ts';
import { readNodeConfig } from '../../node/config.ts';
import { channelStateDir } from '../../node/channel-credentials.ts';
import { shred } from '../../core/auth.ts';
import { loadOrCreateKeyPair } from '../../channel/curve.ts';

export const summary = 'emergency rotation of the classical channel\'s authentication keys (qkd channel rotate)';
export const usage = `qkd channel rotate --config NODE.json [--curve] [--new-psk FILE [--psk-bytes N]]

Run on a STOPPED node, then on its peer. Shreds the node's channel state (hash key, unused pads)
and any secret file left at channel.pskFile; keeps the register of consumed secrets. --curve also
replaces the node's CURVE key pair (put the printed public key into the peer's
channel.peerPublicKey). --new-psk writes a fresh pre-shared secret (default ${16 + 32 * 16384} bytes)
to FILE (0600): move it to both nodes' channel.pskFile, then start both.`;

export const privateFiles = true;

export async function run(args: string[]): Promise<number> {
  const { values, positionals } = parseOptions(args, {
    config: { type: 'string' }, curve: { type: 'boolean' }, 'new-psk': { type: 'string' }, 'psk-bytes': { type: 'string' },
  });
  if (positionals[0] !== 'rotate' || positionals.length !== 1) throw new ConfigError('BAD_OPTION', `expected 'qkd channel rotate', got '${positionals.join(' ')}'.\n${usage}`);
  if (!values.config) throw new ConfigError('BAD_OPTION', `--config NODE.json is required.\n${usage}`);
  const pskBytes = numberOption('psk-bytes', values['psk-bytes'], 16 + 32 * 16384);
  if (!Number.isInteger(pskBytes) || pskBytes < 16 + 32 * 16) throw new ConfigError('BAD_OPTION', `--psk-bytes must be a whole number >= ${16 + 32 * 16} (hash key + 16 round trips of pads).`);
  const newPsk = values['new-psk'];
  if (newPsk !== undefined && existsSync(newPsk)) throw new ConfigError('CHANNEL_ROTATE', `${newPsk} exists: a secret is never written over a file (move or shred it first).`);
  const cfg = readNodeConfig(values.config);
  const out = (s: string) => process.stdout.write(`${s}\n`);

  const state = join(channelStateDir(cfg.delivery.spoolDir, cfg.role), 'auth.state');
  if (existsSync(state)) {
    shred(state);
    out(`retired the channel state ${state} (shredded; psk-register.json kept)`);
  } else out(`no channel state at ${state}: nothing to retire`);
  if (existsSync(cfg.channel.pskFile)) {
    shred(cfg.channel.pskFile);
    out(`shredded the secret file ${cfg.channel.pskFile} (it predates the rotation)`);
  }
  if (values.curve) {
    const key = cfg.channel.curveKeyFile;
    if (typeof key !== 'string' || !key) throw new ConfigError('CHANNEL_CURVE_KEY', `${values.config}: channel.curveKeyFile is not set: nothing to rotate.`);
    for (const f of [key, `${key}.pub`]) if (existsSync(f)) shred(f);
    const { publicKey } = loadOrCreateKeyPair(key);
    out(`new CURVE key pair in ${key}; public key (put it into the peer's channel.peerPublicKey): ${publicKey}`);
  }
  if (newPsk !== undefined) {
    const psk = randomBytes(pskBytes);
    try {
      writeFileSync(newPsk, psk, { mode: 0o600, flag: 'wx' });
    } finally {
      psk.fill(0);
    }
    out(`fresh pre-shared secret (${pskBytes} bytes) in ${newPsk}: move it to both nodes' channel.pskFile over a trusted path, then shred this copy`);
  }
  out(`next: rotate the peer node the same way, provision the new secret on both, start both.`);
  return 0;
}
