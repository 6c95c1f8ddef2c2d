// The block dialogue's bookkeeping on synthetic detections whose statistics we choose: a block of
// more than 256 LDPC frames (retry requests name frames past 255), every bit Bob discloses counted
// in the leak (recomputed here from the messages on the wire), and a block whose decoy bounds
// leave no key stopped at the estimate step with the real reason, before any reconciliation.
import t from 'tap';
import { AlicePostProcessor, BobPostProcessor, DEFAULT_BLOCK_CONFIG, type BlockConfig } from '../../src/node/postprocess.ts';
import { describeCode, type LdpcParams } from '../../src/core/ldpc.ts';
import { estimateBounds, type Triple } from '../../src/core/estimate.ts';
import { decodePulseList } from '../../src/node/bits.ts';
import { packChoice, type DetectorMapping } from '../../src/lab/types.ts';

/** Small deterministic PRNG (xorshift32) so the blocks are reproducible. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x / 2 ** 32;
  };
}

const MU: [number, number, number] = [0.5, 0.1, 0];
const P_MU: [number, number, number] = [0.7, 0.2, 0.1];

/**
 * One detection per pulse 0..n-1, with the statistics of a decoy link of transmittance `eta` and
 * dark-count probability `y0`: the intensity of a detected pulse drawn with P(k | click), Z with
 * probability `pZ`, Bob in Alice's basis (all detections sift), errors with QBER `qZ`/`qX` on
 * photon-carrying clicks and 1/2 on dark ones.
 */
function synthetic(n: number, o: { eta: number; y0: number; pZ: number; qZ: number; qX: number; seed: number }) {
  const r = rng(o.seed);
  const gain = MU.map((m) => 1 - Math.exp(-o.eta * m) + o.y0);
  const w = P_MU.map((p, k) => p * gain[k]);
  const tot = w.reduce((s, x) => s + x, 0);
  const dark = MU.map((_, k) => o.y0 / gain[k]);
  const choices = new Uint8Array(n);
  const channel = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const u = r() * tot;
    const k = u < w[0] ? 0 : u < w[0] + w[1] ? 1 : 2;
    const basis = r() < o.pZ ? 0 : 1;
    const bit = r() < 0.5 ? 1 : 0;
    const q = r() < dark[k] ? 0.5 : basis === 0 ? o.qZ : o.qX;
    const bobBit = r() < q ? bit ^ 1 : bit;
    choices[i] = packChoice(bit, basis, k);
    channel[i] = basis * 2 + bobBit;
  }
  const pulse = Float64Array.from({ length: n }, (_, i) => i);
  return { pulse, channel, choicesAt: (pulses: Float64Array) => Uint8Array.from(pulses, (p) => choices[p]) };
}

/** Z bits per intensity among the first `bits` sifted Z bits, recomputed from Alice's choices. */
function framedZ(d: ReturnType<typeof synthetic>, bits: number): Triple {
  // Every detection sifts (Bob is always in Alice's basis), in pulse order: the Z string is the Z
  // detections in order.
  const c = d.choicesAt(d.pulse);
  const nZ: Triple = [0, 0, 0];
  let seen = 0;
  for (let i = 0; i < c.length && seen < bits; i++) {
    if (((c[i] >> 1) & 1) !== 0) continue;
    nZ[(c[i] >> 2) & 3]++;
    seen++;
  }
  return nZ;
}

const MAPPING: DetectorMapping[] = [
  { channel: 0, basis: 0, bit: 0 }, { channel: 1, basis: 0, bit: 1 },
  { channel: 2, basis: 1, bit: 0 }, { channel: 3, basis: 1, bit: 1 },
];

function pair(d: ReturnType<typeof synthetic>, config: BlockConfig) {
  const sent: { type: string; p: Record<string, unknown>; reply: Record<string, unknown> }[] = [];
  const alice = new AlicePostProcessor({ config, choicesAt: d.choicesAt, authBitsConsumed: () => 1024, onOutput: () => undefined });
  const bob = new BobPostProcessor({
    config, mapping: MAPPING,
    request: async (type, p) => {
      const reply = await alice.handle(type, structuredClone(p));
      sent.push({ type, p, reply });
      return reply;
    },
  });
  return { bob, sent };
}

t.test('a block of more than 256 LDPC frames, with retries past frame 255, ends verified with the leak counted from the wire', async (t) => {
  // 3687-bit frames (the 2^12 code); X QBER 1.5 % makes Alice pick a code too weak for the Z QBER
  // of 2 %, so many frames need blind retries, frames past index 255 among them.
  const d = synthetic(1_250_000, { eta: 0.1, y0: 1e-5, pZ: 0.85, qZ: 0.02, qX: 0.015, seed: 12 });
  const config: BlockConfig = {
    ...DEFAULT_BLOCK_CONFIG, frameBits: 4000,
    security: { epsSec: 1e-3, epsCor: 1e-6, qberAbort: 0.11 },
    settings: { mu: MU, pMu: P_MU },
  };
  const { bob, sent } = pair(d, config);
  const r = await bob.processBlock(1, d.pulse, d.channel);
  t.ok(r.report.verified, `verified (${r.report.abortReason ?? 'ok'})`);
  const nFrames = r.report.frames!;
  t.ok(nFrames > 256, `${nFrames} frames`);
  const reveals = sent.filter((m) => m.type === 'reveal');
  const listed = reveals.map((m) => decodePulseList(m.p.frames as Uint8Array, m.p.frameCount as number));
  t.ok(listed.some((l) => l.some((f) => f > 255)), 'a retry named a frame past 255');
  t.ok(r.report.framesFailed! < nFrames / 4, `${r.report.framesFailed} frames dropped`);

  // The leak, recomputed from the messages: each kept frame's syndrome and revealed bits, plus one
  // bit per decode outcome Bob disclosed (first attempts, then each retry's outcome).
  const est = sent.find((m) => m.type === 'estimate')!.reply;
  const code = describeCode(est.params as LdpcParams);
  const keep = sent.find((m) => m.type === 'verify')!.p.keep as Uint8Array;
  const perFrame = new Array<number>(nFrames).fill(code.leakBits);
  let outcomes = nFrames;
  reveals.forEach((m, k) => {
    for (const f of listed[k]) perFrame[f] += m.p.count as number;
    outcomes += listed[k].length;
  });
  const expected = perFrame.reduce((s, l, f) => s + (keep[f] ? l : 0), 0) + outcomes;
  t.equal(r.report.feedbackBits, outcomes, 'Bob counts his disclosed decode outcomes');
  t.equal(r.report.statement!.leakEcBits, expected, 'Alice\'s counted leak includes Bob\'s feedback');
  t.equal(r.report.leakBits, expected, 'Bob\'s counted leak agrees');

  // Frames that failed are a data-dependent subset: the bounds are corrected for them.
  const st = r.report.statement!;
  t.ok(r.report.framesFailed! > 0, 'some frames were dropped');
  t.equal(st.droppedZBits, r.report.framesFailed! * code.keyBits, 'the statement names the dropped Z bits');
  t.equal(st.n, (nFrames - r.report.framesFailed!) * code.keyBits, 'n is the kept bits');
  const all = estimateBounds({ mu: MU, pMu: P_MU }, { nZ: framedZ(d, nFrames * code.keyBits), nX: r.report.counts!.nX, mX: r.report.counts!.mX }, config.security);
  t.ok(Math.abs(st.bounds.phiZ - Math.min(0.5, all.phiZ * all.sZ1 / (all.sZ1 - st.droppedZBits))) < 1e-12,
    `phi_Z ${st.bounds.phiZ} is the framed block's ${all.phiZ} scaled for the dropped bits`);
});

t.test('a block whose bounds leave no key stops at the estimate step with PE_ reason, nothing reconciled', async (t) => {
  // Few detections at a strict ε: the decoy bounds cannot bound the single-photon phase error.
  const d = synthetic(60_000, { eta: 0.1, y0: 1e-5, pZ: 0.85, qZ: 0.02, qX: 0.02, seed: 5 });
  const config: BlockConfig = { ...DEFAULT_BLOCK_CONFIG, frameBits: 4000, settings: { mu: MU, pMu: P_MU } };
  const { bob, sent } = pair(d, config);
  const r = await bob.processBlock(2, d.pulse, d.channel);
  t.notOk(r.report.verified);
  t.match(r.report.abortReason, /^PE_(ABORT_BOUNDS|NO_KEY): /, `the real reason: ${r.report.abortReason}`);
  t.ok(r.report.counts && r.report.qberX !== undefined, 'the public counts and X QBER still reported');
  t.same(sent.map((m) => m.type).filter((x) => x !== 'sift'), ['estimate', 'abort'], 'no syndrome, reveal or verify after the estimate');
  t.equal(r.output, undefined);
});
