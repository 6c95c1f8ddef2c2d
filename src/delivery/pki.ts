/**
 * A development PKI made with the `openssl` CLI: one CA and, per name, an EC P-256 key and a
 * certificate whose subject CN is the name (the identity peers are bound to), with SANs for
 * localhost/127.0.0.1 and both serverAuth and clientAuth usages (nodes and KMSs are both).
 * For tests, labs and `qkd run` (src/testkit/pki.ts re-exports it); never for production keys.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ConfigError } from '../errors.ts';

export interface Identity {
  name: string;
  cert: string;
  key: string;
  certPath: string;
  keyPath: string;
}
export interface Pki {
  dir: string;
  ca: string;
  caPath: string;
  ids: Record<string, Identity>;
  /** TLS material for `name`: { ca, cert, key } (PEM strings). */
  tls(name: string): { ca: string; cert: string; key: string };
}

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (cause) {
    throw new ConfigError('PKI_OPENSSL', `openssl ${args[0]} failed in ${cwd}; is the openssl CLI installed ` +
      `(Debian: apt-get install openssl)? ${(cause as { stderr?: Buffer }).stderr?.toString() ?? ''}`.trim(), { cause });
  }
}

/**
 * Creates (or reuses, when the files exist) a CA called `caName` and one identity per name in
 * `dir`. Safe to call again with more names while the CA key is there. With `discardCaKey` the CA
 * private key is overwritten and deleted once every identity is issued: a running system holds no
 * key that can mint new identities (a stolen state directory then cannot make an SAE or a node).
 */
export function makePki(dir: string, names: string[], caName = 'qkd-dev-ca', opts: { discardCaKey?: boolean } = {}): Pki {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caKey = join(dir, 'ca.key');
  const caPath = join(dir, 'ca.pem');
  if (!existsSync(caPath)) {
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', caKey], dir);
    openssl(['req', '-x509', '-new', '-key', caKey, '-sha256', '-days', '3650', '-subj', `/CN=${caName}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-out', caPath], dir);
  }
  const ids: Record<string, Identity> = {};
  for (const name of names) {
    if (!/^[A-Za-z0-9._-]+$/.test(name)) {
      throw new ConfigError('PKI_NAME', `identity name '${name}' must be letters, digits, '.', '_' or '-'`);
    }
    const keyPath = join(dir, `${name}.key`);
    const certPath = join(dir, `${name}.pem`);
    if (!existsSync(certPath)) {
      if (!existsSync(caKey)) {
        throw new ConfigError('PKI_CA_OFFLINE', `identity '${name}' is missing in ${dir} and the CA private key is not ` +
          `there (it is removed after issuing): issue it with the CA key on the machine that keeps it ` +
          `(qkd kms --make-pki), or delete ${dir} to start a new development PKI (clients must fetch the new CA)`);
      }
      const csr = join(dir, `${name}.csr`);
      const ext = join(dir, `${name}.ext`);
      writeFileSync(ext, `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n` +
        `extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,DNS:${name}\n`);
      openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyPath], dir);
      openssl(['req', '-new', '-key', keyPath, '-subj', `/CN=${name}`, '-out', csr], dir);
      openssl(['x509', '-req', '-in', csr, '-CA', caPath, '-CAkey', caKey, '-CAcreateserial', '-days', '825',
        '-sha256', '-extfile', ext, '-out', certPath], dir);
    }
    ids[name] = { name, certPath, keyPath, cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8') };
  }
  if (opts.discardCaKey && existsSync(caKey)) {
    writeFileSync(caKey, randomBytes(statSync(caKey).size));
    rmSync(caKey);
  }
  const ca = readFileSync(caPath, 'utf8');
  return {
    dir, ca, caPath, ids,
    tls(name: string) {
      const id = ids[name];
      if (!id) throw new ConfigError('PKI_UNKNOWN', `no identity '${name}' in ${dir}; add it to makePki`);
      return { ca, cert: id.cert, key: id.key };
    },
  };
}
