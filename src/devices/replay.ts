/**
 * A recording from a real instrument as a TimeTagger: the "file device" every tagger vendor
 * ships. PicoQuant .ptu (T2 and T3), quTAG binary and qcrypto a1 files (src/core/records.ts,
 * decoded natively) replay through the same interface `qkd calibrate`, `qkd run --config`,
 * `qkd histogram --device` and the dashboard consume, so anything that reads a live tagger can
 * be pointed at a recording: node configuration `{ "id": "lab-ptu", "replay": "run1.ptu" }`
 * (optional `"replayFormat"`, and `"replayChannels": {"1": 0, "2": 1}` to map recording channels
 * onto the tagger channels the node's detector mapping uses), or `openRecordingTagger(file)`.
 * Its profile is `replay` (hw-profiles/devices/replay.json); as Bob's tagger in `qkd run
 * --config`, his node runs from the file and ends when the recording does.
 *
 * What a replay is and is not:
 * - Tags come as fast as the consumer reads them (no wall-clock pacing), in time order, times in
 *   ps from the start of the recording; channel 0 is the instrument's sync / start input, inputs
 *   from 1 (src/core/records.ts). T3 tags carry their absolute time (nsync x period + dtime).
 * - PicoQuant markers (channels 128 + bit) are not tags: they are left out unless their channels
 *   are asked for in `startStream({channels})` (they may sit slightly out of time order).
 * - Records the file cannot express as tags are reported in band, never dropped silently:
 *   reserved channel codes as ERROR events (channel -1, count in `missedEvents`), quTAG events
 *   that arrived beyond the re-ordering window as MISSED_EVENTS on their channel.
 * - Settings (delay, trigger level, edge, reference clock) are accepted, checked against the
 *   capabilities and read back, but do not alter the recorded times (as record.ts's replay).
 *
 * Concurrency: like a driver, any method from the JS thread at any time; one stream at a time
 * (DeviceError 'STREAM_BUSY'); `stop()` or `break` ends it; `close()` ends it too.
 */
import { EventEmitter } from 'node:events';
import { basename } from 'node:path';
import { DeviceError, TransportError } from '../errors.ts';
import { MARKER_CHANNEL, openRecording, type OpenRecordingOptions, type Recording, type RecordingFormat } from '../core/records.ts';
import { checkValue } from './drivers/base.ts';
import { TAG_TYPE, type Capability, type DeviceIdentity, type DeviceState, type StateChange, type TagEvent, type TagStream, type TagStreamBatch, type TagStreamOptions, type TimeTagger } from './types.ts';

export interface ReplayTaggerOptions extends OpenRecordingOptions {
  id?: string;
  /**
   * Recording channel -> tagger channel (node configuration `replayChannels`, e.g. `{"1": 0,
   * "2": 1}` for a two-detector recording feeding a node whose detector mapping uses 0 and 1).
   * Only the mapped channels are streamed (the others are left out, counted in `unmappedTags`);
   * a mapped channel the recorded instrument does not have is refused at open.
   */
  channelMap?: Record<number, number>;
}

/** Input channels a recording's instrument has (from its header / format), sync included. */
function inputChannels(rec: Recording): number[] {
  const i = rec.info;
  const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, k) => a + k);
  if (i.format === 'a1' || i.format === 'a1-legacy') return range(1, 4);
  if (i.format === 'qutag') return range(0, 8);
  if (i.description.startsWith('PicoHarp')) return i.t3 ? range(1, 4) : [0, 1];
  const n = Number(i.header.HW_InpChannels ?? 8);
  return i.t3 ? range(1, Math.max(1, n)) : range(0, Math.max(1, n));
}

export class ReplayTagger extends EventEmitter implements TimeTagger {
  readonly kind = 'time-tagger' as const;
  readonly profile: string;
  private _state: DeviceState = 'closed';
  private rec: Recording | undefined;
  private active: TagStream | undefined;
  private readonly values = new Map<string, number>();
  private chans: number[] = [];
  private readonly map: Map<number, number> | undefined;
  /** Tags of recording channels left out by the channel map (since open). */
  unmappedTags = 0;

  constructor(readonly file: string, readonly id: string = `replay:${basename(file)}`, private readonly opts: OpenRecordingOptions & { channelMap?: Record<number, number> } = {}) {
    super();
    // The profile every replay shares (hw-profiles/devices/replay.json); the format is in the identity.
    this.profile = 'replay';
    if (opts.channelMap) {
      this.map = new Map();
      const targets = new Set<number>();
      for (const [from, to] of Object.entries(opts.channelMap)) {
        const f = Number(from);
        if (!/^\d+$/.test(from) || f > 255 || !Number.isInteger(to) || to < 0 || to > 255 || targets.has(to)) {
          throw new DeviceError('BAD_CHANNEL_MAP', `${this.where}: replayChannels maps recording channels (0..255) to distinct tagger channels (0..255); '${from}': ${JSON.stringify(to)} is not one. Fix the node configuration.`);
        }
        targets.add(to);
        this.map.set(f, to);
      }
      if (!this.map.size) throw new DeviceError('BAD_CHANNEL_MAP', `${this.where}: replayChannels is empty: map at least one recording channel to a tagger channel.`);
    }
  }

  get state(): DeviceState {
    return this._state;
  }

  /** The recording (after `open()`): format, header, resolution. */
  get recording(): Recording | undefined {
    return this.rec;
  }

  private setState(state: DeviceState, reason?: string): void {
    if (state === this._state) return;
    const change: StateChange = { state, previous: this._state, ...(reason ? { reason } : {}) };
    this._state = state;
    this.emit('state', change);
  }

  private get where(): string {
    return `${this.id} (replay of ${this.file})`;
  }

  async open(): Promise<DeviceIdentity> {
    if (this._state === 'ready' && this.rec) return this.identityOf(this.rec);
    this.setState('connecting');
    try {
      this.rec = await openRecording(this.file, this.opts);
    } catch (err) {
      this.setState('closed', (err as Error).message);
      throw err;
    }
    const inputs = inputChannels(this.rec);
    if (this.map) {
      const missing = [...this.map.keys()].filter((c) => !inputs.includes(c));
      if (missing.length) {
        const err = new DeviceError('CHANNEL_NOT_IN_RECORDING', `${this.where}: replayChannels names channel ${missing.join(', ')}, which the recorded instrument (${this.rec.info.description}) does not have; its channels are ${inputs.join(', ')} (0 = sync / start input, inputs from 1). Fix "replayChannels" in the node configuration.`);
        this.rec = undefined;
        this.setState('closed', err.message);
        throw err;
      }
      this.chans = [...this.map.values()].sort((a, b) => a - b);
    } else this.chans = inputs;
    this.setState('ready');
    return this.identityOf(this.rec);
  }

  private identityOf(rec: Recording): DeviceIdentity {
    const h = rec.info.header;
    const vendor = rec.info.format === 'ptu' ? 'PicoQuant' : rec.info.format === 'qutag' ? 'qutools' : 'qcrypto';
    const model = rec.info.format === 'ptu' ? String(h.HW_Type ?? rec.info.description) : rec.info.description;
    return { vendor, model: `${model} (recording)`, serial: String(h.HW_SerialNo ?? basename(this.file)), firmware: `file:${rec.info.format}` };
  }

  async close(): Promise<void> {
    await this.active?.stop();
    this.rec = undefined;
    this.setState('closed');
  }

  async identity(): Promise<DeviceIdentity> {
    this.requireReady('read its identity');
    return this.identityOf(this.rec!);
  }

  private requireReady(what: string): void {
    if (this._state !== 'ready') throw new TransportError('NOT_CONNECTED', `${this.where} is ${this._state}, cannot ${what}. Open it first.`);
  }

  channels(): number[] {
    return [...this.chans];
  }

  capabilities(): Record<string, Capability> {
    const channels = this.channels();
    return {
      delay: { min: -1e9, max: 1e9, step: 1, unit: 'ps', channels, description: 'input delay (read back only: a recording keeps its times)' },
      trigger_level: { min: -2, max: 2, step: 0, unit: 'V', channels, description: 'trigger level (read back only)' },
      edge: { min: 0, max: 1, step: 1, unit: 'enum', channels, labels: ['rising', 'falling'], description: 'active edge (read back only)' },
      reference_clock: { min: 0, max: 1, step: 1, unit: 'enum', labels: ['internal', 'external'], description: 'reference clock (read back only)' },
    };
  }

  private param(param: string): { cap: Capability; key: string } {
    const [name, ch, extra] = param.split(':');
    const cap = this.capabilities()[name];
    if (!cap || extra !== undefined) throw new DeviceError('UNKNOWN_PARAMETER', `${this.where}: no parameter '${param}'; known: ${Object.keys(this.capabilities()).join(', ')}.`);
    if (cap.channels) {
      const c = Number(ch);
      if (ch === undefined || !Number.isInteger(c) || !cap.channels.includes(c)) {
        throw new DeviceError('UNKNOWN_CHANNEL', `${this.where}: address '${name}' as ${name}:<channel> with channel one of ${cap.channels.join(', ')}.`);
      }
    } else if (ch !== undefined) throw new DeviceError('UNKNOWN_PARAMETER', `${this.where}: '${name}' has no channels.`);
    return { cap, key: param };
  }

  async get(param: string): Promise<number> {
    const { key } = this.param(param);
    this.requireReady(`read ${param}`);
    return this.values.get(key) ?? 0;
  }

  async set(param: string, value: number): Promise<void> {
    const { cap, key } = this.param(param);
    checkValue(this.where, param, cap, value);
    this.requireReady(`set ${param}`);
    this.values.set(key, value);
  }

  setDelayPs(channel: number, delayPs: number) {
    return this.set(`delay:${channel}`, delayPs);
  }
  async delayPs(channel: number): Promise<number> {
    return this.get(`delay:${channel}`);
  }
  setThresholdV(channel: number, volts: number) {
    return this.set(`trigger_level:${channel}`, volts);
  }
  setEdge(channel: number, edge: 0 | 1) {
    return this.set(`edge:${channel}`, edge);
  }
  setReferenceClock(source: 0 | 1) {
    return this.set('reference_clock', source);
  }

  startStream(options: TagStreamOptions = {}): TagStream {
    this.requireReady('start a stream');
    if (this.active) throw new DeviceError('STREAM_BUSY', `${this.where} is already streaming; stop that stream first.`);
    const rec = this.rec!;
    const wanted = options.channels ? new Set(options.channels) : undefined;
    const map = this.map;
    // With a channel map, `channels` are tagger channels (after the map).
    const keep = map ? (c: number) => { const m = map.get(c); return m !== undefined && (!wanted || wanted.has(m)); } : (c: number) => (wanted ? wanted.has(c) : c < MARKER_CHANNEL);
    const maxTags = options.maxTags ?? Infinity;
    // As many tags per batch as a USB transfer of that size would hold (16-byte records); 64 Ki default.
    const eventsPerChunk = options.transferBytes ? Math.max(4, Math.floor(options.transferBytes / 16)) : 65536;
    const stats = { tags: 0, batches: 0, overflows: 0, missedEvents: 0, errors: 0 };
    let stopped = false;
    const self = this;

    async function* iterate(): AsyncGenerator<TagStreamBatch> {
      const source = rec.chunks({ eventsPerChunk });
      let seq = 0;
      let illegal = 0;
      let late = new Map<number, number>();
      try {
        for await (const c of source) {
          if (stopped) break;
          let n = c.timePs.length;
          let timePs = c.timePs;
          let channel = c.channel;
          let all = true;
          for (let i = 0; i < n; i++) if (!keep(channel[i])) { all = false; break; }
          if (!all) {
            const idx: number[] = [];
            for (let i = 0; i < n; i++) if (keep(channel[i])) idx.push(i);
            if (map) for (let i = 0; i < n; i++) if (channel[i] < MARKER_CHANNEL && !map.has(channel[i])) self.unmappedTags++;
            timePs = BigInt64Array.from(idx, (i) => c.timePs[i]);
            channel = Uint8Array.from(idx, (i) => c.channel[i]);
            n = idx.length;
          }
          if (map) channel = Uint8Array.from(channel, (ch) => map.get(ch)!);
          if (stats.tags + n > maxTags) {
            n = maxTags - stats.tags;
            timePs = timePs.slice(0, n);
            channel = channel.slice(0, n);
          }
          // In-band reports of what the decoder could not turn into tags (since the last batch).
          const events: TagEvent[] = [];
          const st = rec.stats();
          const at = n ? timePs[n - 1] : 0n;
          if (st.illegal > illegal) {
            events.push({ type: TAG_TYPE.ERROR, index: n, channel: -1, timePs: at, missedEvents: st.illegal - illegal });
            stats.errors++;
            illegal = st.illegal;
          }
          for (const [ch, v] of st.latePerChannel) {
            const d = v - (late.get(ch) ?? 0);
            if (d > 0) {
              events.push({ type: TAG_TYPE.MISSED_EVENTS, index: n, channel: map ? map.get(ch) ?? -1 : ch, timePs: at, missedEvents: d });
              stats.missedEvents += d;
            }
          }
          late = st.latePerChannel;
          if (n === 0 && !events.length) continue;
          stats.tags += n;
          stats.batches++;
          yield { seq: seq++, timePs, channel, events };
          if (stats.tags >= maxTags) break;
        }
      } finally {
        stopped = true;
        await source.return(undefined);
        self.active = undefined;
      }
    }

    const gen = iterate();
    const stream: TagStream = {
      stats,
      [Symbol.asyncIterator]: () => gen,
      async stop() {
        stopped = true;
        await gen.return(undefined).catch(() => undefined);
        self.active = undefined;
      },
    };
    this.active = stream;
    return stream;
  }
}

/** Opens a recording as a TimeTagger (format from the file unless given). */
export async function openRecordingTagger(file: string, opts: ReplayTaggerOptions & { format?: RecordingFormat } = {}): Promise<ReplayTagger> {
  // opts (format, channelMap, ...) go to the tagger; id is its name.
  const t = new ReplayTagger(file, opts.id, opts);
  await t.open();
  return t;
}
