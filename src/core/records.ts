/**
 * Typed facade over the native record decoders (native/records, adapter native/node/src/records.rs):
 * time-tagger recordings from real instruments read into typed arrays, in chunks.
 *
 * Formats (layouts and their public sources: docs/devices.md, "Recorded data"):
 * - `ptu`: PicoQuant unified TTTR (.ptu), T2 and T3 records of PicoHarp 300, HydraHarp v1/v2,
 *   TimeHarp 260, MultiHarp. Channel 0 = sync, inputs from 1; markers at 128 + bit.
 * - `qutag`: quTAG binary (40-byte header, 10-byte events), re-ordered into time order.
 * - `a1` / `a1-legacy`: qcrypto / S-Fifteen `readevents -a1` words (low / high word first);
 *   detector bit b = channel b + 1. Written by `encodeA1` / `writeA1`.
 *
 * ```ts
 * const rec = await openRecording('../shared/data/picoquant/hydraharp/v20_t3.ptu');
 * for await (const c of rec.chunks()) {   // c.timePs BigInt64Array (ps from the file's start), c.channel Uint8Array
 *   ...                                  // T3: c.nsync BigUint64Array, c.dtime Uint16Array (bins of rec.info.dtimeResolutionPs)
 * }
 * rec.stats();                            // per channel counts, overflow records, markers, illegal, late (quTAG)
 * ```
 * Errors are `ConfigError`s naming the file: RECORDING_NOT_FOUND, BAD_RECORDING (not the format
 * it claims to be, or not one we can tell), RECORDING_TRUNCATED (cut short), RECORDING_UNSUPPORTED.
 *
 * Concurrency: one iteration of `chunks()` at a time per Recording (the decoder carries state);
 * each yielded chunk's arrays are fresh (the consumer may keep them). Breaking out of the loop
 * closes the file. Decoding runs on the JS thread, one chunk (default 64 Ki events) per call.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { extname } from 'node:path';
import { ConfigError } from '../errors.ts';
import { native } from './native.ts';
import { errorFromNative } from './native-call.ts';

export type RecordingFormat = 'ptu' | 'qutag' | 'a1' | 'a1-legacy';
export const RECORDING_FORMATS: RecordingFormat[] = ['ptu', 'qutag', 'a1', 'a1-legacy'];

/** PicoQuant external marker bit b is channel MARKER_CHANNEL + b. */
export const MARKER_CHANNEL = 128;
export const QUTAG_HEADER_BYTES = 40;

export interface RecordingInfo {
  file: string;
  format: RecordingFormat;
  /** e.g. 'HydraHarp v2 T3', 'quTAG binary', 'qcrypto a1'. */
  description: string;
  /** Records in the data section (PTU: what the header says, checked against the size). */
  records: number;
  recordBytes: number;
  dataOffset: number;
  /** T3 (PTU): times are nsync x syncPeriodPs + dtime x dtimeResolutionPs. */
  t3: boolean;
  /** Time unit of T2 tags (ps); T3: the sync period. */
  resolutionPs: number;
  syncPeriodPs?: number;
  dtimeResolutionPs?: number;
  syncRateHz?: number;
  /** PTU header tags (`"Name(idx)": value`). */
  header: Record<string, unknown>;
}

export interface RecordChunk {
  timePs: BigInt64Array;
  channel: Uint8Array;
  nsync?: BigUint64Array;
  dtime?: Uint16Array;
}

export interface RecordingStats {
  perChannel: Map<number, number>;
  overflowRecords: number;
  markers: number;
  illegal: number;
  empty: number;
  late: number;
  latePerChannel: Map<number, number>;
}

export interface OpenRecordingOptions {
  /** Format (default: from the magic bytes, else the file name: .ptu, .qutag/.bin, .a1/.a1x). */
  format?: RecordingFormat;
  /** quTAG time unit in ps (default 1; a quTAU is ~81). */
  qutagUnitPs?: number;
  /** quTAG re-ordering window in ps (default 1 us). */
  reorderWindowPs?: number;
}

type NativeDecoder = InstanceType<ReturnType<typeof native>['RecordDecoder']>;

function nat<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (cause) {
    const e = errorFromNative(cause);
    if (e.code === 'RECORDS_NOT_PTU') throw new ConfigError('BAD_RECORDING', `${file}: not a PicoQuant .ptu file (no PQTTTR magic at the start). Check the file, or give its format (--format ${RECORDING_FORMATS.join('|')}).`, { cause });
    if (e.code === 'RECORDS_TRUNCATED') throw new ConfigError('RECORDING_TRUNCATED', `${file}: ${e.message}. Copy the whole file again.`, { cause });
    if (e.code === 'RECORDS_UNSUPPORTED') throw new ConfigError('RECORDING_UNSUPPORTED', `${file}: ${e.message}.`, { cause });
    if (e.code === 'RECORDS_BAD_HEADER') throw new ConfigError('BAD_RECORDING', `${file}: ${e.message}.`, { cause });
    throw e;
  }
}

function guessFormat(file: string, head: Buffer): RecordingFormat | undefined {
  if (head.subarray(0, 6).toString('latin1') === 'PQTTTR') return 'ptu';
  const name = file.toLowerCase();
  const ext = extname(name);
  if (ext === '.ptu') return 'ptu';
  if (ext === '.qutag' || ext === '.bin') return 'qutag';
  if (ext === '.a1x' || name.endsWith('.a1x.dat')) return 'a1-legacy';
  if (ext === '.a1' || name.endsWith('.a1.dat')) return 'a1';
  return undefined;
}

/** Reads a recording's header and checks its size; the data is read by `chunks()`. */
export async function openRecording(file: string, opts: OpenRecordingOptions = {}): Promise<Recording> {
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    throw new ConfigError('RECORDING_NOT_FOUND', `${file}: cannot open the recording (${code}). Check the path${code === 'ENOENT' ? ' (relative paths are from the current directory)' : ''}.`, { cause });
  }
  try {
    const size = (await fh.stat()).size;
    const head = Buffer.alloc(Math.min(size, 16));
    await fh.read(head, 0, head.length, 0);
    const format = opts.format ?? guessFormat(file, head);
    if (!format) {
      throw new ConfigError('BAD_RECORDING', `${file}: cannot tell the recording format (no PicoQuant magic; name not .ptu, .qutag/.bin, .a1/.a1x). Give it: --format ${RECORDING_FORMATS.join('|')}.`);
    }
    let info: RecordingInfo;
    if (format === 'ptu') {
      // The header is usually a few KiB; read more until it parses or the file ends.
      let len = Math.min(size, 64 * 1024);
      let hdr: ReturnType<ReturnType<typeof native>['recordsParsePtuHeader']>;
      for (;;) {
        const buf = Buffer.alloc(len);
        await fh.read(buf, 0, len, 0);
        try {
          hdr = nat(file, () => native().recordsParsePtuHeader(buf));
          break;
        } catch (e) {
          if (e instanceof ConfigError && e.code === 'RECORDING_TRUNCATED' && len < size) { len = Math.min(size, len * 4); continue; }
          throw e;
        }
      }
      const dataBytes = size - hdr.dataOffset;
      const want = hdr.numRecords * 4;
      if (dataBytes < want || dataBytes % 4) {
        throw new ConfigError('RECORDING_TRUNCATED', `${file}: the header says ${hdr.numRecords} records (${want} bytes) but ${dataBytes} bytes of records follow it: the file is cut short. Copy the whole file again.`);
      }
      info = {
        file, format, description: hdr.kindName, records: hdr.numRecords, recordBytes: 4, dataOffset: hdr.dataOffset, t3: hdr.t3,
        resolutionPs: hdr.globalResolutionPs,
        ...(hdr.t3 ? { syncPeriodPs: hdr.globalResolutionPs, dtimeResolutionPs: hdr.resolutionPs } : {}),
        ...(hdr.syncRateHz != null ? { syncRateHz: hdr.syncRateHz } : {}),
        header: JSON.parse(hdr.tagsJson) as Record<string, unknown>,
      };
      if (dataBytes > want) info.header['(bytes after the last record)'] = dataBytes - want;
    } else if (format === 'qutag') {
      if (size < QUTAG_HEADER_BYTES || (size - QUTAG_HEADER_BYTES) % 10) {
        throw new ConfigError('RECORDING_TRUNCATED', `${file}: ${size} bytes is not a 40-byte quTAG header plus whole 10-byte events (cut short, or not a quTAG binary file). Copy the whole file again or check --format.`);
      }
      info = { file, format, description: 'quTAG binary', records: (size - QUTAG_HEADER_BYTES) / 10, recordBytes: 10, dataOffset: QUTAG_HEADER_BYTES, t3: false, resolutionPs: opts.qutagUnitPs ?? 1, header: {} };
    } else {
      if (size % 8) {
        throw new ConfigError('RECORDING_TRUNCATED', `${file}: ${size} bytes is not a whole number of 8-byte a1 events (cut short, or not an a1 file). Copy the whole file again or check --format.`);
      }
      info = { file, format, description: format === 'a1' ? 'qcrypto a1' : 'qcrypto a1 (legacy word order)', records: size / 8, recordBytes: 8, dataOffset: 0, t3: false, resolutionPs: 1000 / 256, header: {} };
    }
    return new Recording(info, opts);
  } finally {
    await fh.close();
  }
}

export class Recording {
  private decoder: NativeDecoder | undefined;
  constructor(readonly info: RecordingInfo, private readonly opts: OpenRecordingOptions = {}) {}

  private newDecoder(): NativeDecoder {
    const i = this.info;
    const D = native().RecordDecoder;
    if (i.format === 'ptu') {
      const rt = Number((i.header.TTResultFormat_TTTRRecType as number) ?? 0);
      return nat(i.file, () => D.ptu(rt, i.resolutionPs, i.dtimeResolutionPs ?? i.resolutionPs));
    }
    if (i.format === 'qutag') return nat(i.file, () => D.qutag(this.opts.qutagUnitPs ?? 1, this.opts.reorderWindowPs ?? 1_000_000));
    return D.a1(i.format === 'a1-legacy');
  }

  /**
   * The events in time order (PTU markers may sit slightly out of order: the instrument stamps
   * them coarser), `eventsPerChunk` at a time (>= 4; the last chunk may be shorter). Restarts
   * from the beginning on each call.
   */
  async *chunks(opts: { eventsPerChunk?: number; readBytes?: number } = {}): AsyncGenerator<RecordChunk> {
    const i = this.info;
    const room = Math.max(4, opts.eventsPerChunk ?? 65536);
    const readBytes = Math.max(i.recordBytes, opts.readBytes ?? 1 << 20);
    const dec = (this.decoder = this.newDecoder());
    const fh = await open(i.file, 'r').catch((cause: unknown) => {
      throw new ConfigError('RECORDING_NOT_FOUND', `${i.file}: cannot open the recording (${(cause as NodeJS.ErrnoException).code}).`, { cause });
    });
    try {
      const end = i.dataOffset + i.records * i.recordBytes;
      let pos = i.dataOffset;
      let buf = Buffer.alloc(0);
      let at = 0;
      const fresh = () => ({
        timePs: new BigInt64Array(room),
        channel: new Uint8Array(room),
        ...(i.t3 ? { nsync: new BigUint64Array(room), dtime: new Uint16Array(room) } : {}),
      });
      let out: RecordChunk = fresh();
      let fill = 0;
      for (;;) {
        if (buf.length - at < i.recordBytes && pos < end) {
          const rest = buf.subarray(at);
          const n = Math.min(readBytes, end - pos);
          const next = Buffer.alloc(rest.length + n);
          rest.copy(next, 0);
          const { bytesRead } = await fh.read(next, rest.length, n, pos);
          if (bytesRead < n) throw new ConfigError('RECORDING_TRUNCATED', `${i.file}: the file got shorter while it was read (at byte ${pos + bytesRead}).`);
          pos += n;
          buf = next;
          at = 0;
        }
        const input = buf.subarray(at);
        const last = pos >= end;
        const sub = (a: BigInt64Array | Uint8Array | BigUint64Array | Uint16Array | undefined) => a?.subarray(fill) as never;
        const p = nat(i.file, () => dec.decode(input, sub(out.timePs), sub(out.channel), sub(out.nsync), sub(out.dtime), last));
        at += p.records * i.recordBytes;
        fill += p.events;
        const drained = last && buf.length - at < i.recordBytes && p.records === 0 && p.events === 0;
        // Hand the chunk over when full (less than 4 slots left) or at the end.
        if (room - fill < 4 || (drained && fill > 0)) {
          yield fill === room ? out : trim(out, fill);
          out = fresh();
          fill = 0;
        }
        if (drained) break;
      }
    } finally {
      await fh.close();
    }
  }

  /** Counters of the decoding so far (after a complete `chunks()` iteration: of the whole file). */
  stats(): RecordingStats {
    const s = (this.decoder ?? this.newDecoder()).stats();
    const toMap = (a: number[]) => new Map(a.map((v, c) => [c, v] as [number, number]).filter(([, v]) => v > 0));
    return { perChannel: toMap(s.perChannel), overflowRecords: s.overflowRecords, markers: s.markers, illegal: s.illegal, empty: s.empty, late: s.late, latePerChannel: toMap(s.latePerChannel) };
  }
}

function trim(c: RecordChunk, n: number): RecordChunk {
  return {
    timePs: c.timePs.slice(0, n),
    channel: c.channel.slice(0, n),
    ...(c.nsync ? { nsync: c.nsync.slice(0, n), dtime: c.dtime!.slice(0, n) } : {}),
  };
}

/**
 * Encodes events as qcrypto a1 words for qcrypto / S-Fifteen tools. Channel `firstChannel` is
 * detector 1 (bit 0): 1 for channels read from a1 files, 0 for this node's 0-based tagger
 * channels; 4 detectors at most. Times must be >= 0 and non-decreasing; events in one 1/256 ns
 * unit merge into one pattern. Our integer-ps times move by <= 2 ps (the a1 unit is 3.90625 ps).
 */
export function encodeA1(timePs: BigInt64Array, channel: Uint8Array, opts: { firstChannel?: number; legacy?: boolean } = {}): Buffer {
  try {
    return native().recordsEncodeA1(timePs, channel, opts.firstChannel ?? 1, opts.legacy ?? false);
  } catch (cause) {
    throw errorFromNative(cause);
  }
}
