/**
 * IDQ ID900 / ID1000 Time Controller driver: SCPI text over ZeroMQ (transports/zmq.ts), settings
 * from the profile (idq-id900.json) through the generic SCPI driver, plus the two readings the
 * SCPI port offers: the input counters (`INPU<n>:COUN?` over `INPU<n>:COUN:INTE`) and the
 * on-board start-stop histograms (`HIST<n>:DATA?`, a bracketed list of bin counts as IDQ's
 * Python examples read it).
 *
 * A histogram reply is checked whole: it must be `[n, n, ...]` with exactly `hist_bin_count`
 * non-negative integers; a reply cut short (a lost tail) or with anything else in it is a
 * ProtocolError naming the device, never a shorter histogram.
 */
import { ProtocolError } from '../../errors.ts';
import type { CountSample, DeviceHistogram, TimeController } from '../types.ts';
import { ScpiDevice } from './scpi.ts';

const HISTOGRAM = /^\s*\[\s*((?:\d+\s*,\s*)*\d+)?\s*\]\s*$/;

export class Id900Driver extends ScpiDevice implements TimeController {
  readonly kind = 'time-controller' as const;

  inputs(): number[] {
    return [...(this.spec.parameters.count?.channels ?? [1, 2, 3, 4])];
  }

  async countRates(): Promise<CountSample> {
    this.requireReady('read its counters');
    const channels = this.inputs();
    const ratesPerSec: number[] = [];
    let integrationMs = 0;
    for (const ch of channels) {
      const ms = await this.get(`count_integration:${ch}`);
      const counts = await this.get(`count:${ch}`);
      if (!Number.isInteger(counts) || counts < 0) {
        throw new ProtocolError('BAD_REPLY', `${this.where}: counter of input ${ch} read ${counts}, not a count. Check the firmware and the profile.`);
      }
      ratesPerSec.push((counts * 1000) / ms);
      integrationMs = Math.max(integrationMs, ms);
    }
    return { channels, ratesPerSec, integrationMs };
  }

  async histogram(n: number): Promise<DeviceHistogram> {
    this.requireReady(`read histogram ${n}`);
    const binPs = await this.get(`hist_bin_width:${n}`);
    const firstBinPs = await this.get(`hist_min:${n}`);
    const bins = await this.get(`hist_bin_count:${n}`);
    const command = `HIST${n}:DATA?`;
    const reply = await this.transport.query(command);
    if (reply.startsWith(this.spec.errorPrefix ?? 'ERR')) throw new ProtocolError('DEVICE_REFUSED', `${this.where} refused '${command}': ${reply.slice(0, 120)}.`);
    const m = HISTOGRAM.exec(reply);
    if (!m) {
      throw new ProtocolError('BAD_HISTOGRAM', `${this.where}: reply to '${command}' is not a bracketed list of counts (got ${JSON.stringify(reply.slice(0, 60))}${reply.length > 60 ? `, ${reply.length} characters` : ''}). A cut reply or another device on the port; read it again or check the connection.`);
    }
    const counts = m[1] === undefined ? [] : m[1].split(',').map((x) => Number(x));
    if (counts.length !== bins) {
      throw new ProtocolError('SHORT_HISTOGRAM', `${this.where}: histogram ${n} has ${counts.length} bins, the device is set to ${bins}. Bins would be misplaced: read it again (it may have been reconfigured meanwhile).`);
    }
    return { binPs, firstBinPs, counts };
  }
}
