/**
 * `qkd histogram` end to end as a lab engineer runs it (child processes): JSON output on the real
 * PicoQuant sample recordings checked against histograms computed here from the slow reference
 * decoder, a T3 lifetime histogram, the same histogram through a configured replay device, the
 * plot + SVG output, and clear errors for missing / truncated / wrong-format files.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { decodePtuReference } from '../../src/core/records-reference.ts';
import { tempDir } from '../../src/testkit/devices.ts';

const root = resolve(import.meta.dirname, '../..');
const bin = join(root, 'bin/qkd.js');
const DATA = resolve(root, '../shared/data/picoquant');
const dir = tempDir('qkd-histogram-');
t.teardown(() => dir.remove());

function qkd(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, 'histogram', ...args], { cwd: dir.path, encoding: 'utf8', env: { ...process.env, QKD_STATE_DIR: dir.path, QKD_NODE_CONFIG: '' }, timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

interface Result { file: string | null; format: string; records: number; durationPs: number; channels: Record<string, number>; binPs: number; firstBinPs: number; counts: number[] }

function referenceEvents(rel: string) {
  const bytes = readFileSync(join(DATA, rel));
  // Header fields read independently of the native parser: the data offset is right after the
  // Header_End tag (48 bytes), the constants from the file's own tags.
  const end = bytes.indexOf(Buffer.from('Header_End\0', 'latin1'));
  const num = (name: string, float = false) => {
    const at = bytes.indexOf(Buffer.from(name + '\0', 'latin1'));
    return float ? bytes.readDoubleLE(at + 40) : Number(bytes.readBigInt64LE(at + 40));
  };
  const glob = num('MeasDesc_GlobalResolution', true) * 1e12;
  const res = num('MeasDesc_Resolution', true) * 1e12;
  const ev = decodePtuReference(bytes.subarray(end + 48), num('TTResultFormat_TTTRRecType'), glob, res);
  return { ev, records: num('TTResult_NumberOfRecords'), glob, res };
}

t.test('g2 of the PicoHarp T2 recording (sync input vs input 1) = histogram of the reference decoder', async (t) => {
  const r = qkd('--replay', join(DATA, 'picoharp/v30_t2.ptu'), '--start', '0', '--stop', '1', '--bin-ps', '5000', '--bins', '81', '--mode', 'g2', '--delay-ps=-1234', '--json');
  t.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out) as Result;
  const { ev, records } = referenceEvents('picoharp/v30_t2.ptu');
  t.equal(j.format, 'ptu');
  t.equal(j.records, records);
  t.same(j.channels, { 0: 531477, 1: 388700 });
  t.equal(j.durationPs, Number(ev.timePs[ev.timePs.length - 1] - ev.timePs[0]));
  t.equal(j.binPs, 5000);
  t.equal(j.firstBinPs, -(40 + 0.5) * 5000, 'bin 40 centred on zero');
  // Reference: every (start on 0, stop on 1) pair, by brute force over a sliding window.
  const B = 5000, N = 81, D = -1234, h = 40;
  const want = new Array<number>(N).fill(0);
  const starts: number[] = [];
  const stops: number[] = [];
  ev.timePs.forEach((tp, i) => (ev.channel[i] === 0 ? starts : ev.channel[i] === 1 ? stops : []).push(Number(tp)));
  let lo = 0;
  for (const x of stops) {
    while (lo < starts.length && x - starts[lo] + D >= (N - h) * B) lo++;
    for (let k = lo; k < starts.length && x - starts[k] + D >= -(h + 0.5) * B; k++) {
      const bin = Math.floor((x - starts[k] + D + (h + 0.5) * B) / B);
      if (bin >= 0 && bin < N) want[bin]++;
    }
  }
  t.same(j.counts, want);
  t.ok(want.reduce((a, b) => a + b, 0) > 1000, 'a histogram with something in it');
});

t.test('T3 lifetime (start = sync) of the HydraHarp v2 recording: every stop event binned, peak early in the sync period', async (t) => {
  const r = qkd('--replay', join(DATA, 'hydraharp/v20_t3.ptu'), '--start', 'sync', '--stop', '1', '--bin-ps', '64', '--bins', '4096', '--json');
  t.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out) as Result;
  const { ev, res, glob } = referenceEvents('hydraharp/v20_t3.ptu');
  t.equal(j.firstBinPs, 0);
  const want = new Array<number>(4096).fill(0);
  ev.dtime.forEach((d, i) => { if (ev.channel[i] === 1) want[Math.floor((d * Math.round(res)) / 64)]++; });
  t.same(j.counts, want, 'counts = dtime histogram of the reference decoder');
  t.equal(j.counts.reduce((a, b) => a + b, 0), j.channels['1'], 'every channel-1 event lands in the 262 ns range (sync period 200 ns)');
  const peak = j.counts.indexOf(Math.max(...j.counts));
  const peakNs = ((peak + 0.5) * 64) / 1000;
  t.ok(peakNs > 0.5 && peakNs < glob / 1000 / 4, `peak at ${peakNs} ns: after the sync, in the first quarter of the ${glob / 1000} ns period`);
  // A decay: well after the peak the rate is lower than at the peak.
  const at = (ns: number) => j.counts.slice(Math.floor((ns * 1000) / 64), Math.floor((ns * 1000) / 64) + 16).reduce((a, b) => a + b, 0);
  t.ok(at(peakNs + 20) < 0.7 * at(peakNs), 'counts fall after the peak');
});

t.test('the same histogram from a configured replay device (--device), and the plot + SVG output', async (t) => {
  const cfg = join(dir.path, 'node.json');
  writeFileSync(cfg, JSON.stringify({ devices: [{ id: 'lab-ptu', replay: join(DATA, 'picoharp/v30_t2.ptu') }] }));
  const args = ['--start', '0', '--stop', '1', '--bin-ps', '20000', '--bins', '51', '--mode', 'g2', '--json'];
  const file = JSON.parse(qkd('--replay', join(DATA, 'picoharp/v30_t2.ptu'), ...args).out) as Result;
  const dev = qkd('--device', 'lab-ptu', '--config', cfg, '--tags', '100000000', ...args);
  t.equal(dev.code, 0, dev.err);
  const d = JSON.parse(dev.out) as Result & { device: string };
  t.equal(d.device, 'lab-ptu');
  t.same(d.counts, file.counts);
  t.same(d.channels, file.channels);
  t.equal(d.records, 531477 + 388700, 'tags read');
  const plot = qkd('--replay', join(DATA, 'hydraharp/v10_t3.ptu'), '--start', 'sync', '--stop', '2', '--bin-ps', '128', '--bins', '3200');
  t.equal(plot.code, 0, plot.err);
  t.match(plot.out, /start-stop sync -> ch 2: v10_t3\.ptu/);
  t.match(plot.out, /ptu: 167801 records over 29\.99\d+ s; channels 1: 48001, 2: 46559/);
  t.match(plot.out, /wrote v10_t3\.ptu\.histogram\.svg/);
  const svg = join(dir.path, 'v10_t3.ptu.histogram.svg');
  t.ok(existsSync(svg));
  t.match(readFileSync(svg, 'utf8'), /^<svg [^]*<polyline[^]*<\/svg>\n$/);
});

t.test('clear errors: missing, truncated, wrong format, bad options', async (t) => {
  const base = ['--start', '0', '--stop', '1', '--bin-ps', '100', '--bins', '10'];
  let r = qkd('--replay', 'nowhere/run7.ptu', ...base);
  t.equal(r.code, 1);
  t.match(r.err, /qkd histogram: nowhere\/run7\.ptu: cannot open the recording \(ENOENT\)\. Check the path.* \[RECORDING_NOT_FOUND\]/);
  const ph = readFileSync(join(DATA, 'picoharp/v30_t2.ptu'));
  writeFileSync(join(dir.path, 'cut.ptu'), ph.subarray(0, 500_000));
  r = qkd('--replay', 'cut.ptu', ...base);
  t.equal(r.code, 1);
  t.match(r.err, /cut\.ptu: the header says 929254 records \(3717016 bytes\) but \d+ bytes of records follow it: the file is cut short\. Copy the whole file again\. \[RECORDING_TRUNCATED\]/);
  writeFileSync(join(dir.path, 'notes.ptu'), 'measured on Tuesday\n');
  r = qkd('--replay', 'notes.ptu', ...base);
  t.match(r.err, /notes\.ptu: not a PicoQuant \.ptu file \(no PQTTTR magic at the start\)\. Check the file, or give its format \(--format ptu\|qutag\|a1\|a1-legacy\)\. \[BAD_RECORDING\]/);
  writeFileSync(join(dir.path, 'run.dat'), Buffer.alloc(64));
  r = qkd('--replay', 'run.dat', ...base);
  t.match(r.err, /run\.dat: cannot tell the recording format .* Give it: --format/);
  t.equal(qkd('--replay', 'run.dat', '--format', 'a1', ...base, '--json').code, 0, 'with --format it reads (8 empty a1 events)');
  r = qkd('--replay', join(DATA, 'hydraharp/v20_t3.ptu'), '--start', 'sync', '--stop', '1', '--bin-ps', '64', '--bins', '10', '--mode', 'g2');
  t.match(r.err, /is T3: its sync is not an event stream, so --mode g2 needs a channel as --start/);
  t.match(qkd('--replay', 'x.ptu', '--start', '0', '--stop', '1', '--bins', '10').err, /--bin-ps is required/);
  t.match(qkd('--start', '0', '--stop', '1', '--bin-ps', '1', '--bins', '1').err, /give one of --replay <file> or --device <id>/);
  r = qkd('--replay', join(DATA, 'picoharp/v30_t2.ptu'), '--start', '0', '--stop', '7', '--bin-ps', '100', '--bins', '10', '--json');
  t.equal(r.code, 0);
  t.match(r.err, /no events on stop channel 7; channels with events: 0, 1/);
});
