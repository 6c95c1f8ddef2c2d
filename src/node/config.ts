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
import { REAL_KINDS } from './devices.ts';
import { FINITE_KEY_ANALYSES, STRICT_FINITE_KEY_ANALYSES, type FiniteKeyAnalysis } from '../core/estimate.ts';
import { checkNodeCustody, type NodeCustodyConfig } from './custody.ts';

export interface NodeRunConfig {
  role: 'alice' | 'bob';
  nodeId: string;
  peerNodeId: string;
  /**
   * Link preset (protocol parameters: repetition rate, intensities, detector layout) and, for an
   * emulated lab, its overrides and the seed of the physics (see docs/lab.md). `sourceTty`
   * (Bob's node with an emulated lab only): the lab also hosts Alice's emulated PS-1 source on this
   * tty (one end of a pty pair; her node drives the other end as a real serial device) and emits
   * no pulse until her node has programmed its pattern seed and switched it on.
   */
  lab: { preset: string; distanceKm: number; eveFraction: number; seed: string; sourceTty?: string };
  /**
   * Classical channel: Alice binds, Bob connects. `pskFile`: the pre-shared authentication secret,
   * consumed at the first start (docs/channel.md, "Custody"). `curveKeyFile`: this node's CURVE
   * secret key (created at first start, mode 0600; public key in `<file>.pub`);
   * `peerPublicKey`: the peer node's CURVE public key (Z85), the only one the transport accepts.
   */
  channel: { endpoint: string; pskFile: string; sessionId: string; curveKeyFile: string; peerPublicKey: string };
  /**
   * Detection-event stream inside Bob's host (tagger -> post-processing). When post-processing
   * falls behind and `highWaterMark` batches (default 8) are queued: `onBackpressure` 'wait'
   * (default) holds the tagger's reader (a real tagger's own buffer then overflows, marked in
   * band), 'drop' discards batches in the host and marks the next one. Either way the block with
   * the loss is refused and the detections-lost alarm says why.
   */
  stream: { endpoint: string; onBackpressure?: 'wait' | 'drop'; highWaterMark?: number };
  /** ETSI 004 push mode: this node's server and the KMS it pushes to. */
  delivery: {
    listenPort: number;
    tls?: { ca: string; cert: string; key: string };
    insecure: boolean;
    kms: { url: string; id: string };
    spoolDir: string;
    spoolKeyFile: string;
    /**
     * This node's Ed25519 commitment key (PKCS#8 PEM, mode 0600): every key it pushes carries its
     * signature, and the KMSs release a key only when both nodes' commitments check out
     * (docs/delivery.md, "Key commitments"). None: pushes carry no commitment.
     */
    commitKeyFile?: string;
    /**
     * Most key chunks held in the spool unacknowledged by the KMS (default 100000). When it is
     * full the node holds its next committed block sealed and pauses key production until the
     * KMS takes keys again (block-seal.ts, BlockReleaser).
     */
    spoolMaxChunks?: number;
  };
  /**
   * Post-processing: detections per block, LDPC frame size, security parameters, and the
   * finite-key analysis (`analysis`, default 'chernoff2020'; 'lim2014': Lim's Hoeffding bounds,
   * about half the key at 1e7 detections; the '*-paper-gamma' variants are refused: their phase
   * error is an approximation, not an ε bound; readNodeConfig refuses them at run time;
   * docs/postprocessing.md §2).
   */
  block: { detections: number; frameBits: number; epsSec: number; epsCor: number; qberAbort: number; analysis?: FiniteKeyAnalysis };
  /**
   * Bob: directory of calibration records (`qkd calibrate`) the clock sync starts from (channel
   * delays, acceptance window, expected offset); see src/node/calibration.ts. None: the sync finds
   * them itself.
   */
  calibration?: string;
  /**
   * Custody of the node's at-rest key (`delivery.spoolKeyFile`): with `pkcs11`, that file holds
   * the key sealed by a non-extractable key in the token (src/node/custody.ts). None: a plain
   * 0600 file.
   */
  custody?: NodeCustodyConfig;
  /** Emulated time may not run ahead of wall time by more than this factor (1 = real time). */
  speed: number;
  /** Milliseconds between status reports to the supervisor. */
  statusEveryMs: number;
  /**
   * The node's devices (entries as in `qkd devices`' configuration). `"emulated": true` entries are
   * part of the emulated lab (in Bob's process); the others are opened through their drivers:
   * Alice's photon source (serial `port`), Bob's time-tagger (USB) and detectors (serial).
   * Default: the emulated EmuLab devices.
   */
  devices?: DeviceEntry[];
}

/** The devices a role needs, by profile kind. */
const NEEDED: Record<NodeRunConfig['role'], string> = { alice: 'photon-source', bob: 'time-tagger' };

/** Checks the device list a node can run with, naming the entry and what to do. */
export function checkNodeDevices(cfg: NodeRunConfig, file: string): void {
  if (!cfg.devices) return;
  if (!Array.isArray(cfg.devices)) throw new ConfigError('NODE_CONFIG', `${file}: 'devices' must be a list of device entries`);
  const kinds = new Set<string>();
  for (const [i, d] of cfg.devices.entries()) {
    // A recording as Bob's tagger (src/devices/replay.ts): profile 'replay', path from this file's folder.
    if (d && typeof d.replay === 'string') Object.assign(d, { profile: d.profile ?? 'replay', replay: resolve(dirname(resolve(file)), d.replay) });
    if (!d || typeof d.id !== 'string' || typeof d.profile !== 'string') {
      throw new ConfigError('NODE_CONFIG', `${file}: devices[${i}] needs "id" and "profile"`);
    }
    const p = loadProfile(d.profile);
    kinds.add(p.kind);
    if (d.emulated !== true) {
      if (!REAL_KINDS[cfg.role].includes(p.kind)) {
        throw new ConfigError('RUN_REAL_DEVICES', `${file}: device '${d.id}' (${d.profile}) is a real ${p.kind}, which ${cfg.role}'s node does not drive ` +
          `(it drives ${REAL_KINDS[cfg.role].join(' and ')}); move it to the other node's configuration or mark a lab stand-in "emulated": true.`);
      }
      if (p.transport.type === 'serial' && !d.port) {
        throw new ConfigError('RUN_REAL_DEVICES', `${file}: device '${d.id}' (${d.profile}) is a real serial device without "port": give its serial port path (see \`qkd devices\`).`);
      }
    }
  }
  if (!kinds.has(NEEDED[cfg.role])) {
    throw new ConfigError('NODE_CONFIG', `${file}: ${cfg.role}'s node needs a ${NEEDED[cfg.role]} among its devices`);
  }
  const realTagger = cfg.devices.some((d) => d.emulated !== true && loadProfile(d.profile).kind === 'time-tagger');
  if (realTagger && cfg.lab.sourceTty) {
    throw new ConfigError('NODE_CONFIG', `${file}: "lab.sourceTty" hosts Alice's source in the emulated lab, but the time-tagger is real (no emulated lab): remove one of them.`);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The types of the fields this reader touches (found by fuzzing: a section or path of the wrong
 * type threw a TypeError instead of naming the field). Deeper values are checked by their users.
 */
function checkShape(cfg: NodeRunConfig, file: string): void {
  const c = cfg as unknown as Record<string, Record<string, unknown>>;
  const fail = (field: string, what: string) => {
    throw new ConfigError('NODE_CONFIG', `${file}: field '${field}' must be ${what}`);
  };
  for (const k of ['lab', 'channel', 'stream', 'delivery', 'block'] as const) if (!isObject(c[k])) fail(k, 'an object');
  const str = (v: unknown, field: string, optional = false) => {
    if (!(typeof v === 'string' || (optional && v === undefined))) fail(field, 'a string');
  };
  str(cfg.nodeId, 'nodeId');
  str(c.channel.pskFile, 'channel.pskFile');
  str(c.delivery.spoolDir, 'delivery.spoolDir');
  str(c.delivery.spoolKeyFile, 'delivery.spoolKeyFile');
  str(c.delivery.commitKeyFile, 'delivery.commitKeyFile', true);
  const smc = c.delivery.spoolMaxChunks;
  if (smc !== undefined && !(Number.isSafeInteger(smc) && (smc as number) >= 1)) fail('delivery.spoolMaxChunks', 'a positive integer (key chunks held unacknowledged, default 100000)');
  if (cfg.custody !== undefined) checkNodeCustody(cfg.custody, file);
  const bp = (c.stream as Record<string, unknown>).onBackpressure;
  if (bp !== undefined && bp !== 'wait' && bp !== 'drop') fail('stream.onBackpressure', "'wait' or 'drop'");
  const hwm = (c.stream as Record<string, unknown>).highWaterMark;
  if (hwm !== undefined && !(Number.isInteger(hwm) && (hwm as number) >= 1)) fail('stream.highWaterMark', 'an integer ≥ 1 (batches)');
  str(c.lab.sourceTty, 'lab.sourceTty', true);
  str(cfg.calibration, 'calibration', true);
  const tls = c.delivery.tls;
  if (tls !== undefined) {
    if (!isObject(tls)) fail('delivery.tls', 'an object {ca, cert, key}');
    for (const k of ['ca', 'cert', 'key']) str((tls as Record<string, unknown>)[k], `delivery.tls.${k}`);
  }
  if (cfg.devices !== undefined && !Array.isArray(cfg.devices)) fail('devices', 'a list of device entries');
  if (Array.isArray(cfg.devices)) cfg.devices.forEach((d, i) => str(isObject(d) ? d.port : undefined, `devices[${i}].port`, true));
}

/** Makes the file paths of a hand-written configuration absolute (relative to the file). */
function resolvePaths(cfg: NodeRunConfig, file: string): void {
  const base = dirname(resolve(file));
  const abs = (x: string) => (isAbsolute(x) ? x : resolve(base, x));
  cfg.channel.pskFile = abs(cfg.channel.pskFile);
  if (typeof cfg.channel.curveKeyFile === 'string') cfg.channel.curveKeyFile = abs(cfg.channel.curveKeyFile);
  cfg.delivery.spoolDir = abs(cfg.delivery.spoolDir);
  cfg.delivery.spoolKeyFile = abs(cfg.delivery.spoolKeyFile);
  if (cfg.delivery.commitKeyFile) cfg.delivery.commitKeyFile = abs(cfg.delivery.commitKeyFile);
  if (cfg.custody?.pkcs11?.pinFile) cfg.custody.pkcs11.pinFile = abs(cfg.custody.pkcs11.pinFile);
  if (cfg.lab.sourceTty) cfg.lab.sourceTty = abs(cfg.lab.sourceTty);
  if (cfg.calibration) cfg.calibration = abs(cfg.calibration);
  for (const d of cfg.devices ?? []) if (d?.port && !d.port.startsWith('/dev/')) d.port = abs(d.port);
  if (cfg.delivery.tls) for (const k of ['ca', 'cert', 'key'] as const) cfg.delivery.tls[k] = abs(cfg.delivery.tls[k]);
}

export function readNodeConfig(file: string): NodeRunConfig {
  let cfg: NodeRunConfig;
  try {
    cfg = JSON.parse(readFileSync(file, 'utf8')) as NodeRunConfig;
  } catch (cause) {
    throw new ConfigError('NODE_CONFIG', `cannot read node configuration ${file}: ${(cause as Error).message}`, { cause });
  }
  if (!isObject(cfg)) throw new ConfigError('NODE_CONFIG', `${file}: expected a JSON object (the node configuration), got ${JSON.stringify(cfg)?.slice(0, 40)}`);
  for (const k of ['role', 'nodeId', 'lab', 'channel', 'stream', 'delivery', 'block'] as const) {
    if (cfg[k] === undefined) throw new ConfigError('NODE_CONFIG', `${file}: field '${k}' is required`);
  }
  checkShape(cfg, file);
  if (cfg.role !== 'alice' && cfg.role !== 'bob') throw new ConfigError('NODE_CONFIG', `${file}: role must be "alice" or "bob"`);
  if (cfg.block.analysis !== undefined && !(STRICT_FINITE_KEY_ANALYSES as readonly string[]).includes(cfg.block.analysis)) {
    const approx = (FINITE_KEY_ANALYSES as readonly string[]).includes(cfg.block.analysis)
      ? ' (the "-paper-gamma" analyses bound the phase error by the paper\'s approximate gamma, which fails its epsilon at small counts: for reproducing the paper only)' : '';
    throw new ConfigError('NODE_CONFIG', `${file}: block.analysis must be one of ${STRICT_FINITE_KEY_ANALYSES.map((a) => `"${a}"`).join(', ')} (default "chernoff2020"); got ${JSON.stringify(cfg.block.analysis)}${approx}`);
  }
  cfg.speed ??= 1;
  cfg.statusEveryMs ??= 1000;
  resolvePaths(cfg, file);
  checkNodeDevices(cfg, file);
  return cfg;
}
