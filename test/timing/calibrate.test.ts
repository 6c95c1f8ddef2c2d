// Each calibration step recovers the value injected into the emulated lab within a stated tolerance.
import t from 'tap';
import { afterpulseFromIntervals, runStep } from '../../src/timing/calibrate.ts';
import { emulatedRig } from '../../src/lab/calibration-rig.ts';
import { chooseWindow, histogram, peakStats } from '../../src/timing/histogram.ts';
import { svgPlot, terminalPlot } from '../../src/timing/plot.ts';

function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() || 1e-12)) * Math.cos(2 * Math.PI * r());
}
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 4294967296; };
}

t.test('peakStats: known Gaussian on a flat background', async (t) => {
  const r = rng(5);
  const v: number[] = [];
  for (let i = 0; i < 50000; i++) v.push(123 + 40 * gauss(r));
  for (let i = 0; i < 20000; i++) v.push(-500 + 1000 * r());
  const p = peakStats(histogram(v, -500, 2, 500));
  t.ok(Math.abs(p.centroidPs - 123) < 1, `centroid ${p.centroidPs.toFixed(2)} (123 +- 1)`);
  t.ok(Math.abs(p.sigmaPs - 40) < 1.5, `sigma ${p.sigmaPs.toFixed(2)} (40 +- 1.5)`);
  t.ok(Math.abs(p.fwhmPs - 94.2) < 8, `fwhm ${p.fwhmPs.toFixed(1)} (94.2 +- 8)`);
  t.ok(Math.abs(p.backgroundPerBin - 40) < 4, `background ${p.backgroundPerBin} per bin (40)`);
});

t.test('chooseWindow: wide background pushes the window in; QBER contribution matches counting', async (t) => {
  const r = rng(6);
  const v: number[] = [];
  for (let i = 0; i < 100000; i++) v.push(30 * gauss(r));
  for (let i = 0; i < 100000; i++) v.push(-500 + 1000 * r());
  const h = histogram(v, -500, 2, 500);
  const w = chooseWindow(h, { intrinsicQber: 0.01 });
  t.ok(w.halfWidthPs > 30 && w.halfWidthPs < 120, `half width ${w.halfWidthPs} ps for sigma 30`);
  // Direct count: background in the window is 100000 * 2w/1000, signal kept S.
  const B = (100000 * 2 * w.halfWidthPs) / 1000;
  const expected = B / 2 / (B + w.signalKept * 100000);
  t.ok(Math.abs(w.qberContribution - expected) / expected < 0.1, `QBER contribution ${w.qberContribution.toFixed(4)} vs ${expected.toFixed(4)}`);
  const noBg = chooseWindow(histogram(v.slice(0, 100000), -500, 2, 500));
  t.ok(noBg.halfWidthPs >= w.halfWidthPs, 'no background: window at least as wide');
});

t.test('afterpulseFromIntervals on synthetic intervals', async (t) => {
  const r = rng(7);
  const dead = 50000, tau = 100000, rate = 1 / 5e6, p = 0.04;
  const iv: number[] = [];
  const n = 200000;
  for (let i = 0; i < n; i++) iv.push(r() < p ? dead - tau * Math.log(r()) : dead - Math.log(r()) / rate);
  const res = afterpulseFromIntervals(Float64Array.from(iv), n, 2000, 1.5e7);
  t.ok(Math.abs(res.probability - p) < 0.004, `p ${res.probability.toFixed(4)} (0.04 +- 0.004)`);
  t.ok(Math.abs(res.decayPs - tau) / tau < 0.2, `tau ${res.decayPs.toFixed(0)} (1e5 +- 20 %)`);
  t.ok(Math.abs(res.deadTimePs - dead) < 1000, 'dead time');
});

t.test('delays and jitter (reference-decoy: delays 1500/2700 ps, jitter 20 ps det + 5 ps clock)', async (t) => {
  const rig = emulatedRig('reference-decoy', { seed: 51n });
  const d = await runStep('delays', rig, { seconds: 0.05 });
  const rel = d.result.relativeDelayPs as Record<string, number>;
  const ref = d.result.referenceChannel as number;
  const injected = (1 + rig.preset.clock.driftPpm * 1e-6) * (2700 - 1500) * (ref === 0 ? 1 : -1);
  t.ok(Math.abs(rel[ref === 0 ? 1 : 0] - injected) < 3, `relative delay ${rel[ref === 0 ? 1 : 0]} vs ${injected.toFixed(1)} ps (tolerance 3 ps)`);
  const j = await runStep('jitter', emulatedRig('reference-decoy', { seed: 52n }), { seconds: 0.05 });
  const expectSigma = Math.hypot(20, 5);
  for (const s of Object.values(j.result.sigmaPs as Record<string, number>)) t.ok(Math.abs(s - expectSigma) / expectSigma < 0.05, `sigma ${s} vs ${expectSigma.toFixed(1)} ps (5 %)`);
  t.match(terminalPlot(d.plot), /ch0/);
  t.match(svgPlot(d.plot), /^<svg[\s\S]*<\/svg>\n$/);
});

t.test('sync step reports offset and drift of the emulated clock', async (t) => {
  const rig = emulatedRig('reference-decoy', { seed: 53n, overrides: { clock: { offsetPs: -4e8, driftPpm: 12.5, jitterPs: 5 } } });
  const s = await runStep('sync', rig, { seconds: 0.05 });
  t.ok(Math.abs((s.result.driftPpm as number) - 12.5) < 0.01, `drift ${s.result.driftPpm} (12.5 +- 0.01)`);
  const trueOffset = rig.link.expectedTagTimePs(0, s.result.refChannel as number);
  t.ok(Math.abs((s.result.offsetPs as number) - trueOffset) < 1000, `offset ${s.result.offsetPs} vs ${trueOffset.toFixed(0)} (1 ns)`);
  t.ok((s.result.timeToLockMs as number) <= 2000);
});

t.test('window: free-running detectors with strong dark counts give the predicted QBER contribution', async (t) => {
  const y0 = 2e-4;
  const rig = emulatedRig('reference-decoy', { seed: 54n, overrides: { y0, detector: { mode: 'free-running', jitterPs: 40 } } });
  const w = await runStep('window', rig, { seconds: 0.1, binPs: 4 });
  const half = w.result.halfWidthPs as number;
  t.ok(half >= 60 && half <= 200, `half width ${half} ps for sigma ~40 ps`);
  // Theory: dark clicks per pulse y0 spread uniformly over T = 1000 ps; signal ~ eta * mean mu.
  const p = rig.preset;
  const eta = rig.link.transmittance;
  const meanMu = p.intensityProbs.signal * p.intensities.signal + p.intensityProbs.decoy * p.intensities.decoy + p.intensityProbs.vacuum * p.intensities.vacuum;
  const sig = eta * meanMu * (w.result.signalKept as number);
  const bg = y0 * (2 * half) / 1000;
  const expected = bg / 2 / (sig + bg);
  const got = w.result.qberContribution as number;
  t.ok(Math.abs(got - expected) / expected < 0.25, `QBER contribution ${got} vs ${expected.toExponential(3)} (25 %)`);
});

t.test('dark counts, afterpulsing and relative efficiency (gated InGaAs preset)', async (t) => {
  const rig = emulatedRig('gated-ingaas-lab', { seed: 55n });
  const p = rig.preset;
  const dk = await runStep('dark-counts', rig, { seconds: 0.4 });
  // Per detector per gate: 1 - sqrt(1 - y0), plus the afterpulses those dark clicks trigger.
  const pd = (1 - Math.sqrt(1 - p.y0)) * (1 + p.detector.afterpulseProb);
  const perGate = dk.result.perGate as Record<string, number>;
  const err = dk.uncertainty.perGate as Record<string, number>;
  for (const [c, v] of Object.entries(perGate)) t.ok(Math.abs(v - pd) < 4 * err[c], `ch${c} dark ${v.toExponential(3)} vs ${pd.toExponential(3)} (4 sigma = ${(4 * err[c]).toExponential(1)})`);
  const ap = await runStep('afterpulsing', rig, { seconds: 2 });
  for (const [c, v] of Object.entries(ap.result.probability as Record<string, number>)) {
    t.ok(Math.abs(v - p.detector.afterpulseProb) < 0.005, `ch${c} afterpulse p ${v} vs ${p.detector.afterpulseProb} (+- 0.005)`);
    const tau = (ap.result.decayPs as Record<string, number>)[c];
    t.ok(Math.abs(tau - p.detector.afterpulseDecayPs) / p.detector.afterpulseDecayPs < 0.35, `ch${c} decay ${tau} vs ${p.detector.afterpulseDecayPs} ps (35 %)`);
    const dead = (ap.result.deadTimePs as Record<string, number>)[c];
    t.ok(Math.abs(dead - p.detector.deadTimePs) < 1000, `ch${c} dead time ${dead} ps`);
  }
  const eff = await runStep('efficiency', emulatedRig('reference-decoy', { seed: 56n, efficiencyScale: { 1: 0.8 } }), { seconds: 0.1 });
  const rel = eff.result.relative as Record<string, number>;
  const e = eff.uncertainty.relative as Record<string, number>;
  t.equal(rel['0'], 1);
  t.ok(Math.abs(rel['1'] - 0.8) < Math.max(4 * e['1'], 0.01), `relative efficiency ch1 ${rel['1']} vs 0.8`);
});
