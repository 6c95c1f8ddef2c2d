/**
 * `qkd histogram`: the lab engineer's first look at a recording (PicoQuant .ptu, quTAG binary,
 * qcrypto a1) or a live tagger: a start-stop (lifetime / TCSPC) or g2 (cross-correlation)
 * histogram, as a terminal plot plus an SVG, or as JSON. Decoding and binning run natively
 * (src/core/records.ts, src/core/timing-histogram.ts); this file parses options and prints.
 */
import { basename } from 'node:path';
import { writeFileSync } from 'node:fs';
import { ConfigError } from '../../errors.ts';
import { parseOptions } from '../args.ts';
import { openRecording, RECORDING_FORMATS, type RecordingFormat } from '../../core/records.ts';
import { TimingHistogram, type HistogramMode } from '../../core/timing-histogram.ts';
import { openConfiguredSet } from '../../devices/cli.ts';
import type { TimeTagger } from '../../devices/types.ts';
import { svgPlot, terminalPlot } from '../../timing/plot.ts';

export const summary = 'start-stop (lifetime) or g2 histogram of a recording (.ptu, quTAG, a1) or a live tagger';
export const usage = `qkd histogram --replay <file> | --device <id> --start <ch>|sync --stop <ch> --bin-ps <B> --bins <N>
               [--delay-ps <D>] [--mode start-stop|g2] [--json] [--svg <file>] [--format <f>]
               [--tags <n>] [--config <node.json>]

  --replay <file>     a recording: PicoQuant .ptu (T2/T3), quTAG binary (.qutag/.bin), qcrypto a1
                      (.a1, .a1x = legacy word order); --format ${RECORDING_FORMATS.join('|')} when the name does not tell
  --device <id>       a configured time-tagger instead (node configuration: --config or $QKD_NODE_CONFIG);
                      reads --tags <n> tags (default 1000000)
  --start <ch>|sync   start channel; 'sync' = the sync input (channel 0; in T3 files the sync of each record,
                      so --start sync --stop <ch> is the lifetime histogram)
  --stop <ch>         stop channel
  --bin-ps <B>        bin width in ps;  --bins <N>  number of bins
  --delay-ps <D>      added to every time difference (default 0; a negative one as --delay-ps=-500)
  --mode start-stop   for each stop event the time since the most recent start, plus D, binned from 0 (default)
  --mode g2           every start-stop pair in range, both signs; bins centred on multiples of B, bin N/2 on zero
  --json              print {file, format, records, durationPs, channels: {ch: count}, binPs, firstBinPs, counts}
  --svg <file>        where the SVG goes (default <recording or device>.histogram.svg in the current directory)

Channels: 0 is the sync / start input, inputs count from 1 (PicoQuant front-panel numbering;
qcrypto detector bit b is channel b+1); PicoQuant markers are channels 128-131.

Examples:
  qkd histogram --replay ../shared/data/picoquant/hydraharp/v20_t3.ptu --start sync --stop 1 --bin-ps 64 --bins 3125
  qkd histogram --replay ../shared/data/picoquant/picoharp/v30_t2.ptu --start 0 --stop 1 --bin-ps 1000 --bins 201 --mode g2`;

function channelOption(name: string, v: string | undefined, allowSync: boolean): number | 'sync' {
  if (v === undefined) throw new ConfigError('BAD_OPTION', `--${name} is required (a channel number${allowSync ? ' or sync' : ''}). See --help.`);
  if (allowSync && v === 'sync') return 'sync';
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 255) throw new ConfigError('BAD_OPTION', `--${name} expects a channel 0..255${allowSync ? ' or sync' : ''}, got '${v}'.`);
  return n;
}

function intOption(name: string, v: string | undefined, min: number, fallback?: number): number {
  if (v === undefined) {
    if (fallback === undefined) throw new ConfigError('BAD_OPTION', `--${name} is required. See --help.`);
    return fallback;
  }
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new ConfigError('BAD_OPTION', `--${name} expects an integer >= ${min}, got '${v}'.`);
  return n;
}

export async function run(args: string[]): Promise<number> {
  const { values } = parseOptions(args, {
    replay: { type: 'string' }, device: { type: 'string' }, config: { type: 'string' }, format: { type: 'string' },
    start: { type: 'string' }, stop: { type: 'string' }, 'bin-ps': { type: 'string' }, bins: { type: 'string' },
    'delay-ps': { type: 'string' }, mode: { type: 'string' }, json: { type: 'boolean' }, svg: { type: 'string' }, tags: { type: 'string' },
  });
  if ((values.replay === undefined) === (values.device === undefined)) throw new ConfigError('BAD_OPTION', 'give one of --replay <file> or --device <id>. See --help.');
  const mode = (values.mode ?? 'start-stop') as HistogramMode;
  if (mode !== 'start-stop' && mode !== 'g2') throw new ConfigError('BAD_OPTION', `--mode expects start-stop or g2, got '${values.mode}'.`);
  if (values.format !== undefined && !RECORDING_FORMATS.includes(values.format as RecordingFormat)) {
    throw new ConfigError('BAD_OPTION', `--format expects one of ${RECORDING_FORMATS.join(', ')}, got '${values.format}'.`);
  }
  const start = channelOption('start', values.start, true);
  const stop = channelOption('stop', values.stop, false) as number;
  const binPs = intOption('bin-ps', values['bin-ps'], 1);
  const bins = intOption('bins', values.bins, 1);
  if (bins > 1 << 24) throw new ConfigError('BAD_OPTION', `--bins ${bins} is more than 2^24.`);
  const delayPs = values['delay-ps'] === undefined ? 0 : Number(values['delay-ps']);
  if (!Number.isSafeInteger(delayPs)) throw new ConfigError('BAD_OPTION', `--delay-ps expects an integer number of ps, got '${values['delay-ps']}'.`);

  const counts = new Map<number, number>();
  let first: bigint | undefined;
  let last = 0n;
  const seen = (t: BigInt64Array, c: Uint8Array) => {
    if (!t.length) return;
    if (first === undefined || t[0] < first) first = t[0];
    if (t[t.length - 1] > last) last = t[t.length - 1];
    void c;
  };
  let result: { file: string | null; device?: string; format: string; records: number; durationPs: number; channels: Record<string, number>; binPs: number; firstBinPs: number; counts: number[] };
  let source: string;

  if (values.replay !== undefined) {
    const rec = await openRecording(values.replay, values.format ? { format: values.format as RecordingFormat } : {});
    const viaDtime = start === 'sync' && rec.info.t3;
    if (viaDtime && mode === 'g2') throw new ConfigError('BAD_OPTION', `${values.replay} is T3: its sync is not an event stream, so --mode g2 needs a channel as --start (or use start-stop for the lifetime).`);
    const h = new TimingHistogram({ mode, start: start === 'sync' ? 0 : start, stop, binPs, bins, delayPs });
    for await (const c of rec.chunks()) {
      seen(c.timePs, c.channel);
      if (viaDtime) h.pushDtime(c.dtime!, c.channel, rec.info.dtimeResolutionPs!);
      else h.push(c.timePs, c.channel);
    }
    for (const [ch, n] of rec.stats().perChannel) counts.set(ch, n);
    source = basename(values.replay);
    result = { file: values.replay, format: rec.info.format, records: rec.info.records, durationPs: 0, channels: {}, binPs, firstBinPs: h.firstBinPs, counts: h.counts() };
    if (h.orderViolations) process.stderr.write(`qkd histogram: ${h.orderViolations} events earlier than the one before them (markers are stamped coarser); binned as they came.\n`);
  } else {
    const set = openConfiguredSet(values.config, true);
    try {
      const dev = set.get(values.device!);
      if (dev.kind !== 'time-tagger') throw new ConfigError('BAD_OPTION', `${values.device} is a ${dev.kind}, not a time-tagger.`);
      const tagger = dev as TimeTagger;
      await tagger.open();
      const h = new TimingHistogram({ mode, start: start === 'sync' ? 0 : start, stop, binPs, bins, delayPs });
      const want = intOption('tags', values.tags, 1, 1_000_000);
      let tags = 0;
      let gaps = 0;
      for await (const b of tagger.startStream({ maxTags: want })) {
        seen(b.timePs, b.channel);
        for (let i = 0; i < b.channel.length; i++) counts.set(b.channel[i], (counts.get(b.channel[i]) ?? 0) + 1);
        gaps += b.events.length;
        h.push(b.timePs, b.channel);
        tags += b.timePs.length;
      }
      if (gaps) process.stderr.write(`qkd histogram: the stream reported ${gaps} overflow/missed-event/error record(s): the histogram has holes.\n`);
      source = values.device!;
      result = { file: null, device: values.device, format: `device:${tagger.profile}`, records: tags, durationPs: 0, channels: {}, binPs, firstBinPs: h.firstBinPs, counts: h.counts() };
    } finally {
      await set.close();
    }
  }
  result.durationPs = first === undefined ? 0 : Number(last - first);
  result.channels = Object.fromEntries([...counts].sort((a, b) => a[0] - b[0]).map(([c, n]) => [String(c), n]));
  const startName = start === 'sync' ? 'sync' : `ch ${start}`;
  for (const [what, ch] of [['stop', stop], ['start', start === 'sync' ? undefined : start]] as const) {
    if (ch !== undefined && !counts.get(ch)) {
      process.stderr.write(`qkd histogram: no events on ${what} channel ${ch}; channels with events: ${Object.keys(result.channels).join(', ') || 'none'}.\n`);
    }
  }
  if (values.json) {
    process.stdout.write(JSON.stringify(result) + '\n');
    return 0;
  }
  const x = result.counts.map((_, k) => (result.firstBinPs + (k + 0.5) * binPs) / 1000);
  const total = result.counts.reduce((a, b) => a + b, 0);
  let peak = 0;
  result.counts.forEach((v, k) => { if (v > result.counts[peak]) peak = k; });
  const spec = {
    title: `${mode === 'g2' ? 'g2' : 'start-stop'} ${startName} -> ch ${stop}: ${source}`,
    xLabel: 'time difference (ns)', yLabel: 'counts',
    series: [{ name: `${total} counts, ${binPs} ps bins`, x, y: result.counts }],
  };
  process.stdout.write(terminalPlot(spec));
  const svgFile = values.svg ?? `${source}.histogram.svg`;
  writeFileSync(svgFile, svgPlot(spec));
  process.stdout.write(`${result.format}: ${result.records} records over ${(result.durationPs / 1e12).toFixed(6)} s; channels ${Object.entries(result.channels).map(([c, n]) => `${c}: ${n}`).join(', ')}\n`);
  process.stdout.write(`${total} counts in range; peak bin ${peak} at ${x[peak].toFixed(3)} ns (${result.counts[peak]} counts)\nwrote ${svgFile}\n`);
  return 0;
}
