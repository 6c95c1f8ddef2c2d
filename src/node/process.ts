/**
 * Body of one node process (`qkd _node`): wires the classical link, the post-processing role,
 * the ETSI 004 delivery node and the supervisor IPC. Alice answers, Bob drives.
 *
 * Key handling: a block's output is split by the core into `replenish` (refills the MAC key pool
 * of the classical channel) and `deliverable` (offered to the delivery node, which spools it
 * sealed and pushes it). Both buffers are wiped here right after use. Nothing key-derived goes to
 * the logger or to the supervisor: block messages carry the public report only.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createLogger } from '../telemetry/logger.ts';
import { RandomnessMonitor } from '../telemetry/randomness.ts';
import { startDeliveryNode, type DeliveryNode } from '../delivery/node.ts';
import { wipe } from '../core/native-call.ts';
import { prepareCodes } from '../core/ldpc.ts';
import { toSupervisor, stopRequested } from './children.ts';
import { openClassicalLink, type ClassicalLink } from './link.ts';
import { channelKeys } from './channel-credentials.ts';
import { readAtRestKey } from './custody.ts';
import { BobNode, blockConfigOf, linkPresetOf } from './bob.ts';
import { createAlicePostProcessor, sourceRecord } from './alice.ts';
import { SourceHealth } from './source-health.ts';
import { SummaryBuilder } from './summary.ts';
import { patternServer, revealHoldbackPs, type PatternServerStats } from './pattern-link.ts';
import { openNodeDevices, type NodeDevices } from './devices.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { ProtocolSettings } from '../protocol/settings.ts';
import { ConfigError, QkdError } from '../errors.ts';
import type { NodeRunConfig } from './config.ts';
import type { BlockResult } from './postprocess.ts';
import { BlockReleaser, SealedBlocks } from './block-seal.ts';
import { channelStateDir } from './channel-credentials.ts';
import { programSource } from './devices.ts';

export async function runNodeProcess(cfg: NodeRunConfig): Promise<number> {
  const log = createLogger({ component: `node-${cfg.role}` });
  // Channel keys first: a missing or malformed CURVE key is a clear start-up error before any device is touched.
  channelKeys(cfg);
  const preset = linkPresetOf(cfg);
  // Real devices first: a device that is missing or has the wrong firmware stops the start here.
  // They are closed (Alice's source switched off) however the node ends, a failed start included.
  const devices = await openNodeDevices(cfg.role, cfg.devices, preset, 'node configuration');
  try {
    for (const d of devices.info) log.info('device ready', { ...d });
    if (devices.source) log.info("Alice's source programmed (internal RNG, keyed inside the device; its record is read back) and switched on", { device: devices.info.find((d) => d.kind === 'photon-source')?.id });
    return await runNode(cfg, log, preset, devices);
  } finally {
    await devices.close();
  }
}

async function runNode(cfg: NodeRunConfig, log: Logger, preset: ProtocolSettings, devices: NodeDevices): Promise<number> {
  const blockCfg = blockConfigOf(cfg, preset);
  const t0 = Date.now();

  // The peer's stream state, learnt over the classical link (ETSI 004 status 3 until both opened).
  const peerStreams = new Set<string>();
  const spoolKey = readAtRestKey(cfg);
  const commitKey = cfg.delivery.commitKeyFile ? readFileSync(cfg.delivery.commitKeyFile) : undefined;
  const tls = cfg.delivery.tls && {
    ca: readFileSync(cfg.delivery.tls.ca, 'utf8'),
    cert: readFileSync(cfg.delivery.tls.cert, 'utf8'),
    key: readFileSync(cfg.delivery.tls.key, 'utf8'),
  };
  let link: ClassicalLink | undefined;
  let patterns: { answer(p: Record<string, unknown>): Promise<Record<string, unknown>>; stats: PatternServerStats } | undefined;
  // Alice: SP 800-90B health tests on her source's read-back record (a failure stops key production).
  const sourceHealth = cfg.role === 'alice' ? new SourceHealth(preset.aliceBasisProbZ) : undefined;
  const delivery: DeliveryNode = await startDeliveryNode({
    role: cfg.role === 'alice' ? 'source' : 'destination',
    nodeId: cfg.nodeId,
    peer: {
      nodeId: cfg.peerNodeId,
      linkUp: () => link?.connected ?? false,
      streamOpened: async (id) => {
        if (peerStreams.has(id)) return true;
        try {
          const r = await link?.request('stream-status', { keyStreamId: id });
          if (r?.opened === true) peerStreams.add(id);
        } catch {
          return false;
        }
        return peerStreams.has(id);
      },
    },
    listen: { host: '127.0.0.1', port: cfg.delivery.listenPort },
    tls,
    insecure: cfg.delivery.insecure,
    kms: cfg.delivery.kms,
    spoolDir: cfg.delivery.spoolDir,
    spoolMaxChunks: cfg.delivery.spoolMaxChunks,
    spoolKey,
    commitKey,
  });
  let releaseHalted: () => void = () => undefined;
  const releaseFailed = new Promise<string>((resolve) => (releaseHalted = () => resolve('release failed')));
  // Block outputs are sealed here before their commit and released once after it (block-seal.ts).
  const sealed = new SealedBlocks(join(dirname(cfg.delivery.spoolDir), `sealed-${cfg.role}`), spoolKey);
  spoolKey.fill(0);
  commitKey?.fill(0);
  delivery.on('alarm', (a) => {
    log.warn('delivery alarm', { alarm: a });
    toSupervisor({ type: 'alarm', source: 'delivery', alarm: a });
  });

  // Build the LDPC codes of the configured frame size off the JS thread before the first block.
  await prepareCodes(cfg.block.frameBits);
  link = await openClassicalLink(cfg, log);
  link.handle('stream-status', async (p) => ({ opened: delivery.hasStream(String(p.keyStreamId)) }));

  // Health check on sampled output blocks: P-values only, the bytes are not kept.
  const randomness = new RandomnessMonitor({ sampleEvery: 1 });
  const releaser = new BlockReleaser(sealed, {
    replenishedBits: () => Number(link!.stats().replenishedBits),
    replenish: (bytes, bits) => link!.replenish(bytes, bits),
    lastOfferTag: () => delivery.lastOfferTag(),
    offer: (bytes, provenance, tag) => delivery.offer(bytes, provenance, tag),
    sample: (bytes, bits) => randomness.offer(bytes, bits),
    wouldTake: (bytes) => delivery.wouldTake(bytes),
  }, (blockId, err) => {
    if ((err as { code?: string }).code === 'RELEASE_STOPPED') log.warn(err.message, { blockId });
    else log.error('release of a committed block failed: its output stays sealed and is replayed at the next start', { blockId, err });
  }, {
    // A full spool (the KMS not taking keys): the block waits, sealed, and Bob's pipeline with it.
    onHeld: (blockId, err) => {
      log.warn('delivery spool full: committed block held sealed until the KMS takes keys again; key production paused', { blockId, err });
      toSupervisor({ type: 'alarm', source: 'delivery', alarm: { kind: 'key-delivery-paused', severity: 'major', message: `block ${blockId} waits for room in the delivery spool: ${err.message}` } });
    },
    onResumed: (blockId, waitedMs) => log.info('delivery spool has room again: held block released', { blockId, waitedMs }),
    // Any other release failure: fail closed. The node stops (the supervisor restarts it) and
    // replays the sealed blocks in order; meanwhile Alice refuses new blocks.
    onFailed: (blockId, err) => {
      toSupervisor({ type: 'alarm', source: 'delivery', alarm: { kind: 'key-delivery-failed', severity: 'critical',
        message: `the release of committed block ${blockId} failed: ${err.message}. The node stops; its sealed blocks are delivered in order at the next start` } });
      releaseHalted();
    },
  });
  /** Seals a verified block's output (before its commit) and wipes the in-memory copy. */
  const seal = (r: BlockResult, acquiredFromMs: number): boolean => {
    const out = r.output;
    if (!out) return false;
    try {
      sealed.seal({
        blockId: r.report.blockId, replenish: out.replenish, replenishBits: out.replenishBits, deliverable: out.deliverable, deliverableBits: out.deliverableBits,
        provenance: {
          block_id: r.report.blockId,
          qber: r.report.qberZ ?? r.report.qberX,
          epsilon: out.statement.epsSec + out.statement.epsCor,
          eps_sec: out.statement.epsSec,
          eps_cor: out.statement.epsCor,
          secret_bits: out.deliverableBits,
          acquired_from_ms: acquiredFromMs,
          acquired_to_ms: Date.now(),
          link: `${preset.name}@${cfg.lab.distanceKm}km`,
        },
      });
    } finally {
      wipe(out.replenish, out.deliverable);
    }
    return true;
  };
  // Replay after a crash: what the ledger committed is released, what it aborted is erased; a
  // block whose commit was in flight waits for the channel to settle it (blockCommitted/Aborted).
  const ledgerPath = join(channelStateDir(cfg.delivery.spoolDir, cfg.role), 'ledger.json');
  const ledger = existsSync(ledgerPath) ? JSON.parse(readFileSync(ledgerPath, 'utf8')) as { committed?: number[]; aborted?: number[]; prepared?: number | null } : {};
  const unsettled = new Set<number>();
  for (const id of sealed.list()) {
    if (ledger.committed?.includes(id)) {
      log.warn('replaying a committed block sealed before a restart', { blockId: id });
      void releaser.release(id).catch(() => undefined);
    } else if (ledger.aborted?.includes(id) || (cfg.role === 'bob' && ledger.prepared !== id)) {
      // Bob prepares (records) a commit before asking for it: one he never prepared was never committed.
      log.warn('erasing the sealed output of a block that was not committed', { blockId: id });
      releaser.discard(id);
    } else unsettled.add(id);
  }
  link.onBlockOutcome((id, committed) => {
    if (committed) {
      // Commits come in block order: a sealed block older than a committed one never will be.
      for (const old of [...unsettled]) if (old < id) {
        unsettled.delete(old);
        releaser.discard(old);
      }
    }
    if (!unsettled.delete(id)) return;
    if (committed) void releaser.release(id).catch(() => undefined);
    else releaser.discard(id);
  });

  const summary = new SummaryBuilder(preset, cfg.lab.distanceKm, cfg.lab.eveFraction);
  let bob: BobNode | undefined;
  // Alice has no pipeline of her own: she answers until stopped.
  let runDone: Promise<void> = new Promise(() => undefined);
  let lastBlockAt = Date.now();
  let sourceWatch: NodeJS.Timeout | undefined;
  let sourceCheck: Promise<void> | undefined;
  const outcomeWaiters = new Map<number, (committed: boolean) => void>();
  if (cfg.role === 'alice') {
    // Her record is her source's: the RNG's choices read back over its wire protocol, never a seed.
    const source = devices.source?.device;
    if (!source) {
      throw new ConfigError('RUN_NO_SOURCE', "Alice's node has no photon source to read her record from: give her node file a photon-source entry with its \"port\" (a real source, or the emulated PS-1 on one end of a pty pair whose other end is Bob's \"lab.sourceTty\"; `qkd run --emulated` sets both up).");
    }
    const health = sourceHealth!;
    const alice = createAlicePostProcessor({
      record: sourceRecord(source, health, (reason) => {
        log.error("Alice's source RNG failed its health test: key production stopped", { reason });
        toSupervisor({ type: 'alarm', source: 'source-rng', alarm: { kind: 'source-rng-failed', severity: 'critical', message: reason } });
      }),
      config: blockCfg,
      authBitsConsumed: (id) => link!.authBitsConsumed(id),
      // Seal a block's output before answering 'amplify' (so before Bob can commit it); it is
      // released when Bob commits the block over the channel (both hold the key).
      onOutput: (id, r) => {
        if (seal(r, lastBlockAt)) unsettled.add(id);
        lastBlockAt = Date.now();
      },
    });
    // Bob's restart gives his emulated lab a fresh source (off): switch it on again. A real
    // source that lost power is noticed the same way.
    sourceWatch = setInterval(() => {
      if (sourceCheck) return;
      sourceCheck = (async () => {
        if (await source.enabled()) return;
        log.warn("Alice's source is off (power cycle or the lab restarted): programming it and switching it on again");
        await programSource(source, preset);
      })().catch((err: unknown) => log.warn("checking Alice's source failed", { err: err as Error })).finally(() => (sourceCheck = undefined));
    }, 2000);
    for (const t of ['sift', 'estimate', 'reveal', 'verify', 'amplify', 'abort']) {
      link.handle(t, (p) => {
        // Her spool full (her KMS not taking keys): a committed block waits, sealed, and she
        // takes no new one, so both nodes pause alike instead of her sealed blocks piling up.
        if (t === 'sift' && releaser.failed !== undefined) {
          throw new QkdError('DELIVERY_HALTED', `Alice's node cannot deliver block ${releaser.failed.blockId} (${releaser.failed.err.message}): ` +
            'new blocks are refused; the node restarts and delivers its sealed blocks in order.');
        }
        if (t === 'sift' && releaser.held !== undefined) {
          throw new QkdError('DELIVERY_PAUSED', `Alice's delivery spool is full (her KMS is not taking keys; block ${releaser.held} waits for room): ` +
            'new blocks are refused and key production is paused until it has room. Check her KMS.');
        }
        return alice.handle(t, p);
      });
    }
    // Bob's clock sync asks for her intensity pattern: her source's read-back of its classes,
    // revealed only for pulses older than the longest delay the link accepts (pattern-link.ts),
    // measured on the source's own pulse counter.
    patterns = patternServer({
      record: {
        readClasses: (pulses) => {
          health.assertHealthy();
          return source.readClasses(pulses);
        },
        emittedPulses: () => source.emittedPulses(),
      },
      repRateHz: preset.repRateHz,
      holdbackPs: revealHoldbackPs(cfg.lab.distanceKm),
    });
    link.handle('pattern', async (p) => patterns!.answer(p));
  } else {
    bob = new BobNode(cfg, (type, payload) => link!.request(type, payload), {
      onBlock: async (r, pulsesInBlock) => {
        const { stageMs, ...report } = r.report;
        log.info('block', { blockId: report.blockId, verified: report.verified, reason: report.abortReason, qberZ: report.qberZ, qberX: report.qberX, secretBits: report.statement?.deliverableBits ?? 0, stageMs });
        if (report.verified) {
          if (seal(r, lastBlockAt)) unsettled.add(report.blockId);
          try {
            await link!.commitBlock(report.blockId);
          } catch (err) {
            const code = (err as { code?: string }).code;
            if (code === 'BLOCK_ABORTED') {
              log.warn('block not committed by the peer: output discarded', { blockId: report.blockId, err: err as Error });
              if (unsettled.delete(report.blockId)) releaser.discard(report.blockId);
              report.verified = false;
              report.abortReason = `COMMIT_FAILED: ${(err as Error).message}`;
              summary.addBlock(report, pulsesInBlock);
              toSupervisor({ type: 'block', report });
              return;
            }
            // Outcome unknown (timeout, link down): the peer's ledger decides. Wait until the
            // channel settles the block (no later block may be delivered before it: both nodes
            // must offer the same bytes in the same order), then deliver or discard.
            log.warn('block commit undecided: output held until the channel settles it', { blockId: report.blockId, err: err as Error });
            const committed = await new Promise<boolean>((resolve) => outcomeWaiters.set(report.blockId, resolve));
            if (!committed) {
              report.verified = false;
              report.abortReason = 'COMMIT_FAILED: the peer did not commit the block';
              summary.addBlock(report, pulsesInBlock);
              toSupervisor({ type: 'block', report });
              return;
            }
          }
        }
        summary.addBlock(report, pulsesInBlock);
        toSupervisor({ type: 'block', report });
        // Committed: release it (the channel's event may have started that already; once only).
        unsettled.delete(report.blockId);
        try {
          await releaser.release(report.blockId);
        } catch (err) {
          // Stopping while the block waited for spool room: it stays sealed for the next start.
          if ((err as { code?: string }).code !== 'RELEASE_STOPPED') throw err;
        }
        lastBlockAt = Date.now();
      },
      onProgress: () => undefined,
      log: (level, msg, fields) => log[level](msg, fields),
    }, devices);
    link.onBlockOutcome((id, committed) => {
      // The in-flight commit settled by the channel: onBlock above releases or discards it.
      const w = outcomeWaiters.get(id);
      outcomeWaiters.delete(id);
      w?.(committed);
    });
    // The emulated physics (Alice's source included) starts once both nodes are up: Alice's
    // emission clock for the sync pattern starts at the same hello (pattern-link.ts).
    const b = bob;
    await b.prepare();
    runDone = Promise.race([link.ready().then(() => true), stopRequested().then(() => false)]).then((up) => (up ? b.run() : undefined)).catch((err: unknown) => {
      log.error('bob pipeline failed', err as Error);
      throw err;
    });
  }

  const status = () => {
    const c = bob?.counters;
    const m = {
      type: 'status',
      role: cfg.role,
      nodeId: cfg.nodeId,
      uptimeS: (Date.now() - t0) / 1000,
      delivery: delivery.metrics(),
      channel: link?.stats(),
      sync: bob?.syncState,
      calibration: bob?.calibration && { applied: bob.calibration.applied, problems: bob.calibration.problems },
      counters: c,
      summary: c ? summaryNow() : undefined,
      randomness: randomness.snapshot(),
      sourceHealth: sourceHealth?.state,
      devices: [...(bob?.device ? [bob.device] : []), ...devices.info.map(({ id, model, firmware, allowedFirmware }) => ({ id, model, firmware, allowedFirmware }))],
      detectors: bob ? [...bob.channelTags].map(([channel, tags]) => ({ channel, tags })) : undefined,
      timing: bob ? [...bob.histograms].map(([channel, h]) => ({ channel, ...BobNode.HIST, counts: Array.from(h),
        windowStartPs: -bob.windowPs, windowEndPs: bob.windowPs })) : undefined,
    };
    return m;
  };
  const summaryNow = () => {
    const c = bob!.counters;
    const built = summary.build(c.emulatedSeconds, (Date.now() - t0) / 1000);
    built.pulses = c.pulses;
    built.detections = c.detections;
    built.sync = bob!.syncState as unknown as Record<string, unknown>;
    built.secretKeyRate.perPulse = c.pulses ? built.secretBits / c.pulses : null;
    return built;
  };
  const timer = setInterval(() => toSupervisor(status()), cfg.statusEveryMs);
  // Acknowledged keys reach the supervisor within 100 ms, not at the next status, and at once
  // after a batched push's burst (up to 64 keys a request, 4 requests in flight): a node killed
  // with SIGKILL takes no more than that much of its count with it (the run's keysDelivered).
  let ackReport: NodeJS.Timeout | undefined;
  let ackBurst: NodeJS.Immediate | undefined;
  let unreported = 0;
  const reportAcks = () => {
    clearTimeout(ackReport);
    clearImmediate(ackBurst);
    ackReport = ackBurst = undefined;
    unreported = 0;
    toSupervisor({ type: 'delivery', delivery: delivery.metrics() });
  };
  delivery.on('acked', () => {
    if (++unreported >= 64) ackBurst ??= setImmediate(reportAcks);
    else ackReport ??= setTimeout(reportAcks, 100);
  });
  toSupervisor({ type: 'ready', role: cfg.role, etsi004: delivery.url });
  log.info('node ready', { role: cfg.role, etsi004: delivery.url, channel: cfg.channel.endpoint });

  const why = await Promise.race([stopRequested(), releaseFailed, runDone.then(() => 'pipeline ended', () => 'pipeline failed')]);
  log.info('stopping', { reason: why });
  releaser.stop();
  if (bob) {
    bob.stop();
    await runDone.catch(() => undefined);
  }
  clearInterval(sourceWatch);
  await sourceCheck;
  await releaser.settled();
  // Give the delivery node a moment to push what is spooled; what is left stays sealed on disk.
  const deadline = Date.now() + 10_000;
  while (delivery.metrics().spoolDepth > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  clearInterval(timer);
  clearTimeout(ackReport);
  const final = status();
  toSupervisor({ ...final, type: 'summary' });
  await link.close();
  await delivery.close();
  log.info('stopped', { reason: why, spoolDepth: final.delivery.spoolDepth });
  return why === 'pipeline failed' || why === 'release failed' ? 1 : 0;
}
