/**
 * `qkd run`: the main job. With --emulated, an emulated Alice–Bob link producing keys into the
 * two reference KMSs (see src/node/supervisor.ts for the process layout).
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { ConfigError } from '../../errors.ts';
import { numberOption, parseOptions } from '../args.ts';
import { EmulatedRun, assertRunnable, type RunOptions } from '../../node/supervisor.ts';
import { startRunTelemetry } from '../../node/run-telemetry.ts';
import { readNodeConfig, type NodeRunConfig } from '../../node/config.ts';
import { realEntries } from '../../node/devices.ts';
import { loadProfile } from '../../devices/profile.ts';
import { runNodeProcess } from '../../node/process.ts';
import { setLocalSink, type ChildMessage } from '../../node/children.ts';
import type { StrictFiniteKeyAnalysis } from '../../core/estimate.ts';

interface BlockLineReport {
  blockId: number; verified: boolean; abortReason?: string; qberZ?: number; detections?: number;
  statement?: { ell: number; deliverableBits: number };
}

/** One progress line per block; a verified block that yields nothing says why. */
function blockLine(r: BlockLineReport): string {
  if (!r.verified) return `block ${r.blockId}: aborted (${r.abortReason})`;
  const st = r.statement;
  const none = !st || st.ell <= 0
    ? `: the finite-key length is not positive for a block of ${r.detections ?? '?'} detections (raise --block-detections)`
    : st.deliverableBits <= 0 ? `: all ${st.ell} bits refill the authentication key pool` : '';
  return `block ${r.blockId}: verified, QBER ${(100 * (r.qberZ ?? 0)).toFixed(2)} %, ${st?.deliverableBits ?? 0} secret bits${none}`;
}

/** One line on what this node's optics are: its real devices, or the emulated lab. */
function describeOptics(cfg: NodeRunConfig): string {
  const real = realEntries(cfg.devices).map((d) => `${d.id} (${d.profile}${d.port ? ` on ${d.port}` : d.replay ? ` of ${basename(d.replay)}` : ', USB'})`);
  const lab = `emulated optics (${cfg.lab.preset}, ${cfg.lab.distanceKm} km)`;
  if (cfg.role === 'alice') return real.length ? `devices: ${real.join(', ')}` : `${lab}: Alice's source is part of the emulated lab on Bob's host`;
  const tagger = cfg.devices?.some((d) => d.emulated !== true && loadProfile(d.profile).kind === 'time-tagger');
  const parts = [tagger ? 'no emulated lab' : lab, ...(real.length ? [`devices: ${real.join(', ')}`] : []), ...(cfg.lab.sourceTty ? [`Alice's emulated source served on ${cfg.lab.sourceTty}`] : [])];
  return parts.join('; ');
}

/**
 * `qkd run --config NODE.json`: this host's node only (Alice's or Bob's), in the foreground. The
 * peer node runs the same command with its own file on its host; each pushes to its own KMS.
 */
interface OneNodeOptions {
  json: boolean;
  dashboardPort: number;
  alarmsPath?: string;
  calibrationDir?: string;
}

async function runOneNode(file: string, o: OneNodeOptions): Promise<number> {
  const cfg = readNodeConfig(file);
  const say = (line: string) => process.stderr.write(`[qkd run ${cfg.role}] ${line}\n`);
  let final: ChildMessage | undefined;
  let last: ChildMessage | undefined;
  // This host's operator view: the supervisor's dashboard, metrics and alarms over this node's
  // status messages only (Bob's host shows the link: sync, detectors, QBER, key rate).
  const telemetry = await startRunTelemetry({ status: (name) => (name === `node-${cfg.role}` ? last : undefined), reason: 'stopped' }, {
    node: { id: cfg.nodeId, role: cfg.role, mode: realEntries(cfg.devices).length ? 'hardware' : 'emulated' },
    preset: cfg.lab.preset, distanceKm: cfg.lab.distanceKm, qberAbort: cfg.block.qberAbort,
    dashboardPort: o.dashboardPort, alarmsPath: o.alarmsPath, calibrationDir: resolve(o.calibrationDir ?? cfg.calibration ?? 'calibration'), say,
  });
  say(`dashboard ${telemetry.dashboardUrl}   metrics ${telemetry.metricsUrl}`);
  setLocalSink((m) => {
    if (m.type === 'status') last = m;
    else if (m.type === 'ready') say(`node ${cfg.nodeId} ready: ETSI 004 at ${String(m.etsi004)}, classical channel ${cfg.role === 'alice' ? 'bound at' : 'to'} ${cfg.channel.endpoint}`);
    else if (m.type === 'block') {
      telemetry.onBlock(m);
      say(blockLine(m.report as BlockLineReport));
    } else if (m.type === 'alarm') telemetry.onAlarm(`alarm (${String(m.source)})`, m);
    else if (m.type === 'summary') final = m;
  });
  say(`${describeOptics(cfg)}; the node's logs follow as JSON lines`);
  let code: number;
  try {
    code = await runNodeProcess(cfg);
  } finally {
    await telemetry.close();
  }
  const result = { role: cfg.role, nodeId: cfg.nodeId, devices: final?.devices ?? [], summary: final?.summary ?? null, delivery: final?.delivery ?? null, ...(final?.detectors ? { detectors: final.detectors } : {}) };
  if (o.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  else say(`summary ${JSON.stringify(result)}`);
  setTimeout(() => process.exit(code), 200).unref();
  return code;
}

/** State, secrets, keys and configurations it writes are readable by their owner only. */
export const privateFiles = true;
export const summary = 'run the node: an emulated Alice–Bob link into the reference KMSs (--emulated)';
export const usage = `qkd run --emulated [options]
qkd run --emulated --topology FILE [options]
                                      a trusted-node network: one emulated link per link of
                                      FILE, one site KMS per site relaying keys (docs/network.md)
qkd run --config NODE.json [--json] [--dashboard-port P] [--alarms FILE] [--calibration DIR]
                                      one node (Alice's or Bob's) on this host, its real devices
                                      or emulated ones as the file says (docs/run.md)

Starts Alice's and Bob's nodes as separate processes (ZeroMQ event stream, authenticated classical
channel), the two reference KMSs (ETSI 004 push mode in, ETSI 014 out, mutual TLS), and the live
dashboard; produces keys until stopped (Ctrl-C) or --duration ends.

  --emulated              use the emulated lab (photon source, fibre, detectors, tagger)
  --topology FILE         several sites and links (JSON, docs/network.md); SAEs at any two sites
                          get keys relayed through the sites between them
  --duration S            stop cleanly after S seconds of wall time (default: run until stopped)
  --link NAME             link preset from hw-profiles/links (default reference-decoy)
  --distance-km KM        fibre length (default: the preset's)
  --eve F                 intercept-resend eavesdropper on a fraction F of pulses (0..1)
  --seed N                seed of the emulated physics (default: random)
  --block-detections N    detections per post-processing block (default 16000000)
  --frame-bits N          preferred LDPC frame size in key bits (default 235930)
  --eps-sec E, --eps-cor E  security parameters (default 1e-10, 1e-15)
  --qber-abort Q          abort blocks whose QBER exceeds Q (default 0.11)
  --finite-key A          finite-key analysis: chernoff2020 (default), lim2014 (Lim's Hoeffding bounds, about half the key at 1e7 detections)
  --speed X               emulated time may run at most X times faster than wall time (default 1)
  --state-dir DIR         PKI, secrets, spools, KMS databases, logs (default ./run)
  --dashboard-port P      dashboard and /metrics port (default 8080; 0 = any free port)
  --calibration DIR       calibration records to check (default ./calibration; see qkd calibrate)
  --alarms FILE           alarm thresholds (JSON, see docs/operations.md; default: built-in)
  --manifest FILE         write the manifest (URLs, SAE credentials) as JSON to FILE
  --kms-alice URL --kms-bob URL   push to external KMSs instead of the reference ones
  --insecure-http         allow plain HTTP towards external KMSs (no authentication!)
  --json                  print the final summary as JSON on stdout

Progress goes to stderr; child process logs (JSON lines) go to <state-dir>/logs/.`;

/** --finite-key: one of the analyses the emulated link's three intensities support. */
function finiteKeyOption(v: string | undefined): StrictFiniteKeyAnalysis | undefined {
  if (v === undefined) return undefined;
  if (v !== 'lim2014' && v !== 'chernoff2020') {
    throw new ConfigError('BAD_OPTION', `--finite-key is chernoff2020 (the default) or lim2014 (the presets have three intensities), got ${v}`);
  }
  return v;
}

export async function run(args: string[]): Promise<number> {
  const { values: v } = parseOptions(args, {
    emulated: { type: 'boolean' },
    topology: { type: 'string' },
    config: { type: 'string' },
    duration: { type: 'string' },
    link: { type: 'string' },
    'distance-km': { type: 'string' },
    eve: { type: 'string' },
    seed: { type: 'string' },
    'block-detections': { type: 'string' },
    'frame-bits': { type: 'string' },
    'eps-sec': { type: 'string' },
    'eps-cor': { type: 'string' },
    'qber-abort': { type: 'string' },
    'finite-key': { type: 'string' },
    speed: { type: 'string' },
    'state-dir': { type: 'string' },
    'dashboard-port': { type: 'string' },
    manifest: { type: 'string' },
    alarms: { type: 'string' },
    calibration: { type: 'string' },
    'kms-alice': { type: 'string' },
    'kms-bob': { type: 'string' },
    'insecure-http': { type: 'boolean' },
    json: { type: 'boolean' },
  });
  if (!v.emulated) {
    if (!v.config) throw new ConfigError('RUN_NO_HARDWARE', 'qkd run needs --emulated (the whole link on this machine) or --config NODE.json (one node on this host). See qkd run --help.');
    return runOneNode(v.config, {
      json: !!v.json,
      dashboardPort: numberOption('dashboard-port', v['dashboard-port'], 8080),
      alarmsPath: v.alarms,
      calibrationDir: v.calibration,
    });
  }
  const eve = numberOption('eve', v.eve, 0);
  if (eve < 0 || eve > 1) throw new ConfigError('BAD_OPTION', `--eve is a fraction of pulses in [0, 1], got ${eve}`);
  const say = (line: string) => process.stderr.write(`[qkd run] ${line}\n`);
  // The physics' seed comes from the OS CSPRNG and is not printed (it stays in the 0600 node files
  // of the state directory); --seed reproduces a run on purpose.
  const seed = v.seed !== undefined ? BigInt(v.seed) : randomBytes(8).readBigUInt64LE(0);
  const opts: RunOptions = {
    stateDir: resolve(v['state-dir'] ?? 'run'),
    preset: v.link ?? 'reference-decoy',
    distanceKm: numberOption('distance-km', v['distance-km'], NaN),
    eveFraction: eve,
    seed,
    durationS: v.duration !== undefined ? numberOption('duration', v.duration, 0) : undefined,
    blockDetections: numberOption('block-detections', v['block-detections'], 16_000_000),
    frameBits: numberOption('frame-bits', v['frame-bits'], 235930),
    epsSec: numberOption('eps-sec', v['eps-sec'], 1e-10),
    epsCor: numberOption('eps-cor', v['eps-cor'], 1e-15),
    qberAbort: numberOption('qber-abort', v['qber-abort'], 0.11),
    finiteKey: finiteKeyOption(v['finite-key']),
    speed: numberOption('speed', v.speed, 1),
    dashboardPort: numberOption('dashboard-port', v['dashboard-port'], 8080),
    manifestPath: v.manifest,
    alarmsPath: v.alarms,
    calibrationDir: resolve(v.calibration ?? 'calibration'),
    externalKms: v['kms-alice'] || v['kms-bob'] ? { alice: v['kms-alice'] ?? '', bob: v['kms-bob'] ?? '' } : undefined,
    insecureHttp: !!v['insecure-http'],
    say,
  };
  assertRunnable(opts);
  if (Number.isNaN(opts.distanceKm)) {
    const { loadLinkPreset } = await import('../../lab/presets.ts');
    opts.distanceKm = loadLinkPreset(opts.preset).distanceKm;
  }
  if (v.topology) return (await import('../../network/cli.ts')).runTopology(v.topology, opts, !!v.json);
  const runner = new EmulatedRun(opts);
  const onSignal = (sig: string) => {
    say(`${sig}: finishing the block in flight and stopping cleanly (again to force)`);
    runner.requestStop(sig);
    process.once(sig as NodeJS.Signals, () => process.exit(130));
  };
  process.once('SIGINT', () => onSignal('SIGINT'));
  process.once('SIGTERM', () => onSignal('SIGTERM'));

  say(`emulated link ${opts.preset}, ${opts.distanceKm} km${eve ? `, eavesdropper on ${eve * 100} % of pulses` : ''}${v.seed !== undefined ? `, seed ${seed}` : ''}`);
  // The dashboard binds first, so a busy port fails before any process starts; a start that fails
  // later stops the children again rather than leave node or KMS processes behind.
  const telemetry = await startRunTelemetry(runner, opts);
  let manifest: Awaited<ReturnType<EmulatedRun['start']>>;
  try {
    manifest = await runner.start();
  } catch (err) {
    say('start failed: stopping the processes already started');
    runner.requestStop('start failed');
    await runner.stop().catch(() => undefined);
    await telemetry.close();
    throw err;
  }
  manifest.dashboard = telemetry.dashboardUrl;
  manifest.metrics = telemetry.metricsUrl;
  say(`manifest ${JSON.stringify(manifest)}`);
  say(`dashboard ${manifest.dashboard}   metrics ${manifest.metrics}`);
  if (opts.manifestPath) writeFileSync(opts.manifestPath, JSON.stringify(manifest, null, 2) + '\n');
  runner.onBlock = (_n, m) => {
    telemetry.onBlock(m);
    say(blockLine(m.report as BlockLineReport));
  };
  runner.onAlarm = (n, m) => telemetry.onAlarm(n, m);
  const timer = opts.durationS !== undefined ? setTimeout(() => runner.requestStop('duration'), opts.durationS * 1000) : undefined;
  const reason = await runner.stopped;
  clearTimeout(timer);
  say(`stopping (${reason})`);
  const final = await runner.stop();
  const result = telemetry.finalSummary(final.node);
  await telemetry.close();
  if (v.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  else say(`summary ${JSON.stringify(result)}`);
  return reason.endsWith('exited') ? 1 : 0;
}
