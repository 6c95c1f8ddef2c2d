/**
 * Hardware profiles: one declarative JSON file per device model in hw-profiles/devices/. A driver
 * is generated from its profile (transports settings, command templates, reply parsing, limits,
 * defaults, allowed firmware), so supporting a new model of a known kind is a new file, not code.
 *
 * Profiles are validated against PROFILE_SCHEMA (below) at load, then checked for meaning (min <=
 * max, defaults inside the limits, templates naming their placeholders, the parameters each device
 * kind needs). Every error is a ConfigError('BAD_PROFILE') naming the file, the field (a dotted
 * path) and what was expected, e.g.
 *   hw-profiles/devices/x.json: field "parameters.dead_time.max": expected a number, got "ten".
 *
 * Templates (serial): `{value}` is replaced by the value in device units (API value x `scale`,
 * rounded to `decimals`), `{ch}` by the channel for per-channel parameters. Replies are parsed
 * with `reply` (a regular expression whose first capture group is the number; default: the whole
 * line is a number), then divided by `scale`.
 */
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../errors.ts';
import type { Capability, DeviceKind } from './types.ts';

export const PROFILES_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../hw-profiles/devices');

export interface SerialSettings {
  type: 'serial';
  baudRate: number;
  dataBits: 7 | 8;
  parity: 'none' | 'even' | 'odd';
  stopBits: 1 | 2;
  /** Line delimiter of commands and replies: "\n" or "\r\n". */
  delimiter: string;
  /** How long a query waits for its reply before a TimeoutError. */
  timeoutMs: number;
}

export interface UsbSettings {
  type: 'usb';
  vendorId: number;
  productId: number;
  interface: number;
  /** Bulk IN endpoint address (0x81 = EP1 IN). */
  endpoint: number;
  /** Bytes per bulk transfer (whole records). */
  transferBytes: number;
  timeoutMs: number;
  /** Vendor control requests: identity string, start and stop of the stream. */
  requests: { identity: number; start: number; stop: number };
}

/** SCPI text over a ZeroMQ REQ socket: one request message per command, one reply message each (IDQ Time Controllers). */
export interface ZmqSettings {
  type: 'zmq';
  /** TCP port of the device's REP socket (5555 on the ID900/ID1000). */
  port: number;
  timeoutMs: number;
}

/**
 * JSON commands on a TCP control port, replies/broadcasts framed by `frameEnd`, and count lines
 * (CSV) on a second port (Single Quantum SNSPD controllers: 12000 and 12345, frames end 0x17).
 */
export interface TcpJsonSettings {
  type: 'tcp';
  port: number;
  countsPort: number;
  /** Byte that ends each frame the device sends (default "\u0017"). */
  frameEnd: string;
  timeoutMs: number;
}

/** A recording replayed as a time-tagger (src/devices/replay.ts): the `replay` profile. */
export interface FileSettings {
  type: 'file';
}

export type TransportSettings = SerialSettings | UsbSettings | ZmqSettings | TcpJsonSettings | FileSettings;

/** `step: 0` means continuous: any value in [min, max]. */
export interface ParameterSpec extends Capability {
  /** Value applied when the device is opened (per channel for per-channel parameters). */
  default?: number;
  /** Serial: query template, e.g. `DEADTIME:TIME?` or `INPUT{ch}:DELAY?`. */
  get?: string;
  /** Serial: set template, e.g. `DEADTIME:TIME {value}`. */
  set?: string;
  /** Serial: reply regex with one capture group holding the number. */
  reply?: string;
  /** Device units per API unit (e.g. 100 when the device speaks percent and the API fractions). */
  scale?: number;
  /** Decimals written in set commands (default: enough for `step`). */
  decimals?: number;
  /** USB: vendor control request carrying this parameter; wIndex = channel, data = `format` LE. */
  control?: { request: number; format: 'i32' | 'i64' | 'f64' };
  /** Value is secret (e.g. a pattern seed): never logged, never echoed in errors. */
  secret?: boolean;
  /**
   * Kept and applied by the driver, not the device (e.g. the TDC1 has no input delay: the
   * driver adds it to tag times). Needs no wire template or control request.
   */
  host?: boolean;
  /**
   * Text devices: the word the device speaks for each enumeration value (index = value - min),
   * e.g. ["OFF", "ON"] or ["RISING", "FALLING"]; replies are matched against them.
   */
  words?: string[];
  /** TCP JSON devices: the label that carries the value (an array for per-channel parameters, index = channel - 1). */
  label?: string;
  /** TCP JSON devices: the command that sets it (the whole array for per-channel parameters). */
  command?: string;
}

export interface DeviceProfile {
  name: string;
  kind: DeviceKind;
  vendor: string;
  model: string;
  description?: string;
  /** Allowed firmware versions; `*` matches any run of characters (`1.4.*`). */
  firmware: string[];
  transport: TransportSettings;
  /** Serial identity query and its reply pattern (named groups vendor, model, serial, firmware). */
  identity?: { query: string; pattern: string };
  /** Reply a device sends to an accepted set command; omitted = sets get no reply. */
  setAck?: string;
  /** Prefix of a refusal reply (`ERR -222,Data out of range`). */
  errorPrefix?: string;
  parameters: Record<string, ParameterSpec>;
  /**
   * Photon source: binary read-back of its RNG record (docs/devices.md, "Photon source
   * read-back"): query headers that take a pulse list block and answer a block (`choices`: 4 bits
   * per pulse, `classes`: 2 bits per pulse), the emission counter query (`emitted`), the longest
   * list one query may carry, and the timeout of one read-back.
   */
  readback?: ReadbackSpec;
  /** Where it was loaded from (for error messages). */
  file: string;
}

export interface ReadbackSpec {
  choices: string;
  classes: string;
  emitted: string;
  maxPulses: number;
  timeoutMs: number;
  /**
   * The source abandons a binary block argument when none of its bytes arrive for this long (its
   * firmware's rule); a driver opening a line where a crashed host may have left half a request
   * keeps quiet that long before asking the identity again.
   */
  blockIdleMs?: number;
}

/** Parameters each device kind must declare (the typed methods of types.ts are built on them). */
export const REQUIRED_PARAMETERS: Record<DeviceKind, string[]> = {
  'photon-source': ['rep_rate', 'intensity_signal', 'intensity_decoy', 'intensity_vacuum', 'pattern_mode', 'enable'],
  'spad-detector': ['efficiency', 'bias_voltage', 'dead_time', 'threshold', 'temperature_setpoint', 'temperature', 'ready', 'count_rate'],
  'time-tagger': ['delay', 'trigger_level', 'edge', 'reference_clock'],
  'time-controller': ['threshold', 'edge', 'enable', 'count_integration'],
  'snspd-controller': ['bias_current', 'trigger_level', 'enable', 'measurement_period'],
  laser: ['enable'],
};

/** Transports each kind may use (its driver speaks only these). */
export const KIND_TRANSPORTS: Record<DeviceKind, TransportSettings['type'][]> = {
  'photon-source': ['serial'],
  'spad-detector': ['serial'],
  'time-tagger': ['serial', 'usb', 'file'],
  'time-controller': ['zmq'],
  'snspd-controller': ['tcp'],
  laser: ['serial'],
};

// ---------------------------------------------------------------------------------------------
// A small JSON schema (the subset we need), so the validator can name field and expectation.
// ---------------------------------------------------------------------------------------------

export type Schema =
  | { type: 'string'; enum?: string[]; minLength?: number }
  | { type: 'number'; integer?: boolean; minimum?: number; maximum?: number; exclusiveMinimum?: number }
  | { type: 'boolean' }
  | { type: 'array'; items: Schema; minItems?: number }
  | { type: 'object'; properties: Record<string, Schema>; required?: string[]; additionalProperties?: Schema | false }
  | { oneOfBy: string; cases: Record<string, Schema> };

const num: Schema = { type: 'number' };
const nonEmpty: Schema = { type: 'string', minLength: 1 };
const u8: Schema = { type: 'number', integer: true, minimum: 0, maximum: 255 };
const u16: Schema = { type: 'number', integer: true, minimum: 0, maximum: 0xffff };
const tcpPort: Schema = { type: 'number', integer: true, minimum: 1, maximum: 0xffff };

const parameterSchema: Schema = {
  type: 'object',
  required: ['min', 'max', 'step', 'unit'],
  properties: {
    min: num, max: num, step: { type: 'number', minimum: 0 }, unit: { type: 'string' },
    readonly: { type: 'boolean' },
    channels: { type: 'array', items: { type: 'number', integer: true, minimum: 0, maximum: 255 }, minItems: 1 },
    labels: { type: 'array', items: nonEmpty },
    description: { type: 'string' },
    default: num,
    get: nonEmpty, set: nonEmpty, reply: nonEmpty,
    scale: { type: 'number', exclusiveMinimum: 0 },
    decimals: { type: 'number', integer: true, minimum: 0, maximum: 15 },
    control: { type: 'object', required: ['request', 'format'], properties: { request: u8, format: { type: 'string', enum: ['i32', 'i64', 'f64'] } }, additionalProperties: false },
    secret: { type: 'boolean' },
    host: { type: 'boolean' },
    words: { type: 'array', items: nonEmpty, minItems: 1 },
    label: nonEmpty,
    command: nonEmpty,
  },
  additionalProperties: false,
};

export const PROFILE_SCHEMA: Schema = {
  type: 'object',
  required: ['name', 'kind', 'vendor', 'model', 'firmware', 'transport', 'parameters'],
  properties: {
    $schema: { type: 'string' },
    name: nonEmpty,
    kind: { type: 'string', enum: ['photon-source', 'spad-detector', 'time-tagger', 'time-controller', 'snspd-controller', 'laser'] },
    vendor: nonEmpty,
    model: nonEmpty,
    description: { type: 'string' },
    firmware: { type: 'array', items: nonEmpty, minItems: 1 },
    transport: {
      oneOfBy: 'type',
      cases: {
        serial: {
          type: 'object',
          required: ['type', 'baudRate', 'delimiter', 'timeoutMs'],
          properties: {
            type: { type: 'string', enum: ['serial'] },
            baudRate: { type: 'number', integer: true, minimum: 50, maximum: 4_000_000 },
            dataBits: { type: 'number', integer: true, minimum: 7, maximum: 8 },
            parity: { type: 'string', enum: ['none', 'even', 'odd'] },
            stopBits: { type: 'number', integer: true, minimum: 1, maximum: 2 },
            delimiter: { type: 'string', enum: ['\n', '\r\n', '\r'] },
            timeoutMs: { type: 'number', integer: true, minimum: 1, maximum: 60_000 },
          },
          additionalProperties: false,
        },
        usb: {
          type: 'object',
          required: ['type', 'vendorId', 'productId', 'endpoint', 'timeoutMs', 'requests'],
          properties: {
            type: { type: 'string', enum: ['usb'] },
            vendorId: u16, productId: u16,
            interface: u8,
            endpoint: { type: 'number', integer: true, minimum: 0x81, maximum: 0x8f },
            transferBytes: { type: 'number', integer: true, minimum: 16, maximum: 16 * 1024 * 1024 },
            timeoutMs: { type: 'number', integer: true, minimum: 1, maximum: 60_000 },
            requests: { type: 'object', required: ['identity', 'start', 'stop'], properties: { identity: u8, start: u8, stop: u8 }, additionalProperties: false },
          },
          additionalProperties: false,
        },
        zmq: {
          type: 'object',
          required: ['type', 'port', 'timeoutMs'],
          properties: { type: { type: 'string', enum: ['zmq'] }, port: tcpPort, timeoutMs: { type: 'number', integer: true, minimum: 1, maximum: 60_000 } },
          additionalProperties: false,
        },
        file: { type: 'object', required: ['type'], properties: { type: { type: 'string', enum: ['file'] } }, additionalProperties: false },
        tcp: {
          type: 'object',
          required: ['type', 'port', 'countsPort', 'timeoutMs'],
          properties: {
            type: { type: 'string', enum: ['tcp'] },
            port: tcpPort,
            countsPort: tcpPort,
            frameEnd: { type: 'string', minLength: 1 },
            timeoutMs: { type: 'number', integer: true, minimum: 1, maximum: 60_000 },
          },
          additionalProperties: false,
        },
      },
    },
    identity: { type: 'object', required: ['query', 'pattern'], properties: { query: nonEmpty, pattern: nonEmpty }, additionalProperties: false },
    // "" for devices whose every command gets a reply and an accepted set's is empty (ZeroMQ REQ/REP).
    setAck: { type: 'string' },
    errorPrefix: nonEmpty,
    parameters: { type: 'object', properties: {}, additionalProperties: parameterSchema },
    readback: {
      type: 'object', required: ['choices', 'classes', 'emitted', 'maxPulses', 'timeoutMs'],
      properties: { choices: nonEmpty, classes: nonEmpty, emitted: nonEmpty, maxPulses: { type: 'number', integer: true, minimum: 1 }, timeoutMs: { type: 'number', minimum: 1 }, blockIdleMs: { type: 'number', minimum: 1, maximum: 60000 } },
      additionalProperties: false,
    },
  },
  additionalProperties: false,
};

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s.length > 60 ? s.slice(0, 57) + '...' : s;
}

/** Validates `value` against `schema`; returns `field: expected …, got …` strings (empty = valid). */
export function validateSchema(value: unknown, schema: Schema, path = ''): string[] {
  const at = path || '(top level)';
  if ('oneOfBy' in schema) {
    const tag = (value as Record<string, unknown> | null)?.[schema.oneOfBy];
    const c = typeof tag === 'string' ? schema.cases[tag] : undefined;
    if (!c) return [`field "${path ? path + '.' : ''}${schema.oneOfBy}": expected one of ${Object.keys(schema.cases).map((k) => JSON.stringify(k)).join(', ')}, got ${show(tag)}`];
    return validateSchema(value, c, path);
  }
  switch (schema.type) {
    case 'string':
      if (typeof value !== 'string') return [`field "${at}": expected a string, got ${show(value)}`];
      if (schema.enum && !schema.enum.includes(value)) return [`field "${at}": expected one of ${schema.enum.map((e) => JSON.stringify(e)).join(', ')}, got ${show(value)}`];
      if (schema.minLength && value.length < schema.minLength) return [`field "${at}": expected a non-empty string, got ""`];
      return [];
    case 'number': {
      if (typeof value !== 'number' || !Number.isFinite(value)) return [`field "${at}": expected a ${schema.integer ? 'whole number' : 'number'}, got ${show(value)}`];
      if (schema.integer && !Number.isInteger(value)) return [`field "${at}": expected a whole number, got ${show(value)}`];
      if (schema.minimum !== undefined && value < schema.minimum) return [`field "${at}": expected a number >= ${schema.minimum}, got ${show(value)}`];
      if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) return [`field "${at}": expected a number > ${schema.exclusiveMinimum}, got ${show(value)}`];
      if (schema.maximum !== undefined && value > schema.maximum) return [`field "${at}": expected a number <= ${schema.maximum}, got ${show(value)}`];
      return [];
    }
    case 'boolean':
      return typeof value === 'boolean' ? [] : [`field "${at}": expected true or false, got ${show(value)}`];
    case 'array': {
      if (!Array.isArray(value)) return [`field "${at}": expected an array, got ${show(value)}`];
      if (schema.minItems && value.length < schema.minItems) return [`field "${at}": expected at least ${schema.minItems} item(s), got ${value.length}`];
      return value.flatMap((v, i) => validateSchema(v, schema.items, `${path}[${i}]`));
    }
    case 'object': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return [`field "${at}": expected an object, got ${show(value)}`];
      const o = value as Record<string, unknown>;
      const errs: string[] = [];
      for (const r of schema.required ?? []) if (!(r in o)) errs.push(`field "${path ? path + '.' : ''}${r}": expected it to be present (required), got nothing`);
      for (const [k, v] of Object.entries(o)) {
        const sub: Schema | false | undefined = Object.hasOwn(schema.properties, k) ? schema.properties[k] : schema.additionalProperties;
        const p = path ? `${path}.${k}` : k;
        if (sub === undefined || sub === false) errs.push(`field "${p}": expected no such field (allowed: ${Object.keys(schema.properties).join(', ')})`);
        else errs.push(...validateSchema(v, sub, p));
      }
      return errs;
    }
  }
}

/** Does firmware version `v` match one of the allowed patterns (`*` = any run of characters)? */
export function firmwareAllowed(profile: Pick<DeviceProfile, 'firmware'>, v: string): boolean {
  return profile.firmware.some((p) => new RegExp('^' + p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$').test(v));
}

function semanticErrors(p: Omit<DeviceProfile, 'file'>, fileBase: string): string[] {
  const errs: string[] = [];
  if (p.name !== fileBase) errs.push(`field "name": expected the file's base name ${JSON.stringify(fileBase)}, got ${show(p.name)}`);
  // SCPI-like text (a serial line or ZeroMQ messages): command templates and an identity query.
  const serial = p.transport.type === 'serial' || p.transport.type === 'zmq';
  const json = p.transport.type === 'tcp';
  if (serial && !p.identity) errs.push(`field "identity": expected {query, pattern} for a ${p.transport.type} device, got nothing`);
  if (p.identity) {
    try {
      const re = new RegExp(p.identity.pattern);
      for (const g of ['vendor', 'model', 'serial', 'firmware']) if (!re.source.includes(`(?<${g}>`)) errs.push(`field "identity.pattern": expected a named group (?<${g}>…), got ${show(p.identity.pattern)}`);
    } catch {
      errs.push(`field "identity.pattern": expected a valid regular expression, got ${show(p.identity.pattern)}`);
    }
  }
  // A serial time-tagger streams its tags on the same line as its commands (S-Fifteen TDC1).
  const allowed = KIND_TRANSPORTS[p.kind];
  if (!allowed.includes(p.transport.type)) errs.push(`field "transport.type": expected ${allowed.map((a) => JSON.stringify(a)).join(' or ')} for a ${p.kind}, got ${JSON.stringify(p.transport.type)}`);
  if (p.transport.type === 'tcp' && p.transport.frameEnd !== undefined && p.transport.frameEnd.length !== 1) errs.push(`field "transport.frameEnd": expected one character, got ${show(p.transport.frameEnd)}`);
  if (p.transport.type === 'usb' && p.transport.transferBytes !== undefined && p.transport.transferBytes % 16) {
    errs.push(`field "transport.transferBytes": expected a multiple of 16 (whole tag records), got ${p.transport.transferBytes}`);
  }
  for (const need of REQUIRED_PARAMETERS[p.kind]) if (!p.parameters[need]) errs.push(`field "parameters.${need}": expected it to be present (a ${p.kind} needs it), got nothing`);
  for (const [name, s] of Object.entries(p.parameters)) {
    const f = `parameters.${name}`;
    if (!/^[a-z][a-z0-9_]*$/.test(name)) errs.push(`field "${f}": expected a lower_snake_case parameter name, got ${show(name)}`);
    if (s.min > s.max) errs.push(`field "${f}.max": expected a number >= min (${s.min}), got ${s.max}`);
    if (s.default !== undefined) {
      if (s.readonly) errs.push(`field "${f}.default": expected no default on a read-only parameter, got ${s.default}`);
      else if (s.default < s.min || s.default > s.max) errs.push(`field "${f}.default": expected a value in [${s.min}, ${s.max}], got ${s.default}`);
    }
    if (s.labels && s.labels.length !== s.max - s.min + 1) errs.push(`field "${f}.labels": expected ${s.max - s.min + 1} labels (one per value from min to max), got ${s.labels.length}`);
    if (s.words && (s.step !== 1 || s.words.length !== s.max - s.min + 1)) errs.push(`field "${f}.words": expected ${s.max - s.min + 1} words (one per value from min to max, step 1), got ${s.words.length}`);
    const chTemplates = [s.get, s.set].filter((x): x is string => !!x);
    for (const t of chTemplates) {
      if (s.channels && !t.includes('{ch}')) errs.push(`field "${f}": expected the template ${show(t)} to contain {ch} (the parameter is per channel)`);
      if (!s.channels && t.includes('{ch}')) errs.push(`field "${f}": expected no {ch} in ${show(t)} (the parameter has no channels)`);
    }
    if (s.set && !s.set.includes('{value}')) errs.push(`field "${f}.set": expected the template to contain {value}, got ${show(s.set)}`);
    if (s.reply) {
      try {
        new RegExp(s.reply);
      } catch {
        errs.push(`field "${f}.reply": expected a valid regular expression, got ${show(s.reply)}`);
      }
    }
    if (s.host) {
      if (s.get || s.set || s.control) errs.push(`field "${f}": expected no get/set template or control request on a "host" parameter (the driver keeps it)`);
    } else if (json) {
      if (!s.label) errs.push(`field "${f}.label": expected the JSON label that carries the value, got nothing`);
      if (!s.readonly && !s.command) errs.push(`field "${f}.command": expected the command that sets it (or "readonly": true), got nothing`);
      if (s.get || s.set || s.control) errs.push(`field "${f}": expected "label"/"command", not get/set templates or a control request, on a tcp (JSON) device`);
    } else if (serial) {
      if (!s.get && !s.secret) errs.push(`field "${f}.get": expected a query template for a serial device, got nothing`);
      if (!s.readonly && !s.set) errs.push(`field "${f}.set": expected a set template (or "readonly": true), got nothing`);
      if (s.control) errs.push(`field "${f}.control": expected no USB control request on a serial device`);
    } else if (!s.control) errs.push(`field "${f}.control": expected {request, format} for a USB device, got nothing`);
  }
  return errs;
}

/** Validates a parsed profile object; `file` is used in messages and for the name check. */
export function parseProfile(raw: unknown, file: string): DeviceProfile {
  const shown = file.startsWith(process.cwd()) ? file.slice(process.cwd().length + 1) : file;
  const fail = (errs: string[]): never => {
    const more = errs.length > 5 ? ` (and ${errs.length - 5} more)` : '';
    throw new ConfigError('BAD_PROFILE', `${shown}: ${errs.slice(0, 5).join('; ')}${more}. Fix the profile (see docs/devices.md, "Profiles").`);
  };
  const errs = validateSchema(raw, PROFILE_SCHEMA);
  if (errs.length) fail(errs);
  const p = raw as Omit<DeviceProfile, 'file'>;
  const sem = semanticErrors(p, basename(file).replace(/\.json$/, ''));
  if (sem.length) fail(sem);
  if (p.transport.type === 'serial') {
    const t: Partial<SerialSettings> = p.transport;
    p.transport = { ...p.transport, dataBits: t.dataBits ?? 8, parity: t.parity ?? 'none', stopBits: t.stopBits ?? 1 };
  } else if (p.transport.type === 'tcp') {
    p.transport = { ...p.transport, frameEnd: p.transport.frameEnd ?? '\u0017' };
  } else if (p.transport.type === 'usb') {
    const t: Partial<UsbSettings> = p.transport;
    p.transport = { ...p.transport, interface: t.interface ?? 0, transferBytes: t.transferBytes ?? 65536 };
  }
  return { ...p, errorPrefix: p.errorPrefix ?? 'ERR', file };
}

/** Loads and validates one profile file. */
export function loadProfileFile(file: string): DeviceProfile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (cause) {
    throw new ConfigError('PROFILE_NOT_FOUND', `${file}: cannot read the profile (${(cause as NodeJS.ErrnoException).code}). Check the path or the profile name in the node configuration.`, { cause });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new ConfigError('BAD_PROFILE', `${file}: not valid JSON (${(cause as Error).message}). Fix the syntax.`, { cause });
  }
  return parseProfile(raw, file);
}

/** Loads a profile by name (from hw-profiles/devices/) or by path (anything ending in .json). */
export function loadProfile(nameOrPath: string, dir = PROFILES_DIR): DeviceProfile {
  if (nameOrPath.endsWith('.json')) return loadProfileFile(resolve(nameOrPath));
  const file = join(dir, `${nameOrPath}.json`);
  if (!existsSync(file)) {
    throw new ConfigError('PROFILE_NOT_FOUND', `no device profile named '${nameOrPath}' in ${dir}; available: ${listProfiles(dir).join(', ') || 'none'}.`);
  }
  return loadProfileFile(file);
}

export function listProfiles(dir = PROFILES_DIR): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();
}

/** The capability a parameter exposes to callers (drops wire details). */
export function capabilityOf(s: ParameterSpec): Capability {
  const c: Capability = { min: s.min, max: s.max, step: s.step, unit: s.unit };
  if (s.readonly) c.readonly = true;
  if (s.secret) c.secret = true;
  if (s.channels) c.channels = [...s.channels];
  if (s.labels) c.labels = [...s.labels];
  if (s.description) c.description = s.description;
  return c;
}
