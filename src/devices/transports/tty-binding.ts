/**
 * The OS serialport binding (`@serialport/bindings-cpp`, as `serialport` picks it), corrected so
 * that a tty which hangs up is always reported as a disconnect.
 *
 * Why a correction is needed: on Linux and macOS bindings-cpp reads with a non-blocking read(2)
 * and, on EAGAIN, parks the read in a libuv poll until the fd is readable. When the line goes away
 * (a USB-serial adapter unplugged, the master side of a pty closed) the kernel hangs the tty up:
 * poll(2) then reports POLLERR|POLLHUP and every read(2) returns 0.
 *   - A read parked in the poll when that happens fails (libuv reports EBADF), and serialport
 *     closes the port with a disconnect error: the transport's 'close' event, the driver's
 *     reconnect loop.
 *   - A read that reaches the kernel after the hang-up gets 0, and bindings-cpp retries a 0-byte
 *     read at once, for ever (unix-read.js: `if (bytesRead === 0) return unixRead(...)`). The
 *     disconnect is never reported and a thread-pool thread spins. Which case happens is a race:
 *     the read issued right after a reply, or any read delayed in libuv's thread pool on a loaded
 *     machine, comes after the hang-up.
 *
 * The binding opens ttys with VMIN=1 and O_NONBLOCK, so with no data read(2) fails with EAGAIN and
 * never returns 0; 0 is end of file, which on a tty means it hung up. This binding's ports read
 * with that meaning (the loop below); everything else (open, write, close, poller) is
 * bindings-cpp's. Ports opened with VMIN=0 (where 0 bytes is an ordinary answer), and ports
 * without an fd and poller (Windows), keep bindings-cpp's read.
 *
 * Concurrency: as for any binding, serialport issues one read at a time per port.
 *
 * A second correction: bindings-cpp's poller arms only the event asked for last. Its `once()`
 * calls uv_poll_start with that one event, which replaces the events other waiters are parked
 * on. A write parked until the line is writable (a long request filling the tty's buffer) loses
 * its wake-up when the read, woken by a byte from the other end, parks again on "readable"; the
 * write then waits for ever and every later command queues behind it (seen: Alice's node's 1.6 MB
 * read-back request stuck, her source silent for the rest of the run). So this binding's ports
 * arm the union of the events someone waits for, every time one more is asked for.
 *
 * Third: reads and writes are plain non-blocking syscalls on the JS thread, not fs.read/fs.write
 * on libuv's thread pool. The fd is O_NONBLOCK, so read(2)/write(2) return at once (data, or
 * EAGAIN and the port parks on the poller), and a hop through the pool bought nothing but
 * latency: a pty takes ~4 KB per write(2), so a 1.6 MB read-back request was ~400 pool round
 * trips plus poller wake-ups, ~100 ms per request (21 MB/s over a path that moves ~100 MB/s),
 * and the pool is shared with the post-processing's native work.
 */
import { readSync, writeSync } from 'node:fs';
import { SerialPort } from 'serialport';
import type { BindingInterface, BindingPort } from './serial.ts';

/** bindings-cpp's poller (dist/poller.js): an EventEmitter whose `poll(flags)` arms exactly `flags`. */
interface UnixPoller {
  once(event: 'readable' | 'writable', cb: (err: Error | null) => void): unknown;
  poll(flags?: number): void;
  listenerCount(event: string): number;
}

/** What a Unix port of bindings-cpp has beyond the binding interface (public fields of LinuxPortBinding/DarwinPortBinding). */
interface UnixPort extends BindingPort {
  fd: number | null;
  readonly poller: UnixPoller;
  readonly openOptions: BindingPort['openOptions'] & { vmin?: number };
  /** The write in progress (bindings-cpp's `drain()` awaits it). */
  writeOperation: Promise<void> | null;
  /** When the write in progress last got a byte into the tty (performance.now()); see writeStalledMs. */
  writeProgressAt?: number;
}

function isUnixPort(port: BindingPort): port is UnixPort {
  const p = port as Partial<UnixPort>;
  return typeof p.fd === 'number' && typeof p.poller?.once === 'function' && typeof p.poller?.poll === 'function';
}

/** libuv's poll events as bindings-cpp numbers them (EVENTS in dist/poller.js). */
const UV_READABLE = 1;
const UV_WRITABLE = 2;
const UV_DISCONNECT = 4;

/** The events someone is parked on, besides `flags`. */
function waitedFor(poller: UnixPoller, flags: number): number {
  return flags | (poller.listenerCount('readable') ? UV_READABLE : 0) | (poller.listenerCount('writable') ? UV_WRITABLE : 0) |
    (poller.listenerCount('disconnect') ? UV_DISCONNECT : 0);
}

/**
 * Makes the poller arm every event still waited for (see the module comment). `once()` calls
 * `poll(flag)` before it adds its listener, so the union is the new event and the parked ones.
 * After an event fires, the native side re-arms every event ever asked for except the one that
 * fired, a superset of the waiters, so nothing is lost there (at worst one spurious wake).
 */
function armAllWaiters(poller: UnixPoller): void {
  const poll = poller.poll.bind(poller);
  poller.poll = (flags = 0) => poll(waitedFor(poller, flags));
}

/** The binding interface's rule: a read ended by close() fails with `canceled`, which serialport does not treat as a disconnect. */
function canceled(): Error {
  return Object.assign(new Error('Port is not open'), { canceled: true });
}

const RETRY = new Set(['EAGAIN', 'EWOULDBLOCK', 'EINTR']);

async function readUntilHangUp(port: UnixPort, buffer: Buffer, offset: number, length: number): Promise<{ buffer: Buffer; bytesRead: number }> {
  for (;;) {
    if (!port.isOpen || port.fd === null) throw canceled();
    let bytesRead: number;
    try {
      bytesRead = readSync(port.fd, buffer, offset, length, null);
    } catch (err) {
      // Anything but "no data yet" (EIO, ENXIO, EBADF...) goes to serialport, which reports a
      // disconnect unless the port is being closed; same as bindings-cpp.
      if (!RETRY.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
      if (!port.isOpen) throw canceled();
      // Parked until readable; a hang-up while parked rejects here (POLLERR), close() cancels.
      await new Promise<void>((resolve, reject) => port.poller.once('readable', (e) => (e ? reject(e) : resolve())));
      continue;
    }
    if (bytesRead > 0) return { buffer, bytesRead };
    // A read racing our own close() can see 0 too; that is a cancel, not a lost line.
    if (!port.isOpen) throw canceled();
    throw Object.assign(new Error(`end of file on ${port.openOptions.path}: the tty hung up (device unplugged or the other end of the pty closed)`), { code: 'EIO', disconnect: true });
  }
}

/** Parks until the port is writable; a hang-up while parked rejects, close() cancels. */
function writable(port: UnixPort): Promise<void> {
  return new Promise<void>((resolve, reject) => port.poller.once('writable', (e) => (e ? reject(e) : resolve())));
}

/** bindings-cpp's unixWrite without the thread pool: write(2) until all is out, parking on EAGAIN. */
async function writeAll(port: UnixPort, buffer: Buffer): Promise<void> {
  let at = 0;
  port.writeProgressAt = performance.now();
  while (at < buffer.length) {
    if (!port.isOpen || port.fd === null) throw new Error('Port is not open');
    try {
      const n = writeSync(port.fd, buffer, at, buffer.length - at);
      if (n > 0) port.writeProgressAt = performance.now();
      at += n;
      continue;
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { disconnect?: boolean };
      if (!RETRY.has(e.code ?? '')) {
        // As bindings-cpp: a closed fd or a vanished device is a disconnect.
        if (e.code === 'EBADF' || e.code === 'ENXIO' || e.code === 'EIO' || e.code === 'UNKNOWN') e.disconnect = true;
        throw e;
      }
    }
    await writable(port);
  }
}

/**
 * How long the write in progress on `port` has gone without the tty taking a byte (ms), or
 * undefined when no write is in progress or the port is not one of this binding's. A device that
 * takes nothing for seconds has stopped reading (flow control held, hung firmware); a slow one
 * still takes bytes, however long the whole request lasts.
 */
export function writeStalledMs(port: BindingPort | null | undefined, now = performance.now()): number | undefined {
  if (!port || !isUnixPort(port) || !port.writeOperation || port.writeProgressAt === undefined) return undefined;
  return now - port.writeProgressAt;
}

/** Wraps a bindings-cpp binding so its Unix ports report a hang-up seen by read(2) and wake every parked waiter (see the module comment). */
export function withHangUpDetection(inner: BindingInterface): BindingInterface {
  return {
    list: () => inner.list(),
    async open(options) {
      const port = await inner.open(options);
      if (!isUnixPort(port)) return port;
      armAllWaiters(port.poller);
      port.write = (buffer: Buffer) => {
        if (!port.isOpen) return Promise.reject(new Error('Port is not open'));
        const op = buffer.length ? writeAll(port, buffer) : Promise.resolve();
        const done = () => {
          if (port.writeOperation === op) port.writeOperation = null;
        };
        port.writeOperation = op;
        op.then(done, done);
        return op;
      };
      if (port.openOptions.vmin === 0) return port;
      // Replace the one method on the instance rather than wrapping the whole port: serialport
      // and bindings-cpp keep using the same object (fd, poller, writeOperation) as before.
      port.read = (buffer, offset, length) => readUntilHangUp(port, buffer, offset, length);
      return port;
    },
  };
}

/** The OS binding with hang-up detection: the default binding of SerialLineTransport and of the pty emulator. */
export const ttyBinding: BindingInterface = withHangUpDetection(SerialPort.binding as unknown as BindingInterface);
