/**
 * One block of post-processing as a dialogue between Bob (who drives it) and Alice (who answers),
 * over any request/reply transport: the authenticated classical channel in a run, a direct call
 * in tests. Each message below is one request Bob sends and the reply Alice returns.
 *
 *   Bob                                                   Alice
 *   sift     {pulses (LEB128 deltas), announcement}  ──▶  regenerates her choices at those pulses,
 *                                                    ◀──  matches: {reply}
 *   estimate {x: Bob's X-basis bits (all disclosed)} ──▶  X errors per intensity, decoy bounds,
 *                                                         QBER abort rule, LDPC code choice,
 *                                                    ◀──  {counts, params, frames, syndromes}
 *   reveal   {frames, from, count}  (blind retries)  ──▶  ◀── {bits}        (counted in the leak)
 *   verify   {keep: frame mask}                      ──▶  ◀── {hashKey, tag} (GF(2^128) hash)
 *   amplify  {verified, mZ (one decoy only)}         ──▶  finite-key length with the counted leak,
 *                                                    ◀──  {statement, seed} (fresh Toeplitz seed)
 *
 * Key decisions: the key is the Z basis (all intensities), X is disclosed for the phase-error
 * estimate (Lim et al. 2014). Alice is the one who discloses (syndromes, reveals, tag), so she
 * counts the leak; Bob recomputes it from what he received and both must agree. Frames that do
 * not decode after the retries are dropped by both (their syndromes concern dropped bits only).
 * Any error aborts the block on both sides; nothing of an aborted block is kept.
 *
 * With the one-decoy bound (Rusca et al. 2018, analysis 'rusca2018') the estimate needs the Z
 * errors per intensity, known only after reconciliation: Bob counts them over the kept frames and
 * sends them with `amplify` (their announcement is counted in the leak, `zErrorAnnouncementBits`);
 * Alice counts every Z bit of a dropped frame as an error (an upper bound: the bound only gets
 * looser with more errors). At the estimate step the QBER rule uses the X counts directly and the
 * early no-key check assumes no Z error (the most favourable case, so it only stops blocks that
 * cannot give key whatever the errors).
 */
import { randomBytes } from 'node:crypto';
import { ProtocolError, QkdError, SecurityError } from '../errors.ts';
import { aliceSift, bobAnnounce, errorsByIntensity, extractSifted, channelMap, type PartyEvents, type Sifted } from '../core/sift.ts';
import { analysisOf, estimateBounds, planBlock, DEFAULT_SECURITY, type BlockCounts, type DecoySettings, type SecurityParams, type SecurityStatement, type Triple } from '../core/estimate.ts';
import { binaryEntropy, blindRetrySettings, chooseBlind, decodeBatch, describeCode, encodeBatch, joinBits, reveal, WARM_STALL, WarmStore, type LdpcParams } from '../core/ldpc.ts';
import { newHashKey, tagsEqual, verifyTag, verifyTagBits } from '../core/verify.ts';
import { newToeplitzSeed } from '../core/pa.ts';
import { amplifyBlock, type BlockOutput } from '../core/block.ts';
import { wipe } from '../core/native-call.ts';
import type { DetectorMapping } from '../protocol/choices.ts';
import { checkPulseListCount, concatBits, decodePulseList, encodeDistinctPulses, encodePulseList, hammingDistance, sliceBits } from './bits.ts';

/** Sends one request to the peer and resolves with its reply (authenticated by the transport). */
export type PeerRequest = (type: string, payload: Record<string, unknown>) => Promise<Record<string, unknown>>;

export interface BlockConfig {
  settings: DecoySettings;
  security: SecurityParams;
  /** Preferred LDPC frame size in key bits (the largest shipped frame not above it is used). */
  frameBits: number;
  /**
   * Most blind-retry rounds per block (the blind plan reveals its step of a few hundred bits per
   * round; docs/ldpc.md). A frame still failing after them is discarded (counted as a frame error).
   */
  retryRounds: number;
}

export const DEFAULT_BLOCK_CONFIG: Omit<BlockConfig, 'settings'> = {
  security: DEFAULT_SECURITY,
  frameBits: 235930,
  retryRounds: 40,
};

/** Public figures of a finished or aborted block: counts, rates, never key bits. */
export interface BlockReport {
  blockId: number;
  verified: boolean;
  abortReason?: string;
  detections: number;
  siftedZ: number;
  siftedX: number;
  counts?: BlockCounts;
  /** Z errors per intensity found by reconciliation (Bob's side), X errors per intensity. */
  zErrors?: Triple;
  /** Z bits per intensity in the frames that decoded (the denominators of zErrors). */
  keptZ?: Triple;
  qberZ?: number;
  qberX?: number;
  qberEstimate?: number;
  frames?: number;
  framesFailed?: number;
  /** Counted leak of the kept frames: syndromes, reveals, and `feedbackBits`. */
  leakBits?: number;
  /** Bob's disclosed decode outcomes (which frames failed each round, the keep mask), 1 bit each. */
  feedbackBits?: number;
  reconciliationEfficiency?: number;
  statement?: SecurityStatement;
  doubleClicks: number;
  /** Wall time per stage on Bob's side (ms). */
  stageMs?: Record<string, number>;
}

export interface BlockResult {
  report: BlockReport;
  /** Present when verified and ℓ > 0: the amplified output (caller wipes after use). */
  output?: BlockOutput;
}


function u8(x: unknown, what: string): Uint8Array {
  if (x instanceof Uint8Array) return x;
  throw new ProtocolError('BAD_MESSAGE', `${what} must be a byte string`);
}
function num(x: unknown, what: string): number {
  if (typeof x === 'number' && Number.isFinite(x)) return x;
  throw new ProtocolError('BAD_MESSAGE', `${what} must be a finite number`);
}
function abortError(reason: string): SecurityError {
  return new SecurityError('BLOCK_ABORTED', reason);
}

/** Splits the first `frames·keyBits` bits of `z` into frames of `keyBits` bits. */
function framesOf(z: Uint8Array, keyBits: number, frames: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let f = 0; f < frames; f++) out.push(sliceBits(z, f * keyBits, keyBits));
  return out;
}

/** Concatenates the sifted results of consecutive parts of a block (same order on both sides). */
export function mergeSifted(parts: readonly Sifted[]): Sifted {
  const z = concatBits(parts.map((p) => ({ bytes: p.z, bits: p.zBits })));
  const x = concatBits(parts.map((p) => ({ bytes: p.x, bits: p.xBits })));
  const cat = (arrs: Uint8Array[]): Uint8Array => {
    const out = new Uint8Array(arrs.reduce((n, a) => n + a.length, 0));
    let o = 0;
    for (const a of arrs) {
      out.set(a, o);
      o += a.length;
    }
    return out;
  };
  const sum = (f: (p: Sifted) => Triple): Triple => parts.reduce<Triple>((t, p) => [t[0] + f(p)[0], t[1] + f(p)[1], t[2] + f(p)[2]], [0, 0, 0]);
  return {
    z: z.bytes, zBits: z.bits, zIntensity: cat(parts.map((p) => p.zIntensity.subarray(0, p.zBits))),
    x: x.bytes, xBits: x.bits, xIntensity: cat(parts.map((p) => p.xIntensity.subarray(0, p.xBits))),
    nZ: sum((p) => p.nZ), nX: sum((p) => p.nX),
  };
}

/** Detections per sift message: keeps each authenticated message well below the MAC's size limit. */
export const SIFT_PART_DETECTIONS = 1 << 20;

/**
 * Sift parts Bob keeps in flight. Alice answers them one after the other (her source's read-back
 * is one line), so with two her line never idles while Bob prepares the next part and the
 * messages cross the channel.
 */
export const SIFT_PARTS_IN_FLIGHT = 2;

/** Alice's state for one block between requests. */
interface AliceBlock {
  siftParts?: Sifted[];
  /** The last sift part's handling: the next part waits for it (parts are answered in order). */
  siftTail?: Promise<void>;
  sifted?: Sifted;
  counts?: BlockCounts;
  params?: LdpcParams;
  keyBits?: number;
  frames?: Uint8Array[];
  fills?: Uint8Array[];
  leakPerFrame?: number[];
  /** Decode outcomes Bob disclosed (frames failing per round, the keep mask): 1 bit each. */
  feedbackBits?: number;
  key?: Uint8Array;
  keyLen?: number;
  tagBits?: number;
  keep?: Uint8Array;
}

export interface AliceOptions {
  config: BlockConfig;
  /** Alice's packed choice byte (src/protocol/choices.ts) for each listed pulse (her source's read-back). */
  choicesAt(pulses: Float64Array): Uint8Array | Promise<Uint8Array>;
  /**
   * The same for the pulses of an encoded pulse list of `count` pulses (checked), when the record
   * takes it as it is (her source's read-back does: Bob's list goes on without a decode and an
   * encode on her thread). Without it the list is decoded for `choicesAt`.
   */
  choicesAtList?(list: Uint8Array, count: number): Promise<Uint8Array>;
  /** MAC key bits the classical channel consumed for this block so far. */
  authBitsConsumed(blockId: number): number;
  /** Called with the block's output when Alice has amplified it. */
  onOutput(blockId: number, result: BlockResult): void | Promise<void>;
  /** Previous blocks' measured Z QBER, if known (better code choice than the X estimate). */
  qberHint?(): number | undefined;
}

/**
 * Alice's side: a set of request handlers keyed by message type. State is kept per block id and
 * dropped when the block ends or aborts. Concurrency: one request at a time per block.
 */
export class AlicePostProcessor {
  private readonly blocks = new Map<number, AliceBlock>();
  constructor(private readonly opts: AliceOptions) {}

  private block(id: number, create = false): AliceBlock {
    let b = this.blocks.get(id);
    if (!b && create) this.blocks.set(id, (b = {}));
    if (!b) throw new ProtocolError('UNKNOWN_BLOCK', `block ${id} is not open on Alice's side (restarted peer?); restart the block`);
    return b;
  }

  /** Drops a block's state and wipes its key material. */
  abort(id: number): void {
    const b = this.blocks.get(id);
    if (!b) return;
    wipe(...(b.siftParts ?? []).flatMap((x) => [x.z, x.x]), b.sifted?.z, b.sifted?.x, b.key, ...(b.frames ?? []), ...(b.fills ?? []));
    this.blocks.delete(id);
  }

  async handle(type: string, p: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = num(p.block, 'block');
    try {
      switch (type) {
        case 'sift': return await this.sift(id, p);
        case 'estimate': return await this.estimate(id, p);
        case 'reveal': return this.reveal(id, p);
        case 'verify': return this.verify(id, p);
        case 'amplify': return await this.amplify(id, p);
        case 'abort': this.abort(id); return { ok: true };
        default: throw new ProtocolError('UNKNOWN_MESSAGE', `unknown post-processing message '${type}'`);
      }
    } catch (e) {
      this.abort(id);
      // A protocol-level abort (bad QBER, nothing decoded, verification failed) is an answer, not
      // a failure of the channel: Bob learns the reason and both drop the block.
      if (e instanceof QkdError && e.code === 'BLOCK_ABORTED') return { abort: e.message };
      // Parameter estimation's verdicts (PE_ABORT_BOUNDS, PE_IMPOSSIBLE_COUNTS, ...) are block
      // outcomes too: Bob must report their code, not a failed remote handler.
      if (e instanceof QkdError && e.code.startsWith('PE_')) return { abort: `${e.code}: ${e.message}` };
      // So is a source whose RNG failed its health test: the block ends, the reason is Bob's too.
      if (e instanceof QkdError && (e.code === 'SOURCE_RNG_FAILED' || e.code === 'SOURCE_READBACK_FAILED')) return { abort: `${e.code}: ${e.message}` };
      throw e;
    }
  }

  private sift(id: number, p: Record<string, unknown>): Promise<Record<string, unknown>> {
    const part = num(p.part ?? 0, 'part');
    if (part === 0) this.abort(id);
    const b = this.block(id, part === 0);
    // Bob keeps up to SIFT_PARTS_IN_FLIGHT parts in flight; they arrive in order (the channel
    // refuses reordering) and are answered in order: each waits for the previous one's handling.
    const mine = (b.siftTail ?? Promise.resolve()).then(() => this.siftPart(id, b, part, p));
    b.siftTail = mine.then(() => undefined, () => undefined);
    return mine;
  }

  private async siftPart(id: number, b: AliceBlock, part: number, p: Record<string, unknown>): Promise<Record<string, unknown>> {
    const parts = num(p.parts ?? 1, 'parts');
    const gone = () => new ProtocolError('UNKNOWN_BLOCK', `block ${id} was aborted while its sift part ${part} waited; restart the block`);
    if (this.blocks.get(id) !== b) throw gone();
    if (part !== (b.siftParts?.length ?? 0)) throw new ProtocolError('BAD_MESSAGE', `sift part ${part} of block ${id} arrived out of order`);
    const list = u8(p.pulses, 'pulses');
    const count = num(p.count, 'count');
    let choices: Uint8Array;
    if (this.opts.choicesAtList) {
      checkPulseListCount(list, count);
      choices = await this.opts.choicesAtList(list, count);
    } else {
      choices = await this.opts.choicesAt(decodePulseList(list, count));
    }
    // One pass: her reply to Bob and her own sifted strings together.
    const m = aliceSift(u8(p.announcement, 'announcement'), choices, 0);
    wipe(choices);
    if (this.blocks.get(id) !== b) {
      // Aborted during the read-back: nothing of this part may outlive the block.
      wipe(m.sifted.z, m.sifted.x);
      throw gone();
    }
    (b.siftParts ??= []).push(m.sifted);
    if (part === parts - 1) {
      b.sifted = mergeSifted(b.siftParts);
      wipe(...b.siftParts.flatMap((x) => [x.z, x.x]));
      b.siftParts = undefined;
    }
    return { reply: m.reply };
  }

  private async estimate(id: number, p: Record<string, unknown>): Promise<Record<string, unknown>> {
    const b = this.block(id);
    const s = b.sifted!;
    const bobX = u8(p.x, 'x');
    if (bobX.length !== Math.ceil(s.xBits / 8)) throw new ProtocolError('SIFT_MISMATCH', `Bob sent ${bobX.length} X bytes, Alice has ${s.xBits} X bits`);
    const mX = errorsByIntensity(s.x, bobX, s.xIntensity);
    const counts: BlockCounts = { nZ: s.nZ, nX: s.nX, mX };
    b.counts = counts;
    const sec = this.opts.config.security;
    // The one-decoy bound needs the Z errors (after reconciliation): here only the X QBER.
    const qberX = isOneDecoy(this.opts.config.settings) ? observedQberX(counts) : estimateBounds(this.opts.config.settings, counts, sec).qberX;
    if (!(qberX <= sec.qberAbort)) {
      // Abort, but answer with the (public) counts so both sides can report the QBER seen.
      this.abort(id);
      return { counts, abort: `PE_ABORT_QBER: X-basis QBER ${(qberX * 100).toFixed(2)} % is above the abort threshold ${(sec.qberAbort * 100).toFixed(1)} % (eavesdropping, misalignment or a timing fault)` };
    }
    try {
      this.checkKeyPossible(id, counts);
    } catch (e) {
      if (!(e instanceof QkdError && e.code.startsWith('PE_'))) throw e;
      this.abort(id);
      return { counts, abort: `${e.code}: ${e.message}` };
    }
    const q = Math.min(0.2, Math.max(0.002, this.opts.qberHint?.() ?? qberX));
    const frameBits = Math.min(this.opts.config.frameBits, s.zBits);
    if (frameBits < 3687) throw abortError(`BLOCK_TOO_SMALL: only ${s.zBits} sifted Z bits: too few for one LDPC frame (3687); use a larger block`);
    // Blind plan: a first attempt below what a one-shot code needs, then small reveals on failure.
    const choice = chooseBlind(q, frameBits);
    const frames = Math.floor(s.zBits / choice.keyBits);
    b.params = choice.params;
    b.keyBits = choice.keyBits;
    b.frames = framesOf(s.z, choice.keyBits, frames);
    const enc = await encodeBatch(b.frames, choice.params);
    b.fills = enc.map((e) => e.fill);
    b.leakPerFrame = enc.map((e) => e.leakBits);
    b.feedbackBits = frames; // every first attempt's outcome will be disclosed (a reveal list or the keep mask)
    const syndromes = concatBits(enc.map((e) => ({ bytes: e.syndrome, bits: e.syndrome.length * 8 }))).bytes;
    return { counts, qberEstimate: q, params: choice.params, frames, syndromes, stepBits: choice.stepBits };
  }

  /**
   * Stops a block at the estimate step when its bounds leave no key even if reconciliation
   * disclosed nothing (throws PE_ABORT_BOUNDS or PE_NO_KEY): otherwise the whole reconciliation
   * is spent before amplify finds ℓ = 0. The one-decoy bound needs the Z errors, known only after
   * reconciliation: it is evaluated with none (its ℓ falls as they grow, so a block without key
   * here has none at all), and counts it finds impossible only then are left to amplify.
   */
  private checkKeyPossible(id: number, counts: BlockCounts): void {
    const cfg = this.opts.config;
    const oneDecoy = isOneDecoy(cfg.settings);
    let best: SecurityStatement;
    try {
      best = planBlock({ settings: cfg.settings, counts: oneDecoy ? { ...counts, mZ: [0, 0, 0] } : counts, security: cfg.security,
        leakEcBits: 0, verifyTagBits: 0, authBitsConsumed: this.opts.authBitsConsumed(id) });
    } catch (e) {
      if (oneDecoy && e instanceof QkdError && e.code === 'PE_IMPOSSIBLE_COUNTS') return;
      throw e;
    }
    if (best.ell <= 0) {
      throw new SecurityError('PE_NO_KEY', `the finite-key bound leaves no key even with no reconciliation leak (n = ${best.n}, s_Z1 ≥ ${best.bounds.sZ1.toFixed(0)}, phi_Z ≤ ${best.bounds.phiZ.toFixed(4)}): use larger blocks or check the intensities`);
    }
  }

  private reveal(id: number, p: Record<string, unknown>): Record<string, unknown> {
    const b = this.block(id);
    // Frame indices as a strictly increasing LEB128 list (a block can hold thousands of frames).
    const list = decodePulseList(u8(p.frames, 'frames'), num(p.frameCount, 'frameCount'));
    const from = num(p.from, 'from');
    const count = num(p.count, 'count');
    const parts: Uint8Array[] = [];
    for (const f of list) {
      if (f >= b.frames!.length) throw new ProtocolError('BAD_MESSAGE', `reveal for frame ${f} of ${b.frames!.length}`);
    }
    for (const f of list) {
      parts.push(reveal(b.frames![f], b.fills![f], b.params!, from, count));
      b.leakPerFrame![f] += count;
    }
    b.feedbackBits! += list.length; // these retries' outcomes will be disclosed in turn
    return { bits: parts };
  }

  private verify(id: number, p: Record<string, unknown>): Record<string, unknown> {
    const b = this.block(id);
    const keep = u8(p.keep, 'keep');
    if (keep.length !== b.frames!.length) throw new ProtocolError('BAD_MESSAGE', `keep mask has ${keep.length} entries for ${b.frames!.length} frames`);
    const kept = b.frames!.filter((_, i) => keep[i]).map((bytes) => ({ bytes, bits: b.keyBits! }));
    if (kept.length === 0) throw abortError('EC_NO_FRAME: no LDPC frame decoded: the QBER estimate is off or the link is too noisy');
    const key = concatBits(kept);
    b.key = key.bytes;
    b.keep = Uint8Array.from(keep);
    b.keyLen = key.bits;
    b.leakPerFrame = b.leakPerFrame!.map((l, i) => (keep[i] ? l : 0));
    b.tagBits = verifyTagBits(key.bits, this.opts.config.security.epsCor);
    const hashKey = newHashKey();
    const tag = verifyTag(key.bytes, key.bits, hashKey, b.tagBits);
    return { hashKey, tag, tagBits: b.tagBits };
  }

  private async amplify(id: number, p: Record<string, unknown>): Promise<Record<string, unknown>> {
    const b = this.block(id);
    if (p.verified !== true) throw abortError('VERIFY_FAILED: verification failed: Alice\'s and Bob\'s corrected keys differ; block discarded');
    let leak = b.leakPerFrame!.reduce((s, x) => s + x, 0) + b.feedbackBits!;
    const counts = b.counts!;
    // The bounds are taken over every framed Z bit, then corrected for the frames that failed:
    // which frames decode depends on their errors, so the kept ones are no random sample.
    const dropped = b.keep!.reduce((n, k) => n + (k ? 0 : 1), 0);
    const framed = framedCounts(counts, b.sifted!.zIntensity, b.keyBits!, b.keep!.length);
    if (isOneDecoy(this.opts.config.settings)) {
      // Rusca et al. 2018 (A16): the Z errors per intensity. Bob's over the kept frames, plus every
      // Z bit of a dropped frame (their errors are unknown; more errors only loosen the bound).
      const keptZ = zBitsByIntensity(b.sifted!.zIntensity, b.keyBits!, b.keep!, 1);
      const droppedZ = zBitsByIntensity(b.sifted!.zIntensity, b.keyBits!, b.keep!, 0);
      const m = p.mZ;
      if (!Array.isArray(m) || m.length !== 3 || !m.every((x, k) => Number.isSafeInteger(x) && x >= 0 && x <= keptZ[k])) {
        throw new ProtocolError('BAD_MESSAGE', `amplify: mZ must be the kept frames' Z errors per intensity (3 integers, at most ${keptZ.join('/')}); got ${JSON.stringify(m)}`);
      }
      framed.mZ = [0, 1, 2].map((k) => (m[k] as number) + droppedZ[k]) as Triple;
      leak += zErrorAnnouncementBits(framed.nZ);
    }
    const statement = planBlock({
      settings: this.opts.config.settings,
      counts: framed,
      security: this.opts.config.security,
      leakEcBits: leak,
      verifyTagBits: b.tagBits!,
      authBitsConsumed: this.opts.authBitsConsumed(id),
      droppedZBits: dropped * b.keyBits!,
    });
    const seed = newToeplitzSeed(statement.n, Math.max(statement.ell, 1));
    const output = statement.ell > 0 ? await amplifyBlock({ key: b.key!, nBits: b.keyLen!, statement, seed }) : undefined;
    const report: BlockReport = {
      blockId: id, verified: true, detections: 0, siftedZ: b.sifted!.zBits, siftedX: b.sifted!.xBits,
      counts, statement, leakBits: leak, doubleClicks: 0,
    };
    this.abort(id);
    await this.opts.onOutput(id, { report, output });
    return { statement, seed };
  }
}

/**
 * The counts of the framed part of the block: n_Z per intensity counted exactly over its `frames`
 * frames (contiguous slices of the block's Z string, whose intensity tags Alice holds; the tail
 * beyond the last frame is never used, whatever its content); the X counts stay the block's (X
 * is the phase-error test set, independent of framing).
 */
function framedCounts(c: BlockCounts, zIntensity: Uint8Array, keyBits: number, frames: number): BlockCounts {
  const nZ: Triple = [0, 0, 0];
  for (let i = 0, end = frames * keyBits; i < end; i++) nZ[zIntensity[i]]++;
  return { nZ, nX: c.nX, mX: c.mX };
}

/** Z bits per intensity in the frames whose keep flag is `flag` (1: kept, 0: dropped). */
function zBitsByIntensity(zIntensity: Uint8Array, keyBits: number, keep: Uint8Array, flag: 0 | 1): Triple {
  const n: Triple = [0, 0, 0];
  keep.forEach((k, f) => {
    if ((k ? 1 : 0) !== flag) return;
    for (let i = f * keyBits, end = (f + 1) * keyBits; i < end; i++) n[zIntensity[i]]++;
  });
  return n;
}

/** The one-decoy analyses (Rusca et al. 2018), whose bound needs the Z errors per intensity. */
function isOneDecoy(s: DecoySettings): boolean {
  const a = analysisOf(s);
  return a === 'rusca2018' || a === 'rusca2018-paper-gamma';
}

/** X-basis QBER of the counts (all intensities). */
function observedQberX(c: BlockCounts): number {
  const n = c.nX.reduce((s, x) => s + x, 0);
  return n ? c.mX.reduce((s, x) => s + x, 0) / n : NaN;
}

/**
 * Bits counted in the leak for Bob's announcement of the Z errors per intensity (one decoy): each
 * count lies in 0..n_Z,k (the framed Z bits of its intensity), so it takes at most the bit length
 * of n_Z,k. About 50 bits per block; conservative (the counts are a function of the error pattern,
 * and the announced counts enter the bound, Rusca et al. 2018 Eq. (A16)).
 */
export function zErrorAnnouncementBits(framedNZ: Triple): number {
  return framedNZ.reduce((s, n) => s + (n > 0 ? n.toString(2).length : 0), 0);
}

export interface BobOptions {
  config: BlockConfig;
  mapping: readonly DetectorMapping[];
  request: PeerRequest;
}

/** Bob's side: drives one block through the dialogue. */
/**
 * How a block in post-processing is ordered with its neighbours (BobNode runs two at once): it
 * calls `siftDone` when its sift is over (the next block may start its own), and goes past its
 * sift only after `after` (the previous block's whole post-processing) settled.
 */
export interface BlockOrder {
  siftDone(): void;
  after: Promise<unknown>;
}

export class BobPostProcessor {
  private readonly map: Uint8Array;
  constructor(private readonly opts: BobOptions) {
    this.map = channelMap(opts.mapping);
  }

  /**
   * Runs the block on detections `pulse` (integer pulse indices, non-decreasing) and `channel`.
   * Never throws for an aborted block: the report says why. Throws only for local faults.
   */
  async processBlock(blockId: number, pulse: Float64Array, channel: Uint8Array, order?: BlockOrder): Promise<BlockResult> {
    const report: BlockReport = { blockId, verified: false, detections: pulse.length, siftedZ: 0, siftedX: 0, doubleClicks: 0 };
    const secret: Uint8Array[] = [];
    try {
      return await this.run(blockId, pulse, channel, report, secret, order);
    } catch (e) {
      order?.siftDone();
      // An aborted block still ends in order: its report after the block before it.
      await order?.after;
      if (!(e instanceof QkdError)) throw e;
      // Abort reasons start with their code ("PE_ABORT_QBER: ..."); other errors get theirs prefixed,
      // a failure of Alice's handler the code she gave (DELIVERY_PAUSED, not CHANNEL_REMOTE_ERROR).
      const remote = (e as { remoteCode?: unknown }).remoteCode;
      const code = e.code === 'CHANNEL_REMOTE_ERROR' && typeof remote === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(remote) ? remote : e.code;
      report.abortReason = e.code === 'BLOCK_ABORTED' ? e.message : `${code}: ${e.message}`;
      await this.opts.request('abort', { block: blockId }).catch(() => undefined);
      return { report };
    } finally {
      wipe(...secret);
    }
  }

  private async run(blockId: number, pulse: Float64Array, channel: Uint8Array, report: BlockReport, secret: Uint8Array[],
    order?: BlockOrder): Promise<BlockResult> {
    const cfg = this.opts.config;
    const stageMs: Record<string, number> = {};
    report.stageMs = stageMs;
    let last = performance.now();
    const lap = (name: string): void => {
      const now = performance.now();
      stageMs[name] = Math.round((stageMs[name] ?? 0) + now - last);
      last = now;
    };
    const req: PeerRequest = async (type, payload) => {
      lap(`bob-${type}`);
      const r = await this.opts.request(type, payload);
      lap(`peer-${type}`);
      if (typeof r.abort === 'string' && type !== 'estimate') throw abortError(r.abort);
      return r;
    };
    // The block's detections go in parts (each a separate authenticated message). Within a part,
    // the announcement refers to the rank of each detection's pulse among the part's distinct
    // pulses, so Alice only regenerates her choices at the listed pulses.
    const parts: Sifted[] = [];
    const bounds: number[] = [0];
    while (bounds[bounds.length - 1] < pulse.length) {
      let end = Math.min(pulse.length, bounds[bounds.length - 1] + SIFT_PART_DETECTIONS);
      while (end < pulse.length && pulse[end] === pulse[end - 1]) end++; // keep a pulse's clicks together
      bounds.push(end);
    }
    // Up to SIFT_PARTS_IN_FLIGHT parts in flight (Alice's read-back line never idles while Bob
    // prepares the next part); their replies are taken in order.
    const inFlight: { events: PartyEvents; reply: Promise<Record<string, unknown>> }[] = [];
    const takeReply = async () => {
      const f = inFlight.shift()!;
      lap('bob-sift');
      const sr = await f.reply;
      lap('peer-sift');
      if (typeof sr.abort === 'string') throw abortError(sr.abort);
      const part = extractSifted(f.events, u8(sr.reply, 'reply'));
      secret.push(part.z, part.x);
      parts.push(part);
    };
    for (let k = 0; k + 1 < bounds.length; k++) {
      const pp = pulse.subarray(bounds[k], bounds[k + 1]);
      const cc = channel.subarray(bounds[k], bounds[k + 1]);
      const dp = encodeDistinctPulses(pp);
      const ann = bobAnnounce({ pulse: dp.rank, channel: cc }, this.map, randomBytes(32));
      secret.push(ann.events.bits);
      report.doubleClicks += ann.stats.doubleClicks + ann.stats.multiClicks;
      const reply = this.opts.request('sift', { block: blockId, part: k, parts: bounds.length - 1, count: dp.count, pulses: dp.pulses, announcement: ann.announcement });
      reply.catch(() => undefined); // awaited in takeReply; a part left in flight by an earlier failure must not go unhandled
      inFlight.push({ events: ann.events, reply });
      if (inFlight.length >= SIFT_PARTS_IN_FLIGHT) await takeReply();
    }
    while (inFlight.length) await takeReply();
    const sifted = mergeSifted(parts);
    secret.push(sifted.z, sifted.x);
    report.siftedZ = sifted.zBits;
    report.siftedX = sifted.xBits;
    // The next block may sift now; this one goes on once the block before it is done.
    if (order) {
      order.siftDone();
      await order.after;
      lap('bob-wait-previous');
    }

    const er = await req('estimate', { block: blockId, x: sifted.x });
    if (er.counts) {
      const c = er.counts as BlockCounts;
      report.counts = c;
      const xN = c.nX.reduce((s, x) => s + x, 0);
      report.qberX = xN ? c.mX.reduce((s, x) => s + x, 0) / xN : undefined;
    }
    if (typeof er.abort === 'string') throw abortError(er.abort);
    const counts = report.counts!;
    const params = er.params as LdpcParams;
    const choice = describeCode(params);
    const nFrames = num(er.frames, 'frames');
    const q = num(er.qberEstimate, 'qberEstimate');
    report.qberEstimate = q;
    if (nFrames * choice.keyBits > sifted.zBits) throw new ProtocolError('SIFT_MISMATCH', `Alice framed ${nFrames}x${choice.keyBits} bits, Bob has ${sifted.zBits}`);
    const synAll = u8(er.syndromes, 'syndromes');
    const sb = Math.ceil(choice.syndromeBits / 8);
    if (synAll.length !== sb * nFrames) throw new ProtocolError('BAD_MESSAGE', `syndromes: ${synAll.length} bytes for ${nFrames} frames of ${sb}`);
    const frames = framesOf(sifted.z, choice.keyBits, nFrames);
    secret.push(...frames);
    const syndromes = Array.from({ length: nFrames }, (_, i) => synAll.subarray(i * sb, (i + 1) * sb));
    const leak = new Array<number>(nFrames).fill(choice.leakBits);
    // Retries resume each failing frame's decode where it stopped, and a stalled decode stops
    // early (docs/ldpc.md, warm start); Bob's side only: what is disclosed, and its count, do not
    // depend on it.
    const warm = new WarmStore();
    const warmOf = (ids: number[]) => ({ warm: { store: warm, frameIds: ids }, stall: WARM_STALL });
    let results = await decodeBatch(frames, syndromes, q, params, warmOf(frames.map((_, i) => i)));
    secret.push(...results.map((r) => r.corrected), ...results.map((r) => r.fillGuess));
    // Blind retries: reveal more bits of the frames that did not converge.
    const revealed = new Map<number, { bits: Uint8Array; count: number }>();
    // Each disclosed decode outcome (in a reveal list or the keep mask) is counted as one bit.
    let feedbackBits = nFrames;
    const step = num(er.stepBits, 'stepBits');
    if (!(step >= 1 && step <= choice.keyBits)) throw new ProtocolError('BAD_MESSAGE', `stepBits ${step} outside 1..${choice.keyBits}`);
    for (let round = 0; round < cfg.retryRounds; round++) {
      const failing = results.map((r, i) => (r.converged ? -1 : i)).filter((i) => i >= 0);
      if (failing.length === 0) break;
      const from = round * step;
      feedbackBits += failing.length;
      const rr = await req('reveal', { block: blockId, frames: encodePulseList(Float64Array.from(failing)), frameCount: failing.length, from, count: step });
      const parts = rr.bits as Uint8Array[];
      if (!Array.isArray(parts) || parts.length !== failing.length) throw new ProtocolError('BAD_MESSAGE', 'reveal reply does not match the request');
      const fFrames: Uint8Array[] = [];
      const fSyn: Uint8Array[] = [];
      const fRev: Uint8Array[] = [];
      failing.forEach((f, k) => {
        const prev = revealed.get(f) ?? { bits: new Uint8Array(0), count: 0 };
        const next = { bits: joinBits(prev.bits, prev.count, u8(parts[k], 'bits'), step), count: prev.count + step };
        revealed.set(f, next);
        leak[f] += step;
        fFrames.push(frames[f]);
        fSyn.push(syndromes[f]);
        fRev.push(next.bits);
      });
      // Frames stuck in the 8-bit decoder's error floor get weaker LLRs (blindRetrySettings). Its
      // last resort, the f64 decoder, is left out here: ≈ 16 s of CPU per 2^18 frame stalled the
      // live pipeline (3 of 5 blocks at 25 km); a frame still failing after the last round is
      // discarded instead (a frame error, its key not used).
      const retry = blindRetrySettings(q, round + 1);
      const kernel = retry.kernel === 'reference' ? 'auto' : retry.kernel;
      const again = await decodeBatch(fFrames, fSyn, retry.qber, params, { revealedCount: (round + 1) * step, revealedPerFrame: fRev, kernel, ...warmOf(failing) });
      failing.forEach((f, k) => {
        results[f] = again[k];
        secret.push(again[k].corrected, again[k].fillGuess);
      });
    }
    warm.close(); // (on an exception before this, the store is closed when garbage-collected)
    const keep = Uint8Array.from(results.map((r) => (r.converged ? 1 : 0)));
    report.frames = nFrames;
    report.framesFailed = nFrames - keep.reduce((s, x) => s + x, 0);
    // Z errors per intensity that reconciliation corrected (kept frames only).
    const zErr: Triple = [0, 0, 0];
    const keptZ: Triple = [0, 0, 0];
    let keptBits = 0;
    let keptErr = 0;
    for (let f = 0; f < nFrames; f++) {
      if (!keep[f]) continue;
      const d = hammingDistance(frames[f], results[f].corrected, choice.keyBits);
      keptBits += choice.keyBits;
      keptErr += d;
      const zi = sifted.zIntensity;
      for (let i = f * choice.keyBits, end = (f + 1) * choice.keyBits; i < end; i++) keptZ[zi[i]]++;
      if (d) {
        const part = errorsByIntensity(frames[f], results[f].corrected, sifted.zIntensity.subarray(f * choice.keyBits, (f + 1) * choice.keyBits));
        for (let k = 0; k < 3; k++) zErr[k] += part[k];
      }
    }
    report.zErrors = zErr;
    report.keptZ = keptZ;
    report.qberZ = keptBits ? keptErr / keptBits : undefined;
    const recLeak = leak.reduce((s, l, i) => s + (keep[i] ? l : 0), 0) + feedbackBits;
    // One decoy: the Z error counts go to Alice with `amplify`, and their announcement is counted.
    const oneDecoy = isOneDecoy(cfg.settings);
    const keptLeak = recLeak + (oneDecoy ? zErrorAnnouncementBits(framedCounts(counts, sifted.zIntensity, choice.keyBits, nFrames).nZ) : 0);
    report.leakBits = keptLeak;
    report.feedbackBits = feedbackBits;
    if (keptBits && report.qberZ) report.reconciliationEfficiency = recLeak / (keptBits * binaryEntropy(report.qberZ));

    const vr = await req('verify', { block: blockId, keep });
    const key = concatBits(results.filter((_, i) => keep[i]).map((r) => ({ bytes: r.corrected, bits: choice.keyBits })));
    secret.push(key.bytes);
    const tagBits = num(vr.tagBits, 'tagBits');
    const mine = verifyTag(key.bytes, key.bits, u8(vr.hashKey, 'hashKey'), tagBits);
    const verified = tagsEqual(mine, u8(vr.tag, 'tag'));
    const ar = await req('amplify', oneDecoy ? { block: blockId, verified, mZ: zErr } : { block: blockId, verified });
    if (!verified) throw abortError('VERIFY_FAILED: verification failed: keys differ after reconciliation; block discarded');
    const statement = ar.statement as SecurityStatement;
    if (statement.n !== key.bits) throw new ProtocolError('SIFT_MISMATCH', `Alice amplifies ${statement.n} bits, Bob holds ${key.bits}`);
    if (statement.leakEcBits !== keptLeak) {
      throw new SecurityError('LEAK_MISMATCH', `Alice counted a leak of ${statement.leakEcBits} bits, Bob ${keptLeak}: refusing the block`);
    }
    report.statement = statement;
    report.verified = true;
    const output = statement.ell > 0 ? await amplifyBlock({ key: key.bytes, nBits: key.bits, statement, seed: u8(ar.seed, 'seed') }) : undefined;
    lap('bob-amplify-local');
    return { report, output };
  }
}
