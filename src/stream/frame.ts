/**
 * Wire format of detection batches on the event stream (one ZeroMQ multipart message per batch).
 *
 * ```
 *  frame 0  header   msgpack array (positional, version first, so a reader can refuse a version
 *                    before interpreting anything else):
 *                    [version=1, streamId: str, seq: uint, epochPs: int64, firstPs: int64,
 *                     count: uint, layout: uint, flags: uint, droppedBefore: uint,
 *                     events: [[type, index, channel, timePs: int64, missed], ...]]
 *  frame 1  data     count x 8 bytes, little-endian:
 *                      layout 1 TAGS_I64:   int64 time in ps relative to epochPs
 *                      layout 2 PULSES_F64: float64 pulse index (integer < 2^53)
 *                      layout 3 PULSES_U64: uint64 pulse index
 *  frame 2  channels count x 1 byte (input channel of each event)
 * ```
 * The typed-array bytes travel as their own frames (zeromq.js sends parts over 128 B without
 * copying, and msgpackr's typed-array extension would copy on decode). Times are relative to
 * `epochPs` so a producer can rebase a batch without touching every event; a tagger that
 * delivers absolute times sends epochPs = 0.
 * `seq` counts batches of one stream from 0 without gaps; the consumer detects lost, duplicated
 * and reordered batches from it. `flags` are the producer-side marks (FLAG below).
 */
import { Packr } from 'msgpackr';
import { ProtocolError } from '../errors.ts';
import type { TagEvent } from '../devices/types.ts';

export const STREAM_SCHEMA_VERSION = 1;

export const LAYOUT = { TAGS_I64: 1, PULSES_F64: 2, PULSES_U64: 3 } as const;
export type Layout = (typeof LAYOUT)[keyof typeof LAYOUT];

/** Marks on a batch. Low byte: set by the producer; second byte: set by the consumer. */
export const FLAG = {
  /** The tagger reported an overflow (lost tags) inside this batch (in-band record). */
  OVERFLOW: 1 << 0,
  /** The tagger reported missed events inside this batch. */
  MISSED_EVENTS: 1 << 1,
  /** The tagger reported an error record inside this batch. */
  TAGGER_ERROR: 1 << 2,
  /** The producer found the consumer's queue full (high-water mark) and had to wait. */
  BACKPRESSURE: 1 << 3,
  /** The producer dropped `droppedBefore` batches just before this one (HWM, drop policy). */
  DROPPED_BEFORE: 1 << 4,
  /** Consumer: batches are missing before this one (lost in transit or dropped). */
  GAP: 1 << 8,
  /** Consumer: this batch's seq is not after the last one (duplicate or reordered); not ingested. */
  REORDERED: 1 << 9,
  /** Consumer: the native ingest found events out of time / index order. */
  ORDER_VIOLATION: 1 << 10,
  /** Consumer: the stream restarted (seq back to 0); continuity with the earlier batches unknown. */
  RESTART: 1 << 11,
} as const;

/** Flags that make a batch unfit to be silently mixed into a block. */
export const TAINT_FLAGS = FLAG.OVERFLOW | FLAG.MISSED_EVENTS | FLAG.TAGGER_ERROR | FLAG.DROPPED_BEFORE |
  FLAG.GAP | FLAG.REORDERED | FLAG.ORDER_VIOLATION | FLAG.RESTART;

/**
 * Why a batch is unfit for a block, in words an operator can act on (for the block's abort reason,
 * the log and the alarm): each taint flag set, with the counts the batch carries.
 */
export function describeTaint(b: { seq: number; flags: number; missingBefore?: number; droppedBefore?: number }): string {
  const f = b.flags;
  const why: string[] = [];
  if (f & FLAG.OVERFLOW) why.push('the tagger overflowed (tags lost inside the device)');
  if (f & FLAG.MISSED_EVENTS) why.push('the tagger reported missed events');
  if (f & FLAG.TAGGER_ERROR) why.push('the tagger reported an error record');
  if (f & FLAG.DROPPED_BEFORE) why.push(`the producer dropped ${b.droppedBefore ?? '?'} batch(es) because post-processing fell behind (back-pressure)`);
  if (f & FLAG.GAP) why.push(`${b.missingBefore ?? '?'} batch(es) missing before it (dropped or lost in transit)`);
  if (f & FLAG.REORDERED) why.push('it arrived out of order or twice');
  if (f & FLAG.ORDER_VIOLATION) why.push('its events are out of time order');
  if (f & FLAG.RESTART) why.push('the stream restarted');
  return why.length ? `batch ${b.seq}: ${why.join('; ')}` : `batch ${b.seq}: clean`;
}

export interface FrameHeader {
  version: number;
  streamId: string;
  seq: number;
  /** Times in the data frame are relative to this (layout 1); 0n otherwise. */
  epochPs: bigint;
  /** Absolute time (ps) of the first event, or first pulse index for pulse layouts. */
  firstPs: bigint;
  count: number;
  layout: Layout;
  flags: number;
  droppedBefore: number;
  events: TagEvent[];
}

// int64AsType 'bigint': the two int64 fields come back exactly; small ints stay numbers.
const packr = new Packr({ useRecords: false, int64AsType: 'bigint' });

/** Encodes a header into a fresh Buffer (msgpackr reuses its own buffer between calls). */
export function encodeHeader(h: FrameHeader): Buffer {
  const ev = h.events.map((e) => [e.type, e.index, e.channel, BigInt.asIntN(64, e.timePs), e.missedEvents]);
  const packed = packr.pack([h.version, h.streamId, h.seq, BigInt.asIntN(64, h.epochPs), BigInt.asIntN(64, h.firstPs),
    h.count, h.layout, h.flags, h.droppedBefore, ev]);
  return Buffer.from(packed);
}

const toNum = (v: unknown): number => (typeof v === 'bigint' ? Number(v) : (v as number));
const toBig = (v: unknown): bigint => (typeof v === 'bigint' ? v : BigInt(v as number));
/** A whole number msgpack may deliver as number or bigint (int64 fields). */
const isInt = (v: unknown): boolean => typeof v === 'bigint' || (typeof v === 'number' && Number.isSafeInteger(v));
const isCount = (v: unknown): boolean => isInt(v) && toNum(v) >= 0 && Number.isSafeInteger(toNum(v));
/** [type, index, channel, timePs, missed]: all whole numbers (found by fuzzing: null times threw a TypeError). */
const isEvent = (e: unknown): e is unknown[] => Array.isArray(e) && e.length === 5 && e.every(isInt) && isCount(e[1]) && isCount(e[4]);

/**
 * Decodes and checks a header. Throws ProtocolError with code STREAM_SCHEMA_VERSION for a
 * version this reader does not know, STREAM_BAD_FRAME for anything malformed.
 */
export function decodeHeader(buf: Uint8Array): FrameHeader {
  let a: unknown;
  try {
    a = packr.unpack(buf);
  } catch (cause) {
    throw new ProtocolError('STREAM_BAD_FRAME', 'Detection batch header is not valid msgpack: the producer is not a qkd stream producer or the frame was corrupted.', { cause });
  }
  if (!Array.isArray(a) || typeof a[0] !== 'number') {
    throw new ProtocolError('STREAM_BAD_FRAME', 'Detection batch header is not a versioned array: the producer is not a qkd stream producer.');
  }
  if (a[0] !== STREAM_SCHEMA_VERSION) {
    throw new ProtocolError('STREAM_SCHEMA_VERSION',
      `Detection batch schema version ${a[0]} is not supported by this consumer (it reads version ${STREAM_SCHEMA_VERSION}); ` +
      'run producer and consumer from the same release or upgrade the consumer.');
  }
  if (a.length !== 10 || typeof a[1] !== 'string' || !Array.isArray(a[9]) || ![a[2], a[5], a[7], a[8]].every(isCount) || !isInt(a[3]) || !isInt(a[4])) {
    throw new ProtocolError('STREAM_BAD_FRAME', `Detection batch header v1 has ${a.length} fields (expected 10) or wrong types.`);
  }
  const layout = toNum(a[6]);
  if (layout !== 1 && layout !== 2 && layout !== 3) {
    throw new ProtocolError('STREAM_BAD_FRAME', `Unknown detection batch layout ${layout} (known: 1 tags, 2 pulses f64, 3 pulses u64).`);
  }
  const bad = (a[9] as unknown[]).findIndex((e) => !isEvent(e));
  if (bad >= 0) throw new ProtocolError('STREAM_BAD_FRAME', `Detection batch header: event ${bad} is not [type, index, channel, timePs, missed] of whole numbers.`);
  const events: TagEvent[] = (a[9] as unknown[][]).map((e) => ({
    type: toNum(e[0]) as TagEvent['type'], index: toNum(e[1]), channel: toNum(e[2]), timePs: toBig(e[3]), missedEvents: toNum(e[4]),
  }));
  return {
    version: a[0], streamId: a[1], seq: toNum(a[2]), epochPs: toBig(a[3]), firstPs: toBig(a[4]),
    count: toNum(a[5]), layout, flags: toNum(a[7]), droppedBefore: toNum(a[8]), events,
  };
}

/** Producer flags implied by the in-band tagger records of a batch. */
export function flagsOfEvents(events: readonly TagEvent[]): number {
  let f = 0;
  for (const e of events) {
    if (e.type === 2 || e.type === 3) f |= FLAG.OVERFLOW;
    else if (e.type === 4) f |= FLAG.MISSED_EVENTS;
    else if (e.type === 1) f |= FLAG.TAGGER_ERROR;
  }
  return f;
}

/** Names of the flags set, for logs and errors. */
export function flagNames(flags: number): string[] {
  return Object.entries(FLAG).filter(([, v]) => (flags & v) !== 0).map(([k]) => k);
}
