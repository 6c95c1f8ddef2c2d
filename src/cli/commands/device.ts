import { ConfigError } from '../../errors.ts';
import { numberOption, parseOptions } from '../args.ts';
import { recordTagStream } from '../../devices/record.ts';
import { formatRange, formatTable, formatValue, openConfiguredSet } from '../../devices/cli.ts';

export const summary = 'read or change one device setting, checked against its profile limits';
export const usage = `qkd device <id> get [<param>] [--config <node.json>] [--json]
qkd device <id> set <param> <value> [--config <node.json>]
qkd device <id> stream [--tags <n>] [--record <file>] [--config <node.json>]   (time-taggers)
qkd device <id> counts [--json] [--config <node.json>]       (time controllers, SNSPD controllers)
qkd device <id> histogram <n> [--json] [--config <node.json>]  (time controllers: on-board histogram n)

get without <param> lists every parameter with its value, limits and unit; per-channel
parameters are addressed as <name>:<channel> (e.g. delay:1). set checks the value against the
profile's {min, max, step} before sending it, and reports the device's own refusal if it has one.
Emulated devices keep their settings between invocations in the state file (docs/devices.md).

Examples:
  qkd device bob-detector-0 get dead_time
  qkd device bob-detector-0 set efficiency 0.15
  qkd device bob-tagger set delay:1 1200
  qkd device bob-tagger stream --tags 1000000 --record run1.qkdtags
  qkd device lab-snspd set bias_current:2 12.5
  qkd device lab-id900 counts --json

stream reads <n> tags (default 100000) through the driver and prints the totals per channel and
the in-band overflow / missed-event counts; --record also writes them to a recording that
openReplayTagger() plays back through the same TimeTagger interface.`;

export async function run(args: string[]): Promise<number> {
  const { values, positionals } = parseOptions(args, { config: { type: 'string' }, json: { type: 'boolean' }, tags: { type: 'string' }, record: { type: 'string' } });
  const [id, verb, param, raw] = positionals;
  if (!id || !['get', 'set', 'stream', 'counts', 'histogram'].includes(verb)) throw new ConfigError('BAD_USAGE', `expected 'qkd device <id> get|set|stream|counts|histogram ...'. See 'qkd device --help'.`);
  if (verb === 'stream') return stream(id, values);
  if (verb === 'counts' || verb === 'histogram') return readings(id, verb, param, values);
  if (verb === 'set' && (param === undefined || raw === undefined)) throw new ConfigError('BAD_USAGE', `expected 'qkd device ${id} set <param> <value>'.`);
  const set = openConfiguredSet(values.config, true);
  try {
    const dev = set.get(id);
    await dev.open();
    const caps = dev.capabilities();
    if (verb === 'set') {
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

async function stream(id: string, values: { config?: string; json?: boolean; tags?: string; record?: string }): Promise<number> {
  const tags = numberOption('tags', values.tags, 100_000);
  if (!Number.isInteger(tags) || tags < 1) throw new ConfigError('BAD_OPTION', `--tags expects a positive whole number, got '${values.tags}'.`);
  const set = openConfiguredSet(values.config, true);
  try {
    const dev = set.get(id);
    if (dev.kind !== 'time-tagger') throw new ConfigError('BAD_USAGE', `${id} is a ${dev.kind}; only time-taggers stream tags.`);
    const identity = await dev.open();
    const perChannel = new Map<number, number>();
    const s = dev.startStream({ maxTags: tags });
    const t0 = process.hrtime.bigint();
    let first: bigint | undefined;
    let last: bigint | undefined;
    async function* counted() {
      for await (const b of s) {
        for (let i = 0; i < b.channel.length; i++) perChannel.set(b.channel[i], (perChannel.get(b.channel[i]) ?? 0) + 1);
        if (b.timePs.length) {
          first ??= b.timePs[0];
          last = b.timePs[b.timePs.length - 1];
        }
        yield b;
      }
    }
    if (values.record) {
      const settings: Record<string, number> = {};
      for (const ch of dev.channels()) settings[`delay:${ch}`] = await dev.delayPs(ch);
      await recordTagStream(counted(), values.record, { deviceId: id, profile: dev.profile, identity, startedAt: new Date().toISOString(), settings });
    } else {
      for await (const _ of counted());
    }
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const summary = {
      device: id, tags: s.stats.tags, batches: s.stats.batches, overflows: s.stats.overflows, missedEvents: s.stats.missedEvents, errors: s.stats.errors,
      spanPs: first !== undefined && last !== undefined ? Number(last - first) : 0,
      perChannel: Object.fromEntries([...perChannel].sort((a, b) => a[0] - b[0])),
      tagsPerSec: Math.round(s.stats.tags / secs),
      ...(values.record ? { recording: values.record } : {}),
    };
    if (values.json) process.stdout.write(JSON.stringify(summary) + '\n');
    else {
      process.stdout.write(`${id}: ${summary.tags} tags in ${summary.batches} batches (${summary.tagsPerSec} tags/s), spanning ${(summary.spanPs / 1e12).toFixed(6)} s of tagger time\n`);
      process.stdout.write(`  per channel: ${Object.entries(summary.perChannel).map(([c, n]) => `${c}: ${n}`).join(', ')}\n`);
      process.stdout.write(`  in band: ${summary.overflows} overflow(s), ${summary.missedEvents} missed event(s), ${summary.errors} error record(s)\n`);
      if (values.record) process.stdout.write(`  recorded to ${values.record}\n`);
    }
    return 0;
  } finally {
    await set.close();
  }
}

/** Counter readings (time and SNSPD controllers) and on-board histograms (time controllers). */
async function readings(id: string, verb: 'counts' | 'histogram', which: string | undefined, values: { config?: string; json?: boolean }): Promise<number> {
  const set = openConfiguredSet(values.config, true);
  try {
    const dev = set.get(id);
    if (verb === 'counts') {
      if (dev.kind !== 'time-controller' && dev.kind !== 'snspd-controller') throw new ConfigError('BAD_USAGE', `${id} is a ${dev.kind}; counts are read from time controllers and SNSPD controllers (a time-tagger: 'qkd device ${id} stream').`);
      await dev.open();
      const c = await dev.countRates();
      if (values.json) process.stdout.write(JSON.stringify({ device: id, ...c }) + '\n');
      else process.stdout.write(formatTable([['CHANNEL', 'RATE'], ...c.channels.map((ch, i) => [String(ch), `${c.ratesPerSec[i]} /s`])]) + `\n  over ${c.integrationMs} ms\n`);
      return 0;
    }
    if (dev.kind !== 'time-controller') throw new ConfigError('BAD_USAGE', `${id} is a ${dev.kind}; on-board histograms are read from time controllers (a time-tagger's: 'qkd histogram --device ${id}').`);
    const n = Number(which ?? '1');
    if (!Number.isInteger(n) || n < 1 || n > 4) throw new ConfigError('BAD_USAGE', `expected 'qkd device ${id} histogram <n>' with n = 1..4, got '${which}'.`);
    await dev.open();
    const h = await dev.histogram(n);
    if (values.json) process.stdout.write(JSON.stringify({ device: id, histogram: n, ...h }) + '\n');
    else {
      const peak = h.counts.indexOf(Math.max(...h.counts));
      const total = h.counts.reduce((a, b) => a + b, 0);
      process.stdout.write(`${id} histogram ${n}: ${h.counts.length} bins of ${h.binPs} ps from ${h.firstBinPs} ps, ${total} events, peak ${h.counts[peak] ?? 0} at ${h.firstBinPs + peak * h.binPs} ps\n`);
    }
    return 0;
  } finally {
    await set.close();
  }
}
