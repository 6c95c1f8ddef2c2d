/**
 * Alice's read-back of her source's record, alone: the PS-1 driver asks the emulated source
 * (served from its worker thread, as in `qkd run --emulated`) for the choices at a sorted list of
 * pulses over a real socat pty pair, the path on the critical path of every block's sift
 * (docs/run.md, "Measured after these changes"). Pulses are spaced like Bob's detections at 25 km
 * (one in ~200 on average, geometric gaps), 2^22 per request (the profile's maxPulses). Reported:
 * pulses per wall second and the bytes moved per wall second (request: LEB128 deltas; reply: a
 * nibble per pulse), median of QKD_READBACK_BENCH_REPEATS (default 3), and in params the wall
 * times, the bytes each way and the driver's LEB128 encode time. No baseline: there is no slower
 * reference of a transport; the in-process lookup is measured by the lab bench.
 */
import { loadProfile, type SerialSettings } from '../src/devices/profile.ts';
import { EmulatedLab } from '../src/devices/emulated/lab.ts';
import { attachSourceWorkerToTty } from '../src/devices/emulated/source-worker.ts';
import { SerialLineTransport } from '../src/devices/transports/serial.ts';
import { PhotonSourceDriver } from '../src/devices/drivers/scpi.ts';
import { encodePulseList } from '../src/protocol/pulse-list.ts';
import { hasSocat, startPtyPair, tempDir } from '../src/testkit/devices.ts';
import { loadavg } from 'node:os';
import { median, type BenchResult } from './stats.ts';

const PULSES = 1 << 22;
const MEAN_GAP = 200;
const REPEATS = Number(process.env.QKD_READBACK_BENCH_REPEATS ?? 3);

/** Sorted pulse indices with geometric gaps of mean MEAN_GAP (a fixed LCG: same list every run). */
function pulseList(n: number): Float64Array {
  const out = new Float64Array(n);
  let x = 0x9e3779b9;
  let at = 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    at += 1 + Math.floor(-Math.log((x + 1) / 4294967297) * (MEAN_GAP - 1));
    out[i] = at;
  }
  return out;
}

export async function run(): Promise<BenchResult[]> {
  if (!hasSocat()) {
    console.error('readback: socat is not installed (apt-get install socat); skipped');
    return [];
  }
  const dir = tempDir('qkd-readback-bench-');
  const pair = await startPtyPair(dir.path, 'ps1');
  const lab = new EmulatedLab({ preset: 'reference-decoy', seed: 11n, distanceKm: 25, awaitSource: true });
  const att = await attachSourceWorkerToTty(lab, pair.b);
  const profile = loadProfile('emulab-ps1');
  const drv = new PhotonSourceDriver({ id: 'bench-src', profile, transport: new SerialLineTransport({ path: pair.a, settings: profile.transport as SerialSettings }) });
  try {
    await drv.open();
    await drv.setPattern(0);
    await drv.setEnabled(true);
    for (let i = 0; i < 500 && !lab.ready(); i++) await new Promise((r) => setTimeout(r, 10));
    const pulses = pulseList(PULSES);
    const last = pulses[pulses.length - 1];
    // Emit past the last pulse: the source refuses a read-back of pulses not yet emitted.
    while (lab.pulsesEmitted <= last) lab.nextPulses(Math.min(100_000_000, last + 1 - lab.pulsesEmitted + 1));
    const requestBytes = encodePulseList(pulses).length;
    const replyBytes = Math.ceil(PULSES / 2);
    const t0 = performance.now();
    encodePulseList(pulses);
    const encodeMs = performance.now() - t0;
    const walls: number[] = [];
    for (let r = 0; r < REPEATS; r++) {
      const t1 = performance.now();
      const got = await drv.readChoices(pulses);
      walls.push((performance.now() - t1) / 1000);
      if (got.length !== PULSES) throw new Error(`read-back answered ${got.length} choices for ${PULSES} pulses`);
    }
    const s = median(walls);
    const params = { pulses: PULSES, meanGap: MEAN_GAP, requestBytes, replyBytes, via: 'socat pty pair, source on its worker thread',
      repeats: REPEATS, wallSeconds: walls, encodeMs, loadavg: loadavg()[0] };
    return [
      { name: 'readback.choices_pulses_per_wall_second', value: Math.round(PULSES / s), unit: 'pulses/s', better: 'higher', params },
      { name: 'readback.choices_bytes_per_wall_second', value: Math.round((requestBytes + replyBytes) / s), unit: 'B/s', better: 'higher', params },
    ];
  } finally {
    await drv.close();
    await att.close();
    await pair.kill();
    dir.remove();
  }
}
