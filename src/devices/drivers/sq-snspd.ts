/**
 * Single Quantum SNSPD controller driver over the JSON/TCP transport (transports/tcp-json.ts).
 * Parameters come from the profile (sq-snspd.json): each names the JSON `label` that carries its
 * value (an array for per-detector values, index = detector - 1) and the `command` that sets it.
 *
 * - A read asks for the label table (`{"request": "labelProps"}`) and takes the label's
 *   `{"value": {"value": ...}}` entry from the answer.
 * - A set of one detector's value sends the whole array with that element changed (the device's
 *   commands set all detectors at once: `SetAllBiasCurrents`), then waits for the device's
 *   broadcast of the new value; an `Error` frame instead is a DeviceError('DEVICE_REFUSED'), a
 *   broadcast of another value is ProtocolError('NOT_APPLIED'): a set is never assumed.
 * - Identity: the label table must hold `NumberOfDetectors` (else this is not a Single Quantum
 *   controller: BAD_IDENTITY) equal to the profile's detector count (else WRONG_MODEL).
 * - Counts: the next CSV line on the counts port after the call (time, then one count per
 *   detector over the measurement period), as rates per second.
 */
import { DeviceError, ProtocolError } from '../../errors.ts';
import type { TcpJsonSettings } from '../profile.ts';
import type { CountSample, DeviceIdentity, SnspdController } from '../types.ts';
import { TcpJsonTransport, type JsonMessage } from '../transports/tcp-json.ts';
import { checkValue, DeviceBase, type DriverOptions } from './base.ts';

export interface SqDriverOptions extends DriverOptions {
  transport: TcpJsonTransport;
}

const isProps = (v: unknown): v is { value: unknown } => typeof v === 'object' && v !== null && !Array.isArray(v) && 'value' in v;
const isError = (m: JsonMessage) => typeof m.label === 'string' && m.label.includes('Error');

export class SqSnspdDriver extends DeviceBase implements SnspdController {
  readonly kind = 'snspd-controller' as const;
  private readonly transport: TcpJsonTransport;
  private readonly onClose = (err?: Error) => this.lineLost(err);

  constructor(opts: SqDriverOptions) {
    super(opts);
    if (opts.profile.transport.type !== 'tcp') throw new DeviceError('WRONG_TRANSPORT', `${opts.id}: profile ${opts.profile.name} is for ${opts.profile.transport.type}, not tcp (JSON).`);
    this.transport = opts.transport;
  }

  channels(): number[] {
    return [...(this.spec.parameters.bias_current?.channels ?? [])];
  }

  protected async connect(): Promise<DeviceIdentity> {
    this.transport.off('close', this.onClose);
    await this.transport.open();
    this.transport.on('close', this.onClose);
    return this.connectIdentity();
  }

  protected async disconnectTransport(): Promise<void> {
    this.transport.off('close', this.onClose);
    await this.transport.close();
  }

  /** The props entry of `label` from a fresh label table. */
  private async labelValue(label: string): Promise<unknown> {
    const m = await this.transport.request({ request: 'labelProps', value: 'None' }, (x) => isError(x) || (x.label === label && isProps(x.value)), `the label table (for ${label})`);
    if (isError(m)) throw new DeviceError('DEVICE_REFUSED', `${this.where} answered the label request with an error: ${String(m.value).slice(0, 120)}.`);
    return (m.value as { value: unknown }).value;
  }

  protected async connectIdentity(): Promise<DeviceIdentity> {
    let n: unknown;
    try {
      n = await this.labelValue('NumberOfDetectors');
    } catch (err) {
      if (err instanceof ProtocolError) {
        throw new ProtocolError('BAD_IDENTITY', `${this.where}: the device on ${this.transport.description} does not speak Single Quantum's JSON protocol (${err.message}) Is this the right address and port?`, { cause: err });
      }
      throw err;
    }
    const want = this.channels().length;
    if (n !== want) {
      throw new DeviceError('WRONG_MODEL', `${this.where}: the controller reports ${JSON.stringify(n)} detectors, the profile has ${want} (channels ${this.channels().join(', ')}). Use a profile written for this controller.`);
    }
    return { vendor: this.spec.vendor, model: this.spec.model, serial: this.transport.description.replace(/^tcp /, ''), firmware: 'unknown' };
  }

  async get(param: string): Promise<number> {
    const ref = this.resolve(param);
    this.requireReady(`read ${param}`);
    const label = ref.spec.label!;
    const raw = await this.labelValue(label);
    const v = ref.channel === undefined ? raw : Array.isArray(raw) ? raw[ref.channel - 1] : undefined;
    const num = typeof v === 'boolean' ? Number(v) : v;
    if (typeof num !== 'number' || !Number.isFinite(num)) {
      throw new ProtocolError('BAD_REPLY', `${this.where}: label ${label} holds ${JSON.stringify(raw)?.slice(0, 80)}, not ${ref.channel === undefined ? 'a number' : `an array with detector ${ref.channel}`}. The controller's firmware or the profile is wrong.`);
    }
    return num;
  }

  async set(param: string, value: number): Promise<void> {
    const ref = this.resolve(param);
    if (ref.spec.readonly || !ref.spec.command) throw new DeviceError('READ_ONLY', `${this.where}: '${ref.name}' is a measured value and cannot be set.`);
    checkValue(this.where, param, ref.spec, value);
    this.requireReady(`set ${param}`);
    const label = ref.spec.label!;
    let wire: unknown = ref.spec.unit === 'bool' ? value === 1 : value;
    if (ref.channel !== undefined) {
      const now = await this.labelValue(label);
      if (!Array.isArray(now) || now.length < ref.channel) throw new ProtocolError('BAD_REPLY', `${this.where}: label ${label} holds ${JSON.stringify(now)?.slice(0, 80)}, not an array with detector ${ref.channel}.`);
      const next = [...now];
      next[ref.channel - 1] = value;
      wire = next;
    }
    const m = await this.transport.request({ command: ref.spec.command, label, value: wire }, (x) => isError(x) || (x.label === label && !isProps(x.value)), `${ref.spec.command} (${param} = ${value})`);
    if (isError(m)) throw new DeviceError('DEVICE_REFUSED', `${this.where} refused ${ref.spec.command} (${param} = ${value}): ${String(m.value).slice(0, 120)}. Check the value against 'qkd device ${this.id} get' and the controller's limits.`);
    if (JSON.stringify(m.value) !== JSON.stringify(wire)) {
      throw new ProtocolError('NOT_APPLIED', `${this.where}: after ${ref.spec.command} the controller reports ${label} = ${JSON.stringify(m.value)?.slice(0, 80)}, not ${JSON.stringify(wire).slice(0, 80)}. Read it back and retry.`);
    }
  }

  setBiasCurrentUa(channel: number, microamps: number) {
    return this.set(`bias_current:${channel}`, microamps);
  }

  setTriggerLevelMv(channel: number, millivolts: number) {
    return this.set(`trigger_level:${channel}`, millivolts);
  }

  setEnabled(on: boolean) {
    return this.set('enable', on ? 1 : 0);
  }

  async enabled(): Promise<boolean> {
    return (await this.get('enable')) === 1;
  }

  async countRates(timeoutMs?: number): Promise<CountSample> {
    const periodMs = await this.get('measurement_period');
    const line = await this.transport.nextCounts(timeoutMs ?? 2 * periodMs + (this.spec.transport as TcpJsonSettings).timeoutMs);
    const channels = this.channels();
    if (line.counts.length !== channels.length) {
      throw new ProtocolError('BAD_COUNT_LINE', `${this.where}: a count line holds ${line.counts.length} counts, the controller has ${channels.length} detectors. A cut line or another firmware: read again.`);
    }
    return { channels, ratesPerSec: line.counts.map((c) => (c * 1000) / periodMs), integrationMs: periodMs, deviceTimeMs: Math.round(line.deviceTimeS * 1000) };
  }
}
