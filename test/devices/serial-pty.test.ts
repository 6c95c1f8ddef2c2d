/**
 * The same drivers over a real tty: a socat pty pair, the driver on one end with the OS
 * serialport binding, the emulated instrument on the other. Covers the unplug case for real: the
 * pty disappears when socat dies, the driver reports it and reconnects when the pair is back.
 * The hang-up can meet the driver's pending read parked in poll(2) (the usual order on an idle
 * machine) or come before that read reaches read(2) (the order a loaded machine produces); the
 * last subtest forces the latter, so both orders are covered on every run.
 */
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { SerialPortStream } from '@serialport/stream';
import { ProtocolError, TimeoutError, TransportError } from '../../src/errors.ts';
import { loadProfile, type SerialSettings } from '../../src/devices/profile.ts';
import { EmulatedSpadDetector, EmulatedPhotonSource } from '../../src/devices/emulated/instruments.ts';
import { EmulatedLab } from '../../src/devices/emulated/lab.ts';
import { attachInstrumentToPtyStreams, attachInstrumentToTty, type TtyAttachment } from '../../src/devices/emulated/pty.ts';
import { SerialLineTransport } from '../../src/devices/transports/serial.ts';
import { PhotonSourceDriver, SpadDetectorDriver } from '../../src/devices/drivers/scpi.ts';
import { ttyBinding } from '../../src/devices/transports/tty-binding.ts';
import { hasSocat, holdableReads, sourceConformance, spadConformance, startPtyPair, tempDir, waitForState, type PtyPair } from '../../src/testkit/devices.ts';

if (!hasSocat()) {
  t.test('serial drivers over a pty pair', { skip: 'socat is not installed (apt-get install socat)' }, async () => {});
} else {
  const dir = tempDir('qkd-pty-');
  t.teardown(() => dir.remove());
  const lab = new EmulatedLab({ source: 'synthetic' });

  t.test('SPAD over a pty: conformance and bad input', async (t) => {
    const pair = await startPtyPair(dir.path, 'spad');
    const inst = new EmulatedSpadDetector(lab);
    const att = await attachInstrumentToTty(inst, pair.b);
    const profile = loadProfile('emulab-spad1');
    const drv = new SpadDetectorDriver({ id: 'pty-spad', profile, transport: new SerialLineTransport({ path: pair.a, settings: profile.transport as SerialSettings }) });
    t.teardown(async () => {
      await drv.close();
      await att.close();
      await pair.kill();
    });
    await drv.open();
    await spadConformance(t, drv);
    inst.fault = 'garbage';
    await t.rejects(drv.deadTimeNs(), ProtocolError, 'garbage on a real tty');
    inst.fault = 'truncate';
    await t.rejects(drv.deadTimeNs(), TimeoutError, 'truncated reply on a real tty');
    inst.fault = 'none';
    t.equal(await drv.get("threshold"), 50, 'line healthy afterwards');
  });

  t.test('a request whose write outlasts its timeout fails with the timeout (no unhandled rejection, line usable)', async (t) => {
    // Nobody reads the other end: the pty and socat buffers fill and the 8 MiB write cannot
    // finish. The reply's timeout must end the request anyway; before, it rejected while the
    // write was still awaited, and the unhandled rejection killed the process.
    const pair = await startPtyPair(dir.path, 'stuck');
    const { profile, tr, lost } = await watchedTransport(t, pair);
    const t0 = Date.now();
    await t.rejects(tr.queryBlock('PATTERN:LOAD', new Uint8Array(8 << 20), 300), TimeoutError, 'the request times out');
    t.ok(Date.now() - t0 < 10_000, `it ended after ${Date.now() - t0} ms, not when the write would finish`);
    // The unfinished write would hold every later command: once the device has taken nothing for
    // writeStallMs the transport closes the port and reports the line lost (a driver reconnects
    // on that). Reopened, the line works again.
    if (!lost.length) await new Promise((r) => tr.once('close', r));
    t.match(lost, [{ code: 'LINE_WEDGED', message: /took no byte of a request \('PATTERN:LOAD <8388608 bytes>'\)/ }], 'the line is reported lost, with why');
    t.ok(Date.now() - t0 >= 400, 'not before the device took nothing for the stall period');
    t.notOk(tr.isOpen);
    // Reconnected as a driver does (identity asked again; the line may still carry the cut
    // request's tail, which the driver's identity retries ride over).
    const att = await attachInstrumentToPtyStreams(new EmulatedPhotonSource(lab), pair.b);
    t.teardown(() => att.close());
    const drv = new PhotonSourceDriver({ id: 'pty-src-wedged', profile: { ...profile, readback: { ...profile.readback!, blockIdleMs: 300 } }, transport: tr });
    t.teardown(() => drv.close());
    await drv.open();
    t.match(await drv.identity(), { model: /PS-1/ }, 'reopened: the device answers');
  });

  t.test('a slow device that keeps taking a long request is not reset, however long the request lasts', async (t) => {
    // The other end reads 4 KiB every 4 ms (~1 MB/s): a 2 MiB request outlasts its 100 ms reply
    // timeout many times over, but bytes keep going in. Resetting it would lose the half-written
    // request each time (a busy emulator on a loaded machine would never get one through).
    const pair = await startPtyPair(dir.path, 'slow');
    const peer = await slowReader(pair.b, { napMs: 4 });
    t.teardown(() => peer.kill());
    const { tr, lost } = await watchedTransport(t, pair);
    const t0 = Date.now();
    await t.rejects(tr.queryBlock('PATTERN:LOAD', new Uint8Array(2 << 20), 100), { code: 'NO_REPLY' }, 'no reply within 100 ms');
    // A write queued behind the slow one settles once it is through; nothing is reset meanwhile.
    await tr.write('*CLS');
    t.ok(Date.now() - t0 > 1000, `the request took ${Date.now() - t0} ms to write (far beyond its timeout and the stall period)`);
    t.same(lost, [], 'the line was not reset');
    t.ok(tr.isOpen, 'still open');
  });

  t.test('a write parked on a full line still finishes when a byte arrives meanwhile', async (t) => {
    // bindings-cpp's poller armed only the event asked for last: the read, woken by a byte from
    // the other end, parked again on "readable" and took the parked write's wake-up away, so a
    // long request (Alice's 1.6 MB read-back) waited for ever and the source looked dead for the
    // rest of the run. The other end here reads slowly and answers one byte per 64 KiB it gets.
    const pair = await startPtyPair(dir.path, 'both');
    const peer = await slowReader(pair.b, { napMs: 1, answerEvery: 65536 });
    const port = new SerialPortStream({ binding: ttyBinding, path: pair.a, baudRate: 115200, autoOpen: false });
    t.teardown(async () => {
      peer.kill();
      if (port.isOpen) await new Promise((r) => port.close(r));
      await pair.kill();
    });
    await new Promise<void>((resolve, reject) => port.open((e) => (e ? reject(e) : resolve())));
    let received = 0;
    port.on('data', (b: Buffer) => (received += b.length));
    for (let i = 0; i < 3; i++) {
      const written = new Promise<string>((resolve) => port.write(Buffer.alloc(1 << 20, 0x41), () => resolve('written')));
      const r = await Promise.race([written, new Promise<string>((resolve) => setTimeout(() => resolve('stuck'), 20_000).unref())]);
      t.equal(r, 'written', `1 MiB write ${i + 1} finished while bytes came back`);
    }
    t.ok(received >= 32, `the other end's bytes were read meanwhile (${received})`);
  });

  t.test('photon source over a pty: conformance', async (t) => {
    const pair = await startPtyPair(dir.path, 'src');
    const att = await attachInstrumentToTty(new EmulatedPhotonSource(lab), pair.b);
    const profile = loadProfile('emulab-ps1');
    const drv = new PhotonSourceDriver({ id: 'pty-src', profile, transport: new SerialLineTransport({ path: pair.a, settings: profile.transport as SerialSettings }) });
    t.teardown(async () => {
      await drv.close();
      await att.close();
      await pair.kill();
    });
    await drv.open();
    await sourceConformance(t, drv);
  });

  t.test('a host that died mid-write of a read-back request: the next driver still opens the source', async (t) => {
    // A node killed while writing its pulse list leaves the source inside that request's binary
    // block; before the source abandoned a stalled block, every '*IDN?' of the restarted node
    // was swallowed as block bytes and the node crash-looped (run-node-restart in CI).
    const pair = await startPtyPair(dir.path, 'halfreq');
    const inst = new EmulatedPhotonSource(lab);
    inst.blockIdleMs = 800;
    const att = await attachInstrumentToTty(inst, pair.b);
    const profile = loadProfile('emulab-ps1');
    t.equal(profile.readback?.blockIdleMs, 3000, 'the PS-1 profile declares how long its source waits for the rest of a block');
    const settings = profile.transport as SerialSettings;
    const dead = new SerialLineTransport({ path: pair.a, settings });
    await dead.open();
    // A 1 MB pulse-list block announced, 1000 bytes of it written, then the host is gone.
    await dead.write(`PATTERN:CHOICES? #71000000${'\x01'.repeat(1000)}`, 'PATTERN:CHOICES? <half a block>');
    await dead.close();
    const drv = new PhotonSourceDriver({ id: 'pty-src-restarted', profile: { ...profile, readback: { ...profile.readback!, blockIdleMs: 800 } },
      transport: new SerialLineTransport({ path: pair.a, settings }) });
    t.teardown(async () => {
      await drv.close();
      await att.close();
      await pair.kill();
    });
    const id = await drv.open();
    t.equal(id.model, 'PS-1', 'identified after the abandoned request');
    t.equal(inst.abandonedBlocks, 1, 'the source dropped the dead host\'s half request');
    await sourceConformance(t, drv);
  });

  t.test('a source switched on does not answer what the host sent while it was off', async (t) => {
    // Queries written while no instrument serves the line stay queued in the pty; a restarted lab's
    // source used to answer them, and the host took those answers for its next query's.
    const pair = await startPtyPair(dir.path, 'stale');
    const profile = loadProfile('emulab-ps1');
    const tr = new SerialLineTransport({ path: pair.a, settings: profile.transport as SerialSettings });
    await tr.open();
    for (let i = 0; i < 3; i++) await tr.write('OUTPUT:STATE?');
    await new Promise((r) => setTimeout(r, 100));
    const att = await attachInstrumentToPtyStreams(new EmulatedPhotonSource(lab), pair.b);
    t.teardown(async () => {
      await tr.close();
      await att.close();
      await pair.kill();
    });
    t.equal(await tr.query('*IDN?'), 'EmuLab,PS-1,PS1-0001,1.3.0', 'the first reply is to the first query sent after it was switched on');
  });

  t.test('pty closed mid-use: disconnected, back-off, reconnect when the line returns', async (t) => {
    let pair = await startPtyPair(dir.path, 'unplug');
    const inst = new EmulatedSpadDetector(lab);
    let att: TtyAttachment = await attachInstrumentToTty(inst, pair.b);
    const profile = loadProfile('emulab-spad1');
    const drv = new SpadDetectorDriver({ id: 'pty-unplug', profile, transport: new SerialLineTransport({ path: pair.a, settings: profile.transport as SerialSettings }), reconnect: { initialMs: 50, maxMs: 200, maxAttempts: 100 } });
    t.teardown(async () => {
      await drv.close();
      await att.close();
      await pair.kill();
    });
    await drv.open();
    t.equal(await drv.deadTimeNs(), 0);
    const lost = waitForState(drv, 'reconnecting', 5000);
    await att.close();
    await pair.kill();
    const seen = await lost;
    t.equal(seen[0].state, 'disconnected', 'clear state change');
    await t.rejects(drv.deadTimeNs(), TransportError, 'fails fast while away');
    // Plug back in: same link names, new ptys.
    pair = await startPtyPair(dir.path, 'unplug');
    att = await attachInstrumentToTty(inst, pair.b);
    await waitForState(drv, 'ready', 5000);
    t.equal(await drv.deadTimeNs(), 0, 'answers again after reconnect');
  });

  t.test('line hangs up before the next read reaches the tty (the order a loaded machine produces): still a disconnect', async (t) => {
    // After a reply the stream issues its next read. If the pty hangs up before that read reaches
    // the kernel (a busy thread pool, a descheduled process), read(2) returns 0 instead of the
    // read being parked in poll(2) when the hang-up comes. Hold that read until socat is gone, so
    // this order happens every run.
    const pair = await startPtyPair(dir.path, 'late-read');
    const att = await attachInstrumentToTty(new EmulatedSpadDetector(lab), pair.b);
    const profile = loadProfile('emulab-spad1');
    const reads = holdableReads(ttyBinding); // the transport's default binding, with a hold in front
    const drv = new SpadDetectorDriver({ id: 'pty-late-read', profile, transport: new SerialLineTransport({ path: pair.a, settings: profile.transport as SerialSettings, binding: reads.binding }), reconnect: { initialMs: 50, maxMs: 200, maxAttempts: Infinity } });
    t.teardown(async () => {
      reads.release();
      await drv.close();
      await att.close();
      await pair.kill();
    });
    await drv.open();
    reads.holdAfterLine();
    t.equal(await drv.deadTimeNs(), 0, 'reply read before the hang-up');
    await reads.held();
    const lost = waitForState(drv, 'reconnecting', 5000);
    await att.close();
    await pair.kill(); // socat has exited: both ptys are hung up before the held read runs
    reads.release();
    const seen = await lost;
    t.same(seen.map((s) => s.state), ['disconnected', 'reconnecting'], 'disconnect reported, reconnecting with back-off');
    t.match(seen[0].reason ?? '', /hung up/, 'the reason names the hang-up');
    await t.rejects(drv.deadTimeNs(), TransportError, 'fails fast while away');
  });
}

/**
 * Another process on the emulator's end of a pty pair that reads 4 KiB at a time with a nap of
 * `napMs` between reads, and (with `answerEvery`) writes one byte back per that many bytes read.
 * Resolves once it is reading (a node starting up takes no bytes).
 */
async function slowReader(path: string, o: { napMs: number; answerEvery?: number }): Promise<ChildProcess> {
  const peer = spawn(process.execPath, ['-e', `
    const fs = require('node:fs');
    const fd = fs.openSync(process.argv[1], 'r+');
    const buf = Buffer.alloc(4096);
    const nap = new Int32Array(new SharedArrayBuffer(4));
    const every = Number(process.argv[3]);
    process.stdout.write('reading\\n');
    for (let got = 0, next = every;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n <= 0) break;
      got += n;
      if (every && got >= next) { fs.writeSync(fd, 'x'); next += every; }
      Atomics.wait(nap, 0, 0, Number(process.argv[2]));
    }`, path, String(o.napMs), String(o.answerEvery ?? 0)], { stdio: ['ignore', 'pipe', 'ignore'] });
  await new Promise((r) => peer.stdout!.once('data', r));
  return peer;
}

/** A PS-1 transport on the driver's end of `pair` (write stall 400 ms), open, and the line losses it reports. */
async function watchedTransport(t: Test, pair: PtyPair): Promise<{ profile: ReturnType<typeof loadProfile>; tr: SerialLineTransport; lost: Error[] }> {
  const profile = loadProfile('emulab-ps1');
  const tr = new SerialLineTransport({ path: pair.a, settings: profile.transport as SerialSettings, writeStallMs: 400 });
  t.teardown(async () => {
    await tr.close();
    await pair.kill();
  });
  await tr.open();
  const lost: Error[] = [];
  tr.on('close', (e: Error) => lost.push(e));
  return { profile, tr, lost };
}
