/**
 * The time-tagger's binary tag record: what travels in USB bulk transfers from the (real or
 * emulated) tagger and what a recording file stores. Modelled on Swabian's TimeTag struct.
 *
 * One record, 16 bytes, little-endian:
 *
 * ```
 *  byte  0        1          2   3    4   5   6   7    8                              15
 *       ┌────────┬──────────┬────────┬────────────────┬─────────────────────────────────┐
 *       │ type   │ reserved │ missed │ channel        │ time                            │
 *       │ u8     │ u8 (= 0) │ u16    │ i32            │ i64, picoseconds, tagger clock  │
 *       └────────┴──────────┴────────┴────────────────┴─────────────────────────────────┘
 *  type: 0 time tag, 1 error, 2 overflow begin, 3 overflow end, 4 missed events
 *  missed: for type 4, how many events the tagger lost on `channel` (saturating at 65535)
 * ```
 *
 * Non-tag records (types 1–4) are returned in-band as `TagEvent`s at their position among the
 * tags: never dropped. A record with an unknown type, a non-zero reserved byte or a channel that
 * does not fit the 0–255 channel byte of a `TagBatch` is reported as an ERROR event (with the
 * channel field as read), because a framing slip on the wire shows exactly like that.
 */
import { endianness } from 'node:os';
import { ProtocolError } from '../errors.ts';
import { native } from '../core/native.ts';
import { callNative } from '../core/native-call.ts';
import { TAG_TYPE, type TagEvent, type TagStreamBatch, type TagType } from './types.ts';

export const TAG_RECORD_BYTES = 16;
const LITTLE = endianness() === 'LE';

/** One record, as the slow path and the tests see it. */
export interface TagRecord {
  type: TagType | number;
  missedEvents: number;
  channel: number;
  timePs: bigint;
  reserved?: number;
}

/** Slow, obvious encoder (DataView, one record at a time). */
export function encodeTagRecords(records: TagRecord[]): Uint8Array {
  const out = new Uint8Array(records.length * TAG_RECORD_BYTES);
  const dv = new DataView(out.buffer);
  records.forEach((r, i) => {
    const o = i * TAG_RECORD_BYTES;
    dv.setUint8(o, r.type);
    dv.setUint8(o + 1, r.reserved ?? 0);
    dv.setUint16(o + 2, Math.min(0xffff, r.missedEvents), true);
    dv.setInt32(o + 4, r.channel, true);
    dv.setBigInt64(o + 8, r.timePs, true);
  });
  return out;
}

/** Slow, obvious decoder: the reference the fast one is tested against. */
export function decodeTagRecordsSlow(bytes: Uint8Array): TagRecord[] {
  if (bytes.length % TAG_RECORD_BYTES) {
    throw new ProtocolError('TRUNCATED_TAG_RECORD', `tag data of ${bytes.length} bytes is not a whole number of ${TAG_RECORD_BYTES}-byte records.`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: TagRecord[] = [];
  for (let o = 0; o < bytes.length; o += TAG_RECORD_BYTES) {
    out.push({
      type: dv.getUint8(o),
      reserved: dv.getUint8(o + 1),
      missedEvents: dv.getUint16(o + 2, true),
      channel: dv.getInt32(o + 4, true),
      timePs: dv.getBigInt64(o + 8, true),
    });
  }
  return out;
}

/**
 * Fast encoder for plain time tags (the emulated tagger's hot path): writes `count` type-0
 * records from `timePs[from..]`/`channel[from..]` into `out` at record offset `at`.
 * `out.byteOffset` must be a multiple of 8.
 */
export function encodeTimeTags(timePs: BigInt64Array, channel: Uint8Array, from: number, count: number, out: Uint8Array, at = 0): void {
  if (!LITTLE || out.byteOffset % 8) {
    const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
    for (let i = 0; i < count; i++) {
      const o = (at + i) * TAG_RECORD_BYTES;
      dv.setUint32(o, 0, true);
      dv.setInt32(o + 4, channel[from + i], true);
      dv.setBigInt64(o + 8, timePs[from + i], true);
    }
    return;
  }
  // Copy the 64-bit times as two 32-bit words: no BigInt is materialised per tag.
  const o32 = new Int32Array(out.buffer, out.byteOffset + at * TAG_RECORD_BYTES, count * 4);
  const t32 = new Int32Array(timePs.buffer, timePs.byteOffset + from * 8, count * 2);
  for (let i = 0, j = 0, k = 0; i < count; i++, j += 4, k += 2) {
    o32[j] = 0;
    o32[j + 1] = channel[from + i];
    o32[j + 2] = t32[k];
    o32[j + 3] = t32[k + 1];
  }
}

function eventOf(type: number, reserved: number, channel: number): TagEvent['type'] {
  if (type >= 1 && type <= 4 && reserved === 0) return type as TagEvent['type'];
  void channel;
  return TAG_TYPE.ERROR;
}

/**
 * Streaming decoder: feed it bulk-transfer payloads of any length (a record may straddle two
 * transfers); each `push` returns one TagStreamBatch with the whole records received so far.
 * Not safe to share between streams (it holds the partial record and the sequence number).
 */
export class TagRecordDecoder {
  private carry = new Uint8Array(0);
  private seq = 0;
  private scratch = new Uint8Array(0);
  private readonly useNative: boolean;

  /**
   * `native` (default true): decode in Rust (native/core/src/lab_tagger.rs, one call per push);
   * false: the TypeScript loop below (the reference of test/devices/tags-native.test.ts).
   */
  constructor(opts: { native?: boolean } = {}) {
    this.useNative = opts.native ?? true;
  }

  /** Bytes of an incomplete record waiting for the next transfer. */
  get pendingBytes(): number {
    return this.carry.length;
  }

  push(chunk: Uint8Array): TagStreamBatch {
    let bytes = chunk;
    if (this.carry.length) {
      bytes = new Uint8Array(this.carry.length + chunk.length);
      bytes.set(this.carry);
      bytes.set(chunk, this.carry.length);
    }
    const whole = bytes.length - (bytes.length % TAG_RECORD_BYTES);
    this.carry = whole < bytes.length ? bytes.slice(whole) : new Uint8Array(0);
    return this.decode(bytes.subarray(0, whole));
  }

  private decode(bytes: Uint8Array): TagStreamBatch {
    if (this.useNative) return { seq: this.seq++, ...decodeTagRecordsNative(bytes) };
    const n = bytes.length / TAG_RECORD_BYTES;
    // Int32 views need 4-byte alignment; USB buffers usually are, a subarray after a carry may not be.
    if (bytes.byteOffset % 8 || !LITTLE) {
      if (this.scratch.length < bytes.length) this.scratch = new Uint8Array(bytes.length);
      this.scratch.set(bytes);
      bytes = this.scratch.subarray(0, bytes.length);
    }
    const times = new BigInt64Array(n);
    const t32 = new Int32Array(times.buffer);
    const channel = new Uint8Array(n);
    const events: TagEvent[] = [];
    let tags = 0;
    if (LITTLE) {
      const i32 = new Int32Array(bytes.buffer, bytes.byteOffset, n * 4);
      for (let r = 0, j = 0; r < n; r++, j += 4) {
        const head = i32[j];
        const ch = i32[j + 1];
        if (head === 0 && ch >= 0 && ch <= 255) {
          channel[tags] = ch;
          t32[2 * tags] = i32[j + 2];
          t32[2 * tags + 1] = i32[j + 3];
          tags++;
        } else {
          const type = head & 0xff;
          const reserved = (head >>> 8) & 0xff;
          const missed = (head >>> 16) & 0xffff;
          const dv = new DataView(bytes.buffer, bytes.byteOffset + r * TAG_RECORD_BYTES, TAG_RECORD_BYTES);
          events.push({ type: eventOf(type, reserved, ch), index: tags, channel: ch, timePs: dv.getBigInt64(8, true), missedEvents: missed });
        }
      }
    } else {
      for (const rec of decodeTagRecordsSlow(bytes)) {
        if (rec.type === 0 && rec.reserved === 0 && rec.channel >= 0 && rec.channel <= 255) {
          channel[tags] = rec.channel;
          times[tags++] = rec.timePs;
        } else {
          events.push({ type: eventOf(rec.type, rec.reserved ?? 0, rec.channel), index: tags, channel: rec.channel, timePs: rec.timePs, missedEvents: rec.missedEvents });
        }
      }
    }
    return {
      seq: this.seq++,
      timePs: tags === n ? times : times.slice(0, tags),
      channel: tags === n ? channel : channel.slice(0, tags),
      events,
    };
  }
}

/** Whole records decoded in Rust: the tags and the in-band events (as TagRecordDecoder). */
export function decodeTagRecordsNative(bytes: Uint8Array): Omit<TagStreamBatch, 'seq'> {
  const d = callNative(() => native().tagRecordsDecode(bytes));
  const events: TagEvent[] = [];
  for (let i = 0; i < d.evType.length; i++) {
    events.push({ type: d.evType[i] as TagEvent['type'], index: d.evIndex[i], channel: d.evChannel[i], timePs: d.evTimePs[i], missedEvents: d.evMissed[i] });
  }
  return { timePs: d.timePs, channel: d.channel, events };
}

/** Plain time-tag records of `timePs[i] + delayPs` on `channel[i]`, encoded in Rust. */
export function encodeTimeTagsNative(timePs: BigInt64Array, channel: Uint8Array, delayPs = 0n): Uint8Array {
  return callNative(() => native().tagRecordsEncodeTimeTags(timePs, channel, delayPs));
}
