/**
 * Slow, obviously correct reference decoders for recordings, written straight from the format
 * documents (docs/devices.md, "Recorded data") with BigInt arithmetic and one DataView read per
 * field. They exist to check the native decoders (differential tests) and as the baseline of
 * bench/replay.bench.ts; nothing on a hot path uses them.
 */
export interface ReferenceEvents {
  timePs: bigint[];
  channel: number[];
  /** T3 only. */
  nsync: bigint[];
  dtime: number[];
  overflows: number;
  markers: number;
  illegal: number;
}

const MARKER = 128;

function ps(units: bigint, unitPs: number): bigint {
  const r = Math.round(unitPs);
  if (r >= 1 && Math.abs(unitPs - r) <= 1e-6 * unitPs) return units * BigInt(r);
  return BigInt(Math.round(Number(units) * unitPs));
}

/** Decodes a PTU data section (`data` = the bytes after the header). */
export function decodePtuReference(data: Uint8Array, rectype: number, globalResolutionPs: number, resolutionPs: number): ReferenceEvents {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out: ReferenceEvents = { timePs: [], channel: [], nsync: [], dtime: [], overflows: 0, markers: 0, illegal: 0 };
  const picoharp = rectype === 0x00010203 || rectype === 0x00010303;
  const t3 = ((rectype >> 8) & 0xff) === 0x03;
  const v1 = rectype === 0x00010204 || rectype === 0x00010304;
  let overflow = 0n;
  const emit = (t: bigint, ch: number, n = 0n, d = 0) => {
    out.timePs.push(t);
    out.channel.push(ch);
    if (t3) { out.nsync.push(n); out.dtime.push(d); }
  };
  const markers = (bits: number, t: bigint, n = 0n) => {
    for (let b = 0; b < 4; b++) if (bits & (1 << b)) { emit(t, MARKER + b, n, 0); out.markers++; }
  };
  for (let i = 0; i + 4 <= data.byteLength; i += 4) {
    const rec = dv.getUint32(i, true);
    if (picoharp && !t3) {
      const channel = Math.floor(rec / 2 ** 28);
      const timetag = BigInt(rec % 2 ** 28);
      if (channel === 15) {
        const bits = Number(timetag % 16n);
        if (bits === 0) { overflow += 210698240n; out.overflows++; } else markers(bits, ps(overflow + timetag - BigInt(bits), globalResolutionPs));
      } else if (channel > 4) out.illegal++;
      else emit(ps(overflow + timetag, globalResolutionPs), channel);
    } else if (picoharp && t3) {
      const channel = Math.floor(rec / 2 ** 28);
      const dtime = Math.floor(rec / 2 ** 16) % 2 ** 12;
      const nsync = BigInt(rec % 2 ** 16);
      if (channel === 15) {
        if (dtime === 0) { overflow += 65536n; out.overflows++; } else markers(dtime, ps(overflow + nsync, globalResolutionPs), overflow + nsync);
      } else if (channel === 0 || channel > 4) out.illegal++;
      else emit(ps(overflow + nsync, globalResolutionPs) + ps(BigInt(dtime), resolutionPs), channel, overflow + nsync, dtime);
    } else {
      const special = rec >= 2 ** 31;
      const channel = Math.floor(rec / 2 ** 25) % 64;
      if (!t3) {
        const timetag = BigInt(rec % 2 ** 25);
        if (!special) emit(ps(overflow + timetag, globalResolutionPs), channel + 1);
        else if (channel === 63) { overflow += v1 ? 33552000n : 33554432n * (timetag === 0n ? 1n : timetag); out.overflows++; }
        else if (channel === 0) emit(ps(overflow + timetag, globalResolutionPs), 0);
        else if (channel <= 15) markers(channel, ps(overflow + timetag, globalResolutionPs));
        else out.illegal++;
      } else {
        const dtime = Math.floor(rec / 2 ** 10) % 2 ** 15;
        const nsync = BigInt(rec % 2 ** 10);
        if (!special) emit(ps(overflow + nsync, globalResolutionPs) + ps(BigInt(dtime), resolutionPs), channel + 1, overflow + nsync, dtime);
        else if (channel === 63) { overflow += 1024n * (v1 || nsync === 0n ? 1n : nsync); out.overflows++; }
        else if (channel >= 1 && channel <= 15) markers(channel, ps(overflow + nsync, globalResolutionPs), overflow + nsync);
        else out.illegal++;
      }
    }
  }
  return out;
}

/** Decodes qcrypto a1 words (`legacy`: high word first): one event per detector bit. */
export function decodeA1Reference(data: Uint8Array, legacy: boolean): { timePs: bigint[]; channel: number[]; empty: number } {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out = { timePs: [] as bigint[], channel: [] as number[], empty: 0 };
  for (let i = 0; i + 8 <= data.byteLength; i += 8) {
    const first = BigInt(dv.getUint32(i, true));
    const second = BigInt(dv.getUint32(i + 4, true));
    const word = legacy ? (first << 32n) | second : (second << 32n) | first;
    const units = word >> 10n;
    const pattern = Number(word & 15n);
    // ps = round(units x 1000 / 256), halves up.
    const t = (units * 125n + 16n) / 32n;
    if (pattern === 0) out.empty++;
    for (let b = 0; b < 4; b++) if (pattern & (1 << b)) { out.timePs.push(t); out.channel.push(b + 1); }
  }
  return out;
}

/**
 * Decodes quTAG events (after the 40-byte header) and sorts them by time (stable). An event more
 * than `windowPs` older than the latest event before it is late: counted, not kept.
 */
export function decodeQutagReference(data: Uint8Array, unitPs = 1, windowPs = 1_000_000): { timePs: bigint[]; channel: number[]; illegal: number; late: number } {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const ev: { t: bigint; c: number }[] = [];
  let illegal = 0;
  let late = 0;
  let latest: bigint | undefined;
  for (let i = 0; i + 10 <= data.byteLength; i += 10) {
    const raw = dv.getBigInt64(i, true);
    const c = dv.getUint16(i + 8, true);
    if (c > 255 || raw < 0n) { illegal++; continue; }
    const t = ps(raw, unitPs);
    if (latest !== undefined && t < latest - BigInt(windowPs)) { late++; continue; }
    if (latest === undefined || t > latest) latest = t;
    ev.push({ t, c });
  }
  ev.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
  return { timePs: ev.map((e) => e.t), channel: ev.map((e) => e.c), illegal, late };
}

/** A PTU header tag's value, read independently of the native parser (40 bytes after its NUL-terminated name). */
export function ptuHeaderNumber(bytes: Buffer, name: string, float = false): number {
  const at = bytes.indexOf(Buffer.from(name + '\0', 'latin1'));
  return float ? bytes.readDoubleLE(at + 40) : Number(bytes.readBigInt64LE(at + 40));
}

/** A whole PTU file through the reference decoder, its header's constants read with ptuHeaderNumber. */
export function decodePtuFileReference(bytes: Buffer): ReferenceEvents {
  const end = bytes.indexOf(Buffer.from('Header_End\0', 'latin1'));
  const num = (name: string, float = false) => ptuHeaderNumber(bytes, name, float);
  return decodePtuReference(bytes.subarray(end + 48), num('TTResultFormat_TTTRRecType'), num('MeasDesc_GlobalResolution', true) * 1e12, num('MeasDesc_Resolution', true) * 1e12);
}
