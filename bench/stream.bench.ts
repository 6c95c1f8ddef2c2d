/**
 * Detection events per second from an emulated tagger (src/stream/replay.ts, a separate process)
 * through ZeroMQ ipc into the native ingest (ordering check, per-channel counts, phase
 * histogram). Baseline: the same stream consumed by a plain TypeScript loop doing the same work
 * (the slow reference consumer). Anchor: Swabian Time Tagger X ~80 M tags/s over USB 3.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StreamConsumer, view64 } from '../src/stream/consumer.ts';
import { Ingest } from '../src/core/ingest.ts';
import { median, type BenchResult } from './stats.ts';

const here = dirname(fileURLToPath(import.meta.url));

function jsIngest(epoch: bigint, data: Uint8Array, ch: Uint8Array, counts: Float64Array, hist: Float64Array, state: { last: bigint; viol: number }) {
  const t = view64(BigInt64Array, data);
  let last = state.last;
  for (let i = 0; i < t.length; i++) {
    const x = epoch + t[i];
    if (x < last) state.viol++;
    last = x;
    counts[ch[i]]++;
    hist[(ch[i] << 6) | Number((x >> 6n) & 63n)]++;
  }
  state.last = last;
}

/** Spawns a producer, times `windows` windows of `perWindow` batches; returns events/s per window. */
async function measure(native: boolean, windows: number, perWindow: number, perBatch: number, offThread = false): Promise<{ rates: number[]; viol: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-bench-stream-'));
  const ep = `ipc://${join(dir, 'ev.ipc')}`;
  const con = await StreamConsumer.open({ endpoint: ep, bind: true, receiveHighWaterMark: 4, ingest: native ? new Ingest({ binShift: 6, bins: 64 }) : null, offThread });
  const total = 3 + windows * perWindow + 2;
  const child = spawn(process.execPath, ['--import', 'tsx', join(here, '../src/stream/replay.ts'), ep, String(perBatch), String(total), 'connect'], { stdio: 'inherit' });
  const counts = new Float64Array(256);
  const hist = new Float64Array(256 * 64);
  const st = { last: -(2n ** 63n), viol: 0 };
  const one = async () => {
    let timer: NodeJS.Timeout | undefined;
    const b = await Promise.race([con.receive(), new Promise<never>((_, rej) => { timer = setTimeout(() => rej(new Error('bench: producer stopped sending (no batch for 60 s)')), 60_000); })]);
    clearTimeout(timer);
    if (!native) jsIngest(b.header.epochPs, b.data, b.channels, counts, hist, st);
    return b.count;
  };
  try {
    for (let i = 0; i < 3; i++) await one(); // warm-up
    const rates: number[] = [];
    for (let w = 0; w < windows; w++) {
      const t0 = process.hrtime.bigint();
      let n = 0;
      for (let i = 0; i < perWindow; i++) n += await one();
      rates.push(n / (Number(process.hrtime.bigint() - t0) / 1e9));
    }
    return { rates, viol: native ? con.ingest!.orderViolations : st.viol };
  } finally {
    con.close();
    child.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<BenchResult[]> {
  const perBatch = 1 << 20;
  const windows = 5;
  const perWindow = 40; // batches per timed window (~42 M events)
  const fast = await measure(true, windows, perWindow, perBatch);
  const ref = await measure(false, 3, 2, perBatch);
  const off = await measure(true, windows, perWindow, perBatch, true);
  return [{
    name: 'stream_ipc_events_per_sec',
    value: median(fast.rates),
    unit: 'events/s',
    better: 'higher',
    params: { transport: 'zeromq ipc, separate producer process', eventsPerBatch: perBatch, bytesPerEvent: 9, batchesPerWindow: perWindow, windows,
      consumer: 'native ingest: order check, per-channel counts, 64-bin phase histogram', orderViolations: fast.viol + ref.viol,
      baselineConsumer: 'same stream, same per-event work in a TypeScript loop',
      goal: 100e6, anchor: 'Swabian Time Tagger X ~80e6 tags/s over USB 3', allWindows: fast.rates.map(Math.round) },
    baseline: median(ref.rates),
  }, {
    name: 'stream_ipc_events_per_sec_offthread',
    value: median(off.rates),
    unit: 'events/s',
    better: 'higher',
    params: { transport: 'zeromq ipc, separate producer process', eventsPerBatch: perBatch, consumer: 'native ingest on the libuv pool (AsyncTask), JS thread free',
      orderViolations: off.viol, goal: 100e6, allWindows: off.rates.map(Math.round) },
    baseline: median(ref.rates),
  }];
}
