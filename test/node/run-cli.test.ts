// `qkd run` refusing what it cannot do, quickly and without leaving processes behind.
import t from 'tap';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { lockStateDir } from '../../src/node/supervisor.ts';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const qkd = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'qkd.js');

function qkdRun(args: string[]): Promise<{ code: number | null; stderr: string; ms: number }> {
  const t0 = Date.now();
  const p = spawn(process.execPath, [qkd, 'run', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve) => p.on('exit', (code) => resolve({ code, stderr, ms: Date.now() - t0 })));
}

t.test('half a pair of --kms options is refused with a clear error', async (t) => {
  const r = await qkdRun(['--emulated', '--kms-alice', 'https://127.0.0.1:1']);
  t.equal(r.code, 1, 'refused (exit code 1)');
  t.match(r.stderr, /give both --kms-alice and --kms-bob.*\[RUN_KMS\]/, 'says to give both, with its code');
});

t.test('a busy dashboard port is refused before any node or KMS process starts', async (t) => {
  const busy = createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  const port = (busy.address() as { port: number }).port;
  const dir = mkdtempSync(join(tmpdir(), 'qkd-run-cli-'));
  t.teardown(() => {
    busy.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const r = await qkdRun(['--emulated', '--duration', '5', '--dashboard-port', String(port), '--state-dir', join(dir, 'state')]);
  t.equal(r.code, 1, 'refused (exit code 1)');
  t.match(r.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} \\(EADDRINUSE\\).*--dashboard-port.*\\[DASHBOARD_LISTEN\\]`), 'names the port, the cause and the option');
  t.notOk(existsSync(join(dir, 'state', 'logs')), 'no child process was started (no logs)');
  t.ok(r.ms < 20_000, `refused in ${r.ms} ms`);
});

t.test('a state directory in use by a live run is refused; a stale lock is taken over', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-run-lock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const state = join(dir, 'state');
  mkdirSync(state);
  writeFileSync(join(state, 'run.lock'), String(process.pid)); // this test process: alive
  const r = await qkdRun(['--emulated', '--duration', '5', '--dashboard-port', '0', '--state-dir', state]);
  t.equal(r.code, 1, 'refused (exit code 1)');
  t.match(r.stderr, new RegExp(`another qkd run \\(pid ${process.pid}\\) is using the state directory .*--state-dir.*\\[RUN_STATE_IN_USE\\]`));
  t.notOk(existsSync(join(state, 'logs')), 'no child process was started');
  t.equal(readFileSync(join(state, 'run.lock'), 'utf8'), String(process.pid), 'the live run\'s lock is left alone');

  // A lock whose process is gone (a run killed with SIGKILL) does not block the next run.
  const gone = spawn(process.execPath, ['-e', '0']);
  await new Promise((r) => gone.on('exit', r));
  writeFileSync(join(state, 'run.lock'), String(gone.pid));
  const file = lockStateDir(state);
  t.equal(readFileSync(file, 'utf8'), String(process.pid), 'a stale lock is taken over');
  t.throws(() => lockStateDir(state), { code: 'RUN_STATE_IN_USE' }, 'and then held');
});
