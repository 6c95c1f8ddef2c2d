// Property test: the native per-click tracker (native/core/src/sync_track.rs) gives the same pulse
// indices, channels, residuals, tag sequence numbers and state as the TypeScript reference
// (src/timing/tracker.ts), bit for bit, on random seeds: random offset/drift/distance, random
// chunking, data gaps, a clock jump (lock loss, re-acquisition), a one-pulse slip (repair), and
// pattern checks Alice partly withholds (skipped checks), through push and pushAsync.
import t from 'tap';
import { SparseLink } from '../../src/testkit/timing.ts';
import { alicePatternFromSeed } from '../../src/lab/pattern.ts';
import { ClockSync, type ClockSyncOptions, type IndexedDetections } from '../../src/timing/sync.ts';
import { answerNeed, type AlicePattern, type PatternNeed, type RemoteAlicePattern } from '../../src/timing/pattern.ts';

/** xorshift32: the test's own reproducible randomness. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32; };
}

function sameBits(a: ArrayLike<number> | undefined, b: ArrayLike<number> | undefined, F: Float64ArrayConstructor | Float32ArrayConstructor | Uint8ArrayConstructor): number {
  if (!a || !b) return a === b ? -1 : 0;
  if (a.length !== b.length) return 0;
  const x = new Uint8Array(F.from(a).buffer), y = new Uint8Array(F.from(b).buffer);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return Math.floor(i / F.BYTES_PER_ELEMENT);
  return -1;
}

/** A remote pattern answering from a local one, withholding every other pattern check. */
function withholding(p: AlicePattern): RemoteAlicePattern {
  let n = 0;
  return {
    meanPhotons: p.meanPhotons,
    fetch: async (need: PatternNeed) => {
      const got = answerNeed(p, need);
      if (need.kind === 'at' && n++ % 2 === 1) got.fill(255);
      return got;
    },
  };
}

const paths = { slipsRepaired: 0, lockLosses: 0, checksSkipped: 0 };
for (let seed = 1; seed <= 6; seed++) {
  t.test(`seed ${seed}`, async (t) => {
    const r = rng(seed * 7919);
    const offsetPs = (r() * 2 - 1) * 1e9, driftPpm = (r() * 2 - 1) * 20, distanceKm = [25, 50, 100][seed % 3];
    const sl = new SparseLink('reference-decoy', { seed: BigInt(seed), distanceKm, overrides: { clock: { offsetPs, driftPpm, jitterPs: 5 } } });
    const local = alicePatternFromSeed(sl.preset, BigInt(seed));
    const remote = seed % 2 === 0;
    const opts: ClockSyncOptions = {
      repRateHz: 1e9, withTagSeq: true, verifyEveryPs: 20e9, pattern: local,
      ...(seed % 3 === 1 ? { windowPs: 200, channels: [0, 1, 2] } : {}),
    };
    const mk = (engine: 'native' | 'reference') => new ClockSync({ ...opts, engine, pattern: remote ? withholding(local) : local });
    const nat = mk('native'), ref = mk('reference');
    const outs: [IndexedDetections, IndexedDetections][] = [];
    const fed = new Array<number>(256).fill(0); // tags per channel counted here, directly
    const feed = async (pulses: number) => {
      const b = sl.on(pulses);
      for (const c of b.tags.channel) fed[c]++;
      // Random chunking, the same for both.
      for (let i = 0; i < b.tags.channel.length;) {
        const k = Math.min(b.tags.channel.length - i, 1 + Math.floor(r() * 40000));
        const chunk = { timePs: b.tags.timePs.subarray(i, i + k), channel: b.tags.channel.subarray(i, i + k) };
        outs.push([await nat.pushAsync(chunk), await ref.pushAsync(chunk)]);
        i += k;
      }
    };
    for (let i = 0; i < 4; i++) await feed(5e7);
    sl.skip(30e6); // a gap longer than gapPs
    await feed(3e7);
    sl.link.setClock({ offsetPs: offsetPs + 1000 }); // one-pulse slip
    await feed(5e7);
    if (seed % 2 === 1) {
      sl.link.setClock({ offsetPs: offsetPs + 98765432 }); // a jump: lock loss, re-acquisition
      for (let i = 0; i < 5; i++) await feed(5e7);
    }
    let n = 0, bad = '';
    for (const [a, b] of outs) {
      n += a.pulseIndex.length;
      for (const [f, F] of [['pulseIndex', Float64Array], ['channel', Uint8Array], ['residualPs', Float32Array], ['tagSeq', Float64Array]] as const) {
        const d = sameBits(a[f], b[f], F);
        if (d !== -1 && !bad) bad = `${f} differs at ${d} (native ${a[f]?.[d]}, reference ${b[f]?.[d]})`;
      }
    }
    t.equal(bad, '', 'every output column identical');
    t.ok(n > 2e4, `${n} detections compared`);
    const sn = nat.state(), sr = ref.state();
    t.same(sn, sr, 'same final state (model, confidence, counters)');
    t.same(Array.from(nat.tagsPerChannel()), Array.from(ref.tagsPerChannel()), 'same tags per channel');
    t.same(Array.from(nat.tagsPerChannel()), fed, 'every tag fed counted once (the scans count them)');
    for (const k of ['slipsRepaired', 'lockLosses', 'checksSkipped'] as const) paths[k] += sr.stats[k];
    t.ok(sr.stats.acquisitions >= 1, `paths: (${sr.stats.acquisitions} acquisitions, ${sr.stats.lockLosses} losses, ${sr.stats.slipsRepaired} slips repaired, ${sr.stats.checksSkipped} checks skipped)`);
  });
}

t.test('the cases went through slip repair, lock loss and skipped checks', async (t) => {
  t.ok(paths.slipsRepaired > 0 && paths.lockLosses > 0 && paths.checksSkipped > 0, JSON.stringify(paths));
});
