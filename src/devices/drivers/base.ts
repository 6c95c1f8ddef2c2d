/**
 * What every profile-generated driver shares: parameter addressing (`name` or `name:channel`),
 * limit checks against the profile's capabilities, the connection state machine, and reconnection
 * with exponential back-off when the transport goes away.
 *
 * State machine:
 *   closed --open()--> connecting --ok--> ready --line lost--> disconnected --> reconnecting
 *   reconnecting --ok--> ready;  reconnecting --attempts exhausted--> failed;  any --close()--> closed
 * Every change is emitted as a 'state' event {state, previous, reason}. While not ready, calls
 * reject at once with TransportError('NOT_CONNECTED') instead of waiting: nothing hangs.
 */
import { EventEmitter } from 'node:events';
import { DeviceError, TransportError } from '../../errors.ts';
import { capabilityOf, firmwareAllowed, type DeviceProfile, type ParameterSpec } from '../profile.ts';
import type { Capability, DeviceIdentity, DeviceKind, DeviceState, StateChange } from '../types.ts';

export interface ReconnectPolicy {
  /** First wait after the line is lost (ms). */
  initialMs: number;
  /** Upper bound of the doubling wait (ms). */
  maxMs: number;
  /** Attempts before giving up with state 'failed' (Infinity = keep trying). */
  maxAttempts: number;
}

export const DEFAULT_RECONNECT: ReconnectPolicy = { initialMs: 100, maxMs: 5000, maxAttempts: 20 };

export interface DriverOptions {
  /** Node-local device id (node configuration). */
  id: string;
  profile: DeviceProfile;
  reconnect?: Partial<ReconnectPolicy>;
  /** Apply the profile's defaults on open (default false: keep what the device has). */
  applyDefaults?: boolean;
}

export interface ParamRef {
  name: string;
  spec: ParameterSpec;
  channel?: number;
}

/** Checks a value against a capability; throws DeviceError('OUT_OF_RANGE') saying what is allowed. */
export function checkValue(where: string, param: string, c: Capability, value: number, secret = false): void {
  const shown = secret ? 'the given value' : String(value);
  const range = `allowed: ${c.min} to ${c.max}${c.step ? ` in steps of ${c.step}` : ''}${c.unit && c.unit !== 'enum' && c.unit !== 'bool' ? ` ${c.unit}` : ''}${c.labels ? ` (${c.labels.map((l, i) => `${c.min + i}=${l}`).join(', ')})` : ''}`;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new DeviceError('BAD_VALUE', `${where}: ${param} needs a number, got ${secret ? 'something else' : JSON.stringify(value)}; ${range}.`);
  }
  if (value < c.min) throw new DeviceError('OUT_OF_RANGE', `${where}: ${param} ${shown} is below the minimum ${c.min}${c.unit ? ' ' + c.unit : ''}; ${range}.`);
  if (value > c.max) throw new DeviceError('OUT_OF_RANGE', `${where}: ${param} ${shown} is above the maximum ${c.max}${c.unit ? ' ' + c.unit : ''}; ${range}.`);
  if (c.step > 0) {
    const k = (value - c.min) / c.step;
    if (Math.abs(k - Math.round(k)) > 1e-9 * Math.max(1, Math.abs(k))) {
      throw new DeviceError('OUT_OF_RANGE', `${where}: ${param} ${shown} is not on the ${c.step}${c.unit ? ' ' + c.unit : ''} grid; ${range}.`);
    }
  }
}

export abstract class DeviceBase extends EventEmitter {
  readonly id: string;
  readonly profile: string;
  abstract readonly kind: DeviceKind;
  protected readonly spec: DeviceProfile;
  protected readonly policy: ReconnectPolicy;
  protected readonly applyDefaultsOnOpen: boolean;
  private _state: DeviceState = 'closed';
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnecting = false;
  protected lastIdentity: DeviceIdentity | undefined;

  constructor(opts: DriverOptions) {
    super();
    this.id = opts.id;
    this.profile = opts.profile.name;
    this.spec = opts.profile;
    this.policy = { ...DEFAULT_RECONNECT, ...opts.reconnect };
    this.applyDefaultsOnOpen = !!opts.applyDefaults;
    // A 'state' listener is optional; EventEmitter would throw on an unhandled 'error', so we never emit one.
  }

  get state(): DeviceState {
    return this._state;
  }

  protected setState(state: DeviceState, reason?: string): void {
    if (state === this._state) return;
    const change: StateChange = { state, previous: this._state, ...(reason ? { reason } : {}) };
    this._state = state;
    this.emit('state', change);
  }

  /** Where-string for messages: `bob-detector-0 (emulab-spad1)`. */
  protected get where(): string {
    return `${this.id} (${this.profile})`;
  }

  capabilities(): Record<string, Capability> {
    const out: Record<string, Capability> = {};
    for (const [name, s] of Object.entries(this.spec.parameters)) out[name] = capabilityOf(s);
    return out;
  }

  /** Resolves `name` or `name:channel` against the profile. */
  protected resolve(param: string): ParamRef {
    const [name, ch, extra] = param.split(':');
    const spec = this.spec.parameters[name];
    if (!spec || extra !== undefined) {
      throw new DeviceError('UNKNOWN_PARAMETER', `${this.where}: no parameter '${param}'; known: ${Object.keys(this.spec.parameters).join(', ')}.`);
    }
    if (spec.channels) {
      if (ch === undefined) throw new DeviceError('CHANNEL_REQUIRED', `${this.where}: '${name}' is per channel; address it as ${name}:<channel> with channel one of ${spec.channels.join(', ')}.`);
      const channel = Number(ch);
      if (!Number.isInteger(channel) || !spec.channels.includes(channel)) {
        throw new DeviceError('UNKNOWN_CHANNEL', `${this.where}: channel '${ch}' of '${name}' does not exist; channels: ${spec.channels.join(', ')}.`);
      }
      return { name, spec, channel };
    }
    if (ch !== undefined) throw new DeviceError('UNKNOWN_PARAMETER', `${this.where}: '${name}' has no channels; address it as '${name}'.`);
    return { name, spec };
  }

  protected requireReady(what: string): void {
    if (this._state !== 'ready') {
      throw new TransportError('NOT_CONNECTED', `${this.where} is ${this._state}, cannot ${what}. ${this._state === 'closed' ? 'Open it first.' : this._state === 'failed' ? 'Reconnection gave up; check the cable and open it again.' : 'It is reconnecting; retry shortly.'}`);
    }
  }

  protected checkIdentity(id: DeviceIdentity): void {
    if (!firmwareAllowed(this.spec, id.firmware)) {
      throw new DeviceError('FIRMWARE_NOT_ALLOWED', `${this.where}: firmware ${id.firmware} of ${id.model} ${id.serial} is not in the profile's allowed list (${this.spec.firmware.join(', ')}). Update the device or, after validating it, the profile.`);
    }
    if (id.model !== this.spec.model) {
      throw new DeviceError('WRONG_MODEL', `${this.where}: the device says it is ${id.vendor} ${id.model}, the profile is for ${this.spec.vendor} ${this.spec.model}. Check which port the device is on.`);
    }
  }

  /** Applies every profile default (per channel for per-channel parameters). */
  async applyDefaults(): Promise<void> {
    for (const [name, s] of Object.entries(this.spec.parameters)) {
      if (s.default === undefined || s.readonly || s.secret) continue;
      for (const ch of s.channels ?? [undefined]) await this.set(ch === undefined ? name : `${name}:${ch}`, s.default);
    }
  }

  abstract set(param: string, value: number): Promise<void>;

  /** Connects the transport and reads identity; subclasses implement. */
  protected abstract connect(): Promise<DeviceIdentity>;
  protected abstract disconnectTransport(): Promise<void>;

  async open(): Promise<DeviceIdentity> {
    if (this._state === 'ready' && this.lastIdentity) return this.lastIdentity;
    // An explicit open takes over from a reconnect loop in progress (or after it gave up).
    this.reconnecting = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.setState('connecting');
    try {
      const id = await this.connect();
      this.checkIdentity(id);
      this.lastIdentity = id;
      this.setState('ready');
      if (this.applyDefaultsOnOpen) await this.applyDefaults();
      return id;
    } catch (err) {
      await this.disconnectTransport().catch(() => undefined);
      this.setState('closed', (err as Error).message);
      throw err;
    }
  }

  async close(): Promise<void> {
    this.reconnecting = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    await this.disconnectTransport().catch(() => undefined);
    this.setState('closed');
  }

  /** Called by subclasses when the transport reports the line gone. */
  protected lineLost(cause?: Error): void {
    if (this._state === 'closed' || this.reconnecting) return;
    this.setState('disconnected', cause?.message ?? 'line lost');
    this.reconnecting = true;
    let attempt = 0;
    const tryOnce = async (): Promise<void> => {
      if (!this.reconnecting) return;
      attempt++;
      this.setState('reconnecting', `attempt ${attempt}`);
      try {
        await this.disconnectTransport().catch(() => undefined);
        const id = await this.connect();
        this.checkIdentity(id);
        if (!this.reconnecting) return void (await this.disconnectTransport().catch(() => undefined));
        this.lastIdentity = id;
        this.reconnecting = false;
        this.setState('ready', `reconnected after ${attempt} attempt(s)`);
      } catch (err) {
        if (!this.reconnecting) return;
        if (attempt >= this.policy.maxAttempts) {
          this.reconnecting = false;
          await this.disconnectTransport().catch(() => undefined);
          this.setState('failed', `gave up after ${attempt} attempts: ${(err as Error).message}`);
          return;
        }
        schedule();
      }
    };
    const schedule = (): void => {
      const wait = Math.min(this.policy.maxMs, this.policy.initialMs * 2 ** Math.min(attempt, 30));
      this.reconnectTimer = setTimeout(() => void tryOnce(), wait);
      // A reconnect loop must not keep a CLI process alive on its own.
      this.reconnectTimer.unref?.();
    };
    schedule();
  }

  async identity(): Promise<DeviceIdentity> {
    this.requireReady('read its identity');
    const id = await this.connectIdentity();
    this.lastIdentity = id;
    return id;
  }

  protected abstract connectIdentity(): Promise<DeviceIdentity>;
}
