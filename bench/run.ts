/**
 * `npm run bench [-- <name> ...]`: runs every bench/<name>.bench.ts (or the named ones) and writes
 * bench/results.json, an array of BenchResult. Each bench module exports
 * `run(): Promise<BenchResult[]>`; it repeats its measurement and reports the median itself
 * (helpers in ./stats.ts), and runs the slow reference on the same input for `baseline`.
 */
import { readdirSync, writeFileSync } from 'node:fs';
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
const results: BenchResult[] = [];
for (const name of wanted.length ? wanted : all) {
  console.error(`bench: ${name} ...`);
  const mod = (await import(join(here, `${name}.bench.ts`))) as { run(): Promise<BenchResult[]> };
  for (const r of await mod.run()) {
    results.push(r);
    console.log(JSON.stringify(r));
  }
}
writeFileSync(join(here, 'results.json'), JSON.stringify(results, null, 2) + '\n');
console.error(`bench: wrote ${results.length} results to bench/results.json`);
