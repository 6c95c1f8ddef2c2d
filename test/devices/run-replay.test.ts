/**
 * A recording as Bob's time-tagger in `qkd run --config` (processes, as a deployment runs them):
 * Bob's node configuration names a recording (`"replay"`: the start of a PicoQuant sample as a
 * qcrypto a1 file, with `"replayChannels"` mapping its channels onto the link's detector
 * channels); his node runs from the file, its tags reach his detection stream on the mapped
 * channels, and the node ends when the recording does. Alice's node drives her emulated source on a socat pty (served here). Bad entries stop
 * Bob's start with the device named: missing file, unknown format, a channel the file lacks.
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { qkdProcess, until, writeNodeLink } from '../../src/testkit/run.ts';
import { hasSocat } from '../../src/testkit/devices.ts';
import { EmulatedLab } from '../../src/devices/emulated/lab.ts';
import { attachSourceWorkerToTty } from '../../src/devices/emulated/source-worker.ts';
import type { NodeRunConfig } from '../../src/node/config.ts';
import { encodeA1 } from '../../src/core/records.ts';
import { decodePtuFileReference } from '../../src/core/records-reference.ts';

t.setTimeout(600_000);
const DATA = resolve(import.meta.dirname, '../../../shared/data/picoquant');
// The passive-basis link (a recording has no record of an active modulator's choices).
const PRESET = 'snspd-metro';

/** The first `n` events of a sample file from the reference decoder (header constants read independently). */
function reference(rel: string, n: number) {
  const bytes = readFileSync(join(DATA, rel));
  const ev = decodePtuFileReference(bytes);
  const idx = ev.channel.map((c, i) => (c < 2 ? i : -1)).filter((i) => i >= 0).slice(0, n);
  return { timePs: BigInt64Array.from(idx, (i) => ev.timePs[i]), channel: Uint8Array.from(idx, (i) => ev.channel[i]) };
}

async function link(dir: string, bobTagger: Record<string, unknown>) {
  return writeNodeLink(dir, (role, cfg: NodeRunConfig) => {
    const c = { ...cfg, lab: { ...cfg.lab, preset: PRESET } };
    if (role === 'bob') {
      delete (c.lab as { sourceTty?: string }).sourceTty;
      c.devices = [bobTagger as unknown as NonNullable<NodeRunConfig['devices']>[number]];
    }
    return c;
  });
}

t.test("Bob's node runs from a recording: its tags reach his stream on the mapped channels, the node ends with the file", { skip: hasSocat() ? false : 'socat is not installed' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-run-replay-'));
  // The first 50 000 events of the PicoHarp T2 sample (0.4 s) as a qcrypto a1 file (channels 0, 1
  // as a1 detectors 1, 2): a short recording keeps the run short. Relative to Bob's file's folder.
  const ref = reference('picoharp/v30_t2.ptu', 50_000);
  mkdirSync(join(dir, 'data'));
  writeFileSync(join(dir, 'data', 'first.a1'), encodeA1(ref.timePs, Uint8Array.from(ref.channel, (c) => c + 1)));
  const { files, sourceLine } = await link(dir, { id: 'bob-tagger', replay: join('data', 'first.a1'), replayChannels: { 1: 0, 2: 1 } });
  const lab = new EmulatedLab({ preset: PRESET, seed: 7n, distanceKm: 25, awaitSource: true });
  const source = await attachSourceWorkerToTty(lab, sourceLine!.lab);
  const bob = qkdProcess(['run', '--config', files.bob, '--json', '--dashboard-port', '0']);
  let alice: ReturnType<typeof qkdProcess> | undefined;
  t.teardown(async () => {
    if (!t.passing()) {
      t.comment(`bob said:\n${bob.lines.filter((l) => /^\[qkd run|"level":"(warn|error)"/.test(l)).slice(-15).join('\n')}`);
      t.comment(`alice said:\n${alice?.lines.slice(-10).join('\n')}`);
    }
    bob.p.kill('SIGKILL');
    alice?.p.kill('SIGKILL');
    await source.close();
    await sourceLine?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await until("Bob's node up", () => bob.lines.find((l) => /node nodeB ready/.test(l)), 120_000);
  alice = qkdProcess(['run', '--config', files.alice, '--json', '--dashboard-port', '0']);
  const t0 = Date.now();
  const b = await bob.done;
  t.comment(`Bob's node ran ${((Date.now() - t0) / 1000).toFixed(1)} s after Alice's start`);
  t.equal(b.code, 0, 'Bob\'s node ends cleanly when the recording does');
  const said = bob.lines.join('\n');
  t.match(said, /no emulated lab; devices: bob-tagger \(replay of first\.a1\)/, 'says it runs from the recording');
  t.match(said, /pipeline ended without a stop request: the tag stream finished first/, 'the end of the recording is logged');
  const summary = JSON.parse(b.stdout) as { devices: { id: string; model: string; firmware: string }[]; detectors: { channel: number; tags: number }[] };
  t.match(summary.devices, [{ id: 'bob-tagger', model: /\(recording\)$/, firmware: 'file:a1' }], 'the recording is the tagger');
  const tags = new Map(summary.detectors.map((d) => [d.channel, d.tags]));
  const want = [0, 1].map((c) => ref.channel.filter((x) => x === c).length);
  t.comment(`Bob's detectors: ${JSON.stringify([...tags])}; the file: ${JSON.stringify(want)}`);
  t.ok([...tags.keys()].every((c) => c === 0 || c === 1), 'tags only on the mapped tagger channels');
  // Every tag of the recording reaches Bob's stream: the pipeline consumes all it was sent before
  // it stops when the tag stream ends on its own.
  t.same([tags.get(0) ?? 0, tags.get(1) ?? 0], want, 'every tag of the recording reached Bob\'s stream');
  alice.p.kill('SIGINT');
  await alice.done;
});

t.test('bad replay entries stop Bob\'s start, naming the device and what to fix', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-run-replay-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { files } = await writeNodeLink(dir, undefined, { sourceLine: false });
  const base = JSON.parse(readFileSync(files.bob, 'utf8'));
  base.lab.preset = PRESET;
  const start = async (entry: Record<string, unknown>) => {
    writeFileSync(files.bob, JSON.stringify({ ...base, devices: [entry] }));
    const r = qkdProcess(['run', '--config', files.bob, '--dashboard-port', '0']);
    const { code } = await r.done;
    return { code, said: r.lines.join('\n') };
  };
  const missing = await start({ id: 'bob-tagger', replay: 'nothing-here.ptu' });
  t.equal(missing.code, 1);
  t.match(missing.said, /device 'bob-tagger' \(replay\) could not be opened: .*nothing-here\.ptu: cannot open the recording \(ENOENT\).*\[RUN_DEVICE_OPEN\]/);
  const unknown = await start({ id: 'bob-tagger', replay: join(DATA, 'README.md') });
  t.equal(unknown.code, 1);
  t.match(unknown.said, /device 'bob-tagger' \(replay\) could not be opened: .*README\.md: cannot tell the recording format.*replayFormat|--format/);
  const chan = await start({ id: 'bob-tagger', replay: join(DATA, 'hydraharp/v20_t3.ptu'), replayChannels: { 1: 0, 5: 1 } });
  t.equal(chan.code, 1);
  t.match(chan.said, /replayChannels names channel 5, which the recorded instrument \(HydraHarp v2 T3\) does not have; its channels are 1, 2, 3 .*\[RUN_DEVICE_OPEN\]/);
});
