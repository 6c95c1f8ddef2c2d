// ETSI 004 for applications, the pure parts (src/delivery/etsi004-qos.ts, etsi004-wire.ts ranges):
// key groups against a brute-force lcm, admission properties on random requests (never more
// min_bps than the link has, a counter-proposal is itself admitted, every field filled and in
// range), known answers for the counter-proposal, and group ranges against a plain Set.
import t from 'tap';
import fc from 'fast-check';
import { admitQos, grouping, type QosLimits } from '../../src/delivery/etsi004-qos.ts';
import { inRanges, toRanges } from '../../src/delivery/etsi004-wire.ts';

const LIM: QosLimits = { linkChunkBytes: 32, maxKeyBytes: 512, capacityBps: 10_000, admittedMinBps: 0, maxChunksPerGroup: 16,
  maxTimeoutMs: 60_000, maxTtlS: 86_400 };

/** Slow reference: the smallest length both sizes divide. */
function lcmSlow(a: number, b: number): number {
  for (let l = Math.max(a, b); ; l += Math.max(a, b)) if (l % a === 0 && l % b === 0) return l;
}

t.test('groups: lcm(key, chunk) bytes, against a brute-force lcm', async (t) => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 600 }), fc.integer({ min: 1, max: 600 }), (k, c) => {
    const g = grouping(k, c);
    const l = lcmSlow(k, c);
    return g.keysPerGroup * k === l && g.chunksPerGroup * c === l;
  }), { numRuns: 2000 });
  t.same(grouping(16, 32), { keysPerGroup: 2, chunksPerGroup: 1 });
  t.same(grouping(48, 32), { keysPerGroup: 2, chunksPerGroup: 3 });
});

const qosArb = fc.record({
  key_chunk_size: fc.option(fc.integer({ min: 0, max: 2000 }), { nil: undefined }),
  min_bps: fc.option(fc.integer({ min: 0, max: 50_000 }), { nil: undefined }),
  max_bps: fc.option(fc.integer({ min: 0, max: 50_000 }), { nil: undefined }),
  priority: fc.option(fc.integer({ min: 0, max: 9 }), { nil: null }),
  timeout: fc.option(fc.integer({ min: 0, max: 200_000 }), { nil: undefined }),
  ttl: fc.option(fc.integer({ min: 0, max: 200_000 }), { nil: undefined }),
  metadata_mimetype: fc.option(fc.constantFrom('application/json', 'text/plain'), { nil: undefined }),
}, { requiredKeys: [] });

t.test('admission: never more min_bps than the link has; a counter-proposal is admitted as it is', async (t) => {
  fc.assert(fc.property(fc.array(qosArb, { maxLength: 12 }), fc.integer({ min: 0, max: 30_000 }), (reqs, capacity) => {
    let admitted = 0;
    for (const q of reqs) {
      const lim = { ...LIM, capacityBps: capacity, admittedMinBps: admitted };
      const r = admitQos(q, lim);
      const { qos } = r;
      // Every field filled and within the limits, whatever was asked.
      if (!(qos.key_chunk_size >= 1 && qos.key_chunk_size <= 512 && grouping(qos.key_chunk_size, 32).chunksPerGroup <= 16)) return false;
      if (!(qos.timeout <= 60_000 && qos.ttl >= 1 && qos.ttl <= 86_400 && qos.metadata_mimetype === 'application/json')) return false;
      if (qos.max_bps !== 0 && qos.max_bps < qos.min_bps) return false;
      if (admitted + qos.min_bps > Math.max(capacity, admitted)) return false;
      const again = admitQos(qos, lim);
      if (again.reasons.length || JSON.stringify(again.qos) !== JSON.stringify(qos)) return false;
      if (!r.reasons.length) admitted += qos.min_bps;
    }
    return admitted <= capacity;
  }), { numRuns: 500 });
});

t.test('counter-proposals: known answers', async (t) => {
  const r = admitQos({ min_bps: 6000, max_bps: 5000 }, { ...LIM, admittedMinBps: 6000 });
  t.equal(r.qos.min_bps, 4000, 'what is left of the link');
  t.equal(r.qos.max_bps, 5000, 'max_bps kept: not below the proposed min_bps');
  t.equal(r.reasons.length, 1);
  t.equal(admitQos({ key_chunk_size: 33 }, LIM).qos.key_chunk_size, 32, '33 B would tie up 33 chunks: 32 does not');
  t.equal(admitQos({ key_chunk_size: 100 }, LIM).qos.key_chunk_size, 96, 'the nearest size with groups of at most 16 chunks');
  t.same(admitQos(null, LIM), { qos: { key_chunk_size: 32, max_bps: 0, min_bps: 0, jitter: 0, priority: 0, timeout: 0, ttl: 3600,
    metadata_mimetype: 'application/json' }, reasons: [] }, 'no QoS: the defaults');
  t.throws(() => admitQos({ min_bps: 1.5 }, LIM), /qos.min_bps must be an integer/);
  t.throws(() => admitQos({ min_bps: -1 }, LIM), /qos.min_bps must be an integer/);
  t.throws(() => admitQos([], LIM), /qos must be a JSON object/);
});

t.test('group ranges: the same membership as a plain set', async (t) => {
  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 200 }), { maxLength: 80 }), fc.integer({ min: -5, max: 210 }), (xs, probe) => {
    const r = toRanges(xs);
    const ordered = r.every(([a, b], i) => a <= b && (i === 0 || a > r[i - 1][1] + 1));
    return ordered && inRanges(r, probe) === new Set(xs).has(probe);
  }), { numRuns: 2000 });
});
