/**
 * `npm run chaos -- [--minutes N] [--kinds kill,stall,disk-full,partition] [--seed N] [--keep]`:
 * an emulated link under random faults for N minutes (default 10), then the invariants on the
 * KMS databases (src/testkit/chaos.ts). Prints the faults injected and the keys checked; exits 1
 * on any violated invariant. Run as root for the disk-full and partition faults (mount, nft).
 */
import { parseArgs } from 'node:util';
import { FAULT_KINDS, runChaos, type FaultKind } from '../src/testkit/chaos.ts';

const { values: v } = parseArgs({
  options: { minutes: { type: 'string', default: '10' }, kinds: { type: 'string' }, seed: { type: 'string' }, keep: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } },
});
const minutes = Number(v.minutes);
if (!(minutes > 0)) {
  process.stderr.write(`--minutes must be a positive number (got ${v.minutes})\n`);
  process.exit(2);
}
const kinds = v.kinds ? v.kinds.split(',').map((k) => k.trim()) : [...FAULT_KINDS];
const unknown = kinds.filter((k) => !FAULT_KINDS.includes(k as FaultKind));
if (unknown.length) {
  process.stderr.write(`unknown fault kind(s) ${unknown.join(', ')}; known: ${FAULT_KINDS.join(', ')}\n`);
  process.exit(2);
}
const say = (l: string) => process.stderr.write(`${l}\n`);
const r = await runChaos({ seconds: minutes * 60, kinds: kinds as FaultKind[], seed: v.seed === undefined ? undefined : Number(v.seed), keep: v.keep, say });
const inv = r.invariants;
if (v.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
else {
  const lines = [
    `chaos run: ${minutes} min of faults, seed ${r.seed}, ${r.wallSeconds.toFixed(0)} s in all`,
    `faults injected: ${r.faults.length} (${Object.entries(r.faultsByKind).map(([k, n]) => `${k} ${n}`).join(', ') || 'none'})` +
      (Object.keys(r.skippedKinds).length ? `; left out: ${Object.entries(r.skippedKinds).map(([k, why]) => `${k} (${why})`).join(', ')}` : ''),
    `restarts by the supervisor: ${Object.entries(r.restarts).map(([k, n]) => `${k} ${n}`).join(', ')}`,
    `keys checked: ${inv.keys.A} at KMS A, ${inv.keys.B} at KMS B, ${inv.common} under the same ID at both (digests: ${inv.digestMismatch} differ), from ${inv.blocks} blocks`,
    `SAE pair: ${r.sae.keys} keys taken and matched by digest (${r.sae.mismatched} differ, ${r.sae.repeatedIds} IDs repeated, ${r.sae.unresolved} unmatched, ${r.sae.failedRequests} of ${r.sae.requests} requests refused during faults)`,
    `invariants: lost ${inv.lostA + inv.lostB}, gaps ${inv.gaps.A + inv.gaps.B}, chunks assigned A ${inv.nextIndex.A} / B ${inv.nextIndex.B}, block order ${inv.blockOrder.A + inv.blockOrder.B}, ` +
      `from uncommitted blocks ${inv.fromUncommitted.A + inv.fromUncommitted.B}, from aborted blocks ${inv.fromAborted.A + inv.fromAborted.B}, delivered twice ${inv.deliveredTwice.A + inv.deliveredTwice.B}, holder mismatches ${inv.holderMismatch}`,
    r.violations.length ? `VIOLATED: ${r.violations.join('; ')}` : 'all invariants hold',
  ];
  process.stdout.write(lines.join('\n') + '\n');
}
process.exit(r.violations.length ? 1 : 0);
