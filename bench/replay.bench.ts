/**
 * Recording decode throughput (native/records via src/core/records.ts), records per second per
 * core (CPU time of this single-threaded process, user + system), beside the plain TypeScript
 * reference decoder (src/core/records-reference.ts) on the same bytes in the same run:
 * - PicoQuant PTU T2 (the PicoHarp 300 sample, 0.93 M records) and T3 (the HydraHarp v2 sample)
 *   decoded from memory into 64 Ki-event typed-array chunks (time i64, channel u8; T3 also nsync
 *   u64 and dtime u16): the decoder itself;
 * - the same T2 file end to end: `openRecording(file).chunks()` with file reads (page cache),
 *   fresh arrays per chunk (what `qkd histogram` and the replay tagger pay);
 * - qcrypto a1 (the PicoHarp sample written as a1) from memory.
 * Goal (issue 12): >= 1e8 records/s per core. Medians of 7 repeats, each decoding the input
 * several times over.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { native } from '../src/core/native.ts';
import { encodeA1, openRecording } from '../src/core/records.ts';
import { decodeA1Reference, decodePtuReference } from '../src/core/records-reference.ts';
import { median, type BenchResult } from './stats.ts';

const DATA = resolve(import.meta.dirname, '../../shared/data/picoquant');
const ROOM = 65536;

/** Runs fn `repeats` times after a warm-up; median records per CPU second and per wall second. */
async function rate(records: number, fn: () => unknown | Promise<unknown>, repeats = 7): Promise<{ cpu: number; wall: number }> {
  await fn();
  const cpu: number[] = [];
  const wall: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await fn();
    const w = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    cpu.push(records / ((c.user + c.system) / 1e6));
    wall.push(records / w);
  }
  return { cpu: median(cpu), wall: median(wall) };
}

function nativeDecodeAll(make: () => InstanceType<ReturnType<typeof native>['RecordDecoder']>, data: Uint8Array, recordBytes: number, t3: boolean, times: number): number {
  const tp = new BigInt64Array(ROOM), ch = new Uint8Array(ROOM);
  const ns = t3 ? new BigUint64Array(ROOM) : undefined, dt = t3 ? new Uint16Array(ROOM) : undefined;
  let events = 0;
  for (let k = 0; k < times; k++) {
    const d = make();
    let at = 0;
    while (at + recordBytes <= data.length) {
      const p = d.decode(data.subarray(at), tp, ch, ns, dt, true);
      at += p.records * recordBytes;
      events += p.events;
    }
  }
  return events;
}

export async function run(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  const N = native();

  for (const [rel, label] of [['picoharp/v30_t2.ptu', 'ptu_t2'], ['hydraharp/v20_t3.ptu', 'ptu_t3']] as const) {
    const file = join(DATA, rel);
    const rec = await openRecording(file);
    const i = rec.info;
    const data = readFileSync(file).subarray(i.dataOffset);
    const rt = Number(i.header.TTResultFormat_TTTRRecType);
    const times = Math.max(1, Math.round(8e6 / i.records));
    const make = () => N.RecordDecoder.ptu(rt, i.resolutionPs, i.dtimeResolutionPs ?? i.resolutionPs);
    const nat = await rate(times * i.records, () => nativeDecodeAll(make, data, 4, i.t3, times));
    const ref = await rate(i.records, () => decodePtuReference(data, rt, i.resolutionPs, i.dtimeResolutionPs ?? i.resolutionPs), 3);
    out.push({
      name: `replay.${label}_decode_records_per_cpu_sec`, value: Math.round(nat.cpu), unit: 'records/s', better: 'higher',
      params: { file: rel, kind: i.description, records: i.records, passes: times, chunkEvents: ROOM, wallRecordsPerSec: Math.round(nat.wall), baselineWall: Math.round(ref.wall), goal: 1e8 },
      baseline: Math.round(ref.cpu),
    });
    if (label === 'ptu_t2') {
      const e2e = await rate(4 * i.records, async () => {
        for (let k = 0; k < 4; k++) for await (const c of rec.chunks()) void c;
      });
      out.push({
        name: 'replay.ptu_t2_file_to_chunks_records_per_cpu_sec', value: Math.round(e2e.cpu), unit: 'records/s', better: 'higher',
        params: { file: rel, records: i.records, wallRecordsPerSec: Math.round(e2e.wall), what: 'openRecording().chunks(): file reads + decode + fresh arrays per 64 Ki chunk' },
        baseline: Math.round(ref.cpu),
      });
      // The same events as a1 words.
      const src: { t: BigInt64Array[]; c: Uint8Array[] } = { t: [], c: [] };
      for await (const c of rec.chunks()) { src.t.push(c.timePs); src.c.push(c.channel); }
      const n = src.t.reduce((a, b) => a + b.length, 0);
      const tp = new BigInt64Array(n), ch = new Uint8Array(n);
      let at = 0;
      src.t.forEach((tt, k) => { tp.set(tt, at); ch.set(src.c[k], at); at += tt.length; });
      const a1 = encodeA1(tp, ch, { firstChannel: 0 });
      const words = a1.length / 8;
      const t1 = Math.max(1, Math.round(8e6 / words));
      const na = await rate(t1 * words, () => nativeDecodeAll(() => N.RecordDecoder.a1(false), a1, 8, false, t1));
      const ra = await rate(words, () => decodeA1Reference(a1, false), 3);
      out.push({
        name: 'replay.a1_decode_records_per_cpu_sec', value: Math.round(na.cpu), unit: 'records/s', better: 'higher',
        params: { source: `${rel} written as a1`, records: words, passes: t1, wallRecordsPerSec: Math.round(na.wall), goal: 1e8 },
        baseline: Math.round(ra.cpu),
      });
    }
  }
  return out;
}
