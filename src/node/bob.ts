/**
 * Bob's node in an emulated run. Inside one process, as on a real Bob host:
 *
 *   emulated lab (src/lab) ─▶ emulated USB tagger ─▶ TimeTaggerDriver (real driver code)
 *     ─▶ StreamPublisher ══ZeroMQ══▶ StreamConsumer ─▶ ClockSync (pulse indices)
 *     ─▶ block accumulator ─▶ BobPostProcessor ⇄ authenticated classical channel ⇄ Alice
 *     ─▶ DeliveryNode (ETSI 004 push to Bob's KMS)
 *
 * The emulated lab stands for the optics: it knows Alice's seed because physics "knows" which
 * photon she sent. Bob's node code never reads Alice's bits: the sync uses Alice's intensity
 * pattern only (public in the decoy protocol; with real hardware it comes from Alice's node) and
 * sifting goes through the classical dialogue like on two hosts.
 *
 * Pacing: emulated time never runs ahead of wall time by more than `speed`; when the machine is
 * slower than the link, emulated time falls behind and rates are reported per emulated second.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { loadProtocolSettings, type ProtocolSettings } from '../protocol/settings.ts';
import { ConfigError } from '../errors.ts';
import { EmulatedLab } from '../devices/emulated/lab.ts';
import { EmulatedUsbTagger } from '../devices/emulated/usb-tagger.ts';
import { attachSourceWorkerToTty } from '../devices/emulated/source-worker.ts';
import type { TtyAttachment } from '../devices/emulated/pty.ts';
import { TimeTaggerDriver } from '../devices/drivers/tagger.ts';
import type { TimeTagger } from '../devices/types.ts';
import { loadProfile } from '../devices/profile.ts';
import { StreamPublisher } from '../stream/publisher.ts';
import { StreamConsumer, view64 } from '../stream/consumer.ts';
import { describeTaint } from '../stream/frame.ts';
import { ClockSync, type SyncState } from '../timing/sync.ts';
import { residualHistogram, sortByPulse } from '../timing/native-sync.ts';
import { remotePattern, revealHoldbackPs, FIBRE_PS_PER_KM, HOLDBACK_MARGIN_PS, SYNC_MAX_OFFSET_PS } from './pattern-link.ts';
import { BobPostProcessor, DEFAULT_BLOCK_CONFIG, type BlockConfig, type BlockResult, type PeerRequest } from './postprocess.ts';
import { siftMapping, toSiftChannels } from './detections.ts';
import type { NodeRunConfig } from './config.ts';
import type { NodeDevices } from './devices.ts';
import { syncCalibration, type SyncCalibration } from './calibration.ts';

export interface BobCallbacks {
  /** A block finished (verified or aborted). `output` (if any) must be consumed synchronously or copied. */
  onBlock(result: BlockResult, pulsesInBlock: number): Promise<void>;
  onProgress(p: { pulses: number; detections: number; emulatedSeconds: number; sync: SyncState }): void;
  log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
}

/** The link's protocol settings (node configuration; the emulated lab reads the same file). */
export function linkPresetOf(cfg: NodeRunConfig): ProtocolSettings {
  return loadProtocolSettings(cfg.lab.preset);
}

export function blockConfigOf(cfg: NodeRunConfig, preset: ProtocolSettings): BlockConfig {
  const ip = preset.intensityProbs;
  // The one-decoy bound has no vacuum intensity: with one in the source, every block would abort
  // (PE_BAD_PROBABILITIES) after its whole acquisition. Refuse the configuration at start instead.
  if (cfg.block.analysis === 'rusca2018' && ip.vacuum !== 0) {
    throw new ConfigError('NODE_CONFIG', `block.analysis "rusca2018" is the one-decoy bound (signal and one decoy), but link preset ` +
      `${preset.name} sends a third intensity (vacuum, probability ${ip.vacuum}): use "chernoff2020" or "lim2014" for this source, ` +
      'or a preset whose vacuum probability is 0');
  }
  return {
    ...DEFAULT_BLOCK_CONFIG,
    frameBits: cfg.block.frameBits,
    settings: {
      mu: [preset.intensities.signal, preset.intensities.decoy, preset.intensities.vacuum],
      pMu: [ip.signal, ip.decoy, ip.vacuum],
      analysis: cfg.block.analysis,
    },
    security: { epsSec: cfg.block.epsSec, epsCor: cfg.block.epsCor, qberAbort: cfg.block.qberAbort },
  };
}

function closeQuietly(close: () => void): void {
  try {
    close();
  } catch {
    // already closed
  }
}

/** Growable (pulse, channel) buffer for one block's detections. */
class DetectionBuffer {
  pulse = new Float64Array(1 << 20);
  channel = new Uint8Array(1 << 20);
  n = 0;
  push(p: Float64Array, c: Uint8Array): void {
    if (this.n + p.length > this.pulse.length) {
      const cap = Math.max(this.pulse.length * 2, this.n + p.length);
      const np = new Float64Array(cap);
      np.set(this.pulse.subarray(0, this.n));
      const nc = new Uint8Array(cap);
      nc.set(this.channel.subarray(0, this.n));
      this.pulse = np;
      this.channel = nc;
    }
    this.pulse.set(p, this.n);
    this.channel.set(c, this.n);
    this.n += p.length;
  }
  /** Takes the contents sorted by pulse (native stable insertion sort: the input is nearly sorted). */
  take(): { pulse: Float64Array; channel: Uint8Array } {
    const p = this.pulse.slice(0, this.n);
    const c = this.channel.slice(0, this.n);
    sortByPulse(p, c);
    this.n = 0;
    return { pulse: p, channel: c };
  }
}

/**
 * Reads and discards batches until `ended` settles and nothing arrived for 300 ms, then closes the
 * consumer: a producer blocked on back-pressure can finish its send, and nothing is in flight when
 * the sockets close.
 */
async function drainUntil(consumer: StreamConsumer, ended: Promise<unknown>): Promise<void> {
  let done = false;
  void ended.then(() => (done = true), () => (done = true));
  let last = performance.now();
  const reading = (async () => {
    try {
      for await (const _batch of consumer) last = performance.now();
    } catch {
      // closed below
    }
  })();
  while (!done || performance.now() - last < 300) await sleep(50);
  consumer.close();
  await reading;
}

export class BobNode {
  readonly preset: ProtocolSettings;
  /** The emulated physics (absent when the node drives a real time-tagger). */
  private readonly lab: EmulatedLab | undefined;
  private readonly tagger: TimeTagger;
  /** Identity read at connect, with the firmware versions the profile allows (for the alarm). */
  device: { id: string; model: string; firmware: string; allowedFirmware: string[] } | undefined;
  private readonly sync: ClockSync;
  /** The sync's acceptance half-window, ps (the shaded window of the timing histograms). */
  get windowPs(): number {
    return this.sync.windowPs;
  }
  private readonly post: BobPostProcessor;
  private stopping = false;
  // Block ids stay unique across restarts (the channel's ledger remembers committed ones).
  private blockId = Math.floor(Date.now() / 1000) * 1000;
  private pulses = 0;
  private detections = 0;
  private emulatedPs = 0;
  private tainted = 0;
  /** Timing residual histograms (10 ps bins, ±500 ps), 256 channels x bins, filled natively. */
  static readonly HIST = { startPs: -500, binWidthPs: 10, bins: 100 };
  private readonly hist = new Uint32Array(256 * BobNode.HIST.bins);
  /** Tags per tagger channel seen so far (channels with tags only). */
  get channelTags(): Map<number, number> {
    const per = this.sync.tagsPerChannel();
    const m = new Map<number, number>();
    for (let c = 0; c < 256; c++) if (per[c] > 0) m.set(c, per[c]);
    return m;
  }
  /** Residual histogram per channel that has tags (copies). */
  get histograms(): Map<number, Uint32Array> {
    const { bins } = BobNode.HIST;
    const m = new Map<number, Uint32Array>();
    for (const c of this.channelTags.keys()) m.set(c, this.hist.slice(c * bins, (c + 1) * bins));
    return m;
  }
  /** Pattern requests to Alice that failed (treated as unknown pulses: skipped checks, retried acquisitions). */
  private patternFailures = 0;
  /** Per-stage work: detections through the stage and wall time it was busy (for rates and occupancy). */
  private readonly stages = { acquire: new StageMeter(), postProcess: new StageMeter(), delivery: new StageMeter() };
  private startedAtMs = 0;
  private paceFrom: number | undefined;

  /** Bob's tagger as the node configuration names it (emulated; default EmuLab TT-8). */
  private get taggerEntry(): { id: string; profile: string } {
    return this.cfg.devices?.find((d) => loadProfile(d.profile).kind === 'time-tagger') ?? { id: 'bob-tagger', profile: 'emulab-tt8' };
  }

  constructor(private readonly cfg: NodeRunConfig, request: PeerRequest, private readonly cb: BobCallbacks, devices?: NodeDevices) {
    this.preset = linkPresetOf(cfg);
    const seed = BigInt(cfg.lab.seed);
    if (devices?.tagger) {
      this.tagger = devices.tagger;
      if (this.preset.bobBasisChoice === 'active') {
        throw new ConfigError('RUN_NO_MODULATOR', `link ${this.preset.name} has an active basis choice, but Bob's node drives no basis modulator whose record it could read (only the emulated lab has one): use a passive-basis link with a real tagger.`);
      }
    } else {
      // The emulated lab hosts Alice's source (her node drives it over the tty) and Bob's modulator.
      // truth: false: the tagger only passes tags on (the truth columns were a third of the lab's output)
      this.lab = new EmulatedLab({ preset: cfg.lab.preset, seed, distanceKm: cfg.lab.distanceKm, eveFraction: cfg.lab.eveFraction, awaitSource: cfg.lab.sourceTty !== undefined, truth: false });
      // prefetch: the lab emulates the next pull on libuv's pool while this thread handles the
      // last one (the physics was ~40 % of this thread's time; see docs/run.md)
      this.tagger = new TimeTaggerDriver({ id: this.taggerEntry.id, profile: loadProfile(this.taggerEntry.profile), device: new EmulatedUsbTagger(this.lab, { prefetch: true }) });
    }
    // Alice's intensity pattern comes from her node over the authenticated channel, as between two
    // hosts (pattern-link.ts); a check every second rather than 10/s keeps its MAC cost ≈ 256 bit/s,
    // and each check asks 1 ms after Alice's hold-back (fibre delay + sync window + margin) has
    // passed over its sample.
    const mu = [this.preset.intensities.signal, this.preset.intensities.decoy, this.preset.intensities.vacuum];
    this.calibration = cfg.calibration ? syncCalibration(cfg.calibration, this.preset.name) : undefined;
    const c = this.calibration;
    // The sync accepts offsets within ±SYNC_MAX_OFFSET_PS of its prior. Alice's hold-back covers
    // a prior up to the fibre delay + margin; a calibration prior further out would let the sync
    // accept a delay longer than the hold-back, so it is not used.
    let prior = c?.expectedOffsetPs;
    if (prior !== undefined && Math.abs(prior) > cfg.lab.distanceKm * FIBRE_PS_PER_KM + HOLDBACK_MARGIN_PS) {
      cb.log('warn', 'calibration not applied: sync prior beyond the fibre delay + margin that Alice\'s hold-back covers', { expectedOffsetPs: prior });
      prior = undefined;
    }
    this.sync = new ClockSync({
      repRateHz: this.preset.repRateHz, pattern: remotePattern(request, mu, (f) => {
        this.patternFailures++;
        cb.log('warn', "pattern request to Alice's node failed: the sync treats those pulses as unknown (check skipped or acquisition retried)", { kind: f.kind, pulses: f.pulses, error: f.error instanceof Error ? f.error.message : String(f.error), failures: this.patternFailures });
      }), verifyEveryPs: 1e12,
      verifyDelayPs: revealHoldbackPs(cfg.lab.distanceKm) + 1e9, maxOffsetPs: SYNC_MAX_OFFSET_PS,
      ...(c?.channelDelaysPs ? { channelDelaysPs: c.channelDelaysPs } : {}),
      ...(c?.windowPs ? { windowPs: c.windowPs } : {}),
      ...(prior !== undefined ? { expectedOffsetPs: prior } : {}),
    });
    this.post = new BobPostProcessor({ config: blockConfigOf(cfg, this.preset), mapping: siftMapping(this.preset), request });
  }

  private sourceTty: TtyAttachment | undefined;
  /** Calibration records the sync started from (none without `calibration` in the node file). */
  readonly calibration: SyncCalibration | undefined;

  /**
   * Before the classical channel is up: with `lab.sourceTty`, puts Alice's emulated source on its
   * tty, so that her node (which opens it before its channel) finds it answering.
   */
  async prepare(): Promise<void> {
    const c = this.calibration;
    if (c) {
      for (const a of c.applied) this.cb.log('info', `calibration applied: ${a.step}`, { createdAt: a.createdAt });
      for (const p of c.problems) this.cb.log('warn', `calibration not applied: ${p}`);
    }
    if (!this.lab || !this.cfg.lab.sourceTty || this.sourceTty) return;
    // On its own worker thread: its read-back answers must not wait for this thread's event loop.
    this.sourceTty = await attachSourceWorkerToTty(this.lab, this.cfg.lab.sourceTty, {
      onError: (err) => this.cb.log('error', `emulated source stopped answering on its tty: ${err.message}`),
    });
    this.cb.log('info', "emulated lab: Alice's source is on a tty; no pulses until her node programs and switches it on", { tty: this.cfg.lab.sourceTty });
  }

  get syncState(): SyncState {
    return this.sync.state();
  }

  /** Set by stop(): the pipeline ends because it was asked to, not because a stage failed. */
  private stopRequested = false;
  /** Batches taken from the detection stream (tainted ones included). */
  private consumedBatches = 0;

  stop(): void {
    this.stopRequested = true;
    this.stopping = true;
  }

  /** Runs until stop(): produce tags, sync, cut blocks, post-process. */
  async run(): Promise<void> {
    // Back-pressure by design: while a block is post-processed and the next one is full, the
    // consumer does not read, and the tagger waits (its batches are marked BACKPRESSURE) or, with
    // stream.onBackpressure 'drop', batches are dropped and the next one says how many: the block
    // is then refused (STREAM_TAINTED) and the detections-lost alarm raised. At stop, closing the
    // socket ends a pending send.
    const publisher = await StreamPublisher.open({ endpoint: this.cfg.stream.endpoint, streamId: `${this.cfg.nodeId}/tagger0`,
      onBackpressure: this.cfg.stream.onBackpressure, sendHighWaterMark: this.cfg.stream.highWaterMark });
    const consumer = await StreamConsumer.open({ endpoint: this.cfg.stream.endpoint, ingest: null });
    const ident = await this.tagger.open();
    const profile = loadProfile(this.tagger.profile);
    this.device = { id: this.taggerEntry.id, model: `${ident.vendor} ${ident.model}`, firmware: ident.firmware, allowedFirmware: profile.firmware };
    const stream = this.tagger.startStream({ transferBytes: 1 << 20 });
    const produce = (async () => {
      try {
        for await (const batch of stream) {
          if (this.stopping) break;
          const sent = await publisher.sendTags(0n, batch.timePs, batch.channel, batch.events);
          // A dropped batch means the consumer (on this thread) is behind: let it run, or a
          // producer that never waits would starve it and drop everything.
          if (sent === 'dropped') await new Promise((r) => setImmediate(r));
          const last = batch.timePs.length ? Number(batch.timePs[batch.timePs.length - 1]) : 0;
          // Pace an emulated lab: emulated seconds may lead wall seconds (since its first pulse)
          // by at most the speed factor. A real tagger paces itself.
          this.paceFrom ??= performance.now();
          const ahead = last / 1e12 - ((performance.now() - this.paceFrom) / 1000) * this.cfg.speed;
          if (this.lab && ahead > 0.05) await sleep(Math.min(1000, ahead * 1000));
        }
      } catch (err) {
        // Once stopping, the consumer is gone and the last send times out: that is the end.
        if (!this.stopping) throw err;
      } finally {
        await stream.stop();
      }
    })();
    const consume = this.consume(consumer);
    const first = await Promise.race([produce.then(() => 'produce', () => 'produce'), consume.then(() => 'consume', () => 'consume')]);
    // A tag stream that ended by itself (a recording's end, a tagger that stopped) still has
    // batches queued between the sockets: every one that was sent is consumed before the pipeline
    // stops, however long post-processing takes, unless a stop is requested meanwhile.
    if (first === 'produce' && !this.stopRequested) await this.untilConsumed(publisher.stats.batches, consume);
    this.stopping = true;
    // Linger: what is still queued is delivered (the consumer drains it) before the socket goes.
    closeQuietly(() => publisher.close(2000));
    // No socket may close while a multi-part batch is in flight between them: libzmq then aborts
    // the whole process (session_base.cpp errno assertion, seen twice at stop). So the consumer
    // keeps reading (and discards) until the producer has ended and the stream has been quiet
    // for a moment; only then does it close.
    if (first === 'consume') await drainUntil(consumer, produce);
    else {
      await sleep(500);
      consumer.close();
    }
    const settled = await Promise.allSettled([produce, consume]);
    await this.tagger.close();
    await this.sourceTty?.close();
    // A stage that failed on its own (not at a requested stop) fails the pipeline: its error must
    // reach the node's log and exit code, not end the run as if it had been stopped.
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed && !this.stopRequested) throw failed.reason;
    if (!this.stopRequested) this.cb.log('warn', `pipeline ended without a stop request: the ${first === 'produce' ? 'tag stream' : 'detection consumer'} finished first`);
  }

  /** Resolves once `batches` batches were consumed, the consumer ended, or a stop was requested. */
  private async untilConsumed(batches: number, consume: Promise<void>): Promise<void> {
    let ended = false;
    void consume.then(() => (ended = true), () => (ended = true));
    while (!ended && !this.stopRequested && this.consumedBatches < batches) await sleep(20);
  }

  private async consume(consumer: StreamConsumer): Promise<void> {
    const buf = new DetectionBuffer();
    let firstPulse = -1;
    let lastReport = 0;
    this.startedAtMs = performance.now();
    // Three stages overlap (issue 15): while block n+1 accumulates here (sync, on this thread),
    // block n is post-processed (native threads and Alice's process) and block n-1 is committed
    // and delivered. Each stage keeps block order: a block's post-processing waits for the
    // previous one's, its delivery for the previous delivery.
    let posting: Promise<void> = Promise.resolve();
    // Two blocks may be in post-processing at once: block n+1 sifts (its read-back holds Alice's
    // source line, ~1.2 s a block at 25 km) while block n reconciles, verifies and amplifies
    // (native threads); n+1 goes on past its sift only once n is done, so results, commits and
    // deliveries keep block order. This resolves when the newest block's sift is over.
    let siftFree: Promise<void> = Promise.resolve();
    let delivering: Promise<void> = Promise.resolve();
    // The deliveries before the newest queued one: a block's post-processing starts only once
    // they are done, so at most one block waits for delivery. When the KMS stops taking keys
    // (a full spool holds a block), the pipeline stops here and the stream's back-pressure takes
    // over; before, finished blocks queued without bound, their key output unsealed in memory.
    let deliveredButLast: Promise<void> = Promise.resolve();
    let failure: unknown;
    const fail = (err: unknown) => {
      failure ??= err;
    };
    const settlePost = async () => {
      await posting;
      if (failure !== undefined) throw failure;
    };
    const deliver = (result: BlockResult, pulsesInBlock: number, detections: number) => {
      deliveredButLast = delivering;
      delivering = delivering.then(async () => {
        const t0 = performance.now();
        try {
          await this.cb.onBlock(result, pulsesInBlock);
        } finally {
          this.stages.delivery.add(detections, t0);
        }
      }).catch(fail);
    };
    try {
      for await (const b of consumer) {
        if (this.stopping) break;
        this.consumedBatches++;
        const t0 = performance.now();
        const times = view64(BigInt64Array, b.data);
        const channel = new Uint8Array(b.channels.buffer, b.channels.byteOffset, b.channels.byteLength);
        const det = await this.sync.pushAsync({ timePs: times, channel });
        const { startPs, binWidthPs, bins } = BobNode.HIST;
        if (det.channel.length) residualHistogram(det.channel, det.residualPs, startPs, binWidthPs, bins, this.hist);
        if (times.length) this.emulatedPs = Number(times[times.length - 1]);
        if (b.tainted) {
          // An overflow, gap or stall: the detections around it are incomplete. Discard the block
          // being accumulated rather than mix it; report it as aborted.
          this.tainted++;
          const why = describeTaint({ seq: b.seq, flags: b.flags, missingBefore: b.missingBefore, droppedBefore: b.header.droppedBefore });
          this.cb.log('warn', `detection stream: ${why}; the block being accumulated is refused`, { detectionsDiscarded: buf.n });
          if (buf.n) {
            const discarded = buf.n;
            buf.take();
            await settlePost();
            deliver({ report: { blockId: ++this.blockId, verified: false, abortReason: `STREAM_TAINTED: ${why}; the block's ${discarded} detections were discarded, no key from them`, detections: 0, siftedZ: 0, siftedX: 0, doubleClicks: 0 } }, 0, 0);
          }
          firstPulse = -1;
          this.stages.acquire.add(det.pulseIndex.length, t0);
          continue;
        }
        if (det.pulseIndex.length) {
          buf.push(det.pulseIndex, det.channel);
          if (firstPulse < 0) firstPulse = det.pulseIndex[0];
          this.detections += det.pulseIndex.length;
          this.pulses = Math.max(this.pulses, det.pulseIndex[det.pulseIndex.length - 1] + 1);
        }
        this.stages.acquire.add(det.pulseIndex.length, t0);
        if (buf.n >= this.cfg.block.detections) {
          const { pulse, channel: ch } = buf.take();
          const pulsesInBlock = pulse[pulse.length - 1] - firstPulse + 1;
          firstPulse = -1;
          // An active basis choice: the modulator's record for these pulses, from the device.
          const sc = toSiftChannels(this.preset, this.preset.bobBasisChoice === 'active' ? this.lab!.bobBasesAt(pulse) : undefined, ch);
          await siftFree;
          await deliveredButLast;
          if (failure !== undefined) throw failure;
          const id = ++this.blockId;
          let siftDone!: () => void;
          siftFree = new Promise<void>((resolve) => (siftDone = resolve));
          const previous = posting;
          posting = (async () => {
            const t1 = performance.now();
            const result = await this.post.processBlock(id, pulse, sc, { siftDone, after: previous });
            this.stages.postProcess.add(pulse.length, t1);
            result.report.detections = pulse.length;
            deliver(result, pulsesInBlock, pulse.length);
          })().catch((err: unknown) => {
            siftDone();
            fail(err);
          });
        }
        const now = performance.now();
        if (now - lastReport > this.cfg.statusEveryMs) {
          lastReport = now;
          this.cb.onProgress({ pulses: this.pulses, detections: this.detections, emulatedSeconds: this.emulatedPs / 1e12, sync: this.sync.state() });
        }
      }
      if (buf.n) this.cb.log('info', `detection stream ended: the last ${buf.n} detections did not fill a block (${this.cfg.block.detections} needed) and were not post-processed`);
    } finally {
      // Stopping (or the stream ended): the blocks in flight are finished (committed and
      // delivered, or aborted) before the node goes on to close its link.
      await posting;
      await delivering;
    }
    if (failure !== undefined) throw failure;
  }

  get counters(): { pulses: number; detections: number; emulatedSeconds: number; taintedBatches: number; patternFailures: number; wallSeconds: number; realTimeFactor: number | null; stages: Record<StageName, StageFigures> } {
    const wallMs = this.startedAtMs ? performance.now() - this.startedAtMs : 0;
    const emulatedSeconds = this.emulatedPs / 1e12;
    return {
      pulses: this.pulses, detections: this.detections, emulatedSeconds, taintedBatches: this.tainted, patternFailures: this.patternFailures,
      wallSeconds: wallMs / 1000,
      realTimeFactor: wallMs > 0 ? emulatedSeconds / (wallMs / 1000) : null,
      stages: { acquire: this.stages.acquire.figures(wallMs), postProcess: this.stages.postProcess.figures(wallMs), delivery: this.stages.delivery.figures(wallMs) },
    };
  }
}

export type StageName = 'acquire' | 'postProcess' | 'delivery';

/** One pipeline stage's figures: detections through it, per busy second, and its occupancy. */
export interface StageFigures {
  detections: number;
  busySeconds: number;
  /** Detections per second of the stage's busy time (what it sustains), null before any work. */
  detectionsPerSecond: number | null;
  /** Busy time / wall time since the pipeline started (0..1). */
  occupancy: number;
}

class StageMeter {
  private detections = 0;
  private busyMs = 0;
  private lastEndMs = 0;
  /**
   * Work on `detections` from `startMs` until now. Spans that overlap (two blocks in
   * post-processing at once) count their union, so busy time never exceeds wall time.
   */
  add(detections: number, startMs: number): void {
    const end = performance.now();
    this.detections += detections;
    this.busyMs += Math.max(0, end - Math.max(startMs, this.lastEndMs));
    this.lastEndMs = Math.max(this.lastEndMs, end);
  }
  figures(wallMs: number): StageFigures {
    return {
      detections: this.detections, busySeconds: this.busyMs / 1000,
      detectionsPerSecond: this.busyMs > 0 ? this.detections / (this.busyMs / 1000) : null,
      occupancy: wallMs > 0 ? Math.min(1, this.busyMs / wallMs) : 0,
    };
  }
}
