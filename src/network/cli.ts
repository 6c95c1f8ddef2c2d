/**
 * The `--topology FILE` branch of `qkd run --emulated` (src/cli/commands/run.ts): starts the
 * network (orchestrator.ts), prints the manifest and the curl lines that fetch a relayed key,
 * runs until Ctrl-C or --duration, then stops every process cleanly.
 */
import { writeFileSync } from 'node:fs';
import { ConfigError } from '../errors.ts';
import type { RunOptions } from '../node/supervisor.ts';
import { curlLines, NetworkRun } from './orchestrator.ts';
import { candidatePaths } from './routing.ts';
import { readTopology } from './topology.ts';

export async function runTopology(file: string, opts: RunOptions, json: boolean): Promise<number> {
  if (opts.externalKms) throw new ConfigError('BAD_OPTION', '--topology runs its own KMSs: drop --kms-alice/--kms-bob');
  const topology = readTopology(file);
  const say = opts.say;
  const net = new NetworkRun(topology, opts);
  const onSignal = (sig: string) => {
    say(`${sig}: stopping the network cleanly (again to force)`);
    net.requestStop(sig);
    process.once(sig as NodeJS.Signals, () => process.exit(130));
  };
  process.once('SIGINT', () => onSignal('SIGINT'));
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  net.onBlock = (link, m) => {
    const r = m.report as { blockId: number; verified: boolean; abortReason?: string; qberZ?: number; statement?: { deliverableBits: number } };
    say(`[link ${link}] block ${r.blockId}: ` + (r.verified ? `verified, QBER ${(100 * (r.qberZ ?? 0)).toFixed(2)} %, ` +
      `${r.statement?.deliverableBits ?? 0} secret bits` : `aborted (${r.abortReason})`));
  };
  let manifest;
  try {
    manifest = await net.start();
  } catch (err) {
    say('start failed: stopping the processes already started');
    await net.stop().catch(() => undefined);
    throw err;
  }
  say(`manifest ${JSON.stringify(manifest)}`);
  if (opts.manifestPath) writeFileSync(opts.manifestPath, JSON.stringify(manifest, null, 2) + '\n');
  // The two sites farthest apart (most hops): the pair whose keys are relayed through the most trusted nodes.
  let pair: [string, string] = [topology.sites[0], topology.sites[1]];
  let hops = 0;
  for (const a of topology.sites) {
    for (const c of topology.sites) {
      const p = candidatePaths(topology, a, c, undefined, 1)[0];
      if (p && p.length - 1 > hops) [pair, hops] = [[a, c], p.length - 1];
    }
  }
  say(`network up. Keys appear once every link has produced some (watch the block lines). A key shared by ` +
    `${pair[0]} and ${pair[1]} (${hops} hop${hops > 1 ? 's' : ''}), as the SAEs would fetch it:`);
  for (const line of curlLines(manifest, pair[0], pair[1])) say(`  ${line}`);
  const timer = opts.durationS !== undefined ? setTimeout(() => net.requestStop('duration'), opts.durationS * 1000) : undefined;
  const reason = await net.stopped;
  clearTimeout(timer);
  say(`stopping (${reason})`);
  const result = { network: { sites: topology.sites, links: (await net.stop()).links }, stopReason: reason };
  if (json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  else say(`summary ${JSON.stringify(result)}`);
  return reason.endsWith('exited') ? 1 : 0;
}
