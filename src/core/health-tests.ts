/**
 * Facade of the native SP 800-90B health-test loop (native/core/src/source_health.rs) that
 * src/node/source-health.ts runs over Alice's read-back. State carries across calls.
 */
import { callNative } from './native-call.ts';
import { native } from './native.ts';

export interface HealthTestFailure {
  /** 'repetition': `count` identical symbols in a row; 'proportion': `count` of a window's first `seen` equal its reference. */
  kind: 'repetition' | 'proportion';
  count: number;
  seen: number;
}

export interface HealthTests {
  /** Both tests over the low 2 bits of each byte, in order; the first failure, or undefined. */
  check(choices: Uint8Array): HealthTestFailure | undefined;
}

export function createHealthTests(rctCutoff: number, aptCutoff: number, window: number): HealthTests {
  const t = callNative(() => new (native().SourceHealthTests)(rctCutoff, aptCutoff, window));
  return {
    check(choices) {
      const f = t.check(choices);
      return f ? { kind: f.kind as HealthTestFailure['kind'], count: f.count, seen: f.seen } : undefined;
    },
  };
}
