/**
 * Fuzzing harness for the parsers that read from outside (serial lines, tagger streams, record
 * files, ZeroMQ frames, channel messages, HTTP bodies, profiles and configuration files).
 *
 * A target takes bytes (so every corpus entry is a plain file) and either returns or throws the
 * project's error type (`QkdError` with a non-empty string `code` and a message). Anything else
 * is a finding: a TypeError / RangeError / non-QkdError, a `QkdError` without code, or an input
 * that took longer than `slowMs` (a hang shows as a test timeout in CI and as a killed worker in
 * `npm run fuzz`, scripts/fuzz.ts).
 *
 * Inputs are drawn three ways (fast-check): raw random bytes, mutations of the target's seeds
 * (real inputs and every file of its corpus, test/fuzz/corpus/<target>/), and a structure-aware
 * generator where the target has one (msgpack or JSON of random values). Corpus files are kept
 * forever: each is a past finding or a real input, replayed on every run.
 *
 * Concurrency: one check runs at a time per target (targets may hold state such as a server).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { QkdError } from '../errors.ts';

export const CORPUS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../test/fuzz/corpus');

export interface FuzzTarget {
  /** Corpus folder name and the name `npm run fuzz -- NAME` takes. */
  name: string;
  /** Real inputs the mutations start from (the corpus files are added to them). */
  seeds(): Uint8Array[];
  /** A structure-aware generator (valid-ish inputs), if any. */
  structured?: fc.Arbitrary<Uint8Array>;
  /** Largest random input (bytes); default 4096. */
  maxBytes?: number;
  /** One-time set-up (servers); the returned function tears it down. */
  setup?(): Promise<() => Promise<void>>;
  /** Parses `input`; throws only QkdError. */
  run(input: Uint8Array): void | Promise<void>;
}

/** What went wrong with one input (undefined: fine). */
export type Finding = { kind: 'untyped-error' | 'no-code' | 'slow'; detail: string };

/** Per-input time limit: generous, the machine is shared (a parser needs microseconds). */
export const SLOW_MS = 2000;

/** Runs one input through a target and judges the outcome. */
export async function checkInput(t: FuzzTarget, input: Uint8Array, slowMs = SLOW_MS): Promise<Finding | undefined> {
  const t0 = performance.now();
  let finding: Finding | undefined;
  try {
    await t.run(input);
  } catch (err) {
    if (!(err instanceof QkdError)) {
      finding = { kind: 'untyped-error', detail: err instanceof Error ? `${err.name}: ${err.message}\n${err.stack ?? ''}` : String(err) };
    } else if (typeof err.code !== 'string' || !err.code || !err.message) {
      finding = { kind: 'no-code', detail: `${err.name} with code ${JSON.stringify(err.code)}: ${err.message}` };
    }
  }
  const ms = performance.now() - t0;
  if (!finding && ms > slowMs) finding = { kind: 'slow', detail: `took ${ms.toFixed(0)} ms (limit ${slowMs} ms)` };
  return finding;
}

/** The corpus of a target: file name and bytes, sorted by name. */
export function readCorpus(name: string): { file: string; bytes: Uint8Array }[] {
  const dir = join(CORPUS_DIR, name);
  if (!existsSync(dir)) return [];
  return readdirSync(dir).sort().map((f) => ({ file: join(dir, f), bytes: new Uint8Array(readFileSync(join(dir, f))) }));
}

/** Adds an input to a target's corpus (named by its hash, so adding twice is harmless). */
export function addToCorpus(name: string, input: Uint8Array, prefix = 'crash'): string {
  const dir = join(CORPUS_DIR, name);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${prefix}-${createHash('sha256').update(input).digest('hex').slice(0, 16)}`);
  writeFileSync(file, input);
  return file;
}

type Edit = [op: number, at: number, byte: number, len: number];

/** Applies byte-level edits (flip, set, insert, delete, truncate, duplicate a run, set an int). */
export function mutate(seed: Uint8Array, edits: Edit[]): Uint8Array {
  let b: Uint8Array = Uint8Array.from(seed);
  for (const [op, at0, byte, len] of edits) {
    const at = b.length ? at0 % (b.length + 1) : 0;
    switch (op) {
      case 0: if (at < b.length) b[at] ^= 1 << (byte & 7); break;
      case 1: if (at < b.length) b[at] = byte; break;
      case 2: b = concat(b.subarray(0, at), Uint8Array.of(byte), b.subarray(at)); break;
      case 3: b = concat(b.subarray(0, at), b.subarray(Math.min(b.length, at + len))); break;
      case 4: b = b.slice(0, at); break;
      case 5: b = concat(b.subarray(0, at), b.subarray(at, at + len), b.subarray(at)); break;
      default: {
        // An "interesting" integer (0, -1, 2^k +- 1) written little-endian over 4 bytes.
        const v = [0, 0xffffffff, 0x7fffffff, 0x80000000, 0xff, 0x100, 0xffff, 0x10000][byte & 7];
        for (let i = 0; i < 4 && at + i < b.length; i++) b[at + i] = (v >>> (8 * i)) & 0xff;
      }
    }
  }
  return b;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Every generator of a target: raw bytes, mutated seeds and corpus, its structured one. */
export function inputs(t: FuzzTarget): fc.Arbitrary<Uint8Array> {
  const seeds = [...t.seeds(), ...readCorpus(t.name).map((c) => c.bytes)];
  const arbs: fc.Arbitrary<Uint8Array>[] = [fc.uint8Array({ maxLength: t.maxBytes ?? 4096 })];
  if (seeds.length) {
    const edit = fc.tuple(fc.nat({ max: 6 }), fc.nat(), fc.nat({ max: 255 }), fc.nat({ max: 64 }));
    arbs.push(fc.tuple(fc.constantFrom(...seeds), fc.array(edit, { minLength: 1, maxLength: 8 })).map(([s, e]) => mutate(s, e)));
  }
  if (t.structured) arbs.push(t.structured);
  return fc.oneof(...arbs);
}

/** Utf-8 bytes of a string. */
export const utf8 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'utf8'));

/** JSON texts of random values (often valid JSON of the wrong shape). */
export const jsonText = fc.jsonValue({ maxDepth: 4 }).map((v) => utf8(JSON.stringify(v)));

/**
 * A seed value (parsed JSON, unpacked msgpack) with one to three fields, at any depth, replaced
 * by a random value or removed, then encoded again: the shape that reaches deepest into a
 * validator (everything right but one field).
 */
export function fieldEdits(seeds: unknown[], value: fc.Arbitrary<unknown>, encode: (v: unknown) => Uint8Array): fc.Arbitrary<Uint8Array> {
  return fc.tuple(fc.constantFrom(...seeds), fc.array(fc.tuple(fc.nat(), fc.option(value, { nil: undefined })), { minLength: 1, maxLength: 3 }))
    .map(([seed, edits]) => {
      const v = structuredClone(seed);
      for (const [pick, x] of edits) {
        const paths = fieldPaths(v);
        if (!paths.length) break;
        const path = paths[pick % paths.length];
        const parent = path.slice(0, -1).reduce((o: any, k) => o[k], v); // eslint-disable-line @typescript-eslint/no-explicit-any
        const k = path[path.length - 1];
        if (x === undefined && !Array.isArray(parent)) delete parent[k];
        else parent[k] = structuredClone(x ?? null); // a copy: fast-check reuses its values while shrinking
      }
      return encode(v);
    });
}

/** fieldEdits for JSON files. */
export const jsonFieldEdits = (seeds: unknown[]): fc.Arbitrary<Uint8Array> =>
  fieldEdits(seeds, fc.jsonValue({ maxDepth: 2 }), (v) => utf8(JSON.stringify(v)));

function fieldPaths(v: unknown, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  if (v && typeof v === 'object' && !ArrayBuffer.isView(v)) {
    for (const [k, c] of Object.entries(v)) {
      const p = [...at, Array.isArray(v) ? Number(k) : k];
      out.push(p);
      fieldPaths(c, p, out);
    }
  }
  return out;
}

/** Splits bytes into chunks at positions drawn from the first byte (a stream arrives in pieces). */
export function chunksOf(input: Uint8Array): Uint8Array[] {
  if (!input.length) return [input];
  const size = 1 + (input[0] % 97);
  const out: Uint8Array[] = [];
  for (let o = 1; o < input.length; o += size) out.push(input.subarray(o, o + size));
  return out;
}

export interface FuzzRun {
  target: string;
  /** Inputs tried (corpus included). */
  runs: number;
  ms: number;
  /** fast-check seed of the random part (to replay it: `npm run fuzz -- --seed N target`). */
  seed: number;
  /** The first bad input (shrunk) and what was wrong with it. */
  failure?: { input: Uint8Array; finding: Finding; corpusFile?: string };
}

/**
 * Replays a target's corpus and its seeds, then fuzzes it for `ms` milliseconds (fast-check,
 * shrinking a failure to a small input). Stops at the first finding. `onInput` sees every input
 * before it runs (the long-run script keeps it where a watchdog can save it if the run hangs).
 */
export async function fuzzTarget(t: FuzzTarget, ms: number, opts: { seed?: number; onInput?: (input: Uint8Array) => void } = {}): Promise<FuzzRun> {
  const t0 = performance.now();
  const seed = opts.seed ?? (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0;
  let runs = 0;
  const done = (failure?: FuzzRun['failure']): FuzzRun => ({ target: t.name, runs, ms: performance.now() - t0, seed, failure });
  for (const c of [...readCorpus(t.name).map((c) => ({ ...c, file: c.file as string | undefined })), ...t.seeds().map((bytes) => ({ file: undefined, bytes }))]) {
    runs++;
    opts.onInput?.(c.bytes);
    const finding = await checkInput(t, c.bytes);
    if (finding) return done({ input: c.bytes, finding, corpusFile: c.file });
  }
  let last: Finding | undefined;
  const r = await fc.check(fc.asyncProperty(inputs(t), async (input) => {
    runs++;
    opts.onInput?.(input);
    last = await checkInput(t, input);
    return last === undefined;
  }), { seed, numRuns: Number.MAX_SAFE_INTEGER, interruptAfterTimeLimit: Math.max(1, ms - (performance.now() - t0)) });
  if (r.failed && r.counterexample) {
    const input = r.counterexample[0];
    return done({ input, finding: (await checkInput(t, input)) ?? last ?? { kind: 'untyped-error', detail: String(r.errorInstance) } });
  }
  return done();
}

/** One line about a failure, with the input as base64 (the test output is the bug report). */
export function describeFailure(r: FuzzRun): string {
  const f = r.failure!;
  return `${r.target}: ${f.finding.kind} on ${f.corpusFile ?? `input ${Buffer.from(f.input).toString('base64')}`} (seed ${r.seed}): ${f.finding.detail}`;
}

/**
 * The CI test of a group of targets (test/fuzz/*.test.ts): one subtest per target, its corpus
 * replayed, then `QKD_FUZZ_MS` (default 1500) ms of random, mutated and structured inputs.
 */
export function fuzzTests(tap: { test(name: string, fn: (t: { notOk(v: unknown, m: string): void; ok(v: unknown, m: string): void }) => Promise<void>): unknown },
  targets: FuzzTarget[]): void {
  const ms = Number(process.env.QKD_FUZZ_MS ?? 1500);
  for (const target of targets) {
    tap.test(target.name, async (t) => {
      const teardown = await target.setup?.();
      try {
        const r = await fuzzTarget(target, ms);
        t.notOk(r.failure, r.failure ? describeFailure(r) : `${r.runs} inputs in ${r.ms.toFixed(0)} ms: no crash, no hang, only coded errors`);
        t.ok(r.runs > 10, `${r.runs} inputs tried`);
      } finally {
        await teardown?.();
      }
    });
  }
}
