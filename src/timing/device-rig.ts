/**
 * A CalibrationRig over real (or emulated) devices: tags from a TimeTagger stream
 * (src/devices/types.ts), source control through a PhotonSource. `read(pulses)` returns the tags
 * of the next `pulses` x T of tagger time (Bob's clock: within the drift, ppm, of Alice's pulses);
 * tags beyond that boundary are kept for the next read, so consecutive reads are contiguous.
 *
 * Concurrency: one caller at a time (the rig owns the tag stream while it runs); `close()` stops
 * the stream. In-band overflow / missed-event records end the read with a DeviceError, because a
 * calibration on data with holes would be biased: fix the rate or the transfer size and re-run.
 */
import { DeviceError } from '../errors.ts';
import type { PhotonSource, TagStream, TagStreamBatch, TimeTagger } from '../devices/types.ts';
import type { TagBatch } from '../devices/types.ts';
import type { CalibrationRig, DeviceInfo } from './calibrate.ts';
import type { AlicePattern } from './pattern.ts';
import { tagTimesToNumbers } from './times.ts';

export interface DeviceRigOptions {
  tagger: TimeTagger;
  source?: PhotonSource;
  pattern: AlicePattern;
  repRateHz: number;
  profiles: Record<string, string>;
  channels?: number[];
  /** Tagger time discarded after a source change (default 1 ms). */
  settlePs?: number;
}

export function deviceRig(o: DeviceRigOptions): CalibrationRig & { close(): Promise<void> } {
  const periodPs = 1e12 / o.repRateHz;
  let stream: TagStream | null = null;
  let it: AsyncIterator<TagStreamBatch> | null = null;
  let pendT: number[] = [], pendC: number[] = [];
  let startPs = NaN;
  let nominal: number[] | null = null;
  let settle = false;
  const settlePs = o.settlePs ?? 1e9;
  const devices: DeviceInfo[] = [o.tagger, ...(o.source ? [o.source] : [])].map((d) => ({ id: d.id, kind: d.kind, model: d.profile, emulated: false }));
  return {
    repRateHz: o.repRateHz,
    pattern: o.pattern,
    devices,
    profiles: o.profiles,
    async read(pulses: number): Promise<TagBatch> {
      if (!stream) { stream = o.tagger.startStream({ channels: o.channels }); it = stream[Symbol.asyncIterator](); }
      const outT: number[] = [], outC: number[] = [];
      const take = (end: number): boolean => {
        let k = 0;
        while (k < pendT.length && pendT[k] < end) { outT.push(pendT[k]); outC.push(pendC[k]); k++; }
        pendT = pendT.slice(k); pendC = pendC.slice(k);
        return pendT.length > 0;
      };
      for (;;) {
        if (startPs !== startPs && pendT.length) {
          // After a source change, drop the tags of the settling time (and any read ahead before it).
          startPs = pendT[0] + (settle ? settlePs : 0);
          settle = false;
          let k = 0;
          while (k < pendT.length && pendT[k] < startPs) k++;
          pendT = pendT.slice(k); pendC = pendC.slice(k);
        }
        const end = startPs + pulses * periodPs;
        if (startPs === startPs && take(end)) { startPs = end; break; }
        const r = await it!.next();
        if (r.done) { if (startPs === startPs) startPs = end; break; }
        const b = r.value;
        if (b.events.length) throw new DeviceError('TAG_STREAM_GAP', `tag stream batch ${b.seq} reports ${b.events.length} overflow/missed-event record(s); calibration needs gap-free data: lower the count rate or enlarge transfers and re-run.`);
        const t = tagTimesToNumbers(b.timePs);
        for (let i = 0; i < t.length; i++) { pendT.push(t[i]); pendC.push(b.channel[i]); }
      }
      const timePs = new BigInt64Array(outT.length);
      for (let i = 0; i < outT.length; i++) timePs[i] = BigInt(outT[i]);
      return { timePs, channel: Uint8Array.from(outC) };
    },
    async setSource(s) {
      if (!o.source) throw new DeviceError('NO_SOURCE', 'this calibration step switches or attenuates the source: open the rig with a PhotonSource.');
      // Tags already read ahead were taken with the old setting: forget them.
      pendT = []; pendC = []; startPs = NaN; settle = true;
      if (s.enabled !== undefined) await o.source.setEnabled(s.enabled);
      if (s.intensityScale !== undefined) {
        nominal ??= [await o.source.intensity(0), await o.source.intensity(1), await o.source.intensity(2)];
        for (const lvl of [0, 1, 2] as const) await o.source.setIntensity(lvl, nominal[lvl] * s.intensityScale);
      }
    },
    async close() { if (stream) await stream.stop(); stream = null; it = null; },
  };
}
