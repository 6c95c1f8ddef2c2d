/**
 * LDPC error reconciliation (native/ldpc, adapters in native/node/src/ldpc.rs): one-way,
 * syndrome based, rate adaptive. See docs/ldpc.md.
 *
 * Protocol (two parties, two processes):
 *   1. Both sides agree on `params` for a block: Alice (or whoever holds the QBER estimate) calls
 *      `chooseCode(qber, frameBits)` and sends `choice.params` with the first syndrome.
 *   2. Alice, per frame of `choice.keyBits` key bits: `encode(frame, params)` → send `syndrome`
 *      (keep `fill`, the secret puncturing bits, until Bob has confirmed the frame).
 *   3. Bob: `decode(frame, syndrome, qber, params)` → `{corrected, converged, ...}`.
 *   4. Blind retry when `converged` is false: Bob asks for `count` more bits; Alice answers with
 *      `reveal(frame, fill, params, from, count)`; Bob calls `decode` again with every revealed
 *      bit so far (`joinBits` concatenates answers). Each revealed bit adds 1 to `leakBits`.
 *   5. Give up (discard the frame) when `revealed` reaches `maxRevealBits` or the caller's budget.
 * `chooseBlind(qber, frameBits)` plans the same protocol for a lower mean leak: a first attempt
 * that about half the frames fail, then retries of `stepBits` each (docs/ldpc.md, Figures).
 *
 * Bits are packed LSB first: bit i is `(bytes[i >> 3] >> (i & 7)) & 1`. A frame is
 * ceil(keyBits / 8) bytes; unused high bits of the last byte are ignored on input, zero on output.
 *
 * Leak: `leakBits` = syndrome bits − punctured + revealed, an upper bound on what the disclosed
 * messages say about the key (the punctured positions are untainted, so their columns are
 * independent; docs/ldpc.md). Count it into λ_EC as is; never replace it by f·h(QBER).
 *
 * Start-up: `await prepareCodes(frameBits)` builds the codes off the JS thread (else the first use
 * of a frame size builds them synchronously, up to ~1 s for 2^20).
 * Concurrency: `decode`/`decodeBatch`/`encodeBatch` run on a worker thread (rayon pool inside)
 * and borrow the caller's arrays until the promise settles: do not modify them before.
 * No cancellation: a batch is bounded by maxIterations (worst case ≈ 60 iterations per frame).
 * Key material: returned `corrected`, `fill`, `fillGuess` are key-equivalent; callers wipe them
 * (`.fill(0)`) when done. The facade wipes the temporary concatenations it makes.
 */
import { randomFillSync } from 'node:crypto';
import { native } from './native.ts';
import { callNative, callNativeAsync } from './native-call.ts';
import { QkdError } from '../errors.ts';

/** Rate-adaptation parameters: which mother code (2^log2n bits, rate ‰), punctured, shortened. */
export interface LdpcParams {
  log2n: number;
  ratePermille: number;
  punctured: number;
  shortened: number;
}

export interface CodeChoice {
  params: LdpcParams;
  /** Key bits per frame. */
  keyBits: number;
  /** Syndrome bits Alice sends per frame. */
  syndromeBits: number;
  motherLength: number;
  /** Bits disclosed per frame without retries (syndromeBits − punctured). */
  leakBits: number;
  /** FNV-1a-64 of the mother code (hex): compare with the peer's to detect a version mismatch. */
  checksum: string;
}

export interface EncodeResult {
  syndrome: Uint8Array;
  /** Secret puncturing fill (params.punctured bits): keep for blind retries, then wipe. */
  fill: Uint8Array;
  leakBits: number;
}

export interface Revealed {
  /** Number of bits revealed so far (prefix of the frame's reveal order). */
  count: number;
  /** The revealed values, packed. */
  bits: Uint8Array;
}

export type Kernel = 'auto' | 'portable' | 'reference';

export interface DecodeOptions {
  revealed?: Revealed;
  /** Iteration budget per frame (default 60). */
  maxIterations?: number;
  /** 'auto' = SIMD dispatch; 'portable' = baseline build of the same kernel (bit-identical);
   *  'reference' = slow f64 sum-product (tests, benchmark baseline). */
  kernel?: Kernel;
  /** Warm start for blind retries: frames with a state in `store` (left by their last failed
   *  decode, same params and syndrome, fewer revealed bits) resume belief propagation from it
   *  instead of restarting; every frame that fails leaves its state there. `frameIds`: one id per
   *  frame, stable across the rounds of a block. Changes only Bob's decoding (how many rounds a
   *  frame needs), never what is disclosed. Ignored by the 'reference' kernel. */
  warm?: { store: WarmStore; frameIds: number[] };
  /** Early give-up of a stalled frame (native decoder::Stall): from lane iteration `from`, every
   *  `every` iterations, a frame whose unsatisfied checks fell by less than `minDropPerMille` ‰
   *  is returned as not converged. Absent: the iteration budget only. With `warm` a stopped
   *  frame loses no work (its retry resumes). */
  stall?: { from: number; every: number; minDropPerMille: number };
}

/**
 * The stall rule to use with warm-started retries: from iteration 20, every 10, a frame whose
 * unsatisfied checks fell by less than 10 % stops (its retry resumes where it stopped). Measured
 * (docs/ldpc.md, 256 frames of 2^18 per QBER): f within ±0.0005 of cold retries at QBER 1–8 %,
 * CPU −9 to −23 %. Without warm start the same rule costs leak (a stopped frame restarts).
 */
export const WARM_STALL = Object.freeze({ from: 20, every: 10, minDropPerMille: 100 });

const warmFinalizer = new FinalizationRegistry<number>((id) => native().ldpcWarmClose(id));

/**
 * Decoder states of a block's failed frames, held in the native core (they are derived from
 * Bob's key: zeroised when dropped, never copied to JS). Close it when the block's
 * reconciliation ends; an unclosed store is closed when garbage-collected.
 */
export class WarmStore {
  readonly id: number;
  private open = true;
  /** `maxBytes`: most state kept (default 256 MiB ≈ 160 failing 2^18 frames); frames beyond it
   *  retry cold (the same disclosures, only more rounds). */
  constructor(maxBytes = 256 * 2 ** 20) {
    if (!(maxBytes >= 0)) throw new QkdError('LDPC_BAD_PARAMS', `WarmStore maxBytes must be >= 0, got ${maxBytes}`);
    this.id = native().ldpcWarmOpen(maxBytes);
    warmFinalizer.register(this, this.id, this);
  }
  /** Frames with a state, and the bytes held (one per edge of the mother code each). */
  size(): { frames: number; bytes: number } {
    const [frames, bytes] = native().ldpcWarmSize(this.id);
    return { frames, bytes };
  }
  /** Drops every state (zeroised). Idempotent. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    warmFinalizer.unregister(this);
    native().ldpcWarmClose(this.id);
  }
}

export interface DecodeResult {
  /** Corrected key bits (Bob's best guess when not converged). */
  corrected: Uint8Array;
  /** Bob's estimate of Alice's puncturing fill (with `corrected` it reproduces the syndrome). */
  fillGuess: Uint8Array;
  converged: boolean;
  iterations: number;
  /** Bits disclosed for this frame so far (syndrome − punctured + revealed). */
  leakBits: number;
}

interface NativeParams { log2n: number; ratePermille: number; punctured: number; shortened: number }
interface NativeChoice {
  params: NativeParams; keyBits: number; syndromeBits: number; motherLength: number; leakBits: number; checksum: string;
}
interface NativeDecode {
  corrected: Buffer; fillGuess: Buffer; converged: boolean[]; iterations: number[]; leakBits: number[];
}

function toNative(p: LdpcParams): NativeParams {
  for (const [k, v] of Object.entries(p)) {
    if (!Number.isInteger(v) || v < 0) {
      throw new QkdError('LDPC_BAD_PARAMS', `LDPC parameter ${k} must be a non-negative integer, got ${String(v)}; pass chooseCode().params`);
    }
  }
  return { log2n: p.log2n, ratePermille: p.ratePermille, punctured: p.punctured, shortened: p.shortened };
}

function choiceFrom(c: NativeChoice): CodeChoice {
  return { ...c, params: { ...c.params } };
}

/** Shannon binary entropy h(q) in bits. */
export function binaryEntropy(q: number): number {
  if (q <= 0 || q >= 1) return 0;
  return -q * Math.log2(q) - (1 - q) * Math.log2(1 - q);
}

/** Reconciliation efficiency f = leak / (n·h(QBER)). */
export function efficiency(leakBits: number, keyBits: number, qber: number): number {
  return leakBits / (keyBits * binaryEntropy(qber));
}

/**
 * Picks mother code, puncturing and shortening so the leak tracks `qber` (a fraction in (0, 0.5)).
 * `frameBits`: preferred key bits per frame (the largest shipped frame not above it is used;
 * shipped key lengths are 3687, 14746, 58983, 235930, 943719). `efficiency`: override the target f.
 */
export function chooseCode(qber: number, frameBits: number, opts: { efficiency?: number } = {}): CodeChoice {
  return choiceFrom(callNative(() => native().ldpcChooseCode(qber, frameBits, opts.efficiency)) as NativeChoice);
}

/** A blind-reconciliation plan: first attempt's code choice plus the bits revealed per retry. */
export interface BlindChoice extends CodeChoice {
  /** Bits Alice reveals per retry round (`reveal(frame, fill, params, round·stepBits, stepBits)`). */
  stepBits: number;
  /** Efficiency f of the first attempt (leakBits / (keyBits·h(qber))). */
  firstEfficiency: number;
}

/**
 * Blind reconciliation (Martinez-Mateo, Elkouss, Martin 2012): starts below the efficiency a
 * one-shot code needs and, while a frame fails, reveals `stepBits` more bits (the punctured fill
 * first, then key bits), every one counted in `leakBits`. About half the frames need one or more
 * retries; the mean leak is lower than chooseCode's (docs/ldpc.md, Figures). Same protocol as
 * chooseCode otherwise: send `params`; retry with reveal/decode as in the header.
 */
export function chooseBlind(qber: number, frameBits: number): BlindChoice {
  const b = callNative(() => native().ldpcChooseBlind(qber, frameBits)) as { choice: NativeChoice; stepBits: number; firstEfficiency: number };
  return { ...choiceFrom(b.choice), stepBits: b.stepBits, firstEfficiency: b.firstEfficiency };
}

/**
 * Decoder settings for blind retry `round` (1, 2, ...) of a frame that keeps failing. The 8-bit
 * decoder has an error floor of ≈ 1–2e-3 frames: frames that stay stuck however many bits are
 * revealed (2^16, QBER 2 %: 5 of 3000 after 60 rounds; the f64 reference decodes all 5, and the fast
 * decoder with the channel LLR of 1.5×QBER decodes 4 of 5). From round 4 on the retries therefore
 * use 1.5×QBER (weaker channel LLRs, less saturation), from round 8 on the slow f64 reference.
 */
export function blindRetrySettings(qber: number, round: number): { qber: number; kernel: Kernel } {
  if (round >= 8) return { qber, kernel: 'reference' };
  if (round >= 4) return { qber: Math.min(1.5 * qber, 0.45), kernel: 'auto' };
  return { qber, kernel: 'auto' };
}

/** Validates parameters received from the peer and returns the derived sizes. */
export function describeCode(params: LdpcParams): CodeChoice {
  return choiceFrom(callNative(() => native().ldpcDescribe(toNative(params))) as NativeChoice);
}

/** Alice: syndrome of one frame. `fill` (params.punctured secret random bits) is drawn from the
 *  OS CSPRNG unless given (tests pass their own). */
export function encode(frameBits: Uint8Array, params: LdpcParams, fill?: Uint8Array): EncodeResult {
  const p = toNative(params);
  const f = fill ?? randomFillSync(new Uint8Array(Math.ceil(p.punctured / 8)));
  if (!fill && p.punctured % 8) f[f.length - 1] &= (1 << (p.punctured % 8)) - 1;
  const syndrome = callNative(() => native().ldpcEncode(p, frameBits, f));
  const c = describeCode(params);
  return { syndrome: new Uint8Array(syndrome.buffer, syndrome.byteOffset, syndrome.byteLength), fill: f, leakBits: c.leakBits };
}

function concat(parts: Uint8Array[], each: number, what: string): Uint8Array {
  const out = new Uint8Array(parts.length * each);
  parts.forEach((b, i) => {
    if (b.byteLength !== each) {
      out.fill(0);
      throw new QkdError('LDPC_BAD_LENGTH', `${what} ${i} must be ${each} bytes, got ${b.byteLength}`);
    }
    out.set(b, i * each);
  });
  return out;
}

function split(buf: Uint8Array, each: number, count: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) out.push(buf.subarray(i * each, (i + 1) * each));
  return out;
}

/** Alice, many frames at once (parallel). Fresh fills are drawn for every frame. */
export async function encodeBatch(frames: Uint8Array[], params: LdpcParams): Promise<EncodeResult[]> {
  const c = describeCode(params);
  const kb = Math.ceil(c.keyBits / 8);
  const pb = Math.ceil(c.params.punctured / 8);
  const keys = concat(frames, kb, 'frame');
  const fills = randomFillSync(new Uint8Array(frames.length * pb));
  if (c.params.punctured % 8) for (let i = 0; i < frames.length; i++) fills[i * pb + pb - 1] &= (1 << (c.params.punctured % 8)) - 1;
  try {
    const s = (await callNativeAsync(() => native().ldpcEncodeBatch(toNative(params), keys, fills, frames.length))) as Buffer;
    const sb = Math.ceil(c.syndromeBits / 8);
    const synd = split(new Uint8Array(s.buffer, s.byteOffset, s.byteLength), sb, frames.length);
    const fl = split(fills, pb, frames.length);
    return synd.map((syndrome, i) => ({ syndrome, fill: fl[i], leakBits: c.leakBits }));
  } finally {
    keys.fill(0);
  }
}

/** Alice, blind retry: values of reveal positions `from .. from + count` of this frame (packed). */
export function reveal(frameBits: Uint8Array, fill: Uint8Array, params: LdpcParams, from: number, count: number): Uint8Array {
  const b = callNative(() => native().ldpcReveal(toNative(params), frameBits, fill, from, count));
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Concatenates two packed bit strings (a: aBits bits, then b: bBits bits). */
export function joinBits(a: Uint8Array, aBits: number, b: Uint8Array, bBits: number): Uint8Array {
  const out = new Uint8Array(Math.ceil((aBits + bBits) / 8));
  for (let i = 0; i < aBits; i++) if ((a[i >> 3] >> (i & 7)) & 1) out[i >> 3] |= 1 << (i & 7);
  for (let i = 0; i < bBits; i++) {
    const j = aBits + i;
    if ((b[i >> 3] >> (i & 7)) & 1) out[j >> 3] |= 1 << (j & 7);
  }
  return out;
}

/** Most bits a blind retry can reveal for these params (punctured fill, then key bits). */
export function maxRevealBits(params: LdpcParams): number {
  const c = describeCode(params);
  return c.keyBits + c.params.punctured;
}

/** Bob: decodes many frames concurrently (all with the same params and revealed count). */
export async function decodeBatch(
  frames: Uint8Array[],
  syndromes: Uint8Array[],
  qber: number,
  params: LdpcParams,
  opts: DecodeOptions & { revealedPerFrame?: Uint8Array[]; revealedCount?: number } = {},
): Promise<DecodeResult[]> {
  if (frames.length !== syndromes.length) {
    throw new QkdError('LDPC_BAD_LENGTH', `got ${frames.length} frames but ${syndromes.length} syndromes`);
  }
  const c = describeCode(params);
  const kb = Math.ceil(c.keyBits / 8);
  const sb = Math.ceil(c.syndromeBits / 8);
  const rc = opts.revealedCount ?? 0;
  const rb = Math.ceil(rc / 8);
  const revealedParts = opts.revealedPerFrame ?? (rc === 0 ? frames.map(() => new Uint8Array(0)) : undefined);
  if (!revealedParts || revealedParts.length !== frames.length) {
    throw new QkdError('LDPC_BAD_LENGTH', `revealedCount ${rc} needs revealedPerFrame with one entry per frame`);
  }
  const kernel = opts.kernel ?? 'auto';
  const warm = kernel === 'reference' ? undefined : opts.warm;
  if (warm && (warm.frameIds.length !== frames.length || !warm.frameIds.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32))) {
    throw new QkdError('LDPC_BAD_LENGTH', `warm.frameIds must hold one integer id in [0, 2^32) per frame (${frames.length} frames)`);
  }
  const f = concat(frames, kb, 'frame');
  try {
    const s = concat(syndromes, sb, 'syndrome');
    const r = concat(revealedParts, rb, 'revealed bits');
    const out = (await callNativeAsync(() =>
      native().ldpcDecodeBatch(toNative(params), qber, f, s, frames.length, rc, r, opts.maxIterations ?? 60,
        kernel === 'portable', kernel === 'reference', warm?.store.id, warm?.frameIds,
        opts.stall ? [opts.stall.from, opts.stall.every, opts.stall.minDropPerMille] : undefined))) as NativeDecode;
    r.fill(0);
    const corr = split(new Uint8Array(out.corrected.buffer, out.corrected.byteOffset, out.corrected.byteLength), kb, frames.length);
    const pb = Math.ceil(c.params.punctured / 8);
    const fg = split(new Uint8Array(out.fillGuess.buffer, out.fillGuess.byteOffset, out.fillGuess.byteLength), pb, frames.length);
    return corr.map((corrected, i) => ({
      corrected,
      fillGuess: fg[i],
      converged: out.converged[i],
      iterations: out.iterations[i],
      leakBits: out.leakBits[i],
    }));
  } finally {
    f.fill(0);
  }
}

/** Bob: decodes one frame. A failed decode resolves with `converged: false` (not an error). */
export async function decode(
  frameBits: Uint8Array,
  syndrome: Uint8Array,
  qber: number,
  params: LdpcParams,
  opts: DecodeOptions = {},
): Promise<DecodeResult> {
  const rv = opts.revealed;
  const [r] = await decodeBatch([frameBits], [syndrome], qber, params, {
    ...opts,
    revealedCount: rv?.count ?? 0,
    revealedPerFrame: rv ? [rv.bits] : undefined,
  });
  return r;
}

/**
 * Builds every shipped code for frames of `frameBits` key bits (the size chooseCode would pick)
 * on a worker thread. Call once at start-up: otherwise the first chooseCode/encode/decode on a
 * size builds its code on the JS thread (up to ~1 s per 2^20 code).
 */
export async function prepareCodes(frameBits: number): Promise<void> {
  const c = chooseCodeSize(frameBits);
  await callNativeAsync(() => native().ldpcPrepare(c) as Promise<unknown>);
}

/** log2 of the mother length chooseCode uses for `frameBits` (mirrors family.rs `choose`). */
function chooseCodeSize(frameBits: number): number {
  let best = 12;
  for (const l of [12, 14, 16, 18, 20]) {
    const n = 2 ** l;
    if (n - Math.floor(n / 10) <= frameBits) best = l;
  }
  return best;
}

/** The SIMD kernel the decoder uses on this CPU ('avx512bw', 'avx2' or 'portable'). */
export function decoderKernel(): string {
  return native().ldpcKernel();
}

/** Rebuilds a shipped code and returns its provenance line (format of shippedTable()). */
export function provenance(log2n: number, ratePermille: number): string {
  return callNative(() => native().ldpcProvenance(log2n, ratePermille));
}

/** The shipped provenance table (native/ldpc/codes/checksums.txt). */
export function shippedTable(): string {
  return native().ldpcShippedTable();
}
