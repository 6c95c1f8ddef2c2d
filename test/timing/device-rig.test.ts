// The device rig reads calibration data through the TimeTagger stream interface. Here the tagger is
// a stand-in whose stream replays an EmulatedLink (the driver-level path is the device layer's
// concern); the rig must cut the stream into contiguous pulse ranges and refuse streams with gaps.
import t from 'tap';
import { EmulatedLink } from '../../src/lab/link.ts';
import { loadLinkPreset } from '../../src/lab/presets.ts';
import type { PhotonSource, TagStream, TagStreamBatch, TimeTagger } from '../../src/devices/types.ts';
import { alicePatternFromSeed } from '../../src/lab/pattern.ts';
import { deviceRig } from '../../src/timing/device-rig.ts';
import { runStep } from '../../src/timing/calibrate.ts';

function fakeTagger(link: EmulatedLink, overflowAtBatch = -1): TimeTagger {
  return {
    id: 'tagger-fake', kind: 'time-tagger', profile: 'fake-tagger',
    startStream(): TagStream {
      let seq = 0, stopped = false;
      return {
        stats: { tags: 0, batches: 0, overflows: 0, missedEvents: 0, errors: 0 },
        async stop() { stopped = true; },
        [Symbol.asyncIterator]() {
          return {
            async next(): Promise<IteratorResult<TagStreamBatch>> {
              if (stopped) return { done: true, value: undefined };
              const b = link.nextPulses(7e6).tags;
              const events = seq === overflowAtBatch ? [{ index: 0, type: 'overflow' }] : [];
              return { done: false, value: { ...b, seq: seq++, events } as unknown as TagStreamBatch };
            },
          };
        },
      };
    },
  } as unknown as TimeTagger;
}

t.test('delays measured through the tagger stream interface', async (t) => {
  const preset = loadLinkPreset('reference-decoy');
  const link = new EmulatedLink(preset, { seed: 61n, distanceKm: 50 });
  const source = {
    id: 'src', kind: 'photon-source', profile: 'fake-source',
    async setEnabled(on: boolean) { link.setSource({ enabled: on }); },
    async intensity() { return 0.5; }, async setIntensity() {},
  } as unknown as PhotonSource;
  const rig = deviceRig({ tagger: fakeTagger(link), source, pattern: alicePatternFromSeed(link.preset, 61n), repRateHz: 1e9, profiles: { link: 'reference-decoy' } });
  const first = await rig.read(2e7);
  const second = await rig.read(2e7);
  const f = first.timePs, s = second.timePs;
  t.ok(f.length > 1000 && s.length > 1000);
  t.ok(s[0] >= f[f.length - 1], 'reads are contiguous and ordered');
  t.ok(Number(f[f.length - 1] - f[0]) <= 2e10 && Number(f[f.length - 1] - f[0]) > 1.9e10, 'one read covers 20 ms of tagger time');
  const d = await runStep('delays', rig, { seconds: 0.05 });
  const rel = d.result.relativeDelayPs as Record<string, number>;
  t.ok(Math.abs(Math.abs(rel['1'] - rel['0']) - 1200) < 3, `delay difference ${rel['1'] - rel['0']} ps (1200 +- 3)`);
  t.same(rig.devices.map((x) => x.id), ['tagger-fake', 'src']);
  const dk = await runStep('dark-counts', rig, { seconds: 0.05 });
  t.ok(Object.values(dk.result.perGate as Record<string, number>).every((p) => p < 1e-5), 'source really switched off for dark counts');
  await rig.close();
});

t.test('a stream with overflow records is refused', async (t) => {
  const preset = loadLinkPreset('reference-decoy');
  const link = new EmulatedLink(preset, { seed: 62n, distanceKm: 50 });
  const rig = deviceRig({ tagger: fakeTagger(link, 1), pattern: alicePatternFromSeed(link.preset, 62n), repRateHz: 1e9, profiles: {} });
  await t.rejects(rig.read(5e7), { code: 'TAG_STREAM_GAP' });
  await t.rejects(rig.setSource({ enabled: false }), { code: 'NO_SOURCE' });
});
