// Topology files (clear errors for each kind of mistake), source routing (fewest hops first,
// around links marked unusable), and the hop MAC (known answers from an independent Python
// implementation, Horner vs the explicit polynomial on random inputs, forgeries refused).
import t from 'tap';
import fc from 'fast-check';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseTopology, readTopology, siteOfSae } from '../../src/network/topology.ts';
import { candidatePaths } from '../../src/network/routing.ts';
import { macBlocks, oneTimeMac, P127, verifyMac, xorInto } from '../../src/network/otp.ts';
import { checkHop } from '../../src/network/relay.ts';
import { topologyDocument } from '../../src/network/orchestrator.ts';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

t.test('the fixtures parse; SAEs default to sae<Site>', async (t) => {
  const line = readTopology(join(fixtures, 'line.json'));
  t.same(line.sites, ['A', 'B', 'C']);
  t.same(line.links.map((l) => l.id), ['A-B', 'B-C']);
  t.same(line.saes, { A: ['saeA'], B: ['saeB'], C: ['saeC'] });
  t.equal(siteOfSae(line, 'saeC'), 'C');
  const tri = readTopology(join(fixtures, 'triangle.json'));
  t.equal(tri.links.length, 3);
  t.same(parseTopology(topologyDocument(tri)), tri, 'the document form parses back to the same topology');
});

t.test('mistakes are refused with what to write instead', async (t) => {
  const bad: [unknown, RegExp][] = [
    [[], /must be a JSON object/],
    [{ sites: ['A'], links: [] }, /at least two site names/],
    [{ sites: ['A', 'A'], links: [['A', 'A']] }, /site A is listed twice/],
    [{ sites: ['A', 'b-1'], links: [] }, /sites\[1\] "b-1" is not a site name/],
    [{ sites: ['A', 'B'], links: [] }, /non-empty array/],
    [{ sites: ['A', 'B'], links: [['A', 'X']] }, /links\[0\] names site "X", which is not in "sites"/],
    [{ sites: ['A', 'B'], links: [['A', 'A']] }, /joins site A to itself/],
    [{ sites: ['A', 'B'], links: [['A', 'B'], ['B', 'A']] }, /already linked/],
    [{ sites: ['A', 'B'], links: [['A', 'B', 'C']] }, /exactly two sites/],
    [{ sites: ['A', 'B'], links: [{ between: ['A', 'B'], km: 3 }] }, /unknown field\(s\) km/],
    [{ sites: ['A', 'B'], links: [{ between: ['A', 'B'], distanceKm: -1 }] }, /distanceKm must be a number/],
    [{ sites: ['A', 'B', 'C'], links: [['A', 'B']] }, /site\(s\) C have no path of links to A/],
    [{ sites: ['A', 'B'], links: [['A', 'B']], saes: { X: ['s'] } }, /saes names site "X"/],
    [{ sites: ['A', 'B'], links: [['A', 'B']], saes: { A: ['x'], B: ['x'] } }, /SAE id x is used twice/],
    [{ sites: ['A', 'B'], links: [['A', 'B']], saes: { A: ['siteB'] } }, /starts with "site"/],
    [{ sites: ['A', 'B'], links: [['A', 'B']], nodes: 3 }, /unknown field\(s\) nodes/],
  ];
  for (const [doc, re] of bad) t.throws(() => parseTopology(doc, 'net.json'), { code: 'TOPOLOGY_INVALID', message: re }, String(re));
  const dir = mkdtempSync(join(tmpdir(), 'qkd-topo-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'x.json'), '{"sites": [');
  t.throws(() => readTopology(join(dir, 'x.json')), { code: 'TOPOLOGY_FILE', message: /is not valid JSON/ });
  t.throws(() => readTopology(join(dir, 'missing.json')), { code: 'TOPOLOGY_FILE', message: /cannot read the topology file/ });
});

t.test('routing: fewest hops first, around unusable links, never a loop', async (t) => {
  const tri = readTopology(join(fixtures, 'triangle.json'));
  t.same(candidatePaths(tri, 'A', 'C'), [['A', 'C'], ['A', 'B', 'C']]);
  const noAC = (x: string, y: string) => !((x === 'A' && y === 'C') || (x === 'C' && y === 'A'));
  t.same(candidatePaths(tri, 'A', 'C', noAC), [['A', 'B', 'C']], 'A-C down: through B');
  const noAB = (x: string, y: string) => !((x === 'A' && y === 'B') || (x === 'B' && y === 'A'));
  t.same(candidatePaths(tri, 'A', 'B', noAB), [['A', 'C', 'B']], 'A-B down: A to B through C');
  t.same(candidatePaths(tri, 'A', 'C', () => false), [], 'every link down: no path');
  const line = readTopology(join(fixtures, 'line.json'));
  t.same(candidatePaths(line, 'A', 'C'), [['A', 'B', 'C']]);
  // A ring of 6 plus a chord: paths are simple and sorted by length.
  const ring = parseTopology({ sites: ['A', 'B', 'C', 'D', 'E', 'F'], links: [['A', 'B'], ['B', 'C'], ['C', 'D'], ['D', 'E'], ['E', 'F'], ['F', 'A'], ['B', 'E']] });
  const ps = candidatePaths(ring, 'A', 'D');
  t.same(ps[0].length, 4);
  for (let i = 1; i < ps.length; i++) t.ok(ps[i].length >= ps[i - 1].length, 'sorted by hops');
  for (const p of ps) t.equal(new Set(p).size, p.length, `simple path ${p.join('')}`);
});

t.test('one-time MAC: known answers (independent Python implementation)', async (t) => {
  const k = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
  t.equal(oneTimeMac(k, Buffer.alloc(0)).toString('hex'), '101112131415161718191a1b1c1d1e1f');
  t.equal(oneTimeMac(k, Buffer.from('abc')).toString('hex'), '754343ff9f4c2f723dbb136ff9da9c5c');
  t.equal(oneTimeMac(k, Buffer.from(Array.from({ length: 40 }, (_, i) => 100 + i))).toString('hex'), '4d1c1231fa87cc5f034494a6790be094');
  t.equal(oneTimeMac(Buffer.alloc(32, 0xff), Buffer.alloc(15)).toString('hex'), '01000000000000000000000000000010');
  t.throws(() => oneTimeMac(Buffer.alloc(16), Buffer.from('x')), { code: 'RELAY_MAC_KEY' });
});

/** The slow reference: sum of c_i r^(L-i+1) with each power computed on its own. */
function slowTag(key: Uint8Array, msg: Uint8Array): bigint {
  const big = (b: Uint8Array) => BigInt('0x' + (Buffer.from(b).toString('hex') || '0'));
  const r = big(key.subarray(0, 16)) % P127;
  const s = big(key.subarray(16)) % P127;
  const c = macBlocks(msg);
  let h = 0n;
  c.forEach((ci, i) => {
    let pw = 1n;
    for (let j = 0; j < c.length - i; j++) pw = (pw * r) % P127;
    h = (h + ci * pw) % P127;
  });
  return (h + s) % P127;
}

t.test('one-time MAC: Horner agrees with the explicit polynomial; changes are caught', async (t) => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ maxLength: 200 }), (key, msg) => {
    const tag = oneTimeMac(key, msg);
    if (BigInt('0x' + tag.toString('hex')) !== slowTag(key, msg)) return false;
    if (!verifyMac(key, msg, tag)) return false;
    // A flipped bit in the message (or a message one zero byte longer) fails under the same key.
    const m2 = Buffer.from(msg);
    if (m2.length) m2[m2.length >> 1] ^= 1;
    const m3 = Buffer.concat([msg, Buffer.alloc(1)]);
    return (m2.length === 0 || !verifyMac(key, m2, tag)) && !verifyMac(key, m3, tag);
  }), { numRuns: 300 });
  t.pass('300 random keys and messages');
  t.same(xorInto(Buffer.from([1, 2]), Buffer.from([3, 3])), Buffer.from([2, 1]));
  t.throws(() => xorInto(Buffer.alloc(2), Buffer.alloc(3)), { code: 'RELAY_PAD_LENGTH' });
});

t.test('hop messages: malformed ones are named', async (t) => {
  const tri = readTopology(join(fixtures, 'triangle.json'));
  const id = '0f0e0d0c-0b0a-4908-8706-050403020100';
  const ok = { v: 1, relay_id: id, key_IDs: [id], master_SAE_ID: 'saeA', slave_SAE_ID: 'saeC', size: 256, path: ['A', 'B', 'C'],
    hop: 1, hops: [{ link: 'A-B', link_key_IDs: [id, id] }], ct: null, tag: 'AAAA' };
  t.equal(checkHop(tri, ok, 'B'), undefined, 'well formed for B');
  t.match(checkHop(tri, ok, 'C'), /hop must index this site/);
  t.match(checkHop(tri, { ...ok, path: ['A', 'B', 'A'] }, 'B'), /visits a site twice/);
  t.match(checkHop(tri, { ...ok, slave_SAE_ID: 'saeB' }, 'B'), /slave_SAE_ID/);
  t.match(checkHop(tri, { ...ok, hops: [{ link: 'A-B', link_key_IDs: [id] }] }, 'B'), /2 link key_IDs/);
  t.match(checkHop(tri, { ...ok, ct: 'AAAA' }, 'B'), /ct must be null on the first hop/);
  t.match(checkHop(tri, { ...ok, size: 12 }, 'B'), /size must be a multiple of 8/);
  t.match(checkHop(tri, [], 'B'), /not a JSON object/);
});
