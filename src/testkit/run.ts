/**
 * Helpers for tests that run `qkd` as separate processes, as a user does: spawn a command and
 * collect its output lines, wait for a condition, and fetch a key pair over ETSI 014 as an SAE
 * pair would (enc_keys at Alice's KMS, dec_keys of the same IDs at Bob's).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { JsonClient, type ClientResponse } from '../delivery/http.ts';
import { makePki, type Pki } from '../delivery/pki.ts';
import { freePort, nodeRunConfig, referenceKmsConfig, type LinkConfigParams } from '../node/supervisor.ts';
import type { NodeRunConfig } from '../node/config.ts';
import { provisionEmulatedChannel } from '../node/channel-credentials.ts';
import { startSourceLine, type SourceLine } from '../node/source-tty.ts';
import type { Test } from 'tap';

const qkd = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'qkd.js');

export interface QkdProcess {
  p: ChildProcess;
  /** Output lines so far, stderr and stdout interleaved as they arrive. */
  lines: string[];
  done: Promise<{ code: number | null; stdout: string }>;
}

/** Starts `qkd <args>` with this Node (bin/qkd.js). */
export function qkdProcess(args: string[]): QkdProcess {
  const p = spawn(process.execPath, [qkd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let stdout = '';
  const collect = (d: string) => lines.push(...d.split('\n').filter(Boolean));
  p.stdout!.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    collect(d);
  });
  p.stderr!.setEncoding('utf8').on('data', collect);
  return { p, lines, done: new Promise((resolve) => p.on('exit', (code) => resolve({ code, stdout }))) };
}

/** Polls `fn` every half second until it returns a value; rejects after `timeoutMs`, naming `what`. */
export async function until<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

type Tls = { ca: string; cert: string; key: string };

/**
 * An SAE pair fetching `number` keys: enc_keys from Alice's KMS (retried until the KMSs have
 * confirmed keys, up to `timeoutMs`), then dec_keys of the same key IDs from Bob's.
 */
export async function saePairKeys(o: { kmsA: string; kmsB: string; saeA: Tls; saeB: Tls; number: number; timeoutMs: number }):
  Promise<{ enc: ClientResponse; dec: ClientResponse }> {
  const saeA = new JsonClient({ url: o.kmsA, id: 'kmsA' }, { tls: o.saeA });
  const saeB = new JsonClient({ url: o.kmsB, id: 'kmsB' }, { tls: o.saeB });
  try {
    const enc = await until('confirmed keys for the SAE pair', async () => {
      const r = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: o.number }).catch(() => undefined);
      return r?.status === 200 ? r : undefined;
    }, o.timeoutMs);
    const dec = await saeB.request('POST', '/api/v1/keys/saeA/dec_keys',
      { key_IDs: enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
    return { enc, dec };
  } finally {
    saeA.close();
    saeB.close();
  }
}

/** The link settings of the one-node-per-host tests (25 km, 1e7-detection blocks, fast emulation). */
export const TEST_LINK: LinkConfigParams['opts'] = { preset: 'reference-decoy', distanceKm: 25, eveFraction: 0, seed: 2026n, blockDetections: 1e7, frameBits: 235930,
  epsSec: 1e-10, epsCor: 1e-15, qberAbort: 0.11, speed: 1000, insecureHttp: false };

/**
 * Writes what two hosts of a link hold: a PKI, the pre-shared channel secret and spool key, one
 * node configuration per role (`edit` may change them before they are written) and one reference
 * KMS configuration per side. Returns the files and ports. With `sourceLine` (default), Alice's
 * emulated source sits on a socat pty pair (her `devices[].port`, Bob's `lab.sourceTty`): start
 * Bob's node first, and close the line at the end.
 */
export async function writeNodeLink(dir: string, edit: (role: 'alice' | 'bob', cfg: NodeRunConfig) => NodeRunConfig = (_r, c) => c, opts: { sourceLine?: boolean } = {}): Promise<{ pki: Pki; files: { alice: string; bob: string; kmsA: string; kmsB: string }; kmsPort: { A: number; B: number }; sourceLine?: SourceLine }> {
  const pki = makePki(join(dir, 'pki'), ['nodeA', 'nodeB', 'kmsA', 'kmsB', 'saeA', 'saeB']);
  mkdirSync(join(dir, 'secrets'), { mode: 0o700 });
  const spoolKeyFile = join(dir, 'secrets', 'spool.key');
  const channel = provisionEmulatedChannel(dir);
  writeFileSync(spoolKeyFile, randomBytes(32), { mode: 0o600 });
  const nodePort = { A: await freePort(), B: await freePort() };
  const kmsPort = { A: await freePort(), B: await freePort() };
  const p: LinkConfigParams = { dir, opts: TEST_LINK, channel, spoolKeyFile, sessionId: randomBytes(8).toString('hex'), channelPort: await freePort(), nodePort,
    kmsUrl: { A: `https://127.0.0.1:${kmsPort.A}`, B: `https://127.0.0.1:${kmsPort.B}` }, tls: { ca: pki.caPath, ids: pki.ids } };
  const sourceLine = opts.sourceLine === false ? undefined : await startSourceLine(dir);
  if (sourceLine) p.sourceTty = { alice: sourceLine.alice, lab: sourceLine.lab };
  const files = { alice: join(dir, 'alice.json'), bob: join(dir, 'bob.json'), kmsA: join(dir, 'kmsA.json'), kmsB: join(dir, 'kmsB.json') };
  writeFileSync(files.alice, JSON.stringify(edit('alice', nodeRunConfig('alice', p))));
  writeFileSync(files.bob, JSON.stringify(edit('bob', { ...nodeRunConfig('bob', p),
    devices: [{ id: 'bob-tagger', profile: 'emulab-tt8', emulated: true }, { id: 'bob-spad-0', profile: 'emulab-spad1', emulated: true, channel: 0 }] })));
  const nodeUrl = { A: `https://127.0.0.1:${nodePort.A}`, B: `https://127.0.0.1:${nodePort.B}` };
  for (const side of ['A', 'B'] as const) writeFileSync(files[`kms${side}`], JSON.stringify(referenceKmsConfig(side, { dir, pki, kmsPort, nodeUrl })));
  return { pki, files, kmsPort, sourceLine };
}

/** Two keys through the SAE pair of a PKI written by makePki (saeA at KMS A, saeB at KMS B). */
export function saePairOverPki(pki: Pki, kmsPort: { A: number; B: number }): ReturnType<typeof saePairKeys> {
  const tlsOf = (name: string) => ({ ca: readFileSync(pki.caPath, 'utf8'), cert: pki.ids[name].cert, key: pki.ids[name].key });
  return saePairKeys({ kmsA: `https://127.0.0.1:${kmsPort.A}`, kmsB: `https://127.0.0.1:${kmsPort.B}`,
    saeA: tlsOf('saeA'), saeB: tlsOf('saeB'), number: 2, timeoutMs: 120_000 });
}

/** A node's last progress lines, warnings and errors (for a failed test's comment). */
export function nodeSaid(p: QkdProcess, n = 15): string {
  return p.lines.filter((l) => /^\[qkd run|"level":"(warn|error)"/.test(l)).slice(-n).join('\n');
}

/**
 * Starts two `qkd run --config` nodes as two hosts would: Bob first (his host's emulated lab serves
 * Alice's source on its line before her node opens it), then Alice. Each process is pushed to
 * `procs` as it starts (for the caller's teardown).
 */
export async function startNodePair(files: { alice: string; bob: string }, procs: QkdProcess[]): Promise<{ alice: QkdProcess; bob: QkdProcess }> {
  const bob = qkdProcess(['run', '--config', files.bob, '--json', '--dashboard-port', '0']);
  procs.push(bob);
  await until('Bob\'s lab on the source line', () => bob.lines.find((l) => /source is on a tty/.test(l)), 120_000);
  const alice = qkdProcess(['run', '--config', files.alice, '--json', '--dashboard-port', '0']);
  procs.push(alice);
  return { alice, bob };
}

/** Stops two `qkd run --config` nodes as an operator would: Bob first (he finishes his block with Alice), then Alice. */
export async function stopNodePair(alice: QkdProcess, bob: QkdProcess): Promise<{ a: { code: number | null; stdout: string }; b: { code: number | null; stdout: string } }> {
  bob.p.kill('SIGINT');
  const b = await bob.done;
  alice.p.kill('SIGINT');
  const a = await alice.done;
  return { a, b };
}

/**
 * The end of a two-host test: the SAE pair gets matching keys from the two KMSs, then both nodes
 * stop cleanly (Bob first); returns their `--json` summaries.
 */
export async function checkKeysAndStop(t: Test, o: { pki: Pki; kmsPort: { A: number; B: number }; alice: QkdProcess; bob: QkdProcess }):
  Promise<{ sa: Record<string, any>; sb: Record<string, any> }> {
  const { enc, dec } = await saePairOverPki(o.pki, o.kmsPort);
  t.equal(dec.status, 200, 'dec_keys from Bob\'s KMS');
  t.same(dec.body.keys.map((k: { key: string }) => k.key), enc.body.keys.map((k: { key: string }) => k.key), 'the SAE pair holds the same keys');
  const { a, b } = await stopNodePair(o.alice, o.bob);
  t.equal(b.code, 0, 'Bob\'s node exits cleanly');
  t.equal(a.code, 0, 'Alice\'s node exits cleanly');
  return { sa: JSON.parse(a.stdout), sb: JSON.parse(b.stdout) };
}
