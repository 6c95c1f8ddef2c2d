/**
 * Classical channel: authenticated round trips per second over ZeroMQ tcp loopback (Alice and Bob
 * in this process; every request and reply carries a Wegman–Carter tag and consumes 128 pad bits),
 * one in flight (latency-bound) and 64 in flight (pipelined). Baseline for each: the same run with
 * the portable GF(2^128) multiplier forced. Plus the MAC itself on 1 MiB messages (baseline: the
 * portable path; the BigInt reference is ~1e4x slower still and is left to the tests).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Authenticator } from '../src/core/auth.ts';
import { AuthChannel } from '../src/channel/channel.ts';
import { median, medianSeconds, type BenchResult } from './stats.ts';

async function roundTrips(portable: boolean, inFlight: number, total: number, payloadBytes: number, repeats: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-bench-chan-'));
  const psk = randomBytes(16 + 32 * (total * (repeats + 1) + 1000));
  const aAuth = Authenticator.fromPsk(psk, 'alice');
  const bAuth = Authenticator.fromPsk(psk, 'bob');
  psk.fill(0);
  aAuth.usePortable(portable);
  bAuth.usePortable(portable);
  const bob = await AuthChannel.open({ role: 'bob', endpoint: 'tcp://127.0.0.1:*', bind: true, auth: bAuth });
  const alice = await AuthChannel.open({ role: 'alice', endpoint: bob.endpoint!, bind: false, auth: aAuth });
  bob.handle('syndrome', (p: { blockId: number; s: Uint8Array }) => ({ ok: p.s.length }));
  await alice.ready(10000);
  const payload = { blockId: 1, s: randomBytes(payloadBytes) };
  try {
    const rates: number[] = [];
    for (let r = 0; r <= repeats; r++) {
      const t0 = process.hrtime.bigint();
      let next = 0;
      const worker = async () => {
        while (next < total) {
          next++;
          await alice.request('syndrome', payload, { blockId: 1 });
        }
      };
      await Promise.all(Array.from({ length: inFlight }, worker));
      if (r > 0) rates.push(total / (Number(process.hrtime.bigint() - t0) / 1e9)); // r = 0 is the warm-up
    }
    return median(rates);
  } finally {
    await alice.close();
    await bob.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  for (const [inFlight, total] of [[1, 2000], [64, 10000]] as const) {
    const fast = await roundTrips(false, inFlight, total, 1024, 5);
    const slow = await roundTrips(true, inFlight, total, 1024, 3);
    out.push({
      name: `channel_auth_round_trips_per_sec_inflight${inFlight}`,
      value: fast,
      unit: 'round trips/s',
      better: 'higher',
      params: { transport: 'zeromq tcp loopback, DEALER<->DEALER, both ends in one process', payloadBytes: 1024, inFlight, roundTripsPerRepeat: total,
        padBitsPerRoundTrip: 256, baselineIs: 'portable GF(2^128) multiplier' },
      baseline: slow,
    });
  }
  const key = randomBytes(16 + 32 * 100);
  const a = Authenticator.fromPsk(key, 'alice');
  const msg = randomBytes(1 << 20);
  const aad = randomBytes(64);
  let seq = 0;
  const fastS = await medianSeconds(() => a.sign(seq++, aad, msg), 9);
  a.usePortable(true);
  const slowS = await medianSeconds(() => a.sign(seq++, aad, msg), 5);
  out.push({ name: 'auth_mac_bytes_per_sec', value: msg.length / fastS, unit: 'B/s', better: 'higher',
    params: { messageBytes: msg.length, hash: 'GF(2^128) polynomial (PCLMULQDQ)', baselineIs: 'portable carry-less multiply' }, baseline: msg.length / slowS });
  return out;
}
