/**
 * decoyModel against known answers computed independently (Python, double precision, straight
 * from the Ma05 formulas in anchors.md) and against the published cut-off distance: with the GYS
 * parameters and f = 1.22 Ma et al. (2005) find a positive asymptotic key rate up to ~142 km.
 */
import t from 'tap';
import { loadLinkPreset } from '../../src/lab/presets.ts';
import { decoyModel, h2, transmittance } from '../../src/lab/theory.ts';

// Pinned values below were computed with these probabilities (the preset file may retune them).
const preset = loadLinkPreset('reference-decoy', { aliceBasisProbZ: 0.9, bobBasisProbZ: 0.9, intensityProbs: { signal: 0.7, decoy: 0.2, vacuum: 0.1 } });
const close = (a: number, b: number, rel = 1e-9): boolean => Math.abs(a - b) <= rel * Math.abs(b);

t.test('known answers at 0, 50 and 100 km (f = 1.16)', async (t) => {
  // [km, eta, Q_mu, E_mu, Q_1, e_1, R per signal pulse before the q factor]
  const kat: Array<[number, number, number, number, number, number, number]> = [
    [0, 0.045, 0.022250462806663762, 0.03303568015671831, 0.013647455394595007, 0.03301764155576345, 0.00538637536677564],
    [50, 0.004010629221601855, 0.0020050053107741883, 0.033395959050946354, 0.001216800344881225, 0.0331978651192743, 0.00046996293297199706],
    [100, 0.0003574477056259266, 0.00018040788265671903, 0.03740058376776802, 0.00010891704741378597, 0.035210511128329174, 3.678397022019833e-05],
  ];
  for (const [km, eta, q, e, q1, e1, r] of kat) {
    const m = decoyModel(preset, km);
    t.ok(close(m.eta, eta), `eta at ${km} km`);
    t.ok(close(m.gain.signal, q), `Q_mu at ${km} km`);
    t.ok(close(m.errorRate.signal, e), `E_mu at ${km} km`);
    t.ok(close(m.q1, q1), `Q_1 at ${km} km`);
    t.ok(close(m.e1, e1), `e_1 at ${km} km`);
    t.ok(close(m.asymptoticKeyRatePerPulse, m.q * r, 1e-8), `R at ${km} km`);
    t.ok(close(m.q, 0.7 * 0.9 * 0.9), 'q = p_signal p_Z^A p_Z^B');
    t.equal(m.gain.vacuum, preset.y0, 'vacuum gain is Y0');
    t.equal(m.errorRate.vacuum, 0.5, 'vacuum error rate is e0 = 1/2');
  }
});

t.test('cut-off distance with f = 1.22 is the published ~142 km', async (t) => {
  let km = 0;
  while (decoyModel(preset, km, { f: 1.22 }).asymptoticKeyRatePerPulse > 0) km += 0.5;
  t.ok(km > 139 && km < 145, `cut-off at ${km} km`);
  let prev = Infinity;
  for (let d = 0; d <= 140; d += 10) {
    const r = decoyModel(preset, d).asymptoticKeyRatePerPulse;
    t.ok(r < prev, `rate decreases with distance (${d} km)`);
    prev = r;
  }
});

t.test('helpers', async (t) => {
  t.equal(h2(0.5), 1);
  t.equal(h2(0), 0);
  t.ok(close(h2(0.11), 0.4999162, 1e-6));
  t.ok(close(transmittance(preset, 10), 0.045 * Math.pow(10, -0.21)));
});

t.test('y0 from a dark count rate', async (t) => {
  const { y0FromDarkCountRate } = await import('../../src/lab/presets.ts');
  // snspd-metro: 10 counts/s per detector at 2.5 GHz -> Y0 = 8e-9
  t.ok(close(y0FromDarkCountRate(10, 2.5e9), 8e-9, 1e-6));
  t.ok(close(y0FromDarkCountRate(1e9, 1e9), 1 - Math.exp(-2)));
});
