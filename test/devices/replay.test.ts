/**
 * Recordings from real instruments: the native decoders (PicoQuant PTU, quTAG binary, qcrypto
 * a1) against what the sample files say about themselves, against the slow TypeScript reference
 * decoders (whole sample files, and random records through random chunk and read sizes), on
 * hand-built records (overflow, markers, T3), the a1 writer's round trip, bad files, and the
 * replay TimeTagger (directly and from a node configuration).
 */
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { encodeA1, openRecording, MARKER_CHANNEL, type OpenRecordingOptions, type RecordChunk } from '../../src/core/records.ts';
import { decodeA1Reference, decodePtuReference, decodeQutagReference } from '../../src/core/records-reference.ts';
import { openRecordingTagger } from '../../src/devices/replay.ts';
import { DeviceSet, parseNodeConfig } from '../../src/devices/config.ts';
import type { TagStreamBatch, TimeTagger } from '../../src/devices/types.ts';
import { tempDir } from '../../src/testkit/devices.ts';

const DATA = resolve(import.meta.dirname, '../../../shared/data/picoquant');
const dir = tempDir('qkd-replay-');
t.teardown(() => dir.remove());

async function all(file: string, opts: OpenRecordingOptions = {}, chunk: { eventsPerChunk?: number; readBytes?: number } = {}) {
  const rec = await openRecording(file, opts);
  const parts: RecordChunk[] = [];
  for await (const c of rec.chunks(chunk)) parts.push(c);
  const n = parts.reduce((a, c) => a + c.timePs.length, 0);
  const timePs = new BigInt64Array(n);
  const channel = new Uint8Array(n);
  const nsync = new BigUint64Array(n);
  const dtime = new Uint16Array(n);
  let at = 0;
  for (const c of parts) {
    timePs.set(c.timePs, at);
    channel.set(c.channel, at);
    if (c.nsync) { nsync.set(c.nsync, at); dtime.set(c.dtime!, at); }
    at += c.timePs.length;
  }
  return { rec, timePs, channel, nsync, dtime, stats: rec.stats() };
}

const sameBytes = (a: ArrayBufferView, b: ArrayBufferView) =>
  Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

// ---------------------------------------------------------------------------------------------
// PTU files built by hand
// ---------------------------------------------------------------------------------------------

function ptuTag(name: string, idx: number, type: number, raw: bigint, extra = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(48);
  b.write(name, 0, 'latin1');
  b.writeInt32LE(idx, 32);
  b.writeUInt32LE(type, 36);
  b.writeBigUInt64LE(raw, 40);
  return Buffer.concat([b, extra]);
}
const f64bits = (x: number) => { const b = Buffer.alloc(8); b.writeDoubleLE(x); return b.readBigUInt64LE(); };

function ptuFile(rectype: number, records: number[], globS: number, resS: number, extraTags: Buffer[] = []): Buffer {
  const recs = Buffer.alloc(records.length * 4);
  records.forEach((r, i) => recs.writeUInt32LE(r >>> 0, i * 4));
  const text = Buffer.from('HydraHarp 400\0\0\0', 'latin1');
  return Buffer.concat([
    Buffer.from('PQTTTR\0\x001.0.00\0\0', 'latin1'),
    ptuTag('HW_Type', -1, 0x4001ffff, BigInt(text.length), text),
    ptuTag('TTResultFormat_TTTRRecType', -1, 0x10000008, BigInt(rectype)),
    ptuTag('TTResult_NumberOfRecords', -1, 0x10000008, BigInt(records.length)),
    ptuTag('MeasDesc_GlobalResolution', -1, 0x20000008, f64bits(globS)),
    ptuTag('MeasDesc_Resolution', -1, 0x20000008, f64bits(resS)),
    ...extraTags,
    ptuTag('Header_End', -1, 0xffff0008, 0n),
    recs,
  ]);
}

const SP = 2 ** 31;

t.test('hand-built HydraHarp v2 T2: overflow (multi), sync, markers, inputs', async (t) => {
  const file = join(dir.path, 'kat-t2.ptu');
  // input 0 @ 10; overflow x3; sync @ 5; markers 0b0101 @ 7; input 2 @ 9; old-style overflow (count 0 = 1); input 1 @ 1
  writeFileSync(file, ptuFile(0x01010204, [10, SP + 63 * 2 ** 25 + 3, SP + 5, SP + 5 * 2 ** 25 + 7, 2 * 2 ** 25 + 9, SP + 63 * 2 ** 25, 2 ** 25 + 1], 1e-12, 1e-12));
  const r = await all(file);
  const W = 33554432n;
  t.same([...r.timePs], [10n, 3n * W + 5n, 3n * W + 7n, 3n * W + 7n, 3n * W + 9n, 4n * W + 1n]);
  t.same([...r.channel], [1, 0, MARKER_CHANNEL, MARKER_CHANNEL + 2, 3, 2]);
  t.equal(r.stats.overflowRecords, 2);
  t.equal(r.stats.markers, 2);
  t.equal(r.rec.info.description, 'HydraHarp v2 T2');
  t.equal(r.rec.info.header.HW_Type, 'HydraHarp 400');
});

t.test('hand-built T3: PicoHarp and HydraHarp v1 nsync/dtime, overflow, markers; sync period x nsync + dtime x resolution', async (t) => {
  // PicoHarp T3: ch 2 dtime 7 nsync 3; overflow; ch 1 dtime 1 nsync 2; marker bit 1 at nsync 9.
  let file = join(dir.path, 'kat-ph-t3.ptu');
  writeFileSync(file, ptuFile(0x00010303, [2 * 2 ** 28 + 7 * 2 ** 16 + 3, 15 * 2 ** 28 + 5, 2 ** 28 + 2 ** 16 + 2, 15 * 2 ** 28 + 2 * 2 ** 16 + 9], 12.5e-9, 4e-12));
  let r = await all(file);
  t.ok(r.rec.info.t3);
  t.equal(r.rec.info.syncPeriodPs, 12500);
  t.same([...r.channel], [2, 1, MARKER_CHANNEL + 1]);
  t.same([...r.nsync], [3n, 65538n, 65545n]);
  t.same([...r.dtime], [7, 1, 0]);
  t.same([...r.timePs], [3n * 12500n + 28n, 65538n * 12500n + 4n, 65545n * 12500n]);
  // HydraHarp v1 T3: input 1 (-> ch 2) dtime 100 nsync 5; overflow record "x2" counts once in v1.
  file = join(dir.path, 'kat-hh1-t3.ptu');
  writeFileSync(file, ptuFile(0x00010304, [2 ** 25 + 100 * 2 ** 10 + 5, SP + 63 * 2 ** 25 + 2, 7], 25e-9, 8e-12));
  r = await all(file);
  t.same([...r.nsync], [5n, 1024n + 7n]);
  t.same([...r.timePs], [5n * 25000n + 800n, (1024n + 7n) * 25000n]);
  t.same([...r.channel], [2, 1]);
});

t.test('random records of every record type: native = reference through odd chunk and read sizes', async (t) => {
  let seed = 12345;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0), seed);
  for (const rectype of [0x00010203, 0x00010303, 0x00010204, 0x00010304, 0x01010204, 0x01010304, 0x00010205, 0x00010306, 0x00010207, 0x00010307]) {
    for (const [glob, res] of [[4e-12, 4e-12], [200001.6e-12, 64e-12]]) {
      const recs = Array.from({ length: 6000 }, () => {
        const v = rnd();
        // One in 8 records special (overflow / marker / sync) so every branch is taken.
        if (rnd() % 8) return rectype >> 16 === 0x0001 && (rectype & 0xff) === 3 ? v % 2 ** 28 + (rnd() % 5) * 2 ** 28 : v % SP;
        // Specials: any channel code, small overflow counts (a count of 2^25 per record would
        // run the 64-bit ps clock past its range within a few records).
        return rectype >> 16 === 0x0001 && (rectype & 0xff) === 3 ? 15 * 2 ** 28 + (v % 2 ** 28) : SP + ((v >>> 7) % 64) * 2 ** 25 + (v % 16);
      });
      const file = join(dir.path, `rand-${rectype.toString(16)}.ptu`);
      const bytes = ptuFile(rectype, recs, glob, res);
      writeFileSync(file, bytes);
      const rec = await openRecording(file);
      const ref = decodePtuReference(bytes.subarray(rec.info.dataOffset), rectype, glob * 1e12, res * 1e12);
      for (const chunk of [{ eventsPerChunk: 4, readBytes: 7 }, { eventsPerChunk: 37, readBytes: 401 }, {}]) {
        const r = await all(file, {}, chunk);
        const what = `${rectype.toString(16)} glob ${glob} ${JSON.stringify(chunk)}`;
        t.ok(sameBytes(r.timePs, BigInt64Array.from(ref.timePs)), `times ${what}`);
        t.ok(sameBytes(r.channel, Uint8Array.from(ref.channel)), `channels ${what}`);
        if (rec.info.t3) {
          t.ok(sameBytes(r.nsync, BigUint64Array.from(ref.nsync)), `nsync ${what}`);
          t.ok(sameBytes(r.dtime, Uint16Array.from(ref.dtime)), `dtime ${what}`);
        }
        t.same([r.stats.overflowRecords, r.stats.markers, r.stats.illegal], [ref.overflows, ref.markers, ref.illegal], `counters ${what}`);
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------
// The real sample recordings
// ---------------------------------------------------------------------------------------------

const SAMPLES: { file: string; description: string; resolutionPs: number; channels: Record<number, number> }[] = [
  { file: 'picoharp/v30_t2.ptu', description: 'PicoHarp 300 T2', resolutionPs: 4, channels: { 0: 531477, 1: 388700 } },
  { file: 'hydraharp/v20_t2.ptu', description: 'HydraHarp v2 T2', resolutionPs: 1, channels: { 1: 305565 } },
  { file: 'hydraharp/v10_t3.ptu', description: 'HydraHarp v1 T3', resolutionPs: 400000, channels: { 1: 48001, 2: 46559 } },
  { file: 'hydraharp/v20_t3.ptu', description: 'HydraHarp v2 T3', resolutionPs: 200001.6, channels: { 1: 45012, 2: 32871 } },
];

t.test('sample recordings: what the headers say, and native = reference decoder on every record', async (t) => {
  for (const s of SAMPLES) {
    const file = join(DATA, s.file);
    const r = await all(file);
    const h = r.rec.info.header;
    t.equal(r.rec.info.description, s.description, s.file);
    t.equal(r.rec.info.records, h.TTResult_NumberOfRecords, `${s.file}: records from the header`);
    t.ok(Math.abs(r.rec.info.resolutionPs - s.resolutionPs) < 1e-3, `${s.file}: resolution ${r.rec.info.resolutionPs} ps`);
    // Every record is an event or an overflow (no markers, no reserved codes in these files).
    t.equal(r.timePs.length + r.stats.overflowRecords, r.rec.info.records, `${s.file}: events + overflow records = records`);
    t.same(Object.fromEntries(r.stats.perChannel), s.channels, `${s.file}: per-channel counts`);
    // The acquisition ran TTResult_StopAfter ms: the events span just under that.
    const spanPs = Number(r.timePs[r.timePs.length - 1] - r.timePs[0]);
    const stopAfterPs = Number(h.TTResult_StopAfter) * 1e9;
    t.ok(spanPs <= stopAfterPs && spanPs > 0.999 * stopAfterPs, `${s.file}: span ${spanPs} ps vs StopAfter ${stopAfterPs} ps`);
    let ordered = true;
    for (let i = 1; i < r.timePs.length; i++) if (r.timePs[i] < r.timePs[i - 1]) { ordered = false; break; }
    t.ok(ordered, `${s.file}: time order`);
    if (r.rec.info.t3) {
      t.ok(Math.abs(r.rec.info.syncPeriodPs! * Number(h.TTResult_SyncRate) / 1e12 - 1) < 1e-6, `${s.file}: sync period = 1 / TTResult_SyncRate`);
    } else if (s.file.startsWith('picoharp')) {
      // PicoHarp T2: channel 0 is the sync input; rates match the header's rate meters within 3 %.
      const secs = spanPs / 1e12;
      t.ok(Math.abs(s.channels[0]! / secs / Number(h.TTResult_SyncRate) - 1) < 0.03, 'channel 0 rate vs TTResult_SyncRate');
      t.ok(Math.abs(s.channels[1]! / secs / Number(h['TTResult_InputRate(0)']) - 1) < 0.03, 'channel 1 rate vs TTResult_InputRate(0)');
    }
    const bytes = readFileSync(file).subarray(r.rec.info.dataOffset);
    const ref = decodePtuReference(bytes, Number(h.TTResultFormat_TTTRRecType), r.rec.info.resolutionPs, r.rec.info.dtimeResolutionPs ?? r.rec.info.resolutionPs);
    t.ok(sameBytes(r.timePs, BigInt64Array.from(ref.timePs)), `${s.file}: times = reference`);
    t.ok(sameBytes(r.channel, Uint8Array.from(ref.channel)), `${s.file}: channels = reference`);
    if (r.rec.info.t3) t.ok(sameBytes(r.dtime, Uint16Array.from(ref.dtime)), `${s.file}: dtime = reference`);
  }
});

// ---------------------------------------------------------------------------------------------
// quTAG and a1
// ---------------------------------------------------------------------------------------------

function qutagFile(events: [number, number][]): Buffer {
  const b = Buffer.alloc(40 + 10 * events.length);
  b.write('quTAG test header', 0, 'latin1');
  events.forEach(([tt, c], i) => { b.writeBigInt64LE(BigInt(tt), 40 + 10 * i); b.writeUInt16LE(c, 48 + 10 * i); });
  return b;
}

t.test('quTAG binary: events re-ordered in time, reference-equal; late and unrepresentable ones counted', async (t) => {
  let seed = 99;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0), seed / 2 ** 32);
  // Four channels, each delivered with its own lag (up to 600 ns): not time-ordered across channels.
  const ev: [number, number][] = Array.from({ length: 20000 }, (_, i) => [i * 1000 + Math.floor(rnd() * 800), Math.floor(rnd() * 4) + 1]);
  const delivered = [...ev].sort((a, b) => a[0] + a[1] * 150_000 - (b[0] + b[1] * 150_000));
  const file = join(dir.path, 'events.qutag');
  const bytes = qutagFile(delivered);
  writeFileSync(file, bytes);
  const r = await all(file, {}, { eventsPerChunk: 333, readBytes: 4096 });
  const ref = decodeQutagReference(bytes.subarray(40));
  t.equal(r.rec.info.format, 'qutag');
  t.equal(r.timePs.length, 20000);
  t.ok(sameBytes(r.timePs, BigInt64Array.from(ref.timePs)), 'times = sorted reference');
  t.ok(sameBytes(r.channel, Uint8Array.from(ref.channel)), 'channels = sorted reference');
  t.equal(r.stats.late, 0);
  // One event 5 us behind the stream (beyond the 1 us window) and one on channel 300.
  const bad = qutagFile([[1000, 1], [2000, 2], [9_000_000, 1], [3000, 3], [9_100_000, 300], [9_200_000, 2]]);
  writeFileSync(file, bad);
  const r2 = await all(file);
  t.same([...r2.timePs], [1000n, 2000n, 9_000_000n, 9_200_000n]);
  t.same([r2.stats.late, r2.stats.latePerChannel.get(3), r2.stats.illegal], [1, 1, 1]);
  const ref2 = decodeQutagReference(bad.subarray(40));
  t.same([ref2.timePs, ref2.late, ref2.illegal], [[...r2.timePs], 1, 1], 'reference agrees on late and illegal events');
});

t.test('a1: known answers (both word orders, coincidence patterns, empty events)', async (t) => {
  const words = [(1000n << 10n) | 0b0100n, (256n << 10n) | 0b1001n, 7n << 10n];
  const modern = Buffer.alloc(24);
  const legacy = Buffer.alloc(24);
  words.forEach((w, i) => {
    modern.writeBigUInt64LE(w, 8 * i);
    legacy.writeUInt32LE(Number(w >> 32n), 8 * i);
    legacy.writeUInt32LE(Number(w & 0xffffffffn), 8 * i + 4);
  });
  writeFileSync(join(dir.path, 'k.a1'), modern);
  writeFileSync(join(dir.path, 'k.a1x'), legacy);
  for (const f of ['k.a1', 'k.a1x']) {
    const r = await all(join(dir.path, f));
    t.same([...r.timePs], [3906n, 1000n, 1000n], f);
    t.same([...r.channel], [3, 1, 4], f);
    t.equal(r.stats.empty, 1);
  }
  t.same(decodeA1Reference(modern, false).timePs, [3906n, 1000n, 1000n]);
});

t.test('a1 round trip: a PicoHarp recording written as a1 reads back within 2 ps, and a1 -> events -> a1 is bit-exact', async (t) => {
  const src = await all(join(DATA, 'picoharp/v30_t2.ptu'));
  for (const legacy of [false, true]) {
    const a1 = encodeA1(src.timePs, src.channel, { firstChannel: 0, legacy });
    const file = join(dir.path, legacy ? 'ph.a1x' : 'ph.a1');
    writeFileSync(file, a1);
    const back = await all(file, {}, { eventsPerChunk: 1000 });
    t.equal(back.timePs.length, src.timePs.length, 'every event (events of two channels in one 3.9 ps unit merge into one word and split back)');
    let worst = 0n;
    let chOk = true;
    for (let i = 0; i < src.timePs.length; i++) {
      const d = back.timePs[i] - src.timePs[i];
      if ((d < 0n ? -d : d) > worst) worst = d < 0n ? -d : d;
      if (back.channel[i] !== src.channel[i] + 1) chOk = false;
    }
    t.ok(worst <= 2n, `worst time error ${worst} ps`);
    t.ok(chOk, 'channel c -> detector bit c -> channel c + 1');
    t.ok(Buffer.compare(encodeA1(back.timePs, back.channel, { firstChannel: 1, legacy }), a1) === 0, 'a1 -> events -> a1 bit-exact');
    const ref = decodeA1Reference(a1, legacy);
    t.ok(sameBytes(back.timePs, BigInt64Array.from(ref.timePs)), 'native a1 reader = reference');
  }
  t.throws(() => encodeA1(BigInt64Array.from([0n]), Uint8Array.from([5]), { firstChannel: 0 }), { code: 'RECORDS_BAD_ARGUMENT' });
  t.throws(() => encodeA1(BigInt64Array.from([5n, 4n]), Uint8Array.from([0, 0]), { firstChannel: 0 }), { code: 'RECORDS_BAD_ARGUMENT' });
});

t.test('bad files: missing, not the format, truncated header or data, partial records', async (t) => {
  const ph = readFileSync(join(DATA, 'picoharp/v30_t2.ptu'));
  const cases: [string, Buffer | null, string, RegExp][] = [
    ['missing.ptu', null, 'RECORDING_NOT_FOUND', /missing\.ptu: cannot open the recording \(ENOENT\)/],
    ['text.ptu', Buffer.from('just some text, not a recording at all'), 'BAD_RECORDING', /text\.ptu: not a PicoQuant \.ptu file/],
    ['noext', Buffer.from('0123456789abcdef'), 'BAD_RECORDING', /noext: cannot tell the recording format.*--format/],
    ['cut-header.ptu', ph.subarray(0, 900), 'RECORDING_TRUNCATED', /cut-header\.ptu: the PTU header ends inside/],
    ['cut-data.ptu', ph.subarray(0, 200_000), 'RECORDING_TRUNCATED', /cut-data\.ptu: the header says 929254 records .* cut short/],
    ['cut.qutag', Buffer.alloc(40 + 25), 'RECORDING_TRUNCATED', /cut\.qutag: 65 bytes is not a 40-byte quTAG header plus whole 10-byte events/],
    ['cut.a1', Buffer.alloc(20), 'RECORDING_TRUNCATED', /cut\.a1: 20 bytes is not a whole number of 8-byte a1 events/],
  ];
  for (const [name, bytes, code, msg] of cases) {
    const file = join(dir.path, name);
    if (bytes) writeFileSync(file, bytes);
    await t.rejects(openRecording(file), { code, message: msg }, name);
  }
  const unknown = join(dir.path, 'unknown-type.ptu');
  writeFileSync(unknown, ptuFile(0x00010999, [1, 2], 1e-12, 1e-12));
  await t.rejects(openRecording(unknown), { code: 'RECORDING_UNSUPPORTED', message: /0x00010999/ });
});

// ---------------------------------------------------------------------------------------------
// Replay through the TimeTagger interface
// ---------------------------------------------------------------------------------------------

async function drain(tagger: TimeTagger, opts = {}): Promise<TagStreamBatch[]> {
  const out: TagStreamBatch[] = [];
  for await (const b of tagger.startStream(opts)) out.push(b);
  return out;
}

t.test('a recording replays as a TimeTagger: identity, channels, settings read back, stream = decoder, maxTags, busy', async (t) => {
  const tagger = await openRecordingTagger(join(DATA, 'picoharp/v30_t2.ptu'), { id: 'ph' });
  t.teardown(() => tagger.close());
  const id = await tagger.identity();
  t.same([id.vendor, id.model, id.firmware], ['PicoQuant', 'PicoHarp 300 (recording)', 'file:ptu']);
  t.same(tagger.channels(), [0, 1]);
  await tagger.setDelayPs(1, 1200);
  t.equal(await tagger.delayPs(1), 1200);
  await t.rejects(tagger.set('delay:1', 1e12), { code: 'OUT_OF_RANGE' });
  const batches = await drain(tagger, { transferBytes: 1 << 20 });
  const n = batches.reduce((a, b) => a + b.timePs.length, 0);
  t.equal(n, 531477 + 388700);
  t.same(batches.map((b) => b.seq), batches.map((_, i) => i), 'seq without gaps');
  t.ok(batches.every((b) => b.events.length === 0));
  const few = await drain(tagger, { maxTags: 1000, channels: [1] });
  t.equal(few.reduce((a, b) => a + b.timePs.length, 0), 1000);
  t.ok(few.every((b) => b.channel.every((c) => c === 1)));
  const s = tagger.startStream();
  t.throws(() => tagger.startStream(), { code: 'STREAM_BUSY' });
  await s.stop();
});

t.test('quTAG events beyond the re-ordering window show in band as MISSED_EVENTS, never silently', async (t) => {
  const file = join(dir.path, 'late.qutag');
  writeFileSync(file, qutagFile([[1000, 1], [2000, 2], [9_000_000, 1], [3000, 3], [9_200_000, 2]]));
  const tagger = await openRecordingTagger(file);
  t.teardown(() => tagger.close());
  const batches = await drain(tagger);
  const events = batches.flatMap((b) => b.events);
  t.same(events.map((e) => [e.type, e.channel, e.missedEvents]), [[4, 3, 1]]);
  t.equal(batches.reduce((a, b) => a + b.timePs.length, 0), 4);
});

t.test('node configuration: a "replay" device needs no profile and opens as a time-tagger', async (t) => {
  const cfgFile = join(dir.path, 'node.json');
  writeFileSync(cfgFile, JSON.stringify({ devices: [{ id: 'lab-ptu', replay: join(DATA, 'hydraharp/v20_t3.ptu') }] }));
  const cfg = parseNodeConfig(JSON.parse(readFileSync(cfgFile, 'utf8')), cfgFile);
  const set = new DeviceSet(cfg);
  t.teardown(() => set.close());
  const tagger = set.get('lab-ptu') as TimeTagger;
  t.equal(tagger.kind, 'time-tagger');
  t.match(set.slots.get('lab-ptu')!.transport, /^replay .*v20_t3\.ptu$/);
  const id = await tagger.open();
  t.equal(id.vendor, 'PicoQuant');
  const n = (await drain(tagger)).reduce((a, b) => a + b.timePs.length, 0);
  t.equal(n, 45012 + 32871);
  t.throws(() => parseNodeConfig({ devices: [{ id: 'x', replay: 'a.ptu', emulated: true }] }, 'cfg.json'), { code: 'BAD_NODE_CONFIG', message: /a "replay" device has no "emulated" or "port"/ });
  t.throws(() => parseNodeConfig({ devices: [{ id: 'x' }] }, 'cfg.json'), { code: 'BAD_NODE_CONFIG', message: /devices\[0\]\.profile/ });
  t.throws(() => parseNodeConfig({ devices: [{ id: 'x', replay: 'a.dat', replayFormat: 'csv' }] }, 'cfg.json'), { code: 'BAD_NODE_CONFIG', message: /replayFormat/ });
});

t.test('the calibration rig (deviceRig, what `qkd calibrate` reads devices through) reads a recording window by window', async (t) => {
  const tagger = await openRecordingTagger(join(DATA, 'picoharp/v30_t2.ptu'));
  const ref = await all(join(DATA, 'picoharp/v30_t2.ptu'));
  const { deviceRig } = await import('../../src/timing/device-rig.ts');
  // A recording has no Alice pattern: a flat one stands in (the rig only passes it on).
  const rig = deviceRig({ tagger, pattern: { meanPhotons: [0.5], intensities: (_f, n) => new Uint8Array(n) }, repRateHz: 1e6, profiles: { tagger: tagger.profile } });
  t.teardown(async () => { await rig.close(); await tagger.close(); });
  // Three consecutive reads of 2e5 pulses (200 ms each at 1 MHz) are contiguous windows of the file.
  const t0 = Number(ref.timePs[0]);
  let from = 0;
  for (let k = 1; k <= 3; k++) {
    const b = await rig.read(2e5);
    const end = t0 + k * 2e5 * 1e6;
    let to = from;
    while (to < ref.timePs.length && Number(ref.timePs[to]) < end) to++;
    t.equal(b.timePs.length, to - from, `window ${k}: ${to - from} tags`);
    t.equal(b.timePs[0], ref.timePs[from]);
    from = to;
  }
});
