/**
 * Recording a tag stream to a file and replaying it through the same TimeTagger interface (as
 * Swabian's TimeTaggerVirtual and PicoQuant's file devices do). Replay is a `UsbBulkDevice` that
 * serves the file's records in bulk transfers, so the replayed stream goes through the real USB
 * transport, record decoder and time-tagger driver: a consumer cannot tell it from the device.
 *
 * File layout (little-endian):
 *
 * ```
 *  0        8        12       16                 16+H (padded to a multiple of 16)
 *  ┌────────┬────────┬────────┬──────────────────┬─────────────────────────────────────┐
 *  │"QKDTAG1"│version │ H      │ header JSON (H B) │ 16-byte tag records (see tags.ts)…  │
 *  │ + NUL  │ u32 =1 │ u32    │ utf-8, space pad │ tags and in-band events, in order   │
 *  └────────┴────────┴────────┴──────────────────┴─────────────────────────────────────┘
 * ```
 * The header names the device id, profile, identity, the settings at recording time and when.
 * In-band overflow / missed-event records are written where they occurred, so a replay reports
 * them exactly as the live stream did.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { ConfigError, TransportError } from '../errors.ts';
import { encodeTagRecords, encodeTimeTags, TAG_RECORD_BYTES } from './tags.ts';
import type { DeviceIdentity, TagStreamBatch, UsbBulkDevice } from './types.ts';
import { loadProfile } from './profile.ts';
import { TimeTaggerDriver } from './drivers/tagger.ts';

const MAGIC = Buffer.from('QKDTAG1\0', 'latin1');
export const RECORDING_VERSION = 1;
/** Largest JSON header a recording may have (they are a few hundred bytes). */
const MAX_HEADER_BYTES = 1 << 20;

export interface RecordingHeader {
  deviceId: string;
  profile: string;
  identity: DeviceIdentity;
  /** ISO time the recording started. */
  startedAt: string;
  /** Device settings at the start (parameter address -> value). */
  settings: Record<string, number>;
  /** Free-form notes (link preset, seed name, …); never key material. */
  notes?: Record<string, unknown>;
}

/** Encodes one decoded batch back into wire records, events at their positions. */
export function encodeBatch(b: TagStreamBatch): Uint8Array {
  const n = b.timePs.length + b.events.length;
  const out = new Uint8Array(n * TAG_RECORD_BYTES);
  let at = 0;
  let from = 0;
  for (const e of b.events) {
    const k = e.index - from;
    if (k > 0) encodeTimeTags(b.timePs, b.channel, from, k, out, at);
    at += Math.max(0, k);
    from = Math.max(from, e.index);
    out.set(encodeTagRecords([{ type: e.type, missedEvents: e.missedEvents, channel: e.channel, timePs: e.timePs }]), at * TAG_RECORD_BYTES);
    at++;
  }
  encodeTimeTags(b.timePs, b.channel, from, b.timePs.length - from, out, at);
  return out;
}

/** Writes a recording; `write` each batch, then `close`. */
export class TagRecorder {
  private records = 0;
  private constructor(private readonly fh: FileHandle, readonly file: string) {}

  static async create(file: string, header: RecordingHeader): Promise<TagRecorder> {
    let json = Buffer.from(JSON.stringify(header), 'utf8');
    const padded = Math.ceil((16 + json.length) / 16) * 16 - 16;
    json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)]);
    const head = Buffer.alloc(16);
    MAGIC.copy(head, 0);
    head.writeUInt32LE(RECORDING_VERSION, 8);
    head.writeUInt32LE(json.length, 12);
    const fh = await open(file, 'w');
    await fh.write(Buffer.concat([head, json]));
    return new TagRecorder(fh, file);
  }

  async write(batch: TagStreamBatch): Promise<void> {
    const bytes = encodeBatch(batch);
    this.records += bytes.length / TAG_RECORD_BYTES;
    await this.fh.write(bytes);
  }

  get recordCount(): number {
    return this.records;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Records `stream` into `file` until it ends; returns the number of records written. */
export async function recordTagStream(stream: AsyncIterable<TagStreamBatch>, file: string, header: RecordingHeader): Promise<number> {
  const rec = await TagRecorder.create(file, header);
  try {
    for await (const b of stream) await rec.write(b);
  } finally {
    await rec.close();
  }
  return rec.recordCount;
}

/** Reads the header of a recording; ConfigError naming the file when it is not one. */
export async function readRecordingHeader(file: string): Promise<{ header: RecordingHeader; dataOffset: number; records: number }> {
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (cause) {
    throw new ConfigError('RECORDING_NOT_FOUND', `${file}: cannot open the recording (${(cause as NodeJS.ErrnoException).code}).`, { cause });
  }
  try {
    const head = Buffer.alloc(16);
    const { bytesRead } = await fh.read(head, 0, 16, 0);
    if (bytesRead < 16 || !head.subarray(0, 8).equals(MAGIC)) throw new ConfigError('BAD_RECORDING', `${file}: not a tag recording (bad magic). Record with 'recordTagStream'.`);
    const version = head.readUInt32LE(8);
    if (version !== RECORDING_VERSION) throw new ConfigError('BAD_RECORDING', `${file}: recording version ${version}, this build reads version ${RECORDING_VERSION}.`);
    const len = head.readUInt32LE(12);
    const size = (await fh.stat()).size;
    // Found by fuzzing: a length over 2^31 aborted the process inside fs.read (not an exception).
    if (len > Math.min(size - 16, MAX_HEADER_BYTES)) {
      throw new ConfigError('BAD_RECORDING', `${file}: header length ${len} bytes is more than the file holds (${size - 16}) or over ${MAX_HEADER_BYTES} (truncated or not a recording).`);
    }
    const json = Buffer.alloc(len);
    await fh.read(json, 0, len, 16);
    let header: RecordingHeader;
    try {
      header = JSON.parse(json.toString('utf8')) as RecordingHeader;
    } catch (cause) {
      throw new ConfigError('BAD_RECORDING', `${file}: header is not valid JSON.`, { cause });
    }
    const dataOffset = 16 + len;
    if ((size - dataOffset) % TAG_RECORD_BYTES) throw new ConfigError('BAD_RECORDING', `${file}: ${size - dataOffset} data bytes is not a whole number of 16-byte records (truncated file?).`);
    return { header, dataOffset, records: (size - dataOffset) / TAG_RECORD_BYTES };
  } finally {
    await fh.close();
  }
}

/**
 * A recording as a USB device: bulk IN transfers return the next records; at the end of the
 * file the transfer fails with code END_OF_STREAM, which ends the driver's stream normally.
 * Settings requests are accepted and read back (they do not alter the recorded times); the
 * identity is the recorded device's.
 */
export class ReplayUsbDevice implements UsbBulkDevice {
  private fh: FileHandle | undefined;
  private pos = 0;
  private streaming = false;
  private readonly values = new Map<string, Uint8Array>();

  constructor(
    readonly file: string,
    readonly header: RecordingHeader,
    private readonly dataOffset: number,
    readonly vendorId: number,
    readonly productId: number,
    private readonly requests: { identity: number; start: number; stop: number },
  ) {}

  async open(): Promise<void> {
    this.fh ??= await open(this.file, 'r');
    this.pos = this.dataOffset;
  }
  async claim(): Promise<void> {}
  async release(): Promise<void> {}
  async close(): Promise<void> {
    await this.fh?.close();
    this.fh = undefined;
  }
  async controlOut(request: number, value: number, index: number, data: Uint8Array): Promise<void> {
    if (request === this.requests.start) this.streaming = true;
    else if (request === this.requests.stop) this.streaming = false;
    else this.values.set(`${request}:${index}`, Uint8Array.from(data));
    void value;
  }
  async controlIn(request: number, value: number, index: number, length: number): Promise<Uint8Array> {
    if (request === this.requests.identity) {
      const id = this.header.identity;
      return new TextEncoder().encode(`${id.vendor},${id.model},${id.serial},${id.firmware}`).subarray(0, length);
    }
    void value;
    return (this.values.get(`${request}:${index}`) ?? new Uint8Array(length)).subarray(0, length);
  }
  async bulkIn(_endpoint: number, length: number): Promise<Uint8Array> {
    if (!this.fh) throw new TransportError('NOT_CONNECTED', `${this.file}: replay device not open.`);
    if (!this.streaming) throw new Error('LIBUSB_TRANSFER_TIMED_OUT');
    const want = length - (length % TAG_RECORD_BYTES);
    const buf = new Uint8Array(want);
    const { bytesRead } = await this.fh.read(buf, 0, want, this.pos);
    if (bytesRead === 0) throw Object.assign(new Error(`end of recording ${this.file}`), { code: 'END_OF_STREAM' });
    this.pos += bytesRead;
    return buf.subarray(0, bytesRead);
  }
}

/**
 * Opens a recording as a TimeTagger: the recorded device's profile drives the same driver code
 * as live (`profileDir` to look the profile up elsewhere).
 */
export async function openReplayTagger(file: string, opts: { id?: string; profileDir?: string } = {}): Promise<TimeTaggerDriver> {
  const { header, dataOffset } = await readRecordingHeader(file);
  const profile = opts.profileDir ? loadProfile(header.profile, opts.profileDir) : loadProfile(header.profile);
  if (profile.transport.type !== 'usb') throw new ConfigError('BAD_RECORDING', `${file}: recorded profile ${header.profile} is not a USB time-tagger.`);
  const t = profile.transport;
  const dev = new ReplayUsbDevice(file, header, dataOffset, t.vendorId, t.productId, t.requests);
  const driver = new TimeTaggerDriver({ id: opts.id ?? `replay:${header.deviceId}`, profile, device: dev });
  await driver.open();
  return driver;
}
