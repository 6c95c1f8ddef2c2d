/**
 * `qkd calibrate <step>`: runs one calibration step on the emulated lab (default) and writes a
 * versioned record plus an SVG plot into calibration/ (or --out), printing a terminal plot and
 * the numbers. Progress goes to stderr.
 */
import { createRequire } from 'node:module';
import { basename } from 'node:path';
import { ConfigError } from '../../errors.ts';
import { numberOption, parseOptions } from '../args.ts';
import { CALIBRATION_STEPS, runStep, type CalibrationStep } from '../../timing/calibrate.ts';
import { emulatedRig } from '../../lab/calibration-rig.ts';
import { svgPlot, terminalPlot } from '../../timing/plot.ts';
import { makeRecord, writeRecord, loadCalibration } from '../../timing/records.ts';
import { deviceRig } from '../../timing/device-rig.ts';
import type { AlicePattern } from '../../timing/pattern.ts';
import type { CalibrationRig } from '../../timing/calibrate.ts';
import { openConfiguredSet } from '../../devices/cli.ts';
import type { PhotonSource, TimeTagger } from '../../devices/types.ts';
import { asRecorded, replayCalibrationRig, replayDelays, REPLAY_STEPS } from './calibrate-replay.ts';

export const summary = 'measure delays, gate window, sync, dark counts, afterpulsing, jitter or efficiency';
export const usage = `qkd calibrate <step> [options]
qkd calibrate check [options]

Steps: ${CALIBRATION_STEPS.join(', ')}
  delays        per-channel timing histogram vs the pulse clock: centroid, width, delays to line up
  window        acceptance window around the peak (signal vs dark counts/afterpulses), QBER contribution
  sync          clock offset, drift, peak-over-noise confidence, time to lock
  dark-counts   clicks per channel with the source off (per gate and per second)
  afterpulsing  afterpulse probability, decay and dead time from inter-click intervals
  jitter        timing jitter (sigma, FWHM) per channel
  efficiency    detection efficiency per channel, relative to the best
  check         load the records in --out and report missing, stale or mismatched ones

Options:
  --preset <name>     link preset of the emulated lab (default reference-decoy)
  --distance <km>     fibre length (default: the preset's)
  --seed <n>          emulator seed (default 1)
  --seconds <s>       seconds of data to measure (default per step)
  --bin <ps>          histogram bin in ps (default 2)
  --out <dir>         where records go (default calibration/)
  --no-plot           do not print the terminal plot

  --device <id>       take the tags from this configured time-tagger (e.g. an S-Fifteen TDC1) and
                      switch/attenuate the configuration's photon source: dark-counts, efficiency,
                      afterpulsing (the timing steps need Alice's pattern, not available to a
                      device rig yet)
  --config <file>     node configuration with that device (default $QKD_NODE_CONFIG, else the
                      built-in emulated set)

  --replay <file>     measure on a recording instead (PicoQuant .ptu, quTAG .qutag/.bin, qcrypto
                      .a1/.a1x; --format ptu|qutag|a1|a1-legacy when the name does not tell):
                      ${REPLAY_STEPS.join(', ')} (delays: T3 recordings, against their sync).
                      A recording cannot switch its source: dark-counts must be a recording taken
                      with the source off. --seconds: the first s of it (default: all of it)
  --channels <list>   recording channels to calibrate, e.g. 1,2 (default: all with events)

Runs against the emulated lab unless --device or --replay is given (docs/timing.md, docs/devices.md).
Each run writes <out>/<step>-<UTC time>.json (see calibration/README.md) and the same name .svg.`;

export async function run(args: string[]): Promise<number> {
  const { values, positionals } = parseOptions(args, {
    preset: { type: 'string' }, distance: { type: 'string' }, seed: { type: 'string' }, seconds: { type: 'string' },
    bin: { type: 'string' }, out: { type: 'string' }, 'no-plot': { type: 'boolean' },
    device: { type: 'string' }, config: { type: 'string' }, replay: { type: 'string' }, format: { type: 'string' }, channels: { type: 'string' },
  });
  const step = positionals[0];
  const out = values.out ?? 'calibration';
  const presetName = values.preset ?? 'reference-decoy';
  if (!step) throw new ConfigError('BAD_OPTION', `calibrate: which step? One of ${CALIBRATION_STEPS.join(', ')}, or check.`);
  let seed: bigint;
  try { seed = BigInt(values.seed ?? '1'); } catch { throw new ConfigError('BAD_OPTION', `--seed expects an integer, got '${values.seed}'.`); }
  const distanceKm = values.distance === undefined ? undefined : numberOption('distance', values.distance, 0);
  const rig = emulatedRig(presetName, { seed, distanceKm });
  if (step === 'check') {
    const { records, problems } = loadCalibration(out, { devices: rig.devices, profiles: rig.profiles });
    for (const [s, r] of Object.entries(records)) process.stdout.write(`ok       ${s.padEnd(13)} ${r!.createdAt}  ${r!.summary}\n`);
    for (const p of problems) process.stdout.write(`${p.kind.padEnd(8)} ${String(p.step).padEnd(13)} ${p.message}\n`);
    return problems.length ? 1 : 0;
  }
  if (!CALIBRATION_STEPS.includes(step as CalibrationStep)) {
    throw new ConfigError('BAD_OPTION', `calibrate: unknown step '${step}'; steps are ${CALIBRATION_STEPS.join(', ')}, or check.`);
  }
  const seconds = values.seconds === undefined ? undefined : numberOption('seconds', values.seconds, 1);
  const binPs = values.bin === undefined ? undefined : numberOption('bin', values.bin, 2);
  const tty = process.stderr.isTTY;
  let lastPct = -1;
  const onProgress = (f: number, what: string) => {
    const pct = Math.floor(f * 100);
    if (pct === lastPct) return;
    lastPct = pct;
    const bar = '#'.repeat(Math.round(f * 30)).padEnd(30, '.');
    if (tty) process.stderr.write(`\rcalibrate ${step}: [${bar}] ${String(pct).padStart(3)} % ${what.padEnd(12)}`);
    else if (pct % 25 === 0) process.stderr.write(`calibrate ${step}: ${pct} % ${what}\n`);
  };
  if (values.replay !== undefined && values.device !== undefined) throw new ConfigError('BAD_OPTION', 'give --replay <file> or --device <id>, not both.');
  let used: { rig: Pick<CalibrationRig, 'devices' | 'profiles'> & Partial<CalibrationRig>; close(): Promise<void> };
  let res: Awaited<ReturnType<typeof runStep>>;
  if (values.replay !== undefined && step === 'delays') {
    const file = values.replay;
    const d = await replayDelays(file, { format: values.format, channels: values.channels, binPs });
    res = asRecorded(d.res, file, d.scan, Number(d.scan.lastPs - d.scan.firstPs) / 1e12);
    used = { rig: { devices: [{ id: `replay:${basename(file)}`, kind: 'time-tagger', model: 'replay', emulated: false }], profiles: { tagger: 'replay', recording: basename(file) } }, close: async () => undefined };
  } else if (values.replay !== undefined) {
    const file = values.replay;
    const r = await replayCalibrationRig(step as CalibrationStep, file, { format: values.format, channels: values.channels, seconds });
    used = r;
    try {
      res = asRecorded(await runStep(step as CalibrationStep, r.rig, { seconds: r.seconds, binPs, onProgress, ...r.opts }), file, r.scan, r.seconds);
    } finally {
      await r.close();
    }
  } else {
    const dev = values.device ? await deviceCalibrationRig(step as CalibrationStep, values.device, values.config) : { rig, close: async () => undefined };
    used = dev;
    try {
      res = await runStep(step as CalibrationStep, dev.rig, { seconds, binPs, onProgress });
    } finally {
      await dev.close();
    }
  }
  if (tty) process.stderr.write('\n');
  const pkg = createRequire(import.meta.url)('../../../package.json') as { name: string; version: string };
  const rec = makeRecord(res, { devices: used.rig.devices, profiles: used.rig.profiles, software: { name: pkg.name, version: pkg.version } });
  const svg = svgPlot(res.plot);
  const file = writeRecord(out, rec, svg);
  if (!values['no-plot']) process.stdout.write(terminalPlot(res.plot));
  process.stdout.write(`${res.summary}\n`);
  process.stdout.write(`result: ${JSON.stringify(res.result)}\nuncertainty: ${JSON.stringify(res.uncertainty)}\n`);
  process.stdout.write(`wrote ${file} and ${file.replace(/\.json$/, '.svg')}\n`);
  return 0;
}

/** Steps that only count clicks per channel (with the source on, off or attenuated). */
const COUNT_STEPS: CalibrationStep[] = ['dark-counts', 'efficiency', 'afterpulsing'];

/**
 * A calibration rig on configured devices: tags from the time-tagger `id`, source control through
 * the configuration's photon source. Only the counting steps: the timing steps index pulses with
 * Alice's intensity pattern, which a device rig does not have.
 */
async function deviceCalibrationRig(step: CalibrationStep, id: string, config: string | undefined): Promise<{ rig: CalibrationRig; close(): Promise<void> }> {
  if (!COUNT_STEPS.includes(step)) {
    throw new ConfigError('CALIBRATE_DEVICE_STEP', `calibrate ${step} --device ${id}: this step indexes pulses with Alice's intensity pattern, which a device rig does not have; with --device run ${COUNT_STEPS.join(', ')}, or run ${step} on the emulated lab.`);
  }
  const set = openConfiguredSet(config, true);
  try {
    const tagger = set.get(id);
    if (tagger.kind !== 'time-tagger') throw new ConfigError('BAD_OPTION', `--device ${id} is a ${tagger.kind}, not a time-tagger.`);
    const slot = [...set.slots.values()].find((s) => s.device?.kind === 'photon-source');
    if (!slot?.device) throw new ConfigError('CALIBRATE_NO_SOURCE', `calibrate ${step} switches or attenuates the photon source: add one to ${set.config.file ?? 'the node configuration'}.`);
    const source = slot.device as PhotonSource;
    await (tagger as TimeTagger).open();
    await source.open();
    const meanPhotons = [await source.intensity(0), await source.intensity(1), await source.intensity(2)];
    const pattern: AlicePattern = {
      meanPhotons,
      intensities() {
        throw new ConfigError('CALIBRATE_NO_PATTERN', `calibrate ${step}: Alice's intensity pattern is not available to a device rig.`);
      },
    };
    const rig = deviceRig({
      tagger: tagger as TimeTagger, source, pattern, repRateHz: await source.repetitionRateHz(),
      profiles: { tagger: tagger.profile, source: source.profile },
      // Tags read ahead before a source change are dropped; the tagger's and the line's buffers
      // can hold some 100 ms of clicks, so settle longer than the 1 ms default.
      settlePs: 2e11,
    });
    return { rig, close: async () => { await rig.close(); await set.close(); } };
  } catch (err) {
    await set.close();
    throw err;
  }
}
