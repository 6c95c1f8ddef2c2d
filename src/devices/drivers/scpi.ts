/**
 * Serial (SCPI-style) drivers generated from a profile: the photon source and the SPAD detector.
 * All wire knowledge (command templates, reply patterns, units and scale, acknowledgements) comes
 * from the profile; this file only knows the grammar `{ch}`/`{value}` and the refusal prefix.
 */
import { DeviceError, ProtocolError } from '../../errors.ts';
import { decodePulseList, encodePulseList } from '../../protocol/pulse-list.ts';
import { unpackChoiceNibbles, unpackClasses } from '../../protocol/choices.ts';
import type { DeviceProfile, ParameterSpec } from '../profile.ts';
import type { DeviceIdentity, LineTransport, PhotonSource, SpadDetector } from '../types.ts';
import { checkValue, DeviceBase, type DriverOptions, type ParamRef } from './base.ts';

export interface ScpiDriverOptions extends DriverOptions {
  transport: LineTransport;
}

const NUMBER = /^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$/;

function decimalsFor(s: ParameterSpec): number {
  if (s.decimals !== undefined) return s.decimals;
  const step = s.step * (s.scale ?? 1);
  for (let d = 0; d < 12; d++) {
    const x = step * 10 ** d;
    if (Math.abs(x - Math.round(x)) < 1e-9 * Math.max(1, x)) return d;
  }
  return 12;
}

export abstract class ScpiDevice extends DeviceBase {
  protected readonly transport: LineTransport;
  private readonly onClose = (err?: Error) => this.lineLost(err);

  constructor(opts: ScpiDriverOptions) {
    super(opts);
    if (opts.profile.transport.type !== 'serial' && opts.profile.transport.type !== 'zmq') {
      throw new DeviceError('WRONG_TRANSPORT', `${opts.id}: profile ${opts.profile.name} is for ${opts.profile.transport.type}, not serial or zmq (SCPI text).`);
    }
    this.transport = opts.transport;
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

  /**
   * Asks the identity, three times at most: a device still sending the tail of a long reply to a
   * process that died (a read-back block) answers late or with a stray line first. A timeout
   * makes the transport wait out and drop stray replies before the next query. A process that died
   * while *writing* a read-back request leaves the source inside that request's binary block,
   * where our query is taken as block bytes: a source that abandons a stalled block
   * (`readback.blockIdleMs`) is left in silence that long before the next attempt. A line reset
   * mid-request (LINE_WEDGED) leaves the request's tail in the line, which the device may answer
   * with a garbled line first. A wrong device fails all three the same way.
   */
  protected async connectIdentity(): Promise<DeviceIdentity> {
    const idn = this.spec.identity!;
    for (let attempt = 1; ; attempt++) {
      try {
        const reply = await this.transport.query(idn.query);
        const m = new RegExp(idn.pattern).exec(reply);
        if (!m?.groups) {
          throw new ProtocolError('BAD_IDENTITY', `${this.where}: identity reply to '${idn.query}' does not match the profile's pattern (got ${JSON.stringify(reply.slice(0, 80))}). Is this the right device and profile?`);
        }
        const g = m.groups;
        return { vendor: g.vendor, model: g.model, serial: g.serial, firmware: g.firmware };
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (attempt >= 3 || (code !== 'NO_REPLY' && code !== 'BAD_IDENTITY' && code !== 'GARBLED_REPLY')) throw err;
        const quietMs = this.spec.readback?.blockIdleMs;
        if (code === 'NO_REPLY' && quietMs) await new Promise((r) => setTimeout(r, quietMs + 250));
      }
    }
  }

  private fill(template: string, ref: ParamRef, value?: string): string {
    return template.replaceAll('{ch}', String(ref.channel ?? '')).replaceAll('{value}', value ?? '');
  }

  private refused(command: string, reply: string): DeviceError {
    return new DeviceError('DEVICE_REFUSED', `${this.where} refused '${command}': ${reply.slice(0, 120)}. Check the value against 'qkd device ${this.id} get' and the device manual.`);
  }

  async get(param: string): Promise<number> {
    const ref = this.resolve(param);
    if (ref.spec.secret || !ref.spec.get) throw new DeviceError('WRITE_ONLY', `${this.where}: '${ref.name}' cannot be read back (write-only).`);
    this.requireReady(`read ${param}`);
    const command = this.fill(ref.spec.get, ref);
    const reply = await this.transport.query(command);
    if (reply.startsWith(this.spec.errorPrefix ?? 'ERR')) throw this.refused(command, reply);
    if (ref.spec.words) return this.fromWord(command, ref, reply);
    const m = (ref.spec.reply ? new RegExp(ref.spec.reply) : NUMBER).exec(reply);
    const v = m ? Number(m[1]) : NaN;
    if (!Number.isFinite(v)) {
      throw new ProtocolError('BAD_REPLY', `${this.where}: reply to '${command}' is not a number (got ${JSON.stringify(reply.slice(0, 80))}). The device or the profile's reply pattern is wrong.`);
    }
    return v / (ref.spec.scale ?? 1);
  }

  async set(param: string, value: number): Promise<void> {
    const ref = this.resolve(param);
    if (ref.spec.readonly || !ref.spec.set) throw new DeviceError('READ_ONLY', `${this.where}: '${ref.name}' is a measured value and cannot be set.`);
    checkValue(this.where, param, ref.spec, value, ref.spec.secret);
    this.requireReady(`set ${param}`);
    const wire = ref.spec.words ? ref.spec.words[value - ref.spec.min] : (value * (ref.spec.scale ?? 1)).toFixed(decimalsFor(ref.spec));
    await this.send(this.fill(ref.spec.set, ref, wire), ref.spec.secret ? this.fill(ref.spec.set, ref, '<secret>') : undefined);
  }

  /** An enumeration the device speaks as words (`ON`/`OFF`): its value, matched without case. */
  private fromWord(command: string, ref: ParamRef, reply: string): number {
    const m = ref.spec.reply ? new RegExp(ref.spec.reply).exec(reply) : undefined;
    const said = (m ? m[1] : reply).trim().toUpperCase();
    const i = ref.spec.words!.findIndex((w) => w.toUpperCase() === said);
    if (i < 0) {
      throw new ProtocolError('BAD_REPLY', `${this.where}: reply to '${command}' is none of ${ref.spec.words!.join(', ')} (got ${JSON.stringify(reply.slice(0, 80))}). The device or the profile's "words" are wrong.`);
    }
    return ref.spec.min + i;
  }

  /** Sends a set command; `shown` replaces the command in messages when it carries a secret. */
  private async send(command: string, shown = command): Promise<void> {
    if (this.spec.setAck === undefined) return this.transport.write(command, shown);
    const reply = await this.transport.query(command, undefined, shown);
    if (reply === this.spec.setAck) return;
    if (reply.startsWith(this.spec.errorPrefix ?? 'ERR')) throw this.refused(shown, reply);
    throw new ProtocolError('BAD_ACK', `${this.where}: expected '${this.spec.setAck}' after '${shown}', got ${JSON.stringify(reply.slice(0, 80))}.`);
  }
}

export class PhotonSourceDriver extends ScpiDevice implements PhotonSource {
  readonly kind = 'photon-source' as const;
  private static readonly LEVEL = ['intensity_signal', 'intensity_decoy', 'intensity_vacuum'] as const;
  setRepetitionRateHz(hz: number) {
    return this.set('rep_rate', hz);
  }
  repetitionRateHz() {
    return this.get('rep_rate');
  }
  setIntensity(level: 0 | 1 | 2, meanPhotonNumber: number) {
    return this.set(PhotonSourceDriver.LEVEL[level], meanPhotonNumber);
  }
  intensity(level: 0 | 1 | 2) {
    return this.get(PhotonSourceDriver.LEVEL[level]);
  }
  async setPattern(mode: 0 | 1): Promise<void> {
    await this.set('pattern_mode', mode);
  }
  async setPatternProbabilities(p: { signal: number; decoy: number; basisZ: number }): Promise<void> {
    await this.set('prob_signal', p.signal);
    await this.set('prob_decoy', p.decoy);
    await this.set('prob_basis_z', p.basisZ);
  }
  async emittedPulses(): Promise<number> {
    const rb = this.readbackSpec();
    // The horizon belongs to the read-back: it gets the read-back's deadline, not the settings'
    // 500 ms (an emulated source served by a loaded host missed it and stopped Bob's pipeline).
    const reply = await this.transport.query(rb.emitted, rb.timeoutMs);
    const v = Number(reply.trim());
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new ProtocolError('BAD_REPLY', `${this.where}: reply to '${rb.emitted}' is not a pulse count (got ${JSON.stringify(reply.slice(0, 80))}).`);
    }
    return v;
  }
  readChoices(pulses: Float64Array): Promise<Uint8Array> {
    return this.readBack('choices', pulses);
  }
  readClasses(pulses: Float64Array): Promise<Uint8Array> {
    return this.readBack('classes', pulses);
  }
  /**
   * readChoices of the pulses of an encoded pulse list (strictly increasing, `count` of them,
   * checked by the caller): sent as it is when it fits one query, so a list that arrives encoded
   * (Bob's sift message) is not decoded and encoded again on Alice's thread.
   */
  async readChoicesOfList(list: Uint8Array, count: number): Promise<Uint8Array> {
    const rb = this.readbackSpec();
    if (count > rb.maxPulses) return this.readBack('choices', decodePulseList(list, count));
    this.requireReady('read back choices');
    const reply = await this.transport.queryBlock!(rb.choices, list, rb.timeoutMs);
    this.checkReadBackReply(rb.choices, reply, count, 2);
    const values = unpackChoiceNibbles(reply, count);
    reply.fill(0);
    return values;
  }

  /** A read-back reply must be a block of exactly the bytes for `n` values, `perByte` a byte. */
  private checkReadBackReply(header: string, reply: Uint8Array | string, n: number, perByte: number): asserts reply is Uint8Array {
    if (typeof reply === 'string') {
      if (reply.startsWith(this.spec.errorPrefix ?? 'ERR')) throw new DeviceError('DEVICE_REFUSED', `${this.where} refused the read-back of ${n} pulses (${header}): ${reply.slice(0, 120)}.`);
      throw new ProtocolError('BAD_READBACK', `${this.where}: read-back ${header} answered a text line, not a block (${JSON.stringify(reply.slice(0, 80))}).`);
    }
    const want = Math.ceil(n / perByte);
    if (reply.length !== want) {
      throw new ProtocolError('SHORT_READBACK', `${this.where}: read-back ${header} of ${n} pulses answered ${reply.length} bytes, expected ${want}. The record cannot be aligned with the pulses: check the line and the source's firmware.`);
    }
  }

  private readbackSpec() {
    const rb = this.spec.readback;
    if (!rb || !this.transport.queryBlock) {
      throw new DeviceError('NO_READBACK', `${this.where}: profile ${this.spec.name} declares no binary read-back of the source's RNG record ("readback"), so the node cannot learn what it sent. Use a source (and profile) with read-back.`);
    }
    return rb;
  }

  /**
   * One read-back: the pulses go out sorted and distinct (LEB128 deltas) in lists of at most the
   * profile's `maxPulses`; the answer comes back in the caller's order. A reply of the wrong
   * length is refused (a short block would shift every later pulse's choice).
   */
  private async readBack(what: 'choices' | 'classes', pulses: Float64Array): Promise<Uint8Array> {
    const rb = this.readbackSpec();
    this.requireReady(`read back ${what}`);
    const n = pulses.length;
    let sorted = true;
    for (let i = 1; i < n && sorted; i++) sorted = pulses[i] > pulses[i - 1];
    const order = sorted ? undefined : Array.from({ length: n }, (_, i) => i).sort((a, b) => pulses[a] - pulses[b]);
    const distinct: number[] = [];
    const slot = new Uint32Array(n);
    if (order) {
      for (const i of order) {
        if (!distinct.length || pulses[i] !== distinct[distinct.length - 1]) distinct.push(pulses[i]);
        slot[i] = distinct.length - 1;
      }
    }
    const list = order ? Float64Array.from(distinct) : pulses;
    const values = new Uint8Array(list.length);
    const perByte = what === 'choices' ? 2 : 4;
    for (let at = 0; at < list.length; at += rb.maxPulses) {
      const part = list.subarray(at, Math.min(list.length, at + rb.maxPulses));
      const header = what === 'choices' ? rb.choices : rb.classes;
      const reply = await this.transport.queryBlock!(header, encodePulseList(part), rb.timeoutMs);
      this.checkReadBackReply(header, reply, part.length, perByte);
      values.set(what === 'choices' ? unpackChoiceNibbles(reply, part.length) : unpackClasses(reply, part.length), at);
      reply.fill(0);
    }
    if (!order) return values;
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = values[slot[i]];
    values.fill(0);
    return out;
  }
  setEnabled(on: boolean) {
    return this.set('enable', on ? 1 : 0);
  }
  async enabled() {
    return (await this.get('enable')) === 1;
  }
}

export class SpadDetectorDriver extends ScpiDevice implements SpadDetector {
  readonly kind = 'spad-detector' as const;
  setEfficiency(fraction: number) {
    return this.set('efficiency', fraction);
  }
  efficiency() {
    return this.get('efficiency');
  }
  setBiasV(volts: number) {
    return this.set('bias_voltage', volts);
  }
  setDeadTimeNs(ns: number) {
    return this.set('dead_time', ns);
  }
  deadTimeNs() {
    return this.get('dead_time');
  }
  setThresholdMv(mv: number) {
    return this.set('threshold', mv);
  }
  setTemperatureSetpointC(celsius: number) {
    return this.set('temperature_setpoint', celsius);
  }
  temperatureC() {
    return this.get('temperature');
  }
  async ready() {
    return (await this.get('ready')) === 1;
  }
  countRatePerSec() {
    return this.get('count_rate');
  }
}

/** Builds the serial driver for a profile's kind. */
export function createSerialDriver(profile: DeviceProfile, opts: Omit<ScpiDriverOptions, 'profile'>): PhotonSourceDriver | SpadDetectorDriver {
  if (profile.kind === 'photon-source') return new PhotonSourceDriver({ ...opts, profile });
  if (profile.kind === 'spad-detector') return new SpadDetectorDriver({ ...opts, profile });
  throw new DeviceError('WRONG_TRANSPORT', `${opts.id}: profile ${profile.name} is a ${profile.kind}; it has no serial driver.`);
}
