/**
 * `qkd run --emulated`: one emulated QKD link on this machine, as separate processes exactly as
 * on two hosts:
 *
 *   supervisor (this process): dashboard, /metrics, manifest, final summary
 *   ├─ node alice  (qkd _node): Alice's post-processing (answers), ETSI 004 server + push client
 *   ├─ node bob    (qkd _node): emulated lab + tagger + ZeroMQ stream + sync + post-processing (drives)
 *   ├─ kms alice   (qkd kms):   reference KMS, source side (opens the key stream)
 *   └─ kms bob     (qkd kms):   reference KMS, destination side
 *
 * Alice and Bob talk over the authenticated classical channel (ZeroMQ tcp on loopback); each node
 * pushes to its KMS over mutual TLS; the KMSs confirm to each other and serve SAEs over ETSI 014.
 * State that must outlive a run (PKI, pre-shared secret, spools, KMS databases) lives in the
 * state directory (default ./run); secrets are files with mode 0600.
 */
import { createServer } from 'node:net';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, writeFileSync, readFileSync, rmSync, createWriteStream, type WriteStream } from 'node:fs';
import { join, resolve } from 'node:path';
import { QkdError } from '../errors.ts';
import { makePki, type Pki } from '../delivery/pki.ts';
import { Child, type ChildMessage } from './children.ts';
import type { NodeRunConfig } from './config.ts';
import { provisionEmulatedChannel, type EmulatedChannel } from './channel-credentials.ts';
import type { LinkSummary } from './summary.ts';
import type { FiniteKeyAnalysis } from '../core/estimate.ts';
import { startSourceLine, type SourceLine } from './source-tty.ts';
import { RestartPolicy } from './restart-policy.ts';

export interface RunOptions {
  stateDir: string;
  preset: string;
  distanceKm: number;
  eveFraction: number;
  seed: bigint;
  durationS?: number;
  blockDetections: number;
  frameBits: number;
  epsSec: number;
  /** Finite-key analysis of every block (default 'chernoff2020'; docs/postprocessing.md §2). */
  finiteKey?: FiniteKeyAnalysis;
  epsCor: number;
  qberAbort: number;
  speed: number;
  dashboardPort: number;
  manifestPath?: string;
  /** Where calibration records are read from (default ./calibration). */
  calibrationDir: string;
  /** Alarm thresholds (JSON file, docs/operations.md); defaults otherwise. */
  alarmsPath?: string;
  externalKms?: { alice: string; bob: string };
  insecureHttp: boolean;
  /** Progress lines for the operator (stderr in the CLI). */
  say(line: string): void;
}

export interface Manifest {
  nodes: { alice: { id: string; etsi004: string }; bob: { id: string; etsi004: string } };
  kms: { alice: { etsi014: string } | null; bob: { etsi014: string } | null };
  sae: { alice: { id: string; cert: string; key: string }; bob: { id: string; cert: string; key: string }; ca: string };
  dashboard: string;
  metrics: string;
  stateDir: string;
  logs: string;
}

export interface RunResult {
  manifest: Manifest;
  summary: LinkSummary | null;
  delivery: { alice: Record<string, unknown> | null; bob: Record<string, unknown> | null };
  kms: { alice: Record<string, unknown> | null; bob: Record<string, unknown> | null };
  stopReason: string;
}

/** A free TCP port on loopback (closed again before use; the small race is acceptable here). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolvePort(port));
    });
  });
}

/**
 * Takes the state directory for this run: two runs on one directory would share spools, KMS
 * databases and the channel's pad pool (a reused pad breaks authentication). A lock left by a
 * process that no longer exists is taken over.
 */
export function lockStateDir(dir: string): string {
  const file = join(dir, 'run.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx' });
      return file;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number(readFileSync(file, 'utf8'));
      if (Number.isInteger(pid) && pid > 0 && pidAlive(pid)) {
        throw new QkdError('RUN_STATE_IN_USE', `another qkd run (pid ${pid}) is using the state directory ${dir}; ` +
          'stop it first, or give this run its own --state-dir');
      }
      rmSync(file, { force: true });
    }
  }
  throw new QkdError('RUN_STATE_IN_USE', `cannot take the state directory ${dir} (${file})`);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A 32-byte secret file (mode 0600), created once and reused by later runs. */
function secretFile(path: string, bytes = 32): string {
  if (!existsSync(path)) writeFileSync(path, randomBytes(bytes), { mode: 0o600 });
  return path;
}

/**
 * Node `nodeId`'s Ed25519 commitment key pair, created once in the state directory and reused:
 * the private key (PKCS#8 PEM, 0600) stays with the node, the public key goes to both KMSs.
 */
export function commitmentKeyFiles(dir: string, nodeId: string): { key: string; pub: string } {
  const key = join(dir, 'secrets', `${nodeId}.commit.key`);
  const pub = join(dir, 'secrets', `${nodeId}.commit.pub`);
  if (!existsSync(key) || !existsSync(pub)) {
    mkdirSync(join(dir, 'secrets'), { recursive: true, mode: 0o700 });
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    writeFileSync(pub, publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o600 });
    writeFileSync(key, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  }
  return { key, pub };
}

/**
 * Children the supervisor restarts after a crash: every one keeps what must survive on disk (a
 * KMS its database and streams; a node its sealed spool, channel state and block ledger), so a
 * restart resumes rather than starts over. How often: restart-policy.ts.
 */
const RESTARTABLE = /^(kms|node)-/;

export class EmulatedRun {
  readonly children = new Map<string, Child>();
  private readonly restartPolicy = new RestartPolicy();
  /** Restarts per child so far (the run's summary and the chaos test read them). */
  readonly restartCounts = new Map<string, number>();
  private readonly logs = new Map<string, WriteStream>();
  private lastStatus = new Map<string, ChildMessage>();
  private stopReason = '';
  private stopResolve!: (r: string) => void;
  readonly stopped = new Promise<string>((r) => (this.stopResolve = r));
  manifest!: Manifest;
  pki!: Pki;
  private lockFile?: string;
  private sourceLine?: SourceLine;

  constructor(readonly opts: RunOptions) {}

  /** Latest status message a child sent (for the dashboard and metrics). */
  status(name: string): ChildMessage | undefined {
    return this.lastStatus.get(name);
  }

  requestStop(reason: string): void {
    if (!this.stopReason) {
      this.stopReason = reason;
      this.stopResolve(reason);
    }
  }

  private spawn(name: string, args: string[]): Child {
    const dir = join(this.opts.stateDir, 'logs');
    mkdirSync(dir, { recursive: true });
    let log = this.logs.get(name);
    if (!log) this.logs.set(name, (log = createWriteStream(join(dir, `${name}.log`), { flags: 'a' })));
    const c = new Child(name, args, (_n, line) => log.write(line + '\n'));
    c.onMessage((m) => {
      if (m.type === 'status' || m.type === 'summary') this.lastStatus.set(name, m);
      // Between statuses, a node reports its delivery counters as keys are acknowledged.
      if (m.type === 'delivery') this.lastStatus.set(name, { ...(this.lastStatus.get(name) ?? { type: 'status' }), delivery: m.delivery });
      if (m.type === 'block') this.onBlock?.(name, m);
      if (m.type === 'alarm') this.onAlarm?.(name, m);
    });
    void c.exited.then((e) => {
      if (this.stopReason || this.children.get(name) !== c) return;
      this.opts.say(`${name} exited unexpectedly (code ${e.code}, signal ${e.signal}); see ${join(dir, `${name}.log`)}`);
      if (!RESTARTABLE.test(name)) return this.requestStop(`${name} exited`);
      // A reference KMS keeps its keys in a durable database and its streams on disk; a node
      // its sealed spool, channel state and block ledger (a block in flight is aborted on both
      // sides, a sealed one is settled by the ledger and replayed): restart it, with backoff,
      // while the others spool; give up on a crash loop.
      const d = this.restartPolicy.onCrash(name, Date.now());
      if (!d.restart) {
        const message = `${name} crashed ${d.crashes} times within ${d.windowMs / 1000} s: giving up (see its log)`;
        this.opts.say(message);
        this.onAlarm?.(name, { type: 'alarm', alarm: { kind: 'process-crash-loop', severity: 'critical', subject: name, message } });
        return this.requestStop(`${name} exited`);
      }
      this.restartCounts.set(name, (this.restartCounts.get(name) ?? 0) + 1);
      this.onAlarm?.(name, { type: 'alarm', alarm: { kind: 'process-restarted', severity: 'major', subject: name,
        message: `${name} exited unexpectedly (code ${e.code}, signal ${e.signal}); restart ${d.attempt} of ` +
          `${d.ofMax} in ${d.delayMs} ms; ${name.startsWith('kms-') ? 'keys are spooled meanwhile' : 'its block in flight is aborted on both sides'}` } });
      setTimeout(() => {
        if (this.stopReason) return;
        this.opts.say(`restarting ${name}`);
        this.spawn(name, args);
      }, d.delayMs);
    });
    this.children.set(name, c);
    return c;
  }

  onBlock?: (name: string, m: ChildMessage) => void;
  onAlarm?: (name: string, m: ChildMessage) => void;

  /** Starts the children and waits until every one reported ready. */
  async start(): Promise<Manifest> {
    const o = this.opts;
    const dir = resolve(o.stateDir);
    mkdirSync(join(dir, 'secrets'), { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700); // a state directory made by an older version (or by hand) may be 0755
    this.lockFile = lockStateDir(dir);
    o.say(`state directory ${dir}`);
    // The CA key is removed once the identities exist: the running link cannot mint identities.
    this.pki = makePki(join(dir, 'pki'), ['nodeA', 'nodeB', 'kmsA', 'kmsB', 'saeA', 'saeB'], undefined, { discardCaKey: true });
    // Channel credentials: both CURVE key pairs, and (first run, or a node lost its channel state)
    // a fresh 512 KiB pre-shared secret per node — 16 B hash key, then 128-bit pads (≈ 16 000
    // messages per direction) until the first blocks replenish the pool from generated key. Each
    // node consumes its copy at import; later runs resume from the nodes' channel states.
    const channel = provisionEmulatedChannel(dir, 512 * 1024);
    if (channel.rekeyed) o.say('classical channel: fresh pre-shared secret provisioned for both nodes');
    const spoolKey = secretFile(join(dir, 'secrets', 'spool.key'));
    const [pNodeA, pNodeB, pKmsA, pKmsB, pChan] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
    const scheme = o.externalKms && o.insecureHttp ? 'http' : 'https';
    const kmsUrl = {
      alice: o.externalKms?.alice ?? `https://127.0.0.1:${pKmsA}`,
      bob: o.externalKms?.bob ?? `https://127.0.0.1:${pKmsB}`,
    };
    const sessionId = randomBytes(8).toString('hex');
    // Alice's emulated source sits in Bob's lab behind a serial line her node drives (source-tty.ts).
    this.sourceLine = await startSourceLine(dir);
    const sourceTty = { alice: this.sourceLine.alice, lab: this.sourceLine.lab };
    const nodeCfg = (role: 'alice' | 'bob') => nodeRunConfig(role, {
      dir, opts: o, sourceTty, channel, spoolKeyFile: spoolKey, sessionId, channelPort: pChan, nodePort: { A: pNodeA, B: pNodeB },
      kmsUrl: { A: kmsUrl.alice, B: kmsUrl.bob }, tls: o.insecureHttp ? undefined : { ca: this.pki.caPath, ids: this.pki.ids },
    });
    const kmsCfg = (side: 'A' | 'B') => referenceKmsConfig(side, {
      dir, pki: this.pki, kmsPort: { A: pKmsA, B: pKmsB }, nodeUrl: { A: `https://127.0.0.1:${pNodeA}`, B: `https://127.0.0.1:${pNodeB}` },
    });
    for (const role of ['alice', 'bob'] as const) writeFileSync(join(dir, `node-${role}.json`), JSON.stringify(nodeCfg(role), null, 2));
    for (const side of ['A', 'B'] as const) writeFileSync(join(dir, `kms${side}.json`), JSON.stringify(kmsCfg(side), null, 2));

    // Bob first: his emulated lab serves Alice's source on its line before her node opens it.
    const bob = this.spawn('node-bob', ['_node', '--config', join(dir, 'node-bob.json')]);
    await bob.waitFor('ready', 300_000);
    const alice = this.spawn('node-alice', ['_node', '--config', join(dir, 'node-alice.json')]);
    await alice.waitFor('ready', 300_000);
    if (!o.externalKms) {
      const ka = this.spawn('kms-alice', ['kms', '--config', join(dir, 'kmsA.json')]);
      const kb = this.spawn('kms-bob', ['kms', '--config', join(dir, 'kmsB.json')]);
      void ka;
      void kb;
    }
    this.manifest = {
      nodes: {
        alice: { id: 'nodeA', etsi004: `${scheme}://127.0.0.1:${pNodeA}/api/v1/kms/etsi004` },
        bob: { id: 'nodeB', etsi004: `${scheme}://127.0.0.1:${pNodeB}/api/v1/kms/etsi004` },
      },
      kms: o.externalKms ? { alice: null, bob: null } : {
        alice: { etsi014: `https://127.0.0.1:${pKmsA}/api/v1/keys` },
        bob: { etsi014: `https://127.0.0.1:${pKmsB}/api/v1/keys` },
      },
      sae: {
        alice: { id: 'saeA', cert: this.pki.ids.saeA.certPath, key: this.pki.ids.saeA.keyPath },
        bob: { id: 'saeB', cert: this.pki.ids.saeB.certPath, key: this.pki.ids.saeB.keyPath },
        ca: this.pki.caPath,
      },
      dashboard: '',
      metrics: '',
      stateDir: dir,
      logs: join(dir, 'logs'),
    };
    return this.manifest;
  }

  /**
   * Stops every child cleanly, in order: Bob first (he finishes the block in flight, commits it
   * with Alice, who is still up, and flushes his spool), then Alice (she flushes hers), then the
   * KMSs. A child that does not stop in time is terminated (its spool stays sealed on disk).
   */
  async stop(): Promise<{ node: Record<string, ChildMessage | undefined> }> {
    const summaries: Record<string, ChildMessage | undefined> = {};
    for (const name of ['node-bob', 'node-alice']) {
      const c = this.children.get(name);
      if (!c) continue;
      const got = c.waitFor('summary', 90_000).catch(() => undefined);
      void c.stop(90_000);
      summaries[name] = await got;
      await c.exited;
    }
    await Promise.all([...this.children.values()].map((c) => c.stop()));
    await this.sourceLine?.close();
    for (const l of this.logs.values()) l.end();
    if (this.lockFile) rmSync(this.lockFile, { force: true });
    return { node: summaries };
  }

  get reason(): string {
    return this.stopReason;
  }
}

/** What a link's node configurations are made of (see nodeRunConfig). */
export interface LinkConfigParams {
  dir: string;
  opts: Pick<RunOptions, 'preset' | 'distanceKm' | 'eveFraction' | 'seed' | 'blockDetections' | 'frameBits' | 'epsSec' | 'epsCor' | 'qberAbort' | 'finiteKey' | 'speed' | 'insecureHttp'>;
  /** Each node's pre-shared secret file and CURVE key pair (provisionEmulatedChannel). */
  channel: EmulatedChannel;
  spoolKeyFile: string;
  sessionId: string;
  channelPort: number;
  nodePort: { A: number; B: number };
  kmsUrl: { A: string; B: string };
  /** Mutual TLS material (CA and identities nodeA/nodeB); none with insecureHttp. */
  tls?: { ca: string; ids: Pki['ids'] };
  /**
   * The serial line of Alice's emulated source (source-tty.ts): Alice's node drives `alice` as
   * her photon source's port; Bob's emulated lab serves the source on `lab`.
   */
  sourceTty?: { alice: string; lab: string };
}

/**
 * One node's configuration (`qkd _node --config`, or `qkd run --config` on its own host), as
 * `qkd run --emulated` writes it into the state directory: Alice binds the classical channel on
 * loopback at `channelPort`, Bob connects to it.
 */
export function nodeRunConfig(role: 'alice' | 'bob', p: LinkConfigParams): NodeRunConfig {
  const side = role === 'alice' ? 'A' : 'B';
  const o = p.opts;
  const id = p.tls?.ids[`node${side}`];
  return {
    role,
    nodeId: `node${side}`,
    peerNodeId: role === 'alice' ? 'nodeB' : 'nodeA',
    lab: { preset: o.preset, distanceKm: o.distanceKm, eveFraction: o.eveFraction, seed: o.seed.toString(), ...(p.sourceTty && role === 'bob' ? { sourceTty: p.sourceTty.lab } : {}) },
    channel: { endpoint: `tcp://127.0.0.1:${p.channelPort}`, pskFile: p.channel.pskFile[role], sessionId: p.sessionId,
      curveKeyFile: p.channel.curve[role].keyFile, peerPublicKey: p.channel.curve[role === 'alice' ? 'bob' : 'alice'].publicKey },
    stream: { endpoint: `ipc://${join(p.dir, `stream-${process.pid}-${p.channelPort}.ipc`)}` },
    delivery: {
      listenPort: p.nodePort[side],
      tls: id && p.tls ? { ca: p.tls.ca, cert: id.certPath, key: id.keyPath } : undefined,
      insecure: o.insecureHttp,
      kms: { url: p.kmsUrl[side], id: `kms${side}` },
      spoolDir: join(p.dir, `spool${side}`),
      spoolKeyFile: p.spoolKeyFile,
      commitKeyFile: commitmentKeyFiles(p.dir, `node${side}`).key,
    },
    block: { detections: o.blockDetections, frameBits: o.frameBits, epsSec: o.epsSec, epsCor: o.epsCor, qberAbort: o.qberAbort, analysis: o.finiteKey },
    speed: o.speed,
    statusEveryMs: 1000,
    ...(p.sourceTty && role === 'alice' ? { devices: [{ id: 'alice-source', profile: 'emulab-ps1', port: p.sourceTty.alice }] } : {}),
  };
}

/**
 * The configuration of one reference KMS of a link (`qkd kms --config`), as `qkd run` writes it:
 * identities kmsA/kmsB from the PKI in `pki`, database and wrapping key in `dir`, Alice's side
 * (A) opens the key stream on its node. Also used to start reference KMSs as external ones.
 */
export function referenceKmsConfig(side: 'A' | 'B', p: { dir: string; pki: Pki; kmsPort: { A: number; B: number }; nodeUrl: { A: string; B: string };
  /** The state directory of the run whose nodes push to this KMS (their commitment keys); default `dir`. */
  nodeKeysDir?: string }) {
  const other = side === 'A' ? 'B' : 'A';
  const id = p.pki.ids[`kms${side}`];
  mkdirSync(join(p.dir, 'secrets'), { recursive: true, mode: 0o700 });
  return {
    id: `kms${side}`,
    role: side === 'A' ? 'source' : 'destination',
    listen: { host: '127.0.0.1', port: p.kmsPort[side] },
    tls: { ca: p.pki.caPath, cert: id.certPath, key: id.keyPath },
    dbPath: join(p.dir, `kms${side}.db`),
    wrapKeyFile: secretFile(join(p.dir, 'secrets', `kms${side}.wrap`)),
    node: { url: p.nodeUrl[side], id: `node${side}` },
    peerNodeId: `node${other}`,
    peer: { url: `https://127.0.0.1:${p.kmsPort[other]}`, id: `kms${other}` },
    saes: { local: [`sae${side}`], remote: [`sae${other}`] },
    openStream: side === 'A',
    // Both nodes must have produced every released key (docs/delivery.md, "Key commitments").
    commitments: { node: commitmentKeyFiles(p.nodeKeysDir ?? p.dir, `node${side}`).pub, peerNode: commitmentKeyFiles(p.nodeKeysDir ?? p.dir, `node${other}`).pub },
  };
}

export function assertRunnable(o: RunOptions): void {
  if (o.externalKms && (!o.externalKms.alice || !o.externalKms.bob)) {
    throw new QkdError('RUN_KMS', 'give both --kms-alice and --kms-bob, or neither (the reference KMSs are used then)');
  }
}
