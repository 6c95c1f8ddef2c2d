/**
 * The device layer's public vocabulary: one interface per device kind (photon source, SPAD
 * detector, time-tagger), the capabilities every device states as data, and the transports the
 * drivers talk through. Drivers (src/devices/drivers/) implement these interfaces on top of a
 * `Transport`; the emulated devices (src/devices/emulated/) sit behind the SAME transports (a pty
 * pair or an answering serialport binding for serial, a `UsbBulkDevice` for USB), so the driver
 * code is what runs in CI.
 *
 * Units are in the names (`…Hz`, `…Ps`, `…Ns`, `…V`, `…C`); times on the tag path are integer
 * picoseconds (BigInt64Array), never floating seconds.
 *
 * Concurrency: every device method may be called at any time from the JS thread; a driver
 * serialises the commands it sends on its transport (one outstanding SCPI query at a time), so
 * callers need no locking. Every method that talks to the device rejects with a `TimeoutError`
 * when the device does not answer within the transport's timeout, a `TransportError` when the
 * line went away, a `ProtocolError` when the reply is malformed and a `DeviceError` when the value
 * is out of the capability's range or the device refused. None of them hangs.
 */

/** A batch of raw time tags as a time-tagger delivers them (Bob's clock). */
export interface TagBatch {
  /** Time of each tag in picoseconds on the tagger's own clock. */
  timePs: BigInt64Array;
  /** Input channel of each tag. */
  channel: Uint8Array;
}

/**
 * The kinds the node's protocol builds on (source, SPAD, tagger) and the lab instruments that
 * stand beside them: a time controller with on-board counters and histograms (IDQ ID900/ID1000),
 * an SNSPD controller (Single Quantum), a laser or pair source that is only set and switched
 * (S-Fifteen SPDC board). The last three have no role in key production; they are listed,
 * configured and read through `qkd devices` / `qkd device`.
 */
export type DeviceKind = 'photon-source' | 'spad-detector' | 'time-tagger' | 'time-controller' | 'snspd-controller' | 'laser';

/**
 * What a device accepts for one parameter, stated as data (like ID120 `*:CAPABILITY?` queries and
 * qudi's `get_constraints()`). A value is valid when min <= v <= max and (v - min) is a whole
 * multiple of step (within 1e-9 relative). Enumerations and booleans are numeric too
 * (e.g. edge 0 = rising, 1 = falling; enable 0/1), with `unit: 'enum'` / `'bool'` and `labels`.
 */
export interface Capability {
  min: number;
  max: number;
  step: number;
  unit: string;
  /** Read-only parameters (measured values such as a count rate or a temperature reading). */
  readonly?: boolean;
  /** Secret and write-only (e.g. a pattern seed): never read back, logged or echoed. */
  secret?: boolean;
  /** For per-channel parameters: the channels that have it (the parameter is addressed as `name:ch`). */
  channels?: number[];
  /** For enumerations: label of each value, index = value - min. */
  labels?: string[];
  /** One-line description for `qkd device <id> get` listings. */
  description?: string;
}

/** Device identity as reported by `*IDN?` (or the USB descriptor for USB devices). */
export interface DeviceIdentity {
  vendor: string;
  model: string;
  serial: string;
  firmware: string;
}

/** Connection state; changes are emitted as 'state' events by `Device.on('state', …)`. */
export type DeviceState = 'closed' | 'connecting' | 'ready' | 'disconnected' | 'reconnecting' | 'failed';

export interface StateChange {
  state: DeviceState;
  previous: DeviceState;
  /** Why it changed (e.g. the transport error), when it was not requested. */
  reason?: string;
}

/** What every device kind has in common. */
export interface Device {
  /** Node-local id from the node configuration, e.g. `bob-detector-0`. */
  readonly id: string;
  readonly kind: DeviceKind;
  /** Profile name (hw-profiles/devices/<profile>.json) the driver was generated from. */
  readonly profile: string;
  readonly state: DeviceState;
  /**
   * Opens the transport and checks identity (model) and firmware against the profile; applies the
   * profile defaults only when the driver was built with `applyDefaults` (otherwise the device keeps
   * its settings). Resolves with the identity; an explicit open also ends a reconnect loop.
   */
  open(): Promise<DeviceIdentity>;
  close(): Promise<void>;
  identity(): Promise<DeviceIdentity>;
  /** All parameters with their limits, as the profile states them (no device round trip). */
  capabilities(): Record<string, Capability>;
  /** Reads a parameter; per-channel parameters are addressed as `name:channel`. */
  get(param: string): Promise<number>;
  /** Sets a parameter after checking it against `capabilities()`; throws DeviceError('OUT_OF_RANGE'). */
  set(param: string, value: number): Promise<void>;
  on(event: 'state', listener: (change: StateChange) => void): this;
  off(event: 'state', listener: (change: StateChange) => void): this;
}

/** Alice's pulsed source with intensity (decoy) and polarisation/phase modulators. */
export interface PhotonSource extends Device {
  readonly kind: 'photon-source';
  setRepetitionRateHz(hz: number): Promise<void>;
  repetitionRateHz(): Promise<number>;
  /** Mean photon number of one intensity level (0 signal, 1 decoy, 2 vacuum; src/lab/types.ts). */
  setIntensity(level: 0 | 1 | 2, meanPhotonNumber: number): Promise<void>;
  intensity(level: 0 | 1 | 2): Promise<number>;
  /**
   * Modulation pattern source: 0 = the source's internal RNG (keyed inside the device; its record
   * of what it applied to each pulse is read back below), 1 = external pattern.
   */
  setPattern(mode: 0 | 1): Promise<void>;
  /** Probabilities of the internal RNG's choices (signal, decoy; basis Z). Before switching on. */
  setPatternProbabilities(p: { signal: number; decoy: number; basisZ: number }): Promise<void>;
  setEnabled(on: boolean): Promise<void>;
  enabled(): Promise<boolean>;
  /** Pulses emitted since the internal pattern started: the source's emission horizon. */
  emittedPulses(): Promise<number>;
  /**
   * Read-back of the RNG's record: the packed choice byte (bit | basis << 1 | intensity << 2,
   * src/protocol/choices.ts) of each listed pulse, in the order given. Pulses must be emitted.
   * Secret (bits and bases): the caller wipes the result when done.
   */
  readChoices(pulses: Float64Array): Promise<Uint8Array>;
  /** readChoices of the pulses of an encoded pulse list (src/protocol/pulse-list.ts) of `count` pulses. */
  readChoicesOfList(list: Uint8Array, count: number): Promise<Uint8Array>;
  /** Read-back of the intensity class (0 signal, 1 decoy, 2 vacuum) of each listed pulse only. */
  readClasses(pulses: Float64Array): Promise<Uint8Array>;
}

/** One single-photon avalanche detector (gated or free-running) with its cooler and counters. */
export interface SpadDetector extends Device {
  readonly kind: 'spad-detector';
  setEfficiency(fraction: number): Promise<void>;
  efficiency(): Promise<number>;
  setBiasV(volts: number): Promise<void>;
  setDeadTimeNs(ns: number): Promise<void>;
  deadTimeNs(): Promise<number>;
  setThresholdMv(mv: number): Promise<void>;
  setTemperatureSetpointC(celsius: number): Promise<void>;
  temperatureC(): Promise<number>;
  /** True once the cooler has reached its set point and the detector is armed. */
  ready(): Promise<boolean>;
  /** Detection rate counted by the module over its last gate (counts per second). */
  countRatePerSec(): Promise<number>;
}

/** Kind of one in-band record in a tag stream (byte 0 of the 16-byte wire record). */
export const TAG_TYPE = {
  TIME_TAG: 0,
  ERROR: 1,
  OVERFLOW_BEGIN: 2,
  OVERFLOW_END: 3,
  MISSED_EVENTS: 4,
} as const;
export type TagType = (typeof TAG_TYPE)[keyof typeof TAG_TYPE];

/**
 * A non-tag record of the stream, reported in-band: it sits between the tags of its batch at
 * position `index` (tags[0..index) came before it). During an overflow (between OVERFLOW_BEGIN and
 * OVERFLOW_END) the tagger lost tags; MISSED_EVENTS says how many on which channel. Consumers must
 * treat the time span of an overflow as having unknown detections (e.g. drop those pulses).
 */
export interface TagEvent {
  type: Exclude<TagType, 0>;
  index: number;
  channel: number;
  timePs: bigint;
  missedEvents: number;
}

/** One chunk of a tag stream: the tags in time order plus the in-band events among them. */
export interface TagStreamBatch extends TagBatch {
  /** Sequence number of this batch in the stream, from 0, without gaps. */
  seq: number;
  /** In-band overflow / missed-event / error records, ordered by `index`. Empty most of the time. */
  events: TagEvent[];
}

/**
 * A running tag stream. Iterate it with `for await`; `stop()` ends the iteration after the batch
 * in flight (it is also called when the consumer breaks out of the loop). Back-pressure: the
 * driver reads the next USB transfer only when the consumer asks for the next batch, so a slow
 * consumer makes the (real or emulated) tagger overflow, which then shows in-band.
 */
export interface TagStream extends AsyncIterable<TagStreamBatch> {
  stop(): Promise<void>;
  /** Totals so far: tags delivered, overflow periods, missed events reported. */
  readonly stats: { tags: number; batches: number; overflows: number; missedEvents: number; errors: number };
}

export interface TagStreamOptions {
  /** Channels to stream (default: all enabled). */
  channels?: number[];
  /** Bytes per bulk transfer (multiple of 16; default 64 KiB). */
  transferBytes?: number;
  /** Stop after this many tags (default: unbounded). */
  maxTags?: number;
  /**
   * On a disconnect, mark the gap in band (an ERROR event with channel -1) and continue after the
   * driver reconnects, instead of ending the iteration with TransportError('DISCONNECTED').
   */
  resume?: boolean;
}

/** A time-tagger (Swabian-like): channels with edge/threshold/delay, a reference clock, tag streaming. */
export interface TimeTagger extends Device {
  readonly kind: 'time-tagger';
  /** Input channel numbers as the tagger numbers them (0-based here, matching the lab presets' `detectors[].channel`). */
  channels(): number[];
  setDelayPs(channel: number, delayPs: number): Promise<void>;
  delayPs(channel: number): Promise<number>;
  setThresholdV(channel: number, volts: number): Promise<void>;
  /** 0 = rising, 1 = falling edge. */
  setEdge(channel: number, edge: 0 | 1): Promise<void>;
  /** 0 = internal oscillator, 1 = external 10 MHz reference. */
  setReferenceClock(source: 0 | 1): Promise<void>;
  /** Starts streaming; only one stream per tagger at a time (DeviceError 'STREAM_BUSY' otherwise). */
  startStream(options?: TagStreamOptions): TagStream;
}

/** One counter reading of several inputs over one integration period. */
export interface CountSample {
  /** Counts per second of each input, index = position in `channels`. */
  ratesPerSec: number[];
  /** The inputs, as the device numbers them. */
  channels: number[];
  /** Integration period the counts were taken over (ms). */
  integrationMs: number;
  /** The device's own time stamp of the reading, when it sends one (ms since the Unix epoch). */
  deviceTimeMs?: number;
}

/** A start-stop histogram as a device computed it (bin i covers [firstBinPs + i*binPs, +binPs)). */
export interface DeviceHistogram {
  binPs: number;
  firstBinPs: number;
  counts: number[];
}

/**
 * A time controller with on-board counters and histograms (IDQ ID900/ID1000, SCPI over ZeroMQ).
 * Inputs are numbered as on the front panel (1..4). Tag streaming is not offered (the vendor's
 * streaming goes through a separate service, not the SCPI port).
 */
export interface TimeController extends Device {
  readonly kind: 'time-controller';
  inputs(): number[];
  /** Counts per second of every input over the counters' integration time (`count_integration`). */
  countRates(): Promise<CountSample>;
  /** The on-board histogram `n` (1-based), as configured by the `hist_*` parameters. */
  histogram(n: number): Promise<DeviceHistogram>;
}

/** A superconducting nanowire detector controller (Single Quantum): bias, trigger level, counters. */
export interface SnspdController extends Device {
  readonly kind: 'snspd-controller';
  /** Detector channels, from 1. */
  channels(): number[];
  setBiasCurrentUa(channel: number, microamps: number): Promise<void>;
  setTriggerLevelMv(channel: number, millivolts: number): Promise<void>;
  /** Biases (true) or unbiases all detectors. */
  setEnabled(on: boolean): Promise<void>;
  enabled(): Promise<boolean>;
  /** The next count line the controller sends (one per measurement period). */
  countRates(timeoutMs?: number): Promise<CountSample>;
}

/** A laser or photon-pair source that is set and switched, without modulators (S-Fifteen SPDC board). */
export interface Laser extends Device {
  readonly kind: 'laser';
  setEnabled(on: boolean): Promise<void>;
  enabled(): Promise<boolean>;
}

export type AnyDevice = PhotonSource | SpadDetector | TimeTagger | TimeController | SnspdController | Laser;

// ---------------------------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------------------------

/**
 * A line-oriented command transport (SCPI-style text over a serial port, a pty, or an answering
 * mock binding). One query at a time; `query` rejects with TimeoutError after `timeoutMs`.
 */
export interface LineTransport {
  /** 'serial' for a serial line or pty; 'zmq' for SCPI over a ZeroMQ REQ socket (one message per command). */
  readonly kind: 'serial' | 'zmq';
  readonly description: string;
  readonly isOpen: boolean;
  open(): Promise<void>;
  close(): Promise<void>;
  /**
   * Sends a command that has no reply (`BIAS:VOLTAGE 45.5`). `shown` replaces the command in
   * every error message (for commands carrying a secret, e.g. `PATTERN:SEED <secret>`).
   */
  write(command: string, shown?: string): Promise<void>;
  /** Sends a query (`DEADTIME:TIME?`) and resolves with its reply line, delimiter stripped. */
  query(command: string, timeoutMs?: number, shown?: string): Promise<string>;
  /**
   * Binary read-back: sends `command` with `payload` as an IEEE 488.2 definite-length block and
   * resolves with the reply block's bytes, or with the reply line if the device answered text.
   */
  queryBlock?(command: string, payload: Uint8Array | undefined, timeoutMs?: number): Promise<Uint8Array | string>;
  /** 'close' is emitted when the line goes away without `close()` being called (unplugged). */
  on(event: 'close', listener: (err?: Error) => void): this;
  off(event: 'close', listener: (err?: Error) => void): this;
}

/**
 * The small surface of a USB device the USB transport needs. `usb`'s Device/Interface/InEndpoint
 * implement it in transports/usb.ts; the emulated time-tagger implements it directly, at the
 * transfer level, so the transport and driver above it are the real ones.
 */
export interface UsbBulkDevice {
  readonly vendorId: number;
  readonly productId: number;
  open(): Promise<void>;
  /** Claims the interface that carries the bulk IN endpoint. */
  claim(iface: number): Promise<void>;
  /** One bulk IN transfer of up to `length` bytes (a whole number of 16-byte records). */
  bulkIn(endpoint: number, length: number, timeoutMs: number): Promise<Uint8Array>;
  /** Vendor control transfer host->device (settings). */
  controlOut(request: number, value: number, index: number, data: Uint8Array): Promise<void>;
  /** Vendor control transfer device->host (reading settings, identity). */
  controlIn(request: number, value: number, index: number, length: number): Promise<Uint8Array>;
  release(iface: number): Promise<void>;
  close(): Promise<void>;
  /**
   * Optional: calls `listener` when the device is unplugged (libusb hot-plug), so an idle device
   * that goes away is noticed without waiting for the next transfer. Returns an unsubscribe.
   */
  onDisconnect?(listener: () => void): () => void;
}

export type Transport = LineTransport | UsbTransportLike;

/** Marker shape of the USB transport (full class in transports/usb.ts). */
export interface UsbTransportLike {
  readonly kind: 'usb';
  readonly description: string;
  readonly isOpen: boolean;
  open(): Promise<void>;
  close(): Promise<void>;
}
