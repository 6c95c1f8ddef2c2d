/**
 * Helpers for tests that run `qkd` as separate processes, as a user does: spawn a command and
 * collect its output lines, wait for a condition, and fetch a key pair over ETSI 014 as an SAE
 * pair would (enc_keys at Alice's KMS, dec_keys of the same IDs at Bob's).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { JsonClient, type ClientResponse } from '../delivery/http.ts';

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
