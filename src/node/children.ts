/**
 * Child processes of a run (Alice's and Bob's nodes, the reference KMSs). Each child is the
 * `qkd` CLI itself started with an internal command, talking to the supervisor over the Node IPC
 * channel: it sends `{type: 'ready', ...}` once it listens, `{type: 'status', ...}` periodically
 * and `{type: 'summary', ...}` before it exits. Its stderr lines (JSON logs) are forwarded.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QkdError } from '../errors.ts';

const qkdBin = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'qkd.js');

/**
 * V8 flags for the children. A node's heap is small (10-30 MB) but it promotes a few MB per
 * second of short-lived batch objects, and V8 sized its old generation's limit to the small heap:
 * Bob's node ran 285 full (mark-compact) collections in a 40 s run, Alice's 100, ~7 % of the link's
 * CPU. A 128 MB initial old space cuts that to 76 and 23 (docs/run.md). `QKD_CHILD_V8_FLAGS`
 * replaces them ('' for V8's defaults).
 */
export function childV8Flags(env: NodeJS.ProcessEnv = process.env): string[] {
  return (env.QKD_CHILD_V8_FLAGS ?? '--initial-old-space-size=128').split(/\s+/).filter(Boolean);
}

export interface ChildMessage {
  type: string;
  [k: string]: unknown;
}

export class Child {
  readonly name: string;
  readonly process: ChildProcess;
  private readonly listeners = new Set<(m: ChildMessage) => void>();
  private exitInfo: { code: number | null; signal: string | null } | undefined;
  readonly exited: Promise<{ code: number | null; signal: string | null }>;

  constructor(name: string, args: string[], onLine: (name: string, line: string) => void, env?: NodeJS.ProcessEnv) {
    this.name = name;
    this.process = fork(qkdBin, args, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env: { ...process.env, ...env },
      execArgv: [...process.execArgv, ...childV8Flags({ ...process.env, ...env })] });
    for (const stream of [this.process.stdout, this.process.stderr]) {
      let buf = '';
      stream?.setEncoding('utf8');
      stream?.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          onLine(name, buf.slice(0, nl));
          buf = buf.slice(nl + 1);
        }
      });
    }
    this.process.on('message', (m) => {
      for (const l of this.listeners) l(m as ChildMessage);
    });
    this.exited = new Promise((resolve) => {
      this.process.on('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
  }

  onMessage(fn: (m: ChildMessage) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Resolves with the first message of `type`; rejects if the child exits first or on timeout. */
  waitFor(type: string, timeoutMs: number): Promise<ChildMessage> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new QkdError('CHILD_TIMEOUT', `${this.name} did not report '${type}' within ${timeoutMs} ms; see its log lines above.`));
      }, timeoutMs);
      const off = this.onMessage((m) => {
        if (m.type === type) {
          clearTimeout(timer);
          off();
          resolve(m);
        }
      });
      void this.exited.then((e) => {
        clearTimeout(timer);
        off();
        reject(new QkdError('CHILD_EXITED', `${this.name} exited (code ${e.code}, signal ${e.signal}) before reporting '${type}'; see its log lines above.`));
      });
    });
  }

  send(m: ChildMessage): void {
    if (this.process.connected) this.process.send(m);
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** Asks the child to stop cleanly, then escalates to SIGTERM and SIGKILL. */
  async stop(graceMs = 15000): Promise<void> {
    if (!this.running) return;
    this.send({ type: 'stop' });
    const t1 = setTimeout(() => this.process.kill('SIGTERM'), graceMs);
    const t2 = setTimeout(() => this.process.kill('SIGKILL'), graceMs + 5000);
    await this.exited;
    clearTimeout(t1);
    clearTimeout(t2);
  }
}

/** In a child: the IPC side. Send is a no-op when the process was not forked (run by hand). */
let localSink: ((m: ChildMessage) => void) | undefined;

/** A node run in the foreground (`qkd run --config`) receives its own messages here. */
export function setLocalSink(sink: (m: ChildMessage) => void): void {
  localSink = sink;
}

export function toSupervisor(m: ChildMessage): void {
  if (process.send) process.send(m);
  else localSink?.(m);
}

/** In a child: resolves when the supervisor asks to stop, or on SIGINT/SIGTERM. */
export function stopRequested(): Promise<string> {
  return new Promise((resolve) => {
    process.on('message', (m) => {
      if ((m as ChildMessage)?.type === 'stop') resolve('supervisor');
    });
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('disconnect', () => resolve('supervisor-gone'));
  });
}
