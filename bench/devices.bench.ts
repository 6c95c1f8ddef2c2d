/**
 * Device layer throughput:
 * - tags/s the emulated time-tagger delivers through the USB transport + record decoder + driver
 *   to a consumer (`for await`), with a pre-generated tag source so the figure is the device
 *   layer's own (baseline: the slow DataView record decoder on the same bytes), and end to end
 *   with the EmulatedLink physics generating the tags (reference-decoy, 50 km);
 * - SCPI query round trips/s through transport + driver, over the answering serialport binding
 *   and over a real socat pty pair (skipped when socat is missing).
 * Anchor: Swabian Time Tagger Ultra/X host ingest ~80 M tags/s over USB 3 (docs/anchors).
 */
import { loadProfile, type SerialSettings } from '../src/devices/profile.ts';
import { EmulatedLab, type PulseTagSource } from '../src/devices/emulated/lab.ts';
import { EmulatedUsbTagger } from '../src/devices/emulated/usb-tagger.ts';
import { TimeTaggerDriver } from '../src/devices/drivers/tagger.ts';
import { decodeTagRecordsSlow, encodeTimeTags, TAG_RECORD_BYTES } from '../src/devices/tags.ts';
import { EmulatedSpadDetector } from '../src/devices/emulated/instruments.ts';
import { attachInstrumentToTty } from '../src/devices/emulated/pty.ts';
import { SerialLineTransport } from '../src/devices/transports/serial.ts';
import { SpadDetectorDriver } from '../src/devices/drivers/scpi.ts';
import { emulatedSpad, hasSocat, startPtyPair, tempDir } from '../src/testkit/devices.ts';
import { median, type BenchResult } from './stats.ts';

/**
 * Serves pre-generated batches (times increasing across batches), so the figure measures the
 * tagger emulation + USB transport + decoder + driver, not tag generation.
 */
class CannedSource implements PulseTagSource {
  private i = 0;
  constructor(private readonly batches: { timePs: BigInt64Array; channel: Uint8Array }[]) {}
  nextPulses(): { tags: { timePs: BigInt64Array; channel: Uint8Array } } {
    return { tags: this.batches[this.i++ % this.batches.length] };
  }
}

function cannedBatches(total: number, per: number) {
  const out: { timePs: BigInt64Array; channel: Uint8Array }[] = [];
  for (let b = 0; b * per < total + per; b++) {
    out.push({
      timePs: BigInt64Array.from({ length: per }, (_, i) => BigInt((b * per + i) * 1000 + (i % 7))),
      channel: Uint8Array.from({ length: per }, (_, i) => i & 1),
    });
  }
  return out;
}

async function streamRate(source: PulseTagSource, tags: number, transferBytes: number): Promise<number> {
  const drv = new TimeTaggerDriver({ id: 'bench-tagger', profile: loadProfile('emulab-tt8'), device: new EmulatedUsbTagger(source) });
  await drv.open();
  const t0 = process.hrtime.bigint();
  let n = 0;
  for await (const b of drv.startStream({ maxTags: tags, transferBytes })) n += b.timePs.length;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  await drv.close();
  return n / s;
}

async function roundTrips(driver: SpadDetectorDriver, n: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await driver.get('dead_time');
  return n / (Number(process.hrtime.bigint() - t0) / 1e9);
}

export async function run(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  const repeats = 5;

  // Canned tags: batches of 64 Ki tags, two channels, ~1 ns apart.
  const m = 1 << 16;
  const tags = 4_000_000;
  const batches = cannedBatches(tags, m);
  const { timePs: times, channel: chans } = batches[0];
  for (const transferBytes of [64 * 1024, 1024 * 1024]) {
    const rates: number[] = [];
    for (let r = 0; r < repeats; r++) rates.push(await streamRate(new CannedSource(batches), tags, transferBytes));
    // Baseline: the slow reference decoder on the same records.
    const bytes = new Uint8Array(m * TAG_RECORD_BYTES);
    encodeTimeTags(times, chans, 0, m, bytes);
    const base: number[] = [];
    for (let r = 0; r < repeats; r++) {
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < 8; k++) decodeTagRecordsSlow(bytes);
      base.push((8 * m) / (Number(process.hrtime.bigint() - t0) / 1e9));
    }
    out.push({ name: 'devices.tagger_usb_driver_tags_per_sec', value: Math.round(median(rates)), unit: 'tags/s', better: 'higher', params: { tags, transferBytes, source: 'canned', anchor: 'Swabian TT Ultra/X ~80e6 tags/s host ingest' }, baseline: Math.round(median(base)) });
  }

  // End to end: EmulatedLink physics -> emulated tagger -> USB transport -> driver -> consumer.
  {
    const rates: number[] = [];
    for (let r = 0; r < 3; r++) rates.push(await streamRate(new EmulatedLab({ seed: BigInt(r + 1), distanceKm: 50 }), 500_000, 64 * 1024));
    out.push({ name: 'devices.tagger_end_to_end_tags_per_sec', value: Math.round(median(rates)), unit: 'tags/s', better: 'higher', params: { tags: 500_000, preset: 'reference-decoy', distanceKm: 50, source: 'EmulatedLink' } });
  }

  // Serial round trips over the answering binding.
  {
    const rig = emulatedSpad();
    await rig.driver.open();
    await roundTrips(rig.driver, 200);
    const rates: number[] = [];
    for (let r = 0; r < repeats; r++) rates.push(await roundTrips(rig.driver, 2000));
    await rig.driver.close();
    out.push({ name: 'devices.serial_round_trips_per_sec', value: Math.round(median(rates)), unit: 'queries/s', better: 'higher', params: { via: 'emulated serialport binding', query: 'DEADTIME:TIME?' } });
  }

  // Serial round trips over a real pty pair.
  if (hasSocat()) {
    const dir = tempDir('qkd-bench-pty-');
    const pair = await startPtyPair(dir.path, 'bench');
    const att = await attachInstrumentToTty(new EmulatedSpadDetector(), pair.b);
    const profile = loadProfile('emulab-spad1');
    const drv = new SpadDetectorDriver({ id: 'bench-spad', profile, transport: new SerialLineTransport({ path: pair.a, settings: profile.transport as SerialSettings }) });
    await drv.open();
    await roundTrips(drv, 200);
    const rates: number[] = [];
    for (let r = 0; r < repeats; r++) rates.push(await roundTrips(drv, 1000));
    await drv.close();
    await att.close();
    await pair.kill();
    dir.remove();
    out.push({ name: 'devices.serial_round_trips_per_sec_pty', value: Math.round(median(rates)), unit: 'queries/s', better: 'higher', params: { via: 'socat pty pair, 115200 baud settings', query: 'DEADTIME:TIME?' } });
  }
  return out;
}
