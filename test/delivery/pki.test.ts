// The development PKI: identities chain to the CA, and with `discardCaKey` (what `qkd run` uses)
// no CA private key stays on disk, so a copy of a running system's state cannot mint identities.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePki } from '../../src/delivery/pki.ts';

t.test('discardCaKey: identities issued and verifiable, the CA key gone, new identities refused with a clear error', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-pki-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pki = makePki(dir, ['nodeA', 'saeA'], undefined, { discardCaKey: true });
  t.notOk(existsSync(join(dir, 'ca.key')), 'no CA private key left on disk');
  for (const id of Object.values(pki.ids)) {
    const out = execFileSync('openssl', ['verify', '-CAfile', pki.caPath, id.certPath], { encoding: 'utf8' });
    t.match(out, /: OK/, `${id.name} chains to the CA`);
  }
  const again = makePki(dir, ['nodeA', 'saeA'], undefined, { discardCaKey: true });
  t.equal(again.ids.nodeA.cert, pki.ids.nodeA.cert, 'existing identities are reused');
  t.throws(() => makePki(dir, ['saeEvil']), { code: 'PKI_CA_OFFLINE', message: /CA private key/ }, 'a new identity cannot be issued without the CA key');
  t.notOk(existsSync(join(dir, 'saeEvil.pem')));
});

t.test('without discardCaKey (qkd kms --make-pki on the CA machine) the CA key stays for later identities', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-pki-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  makePki(dir, ['kmsA']);
  t.ok(existsSync(join(dir, 'ca.key')));
  t.ok(makePki(dir, ['kmsA', 'saeB']).ids.saeB, 'a later identity is issued');
});
