import { parseOptions } from '../args.ts';
import { describeAll, formatTable, openConfiguredSet } from '../../devices/cli.ts';

export const summary = 'list the configured devices (emulated or real) with profile, identity and state';
export const usage = `qkd devices [--config <node.json>] [--json]

Opens every device of the node configuration (default: the emulated set alice-source,
bob-detector-0, bob-detector-1, bob-tagger; or --config / $QKD_NODE_CONFIG), asks each for its
identity (*IDN? for serial devices, the identity control request for USB ones) and prints:
id, kind, profile, transport, vendor/model/serial, firmware, state.

Options:
  --config <file>   node configuration (JSON; see docs/devices.md)
  --json            print the list as JSON

Exit code 0 when every device answered, 1 when one or more did not (listed with the reason).`;

export async function run(args: string[]): Promise<number> {
  const { values } = parseOptions(args, { config: { type: 'string' }, json: { type: 'boolean' } });
  const set = openConfiguredSet(values.config, true);
  try {
    const rows = await describeAll(set);
    if (values.json) {
      process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
    } else {
      const table = [['ID', 'KIND', 'PROFILE', 'TRANSPORT', 'IDENTITY', 'FIRMWARE', 'STATE']];
      for (const r of rows) {
        table.push([r.id, r.kind, r.profile, r.transport, r.identity ? `${r.identity.vendor} ${r.identity.model} ${r.identity.serial}` : '-', r.identity?.firmware ?? '-', r.state]);
      }
      process.stdout.write(formatTable(table) + '\n');
      for (const r of rows) if (r.error) process.stdout.write(`  ${r.id}: ${r.error}\n`);
    }
    return rows.every((r) => r.state === 'ready') ? 0 : 1;
  } finally {
    await set.close();
  }
}
