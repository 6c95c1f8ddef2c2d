/**
 * The USB time-tagger driver + USB transport against the emulated tagger at the transfer level:
 * conformance, settings acting on tags, in-band overflow, unplug mid-stream, record and replay.
 */
import t from 'tap';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { DeviceError, TransportError } from '../../src/errors.ts';
import { loadProfile } from '../../src/devices/profile.ts';
import { EmulatedLab } from '../../src/devices/emulated/lab.ts';
import { EmulatedUsbTagger } from '../../src/devices/emulated/usb-tagger.ts';
import { TimeTaggerDriver } from '../../src/devices/drivers/tagger.ts';
import { openReplayTagger, readRecordingHeader, recordTagStream } from '../../src/devices/record.ts';
import type { TagEvent, TagStreamBatch } from '../../src/devices/types.ts';
import { taggerConformance, tempDir, waitForState } from '../../src/testkit/devices.ts';
import { createSourceDevice } from '../../src/core/source-device.ts';
import { choiceThresholds } from '../../src/protocol/choices.ts';

const profile = loadProfile('emulab-tt8');
const dir = tempDir('qkd-tagger-');
t.teardown(() => dir.remove());

function rig(seed = 5n, source: 'link' | 'synthetic' = 'link') {
  const lab = new EmulatedLab({ seed, source, distanceKm: 10 });
  const dev = new EmulatedUsbTagger(lab);
  const driver = new TimeTaggerDriver({ id: 'bob-tagger', profile, device: dev, reconnect: { initialMs: 10, maxMs: 50, maxAttempts: 100 } });
  return { lab, dev, driver };
}

async function collect(it: AsyncIterable<TagStreamBatch>) {
  const times: bigint[] = [];
  const chans: number[] = [];
  const events: TagEvent[] = [];
  for await (const b of it) {
    for (const e of b.events) events.push({ ...e, index: e.index + times.length });
    times.push(...b.timePs);
    chans.push(...b.channel);
  }
  return { times, chans, events };
}

t.test('conformance (emulated tagger, EmulatedLink physics)', async (t) => {
  const { driver } = rig();
  t.teardown(() => driver.close());
  t.same(await driver.open(), { vendor: 'EmuLab', model: 'TT-8', serial: 'TT8-0001', firmware: '3.0.1' });
  await taggerConformance(t, driver);
  await driver.setReferenceClock(1);
  t.equal(await driver.get('reference_clock'), 1);
  await driver.setThresholdV(2, -0.25);
  t.equal(await driver.get('trigger_level:2'), -0.25);
  await t.rejects(driver.setEdge(0, 2 as 0), { code: 'OUT_OF_RANGE' });
  await t.rejects(driver.get('delay:9'), { code: 'UNKNOWN_CHANNEL' });
});

t.test('channel delays set through the driver shift the tags and keep time order', async (t) => {
  const a = rig(11n);
  const b = rig(11n);
  t.teardown(() => Promise.all([a.driver.close(), b.driver.close()]));
  await a.driver.open();
  await b.driver.open();
  await b.driver.setDelayPs(1, 700_000); // 0.7 µs: reorders tags across channels
  const n = 30_000;
  const plain = await collect(a.driver.startStream({ maxTags: n }));
  const shifted = await collect(b.driver.startStream({ maxTags: n }));
  let sorted = true;
  for (let i = 1; i < shifted.times.length; i++) if (shifted.times[i] < shifted.times[i - 1]) sorted = false;
  t.ok(sorted, 'delayed stream still in time order');
  // Same physics (same seed): channel-0 tags identical, channel-1 tags shifted by exactly 0.7 µs.
  const pick = (x: { times: bigint[]; chans: number[] }, c: number) => x.times.filter((_, i) => x.chans[i] === c);
  const p0 = pick(plain, 0), s0 = pick(shifted, 0), p1 = pick(plain, 1), s1 = pick(shifted, 1);
  const m0 = Math.min(p0.length, s0.length) - 50, m1 = Math.min(p1.length, s1.length) - 50;
  t.ok(m0 > 1000 && m1 > 1000, 'both channels have tags');
  t.same(s0.slice(0, m0), p0.slice(0, m0), 'channel 0 unchanged');
  t.same(s1.slice(0, m1), p1.slice(0, m1).map((x) => x + 700_000n), 'channel 1 shifted by the delay');
});

t.test('overflow is reported in band, with the number of missed events per channel', async (t) => {
  const { driver, dev } = rig(3n);
  t.teardown(() => driver.close());
  await driver.open();
  const s = driver.startStream({ maxTags: 40_000 });
  const events: TagEvent[] = [];
  let i = 0;
  let tags = 0;
  for await (const b of s) {
    if (i++ === 1) dev.injectOverflow(5000);
    tags += b.timePs.length;
    events.push(...b.events);
  }
  t.equal(tags, 40_000);
  t.same(events.map((e) => e.type).filter((x) => x !== 4), [2, 3], 'one OVERFLOW_BEGIN then OVERFLOW_END');
  const missed = events.filter((e) => e.type === 4).reduce((a, e) => a + e.missedEvents, 0);
  t.equal(missed, 5000, 'missed events add up to what was lost');
  t.equal(s.stats.overflows, 1);
  t.equal(s.stats.missedEvents, 5000);
  t.equal(driver.state, 'ready', 'an overflow is data, not a failure');
});

t.test('unplugged mid-stream: the iteration fails at once, the driver reconnects', async (t) => {
  const { driver, dev } = rig(4n);
  t.teardown(() => driver.close());
  await driver.open();
  const s = driver.startStream();
  let batches = 0;
  const t0 = performance.now();
  const err = await (async () => {
    for await (const _ of s) {
      if (++batches === 3) dev.unplug();
    }
  })().catch((e) => e);
  t.ok(err instanceof TransportError && err.code === 'DISCONNECTED', `stream ended with DISCONNECTED (${err})`);
  t.ok(performance.now() - t0 < 2000, 'no hang');
  t.ok(['disconnected', 'reconnecting'].includes(driver.state), `state is ${driver.state}`);
  setTimeout(() => dev.replug(), 60);
  await waitForState(driver, 'ready', 3000);
  const again = await collect(driver.startStream({ maxTags: 1000 }));
  t.equal(again.times.length, 1000, 'a new stream works after reconnect');
});

t.test('one stream at a time; stop() ends an idle stream', async (t) => {
  const { driver, lab } = rig(6n, 'synthetic');
  t.teardown(() => driver.close());
  await driver.open();
  const s = driver.startStream();
  t.throws(() => driver.startStream(), DeviceError);
  const it = s[Symbol.asyncIterator]();
  await it.next();
  await s.stop();
  t.same(await it.next(), { done: true, value: undefined });
  void lab;
  const s2 = driver.startStream({ maxTags: 10 });
  t.equal((await collect(s2)).times.length, 10, 'a new stream after stop');
});

t.test('record a stream (with an overflow) and replay it through the TimeTagger interface', async (t) => {
  const { driver, dev } = rig(8n);
  t.teardown(() => driver.close());
  const id = await driver.open();
  const file = join(dir.path, 'rec.qkdtags');
  const live: TagStreamBatch[] = [];
  async function* tee() {
    let i = 0;
    for await (const b of driver.startStream({ maxTags: 25_000, transferBytes: 16 * 1024 })) {
      if (i++ === 2) dev.injectOverflow(300);
      live.push(b);
      yield b;
    }
  }
  const n = await recordTagStream(tee(), file, { deviceId: 'bob-tagger', profile: 'emulab-tt8', identity: id, startedAt: new Date().toISOString(), settings: { 'delay:0': 0 } });
  const { header, records } = await readRecordingHeader(file);
  t.equal(records, n);
  t.equal(header.deviceId, 'bob-tagger');
  const replay = await openReplayTagger(file);
  t.teardown(() => replay.close());
  t.equal(replay.kind, 'time-tagger');
  t.same(await replay.identity(), id, 'replay has the recorded identity');
  const back = await collect(replay.startStream({ transferBytes: 4096 }));
  const orig = await collect((async function* () { yield* live; })());
  t.equal(back.times.length, 25_000);
  t.same(back.times, orig.times, 'same tags');
  t.same(back.chans, orig.chans, 'same channels');
  t.same(back.events, orig.events, 'same in-band events at the same places');
  t.ok(back.events.some((e) => e.type === 2), 'the overflow is in the replay');
});

t.test('a file that is not a recording is refused clearly', async (t) => {
  const f = join(dir.path, 'junk.bin');
  writeFileSync(f, 'hello world, not tags');
  await t.rejects(openReplayTagger(f), { code: 'BAD_RECORDING', message: /junk\.bin: not a tag recording/ });
  await t.rejects(openReplayTagger(join(dir.path, 'missing.bin')), { code: 'RECORDING_NOT_FOUND' });
});

t.test('property: per-channel delays give exactly the sorted shifted tags, at any epoch (beyond 2^53 ps)', async (t) => {
  let seed = 12345;
  const r = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296);
  for (const epoch of [0n, 1n << 60n, -(1n << 40n)]) {
    // Raw tags: sorted, random gaps, 4 channels; delivered in pulls of random size.
    const raw: { t: bigint; c: number }[] = [];
    let now = epoch;
    for (let i = 0; i < 20_000; i++) {
      now += BigInt(Math.floor(r() * 3000));
      raw.push({ t: now, c: Math.floor(r() * 4) });
    }
    let at = 0;
    const source = {
      nextPulses: () => {
        const k = Math.min(raw.length - at, 1 + Math.floor(r() * 3000));
        const part = raw.slice(at, at + k);
        at += k;
        return { tags: { timePs: BigInt64Array.from(part, (x) => x.t), channel: Uint8Array.from(part, (x) => x.c) } };
      },
    };
    const dev = new EmulatedUsbTagger(source);
    const driver = new TimeTaggerDriver({ id: 'prop', profile, device: dev });
    await driver.open();
    const delays = [0, 250_000, -130_000, 7];
    for (let c = 0; c < 4; c++) await driver.setDelayPs(c, delays[c]);
    const got = await collect(driver.startStream({ maxTags: 19_000 }));
    await driver.close();
    const want = raw.map((x) => ({ t: x.t + BigInt(delays[x.c]), c: x.c })).sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : a.c - b.c)).slice(0, 19_000);
    let sorted = true;
    for (let i = 1; i < got.times.length; i++) if (got.times[i] < got.times[i - 1]) sorted = false;
    t.ok(sorted, `epoch ${epoch}: time order`);
    const norm = got.times.map((x, i) => ({ t: x, c: got.chans[i] })).sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : a.c - b.c));
    t.same(norm.map((x) => x.t), want.map((x) => x.t), `epoch ${epoch}: exact times`);
    t.same(norm.map((x) => x.c), want.map((x) => x.c), `epoch ${epoch}: channels`);
  }
});

t.test('real-time mode: a consumer that stalls overflows the FIFO, reported in band, nothing silently lost', async (t) => {
  // One tag every 1000 pulses at 1 GHz: tag k at k us. Real-time at speed 1e-3: ~1000 tags/s.
  let next = 0;
  const source = {
    nextPulses(pulses: number) {
      const times: bigint[] = [];
      const end = next + pulses;
      for (let p = Math.ceil(next / 1000) * 1000; p < end; p += 1000) times.push(BigInt(p) * 1000n);
      next = end;
      return { tags: { timePs: BigInt64Array.from(times), channel: new Uint8Array(times.length) } };
    },
  };
  const dev = new EmulatedUsbTagger(source, { realtime: { speed: 1e-3, fifoRecords: 100 }, repRateHz: 1e9 });
  const driver = new TimeTaggerDriver({ id: 'rt', profile, device: dev });
  t.teardown(() => driver.close());
  await driver.open();
  const times: bigint[] = [];
  const events: TagEvent[] = [];
  let stalled = false;
  for await (const b of driver.startStream()) {
    times.push(...b.timePs);
    events.push(...b.events);
    if (!stalled && times.length >= 20) {
      stalled = true;
      await new Promise((r) => setTimeout(r, 400)); // ~400 tags due, FIFO holds 100
    }
    if (events.some((e) => e.type === 3) && times.length >= 150) break;
  }
  t.same(events.filter((e) => e.type !== 4).map((e) => e.type), [2, 3], 'one overflow: begin, end');
  const missed = events.filter((e) => e.type === 4).reduce((a, e) => a + e.missedEvents, 0);
  t.ok(missed >= 200, `missed ${missed} tags during the stall`);
  // Conservation: every tag up to the last delivered one was either delivered or counted missed.
  const last = times[times.length - 1];
  t.equal(times.length + missed, Number(last / 1_000_000n) + 1, 'delivered + missed = generated');
  let sorted = true;
  for (let i = 1; i < times.length; i++) if (times[i] <= times[i - 1]) sorted = false;
  t.ok(sorted, 'strictly increasing');
});

t.test('resume: an unplug mid-stream is marked in band and the stream carries on after reconnect', async (t) => {
  const { driver, dev } = rig(9n);
  t.teardown(() => driver.close());
  await driver.open();
  const seqs: number[] = [];
  const times: bigint[] = [];
  const events: TagEvent[] = [];
  let i = 0;
  for await (const b of driver.startStream({ resume: true, maxTags: 30_000, transferBytes: 16 * 1024 })) {
    seqs.push(b.seq);
    times.push(...b.timePs);
    events.push(...b.events);
    if (++i === 3) {
      dev.unplug();
      setTimeout(() => dev.replug(), 80);
    }
  }
  t.equal(times.length, 30_000, 'all requested tags arrived');
  t.same(seqs, seqs.map((_, k) => k), 'sequence numbers without gaps');
  const gap = events.filter((e) => e.type === 1);
  t.equal(gap.length, 1, 'one in-band error marks the gap');
  t.equal(gap[0].channel, -1);
  let sorted = true;
  for (let k = 1; k < times.length; k++) if (times[k] < times[k - 1]) sorted = false;
  t.ok(sorted, 'time order across the gap');
  t.equal(driver.state, 'ready');
});

t.test('resume: stop() ends a stream that waits for a reconnect that never comes', async (t) => {
  const { driver, dev } = rig(10n);
  t.teardown(() => driver.close());
  await driver.open();
  const s = driver.startStream({ resume: true });
  const it = s[Symbol.asyncIterator]();
  await it.next();
  dev.unplug();
  const marker = (await it.next()).value!;
  t.equal(marker.events[0]?.channel, -1, 'gap marker');
  const pending = it.next(); // now waiting for the reconnect
  const t0 = performance.now();
  await s.stop();
  t.same(await pending, { done: true, value: undefined });
  t.ok(performance.now() - t0 < 1000, 'no hang');
});

t.test('an idle tagger that is unplugged is noticed at once (hot-plug event) and reconnects', async (t) => {
  const { driver, dev } = rig(12n, 'synthetic');
  t.teardown(() => driver.close());
  await driver.open();
  const lost = waitForState(driver, 'reconnecting', 2000);
  dev.unplug();
  const seen = await lost;
  t.equal(seen[0].state, 'disconnected');
  t.match(seen[0].reason ?? '', /unplugged/);
  dev.replug();
  await waitForState(driver, 'ready', 3000);
  t.equal(await driver.delayPs(0), 0);
});

t.test('trigger level and edge act on the tags as on a real tagger input', async (t) => {
  const a = rig(13n);
  const b = rig(13n);
  t.teardown(() => Promise.all([a.driver.close(), b.driver.close()]));
  await a.driver.open();
  await b.driver.open();
  await b.driver.setThresholdV(1, 1.0); // above the 0.8 V detector pulses: channel 1 goes blind
  await b.driver.setEdge(0, 1); // falling edge: one pulse width (5 ns) later
  const plain = await collect(a.driver.startStream({ maxTags: 20_000 }));
  const cond = await collect(b.driver.startStream({ maxTags: 8_000 }));
  t.notOk(cond.chans.includes(1), 'no tags from the blind channel');
  const p0 = plain.times.filter((_, i) => plain.chans[i] === 0);
  t.same(cond.times.slice(0, 5000), p0.slice(0, 5000).map((x) => x + 5000n), 'channel 0 shifted by the pulse width');
});

// Bob's node runs its tagger with prefetch: the lab emulates the next pull on libuv's pool while
// the host handles a transfer. Twin labs (same seed, twin source devices called natively, as the
// node's lab is): the same records through the real driver, with and without prefetch; a batch
// in flight at a stop is dropped; a physics error in flight reaches the next transfer, never an
// unhandled rejection.
t.test('prefetch: the same stream off the JS thread; stop drops the batch in flight; errors reach the reader', async (t) => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => (i * 29 + 3) & 255);
  const twin = (prefetch: boolean) => {
    const lab = new EmulatedLab({ seed: 21n, distanceKm: 25, truth: false });
    const dev = createSourceDevice(choiceThresholds(lab.preset), { testKey: key });
    lab.attachSourceDevice(dev, (p) => dev.applyAt(p), dev.native);
    const tagger = new EmulatedUsbTagger(lab, { prefetch, pulsesPerPull: 200_000 });
    return { lab, tagger, driver: new TimeTaggerDriver({ id: `tt-${prefetch}`, profile, device: tagger }) };
  };
  const a = twin(false);
  const b = twin(true);
  t.teardown(() => Promise.all([a.driver.close(), b.driver.close()]));
  await a.driver.open();
  await b.driver.open();
  const n = 400_000;
  const plain = await collect(a.driver.startStream({ maxTags: n, transferBytes: 1 << 16 }));
  const ahead = await collect(b.driver.startStream({ maxTags: n, transferBytes: 1 << 16 }));
  t.equal(ahead.times.length, n);
  t.ok(plain.times.every((x, i) => x === ahead.times[i]) && plain.chans.every((c, i) => c === ahead.chans[i]), `${n} tags identical with prefetch`);

  // The pull in flight when the stream stopped is dropped (had it been used, the twins' next
  // streams would start with the same tag).
  const nextA = await collect(a.driver.startStream({ maxTags: 1000, transferBytes: 1 << 16 }));
  const nextB = await collect(b.driver.startStream({ maxTags: 1000, transferBytes: 1 << 16 }));
  t.ok(nextA.times[0] > plain.times[n - 1] && nextB.times[0] > nextA.times[0], 'the next stream starts after the dropped pull');

  // A physics error during a prefetched pull fails the transfer that needed it.
  const fail = new Error('LAB_TEST: the physics failed');
  b.lab.nextPulsesAsync = () => Promise.reject(fail);
  await t.rejects(collect(b.driver.startStream({ maxTags: 200_000, transferBytes: 1 << 16 })), /the physics failed/, 'the error reaches the stream');
});

// A prefetched pull may hold more than one transfer (the count rate rose since the pull size was
// adapted: a laser switched on, a shorter fibre). The transfers it covers are served from the FIFO
// while the next pull is still in flight; that pull is kept, not replaced by a second one (the
// lab takes one batch at a time: a second call failed the stream, and the first pull's light was
// lost). A source of fixed 12 288-tag pulls (three 64 KiB transfers each) that refuses a call
// while one is in flight: every tag comes through, in order.
t.test('prefetch: a pull that covers several transfers keeps the next pull in flight', async (t) => {
  let inFlight = false;
  let next = 0n;
  const tagsPerPull = 3 * 4096;
  const source = {
    nextPulses: (): never => { throw new Error('the synchronous path was used'); },
    nextPulsesAsync: async () => {
      if (inFlight) throw new Error('a second pull while one is in flight');
      inFlight = true;
      await new Promise((r) => setTimeout(r, 2));
      inFlight = false;
      const timePs = new BigInt64Array(tagsPerPull).map(() => (next += 1000n));
      return { tags: { timePs, channel: new Uint8Array(tagsPerPull) } };
    },
  };
  const tagger = new EmulatedUsbTagger(source, { prefetch: true, pulsesPerPull: 1000 });
  const driver = new TimeTaggerDriver({ id: 'tt-big-pulls', profile, device: tagger });
  t.teardown(() => driver.close());
  await driver.open();
  const n = 10 * tagsPerPull;
  const got = await collect(driver.startStream({ maxTags: n, transferBytes: 1 << 16 }));
  t.equal(got.times.length, n, `${n} tags through`);
  t.ok(got.times.every((x, i) => x === BigInt(i + 1) * 1000n), 'every tag of every pull, in order (none lost with a replaced pull)');
});
