/**
 * `qkd calibrate <step> --replay FILE` end to end as a lab engineer runs it (child processes) on
 * the real PicoQuant sample recordings, checked against figures computed here from the slow
 * reference decoder (src/core/records-reference.ts): per-channel counts (dark-counts), each
 * channel's shortest inter-click interval (afterpulsing's dead time), the per-channel peaks of the
 * time since the sync (delays on T3); and clear errors: missing file, unknown format, a channel
 * the file does not hold, a T2 file for delays, steps a recording cannot support, --seconds
 * beyond the recording.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { decodePtuFileReference, ptuHeaderNumber } from '../../src/core/records-reference.ts';
import { peakOf } from '../../src/cli/commands/calibrate-replay.ts';
import { tempDir } from '../../src/testkit/devices.ts';

const root = resolve(import.meta.dirname, '../..');
const bin = join(root, 'bin/qkd.js');
const DATA = resolve(root, '../shared/data/picoquant');
const dir = tempDir('qkd-calibrate-replay-');
t.teardown(() => dir.remove());

function calibrate(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, 'calibrate', ...args, '--out', join(dir.path, 'cal'), '--no-plot'], { cwd: dir.path, encoding: 'utf8', env: { ...process.env, QKD_STATE_DIR: dir.path, QKD_NODE_CONFIG: '' }, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

interface Rec { step: string; settings: Record<string, unknown>; result: Record<string, Record<string, number>>; devices: { id: string; model: string }[] }
function lastRecord(step: string): Rec {
  const files = readdirSync(join(dir.path, 'cal')).filter((f) => f.startsWith(step) && f.endsWith('.json')).sort();
  return JSON.parse(readFileSync(join(dir.path, 'cal', files[files.length - 1]), 'utf8')) as Rec;
}

/** Events of a sample file from the reference decoder; header constants read independently. */
function reference(rel: string) {
  const bytes = readFileSync(join(DATA, rel));
  const ev = decodePtuFileReference(bytes);
  const perChannel = new Map<number, number>();
  ev.channel.forEach((c) => c < 128 && perChannel.set(c, (perChannel.get(c) ?? 0) + 1));
  return { ev, perChannel, resPs: ptuHeaderNumber(bytes, 'MeasDesc_Resolution', true) * 1e12, syncRate: ptuHeaderNumber(bytes, 'TTResult_SyncRate') };
}

t.test('dark-counts on a PicoHarp T2 recording: every event of each channel counted, rates over its span', async (t) => {
  const r = calibrate('dark-counts', '--replay', join(DATA, 'picoharp/v30_t2.ptu'));
  t.equal(r.code, 0, `exit 0${r.code ? ': ' + r.err : ''}`);
  t.match(r.out, /v30_t2\.ptu \(PicoHarp 300 T2\): dark counts: ch0 \d+ \/s .*ch1 \d+ \/s/);
  const rec = lastRecord('dark-counts');
  const ref = reference('picoharp/v30_t2.ptu');
  t.same(rec.result.counts, Object.fromEntries([...ref.perChannel].map(([c, n]) => [String(c), n])), 'counts = the reference decoder\'s per-channel counts');
  const times = ref.ev.timePs.filter((_, i) => ref.ev.channel[i] < 128);
  const spanS = Number(times[times.length - 1] - times[0]) / 1e12;
  t.ok(Math.abs((rec.settings.seconds as number) - spanS) < 1e-3, `measured over the recording's span (${spanS.toFixed(3)} s)`);
  t.ok(Math.abs(rec.result.perSecond['1'] - ref.perChannel.get(1)! / spanS) < 1, 'rate = counts / span');
  t.match(rec.settings, { sourceState: 'as recorded', replay: { file: 'v30_t2.ptu', format: 'ptu', description: 'PicoHarp 300 T2' } });
  t.match(rec.devices, [{ id: 'replay:v30_t2.ptu', model: 'replay' }], 'the record names the recording it was measured on');
  const part = calibrate('dark-counts', '--replay', join(DATA, 'picoharp/v30_t2.ptu'), '--seconds', '1', '--channels', '1');
  t.equal(part.code, 0, `exit 0${part.code ? ': ' + part.err : ''}`);
  const p = lastRecord('dark-counts');
  t.same(Object.keys(p.result.counts), ['1'], 'only the channel asked for');
  const t0 = times[0];
  const inFirst = ref.ev.timePs.filter((x, i) => ref.ev.channel[i] === 1 && x < t0 + 1_000_000_000_000n).length;
  t.ok(Math.abs(p.result.counts['1'] - inFirst) <= 2, `the first second only (${p.result.counts['1']} vs ${inFirst})`);
});

t.test('afterpulsing on a HydraHarp T3 recording: dead time = the shortest interval between clicks of a channel', async (t) => {
  const r = calibrate('afterpulsing', '--replay', join(DATA, 'hydraharp/v20_t3.ptu'));
  t.equal(r.code, 0, `exit 0${r.code ? ': ' + r.err : ''}`);
  const rec = lastRecord('afterpulsing');
  const ref = reference('hydraharp/v20_t3.ptu');
  for (const ch of [1, 2]) {
    const ts = ref.ev.timePs.filter((_, i) => ref.ev.channel[i] === ch);
    ts.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    let min = Infinity;
    for (let i = 1; i < ts.length; i++) min = Math.min(min, Number(ts[i] - ts[i - 1]));
    t.ok(Math.abs(rec.result.deadTimePs[String(ch)] - min) <= 1, `ch${ch} dead time ${rec.result.deadTimePs[String(ch)]} ps = ${min} ps`);
    t.ok(rec.result.probability[String(ch)] >= 0 && rec.result.probability[String(ch)] < 1);
  }
  t.match(rec.settings, { intensityScale: /as recorded/ });
});

t.test('delays on T3 recordings: per-channel peaks after the sync, against histograms from the reference decoder', async (t) => {
  for (const f of ['hydraharp/v20_t3.ptu', 'hydraharp/v10_t3.ptu']) {
    const r = calibrate('delays', '--replay', join(DATA, f));
    t.equal(r.code, 0, `exit 0${r.code ? ': ' + r.err : ''}`);
    const rec = lastRecord('delays');
    const ref = reference(f);
    const bin = rec.settings.binPs as number;
    const period = rec.settings.syncPeriodPs as number;
    const hist = (ch: number) => {
      const h = new Float64Array(Math.ceil(period / bin));
      ref.ev.dtime.forEach((d, i) => ref.ev.channel[i] === ch && h[Math.floor((d * ref.resPs) / bin)]++);
      return peakOf(h, bin);
    };
    const p1 = hist(1), p2 = hist(2);
    t.ok(Math.abs(rec.result.peakPs['1'] - p1.peakPs) < 0.1 && Math.abs(rec.result.peakPs['2'] - p2.peakPs) < 0.1, `${f}: peaks ${rec.result.peakPs['1']}, ${rec.result.peakPs['2']} ps`);
    t.ok(Math.abs(rec.result.relativeDelayPs['2'] - (p2.peakPs - p1.peakPs)) < 0.1, `${f}: ch2 - ch1 = ${rec.result.relativeDelayPs['2']} ps`);
    t.ok(p1.peakPs > p1.risePs && p1.fwhmPs > bin, 'peak after its rising edge, wider than a bin');
  }
});

t.test('peakOf: a known peak on a flat background, and an exponential decay', async (t) => {
  const h = new Float64Array(400).fill(5);
  for (let k = 0; k < 400; k++) h[k] += 1000 * Math.exp(-(((k + 0.5) * 10 - 1234) ** 2) / (2 * 40 ** 2));
  const p = peakOf(h, 10);
  t.ok(Math.abs(p.peakPs - 1234) < 2, `gaussian peak ${p.peakPs.toFixed(1)} ps`);
  t.ok(Math.abs(p.fwhmPs - 2.3548 * Math.hypot(40, 10 / Math.sqrt(12)) * 1.0) < 12, `fwhm ${p.fwhmPs.toFixed(1)} ps`);
  const d = new Float64Array(400);
  for (let k = 100; k < 400; k++) d[k] = 1000 * Math.exp(-(k - 100) / 30);
  const q = peakOf(d, 10);
  t.ok(q.peakPs > 995 && q.peakPs < 1020 && q.risePs < q.peakPs, `decay: peak at its onset (${q.peakPs.toFixed(1)} ps), rise ${q.risePs.toFixed(1)} ps`);
});

t.test('clear errors', async (t) => {
  const missing = calibrate('dark-counts', '--replay', join(DATA, 'no-such.ptu'));
  t.equal(missing.code, 1);
  t.match(missing.err, /no-such\.ptu: cannot open the recording \(ENOENT\).*\[RECORDING_NOT_FOUND\]/);
  const unknown = calibrate('dark-counts', '--replay', join(DATA, 'README.md'));
  t.equal(unknown.code, 1);
  t.match(unknown.err, /README\.md: cannot tell the recording format.*--format ptu\|qutag\|a1\|a1-legacy.*\[BAD_RECORDING\]/);
  const badFormat = calibrate('dark-counts', '--replay', join(DATA, 'picoharp/v30_t2.ptu'), '--format', 'csv');
  t.match(badFormat.err, /--format expects one of ptu, qutag, a1, a1-legacy, got 'csv'/);
  const chan = calibrate('afterpulsing', '--replay', join(DATA, 'hydraharp/v20_t3.ptu'), '--channels', '1,3');
  t.equal(chan.code, 1);
  t.match(chan.err, /channel 3 is not in the recording \(HydraHarp v2 T3; channels with events: 1, 2\).*\[CHANNEL_NOT_IN_RECORDING\]/);
  const t2 = calibrate('delays', '--replay', join(DATA, 'picoharp/v30_t2.ptu'));
  t.equal(t2.code, 1);
  t.match(t2.err, /PicoHarp 300 T2 is not a T3 recording.*--mode g2.*\[CALIBRATE_REPLAY_STEP\]/);
  for (const step of ['window', 'sync', 'jitter', 'efficiency']) {
    const r = calibrate(step, '--replay', join(DATA, 'hydraharp/v20_t3.ptu'));
    t.equal(r.code, 1);
    t.match(r.err, new RegExp(`calibrate ${step} --replay: .*On a recording run dark-counts, afterpulsing, delays.*\\[CALIBRATE_REPLAY_STEP\\]`));
  }
  const long = calibrate('dark-counts', '--replay', join(DATA, 'hydraharp/v20_t3.ptu'), '--seconds', '60');
  t.match(long.err, /--seconds 60: v20_t3\.ptu spans only 9\.999 s of events/);
  const both = calibrate('dark-counts', '--replay', join(DATA, 'hydraharp/v20_t3.ptu'), '--device', 'bob-tagger');
  t.match(both.err, /--replay <file> or --device <id>, not both/);
});
