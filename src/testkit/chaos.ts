/**
 * Chaos run of an emulated link (`npm run chaos`, test/chaos/chaos.test.ts): `qkd run --emulated`
 * as a user starts it, with faults injected at random moments, one at a time, each kind once per
 * round in a random order:
 *
 *   kill       kill -9 of a random process: node-alice, node-bob, kms-alice or kms-bob
 *              (the supervisor restarts it; at most 3 kills of one process per 2 min, below the
 *              supervisor's crash-loop limit of 5)
 *   stall      SIGSTOP of a KMS for 2–8 s, then SIGCONT (a KMS that stops answering)
 *   disk-full  the filesystem of a KMS database is filled (each KMS database lives on its own
 *              small tmpfs, linked from the state directory) for 3–8 s: writes fail with ENOSPC
 *   partition  the classical channel's TCP port is dropped both ways (an nftables table of its
 *              own on loopback) for 5–20 s
 *
 * Meanwhile an SAE pair takes keys (enc_keys at KMS A, dec_keys of the same IDs at KMS B) and
 * compares them by SHA-256 digest in memory. At the end every fault is healed, the run must
 * produce keys again, it is stopped cleanly, and the invariants are checked on the databases
 * themselves (chaosInvariants): no key lost or duplicated, both KMSs hold identical bytes under
 * identical IDs (digests), no key from an uncommitted or aborted block, no key handed out twice.
 * Nothing printed carries key bytes: counts, IDs of blocks and digests' agreement only.
 *
 * disk-full and partition need root (mount, nft); without it they are left out and said so.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statfsSync, symlinkSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonClient } from '../delivery/http.ts';
import { qkdProcess, until, type QkdProcess } from './run.ts';

export type FaultKind = 'kill' | 'stall' | 'disk-full' | 'partition';
export const FAULT_KINDS: readonly FaultKind[] = ['kill', 'stall', 'disk-full', 'partition'];
const CHILDREN = ['node-alice', 'node-bob', 'kms-alice', 'kms-bob'] as const;
type ChildName = (typeof CHILDREN)[number];

export interface ChaosOptions {
  /** Length of the fault phase, seconds. */
  seconds: number;
  kinds?: readonly FaultKind[];
  /** Seed of the fault schedule (the physics' seed too); random by default. */
  seed?: number;
  /** Pause between faults, ms (uniform in [min, max]); default 8 000–25 000. */
  gapMs?: [number, number];
  /** How long the run may take to produce keys again after the last fault; default 600 s. */
  settleMs?: number;
  /** Keep the state directory afterwards (its path is printed). */
  keep?: boolean;
  say(line: string): void;
}

export interface FaultRecord {
  kind: FaultKind;
  target: string;
  atS: number;
  durationMs?: number;
}

export interface ChaosReport {
  seed: number;
  faults: FaultRecord[];
  faultsByKind: Record<string, number>;
  skippedKinds: Record<string, string>;
  restarts: Record<string, number>;
  crashLoop: boolean;
  sae: { requests: number; keys: number; mismatched: number; repeatedIds: number; unresolved: number; failedRequests: number };
  keysAtKmsBeforeFaults: number;
  keysAtKmsAfterSettle: number;
  exitCode: number | null;
  invariants: InvariantReport;
  violations: string[];
  stateDir: string;
  wallSeconds: number;
}

/** A deterministic stream in [0, 1) for the fault schedule: SHA-256 of (seed, counter). */
function rng(seed: number): () => number {
  let n = 0;
  return () => createHash('sha256').update(`${seed}:${n++}`).digest().readUInt32BE(0) / 2 ** 32;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Pids of processes whose command line contains `needle` (Linux /proc). */
export function pidsOf(needle: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').join(' ').includes(needle)) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

function configOf(state: string, name: ChildName): string {
  return { 'node-alice': join(state, 'node-alice.json'), 'node-bob': join(state, 'node-bob.json'), 'kms-alice': join(state, 'kmsA.json'), 'kms-bob': join(state, 'kmsB.json') }[name];
}

/** The pid of child `name` of the run in `state` (its `--config` file names it). */
function pidOfChild(state: string, name: ChildName): number | undefined {
  return pidsOf(`--config ${configOf(state, name)}`)[0];
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/** One tmpfs per KMS database (the "KMS disk"), linked from the state directory. */
class KmsDisks {
  readonly mounts: string[] = [];
  private fillers = new Map<string, string>();
  /**
   * `sizeMiB`: room for the keys of the whole run besides the faults. A KMS database grows by
   * ≈ 100 MiB per minute of this link now (2026-12-07: ~600 keys/s into each KMS, each 32-byte key
   * with its row, indexes, audit entry and WAL pages; it was ≈ 7 MiB when the link was 10× slower);
   * a disk too small for the run fills up for good, which is no longer a transient fault (seen: a
   * 112 MiB disk full for good 70 s into the run, KMS A refusing keys from then on). The filler
   * takes whatever is left, so a larger disk only costs memory while a fault lasts.
   */
  constructor(private readonly root: string, private readonly sizeMiB = 64) {}

  setUp(state: string): void {
    for (const side of ['A', 'B']) {
      const m = join(this.root, `disk${side}`);
      mkdirSync(m, { recursive: true, mode: 0o700 });
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${this.sizeMiB}m,mode=0700`, 'tmpfs', m]);
      this.mounts.push(m);
      // SQLite follows the link: the database, its WAL and shared memory all live on the tmpfs.
      symlinkSync(join(m, `kms${side}.db`), join(state, `kms${side}.db`));
    }
  }

  /** Fills the KMS's disk to the last byte (writes until ENOSPC). */
  fill(side: 'A' | 'B'): number {
    const m = join(this.root, `disk${side}`);
    const f = join(m, 'filler');
    const fd = openSync(f, 'w', 0o600);
    const chunk = Buffer.alloc(1 << 20);
    let n = 0;
    try {
      for (;;) {
        try {
          n += writeSync(fd, chunk);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
          break;
        }
      }
      // The last partial megabyte: fill what is left in small pieces.
      const small = Buffer.alloc(4096);
      for (;;) {
        try {
          n += writeSync(fd, small);
        } catch {
          break;
        }
      }
    } finally {
      closeSync(fd);
    }
    this.fillers.set(side, f);
    const s = statfsSync(m);
    if (s.bavail > 0) throw new Error(`disk ${m} still has ${s.bavail} free blocks after filling`);
    return n;
  }

  free(side: 'A' | 'B'): void {
    const f = this.fillers.get(side);
    if (f && existsSync(f)) unlinkSync(f);
    this.fillers.delete(side);
  }

  tearDown(): void {
    for (const side of ['A', 'B'] as const) this.free(side);
    for (const m of this.mounts) {
      try {
        execFileSync('umount', ['-l', m]);
      } catch {
        /* already gone */
      }
    }
  }
}

/** Drops the classical channel's TCP port both ways on loopback (an nftables table of our own). */
class ChannelPartition {
  readonly table = `qkd_chaos_${process.pid}`;
  active = false;
  constructor(private readonly port: number) {}
  private nft(args: string[]): void {
    execFileSync('nft', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  }
  cut(): void {
    this.nft(['add', 'table', 'inet', this.table]);
    this.nft(['add', 'chain', 'inet', this.table, 'out', '{ type filter hook output priority -10 ; policy accept ; }']);
    this.nft(['add', 'rule', 'inet', this.table, 'out', 'tcp', 'dport', String(this.port), 'drop']);
    this.nft(['add', 'rule', 'inet', this.table, 'out', 'tcp', 'sport', String(this.port), 'drop']);
    this.active = true;
  }
  heal(): void {
    if (!this.active) return;
    try {
      this.nft(['delete', 'table', 'inet', this.table]);
    } catch {
      /* not there */
    }
    this.active = false;
  }
}

/** An SAE pair taking keys through the run (enc at KMS A, dec of the same IDs at KMS B). */
class SaePair {
  readonly seen = new Set<string>();
  readonly waiting = new Map<string, string>(); // key_ID -> digest from enc_keys, not yet matched at B
  stats = { requests: 0, keys: 0, mismatched: 0, repeatedIds: 0, failedRequests: 0 };
  private readonly a: JsonClient;
  private readonly b: JsonClient;
  constructor(manifest: RunManifest) {
    ({ saeA: this.a, saeB: this.b } = saeClientsOf(manifest));
  }

  async storedAtA(): Promise<number | undefined> {
    const st = await this.a.request('GET', '/api/v1/keys/saeB/status').catch(() => undefined);
    return st?.status === 200 ? Number(st.body.stored_key_count) : undefined;
  }

  private static digest(k: string): string {
    return createHash('sha256').update(Buffer.from(k, 'base64')).digest('hex');
  }

  /** One round: retry what B has not matched yet, then take up to `n` new keys. */
  async round(n: number): Promise<void> {
    if (this.waiting.size) await this.dec([...this.waiting.keys()].slice(0, 16));
    this.stats.requests++;
    const r = await this.a.request('POST', '/api/v1/keys/saeB/enc_keys', { number: n }).catch(() => undefined);
    if (r?.status !== 200) {
      this.stats.failedRequests++;
      return;
    }
    const ids: string[] = [];
    for (const k of r.body.keys as { key_ID: string; key: string }[]) {
      if (this.seen.has(k.key_ID)) this.stats.repeatedIds++;
      this.seen.add(k.key_ID);
      this.waiting.set(k.key_ID, SaePair.digest(k.key));
      ids.push(k.key_ID);
    }
    await this.dec(ids);
  }

  private async dec(ids: string[]): Promise<void> {
    if (!ids.length) return;
    const r = await this.b.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: ids.map((key_ID) => ({ key_ID })) }).catch(() => undefined);
    if (r?.status !== 200) return;
    for (const k of r.body.keys as { key_ID: string; key: string }[]) {
      const want = this.waiting.get(k.key_ID);
      if (want === undefined) continue;
      this.waiting.delete(k.key_ID);
      this.stats.keys++;
      if (want !== SaePair.digest(k.key)) this.stats.mismatched++;
    }
  }

  close(): void {
    this.a.close();
    this.b.close();
  }
}

/** The parts of `qkd run --manifest` an SAE pair needs. */
export interface RunManifest {
  kms: { alice: { etsi014: string }; bob: { etsi014: string } };
  sae: { alice: { cert: string; key: string }; bob: { cert: string; key: string }; ca: string };
}

/** ETSI 014 clients of the run's SAE pair: saeA at KMS A, saeB at KMS B (close both when done). */
export function saeClientsOf(manifest: RunManifest): { saeA: JsonClient; saeB: JsonClient } {
  const ca = readFileSync(manifest.sae.ca, 'utf8');
  const tlsOf = (s: { cert: string; key: string }) => ({ ca, cert: readFileSync(s.cert, 'utf8'), key: readFileSync(s.key, 'utf8') });
  return {
    saeA: new JsonClient({ url: new URL(manifest.kms.alice.etsi014).origin, id: 'kmsA' }, { tls: tlsOf(manifest.sae.alice) }),
    saeB: new JsonClient({ url: new URL(manifest.kms.bob.etsi014).origin, id: 'kmsB' }, { tls: tlsOf(manifest.sae.bob) }),
  };
}

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const t0 = Date.now();
  const seed = o.seed ?? Math.floor(Math.random() * 2 ** 31);
  const rand = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const between = (lo: number, hi: number) => Math.round(lo + rand() * (hi - lo));
  const root = mkdtempSync(join(tmpdir(), 'qkd-chaos-'));
  const state = join(root, 'state');
  mkdirSync(state, { mode: 0o700 });
  const skipped: Record<string, string> = {};
  let kinds = [...(o.kinds ?? FAULT_KINDS)];
  const disks = new KmsDisks(root, 256 + Math.ceil(o.seconds / 60) * 160);
  if (kinds.includes('disk-full') || kinds.includes('partition')) {
    if (!isRoot()) {
      for (const k of ['disk-full', 'partition'] as const) if (kinds.includes(k)) skipped[k] = 'needs root (mount, nft)';
    } else if (kinds.includes('disk-full')) {
      try {
        disks.setUp(state);
      } catch (err) {
        skipped['disk-full'] = `tmpfs for the KMS databases could not be mounted: ${(err as Error).message}`;
      }
    }
  }
  kinds = kinds.filter((k) => !(k in skipped));
  o.say(`chaos: state ${state}, seed ${seed}, faults ${kinds.join(', ')}${Object.keys(skipped).length ? ` (left out: ${Object.entries(skipped).map(([k, v]) => `${k}: ${v}`).join('; ')})` : ''}`);

  const manifestPath = join(root, 'manifest.json');
  const run: QkdProcess = qkdProcess(['run', '--emulated', '--json', '--state-dir', state, '--manifest', manifestPath, '--dashboard-port', '0',
    '--distance-km', '25', '--seed', String(seed), '--speed', '1000', '--block-detections', '4000000']);
  let partition: ChannelPartition | undefined;
  const stopped = new Set<number>();
  let sae: SaePair | undefined;
  const faults: FaultRecord[] = [];
  const kills = new Map<string, number[]>();
  let report: ChaosReport | undefined;
  try {
    const manifest = await until('the run\'s manifest', () => (existsSync(manifestPath) ? JSON.parse(readFileSync(manifestPath, 'utf8')) as RunManifest : undefined), 600_000);
    sae = new SaePair(manifest);
    const s = sae;
    const before = await until('the first keys at KMS A', async () => (((await s.storedAtA()) ?? 0) >= 1 ? s.storedAtA() : undefined), 900_000);
    o.say(`chaos: keys flowing (${before} at KMS A); faults for ${o.seconds} s`);
    if (kinds.includes('partition')) {
      const nodeAlice = JSON.parse(readFileSync(join(state, 'node-alice.json'), 'utf8')) as { channel: { endpoint: string } };
      partition = new ChannelPartition(Number(/:(\d+)$/.exec(nodeAlice.channel.endpoint)![1]));
    }
    const restartsSeen = (name: string) => run.lines.filter((l) => l.includes(`restarting ${name}`)).length;
    const fStart = Date.now();
    const deadline = fStart + o.seconds * 1000;
    const [gLo, gHi] = o.gapMs ?? [8000, 25000];
    const bag: FaultKind[] = [];
    // The SAE pair takes keys all along, in the background.
    let saeOn = true;
    const saeLoop = (async () => {
      while (saeOn) {
        await s.round(between(1, 4)).catch(() => undefined);
        await sleep(3000);
      }
    })();
    while (Date.now() < deadline) {
      await sleep(Math.min(between(gLo, gHi), Math.max(0, deadline - Date.now())));
      if (Date.now() >= deadline) break;
      // Kinds come from a shuffled bag (every kind once per round), so a short run sees them all.
      if (!bag.length) {
        bag.push(...kinds);
        for (let i = bag.length - 1; i > 0; i--) {
          const j = Math.floor(rand() * (i + 1));
          [bag[i], bag[j]] = [bag[j], bag[i]];
        }
      }
      const kind = bag.pop()!;
      const atS = (Date.now() - fStart) / 1000;
      if (kind === 'kill') {
        const now = Date.now();
        const eligible = CHILDREN.filter((c) => (kills.get(c) ?? []).filter((x) => now - x < 120_000).length < 3);
        if (!eligible.length) continue;
        const name = pick(eligible);
        const pid = pidOfChild(state, name);
        if (!pid) continue; // between a crash and its restart
        const seen = restartsSeen(name);
        process.kill(pid, 'SIGKILL');
        kills.set(name, [...(kills.get(name) ?? []), now]);
        faults.push({ kind, target: name, atS });
        o.say(`chaos: ${atS.toFixed(0)} s kill -9 ${name} (pid ${pid})`);
        await until(`the supervisor restarting ${name}`, () => (restartsSeen(name) > seen ? true : undefined), 60_000);
        await until(`${name} running again`, () => (pidOfChild(state, name) ? true : undefined), 60_000);
      } else if (kind === 'stall') {
        const name = pick(['kms-alice', 'kms-bob'] as const);
        const pid = pidOfChild(state, name);
        if (!pid) continue;
        const ms = between(2000, 8000);
        process.kill(pid, 'SIGSTOP');
        stopped.add(pid);
        faults.push({ kind, target: name, atS, durationMs: ms });
        o.say(`chaos: ${atS.toFixed(0)} s SIGSTOP ${name} for ${ms} ms`);
        await sleep(ms);
        process.kill(pid, 'SIGCONT');
        stopped.delete(pid);
      } else if (kind === 'disk-full') {
        const side = pick(['A', 'B'] as const);
        const ms = between(3000, 8000);
        const bytes = disks.fill(side);
        faults.push({ kind, target: `kms-${side === 'A' ? 'alice' : 'bob'}`, atS, durationMs: ms });
        o.say(`chaos: ${atS.toFixed(0)} s disk of kms${side} full (${(bytes / 2 ** 20).toFixed(0)} MiB filler) for ${ms} ms`);
        await sleep(ms);
        disks.free(side);
      } else {
        const ms = between(5000, 20000);
        partition!.cut();
        faults.push({ kind, target: 'classical channel', atS, durationMs: ms });
        o.say(`chaos: ${atS.toFixed(0)} s classical channel partitioned for ${ms} ms`);
        await sleep(ms);
        partition!.heal();
      }
    }
    const lastFault = Date.now();
    // Keys must flow again after the last fault (both nodes resumed, both KMSs took keys).
    const atLast = (await s.storedAtA()) ?? 0;
    o.say(`chaos: faults over (${faults.length}); waiting for new keys after the last one`);
    const after = await until('new keys after the last fault', async () => {
      const n = await s.storedAtA();
      return n !== undefined && n > atLast ? n : undefined;
    }, o.settleMs ?? 600_000).catch(() => -1);
    saeOn = false;
    await saeLoop;
    // Let the SAE pair settle what B had not matched yet.
    for (let i = 0; i < 5 && s.waiting.size; i++) await s.round(0).catch(() => undefined);
    o.say(`chaos: ${after >= 0 ? `keys flowing again ${((Date.now() - lastFault) / 1000).toFixed(0)} s after the last fault` : 'NO new keys after the last fault'}; stopping the run`);
    run.p.kill('SIGINT');
    const done = await Promise.race([run.done, sleep(240_000).then(() => undefined)]);
    if (!done) {
      run.p.kill('SIGKILL');
      await run.done;
    }
    const restarts: Record<string, number> = {};
    for (const c of CHILDREN) restarts[c] = restartsSeen(c);
    const invariants = chaosInvariants(state);
    const violations = violationsOf(invariants);
    const crashLoop = run.lines.some((l) => l.includes('process-crash-loop'));
    if (crashLoop) violations.push('the supervisor gave up on a crash loop');
    if (after < 0) violations.push('no new keys reached KMS A after the last fault');
    if (done?.code !== 0) violations.push(`the run did not exit cleanly (code ${done?.code ?? 'killed'})`);
    if (s.stats.mismatched) violations.push(`${s.stats.mismatched} keys differ between the SAEs`);
    if (s.stats.repeatedIds) violations.push(`${s.stats.repeatedIds} key IDs handed out twice by enc_keys`);
    const byKind: Record<string, number> = {};
    for (const f of faults) byKind[f.kind] = (byKind[f.kind] ?? 0) + 1;
    report = {
      seed, faults, faultsByKind: byKind, skippedKinds: skipped, restarts, crashLoop,
      sae: { ...s.stats, unresolved: s.waiting.size }, keysAtKmsBeforeFaults: before!, keysAtKmsAfterSettle: after,
      exitCode: done?.code ?? null, invariants, violations, stateDir: state, wallSeconds: (Date.now() - t0) / 1000,
    };
    return report;
  } finally {
    for (const pid of stopped) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        /* gone */
      }
    }
    partition?.heal();
    sae?.close();
    if (run.p.exitCode === null && run.p.signalCode === null) {
      run.p.kill('SIGKILL');
      // Its children follow the supervisor's IPC channel closing; give them a moment.
      await sleep(2000);
    }
    if (!report || report.violations.length) o.say(`chaos: last lines of the run:\n${run.lines.slice(-25).join('\n')}`);
    disks.tearDown();
    if (o.keep || (report && report.violations.length)) o.say(`chaos: state kept in ${state}`);
    else rmSync(root, { recursive: true, force: true });
  }
}

export interface InvariantReport {
  streams: number;
  keys: { A: number; B: number };
  common: number;
  onlyA: number;
  onlyB: number;
  /** Keys at one KMS only and not in the other node's spool either: lost. */
  lostA: number;
  lostB: number;
  idMismatch: number;
  digestMismatch: number;
  /** Indices below the node's next index in neither its KMS nor its spool. */
  gaps: { A: number; B: number };
  nextIndex: { A: number; B: number };
  /** A block's keys not in one contiguous run, or block ids going back along the stream. */
  blockOrder: { A: number; B: number };
  blocks: number;
  fromUncommitted: { A: number; B: number };
  fromAborted: { A: number; B: number };
  deliveredTwice: { A: number; B: number };
  storedTwice: { A: number; B: number };
  holderMismatch: number;
  conflictEvents: { A: number; B: number };
  delivered: { A: number; B: number };
  /** Sealed outputs of committed blocks still on disk (never released). */
  sealedLeft: { alice: number; bob: number };
}

/** The invariants, read from the SQLite files, ledgers and spools of a stopped run (python3's sqlite3). */
export function chaosInvariants(state: string): InvariantReport {
  const out = execFileSync('python3', ['-c', INVARIANTS_PY, state], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return JSON.parse(out) as InvariantReport;
}

export function violationsOf(r: InvariantReport): string[] {
  const v: string[] = [];
  const both = (what: string, x: { A: number; B: number }) => {
    if (x.A || x.B) v.push(`${what}: A ${x.A}, B ${x.B}`);
  };
  if (r.keys.A === 0 || r.keys.B === 0) v.push(`no keys checked (A ${r.keys.A}, B ${r.keys.B})`);
  if (r.idMismatch) v.push(`${r.idMismatch} indices with different key IDs at the two KMSs`);
  if (r.digestMismatch) v.push(`${r.digestMismatch} keys whose bytes differ between the two KMSs (digests)`);
  if (r.lostA || r.lostB) v.push(`keys lost: ${r.lostA} only at A, ${r.lostB} only at B and in neither spool`);
  if (r.nextIndex.A !== r.nextIndex.B) v.push(`the nodes assigned different numbers of chunks (A ${r.nextIndex.A}, B ${r.nextIndex.B})`);
  both('indices in neither KMS nor spool', r.gaps);
  both('keys of a block out of order or split (a block delivered twice?)', r.blockOrder);
  both('keys from a block not committed in both ledgers', r.fromUncommitted);
  both('keys from an aborted block', r.fromAborted);
  both('keys delivered twice', r.deliveredTwice);
  both('keys stored twice', r.storedTwice);
  both('conflict or mismatch events in the audit trail', r.conflictEvents);
  if (r.holderMismatch) v.push(`${r.holderMismatch} keys reserved for different SAE pairs at the two KMSs`);
  if (r.sealedLeft.alice || r.sealedLeft.bob) v.push(`committed blocks left sealed, never released (alice ${r.sealedLeft.alice}, bob ${r.sealedLeft.bob})`);
  return v;
}

const INVARIANTS_PY = String.raw`
import json, os, re, sqlite3, sys
st = sys.argv[1]
def ledger(role):
    p = os.path.join(st, 'channel-' + role, 'ledger.json')
    if not os.path.exists(p): return set(), set()
    j = json.load(open(p))
    return set(j.get('committed') or []), set(j.get('aborted') or [])
ca, aa = ledger('alice'); cb, ab = ledger('bob')
committed = ca & cb; aborted = aa | ab
def kms(side):
    c = sqlite3.connect(os.path.join(st, 'kms%s.db' % side))
    rows = {}
    for sid, idx, kid, dg, state, holder, meta in c.execute('SELECT stream_id, idx, key_id, hex(digest), state, holder, meta FROM keys'):
        try: b = json.loads(meta).get('block_id')
        except Exception: b = None
        rows[(sid, idx)] = (kid, dg, state, holder, b)
    ev = {}
    for sid, idx, e in c.execute("SELECT stream_id, idx, event FROM audit WHERE idx >= 0"):
        ev.setdefault(e, {}).setdefault((sid, idx), 0); ev[e][(sid, idx)] += 1
    c.close()
    return rows, ev
def spool(side):
    d = os.path.join(st, 'spool' + side)
    cover, nxt = {}, {}
    if os.path.exists(os.path.join(d, 'state.json')):
        for s in json.load(open(os.path.join(d, 'state.json'))).get('streams', []): nxt[s['keyStreamId']] = s['nextIndex']
    for sid in (os.listdir(d) if os.path.isdir(d) else []):
        p = os.path.join(d, sid)
        if not os.path.isdir(p): continue
        for f in os.listdir(p):
            m = re.match(r'^(\d+)-(\d+)\.batch$', f)
            if m: cover.setdefault(sid, set()).update(range(int(m.group(1)), int(m.group(2)) + 1))
    return cover, nxt
A, evA = kms('A'); B, evB = kms('B')
covA, nxtA = spool('A'); covB, nxtB = spool('B')
r = {'streams': len(set(k[0] for k in A) | set(k[0] for k in B)), 'keys': {'A': len(A), 'B': len(B)}}
common = set(A) & set(B)
r['common'] = len(common)
onlyA = set(A) - set(B); onlyB = set(B) - set(A)
r['onlyA'] = len(onlyA); r['onlyB'] = len(onlyB)
r['lostA'] = sum(1 for (s, i) in onlyA if i not in covB.get(s, set()))
r['lostB'] = sum(1 for (s, i) in onlyB if i not in covA.get(s, set()))
r['idMismatch'] = sum(1 for k in common if A[k][0] != B[k][0])
r['digestMismatch'] = sum(1 for k in common if A[k][1] != B[k][1])
def gaps(rows, cov, nxt):
    n = 0
    for sid, top in nxt.items():
        have = set(i for (s, i) in rows if s == sid) | cov.get(sid, set())
        n += sum(1 for i in range(top) if i not in have)
    return n
r['gaps'] = {'A': gaps(A, covA, nxtA), 'B': gaps(B, covB, nxtB)}
r['nextIndex'] = {'A': sum(nxtA.values()), 'B': sum(nxtB.values())}
def order(rows):
    bad = 0
    for sid in set(k[0] for k in rows):
        seq = [rows[k][4] for k in sorted(k for k in rows if k[0] == sid)]
        seen = set(); prev = None
        for b in seq:
            if b is None: continue
            if b != prev and b in seen: bad += 1
            if prev is not None and b < prev: bad += 1
            seen.add(b); prev = b
    return bad
r['blockOrder'] = {'A': order(A), 'B': order(B)}
blocks = set(v[4] for v in list(A.values()) + list(B.values()) if v[4] is not None)
r['blocks'] = len(blocks)
r['fromUncommitted'] = {s: sum(1 for v in rows.values() if v[4] is not None and v[4] not in committed) for s, rows in (('A', A), ('B', B))}
r['fromAborted'] = {s: sum(1 for v in rows.values() if v[4] in aborted) for s, rows in (('A', A), ('B', B))}
r['deliveredTwice'] = {s: sum(1 for n in ev.get('delivered', {}).values() if n > 1) for s, ev in (('A', evA), ('B', evB))}
r['storedTwice'] = {s: sum(1 for n in ev.get('stored', {}).values() if n > 1) for s, ev in (('A', evA), ('B', evB))}
r['delivered'] = {s: len(ev.get('delivered', {})) for s, ev in (('A', evA), ('B', evB))}
r['conflictEvents'] = {s: sum(len(ev.get(e, {})) for e in ('conflict', 'mismatch')) for s, ev in (('A', evA), ('B', evB))}
r['holderMismatch'] = sum(1 for k in common if A[k][3] and B[k][3] and A[k][3] != B[k][3])
def sealed(role):
    # A sealed output left behind whose block both ledgers committed was never delivered: lost.
    d = os.path.join(st, 'sealed-' + role)
    return sum(1 for f in os.listdir(d) if f.endswith('.block') and int(f[:-6]) in committed) if os.path.isdir(d) else 0
r['sealedLeft'] = {'alice': sealed('alice'), 'bob': sealed('bob')}
print(json.dumps(r))
`;
