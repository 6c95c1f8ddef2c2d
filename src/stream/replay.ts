/**
 * Emulated tagger for the event stream: pre-generates one batch of tags (Poisson-like arrivals on
 * a few channels) and replays it with a moving epoch, the way vendor software replays recorded
 * streams (Swabian TimeTaggerVirtual, PicoQuant file devices). Because times are relative to the
 * header's epochPs, replaying costs no per-event work, so the producer is never the bottleneck
 * when measuring transport + ingest.
 *
 * Run as a process: `node --import tsx src/stream/replay.ts <endpoint> <eventsPerBatch> <batches> [bind|connect]`.
 * It exits 0 once the last batch was delivered to the consumer (or after 60 s).
 */
import { StreamPublisher } from './publisher.ts';

export interface ReplayBatch {
  relTimesPs: BigInt64Array;
  channels: Uint8Array;
  /** Time span of the batch (ps): the epoch advances by this much per replay. */
  spanPs: bigint;
}

/** Deterministic synthetic tags: mean spacing `meanSpacingPs`, channels 0..channels-1. */
export function syntheticBatch(events: number, seed = 1, meanSpacingPs = 1000, channels = 4): ReplayBatch {
  const t = new BigInt64Array(events);
  const c = new Uint8Array(events);
  let s = seed >>> 0 || 1;
  let now = 0;
  for (let i = 0; i < events; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; // xorshift32
    now += 1 + Math.floor((s / 4294967296) * 2 * meanSpacingPs);
    t[i] = BigInt(now);
    c[i] = s % channels;
  }
  return { relTimesPs: t, channels: c, spanPs: BigInt(now + 1) };
}

export async function replay(pub: StreamPublisher, batch: ReplayBatch, batches: number, startEpochPs = 0n): Promise<void> {
  let epoch = startEpochPs;
  for (let i = 0; i < batches; i++) {
    await pub.sendTags(epoch, batch.relTimesPs, batch.channels);
    epoch += batch.spanPs;
  }
}

const isMain = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) {
  const [endpoint, perBatch, count, mode] = process.argv.slice(2);
  const pub = await StreamPublisher.open({ endpoint, streamId: 'replay', bind: mode !== 'connect', sendHighWaterMark: 4 });
  const b = syntheticBatch(Number(perBatch));
  await replay(pub, b, Number(count));
  pub.close(60_000); // deliver everything queued before exiting
}
