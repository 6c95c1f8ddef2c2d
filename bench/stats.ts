/** Shared shape and statistics for benchmarks. The machine is noisy: always report medians. */
export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  better: 'higher' | 'lower';
  params: Record<string, unknown>;
  /** The same work done by the slow reference implementation in the same run. */
  baseline?: number;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Runs `fn` `repeats` times (after one warm-up) and returns the median seconds per call. */
export async function medianSeconds(fn: () => unknown | Promise<unknown>, repeats = 5): Promise<number> {
  await fn();
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return median(times);
}

/**
 * Like medianSeconds, in CPU seconds of this process (user + system): for work on one thread, a
 * figure the other loads of a shared machine do not inflate (wall time on 2 busy cores does).
 */
export async function medianCpuSeconds(fn: () => unknown | Promise<unknown>, repeats = 5): Promise<number> {
  await fn();
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const c0 = process.cpuUsage();
    await fn();
    const c = process.cpuUsage(c0);
    times.push((c.user + c.system) / 1e6);
  }
  return median(times);
}
