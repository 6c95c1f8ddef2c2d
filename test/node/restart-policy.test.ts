import t from 'tap';
import { RestartPolicy, DEFAULT_RESTART_LIMITS } from '../../src/node/restart-policy.ts';

t.test('backoff doubles per crash inside the window, capped', async (t) => {
  const p = new RestartPolicy({ maxRestarts: 6, windowMs: 60_000, baseDelayMs: 500, maxDelayMs: 4_000 });
  const delays = [0, 1, 2, 3, 4, 5].map((i) => p.onCrash('node-bob', 1000 * i));
  t.same(delays.map((d) => (d.restart ? d.delayMs : -1)), [500, 1000, 2000, 4000, 4000, 4000]);
  t.same(delays.map((d) => (d.restart ? d.attempt : -1)), [1, 2, 3, 4, 5, 6]);
});

t.test('one crash more than the limit inside the window is a crash loop', async (t) => {
  const p = new RestartPolicy(DEFAULT_RESTART_LIMITS);
  for (let i = 0; i < 5; i++) t.ok(p.onCrash('kms-bob', i * 10_000).restart, `crash ${i + 1} restarted`);
  const d = p.onCrash('kms-bob', 50_000);
  t.same(d, { restart: false, crashes: 6, windowMs: 120_000 });
});

t.test('crashes older than the window no longer count (and the backoff falls back)', async (t) => {
  const p = new RestartPolicy({ maxRestarts: 2, windowMs: 10_000, baseDelayMs: 100, maxDelayMs: 1_000 });
  t.ok(p.onCrash('a', 0).restart);
  t.ok(p.onCrash('a', 5_000).restart);
  t.notOk(p.onCrash('a', 9_999).restart, 'third inside 10 s: loop');
  const later = p.onCrash('a', 14_999); // only the crash at 5 000 is still inside the window
  t.ok(later.restart && later.delayMs === 200, 'restarted with the second step of the backoff');
  t.equal(p.recent('a', 14_999), 2);
  t.equal(p.recent('a', 30_000), 0);
});

t.test('children are counted separately', async (t) => {
  const p = new RestartPolicy({ maxRestarts: 1, windowMs: 10_000, baseDelayMs: 100, maxDelayMs: 100 });
  t.ok(p.onCrash('node-alice', 0).restart);
  t.ok(p.onCrash('node-bob', 0).restart);
  t.notOk(p.onCrash('node-alice', 1).restart);
});

t.test('nonsense limits are refused with a clear message', async (t) => {
  t.throws(() => new RestartPolicy({ maxRestarts: 1, windowMs: 0, baseDelayMs: 1, maxDelayMs: 1 }), /windowMs > 0/);
  t.throws(() => new RestartPolicy({ maxRestarts: 1, windowMs: 10, baseDelayMs: 5, maxDelayMs: 1 }), /baseDelayMs ≤ maxDelayMs/);
});
