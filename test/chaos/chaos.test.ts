// The short chaos run (src/testkit/chaos.ts): 75 s of random faults on an emulated link — kill -9
// of nodes and KMSs, SIGSTOP of a KMS, a full KMS disk, a partitioned classical channel (the last
// two as root, as CI runs) — then the invariants on the KMS databases: nothing lost or
// duplicated, identical bytes under identical IDs, no key from an aborted block, no key handed
// out twice. `npm run chaos` is the long version.
import t from 'tap';
import { runChaos } from '../../src/testkit/chaos.ts';

t.setTimeout(1_800_000);

t.test('an emulated link under random faults keeps its invariants', async (t) => {
  const r = await runChaos({ seconds: 75, seed: 20261206, gapMs: [8000, 16000], say: (l) => t.comment(l) });
  const inv = r.invariants;
  t.comment(`faults ${JSON.stringify(r.faultsByKind)}, skipped ${JSON.stringify(r.skippedKinds)}, restarts ${JSON.stringify(r.restarts)}`);
  t.comment(`keys: A ${inv.keys.A}, B ${inv.keys.B}, common ${inv.common}, blocks ${inv.blocks}; SAE pair ${JSON.stringify(r.sae)}; ${r.wallSeconds.toFixed(0)} s`);
  t.ok(r.faults.length >= 3, `at least three faults injected (${r.faults.length})`);
  t.same(r.violations, [], 'every invariant holds');
  t.ok(inv.common > 0, 'keys checked at both KMSs');
  t.ok(r.sae.keys > 0, 'the SAE pair took matching keys during the faults');
});
