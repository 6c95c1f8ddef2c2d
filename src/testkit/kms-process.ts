/**
 * Two `qkd kms` processes (Alice's, the source side, and Bob's) with in-process delivery nodes,
 * a development PKI on disk and configuration files written from `extra` — for tests that drive a
 * real KMS process over HTTPS (with curl or a JsonClient). Everything lives under `dir`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { startDeliveryNode, type DeliveryNode } from '../delivery/node.ts';
import { makePki, type Pki } from './pki.ts';
import { until } from './delivery.ts';

const root = resolve(import.meta.dirname, '../..');

export function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => res(p));
    });
  });
}

export interface QkdProcess {
  proc: ChildProcess;
  out: string[];
  stop(): Promise<number | null>;
}

/** `qkd ARGS` with cwd `dir`; stdout and stderr collected in `out`. */
export function qkdProcess(dir: string, args: string[]): QkdProcess {
  const out: string[] = [];
  const proc = spawn(process.execPath, [join(root, 'bin/qkd.js'), ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (d: Buffer) => out.push(d.toString()));
  proc.stderr!.on('data', (d: Buffer) => out.push(d.toString()));
  return {
    proc, out,
    async stop() {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => proc.once('exit', r));
      }
      return proc.exitCode;
    },
  };
}

export interface KmsPair {
  pki: Pki;
  /** https://127.0.0.1:PORT of each KMS. */
  urlA: string;
  urlB: string;
  nodeA: DeliveryNode;
  nodeB: DeliveryNode;
  kmsA: QkdProcess;
  kmsB: QkdProcess;
  /** Offers the same bytes at both nodes and waits until both KMS processes acknowledged them. */
  fill(bytes: Buffer): Promise<void>;
  close(): Promise<void>;
}

/** Starts the pair and waits until Alice's KMS has opened the link's stream. */
export async function startKmsPair(dir: string, extra: Record<string, unknown> = {}): Promise<KmsPair> {
  const names = ['nodeA', 'nodeB', 'kmsA', 'kmsB', 'saeA', 'saeB'];
  const pki = makePki(join(dir, 'pki'), names);
  const [pA, pB] = [await freePort(), await freePort()];
  const spoolKey = randomBytes(32);
  const node = (side: 'A' | 'B', port: number) => startDeliveryNode({ role: side === 'A' ? 'source' : 'destination',
    nodeId: `node${side}`, tls: pki.tls(`node${side}`), spoolDir: join(dir, `spool${side}`), spoolKey,
    kms: { url: `https://127.0.0.1:${port}`, id: `kms${side}` }, peer: { nodeId: side === 'A' ? 'nodeB' : 'nodeA' },
    retry: { baseMs: 50, maxMs: 300 } });
  const nodeA = await node('A', pA);
  const nodeB = await node('B', pB);
  writeFileSync(join(dir, 'wrap.hex'), randomBytes(32).toString('hex') + '\n');
  for (const [side, port, peerPort, n] of [['A', pA, pB, nodeA], ['B', pB, pA, nodeB]] as const) {
    writeFileSync(join(dir, `kms${side}.json`), JSON.stringify({
      id: `kms${side}`, role: side === 'A' ? 'source' : 'destination', listen: { host: '127.0.0.1', port },
      tls: { ca: 'pki/ca.pem', cert: `pki/kms${side}.pem`, key: `pki/kms${side}.key` }, dbPath: `kms${side}.db`,
      wrapKeyFile: 'wrap.hex', node: { url: n.url, id: `node${side}` }, peerNodeId: side === 'A' ? 'nodeB' : 'nodeA',
      peer: { url: `https://127.0.0.1:${peerPort}`, id: side === 'A' ? 'kmsB' : 'kmsA' },
      saes: { local: [`sae${side}`], remote: [side === 'A' ? 'saeB' : 'saeA'] }, qos: { key_chunk_size: 32 },
      openStream: side === 'A', ...extra }));
  }
  const kmsB = qkdProcess(dir, ['kms', '--config', 'kmsB.json']);
  const kmsA = qkdProcess(dir, ['kms', '--config', 'kmsA.json']);
  await until(() => kmsA.out.join('').includes('key stream opened') || kmsA.proc.exitCode !== null, 30_000,
    'stream opened by the source KMS');
  if (kmsA.proc.exitCode !== null) throw new Error(`qkd kms (Alice) exited: ${kmsA.out.join('')}`);
  let acked = 0;
  return {
    pki, urlA: `https://127.0.0.1:${pA}`, urlB: `https://127.0.0.1:${pB}`, nodeA, nodeB, kmsA, kmsB,
    async fill(bytes) {
      await Promise.all([nodeA.offer(bytes, {}), nodeB.offer(bytes, {})]);
      acked += bytes.length / 32;
      await until(() => nodeA.metrics().acked === acked && nodeB.metrics().acked === acked, 15_000, 'acks from the KMS processes');
    },
    async close() {
      await Promise.allSettled([kmsA.stop(), kmsB.stop()]);
      await Promise.allSettled([nodeA.close(), nodeB.close()]);
    },
  };
}
