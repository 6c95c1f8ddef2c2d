/**
 * The classical link as the node uses it: the authenticated channel of src/channel (Wegman–Carter
 * MAC on every message, replay/reorder refusal, restart handling, block ledger) plus the MAC key
 * accounting the post-processing needs. Alice binds, Bob connects.
 *
 * MAC key accounting per block: the pad bits used (both directions: each message signed or
 * verified consumes 128) between the block's first message and its amplification, so the block
 * can pay them back from its output (statement.replenishBits).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Authenticator } from '../core/auth.ts';
import { AuthChannel } from '../channel/channel.ts';
import { channelKeys, channelStateDir, channelStateKeyFrom } from './channel-credentials.ts';
import { readAtRestKey } from './custody.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { NodeRunConfig } from './config.ts';

export interface ClassicalLink {
  readonly connected: boolean;
  /** Settles when the peer has answered the channel's hello (both nodes are up). */
  ready(): Promise<void>;
  request(type: string, payload: Record<string, unknown>): Promise<Record<string, unknown>>;
  handle(type: string, fn: (payload: Record<string, unknown>) => Promise<Record<string, unknown>>): void;
  /** Both sides record that block `blockId` finished (its key may be used). */
  commitBlock(blockId: number): Promise<void>;
  /** Called when a block is committed (both sides hold its key) or aborted. */
  onBlockOutcome(fn: (blockId: number, committed: boolean) => void): void;
  /** MAC key bits consumed by messages of block `blockId` so far (both directions). */
  authBitsConsumed(blockId: number): number;
  /** Refills the MAC key pool with the first `bits` bits of `bytes` (whole bytes only). */
  replenish(bytes: Uint8Array, bits: number): void;
  stats(): Record<string, unknown>;
  close(): Promise<void>;
}

const blockOf = (p: Record<string, unknown>): number => (typeof p.block === 'number' ? p.block : -1);

export async function openClassicalLink(cfg: NodeRunConfig, log: Logger): Promise<ClassicalLink> {
  const stateDir = channelStateDir(cfg.delivery.spoolDir, cfg.role);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const curve = channelKeys(cfg);
  // The node consumes the pre-shared secret it imports (shredded; its fingerprint registered);
  // afterwards the wrapped state file is the only source, and losing it stops the node rather
  // than reusing pads (src/core/auth.ts).
  const stateKey = channelStateKeyFrom(readAtRestKey(cfg), cfg.delivery.spoolKeyFile);
  let auth: Authenticator;
  try {
    auth = Authenticator.open({ role: cfg.role, statePath: join(stateDir, 'auth.state'), stateKey, pskPath: cfg.channel.pskFile });
  } finally {
    stateKey.fill(0);
  }
  if (auth.origin === 'psk') log.info('classical channel: pre-shared secret imported and consumed', { pskFile: cfg.channel.pskFile });
  const ch = await AuthChannel.open({
    curve,
    role: cfg.role,
    endpoint: cfg.channel.endpoint,
    bind: cfg.role === 'alice',
    auth,
    ledgerPath: join(stateDir, 'ledger.json'),
    timeoutMs: 120_000,
  });
  let connected = false;
  const ready = ch.ready(3_600_000).then(() => {
    connected = true;
  });
  ready.catch(() => undefined);
  ch.on('peerRestarted', () => log.warn('classical channel: peer restarted; open blocks aborted'));
  ch.on('rejected', (r: { code: string; message: string }) => log.warn('classical channel: message rejected', { code: r.code, reason: r.message }));
  ch.on('keyLow', (left: number) => log.warn('classical channel: authentication key low', { messagesLeft: left }));
  const usedAtStart = new Map<number, number>();
  const used = (): number => ch.stats().auth.usedBits;
  // Messages outside any block (Alice's sync pattern, stream status) are paid by the next block
  // that settles its account: request + answer = 2 × 128 bits on each side.
  let unattributed = 0;
  const mark = (block: number): void => {
    if (block < 0) unattributed += 256;
    else if (!usedAtStart.has(block)) usedAtStart.set(block, used());
  };
  return {
    get connected() {
      return connected;
    },
    ready() {
      return ready;
    },
    async request(type, payload) {
      const block = blockOf(payload);
      mark(block);
      return (await ch.request<Record<string, unknown>>(type, payload, { blockId: block })) ?? {};
    },
    handle(type, fn) {
      ch.handle(type, async (p: Record<string, unknown>) => {
        mark(blockOf(p));
        return fn(p);
      });
    },
    onBlockOutcome(fn) {
      ch.on('blockCommitted', (id: number) => fn(id, true));
      ch.on('blockAborted', (e: { blockId: number }) => fn(e.blockId, false));
    },
    async commitBlock(blockId) {
      await ch.commitBlock(blockId);
      usedAtStart.delete(blockId);
    },
    authBitsConsumed(blockId) {
      const start = usedAtStart.get(blockId);
      usedAtStart.delete(blockId);
      const extra = unattributed;
      unattributed = 0;
      // Count the reply still to be sent and its verification (2 × 128 bits) as well.
      return (start === undefined ? 0 : used() - start + 256) + extra;
    },
    replenish(bytes, bits) {
      const n = bits >> 3;
      if (n > 0) ch.replenish(bytes.subarray(0, n));
    },
    stats() {
      const s = ch.stats();
      return { usedBits: s.auth.usedBits, availableBits: s.auth.availableBits, replenishedBits: s.auth.replenishedBits, messagesLeft: s.auth.messagesLeft, requestsSent: s.requestsSent, retries: s.retries, rejected: s.rejected, peerRestarts: s.peerRestarts, blocksCommitted: s.blocksCommitted, blocksAborted: s.blocksAborted, srttMs: s.srttMs };
    },
    async close() {
      await ch.close();
    },
  };
}
