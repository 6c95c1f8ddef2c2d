/**
 * Intercept-resend Eve (QBER 1/4 on the pulses she attacks, gain unchanged), reproducibility
 * (same seed ⇒ same tags; the split of a run into batches does not change it) and the global
 * time order of tags across batches, on every shipped preset.
 */
import t from 'tap';
import { EmulatedLink, type LinkBatch } from '../../src/lab/link.ts';
import { listLinkPresets, loadLinkPreset } from '../../src/lab/presets.ts';
import { decoyModel } from '../../src/lab/theory.ts';
import { runTally, zScore } from '../../src/testkit/lab.ts';

t.test('intercept-resend Eve on every pulse: QBER 25 % without misalignment, 1/4 + e_d/2 with', async (t) => {
  for (const [ed, fraction] of [[0, 1], [0.033, 1], [0.033, 0.5]]) {
    const p = loadLinkPreset('reference-decoy', { distanceKm: 25, misalignment: ed });
    const link = new EmulatedLink(p, { seed: 31n, eveFraction: fraction });
    const tally = runTally(link, 1e8);
    // Eve's basis differs from Alice's half the time: then Bob's bit is random; else only e_d.
    const perPhoton = fraction * (0.25 + ed / 2) + (1 - fraction) * ed;
    const th = decoyModel(p, 25);
    const signalPart = th.gain.signal - p.y0;
    const expected = (0.5 * p.y0 + perPhoton * signalPart) / th.gain.signal;
    const z = zScore(tally.errors[0], tally.matched[0], expected);
    t.ok(Math.abs(z) < 4, `e_d ${ed}, Eve on ${fraction}: QBER ${(tally.errors[0] / tally.matched[0]).toFixed(4)} vs ${expected.toFixed(4)} (z = ${z.toFixed(2)})`);
    const zq = zScore(tally.clickedSlots[0], 1e8 * p.intensityProbs.signal, th.gain.signal);
    t.ok(Math.abs(zq) < 4, `gain unchanged by intercept-resend (z = ${zq.toFixed(2)})`);
  }
});

function concat(bs: LinkBatch[]): { time: bigint[]; ch: number[]; pulse: number[]; kind: number[] } {
  const out = { time: [] as bigint[], ch: [] as number[], pulse: [] as number[], kind: [] as number[] };
  for (const b of bs) {
    for (let i = 0; i < b.tags.channel.length; i++) {
      out.time.push(b.tags.timePs[i]);
      out.ch.push(b.tags.channel[i]);
      out.pulse.push(b.truthPulse[i]);
      out.kind.push(b.truthKind[i]);
    }
  }
  return out;
}

for (const name of listLinkPresets()) {
  t.test(`${name}: same seed same tags, batch split irrelevant, sorted across batches`, async (t) => {
    const p = loadLinkPreset(name, { distanceKm: 0 });
    const total = 3_000_000;
    const a = new EmulatedLink(p, { seed: 123n });
    const b = new EmulatedLink(p, { seed: 123n });
    const c = new EmulatedLink(p, { seed: 124n });
    const ra = concat([a.nextPulses(total)]);
    const rb = concat([b.nextPulses(700_001), b.nextPulses(1_299_999), b.nextPulses(1), b.nextPulses(999_999)]);
    const rc = concat([c.nextPulses(total)]);
    t.ok(ra.time.length > 1000, `${ra.time.length} tags`);
    t.same(rb, ra, 'same seed, different batch split: identical tags and truth');
    t.notSame(rc.time.slice(0, 100), ra.time.slice(0, 100), 'another seed gives other tags');
    let sorted = true;
    for (let i = 1; i < ra.time.length; i++) if (ra.time[i] < ra.time[i - 1]) { sorted = false; break; }
    for (let i = 1; i < rb.time.length; i++) if (rb.time[i] < rb.time[i - 1]) { sorted = false; break; }
    t.ok(sorted, 'tags sorted by time, also across batches');
    const tail = a.drain();
    const tailAgain = a.drain();
    t.equal(tailAgain.tags.timePs.length, 0, 'drain empties the hold-back');
    t.ok(tail.tags.timePs.length === 0 || tail.tags.timePs[0] >= ra.time[ra.time.length - 1], 'drained tags come after the delivered ones');
    const kinds = new Set(ra.kind);
    t.ok(kinds.has(0), 'photon clicks present');
    if (p.detector.afterpulseProb > 0) t.ok(kinds.has(2), 'afterpulses present');
  });
}

t.test('bad arguments are refused with a clear error', async (t) => {
  const p = loadLinkPreset('reference-decoy');
  t.throws(() => new EmulatedLink(p, { seed: 1n, distanceKm: -3 }), { code: 'LINK_PRESET_INVALID', message: /'distanceKm'/ });
  t.throws(() => new EmulatedLink(p, { seed: 1 as unknown as bigint }), TypeError);
  const link = new EmulatedLink(p, { seed: 1n, distanceKm: 0 });
  t.throws(() => link.nextPulses(1.5), RangeError);
  t.throws(() => link.nextPulses(1e11), { message: /at most/ });
  t.equal(link.nextPulses(0).tags.timePs.length, 0, 'an empty batch is fine');
  t.equal(link.pulsesDone, 0);
});
