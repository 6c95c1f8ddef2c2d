/**
 * Puts an emulated instrument on a real tty: it opens one end of a pty pair (e.g. made by
 * `socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B`) with the OS serialport binding and
 * answers what the driver writes on the other end. The driver side is then byte-for-byte what it
 * would be with a USB-serial instrument.
 */
import { closeSync, constants, open, readSync } from 'node:fs';
import { isatty, ReadStream, WriteStream } from 'node:tty';
import { SerialPortStream } from '@serialport/stream';
import { TransportError } from '../../errors.ts';
import { ttyBinding } from '../transports/tty-binding.ts';
import { ScpiEndpoint, type ScpiInstrument } from './scpi.ts';

export interface TtyAttachment {
  readonly path: string;
  close(): Promise<void>;
}

export async function attachInstrumentToTty(instrument: ScpiInstrument, path: string, baudRate = 115200): Promise<TtyAttachment> {
  // The same binding as the driver side: with the stock one, a read that came after socat died
  // would spin on read(2) = 0 for ever (see tty-binding.ts).
  const port = new SerialPortStream({ binding: ttyBinding, path, baudRate, autoOpen: false });
  await new Promise<void>((resolve, reject) =>
    port.open((err) => (err ? reject(new TransportError('OPEN_FAILED', `emulator cannot open ${path}: ${err.message}`, { cause: err })) : resolve())),
  );
  port.on('error', () => {});
  const endpoint = new ScpiEndpoint(instrument, (bytes) => {
    if (port.isOpen) port.write(bytes);
  });
  port.on('data', (b: Buffer) => endpoint.receive(b));
  return {
    path,
    close: () => new Promise<void>((resolve) => (port.isOpen ? port.close(() => resolve()) : resolve())),
  };
}

/**
 * The same with Node's own tty streams instead of the serialport binding, for an instrument served
 * from a worker thread: @serialport/bindings-cpp is not safe in a worker (its poller calls into
 * the main thread's environment and aborts the process). The emulator's end of a socat pty pair
 * needs no line settings (socat made it raw; baud rates mean nothing on a pty), so plain reads and
 * writes do. A hang-up of the other end ends the reads (EIO), as unplugging a device would.
 */
export async function attachInstrumentToPtyStreams(instrument: ScpiInstrument, path: string): Promise<TtyAttachment> {
  let fd: number;
  try {
    fd = await new Promise<number>((resolve, reject) =>
      open(path, constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK, (err, f) => (err ? reject(err) : resolve(f))));
  } catch (err) {
    throw new TransportError('OPEN_FAILED', `emulator cannot open ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (!isatty(fd)) {
    closeSync(fd);
    throw new TransportError('OPEN_FAILED', `emulator: ${path} is not a tty (expected one end of a socat pty pair)`);
  }
  discardQueuedInput(fd);
  const input = new ReadStream(fd);
  const output = new WriteStream(fd);
  input.on('error', () => {});
  output.on('error', () => {});
  const endpoint = new ScpiEndpoint(instrument, (bytes) => {
    if (!output.destroyed) output.write(bytes);
  });
  input.on('data', (b: Buffer) => endpoint.receive(b));
  let closed = false;
  return {
    path,
    close: async () => {
      if (closed) return;
      closed = true;
      input.destroy();
      await new Promise<void>((resolve) => output.end(() => resolve()));
      output.destroy(); // the tty streams own the fd (libuv re-opens a pty's slave onto it)
    },
  };
}

/**
 * An instrument switched on does not see what the host sent while it was off. On a pty the line
 * keeps those bytes (the supervisor holds both ends open), so a restarted lab's source would
 * answer a dead host's queued queries, and the live host would take those answers for its own
 * (seen: "expected 'OK' after 'OUTPUT:STATE 0', got \"0\""). Drop them before serving.
 */
function discardQueuedInput(fd: number): number {
  const buf = Buffer.alloc(65536);
  let dropped = 0;
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buf, 0, buf.length, null);
    } catch {
      return dropped; // EAGAIN: nothing more queued (or the line is gone: the reads will say so)
    }
    if (n <= 0) return dropped;
    dropped += n;
  }
}
