/**
 * CPU time of a process tree, read from /proc while it runs (Linux): every descendant's user +
 * system seconds as last seen before it exited, by role (its command line). A shared machine's
 * other loads change wall-clock rates by 3x but not the CPU a detection costs, so this is the
 * stable figure behind a link bench's real-time factor.
 */
import { readFileSync, readdirSync } from 'node:fs';

const TICKS_PER_S = 100; // USER_HZ on Linux

function stat(pid: number): { ppid: number; cpuS: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // fields after the command: state ppid ... utime(12th after) stime(13th)
    return { ppid: Number(f[1]), cpuS: (Number(f[11]) + Number(f[12])) / TICKS_PER_S };
  } catch {
    return undefined;
  }
}

function role(pid: number): string {
  try {
    const a = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const cfg = a.indexOf('--config');
    if (cfg >= 0) return (a[cfg + 1] ?? '').split('/').pop()!.replace(/\.json$/, '');
    if (a[0].endsWith('socat')) return 'socat';
    if (a.includes('run')) return 'supervisor';
    return a[0].split('/').pop() ?? 'other';
  } catch {
    return 'other';
  }
}

export class TreeCpu {
  private readonly seen = new Map<number, { role: string; cpuS: number }>();
  private readonly timer: NodeJS.Timeout;
  /** (wall ms, CPU seconds of the tree so far) at every sample. */
  readonly timeline: [number, number][] = [];

  constructor(private readonly root: number, everyMs = 250) {
    this.timer = setInterval(() => this.sample(), everyMs);
    this.sample();
  }

  private sample(): void {
    const parent = new Map<number, number>();
    const cpu = new Map<number, number>();
    for (const e of readdirSync('/proc')) {
      const pid = Number(e);
      if (!Number.isInteger(pid)) continue;
      const s = stat(pid);
      if (s) {
        parent.set(pid, s.ppid);
        cpu.set(pid, s.cpuS);
      }
    }
    for (const [pid, c] of cpu) {
      let p: number | undefined = pid;
      while (p !== undefined && p > 1 && p !== this.root) p = parent.get(p);
      if (p !== this.root) continue;
      const old = this.seen.get(pid);
      this.seen.set(pid, { role: old?.role ?? role(pid), cpuS: Math.max(c, old?.cpuS ?? 0) });
    }
    let total = 0;
    for (const { cpuS } of this.seen.values()) total += cpuS;
    this.timeline.push([Date.now(), total]);
  }

  /** The tree's CPU seconds at wall time `ms` (linear between samples). */
  at(ms: number): number {
    const t = this.timeline;
    if (!t.length) return 0;
    if (ms <= t[0][0]) return t[0][1];
    for (let i = 1; i < t.length; i++) {
      if (t[i][0] >= ms) {
        const [a, ca] = t[i - 1];
        const [b, cb] = t[i];
        return ca + ((cb - ca) * (ms - a)) / Math.max(1, b - a);
      }
    }
    return t[t.length - 1][1];
  }

  /** Stops sampling; CPU seconds per role and in all (the root included). */
  stop(): { totalS: number; byRole: Record<string, number> } {
    this.sample();
    clearInterval(this.timer);
    const byRole: Record<string, number> = {};
    for (const { role: r, cpuS } of this.seen.values()) byRole[r] = (byRole[r] ?? 0) + cpuS;
    return { totalS: Object.values(byRole).reduce((a, b) => a + b, 0), byRole };
  }
}
