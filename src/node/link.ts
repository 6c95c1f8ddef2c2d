/**
 * The classical link as the node uses it: authenticated request/reply between Alice's and Bob's
 * nodes, with the MAC key accounting the post-processing needs. Backed by src/channel.
 */
import type { Logger } from '../telemetry/logger.ts';
import type { NodeRunConfig } from './config.ts';

export interface ClassicalLink {
  readonly connected: boolean;
  request(type: string, payload: Record<string, unknown>): Promise<Record<string, unknown>>;
  handle(type: string, fn: (payload: Record<string, unknown>) => Promise<Record<string, unknown>>): void;
  /** MAC key bits consumed by messages of block `blockId` (both directions). */
  authBitsConsumed(blockId: number): number;
  /** Refills the MAC key pool with `bits` bits of fresh secret key. */
  replenish(bytes: Uint8Array, bits: number): void;
  stats(): Record<string, unknown>;
  close(): Promise<void>;
}

export async function openClassicalLink(cfg: NodeRunConfig, log: Logger): Promise<ClassicalLink> {
  void cfg;
  void log;
  throw new Error('classical link: not wired yet');
}
