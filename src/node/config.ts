/**
 * What one node process of a run needs, written as JSON by the supervisor (`qkd run`) into the
 * run directory and read by `qkd _node --config FILE`. Paths are absolute. Secret material is
 * never inline: files (mode 0600) hold the pre-shared authentication secret and the spool key.
 *
 * The same file runs one node on its own host: `qkd run --config FILE` (docs/run.md, "One node per
 * host"). Paths in a hand-written file may be relative to the file.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { ConfigError } from '../errors.ts';
import { loadProfile } from '../devices/profile.ts';
import type { DeviceEntry } from '../devices/config.ts';

export interface NodeRunConfig {
  role: 'alice' | 'bob';
  nodeId: string;
  peerNodeId: string;
  /** Emulated lab: link preset name and overrides, seed of the physics (see docs/lab.md). */
  lab: { preset: string; distanceKm: number; eveFraction: number; seed: string };
  /** Classical channel: Alice binds, Bob connects. */
  channel: { endpoint: string; pskFile: string; sessionId: string };
  /** Detection-event stream inside Bob's host (tagger -> post-processing). */
  stream: { endpoint: string };
  /** ETSI 004 push mode: this node's server and the KMS it pushes to. */
  delivery: {
    listenPort: number;
    tls?: { ca: string; cert: string; key: string };
    insecure: boolean;
    kms: { url: string; id: string };
    spoolDir: string;
    spoolKeyFile: string;
  };
  /** Post-processing: detections per block, LDPC frame size, security parameters. */
  block: { detections: number; frameBits: number; epsSec: number; epsCor: number; qberAbort: number };
  /** Emulated time may not run ahead of wall time by more than this factor (1 = real time). */
  speed: number;
  /** Milliseconds between status reports to the supervisor. */
  statusEveryMs: number;
  /**
   * The node's devices (entries as in `qkd devices`' configuration). Today every entry must be
   * emulated (`"emulated": true`); Bob's time-tagger entry names the profile his driver uses.
   * Default: the emulated EmuLab devices.
   */
  devices?: DeviceEntry[];
}

/** The devices a role needs, by profile kind. */
const NEEDED: Record<NodeRunConfig['role'], string> = { alice: 'photon-source', bob: 'time-tagger' };

/**
 * Checks the device list a node can run with, naming the entry and what to do. Real devices are
 * refused: the clock sync needs Alice's intensity pattern from her node, which is not built yet
 * (docs/run.md, "Limits").
 */
export function checkNodeDevices(cfg: NodeRunConfig, file: string): void {
  if (!cfg.devices) return;
  if (!Array.isArray(cfg.devices)) throw new ConfigError('NODE_CONFIG', `${file}: 'devices' must be a list of device entries`);
  const kinds = new Set<string>();
  for (const [i, d] of cfg.devices.entries()) {
    if (!d || typeof d.id !== 'string' || typeof d.profile !== 'string') {
      throw new ConfigError('NODE_CONFIG', `${file}: devices[${i}] needs "id" and "profile"`);
    }
    kinds.add(loadProfile(d.profile).kind);
    if (d.emulated !== true) {
      throw new ConfigError('RUN_REAL_DEVICES', `${file}: device '${d.id}' (${d.profile}${d.port ? ` on ${d.port}` : ''}) is a real ` +
        'device; qkd run drives emulated devices only so far (the clock sync needs Alice\'s intensity pattern sent by her ' +
        'node, not built yet: docs/run.md). Check real devices with `qkd devices`; mark lab stand-ins "emulated": true.');
    }
  }
  if (!kinds.has(NEEDED[cfg.role])) {
    throw new ConfigError('NODE_CONFIG', `${file}: ${cfg.role}'s node needs a ${NEEDED[cfg.role]} among its devices`);
  }
}

/** Makes the file paths of a hand-written configuration absolute (relative to the file). */
function resolvePaths(cfg: NodeRunConfig, file: string): void {
  const base = dirname(resolve(file));
  const abs = (x: string) => (isAbsolute(x) ? x : resolve(base, x));
  cfg.channel.pskFile = abs(cfg.channel.pskFile);
  cfg.delivery.spoolDir = abs(cfg.delivery.spoolDir);
  cfg.delivery.spoolKeyFile = abs(cfg.delivery.spoolKeyFile);
  if (cfg.delivery.tls) for (const k of ['ca', 'cert', 'key'] as const) cfg.delivery.tls[k] = abs(cfg.delivery.tls[k]);
}

export function readNodeConfig(file: string): NodeRunConfig {
  let cfg: NodeRunConfig;
  try {
    cfg = JSON.parse(readFileSync(file, 'utf8')) as NodeRunConfig;
  } catch (cause) {
    throw new ConfigError('NODE_CONFIG', `cannot read node configuration ${file}: ${(cause as Error).message}`, { cause });
  }
  for (const k of ['role', 'nodeId', 'lab', 'channel', 'stream', 'delivery', 'block'] as const) {
    if (cfg[k] === undefined) throw new ConfigError('NODE_CONFIG', `${file}: field '${k}' is required`);
  }
  if (cfg.role !== 'alice' && cfg.role !== 'bob') throw new ConfigError('NODE_CONFIG', `${file}: role must be "alice" or "bob"`);
  cfg.speed ??= 1;
  cfg.statusEveryMs ??= 1000;
  resolvePaths(cfg, file);
  checkNodeDevices(cfg, file);
  return cfg;
}
