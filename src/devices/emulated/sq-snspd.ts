/**
 * An emulated Single Quantum SNSPD controller: its control port (JSON in, JSON frames ending in
 * 0x17 out) and its counts port (a CSV line per measurement period) on two real TCP listeners
 * (127.0.0.1, ephemeral ports by default), so the real transport (transports/tcp-json.ts) and
 * driver (drivers/sq-snspd.ts) run against it. Protocol as transports/tcp-json.ts draws it.
 *
 * Labels: NumberOfDetectors, BiasCurrent (uA, per detector, firmware limit +-90.9 as the vendor's
 * driver documents for IV scans), TriggerLevel (mV, per detector, our limit +-1000),
 * DetectorEnable (bool), InptMeasurementPeriod (ms, 10..60000; the vendor's driver says 10 ms is
 * the minimum), BiasVoltage (mV, on request). Commands: SetAllBiasCurrents, SetAllTriggerLevels,
 * DetectorEnable, SetMeasurementPeriod; each accepted one is broadcast back as `{label, value}`;
 * a refused one answers `{"label": "Error", "value": "<why>"}` (the vendor's driver treats any
 * label containing "Error" as an error; the exact label is ours).
 *
 * Counts: while enabled, detector i counts (dark 100/s + 1e5/s x bias/12 uA, capped at the
 * switching current 15 uA; nothing when the trigger level is above the 400 mV pulse height).
 *
 * Faults: `fault` 'garbage' (frames of bytes that are not JSON), 'truncate' (half a frame, no end
 * byte), 'silent' (no frames); `countsFault` 'garbage' | 'truncate' | 'silent' likewise on the
 * count lines; `detectors` (a controller with another number of detectors); `speaks = 'other'`
 * (answers something that is not this protocol).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { scanJsonObjects, type JsonMessage, type TcpJsonAddress } from '../transports/tcp-json.ts';

export type SqFault = 'none' | 'garbage' | 'truncate' | 'silent';

export interface EmulatedSqOptions {
  detectors?: number;
  /** Measurement period at power-on (ms). */
  periodMs?: number;
}

const ETB = '\u0017';
const PULSE_MV = 400;

export class EmulatedSqSnspd {
  fault: SqFault = 'none';
  countsFault: SqFault = 'none';
  speaks: 'sq' | 'other' = 'sq';
  detectors: number;
  /** Commands and requests received (names only). */
  readonly log: string[] = [];
  bias: number[] = [];
  trigger: number[] = [];
  enabled = false;
  periodMs: number;
  private control: Server | undefined;
  private countsServer: Server | undefined;
  private clients = new Set<Socket>();
  private countClients = new Set<Socket>();
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: EmulatedSqOptions = {}) {
    this.detectors = opts.detectors ?? 4;
    this.periodMs = opts.periodMs ?? 100;
    this.reset();
  }

  reset(): void {
    this.bias = Array.from({ length: this.detectors }, () => 0);
    this.trigger = Array.from({ length: this.detectors }, () => 100);
    this.enabled = false;
  }

  snapshot(): Record<string, number> {
    const s: Record<string, number> = { enabled: this.enabled ? 1 : 0, periodMs: this.periodMs };
    this.bias.forEach((v, i) => (s[`bias${i + 1}`] = v));
    this.trigger.forEach((v, i) => (s[`trigger${i + 1}`] = v));
    return s;
  }

  restore(s: Record<string, number>): void {
    if (typeof s.enabled === 'number') this.enabled = s.enabled === 1;
    if (typeof s.periodMs === 'number' && s.periodMs >= 10) this.periodMs = s.periodMs;
    for (let i = 0; i < this.detectors; i++) {
      if (typeof s[`bias${i + 1}`] === 'number') this.bias[i] = s[`bias${i + 1}`];
      if (typeof s[`trigger${i + 1}`] === 'number') this.trigger[i] = s[`trigger${i + 1}`];
    }
  }

  /** Count rate of each detector (per second) under the present settings. */
  ratesPerSec(): number[] {
    return this.bias.map((b, i) => (!this.enabled || this.trigger[i] > PULSE_MV ? 0 : Math.round(100 + 1e5 * Math.min(Math.max(b, 0), 15) / 12)));
  }

  async start(host = '127.0.0.1', port = 0, countsPort = 0): Promise<TcpJsonAddress> {
    this.control = createServer((s) => this.onControl(s));
    this.countsServer = createServer((s) => {
      this.countClients.add(s);
      s.on('close', () => this.countClients.delete(s));
      s.on('error', () => {});
    });
    const listen = (srv: Server, p: number) => new Promise<number>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(p, host, () => resolve((srv.address() as { port: number }).port));
    });
    const a = { host, port: await listen(this.control, port), countsPort: await listen(this.countsServer, countsPort) };
    this.schedule();
    return a;
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const s of [...this.clients, ...this.countClients]) s.destroy();
    await Promise.all([this.control, this.countsServer].map((srv) => new Promise<void>((r) => (srv ? srv.close(() => r()) : r()))));
    this.control = this.countsServer = undefined;
  }

  /** Drops every connection (a controller rebooting); the listeners stay. */
  dropConnections(): void {
    for (const s of [...this.clients, ...this.countClients]) s.destroy();
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.sendCounts();
      if (this.control) this.schedule();
    }, this.periodMs);
    this.timer.unref();
  }

  private sendCounts(): void {
    if (this.countsFault === 'silent') return;
    const counts = this.ratesPerSec().map((r) => Math.round((r * this.periodMs) / 1000));
    let line = `${(Date.now() / 1000).toFixed(3)},${counts.join(',')}\n`;
    if (this.countsFault === 'garbage') line = `\u00ff\u00fe,x${counts.length},??\n`;
    if (this.countsFault === 'truncate') line = line.slice(0, line.length >> 1);
    for (const s of this.countClients) s.write(line);
  }

  private onControl(s: Socket): void {
    this.clients.add(s);
    s.setEncoding('utf8');
    let buf = '';
    s.on('close', () => this.clients.delete(s));
    s.on('error', () => {});
    s.on('data', (chunk: string) => {
      buf += chunk;
      // Commands arrive as bare objects; take every complete one.
      const { objects: texts, rest } = scanJsonObjects(buf);
      if (!texts.length) return;
      buf = rest;
      const out: JsonMessage[] = [];
      for (const text of texts) {
        try {
          out.push(...this.handle(JSON.parse(text) as JsonMessage));
        } catch {
          out.push({ label: 'Error', value: 'Malformed command' });
        }
      }
      if (out.length) this.reply(s, out);
    });
  }

  private reply(s: Socket, msgs: JsonMessage[]): void {
    if (this.fault === 'silent') return;
    let frame = msgs.map((m) => JSON.stringify(m)).join('') + ETB;
    if (this.speaks === 'other') frame = 'HTTP/1.1 400 Bad Request\r\n\r\n' + ETB;
    if (this.fault === 'garbage') frame = '\u00ff\u00fe\u0000{{[' + ETB;
    if (this.fault === 'truncate') frame = frame.slice(0, frame.length >> 1);
    s.write(frame);
  }

  private labels(): JsonMessage[] {
    const props = (value: unknown, extra: JsonMessage = {}) => ({ value, ...extra });
    return [
      { label: 'NumberOfDetectors', value: props(this.detectors) },
      { label: 'BiasCurrent', value: props([...this.bias], { unit: 'uA', min: -90.9, max: 90.9 }) },
      { label: 'TriggerLevel', value: props([...this.trigger], { unit: 'mV', min: -1000, max: 1000 }) },
      { label: 'DetectorEnable', value: props(this.enabled) },
      { label: 'InptMeasurementPeriod', value: props(this.periodMs, { unit: 'ms', min: 10, max: 60000 }) },
    ];
  }

  private handle(m: JsonMessage): JsonMessage[] {
    const name = String(m.request ?? m.command ?? m.label ?? '?');
    this.log.push(name);
    if (this.log.length > 1000) this.log.splice(0, 500);
    if (m.request === 'labelProps') return this.labels();
    if (m.request === 'BiasVoltage') return [{ label: 'BiasVoltage', value: this.bias.map((b) => Number((b * 0.05).toFixed(4))) }];
    const arr = (lo: number, hi: number): number[] | string => {
      const v = m.value;
      if (!Array.isArray(v) || v.length !== this.detectors || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) return `${name}: expected ${this.detectors} numbers`;
      if (v.some((x: number) => x < lo || x > hi)) return `${name}: value out of range (${lo} to ${hi})`;
      return v as number[];
    };
    switch (m.command) {
      case 'SetAllBiasCurrents': {
        const v = arr(-90.9, 90.9);
        if (typeof v === 'string') return [{ label: 'Error', value: v }];
        this.bias = v;
        return [{ label: 'BiasCurrent', value: v }];
      }
      case 'SetAllTriggerLevels': {
        const v = arr(-1000, 1000);
        if (typeof v === 'string') return [{ label: 'Error', value: v }];
        this.trigger = v;
        return [{ label: 'TriggerLevel', value: v }];
      }
      case 'DetectorEnable':
        if (typeof m.value !== 'boolean') return [{ label: 'Error', value: 'DetectorEnable: expected true or false' }];
        this.enabled = m.value;
        return [{ label: 'DetectorEnable', value: m.value }];
      case 'SetMeasurementPeriod': {
        const v = m.value;
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 10 || v > 60000) return [{ label: 'Error', value: 'SetMeasurementPeriod: expected 10 to 60000 ms' }];
        this.periodMs = v;
        return [{ label: 'InptMeasurementPeriod', value: v }];
      }
      default:
        return [{ label: 'Error', value: `Unknown command or request ${name.slice(0, 40)}` }];
    }
  }
}
