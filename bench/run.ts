/**
 * `npm run bench [-- <name> ...]`: runs every bench/<name>.bench.ts (or the named ones) and writes
 * bench/results.json, an array of BenchResult. Each bench module exports
 * `run(): Promise<BenchResult[]>`; it repeats its measurement and reports the median itself
 * (helpers in ./stats.ts), and runs the slow reference on the same input for `baseline`.
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResult } from './stats.ts';

const here = dirname(fileURLToPath(import.meta.url));
const all = readdirSync(here).filter((f) => f.endsWith('.bench.ts')).map((f) => f.slice(0, -9)).sort();
const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !all.includes(w));
if (unknown.length) {
  console.error(`bench: unknown benchmark(s) ${unknown.join(', ')}; available: ${all.join(', ')}`);
  process.exit(2);
}
const run = wanted.length ? wanted : all;
// Running some benchmarks replaces their earlier results and keeps the others' (params.bench
// names the file a result came from).
const file = join(here, 'results.json');
const earlier: BenchResult[] = wanted.length && existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as BenchResult[]) : [];
const results: BenchResult[] = earlier.filter((r) => !run.includes(String(r.params?.bench)));
for (const name of run) {
  console.error(`bench: ${name} ...`);
  const mod = (await import(join(here, `${name}.bench.ts`))) as { run(): Promise<BenchResult[]> };
  for (const r of await mod.run()) {
    r.params = { ...r.params, bench: name };
    results.push(r);
    console.log(JSON.stringify(r));
  }
}
writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
console.error(`bench: wrote ${results.length} results to bench/results.json`);
