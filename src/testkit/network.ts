/**
 * Helpers for the trusted-node network tests (test/network/*): start `qkd run --emulated
 * --topology` as a process, read its manifest, and act as the SAEs and as the site KMSs'
 * identities on a link (to check which link keys are gone).
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonClient, type ClientResponse } from '../delivery/http.ts';
import type { NetworkManifest } from '../network/orchestrator.ts';
import { qkdProcess, until, type QkdProcess } from './run.ts';

export interface NetworkProcess extends QkdProcess {
  dir: string;
  manifest: () => Promise<NetworkManifest>;
}

/** Starts `qkd run --emulated --topology FILE` with fast test settings in a fresh directory. */
export function startNetwork(topologyFile: string, extra: string[] = []): NetworkProcess {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-net-test-'));
  const mf = join(dir, 'manifest.json');
  const p = qkdProcess(['run', '--emulated', '--topology', topologyFile, '--json', '--state-dir', join(dir, 'state'), '--manifest', mf,
    '--distance-km', '25', '--seed', '777', '--speed', '1000', '--block-detections', '4000000', '--duration', '1500', ...extra]);
  return { ...p, dir, manifest: () => until('the network manifest', () => (existsSync(mf) ? JSON.parse(readFileSync(mf, 'utf8')) : undefined), 400_000) };
}

/** An SAE of the network talking to its site KMS (mutual TLS, the site KMS must present site<S>). */
export function saeClient(m: NetworkManifest, site: string, sae: string): JsonClient {
  const f = m.sites[site].saes[sae];
  return new JsonClient({ url: m.sites[site].kms, id: `site${site}` },
    { tls: { ca: readFileSync(m.ca), cert: readFileSync(f.cert), key: readFileSync(f.key) } });
}

/** The site KMS of `site`'s own identity on link `link` (its SAE there), towards its link KMS. */
export function linkSaeClient(m: NetworkManifest, link: string, site: string): { client: JsonClient; peerSae: string } {
  const l = m.links[link];
  const side = l.sites[0] === site ? 'A' : 'B';
  const pki = join(l.stateDir, 'pki');
  const kms = side === 'A' ? l.link.kms.alice! : l.link.kms.bob!;
  const client = new JsonClient({ url: new URL(kms.etsi014).origin, id: `kms${side}` },
    { tls: { ca: readFileSync(join(pki, 'ca.pem')), cert: readFileSync(join(pki, `sae${side}.pem`)), key: readFileSync(join(pki, `sae${side}.key`)) } });
  return { client, peerSae: side === 'A' ? 'saeB' : 'saeA' };
}

/** enc_keys at `site` for `slave`, retried while the answer is 503 (links still producing). */
export async function relayedKeys(c: JsonClient, slave: string, number: number, timeoutMs: number): Promise<ClientResponse> {
  return until(`relayed keys for ${slave}`, async () => {
    const r = await c.request('POST', `/api/v1/keys/${slave}/enc_keys`, { number }).catch(() => undefined);
    return r?.status === 200 ? r : undefined;
  }, timeoutMs);
}

/** Median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
