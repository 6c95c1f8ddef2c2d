import { ConfigError } from '../../errors.ts';
import { parseOptions } from '../args.ts';
import { formatRange, formatTable, formatValue, openConfiguredSet } from '../../devices/cli.ts';

export const summary = 'read or change one device setting, checked against its profile limits';
export const usage = `qkd device <id> get [<param>] [--config <node.json>] [--json]
qkd device <id> set <param> <value> [--config <node.json>]

get without <param> lists every parameter with its value, limits and unit; per-channel
parameters are addressed as <name>:<channel> (e.g. delay:1). set checks the value against the
profile's {min, max, step} before sending it, and reports the device's own refusal if it has one.
Emulated devices keep their settings between invocations in the state file (docs/devices.md).

Examples:
  qkd device bob-detector-0 get dead_time
  qkd device bob-detector-0 set efficiency 0.15
  qkd device bob-tagger set delay:1 1200`;

export async function run(args: string[]): Promise<number> {
  const { values, positionals } = parseOptions(args, { config: { type: 'string' }, json: { type: 'boolean' } });
  const [id, verb, param, raw] = positionals;
  if (!id || (verb !== 'get' && verb !== 'set')) throw new ConfigError('BAD_USAGE', `expected 'qkd device <id> get|set ...'. See 'qkd device --help'.`);
  if (verb === 'set' && (param === undefined || raw === undefined)) throw new ConfigError('BAD_USAGE', `expected 'qkd device ${id} set <param> <value>'.`);
  const set = openConfiguredSet(values.config, true);
  try {
    const dev = set.get(id);
    await dev.open();
    const caps = dev.capabilities();
    if (verb === 'set') {
      const c0 = caps[param.split(':')[0]];
      if (c0?.secret) {
        if (!/^\d{1,20}$/.test(raw) || !('setSecret' in dev)) throw new ConfigError('BAD_VALUE', `${param} takes an unsigned 64-bit decimal integer.`);
        await (dev as { setSecret(p: string, v: bigint): Promise<void> }).setSecret(param, BigInt(raw));
        process.stdout.write(`${id} ${param} set (secret: not shown, not readable)\n`);
        return 0;
      }
      const value = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(value)) throw new ConfigError('BAD_VALUE', `'${raw}' is not a number; ${param} takes ${formatRange(caps[param.split(':')[0]] ?? { min: 0, max: 0, step: 0, unit: '' })}.`);
      await dev.set(param, value);
      const c = caps[param.split(':')[0]];
      const back = await dev.get(param).catch(() => undefined);
      process.stdout.write(`${id} ${param} = ${back === undefined ? raw : formatValue(back, c)}\n`);
      return 0;
    }
    const names = param ? [param] : Object.keys(caps).flatMap((n) => (caps[n].channels ? caps[n].channels!.map((c) => `${n}:${c}`) : [n]));
    const out: Record<string, number | null> = {};
    const rows = [['PARAMETER', 'VALUE', 'RANGE', 'ACCESS']];
    for (const n of names) {
      const c = caps[n.split(':')[0]];
      let v: number | null = null;
      let shown: string;
      try {
        v = await dev.get(n);
        shown = formatValue(v, c);
      } catch (err) {
        if (param) throw err;
        shown = (err as { code?: string }).code === 'WRITE_ONLY' ? '(write-only)' : `(error: ${(err as Error).message})`;
      }
      out[n] = v;
      rows.push([n, shown, c ? formatRange(c) : '', c?.readonly ? 'read' : 'read/write']);
    }
    if (values.json) process.stdout.write(JSON.stringify(out) + '\n');
    else if (param) process.stdout.write(`${id} ${param} = ${rows[1][1]}\n`);
    else process.stdout.write(formatTable(rows) + '\n');
    return 0;
  } finally {
    await set.close();
  }
}
