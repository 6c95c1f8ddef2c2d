/**
 * Alice's intensity pattern over the authenticated classical channel: Bob's clock sync asks,
 * Alice's node answers from her record, which is her source's: the intensity classes its RNG
 * applied, read back over its wire protocol (`readClasses`), and its pulse counter as her emission
 * horizon. This is how a real link synchronises (no shared pattern or seed between the hosts), and
 * `qkd run --emulated` uses the same path.
 *
 * Why this is safe to send: the intensity of every pulse Bob detected is announced in the decoy
 * protocol anyway (sifting does), and the channel is authenticated, so only Bob's node can ask.
 * Why it is held back: decoy-state security assumes Eve cannot tell signal from decoy while she
 * can still act on the pulse. Bob's sync accepts any delay up to the fibre delay plus its offset
 * window (±`SYNC_MAX_OFFSET_PS`), so an eavesdropper with a delay line may hold a pulse that long
 * and still have it counted. Alice therefore reveals a pulse's class only once it is older than
 * `revealHoldbackPs` (fibre delay + sync window + margin) behind her source's emission horizon;
 * younger pulses come back as unknown (255, scored 0 by the sync). Bases and bit values never
 * leave Alice: the source is asked for the intensity classes only.
 *
 * Wire: `pattern` request `{kind: 'range', first, count}` or `{kind: 'at', pulses}` (pulse indices
 * as little-endian f64 bytes: the channel's msgpack carries bytes, not typed arrays); answer
 * `{classes}` with 2 bits per pulse (LSB first, 3 = unknown).
 */
import { ProtocolError } from '../errors.ts';
import type { PatternNeed, RemoteAlicePattern } from '../timing/pattern.ts';
import { packClasses, unpackClasses as unpackClassBits } from '../protocol/choices.ts';
import type { PeerRequest } from './postprocess.ts';

export { packClasses };

/** Largest number of pulses one request may cover (an acquisition asks for ~7e6 at 1 GHz). */
export const MAX_PATTERN_PULSES = 1 << 24;

/** Half-width of the clock sync's offset search (ps): Bob accepts offsets up to this far off. */
export const SYNC_MAX_OFFSET_PS = 1.5e9;
/** Margin on top of fibre delay and sync window: tagger offsets, emulation pacing, processing. */
export const HOLDBACK_MARGIN_PS = 0.5e9;
/** Group delay of standard single-mode fibre, ps per km (group index 1.468 at 1550 nm). */
export const FIBRE_PS_PER_KM = (1e12 * 1.468) / 299792.458;

/**
 * The longest delay the link accepts, in ps: the flight time through `distanceKm` of fibre, plus
 * the sync's offset window, plus a margin. Alice reveals no class younger than this.
 */
export function revealHoldbackPs(distanceKm: number): number {
  return Math.ceil(distanceKm * FIBRE_PS_PER_KM) + SYNC_MAX_OFFSET_PS + HOLDBACK_MARGIN_PS;
}

export function unpackClasses(packed: Uint8Array, n: number): Uint8Array {
  if (packed.length !== (n + 3) >> 2) throw new ProtocolError('BAD_PATTERN_ANSWER', `pattern answer has ${packed.length} bytes for ${n} pulses (expected ${(n + 3) >> 2}): peer software mismatch.`);
  return unpackClassBits(packed, n);
}

/** Little-endian bytes of an f64 array (this machine's order is checked once). */
export function f64Bytes(a: Float64Array): Uint8Array {
  return LITTLE ? new Uint8Array(a.buffer, a.byteOffset, a.byteLength) : swap8(new Uint8Array(a.slice().buffer));
}

export function f64FromBytes(b: Uint8Array): Float64Array {
  const copy = new Uint8Array(b); // a copy (Buffer#slice would share), aligned, and ours
  return new Float64Array((LITTLE ? copy : swap8(copy)).buffer, 0, copy.length / 8);
}

const LITTLE = new Uint8Array(Float64Array.of(1).buffer)[7] === 0x3f;

function swap8(b: Uint8Array): Uint8Array {
  for (let i = 0; i < b.length; i += 8) b.subarray(i, i + 8).reverse();
  return b;
}

/** Alice's record as the pattern server reads it: her source's read-back and pulse counter. */
export interface PatternRecord {
  /** Intensity class (0 signal, 1 decoy, 2 vacuum) of each listed pulse (ascending, emitted). */
  readClasses(pulses: Float64Array): Promise<Uint8Array>;
  /** Pulses emitted so far (the index of the next pulse): the source's own counter. */
  emittedPulses(): Promise<number>;
}

export interface PatternServerOptions {
  record: PatternRecord;
  /** Alice's repetition rate, Hz (to turn the hold-back into pulses). */
  repRateHz: number;
  /** Reveal only pulses at least this old, ps: `revealHoldbackPs(distanceKm)`. */
  holdbackPs: number;
}

export interface PatternServerStats {
  requests: number;
  pulsesAnswered: number;
  /** Pulses asked for but not revealed (not yet emitted or still within the hold-back). */
  pulsesWithheld: number;
}

/** Alice's side: answers one `pattern` request (rejects with a ProtocolError on a malformed one). */
export function patternServer(o: PatternServerOptions): { answer(p: Record<string, unknown>): Promise<Record<string, unknown>>; stats: PatternServerStats } {
  const stats: PatternServerStats = { requests: 0, pulsesAnswered: 0, pulsesWithheld: 0 };
  const holdback = Math.ceil((o.holdbackPs / 1e12) * o.repRateHz);
  return {
    stats,
    async answer(p) {
      stats.requests++;
      let cls: Uint8Array;
      if (p.kind === 'range') {
        const first = p.first, count = p.count;
        if (typeof first !== 'number' || typeof count !== 'number' || !Number.isSafeInteger(first) || !Number.isSafeInteger(count) || count < 0) {
          throw new ProtocolError('BAD_PATTERN_REQUEST', 'pattern range request needs integer `first` and `count` >= 0.');
        }
        if (count > MAX_PATTERN_PULSES) throw new ProtocolError('BAD_PATTERN_REQUEST', `pattern request for ${count} pulses exceeds the limit of ${MAX_PATTERN_PULSES}: lower maxOffsetPs of the sync.`);
        // Everything at or beyond `limit` is withheld; the horizon is read after the request came.
        const limit = (await o.record.emittedPulses()) - holdback;
        const lo = Math.max(first, 0), hi = Math.min(first + count, Math.max(limit, lo));
        cls = new Uint8Array(count).fill(255);
        if (hi > lo) {
          const pulses = new Float64Array(hi - lo);
          for (let i = 0; i < pulses.length; i++) pulses[i] = lo + i;
          cls.set(await o.record.readClasses(pulses), lo - first);
        }
        stats.pulsesWithheld += count - Math.max(0, hi - lo);
      } else if (p.kind === 'at') {
        if (!(p.pulses instanceof Uint8Array) || p.pulses.length % 8 !== 0) throw new ProtocolError('BAD_PATTERN_REQUEST', 'pattern `at` request needs `pulses` as bytes of little-endian f64 pulse indices.');
        const pulses = f64FromBytes(p.pulses);
        if (pulses.length > MAX_PATTERN_PULSES) throw new ProtocolError('BAD_PATTERN_REQUEST', `pattern request for ${pulses.length} pulses exceeds the limit of ${MAX_PATTERN_PULSES}.`);
        const limit = (await o.record.emittedPulses()) - holdback;
        // Only pulse indices that may be revealed now go to the source (sorted, distinct).
        const ok = [...new Set(Array.from(pulses).filter((q) => Number.isInteger(q) && q >= 0 && q < limit))].sort((a, b) => a - b);
        const got = ok.length ? await o.record.readClasses(Float64Array.from(ok)) : new Uint8Array(0);
        const byPulse = new Map<number, number>();
        ok.forEach((q, i) => byPulse.set(q, got[i]));
        cls = new Uint8Array(pulses.length);
        for (let i = 0; i < pulses.length; i++) {
          const c = byPulse.get(pulses[i]);
          cls[i] = c ?? 255;
          if (c === undefined) stats.pulsesWithheld++;
        }
      } else {
        throw new ProtocolError('BAD_PATTERN_REQUEST', `pattern request kind must be 'range' or 'at', got ${JSON.stringify(p.kind)}.`);
      }
      stats.pulsesAnswered += cls.length;
      return { classes: packClasses(cls) };
    },
  };
}

/** What a failed pattern request did (for the node's log and counters). */
export interface PatternFailure {
  kind: PatternNeed['kind'];
  pulses: number;
  error: unknown;
}

/**
 * Bob's side: the sync's pattern, asked of Alice's node through `request`.
 *
 * A request that fails (timeout, channel down, Alice's handler refused) is not fatal: the sync
 * gets every asked pulse as unknown (255), which is "no information" everywhere it scores — a
 * pattern check is skipped (`checksSkipped`), an acquisition finds no peak and is retried on the
 * next data — and `onFailure` reports it. A malformed answer (peer software mismatch) still
 * throws: that is not transient.
 */
export function remotePattern(request: PeerRequest, meanPhotons: readonly number[], onFailure?: (f: PatternFailure) => void): RemoteAlicePattern {
  return {
    meanPhotons,
    async fetch(need: PatternNeed): Promise<Uint8Array> {
      const n = need.kind === 'range' ? need.count : need.pulses.length;
      let r: Record<string, unknown>;
      try {
        r = await request('pattern', need.kind === 'range' ? { kind: 'range', first: need.first, count: need.count } : { kind: 'at', pulses: f64Bytes(need.pulses) });
      } catch (error) {
        onFailure?.({ kind: need.kind, pulses: n, error });
        return new Uint8Array(n).fill(255);
      }
      if (!(r.classes instanceof Uint8Array)) throw new ProtocolError('BAD_PATTERN_ANSWER', "Alice's node answered a pattern request without `classes`: peer software mismatch.");
      return unpackClasses(r.classes, n);
    },
  };
}
