// Property test: the Rust per-click physics (native/core/src/lab_link.rs, physics: 'native') gives
// the same tags (times, channels), the same truth (pulse, kind, slot) and the same batch split as
// the TypeScript reference (src/lab/link.ts, physics: 'ts'), bit for bit, on random seeds and
// random lab parameters: every shipped preset, passive and active Bob, gated and free-running,
// dead time, afterpulsing, jitter, clock offset and drift, channel delays, misalignment,
// intercept-resend Eve, Alice's choices from a source device or from the seed, random batch
// sizes, settings changed mid-run (efficiency, intensities, laser off/on, clock, delays, Eve),
// and the final drain. Also: the Rust `Math.log` (fdlibm) equals V8's on random inputs.
import t, { type Test } from 'tap';
import { aliceChoicesAt } from '../../src/lab/alice.ts';
import { EmulatedLink, type LinkBatch } from '../../src/lab/link.ts';
import { nativeJsLog } from '../../src/lab/native-physics.ts';
import { loadLinkPreset, type LinkPresetOverrides } from '../../src/lab/presets.ts';
import { createSourceDevice } from '../../src/core/source-device.ts';
import { choiceThresholds } from '../../src/protocol/choices.ts';

/** xorshift32: the test's own reproducible randomness. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32; };
}

/** Index of the first differing element (bitwise), -1 if equal, -2 if the lengths differ. */
function firstDiff(a: ArrayBufferView & { length: number }, b: ArrayBufferView & { length: number }): number {
  if (a.length !== b.length) return -2;
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength), y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  const w = a.byteLength / Math.max(1, a.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return Math.floor(i / w);
  return -1;
}

function compare(t: Test, what: string, a: LinkBatch, b: LinkBatch): boolean {
  const cols: [string, ArrayBufferView & { length: number }, ArrayBufferView & { length: number }][] = [
    ['timePs', a.tags.timePs, b.tags.timePs], ['channel', a.tags.channel, b.tags.channel],
    ['truthPulse', a.truthPulse, b.truthPulse], ['truthKind', a.truthKind, b.truthKind], ['truthSlot', a.truthSlot, b.truthSlot],
  ];
  for (const [name, x, y] of cols) {
    const d = firstDiff(x, y);
    if (d !== -1) {
      t.fail(`${what}: ${name} differs ${d === -2 ? `in length (${x.length} vs ${y.length})` : `first at ${d}`}`);
      return false;
    }
  }
  if (a.firstPulse !== b.firstPulse || a.pulses !== b.pulses) {
    t.fail(`${what}: batch range differs`);
    return false;
  }
  return true;
}

/** A link without truth columns: the same tags and batch split as `a`, empty truth. */
function compareNoTruth(t: Test, what: string, a: LinkBatch, c: LinkBatch): boolean {
  if (c.truthPulse.length || c.truthKind.length || c.truthSlot.length) {
    t.fail(`${what}: truth columns present with truth: false`);
    return false;
  }
  return compare(t, what, a, { ...c, truthPulse: a.truthPulse, truthKind: a.truthKind, truthSlot: a.truthSlot });
}

const PRESETS = ['reference-decoy', 'gated-ingaas-lab', 'snspd-metro'];

function randomOverrides(r: () => number, name: string): LinkPresetOverrides {
  const base = loadLinkPreset(name);
  const o: LinkPresetOverrides = {
    distanceKm: [0, 5, 25, 50, 100][Math.floor(r() * 5)],
    misalignment: r() < 0.5 ? 0 : r() * 0.05,
    eveFraction: r() < 0.4 ? 0 : r() < 0.5 ? 1 : r(),
    y0: r() < 0.2 ? 0 : 10 ** (-7 + 3 * r()),
    detector: {
      deadTimePs: r() < 0.3 ? 0 : Math.round(r() * 50_000),
      afterpulseProb: r() < 0.3 ? 0 : r() * 0.2,
      afterpulseDecayPs: 1000 + Math.round(r() * 50_000),
      jitterPs: r() < 0.2 ? 0 : r() * 200,
      mode: r() < 0.5 ? 'gated' : 'free-running',
    },
    clock: { offsetPs: (r() * 2 - 1) * 1e12, driftPpm: (r() * 2 - 1) * 50, jitterPs: r() * 30 },
    channelDelaysPs: base.channelDelaysPs.map(() => (r() < 0.3 ? 0 : Math.round((r() * 2 - 1) * 3000))),
  };
  if (r() < 0.5) o.bobBasisChoice = base.bobBasisChoice;
  return o;
}

t.test('Rust Math.log equals V8 Math.log', async (t) => {
  const r = rng(99);
  const x = new Float64Array(200_000);
  for (let i = 0; i < x.length; i++) {
    const k = i % 4;
    x[i] = k === 0 ? (Math.floor(r() * 2 ** 32) + 0.5) / 2 ** 32 // the physics' uniforms
      : k === 1 ? r() // any double in (0, 1)
      : k === 2 ? Math.exp((r() * 2 - 1) * 700) // the whole range
      : 1 + (r() * 2 - 1) * 1e-5; // near 1 (the |f| < 2^-20 branch)
  }
  x.set([0, 1, 2, Math.E, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, Infinity], 0);
  const got = nativeJsLog(x);
  let bad = -1;
  for (let i = 0; i < x.length && bad < 0; i++) if (!Object.is(got[i], Math.log(x[i]))) bad = i;
  t.equal(bad, -1, bad < 0 ? 'all equal' : `log(${x[bad]}): ${got[bad]} vs ${Math.log(x[bad])}`);
});

const SEEDS = Number(process.env.QKD_LAB_PROPERTY_SEEDS ?? 16);
for (let s = 1; s <= SEEDS; s++) {
  t.test(`seed ${s}`, async (t) => {
    const r = rng(s * 104729);
    const name = PRESETS[s % PRESETS.length];
    const over = randomOverrides(r, name);
    const preset = loadLinkPreset(name, over);
    const seed = BigInt(Math.floor(r() * 2 ** 48)) * 65536n + BigInt(s);
    const withSource = s % 2 === 0;
    // a source device stand-in: another seed's choices, the same for both links
    const alice = withSource ? { choicesAt: (p: Float64Array) => aliceChoicesAt(preset, seed ^ 0xabcdefn, p) } : undefined;
    const mk = (physics: 'ts' | 'native', truth = true) => new EmulatedLink(preset, { seed, physics, truth, ...(alice ? { alice } : {}) });
    const a = mk('ts'), b = mk('native');
    // without truth columns (what a node's tagger runs): the same tags, natively and in TypeScript
    const c = mk(s % 3 === 0 ? 'ts' : 'native', false);
    t.equal(b.physics, 'native');
    const period = a.periodPs;
    let tags = 0;
    let ok = true;
    for (let i = 0; i < 14 && ok; i++) {
      // ~1e5 tags at most per batch: pulses scaled to the click rate
      const pulses = Math.floor((r() < 0.2 ? r() * 1000 : r() * 2e7) * (1000 / period));
      const x = a.nextPulses(pulses), y = b.nextPulses(pulses);
      tags += x.tags.channel.length;
      ok = compare(t, `batch ${i} (${pulses} pulses)`, x, y) && compareNoTruth(t, `batch ${i} without truth`, x, c.nextPulses(pulses));
      const change = (f: (l: EmulatedLink) => void) => { f(a); f(b); f(c); };
      const q = r();
      if (q < 0.1) change((l) => l.setDetector({ etaBob: r2(s, i) * 0.9 + 0.05 }));
      else if (q < 0.2) { const mu = 0.2 + r(); change((l) => l.setSource({ intensities: { signal: mu, decoy: mu / 4 } })); }
      else if (q < 0.25) { const on = r() < 0.5; change((l) => l.setSource({ enabled: on })); }
      else if (q < 0.35) { const v = { driftPpm: (r() * 2 - 1) * 30, ...(r() < 0.3 ? { offsetPs: r() * 1e9 } : {}), jitterPs: r() * 20 }; change((l) => l.setClock(v)); }
      else if (q < 0.4) { const d = preset.channelDelaysPs.map(() => Math.round(r() * 1000)); change((l) => l.setChannelDelays(d)); }
      else if (q < 0.45) { const e = r(); change((l) => l.setChannel({ eveFraction: e, misalignment: r2(s, i) * 0.05 })); }
      else if (q < 0.5) { const dt = Math.round(r() * 30_000); change((l) => l.setDetector({ deadTimePs: dt, afterpulseProb: 0.1 })); }
    }
    if (ok) { const d = a.drain(); ok = compare(t, 'drain', d, b.drain()) && compareNoTruth(t, 'drain without truth', d, c.drain()); }
    t.ok(ok, `${name}, ${preset.bobBasisChoice} Bob, ${preset.detector.mode ?? 'gated'}, Eve ${preset.eveFraction.toFixed(2)}, ` +
      `dead time ${preset.detector.deadTimePs} ps, afterpulse ${preset.detector.afterpulseProb.toFixed(3)}, ${withSource ? 'source device' : 'seeded choices'}: ${tags} tags identical`);
  });
}

/** A second reproducible draw that does not advance the batch-size stream. */
function r2(s: number, i: number): number {
  return rng(s * 31 + i * 7 + 1)();
}


// Alice's source device called by the Rust physics itself (AliceChoiceSource.native, what the
// emulated PS-1 of a run does) against the TypeScript physics asking choicesAt of a twin device
// (same key): the same tags and truth, and both devices' records answer a read-back the same.
t.test('source device called natively', async (t) => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => (i * 37 + 11) & 255);
  for (let s = 1; s <= 6; s++) {
    const r = rng(s * 7919);
    const name = PRESETS[s % PRESETS.length];
    const preset = loadLinkPreset(name, randomOverrides(r, name));
    const seed = BigInt(s) * 1_000_003n;
    const th = choiceThresholds(preset);
    const devA = createSourceDevice(th, { testKey: key }), devB = createSourceDevice(th, { testKey: key });
    const a = new EmulatedLink(preset, { seed, physics: 'ts', alice: { choicesAt: (p) => devA.applyAt(p) } });
    const b = new EmulatedLink(preset, { seed, physics: 'native', truth: s % 2 === 0, alice: { choicesAt: () => { throw new Error('choicesAt called'); }, native: devB.native } });
    let ok = true, tags = 0;
    for (let i = 0; i < 8 && ok; i++) {
      const pulses = Math.floor((r() < 0.2 ? r() * 1000 : r() * 4e6) * (1000 / a.periodPs));
      const x = a.nextPulses(pulses), y = b.nextPulses(pulses);
      tags += x.tags.channel.length;
      ok = b.truth ? compare(t, `seed ${s} batch ${i}`, x, y) : compareNoTruth(t, `seed ${s} batch ${i}`, x, y);
      if (r() < 0.3) { const eta = 0.05 + r() * 0.5; a.setDetector({ etaBob: eta }); b.setDetector({ etaBob: eta }); }
    }
    const probe = Float64Array.from({ length: 20_000 }, (_, i) => i * 4099 + (s % 7));
    t.ok(ok && firstDiff(devA.recordAt(probe), devB.recordAt(probe)) === -1 && devA.stats().entries === devB.stats().entries,
      `${name}, seed ${s}: ${tags} tags identical, records equal (${devB.stats().entries} entries)`);
  }
});

// The node's lab emulates its batches on libuv's pool (nextPulsesAsync, the tagger's prefetch):
// the same tags and the same record as the synchronous calls on a twin link, batch for batch,
// with settings changed between batches; and no second call while a batch is in flight.
t.test('nextPulsesAsync (libuv pool) equals nextPulses', async (t) => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => (i * 53 + 7) & 255);
  for (let s = 1; s <= 4; s++) {
    const r = rng(s * 4241);
    const name = PRESETS[s % PRESETS.length];
    const preset = loadLinkPreset(name, randomOverrides(r, name));
    const seed = BigInt(s) * 7_000_001n;
    const th = choiceThresholds(preset);
    const devA = createSourceDevice(th, { testKey: key }), devB = createSourceDevice(th, { testKey: key });
    const never = () => { throw new Error('choicesAt called'); };
    const a = new EmulatedLink(preset, { seed, physics: 'native', truth: false, alice: { choicesAt: never, native: devA.native } });
    const b = new EmulatedLink(preset, { seed, physics: 'native', truth: false, alice: { choicesAt: never, native: devB.native } });
    let ok = true, tags = 0;
    for (let i = 0; i < 10 && ok; i++) {
      const pulses = Math.floor((r() < 0.2 ? r() * 1000 : r() * 4e6) * (1000 / a.periodPs));
      const x = a.nextPulses(pulses);
      const pending = b.nextPulsesAsync(pulses);
      if (i === 0) t.throws(() => b.nextPulses(10), /still being emulated/, 'no second call while a batch is in flight');
      const y = await pending;
      tags += x.tags.channel.length;
      ok = compare(t, `seed ${s} batch ${i}`, x, y);
      if (r() < 0.3) { const eta = 0.05 + r() * 0.5; a.setDetector({ etaBob: eta }); b.setDetector({ etaBob: eta }); }
    }
    const probe = Float64Array.from({ length: 20_000 }, (_, i) => i * 4099 + (s % 5));
    t.ok(ok && firstDiff(devA.recordAt(probe), devB.recordAt(probe)) === -1, `${name}, seed ${s}: ${tags} tags identical, records equal`);
  }
});
