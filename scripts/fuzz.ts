/**
 * Long fuzzing runs: `npm run fuzz -- [--seconds N] [--seed S] [--hang-seconds H] [TARGET...]`
 * (default: every target, 60 s each). Each target runs in a worker thread; its corpus
 * (test/fuzz/corpus/TARGET/) is replayed, then random, mutated and structured inputs until the
 * time is up or the first finding, which is shrunk and added to the corpus as `crash-<hash>`
 * (a regression case from then on: the CI tests replay it). An input that runs longer than
 * H seconds (default 10) is a hang: the worker is stopped and the input kept as `hang-<hash>`.
 * Exit code 1 when anything was found. The CI tests (test/fuzz/*.test.ts) run the same
 * targets for about a second each.
 */
import { Worker } from 'node:worker_threads';
import { ALL_TARGET_NAMES } from '../src/testkit/fuzz-targets.ts';
import { addToCorpus } from '../src/testkit/fuzz.ts';

const HELP = 'usage: npm run fuzz -- [--seconds N] [--seed S] [--hang-seconds H] [TARGET...]\ntargets: ' + ALL_TARGET_NAMES.join(', ');
const args = process.argv.slice(2);
let seconds = 60;
let hangSeconds = 10;
let seed: number | undefined;
const names: string[] = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  const num = (what: string) => {
    const v = Number(args[++i]);
    if (!Number.isFinite(v) || v <= 0) {
      console.error(`${a}: expected a positive number of ${what}, got ${JSON.stringify(args[i])}\n${HELP}`);
      process.exit(2);
    }
    return v;
  };
  if (a === '--seconds') seconds = num('seconds');
  else if (a === '--hang-seconds') hangSeconds = num('seconds');
  else if (a === '--seed') seed = num('seed') >>> 0;
  else if (a === '--help' || a === '-h') {
    console.log(HELP);
    process.exit(0);
  } else if (ALL_TARGET_NAMES.includes(a)) names.push(a);
  else {
    console.error(`unknown target or option '${a}'\n${HELP}`);
    process.exit(2);
  }
}

/** Runs one target in a worker; resolves with what it found (or undefined). */
function runTarget(name: string): Promise<string | undefined> {
  // The worker writes each input here before running it: [counter, length, bytes...].
  const sab = new SharedArrayBuffer(8 + (1 << 20));
  const head = new Int32Array(sab, 0, 2);
  const w = new Worker(new URL('./fuzz-worker.mjs', import.meta.url), { workerData: { name, ms: seconds * 1000, seed, sab } });
  return new Promise((resolve) => {
    let lastCount = -1;
    let still = 0;
    const watch = setInterval(() => {
      const c = Atomics.load(head, 0);
      // No input yet: the target is still setting up (servers, certificates), not hanging.
      if (c === 0) return;
      if (c !== lastCount) {
        lastCount = c;
        still = 0;
        return;
      }
      if (++still * 0.5 < hangSeconds) return;
      const input = new Uint8Array(sab, 8, Atomics.load(head, 1)).slice();
      const file = addToCorpus(name, input, 'hang');
      void w.terminate();
      finish(`${name}: an input ran over ${hangSeconds} s (hang): kept as ${file}`);
    }, 500);
    let done = false;
    const finish = (msg: string | undefined) => {
      if (done) return;
      done = true;
      clearInterval(watch);
      resolve(msg);
    };
    w.on('message', (m: { runs: number; ms: number; seed: number; failure?: { input: Uint8Array; kind: string; detail: string; corpusFile?: string } }) => {
      if (!m.failure) {
        console.log(`${name}: ${m.runs} inputs in ${(m.ms / 1000).toFixed(1)} s (seed ${m.seed}), nothing found`);
        return finish(undefined);
      }
      const f = m.failure;
      const file = f.corpusFile ?? addToCorpus(name, f.input, 'crash');
      finish(`${name}: ${f.kind} after ${m.runs} inputs (seed ${m.seed}), ${f.corpusFile ? 'corpus file still fails' : 'kept as'} ${file}\n  ${f.detail.split('\n').slice(0, 6).join('\n  ')}`);
    });
    w.on('error', (err) => finish(`${name}: the worker died: ${err.stack ?? String(err)}`));
    w.on('exit', (code) => finish(code === 0 ? undefined : `${name}: the worker exited with code ${code}`));
  });
}

const found: string[] = [];
for (const name of names.length ? names : ALL_TARGET_NAMES) {
  const r = await runTarget(name);
  if (r) {
    console.log(r);
    found.push(r);
  }
}
console.log(found.length ? `${found.length} target(s) with findings: fix them; the inputs stay in test/fuzz/corpus as regression cases.` : 'no findings');
process.exit(found.length ? 1 : 0);
