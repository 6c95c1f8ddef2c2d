/**
 * Minimal option parsing shared by the commands, on top of node:util parseArgs, turning its
 * exceptions into a ConfigError that says which option was wrong.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from '../errors.ts';

export function parseOptions<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (cause) {
    throw new ConfigError('BAD_OPTION', `${(cause as Error).message}. See --help for the options.`, { cause });
  }
}

/** Parses a finite number option, naming the option in the error. */
export function numberOption(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new ConfigError('BAD_OPTION', `--${name} expects a number, got '${value}'.`);
  return n;
}
