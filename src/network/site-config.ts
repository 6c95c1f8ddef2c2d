/**
 * The configuration file of one site KMS (`qkd _site --config FILE`), as the network orchestrator
 * writes it (paths absolute). Secrets are files: the TLS keys (0600 in the PKI folders) and the
 * 32-byte wrapping key of the relayed-key store (0600).
 *
 * {
 *   "site": "A", "topology": {"sites": [...], "links": [...], "saes": {...}},
 *   "listen": {"host": "127.0.0.1", "port": 8500},
 *   "tls": {"ca": "pki/ca.pem", "cert": "pki/siteA.pem", "key": "pki/siteA.key"},
 *   "links": [{"peer": "B", "kms": {"url": "https://127.0.0.1:8443", "id": "kmsA"},
 *              "tls": {"ca": "links/A-B/pki/ca.pem", "cert": ".../saeA.pem", "key": ".../saeA.key"},
 *              "mySae": "saeA", "peerSae": "saeB"}],
 *   "peers": {"B": "https://127.0.0.1:8501"},
 *   "dbPath": "siteA.db", "wrapKeyFile": "secrets/siteA.wrap", "ttlS": 3600, "linkDownMs": 5000
 * }
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.ts';
import type { RelaySiteOptions } from './relay.ts';
import { parseTopology } from './topology.ts';

type PemPaths = { ca: string; cert: string; key: string };

function pem(p: PemPaths, what: string) {
  try {
    return { ca: readFileSync(p.ca), cert: readFileSync(p.cert), key: readFileSync(p.key) };
  } catch (err) {
    throw new ConfigError('SITE_CONFIG', `${what}: cannot read TLS material (${(err as Error).message})`, { cause: err });
  }
}

/** Reads a site KMS configuration into RelaySiteOptions (the wrapping key read from its file). */
export function loadSiteConfig(file: string): RelaySiteOptions {
  let c: Record<string, any>;
  try {
    c = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError('SITE_CONFIG', `cannot read the site KMS configuration ${file}: ${(err as Error).message}`, { cause: err });
  }
  for (const k of ['site', 'topology', 'tls', 'links', 'peers', 'dbPath', 'wrapKeyFile']) {
    if (c[k] === undefined) throw new ConfigError('SITE_CONFIG', `${file}: field "${k}" is missing`);
  }
  const wrapKey = readFileSync(c.wrapKeyFile);
  if (wrapKey.length !== 32) throw new ConfigError('SITE_CONFIG', `${file}: wrapKeyFile must hold 32 bytes, has ${wrapKey.length}`);
  return {
    site: c.site, topology: parseTopology(c.topology, `${file} (topology)`), listen: c.listen, tls: pem(c.tls, `site ${c.site}`),
    links: (c.links as { peer: string; kms: { url: string; id: string }; tls: PemPaths; mySae: string; peerSae: string }[])
      .map((l) => ({ ...l, tls: pem(l.tls, `link to ${l.peer}`) })),
    peers: c.peers, dbPath: c.dbPath, wrapKey, ttlS: c.ttlS, linkDownMs: c.linkDownMs, pollMs: c.pollMs,
  };
}
