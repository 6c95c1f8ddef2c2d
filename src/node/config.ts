/**
 * What one node process of a run needs, written as JSON by the supervisor (`qkd run`) into the
 * run directory and read by `qkd _node --config FILE`. Paths are absolute. Secret material is
 * never inline: files (mode 0600) hold the pre-shared authentication secret and the spool key.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.ts';

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
  return cfg;
}
