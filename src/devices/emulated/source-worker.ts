/**
 * The emulated PS-1 photon source served from its own worker thread (node:worker_threads), on a
 * real tty as attachInstrumentToTty does.
 *
 * Why: in an emulated run the source sits in Bob's process (it is part of the emulated lab), but
 * Bob's JS thread is busy with the emulator and the sync. Served there, every chunk of a
 * read-back (Alice's node asking what the source applied to Bob's detected pulses) waited for his
 * event loop, and Alice's sift answer took 7–10 s per 10^7-detection block (docs/run.md, "Rates").
 * On a worker, the device's wire server, pulse-list decoding and reply packing run beside Bob's
 * thread.
 *
 * What crosses threads: settings (messages to the lab's thread, which applies them to the
 * physics), the lab's pulse counter (shared memory, the emission horizon), and the handle of the
 * device's Rust state (its RNG and record; src/core/source-device.ts), which the lab's optics open
 * on Bob's thread to apply the device's choices to the photon candidates. The key stays in the
 * device's Rust memory; no message carries it or a choice.
 *
 * Lifetime: `close()` closes the tty and ends the worker. If the worker dies, the tty stops
 * answering (Alice's driver times out and reconnects) and `onError` is told.
 */
import { Worker } from 'node:worker_threads';
import { TransportError } from '../../errors.ts';
import { openSharedSourceDevice } from '../../core/source-device.ts';
import type { EmulatedLab, LabSettings } from './lab.ts';
import type { SourceLabPort } from './instruments.ts';
import type { TtyAttachment } from './pty.ts';

/** Data the worker starts with (structured clone). */
export interface SourceWorkerData {
  path: string;
  baudRate: number;
  serial: string;
  preset: SourceLabPort['preset'];
  pulseCounter: SharedArrayBuffer;
}
/** Worker → lab thread. */
export type ToLab =
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'update'; patch: Partial<LabSettings> }
  | { type: 'attach'; handle: number }
  | { type: 'closed' };
/** Lab thread → worker. */
export type ToWorker = { type: 'close' } | { type: 'opened' };

export interface SourceWorkerOptions {
  baudRate?: number;
  serial?: string;
  /** The worker failed after it started (the tty no longer answers). */
  onError?: (err: Error) => void;
}

/** Puts the lab's emulated PS-1 on the tty at `path`, served from a worker thread. */
export async function attachSourceWorkerToTty(lab: EmulatedLab, path: string, opts: SourceWorkerOptions = {}): Promise<TtyAttachment> {
  const p = lab.preset;
  const data: SourceWorkerData = {
    path,
    baudRate: opts.baudRate ?? 115200,
    serial: opts.serial ?? 'PS1-0001',
    preset: { repRateHz: p.repRateHz, intensities: { ...p.intensities }, intensityProbs: { ...p.intensityProbs }, aliceBasisProbZ: p.aliceBasisProbZ },
    pulseCounter: lab.sharedPulseCounter(),
  };
  const worker = new Worker(new URL('./source-worker-entry.mjs', import.meta.url), { workerData: data });
  let started = false;
  let closing = false;
  const ready = new Promise<void>((resolve, reject) => {
    worker.on('message', (m: ToLab) => {
      switch (m.type) {
        case 'ready': started = true; resolve(); break;
        case 'failed': reject(new TransportError('OPEN_FAILED', `emulated source worker: ${m.message}`)); break;
        case 'update': lab.update(m.patch); break;
        case 'attach': {
          const device = openSharedSourceDevice(m.handle);
          // choicesAt is the device's applyAt: the lab's Rust physics may call it directly (native)
          lab.attachSourceDevice(device, (pulses) => device.applyAt(pulses), device.native);
          worker.postMessage({ type: 'opened' } satisfies ToWorker); // the worker withdraws the handle
          break;
        }
        case 'closed': break;
      }
    });
    worker.on('error', (err) => {
      if (!started) reject(new TransportError('OPEN_FAILED', `emulated source worker failed to start: ${err.message}`, { cause: err }));
      else opts.onError?.(err);
    });
    worker.on('exit', (code) => {
      if (!started) reject(new TransportError('OPEN_FAILED', `emulated source worker exited (code ${code}) before it served ${path}`));
      else if (!closing) opts.onError?.(new TransportError('DISCONNECTED', `emulated source worker exited (code ${code}); ${path} no longer answers`));
    });
  });
  try {
    await ready;
  } catch (e) {
    await worker.terminate();
    throw e;
  }
  return {
    path,
    close: async () => {
      if (closing) return;
      closing = true;
      const closed = new Promise<void>((resolve) => {
        worker.on('message', (m: ToLab) => m.type === 'closed' && resolve());
        worker.once('exit', () => resolve());
      });
      worker.postMessage({ type: 'close' } satisfies ToWorker);
      await Promise.race([closed, new Promise((r) => setTimeout(r, 2000).unref())]);
      await worker.terminate();
    },
  };
}
