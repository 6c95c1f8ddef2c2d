/**
 * An in-process trusted-node network for fast tests and the relay benchmark: one delivery link
 * (testkit/delivery.ts startLink: two nodes, two reference KMSs, real mutual TLS over loopback)
 * per topology link, filled with random key material pushed by both nodes, and one RelaySite per
 * site. The process tests (test/network/line|triangle) run the same code as separate processes
 * with emulated QKD links; this one skips the optics so a relay can be measured on its own.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonClient } from '../delivery/http.ts';
import { makePki, type Pki } from '../delivery/pki.ts';
import { freePort } from '../node/supervisor.ts';
import { RelaySite } from '../network/relay.ts';
import { parseTopology, siteIdentity, type Topology } from '../network/topology.ts';
import { startLink, until, type Link } from './delivery.ts';

export interface RelayNet {
  topology: Topology;
  links: Map<string, Link>;
  sites: Map<string, RelaySite>;
  pki: Pki;
  /** An SAE of the network talking to its site KMS. */
  sae(site: string, sae: string): JsonClient;
  /**
   * Pushes `n` more chunks (32 bytes) into both KMSs of a link and waits until both stored them;
   * `provenance` is what the nodes push with them (e.g. `{epsilon: 1e-10}`: the chunks' ε).
   */
  fill(link: string, n: number, provenance?: Record<string, unknown>): Promise<void>;
  close(): Promise<void>;
}

export interface RelayNetOptions {
  /** Chunks pushed into each link at the start (default 64). */
  keysPerLink?: number;
  linkDownMs?: number;
  /** Provenance of those chunks (default none: keys without ε). */
  provenance?: Record<string, unknown>;
  /**
   * The link KMSs label the keys they hand the site KMSs with their ε (key_extension qkd_epsilon):
   * hybrid policy when-short for the site KMSs' pair, the only way the reference KMS labels keys.
   */
  labelLinkKeys?: boolean;
}

export async function startRelayNet(doc: unknown, o: RelayNetOptions = {}): Promise<RelayNet> {
  const t = parseTopology(doc);
  const dir = mkdtempSync(join(tmpdir(), 'qkd-relaynet-'));
  const pki = makePki(join(dir, 'pki'), [...t.sites.map(siteIdentity), ...t.sites.flatMap((s) => t.saes[s])]);
  const links = new Map<string, Link>();
  // The per-SAE rate limit is policy, not the relay path: off, as in the delivery bench.
  const hybrid = o.labelLinkKeys ? { 'saeA->saeB': 'when-short', 'saeB->saeA': 'when-short', default: 'never' } as const : undefined;
  for (const l of t.links) links.set(l.id, await startLink({ kms: { rateLimit: { keysPerSecond: 0, burst: 0 }, hybrid } }));
  const ports = Object.fromEntries(await Promise.all(t.sites.map(async (s) => [s, await freePort()] as const)));
  const sites = new Map<string, RelaySite>();
  for (const s of t.sites) {
    const mine = t.links.filter((l) => l.a === s || l.b === s).map((l) => {
      const L = links.get(l.id)!;
      const side = l.a === s ? 'A' : 'B';
      const kms = side === 'A' ? L.kmsA : L.kmsB;
      return { peer: side === 'A' ? l.b : l.a, kms: { url: kms.url, id: kms.id }, tls: L.pki.tls(`sae${side}`),
        mySae: `sae${side}`, peerSae: side === 'A' ? 'saeB' : 'saeA' };
    });
    const site = new RelaySite({ site: s, topology: t, listen: { port: ports[s] }, tls: pki.tls(siteIdentity(s)), links: mine,
      peers: Object.fromEntries(mine.map((l) => [l.peer, `https://127.0.0.1:${ports[l.peer]}`])), dbPath: join(dir, `site${s}.db`),
      wrapKey: randomBytes(32), linkDownMs: o.linkDownMs, pollMs: 200 });
    await site.start();
    sites.set(s, site);
  }
  const net: RelayNet = {
    topology: t, links, sites, pki,
    sae(site, sae) {
      return new JsonClient({ url: sites.get(site)!.url, id: siteIdentity(site) },
        { tls: { ca: readFileSync(pki.caPath), cert: pki.ids[sae].cert, key: pki.ids[sae].key } });
    },
    async fill(link, n, provenance = {}) {
      const L = links.get(link)!;
      const before = { a: L.kmsA.metrics().acked, b: L.kmsB.metrics().acked };
      const bytes = randomBytes(32 * n);
      await Promise.all([L.nodeA.offer(bytes, provenance), L.nodeB.offer(bytes, provenance)]);
      await until(() => L.kmsA.metrics().acked >= before.a + n && L.kmsB.metrics().acked >= before.b + n, 120_000, `keys on ${link}`);
      await Promise.all([...sites.values()].map((x) => x.pollLinks()));
    },
    async close() {
      await Promise.allSettled([...sites.values()].map((x) => x.close()));
      await Promise.allSettled([...links.values()].map((l) => l.close()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  for (const l of t.links) await net.fill(l.id, o.keysPerLink ?? 64, o.provenance);
  return net;
}
