// The relay protocol on in-process links (testkit/relay-net.ts: real mutual TLS over loopback,
// reference KMSs fed by delivery nodes with random key material; no optics): fast checks of the
// paths taken, routing around a failed link, tampering and replay refused, once-only delivery.
// The process tests (line.test.ts, triangle.test.ts) cover the same with emulated QKD links.
import t, { type Test } from 'tap';
import { authBytes, checkHop, linkEpsilonFor, MAC_FORGERY_PER_HOP, macKeys, relayedEpsilon } from '../../src/network/relay.ts';
import { parseTopology } from '../../src/network/topology.ts';
import { startRelayNet } from '../../src/testkit/relay-net.ts';

t.setTimeout(240_000);
/** A network whose SAEs saeA (site A) and saeC (site C) are ready; everything closed at teardown. */
async function saesAtAandC(t: Test, doc: unknown, linkDownMs: number) {
  const net = await startRelayNet(doc, { linkDownMs });
  const a = net.sae('A', 'saeA');
  const c = net.sae('C', 'saeC');
  t.teardown(async () => {
    a.close();
    c.close();
    await net.close();
  });
  return { net, a, c };
}

const TRIANGLE = { sites: ['A', 'B', 'C'], links: [['A', 'B'], ['B', 'C'], ['A', 'C']] };

t.test('triangle: direct first, through B once A-C fails; sizes; once only', async (t) => {
  const { net, a, c } = await saesAtAandC(t, TRIANGLE, 60_000);
  const get = async (n: number, size?: number) => {
    const enc = await a.request('POST', '/api/v1/keys/saeC/enc_keys', { number: n, ...(size ? { size } : {}) });
    if (enc.status !== 200) return { enc };
    const dec = await c.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
    return { enc, dec };
  };
  const r1 = await get(2);
  t.equal(r1.enc.status, 200);
  t.same(r1.enc.body.keys[0].key_extension.path, ['A', 'C'], 'neighbours: one hop');
  t.equal(r1.enc.body.keys[0].key_extension.direct_qkd_key, false, 'never labelled a direct QKD key');
  t.same(r1.dec!.body.keys.map((k: { key: string }) => k.key), r1.enc.body.keys.map((k: { key: string }) => k.key), 'same keys at C');
  const r2 = await get(3, 512);
  t.equal(Buffer.from(r2.enc.body.keys[0].key, 'base64').length, 64, '512-bit keys');
  t.same(r2.dec!.body.keys.map((k: { key: string }) => k.key), r2.enc.body.keys.map((k: { key: string }) => k.key));
  const again = await c.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: r2.enc.body.keys[0].key_ID }] });
  t.equal(again.status, 400, 'a key is delivered once');

  // The A-C link fails: both its KMSs stop.
  const ac = net.links.get('A-C')!;
  await Promise.all([ac.kmsA.close(), ac.kmsB.close()]);
  const r3 = await get(1);
  t.equal(r3.enc.status, 200, 'still served');
  t.same(r3.enc.body.keys[0].key_extension.path, ['A', 'B', 'C'], 'routed around A-C through B');
  t.same(r3.enc.body.keys[0].key_extension.trusted_nodes, ['B']);
  t.same(r3.dec!.body.keys[0].key, r3.enc.body.keys[0].key, 'same key at C');
  t.same(r3.dec!.body.keys[0].key_extension.hops.map((h: { link: string }) => h.link), ['A-B', 'B-C']);
  const st = await a.request('GET', '/api/v1/relay/status');
  t.equal(st.body.links['A-C'].reachable, false, 'A sees its A-C link KMS unreachable');

  // B-C runs out of key: nothing left to route over (A-B is fine, A-C down).
  const bc = net.links.get('B-C')!;
  await Promise.all([bc.kmsA.close(), bc.kmsB.close()]);
  const r4 = await get(1);
  t.equal(r4.enc.status, 503, 'no path left: 503');
  t.match(r4.enc.body.message, /no usable path from site A to site C/);
});

t.test('a tampered hop fails its MAC; a replayed hop is refused; nothing is stored from either', async (t) => {
  const { net, a, c } = await saesAtAandC(t, { sites: ['A', 'B', 'C'], links: [['A', 'B'], ['B', 'C']] }, 200);
  type HopFn = (r: { body: any; clientId: string | null }) => Promise<{ status: number; body: any }>;
  const hook = (site: string, f: (r: { body: any; clientId: string | null }, orig: HopFn) => Promise<{ status: number; body: any }>) => {
    const s = net.sites.get(site)! as unknown as { hop: HopFn };
    const orig = s.hop.bind(s);
    s.hop = (r) => f(r, orig);
  };
  // A tamperer on the B-C link flips one ciphertext bit of the first message B sends C.
  let tamper = true;
  const alarms: { code: string }[] = [];
  net.sites.get('C')!.on('alarm', (x) => alarms.push(x));
  hook('C', (r, orig) => {
    if (tamper && typeof r.body.ct === 'string') {
      tamper = false;
      const ct = Buffer.from(r.body.ct, 'base64');
      ct[5] ^= 0x10;
      r.body.ct = ct.toString('base64');
    }
    return orig(r);
  });
  const bad = await a.request('POST', '/api/v1/keys/saeC/enc_keys', {});
  t.equal(bad.status, 503, `the tampered relay gives no key at A (${bad.body.message})`);
  t.match(bad.body.message, /failed authentication on link B-C/);
  t.match(alarms, [{ code: 'RELAY_HOP_AUTH' }], 'security alarm at C');
  t.equal(net.sites.get('C')!.metrics().stored, 0, 'nothing stored at C');
  await new Promise((r) => setTimeout(r, 300)); // B-C was marked down for 200 ms
  // Replay: capture what A sends B, then send it again with A's identity.
  const sent: unknown[] = [];
  hook('B', (r, orig) => {
    sent.push(structuredClone(r.body));
    return orig(r);
  });
  const ok = await a.request('POST', '/api/v1/keys/saeC/enc_keys', {});
  t.equal(ok.status, 200, 'the next relay goes through');
  const dec = await c.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: [{ key_ID: ok.body.keys[0].key_ID }] });
  t.equal(dec.body.keys[0].key, ok.body.keys[0].key, 'same key at C');
  const peer = (net.sites.get('A')! as unknown as { peerClients: Map<string, { request: (m: string, p: string, b: unknown) => Promise<{ status: number; body: any }> }> }).peerClients.get('B')!;
  const replay = await peer.request('POST', '/api/v1/relay/hop', sent[0]);
  t.equal(replay.status, 409, `replayed hop refused (${replay.body.message})`);
  const renamed = { ...(sent[0] as object), relay_id: '11111111-2222-4333-8444-555555555555' };
  const r2 = await peer.request('POST', '/api/v1/relay/hop', renamed);
  t.equal(r2.status, 409, `the same hop under a new relay_id: its link keys are gone (${r2.body.message})`);
  t.equal(net.sites.get('C')!.metrics().stored, 1, 'C stored the one good key only');
  // A site that is not the previous one on the path is refused (C's identity sending to B as A).
  const siteC = (net.sites.get('C')! as unknown as { peerClients: Map<string, typeof peer> }).peerClients.get('B')!;
  const wrongSender = await siteC.request('POST', '/api/v1/relay/hop', { ...(sent[0] as object), relay_id: '21111111-2222-4333-8444-555555555555' });
  t.equal(wrongSender.status, 403, 'hop from a site that is not the previous one on the path');
});

// ------------------------------------------------------------- security level (qkd_max_epsilon)

const LINE = { sites: ['A', 'B', 'C'], links: [['A', 'B'], ['B', 'C']] };
const keyIds = (keys: { key_ID: string }[]) => ({ key_IDs: keys.map((k) => ({ key_ID: k.key_ID })) });

t.test('the ε split: a relayed key at the link bound never exceeds the level asked for', async (t) => {
  for (let i = 0; i < 2000; i++) {
    const x = 10 ** -(1 + Math.random() * 24); // down to 1e-25, far above the MAC forgery terms (≤ 8 · 2^-100)
    const hops = 1 + Math.floor(Math.random() * 8);
    const size = 8 * (8 + Math.floor(Math.random() * 505));
    const e = linkEpsilonFor(x, hops, size);
    const got = relayedEpsilon(Array(hops).fill(e), size)!;
    if (!(e > 0 && got <= x && got > x * 0.999999)) {
      t.fail(`x ${x}, ${hops} hops, ${size} bits: link bound ${e} gives ${got}`);
      return;
    }
  }
  t.equal(macKeys(256), 1);
  t.equal(relayedEpsilon([1e-10, 2e-10], 256), 2 * 1e-10 + 2 * 2e-10 + 2 * MAC_FORGERY_PER_HOP, 'pad + MAC key per hop, plus forgery');
  t.equal(relayedEpsilon([1e-10, null], 256), undefined, 'a hop of unknown ε: unknown');
  t.ok(linkEpsilonFor(1e-31, 1, 256) <= 0, 'below the MAC forgery bound no link key can do');
});

t.test('level asked for, labelled link keys: served at ε ≤ x at A and at C; a level no link meets: 503, no link key used; ' +
  'ML-KEM link keys are not relayed; a tampered bound fails the MAC', async (t) => {
  const net = await startRelayNet(LINE, { linkDownMs: 60_000, provenance: { epsilon: 1e-10 }, labelLinkKeys: true });
  const [a, c] = [net.sae('A', 'saeA'), net.sae('C', 'saeC')];
  t.teardown(async () => {
    a.close();
    c.close();
    await net.close();
  });
  const level = (x: number) => ({ extension_mandatory: [{ qkd_max_epsilon: x }] });
  const sum = relayedEpsilon([1e-10, 1e-10], 256)!; // 2 hops × (pad + 1 MAC key) at 1e-10
  const enc = await a.request('POST', '/api/v1/keys/saeC/enc_keys', { number: 2, ...level(1e-9) });
  t.equal(enc.status, 200, enc.body?.message ?? 'served');
  const ext = enc.body.keys[0].key_extension;
  t.equal(ext.qkd_epsilon, sum, `labelled with the sum of the link keys' ε (${sum})`);
  t.ok(ext.qkd_epsilon <= 1e-9, 'within the level asked for');
  t.equal(ext.direct_qkd_key, false, 'still never a direct QKD key');
  const dec = await c.request('POST', '/api/v1/keys/saeA/dec_keys', keyIds(enc.body.keys));
  t.equal(dec.status, 200);
  t.same(dec.body.keys.map((k: { key: string }) => k.key), enc.body.keys.map((k: { key: string }) => k.key), 'same keys at C');
  t.equal(dec.body.keys[0].key_extension.qkd_epsilon, sum, 'the same ε at C');
  t.same(dec.body.keys[0].key_extension.hops.map((h: { link_epsilon: number }) => h.link_epsilon), [1e-10, 1e-10],
    'each hop names its link keys\' ε');

  const noLevel = await a.request('POST', '/api/v1/keys/saeC/enc_keys', {});
  t.equal(noLevel.status, 200);
  t.equal(noLevel.body.keys[0].key_extension.qkd_epsilon, sum, 'no level asked: still labelled with the known sum');

  // 2e-10 over 2 hops needs link keys at 5e-11: none.
  const used = () => [...net.links.values()].map((L) => [L.kmsA.metrics().delivered, L.kmsB.metrics().delivered]);
  const before = used();
  const low = await a.request('POST', '/api/v1/keys/saeC/enc_keys', { number: 1, ...level(2e-10) });
  t.equal(low.status, 503, 'no link key at the level: 503');
  t.match(low.body.message, /qkd_max_epsilon 2e-10/, `names the level (${low.body.message})`);
  t.match(low.body.message, /at epsilon <= 4\.99\d*e-11/, 'and the link keys\' bound');
  t.same(used(), before, 'no link key was handed out');
  t.equal((await a.request('POST', '/api/v1/keys/saeC/enc_keys', {})).status, 200, 'A-B not marked down by a level shortage');

  // B-C runs dry; its link KMS's when-short policy then serves ML-KEM keys: B refuses to relay them.
  const bc = net.links.get('B-C')!;
  const linkSae = bc.sae('saeA', bc.kmsA);
  const left = (await linkSae.req('GET', '/api/v1/keys/saeB/status')).body.stored_key_count;
  t.equal((await linkSae.req('POST', '/api/v1/keys/saeB/enc_keys', { number: left })).status, 200, `${left} B-C keys used up`);
  const mlkem = await a.request('POST', '/api/v1/keys/saeC/enc_keys', {});
  t.equal(mlkem.status, 503, 'no key at A');
  t.match(mlkem.body.message, /site B: the link KMS of B-C served keys that are not QKD key \(provenance "ml-kem-768"\)/,
    'B names the non-QKD link keys');
  await net.fill('B-C', 8, { epsilon: 1e-10 });
  (net.sites.get('A')! as unknown as { down: Map<string, unknown> }).down.clear(); // B-C was marked down for 60 s

  // A tamperer between A and B raises the bound in the hop message: B's MAC check fails.
  const alarms: { code: string }[] = [];
  net.sites.get('B')!.on('alarm', (x) => alarms.push(x));
  type HopFn = (r: { body: any; clientId: string | null }) => Promise<{ status: number; body: any }>;
  const s = net.sites.get('B')! as unknown as { hop: HopFn };
  const orig = s.hop.bind(s);
  s.hop = (r) => {
    r.body.max_link_epsilon = 0.5;
    return orig(r);
  };
  const bad = await a.request('POST', '/api/v1/keys/saeC/enc_keys', { number: 1, ...level(1e-9) });
  t.equal(bad.status, 503, 'no key at A');
  t.match(bad.body.message, /failed authentication on link A-B/);
  t.match(alarms, [{ code: 'RELAY_HOP_AUTH' }], 'security alarm at B');
});

t.test('unlabelled link keys: the level picks a longer path whose links meet it; labelled with the bound', async (t) => {
  const net = await startRelayNet(TRIANGLE, { linkDownMs: 60_000, keysPerLink: 8, provenance: { epsilon: 1e-10 } });
  const [a, c] = [net.sae('A', 'saeA'), net.sae('C', 'saeC')];
  t.teardown(async () => {
    a.close();
    c.close();
    await net.close();
  });
  // A-C's keys are weaker: all of its 8 keys at 1e-10 are used up first, then 3e-10 ones pushed.
  const drain = await a.request('POST', '/api/v1/keys/saeC/enc_keys', { number: 7 });
  t.same(drain.body.keys[0].key_extension.path, ['A', 'C']);
  t.notOk('qkd_epsilon' in drain.body.keys[0].key_extension, 'no level, unlabelled link keys: no ε claimed');
  await net.fill('A-C', 16, { epsilon: 3e-10 });
  const x = 4.5e-10; // direct: link keys at 2.25e-10 (A-C has none); through B: 1.125e-10 (A-B, B-C have)
  const enc = await a.request('POST', '/api/v1/keys/saeC/enc_keys', { extension_mandatory: [{ qkd_max_epsilon: x }] });
  t.equal(enc.status, 200, enc.body?.message ?? 'served');
  t.same(enc.body.keys[0].key_extension.path, ['A', 'B', 'C'], 'routed through B');
  const bound = relayedEpsilon([linkEpsilonFor(x, 2, 256), linkEpsilonFor(x, 2, 256)], 256)!;
  t.equal(enc.body.keys[0].key_extension.qkd_epsilon, bound, `labelled with the guaranteed bound ${bound}`);
  t.ok(bound <= x);
  const dec = await c.request('POST', '/api/v1/keys/saeA/dec_keys', keyIds(enc.body.keys));
  t.equal(dec.body.keys[0].key_extension.qkd_epsilon, bound, 'the same at C');
  const direct = await a.request('POST', '/api/v1/keys/saeC/enc_keys', {});
  t.same(direct.body.keys[0].key_extension.path, ['A', 'C'], 'A-C was not marked down by the level shortage');

  // B-C's keys at 1e-10 used up, 3e-10 ones pushed: through B the level now fails at B (A-B's keys are spent).
  const bc = net.links.get('B-C')!;
  const linkSae = bc.sae('saeA', bc.kmsA);
  const left = (await linkSae.req('GET', '/api/v1/keys/saeB/status')).body.stored_key_count;
  t.equal((await linkSae.req('POST', '/api/v1/keys/saeB/enc_keys', { number: left })).status, 200, `${left} B-C keys used up`);
  await net.fill('B-C', 16, { epsilon: 3e-10 });
  const fail = await a.request('POST', '/api/v1/keys/saeC/enc_keys', { extension_mandatory: [{ qkd_max_epsilon: x }] });
  t.equal(fail.status, 503, 'no path meets the level');
  t.match(fail.body.message, /site B: link KMS of B-C gave no keys at epsilon <= 1\.12\d*e-10/, 'B names its short link');
  const down = (net.sites.get('A')! as unknown as { down: Map<string, unknown> }).down;
  t.notOk(down.has('B-C') || down.has('A-C'), 'neither short link is marked down at A');
});

t.test('hop message v2: the bound and each hop\'s ε must be there and well typed', async (t) => {
  const tri = parseTopology(TRIANGLE);
  const id = '11111111-2222-4333-8444-555555555555';
  const v2 = { v: 2, relay_id: id, key_IDs: [id], master_SAE_ID: 'saeA', slave_SAE_ID: 'saeC', size: 256, path: ['A', 'B', 'C'],
    hop: 1, hops: [{ link: 'A-B', link_key_IDs: [id, id], link_epsilon: 1e-10 }], max_link_epsilon: 2e-10, ct: null, tag: '' };
  t.equal(checkHop(tri, v2, 'B'), undefined, 'well formed');
  t.equal(checkHop(tri, { ...v2, max_link_epsilon: null, hops: [{ ...v2.hops[0], link_epsilon: null }] }, 'B'), undefined,
    'no level, unlabelled');
  t.match(checkHop(tri, { ...v2, max_link_epsilon: undefined }, 'B'), /max_link_epsilon must be null or a number/);
  t.match(checkHop(tri, { ...v2, max_link_epsilon: '1e-9' }, 'B'), /max_link_epsilon/);
  t.match(checkHop(tri, { ...v2, hops: [{ link: 'A-B', link_key_IDs: [id, id] }] }, 'B'), /link_epsilon must be null or/);
  t.match(checkHop(tri, { ...v2, hops: [{ ...v2.hops[0], link_epsilon: 3e-10 }] }, 'B'), /\[0, 2e-10\]/, 'above the bound');
  t.match(checkHop(tri, { ...v2, v: 1 }, 'B'), /v1 has no max_link_epsilon/, 'v1 cannot carry unauthenticated fields');
  const { tag: _tag, ...m } = v2;
  const base = authBytes(m as never, Buffer.alloc(0));
  t.notSame(authBytes({ ...m, max_link_epsilon: 3e-10 } as never, Buffer.alloc(0)), base, 'the bound is under the tag');
  t.notSame(authBytes({ ...m, hops: [{ ...m.hops[0], link_epsilon: 2e-11 }] } as never, Buffer.alloc(0)), base,
    'each hop\'s ε is under the tag');
});
