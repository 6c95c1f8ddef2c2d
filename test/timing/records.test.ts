// Calibration records: written, loaded, and stale / mismatched / invalid / missing ones reported.
import t from 'tap';
import { mkdtempSync, readdirSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { loadCalibration, makeRecord, requireCalibration, writeRecord } from '../../src/timing/records.ts';
import type { StepResult } from '../../src/timing/calibrate.ts';

const devices = [{ id: 'tagger-1', kind: 'time-tagger', model: 'X', emulated: true }];
const profiles = { link: 'reference-decoy' };
const software = { name: 'qkd-node', version: '0' };
const result = (step: StepResult['step']): StepResult => ({ step, settings: { seconds: 1 }, result: { x: 1 }, uncertainty: { x: 0.1 }, summary: 's', plot: { title: '', xLabel: '', yLabel: '', series: [] } });

t.test('round trip, newest wins, and every kind of problem is reported', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-cal-'));
  const now = new Date('2026-11-23T12:00:00Z');
  writeRecord(dir, makeRecord(result('delays'), { devices, profiles, software, now: new Date('2026-11-22T12:00:00Z') }));
  const newer = makeRecord({ ...result('delays'), result: { x: 2 } }, { devices, profiles, software, now: new Date('2026-11-23T11:00:00Z') });
  writeRecord(dir, newer, '<svg/>');
  writeRecord(dir, makeRecord(result('sync'), { devices, profiles, software, now: new Date('2026-11-20T12:00:00Z') })); // 72 h > 24 h
  writeRecord(dir, makeRecord(result('window'), { devices, profiles: { link: 'snspd-metro' }, software, now }));
  writeRecord(dir, makeRecord(result('jitter'), { devices: [{ ...devices[0], id: 'tagger-2' }], profiles, software, now }));
  writeFileSync(join(dir, 'efficiency-20261123T000000Z.json'), '{not json');
  const rec = makeRecord(result('afterpulsing'), { devices, profiles, software, now });
  writeFileSync(join(dir, 'afterpulsing-20261123T000000Z.json'), JSON.stringify({ ...rec, version: 99 }));
  t.ok(readdirSync(dir).some((f) => f.endsWith('.svg')));
  const { records, problems } = loadCalibration(dir, { devices, profiles, now });
  t.same(records.delays?.result, { x: 2 }, 'newest delays record used');
  const kinds = Object.fromEntries(problems.map((p) => [p.step, p.kind]));
  t.equal(kinds.sync, 'stale');
  t.equal(kinds.window, 'mismatch');
  t.equal(kinds.jitter, 'mismatch');
  t.equal(kinds.afterpulsing, 'version');
  t.equal(kinds['dark-counts'], 'missing');
  t.ok(problems.some((p) => p.kind === 'invalid' && p.file?.includes('efficiency')), 'unparsable file reported');
  t.notOk(records.sync || records.window || records.jitter, 'problem records are not returned');
  t.throws(() => requireCalibration(dir, { devices, profiles, now }), { code: 'CALIBRATION_INVALID' });
  t.same(Object.keys(requireCalibration(dir, { steps: ['delays'], devices, profiles, now })), ['delays']);
});

t.test('qkd calibrate writes a record the loader accepts', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-cal-cli-'));
  const out = execFileSync(process.execPath, ['bin/qkd.js', 'calibrate', 'jitter', '--seconds', '0.03', '--out', dir, '--seed', '3'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  t.match(out, /timing jitter \(sigma\): ch0 2\d\.\d ps/);
  const files = readdirSync(dir);
  t.ok(files.some((f) => /^jitter-\d{8}T\d{6}Z\.json$/.test(f)) && files.some((f) => f.endsWith('.svg')));
  const rec = JSON.parse(readFileSync(join(dir, files.find((f) => f.endsWith('.json'))!), 'utf8'));
  t.equal(rec.schema, 'qkd-calibration');
  t.equal(rec.profiles.link, 'reference-decoy');
  const { records } = loadCalibration(dir, { steps: ['jitter'], profiles: { link: 'reference-decoy' } });
  t.ok(records.jitter);
  let code = 0;
  try { execFileSync(process.execPath, ['bin/qkd.js', 'calibrate', 'check', '--out', dir], { stdio: 'pipe' }); } catch (e) { code = (e as { status: number }).status; }
  t.equal(code, 1, 'check fails while steps are missing');
});
