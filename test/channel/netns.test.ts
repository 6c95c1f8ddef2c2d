/**
 * Alice and Bob on two network hosts: two network namespaces joined by a veth pair (private /30
 * created here), with tc netem delay 20 ms + loss 2 % (or, on kernels without netem, a tbf rate
 * limit, a 20 ms userspace delay proxy and an nftables 2 % random drop), and a 3 s partition
 * (link down) in the middle. All blocks must finish and both ledgers must agree; then the event
 * stream crosses the same link. Skips with the reason if the machine refuses namespaces.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNetnsPair, netnsUnavailable, peerArgv, spawnJson, NETNS_SCRIPT, type JsonChild } from '../../src/testkit/netns.ts';

const why = netnsUnavailable();
if (why) {
  t.plan(0, `netns test skipped: ${why}`);
} else {
  t.test('Alice and Bob in two namespaces over an impaired veth link, with a partition', async (t) => {
    const net = createNetnsPair({ delayMs: 20, lossPct: 2 });
    const dir = mkdtempSync(join(tmpdir(), 'qkd-netns-'));
    const kids: JsonChild[] = [];
    t.teardown(() => {
      for (const k of kids) k.proc.kill('SIGKILL');
      net.teardown();
      rmSync(dir, { recursive: true, force: true });
    });
    t.comment(`impairment: ${net.impairment}; Alice ${net.ipA} (${net.nsA}), Bob ${net.ipB} (${net.nsB})`);
    writeFileSync(join(dir, 'psk'), randomBytes(16 + 32 * 20000));
    const bobEp = `tcp://${net.ipB}:5555`;
    const bob = spawnJson(net.exec('B', peerArgv('peer', { role: 'bob', endpoint: bobEp, bind: true, statePath: join(dir, 'bob.state'), pskPath: join(dir, 'psk'), ledgerPath: join(dir, 'bob.ledger') })));
    kids.push(bob);
    await bob.waitFor((e) => e.event === 'listening', 30000);
    let aliceEp = bobEp;
    if (!net.netem) {
      const proxy = spawnJson(net.exec('A', [process.execPath, '--import', 'tsx', NETNS_SCRIPT, 'delay-proxy', '127.0.0.1:6000', `${net.ipB}:5555`, '20']));
      kids.push(proxy);
      await proxy.waitFor((e) => e.event === 'listening', 30000);
      aliceEp = 'tcp://127.0.0.1:6000';
    }
    const blocks = 6;
    const alice = spawnJson(net.exec('A', peerArgv('drive', { role: 'alice', endpoint: aliceEp, bind: false, statePath: join(dir, 'alice.state'), pskPath: join(dir, 'psk'), ledgerPath: join(dir, 'alice.ledger'), blocks, rounds: 5, bytes: 2000, timeoutMs: 30000 })));
    kids.push(alice);
    await alice.waitFor((e) => e.event === 'blockDone' && e.blockId === 2, 60000);
    net.partition(true);
    const cutAt = Date.now();
    await new Promise((r) => setTimeout(r, 3000));
    net.partition(false);
    t.comment(`link was down for ${Date.now() - cutAt} ms`);
    const summary = await alice.waitFor((e) => e.event === 'summary', 90000);
    t.same(summary.committed, [1, 2, 3, 4, 5, 6], `all blocks finished (errors: ${summary.errors.join('; ')})`);
    t.equal(summary.roundTrips, blocks * 5);
    t.same(summary.stats.rejected, {}, 'nothing refused by Alice');
    t.ok(summary.stats.retries > 0, `lost/late messages were retried (${summary.stats.retries} retries)`);
    const lb = JSON.parse(readFileSync(join(dir, 'bob.ledger'), 'utf8'));
    const la = JSON.parse(readFileSync(join(dir, 'alice.ledger'), 'utf8'));
    t.same(lb.committed.sort(), la.committed.sort(), 'both ledgers agree');
    t.notOk(bob.events.some((e) => e.event === 'rejected'), 'nothing refused by Bob');
    t.comment(`${summary.roundTrips} authenticated round trips + ${blocks} commits in ${summary.ms} ms (incl. the 3 s partition)`);

    // The detection-event stream between the two hosts too (tcp, tagger host -> core host).
    const sink = spawnJson(net.exec('B', [process.execPath, '--import', 'tsx', NETNS_SCRIPT, 'stream-sink', `tcp://${net.ipB}:5556`, '10']));
    kids.push(sink);
    await sink.waitFor((e) => e.event === 'listening', 30000);
    const tagger = spawnJson(net.exec('A', [process.execPath, '--import', 'tsx', join(import.meta.dirname, '../../src/stream/replay.ts'), `tcp://${net.ipB}:5556`, '2048', '10', 'connect']));
    kids.push(tagger);
    const s = await sink.waitFor((e) => e.event === 'summary', 60000);
    t.equal(s.batches, 10);
    t.equal(s.ingested, 20480, 'every event reached the native ingest on the other host');
    t.equal(s.orderViolations, 0);
    t.equal(s.gaps, 0);
    t.equal(s.tainted, 0);
    t.equal(await tagger.exited, 0);
  });
}
