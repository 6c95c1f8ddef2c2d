// The relay protocol on in-process links (testkit/relay-net.ts: real mutual TLS over loopback,
// reference KMSs fed by delivery nodes with random key material; no optics): fast checks of the
// paths taken, routing around a failed link, tampering and replay refused, once-only delivery.
// The process tests (line.test.ts, triangle.test.ts) cover the same with emulated QKD links.
import t, { type Test } from 'tap';
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
