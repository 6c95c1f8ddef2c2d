import t from 'tap';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../src/errors.ts';
import { listLinkPresets, loadLinkPreset, LINK_PRESET_DIR } from '../../src/lab/presets.ts';

const dir = mkdtempSync(join(tmpdir(), 'qkd-lab-presets-'));
const reference = JSON.parse(readFileSync(join(LINK_PRESET_DIR, 'reference-decoy.json'), 'utf8'));

function writePreset(name: string, mutate: (p: any) => void): string {
  const p = structuredClone(reference);
  mutate(p);
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(p));
  return file;
}

function expectInvalid(t: any, file: string, field: string, code = 'LINK_PRESET_INVALID'): void {
  try {
    loadLinkPreset(file);
    t.fail(`expected ${field} to be rejected`);
  } catch (e) {
    t.ok(e instanceof ConfigError, 'ConfigError');
    t.equal((e as ConfigError).code, code);
    t.match((e as Error).message, file, 'message names the file');
    t.match((e as Error).message, `'${field}'`, `message names the field ${field}`);
  }
}

t.test('shipped presets load and validate', async (t) => {
  const names = listLinkPresets();
  for (const n of ['reference-decoy', 'gated-ingaas-lab', 'snspd-metro']) t.ok(names.includes(n), `${n} listed`);
  for (const n of names) {
    const p = loadLinkPreset(n);
    t.equal(p.name, n, `${n}: name matches file`);
    t.ok(p.clock.offsetPs !== 0 && p.clock.driftPpm !== 0, `${n}: clock offset and drift non-zero`);
    t.ok(p.channelDelaysPs.every((d) => d !== 0), `${n}: channel delays non-zero`);
  }
  const r = loadLinkPreset('reference-decoy');
  t.same([r.fibreLossDbPerKm, r.etaBob, r.y0, r.misalignment, r.intensities.signal, r.intensities.decoy, r.intensities.vacuum],
    [0.21, 0.045, 1.7e-6, 0.033, 0.5, 0.1, 0], 'reference-decoy has the Ma05/GYS parameters');
  t.equal(r.detector.deadTimePs, 0);
  t.equal(r.detector.afterpulseProb, 0);
  t.equal(r.distanceKm, 50);
  const g = loadLinkPreset('gated-ingaas-lab');
  t.ok(g.detector.deadTimePs > 0 && g.detector.afterpulseProb > 0, 'InGaAs preset has dead time and afterpulsing');
  const s = loadLinkPreset('snspd-metro');
  t.equal(s.bobBasisChoice, 'passive');
  t.equal(s.detectors.length, 4);
});

t.test('overrides merge nested fields and are validated', async (t) => {
  const p = loadLinkPreset('reference-decoy', { distanceKm: 10, detector: { deadTimePs: 1000 } } as any);
  t.equal(p.distanceKm, 10);
  t.equal(p.detector.deadTimePs, 1000);
  t.equal(p.detector.jitterPs, 20, 'other detector fields kept');
  t.throws(() => loadLinkPreset('reference-decoy', { etaBob: 2 }), { code: 'LINK_PRESET_INVALID', message: /'etaBob'/ });
});

t.test('bad presets: errors name file and field', async (t) => {
  expectInvalid(t, writePreset('neg-dead', (p) => { p.detector.deadTimePs = -1; }), 'detector.deadTimePs');
  expectInvalid(t, writePreset('str-alpha', (p) => { p.fibreLossDbPerKm = '0.2'; }), 'fibreLossDbPerKm');
  expectInvalid(t, writePreset('no-y0', (p) => { delete p.y0; }), 'y0');
  expectInvalid(t, writePreset('probs', (p) => { p.intensityProbs.signal = 0.9; }), 'intensityProbs');
  expectInvalid(t, writePreset('order', (p) => { p.intensities.decoy = 0.7; }), 'intensities');
  expectInvalid(t, writePreset('typo', (p) => { p.detector.deadtimePs = 5; }), 'detector.deadtimePs');
  expectInvalid(t, writePreset('mode', (p) => { p.bobBasisChoice = 'magic'; }), 'bobBasisChoice');
  expectInvalid(t, writePreset('dets', (p) => { p.detectors.pop(); }), 'detectors');
  expectInvalid(t, writePreset('delays', (p) => { p.channelDelaysPs = [1]; }), 'channelDelaysPs');
  expectInvalid(t, writePreset('rate', (p) => { p.repRateHz = 3e9; }), 'repRateHz');
  expectInvalid(t, writePreset('bit', (p) => { p.detectors[0].bit = 2; }), 'detectors[0].bit');
  expectInvalid(t, writePreset('clock', (p) => { p.clock.driftPpm = null; }), 'clock.driftPpm');
  const notJson = join(dir, 'broken.json');
  writeFileSync(notJson, '{ "name": ');
  t.throws(() => loadLinkPreset(notJson), { code: 'LINK_PRESET_PARSE' });
  t.throws(() => loadLinkPreset('no-such-preset'), { code: 'LINK_PRESET_NOT_FOUND', message: /reference-decoy/ });
});
