/**
 * Detector and clock physics recovered from the emitted tags: dead time (never violated, and the
 * throughput follows the renewal formula), afterpulse probability and decay constant, Gaussian
 * jitter width, clock offset and drift, per-channel delays.
 */
import t from 'tap';
import { EmulatedLink, FIBRE_DELAY_PS_PER_KM, KIND_AFTERPULSE, KIND_PHOTON, type LinkBatch } from '../../src/lab/link.ts';
import { loadLinkPreset, periodPs, type LinkPreset } from '../../src/lab/presets.ts';

function collect(link: EmulatedLink, pulses: number, batch: number): LinkBatch[] {
  const out: LinkBatch[] = [];
  for (let done = 0; done < pulses; done += batch) out.push(link.nextPulses(Math.min(batch, pulses - done)));
  return out;
}

/** Nominal noise-free tag time from the documented clock model, computed from the preset alone. */
function nominal(p: LinkPreset, slot: number, channel: number): number {
  const t = slot * periodPs(p) + Math.round(p.distanceKm * FIBRE_DELAY_PS_PER_KM);
  return t * (1 + p.clock.driftPpm * 1e-6) + p.clock.offsetPs + p.channelDelaysPs[channel];
}

t.test('dead time: never violated, throughput = p/(1 + n_dead p) per detector', async (t) => {
  const base = loadLinkPreset('gated-ingaas-lab', {
    distanceKm: 0, y0: 0, intensities: { signal: 2, decoy: 0.5, vacuum: 0 },
    detector: { afterpulseProb: 0, deadTimePs: 0 },
  });
  const pulses = 6e6;
  // Per-gate click probability of each detector without dead time, measured on the same seed.
  const free = new EmulatedLink(base, { seed: 3n });
  const freeCounts = [0, 0];
  for (const b of collect(free, pulses, 2e6)) for (const c of b.tags.channel) freeCounts[c]++;
  const D = 50_000;
  const link = new EmulatedLink(loadLinkPreset('gated-ingaas-lab', { ...base, detector: { ...base.detector, deadTimePs: D } }), { seed: 3n });
  const T = periodPs(base);
  const nDead = Math.ceil(D / T) - 1; // gates k = 1..nDead after a click are blocked (kT < D)
  const lastSlot = [-Infinity, -Infinity];
  const lastTime = [-Infinity, -Infinity];
  const counts = [0, 0];
  let minSlotGap = Infinity;
  let minTimeGap = Infinity;
  for (const b of collect(link, pulses, 2e6)) {
    for (let i = 0; i < b.tags.channel.length; i++) {
      const c = b.tags.channel[i];
      const tb = Number(b.tags.timePs[i]);
      minSlotGap = Math.min(minSlotGap, b.truthSlot[i] - lastSlot[c]);
      minTimeGap = Math.min(minTimeGap, tb - lastTime[c]);
      lastSlot[c] = b.truthSlot[i];
      lastTime[c] = tb;
      counts[c]++;
    }
  }
  t.ok(minSlotGap * T >= D, `closest clicks on one detector ${minSlotGap} gates apart (dead time ${D / T} gates)`);
  const sigma = Math.hypot(base.detector.jitterPs, base.clock.jitterPs);
  t.ok(minTimeGap >= D - 12 * sigma, `closest tags on one channel ${minTimeGap} ps apart on Bob's clock`);
  for (const c of [0, 1]) {
    const p = freeCounts[c] / pulses;
    const expected = (pulses * p) / (1 + nDead * p);
    const z = (counts[c] - expected) / Math.sqrt(expected);
    t.ok(p * nDead > 0.5, `dead time matters on channel ${c} (p·n_dead = ${(p * nDead).toFixed(2)})`);
    t.ok(Math.abs(z) < 4, `channel ${c}: ${counts[c]} clicks vs renewal formula ${expected.toFixed(0)} (z = ${z.toFixed(2)})`);
  }
});

t.test('afterpulse probability and decay recovered', async (t) => {
  const P = 0.05;
  const tau = 100_000;
  const D = 50_000;
  for (const mode of ['free-running', 'gated'] as const) {
    const p = loadLinkPreset('gated-ingaas-lab', {
      y0: 4e-5, detector: { mode, afterpulseProb: P, afterpulseDecayPs: tau, deadTimePs: D },
    });
    const link = new EmulatedLink(p, { seed: 11n });
    link.setSource({ enabled: false }); // dark counts only: a low, known click rate
    const T = periodPs(p);
    let clicks = 0;
    let aps = 0;
    let sumDelay = 0;
    let minDelay = Infinity;
    const last = [-Infinity, -Infinity];
    for (const b of collect(link, 1e10, 2e9)) {
      for (let i = 0; i < b.tags.channel.length; i++) {
        const c = b.tags.channel[i];
        const tb = Number(b.tags.timePs[i]) / (1 + p.clock.driftPpm * 1e-6);
        clicks++;
        if (b.truthKind[i] === KIND_AFTERPULSE) {
          aps++;
          const delay = tb - last[c] - D;
          sumDelay += delay;
          minDelay = Math.min(minDelay, delay);
        }
        last[c] = tb;
      }
    }
    const zP = (aps / clicks - P) / Math.sqrt((P * (1 - P)) / clicks);
    t.ok(Math.abs(zP) < 4, `${mode}: afterpulse probability ${(aps / clicks).toFixed(4)} vs ${P} (z = ${zP.toFixed(2)}, ${clicks} clicks)`);
    // Gated: the afterpulse fires at the next gate, adding on average T/2 to the delay.
    const expectMean = tau + (mode === 'gated' ? T / 2 : 0);
    const mean = sumDelay / aps;
    const zT = (mean - expectMean) / (tau / Math.sqrt(aps));
    t.ok(Math.abs(zT) < 4, `${mode}: mean afterpulse delay after dead time ${mean.toFixed(0)} ps vs ${expectMean} (z = ${zT.toFixed(2)})`);
    t.ok(minDelay > -200, `${mode}: no afterpulse inside the dead time (min excess ${minDelay.toFixed(0)} ps)`);
  }
});

t.test('jitter width, channel delays, clock offset and drift recovered from photon tags', async (t) => {
  const p = loadLinkPreset('reference-decoy', {
    distanceKm: 10, detector: { jitterPs: 40 }, clock: { jitterPs: 30, driftPpm: 12.5, offsetPs: 987654 },
  });
  const link = new EmulatedLink(p, { seed: 21n });
  const n = [0, 0];
  const sum = [0, 0];
  const sum2 = [0, 0];
  const sum4 = [0, 0];
  // Least squares of (t_B − delay[ch]) against the emission time: slope 1 + drift, intercept offset + (1+drift)·fibre.
  let sx = 0, sy = 0, sxx = 0, sxy = 0, m = 0;
  const tEmit0 = 0;
  for (const b of collect(link, 3e8, 1e8)) {
    for (let i = 0; i < b.tags.channel.length; i++) {
      if (b.truthKind[i] !== KIND_PHOTON) continue;
      const c = b.tags.channel[i];
      const tb = Number(b.tags.timePs[i]);
      const r = tb - nominal(p, b.truthPulse[i], c);
      n[c]++; sum[c] += r; sum2[c] += r * r; sum4[c] += r ** 4;
      if ((i & 3) === 0) {
        const x = (b.truthPulse[i] * periodPs(p) - tEmit0) / 1e9; // ms-scale numbers keep the sums accurate
        const y = (tb - p.channelDelaysPs[c]) / 1e9;
        sx += x; sy += y; sxx += x * x; sxy += x * y; m++;
      }
    }
  }
  const sigma = Math.hypot(40 * (1 + 12.5e-6), 30);
  for (const c of [0, 1]) {
    const mean = sum[c] / n[c];
    const sd = Math.sqrt(sum2[c] / n[c] - mean * mean);
    t.ok(Math.abs(mean) < 4 * sigma / Math.sqrt(n[c]) + 0.5, `channel ${c}: mean residual ${mean.toFixed(3)} ps (delay ${p.channelDelaysPs[c]} applied)`);
    const zs = (sd - sigma) / (sigma / Math.sqrt(2 * n[c]));
    t.ok(Math.abs(zs) < 4, `channel ${c}: jitter ${sd.toFixed(2)} ps vs sqrt(det^2 + clock^2) = ${sigma.toFixed(2)} (z = ${zs.toFixed(2)}, n = ${n[c]})`);
    // Gaussian shape: kurtosis 3 (sd of the estimate sqrt(24/n)); a uniform would give 1.8
    const kurt = sum4[c] / n[c] / (sd ** 4);
    t.ok(Math.abs(kurt - 3) < 4 * Math.sqrt(24 / n[c]) + 0.01, `channel ${c}: kurtosis ${kurt.toFixed(3)} (Gaussian: 3)`);
  }
  const slope = (m * sxy - sx * sy) / (m * sxx - sx * sx);
  const intercept = (sy - slope * sx) / m;
  t.ok(Math.abs((slope - 1) / 1e-6 - 12.5) < 0.01, `fitted drift ${((slope - 1) / 1e-6).toFixed(4)} ppm vs 12.5`);
  const fibre = Math.round(10 * FIBRE_DELAY_PS_PER_KM);
  const expectIntercept = 987654 + fibre * (1 + 12.5e-6);
  t.ok(Math.abs(intercept * 1e9 - expectIntercept) < 5, `fitted intercept ${(intercept * 1e9).toFixed(1)} ps vs offset + fibre ${expectIntercept.toFixed(1)}`);
  t.equal(link.expectedTagTimePs(1000, 1), nominal(p, 1000, 1), 'expectedTagTimePs follows the documented model');
});

t.test('setClock: a drift change keeps time continuous, an offset change jumps', async (t) => {
  const p = loadLinkPreset('reference-decoy', { distanceKm: 0, detector: { jitterPs: 0 }, clock: { jitterPs: 0 } });
  const link = new EmulatedLink(p, { seed: 5n });
  link.nextPulses(1e8);
  const before = link.expectedTagTimePs(1e8, 0);
  link.setClock({ driftPpm: -20 });
  t.ok(Math.abs(link.expectedTagTimePs(1e8, 0) - before) < 1e-3, 'continuous at the change');
  const later = link.expectedTagTimePs(1e9 + 1e8, 0) - link.expectedTagTimePs(1e8, 0);
  t.ok(Math.abs(later - 1e12 * (1 - 20e-6)) < 1e-3, 'new rate applies after the change');
  const b = link.nextPulses(2e7);
  let worst = 0;
  for (let i = 0; i < b.tags.channel.length; i++) {
    if (b.truthKind[i] !== KIND_PHOTON) continue;
    worst = Math.max(worst, Math.abs(Number(b.tags.timePs[i]) - link.expectedTagTimePs(b.truthPulse[i], b.tags.channel[i])));
  }
  t.ok(worst <= 1, `tags follow the new clock (worst ${worst} ps)`);
  link.setClock({ offsetPs: p.clock.offsetPs + 5000 });
  t.ok(Math.abs(link.expectedTagTimePs(1.2e8, 0) - before - 2e10 * (1 - 20e-6) - 5000) < 1e-3, 'offset change jumps by the difference');
  t.throws(() => link.setClock({ driftPpm: 1e6 }), { code: 'LINK_PRESET_INVALID', message: /clock\.driftPpm/ });
});

t.test('setters: laser off leaves only dark counts, detector efficiency scales the rate', async (t) => {
  const p = loadLinkPreset('reference-decoy', { distanceKm: 0 });
  const link = new EmulatedLink(p, { seed: 8n });
  const on = link.nextPulses(1e7).tags.channel.length;
  link.setSource({ enabled: false });
  const off = link.nextPulses(1e7);
  t.ok(off.truthKind.every((k, i) => k !== KIND_PHOTON || off.truthSlot[i] < 1e7), 'no photon clicks after the laser is off');
  link.setSource({ enabled: true });
  link.setDetector({ etaBob: p.etaBob / 2 });
  const half = link.nextPulses(1e7).tags.channel.length;
  t.ok(Math.abs(half / on - (1 - Math.exp(-0.0225 / 2)) / (1 - Math.exp(-0.0225))) < 0.03, `half efficiency: ${half} vs ${on} tags`);
  t.throws(() => link.setDetector({ deadTimePs: -5 }), { message: /detector\.deadTimePs/ });
});
