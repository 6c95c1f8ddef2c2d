/**
 * Fuzz targets for the HTTP bodies the node and the reference KMS parse: ETSI 014 (SAE → KMS),
 * ETSI 004 key-material pushes (node → KMS), KMS↔KMS calls (also the ETSI 004 application
 * streams' `kms-peer/qkd004` operations), ETSI 004 for applications (SAE → KMS: open_connect,
 * get_key, close), ETSI 004 open-connect / get-key / close (KMS → node). Real servers with real
 * mutual TLS (src/testkit/delivery.ts); each request is sent with the certificate of the party
 * that may call that route, so a body gets past the identity check into the parser.
 *
 * Input bytes: `METHOD /path\n` then the raw body (any bytes: not necessarily JSON). A first line
 * that is not a usable request line sends the whole input as the body of a default route.
 * Finding: a 500 (a handler threw; the server log's error is in the detail), a dropped
 * connection, or a non-JSON error body. Any 2xx/4xx/503 with a message is a clear answer.
 */
import https from 'node:https';
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { jsonText, utf8, type FuzzTarget } from './fuzz.ts';
import { startLink, type Link } from './delivery.ts';

type Caller = 'saeA' | 'nodeA' | 'kmsB' | 'kmsA';

interface Route { method: string; path: string }

let link: (Link & { keyStreamId: string }) | undefined;
let lastServerError = '';

const KMS_ROUTES: Route[] = [
  { method: 'POST', path: '/api/v1/keys/saeB/enc_keys' }, { method: 'GET', path: '/api/v1/keys/saeB/enc_keys' },
  { method: 'POST', path: '/api/v1/keys/saeB/dec_keys' }, { method: 'GET', path: '/api/v1/keys/saeB/status' },
  { method: 'POST', path: '/api/v1/qkd/etsi004/key-material' },
  { method: 'POST', path: '/api/v1/kms-peer/open-stream' }, { method: 'POST', path: '/api/v1/kms-peer/reserve' },
  { method: 'POST', path: '/api/v1/qkd004/open_connect' }, { method: 'POST', path: '/api/v1/qkd004/get_key' },
  { method: 'POST', path: '/api/v1/qkd004/close' }, { method: 'POST', path: '/api/v1/kms-peer/qkd004' },
];
const NODE_ROUTES: Route[] = [
  { method: 'POST', path: '/api/v1/kms/etsi004/open-connect' }, { method: 'POST', path: '/api/v1/kms/etsi004/get-key' },
  { method: 'GET', path: '/api/v1/kms/etsi004/get-key' }, { method: 'POST', path: '/api/v1/kms/etsi004/close' },
];

/** Who may call a path (so the body reaches the parser behind the identity check). */
function callerOf(path: string): Caller {
  if (path.startsWith('/api/v1/keys/') || path.startsWith('/api/v1/qkd004/')) return 'saeA';
  if (path.startsWith('/api/v1/qkd/')) return 'nodeA';
  if (path.startsWith('/api/v1/kms-peer/')) return 'kmsB';
  return 'kmsA';
}

const METHODS = new Set(['GET', 'POST', 'PUT', 'DELETE', 'PATCH']);

/** Splits an input into request line and body (see the module comment). */
function parseInput(input: Uint8Array, routes: Route[]): Route & { body: Buffer } {
  const buf = Buffer.from(input);
  const nl = buf.indexOf(0x0a);
  const line = nl >= 0 ? buf.subarray(0, nl).toString('latin1') : '';
  const m = /^([A-Z]+) (\/[\x21-\x7e]*)$/.exec(line);
  if (m && METHODS.has(m[1])) return { method: m[1], path: m[2], body: buf.subarray(nl + 1) };
  return { ...routes[input.length % routes.length], body: buf };
}

function send(server: { url: string; id: string }, caller: Caller, r: Route & { body: Buffer }): Promise<{ status: number; body: string; type: string }> {
  // The raw path goes to the server's own host and port: resolving it as a URL would send a path
  // such as `/\\host/x` (protocol-relative once the backslash is read as a slash) to another host.
  const u = new URL(server.url);
  return new Promise((resolve, reject) => {
    const req = https.request({ host: u.hostname, port: u.port, path: r.path, method: r.method, ...link!.pki.tls(caller),
      servername: undefined, checkServerIdentity: () => undefined, minVersion: 'TLSv1.3', agent: false,
      headers: { 'content-type': 'application/json', 'content-length': String(r.body.length) } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString('utf8'), type: String(res.headers['content-type'] ?? '') }));
      res.on('error', reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')));
    req.on('error', reject);
    req.end(r.body);
  });
}

async function check(server: { url: string; id: string }, r: Route & { body: Buffer }): Promise<void> {
  lastServerError = '';
  let res: { status: number; body: string; type: string };
  try {
    res = await send(server, callerOf(r.path), r);
  } catch (err) {
    throw new Error(`${r.method} ${r.path}: no answer (${(err as Error).message})`);
  }
  if (res.status >= 500 && res.status !== 503) {
    throw new Error(`${r.method} ${r.path} answered ${res.status}: ${res.body} (server: ${lastServerError || 'nothing logged'})`);
  }
  if (res.status >= 400) {
    let msg: unknown;
    try {
      msg = (JSON.parse(res.body) as { message?: unknown }).message;
    } catch {
      /* below */
    }
    if (typeof msg !== 'string' || !msg) throw new Error(`${r.method} ${r.path} answered ${res.status} without a JSON message: ${res.body.slice(0, 200)}`);
  }
}

async function setup(): Promise<() => Promise<void>> {
  link = await startLink();
  for (const s of [link.kmsA, link.kmsB, link.nodeA, link.nodeB] as unknown as NodeJS.EventEmitter[]) {
    s.on('log', (l: { level: string; error?: string; msg: string }) => {
      if (l.level === 'error') lastServerError = `${l.msg}: ${l.error ?? ''}`;
    });
  }
  return async () => {
    await link?.close();
    link = undefined;
  };
}

const request = (routes: Route[], bodies: fc.Arbitrary<Uint8Array>) =>
  fc.tuple(fc.constantFrom(...routes), bodies).map(([r, b]) => new Uint8Array(Buffer.concat([Buffer.from(`${r.method} ${r.path}\n`), b])));

/** Bodies that look like the real ones, one field at a time wrong. */
function kmsBodies(): unknown[] {
  const sid = link?.keyStreamId ?? randomUUID();
  return [
    { number: 2, size: 256 }, { key_IDs: [{ key_ID: randomUUID() }] },
    { status: 0, index: 3, key_buffer: Buffer.alloc(32, 1).toString('base64'), metadata: { size: 100, buffer: { key_stream_id: sid } } },
    { key_stream_id: sid, source: 'nodeA', destination: 'nodeB', qos: { key_chunk_size: 32, max_bps: 1000, min_bps: 0, jitter: 0, priority: 0, timeout: 0, ttl: 60 } },
    { key_stream_id: sid, index: 1 }, { key_stream_id: sid, indices: [0, 1], digests: ['00'] },
    // ETSI 004 for applications, and its KMS<->KMS operations.
    { source: 'saeA', destination: 'saeB', qos: { key_chunk_size: 16, min_bps: 0, max_bps: 0, priority: 1, timeout: 0, ttl: 60 }, key_stream_ID: null },
    { key_stream_ID: sid, index: 0, metadata: { size: 200 } }, { key_stream_ID: sid },
    { op: 'sync', stream: { id: sid, source: 'saeA', destination: 'saeB', sid, chunkBytes: 32, ttlLeftMs: 1000,
      qos: { key_chunk_size: 32, max_bps: 0, min_bps: 0, jitter: 0, priority: 0, timeout: 0, ttl: 1, metadata_mimetype: 'application/json' },
      connected: { source: true, destination: false } } },
    { op: 'open', source: 'saeA', destination: 'saeB', side: 'destination', key_stream_ID: null, qos: {} },
    { op: 'allocate', key_stream_ID: sid, group: 0, wait_ms: 0 }, { op: 'close', key_stream_ID: sid, cut: [[0, 2]], spare: [] },
  ];
}
function nodeBodies(): unknown[] {
  const sid = link?.keyStreamId ?? randomUUID();
  return [
    { source: 'qkd://nodeA', destination: 'qkd://nodeB', qos: { key_chunk_size: 32, max_bps: 1000, min_bps: 0, jitter: 0, priority: 0, timeout: 0, ttl: 60 }, key_stream_id: sid },
    { key_stream_id: sid, index: 0, metadata: { size: 10, buffer: 'x' } }, { key_stream_id: sid },
  ];
}

const bodiesOf = (seeds: () => unknown[]) => fc.oneof(jsonText, fc.constant(0).chain(() => {
  // Field edits need the seeds after set-up (they name the open key stream).
  const s = seeds();
  return fc.tuple(fc.constantFrom(...s), fc.nat(), fc.jsonValue({ maxDepth: 2 })).map(([seed, pick, v]) => {
    const o = structuredClone(seed) as Record<string, unknown>;
    const keys = Object.keys(o);
    o[keys[pick % keys.length]] = v;
    return utf8(JSON.stringify(o));
  });
}));

const httpKms: FuzzTarget = {
  name: 'http-kms',
  setup,
  seeds: () => KMS_ROUTES.flatMap((r) => kmsBodies().map((b) => utf8(`${r.method} ${r.path}\n${JSON.stringify(b)}`))),
  get structured() {
    return request(KMS_ROUTES, bodiesOf(kmsBodies));
  },
  run: (input) => check({ url: link!.kmsA.url, id: 'kmsA' }, parseInput(input, KMS_ROUTES)),
};

const httpNode: FuzzTarget = {
  name: 'http-node',
  setup,
  seeds: () => NODE_ROUTES.flatMap((r) => nodeBodies().map((b) => utf8(`${r.method} ${r.path}\n${JSON.stringify(b)}`))),
  get structured() {
    return request(NODE_ROUTES, bodiesOf(nodeBodies));
  },
  run: (input) => check({ url: link!.nodeA.url, id: 'nodeA' }, parseInput(input, NODE_ROUTES)),
};

export const HTTP_TARGETS = [httpKms, httpNode];
