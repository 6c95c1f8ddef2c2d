/**
 * Sifting (BB84 + decoy), per party: Bob announces, Alice matches and replies, both extract.
 * Native implementation in native/core/src/sift.rs (wire formats drawn there).
 *
 *   Bob                                  Alice
 *   bobAnnounce(detections) ──announcement──▶ aliceSift(announcement, choices)
 *                            ◀──reply──────────   (reply + Alice's sifted strings, one pass)
 *   extractSifted(bob.events, reply)
 *
 * `aliceMatch` + `extractSifted(alice.events, reply)` still work and give Alice the same strings
 * in two passes; `aliceSift` is the one-pass form (about twice as fast for her).
 *
 * Concurrency: every call is synchronous and self-contained (no shared state); call from any
 * worker. Speed: hundreds of millions of detections/s (bench/sift.bench.ts), so batches of
 * millions run on the JS thread in milliseconds.
 * Key material: `events.bits` and the sifted `z`/`x` strings are secret; wipe them (`wipe()`)
 * when done. Bases, announcements, replies and intensities are public.
 */
import { randomBytes } from 'node:crypto';
import type { DetectorMapping } from '../protocol/choices.ts';
import { native } from './native.ts';
import { callNative } from './native-call.ts';

/** Bob's detections after timing: pulse index (integer) and channel per detection, sorted by pulse. */
export interface PulseDetections {
  pulse: Float64Array;
  channel: Uint8Array;
}

/** One party's per-event view: `count` events, bit (secret) and basis (public), LSB-first packed. */
export interface PartyEvents {
  count: number;
  bits: Uint8Array;
  bases: Uint8Array;
}

export interface SiftStats {
  detections: number;
  unmapped: number;
  events: number;
  doubleClicks: number;
  multiClicks: number;
}

export interface BobAnnounceResult {
  announcement: Uint8Array;
  events: PartyEvents;
  stats: SiftStats;
}

export interface AliceMatchResult {
  reply: Uint8Array;
  events: PartyEvents;
  matched: number;
}

/** Sifted bits by basis in event order; one intensity tag (0 mu, 1 nu, 2 omega) per bit. */
export interface Sifted {
  z: Uint8Array;
  zBits: number;
  zIntensity: Uint8Array;
  x: Uint8Array;
  xBits: number;
  xIntensity: Uint8Array;
  nZ: [number, number, number];
  nX: [number, number, number];
}

/** The 256-entry channel -> (basis<<1 | bit) table the core takes; 255 = not a detector. */
export function channelMap(mapping: readonly DetectorMapping[]): Uint8Array {
  const m = new Uint8Array(256).fill(255);
  for (const d of mapping) m[d.channel] = (d.basis << 1) | d.bit;
  return m;
}

/**
 * Bob: group by pulse, squash double/multi clicks (random bit / random basis+bit, counted),
 * announce. `squashSeed` (32 bytes) defaults to fresh CSPRNG bytes; pass one only in tests.
 */
export function bobAnnounce(det: PulseDetections, mapping: readonly DetectorMapping[] | Uint8Array,
  squashSeed: Uint8Array = randomBytes(32)): BobAnnounceResult {
  const map = mapping instanceof Uint8Array ? mapping : channelMap(mapping);
  const r = callNative(() => native().siftBobAnnounce(det.pulse, det.channel, map, squashSeed));
  return {
    announcement: r.announcement,
    events: { count: r.count, bits: r.bits, bases: r.bases },
    stats: r.stats,
  };
}

/** Alice: `choices[p - firstPulse]` is her packed choice byte for pulse p (src/protocol/choices.ts). */
export function aliceMatch(announcement: Uint8Array, choices: Uint8Array, firstPulse = 0): AliceMatchResult {
  const r = callNative(() => native().siftAliceMatch(announcement, choices, firstPulse));
  return { reply: r.reply, events: { count: r.count, bits: r.bits, bases: r.bases }, matched: r.matched };
}

export interface AliceSiftResult {
  reply: Uint8Array;
  /** Announced events and how many of them matched in basis. */
  count: number;
  matched: number;
  /** Alice's sifted strings (secret bits: wipe when done). */
  sifted: Sifted;
}

/** Alice's whole sifting in one pass: the reply for Bob and her own sifted strings. */
export function aliceSift(announcement: Uint8Array, choices: Uint8Array, firstPulse = 0): AliceSiftResult {
  const r = callNative(() => native().siftAlice(announcement, choices, firstPulse));
  return { reply: r.reply, count: r.count, matched: r.matched, sifted: sifted(r.sifted) };
}

type NativeSifted = { z: Uint8Array; zBits: number; zIntensity: Uint8Array; x: Uint8Array; xBits: number;
  xIntensity: Uint8Array; nZ: number[]; nX: number[] };

function sifted(r: NativeSifted): Sifted {
  return {
    z: r.z, zBits: r.zBits, zIntensity: r.zIntensity,
    x: r.x, xBits: r.xBits, xIntensity: r.xIntensity,
    nZ: r.nZ as [number, number, number], nX: r.nX as [number, number, number],
  };
}

/** Forces the portable (non-BMI2) bit compression in the native sifting; for tests. */
export function siftForcePortable(on: boolean): void {
  native().siftForcePortable(on);
}

/** True when the native sifting uses BMI2 `pext` on this CPU. */
export function siftFastPext(): boolean {
  return native().siftFastPext();
}

/** Both parties: keep matched events, split by basis, tag each bit with its intensity. */
export function extractSifted(events: PartyEvents, reply: Uint8Array): Sifted {
  return sifted(callNative(() => native().siftExtract(events.bits, events.bases, events.count, reply)));
}

/** Errors per intensity between two same-basis strings of `intensity.length` bits (X disclosure). */
export function errorsByIntensity(a: Uint8Array, b: Uint8Array, intensity: Uint8Array): [number, number, number] {
  return callNative(() => native().siftErrorsByIntensity(a, b, intensity)) as [number, number, number];
}
