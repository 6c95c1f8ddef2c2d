/**
 * S-Fifteen SPDC board driver (profile s15-spdc): the generic serial SCPI driver for its settings
 * and readings, plus what the board's text protocol leaves to the host, as the vendor's driver
 * does it:
 * - the board answers nothing to an accepted set, so every set is read back: a refusal (an `ERR`
 *   line, taken as the read-back's reply or dropped as stray) or a value the board did not take
 *   is an error naming the device, never silence;
 * - the laser current is held below the board's own `LLIMIT` (read first), besides the profile's
 *   limits;
 * - `enable` is a sequence, not a register: on = POWER bit 1 set, then `ON`; off = `OFF`, then
 *   bit 1 cleared; it reads as POWER bit 1.
 */
import { DeviceError, ProtocolError } from '../../errors.ts';
import type { DeviceIdentity, Laser } from '../types.ts';
import { ScpiDevice, type ScpiDriverOptions } from './scpi.ts';

export interface SpdcDriverOptions extends ScpiDriverOptions {
  /** Run before each connect (an emulated board starts its pty pair on first use). */
  prepare?: () => Promise<void>;
}

export class SpdcBoardDriver extends ScpiDevice implements Laser {
  readonly kind = 'laser' as const;
  private readonly prepare: (() => Promise<void>) | undefined;

  constructor(opts: SpdcDriverOptions) {
    super(opts);
    this.prepare = opts.prepare;
  }

  protected override async connect(): Promise<DeviceIdentity> {
    await this.prepare?.();
    return super.connect();
  }

  override async get(param: string): Promise<number> {
    if (param !== 'enable') return super.get(param);
    return (await super.get('power')) & 2 ? 1 : 0;
  }

  override async set(param: string, value: number): Promise<void> {
    if (param === 'enable') return this.setEnabled(value === 1);
    const ref = this.resolve(param);
    if (ref.name === 'laser_current' && !ref.spec.readonly) {
      const limit = await super.get('laser_current_limit');
      if (value > limit) throw new DeviceError('OUT_OF_RANGE', `${this.where}: laser_current ${value} mA is above the board's own limit LLIMIT ${limit} mA. Raise laser_current_limit first if that is intended.`);
    }
    await super.set(param, value);
    await this.verify(param, value);
  }

  /** Reads back what was just set: the board's only way of saying it did not take it. */
  private async verify(param: string, value: number): Promise<void> {
    let now: number;
    try {
      now = await this.get(param);
    } catch (err) {
      if ((err as DeviceError).code === 'DEVICE_REFUSED') throw new DeviceError('DEVICE_REFUSED', `${this.where} refused ${param} = ${value}: ${(err as Error).message.replace(/^.*?refused '[^']*': /, '')}`, { cause: err });
      throw err;
    }
    const step = this.spec.parameters[param.split(':')[0]].step || 1e-9;
    if (Math.abs(now - value) > step / 2) {
      throw new ProtocolError('NOT_APPLIED', `${this.where}: ${param} reads ${now} after setting ${value}: the board did not take it (it answers nothing to a set; a refusal may have come as a stray line). Check the value and the board's limits.`);
    }
  }

  async setEnabled(on: boolean): Promise<void> {
    const power = await super.get('power');
    if (on) {
      await this.set('power', power | 2);
      await this.transport.write('ON');
    } else {
      await this.transport.write('OFF');
      await this.set('power', power & 1);
    }
    // ON is refused (text) when the power line is off: a query now takes that line, or reads POWER.
    await this.verify('enable', on ? 1 : 0);
  }

  async enabled(): Promise<boolean> {
    return (await this.get('enable')) === 1;
  }
}
