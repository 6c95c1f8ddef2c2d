/**
 * Sifting throughput: Bob's announce + Alice's match + both parties' extraction on the same
 * batch, in detections per second (the whole per-party sifting work of one batch, both sides
 * on this machine's cores in sequence). Baseline: the TypeScript reference (src/core/reference.ts)
 * on the same input in the same run. Anchor: 60 M detections/s (Yuan et al. 2018); goal 200 M/s.
 */
import { aliceMatch, bobAnnounce, channelMap, extractSifted } from '../src/core/sift.ts';
import { bobEventsRef, siftRef } from '../src/core/reference.ts';
import { packChoice } from '../src/lab/types.ts';
import { median, type BenchResult } from './stats.ts';

/** Median wall and process-CPU seconds (the machine is shared: CPU time shows the code's cost). */
function timeRun(fn: () => unknown, repeats: number): { wall: number; cpu: number } {
  fn();
  const walls: number[] = [];
  const cpus: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    fn();
    walls.push(Number(process.hrtime.bigint() - t0) / 1e9);
    const c = process.cpuUsage(c0);
    cpus.push((c.user + c.system) / 1e6);
  }
  return { wall: median(walls), cpu: median(cpus) };
}

function input(nDet: number, meanGap: number) {
  let s = 0x2545f491;
  const r = (): number => { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; return (s >>> 0) / 4294967296; };
  const pulse = new Float64Array(nDet);
  const channel = new Uint8Array(nDet);
  let p = 0;
  for (let i = 0; i < nDet; i++) {
    if (i === 0 || r() > 0.01) p += 1 + Math.floor(r() * 2 * meanGap); // 1 % double detections
    pulse[i] = p;
    channel[i] = Math.floor(r() * 4);
  }
  const choices = new Uint8Array(p + 1);
  for (let i = 0; i <= p; i++) {
    const u = r();
    choices[i] = packChoice(u < 0.5 ? 1 : 0, r() < 0.5 ? 1 : 0, u < 0.7 ? 0 : u < 0.9 ? 1 : 2);
  }
  return { pulse, channel, choices };
}

export async function run(): Promise<BenchResult[]> {
  const map = channelMap([
    { channel: 0, basis: 0, bit: 0 }, { channel: 1, basis: 0, bit: 1 },
    { channel: 2, basis: 1, bit: 0 }, { channel: 3, basis: 1, bit: 1 },
  ]);
  const seed = new Uint8Array(32).fill(3);
  const out: BenchResult[] = [];
  for (const nDet of [1_000_000, 10_000_000]) {
    const inp = input(nDet, 20);
    const det = { pulse: inp.pulse, channel: inp.channel };
    const all = () => {
      const bob = bobAnnounce(det, map, seed);
      const alice = aliceMatch(bob.announcement, inp.choices, 0);
      extractSifted(alice.events, alice.reply);
      extractSifted(bob.events, alice.reply);
    };
    const bob = bobAnnounce(det, map, seed);
    const alice = aliceMatch(bob.announcement, inp.choices, 0);
    const tAll = timeRun(all, 7);
    const tBob = timeRun(() => bobAnnounce(det, map, seed), 7);
    const tAlice = timeRun(() => aliceMatch(bob.announcement, inp.choices, 0), 7);
    const tExtract = timeRun(() => extractSifted(bob.events, alice.reply), 7);
    // Reference on the same input: once (it is slow), timed the same way.
    const t0 = process.hrtime.bigint();
    siftRef(bobEventsRef(inp.pulse, inp.channel, map, seed), inp.choices, 0);
    const tRef = Number(process.hrtime.bigint() - t0) / 1e9;
    const params = { detections: nDet, events: bob.events.count, announceBytes: bob.announcement.length,
      replyBytes: alice.reply.length, anchor: 60e6, goal: 200e6 };
    const rate = (t: { wall: number; cpu: number }) => ({ wallSeconds: t.wall, cpuSeconds: t.cpu, perCpuSecond: nDet / t.cpu });
    out.push({ name: `sift.both_parties.n${nDet}`, value: nDet / tAll.wall, unit: 'detections/s', better: 'higher',
      params: { ...params, ...rate(tAll), steps: 'bob announce + alice match + 2 extracts, sequential' }, baseline: nDet / tRef });
    const bobParty = { wall: tBob.wall + tExtract.wall, cpu: tBob.cpu + tExtract.cpu };
    const aliceParty = { wall: tAlice.wall + tExtract.wall, cpu: tAlice.cpu + tExtract.cpu };
    out.push({ name: `sift.bob_party.n${nDet}`, value: nDet / bobParty.wall, unit: 'detections/s', better: 'higher', params: { detections: nDet, ...rate(bobParty) } });
    out.push({ name: `sift.alice_party.n${nDet}`, value: nDet / aliceParty.wall, unit: 'detections/s', better: 'higher', params: { detections: nDet, ...rate(aliceParty) } });
    out.push({ name: `sift.bob_announce.n${nDet}`, value: nDet / tBob.wall, unit: 'detections/s', better: 'higher', params: { detections: nDet, ...rate(tBob) } });
    out.push({ name: `sift.alice_match.n${nDet}`, value: nDet / tAlice.wall, unit: 'detections/s', better: 'higher', params: { detections: nDet, ...rate(tAlice) } });
    out.push({ name: `sift.extract.n${nDet}`, value: nDet / tExtract.wall, unit: 'detections/s', better: 'higher', params: { detections: nDet, ...rate(tExtract) } });
  }
  return out;
}
