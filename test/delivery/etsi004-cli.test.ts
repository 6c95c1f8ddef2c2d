// ETSI GS QKD 004 for applications against two real `qkd kms` processes, driven with curl exactly
// as docs/delivery.md shows it: open at Alice's KMS, join at Bob's, the same bytes for the same
// index at both, close. Also `linkKeyRateBps` from the configuration file (admission, status 7)
// and no key bytes in the processes' output.
import t from 'tap';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { qkdProcess, startKmsPair } from '../../src/testkit/kms-process.ts';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'qkd-004-cli-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** The docs' curl line: `sae` posts `body` to `url` + `/api/v1/qkd004/` + `call`. */
async function curl(sae: string, url: string, call: string, body: unknown) {
  const { stdout } = await run('curl', ['-s', '--cert', `pki/${sae}.pem`, '--key', `pki/${sae}.key`, '--cacert', 'pki/ca.pem',
    '-H', 'content-type: application/json', `${url}/api/v1/qkd004/${call}`, '-d', JSON.stringify(body)], { cwd: dir });
  return JSON.parse(stdout);
}

t.test('open, get and close with curl against two qkd kms processes', async (t) => {
  const P = await startKmsPair(dir, { linkKeyRateBps: 1000 });
  t.teardown(() => P.close());
  const bytes = randomBytes(32 * 3);
  await P.fill(bytes);
  const o = await curl('saeA', P.urlA, 'open_connect', { source: 'qkd://saeA', destination: 'qkd://saeB',
    qos: { key_chunk_size: 32, min_bps: 256, timeout: 2000, ttl: 600 } });
  t.match(o, { status: 1, qos: { key_chunk_size: 32, min_bps: 256, timeout: 2000, ttl: 600 } });
  const over = await curl('saeB', P.urlB, 'open_connect', { source: 'saeA', destination: 'saeB', qos: { min_bps: 1000 } });
  t.match(over, { status: 7, key_stream_ID: null, qos: { min_bps: 744 } }, 'linkKeyRateBps from the file: 1000 - 256 left');
  const j = await curl('saeB', P.urlB, 'open_connect', { source: 'saeA', destination: 'saeB', key_stream_ID: o.key_stream_ID });
  t.equal(j.status, 0);
  const keys: Buffer[] = [];
  for (let i = 0; i < 3; i++) {
    const a = await curl('saeA', P.urlA, 'get_key', { key_stream_ID: o.key_stream_ID, index: i });
    const b = await curl('saeB', P.urlB, 'get_key', { key_stream_ID: o.key_stream_ID, index: i });
    t.equal(a.status, 0, `index ${i} at Alice's KMS`);
    t.equal(b.key_buffer, a.key_buffer, `index ${i}: the same bytes at Bob's KMS`);
    keys.push(Buffer.from(a.key_buffer, 'base64'));
  }
  t.same(Buffer.concat(keys), bytes, 'the link\'s key material, each byte once');
  t.same(await curl('saeA', P.urlA, 'close', { key_stream_ID: o.key_stream_ID }), { status: 0, key_stream_ID: o.key_stream_ID });
  const gone = await curl('saeB', P.urlB, 'get_key', { key_stream_ID: o.key_stream_ID });
  t.match(gone, { status: 4, message: /was closed by 'saeA'/ });
  t.equal(await P.kmsA.stop(), 0);
  t.equal(await P.kmsB.stop(), 0);
  const text = [...P.kmsA.out, ...P.kmsB.out].join('');
  t.match(text, /qkd004 stream opened/);
  for (const k of keys) t.notOk(text.includes(k.toString('base64')) || text.includes(k.toString('hex')), 'no key bytes in the output');
});

t.test('a wrong linkKeyRateBps is a start-up error that says what it must be', async (t) => {
  writeFileSync(join(dir, 'bad004.json'), JSON.stringify({ id: 'k', role: 'source', dbPath: 'z.db', insecure: true,
    wrapKeyFile: 'wrap.hex', node: { url: 'https://127.0.0.1:1', id: 'n' }, peerNodeId: 'p', saes: { local: [], remote: [] },
    linkKeyRateBps: 'fast' }));
  const k = qkdProcess(dir, ['kms', '--config', 'bad004.json']);
  await new Promise((r) => k.proc.once('exit', r));
  t.equal(k.proc.exitCode, 1);
  t.match(k.out.join(''), /'linkKeyRateBps' must be the link's key rate in bit\/s/);
});
