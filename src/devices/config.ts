/**
 * The node configuration's device section and the registry that opens what it lists.
 *
 * File (JSON; `qkd --config <file>`, or env QKD_NODE_CONFIG; without one, DEFAULT_NODE_CONFIG):
 *
 * ```json
 * {
 *   "emulated": { "preset": "reference-decoy", "seed": "1", "distanceKm": 50, "stateFile": "~/.qkd/emulated-devices.json" },
 *   "devices": [
 *     { "id": "alice-source",   "profile": "emulab-ps1",   "emulated": true },
 *     { "id": "bob-detector-0", "profile": "emulab-spad1", "emulated": true, "channel": 0 },
 *     { "id": "bob-tagger",     "profile": "emulab-tt8",   "emulated": true },
 *     { "id": "lab-spad",       "profile": "emulab-spad1", "port": "/dev/ttyUSB0" }
 *   ]
 * }
 * ```
 * A device is emulated (`"emulated": true`: its instrument runs in this process behind the
 * answering serialport binding or at the USB transfer level) or real (`"port"` for serial, the
 * profile's VID/PID for USB). `channel` ties a detector to the tagger channel it feeds.
 *
 * Emulated state between CLI invocations: the emulators run only while a command runs; their
 * settings are loaded from `emulated.stateFile` at start and written back at the end
 * (`DeviceSet.close()`), so `qkd device bob-detector-0 set dead_time 100` is seen by the next
 * `qkd device bob-detector-0 get dead_time`. Delete the file to return to power-on values.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, renameSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { ConfigError } from '../errors.ts';
import { loadProfile, validateSchema, type DeviceProfile, type Schema, type SerialSettings } from './profile.ts';
import type { AnyDevice } from './types.ts';
import { EmulatedLab } from './emulated/lab.ts';
import { EmulatedPhotonSource, EmulatedSpadDetector } from './emulated/instruments.ts';
import { EmulatedSerialBinding } from './emulated/serial-binding.ts';
import { EmulatedUsbTagger } from './emulated/usb-tagger.ts';
import { EmulatedTdc1, startTdc1OnPty, type Tdc1Pty } from './emulated/tdc1.ts';
import { Tdc1Driver } from './drivers/tdc1.ts';
import type { ScpiInstrument } from './emulated/scpi.ts';
import { SerialLineTransport } from './transports/serial.ts';
import { openUsbBulkDevice } from './transports/usb.ts';
import { createSerialDriver } from './drivers/scpi.ts';
import { TimeTaggerDriver } from './drivers/tagger.ts';
import type { ReconnectPolicy } from './drivers/base.ts';
import { ReplayTagger } from './replay.ts';
import { RECORDING_FORMATS, type RecordingFormat } from '../core/records.ts';
import { EmulatedId900 } from './emulated/idq-id900.ts';
import { EmulatedSqSnspd } from './emulated/sq-snspd.ts';
import { EmulatedSpdcBoard, startInstrumentOnPty, type InstrumentPty } from './emulated/s15-spdc.ts';
import { ZmqScpiTransport } from './transports/zmq.ts';
import { TcpJsonTransport, type TcpJsonAddress } from './transports/tcp-json.ts';
import { Id900Driver } from './drivers/idq-id900.ts';
import { SqSnspdDriver } from './drivers/sq-snspd.ts';
import { SpdcBoardDriver } from './drivers/s15-spdc.ts';

export interface DeviceEntry {
  id: string;
  profile: string;
  emulated?: boolean;
  /** Serial device path for a real serial device (or a pty link). */
  port?: string;
  /**
   * Network address of a real network instrument (ZeroMQ or TCP profiles: IDQ Time Controller,
   * Single Quantum controller): `192.168.1.10`, or `host:port` to override the profile's port.
   */
  host?: string;
  /** Tagger channel a detector feeds. */
  channel?: number;
  /** Apply the profile's defaults when opened. */
  applyDefaults?: boolean;
  /**
   * A recording (.ptu, quTAG binary, a1) replayed as this time-tagger (src/devices/replay.ts);
   * relative to the configuration file's folder. Such an entry needs no profile.
   */
  replay?: string;
  /** Format of `replay` when its magic bytes / name do not tell (ptu, qutag, a1, a1-legacy). */
  replayFormat?: RecordingFormat;
  /** Recording channel -> tagger channel (`{"1": 0, "2": 1}`); only mapped channels are streamed. */
  replayChannels?: Record<string, number>;
}

export interface NodeDeviceConfig {
  emulated?: { preset?: string; seed?: string; distanceKm?: number; stateFile?: string };
  devices: DeviceEntry[];
  /** Where it came from (messages). */
  file?: string;
}

export const DEFAULT_NODE_CONFIG: NodeDeviceConfig = {
  emulated: { preset: 'reference-decoy', seed: '1' },
  devices: [
    { id: 'alice-source', profile: 'emulab-ps1', emulated: true },
    { id: 'bob-detector-0', profile: 'emulab-spad1', emulated: true, channel: 0 },
    { id: 'bob-detector-1', profile: 'emulab-spad1', emulated: true, channel: 1 },
    { id: 'bob-tagger', profile: 'emulab-tt8', emulated: true },
  ],
  file: '(built-in emulated set)',
};

const CONFIG_SCHEMA: Schema = {
  type: 'object',
  required: ['devices'],
  properties: {
    $schema: { type: 'string' },
    $comment: { type: 'string' },
    emulated: {
      type: 'object',
      properties: {
        preset: { type: 'string', minLength: 1 },
        seed: { type: 'string', minLength: 1 },
        distanceKm: { type: 'number', minimum: 0, maximum: 1000 },
        stateFile: { type: 'string', minLength: 1 },
      },
      additionalProperties: false,
    },
    devices: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['id'],
        properties: {
          id: { type: 'string', minLength: 1 },
          profile: { type: 'string', minLength: 1 },
          emulated: { type: 'boolean' },
          port: { type: 'string', minLength: 1 },
          host: { type: 'string', minLength: 1 },
          channel: { type: 'number', integer: true, minimum: 0, maximum: 255 },
          applyDefaults: { type: 'boolean' },
          replay: { type: 'string', minLength: 1 },
          replayFormat: { type: 'string', enum: RECORDING_FORMATS },
          replayChannels: { type: 'object', properties: {}, additionalProperties: { type: 'number', integer: true, minimum: 0, maximum: 255 } },
        },
        additionalProperties: false,
      },
    },
  },
  additionalProperties: false,
};

/** Validates a parsed node configuration (its device part); errors name file and field. */
export function parseNodeConfig(raw: unknown, file: string): NodeDeviceConfig {
  const o = raw as Record<string, unknown>;
  // Only check our sections; the rest of the node configuration is validated by its owners.
  const mine = raw && typeof raw === 'object' && !Array.isArray(raw)
    ? { ...(o.devices !== undefined ? { devices: o.devices } : {}), ...(o.emulated !== undefined ? { emulated: o.emulated } : {}) }
    : raw;
  const errs = validateSchema(mine, CONFIG_SCHEMA);
  const cfg = mine as NodeDeviceConfig;
  if (!errs.length) {
    const seen = new Set<string>();
    cfg.devices.forEach((d, i) => {
      if (seen.has(d.id)) errs.push(`field "devices[${i}].id": expected a unique id, got ${JSON.stringify(d.id)} twice`);
      seen.add(d.id);
      if (d.replay !== undefined) {
        if (d.emulated || d.port !== undefined) errs.push(`field "devices[${i}]": a "replay" device has no "emulated" or "port"`);
        d.profile ??= 'replay';
      } else if (d.profile === undefined) errs.push(`field "devices[${i}].profile": expected a profile name (hw-profiles/devices/), or "replay": "<recording>", got nothing`);
      else if (!d.emulated && d.port === undefined) {
        // USB devices are found by the profile's VID/PID; serial ones need a port.
        let p: DeviceProfile | undefined;
        try {
          p = loadProfile(d.profile);
        } catch {
          /* reported when opened */
        }
        if (p?.transport.type === 'serial') errs.push(`field "devices[${i}].port": expected a serial port path (or "emulated": true) for ${d.id}, got nothing`);
        if ((p?.transport.type === 'zmq' || p?.transport.type === 'tcp') && d.host === undefined) errs.push(`field "devices[${i}].host": expected the instrument's network address (or "emulated": true) for ${d.id}, got nothing`);
      }
      if (d.emulated && d.port !== undefined) errs.push(`field "devices[${i}]": expected either "emulated": true or "port", not both`);
      if (d.emulated && d.host !== undefined) errs.push(`field "devices[${i}]": expected either "emulated": true or "host", not both`);
    });
    if (cfg.emulated?.seed !== undefined && !/^\d+$/.test(cfg.emulated.seed)) errs.push(`field "emulated.seed": expected a decimal integer string, got ${JSON.stringify(cfg.emulated.seed)}`);
  }
  if (errs.length) throw new ConfigError('BAD_NODE_CONFIG', `${file}: ${errs.slice(0, 5).join('; ')}. Fix the node configuration (see docs/devices.md).`);
  return { ...cfg, file };
}

export function loadNodeConfig(file?: string): NodeDeviceConfig {
  const path = file ?? process.env.QKD_NODE_CONFIG;
  if (!path) return structuredClone(DEFAULT_NODE_CONFIG);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    throw new ConfigError('CONFIG_NOT_FOUND', `${path}: cannot read the node configuration (${(cause as NodeJS.ErrnoException).code}).`, { cause });
  }
  try {
    return parseNodeConfig(JSON.parse(text), path);
  } catch (cause) {
    if (cause instanceof ConfigError) throw cause;
    throw new ConfigError('BAD_NODE_CONFIG', `${path}: not valid JSON (${(cause as Error).message}).`, { cause });
  }
}

export function stateFilePath(cfg: NodeDeviceConfig): string {
  const f = cfg.emulated?.stateFile;
  if (f) return resolve(f.startsWith('~/') ? join(homedir(), f.slice(2)) : f);
  return join(process.env.QKD_STATE_DIR ?? join(homedir(), '.qkd'), 'emulated-devices.json');
}

export interface DeviceSlot {
  entry: DeviceEntry;
  profile?: DeviceProfile;
  device?: AnyDevice;
  /** Emulated back end (instrument or USB tagger), for state persistence and fault injection. */
  emulator?: ScpiInstrument | EmulatedUsbTagger | EmulatedTdc1 | EmulatedId900 | EmulatedSqSnspd;
  /** Why the device could not be built (bad profile, …). */
  error?: Error;
  transport: string;
}

export interface OpenSetOptions {
  /** Persist emulated state to the state file (CLI: yes; tests: usually no). */
  persist?: boolean;
  reconnect?: Partial<ReconnectPolicy>;
}

/**
 * The devices of a node configuration, built but not opened (call `open(id)` or `openAll()`).
 * Emulated devices share one EmulatedLab.
 */
export class DeviceSet {
  readonly slots = new Map<string, DeviceSlot>();
  readonly binding = new EmulatedSerialBinding();
  lab: EmulatedLab | undefined;
  private readonly stateFile: string;

  constructor(
    readonly config: NodeDeviceConfig,
    private readonly opts: OpenSetOptions = {},
  ) {
    this.stateFile = stateFilePath(config);
    const saved = opts.persist ? this.readState() : {};
    const needsLab = config.devices.some((d) => d.emulated);
    if (needsLab) {
      const e = config.emulated ?? {};
      this.lab = new EmulatedLab({ preset: e.preset ?? 'reference-decoy', seed: BigInt(e.seed ?? '1'), ...(e.distanceKm !== undefined ? { distanceKm: e.distanceKm } : {}) });
    }
    for (const entry of config.devices) this.slots.set(entry.id, this.build(entry, saved[entry.id]));
  }

  private build(entry: DeviceEntry, saved: Record<string, number> | undefined): DeviceSlot {
    if (entry.replay !== undefined) {
      const base = this.config.file && existsSync(this.config.file) ? dirname(resolve(this.config.file)) : process.cwd();
      const file = resolve(base, entry.replay);
      try {
        const device = new ReplayTagger(file, entry.id, { ...(entry.replayFormat ? { format: entry.replayFormat } : {}), ...(entry.replayChannels ? { channelMap: entry.replayChannels } : {}) });
        return { entry, device, transport: `replay ${file}` };
      } catch (error) {
        return { entry, error: error as Error, transport: `replay ${file}` };
      }
    }
    let profile: DeviceProfile;
    try {
      profile = loadProfile(entry.profile);
    } catch (error) {
      return { entry, error: error as Error, transport: '-' };
    }
    const reconnect = this.opts.reconnect;
    const common = { id: entry.id, reconnect, applyDefaults: entry.applyDefaults };
    if (profile.transport.type === 'serial' && profile.kind === 'time-tagger') return this.buildSerialTagger(entry, profile, saved, common);
    if (profile.transport.type === 'zmq' || profile.transport.type === 'tcp' || profile.kind === 'laser') return this.buildInstrument(entry, profile, saved, common);
    if (profile.transport.type === 'serial') {
      let path = entry.port ?? '';
      let emulator: ScpiInstrument | undefined;
      if (entry.emulated) {
        emulator = profile.kind === 'photon-source' ? new EmulatedPhotonSource(this.lab) : new EmulatedSpadDetector(this.lab, { channel: entry.channel ?? 0, serial: `SPD1-${entry.id}` });
        if (saved) emulator.restore(saved);
        path = this.binding.attach(entry.id, emulator);
      }
      const transport = new SerialLineTransport({ path, settings: profile.transport, ...(entry.emulated ? { binding: this.binding } : {}) });
      const device = createSerialDriver(profile, { ...common, transport });
      return { entry, profile, device, emulator, transport: entry.emulated ? `serial (emulated)` : `serial ${path}` };
    }
    const usbSettings = profile.transport;
    if (usbSettings.type !== 'usb') return { entry, profile, error: new ConfigError('BAD_PROFILE', `${profile.file}: no driver for a ${profile.kind} on ${usbSettings.type}.`), transport: '-' };
    if (entry.emulated) {
      const emulator = new EmulatedUsbTagger(this.lab!);
      if (saved) emulator.restore(saved);
      const device = new TimeTaggerDriver({ ...common, profile, device: emulator });
      return { entry, profile, device, emulator, transport: 'usb (emulated)' };
    }
    const device = new TimeTaggerDriver({ ...common, profile, device: () => openUsbBulkDevice(usbSettings.vendorId, usbSettings.productId) });
    return { entry, profile, device, transport: `usb ${usbSettings.vendorId.toString(16).padStart(4, '0')}:${usbSettings.productId.toString(16).padStart(4, '0')}` };
  }

  /** Run at close (emulated units on ptys: socat and its folder). */
  private readonly cleanups: (() => Promise<void>)[] = [];

  /**
   * A time-tagger on a serial line (the S-Fifteen TDC1): real on `port`, or emulated on a socat
   * pty pair started when the driver first connects (so listing the set starts nothing), fed by
   * this set's emulated lab, so the real transport and driver run against it.
   */
  private buildSerialTagger(entry: DeviceEntry, profile: DeviceProfile, saved: Record<string, number> | undefined, common: { id: string; reconnect?: Partial<ReconnectPolicy>; applyDefaults?: boolean }): DeviceSlot {
    const settings = profile.transport as SerialSettings;
    if (!entry.emulated) {
      const transport = new SerialLineTransport({ path: entry.port!, settings });
      return { entry, profile, device: new Tdc1Driver({ ...common, profile, transport }), transport: `serial ${entry.port}` };
    }
    const emulator = new EmulatedTdc1(this.lab!, { serial: `TDC1-${entry.id}` });
    if (saved) emulator.restore(saved);
    const dir = mkdtempSync(join(tmpdir(), 'qkd-tdc1-'));
    let pty: Promise<Tdc1Pty> | undefined;
    this.cleanups.push(async () => {
      await pty?.then((p) => p.close(), () => undefined);
      rmSync(dir, { recursive: true, force: true });
    });
    const transport = new SerialLineTransport({ path: join(dir, 'tdc1-A'), settings });
    const device = new Tdc1Driver({ ...common, profile, transport, prepare: async () => void (await (pty ??= startTdc1OnPty(emulator, dir))) });
    return { entry, profile, device, emulator, transport: 'serial (emulated, pty)' };
  }

  /**
   * The lab instruments beside the key path (docs/devices.md): an IDQ Time Controller (SCPI over
   * ZeroMQ), a Single Quantum SNSPD controller (JSON over TCP), an S-Fifteen SPDC board (serial).
   * Emulated ones start on first connect, on real sockets (ephemeral ports on 127.0.0.1) or a
   * socat pty pair, so the real transports and drivers run against them.
   */
  private buildInstrument(entry: DeviceEntry, profile: DeviceProfile, saved: Record<string, number> | undefined, common: { id: string; reconnect?: Partial<ReconnectPolicy>; applyDefaults?: boolean }): DeviceSlot {
    const t = profile.transport;
    const hostPort = (defaultPort: number) => {
      const [h, p] = (entry.host ?? '').split(':');
      return { host: h, port: p ? Number(p) : defaultPort };
    };
    if (t.type === 'zmq') {
      if (!entry.emulated) {
        const a = hostPort(t.port);
        const transport = new ZmqScpiTransport({ endpoint: `tcp://${a.host}:${a.port}`, timeoutMs: t.timeoutMs });
        return { entry, profile, device: new Id900Driver({ ...common, profile, transport }), transport: `zmq ${a.host}:${a.port}` };
      }
      const emulator = new EmulatedId900({ serial: `ID900-${entry.id}` });
      if (saved) emulator.restore(saved);
      let started: Promise<string> | undefined;
      this.cleanups.push(async () => void (started && (await emulator.stop())));
      const transport = new ZmqScpiTransport({ endpoint: () => (started ??= emulator.start()), timeoutMs: t.timeoutMs });
      return { entry, profile, device: new Id900Driver({ ...common, profile, transport }), emulator, transport: 'zmq (emulated, 127.0.0.1)' };
    }
    if (t.type === 'tcp') {
      if (!entry.emulated) {
        const a = hostPort(t.port);
        const transport = new TcpJsonTransport({ address: { host: a.host, port: a.port, countsPort: t.countsPort }, frameEnd: t.frameEnd, timeoutMs: t.timeoutMs });
        return { entry, profile, device: new SqSnspdDriver({ ...common, profile, transport }), transport: `tcp ${a.host}:${a.port}` };
      }
      const emulator = new EmulatedSqSnspd({ detectors: profile.parameters.bias_current?.channels?.length ?? 4 });
      if (saved) emulator.restore(saved);
      let started: Promise<TcpJsonAddress> | undefined;
      this.cleanups.push(async () => void (started && (await emulator.stop())));
      const transport = new TcpJsonTransport({ address: () => (started ??= emulator.start()), frameEnd: t.frameEnd, timeoutMs: t.timeoutMs });
      return { entry, profile, device: new SqSnspdDriver({ ...common, profile, transport }), emulator, transport: 'tcp (emulated, 127.0.0.1)' };
    }
    if (t.type !== 'serial') return { entry, profile, error: new ConfigError('BAD_PROFILE', `${profile.file}: a ${profile.kind} needs a serial transport.`), transport: '-' };
    if (!entry.emulated) {
      const transport = new SerialLineTransport({ path: entry.port!, settings: t });
      return { entry, profile, device: new SpdcBoardDriver({ ...common, profile, transport }), transport: `serial ${entry.port}` };
    }
    const emulator = new EmulatedSpdcBoard({ serial: `SPDC-${entry.id}` });
    if (saved) emulator.restore(saved);
    const dir = mkdtempSync(join(tmpdir(), 'qkd-spdc-'));
    let pty: Promise<InstrumentPty> | undefined;
    this.cleanups.push(async () => {
      await pty?.then((p) => p.close(), () => undefined);
      rmSync(dir, { recursive: true, force: true });
    });
    const transport = new SerialLineTransport({ path: join(dir, 'spdc-A'), settings: t });
    const device = new SpdcBoardDriver({ ...common, profile, transport, prepare: async () => void (await (pty ??= startInstrumentOnPty(emulator, dir))) });
    return { entry, profile, device, emulator, transport: 'serial (emulated, pty)' };
  }

  /** The device by id; ConfigError listing the ids when unknown. */
  get(id: string): AnyDevice {
    const slot = this.slots.get(id);
    if (!slot) throw new ConfigError('UNKNOWN_DEVICE', `no device '${id}' in ${this.config.file ?? 'the node configuration'}; devices: ${[...this.slots.keys()].join(', ')}.`);
    if (!slot.device) throw slot.error!;
    return slot.device;
  }

  private readState(): Record<string, Record<string, number>> {
    if (!existsSync(this.stateFile)) return {};
    try {
      const s = JSON.parse(readFileSync(this.stateFile, 'utf8')) as { version?: number; devices?: Record<string, Record<string, number>> };
      return s.version === 1 && s.devices ? s.devices : {};
    } catch {
      // A corrupt state file is not worth failing a command for: start from power-on values.
      return {};
    }
  }

  /** Writes the emulators' settings to the state file (atomically). */
  saveState(): void {
    const devices: Record<string, Record<string, number>> = {};
    for (const [id, s] of this.slots) if (s.emulator) devices[id] = s.emulator.snapshot();
    if (!Object.keys(devices).length) return;
    mkdirSync(dirname(this.stateFile), { recursive: true });
    const tmp = `${this.stateFile}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify({ version: 1, savedAt: new Date().toISOString(), devices }, null, 2) + '\n');
    renameSync(tmp, this.stateFile);
  }

  async close(): Promise<void> {
    for (const s of this.slots.values()) await s.device?.close().catch(() => undefined);
    if (this.opts.persist) this.saveState();
    for (const c of this.cleanups.splice(0)) await c().catch(() => undefined);
  }
}
