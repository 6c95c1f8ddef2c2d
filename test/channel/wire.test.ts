import t from 'tap';
import { randomBytes } from 'node:crypto';
import { Packr } from 'msgpackr';
import { decodeAad, encodeAad, KIND, CHANNEL_VERSION, type Aad } from '../../src/channel/wire.ts';
import { BlockLedger } from '../../src/channel/ledger.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

t.test('aad round trip and refusals', async (t) => {
  const a: Aad = { version: CHANNEL_VERSION, direction: 1, seq: 2 ** 40, sender: randomBytes(16), receiver: new Uint8Array(0), kind: KIND.HELLO, type: 'x', msgId: 3, blockId: -1, ref: -1 };
  const d = decodeAad(encodeAad(a));
  t.same({ ...d, sender: Buffer.from(d.sender), receiver: Buffer.from(d.receiver) }, { ...a, sender: Buffer.from(a.sender), receiver: Buffer.from(a.receiver) });
  const p = new Packr({ useRecords: false });
  t.throws(() => decodeAad(p.pack([2, 0, 0, randomBytes(16), new Uint8Array(0), 0, '', 0, -1, -1])), { code: 'CHANNEL_VERSION', message: /version 2 is not supported/ });
  t.throws(() => decodeAad(p.pack([1, 2, 0, randomBytes(16), new Uint8Array(0), 0, '', 0, -1, -1])), { code: 'CHANNEL_MALFORMED' }, 'bad direction');
  t.throws(() => decodeAad(p.pack([1, 0, -1, randomBytes(16), new Uint8Array(0), 0, '', 0, -1, -1])), { code: 'CHANNEL_MALFORMED' }, 'negative seq');
  t.throws(() => decodeAad(p.pack([1, 0, 0, randomBytes(15), new Uint8Array(0), 0, '', 0, -1, -1])), { code: 'CHANNEL_MALFORMED' }, 'short instance');
  t.throws(() => decodeAad(Buffer.from([0xc1])), { code: 'CHANNEL_MALFORMED' });
});

t.test('ledger persists, keeps commit over abort, survives reopen', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-ledger-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'l.json');
  const l = new BlockLedger(path);
  l.prepare(5);
  l.commit(4);
  l.abort(3);
  l.abort(4); // no effect on a committed block
  const r = new BlockLedger(path);
  t.equal(r.prepared, 5);
  t.ok(r.isCommitted(4) && !r.isAborted(4));
  t.ok(r.isAborted(3));
  r.commit(5);
  t.equal(new BlockLedger(path).prepared, null);
  writeFileSync(path, '{not json');
  t.throws(() => new BlockLedger(path), { code: 'LEDGER_CORRUPT' });
});
