/**
 * `qkd` command dispatcher. Each sub-command is a module in ./commands/<name>.ts exporting
 * `summary` (one line for --help; files starting with '_' are internal and not listed), `usage` (full help text) and `run(args): Promise<number>`
 * (exit code). Commands are discovered from the folder, so adding one touches no shared file.
 */
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QkdError } from '../errors.ts';

export interface Command {
  summary: string;
  usage: string;
  run(args: string[]): Promise<number>;
  /** The command writes secrets, keys or configurations: files it creates are 0600, folders 0700. */
  privateFiles?: boolean;
}

const commandsDir = join(dirname(fileURLToPath(import.meta.url)), 'commands');

function commandNames(): string[] {
  return readdirSync(commandsDir)
    .filter((f) => f.endsWith('.ts'))
    .map((f) => f.slice(0, -3))
    .sort();
}

async function load(name: string): Promise<Command> {
  return (await import(join(commandsDir, `${name}.ts`))) as Command;
}

async function help(): Promise<string> {
  const lines = ['qkd: software of a QKD node (drivers, timing, post-processing, key delivery)', '',
    'Usage: qkd <command> [options]    (qkd <command> --help for details)', '', 'Commands:'];
  // Commands whose file starts with '_' are internal (process entry points the supervisor uses).
  for (const name of commandNames().filter((n) => !n.startsWith('_'))) {
    const c = await load(name);
    lines.push(`  ${name.padEnd(12)} ${c.summary}`);
  }
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write((await help()) + '\n');
    return name ? 0 : 2;
  }
  if (!commandNames().includes(name)) {
    process.stderr.write(`qkd: unknown command '${name}'. Run 'qkd --help' for the list.\n`);
    return 2;
  }
  const cmd = await load(name);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(cmd.usage.trimEnd() + '\n');
    return 0;
  }
  if (cmd.privateFiles) process.umask(0o077);
  try {
    return await cmd.run(rest);
  } catch (err) {
    if (err instanceof QkdError) {
      process.stderr.write(`qkd ${name}: ${err.message} [${err.code}]\n`);
      return 1;
    }
    throw err;
  }
}
