/**
 * Key delivery over mutual TLS 1.3 on this machine: node -> KMS (ETSI 004 push, durable store with
 * fsync before each 201) -> SAE (ETSI 014 enc_keys on Alice's side, dec_keys on Bob's side, with
 * the KMS<->KMS confirmation in between). Both nodes push the same keys, as in a real link.
 *
 * Reported: keys/s and bytes/s node -> KMS (all chunks acknowledged by both KMSs), keys/s and bytes/s
 * node -> KMS -> SAE (until both SAEs hold every key), and the node's ack latency p50/p90/p99.
 * Baseline: the same input pushed with one request in flight at a time (no pipelining), the
 * obvious implementation; and for `batched_vs_plain`, one chunk per request (the plain push mode,
 * pushBatch 0) against batches of 64 (the reference KMS's default), both with the default in flight. Median of 3 runs. Chunks of 32 bytes (256-bit keys); bytes/s also with
 * 1024-byte chunks, since the cost is per request (TLS record, JSON, one row) more than per byte.
 * Each run first pushes 2 x maxInFlight chunks untimed (the push client's TLS connections are opened
 * then), so the figure is the steady rate. `DELIVERY_BENCH=push` runs the push figures only;
 * `IN_FLIGHT=n` pushes with n in flight instead of the node's default.
 *
 * The same push and SAE figures on PostgreSQL (`delivery.postgres.*`): a throwaway local cluster
 * (src/testkit/postgres.ts) with fsync on and synchronous_commit on, one database per KMS, over
 * TCP loopback with scram-sha-256. Left out, with a note on stderr, when the server binaries are
 * not installed.
 */
import { randomBytes } from 'node:crypto';
import { DEFAULT_MAX_BATCHES_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT } from '../src/delivery/node.ts';
import { startLink, until } from '../src/testkit/delivery.ts';
import { postgresUnavailable, startPostgres, type PgCluster } from '../src/testkit/postgres.ts';
import { median, type BenchResult } from './stats.ts';
import { relayResults } from './relay-latency.ts';

const CHUNK = 32;
/** Keys per run (both nodes push them): 3 000 since pushes are batched (600 took ~0.1 s). */
const N = 3000;
const BIG_CHUNK = 1024;
/** The node's default (DEFAULT_MAX_IN_FLIGHT; 16 before 2026-12-06), for pushes one chunk a request. */
const IN_FLIGHT = Number(process.env.IN_FLIGHT ?? DEFAULT_MAX_IN_FLIGHT);
/** Batched pushes in flight (the node's DEFAULT_MAX_BATCHES_IN_FLIGHT unless IN_FLIGHT is given). */
const BATCHES_IN_FLIGHT = Number(process.env.IN_FLIGHT ?? DEFAULT_MAX_BATCHES_IN_FLIGHT);

interface Run {
  pushS: number;
  e2eS: number;
  lat: { p50: number; p90: number; p99: number };
}

/** Per-KMS database options: SQLite (the link's files) without a cluster, fresh PostgreSQL databases with one. */
function dbs(pg?: PgCluster) {
  return pg ? { kmsA: { database: pg.createDatabase('bench_a') }, kmsB: { database: pg.createDatabase('bench_b') } } : {};
}

/** `pushBatch`: chunks per push the KMSs ask for (default: the KMS's, 64; 0: one request per chunk, the plain push mode). */
async function once(maxInFlight: number, chunk = CHUNK, pg?: PgCluster, pushBatch?: number): Promise<Run> {
  // The per-SAE rate limit is policy, not pipeline: off here so the bench measures the path.
  const L = await startLink({ node: { maxInFlight, maxBatchesInFlight: maxInFlight }, kms: { qos: { key_chunk_size: chunk }, rateLimit: { keysPerSecond: 0, burst: 0 },
    ...(pushBatch === undefined ? {} : { pushBatch }) }, ...dbs(pg) });
  try {
    // Warm-up: the first pushes open the push client's TLS connections (one per push in flight),
    // a one-off per process that would otherwise weigh on a 600-key run.
    const W = 2 * maxInFlight;
    const warm = randomBytes(chunk * W);
    await Promise.all([L.nodeA.offer(warm, {}), L.nodeB.offer(warm, {})]);
    await until(() => L.nodeA.metrics().acked === W && L.nodeB.metrics().acked === W, 300_000, 'warm-up acks');
    const bytes = randomBytes(chunk * N);
    const t0 = performance.now();
    await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
    // Polled on the nodes (a 201 is the KMS's ack): the KMS's metrics() counts keys in the store,
    // which waits for a running commit and stalled the whole process every 10 ms.
    await until(() => L.nodeA.metrics().acked === W + N && L.nodeB.metrics().acked === W + N, 300_000, 'acks');
    const pushS = (performance.now() - t0) / 1000;
    const a = L.sae('saeA', L.kmsA);
    const b = L.sae('saeB', L.kmsB);
    let got = 0;
    while (got < N) {
      const n = Math.min(128, N - got);
      const enc = await a.req('POST', '/api/v1/keys/saeB/enc_keys', { number: n });
      if (enc.status !== 200) throw new Error(`enc_keys answered ${enc.status}`);
      const dec = await b.req('POST', '/api/v1/keys/saeA/dec_keys',
        { key_IDs: enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
      if (dec.status !== 200 || dec.body.keys.length !== n) throw new Error(`dec_keys answered ${dec.status}`);
      got += n;
    }
    const e2eS = (performance.now() - t0) / 1000;
    return { pushS, e2eS, lat: L.nodeA.metrics().ackLatencyMs };
  } finally {
    await L.close();
  }
}

interface AppsRun {
  keysPerS: number;
  p50: number;
  p99: number;
}

/**
 * `apps` applications at once, each its own SAE pair of connections (saeA at Alice's KMS, saeB at
 * Bob's), each looping enc_keys (one key of `sizeBits`) then dec_keys of that key, until `keys`
 * keys are at both ends. Latency: one enc_keys + dec_keys round (SAE -> KMS -> SAE). The store is
 * filled first, so this measures serving, not production. Sizes other than the chunk are
 * reformatted on supply.
 */
export async function apps(n: number, sizeBits = CHUNK * 8, keys = 600, pg?: PgCluster): Promise<AppsRun> {
  const L = await startLink({ kms: { rateLimit: { keysPerSecond: 0, burst: 0 } }, ...dbs(pg) });
  try {
    const chunks = Math.ceil((keys * sizeBits) / 8 / CHUNK);
    const bytes = randomBytes(CHUNK * chunks);
    await Promise.all([L.nodeA.offer(bytes, {}), L.nodeB.offer(bytes, {})]);
    await until(() => L.kmsA.metrics().acked === chunks && L.kmsB.metrics().acked === chunks, 300_000, 'acks');
    const lat: number[] = [];
    let left = keys;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: n }, async () => {
      const a = L.sae('saeA', L.kmsA);
      const b = L.sae('saeB', L.kmsB);
      while (left > 0) {
        left--;
        const s = performance.now();
        const enc = await a.req('POST', '/api/v1/keys/saeB/enc_keys', { number: 1, size: sizeBits });
        if (enc.status === 503) { // two releases raced for the same chunks: retry, as an SAE would
          left++;
          continue;
        }
        if (enc.status !== 200) throw new Error(`enc_keys answered ${enc.status}`);
        const dec = await b.req('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: enc.body.keys[0].key_ID }] });
        if (dec.status !== 200) throw new Error(`dec_keys answered ${dec.status}`);
        lat.push(performance.now() - s);
      }
    }));
    const s = (performance.now() - t0) / 1000;
    lat.sort((x, y) => x - y);
    return { keysPerS: keys / s, p50: lat[Math.floor(lat.length * 0.5)], p99: lat[Math.min(lat.length - 1, Math.floor(lat.length * 0.99))] };
  } finally {
    await L.close();
  }
}

export async function appsResults(pg?: PgCluster): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  const sizes = pg ? [[1, 256], [8, 256], [64, 256]] as const : [[1, 256], [8, 256], [64, 256], [8, 128]] as const;
  for (const [n, bits] of sizes) {
    const rs: AppsRun[] = [];
    for (let i = 0; i < 3; i++) rs.push(await apps(n, bits, 300, pg));
    const params = { applications: n, keyBits: bits, chunkBytes: CHUNK, keysPerRun: 300, repeats: 3,
      reformatted: bits !== CHUNK * 8, database: pg ? 'PostgreSQL (local, fsync on, synchronous_commit on)' : 'SQLite WAL synchronous=FULL' };
    const tag = `${pg ? 'postgres.' : ''}apps${n}${bits !== CHUNK * 8 ? `.bits${bits}` : ''}`;
    out.push({ name: `delivery.sae_to_sae.${tag}.keys_per_s`, value: median(rs.map((r) => r.keysPerS)), unit: 'keys/s',
      better: 'higher', params });
    out.push({ name: `delivery.sae_to_sae.${tag}.latency_p50`, value: median(rs.map((r) => r.p50)), unit: 'ms', better: 'lower', params });
    out.push({ name: `delivery.sae_to_sae.${tag}.latency_p99`, value: median(rs.map((r) => r.p99)), unit: 'ms', better: 'lower', params });
  }
  return out;
}

export async function run(): Promise<BenchResult[]> {
  const pushOnly = process.env.DELIVERY_BENCH === 'push';
  const fast: Run[] = [];
  const slow: Run[] = [];
  const bigFast: Run[] = [];
  const bigSlow: Run[] = [];
  const plain: Run[] = [];
  for (let i = 0; i < 3; i++) {
    fast.push(await once(BATCHES_IN_FLIGHT));
    plain.push(await once(IN_FLIGHT, CHUNK, undefined, 0));
    slow.push(await once(1));
    bigFast.push(await once(BATCHES_IN_FLIGHT, BIG_CHUNK));
    bigSlow.push(await once(1, BIG_CHUNK));
  }
  const med = (rs: Run[], f: (r: Run) => number) => median(rs.map(f));
  const params = { chunkBytes: CHUNK, keys: N, maxInFlight: BATCHES_IN_FLIGHT, plainMaxInFlight: IN_FLIGHT, baselineMaxInFlight: 1, tls: 'mutual TLS 1.3',
    durability: 'SQLite WAL synchronous=FULL, spool fsync', repeats: 3, pushBatch: 64 };
  return [
    // Batched pushes (the reference KMS's default) against one request per chunk (the plain push
    // mode a KMS without the extension gets), both with IN_FLIGHT requests in flight.
    { name: 'delivery.node_to_kms.batched_vs_plain.keys_per_s', value: N / med(fast, (r) => r.pushS), unit: 'keys/s',
      better: 'higher', params: { ...params, baseline: 'pushBatch 0 (one chunk per request)' }, baseline: N / med(plain, (r) => r.pushS) },
    { name: 'delivery.node_to_kms.keys_per_s', value: N / med(fast, (r) => r.pushS), unit: 'keys/s', better: 'higher',
      params, baseline: N / med(slow, (r) => r.pushS) },
    { name: 'delivery.node_to_kms.bytes_per_s', value: (N * CHUNK) / med(fast, (r) => r.pushS), unit: 'B/s',
      better: 'higher', params, baseline: (N * CHUNK) / med(slow, (r) => r.pushS) },
    { name: 'delivery.node_to_sae.keys_per_s', value: N / med(fast, (r) => r.e2eS), unit: 'keys/s', better: 'higher',
      params, baseline: N / med(slow, (r) => r.e2eS) },
    { name: 'delivery.node_to_sae.bytes_per_s', value: (N * CHUNK) / med(fast, (r) => r.e2eS), unit: 'B/s',
      better: 'higher', params, baseline: (N * CHUNK) / med(slow, (r) => r.e2eS) },
    { name: 'delivery.node_to_sae.bytes_per_s.chunk1024', value: (N * BIG_CHUNK) / med(bigFast, (r) => r.e2eS), unit: 'B/s',
      better: 'higher', params: { ...params, chunkBytes: BIG_CHUNK },
      baseline: (N * BIG_CHUNK) / med(bigSlow, (r) => r.e2eS) },
    { name: 'delivery.ack_latency.p50', value: med(fast, (r) => r.lat.p50), unit: 'ms', better: 'lower', params,
      baseline: med(slow, (r) => r.lat.p50) },
    { name: 'delivery.ack_latency.p90', value: med(fast, (r) => r.lat.p90), unit: 'ms', better: 'lower', params,
      baseline: med(slow, (r) => r.lat.p90) },
    { name: 'delivery.ack_latency.p99', value: med(fast, (r) => r.lat.p99), unit: 'ms', better: 'lower', params,
      baseline: med(slow, (r) => r.lat.p99) },
    // DELIVERY_BENCH=push: the push figures only (the SAE, relay and PostgreSQL parts take most of the time).
    ...(pushOnly ? [] : [...await appsResults(), ...await relayResults(), ...await postgresResults()]),
  ];
}

/** Push rate and the SAE figures with both KMSs on PostgreSQL (see the header). */
async function postgresResults(): Promise<BenchResult[]> {
  const why = postgresUnavailable();
  if (why) {
    console.error(`bench delivery: PostgreSQL figures left out: ${why}`);
    return [];
  }
  const pg = await startPostgres({ durable: true });
  try {
    const fast: Run[] = [];
    for (let i = 0; i < 3; i++) fast.push(await once(BATCHES_IN_FLIGHT, CHUNK, pg));
    const params = { chunkBytes: CHUNK, keys: N, maxInFlight: BATCHES_IN_FLIGHT, tls: 'mutual TLS 1.3', repeats: 3,
      durability: 'PostgreSQL fsync=on synchronous_commit=on (local cluster), spool fsync' };
    const med = (f: (r: Run) => number) => median(fast.map(f));
    return [
      { name: 'delivery.postgres.node_to_kms.keys_per_s', value: N / med((r) => r.pushS), unit: 'keys/s', better: 'higher', params },
      { name: 'delivery.postgres.node_to_sae.keys_per_s', value: N / med((r) => r.e2eS), unit: 'keys/s', better: 'higher', params },
      { name: 'delivery.postgres.ack_latency.p50', value: med((r) => r.lat.p50), unit: 'ms', better: 'lower', params },
      { name: 'delivery.postgres.ack_latency.p99', value: med((r) => r.lat.p99), unit: 'ms', better: 'lower', params },
      ...(await appsResults(pg)),
    ];
  } finally {
    pg.stop();
  }
}
