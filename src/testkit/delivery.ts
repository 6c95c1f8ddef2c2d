/**
 * Test and benchmark harness for src/delivery: one QKD link with two delivery nodes (Alice =
 * source, Bob = destination) and two reference KMSs over real sockets with real mutual TLS 1.3,
 * plus ETSI 014 SAE clients. Everything listens on 127.0.0.1 with OS-assigned ports and lives in
 * its own temp directory, so test files can run in parallel.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { JsonClient, type ClientResponse, type Req } from '../delivery/http.ts';
import { startDeliveryNode, type DeliveryNode, type DeliveryNodeOptions } from '../delivery/node.ts';
import { startKms, type Kms, type KmsOptions } from '../delivery/kms.ts';
import { makePki, type Pki } from './pki.ts';
import { testDatabase } from './postgres.ts';

export const IDS = ['nodeA', 'nodeB', 'kmsA', 'kmsB', 'saeA', 'saeB', 'saeC', 'saeStranger'];

export interface Link {
  dir: string;
  pki: Pki;
  /** A second, untrusted CA with an identity named like a trusted one ('kmsA'). */
  rogue: Pki;
  nodeA: DeliveryNode;
  nodeB: DeliveryNode;
  kmsA: Kms;
  kmsB: Kms;
  nodeOpts: { A: DeliveryNodeOptions; B: DeliveryNodeOptions };
  kmsOpts: { A: KmsOptions; B: KmsOptions };
  /** An ETSI 014 client with `sae`'s certificate, talking to `kms`. */
  sae(sae: string, kms: Kms, tlsOf?: Pki): Sae;
  restartKms(side: 'A' | 'B', downMs?: number): Promise<Kms>;
  restartNode(side: 'A' | 'B'): Promise<DeliveryNode>;
  close(): Promise<void>;
}

export class Sae {
  constructor(private readonly c: JsonClient) {}
  req(method: string, path: string, body?: unknown): Promise<ClientResponse> {
    return this.c.request(method, path, body);
  }
  close(): void {
    this.c.close();
  }
}

export interface LinkOptions {
  node?: Partial<DeliveryNodeOptions>;
  kms?: Partial<KmsOptions>;
  /** Per side, applied after `node` / `kms`. */
  nodeA?: Partial<DeliveryNodeOptions>;
  nodeB?: Partial<DeliveryNodeOptions>;
  kmsA?: Partial<KmsOptions>;
  kmsB?: Partial<KmsOptions>;
  /** Do not open a stream (tests that drive open-connect themselves). */
  noStream?: boolean;
}

/** One PKI per process (each tap test file is a process): certificates cost ~0.1 s each to make. */
let shared: { dir: string; pki: Pki; rogue: Pki } | undefined;
function sharedPki() {
  if (!shared) {
    const dir = mkdtempSync(join(tmpdir(), 'qkd-delivery-pki-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    shared = { dir, pki: makePki(join(dir, 'pki'), IDS), rogue: makePki(join(dir, 'rogue'), ['kmsA', 'nodeA', 'saeA'], 'rogue-ca') };
  }
  return shared;
}

export async function startLink(o: LinkOptions = {}): Promise<Link & { keyStreamId: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-delivery-'));
  const { pki, rogue } = sharedPki();
  const spoolKey = randomBytes(32);
  const nodeOpts = {
    A: { role: 'source', nodeId: 'nodeA', tls: pki.tls('nodeA'), kms: { url: 'https://127.0.0.1:1', id: 'kmsA' },
      spoolDir: join(dir, 'spoolA'), spoolKey, retry: { baseMs: 20, maxMs: 200 }, requestTimeoutMs: 10_000,
      ...o.node, ...o.nodeA } as DeliveryNodeOptions,
    B: { role: 'destination', nodeId: 'nodeB', tls: pki.tls('nodeB'), kms: { url: 'https://127.0.0.1:1', id: 'kmsB' },
      spoolDir: join(dir, 'spoolB'), spoolKey, retry: { baseMs: 20, maxMs: 200 }, requestTimeoutMs: 10_000,
      ...o.node, ...o.nodeB } as DeliveryNodeOptions,
  };
  const nodes: Record<'A' | 'B', DeliveryNode | undefined> = { A: undefined, B: undefined };
  nodeOpts.A.peer = { nodeId: 'nodeB', streamOpened: (id) => !!nodes.B?.hasStream(id) };
  nodeOpts.B.peer = { nodeId: 'nodeA', streamOpened: (id) => !!nodes.A?.hasStream(id) };
  nodes.A = await startDeliveryNode(nodeOpts.A);
  nodes.B = await startDeliveryNode(nodeOpts.B);
  const wrapKey = randomBytes(32);
  // Under backendTap's PostgreSQL pass, each KMS gets a fresh database (undefined: SQLite dbPath).
  const database = { A: await testDatabase('kmsa'), B: await testDatabase('kmsb') };
  const kmsOpts = {
    A: { id: 'kmsA', role: 'source', tls: pki.tls('kmsA'), dbPath: join(dir, 'kmsA.db'), database: database.A, wrapKey,
      node: { url: nodes.A.url, id: 'nodeA' }, peerNodeId: 'nodeB', peer: { url: 'https://127.0.0.1:1', id: 'kmsB' },
      saes: { local: ['saeA', 'saeStranger'], remote: ['saeB', 'saeC'] }, ...o.kms, ...o.kmsA } as KmsOptions,
    B: { id: 'kmsB', role: 'destination', tls: pki.tls('kmsB'), dbPath: join(dir, 'kmsB.db'), database: database.B, wrapKey,
      node: { url: nodes.B.url, id: 'nodeB' }, peerNodeId: 'nodeA', peer: { url: 'https://127.0.0.1:1', id: 'kmsA' },
      saes: { local: ['saeB', 'saeC'], remote: ['saeA', 'saeStranger'] }, ...o.kms, ...o.kmsB } as KmsOptions,
  };
  let kmsA = await startKms(kmsOpts.A);
  let kmsB = await startKms(kmsOpts.B);
  kmsA.setPeerUrl(kmsB.url);
  kmsB.setPeerUrl(kmsA.url);
  nodes.A.setKmsUrl(kmsA.url);
  nodes.B.setKmsUrl(kmsB.url);
  const saes: Sae[] = [];
  const link: Link & { keyStreamId: string } = {
    dir, pki, rogue, nodeOpts, kmsOpts, keyStreamId: '',
    get nodeA() { return nodes.A!; },
    get nodeB() { return nodes.B!; },
    get kmsA() { return kmsA; },
    get kmsB() { return kmsB; },
    sae(sae, kms, tlsOf = pki) {
      const s = new Sae(new JsonClient({ url: kms.url, id: kms.id }, { tls: tlsOf.tls(sae) }));
      saes.push(s);
      return s;
    },
    async restartKms(side, downMs = 0) {
      const old = side === 'A' ? kmsA : kmsB;
      const port = Number(new URL(old.url).port);
      await old.close();
      if (downMs) await new Promise((r) => setTimeout(r, downMs));
      const k = await startKms({ ...kmsOpts[side], listen: { port } });
      k.setPeerUrl((side === 'A' ? kmsB : kmsA).url);
      k.setNodeUrl(nodes[side]!.url);
      if (side === 'A') {
        kmsA = k;
        kmsB.setPeerUrl(k.url);
      } else {
        kmsB = k;
        kmsA.setPeerUrl(k.url);
      }
      return k;
    },
    async restartNode(side) {
      const old = nodes[side]!;
      const port = Number(new URL(old.url).port);
      await old.close();
      const n = await startDeliveryNode({ ...nodeOpts[side], listen: { port },
        kms: { url: (side === 'A' ? kmsA : kmsB).url, id: side === 'A' ? 'kmsA' : 'kmsB' } });
      nodes[side] = n;
      return n;
    },
    async close() {
      for (const s of saes) s.close();
      await Promise.allSettled([kmsA.close(), kmsB.close()]);
      await Promise.allSettled([nodes.A!.close(), nodes.B!.close()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  if (!o.noStream) link.keyStreamId = await kmsA.openStream();
  return link;
}

/** Resolves once `cond()` holds, polling every 10 ms; rejects after `timeoutMs`. */
export async function until(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * A TLS-terminating proxy standing where the KMS is: it presents `serverTls` (the KMS identity) to
 * the node, forwards each request to `targetUrl` with `clientTls` (the node identity), and for the
 * requests `drop(n)` picks (n counts from 0) destroys the node's connection after the KMS answered,
 * so the KMS did its work but the node never sees the answer ("a lost 201").
 */
export async function startLossyProxy(o: { targetUrl: string; targetId: string; serverTls: { ca: string; cert: string;
  key: string }; clientTls: { ca: string; cert: string; key: string }; drop: (n: number, req: Req) => boolean;
  /** Requests answered 503 by the proxy itself, never forwarded (the KMS never sees them). */
  failBefore?: (n: number, req: Req) => boolean;
  /** Requests answered 404 by the proxy itself (a path the KMS does not serve). */
  notFound?: (n: number, req: Req) => boolean }) {
  const { startServer } = await import('../delivery/http.ts');
  const client = new JsonClient({ url: o.targetUrl, id: o.targetId }, { tls: o.clientTls });
  let n = 0;
  let dropped = 0;
  /** Every request's path and how many chunks it carried (a batched push's items, else 1). */
  const seen: { path: string; items: number }[] = [];
  const srv = await startServer({ tls: o.serverTls, name: 'lossy proxy' }, async (req) => {
    const k = n++;
    const items = (req.body as { items?: unknown[] } | undefined)?.items;
    seen.push({ path: req.path, items: Array.isArray(items) ? items.length : 1 });
    if (o.notFound?.(k, req)) return { status: 404, body: { message: `no route ${req.method} ${req.path}` } };
    if (o.failBefore?.(k, req)) return { status: 503, body: { status: 0, message: 'proxy: unavailable' } };
    const r = await client.request(req.method, req.path, req.body);
    if (o.drop(k, req)) {
      dropped++;
      return { status: 0, abort: true };
    }
    return { status: r.status, body: r.body ?? undefined };
  }, () => undefined);
  return {
    url: srv.url,
    seen,
    get dropped() { return dropped; },
    async close() {
      client.close();
      await srv.close();
    },
  };
}
