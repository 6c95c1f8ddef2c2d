// Alice's intensity pattern over the authenticated channel (src/node/pattern-link.ts): wire
// packing, the hold-back that keeps in-flight pulses secret, malformed requests, and Bob's clock
// sync locking through a real AuthChannel pair exactly as with a locally regenerated pattern.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Authenticator } from '../../src/core/auth.ts';
import { AuthChannel } from '../../src/channel/channel.ts';
import { EmulatedLink } from '../../src/lab/link.ts';
import { loadLinkPreset } from '../../src/lab/presets.ts';
import { alicePatternFromSeed } from '../../src/lab/pattern.ts';
import { ClockSync } from '../../src/timing/sync.ts';
import { MAX_PATTERN_PULSES, f64Bytes, packClasses, patternServer, remotePattern, revealHoldbackPs, unpackClasses, FIBRE_PS_PER_KM, SYNC_MAX_OFFSET_PS } from '../../src/node/pattern-link.ts';
import type { AlicePattern } from '../../src/timing/pattern.ts';

/** A source's read-back as the pattern server reads it, from a pattern and an emission counter. */
const recordOf = (pattern: AlicePattern, emitted: () => number) => ({
  readClasses: async (pulses: Float64Array) => {
    if (pulses.length && pulses[pulses.length - 1] >= emitted()) throw new Error('the server asked the source for a pulse not yet emitted');
    return pattern.intensitiesAt!(pulses);
  },
  emittedPulses: async () => emitted(),
});
import { seededRandom } from '../../src/testkit/ldpc.ts';

t.test('2-bit packing round-trips classes 0-2 and maps everything else to unknown (random lengths)', async (t) => {
  const rnd = seededRandom(7);
  for (let trial = 0; trial < 200; trial++) {
    const n = Math.floor(rnd() * 70);
    const cls = Uint8Array.from({ length: n }, () => [0, 1, 2, 255, 3, 9][Math.floor(rnd() * 6)]);
    const back = unpackClasses(packClasses(cls), n);
    const want = cls.map((c) => (c > 2 ? 255 : c));
    if (!Buffer.from(back).equals(Buffer.from(want))) {
      t.fail(`length ${n}: ${[...cls]} came back as ${[...back]}`);
      return;
    }
  }
  t.pass('200 random class arrays round-trip');
  t.throws(() => unpackClasses(new Uint8Array(2), 9), { code: 'BAD_PATTERN_ANSWER' }, 'a short answer is refused');
});

const preset = loadLinkPreset('reference-decoy');
const record = alicePatternFromSeed(preset, 5n);

t.test('pulses newer than the hold-back behind the emission horizon are withheld', async (t) => {
  let emitted = 10_000_000;
  const srv = patternServer({ record: recordOf(record, () => emitted), repRateHz: 1e9, holdbackPs: 1e9 });
  // Horizon 1e7, hold-back 1e6 pulses: pulses >= 9e6 are secret.
  const r = unpackClasses((await srv.answer({ kind: 'range', first: 8_900_000, count: 200_000 })).classes as Uint8Array, 200_000);
  const truth = record.intensities(8_900_000, 100_000);
  t.same(Buffer.from(r.subarray(0, 100_000)).equals(Buffer.from(truth)), true, 'the old half is Alice\'s record');
  t.ok(r.subarray(100_000).every((c) => c === 255), 'the newer half is unknown');
  t.equal(srv.stats.pulsesWithheld, 100_000);
  const at = Float64Array.from([-5, 0, 1.5, 8_999_999, 9_000_000, 2e9]);
  const a = unpackClasses((await srv.answer({ kind: 'at', pulses: f64Bytes(at) })).classes as Uint8Array, at.length);
  t.same([...a], [255, record.intensities(0, 1)[0], 255, record.intensities(8_999_999, 1)[0], 255, 255], 'negative, fractional and too-new indices are unknown');
  emitted = 20_000_000;
  const later = unpackClasses((await srv.answer({ kind: 'at', pulses: f64Bytes(Float64Array.from([9_000_000])) })).classes as Uint8Array, 1);
  t.equal(later[0], record.intensities(9_000_000, 1)[0], 'revealed once the horizon has moved on');
});

t.test('malformed requests get a clear error', async (t) => {
  const srv = patternServer({ record: recordOf(record, () => 1e12), repRateHz: 1e9, holdbackPs: 1e9 });
  await t.rejects(srv.answer({ kind: 'range', first: 0 }), { code: 'BAD_PATTERN_REQUEST', message: /integer `first` and `count`/ });
  await t.rejects(srv.answer({ kind: 'range', first: 0, count: MAX_PATTERN_PULSES + 1 }), { code: 'BAD_PATTERN_REQUEST', message: /exceeds the limit/ });
  await t.rejects(srv.answer({ kind: 'at', pulses: [1, 2] }), { code: 'BAD_PATTERN_REQUEST', message: /bytes of little-endian f64/ });
  await t.rejects(srv.answer({ kind: 'at', pulses: new Uint8Array(12) }), { code: 'BAD_PATTERN_REQUEST', message: /bytes of little-endian f64/ });
  await t.rejects(srv.answer({ kind: 'bits' }), { code: 'BAD_PATTERN_REQUEST', message: /'range' or 'at'/ });
});

t.test('decoy security of the sync: nothing is revealed before the longest delay the link accepts', async (t) => {
  // 25 km: 122 µs of fibre + the sync's ±1.5 ms window + 0.5 ms margin.
  const hb = revealHoldbackPs(25);
  t.equal(hb, Math.ceil(25 * FIBRE_PS_PER_KM) + SYNC_MAX_OFFSET_PS + 0.5e9);
  t.ok(hb > SYNC_MAX_OFFSET_PS + 25 * FIBRE_PS_PER_KM, 'longer than any delay Bob\'s sync would still lock to (an eavesdropper\'s delay line included)');
  const horizon = 50_000_000;
  const srv = patternServer({ record: recordOf(record, () => horizon), repRateHz: 1e9, holdbackPs: hb });
  const hbPulses = Math.ceil(hb / 1000);
  // A pulse held by Eve for 1.5 ms + fibre (the most the sync accepts) is still unrevealed.
  const delayed = horizon - Math.round((SYNC_MAX_OFFSET_PS + 25 * FIBRE_PS_PER_KM) / 1000);
  const at = Float64Array.of(horizon - hbPulses - 1, horizon - hbPulses, delayed, horizon - 1_000_000, horizon - 1);
  const got = unpackClasses((await srv.answer({ kind: 'at', pulses: f64Bytes(at) })).classes as Uint8Array, at.length);
  t.equal(got[0], record.intensities(horizon - hbPulses - 1, 1)[0], 'older than the hold-back: revealed');
  t.same([...got.subarray(1)], [255, 255, 255, 255], 'at the hold-back, within the sync window or in flight (1 ms, the old hold-back): withheld');
  // Only announced pulses are read back from the source (the answer to an `at` request is exactly them).
  t.equal(srv.stats.pulsesWithheld, 4);
});

// lagPulses: Alice's emission clock behind the physics (a late start). delayPs: how long after its
// sample Bob asks for a pattern check. A check asked too early comes back mostly unknown: it is
// skipped (no verdict), and must never cost the lock.
for (const [lagPulses, delayPs] of [[0, 2e9], [20_000_000, 22e9], [20_000_000, 2e9]]) t.test(`Bob's sync locks through a real authenticated channel (Alice's horizon ${lagPulses / 1e6} ms behind, checks ${delayPs / 1e9} ms after their sample)`, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-pattern-'));
  const psk = randomBytes(16 + 32 * 2000);
  const alice = await AuthChannel.open({ role: 'alice', endpoint: 'tcp://127.0.0.1:*', bind: true, auth: Authenticator.fromPsk(psk, 'alice'), ledgerPath: join(dir, 'a.ledger'), timeoutMs: 20_000 });
  const bob = await AuthChannel.open({ role: 'bob', endpoint: alice.endpoint!, bind: false, auth: Authenticator.fromPsk(psk, 'bob'), ledgerPath: join(dir, 'b.ledger'), timeoutMs: 20_000 });
  t.teardown(async () => {
    await bob.close();
    await alice.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await Promise.all([alice.ready(5000), bob.ready(5000)]);
  const seed = 41n;
  const p = loadLinkPreset('reference-decoy', { clock: { offsetPs: 7e8, driftPpm: -12, jitterPs: 5 } });
  const link = new EmulatedLink(p, { seed, distanceKm: 50 });
  // Alice's emission horizon is the physics' own pulse count: the server must never be asked
  // beyond what it may reveal for the labels to match.
  let emitted = 0;
  const srv = patternServer({ record: recordOf(alicePatternFromSeed(link.preset, seed), () => emitted), repRateHz: p.repRateHz, holdbackPs: 1e9 });
  alice.handle('pattern', async (q: Record<string, unknown>) => srv.answer(q));
  const mu = [p.intensities.signal, p.intensities.decoy, p.intensities.vacuum];
  const remote = new ClockSync({ repRateHz: p.repRateHz, pattern: remotePattern((type, payload) => bob.request(type, payload), mu), verifyEveryPs: 1e11, verifyDelayPs: delayPs });
  const local = new ClockSync({ repRateHz: p.repRateHz, pattern: alicePatternFromSeed(link.preset, seed), verifyEveryPs: 1e11, verifyDelayPs: delayPs });
  let labelled = 0, differ = 0;
  for (let done = 0; done < 0.6e9; done += 3e7) {
    const b = link.nextPulses(3e7);
    emitted = done + 3e7 - lagPulses;
    const r = await remote.pushAsync(b.tags);
    const l = local.push(b.tags);
    labelled += r.pulseIndex.length;
    if (r.pulseIndex.length !== l.pulseIndex.length) differ++;
    else for (let i = 0; i < r.pulseIndex.length; i++) if (r.pulseIndex[i] !== l.pulseIndex[i]) { differ++; break; }
  }
  const s = remote.state();
  t.ok(s.locked, `locked with the remote pattern (confidence ${s.confidence.toFixed(1)})`);
  t.ok(labelled > 1e5, `${labelled} detections labelled`);
  const early = delayPs < lagPulses * 1e3;
  if (!early) t.equal(differ, 0, 'every batch labelled exactly as with the locally regenerated pattern');
  t.ok(srv.stats.requests >= 3 && srv.stats.requests < 40, `${srv.stats.requests} pattern requests (acquisition + checks)`);
  if (early) t.ok(srv.stats.pulsesWithheld > 0, `${srv.stats.pulsesWithheld} pulses withheld (checks asked too early)`);
  else t.equal(srv.stats.pulsesWithheld, 0, 'nothing withheld when Bob asks only for pulses older than the hold-back');
  t.equal(remote.state().stats.lockLosses, 0);
  if (early) t.ok(remote.state().stats.checksSkipped > 0, `${remote.state().stats.checksSkipped} checks skipped, lock kept`);
  else t.equal(remote.state().stats.checksSkipped, 0, 'every pattern check had its answer');
  t.throws(() => remote.push(link.nextPulses(1e6).tags), { code: 'ASYNC_PATTERN' }, 'the synchronous push refuses a remote pattern');
});

t.test('a failed pattern request does not end the sync: the acquisition is retried and checks are skipped', async (t) => {
  const seed = 43n;
  const p = loadLinkPreset('reference-decoy', { clock: { offsetPs: -4e8, driftPpm: 8, jitterPs: 5 } });
  const link = new EmulatedLink(p, { seed, distanceKm: 25 });
  const srv = patternServer({ record: recordOf(alicePatternFromSeed(link.preset, seed), () => Number.MAX_SAFE_INTEGER), repRateHz: p.repRateHz, holdbackPs: 0 });
  // The first acquisition's requests and every third request after it fail (a timeout, the
  // channel down): as the channel's request would reject.
  let calls = 0;
  const request = async (_type: string, payload: Record<string, unknown>) => {
    calls++;
    if (calls <= 2 || calls % 3 === 0) throw new Error('TIMEOUT: no answer from the peer within 20000 ms');
    return srv.answer(payload);
  };
  const failures: string[] = [];
  const mu = [p.intensities.signal, p.intensities.decoy, p.intensities.vacuum];
  const sync = new ClockSync({ repRateHz: p.repRateHz, pattern: remotePattern(request, mu, (f) => failures.push(`${f.kind} ${f.pulses}`)), verifyEveryPs: 2e10 });
  let labelled = 0;
  for (let done = 0; done < 0.8e9; done += 3e7) labelled += (await sync.pushAsync(link.nextPulses(3e7).tags)).pulseIndex.length;
  const s = sync.state();
  t.ok(failures.length >= 3, `failures reported: ${failures.slice(0, 4).join(', ')}${failures.length > 4 ? ', ...' : ''}`);
  t.ok(s.stats.acquisitions >= 2, `${s.stats.acquisitions} acquisitions (the first one had no pattern)`);
  t.ok(s.locked && labelled > 1e5, `locked, ${labelled} detections labelled`);
  t.ok(s.stats.checksSkipped >= 1, `${s.stats.checksSkipped} checks skipped`);
  t.equal(s.stats.lockLosses, 0, 'no lock lost to a failed request');
});

t.test('a malformed pattern answer still fails closed', async (t) => {
  const rp = remotePattern(async () => ({ nothing: true }), [0.5, 0.1, 0]);
  await t.rejects(rp.fetch({ kind: 'range', first: 0, count: 4 }), { code: 'BAD_PATTERN_ANSWER' });
});
