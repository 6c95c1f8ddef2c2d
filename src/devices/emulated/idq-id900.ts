/**
 * An emulated IDQ ID900 Time Controller: the device side of its SCPI-over-ZeroMQ protocol on a
 * real ZeroMQ REP socket (bound on 127.0.0.1, an ephemeral port by default), so the real
 * transport (transports/zmq.ts) and driver (drivers/idq-id900.ts) run against it.
 *
 * What it answers (headers without case; long forms such as INPUT1:THRESHOLD are shortened):
 * - `*IDN?` -> `ID Quantique,ID900,<serial>,<firmware>`
 * - `INPU<n>:ENAB|EDGE|COUP|MODE|THRE|DELAY|COUN:INTE` with `?` (value) or a value (empty reply),
 *   n = 1..4; words as the manual spells them (ON/OFF, RISING/FALLING, DC/AC, HIRES/LOWRES);
 *   thresholds -2..2 V, delays 0..1e9 ps, integration 1e9..6e13 ps (1 ms..60 s); time values
 *   are answered with the time-base unit, `1500TB` (IDQ's example utilities strip it: docs/devices.md)
 * - `INPU<n>:COUN?` -> events in the last integration time (rate x time; 0 when the input is
 *   off or its threshold is above the 1 V pulse amplitude)
 * - `HIST<n>:MIN|BWID|BCOU|INPO:REF:LINK|INPO:STOP:LINK` (n = 1..4), `HIST<n>:FLUS`,
 *   `HIST<n>:DATA?` -> `[c0, c1, ...]` (a peak at `peakPs` on a flat background, as a
 *   start-stop histogram of a correlated pair would look)
 * - anything else -> `ERROR: -113,"Undefined header"`; out-of-range values ->
 *   `ERROR: -222,"Data out of range"` (the refusal format is ours: see docs/devices.md)
 *
 * Faults for tests: `fault = 'garbage'` (replies bytes that are not text), `'truncate'` (the
 * first half of the reply), `'silent'` (stops answering: a REP socket that never replies, as a
 * hung device), and `identity` (a different instrument on the port).
 */
import { Reply } from 'zeromq';

export type Id900Fault = 'none' | 'garbage' | 'truncate' | 'silent';

interface Input {
  enab: number;
  edge: number;
  coup: number;
  mode: number;
  thre: number;
  delay: number;
  inteMs: number;
}

interface Hist {
  min: number;
  bwid: number;
  bcou: number;
  ref: number;
  stop: number;
}

const WORDS: Record<string, string[]> = {
  ENAB: ['OFF', 'ON'],
  EDGE: ['RISING', 'FALLING'],
  COUP: ['DC', 'AC'],
  MODE: ['HIRES', 'LOWRES'],
  LINK: ['NONE', 'STAR', 'INPU1', 'INPU2', 'INPU3', 'INPU4'],
};

const LONG: Record<string, string> = {
  INPUT: 'INPU', ENABLE: 'ENAB', THRESHOLD: 'THRE', COUPLING: 'COUP', COUNTER: 'COUN', INTEGRATION: 'INTE',
  HISTOGRAM: 'HIST', BWIDTH: 'BWID', BCOUNT: 'BCOU', FLUSH: 'FLUS', INPORT: 'INPO', RISING: 'RISING',
};

/** Pulse amplitude of the emulated detectors (V): a threshold above it sees nothing. */
const PULSE_V = 1.0;

export interface EmulatedId900Options {
  serial?: string;
  firmware?: string;
  /** Event rate of each input 1..4 (per second). */
  ratesPerSec?: [number, number, number, number];
  /** Where the histograms' peak sits (ps after the reference). */
  peakPs?: number;
}

export class EmulatedId900 {
  identity: string;
  fault: Id900Fault = 'none';
  /** Command headers received (no values). */
  readonly log: string[] = [];
  ratesPerSec: [number, number, number, number];
  peakPs: number;
  private inputs: Input[] = [];
  private hists: Hist[] = [];
  private sock: Reply | undefined;
  private loop: Promise<void> | undefined;

  constructor(opts: EmulatedId900Options = {}) {
    this.identity = `ID Quantique,ID900,${opts.serial ?? 'ID900-0001'},${opts.firmware ?? '7.2.1'}`;
    this.ratesPerSec = opts.ratesPerSec ?? [120_000, 80_000, 5_000, 0];
    this.peakPs = opts.peakPs ?? 25_000;
    this.reset();
  }

  reset(): void {
    this.inputs = Array.from({ length: 4 }, () => ({ enab: 1, edge: 0, coup: 0, mode: 0, thre: 0.5, delay: 0, inteMs: 1000 }));
    this.hists = Array.from({ length: 4 }, (_, i) => ({ min: 0, bwid: 100, bcou: 400, ref: 2, stop: 3 + (i % 3) }));
  }

  /** Settings that persist between CLI invocations (flat register -> value). */
  snapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    this.inputs.forEach((p, i) => Object.entries(p).forEach(([k, v]) => (out[`inpu${i + 1}.${k}`] = v)));
    this.hists.forEach((h, i) => Object.entries(h).forEach(([k, v]) => (out[`hist${i + 1}.${k}`] = v)));
    return out;
  }

  restore(s: Record<string, number>): void {
    for (const [key, v] of Object.entries(s)) {
      const m = /^(inpu|hist)([1-4])\.(\w+)$/.exec(key);
      if (!m || typeof v !== 'number' || !Number.isFinite(v)) continue;
      const target = (m[1] === 'inpu' ? this.inputs : this.hists)[Number(m[2]) - 1] as unknown as Record<string, number>;
      if (m[3] in target) target[m[3]] = v;
    }
  }

  /** Binds the REP socket (default tcp://127.0.0.1:*) and serves; resolves with the endpoint. */
  async start(endpoint = 'tcp://127.0.0.1:*'): Promise<string> {
    const sock = new Reply({ linger: 0 });
    await sock.bind(endpoint);
    this.sock = sock;
    this.loop = this.serve(sock);
    return sock.lastEndpoint!;
  }

  async stop(): Promise<void> {
    const s = this.sock;
    this.sock = undefined;
    s?.close();
    await this.loop?.catch(() => undefined);
  }

  private async serve(sock: Reply): Promise<void> {
    try {
      for await (const [msg] of sock) {
        if (this.fault === 'silent') return; // a hung device: the REP socket never answers again
        const reply = this.handle(msg.toString('latin1'));
        let out: Buffer = Buffer.from(reply, 'latin1');
        if (this.fault === 'garbage') out = Buffer.from([0xff, 0xfe, 0x00, 0x9c, 0x81, 0x17, 0xc3, 0x28]);
        else if (this.fault === 'truncate') out = out.subarray(0, Math.max(1, out.length >> 1));
        await sock.send(out);
      }
    } catch {
      /* closed */
    }
  }

  /** One command (one request message) -> its reply ('' for an accepted set). */
  handle(text: string): string {
    const line = text.trim();
    const sp = line.indexOf(' ');
    const rawHeader = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
    const arg = sp < 0 ? '' : line.slice(sp + 1).trim().toUpperCase();
    const query = rawHeader.endsWith('?');
    const header = (query ? rawHeader.slice(0, -1) : rawHeader)
      .split(':')
      .map((node) => {
        const m = /^([A-Z*]+)(\d*)$/.exec(node);
        return m ? (LONG[m[1]] ?? m[1]) + m[2] : node;
      })
      .join(':');
    this.log.push(header + (query ? '?' : ''));
    if (this.log.length > 1000) this.log.splice(0, 500);
    if (header === '*IDN' && query) return this.identity;
    if (header === '*RST') {
      this.reset();
      return '';
    }
    let m = /^INPU([1-4]):(ENAB|EDGE|COUP|MODE|THRE|DELAY|COUN:INTE|COUN)$/.exec(header);
    if (m) return this.input(this.inputs[Number(m[1]) - 1], Number(m[1]), m[2], query, arg);
    m = /^HIST([1-4]):(MIN|BWID|BCOU|INPO:REF:LINK|INPO:STOP:LINK|FLUS|DATA)$/.exec(header);
    if (m) return this.hist(this.hists[Number(m[1]) - 1], m[2], query, arg);
    return 'ERROR: -113,"Undefined header"';
  }

  private input(p: Input, n: number, what: string, query: boolean, arg: string): string {
    if (what === 'COUN') {
      if (!query) return 'ERROR: -200,"Counter is read-only"';
      const seen = p.enab && (p.edge === 1 ? -p.thre : p.thre) < PULSE_V;
      return String(seen ? Math.round((this.ratesPerSec[n - 1] * p.inteMs) / 1000) : 0);
    }
    if (what in WORDS) {
      const key = what.toLowerCase() as 'enab' | 'edge' | 'coup' | 'mode';
      if (query) return WORDS[what][p[key]];
      const i = WORDS[what].findIndex((w) => w.startsWith(arg) && arg.length >= 2);
      if (i < 0) return 'ERROR: -224,"Illegal parameter value"';
      p[key] = i;
      return '';
    }
    if (what === 'THRE') return this.number(query, arg, -2, 2, () => p.thre, (v) => (p.thre = v), 'V');
    if (what === 'DELAY') return this.number(query, arg, 0, 1e9, () => p.delay, (v) => (p.delay = Math.round(v)), 'TB');
    // COUN:INTE in time-base units (1 ps); kept in ms.
    return this.number(query, arg, 1e9, 6e13, () => p.inteMs * 1e9, (v) => (p.inteMs = v / 1e9), 'TB');
  }

  private hist(h: Hist, what: string, query: boolean, arg: string): string {
    if (what === 'FLUS') return '';
    if (what === 'DATA') {
      if (!query) return 'ERROR: -200,"Data is read-only"';
      const counts: number[] = [];
      const sigma = 300;
      for (let i = 0; i < h.bcou; i++) {
        const x = h.min + (i + 0.5) * h.bwid;
        counts.push(Math.round(5 + 2000 * Math.exp(-((x - this.peakPs) ** 2) / (2 * sigma * sigma))));
      }
      return `[${counts.join(', ')}]`;
    }
    if (what.endsWith('LINK')) {
      const key = what.startsWith('INPO:REF') ? 'ref' : 'stop';
      if (query) return WORDS.LINK[h[key]];
      const i = WORDS.LINK.indexOf(arg);
      if (i < 0) return 'ERROR: -224,"Illegal parameter value"';
      h[key] = i;
      return '';
    }
    if (what === 'MIN') return this.number(query, arg, 0, 1e9, () => h.min, (v) => (h.min = Math.round(v)), 'TB');
    if (what === 'BWID') return this.number(query, arg, 1, 1e9, () => h.bwid, (v) => (h.bwid = Math.round(v)), 'TB');
    return this.number(query, arg, 1, 16384, () => h.bcou, (v) => (h.bcou = Math.round(v)));
  }

  /** Time values (unit 'TB', the 1 ps time base) are answered with their unit, as IDQ's examples strip it. */
  private number(query: boolean, arg: string, min: number, max: number, get: () => number, set: (v: number) => void, unit = ''): string {
    if (query) return `${Number(get().toPrecision(12))}${unit === 'TB' ? 'TB' : ''}`;
    const m = /^([-+]?(?:\d+\.?\d*|\.\d+)(?:E[-+]?\d+)?)\s*(MV|V|PS|TB)?$/.exec(arg);
    if (!m) return 'ERROR: -224,"Illegal parameter value"';
    const v = Number(m[1]) * (m[2] === 'MV' && unit === 'V' ? 1e-3 : 1);
    if (v < min || v > max) return 'ERROR: -222,"Data out of range"';
    set(v);
    return '';
  }
}
