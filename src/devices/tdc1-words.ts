/**
 * The S-Fifteen TDC1's binary timestamp stream: what the unit sends on its USB CDC serial line
 * after `timestamp` mode and `counts?`, until `abort`. Layout as the vendor's open driver decodes
 * it (pyS15, S15lib/instruments/usb_counter_fpga.py: `read_timestamps_bin`, `_bin2`, `_bin3`):
 *
 * ```
 *  one word = 4 bytes, little-endian u32
 *   31                                                   5    4     3   2   1   0
 *  ┌──────────────────────────────────────────────────────┬──────┬───────────────┐
 *  │ time, 27 bits, units of 2 ns (rolls over every 2^27) │ flag │ input pattern │
 *  └──────────────────────────────────────────────────────┴──────┴───────────────┘
 *   pattern: bit k set = an edge on input k+1 (several bits = coincident edges)
 *   flag = 1: a time-keeping word, not an event (the vendor's decoders skip it)
 * ```
 * Time-keeping words: in the unit's own recorded output (the vendor's example notebook,
 * examples/TDC1_time_to_digital_converter.ipynb) flagged words (pattern 0x11) appear at each
 * half roll-over period (2^26 units) plus a fixed latency (3960 units) when no event came in the
 * half period before, so a word arrives at least about once per roll-over period and roll-overs
 * can be counted from the words alone: a step backwards is one roll-over (the vendor's rule).
 *
 * Misalignment. The vendor's `_bin3` decoder exists because the unit's stream can slip by two
 * bytes (it toggles a 2-byte skip and drops the corrupt words). After a slip every word is made
 * of halves of two real words, so its time jumps at random. This decoder:
 * - learns the typical step between words (EWMA) and accepts a word straight away when its step
 *   is under `fastFactor` x that (rarely wrong for random words: the limit is a tiny fraction of
 *   the 2^27 period at any useful rate);
 * - a larger step is looked at with `lookaheadWords` words of look-ahead: if the words after it
 *   continue with small steps in the same phase it was a quiet spell (accepted); otherwise it
 *   tries the stream shifted by 2 (then 1, 3) bytes, up to `maxSkipWords` words further, also
 *   giving up the last `holdWords` accepted words (held back, not yet emitted, for exactly this):
 *   the first shift whose words continue with small steps from the last good time is taken;
 * - the bytes given up are reported in band: an ERROR event, channel -1, at the last good time,
 *   `missedEvents` = whole words discarded (rounded up); nothing is dropped without a record;
 * - if nothing continues consistently (the rate just dropped, or the stream is too sparse to
 *   tell), the word is accepted and the learned step grows towards it (at most 8x a word, so
 *   that one quiet spell does not open the fast path to every word).
 * Limits, said plainly: the first ~100 words set the learned step (a slip among them goes
 * unnoticed); the property test holds it to "every slip found, marked, nothing altered" from
 * ~15 k words/s up; at slower rates random words slip under the (wider) fast limit more often,
 * so a slip may be found a few words late and a word or two before the mark may be altered;
 * a slip among time-keeping words (a quiet spell) is marked and re-aligned, but the words lost
 * there may have carried whole roll-over periods, so times after it may be short by multiples
 * of 2^27 units (268 ms): the ERROR event says where;
 * below about 100 words/s (a step over 2^22 units) the fast limit reaches the whole period and
 * a slip cannot be told from data; two words more than one period apart (possible only if
 * time-keeping words were lost) unwrap one period short, as in the vendor's decoders.
 *
 * Other malformed input: an event word with an empty pattern is an ERROR event (channel -1,
 * missedEvents 1); 1–3 bytes left when the stream ends (`flush`) are an ERROR event too.
 *
 * Output: the node's tag batch (types.ts TagStreamBatch): 64-bit picosecond times (2000 ps per
 * unit, from the unwrapped 2 ns count of the first word), channel = input - 1 (0..3), one tag per
 * set pattern bit in channel order. Not safe to share between streams.
 */
import { endianness } from 'node:os';
import { TAG_TYPE, type TagEvent, type TagStreamBatch } from './types.ts';

export const TDC1_UNIT_PS = 2000;
export const TDC1_TIME_BITS = 27;
export const TDC1_PERIOD_UNITS = 2 ** TDC1_TIME_BITS;
export const TDC1_HALF_UNITS = 2 ** (TDC1_TIME_BITS - 1);
/** Latency of the time-keeping word after a half-period boundary, in units (vendor notebook). */
export const TDC1_MARKER_LATENCY_UNITS = 3960;
/** Pattern bits of a time-keeping word as the unit sends them (0x11 with the flag). */
export const TDC1_MARKER_PATTERN = 0x1;
export const TDC1_FLAG = 0x10;
const MASK = TDC1_PERIOD_UNITS - 1;
/** Tolerance on the place of time-keeping words (latency after a half-period boundary), units. */
const MARKER_SLACK = 1 << 16;

/** Is a flagged word where time-keeping words sit (the latency after a half-period boundary)? */
function markerInPlace(word: number): boolean {
  return Math.abs(((word >>> 5) % TDC1_HALF_UNITS) - TDC1_MARKER_LATENCY_UNITS) <= MARKER_SLACK;
}

interface Chain {
  first: number;
  score: number;
  steps: number;
  badMarkers: number;
  short: boolean;
}
const LITTLE = endianness() === 'LE';

/** One event for the encoders: time in 2 ns units (unwrapped), input pattern 1..15. */
export interface Tdc1Event {
  units: bigint;
  pattern: number;
}

export function tdc1Word(units: bigint, flag: boolean, pattern: number): number {
  return ((Number(units & BigInt(MASK)) * 32) + (flag ? TDC1_FLAG : 0) + (pattern & 0xf)) >>> 0;
}

/**
 * Slow, obvious encoder (the tests' reference): the words a TDC1 sends for `events` (sorted by
 * time) from `startUnits` to `endUnits`, time-keeping words included by the rule above.
 */
export function encodeTdc1Slow(events: Tdc1Event[], startUnits: bigint, endUnits: bigint): Uint8Array {
  const half = BigInt(TDC1_HALF_UNITS);
  const words: { units: bigint; word: number; order: number }[] = [];
  events.forEach((e, i) => words.push({ units: e.units, word: tdc1Word(e.units, false, e.pattern), order: i * 2 }));
  let ei = 0;
  for (let b = ((startUnits / half) + 1n) * half; b + BigInt(TDC1_MARKER_LATENCY_UNITS) <= endUnits; b += half) {
    // Any event in the half period [b - half, b) (counted from the start) suppresses the marker.
    while (ei < events.length && events[ei].units < b - half) ei++;
    const busy = ei < events.length && events[ei].units < b && events[ei].units >= startUnits;
    if (!busy) {
      const t = b + BigInt(TDC1_MARKER_LATENCY_UNITS);
      // Placed after the events of the same time.
      const after = events.filter((e) => e.units <= t).length;
      words.push({ units: t, word: tdc1Word(t, true, TDC1_MARKER_PATTERN), order: after * 2 - 1 + 0.5 });
    }
  }
  words.sort((a, b) => (a.units < b.units ? -1 : a.units > b.units ? 1 : a.order - b.order));
  const out = new Uint8Array(words.length * 4);
  const dv = new DataView(out.buffer);
  words.forEach((w, i) => dv.setUint32(i * 4, w.word, true));
  return out;
}

/**
 * Streaming encoder (the emulated TDC1's): `push` events in time order (chunks of any size),
 * `advanceTo(units)` to emit the time-keeping words due up to a time with no events. Produces the
 * same words as encodeTdc1Slow (a test checks it).
 */
export class Tdc1Encoder {
  /** Index of the next half-period boundary whose marker is not decided yet. */
  private k: bigint;
  /** Half periods (index) that had an event, not yet pruned. */
  private halves: bigint[] = [];
  private readonly half = BigInt(TDC1_HALF_UNITS);
  private readonly lat = BigInt(TDC1_MARKER_LATENCY_UNITS);

  constructor(startUnits: bigint) {
    this.k = startUnits / this.half + 1n;
  }

  /** Markers with time < t (or <= t when `inclusive`), in order. */
  private markers(t: bigint, inclusive: boolean, out: number[]): void {
    for (;;) {
      const m = this.k * this.half + this.lat;
      if (inclusive ? m > t : m >= t) return;
      const before = this.k - 1n;
      while (this.halves.length && this.halves[0] < before) this.halves.shift();
      if (!(this.halves.length && this.halves[0] === before)) out.push(tdc1Word(m, true, TDC1_MARKER_PATTERN));
      this.k++;
    }
  }

  /** Encodes events (times in units, sorted; patterns 1..15) into words, markers interleaved. */
  push(units: ArrayLike<bigint>, pattern: ArrayLike<number>, out: number[] = []): number[] {
    for (let i = 0; i < units.length; i++) {
      const t = units[i];
      this.markers(t, false, out);
      out.push(tdc1Word(t, false, pattern[i]));
      const h = t / this.half;
      if (this.halves[this.halves.length - 1] !== h) this.halves.push(h);
    }
    return out;
  }

  /** Emits the time-keeping words due up to `units` inclusive (no events until then). */
  advanceTo(units: bigint, out: number[] = []): number[] {
    this.markers(units, true, out);
    return out;
  }
}

/** Words (numbers) to little-endian bytes. */
export function tdc1Bytes(words: readonly number[]): Uint8Array {
  const out = new Uint8Array(words.length * 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < words.length; i++) dv.setUint32(i * 4, words[i], true);
  return out;
}

export interface Tdc1DecoderOptions {
  /** A step under fastFactor x the learned mean step is accepted at once (default 32). */
  fastFactor?: number;
  /** Words after a large step that must continue with small steps (default 10). */
  lookaheadWords?: number;
  /** How many words past a bad one a shifted phase may start (default 4). */
  maxSkipWords?: number;
  /** Accepted words held back (not yet emitted) so a resync can give them up (default 2). */
  holdWords?: number;
}

export interface Tdc1DecoderStats {
  words: number;
  tags: number;
  /** Time-keeping (flagged) words. */
  markers: number;
  /** Re-alignments after a slip. */
  resyncs: number;
  /** Bytes given up by re-alignments and trailing partial words. */
  discardedBytes: number;
  /** Event words with an empty pattern. */
  badWords: number;
  /** Large steps accepted for want of evidence either way (rate drops). */
  longSteps: number;
}

interface Held {
  pos: number;
  raw: number;
  units: number;
  word: number;
}

/**
 * The TDC1 stream decoder (see the module comment). `push` returns the tags decided so far; up to
 * `holdWords` accepted words and a look-ahead's worth of bytes wait inside until more data comes
 * or `flush()` (end of stream).
 */
export class Tdc1Decoder {
  readonly stats: Tdc1DecoderStats = { words: 0, tags: 0, markers: 0, resyncs: 0, discardedBytes: 0, badWords: 0, longSteps: 0 };
  private buf = new Uint8Array(0);
  /** Next undecided byte in `buf`. */
  private p = 0;
  private held: Held[] = [];
  /** The last emitted word (raw 27-bit time and unwrapped units); undefined before the first. */
  private last: { raw: number; units: number; word: number } | undefined;
  private meanStep = MASK / 32;
  private seq = 0;
  private readonly fast: number;
  private readonly look: number;
  private readonly skip: number;
  private readonly hold: number;
  // Output of the current call.
  private outT: number[] = [];
  private outC: number[] = [];
  private events: TagEvent[] = [];

  constructor(opts: Tdc1DecoderOptions = {}) {
    this.fast = opts.fastFactor ?? 32;
    this.look = opts.lookaheadWords ?? 10;
    this.skip = opts.maxSkipWords ?? 4;
    this.hold = opts.holdWords ?? 2;
  }

  /** Bytes received but not decided yet (held words, look-ahead, a partial word). */
  get pendingBytes(): number {
    return this.buf.length - (this.held.length ? this.held[0].pos : this.p);
  }

  push(chunk: Uint8Array): TagStreamBatch {
    if (chunk.length) {
      const keep = this.held.length ? this.held[0].pos : this.p;
      const rest = this.buf.length - keep;
      const nb = new Uint8Array(rest + chunk.length);
      nb.set(this.buf.subarray(keep));
      nb.set(chunk, rest);
      for (const h of this.held) h.pos -= keep;
      this.p -= keep;
      this.buf = nb;
    }
    this.run(false);
    return this.take();
  }

  /** End of the stream: decides everything left; a trailing partial word is an ERROR event. */
  flush(): TagStreamBatch {
    this.run(true);
    while (this.held.length) this.emit(this.held.shift()!);
    const left = this.buf.length - this.p;
    if (left > 0) {
      this.stats.discardedBytes += left;
      this.events.push({ type: TAG_TYPE.ERROR, index: this.outT.length, channel: -1, timePs: this.lastPs(), missedEvents: 1 });
    }
    this.buf = new Uint8Array(0);
    this.p = 0;
    return this.take();
  }

  private lastPs(): bigint {
    return this.last ? BigInt(this.last.units) * BigInt(TDC1_UNIT_PS) : 0n;
  }

  private word(pos: number): number {
    const b = this.buf;
    return (b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16) | (b[pos + 3] << 24)) >>> 0;
  }

  private get limit(): number {
    return Math.min(MASK, Math.max(64, this.fast * this.meanStep));
  }

  /** The reference an accepted word steps from: the last held word, else the last emitted. */
  private ref(dropHeld = 0): { raw: number; units: number; word: number } | undefined {
    const k = this.held.length - dropHeld;
    return k > 0 ? this.held[k - 1] : this.last;
  }

  /**
   * The chain of words from `pos` (at most 3 x `count` words, until `count` event-to-event
   * steps): its first step (from raw time `from`); its score, the second largest event-to-event
   * step (one quiet spell inside the window is allowed); `steps`, how many of those it saw; and
   * `badMarkers`, time-keeping words not at their place (the marker latency after a half-period
   * boundary; in a misaligned stream the flag bit is just another random bit). Steps between an event and a time-keeping word say nothing and do not count.
   */
  private chain(pos: number, from: number, count: number): Chain {
    const c: Chain = { first: 0, score: 0, steps: 0, badMarkers: 0, short: false };
    if (pos + 4 > this.buf.length) return { ...c, short: true };
    let w = this.word(pos);
    c.first = ((w >>> 5) - from) & MASK;
    let top = 0;
    for (let j = 1; c.steps < count && j < 3 * count; j++) {
      const at = pos + 4 * j;
      if (at + 4 > this.buf.length) return { ...c, short: true };
      const next = this.word(at);
      const st = ((next >>> 5) - (w >>> 5)) & MASK;
      if (!((w | next) & TDC1_FLAG)) {
        if (st > top) {
          c.score = top;
          top = st;
        } else if (st > c.score) c.score = st;
        c.steps++;
      } else if (next & TDC1_FLAG && !markerInPlace(next)) c.badMarkers++;
      w = next;
    }
    return c;
  }

  private accept(pos: number, w: number, step: number, learn: boolean): void {
    const raw = w >>> 5;
    const r = this.ref();
    const units = r ? r.units + step : raw;
    // Robust learning: a step counts at most 4x the mean (E[min(X, 4 mean)] = 0.98 mean for
    // exponential steps), so a few random words that slip under the limit cannot inflate it.
    if (learn && r) this.meanStep += (Math.min(step, 4 * this.meanStep) - this.meanStep) / 16;
    this.held.push({ pos, raw, units, word: w });
    if (this.held.length > this.hold) this.emit(this.held.shift()!);
  }

  private run(final: boolean): void {
    const n = this.buf.length;
    // Look-ahead a large step may need: the skip, a straddling word, the chain, slack for offsets.
    const need = 4 * (2 * this.skip + 3 * this.look + 3);
    while (this.p + 4 <= n) {
      const pos = this.p;
      const w = this.word(pos);
      const raw = w >>> 5;
      const r = this.ref();
      if (!r) {
        this.accept(pos, w, 0, false);
        this.p += 4;
        continue;
      }
      const step = (raw - r.raw) & MASK;
      if (step <= this.limit) {
        this.accept(pos, w, step, true);
        this.p += 4;
        continue;
      }
      // A large step: a quiet spell, a rate change or a slip. Decide with look-ahead.
      if (!final && pos + need > n) break;
      if (this.decide(pos, r.raw)) continue;
      // No evidence either way: accept, and let the learned step grow towards the new rate, at
      // most 8x a word, so that one quiet spell does not open the fast path to any word.
      this.stats.longSteps++;
      this.meanStep += (Math.min(step, 8 * this.meanStep) - this.meanStep) / 4;
      this.accept(pos, w, step, false);
      this.p += 4;
    }
  }

  /**
   * After a large step at `pos`: compares the stream as it is (the words from `pos`, or up to
   * `maxSkipWords` later, on) with the stream shifted by 2, 1 or 3 bytes, each over `lookaheadWords` words, and takes the smoothest
   * (smallest largest step) if it is within the fast limit. Why smoothest and not merely smooth
   * enough: a 2-byte-shifted stream of dense words is itself increasing (its high half is the
   * next word's low time bits) with steps ~2^11 times the real ones, so after a limit was raised
   * by a quiet spell both can pass; the real phase is always by far the smoother.
   *
   * Re-aligning: the slip lies after the kept words and before the end of the failing word at
   * `pos`, so a new-phase word starting before `pos + 4` may straddle it (its high bytes real,
   * enough to pass a time check): the new phase is taken from `pos + 4` on. Held words are given
   * up only when the new phase does not continue from the last of them (it is then taken for a
   * word that straddled the slip and slipped under the fast limit); keeping them keeps the time
   * base when the slip falls in a quiet spell, where dropping time-keeping words would lose whole
   * periods. Returns false when no candidate is smooth enough.
   */
  private decide(pos: number, fromRaw: number): boolean {
    const lim = this.limit;
    const w0 = this.word(pos);
    if (w0 & TDC1_FLAG) {
      // A time-keeping word where one belongs (its latency after a half-period boundary) is a
      // quiet spell going on: take it as it comes, and judge the words after it when they come.
      const st = ((w0 >>> 5) - fromRaw) & MASK;
      if (markerInPlace(w0)) {
        this.accept(pos, w0, st, false);
        this.p += 4;
        return true;
      }
    }
    const smooth = (c: Chain) => !c.short && c.steps >= this.look && c.score <= lim && !c.badMarkers;
    // The stream as it is: from `pos`, or a few words on (a quiet spell may hold several large
    // steps, e.g. time-keeping words, before the words come dense again).
    let here = this.chain(pos, fromRaw, this.look);
    for (let j = 1, prev = this.word(pos) >>> 5; j <= this.skip && !smooth(here); j++) {
      const c = this.chain(pos + 4 * j, prev, this.look);
      if (smooth(c)) here = c;
      prev = this.word(pos + 4 * j) >>> 5;
    }
    let best: { score: number; drop: number; s: number; from: number } | undefined;
    for (let drop = 0; drop <= this.held.length && !best; drop++) {
      const base = this.ref(drop);
      if (!base) break;
      const from = drop > 0 ? this.held[this.held.length - drop].pos : pos;
      for (const d of [2, 1, 3]) {
        const x0 = pos + 4 + ((((from + d - pos - 4) % 4) + 4) % 4);
        for (let m = 0; m <= this.skip; m++) {
          const s = x0 + 4 * m;
          const c = this.chain(s, base.raw, this.look);
          // The first step may be a quiet spell's (up to a half period and the marker latency).
          if (!smooth(c) || c.first > Math.max(lim, TDC1_HALF_UNITS + 2 * TDC1_MARKER_LATENCY_UNITS)) continue;
          if (!best || c.score < best.score) best = { score: c.score, drop, s, from };
        }
      }
    }
    // As it is, the stream goes on smoothly, or is a plausible quiet spell (too few events to
    // judge, time-keeping words a half period apart), or ends: no evidence of a slip, unless a
    // shifted phase is far smoother (a real slip makes the as-is stream ~2^8..2^11x rougher).
    const quiet = here.short || (here.steps < this.look && !here.badMarkers);
    if ((smooth(here) && !(best && here.score > 64 * Math.max(1, best.score))) || (quiet && !smooth(here))) {
      const w = this.word(pos);
      this.accept(pos, w, ((w >>> 5) - fromRaw) & MASK, false);
      this.p += 4;
      return true;
    }
    if (!best) return false;
    this.held.length -= best.drop;
    while (this.held.length) this.emit(this.held.shift()!);
    const lost = best.s - best.from;
    this.stats.resyncs++;
    this.stats.discardedBytes += lost;
    this.events.push({ type: TAG_TYPE.ERROR, index: this.outT.length, channel: -1, timePs: this.lastPs(), missedEvents: Math.ceil(lost / 4) });
    this.p = best.s;
    return true;
  }

  private emit(h: Held): void {
    this.stats.words++;
    this.last = { raw: h.raw, units: h.units, word: h.word };
    if (h.word & TDC1_FLAG) {
      this.stats.markers++;
      return;
    }
    const pattern = h.word & 0xf;
    if (!pattern) {
      this.stats.badWords++;
      this.events.push({ type: TAG_TYPE.ERROR, index: this.outT.length, channel: -1, timePs: BigInt(h.units) * BigInt(TDC1_UNIT_PS), missedEvents: 1 });
      return;
    }
    for (let c = 0; c < 4; c++) {
      if (pattern & (1 << c)) {
        this.outT.push(h.units);
        this.outC.push(c);
      }
    }
  }

  private take(): TagStreamBatch {
    const n = this.outT.length;
    const timePs = new BigInt64Array(n);
    if (LITTLE) {
      // units x 2000 as two exact 32-bit halves: no BigInt per tag.
      const t32 = new Int32Array(timePs.buffer);
      for (let i = 0; i < n; i++) {
        const u = this.outT[i];
        const uh = Math.floor(u / 4294967296);
        const ul = u - uh * 4294967296;
        const lo = ul * TDC1_UNIT_PS;
        const carry = Math.floor(lo / 4294967296);
        t32[2 * i] = (lo - carry * 4294967296) | 0;
        t32[2 * i + 1] = (uh * TDC1_UNIT_PS + carry) | 0;
      }
    } else {
      for (let i = 0; i < n; i++) timePs[i] = BigInt(this.outT[i]) * BigInt(TDC1_UNIT_PS);
    }
    const batch: TagStreamBatch = { seq: this.seq++, timePs, channel: Uint8Array.from(this.outC), events: this.events };
    this.stats.tags += n;
    this.outT = [];
    this.outC = [];
    this.events = [];
    return batch;
  }
}
