/// <reference types="w3c-web-usb" />
/**
 * USB transport for time-taggers: bulk IN transfers carrying 16-byte tag records (see ../tags.ts)
 * and vendor control transfers for settings and identity.
 *
 * The transport talks to a `UsbBulkDevice` (types.ts), the few operations it needs. Real hardware:
 * `openUsbBulkDevice(vid, pid)` wraps the `usb` package's WebUSB device. Emulation: the emulated
 * tagger (emulated/usb-tagger.ts) implements `UsbBulkDevice` at the transfer level, and replay
 * (record.ts) serves a recorded file the same way. The transport and driver are identical in all
 * three cases.
 *
 * Errors: a vanished device is TransportError('DISCONNECTED'); a bulk transfer that delivers no
 * data within the timeout is TimeoutError('NO_DATA') (the driver treats it as an empty batch, a
 * tagger with no input is normal); anything else from the device is TransportError('USB_ERROR').
 */
import { usb } from 'usb';
import { TimeoutError, TransportError } from '../../errors.ts';
import type { UsbSettings } from '../profile.ts';
import type { UsbBulkDevice, UsbTransportLike } from '../types.ts';

type WebUsbDevice = NonNullable<Awaited<ReturnType<typeof usb.findDeviceByIds>>>;

function isGone(err: unknown): boolean {
  const m = String((err as Error)?.message ?? err);
  return /NO_DEVICE|disconnected|not found|ENODEV|unplugged|EIO/i.test(m);
}

/** Maps USB-level failures to the node's error classes. */
export function usbError(what: string, err: unknown): Error {
  if (err instanceof TimeoutError || err instanceof TransportError) return err;
  if ((err as { code?: unknown })?.code === 'END_OF_STREAM') return new TransportError('END_OF_STREAM', `${what}: ${(err as Error).message}.`, { cause: err });
  if (/TIMED_OUT|ETIMEDOUT/i.test(String((err as Error)?.message ?? err))) return new TimeoutError('NO_DATA', `${what}: no data within the transfer timeout.`, { cause: err });
  if (isGone(err)) return new TransportError('DISCONNECTED', `${what}: the USB device went away (${(err as Error).message}). Check the cable; the driver will try to reopen it.`, { cause: err });
  return new TransportError('USB_ERROR', `${what}: ${(err as Error)?.message ?? String(err)}.`, { cause: err });
}

export class UsbTransport implements UsbTransportLike {
  readonly kind = 'usb' as const;
  readonly description: string;
  private open_ = false;

  constructor(
    readonly device: UsbBulkDevice,
    readonly settings: UsbSettings,
  ) {
    this.description = `usb ${device.vendorId.toString(16).padStart(4, '0')}:${device.productId.toString(16).padStart(4, '0')}`;
  }

  get isOpen(): boolean {
    return this.open_;
  }

  async open(): Promise<void> {
    if (this.open_) return;
    try {
      await this.device.open();
      await this.device.claim(this.settings.interface);
    } catch (err) {
      throw usbError(`opening ${this.description}`, err);
    }
    this.open_ = true;
  }

  async close(): Promise<void> {
    if (!this.open_) return;
    this.open_ = false;
    await this.device.release(this.settings.interface).catch(() => undefined);
    await this.device.close().catch(() => undefined);
  }

  private ensureOpen(what: string): void {
    if (!this.open_) throw new TransportError('NOT_CONNECTED', `${this.description} is not open (${what}). Open the device first.`);
  }

  /** One bulk IN transfer (`length` bytes at most; default the profile's transferBytes). */
  async bulkIn(length = this.settings.transferBytes): Promise<Uint8Array> {
    this.ensureOpen('bulk read');
    try {
      return await this.device.bulkIn(this.settings.endpoint, length, this.settings.timeoutMs);
    } catch (err) {
      const e = usbError(`bulk IN on ${this.description}`, err);
      if (e instanceof TransportError && e.code === 'DISCONNECTED') this.open_ = false;
      throw e;
    }
  }

  async controlOut(request: number, value: number, index: number, data: Uint8Array): Promise<void> {
    this.ensureOpen(`control request ${request}`);
    try {
      await this.device.controlOut(request, value, index, data);
    } catch (err) {
      throw usbError(`control request ${request} to ${this.description}`, err);
    }
  }

  async controlIn(request: number, value: number, index: number, length: number): Promise<Uint8Array> {
    this.ensureOpen(`control request ${request}`);
    try {
      return await this.device.controlIn(request, value, index, length);
    } catch (err) {
      throw usbError(`control request ${request} from ${this.description}`, err);
    }
  }
}

/**
 * `UsbBulkDevice` over the `usb` package (WebUSB API, libusb underneath). WebUSB transfers cannot
 * be cancelled, so a bulk transfer that outlives its timeout stays in flight and the next
 * `bulkIn` picks up its result instead of queueing a second one.
 */
export class WebUsbBulkDevice implements UsbBulkDevice {
  private inflight: Promise<Uint8Array> | undefined;
  constructor(private readonly dev: WebUsbDevice) {}
  get vendorId(): number {
    return this.dev.vendorId;
  }
  get productId(): number {
    return this.dev.productId;
  }
  async open(): Promise<void> {
    await this.dev.open();
    if (this.dev.configuration === null || this.dev.configuration === undefined) await this.dev.selectConfiguration(1);
  }
  async claim(iface: number): Promise<void> {
    await this.dev.claimInterface(iface);
  }
  async bulkIn(endpoint: number, length: number, timeoutMs: number): Promise<Uint8Array> {
    this.inflight ??= this.dev.transferIn(endpoint & 0x0f, length).then((r) => {
      if (r.status !== 'ok') throw new Error(`bulk transfer status ${r.status}`);
      const dv = r.data!;
      return new Uint8Array(dv.buffer, dv.byteOffset, dv.byteLength);
    });
    const mine = this.inflight;
    let timer: NodeJS.Timeout | undefined;
    try {
      const out = await Promise.race([
        mine,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new TimeoutError('NO_DATA', `no tag data within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      this.inflight = undefined;
      return out;
    } catch (err) {
      if (!(err instanceof TimeoutError)) this.inflight = undefined;
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }
  async controlOut(request: number, value: number, index: number, data: Uint8Array): Promise<void> {
    const r = await this.dev.controlTransferOut({ requestType: 'vendor', recipient: 'device', request, value, index }, data);
    if (r.status !== 'ok') throw new Error(`control transfer status ${r.status}`);
  }
  async controlIn(request: number, value: number, index: number, length: number): Promise<Uint8Array> {
    const r = await this.dev.controlTransferIn({ requestType: 'vendor', recipient: 'device', request, value, index }, length);
    if (r.status !== 'ok' || !r.data) throw new Error(`control transfer status ${r.status}`);
    return new Uint8Array(r.data.buffer, r.data.byteOffset, r.data.byteLength);
  }
  async release(iface: number): Promise<void> {
    await this.dev.releaseInterface(iface);
  }
  onDisconnect(listener: () => void): () => void {
    const on = (ev: Event) => {
      if ((ev as Event & { device?: unknown }).device === this.dev) listener();
    };
    usb.addEventListener('disconnect', on);
    return () => usb.removeEventListener('disconnect', on);
  }
  async close(): Promise<void> {
    await this.dev.close();
  }
}

/** Finds a real USB device by ids; TransportError('NOT_FOUND') when none is plugged in. */
export async function openUsbBulkDevice(vendorId: number, productId: number): Promise<UsbBulkDevice> {
  let dev: WebUsbDevice | undefined;
  try {
    dev = await usb.findDeviceByIds(vendorId, productId);
  } catch (err) {
    throw usbError('listing USB devices', err);
  }
  if (!dev) {
    const id = `${vendorId.toString(16).padStart(4, '0')}:${productId.toString(16).padStart(4, '0')}`;
    throw new TransportError('NOT_FOUND', `no USB device ${id} found. Check the cable, 'lsusb', and udev permissions for this vendor id.`);
  }
  return new WebUsbBulkDevice(dev);
}
