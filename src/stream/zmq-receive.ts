/**
 * One receive on a ZeroMQ socket that rides out zeromq.js's spurious EAGAIN.
 *
 * zeromq.js can reject a waiting receive with EAGAIN although no receive timeout is set: seen on
 * the classical channel's binding side one heartbeat (0.5 s) after a connection came back from a
 * partition. A read loop that took that for "closed" went deaf for good while the peer's
 * handshake and sends looked healthy (CI chaos run, 2026-12-06). Here EAGAIN on an open socket
 * means "nothing yet": wait briefly (so a socket that fails at once does not spin) and receive
 * again. Closing, or any other error, rejects as before.
 */
import type { Socket } from 'zeromq';

export async function receiveOpen(sock: Pick<Socket, 'closed'> & { receive(): Promise<Buffer[]> }, onSpurious?: () => void): Promise<Buffer[]> {
  for (;;) {
    try {
      return await sock.receive();
    } catch (e) {
      if (sock.closed || (e as { code?: string }).code !== 'EAGAIN') throw e;
      onSpurious?.();
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}
