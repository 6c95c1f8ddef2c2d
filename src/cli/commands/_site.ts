/**
 * `qkd _site --config FILE`: one site KMS of a trusted-node network (src/network/relay.ts), as a
 * child of `qkd run --emulated --topology`. Logs JSON lines on stdout (never key bytes); reports
 * `ready` with its URL to the orchestrator; stops on its request or SIGINT/SIGTERM.
 */
import { ConfigError } from '../../errors.ts';
import { RelaySite } from '../../network/relay.ts';
import { loadSiteConfig } from '../../network/site-config.ts';
import { stopRequested, toSupervisor } from '../../node/children.ts';
import { redact } from '../../telemetry/redact.ts';

export const privateFiles = true;
export const summary = 'internal: one site KMS of a trusted-node network (started by qkd run --topology)';
export const usage = 'qkd _site --config FILE   (internal; qkd run --emulated --topology starts it)';

export async function run(args: string[]): Promise<number> {
  const ci = args.indexOf('--config');
  if (ci < 0 || !args[ci + 1]) throw new ConfigError('CLI_USAGE', 'qkd _site needs --config FILE');
  const opts = loadSiteConfig(args[ci + 1]);
  const out = (o: object) => process.stdout.write(JSON.stringify(redact({ t: new Date().toISOString(), ...o })) + '\n');
  const site = new RelaySite(opts);
  opts.wrapKey.fill(0);
  site.on('log', (l) => out(l));
  site.on('alarm', (a) => out({ level: 'warn', alarm: true, ...a }));
  await site.start();
  out({ level: 'info', msg: 'site KMS listening', site: site.site, url: site.url });
  toSupervisor({ type: 'ready', url: site.url });
  const timer = setInterval(() => out({ level: 'info', msg: 'metrics', metrics: site.metrics() }), 30_000);
  timer.unref();
  const why = await stopRequested();
  clearInterval(timer);
  await site.close();
  out({ level: 'info', msg: 'site KMS stopped', site: site.site, reason: why });
  return 0;
}
