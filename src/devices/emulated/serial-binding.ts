/**
 * A serialport binding whose ports are emulated instruments (zwave-js's mock-port idea): the
 * driver opens `emulated:<name>` through the real SerialPortStream + DelimiterParser + transport
 * stack, and whatever it writes is answered by the instrument on the other side.
 *
 * Ports are registered per binding instance (`binding.attach(name, instrument)`), so parallel
 * tests never share one. `unplug(name)` makes the in-flight read fail the way a vanished USB-serial
 * adapter does (a non-cancelled error, which serialport reports as a disconnect); `replug(name)`
 * makes the port openable again.
 */
import type { BindingInterface, BindingOpenOptions, BindingPort } from '../transports/serial.ts';
import { ScpiEndpoint, type ScpiInstrument } from './scpi.ts';

interface Slot {
  instrument: ScpiInstrument;
  present: boolean;
  port?: EmulatedPort;
}

class EmulatedPort implements BindingPort {
  isOpen = true;
  private rx: Buffer[] = [];
  private waiter: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private readonly endpoint: ScpiEndpoint;

  constructor(readonly openOptions: Required<BindingOpenOptions>, instrument: ScpiInstrument) {
    // The instrument answers asynchronously, like a device on a wire would.
    this.endpoint = new ScpiEndpoint(instrument, (bytes) => setImmediate(() => this.deliver(bytes)));
  }

  private deliver(bytes: Buffer): void {
    if (!this.isOpen) return;
    this.rx.push(bytes);
    const w = this.waiter;
    this.waiter = undefined;
    w?.resolve();
  }

  private gone = false;

  /**
   * Fails the pending read as a disconnect (an error without `canceled`). The port stays "open"
   * until serialport closes it in reaction, as with a real vanished device.
   */
  unplug(): void {
    this.gone = true;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(new Error('emulated device unplugged (EIO)'));
  }

  async read(buffer: Buffer, offset: number, length: number): Promise<{ buffer: Buffer; bytesRead: number }> {
    while (!this.rx.length) {
      if (this.gone) throw new Error('emulated device unplugged (EIO)');
      if (!this.isOpen) throw Object.assign(new Error('port is closed'), { canceled: true });
      await new Promise<void>((resolve, reject) => (this.waiter = { resolve, reject }));
    }
    const head = this.rx[0];
    const n = Math.min(length, head.length);
    head.copy(buffer, offset, 0, n);
    if (n === head.length) this.rx.shift();
    else this.rx[0] = head.subarray(n);
    return { buffer, bytesRead: n };
  }

  async write(buffer: Buffer): Promise<void> {
    if (this.gone) throw new Error('emulated device unplugged (EIO)');
    if (!this.isOpen) throw Object.assign(new Error('port is closed'), { canceled: true });
    // Copy: serialport may reuse its buffer after write resolves.
    this.endpoint.receive(Buffer.from(buffer));
  }

  async close(): Promise<void> {
    this.isOpen = false;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(Object.assign(new Error('port closed'), { canceled: true }));
  }

  async update(): Promise<void> {}
  async set(): Promise<void> {}
  async get() {
    return { cts: true, dsr: true, dcd: true };
  }
  async getBaudRate() {
    return { baudRate: this.openOptions.baudRate };
  }
  async flush(): Promise<void> {
    this.rx = [];
  }
  async drain(): Promise<void> {}
}

export class EmulatedSerialBinding implements BindingInterface {
  private readonly slots = new Map<string, Slot>();

  /** Registers an instrument under `emulated:<name>`; returns the path to open. */
  attach(name: string, instrument: ScpiInstrument): string {
    const path = `emulated:${name}`;
    this.slots.set(path, { instrument, present: true });
    return path;
  }

  instrument(path: string): ScpiInstrument | undefined {
    return this.slots.get(path)?.instrument;
  }

  unplug(path: string): void {
    const slot = this.slots.get(path);
    if (!slot) return;
    slot.present = false;
    slot.port?.unplug();
    slot.port = undefined;
  }

  replug(path: string): void {
    const slot = this.slots.get(path);
    if (slot) slot.present = true;
  }

  async list() {
    return [...this.slots.entries()].filter(([, s]) => s.present).map(([path]) => ({
      path, manufacturer: 'EmuLab', serialNumber: undefined, pnpId: undefined, locationId: undefined, productId: undefined, vendorId: undefined,
    }));
  }

  async open(options: BindingOpenOptions): Promise<BindingPort> {
    const slot = this.slots.get(options.path);
    if (!slot || !slot.present) throw new Error(`Error: No such file or directory, cannot open ${options.path}`);
    if (slot.port?.isOpen) throw new Error(`Error Resource temporarily unavailable Cannot lock port ${options.path}`);
    const full = { dataBits: 8, lock: true, stopBits: 1, parity: 'none', rtscts: false, xon: false, xoff: false, xany: false, hupcl: true, ...options } as Required<BindingOpenOptions>;
    slot.port = new EmulatedPort(full, slot.instrument);
    return slot.port;
  }
}
