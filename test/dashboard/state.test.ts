import t from 'tap';
import { DashboardStateBuilder } from '../../src/dashboard/state.ts';
import { AlarmEngine } from '../../src/telemetry/alarms.ts';
import { SliTracker } from '../../src/telemetry/sli.ts';
import { createQkdMetrics } from '../../src/telemetry/qkd-metrics.ts';
import { parsePrometheus } from '../../src/testkit/telemetry.ts';

t.test('builder keeps bounded series, snapshots copies, reflects alarms and SLIs', async (t) => {
  let now = 1_000_000;
  const clock = () => now;
  const alarms = new AlarmEngine({ qber: { abortThreshold: 0.1, clearBelow: 0.08 } }, { clock });
  const slis = new SliTracker({ clock });
  const b = new DashboardStateBuilder({ node: { id: 'alice-1', role: 'alice', mode: 'emulated', startedAtMs: now }, alarms, slis, historyPoints: 5, clock });
  let st = b.build();
  t.equal(st.status, 'starting');
  t.same(st.series.qber, []);
  t.equal(st.qberAbortThreshold, 0.1, 'threshold taken from the alarm configuration');
  b.setStatus('running');
  for (let i = 0; i < 8; i++) {
    now += 1000;
    b.recordQber({ Z: (20 + i) / 1000, X: 0.04 });
    b.recordSecretKeyRate(1000 * i);
    slis.recordSecretBits(1000);
  }
  b.recordQber({ overall: NaN });
  b.setDetectors([{ channel: 0, countRateHz: 1e5 }]);
  const counts = [1, 2, 3];
  b.setTiming([{ channel: 0, startPs: -100, binWidthPs: 10, counts }]);
  b.setSync({ locked: true, offsetSeconds: 1e-9, driftPpm: 0.1 });
  b.setKms({ name: 'alice', reachable: true, keysStored: 10 });
  b.setKms({ name: 'alice', reachable: true, keysStored: 12 });
  b.setSummary({ pulses: 100 });
  b.setSummary({ secretBits: 8000 });
  st = b.build();
  t.equal(st.series.qber.length, 5, 'bounded to historyPoints');
  t.same(st.series.qber.at(-1), [now, (0.027 + 0.04) / 2], 'overall = mean of the bases when not given');
  t.same(st.series.qberZ!.map((p) => p[1]), [0.023, 0.024, 0.025, 0.026, 0.027]);
  t.equal(st.series.secretKeyRateBitsPerSecond.at(-1)![1], 7000);
  t.same(st.kms[0].series!.map((p) => p[1]), [10, 12]);
  t.same(st.summary, { pulses: 100, secretBits: 8000 }, 'summary merges');
  t.equal(st.slis!.secretBits, 8000);
  t.equal(st.sync.offsetSeries!.length, 1);
  counts[0] = 99;
  t.equal(st.timing[0].counts[0], 1, 'inputs copied');
  const frozen = JSON.stringify(st);
  b.recordQber({ Z: 0.5, X: 0.5 });
  t.equal(JSON.stringify(st), frozen, 'a built state does not change afterwards');
  t.equal(st.status, 'running');
  alarms.evaluate({ qber: 0.5 });
  st = b.build();
  t.equal(st.status, 'degraded', 'a critical alarm degrades the status');
  t.equal(st.alarms.active[0].id, 'qber-high');
  const m = createQkdMetrics();
  alarms.exportTo(m);
  const fams = parsePrometheus(m.registry.render());
  t.equal(fams.get('qkd_alarms_active')!.samples.find((s) => s.labels.severity === 'critical')!.value, 1);
});

// Contract with the orchestrator: its run summary can be shown as it is.
import type { LinkSummary } from '../../src/node/summary.ts';
import type { SummaryPanel } from '../../src/dashboard/types.ts';
t.test('LinkSummary (src/node) is assignable to the dashboard SummaryPanel', async (t) => {
  const accept = (s: SummaryPanel): SummaryPanel => s;
  const fromNode = (s: LinkSummary): SummaryPanel => accept(s); // compile-time check
  t.type(fromNode, 'function');
});
