/**
 * `qkd _node --config FILE`: one node process of a run (internal; `qkd run` starts two).
 * Talks to the supervisor over the IPC channel (ready, status, block, alarm, summary messages)
 * and writes JSON-lines logs to stdout through the redacting logger.
 */
import { ConfigError } from '../../errors.ts';
import { parseOptions } from '../args.ts';
import { readNodeConfig } from '../../node/config.ts';
import { runNodeProcess } from '../../node/process.ts';

/** State, secrets, keys and configurations it writes are readable by their owner only. */
export const privateFiles = true;
export const summary = 'internal: one node process of `qkd run`';
export const usage = 'qkd _node --config FILE\n\nStarted by `qkd run`; not meant to be run by hand.';

export async function run(args: string[]): Promise<number> {
  const { values } = parseOptions(args, { config: { type: 'string' } });
  if (!values.config) throw new ConfigError('CLI_USAGE', 'qkd _node needs --config FILE');
  const cfg = readNodeConfig(values.config);
  const code = await runNodeProcess(cfg);
  // Everything is flushed and closed by now; a library handle (socket, timer) must not keep a
  // stopped node alive, so leave once stdout has drained.
  setTimeout(() => process.exit(code), 200).unref();
  return code;
}
