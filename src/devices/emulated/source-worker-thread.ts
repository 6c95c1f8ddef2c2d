/**
 * The worker thread of a worker-hosted emulated PS-1 (source-worker.ts): the device, its RNG and
 * record, and its end of the pty. Settings and the RNG handle go to the lab's thread as messages;
 * the emission horizon comes from the lab's shared pulse counter.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { EmulatedPhotonSource, type SourceLabPort } from './instruments.ts';
import { attachInstrumentToPtyStreams } from './pty.ts';
import type { SourceWorkerData, ToLab, ToWorker } from './source-worker.ts';

const data = workerData as SourceWorkerData;
const port = parentPort!;
const post = (m: ToLab): void => port.postMessage(m);
const counter = new BigInt64Array(data.pulseCounter);

let shared: { unshare(): void } | undefined;
const lab: SourceLabPort = {
  preset: data.preset,
  update: (patch) => post({ type: 'update', patch }),
  attachSourceDevice: (device) => {
    shared = device;
    post({ type: 'attach', handle: device.share() });
  },
  get pulsesEmitted() {
    return Number(Atomics.load(counter, 0));
  },
};

try {
  const att = await attachInstrumentToPtyStreams(new EmulatedPhotonSource(lab, data.serial), data.path);
  port.on('message', (m: ToWorker) => {
    if (m.type === 'opened') shared?.unshare(); // only the lab's optics may open it
    else if (m.type === 'close') void att.close().then(() => post({ type: 'closed' }));
  });
  post({ type: 'ready' });
} catch (e) {
  post({ type: 'failed', message: e instanceof Error ? e.message : String(e) });
}
