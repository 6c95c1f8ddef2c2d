/**
 * `qkd kms --config kms.json`: runs the reference KMS as its own process (ETSI 004 push receiver,
 * KMS<->KMS confirmation, ETSI 014 for SAEs). Logs and alarms go to stdout as JSON lines; they never
 * hold key bytes. `qkd kms --make-pki DIR name...` writes a development CA and certificates.
 * Custody: `qkd kms init | unseal | status | rotate-kek | audit verify` (docs/delivery.md, "Custody").
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { ConfigError, QkdError, SecurityError } from '../../errors.ts';
import { adminRequest } from '../../delivery/admin.ts';
import { kmsPaths, loadKmsConfig, readPin } from '../../delivery/config.ts';
import { startKms } from '../../delivery/kms.ts';
import { makePki } from '../../delivery/pki.ts';
import { initCustody, verifyAuditChain } from '../../delivery/store.ts';
import { redact } from '../../telemetry/redact.ts';
import { stopRequested } from '../../node/children.ts';

/** State, secrets, keys and configurations it writes are readable by their owner only. */
export const privateFiles = true;
export const summary = 'run the reference KMS (ETSI 004 push receiver, ETSI 014 for applications)';
export const usage = `qkd kms --config FILE [--open-stream]
qkd kms --make-pki DIR NAME...
qkd kms init --shares N --threshold K --config FILE [--out DIR]
qkd kms unseal --config FILE SHARE_FILE...      (SHARE_FILE "-": read one share from standard input)
qkd kms status --config FILE
qkd kms rotate-kek --config FILE
qkd kms reshare --shares N --threshold K --config FILE [--out DIR]
qkd kms audit verify --config FILE

Runs the reference KMS described by the JSON file FILE (see src/delivery/config.ts and
docs/delivery.md): it receives key chunks from its node over ETSI GS QKD 004 push mode, stores them
durably (SQLite, keys wrapped with AES-256-GCM), confirms with its peer KMS which keys both hold,
and serves applications over ETSI GS QKD 014 with mutual TLS (client certificate CN = SAE id).

  --config FILE     the KMS configuration (JSON)
  --open-stream     source side: open a key stream on the node once node and peer KMS answer
                    (same as "openStream": true in the file)
  --make-pki DIR    write a development CA and one certificate per NAME into DIR (openssl CLI);
                    for tests and labs only

Custody (configuration field "custody", docs/delivery.md):
  init          creates the master key and the keystore (software, or a non-extractable AES key in
                the PKCS#11 token) and writes N share files (0600) to DIR (default
                <config dir>/shares-<id>), any K of which reconstruct the master key. Hand one file
                to each custodian; the KMS keeps none. Refuses to overwrite an existing keystore.
  unseal        gives shares to the running KMS (local admin socket). It starts sealed: every key
                request is answered 503 "KMS sealed: run qkd kms unseal" until K valid shares
                arrived (custodians may run this one after another). Exit 0 unsealed, 2 more shares
                needed, 1 refused. Shares never go on a command line: pass files, or "-" for stdin.
  status        sealed or not, shares given so far (no share material)
  rotate-kek    re-wraps every stored key under a new KEK while the KMS keeps serving, then
                destroys the old KEK
  reshare       a share was lost or exposed: the running, unsealed KMS replaces its master key,
                writes N new share files (0600) to DIR and revokes every old share; then run
                rotate-kek (docs/runbook.md, "Custody procedures")
  audit verify  checks the audit log's hash chain (read-only; the KMS may run); exit 1 and names
                the first broken row if it was altered

Logs: one JSON object per line on stdout ({"level","msg",...}); alarms have "alarm": true.
Stops cleanly on SIGINT/SIGTERM.`;

function configArg(args: string[], cmd: string): string {
  const ci = args.indexOf('--config');
  if (ci < 0 || !args[ci + 1]) throw new ConfigError('CLI_USAGE', `qkd kms ${cmd} needs --config FILE (see qkd kms --help)`);
  return args[ci + 1];
}

function intArg(args: string[], name: string): number {
  const i = args.indexOf(name);
  const v = i >= 0 ? Number(args[i + 1]) : NaN;
  if (!Number.isInteger(v) || v < 2 || v > 255) {
    throw new ConfigError('CLI_USAGE', `qkd kms init needs ${name} as a whole number 2..255`);
  }
  return v;
}

const print = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');

async function custodyCommand(cmd: string, args: string[]): Promise<number> {
  const file = configArg(args, cmd);
  const paths = kmsPaths(file);
  if (cmd === 'reshare') {
    const n = intArg(args, '--shares');
    const k = intArg(args, '--threshold');
    if (k > n) throw new ConfigError('CLI_USAGE', `--threshold ${k} is larger than --shares ${n}`);
    const oi = args.indexOf('--out');
    const outDir = oi >= 0 && args[oi + 1] ? resolve(args[oi + 1]) : join(dirname(resolve(file)), `shares-${paths.id}`);
    const r = await adminRequest(paths.adminSocket, 'POST', '/admin/v1/reshare',
      Buffer.from(JSON.stringify({ shares: n, threshold: k, outDir })), 60_000);
    if (r.status !== 200) {
      print({ level: 'error', msg: `reshare refused: ${r.body.message}`, code: r.body.code });
      return 1;
    }
    print({ level: 'info', msg: `new master key: any ${k} of these ${n} share files unseal the KMS; every previous share is ` +
      'revoked. Hand them out, remove them from this host, then run qkd kms rotate-kek', shares: r.body.files });
    return 0;
  }
  if (cmd === 'init') {
    if (!paths.custody) {
      throw new ConfigError('CLI_USAGE', `${file} has no 'custody' section (it uses a development wrapKeyFile): add ` +
        '"custody": {"keystore": "software" | "pkcs11", ...} first');
    }
    const n = intArg(args, '--shares');
    const k = intArg(args, '--threshold');
    if (k > n) throw new ConfigError('CLI_USAGE', `--threshold ${k} is larger than --shares ${n}`);
    const oi = args.indexOf('--out');
    const outDir = oi >= 0 && args[oi + 1] ? resolve(args[oi + 1]) : join(dirname(resolve(file)), `shares-${paths.id}`);
    const pin = paths.custody.keystore === 'pkcs11' ? readPin(file, paths.custody) : undefined;
    try {
      const files = initCustody({ keystoreFile: paths.keystoreFile, kind: paths.custody.keystore, shares: n, threshold: k,
        outDir, kmsId: paths.id, token: paths.token, pin });
      print({ level: 'info', msg: `master key created and split: any ${k} of these ${n} share files unseal the KMS; give ` +
        'each to one custodian and remove it from this host', keystore: paths.keystoreFile, kind: paths.custody.keystore,
      custody: paths.token ? `PKCS#11 token '${paths.token.tokenLabel ?? paths.token.slot}' key '${paths.token.keyLabel}'` :
        'software keystore', shares: files });
    } finally {
      pin?.fill(0);
    }
    return 0;
  }
  if (cmd === 'audit') {
    if (args[0] !== 'verify') throw new ConfigError('CLI_USAGE', 'usage: qkd kms audit verify --config FILE');
    const r = verifyAuditChain(paths.database);
    if (r.brokenSeq != null) {
      print({ level: 'error', msg: `audit log broken at row ${r.brokenSeq}: ${r.reason}`, ok: false, rows: r.rows,
        brokenSeq: r.brokenSeq, reason: r.reason, db: paths.dbPath });
      return 1;
    }
    print({ level: 'info', msg: `audit log intact: ${r.rows} rows chained`, ok: true, rows: r.rows, head: r.head,
      db: paths.dbPath });
    return 0;
  }
  if (cmd === 'status') {
    const r = await adminRequest(paths.adminSocket, 'GET', '/admin/v1/status', undefined, 10_000);
    print(r.body);
    return r.status === 200 ? 0 : 1;
  }
  if (cmd === 'rotate-kek') {
    const r = await adminRequest(paths.adminSocket, 'POST', '/admin/v1/rotate-kek');
    if (r.status !== 200) {
      print({ level: 'error', msg: `KEK rotation failed: ${r.body.message}`, code: r.body.code });
      return 1;
    }
    print({ level: 'info', msg: 'KEK rotated', ...r.body });
    return 0;
  }
  // unseal: each SHARE argument is a file (or "-" for standard input), sent as bytes and zeroed.
  const shares = args.filter((a, i) => a !== '--config' && args[i - 1] !== '--config');
  if (!shares.length) throw new ConfigError('CLI_USAGE', 'qkd kms unseal --config FILE SHARE_FILE... (or - for stdin)');
  let last: Record<string, unknown> = {};
  for (const sh of shares) {
    let buf: Buffer;
    try {
      buf = readFileSync(sh === '-' ? 0 : sh);
    } catch (cause) {
      throw new ConfigError('CLI_USAGE', `cannot read share ${sh}: ${(cause as Error).message}`, { cause });
    }
    let r;
    try {
      r = await adminRequest(paths.adminSocket, 'POST', '/admin/v1/unseal', buf, 60_000);
    } finally {
      buf.fill(0);
    }
    if (r.status !== 200) {
      print({ level: 'error', msg: `share ${sh === '-' ? '(stdin)' : sh} refused: ${r.body.message}`, code: r.body.code });
      return 1;
    }
    last = r.body;
    if (last.sealed === false) break;
  }
  if (last.sealed === false) {
    print({ level: 'info', msg: 'KMS unsealed', sealed: false });
    return 0;
  }
  print({ level: 'info', msg: `${last.have} of ${last.threshold} shares given; the KMS stays sealed until ` +
    `${Number(last.threshold) - Number(last.have)} more arrive (qkd kms unseal)`, sealed: true, have: last.have,
  threshold: last.threshold });
  return 2;
}

export async function run(args: string[]): Promise<number> {
  const sub = args[0];
  if (sub === 'init' || sub === 'unseal' || sub === 'status' || sub === 'rotate-kek' || sub === 'reshare' || sub === 'audit') {
    try {
      return await custodyCommand(sub, args.slice(1));
    } catch (err) {
      if (err instanceof SecurityError || (err instanceof QkdError && !(err instanceof ConfigError))) {
        print({ level: 'error', msg: (err as Error).message, code: (err as QkdError).code });
        return 1;
      }
      throw err;
    }
  }
  const mk = args.indexOf('--make-pki');
  if (mk >= 0) {
    const dir = args[mk + 1];
    const names = args.slice(mk + 2).filter((a) => !a.startsWith('--'));
    if (!dir || !names.length) throw new ConfigError('CLI_USAGE', 'usage: qkd kms --make-pki DIR NAME...');
    const pki = makePki(dir, names);
    process.stdout.write(JSON.stringify({ level: 'info', msg: 'pki written', dir, ca: pki.caPath,
      identities: Object.keys(pki.ids) }) + '\n');
    return 0;
  }
  const ci = args.indexOf('--config');
  if (ci < 0 || !args[ci + 1]) {
    throw new ConfigError('CLI_USAGE', 'qkd kms needs --config FILE (see qkd kms --help)');
  }
  const { opts, openStream } = loadKmsConfig(args[ci + 1]);
  // Every KMS log line goes through the same redaction as the node's logs (no key bytes, ever).
  const out = (o: object) => process.stdout.write(JSON.stringify(redact({ t: new Date().toISOString(), ...o })) + '\n');
  const kms = await startKms(opts);
  opts.wrapKey?.fill(0);
  kms.on('log', (l) => out(l));
  kms.on('alarm', (a) => out({ level: 'warn', alarm: true, ...a }));
  out({ level: 'info', msg: 'KMS listening', kms: kms.id, url: kms.url, role: opts.role, sealed: kms.sealed });
  const ss = kms.sealStatus();
  if (ss.sealed) {
    out({ level: 'warn', msg: `KMS sealed: run qkd kms unseal (${ss.threshold} of ${ss.shares} custodians' shares needed); ` +
      'until then every key request is answered 503', kms: kms.id, threshold: ss.threshold, shares: ss.shares, keystore: ss.kind });
  } else {
    out({ level: opts.custody ? 'info' : 'warn', msg: opts.custody ? 'KMS unsealed' : 'KMS unsealed at start: development ' +
      'keystore (wrapKeyFile); production KMSs use custody (docs/delivery.md)', kms: kms.id, custody: ss.custody });
  }
  const metricsTimer = setInterval(() => out({ level: 'info', msg: 'metrics', metrics: kms.metrics() }), 30_000);
  metricsTimer.unref();
  let stopped = false;
  const known = kms.streamIds();
  if ((openStream || args.includes('--open-stream')) && known.length) {
    // Restarted (after a crash): the stream this KMS opened is on disk and its node still pushes
    // into it; opening a new one would strand the keys the node has spooled for the old one.
    out({ level: 'info', msg: 'key stream already open: resuming it', key_stream_id: known[known.length - 1] });
  } else if (openStream || args.includes('--open-stream')) {
    void (async () => {
      for (let attempt = 1; !stopped; attempt++) {
        try {
          const id = await kms.openStream();
          out({ level: 'info', msg: 'key stream opened', key_stream_id: id });
          return;
        } catch (err) {
          out({ level: 'warn', msg: 'opening the key stream failed; retrying', attempt,
            code: (err as { code?: string }).code, error: (err as Error).message });
          // A sealed KMS cannot open its stream; retry at once when it is unsealed.
          await new Promise<void>((r) => {
            const done = () => { clearTimeout(tm); kms.off('unsealed', done); r(); };
            const tm = setTimeout(done, Math.min(10_000, 500 * attempt));
            kms.once('unsealed', done);
          });
        }
      }
    })();
  }
  // SIGINT/SIGTERM, or the supervisor's stop message when `qkd run` started this KMS (it used to
  // be ignored: every run's shutdown waited out the 15 s grace and a SIGTERM).
  const why = await stopRequested();
  out({ level: 'info', msg: 'KMS stopping', kms: kms.id, requestedBy: why });
  stopped = true;
  clearInterval(metricsTimer);
  await kms.close();
  out({ level: 'info', msg: 'KMS stopped', kms: kms.id });
  return 0;
}
