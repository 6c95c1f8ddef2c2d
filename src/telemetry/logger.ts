/**
 * Structured logger: one JSON object per line, {ts, level, component, msg, ...fields}, every record
 * passed through the redaction layer (./redact.ts) before it is serialised, so key bytes and
 * secrets cannot reach a log whatever a caller passes.
 *
 * Libraries do not print: they take a Logger (or create one with a component name) and the
 * process decides where lines go (stderr by default; `sink` for files, tests, shipping).
 * Synchronous, single-threaded; a sink that throws is ignored (logging never breaks the caller).
 */
import { redact, redactString } from './redact.ts';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const RESERVED = new Set(['ts', 'level', 'component', 'msg']);

export type LogFields = Record<string, unknown>;

export interface LoggerOptions {
  /** Which part of the node speaks, e.g. 'node.alice', 'delivery.push', 'timing.sync'. */
  component: string;
  /** Minimum level written. Default: $QKD_LOG_LEVEL, else 'info'. */
  level?: LogLevel;
  /** Receives each line (without trailing newline). Default: process.stderr. */
  sink?: (line: string) => void;
  /** Wall clock in ms since the epoch (inject a fixed clock in tests). */
  clock?: () => number;
  /** Fields added to every record of this logger. */
  fields?: LogFields;
}

export interface Logger {
  readonly component: string;
  level: LogLevel;
  enabled(level: LogLevel): boolean;
  debug(msg: string, fields?: LogFields | Error): void;
  info(msg: string, fields?: LogFields | Error): void;
  warn(msg: string, fields?: LogFields | Error): void;
  error(msg: string, fields?: LogFields | Error): void;
  /** A logger with extra fixed fields (and optionally another component name), same sink. */
  child(fields: LogFields & { component?: string }): Logger;
}

function envLevel(): LogLevel {
  const v = process.env.QKD_LOG_LEVEL;
  return v === 'debug' || v === 'info' || v === 'warn' || v === 'error' ? v : 'info';
}

const defaultSink = (line: string): void => {
  process.stderr.write(line + '\n');
};

/** Builds the redacted record object (exported for tests and for sinks that want objects). */
export function buildRecord(level: LogLevel, component: string, msg: string, nowMs: number, ...fieldSets: (LogFields | undefined)[]): Record<string, unknown> {
  const rec: Record<string, unknown> = {
    ts: new Date(nowMs).toISOString(),
    level,
    component: redactString(component),
    msg: redactString(String(msg)),
  };
  for (const fields of fieldSets) {
    if (!fields) continue;
    const red = redact(fields) as Record<string, unknown>;
    for (const [k, v] of Object.entries(red)) rec[RESERVED.has(k) ? `_${k}` : k] = v;
  }
  return rec;
}

export function createLogger(opts: LoggerOptions): Logger {
  const sink = opts.sink ?? defaultSink;
  const clock = opts.clock ?? Date.now;
  const base = opts.fields;
  const state = { level: opts.level ?? envLevel() };
  const write = (level: LogLevel, msg: string, fields?: LogFields | Error): void => {
    if (ORDER[level] < ORDER[state.level]) return;
    const f = fields instanceof Error ? { err: fields } : fields;
    let line: string;
    try {
      line = JSON.stringify(buildRecord(level, opts.component, msg, clock(), base, f));
    } catch {
      line = JSON.stringify({ ts: new Date(clock()).toISOString(), level, component: opts.component, msg: '[unserialisable log record]' });
    }
    try {
      sink(line);
    } catch {
      /* a broken sink must not break the caller */
    }
  };
  return {
    component: opts.component,
    get level() {
      return state.level;
    },
    set level(l: LogLevel) {
      state.level = l;
    },
    enabled: (l) => ORDER[l] >= ORDER[state.level],
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    child: ({ component, ...fields }) =>
      createLogger({ component: component ?? opts.component, level: state.level, sink, clock, fields: { ...base, ...fields } }),
  };
}

/** An in-memory sink: `lines` holds what was written, `records()` parses them. For tests. */
export function createMemorySink(): { sink: (line: string) => void; lines: string[]; records(): Record<string, unknown>[] } {
  const lines: string[] = [];
  return { sink: (l) => void lines.push(l), lines, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}
