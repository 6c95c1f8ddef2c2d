/**
 * Puts an emulated instrument on a real tty: it opens one end of a pty pair (e.g. made by
 * `socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B`) with the OS serialport binding and
 * answers what the driver writes on the other end. The driver side is then byte-for-byte what it
 * would be with a USB-serial instrument.
 */
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
