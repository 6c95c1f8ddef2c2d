/**
 * Sifting throughput per party, in detections per second: everything one party does to sift a
 * batch. Bob: bobAnnounce + extractSifted(bob.events, reply). Alice: aliceSift (match + her sifted
 * strings in one pass). Reported per wall second (rayon chunks may use both cores) and per
 * process-CPU second (the machine is shared; CPU time shows the code's cost). Also: Alice's old
 * two-pass path (aliceMatch + extractSifted), the portable (non-BMI2) compression, and the
 * TypeScript reference (src/core/reference.ts, both parties) on the same input in the same run.
 * Anchor: 60 M detections/s (Yuan et al. 2018); goal 200 M/s per party.
 */
import { aliceMatch, aliceSift, bobAnnounce, channelMap, extractSifted, siftFastPext, siftForcePortable } from '../src/core/sift.ts';
import { bobEventsRef, siftRef } from '../src/core/reference.ts';
import { packChoice } from '../src/lab/types.ts';
import { median, type BenchResult } from './stats.ts';

/** Median wall and process-CPU seconds over `repeats` runs after one warm-up. */
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

/** `nDet` detections, mean gap `meanGap` pulses, 1 % of pulses with a second detection. */
function input(nDet: number, meanGap: number) {
  let s = 0x2545f491;
  const r = (): number => { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; return (s >>> 0) / 4294967296; };
  const pulse = new Float64Array(nDet);
  const channel = new Uint8Array(nDet);
  let p = 0;
  for (let i = 0; i < nDet; i++) {
    if (i === 0 || r() > 0.01) p += 1 + Math.floor(r() * 2 * meanGap);
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
  const repeats = 9;
  // Mean gaps: 20 pulses (1-byte deltas) and 2000 pulses (2-byte deltas, a lossy link).
  for (const [nDet, meanGap] of [[1_000_000, 20], [10_000_000, 20], [1_000_000, 2000]] as const) {
    const inp = input(nDet, meanGap);
    const det = { pulse: inp.pulse, channel: inp.channel };
    const bob = bobAnnounce(det, map, seed);
    const alice = aliceSift(bob.announcement, inp.choices, 0);
    const bobParty = () => extractSifted(bobAnnounce(det, map, seed).events, alice.reply);
    const aliceParty = () => aliceSift(bob.announcement, inp.choices, 0);
    const aliceTwoPass = () => { const m = aliceMatch(bob.announcement, inp.choices, 0); extractSifted(m.events, m.reply); };
    const tBob = timeRun(bobParty, repeats);
    const tAlice = timeRun(aliceParty, repeats);
    const tAlice2 = timeRun(aliceTwoPass, repeats);
    siftForcePortable(true);
    const tBobSoft = timeRun(bobParty, repeats);
    const tAliceSoft = timeRun(aliceParty, repeats);
    siftForcePortable(false);
    // Reference (both parties, TypeScript) on the same input: once, it is slow.
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    siftRef(bobEventsRef(inp.pulse, inp.channel, map, seed), inp.choices, 0);
    const tRef = Number(process.hrtime.bigint() - t0) / 1e9;
    const cRef = process.cpuUsage(c0);
    const refRate = nDet / ((cRef.user + cRef.system) / 1e6);
    const common = { detections: nDet, meanGapPulses: meanGap, events: bob.events.count, matched: alice.matched,
      announceBytes: bob.announcement.length, replyBytes: alice.reply.length, anchor: 60e6, goal: 200e6,
      bmi2Pext: siftFastPext(), referenceWallSeconds: tRef, referencePerCpuSecond: refRate };
    const rate = (t: { wall: number; cpu: number }) =>
      ({ wallSeconds: t.wall, cpuSeconds: t.cpu, perWallSecond: nDet / t.wall, perCpuSecond: nDet / t.cpu });
    const tag = `n${nDet}${meanGap === 20 ? '' : `.gap${meanGap}`}`;
    const push = (name: string, t: { wall: number; cpu: number }, steps: string) =>
      out.push({ name: `sift.${name}.${tag}`, value: nDet / t.cpu, unit: 'detections/cpu-s', better: 'higher',
        params: { ...common, ...rate(t), steps }, baseline: refRate });
    push('bob_party', tBob, 'bobAnnounce + extractSifted(bob.events, reply)');
    push('alice_party', tAlice, 'aliceSift (one pass: match + her sifted strings)');
    push('alice_two_pass', tAlice2, 'aliceMatch + extractSifted(alice.events, reply) (the pre-fusion path)');
    push('bob_party_portable', tBobSoft, 'as bob_party, portable compression forced');
    push('alice_party_portable', tAliceSoft, 'as alice_party, portable compression forced');
  }
  return out;
}
