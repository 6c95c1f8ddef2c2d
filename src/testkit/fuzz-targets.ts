/**
 * The fuzz targets: every parser that reads bytes from outside the node (src/testkit/fuzz.ts
 * says what a target is and what counts as a finding). Grouped as the CI tests run them:
 * `streams` (device lines and tagger streams), `files` (records, profiles, configurations),
 * `wire` (ZeroMQ frames, channel messages), `http` (ETSI 004/014 and KMS-peer bodies).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { chunksOf, fieldEdits, jsonFieldEdits, jsonText, utf8, type FuzzTarget } from './fuzz.ts';
import { Tdc1Decoder, encodeTdc1Slow, tdc1Bytes } from '../devices/tdc1-words.ts';
import { TagRecordDecoder, encodeTagRecords } from '../devices/tags.ts';
import { ScpiFrameParser } from '../devices/transports/scpi-frames.ts';
import { decodeHeader, encodeHeader, LAYOUT } from '../stream/frame.ts';
import { decodeAad, encodeAad, KIND } from '../channel/wire.ts';
import { readRecordingHeader, encodeBatch } from '../devices/record.ts';
import { openRecording, encodeA1, type RecordingFormat } from '../core/records.ts';
import { loadProfileFile, PROFILES_DIR, listProfiles } from '../devices/profile.ts';
import { loadNodeConfig } from '../devices/config.ts';
import { readNodeConfig } from '../node/config.ts';
import { loadKmsConfig } from '../delivery/config.ts';
import { decodePulseList, encodePulseList } from '../protocol/pulse-list.ts';
import { listLinks, linkFile, loadProtocolSettings } from '../protocol/settings.ts';

/** A scratch folder per process for targets that read files. */
let scratch: string | undefined;
function scratchFile(name: string, bytes: Uint8Array): string {
  if (!scratch) {
    scratch = mkdtempSync(join(tmpdir(), 'qkd-fuzz-'));
    const dir = scratch;
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  const f = join(scratch, name);
  writeFileSync(f, bytes);
  return f;
}

export const SHARED_DATA = new URL('../../../shared/data/', import.meta.url).pathname;

/** The header and first records of each real PicoQuant recording (../shared/data/picoquant). */
function ptuSeeds(): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const f of ['picoharp/v30_t2.ptu', 'hydraharp/v20_t2.ptu', 'hydraharp/v10_t3.ptu', 'hydraharp/v20_t3.ptu']) {
    try {
      out.push(new Uint8Array(readFileSync(join(SHARED_DATA, 'picoquant', f)).subarray(0, 8192)));
    } catch {
      /* the corpus keeps copies of these headers (test/fuzz/corpus/records-ptu/) */
    }
  }
  return out;
}

// ------------------------------------------------------------------ streams

const tdc1: FuzzTarget = {
  name: 'tdc1-words',
  maxBytes: 8192,
  seeds: () => [encodeTdc1Slow([{ units: 100n, pattern: 1 }, { units: 5000n, pattern: 3 }, { units: 90000n, pattern: 15 }], 0n, 1n << 28n)],
  structured: fc.array(fc.nat({ max: 0xffffffff }), { maxLength: 1024 }).map((w) => tdc1Bytes(w)),
  run(input) {
    const d = new Tdc1Decoder();
    for (const c of chunksOf(input)) d.push(c);
    d.flush();
  },
};

const tagRecords: FuzzTarget = {
  name: 'tag-records',
  seeds: () => [encodeTagRecords([{ type: 0, missedEvents: 0, channel: 1, timePs: 1000n }, { type: 2, missedEvents: 7, channel: 0, timePs: 2000n },
    { type: 0, missedEvents: 0, channel: 300, timePs: -1n }])],
  run(input) {
    const d = new TagRecordDecoder();
    for (const c of chunksOf(input)) d.push(c);
  },
};

const scpiFrames: FuzzTarget = {
  name: 'scpi-frames',
  seeds: () => [utf8('*IDN?\nEMULAB,PS-1,0001,1.0\n#212abcdefghijkl\n#0\nOK\n'), utf8('#15hello\r\n#3001x\r\nERR -1\r\n')],
  run(input) {
    const p = new ScpiFrameParser(input.length && input[0] & 1 ? '\r\n' : '\n');
    for (const c of chunksOf(input)) p._transform(Buffer.from(c), 'binary', () => undefined);
    p.pendingBytes();
  },
};

// ------------------------------------------------------------------ wire

// Generator side only: big integers beyond 64 bits go as floats instead of failing to encode.
const headerPackr = new Packr({ useRecords: false, largeBigIntToFloat: true });
const FRAME_SEED = { version: 1, streamId: 'bob-tagger', seq: 3, epochPs: 10n ** 12n, firstPs: 5n, count: 2, layout: LAYOUT.TAGS_I64, flags: 1,
  droppedBefore: 0, events: [{ type: 2 as const, index: 1, channel: 0, timePs: 7n, missedEvents: 3 }] };
const msgpackValue = fc.anything({ maxDepth: 2, withBigInt: true });
const streamFrame: FuzzTarget = {
  name: 'stream-frame',
  seeds: () => [encodeHeader(FRAME_SEED)],
  structured: fieldEdits([headerPackr.unpack(encodeHeader(FRAME_SEED))], msgpackValue, (v) => new Uint8Array(headerPackr.pack(v))),
  run(input) {
    decodeHeader(input);
  },
};

const aadPackr = new Packr({ useRecords: false, largeBigIntToFloat: true });
const AAD_SEED = { version: 1, direction: 0 as const, seq: 12, sender: new Uint8Array(16).fill(1), receiver: new Uint8Array(16).fill(2), kind: KIND.REQ,
  type: 'sift', msgId: 4, blockId: 7, ref: -1 };
const channelAad: FuzzTarget = {
  name: 'channel-aad',
  seeds: () => [encodeAad(AAD_SEED)],
  structured: fieldEdits([aadPackr.unpack(encodeAad(AAD_SEED))], msgpackValue, (v) => new Uint8Array(aadPackr.pack(v))),
  run(input) {
    decodeAad(input);
  },
};

const pulseList: FuzzTarget = {
  name: 'pulse-list',
  seeds: () => [encodePulseList(Float64Array.of(0, 1, 5, 200, 70000, 2 ** 40))],
  run(input) {
    decodePulseList(input, input.length ? input[0] : undefined);
  },
};

// ------------------------------------------------------------------ files

const recordingHeader: FuzzTarget = {
  name: 'recording-header',
  seeds: () => {
    const json = utf8(JSON.stringify({ deviceId: 'tt', profile: 'emulab-tt8', identity: { vendor: 'EmuLab', model: 'TT-8', serial: '1', firmware: '1.0' },
      startedAt: '2026-01-01T00:00:00Z', settings: { 'delay:1': 0 } }));
    const head = Buffer.alloc(16);
    Buffer.from('QKDTAG1\0', 'latin1').copy(head);
    head.writeUInt32LE(1, 8);
    head.writeUInt32LE(json.length, 12);
    return [new Uint8Array(Buffer.concat([head, json, encodeBatch({ seq: 0, timePs: BigInt64Array.of(5n), channel: Uint8Array.of(1), events: [] })]))];
  },
  async run(input) {
    await readRecordingHeader(scratchFile('recording.qtags', input));
  },
};

/** Decodes a whole recording file (native decoders through the TypeScript facade). */
async function decodeRecording(input: Uint8Array, format: RecordingFormat): Promise<void> {
  const rec = await openRecording(scratchFile(`rec.${format}`, input), { format });
  for await (const c of rec.chunks({ eventsPerChunk: 64, readBytes: 256 })) void c;
}

const recordsPtu: FuzzTarget = {
  name: 'records-ptu',
  maxBytes: 8192,
  seeds: ptuSeeds,
  run: (input) => decodeRecording(input, 'ptu'),
};

const recordsQutag: FuzzTarget = {
  name: 'records-qutag',
  seeds: () => {
    const b = Buffer.alloc(40 + 30);
    for (let i = 0; i < 3; i++) {
      b.writeBigInt64LE(BigInt(1000 * (3 - i)), 40 + 10 * i);
      b.writeUInt16LE(i, 48 + 10 * i);
    }
    return [new Uint8Array(b)];
  },
  run: (input) => decodeRecording(input, 'qutag'),
};

const recordsA1: FuzzTarget = {
  name: 'records-a1',
  seeds: () => [new Uint8Array(encodeA1(BigInt64Array.of(1000n, 2000n, 2000n, 90000n), Uint8Array.of(1, 2, 3, 4)))],
  run: (input) => decodeRecording(input, input.length && input[0] & 1 ? 'a1-legacy' : 'a1'),
};

const profileSeeds = (): unknown[] => listProfiles().map((n) => JSON.parse(readFileSync(join(PROFILES_DIR, `${n}.json`), 'utf8')) as unknown);
const profile: FuzzTarget = {
  name: 'profile',
  seeds: () => listProfiles().map((n) => new Uint8Array(readFileSync(join(PROFILES_DIR, `${n}.json`)))),
  get structured() {
    return fc.oneof(jsonText, jsonFieldEdits(profileSeeds()));
  },
  run(input) {
    loadProfileFile(scratchFile('fuzz-profile.json', input));
  },
};

const linkSeeds = (): unknown[] => listLinks().map((n) => JSON.parse(readFileSync(linkFile(n), 'utf8')) as unknown);
const linkPreset: FuzzTarget = {
  name: 'link-preset',
  seeds: () => listLinks().map((n) => new Uint8Array(readFileSync(linkFile(n)))),
  get structured() {
    return fc.oneof(jsonText, jsonFieldEdits(linkSeeds()));
  },
  run(input) {
    loadProtocolSettings(scratchFile('fuzz-link.json', input));
  },
};

const DEVICE_CONFIG = { devices: [{ id: 'src', profile: 'emulab-ps1', emulated: true }, { id: 'tt', profile: 'emulab-tt8', port: '/dev/ttyUSB0' },
  { id: 'rec', replay: 'x.qtags' }], emulated: { seed: '42' } };
const deviceConfig: FuzzTarget = {
  name: 'device-config',
  seeds: () => [utf8(JSON.stringify(DEVICE_CONFIG))],
  structured: fc.oneof(jsonText, jsonFieldEdits([DEVICE_CONFIG])),
  run(input) {
    loadNodeConfig(scratchFile('devices.json', input));
  },
};

const NODE_CONFIG = {
  role: 'bob', nodeId: 'nodeB', peerNodeId: 'nodeA',
  lab: { preset: 'reference-decoy', distanceKm: 25, eveFraction: 0, seed: '1' },
  channel: { endpoint: 'tcp://127.0.0.1:5555', pskFile: 'psk.bin', sessionId: 's', curveKeyFile: 'c.key', peerPublicKey: 'x' },
  stream: { endpoint: 'ipc:///tmp/s' },
  delivery: { listenPort: 0, tls: { ca: 'ca.pem', cert: 'b.pem', key: 'b.key' }, insecure: false, kms: { url: 'https://127.0.0.1:1', id: 'kmsB' },
    spoolDir: 'spool', spoolKeyFile: 'spool.key' },
  block: { detections: 1e6, frameBits: 65536, epsSec: 1e-10, epsCor: 1e-15, qberAbort: 0.11, analysis: 'lim2014' },
  calibration: 'cal', devices: [{ id: 'tt', profile: 'emulab-tt8', emulated: true }],
};
const nodeConfig: FuzzTarget = {
  name: 'node-config',
  seeds: () => [utf8(JSON.stringify(NODE_CONFIG))],
  structured: fc.oneof(jsonText, jsonFieldEdits([NODE_CONFIG])),
  run(input) {
    readNodeConfig(scratchFile('node.json', input));
  },
};

const KMS_CONFIG = {
  id: 'kmsA', role: 'source', listen: { host: '127.0.0.1', port: 8443 }, insecure: true,
  dbPath: 'kmsA.db', wrapKeyFile: 'kmsA.wrap', capacity: 100000, node: { url: 'https://127.0.0.1:9001', id: 'nodeA' }, peerNodeId: 'nodeB',
  peer: { url: 'https://127.0.0.1:8444', id: 'kmsB' }, saes: { local: ['saeA'], remote: ['saeB'] }, qos: { key_chunk_size: 32, ttl: 3600 }, openStream: true,
};
const KMS_CUSTODY = { ...KMS_CONFIG, wrapKeyFile: undefined, custody: { keystore: 'pkcs11', pkcs11: { module: '/nonexistent.so', tokenLabel: 't', keyLabel: 'k', pinEnv: 'QKD_FUZZ_PIN' } } };
const kmsConfig: FuzzTarget = {
  name: 'kms-config',
  seeds: () => [utf8(JSON.stringify(KMS_CONFIG)), utf8(JSON.stringify(KMS_CUSTODY))],
  structured: fc.oneof(jsonText, jsonFieldEdits([KMS_CONFIG, KMS_CUSTODY])),
  setup: async () => {
    scratchFile('kmsA.wrap', new Uint8Array(32).fill(7));
    return async () => undefined;
  },
  run(input) {
    loadKmsConfig(scratchFile('kms.json', input));
  },
};

export const STREAM_TARGETS = [tdc1, tagRecords, scpiFrames];
export const WIRE_TARGETS = [streamFrame, channelAad, pulseList];
export const FILE_TARGETS = [recordingHeader, recordsPtu, recordsQutag, recordsA1, profile, linkPreset, deviceConfig, nodeConfig, kmsConfig];

/** Every target's name (the HTTP ones live in fuzz-http.ts: they start servers). */
export const ALL_TARGET_NAMES = [...STREAM_TARGETS, ...WIRE_TARGETS, ...FILE_TARGETS].map((t) => t.name).concat(['http-kms', 'http-node']);

export async function targetByName(name: string): Promise<FuzzTarget> {
  const t = [...STREAM_TARGETS, ...WIRE_TARGETS, ...FILE_TARGETS].find((x) => x.name === name);
  if (t) return t;
  const { HTTP_TARGETS } = await import('./fuzz-http.ts');
  const h = HTTP_TARGETS.find((x) => x.name === name);
  if (!h) throw new Error(`no fuzz target '${name}'`);
  return h;
}
