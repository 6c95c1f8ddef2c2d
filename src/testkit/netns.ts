/**
 * Test kit for running Alice and Bob as two network hosts: two Linux network namespaces joined by
 * a veth pair with addresses in a private /30, link impairment (tc netem delay/loss; where the
 * kernel has no netem, a token-bucket rate limit plus a userspace delay proxy), partitions (link
 * down/up), and a channel peer process to run inside a namespace.
 *
 * Traffic only ever flows between the two namespaces (or loopback): the veth pair is not
 * connected to any other interface and no route leaves the namespaces.
 *
 * As a script:
 *   node --import tsx src/testkit/netns.ts peer  '<PeerConfig JSON>'   # serve (Bob) or connect
 *   node --import tsx src/testkit/netns.ts drive '<DriveConfig JSON>'  # run blocks, print summary
 *   node --import tsx src/testkit/netns.ts delay-proxy <listenHost:port> <targetHost:port> <ms>
 *   node --import tsx src/testkit/netns.ts stream-sink <bind endpoint> <batches>  # event-stream consumer
 * Each prints JSON lines on stdout ({event: ...}).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createServer, connect, type Socket } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { Authenticator, type Role } from '../core/auth.ts';
import { AuthChannel } from '../channel/channel.ts';
import { StreamConsumer } from '../stream/consumer.ts';

// ----------------------------------------------------------------------------- namespaces

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function tc(...args: string[]): string {
  return execFileSync('tc', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** null if namespaces can be used here, else the reason (for a clear skip message). */
export function netnsUnavailable(): string | null {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid && process.getuid() !== 0) return 'network namespaces need root';
  const probe = `qkdprobe${process.pid}`;
  try {
    ip('netns', 'add', probe);
    ip('netns', 'del', probe);
    execFileSync('tc', ['-V'], { stdio: 'ignore' });
    return null;
  } catch (e) {
    return `the machine refuses network namespaces or lacks iproute2 (ip/tc): ${(e as Error).message.split('\n')[0]}`;
  }
}

export interface NetnsPair {
  nsA: string;
  nsB: string;
  devA: string;
  devB: string;
  ipA: string;
  ipB: string;
  /** What impairment is in place, e.g. 'netem delay 20ms loss 2%' or the fallback used. */
  impairment: string;
  /** True if tc netem was available (otherwise delay must come from `delayProxy`). */
  netem: boolean;
  /** Cuts (true) or restores (false) the link, both ends. */
  partition(cut: boolean): void;
  /** Runs a command inside a namespace: argv for spawn. */
  exec(ns: 'A' | 'B', argv: string[]): string[];
  teardown(): void;
}

export function createNetnsPair(opts: { delayMs?: number; lossPct?: number; rateKbit?: number } = {}): NetnsPair {
  const tag = `${process.pid % 100000}`;
  const nsA = `qkdA${tag}`;
  const nsB = `qkdB${tag}`;
  const devA = `qa${tag}`;
  const devB = `qb${tag}`;
  const net = `10.231.${process.pid % 250}`;
  const o = (process.pid >> 8) % 60 * 4; // a /30 inside 10.231.x.0/24
  const ipA = `${net}.${o + 1}`;
  const ipB = `${net}.${o + 2}`;
  const teardown = () => {
    for (const ns of [nsA, nsB]) {
      try { ip('netns', 'del', ns); } catch { /* already gone */ }
    }
  };
  teardown();
  try {
    ip('netns', 'add', nsA);
    ip('netns', 'add', nsB);
    ip('link', 'add', devA, 'netns', nsA, 'type', 'veth', 'peer', 'name', devB, 'netns', nsB);
    ip('-n', nsA, 'addr', 'add', `${ipA}/30`, 'dev', devA);
    ip('-n', nsB, 'addr', 'add', `${ipB}/30`, 'dev', devB);
    for (const [ns, dev] of [[nsA, devA], [nsB, devB]]) {
      ip('-n', ns, 'link', 'set', dev, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
    const delay = opts.delayMs ?? 20;
    const loss = opts.lossPct ?? 2;
    let impairment: string;
    let netem = true;
    try {
      for (const [ns, dev] of [[nsA, devA], [nsB, devB]]) {
        tc('-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'netem', 'delay', `${delay}ms`, 'loss', `${loss}%`);
      }
      impairment = `netem delay ${delay}ms loss ${loss}% on both ends`;
    } catch {
      // This kernel has no sch_netem: rate-limit with tbf (kernel) and let the caller add the
      // delay in userspace (delayProxy); loss is replaced by partitions in the test.
      netem = false;
      const rate = opts.rateKbit ?? 2000;
      for (const [ns, dev] of [[nsA, devA], [nsB, devB]]) {
        tc('-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${rate}kbit`, 'burst', '16kbit', 'latency', '200ms');
      }
      // Loss: nftables random drop on the veth output of both namespaces (kernel nf_tables +
      // numgen; needs the `nft` tool, Debian package nftables).
      let lossHow: string;
      try {
        for (const [ns, dev] of [[nsA, devA], [nsB, devB]]) {
          const nft = (...a: string[]) => execFileSync('ip', ['netns', 'exec', ns, 'nft', ...a], { stdio: ['ignore', 'pipe', 'pipe'] });
          nft('add', 'table', 'inet', 'qkdloss');
          nft('add', 'chain', 'inet', 'qkdloss', 'out', '{ type filter hook output priority 0; }');
          nft('add', 'rule', 'inet', 'qkdloss', 'out', 'oifname', dev, 'numgen', 'random', 'mod', '100', '<', String(loss), 'drop');
        }
        lossHow = `nftables random drop ${loss}% on both ends`;
      } catch {
        lossHow = 'no loss emulation (install nftables for it)';
      }
      impairment = `kernel lacks netem: tbf ${rate} kbit/s on both ends + userspace ${delay} ms delay proxy + ${lossHow}`;
    }
    return {
      nsA, nsB, devA, devB, ipA, ipB, impairment, netem,
      partition(cut: boolean) {
        ip('-n', nsA, 'link', 'set', devA, cut ? 'down' : 'up');
        ip('-n', nsB, 'link', 'set', devB, cut ? 'down' : 'up');
        if (!cut) {
          // Addresses survive link down/up; nothing else to restore.
        }
      },
      exec(ns, argv) {
        return ['ip', 'netns', 'exec', ns === 'A' ? nsA : nsB, ...argv];
      },
      teardown,
    };
  } catch (e) {
    teardown();
    throw e;
  }
}

/** A TCP proxy that forwards each chunk after `delayMs` (order kept), both directions. */
export function delayProxy(listen: { host: string; port: number }, target: { host: string; port: number }, delayMs: number): Promise<{ port: number; close(): void }> {
  const socks = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    socks.add(client);
    socks.add(upstream);
    const pipe = (from: Socket, to: Socket) => {
      from.on('data', (d) => setTimeout(() => { if (!to.destroyed) to.write(d); }, delayMs));
      from.on('close', () => setTimeout(() => to.destroy(), delayMs));
      from.on('error', () => to.destroy());
    };
    pipe(client, upstream);
    pipe(upstream, client);
  });
  return new Promise((resolve) => {
    server.listen(listen.port, listen.host, () => {
      const addr = server.address();
      resolve({
        port: typeof addr === 'object' && addr ? addr.port : 0,
        close() { for (const s of socks) s.destroy(); server.close(); },
      });
    });
  });
}

// ----------------------------------------------------------------------------- peer processes

export interface PeerConfig {
  role: Role;
  endpoint: string;
  bind: boolean;
  statePath: string;
  pskPath?: string;
  ledgerPath: string;
  timeoutMs?: number;
  retryMs?: number;
}

export interface DriveConfig extends PeerConfig {
  /** Blocks to run: each = `rounds` echo requests of `bytes` then a commit. */
  blocks: number;
  firstBlock?: number;
  rounds: number;
  bytes: number;
}

/** A child process speaking JSON lines on stdout, with a way to wait for a given event. */
export interface JsonChild {
  proc: ChildProcess;
  events: Record<string, any>[];
  waitFor(pred: (e: Record<string, any>) => boolean, timeoutMs: number): Promise<Record<string, any>>;
  exited: Promise<number | null>;
}

export const NETNS_SCRIPT = fileURLToPath(import.meta.url);

/** Spawns `argv` (e.g. from NetnsPair.exec, or [node, --import, tsx, NETNS_SCRIPT, 'peer', json]). */
export function spawnJson(argv: string[]): JsonChild {
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  const events: Record<string, any>[] = [];
  const waiters: (() => void)[] = [];
  let buf = '';
  proc.stdout!.setEncoding('utf8');
  proc.stdout!.on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try { events.push(JSON.parse(line)); } catch { /* not ours */ }
    }
    for (const w of waiters.splice(0)) w();
  });
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => { for (const w of waiters.splice(0)) w(); r(code); }));
  return {
    proc, events, exited,
    waitFor(pred, timeoutMs) {
      return new Promise((resolve, reject) => {
        const end = Date.now() + timeoutMs;
        const check = () => {
          const e = events.find(pred);
          if (e) return resolve(e);
          if (Date.now() > end || proc.exitCode !== null) return reject(new Error(`child did not report the expected event within ${timeoutMs} ms; events: ${JSON.stringify(events).slice(0, 2000)}`));
          waiters.push(check);
          setTimeout(check, Math.min(200, Math.max(1, end - Date.now())));
        };
        check();
      });
    },
  };
}

/** argv to run this file's `peer` / `drive` command with tsx. */
export function peerArgv(cmd: 'peer' | 'drive', config: PeerConfig | DriveConfig): string[] {
  return [process.execPath, '--import', 'tsx', NETNS_SCRIPT, cmd, JSON.stringify(config)];
}

const out = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');

/**
 * Test-only key wrapping a test peer's channel state: derived from the state path, so a peer
 * restarted on the same files unwraps them. (A node derives it from its at-rest key.)
 */
export function testStateKey(statePath: string): Buffer {
  return createHash('sha256').update('qkd-testkit/state-key\0').update(statePath).digest();
}

async function openPeer(c: PeerConfig): Promise<AuthChannel> {
  const auth = Authenticator.open({ role: c.role, statePath: c.statePath, stateKey: testStateKey(c.statePath), pskPath: c.pskPath, keepPsk: true });
  const ch = await AuthChannel.open({ role: c.role, endpoint: c.endpoint, bind: c.bind, auth, ledgerPath: c.ledgerPath,
    timeoutMs: c.timeoutMs ?? 20_000, retryMs: c.retryMs ?? 200, maxRetryMs: 1000 });
  ch.handle('echo', (p) => p);
  ch.handle('slow', async (p: { ms: number }) => { await new Promise((r) => setTimeout(r, p.ms)); return 'done'; });
  ch.on('peerRestarted', () => out({ event: 'peerRestarted' }));
  ch.on('blockAborted', (e) => out({ event: 'blockAborted', ...e }));
  ch.on('blockCommitted', (b) => out({ event: 'blockCommitted', blockId: b }));
  ch.on('rejected', (r) => out({ event: 'rejected', code: r.code }));
  return ch;
}

async function peerMain(c: PeerConfig): Promise<void> {
  const ch = await openPeer(c);
  out({ event: 'listening', endpoint: ch.endpoint });
  ch.ready(600_000).then(() => out({ event: 'ready' }), () => {});
  const stop = async () => { await ch.close(); process.exit(0); };
  process.on('SIGTERM', () => void stop());
  process.stdin.on('end', () => void stop()); // parent gone
  process.stdin.resume();
}

async function driveMain(c: DriveConfig): Promise<void> {
  const ch = await openPeer(c);
  await ch.ready(c.timeoutMs ?? 20_000);
  out({ event: 'ready' });
  const first = c.firstBlock ?? 1;
  const result = { committed: [] as number[], aborted: [] as number[], errors: [] as string[], roundTrips: 0, ms: 0 };
  const t0 = Date.now();
  for (let b = first; b < first + c.blocks; b++) {
    try {
      for (let r = 0; r < c.rounds; r++) {
        const data = randomBytes(c.bytes);
        const back = await ch.request<Uint8Array>('echo', data, { blockId: b });
        if (!Buffer.from(back).equals(data)) throw new Error('echo mismatch');
        result.roundTrips++;
      }
      await ch.commitBlock(b);
      result.committed.push(b);
      out({ event: 'blockDone', blockId: b });
    } catch (e) {
      result.aborted.push(b);
      result.errors.push(`${(e as { code?: string }).code ?? ''} ${(e as Error).message}`);
      if (ch.ledger.prepared === b) break; // undecided: stop, the test inspects
      try { ch.abortBlock(b, 'DRIVER_GAVE_UP'); } catch { /* committed meanwhile */ }
    }
  }
  result.ms = Date.now() - t0;
  out({ event: 'summary', ...result, stats: ch.stats() });
  await ch.close();
}

const isMain = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) {
  const [cmd, ...rest] = process.argv.slice(2);
  if (cmd === 'peer') await peerMain(JSON.parse(rest[0]) as PeerConfig);
  else if (cmd === 'drive') await driveMain(JSON.parse(rest[0]) as DriveConfig);
  else if (cmd === 'delay-proxy') {
    const [lh, lp] = rest[0].split(':');
    const [th, tp] = rest[1].split(':');
    const p = await delayProxy({ host: lh, port: Number(lp) }, { host: th, port: Number(tp) }, Number(rest[2]));
    out({ event: 'listening', port: p.port });
    process.on('SIGTERM', () => { p.close(); process.exit(0); });
  } else if (cmd === 'stream-sink') {
    const con = await StreamConsumer.open({ endpoint: rest[0], bind: true });
    out({ event: 'listening' });
    const n = Number(rest[1]);
    let tainted = 0;
    for (let i = 0; i < n; i++) if ((await con.receive()).tainted) tainted++;
    out({ event: 'summary', ...con.stats, tainted, ingested: con.ingest?.events, orderViolations: con.ingest?.orderViolations });
    con.close();
  } else {
    process.stderr.write('usage: netns.ts peer|drive <json> | delay-proxy <listen> <target> <ms>\n');
    process.exit(2);
  }
}
