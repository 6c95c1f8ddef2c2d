/**
 * Test helpers for the device layer (kept outside test/ so tap does not run them as tests):
 * a socat pty pair, emulated serial drivers in one call, and the per-kind conformance suites that
 * run against emulated devices and, when an environment variable names a port, real hardware.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceError } from '../errors.ts';
import { loadProfile, type DeviceProfile, type SerialSettings } from '../devices/profile.ts';
import { EmulatedSerialBinding } from '../devices/emulated/serial-binding.ts';
import { EmulatedPhotonSource, EmulatedSpadDetector } from '../devices/emulated/instruments.ts';
import { EmulatedLab } from '../devices/emulated/lab.ts';
import { SerialLineTransport, type BindingInterface } from '../devices/transports/serial.ts';
import { PhotonSourceDriver, SpadDetectorDriver } from '../devices/drivers/scpi.ts';
import type { ReconnectPolicy } from '../devices/drivers/base.ts';
import type { Device, DeviceState, PhotonSource, SpadDetector, StateChange, TimeTagger } from '../devices/types.ts';

export function hasSocat(): boolean {
  return spawnSync('socat', ['-V'], { stdio: 'ignore' }).status === 0;
}

export function tempDir(prefix = 'qkd-devices-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export interface PtyPair {
  /** Driver side. */
  a: string;
  /** Emulator side. */
  b: string;
  proc: ChildProcess;
  /** Kills socat (the line goes away on both sides, as an unplugged adapter does). */
  kill(): Promise<void>;
}

/** Starts `socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B` and waits for both links. */
export async function startPtyPair(dir: string, name = 'tty'): Promise<PtyPair> {
  const a = join(dir, `${name}-A`);
  const b = join(dir, `${name}-B`);
  const proc = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr?.resume();
  const deadline = Date.now() + 5000;
  while (!(existsSync(a) && existsSync(b))) {
    if (proc.exitCode !== null) throw new Error(`socat exited with ${proc.exitCode}`);
    if (Date.now() > deadline) {
      proc.kill();
      throw new Error('socat did not create the pty links within 5 s');
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  const kill = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const done = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await done;
  };
  return { a, b, proc, kill };
}

/**
 * Wraps a serialport binding so that a read can be held back before it reaches the binding. After
 * `holdAfterLine()`, the first read issued after a read that ended a line (its data ends with
 * `delimiter`) waits until `release()`; `held()` resolves once one is waiting. A test uses it to
 * put the read that follows a reply after an event, e.g. a hang-up, as a loaded machine may order
 * them, without depending on load or timing. Keying on a complete line, not on "the next read",
 * keeps a reply split over several reads from being held half way.
 */
export function holdableReads(inner: BindingInterface, delimiter = '\n'): { binding: BindingInterface; holdAfterLine(): void; held(): Promise<void>; release(): void } {
  const last = Buffer.from(delimiter).at(-1);
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  let lineEnded = false;
  let waiting = false;
  let onHeld: (() => void) | undefined;
  const binding: BindingInterface = {
    list: () => inner.list(),
    async open(options) {
      const port = await inner.open(options);
      const read = port.read.bind(port);
      port.read = async (buffer, offset, length) => {
        if (gate && lineEnded) {
          waiting = true;
          onHeld?.();
          await gate;
          waiting = false;
        }
        const r = await read(buffer, offset, length);
        if (gate) lineEnded = r.bytesRead > 0 && buffer[offset + r.bytesRead - 1] === last;
        return r;
      };
      return port;
    },
  };
  return {
    binding,
    holdAfterLine() {
      lineEnded = false;
      gate ??= new Promise<void>((r) => (open = r));
    },
    held: () => (waiting ? Promise.resolve() : new Promise<void>((r) => (onHeld = r))),
    release() {
      gate = undefined;
      open?.();
    },
  };
}

export interface EmulatedSerialRig<D> {
  driver: D;
  binding: EmulatedSerialBinding;
  path: string;
  lab: EmulatedLab;
  transport: SerialLineTransport;
}

export function emulatedSource(opts: { profile?: DeviceProfile; reconnect?: Partial<ReconnectPolicy>; lab?: EmulatedLab; firmware?: string } = {}): EmulatedSerialRig<PhotonSourceDriver> & { instrument: EmulatedPhotonSource } {
  const lab = opts.lab ?? new EmulatedLab({ source: 'synthetic' });
  const binding = new EmulatedSerialBinding();
  const instrument = new EmulatedPhotonSource(lab, 'PS1-T', opts.firmware);
  const path = binding.attach('source', instrument);
  const profile = opts.profile ?? loadProfile('emulab-ps1');
  const transport = new SerialLineTransport({ path, settings: profile.transport as SerialSettings, binding });
  const driver = new PhotonSourceDriver({ id: 'alice-source', profile, transport, reconnect: opts.reconnect });
  return { driver, binding, path, lab, transport, instrument };
}

export function emulatedSpad(opts: { profile?: DeviceProfile; reconnect?: Partial<ReconnectPolicy>; lab?: EmulatedLab; now?: () => number } = {}): EmulatedSerialRig<SpadDetectorDriver> & { instrument: EmulatedSpadDetector } {
  const lab = opts.lab ?? new EmulatedLab({ source: 'synthetic' });
  const binding = new EmulatedSerialBinding();
  const instrument = new EmulatedSpadDetector(lab, { now: opts.now });
  const path = binding.attach('spad', instrument);
  const profile = opts.profile ?? loadProfile('emulab-spad1');
  const transport = new SerialLineTransport({ path, settings: profile.transport as SerialSettings, binding });
  const driver = new SpadDetectorDriver({ id: 'bob-detector-0', profile, transport, reconnect: opts.reconnect });
  return { driver, binding, path, lab, transport, instrument };
}

/** Resolves when `dev` reaches `state` (rejects after `timeoutMs`), collecting the changes seen. */
export function waitForState(dev: Device, state: DeviceState, timeoutMs = 5000): Promise<StateChange[]> {
  const seen: StateChange[] = [];
  return new Promise((resolve, reject) => {
    if (dev.state === state) return resolve(seen);
    const timer = setTimeout(() => {
      dev.off('state', on);
      reject(new Error(`device ${dev.id} did not reach '${state}' within ${timeoutMs} ms (saw ${seen.map((s) => s.state).join(' -> ') || 'nothing'})`));
    }, timeoutMs);
    const on = (c: StateChange) => {
      seen.push(c);
      if (c.state === state) {
        clearTimeout(timer);
        dev.off('state', on);
        resolve(seen);
      }
    };
    dev.on('state', on);
  });
}

/** Minimal assertion surface of a tap Test, so suites can be shared without importing tap here. */
export interface Asserts {
  ok(v: unknown, msg: string): unknown;
  equal(a: unknown, b: unknown, msg: string): unknown;
  rejects(p: Promise<unknown>, expected: Function, msg: string): Promise<unknown>;
}

/**
 * Conformance of any SpadDetector (emulated or real): identity, every capability readable, a
 * settable parameter round-trips at its min and max, out-of-range values refused before sending.
 * Restores the values it changed.
 */
export async function spadConformance(t: Asserts, d: SpadDetector): Promise<void> {
  const id = await d.identity();
  t.ok(id.model && id.firmware, 'identity has model and firmware');
  const caps = d.capabilities();
  for (const name of ['efficiency', 'dead_time', 'threshold', 'temperature_setpoint', 'count_rate', 'temperature', 'ready']) {
    const c = caps[name];
    t.ok(c && c.min <= c.max && typeof c.unit === 'string', `${name} has {min,max,step,unit}`);
    const v = await d.get(name);
    t.ok(Number.isFinite(v), `${name} reads a number (${v})`);
  }
  const dt = caps.dead_time;
  const before = await d.deadTimeNs();
  for (const v of [dt.min, dt.max]) {
    await d.setDeadTimeNs(v);
    t.equal(await d.deadTimeNs(), v, `dead_time round-trips at ${v}`);
  }
  await d.setDeadTimeNs(before);
  await t.rejects(d.setDeadTimeNs(dt.max + (dt.step || 1)), DeviceError, 'dead time above max refused');
  await t.rejects(d.setEfficiency(caps.efficiency.min - 0.01), DeviceError, 'efficiency below min refused');
  await t.rejects(d.set('count_rate', 1), DeviceError, 'measured value cannot be set');
  t.equal(typeof (await d.ready()), 'boolean', 'ready() is a boolean');
}

export async function sourceConformance(t: Asserts, s: PhotonSource): Promise<void> {
  const id = await s.identity();
  t.ok(id.model && id.firmware, 'identity has model and firmware');
  const before = [await s.intensity(0), await s.intensity(1), await s.intensity(2)];
  await s.setIntensity(0, 0.6);
  await s.setIntensity(1, 0.15);
  t.equal(await s.intensity(0), 0.6, 'signal intensity round-trips');
  t.equal(await s.intensity(1), 0.15, 'decoy intensity round-trips');
  await s.setIntensity(0, before[0]);
  await s.setIntensity(1, before[1]);
  await t.rejects(s.setIntensity(2, 0.5), DeviceError, 'vacuum above its max refused');
  await t.rejects(s.setRepetitionRateHz(1.5e6 + 1), DeviceError, 'rate off the step grid refused');
  const on = await s.enabled();
  await s.setEnabled(!on);
  t.equal(await s.enabled(), !on, 'enable toggles');
  await s.setEnabled(on);
  await t.rejects(s.set('pulse_count', 1), DeviceError, 'the pulse counter is read-only');
  await t.rejects(s.get('pattern_seed'), DeviceError, 'no pattern seed: the source keys its RNG itself');
}

export async function taggerConformance(t: Asserts, tt: TimeTagger, tags = 20_000): Promise<void> {
  const chans = tt.channels();
  t.ok(chans.length > 0, 'has channels');
  const c = chans[0];
  const before = await tt.delayPs(c);
  await tt.setDelayPs(c, 1234);
  t.equal(await tt.delayPs(c), 1234, 'delay round-trips');
  await tt.setDelayPs(c, before);
  await t.rejects(tt.setDelayPs(c, 2e9), DeviceError, 'delay out of range refused');
  await t.rejects(tt.get('delay'), DeviceError, 'per-channel parameter needs a channel');
  const s = tt.startStream({ maxTags: tags });
  let n = 0;
  let prev = -(2n ** 63n);
  let sorted = true;
  for await (const b of s) {
    n += b.timePs.length;
    for (const x of b.timePs) {
      if (x < prev) sorted = false;
      prev = x;
    }
  }
  t.equal(n, tags, `stream delivered ${tags} tags`);
  t.ok(sorted, 'tags arrive in time order');
}
