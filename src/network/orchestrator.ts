/**
 * `qkd run --emulated --topology FILE`: a trusted-node network on this machine, as processes:
 *
 *   orchestrator (this process): network PKI, site KMS configurations, manifest
 *   ├─ per link X-Y: one emulated link exactly as `qkd run --emulated` starts it
 *   │    (src/node/supervisor.ts EmulatedRun in <state>/links/X-Y: node-alice (site X),
 *   │     node-bob (site Y), kms-alice, kms-bob: the link's two reference KMSs)
 *   └─ per site S: `qkd _site` — the site KMS (src/network/relay.ts) serving S's SAEs over
 *        ETSI 014, an SAE of each of its links' KMSs, relaying to its neighbours' site KMSs
 *
 * Two PKIs: each link keeps its own (nodes, link KMSs, and the two site KMSs as that link's
 * SAEs `saeA`/`saeB`), and the network has one (<state>/pki: site KMSs `site<S>`, the SAEs of the
 * topology) which applications use. A link's crashed node or KMS is restarted by its link's
 * supervisor, a crashed site KMS by this orchestrator; a link that stops for good (a crash loop, or
 * its start failed later) is reported and left stopped, and the site KMSs route around it.
 */
import { chmodSync, createWriteStream, existsSync, mkdirSync, rmSync, writeFileSync, type WriteStream } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { makePki, type Pki } from '../delivery/pki.ts';
import { Child, type ChildMessage } from '../node/children.ts';
import { RestartPolicy } from '../node/restart-policy.ts';
import { EmulatedRun, freePort, lockStateDir, type Manifest, type RunOptions } from '../node/supervisor.ts';
import { siteIdentity, type Topology } from './topology.ts';

export interface NetworkManifest {
  sites: Record<string, { kms: string; etsi014: string; saes: Record<string, { cert: string; key: string }> }>;
  /** CA of the network PKI (site KMSs and SAEs). */
  ca: string;
  links: Record<string, { stateDir: string; sites: [string, string]; pids: Record<string, number | undefined>; link: Manifest }>;
  stateDir: string;
  logs: string;
}

export class NetworkRun {
  readonly links = new Map<string, EmulatedRun>();
  readonly sites = new Map<string, Child>();
  private readonly logs = new Map<string, WriteStream>();
  private stopReason = '';
  private stopResolve!: (r: string) => void;
  readonly stopped = new Promise<string>((r) => (this.stopResolve = r));
  /** Links whose processes stopped while the network ran, with the reason. */
  readonly linksDown = new Map<string, string>();
  manifest!: NetworkManifest;
  pki!: Pki;
  private lockFile?: string;
  private readonly restartPolicy = new RestartPolicy();

  /** A link's node reported a block (the CLI prints one line per block). */
  onBlock?: (link: string, m: ChildMessage) => void;

  constructor(readonly topology: Topology, readonly opts: RunOptions) {}

  requestStop(reason: string): void {
    if (!this.stopReason) {
      this.stopReason = reason;
      this.stopResolve(reason);
    }
  }

  get reason(): string {
    return this.stopReason;
  }

  async start(): Promise<NetworkManifest> {
    const o = this.opts;
    const t = this.topology;
    const dir = resolve(o.stateDir);
    mkdirSync(join(dir, 'secrets'), { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    this.lockFile = lockStateDir(dir);
    o.say(`network state directory ${dir}: ${t.sites.length} sites, ${t.links.length} links (${t.links.map((l) => l.id).join(', ')})`);
    const saes = t.sites.flatMap((s) => t.saes[s]);
    this.pki = makePki(join(dir, 'pki'), [...t.sites.map(siteIdentity), ...saes], 'qkd-network-ca', { discardCaKey: true });
    // Links start one after another: each waits for its nodes, and a 2-core host starting six
    // emulated labs at once only makes every start slower.
    const linkManifests: NetworkManifest['links'] = {};
    for (const [i, l] of t.links.entries()) {
      const { runner, m } = await this.startLink(l.id, { ...o, stateDir: join(dir, 'links', l.id), distanceKm: l.distanceKm ?? o.distanceKm,
        seed: o.seed + BigInt(i), externalKms: undefined, manifestPath: undefined, say: (line) => o.say(`[link ${l.id}] ${line}`) });
      void runner.stopped.then(async (why) => {
        if (this.stopReason) return;
        this.linksDown.set(l.id, why);
        o.say(`link ${l.id} stopped (${why}): the site KMSs route around it; its remaining processes are stopped`);
        await runner.stop().catch(() => undefined);
      });
      linkManifests[l.id] = { stateDir: join(dir, 'links', l.id), sites: [l.a, l.b], link: m,
        pids: Object.fromEntries([...runner.children].map(([n, c]) => [n, c.process.pid])) };
    }
    const ports = Object.fromEntries(await Promise.all(t.sites.map(async (s) => [s, await freePort()] as const)));
    const url = (s: string) => `https://127.0.0.1:${ports[s]}`;
    for (const s of t.sites) {
      const wrap = join(dir, 'secrets', `site${s}.wrap`);
      if (!existsSync(wrap)) writeFileSync(wrap, randomBytes(32), { mode: 0o600 });
      const id = this.pki.ids[siteIdentity(s)];
      const links = t.links.filter((l) => l.a === s || l.b === s).map((l) => {
        const side = l.a === s ? 'A' : 'B';
        const other = side === 'A' ? 'B' : 'A';
        const lp = join(dir, 'links', l.id, 'pki');
        const m = linkManifests[l.id].link;
        return { peer: side === 'A' ? l.b : l.a, kms: { url: new URL((side === 'A' ? m.kms.alice : m.kms.bob)!.etsi014).origin, id: `kms${side}` },
          tls: { ca: join(lp, 'ca.pem'), cert: join(lp, `sae${side}.pem`), key: join(lp, `sae${side}.key`) },
          mySae: `sae${side}`, peerSae: `sae${other}` };
      });
      const cfg = { site: s, topology: topologyDocument(t), listen: { host: '127.0.0.1', port: ports[s] },
        tls: { ca: this.pki.caPath, cert: id.certPath, key: id.keyPath }, links,
        peers: Object.fromEntries(links.map((l) => [l.peer, url(l.peer)])), dbPath: join(dir, `site${s}.db`), wrapKeyFile: wrap };
      writeFileSync(join(dir, `site-${s}.json`), JSON.stringify(cfg, null, 2), { mode: 0o600 });
    }
    const children = t.sites.map((s) => this.spawnSite(s, join(dir, `site-${s}.json`)));
    await Promise.all(children.map((c) => c.waitFor('ready', 60_000)));
    this.manifest = {
      sites: Object.fromEntries(t.sites.map((s) => [s, { kms: url(s), etsi014: `${url(s)}/api/v1/keys`,
        saes: Object.fromEntries(t.saes[s].map((a) => [a, { cert: this.pki.ids[a].certPath, key: this.pki.ids[a].keyPath }])) }])),
      ca: this.pki.caPath,
      links: linkManifests,
      stateDir: dir,
      logs: join(dir, 'logs'),
    };
    return this.manifest;
  }

  /**
   * Starts one link; a start that fails (on a loaded host a node may miss its 60 s to report
   * ready) is stopped and tried again on the same state directory, at most three times.
   */
  private async startLink(id: string, ro: RunOptions): Promise<{ runner: EmulatedRun; m: Manifest }> {
    for (let attempt = 1; ; attempt++) {
      const runner = new EmulatedRun(ro);
      this.links.set(id, runner);
      runner.onBlock = (_n, msg) => this.onBlock?.(id, msg);
      try {
        return { runner, m: await runner.start() };
      } catch (err) {
        runner.requestStop('start failed');
        await runner.stop().catch(() => undefined);
        if (attempt >= 3 || this.stopReason) throw err;
        ro.say(`start failed (${(err as Error).message}); trying again (${attempt + 1} of 3)`);
      }
    }
  }

  private spawnSite(site: string, config: string): Child {
    const name = `site-${site}`;
    const logDir = join(this.opts.stateDir, 'logs');
    mkdirSync(logDir, { recursive: true });
    let log = this.logs.get(name);
    if (!log) this.logs.set(name, (log = createWriteStream(join(logDir, `${name}.log`), { flags: 'a' })));
    const c = new Child(name, ['_site', '--config', config], (_n, line) => log.write(line + '\n'));
    // A stop message to a child that has just died fails with EPIPE; its exit is handled below.
    c.process.on('error', (err) => this.opts.say(`${name}: ${err.message}`));
    void c.exited.then((e) => {
      if (this.stopReason || this.sites.get(site) !== c) return;
      this.opts.say(`${name} exited unexpectedly (code ${e.code}, signal ${e.signal}); see ${join(logDir, `${name}.log`)}`);
      // A site KMS keeps its relayed keys in its durable database and listens on the port its
      // configuration names: restart it on the same configuration (backoff, crash-loop limit as
      // for a link's processes); its SAEs and neighbours retry meanwhile.
      const d = this.restartPolicy.onCrash(name, Date.now());
      if (!d.restart) {
        this.opts.say(`${name} crashed ${d.crashes} times within ${d.windowMs / 1000} s: giving up (see its log)`);
        return this.requestStop(`${name} exited`);
      }
      this.opts.say(`alarm raised: process-restarted: ${name} exited unexpectedly; restart ${d.attempt} of ${d.ofMax} in ${d.delayMs} ms`);
      setTimeout(() => {
        if (this.stopReason) return;
        this.opts.say(`restarting ${name}`);
        const again = this.spawnSite(site, config);
        again.waitFor('ready', 60_000).then(() => this.opts.say(`${name} ready again`), (err: Error) => this.opts.say(`${name} did not come back: ${err.message}`));
      }, d.delayMs);
    });
    this.sites.set(site, c);
    return c;
  }

  /** Stops the site KMSs, then every link (nodes finish their block, then the link KMSs). */
  async stop(): Promise<{ links: Record<string, string> }> {
    this.requestStop(this.stopReason || 'stop');
    await Promise.all([...this.sites.values()].map((c) => c.stop()));
    await Promise.all([...this.links.entries()].map(async ([id, r]) => {
      if (!this.linksDown.has(id)) {
        r.requestStop('network stopping');
        await r.stop().catch(() => undefined);
      }
    }));
    for (const l of this.logs.values()) l.end();
    if (this.lockFile) rmSync(this.lockFile, { force: true });
    return { links: Object.fromEntries([...this.links.keys()].map((id) => [id, this.linksDown.get(id) ?? 'stopped with the network'])) };
  }
}

/** The topology as a file would hold it (what parseTopology reads back). */
export function topologyDocument(t: Topology): Record<string, unknown> {
  return { sites: t.sites, links: t.links.map((l) => ({ between: [l.a, l.b], ...(l.distanceKm !== undefined ? { distanceKm: l.distanceKm } : {}) })),
    saes: t.saes };
}

/** Shell lines a user runs to fetch a relayed key at `a` (enc_keys) and the same key at `c` (dec_keys). */
export function curlLines(m: NetworkManifest, a: string, c: string): string[] {
  const [saeA, fa] = Object.entries(m.sites[a].saes)[0];
  const [saeC, fc] = Object.entries(m.sites[c].saes)[0];
  return [
    `curl -s --cacert ${m.ca} --cert ${fa.cert} --key ${fa.key} ${m.sites[a].etsi014}/${saeC}/enc_keys`,
    `curl -s --cacert ${m.ca} --cert ${fc.cert} --key ${fc.key} "${m.sites[c].etsi014}/${saeA}/dec_keys?key_ID=KEY_ID"`,
  ];
}
