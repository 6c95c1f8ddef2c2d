/**
 * `qkd kms --config kms.json`: runs the reference KMS as its own process (ETSI 004 push receiver,
 * KMS<->KMS confirmation, ETSI 014 for SAEs). Logs and alarms go to stdout as JSON lines; they never
 * hold key bytes. `qkd kms --make-pki DIR name...` writes a development CA and certificates.
 */
import { ConfigError } from '../../errors.ts';
import { loadKmsConfig } from '../../delivery/config.ts';
import { startKms } from '../../delivery/kms.ts';
import { makePki } from '../../delivery/pki.ts';
import { redact } from '../../telemetry/redact.ts';

/** State, secrets, keys and configurations it writes are readable by their owner only. */
export const privateFiles = true;
export const summary = 'run the reference KMS (ETSI 004 push receiver, ETSI 014 for applications)';
export const usage = `qkd kms --config FILE [--open-stream]
qkd kms --make-pki DIR NAME...

Runs the reference KMS described by the JSON file FILE (see src/delivery/config.ts and
docs/delivery.md): it receives key chunks from its node over ETSI GS QKD 004 push mode, stores them
durably (SQLite, keys wrapped with AES-256-GCM), confirms with its peer KMS which keys both hold,
and serves applications over ETSI GS QKD 014 with mutual TLS (client certificate CN = SAE id).

  --config FILE     the KMS configuration (JSON)
  --open-stream     source side: open a key stream on the node once node and peer KMS answer
                    (same as "openStream": true in the file)
  --make-pki DIR    write a development CA and one certificate per NAME into DIR (openssl CLI);
                    for tests and labs only

Logs: one JSON object per line on stdout ({"level","msg",...}); alarms have "alarm": true.
Stops cleanly on SIGINT/SIGTERM.`;

export async function run(args: string[]): Promise<number> {
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
  opts.wrapKey.fill(0);
  kms.on('log', (l) => out(l));
  kms.on('alarm', (a) => out({ level: 'warn', alarm: true, ...a }));
  out({ level: 'info', msg: 'KMS listening', kms: kms.id, url: kms.url, role: opts.role });
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
          await new Promise((r) => setTimeout(r, Math.min(10_000, 500 * attempt)));
        }
      }
    })();
  }
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  stopped = true;
  clearInterval(metricsTimer);
  await kms.close();
  out({ level: 'info', msg: 'KMS stopped', kms: kms.id });
  return 0;
}
