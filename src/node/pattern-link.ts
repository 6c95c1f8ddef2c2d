/**
 * Alice's intensity pattern over the authenticated classical channel: Bob's clock sync asks,
 * Alice's node answers from her record. This is how a real link synchronises (there is no shared
 * pattern seed between the two hosts), and the emulated runs use the same path.
 *
 * Why this is safe to send: the intensity of every pulse Bob detected is announced in the decoy
 * protocol anyway (sifting does), and the channel is authenticated, so only Bob's node can ask.
 * Why it is held back: decoy-state security assumes Eve cannot tell signal from decoy while the
 * photons are in flight, so Alice reveals a pulse's class only once it is older than `holdbackS`
 * (default 1 ms: longer than the flight time of any fibre a QKD link uses, 200 km = 1 ms) behind
 * her emission horizon; pulses newer than that come back as unknown (255, scored 0 by the sync).
 * Bases and bit values never leave Alice: the record below is read for the intensity only.
 *
 * Wire: `pattern` request `{kind: 'range', first, count}` or `{kind: 'at', pulses}` (pulse indices
 * as little-endian f64 bytes: the channel's msgpack carries bytes, not typed arrays); answer
 * `{classes}` with 2 bits per pulse (LSB first, 3 = unknown).
 */
import { ProtocolError } from '../errors.ts';
import type { AlicePattern, PatternNeed, RemoteAlicePattern } from '../timing/pattern.ts';
import type { PeerRequest } from './postprocess.ts';

/** Largest number of pulses one request may cover (an acquisition asks for ~7e6 at 1 GHz). */
export const MAX_PATTERN_PULSES = 1 << 24;

const UNKNOWN_CODE = 3;

/** Packs classes 2 bits each (LSB first); anything above 2 becomes "unknown". */
export function packClasses(cls: Uint8Array): Uint8Array {
  const out = new Uint8Array((cls.length + 3) >> 2);
  for (let i = 0; i < cls.length; i++) {
    const c = cls[i] > 2 ? UNKNOWN_CODE : cls[i];
    out[i >> 2] |= c << ((i & 3) * 2);
  }
  return out;
}

export function unpackClasses(packed: Uint8Array, n: number): Uint8Array {
  if (packed.length !== (n + 3) >> 2) throw new ProtocolError('BAD_PATTERN_ANSWER', `pattern answer has ${packed.length} bytes for ${n} pulses (expected ${(n + 3) >> 2}): peer software mismatch.`);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const c = (packed[i >> 2] >> ((i & 3) * 2)) & 3;
    out[i] = c === UNKNOWN_CODE ? 255 : c;
  }
  return out;
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

export interface PatternServerOptions {
  /** Alice's record of her source's intensity choices. */
  record: AlicePattern;
  /** Pulses emitted so far (index of the next pulse), from her source's clock. */
  emittedPulses(): number;
  /** Alice's repetition rate, Hz (to turn the hold-back into pulses). */
  repRateHz: number;
  /** Reveal only pulses at least this old, seconds (default 1e-3). */
  holdbackS?: number;
}

export interface PatternServerStats {
  requests: number;
  pulsesAnswered: number;
  /** Pulses asked for but not revealed (not yet emitted or still within the hold-back). */
  pulsesWithheld: number;
}

/** Alice's side: answers one `pattern` request (throws a ProtocolError on a malformed one). */
export function patternServer(o: PatternServerOptions): { answer(p: Record<string, unknown>): Record<string, unknown>; stats: PatternServerStats } {
  const stats: PatternServerStats = { requests: 0, pulsesAnswered: 0, pulsesWithheld: 0 };
  const holdback = Math.ceil((o.holdbackS ?? 1e-3) * o.repRateHz);
  return {
    stats,
    answer(p) {
      stats.requests++;
      // Everything at or beyond `limit` is withheld.
      const limit = o.emittedPulses() - holdback;
      let cls: Uint8Array;
      if (p.kind === 'range') {
        const first = p.first, count = p.count;
        if (typeof first !== 'number' || typeof count !== 'number' || !Number.isSafeInteger(first) || !Number.isSafeInteger(count) || count < 0) {
          throw new ProtocolError('BAD_PATTERN_REQUEST', 'pattern range request needs integer `first` and `count` >= 0.');
        }
        if (count > MAX_PATTERN_PULSES) throw new ProtocolError('BAD_PATTERN_REQUEST', `pattern request for ${count} pulses exceeds the limit of ${MAX_PATTERN_PULSES}: lower maxOffsetPs of the sync.`);
        const lo = Math.max(first, 0), hi = Math.min(first + count, Math.max(limit, lo));
        cls = new Uint8Array(count).fill(255);
        if (hi > lo) cls.set(o.record.intensities(lo, hi - lo), lo - first);
        stats.pulsesWithheld += count - Math.max(0, hi - lo);
      } else if (p.kind === 'at') {
        if (!(p.pulses instanceof Uint8Array) || p.pulses.length % 8 !== 0) throw new ProtocolError('BAD_PATTERN_REQUEST', 'pattern `at` request needs `pulses` as bytes of little-endian f64 pulse indices.');
        const pulses = f64FromBytes(p.pulses);
        if (pulses.length > MAX_PATTERN_PULSES) throw new ProtocolError('BAD_PATTERN_REQUEST', `pattern request for ${pulses.length} pulses exceeds the limit of ${MAX_PATTERN_PULSES}.`);
        const ok = new Float64Array(pulses.length);
        for (let i = 0; i < pulses.length; i++) {
          const q = pulses[i];
          // Unknown for anything not a pulse index that may be revealed now.
          ok[i] = Number.isInteger(q) && q >= 0 && q < limit ? q : -1;
          if (ok[i] < 0) stats.pulsesWithheld++;
        }
        cls = o.record.intensitiesAt ? o.record.intensitiesAt(ok) : Uint8Array.from(ok, (q) => (q < 0 ? 255 : o.record.intensities(q, 1)[0]));
        for (let i = 0; i < ok.length; i++) if (ok[i] < 0) cls[i] = 255;
      } else {
        throw new ProtocolError('BAD_PATTERN_REQUEST', `pattern request kind must be 'range' or 'at', got ${JSON.stringify(p.kind)}.`);
      }
      stats.pulsesAnswered += cls.length;
      return { classes: packClasses(cls) };
    },
  };
}

/** Bob's side: the sync's pattern, asked of Alice's node through `request`. */
export function remotePattern(request: PeerRequest, meanPhotons: readonly number[]): RemoteAlicePattern {
  return {
    meanPhotons,
    async fetch(need: PatternNeed): Promise<Uint8Array> {
      const n = need.kind === 'range' ? need.count : need.pulses.length;
      const r = await request('pattern', need.kind === 'range' ? { kind: 'range', first: need.first, count: need.count } : { kind: 'at', pulses: f64Bytes(need.pulses) });
      if (!(r.classes instanceof Uint8Array)) throw new ProtocolError('BAD_PATTERN_ANSWER', "Alice's node answered a pattern request without `classes`: peer software mismatch.");
      return unpackClasses(r.classes, n);
    },
  };
}
