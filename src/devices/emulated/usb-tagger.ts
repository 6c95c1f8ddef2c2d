/**
 * The emulated time-tagger, at the USB transfer level: it implements `UsbBulkDevice`, so the real
 * USB transport and time-tagger driver run on top of it. Its tags come from the emulated lab
 * (Bob's detections on Bob's clock); its own settings act where a tagger acts: per-channel
 * delays are added to tag times (and the stream kept in time order), the reference clock and
 * trigger settings are stored and read back.
 *
 * Vendor control requests (the EmuLab TT-8 protocol, matching hw-profiles/devices/emulab-tt8.json):
 *   IN  0x01 identity            -> ASCII "vendor,model,serial,firmware"
 *   OUT 0x02 start stream,  OUT 0x03 stop stream (drops what is buffered)
 *   OUT/IN 0x10 delay  (wIndex = channel, i64 LE ps)
 *   OUT/IN 0x11 trigger level (wIndex = channel, f64 LE volts)
 *   OUT/IN 0x12 edge (wIndex = channel, i32 LE 0 rising / 1 falling)
 *   OUT/IN 0x13 reference clock (i32 LE 0 internal / 1 external)
 * A request the firmware does not accept fails like a USB STALL.
 *
 * Overflow: `injectOverflow(lost)` makes the tagger lose the next `lost` tags as its FIFO would
 * when the host does not read fast enough, and report it in-band: OVERFLOW_BEGIN, then
 * OVERFLOW_END and one MISSED_EVENTS record per channel that lost tags (count saturating at
 * 65535 per record, several records if more).
 */
import { TAG_TYPE, type UsbBulkDevice } from '../types.ts';
import { encodeTagRecords, encodeTimeTags, encodeTimeTagsNative, TAG_RECORD_BYTES, type TagRecord } from '../tags.ts';
import type { PulseTagSource } from './lab.ts';
import { DelayMergeTs, nativeDelayMerge, type DelayMerge } from './delay-merge.ts';

export const EMU_TAGGER_VID = 0x1209;
export const EMU_TAGGER_PID = 0x0001;

/** Amplitude of the emulated detectors' output pulses: a trigger level at or above it sees nothing. */
export const DETECTOR_PULSE_V = 0.8;
/** Width of those pulses: the falling edge comes this much after the rising one. */
export const DETECTOR_PULSE_WIDTH_PS = 5000n;

export const REQ = { IDENTITY: 0x01, START: 0x02, STOP: 0x03, DELAY: 0x10, LEVEL: 0x11, EDGE: 0x12, REFCLK: 0x13 } as const;

export interface EmulatedTaggerOptions {
  serial?: string;
  firmware?: string;
  channels?: number;
  /** Pulses requested from the source per refill at first (adapted to fill transfers). */
  pulsesPerPull?: number;
  /**
   * Real-time pacing (default off: tags as fast as the consumer reads). Emulated time runs at
   * `speed` x the wall clock from the stream start; the FIFO holds `fifoRecords` records and
   * overflows, in band, when the consumer falls behind. `now` (ms) is injectable for tests.
   */
  realtime?: { speed?: number; fifoRecords?: number; now?: () => number };
  /** Pulse rate used by real-time pacing (default: the source's lab settings, else 1 GHz). */
  repRateHz?: number;
  /** Encode and merge the records in Rust (default true; false: the TypeScript reference, for comparison). */
  nativeRecords?: boolean;
  /**
   * Emulate the next pull off the JS thread while the host handles a transfer (default off): the
   * source's `nextPulsesAsync` starts as a transfer is handed out, as a real tagger's FIFO fills
   * while its host works. The same records in a continuous stream; a batch in flight at STOP is
   * dropped (its light came while the tagger was not streaming), and lab settings changed
   * meanwhile act from the batch after it. Without real-time pacing only; Bob's node turns it on.
   */
  prefetch?: boolean;
}

/** A pull emulated ahead (`prefetch`), for the stream generation it was started in. */
interface Ahead {
  gen: number;
  /** The batch, or the error it failed with (kept, not thrown: nobody may be waiting yet). */
  batch: Promise<{ tags: { timePs: BigInt64Array; channel: Uint8Array } } | Error>;
}

class Stall extends Error {
  constructor(what: string) {
    super(`LIBUSB_ERROR_PIPE (stall): ${what}`);
  }
}

export class EmulatedUsbTagger implements UsbBulkDevice {
  readonly vendorId = EMU_TAGGER_VID;
  readonly productId = EMU_TAGGER_PID;
  readonly identity: string;
  readonly channelCount: number;
  readonly delayPs: bigint[];
  readonly level: number[];
  readonly edge: number[];
  refClock = 0;
  private opened = false;
  private claimed = false;
  private streaming = false;
  private present = true;
  /** Encoded records waiting to go out (already in time order). */
  private out: Uint8Array[] = [];
  private outBytes = 0;
  /** Tags held back because a later pull could still produce an earlier (delayed) tag. */
  private readonly merge: DelayMerge;
  private pulsesPerPull: number;
  private lose = 0;
  private inOverflow = false;
  private overflowEndPs = 0n;
  private readonly realtime: { speed: number; fifoRecords: number; now: () => number } | undefined;
  private readonly repRateHz: number;
  private rtStartMs: number | undefined;
  private rtPulses = 0;
  private lostPerChannel = new Map<number, number>();
  private pendingBulk: { reject: (e: Error) => void } | undefined;
  private readonly nativeRecords: boolean;
  private readonly prefetch: boolean;
  private ahead: Ahead | undefined;
  /** Bumped at START and STOP: a pull started before belongs to an earlier stream. */
  private gen = 0;

  constructor(
    private readonly source: PulseTagSource,
    opts: EmulatedTaggerOptions = {},
  ) {
    this.identity = `EmuLab,TT-8,${opts.serial ?? 'TT8-0001'},${opts.firmware ?? '3.0.1'}`;
    this.channelCount = opts.channels ?? 8;
    this.delayPs = Array.from({ length: this.channelCount }, () => 0n);
    this.level = Array.from({ length: this.channelCount }, () => 0.5);
    this.edge = Array.from({ length: this.channelCount }, () => 0);
    this.pulsesPerPull = opts.pulsesPerPull ?? 1_000_000;
    this.nativeRecords = opts.nativeRecords ?? true;
    this.prefetch = (opts.prefetch ?? false) && !opts.realtime && typeof source.nextPulsesAsync === 'function';
    this.merge = this.nativeRecords ? nativeDelayMerge() : new DelayMergeTs();
    if (opts.realtime) {
      this.realtime = { speed: opts.realtime.speed ?? 1, fifoRecords: opts.realtime.fifoRecords ?? 1 << 20, now: opts.realtime.now ?? (() => performance.now()) };
    }
    this.repRateHz = opts.repRateHz ?? (source as { settings?: { repRateHz?: number } }).settings?.repRateHz ?? 1e9;
  }

  /** Settings to persist between CLI invocations (see docs/devices.md). */
  snapshot(): Record<string, number> {
    const o: Record<string, number> = { reference_clock: this.refClock };
    for (let c = 0; c < this.channelCount; c++) {
      o[`delay:${c}`] = Number(this.delayPs[c]);
      o[`trigger_level:${c}`] = this.level[c];
      o[`edge:${c}`] = this.edge[c];
    }
    return o;
  }

  restore(state: Record<string, number>): void {
    for (const [k, v] of Object.entries(state)) {
      if (typeof v !== 'number' || !Number.isFinite(v)) continue;
      const [name, chs] = k.split(':');
      const c = Number(chs);
      if (name === 'reference_clock') this.refClock = v === 1 ? 1 : 0;
      else if (!(c >= 0 && c < this.channelCount)) continue;
      else if (name === 'delay' && Math.abs(v) <= 1e9) this.delayPs[c] = BigInt(Math.round(v));
      else if (name === 'trigger_level' && Math.abs(v) <= 2.5) this.level[c] = v;
      else if (name === 'edge') this.edge[c] = v === 1 ? 1 : 0;
    }
  }

  // ---- fault injection -------------------------------------------------------------------------

  /** Loses the next `lost` tags (FIFO overflow) and reports it in-band. */
  injectOverflow(lost: number): void {
    this.lose += lost;
  }

  private readonly disconnectListeners = new Set<() => void>();

  onDisconnect(listener: () => void): () => void {
    this.disconnectListeners.add(listener);
    return () => this.disconnectListeners.delete(listener);
  }

  /** The cable is pulled: every call fails as libusb does, an in-flight bulk transfer too. */
  unplug(): void {
    this.present = false;
    for (const l of [...this.disconnectListeners]) queueMicrotask(l);
    this.opened = this.claimed = this.streaming = false;
    this.pendingBulk?.reject(new Error('LIBUSB_ERROR_NO_DEVICE'));
    this.pendingBulk = undefined;
  }

  replug(): void {
    this.present = true;
  }

  private check(): void {
    if (!this.present) throw new Error('LIBUSB_ERROR_NO_DEVICE');
  }

  // ---- UsbBulkDevice ---------------------------------------------------------------------------

  async open(): Promise<void> {
    this.check();
    this.opened = true;
  }
  async claim(iface: number): Promise<void> {
    this.check();
    if (!this.opened) throw new Error('LIBUSB_ERROR_ACCESS: device not open');
    if (iface !== 0) throw new Error(`LIBUSB_ERROR_NOT_FOUND: no interface ${iface}`);
    this.claimed = true;
  }
  async release(): Promise<void> {
    this.claimed = false;
  }
  async close(): Promise<void> {
    this.opened = this.claimed = this.streaming = false;
  }

  async controlOut(request: number, value: number, index: number, data: Uint8Array): Promise<void> {
    this.check();
    if (!this.opened) throw new Error('LIBUSB_ERROR_ACCESS: device not open');
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const chan = () => {
      if (index < 0 || index >= this.channelCount) throw new Stall(`channel ${index}`);
      return index;
    };
    switch (request) {
      case REQ.START:
        this.gen++;
        this.streaming = true;
        this.rtStartMs = undefined;
        this.rtPulses = 0;
        return;
      case REQ.STOP:
        this.gen++;
        this.streaming = false;
        this.out = [];
        this.outBytes = 0;
        this.merge.clear();
        return;
      case REQ.DELAY: {
        if (data.length !== 8) throw new Stall('delay needs 8 bytes');
        const v = dv.getBigInt64(0, true);
        if (v < -1_000_000_000n || v > 1_000_000_000n) throw new Stall('delay out of range');
        this.delayPs[chan()] = v;
        return;
      }
      case REQ.LEVEL: {
        if (data.length !== 8) throw new Stall('level needs 8 bytes');
        const v = dv.getFloat64(0, true);
        if (!(v >= -2.5 && v <= 2.5)) throw new Stall('level out of range');
        this.level[chan()] = v;
        return;
      }
      case REQ.EDGE: {
        const v = data.length === 4 ? dv.getInt32(0, true) : -1;
        if (v !== 0 && v !== 1) throw new Stall('edge must be 0 or 1');
        this.edge[chan()] = v;
        return;
      }
      case REQ.REFCLK: {
        const v = data.length === 4 ? dv.getInt32(0, true) : -1;
        if (v !== 0 && v !== 1) throw new Stall('reference clock must be 0 or 1');
        this.refClock = v;
        return;
      }
      default:
        throw new Stall(`unknown request 0x${request.toString(16)}`);
    }
    void value;
  }

  async controlIn(request: number, value: number, index: number, length: number): Promise<Uint8Array> {
    this.check();
    if (!this.opened) throw new Error('LIBUSB_ERROR_ACCESS: device not open');
    const out = new Uint8Array(8);
    const dv = new DataView(out.buffer);
    const ch = () => {
      if (index < 0 || index >= this.channelCount) throw new Stall(`channel ${index}`);
      return index;
    };
    switch (request) {
      case REQ.IDENTITY:
        return new TextEncoder().encode(this.identity).subarray(0, length);
      case REQ.DELAY:
        dv.setBigInt64(0, this.delayPs[ch()], true);
        return out.subarray(0, Math.min(8, length));
      case REQ.LEVEL:
        dv.setFloat64(0, this.level[ch()], true);
        return out.subarray(0, Math.min(8, length));
      case REQ.EDGE:
        dv.setInt32(0, this.edge[ch()], true);
        return out.subarray(0, Math.min(4, length));
      case REQ.REFCLK:
        dv.setInt32(0, this.refClock, true);
        return out.subarray(0, Math.min(4, length));
      default:
        throw new Stall(`unknown request 0x${request.toString(16)}`);
    }
    void value;
  }

  async bulkIn(endpoint: number, length: number, timeoutMs: number): Promise<Uint8Array> {
    this.check();
    if (!this.claimed) throw new Error('LIBUSB_ERROR_ACCESS: interface not claimed');
    if (endpoint !== 0x81) throw new Error(`LIBUSB_ERROR_NOT_FOUND: no endpoint 0x${endpoint.toString(16)}`);
    if (!this.streaming) {
      // Nothing to send: the transfer times out, as on hardware. Unplugging ends the wait early.
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, timeoutMs);
        this.pendingBulk = { reject: (e) => (clearTimeout(timer), reject(e)) };
      });
      this.pendingBulk = undefined;
      throw new Error('LIBUSB_TRANSFER_TIMED_OUT');
    }
    const want = length - (length % TAG_RECORD_BYTES);
    if (this.realtime) {
      // Wait (in short steps) until the FIFO has something or the transfer times out.
      const until = performance.now() + timeoutMs;
      for (;;) {
        this.refillRealtime();
        if (this.outBytes > 0) return this.take(want);
        if (performance.now() >= until) throw new Error('LIBUSB_TRANSFER_TIMED_OUT');
        await new Promise((r) => setTimeout(r, 1));
        this.check();
      }
    }
    if (this.source.ready && !this.source.ready()) {
      // No pulses yet (the source has not started): no time passes, the transfer times out.
      const until = performance.now() + timeoutMs;
      while (!this.source.ready()) {
        if (performance.now() >= until) throw new Error('LIBUSB_TRANSFER_TIMED_OUT');
        await new Promise((r) => setTimeout(r, 5));
        this.check();
      }
    }
    if (this.prefetch) return this.bulkInAhead(want);
    let rounds = 0;
    while (this.outBytes < want && rounds++ < 64) this.refill(want - this.outBytes);
    return this.take(want);
  }

  /** bulkIn's filling with `prefetch`: pulls emulated off the JS thread, the next one started ahead. */
  private async bulkInAhead(want: number): Promise<Uint8Array> {
    let rounds = 0;
    while (this.outBytes < want && rounds++ < 64) {
      const a = this.ahead ?? this.pullAhead();
      this.ahead = undefined;
      const got = await a.batch;
      this.check();
      if (got instanceof Error) throw got;
      if (a.gen !== this.gen) {
        // started before a STOP (or a START): its light came while the tagger was not streaming
        rounds--;
        if (!this.streaming) throw new Error('LIBUSB_TRANSFER_TIMED_OUT');
        continue;
      }
      this.absorb(got.tags, want - this.outBytes);
    }
    // A pull may cover several transfers: a pull still in flight is kept (the lab takes one at a time).
    this.ahead ??= this.pullAhead();
    return this.take(want);
  }

  private pullAhead(): Ahead {
    return { gen: this.gen, batch: this.source.nextPulsesAsync!(this.pulsesPerPull).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e)))) };
  }

  // ---- tag production --------------------------------------------------------------------------

  private push(bytes: Uint8Array): void {
    if (!bytes.length) return;
    this.out.push(bytes);
    this.outBytes += bytes.length;
  }

  private take(want: number): Uint8Array {
    const n = Math.min(want, this.outBytes);
    const first = this.out[0];
    if (first && first.length >= n) {
      // The whole transfer comes from one encoded chunk: hand out a view, no copy (the chunk is
      // never written again, like a completed transfer buffer).
      this.out[0] = first.subarray(n);
      if (!this.out[0].length) this.out.shift();
      this.outBytes -= n;
      return first.subarray(0, n);
    }
    const buf = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const head = this.out[0];
      const k = Math.min(head.length, n - at);
      buf.set(head.subarray(0, k), at);
      at += k;
      if (k === head.length) this.out.shift();
      else this.out[0] = head.subarray(k);
    }
    this.outBytes -= n;
    return buf;
  }

  private refill(bytesWanted: number): void {
    this.absorb(this.source.nextPulses(this.pulsesPerPull).tags, bytesWanted);
  }

  /** A pull's tags into the FIFO (adapting the pull size to the transfers asked for). */
  private absorb(tags: { timePs: BigInt64Array; channel: Uint8Array }, bytesWanted: number): void {
    const n = tags.timePs.length;
    // Adapt the pull size so that one pull fills about one transfer.
    const wantTags = bytesWanted / TAG_RECORD_BYTES;
    if (n < wantTags / 2) this.pulsesPerPull = Math.min(this.pulsesPerPull * 2, 1e10);
    else if (n > wantTags * 4 && this.pulsesPerPull > 1000) this.pulsesPerPull = Math.max(1000, Math.floor(this.pulsesPerPull / 2));
    if (!n) return;
    let times = tags.timePs;
    let chans = tags.channel;
    if (this.lose > 0) {
      // Injected overflow: the first `lose` tags are lost.
      const k = Math.min(this.lose, n);
      this.loseTags(times.subarray(0, k), chans.subarray(0, k));
      this.lose -= k;
      times = times.subarray(k);
      chans = chans.subarray(k);
      if (this.lose > 0 || !times.length) return;
    }
    this.accept(times, chans);
  }

  /** Tags that did not fit: open the overflow (once) and count them per channel. */
  private loseTags(times: BigInt64Array, chans: Uint8Array): void {
    if (!times.length) return;
    for (let i = 0; i < chans.length; i++) this.lostPerChannel.set(chans[i], (this.lostPerChannel.get(chans[i]) ?? 0) + 1);
    if (!this.inOverflow) {
      this.flushHeld();
      this.push(encodeTagRecords([{ type: TAG_TYPE.OVERFLOW_BEGIN, missedEvents: 0, channel: 0, timePs: times[0] }]));
      this.inOverflow = true;
    }
    this.overflowEndPs = times[times.length - 1];
  }

  /** Tags that fit: close an open overflow first (END + MISSED_EVENTS per channel), then queue them. */
  private accept(times: BigInt64Array, chans: Uint8Array): void {
    if (this.inOverflow) {
      this.inOverflow = false;
      const end = times.length ? times[0] : this.overflowEndPs;
      const recs: TagRecord[] = [{ type: TAG_TYPE.OVERFLOW_END, missedEvents: 0, channel: 0, timePs: end }];
      for (const [ch, c] of [...this.lostPerChannel].sort((a, b) => a[0] - b[0])) {
        for (let left = c; left > 0; left -= 0xffff) recs.push({ type: TAG_TYPE.MISSED_EVENTS, missedEvents: Math.min(left, 0xffff), channel: ch, timePs: end });
      }
      this.lostPerChannel.clear();
      this.push(encodeTagRecords(recs));
    }
    if (!times.length) return;
    // Input conditioning: a channel whose trigger level is above the detector's pulse amplitude
    // sees nothing; on the falling edge a click is time-stamped one pulse width later.
    if (this.level.some((l) => l >= DETECTOR_PULSE_V)) {
      const keep: number[] = [];
      for (let i = 0; i < chans.length; i++) if (!(this.level[chans[i]] >= DETECTOR_PULSE_V)) keep.push(i);
      times = BigInt64Array.from(keep, (i) => times[i]);
      chans = Uint8Array.from(keep, (i) => chans[i]);
      if (!times.length) return;
    }
    const eff = this.delayPs.map((d, c) => d + (this.edge[c] === 1 ? DETECTOR_PULSE_WIDTH_PS : 0n));
    if (eff.every((d) => d === eff[0])) {
      // Same delay everywhere: order is kept, shift and encode directly.
      this.flushHeld();
      this.push(this.nativeRecords ? encodeTimeTagsNative(times, chans, eff[0]) : this.encodeShifted(times, chans, eff[0]));
      return;
    }
    // Different delays per channel: tags may swap order (./delay-merge.ts).
    this.push(this.merge.push(times, chans, eff));
  }

  /** The TypeScript encoder (reference of encodeTimeTagsNative): shift by `d`, then encode. */
  private encodeShifted(times: BigInt64Array, chans: Uint8Array, d: bigint): Uint8Array {
    let t = times;
    if (d !== 0n) {
      t = new BigInt64Array(times.length);
      for (let i = 0; i < t.length; i++) t[i] = times[i] + d;
    }
    const bytes = new Uint8Array(t.length * TAG_RECORD_BYTES);
    encodeTimeTags(t, chans, 0, t.length, bytes);
    return bytes;
  }

  /**
   * Real-time mode: emulated time advances with the wall clock (x speed); the pulses due since the
   * last transfer are emulated now and their tags go into the FIFO; what does not fit is lost and
   * reported in band, exactly as a tagger whose host reads too slowly.
   */
  private refillRealtime(): void {
    const rt = this.realtime!;
    const now = rt.now();
    this.rtStartMs ??= now;
    const due = Math.floor(((now - this.rtStartMs) / 1000) * rt.speed * this.repRateHz) - this.rtPulses;
    if (due <= 0) return;
    this.rtPulses += due;
    for (let left = due; left > 0; ) {
      const k = Math.min(left, 1e9);
      left -= k;
      const { tags } = this.source.nextPulses(k);
      const room = Math.max(0, rt.fifoRecords - this.outBytes / TAG_RECORD_BYTES - this.merge.held);
      const fit = Math.min(room, tags.timePs.length);
      if (fit > 0) this.accept(tags.timePs.subarray(0, fit), tags.channel.subarray(0, fit));
      this.loseTags(tags.timePs.subarray(fit), tags.channel.subarray(fit));
    }
  }

  /** Releases every held tag (delays became equal, an overflow, a stop). */
  private flushHeld(): void {
    this.push(this.merge.flush());
  }
}
