/**
 * The serial line between Alice's node and her emulated photon source in `qkd run --emulated`:
 * a pty pair made by socat, as a USB-serial cable would join two hosts' sides. Alice's node
 * drives one end as a real serial device (`devices[].port`); Bob's emulated lab serves the
 * emulated PS-1 on the other (`lab.sourceTty`), so her record is read back over the source's
 * wire protocol exactly as from a real instrument.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, constants, existsSync, openSync, rmSync } from 'node:fs';
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
  // The line outlives the processes on its ends, as a cable outlives a restarted host: when the
  // last process holding a pty's slave end dies (Alice's node killed in the middle of a read-back),
  // socat reads EIO on that side and exits, taking both ends away, and the restarted node finds
  // no line (seen: Alice's node crash-looping on '*IDN?' after kill -9). So this process holds
  // both slave ends open; it never reads them, the node or lab on each end does.
  const held = [alice, lab].map((p) => openSync(p, constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK));
  return {
    alice, lab, proc,
    async close() {
      for (const fd of held.splice(0)) closeSync(fd);
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const done = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await done;
    },
  };
}
