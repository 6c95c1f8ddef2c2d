// The latency reservoir behind the ack-latency percentiles (src/delivery/http.ts Recent): a ring
// that keeps the last `cap` samples, oldest first, against the obvious array slice.
import t from 'tap';
import { Recent, percentiles } from '../../src/delivery/http.ts';

t.test('Recent keeps the last cap samples in order, whatever the number pushed', async (t) => {
  let seed = 3;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (let trial = 0; trial < 200; trial++) {
    const cap = 1 + Math.floor(rnd() * 50);
    const r = new Recent(cap);
    const all: number[] = [];
    const n = Math.floor(rnd() * 200);
    for (let i = 0; i < n; i++) {
      const x = Math.round(rnd() * 1000) / 10;
      r.push(x);
      all.push(x);
      if (i % 7 === 0 || i === n - 1) t.same(r.values(), all.slice(-cap), `cap ${cap}, after ${i + 1}`);
    }
  }
  const r = new Recent(4);
  for (const x of [5, 1, 9, 7, 3, 8]) r.push(x);
  t.same(percentiles(r.values()), { p50: 7, p90: 9, p99: 9, count: 4 });
});
