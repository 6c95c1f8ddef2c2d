/**
 * The serial line between Alice's node and her emulated photon source in `qkd run --emulated`:
 * a pty pair made by socat, as a USB-serial cable would join two hosts' sides. Alice's node
 * drives one end as a real serial device (`devices[].port`); Bob's emulated lab serves the
 * emulated PS-1 on the other (`lab.sourceTty`), so her record is read back over the source's
 * wire protocol exactly as from a real instrument.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.ts';

export interface SourceLine {
  /** Alice's node's end (the source's `port`). */
  alice: string;
  /** The emulated lab's end (Bob's `lab.sourceTty`). */
  lab: string;
  readonly proc: ChildProcess;
  close(): Promise<void>;
}

/** Starts `socat -d -d pty,raw,echo=0,link=<dir>/ps1-alice pty,raw,echo=0,link=<dir>/ps1-lab`. */
export async function startSourceLine(dir: string, timeoutMs = 5000): Promise<SourceLine> {
  if (spawnSync('socat', ['-V'], { stdio: 'ignore' }).status !== 0) {
    throw new ConfigError('RUN_NO_SOCAT', "qkd run --emulated puts Alice's emulated photon source on a serial line (a pty pair made by socat), and socat is not installed: apt-get install socat.");
  }
  const alice = join(dir, 'ps1-alice');
  const lab = join(dir, 'ps1-lab');
  for (const p of [alice, lab]) rmSync(p, { force: true });
  const proc = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${alice}`, `pty,raw,echo=0,link=${lab}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr?.resume();
  const deadline = Date.now() + timeoutMs;
  while (!(existsSync(alice) && existsSync(lab))) {
    if (proc.exitCode !== null) throw new ConfigError('RUN_SOURCE_LINE', `socat exited with ${proc.exitCode} before making the source's pty pair in ${dir}`);
    if (Date.now() > deadline) {
      proc.kill();
      throw new ConfigError('RUN_SOURCE_LINE', `socat did not make the source's pty pair in ${dir} within ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return {
    alice, lab, proc,
    async close() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const done = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await done;
    },
  };
}
