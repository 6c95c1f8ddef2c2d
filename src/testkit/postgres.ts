/**
 * A throwaway PostgreSQL cluster for tests and benches: `initdb` into a temp directory, `pg_ctl
 * start` on a free loopback port, one fresh database per KMS, torn down at the end (and at process
 * exit, should a test crash). The server binaries come from the Debian `postgresql` package
 * (/usr/lib/postgresql/<version>/bin, or on PATH). PostgreSQL refuses to run as root, so as root
 * (CI) every server command runs as the `postgres` user the package creates (`runuser`).
 *
 * Connections from the KMS go over TCP with a password (scram-sha-256), as in production; the
 * helper's own `psql` uses the cluster's Unix socket. `backendTap(tap)` runs each test of a file
 * once on SQLite and once on PostgreSQL (a named skip when the binaries are missing).
 */
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const PG_USER = 'qkd';
export const PG_PASSWORD = 'qkd-test-only';

/** Directory of initdb/pg_ctl/psql, or null. */
export function postgresBinDir(): string | null {
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
    for (const v of versions) if (existsSync(join(root, v, 'bin', 'initdb'))) return join(root, v, 'bin');
  }
  for (const d of (process.env.PATH ?? '').split(':')) if (d && existsSync(join(d, 'initdb')) && existsSync(join(d, 'pg_ctl'))) return d;
  return null;
}

/** The uid/gid the server runs as when we are root (PostgreSQL refuses root), or null. */
function serverUser(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  try {
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    throw new Error('running as root, but there is no `postgres` user to run the server as (apt-get install postgresql creates it)');
  }
}

/** Why PostgreSQL tests cannot run here, or null when they can. */
export function postgresUnavailable(): string | null {
  if (!postgresBinDir()) return 'PostgreSQL server binaries not found (initdb, pg_ctl): apt-get install postgresql';
  try {
    serverUser();
  } catch (e) {
    return (e as Error).message;
  }
  return null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface PgCluster {
  port: number;
  dir: string;
  /** A new empty database owned by the test user; returns its postgres:// URL. */
  createDatabase(prefix?: string): string;
  /** URL of `db` with other credentials (to test refused logins). */
  url(db: string, user?: string, password?: string): string;
  /** Runs SQL as the superuser (tests: inspect or tamper with what the KMS wrote). */
  psql(db: string, sql: string): string;
  stop(): void;
}

export interface PgOptions {
  /** fsync on (benches: a durable commit costs what it costs in production). Default off for tests. */
  durable?: boolean;
}

/** Starts a cluster (a few seconds: initdb + start). */
export async function startPostgres(o: PgOptions = {}): Promise<PgCluster> {
  const bin = postgresBinDir();
  if (!bin) throw new Error(postgresUnavailable() ?? 'no PostgreSQL');
  const owner = serverUser();
  const dir = mkdtempSync(join(tmpdir(), 'qkd-pg-'));
  if (owner) chownSync(dir, owner.uid, owner.gid);
  const run = (cmd: string, args: string[]) => {
    const [file, argv] = owner ? ['runuser', ['-u', 'postgres', '--', join(bin, cmd), ...args]] : [join(bin, cmd), args];
    return execFileSync(file, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  };
  const data = join(dir, 'data');
  const pw = join(dir, 'pw');
  writeFileSync(pw, `${PG_PASSWORD}\n`, { mode: 0o600 });
  if (owner) chownSync(pw, owner.uid, owner.gid);
  run('initdb', ['-D', data, '-U', PG_USER, '--pwfile', pw, '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8',
    '--no-sync', '--no-instructions']);
  const port = await freePort();
  const opts = [`-p ${port}`, `-k ${dir}`, "-c listen_addresses='127.0.0.1'", `-c fsync=${o.durable ? 'on' : 'off'}`,
    '-c max_connections=200', '-c shared_buffers=32MB'].join(' ');
  try {
    run('pg_ctl', ['start', '-w', '-t', '60', '-D', data, '-l', join(dir, 'server.log'), '-o', opts]);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`PostgreSQL did not start: ${(e as { stderr?: string }).stderr ?? String(e)}`);
  }
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    try {
      run('pg_ctl', ['stop', '-m', 'immediate', '-w', '-D', data]);
    } catch { /* already gone */ }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stop);
  let n = 0;
  const psql = (db: string, sql: string) => run('psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', dir, '-p', String(port),
    '-U', PG_USER, '-d', db, '-c', sql]);
  const url = (db: string, user = PG_USER, password = PG_PASSWORD) =>
    `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${db}`;
  return {
    port, dir, url, psql, stop,
    createDatabase(prefix = 'kms') {
      const name = `${prefix.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${process.pid}_${n++}`;
      psql('postgres', `CREATE DATABASE ${name}`);
      return url(name);
    },
  };
}

export type BackendName = 'sqlite' | 'postgres';
let current: BackendName = 'sqlite';
let cluster: Promise<PgCluster> | undefined;

/** The backend the running test uses (set by backendTap). */
export function currentBackend(): BackendName {
  return current;
}

/** The shared cluster of this process (started on first use, stopped at exit). */
export function sharedPostgres(): Promise<PgCluster> {
  cluster ??= startPostgres();
  return cluster;
}

/**
 * Database for a KMS under the running test's backend: undefined on SQLite (the KMS uses its
 * dbPath file), a fresh PostgreSQL database URL otherwise.
 */
export async function testDatabase(label: string): Promise<string | undefined> {
  if (current === 'sqlite') return undefined;
  return (await sharedPostgres()).createDatabase(label);
}

type TestFn = (t: any) => unknown; // eslint-disable-line @typescript-eslint/no-explicit-any
interface TapLike {
  test(name: string, ...rest: unknown[]): unknown;
  teardown(fn: () => unknown): void;
}

/**
 * A `tap` whose `test(name, [opts], fn)` registers the test twice: `name [sqlite]` and
 * `name [postgres]`; the second is a named skip when PostgreSQL is not installed. Tests read the
 * backend through `currentBackend()` / `testDatabase()` (startLink does). Everything else
 * (teardown, ...) is tap's own.
 */
export function backendTap<T extends TapLike>(tap: T): T {
  const skip = postgresUnavailable();
  const test = (name: string, ...rest: unknown[]) => {
    const fn = rest.pop() as TestFn;
    const opts = (rest[0] ?? {}) as Record<string, unknown>;
    for (const b of ['sqlite', 'postgres'] as const) {
      const o = b === 'postgres' && skip && !opts.skip ? { ...opts, skip } : opts;
      tap.test(`${name} [${b}]`, o, async (t: unknown) => {
        current = b;
        return fn(t);
      });
    }
  };
  tap.teardown(async () => {
    if (cluster) (await cluster).stop();
  });
  return new Proxy(tap, {
    get: (target, k) => {
      if (k === 'test') return test;
      const v = Reflect.get(target, k, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}
