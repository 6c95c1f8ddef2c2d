/**
 * When the supervisor restarts a crashed child (a node or a reference KMS), and when it gives up.
 *
 * Exponential backoff from `baseDelayMs` (doubling per crash still inside the window, capped at
 * `maxDelayMs`); at most `maxRestarts` restarts within any `windowMs`: one crash more inside the
 * window is a crash loop, and the supervisor stops the run with a `process-crash-loop` alarm
 * rather than restart a process that cannot stay up. Pure bookkeeping over the times it is given
 * (no timers), so a test can walk it through any history.
 */
export interface RestartLimits {
  maxRestarts: number;
  windowMs: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

/** The run's defaults: 5 restarts in 2 minutes, 0.5 s doubling up to 8 s. */
export const DEFAULT_RESTART_LIMITS: RestartLimits = { maxRestarts: 5, windowMs: 120_000, baseDelayMs: 500, maxDelayMs: 8_000 };

export type RestartDecision =
  | { restart: true; delayMs: number; attempt: number; ofMax: number }
  | { restart: false; crashes: number; windowMs: number };

export class RestartPolicy {
  private readonly crashes = new Map<string, number[]>();
  constructor(readonly limits: RestartLimits = DEFAULT_RESTART_LIMITS) {
    const l = limits;
    if (!(l.maxRestarts >= 0 && l.windowMs > 0 && l.baseDelayMs >= 0 && l.maxDelayMs >= l.baseDelayMs)) {
      throw new RangeError(`restart limits need maxRestarts ≥ 0, windowMs > 0 and 0 ≤ baseDelayMs ≤ maxDelayMs (got ${JSON.stringify(l)})`);
    }
  }

  /** Child `name` crashed at `nowMs`: restart it after `delayMs`, or give up (a crash loop). */
  onCrash(name: string, nowMs: number): RestartDecision {
    const { maxRestarts, windowMs, baseDelayMs, maxDelayMs } = this.limits;
    const recent = (this.crashes.get(name) ?? []).filter((t) => nowMs - t < windowMs);
    if (recent.length >= maxRestarts) {
      this.crashes.set(name, recent);
      return { restart: false, crashes: recent.length + 1, windowMs };
    }
    recent.push(nowMs);
    this.crashes.set(name, recent);
    const delayMs = Math.min(maxDelayMs, baseDelayMs * 2 ** (recent.length - 1));
    return { restart: true, delayMs, attempt: recent.length, ofMax: maxRestarts };
  }

  /** Restarts of `name` counted inside the window ending at `nowMs`. */
  recent(name: string, nowMs: number): number {
    return (this.crashes.get(name) ?? []).filter((t) => nowMs - t < this.limits.windowMs).length;
  }
}
