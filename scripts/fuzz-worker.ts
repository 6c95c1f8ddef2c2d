/** One fuzz target in a worker thread (scripts/fuzz.ts starts it and watches for hangs). */
import { parentPort, workerData } from 'node:worker_threads';
import { targetByName } from '../src/testkit/fuzz-targets.ts';
import { fuzzTarget } from '../src/testkit/fuzz.ts';

const { name, ms, seed, sab } = workerData as { name: string; ms: number; seed?: number; sab: SharedArrayBuffer };
const head = new Int32Array(sab, 0, 2);
const room = new Uint8Array(sab, 8);
const t = await targetByName(name);
const teardown = await t.setup?.();
const r = await fuzzTarget(t, ms, {
  seed,
  onInput(input) {
    const n = Math.min(input.length, room.length);
    room.set(input.subarray(0, n));
    Atomics.store(head, 1, n);
    Atomics.add(head, 0, 1);
  },
});
await teardown?.();
parentPort!.postMessage({ runs: r.runs, ms: r.ms, seed: r.seed,
  failure: r.failure && { input: r.failure.input, kind: r.failure.finding.kind, detail: r.failure.finding.detail, corpusFile: r.failure.corpusFile } });
