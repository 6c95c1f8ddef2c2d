import t from 'tap';
import { createLogger, createMemorySink } from '../../src/telemetry/logger.ts';
import { classifyField, redact, redactString } from '../../src/telemetry/redact.ts';
import { QkdError, SecurityError } from '../../src/errors.ts';
import { pseudoRandomBytes } from '../../src/testkit/telemetry.ts';

// The canary: 32 "key" bytes. Every encoding of them that could leak is searched for in the output.
const CANARY = Buffer.from(pseudoRandomBytes(32, 0xc0ffee));
function encodings(b: Buffer): string[] {
  const list = [
    b.toString('hex'), b.toString('hex').toUpperCase(), b.toString('base64'), b.toString('base64url'),
    b.toString('base64').replace(/=+$/, ''), Array.from(b).join(','), JSON.stringify(b.toString('latin1')).slice(1, -1),
  ];
  // Any 12-byte window in hex/base64 would be a partial leak too.
  list.push(b.subarray(8, 20).toString('hex'), b.subarray(9, 21).toString('base64').slice(0, 16));
  return list;
}
/** The canary encodings found in `text` (empty when nothing leaked). */
function leaks(text: string): string[] {
  return encodings(CANARY).filter((e) => text.includes(e));
}

t.test('canary key bytes never reach the log, whatever shape they take', async (t) => {
  const mem = createMemorySink();
  const log = createLogger({ component: 'test.canary', sink: mem.sink, level: 'debug', clock: () => 0 });
  const b64 = CANARY.toString('base64');
  const hex = CANARY.toString('hex');
  const cause = new Error(`inner failure with ${b64}`, { cause: { keyBuffer: CANARY, detail: hex } });
  const agg = new AggregateError([new Error(`one ${hex}`), new QkdError('X', `two ${CANARY.toString('base64url')}`)], 'many');
  const custom = Object.assign(new SecurityError('MAC_MISMATCH', 'tag mismatch'), { key: CANARY, expected: hex });
  const cyc: Record<string, unknown> = { name: 'loop', payload: CANARY };
  cyc.self = cyc;
  const sneaky = { toJSON: () => ({ material: b64 }), inner: Array.from(CANARY) };
  log.info(`pushing key ${b64} to KMS`, { key: CANARY });
  log.info('named fields', {
    keyBuffer: CANARY, key_buffer: hex, secret: b64, seed: 12345, otp: 'abc', password: 'hunter2', privateKey: b64,
    macKey: CANARY.toString('base64url'), 'mac-key': hex, MAC_KEY: hex, keyMaterial: b64, keyId: b64,
  });
  log.debug('typed arrays', {
    u8: new Uint8Array(CANARY), u32: new Uint32Array(CANARY.buffer, CANARY.byteOffset & ~3 ? 0 : CANARY.byteOffset, 4),
    f64: new Float64Array(4), ab: CANARY.buffer.slice(CANARY.byteOffset, CANARY.byteOffset + 32), dv: new DataView(new Uint8Array(CANARY).buffer),
    sab: new SharedArrayBuffer(8), bytesAsArray: Array.from(CANARY), bufferJson: CANARY.toJSON(),
  });
  log.warn('strings in plain fields', { data: b64, hexdata: hex.toUpperCase(), url: CANARY.toString('base64url'), text: CANARY.toString('latin1'), utf8: CANARY.toString('utf8') });
  log.error('nested', {
    list: [[{ deep: { deeper: { blob: b64 } } }]], map: new Map<string, unknown>([['secret', 'x'], ['blob', CANARY]]),
    set: new Set([hex]), err: cause, agg, custom, cyc, sneaky,
  });
  log.error('error as fields', cause);
  log.child({ component: 'test.child', sessionKey: CANARY }).info('child', { psk: b64 });
  const out = mem.lines.join('\n');
  t.same(leaks(out), [], 'no encoding of the canary in any record');
  t.ok(leaks(`x ${CANARY.toString('base64')} y`).length > 0, 'the leak detector itself finds a leak');
  t.notOk(out.includes('hunter2'), 'password value gone');
  t.notOk(out.includes('"data":['), "Buffer.toJSON's byte list not written");
  const recs = mem.records();
  t.equal(recs.length, 7);
  t.equal(recs[0].key, '[redacted 32 bytes]');
  t.match(recs[0].msg, /^pushing key \[redacted blob\] to KMS$/);
  t.equal(recs[1].seed, '[redacted]', 'a secret field is redacted even when it holds a number');
  t.equal(recs[1].keyId, '[redacted]', 'a blob in a metadata-named secret field is redacted');
  t.equal((recs[2] as Record<string, unknown>).ab, '[redacted 32 bytes]');
  t.equal((recs[2] as Record<string, unknown>).bytesAsArray, '[redacted 32 bytes]');
  const nested = recs[4] as { err: { message: string; cause: { keyBuffer: string } }; cyc: { self: string }; agg: { errors: unknown[] } };
  t.equal(nested.err.cause.keyBuffer, '[redacted 32 bytes]', 'error causes are walked');
  t.equal(nested.cyc.self, '[circular]');
  t.equal(nested.agg.errors.length, 2);
  t.equal(recs[6].component, 'test.child');
  t.equal(recs[6].sessionKey, '[redacted 32 bytes]');
});

t.test('useful, non-secret information survives', async (t) => {
  const mem = createMemorySink();
  const log = createLogger({ component: 'delivery.push', sink: mem.sink, clock: () => Date.UTC(2026, 0, 2, 3, 4, 5) });
  log.info('key pushed to http://127.0.0.1:8443/api/v1/kms/etsi004/key-material', {
    keyId: '123e4567-e89b-12d3-a456-426614174000', key_stream_id: '6f1c2a8e-3b1d-4c5e-9f00-112233445566', keysDelivered: 12,
    secretBits: 4096, keySize: 256, latencyMs: 12.5, channel: 3, profile: 'hw-profiles/emulated-snspd.json', ok: true,
    big: 12345678901234567890n, when: new Date(0), reason: 'AbortedBlockReasonQber', ts: 'user field',
  });
  log.debug('not written at info level');
  const [r] = mem.records();
  t.equal(mem.lines.length, 1, 'level filter');
  t.equal(r.ts, '2026-01-02T03:04:05.000Z');
  t.equal(r.level, 'info');
  t.equal(r.component, 'delivery.push');
  t.equal(r.msg, 'key pushed to http://127.0.0.1:8443/api/v1/kms/etsi004/key-material');
  t.equal(r.keyId, '123e4567-e89b-12d3-a456-426614174000');
  t.equal(r.key_stream_id, '6f1c2a8e-3b1d-4c5e-9f00-112233445566');
  t.equal(r.keysDelivered, 12);
  t.equal(r.secretBits, 4096);
  t.equal(r.keySize, 256);
  t.equal(r.profile, 'hw-profiles/emulated-snspd.json');
  t.equal(r.big, '12345678901234567890');
  t.equal(r.when, '1970-01-01T00:00:00.000Z');
  t.equal(r.reason, 'AbortedBlockReasonQber');
  t.equal(r._ts, 'user field', 'reserved names are not overwritten');
  const e = redact(new QkdError('KMS_UNREACHABLE', 'KMS at 10.0.0.2 did not answer; check the link')) as Record<string, unknown>;
  t.equal(e.code, 'KMS_UNREACHABLE');
  t.equal(e.name, 'QkdError');
  t.same(
    ['key', 'keyBuffer', 'key_buffer', 'macKey', 'seed', 'otp', 'password', 'privateKey', 'keyId', 'keysDelivered', 'channel', 'monkey'].map(classifyField),
    ['secret', 'secret', 'secret', 'secret', 'secret', 'secret', 'secret', 'secret', 'secret-metadata', 'secret-metadata', 'plain', 'plain'],
  );
});

t.test('blob detector: random keys in free text are caught, identifiers are not', async (t) => {
  let missed = 0;
  const N = 2000;
  for (let i = 0; i < N; i++) {
    const k = Buffer.from(pseudoRandomBytes(32, 5000 + i));
    for (const s of [k.toString('base64'), k.toString('base64url'), k.toString('hex')]) if (redactString(`got ${s} ok`).includes(s)) missed++;
  }
  t.ok(missed / (3 * N) < 0.002, `32-byte keys missed in free text: ${missed}/${3 * N}`);
  for (const s of ['processIncomingDetectionBatch', '/api/v1/keys/SAE_B/enc_keys', 'ERR_SOCKET_CONNECTION_TIMEOUT', 'qkd_key_push_latency_seconds',
    'file:///work/main/src/node/run.ts:12:3', 'calibration/2026-11-23T10:00:00Z.json', 'TransportErrorDeviceTimeout', 'Grüße aus Genève, ça marche']) {
    t.equal(redactString(s), s, `kept: ${s}`);
  }
});

t.test('credentials in URLs and query strings', async (t) => {
  t.equal(redactString('GET https://sae:hunter2@kms.example/api/v1/keys?size=256&token=abc123&key_ID=7'),
    'GET https://sae:[redacted]@kms.example/api/v1/keys?size=256&token=[redacted]&key_ID=7');
  t.same(redact({ u: new URL('https://a:b@h/p?password=x') }), { u: 'https://a:[redacted]@h/p?password=[redacted]' });
});

t.test('long arrays and strings are cut, not dumped', async (t) => {
  const r = redact({ list: Array.from({ length: 250 }, (_, i) => i * 1000), text: 'x'.repeat(10_000) }) as { list: unknown[]; text: string };
  t.equal(r.list.length, 101);
  t.equal(r.list[100], '[+150 more]');
  t.equal(r.text.length, 8192 + '[+1808 chars]'.length);
});

t.test('a throwing sink does not break the caller', async (t) => {
  const log = createLogger({ component: 'x', sink: () => { throw new Error('disk full'); } });
  t.doesNotThrow(() => log.error('still fine'));
});
