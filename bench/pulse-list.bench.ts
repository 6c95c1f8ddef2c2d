/**
 * Pulse lists (the sift dialogue's and the source read-back's LEB128 deltas, four passes per
 * detection in a link): the native codec (native/core/src/pulse_list.rs, through
 * src/protocol/pulse-list.ts) against the TypeScript reference on the same 2^20 pulses in the same
 * run, gaps geometric with mean 200 pulses (a 25 km link's detections at 1 GHz). Medians of 9
 * repeats of 10 passes, per pulse, wall clock on the JS thread. Also Bob's sift part (the list of
 * the distinct pulses of his detections and each detection's rank in it), every tenth detection
 * sharing its pulse with the one before (a double click).
 */
import { decodePulseList, decodePulseListReference, encodeDistinctPulses, encodeDistinctPulsesReference, encodePulseList, encodePulseListReference } from '../src/protocol/pulse-list.ts';
import { median, type BenchResult } from './stats.ts';

const N = 1 << 20;

function nsPerPulse(fn: () => unknown): number {
  fn();
  const xs: number[] = [];
  for (let r = 0; r < 9; r++) {
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < 10; k++) fn();
    xs.push(Number(process.hrtime.bigint() - t0) / (10 * N));
  }
  return median(xs);
}

export async function run(): Promise<BenchResult[]> {
  let seed = 12345;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) + 0.5) / 2 ** 32;
  const pulses = new Float64Array(N);
  let p = -1;
  for (let i = 0; i < N; i++) pulses[i] = p = p + 1 + Math.floor(-Math.log(rnd()) * 200);
  const bytes = encodePulseListReference(pulses);
  const detections = pulses.map((x, i) => (i % 10 === 9 ? pulses[i - 1] : x));
  const params = { pulses: N, meanGap: 200, bytesPerPulse: bytes.length / N, native: 'native/core/src/pulse_list.rs', reference: 'src/protocol/pulse-list.ts (Reference)' };
  return [
    { name: 'pulse_list.encode_ns_per_pulse', value: nsPerPulse(() => encodePulseList(pulses)), unit: 'ns/pulse', better: 'lower',
      baseline: nsPerPulse(() => encodePulseListReference(pulses)), params },
    { name: 'pulse_list.decode_ns_per_pulse', value: nsPerPulse(() => decodePulseList(bytes, N)), unit: 'ns/pulse', better: 'lower',
      baseline: nsPerPulse(() => decodePulseListReference(bytes, N)), params },
    { name: 'pulse_list.encode_distinct_ns_per_detection', value: nsPerPulse(() => encodeDistinctPulses(detections)), unit: 'ns/detection', better: 'lower',
      baseline: nsPerPulse(() => encodeDistinctPulsesReference(detections)), params: { ...params, doubleClickEvery: 10 } },
  ];
}
