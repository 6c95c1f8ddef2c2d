/**
 * The authenticated classical channel between Alice's and Bob's nodes: typed request/reply over
 * ZeroMQ DEALER<->DEALER (tcp between hosts; ipc/inproc work too), every message authenticated
 * with the Wegman–Carter MAC of native/auth. Protocol, security bound and failure handling:
 * docs/channel.md.
 *
 * ```ts
 * bob.handle('sift', async (p, ctx) => ({ keep: ... }));          // other side
 * const r = await alice.request('sift', { bases }, { blockId: 7 }); // this side
 * await alice.commitBlock(7);                                       // both agree block 7 finished
 * ```
 * Transport: with `curve` (every node does; src/channel/curve.ts) the ZMTP connection is CURVE-
 * encrypted and both ends are pinned: the binding end accepts only the peer's public key (ZAP),
 * the connecting end only talks to the binding end's key. Strangers get no pipe, so nothing of
 * theirs is read, nothing of ours reaches them and no pad is spent on them. Without `curve` the
 * transport is plain ZMTP (tests of the MAC layer through a relay, benchmarks).
 *
 * Guarantees: a message is used only after its tag, direction, sequence number (strictly
 * increasing: replays and reordering refused) and session (sender and receiver instances) are
 * checked. Any rejection aborts the open blocks on this side and tells the peer (authenticated
 * ABORT). Lost messages are retried (new sequence number, new pad, same msgId: the responder runs
 * a handler once per msgId and replays its cached reply). A peer restart is detected by its new
 * instance id in the HELLO handshake: open blocks are aborted on both sides and the block that was
 * being committed is resolved by the responder's ledger (the responder decides).
 *
 * Concurrency: all methods from the JS thread; many requests may be in flight; handlers run
 * concurrently. Cancellation: `abortBlock`, per-request `timeoutMs`, `close()`.
 * Events: 'blockCommitted' (blockId), 'blockAborted' ({blockId, code, byPeer}), 'peerRestarted',
 * 'rejected' ({code, message}) for each refused message, 'keyLow' (messagesLeft).
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { Dealer } from 'zeromq';
import { receiveOpen } from '../stream/zmq-receive.ts';
import { ProtocolError, QkdError, SecurityError, TimeoutError, TransportError } from '../errors.ts';
import { Authenticator, directionOf, type AuthStats, type Role } from '../core/auth.ts';
import { BlockLedger } from './ledger.ts';
import { curveSocketOptions, isZ85Key, startZapHandler, type CurveKeys, type ZapHandler } from './curve.ts';
import { CHANNEL_VERSION, decodeAad, encodeAad, KIND, payloadPackr, type Aad, type Kind } from './wire.ts';

export interface ChannelOptions {
  role: Role;
  /** tcp://host:port (or ipc://, inproc://). */
  endpoint: string;
  /** One side binds, the other connects. */
  bind: boolean;
  /** This side's authenticator (Authenticator.open: durable state file). */
  auth: Authenticator;
  /** Block ledger file (JSON). Without it, finished blocks are remembered in memory only. */
  ledgerPath?: string;
  /** Default per-request deadline (default 30 000 ms). */
  timeoutMs?: number;
  /** First retry after this long, doubling up to maxRetryMs (defaults 300 / 3000 ms). */
  retryMs?: number;
  maxRetryMs?: number;
  /** Emit 'keyLow' when fewer messages than this can still be authenticated (default 10 000). */
  keyLowMessages?: number;
  /**
   * CURVE transport authentication with pinned keys (src/channel/curve.ts). Omit only for tests
   * of the MAC layer and benchmarks: without it anyone reaching the endpoint gets a pipe.
   */
  curve?: CurveKeys;
}

export interface RequestOptions {
  /** Post-processing block this message belongs to (aborts and commits act per block). */
  blockId?: number;
  timeoutMs?: number;
}

export interface HandlerContext {
  type: string;
  /** -1 if the request belongs to no block. */
  blockId: number;
}

export type Handler = (payload: any, ctx: HandlerContext) => Promise<unknown> | unknown;

export interface ChannelStats {
  auth: AuthStats;
  requestsSent: number;
  retries: number;
  repliesReceived: number;
  requestsHandled: number;
  duplicateRequests: number;
  rejected: Record<string, number>;
  stale: number;
  sendDropped: number;
  peerRestarts: number;
  blocksCommitted: number;
  blocksAborted: number;
  /** Smoothed round-trip time (ms) of requests answered at the first attempt. */
  srttMs: number;
  /** Connections refused at the transport (CURVE/ZAP handshake failed): strangers, wrong keys. */
  transportRefused: number;
  /** Receives the socket failed while open (zeromq.js EAGAIN after a reconnection); reading went on. */
  receiveErrors: number;
}

interface Pending {
  type: string;
  payload: Buffer;
  blockId: number;
  resolve(v: unknown): void;
  reject(e: Error): void;
  deadline: number;
  timer?: NodeJS.Timeout;
  tries: number;
  /** Send time of each attempt, by its sequence number (for RTT samples from `ref`). */
  attempts: Map<number, number>;
}

const ZERO = new Uint8Array(0);
const COMMIT = '$commit';
const NO_BLOCK = -1;

export class AuthChannel extends EventEmitter {
  readonly role: Role;
  readonly instance: Buffer = randomBytes(16);
  readonly ledger: BlockLedger;
  readonly #sock: Dealer;
  readonly #auth: Authenticator;
  readonly #dir: 0 | 1;
  readonly #timeoutMs: number;
  readonly #retryMs: number;
  readonly #maxRetryMs: number;
  readonly #keyLow: number;
  readonly #handlers = new Map<string, Handler>();
  readonly #pending = new Map<number, Pending>();
  /** msgId -> reply for requests already answered (per peer instance). */
  readonly #replies = new Map<number, { kind: Kind; type: string; blockId: number; payload: Buffer }>();
  /** msgId -> seq of the latest attempt seen, for requests whose handler is still running. */
  readonly #running = new Map<number, number>();
  /** Blocks with traffic and no outcome yet: aborted together on a rejection or a peer restart. */
  readonly #active = new Set<number>();
  /** Our recent send sequence numbers -> block id, to act on the peer's rejection notices. */
  readonly #sentBlocks = new Map<number, number>();
  #peer: Buffer | null = null;
  #helloNonce: Buffer | null = null;
  #helloTimer: NodeJS.Timeout | undefined;
  #readyWaiters: (() => void)[] = [];
  #closeWaiters: (() => void)[] = [];
  #resolveWaiters = new Map<number, ((outcome: 'committed' | 'aborted') => void)[]>();
  #nextMsgId = 1;
  /** Smoothed round-trip time of answered requests (RFC 6298 style), ms; 0 until measured. */
  #srttMs = 0;
  #lastRejectNotice = 0;
  /** ZMTP connections up (handshake minus disconnect events); a hint, used to save pads. */
  #links = 0;
  #lastHelloAt = 0;
  #helloTick: (() => void) | null = null;
  #sendChain: Promise<void> = Promise.resolve();
  #closed = false;
  #keyLowSent = false;
  #zap: ZapHandler | undefined;
  readonly #stats: Omit<ChannelStats, 'auth' | 'srttMs'> = { requestsSent: 0, retries: 0, repliesReceived: 0, requestsHandled: 0,
    duplicateRequests: 0, rejected: {}, stale: 0, sendDropped: 0, peerRestarts: 0, blocksCommitted: 0, blocksAborted: 0, transportRefused: 0, receiveErrors: 0 };

  private constructor(sock: Dealer, opts: ChannelOptions) {
    super();
    this.role = opts.role;
    this.#sock = sock;
    this.#auth = opts.auth;
    this.#dir = directionOf(opts.role);
    this.ledger = new BlockLedger(opts.ledgerPath);
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#retryMs = opts.retryMs ?? 300;
    this.#maxRetryMs = opts.maxRetryMs ?? 3000;
    this.#keyLow = opts.keyLowMessages ?? 10_000;
    if (this.#auth.stats().direction !== this.#dir) {
      throw new QkdError('CHANNEL_ROLE', `The authenticator belongs to the other role; open it with role '${opts.role}'.`);
    }
    this.on('error', () => {}); // errors are surfaced per request; never crash on an unhandled 'error'
  }

  /** Opens the socket and starts the handshake (does not wait for the peer: see `ready`). */
  static async open(opts: ChannelOptions): Promise<AuthChannel> {
    let zap: ZapHandler | undefined;
    if (opts.curve) {
      for (const k of ['publicKey', 'secretKey', 'peerPublicKey'] as const) {
        if (!isZ85Key(opts.curve[k])) throw new QkdError('CHANNEL_CURVE_KEY', `The channel's CURVE ${k} is not a 40-character Z85 key; check the node configuration (channel.peerPublicKey) and key file.`);
      }
      if (opts.bind) zap = await startZapHandler(opts.curve.peerPublicKey);
    }
    const sock = new Dealer({
      ...(zap ? { context: zap.context } : {}),
      ...(opts.curve ? curveSocketOptions(opts.curve, opts.bind) : {}),
      linger: 0,
      sendHighWaterMark: 1000,
      receiveHighWaterMark: 1000,
      // ZMTP heartbeats detect a dead TCP connection (peer host gone, partition) so the
      // connecting side reconnects instead of writing into a dead pipe.
      heartbeatInterval: 500,
      heartbeatTimeout: 2000,
      heartbeatTimeToLive: 2000,
      reconnectInterval: 100,
      reconnectMaxInterval: 1000,
      immediate: !opts.bind,
      // Anything larger than the MAC's limit cannot be authentic: let ZeroMQ drop the connection
      // instead of buffering it.
      maxMessageSize: 17 * 1024 * 1024,
    });
    try {
      if (opts.bind) await sock.bind(opts.endpoint);
      else sock.connect(opts.endpoint);
    } catch (cause) {
      sock.close();
      zap?.close();
      throw new TransportError('CHANNEL_ENDPOINT', `Cannot ${opts.bind ? 'bind' : 'connect'} the classical channel on ${opts.endpoint}: check the address and that the port is free.`, { cause });
    }
    const ch = new AuthChannel(sock, opts);
    ch.#zap = zap;
    // Connections that fail the CURVE/ZAP handshake never become pipes; count them (strangers,
    // misconfigured keys) so an operator sees them.
    for (const ev of ['handshake:error:auth', 'handshake:error:protocol', 'handshake:error:other'] as const) {
      sock.events.on(ev, () => { ch.#stats.transportRefused++; });
    }
    // A new connection (first one, reconnection after a partition, restarted peer) triggers the
    // pending HELLO at once instead of at its next back-off tick.
    sock.events.on('handshake', () => {
      ch.#links++;
      if (ch.#helloNonce && ch.#helloTick) {
        clearTimeout(ch.#helloTimer);
        ch.#helloTick();
      }
    });
    sock.events.on('disconnect', () => { ch.#links = Math.max(0, ch.#links - 1); });
    void ch.#receiveLoop();
    ch.#startHello();
    return ch;
  }

  /** The endpoint actually bound (tcp://host:* resolves to the chosen port). */
  get endpoint(): string | null {
    return this.#sock.lastEndpoint;
  }

  /** Resolves once the handshake with the current peer instance is done. */
  ready(timeoutMs = this.#timeoutMs): Promise<void> {
    if (this.#peer && !this.#helloNonce) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.#readyWaiters = this.#readyWaiters.filter((w) => w !== done);
        this.#closeWaiters = this.#closeWaiters.filter((w) => w !== fail);
        reject(new TimeoutError('CHANNEL_NO_PEER', `No authenticated handshake with the ${this.role === 'alice' ? 'Bob' : 'Alice'} node within ${timeoutMs} ms: check it runs, the address, the network, that both nodes hold the same pre-shared secret, and that each has the other's CURVE public key (transport refusals so far: ${this.#stats.transportRefused}).`));
      }, timeoutMs);
      const done = () => { clearTimeout(t); this.#closeWaiters = this.#closeWaiters.filter((w) => w !== fail); resolve(); };
      // close() ends the wait (and its timer, which would otherwise keep the process alive).
      const fail = () => { clearTimeout(t); reject(new TransportError('CHANNEL_CLOSED', 'The classical channel was closed before the handshake.')); };
      this.#readyWaiters.push(done);
      this.#closeWaiters.push(fail);
    });
  }

  /** Registers the handler for requests of `type` (one per type; its return value is the reply). */
  handle(type: string, handler: Handler): void {
    if (type.startsWith('$')) throw new RangeError(`Request types starting with '$' are reserved (got '${type}')`);
    this.#handlers.set(type, handler);
  }

  /**
   * Sends an authenticated request and resolves with the peer's reply. Retries lost messages
   * until `timeoutMs`. Rejects with SecurityError/ProtocolError 'BLOCK_ABORTED' if its block is
   * aborted (here or by the peer), TimeoutError 'CHANNEL_TIMEOUT', ProtocolError
   * 'CHANNEL_REMOTE_ERROR' if the peer's handler failed (the peer's own code in `remoteCode`).
   */
  async request<T = unknown>(type: string, payload: unknown, opts: RequestOptions = {}): Promise<T> {
    const blockId = opts.blockId ?? NO_BLOCK;
    if (type.startsWith('$') && type !== COMMIT) throw new RangeError(`Request types starting with '$' are reserved (got '${type}')`);
    this.#checkOpen();
    this.#checkBlockUsable(blockId);
    const timeoutMs = opts.timeoutMs ?? this.#timeoutMs;
    const deadline = Date.now() + timeoutMs;
    if (!this.#peer || this.#helloNonce) await this.ready(timeoutMs);
    this.#checkBlockUsable(blockId);
    const body = Buffer.from(payloadPackr.pack(payload));
    const msgId = this.#nextMsgId++;
    if (blockId !== NO_BLOCK) this.#active.add(blockId);
    return new Promise<T>((resolve, reject) => {
      const p: Pending = { type, payload: body, blockId, resolve: resolve as (v: unknown) => void, reject, deadline, tries: 0, attempts: new Map() };
      this.#pending.set(msgId, p);
      this.#stats.requestsSent++;
      this.#transmit(msgId, p);
    });
  }

  #transmit(msgId: number, p: Pending): void {
    if (!this.#pending.has(msgId)) return;
    const now = Date.now();
    if (now >= p.deadline) {
      this.#settle(msgId, new TimeoutError('CHANNEL_TIMEOUT', `No authenticated reply to '${p.type}'${p.blockId !== NO_BLOCK ? ` (block ${p.blockId})` : ''} after ${p.tries} attempt(s): the peer is down, partitioned or too slow; retry the block later.`));
      return;
    }
    if (p.tries > 0) this.#stats.retries++;
    try {
      p.attempts.set(this.#send(KIND.REQ, p.type, msgId, p.blockId, p.payload), now);
    } catch (e) {
      this.#settle(msgId, e as Error);
      return;
    }
    // Slow links: the first retry waits at least 3 smoothed round-trip times, so a long but
    // healthy link is not flooded with duplicates (each costs 128 pad bits).
    const base = Math.max(this.#retryMs, 3 * this.#srttMs);
    const wait = Math.min(base * 2 ** p.tries, Math.max(this.#maxRetryMs, 4 * this.#srttMs), p.deadline - now);
    p.tries++;
    p.timer = setTimeout(() => this.#transmit(msgId, p), Math.max(1, wait));
  }

  #settle(msgId: number, err: Error | null, value?: unknown, answeredSeq = -1): void {
    const p = this.#pending.get(msgId);
    if (!p) return;
    const sentAt = p.attempts.get(answeredSeq);
    if (sentAt !== undefined) {
      const rtt = Date.now() - sentAt; // exact even after retries: the reply names the attempt
      this.#srttMs = this.#srttMs === 0 ? rtt : 0.875 * this.#srttMs + 0.125 * rtt;
    }
    this.#pending.delete(msgId);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(value);
  }

  /**
   * Asks the peer to record `blockId` as finished; resolves when both sides have it committed.
   * Before the request leaves, the block is recorded as 'prepared' here, so after a crash or a
   * partition the handshake settles it from the peer's ledger (docs/channel.md, Resumption).
   * Rejects 'BLOCK_ABORTED' if the peer refused (it had aborted the block), or TimeoutError
   * 'COMMIT_UNDECIDED' if the outcome is not known by the deadline: then the block stays
   * prepared and its outcome is announced later by 'blockCommitted' / 'blockAborted'.
   */
  async commitBlock(blockId: number, opts: { timeoutMs?: number } = {}): Promise<void> {
    if (blockId < 0 || !Number.isSafeInteger(blockId)) throw new RangeError(`blockId must be a non-negative integer (got ${blockId})`);
    if (this.ledger.isCommitted(blockId)) return;
    const prev = this.ledger.prepared;
    if (prev !== null && prev !== blockId) {
      throw new ProtocolError('COMMIT_PENDING', `Block ${prev} is still being committed (outcome unknown); wait for its 'blockCommitted'/'blockAborted' event before committing block ${blockId}.`);
    }
    this.#checkBlockUsable(blockId);
    const timeoutMs = opts.timeoutMs ?? this.#timeoutMs;
    const deadline = Date.now() + timeoutMs;
    this.ledger.prepare(blockId);
    try {
      await this.request(COMMIT, { blockId }, { blockId, timeoutMs });
      this.#committed(blockId);
      return;
    } catch (e) {
      if (e instanceof QkdError && e.code === 'BLOCK_ABORTED') {
        this.#abortLocal(blockId, 'BLOCK_ABORTED', true);
        throw e;
      }
      if (!(e instanceof TimeoutError)) throw e;
    }
    // No answer: settle through the handshake (the peer's ledger decides), until the deadline.
    const outcome = await new Promise<'committed' | 'aborted' | 'timeout'>((resolve) => {
      const list = this.#resolveWaiters.get(blockId) ?? [];
      list.push(resolve);
      this.#resolveWaiters.set(blockId, list);
      setTimeout(() => resolve('timeout'), Math.max(this.#maxRetryMs, deadline - Date.now()));
      this.#startHello();
    });
    if (outcome === 'committed') return;
    if (outcome === 'aborted') throw new ProtocolError('BLOCK_ABORTED', `Block ${blockId} was not committed by the peer; it is aborted on both sides.`);
    throw new TimeoutError('COMMIT_UNDECIDED', `Commit of block ${blockId} not confirmed within ${timeoutMs} ms; it stays prepared and is settled with the peer when the link returns (watch 'blockCommitted'/'blockAborted'). Hold its key until then.`);
  }

  /** Aborts a block here and tells the peer. No effect on a committed block; a prepared one must be settled. */
  abortBlock(blockId: number, code = 'BLOCK_ABORTED'): void {
    if (this.ledger.isCommitted(blockId) || this.ledger.isAborted(blockId)) return;
    if (this.ledger.prepared === blockId) {
      throw new ProtocolError('COMMIT_PENDING', `Block ${blockId} is being committed; its outcome is decided by the peer's ledger, not aborted unilaterally.`);
    }
    this.#abortLocal(blockId, code, false);
    if (this.#peer) {
      try {
        this.#send(KIND.ABORT, '', 0, blockId, Buffer.from(payloadPackr.pack({ blockId, code })));
      } catch { /* key exhausted: the peer learns on its next request (BLOCK_ABORTED reply) */ }
    }
  }

  isAborted(blockId: number): boolean {
    return this.ledger.isAborted(blockId);
  }

  /** Appends generated key to the authentication pool (same bytes, same order on both nodes) and saves. */
  replenish(bytes: Uint8Array): void {
    this.#auth.replenish(bytes);
    this.#auth.save();
    this.#keyLowSent = false;
  }

  stats(): ChannelStats {
    return { auth: this.#auth.stats(), ...this.#stats, rejected: { ...this.#stats.rejected }, srttMs: this.#srttMs };
  }

  /** Stops everything; pending requests reject with TransportError 'CHANNEL_CLOSED'. Saves the auth state. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#helloTimer);
    for (const id of [...this.#pending.keys()]) this.#settle(id, new TransportError('CHANNEL_CLOSED', 'The classical channel was closed.'));
    const waiting = this.#closeWaiters;
    this.#closeWaiters = [];
    this.#readyWaiters = [];
    for (const f of waiting) f();
    await this.#sendChain.catch(() => {});
    this.#sock.close();
    this.#zap?.close();
    try { this.#auth.save(); } catch { /* best effort: reservations already make restarts safe */ }
  }

  // ------------------------------------------------------------------------------- internals

  #checkOpen(): void {
    if (this.#closed) throw new TransportError('CHANNEL_CLOSED', 'The classical channel is closed.');
  }

  #checkBlockUsable(blockId: number): void {
    if (blockId === NO_BLOCK) return;
    if (this.ledger.isAborted(blockId)) throw new ProtocolError('BLOCK_ABORTED', `Block ${blockId} was aborted; start a new block.`);
  }

  /** Signs and queues one message. Throws SecurityError if the key pool is exhausted. */
  #send(kind: Kind, type: string, msgId: number, blockId: number, payload: Buffer, ref = -1): number {
    this.#checkOpen();
    const seq = this.#auth.nextSendSeq;
    const aad = encodeAad({ version: CHANNEL_VERSION, direction: this.#dir, seq, sender: this.instance, receiver: this.#peer ?? ZERO,
      kind, type, msgId, blockId, ref });
    const tag = this.#auth.sign(seq, aad, payload);
    this.#sentBlocks.set(seq, blockId);
    if (this.#sentBlocks.size > 8192) this.#sentBlocks.delete(this.#sentBlocks.keys().next().value as number);
    const left = this.#auth.stats().messagesLeft;
    if (left < this.#keyLow && !this.#keyLowSent) {
      this.#keyLowSent = true;
      this.emit('keyLow', left);
    }
    // One send at a time (zeromq.js rule), in signing order. sendTimeout 0: if no peer is
    // connected or its queue is full the message is dropped; requests are retried, replies are
    // re-sent when the retried request comes.
    this.#sendChain = this.#sendChain.then(async () => {
      if (this.#sock.closed) return;
      this.#sock.sendTimeout = 0;
      try {
        await this.#sock.send([aad, payload, tag]);
      } catch {
        this.#stats.sendDropped++;
      }
    });
    return seq;
  }

  #startHello(): void {
    if (this.#closed) return;
    clearTimeout(this.#helloTimer);
    this.#helloNonce = randomBytes(16);
    let tries = 0;
    const tick = () => {
      if (this.#closed || !this.#helloNonce) return;
      // With no connection up, a HELLO would only burn a pad: send one every 10 s at most (the
      // link count is a hint from socket events), and at once when a connection comes up.
      const now = Date.now();
      if (this.#links > 0 || tries === 0 || now - this.#lastHelloAt >= 10_000) {
        this.#lastHelloAt = now;
        try {
          this.#send(KIND.HELLO, '', 0, NO_BLOCK, Buffer.from(payloadPackr.pack({ nonce: this.#helloNonce, ...this.#ledgerSummary() })));
        } catch (e) {
          this.emit('error', e);
        }
      }
      this.#helloTimer = setTimeout(tick, Math.min(this.#retryMs * 2 ** tries++, this.#maxRetryMs));
    };
    this.#helloTick = tick;
    tick();
  }

  #ledgerSummary(): { prepared: number | null } {
    return { prepared: this.ledger.prepared };
  }

  async #receiveLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await receiveOpen(this.#sock, () => this.#stats.receiveErrors++);
      } catch {
        return; // closed
      }
      try {
        this.#onMessage(frames);
      } catch (e) {
        this.emit('error', e);
      }
    }
  }

  #reject(code: string, message: string, claimedBlock: number, claimedSeq = -1): void {
    this.#stats.rejected[code] = (this.#stats.rejected[code] ?? 0) + 1;
    this.emit('rejected', { code, message });
    // Fail closed: every block in progress is aborted, plus the block the message claimed.
    const blocks = new Set(this.#active);
    if (claimedBlock >= 0 && !this.ledger.isCommitted(claimedBlock) && this.ledger.prepared !== claimedBlock) blocks.add(claimedBlock);
    for (const b of blocks) {
      if (this.ledger.prepared === b) continue; // settled by the peer's ledger, not by an attacker
      this.abortBlock(b, code);
    }
    // Tell the peer a message was refused, with the sequence number it claimed: the peer knows
    // which of its own messages that was (if any) and aborts that block and its open ones too.
    // Rate-limited: an adversary tampering with every message would otherwise make the two
    // ends trade rejection notices forever, each one burning 128 pad bits.
    const now = Date.now();
    if (this.#peer && now - this.#lastRejectNotice >= 250) {
      this.#lastRejectNotice = now;
      try {
        this.#send(KIND.ABORT, '', 0, NO_BLOCK, Buffer.from(payloadPackr.pack({ blockId: NO_BLOCK, code, rejectedSeq: claimedSeq })));
      } catch { /* key exhausted: nothing more we can say authentically */ }
    }
  }

  #onMessage(frames: Buffer[]): void {
    if (frames.length !== 3 || frames[2].length !== 16) {
      this.#reject('AUTH_MALFORMED', `message with ${frames.length} frames or a bad tag length refused`, NO_BLOCK);
      return;
    }
    const [aadBuf, payload, tag] = frames;
    let aad: Aad;
    try {
      aad = decodeAad(aadBuf);
    } catch (e) {
      this.#reject((e as QkdError).code ?? 'AUTH_MALFORMED', (e as Error).message, NO_BLOCK);
      return;
    }
    if (aad.direction === this.#dir) {
      this.#reject('AUTH_WRONG_DIRECTION', 'message carrying our own direction refused (reflected)', aad.blockId, aad.seq);
      return;
    }
    try {
      this.#auth.verify(aad.seq, aadBuf, payload, tag);
    } catch (e) {
      const err = e as QkdError;
      this.#reject(err.code ?? 'AUTH_TAG_MISMATCH', err.message, aad.blockId, aad.seq);
      return;
    }
    // Authenticated from here on.
    if (aad.kind === KIND.HELLO) return this.#onHello(aad, payload);
    if (!this.#peer || !this.instance.equals(aad.receiver) || !this.#peer.equals(aad.sender)) {
      if (aad.kind === KIND.HELLO_ACK && this.instance.equals(aad.receiver)) return this.#onHelloAck(aad, payload);
      // Valid tag but from/for another incarnation: a message that crossed a restart. Drop.
      this.#stats.stale++;
      return;
    }
    let body: any;
    try {
      body = payloadPackr.unpack(payload);
    } catch {
      this.#reject('CHANNEL_MALFORMED', 'authenticated payload is not msgpack (peer bug)', aad.blockId);
      return;
    }
    switch (aad.kind) {
      case KIND.HELLO_ACK: return this.#onHelloAck(aad, payload);
      case KIND.REQ: return this.#onRequest(aad, body);
      case KIND.REP: {
        this.#stats.repliesReceived++;
        return this.#settle(aad.msgId, null, body, aad.ref);
      }
      case KIND.ERR: {
        const code = typeof body?.code === 'string' ? body.code : 'CHANNEL_REMOTE_ERROR';
        const msg = typeof body?.message === 'string' ? body.message : 'peer handler failed';
        const p = this.#pending.get(aad.msgId);
        if (code === 'BLOCK_ABORTED' && p && p.blockId !== NO_BLOCK && p.type !== COMMIT) this.#abortLocal(p.blockId, 'BLOCK_ABORTED', true);
        return this.#settle(aad.msgId, code === 'BLOCK_ABORTED'
          ? new ProtocolError('BLOCK_ABORTED', `Peer refused: ${msg}`)
          : Object.assign(new ProtocolError('CHANNEL_REMOTE_ERROR', `Peer's handler for '${p?.type ?? aad.type}' failed: [${code}] ${msg}`), { remoteCode: code }));
      }
      case KIND.ABORT: {
        const code = typeof body?.code === 'string' ? body.code : 'BLOCK_ABORTED';
        const b = typeof body?.blockId === 'number' ? body.blockId : aad.blockId;
        if (b >= 0) {
          if (this.ledger.prepared !== b) this.#abortLocal(b, code, true);
          return;
        }
        // The peer refused one of the messages it received: abort what we have open, and the
        // block of our message with that sequence number if it was one of ours.
        const mine = typeof body?.rejectedSeq === 'number' ? this.#sentBlocks.get(body.rejectedSeq) : undefined;
        const blocks = new Set(this.#active);
        if (mine !== undefined && mine >= 0) blocks.add(mine);
        for (const x of blocks) {
          if (this.ledger.prepared === x || this.ledger.isAborted(x) || this.ledger.isCommitted(x)) continue;
          this.#abortLocal(x, code, true);
          // Echo the block id back so the peer's ledger records the same abort.
          this.#trySend(KIND.ABORT, '', 0, x, Buffer.from(payloadPackr.pack({ blockId: x, code })));
        }
        return;
      }
    }
  }

  #onHello(aad: Aad, payload: Buffer): void {
    let body: { nonce?: Uint8Array; prepared?: number | null };
    try {
      body = payloadPackr.unpack(payload);
    } catch {
      return;
    }
    if (!(body?.nonce instanceof Uint8Array)) return;
    this.#setPeer(Buffer.from(aad.sender));
    // The peer's pending commit is decided here and now, by our ledger: a COMMIT it sent before
    // this HELLO has a lower sequence number, so it can no longer be accepted after it.
    const prepared = typeof body.prepared === 'number' ? body.prepared : null;
    let decided: { blockId: number; committed: boolean } | null = null;
    if (prepared !== null) {
      if (!this.ledger.isCommitted(prepared)) this.#abortLocal(prepared, 'BLOCK_ABORTED', true);
      decided = { blockId: prepared, committed: this.ledger.isCommitted(prepared) };
    }
    this.#auth.save();
    try {
      this.#send(KIND.HELLO_ACK, '', 0, NO_BLOCK, Buffer.from(payloadPackr.pack({ nonce: body.nonce, decided })));
    } catch (e) {
      this.emit('error', e);
    }
  }

  #onHelloAck(aad: Aad, payload: Buffer): void {
    let body: { nonce?: Uint8Array; decided?: { blockId: number; committed: boolean } | null };
    try {
      body = payloadPackr.unpack(payload);
    } catch {
      return;
    }
    if (!this.#helloNonce || !(body?.nonce instanceof Uint8Array) || !this.#helloNonce.equals(body.nonce)) {
      this.#stats.stale++; // an answer to an older HELLO: its ledger view may be outdated
      return;
    }
    this.#setPeer(Buffer.from(aad.sender));
    this.#helloNonce = null;
    clearTimeout(this.#helloTimer);
    const prepared = this.ledger.prepared;
    if (prepared !== null && body.decided && body.decided.blockId === prepared) {
      if (body.decided.committed) this.#committed(prepared);
      else this.#abortLocal(prepared, 'BLOCK_ABORTED', true);
    }
    this.#auth.save();
    const w = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const f of w) f();
  }

  #setPeer(sender: Buffer): void {
    if (this.#peer && this.#peer.equals(sender)) return;
    const restarted = this.#peer !== null;
    this.#peer = sender;
    this.#replies.clear();
    this.#running.clear();
    if (restarted) {
      this.#stats.peerRestarts++;
      this.emit('peerRestarted');
      for (const b of [...this.#active]) if (this.ledger.prepared !== b) this.#abortLocal(b, 'PEER_RESTARTED', true);
      // Our own commit in flight (if any) is settled by our next HELLO.
      if (this.ledger.prepared !== null && !this.#helloNonce) this.#startHello();
    }
  }

  #onRequest(aad: Aad, body: unknown): void {
    const cached = this.#replies.get(aad.msgId);
    if (cached) {
      this.#stats.duplicateRequests++;
      this.#trySend(cached.kind, cached.type, aad.msgId, cached.blockId, cached.payload, aad.seq);
      return;
    }
    if (this.#running.has(aad.msgId)) {
      this.#stats.duplicateRequests++;
      this.#running.set(aad.msgId, aad.seq); // answer the latest attempt: its RTT sample is the tightest
      return;
    }
    const blockId = aad.blockId;
    const answer = (kind: Kind, value: unknown) => {
      const payload = Buffer.from(payloadPackr.pack(value));
      const ref = this.#running.get(aad.msgId) ?? aad.seq;
      this.#running.delete(aad.msgId);
      this.#replies.set(aad.msgId, { kind, type: aad.type, blockId, payload });
      if (this.#replies.size > 4096) this.#replies.delete(this.#replies.keys().next().value as number);
      this.#trySend(kind, aad.type, aad.msgId, blockId, payload, ref);
    };
    if (aad.type === COMMIT) {
      const b = (body as { blockId?: unknown })?.blockId;
      if (typeof b !== 'number' || b !== blockId) return answer(KIND.ERR, { code: 'CHANNEL_MALFORMED', message: 'commit without block id' });
      if (this.ledger.isAborted(b)) return answer(KIND.ERR, { code: 'BLOCK_ABORTED', message: `block ${b} was aborted here` });
      this.#committed(b);
      return answer(KIND.REP, { blockId: b });
    }
    if (blockId !== NO_BLOCK) {
      if (this.ledger.isAborted(blockId)) return answer(KIND.ERR, { code: 'BLOCK_ABORTED', message: `block ${blockId} was aborted here` });
      if (this.ledger.isCommitted(blockId)) return answer(KIND.ERR, { code: 'BLOCK_FINISHED', message: `block ${blockId} is already committed` });
      this.#active.add(blockId);
    }
    const h = this.#handlers.get(aad.type);
    if (!h) return answer(KIND.ERR, { code: 'CHANNEL_NO_HANDLER', message: `no handler for '${aad.type}' on the ${this.role} node` });
    this.#running.set(aad.msgId, aad.seq);
    this.#stats.requestsHandled++;
    const peerAtStart = this.#peer;
    Promise.resolve()
      .then(() => h(body, { type: aad.type, blockId }))
      .then((v) => {
        if (this.#closed || this.#peer !== peerAtStart) return; // peer restarted: nobody waits for this
        if (blockId !== NO_BLOCK && this.ledger.isAborted(blockId)) return answer(KIND.ERR, { code: 'BLOCK_ABORTED', message: `block ${blockId} was aborted here` });
        answer(KIND.REP, v ?? null);
      }, (e: unknown) => {
        if (this.#closed || this.#peer !== peerAtStart) return;
        // Only QkdError messages cross (they never carry key material by project rule).
        answer(KIND.ERR, e instanceof QkdError ? { code: e.code, message: e.message } : { code: 'HANDLER_FAILED', message: `handler for '${aad.type}' failed` });
      });
  }

  #trySend(kind: Kind, type: string, msgId: number, blockId: number, payload: Buffer, ref = -1): void {
    try {
      this.#send(kind, type, msgId, blockId, payload, ref);
    } catch (e) {
      this.emit('error', e);
    }
  }

  #committed(b: number): void {
    const fresh = !this.ledger.isCommitted(b);
    this.ledger.commit(b);
    this.#active.delete(b);
    for (const [id, r] of this.#replies) if (r.blockId === b && r.type !== COMMIT) this.#replies.delete(id);
    this.#auth.save(); // block boundary
    if (fresh) {
      this.#stats.blocksCommitted++;
      this.emit('blockCommitted', b);
    }
    for (const f of this.#resolveWaiters.get(b) ?? []) f('committed');
    this.#resolveWaiters.delete(b);
  }

  #abortLocal(b: number, code: string, byPeer: boolean): void {
    if (this.ledger.isCommitted(b)) return;
    const fresh = !this.ledger.isAborted(b);
    this.ledger.abort(b);
    this.#active.delete(b);
    const security = code.startsWith('AUTH_');
    for (const [id, p] of [...this.#pending]) {
      if (p.blockId !== b) continue;
      const msg = `Block ${b} aborted (${code}${byPeer ? ', by the peer' : ''}); nothing from it may be used. Start a new block.`;
      this.#settle(id, security ? new SecurityError('BLOCK_ABORTED', msg) : new ProtocolError('BLOCK_ABORTED', msg));
    }
    if (fresh) {
      this.#stats.blocksAborted++;
      this.emit('blockAborted', { blockId: b, code, byPeer });
    }
    for (const f of this.#resolveWaiters.get(b) ?? []) f('aborted');
    this.#resolveWaiters.delete(b);
  }
}
