/**
 * Wire format of the authenticated classical channel (one ZeroMQ multipart message each):
 *
 * ```
 *  frame 0  aad      msgpack array, authenticated, never encrypted:
 *                    [version=1, direction (0 A->B, 1 B->A), seq, senderInstance: bin16,
 *                     receiverInstance: bin16 | bin0, kind, type: str, msgId, blockId (-1: none)]
 *  frame 1  payload  msgpack of the message body (Uint8Array fields travel as bin), authenticated
 *  frame 2  tag      16 bytes: H_k(aad, payload) xor pad(direction, seq)   (native/auth)
 * ```
 * `seq` is the sender's per-direction sequence number; it selects the one-time pad, so both ends
 * agree on the key bits without exchanging offsets. Instances are random 16-byte ids drawn at each
 * process start: together they name the session, so a message from or for an earlier incarnation
 * is recognised as stale even if its tag is valid.
 */
import { Packr } from 'msgpackr';
import { ProtocolError } from '../errors.ts';

export const CHANNEL_VERSION = 1;

export const KIND = {
  REQ: 0,
  REP: 1,
  ERR: 2,
  HELLO: 3,
  HELLO_ACK: 4,
  ABORT: 5,
} as const;
export type Kind = (typeof KIND)[keyof typeof KIND];

export interface Aad {
  version: number;
  direction: 0 | 1;
  seq: number;
  sender: Uint8Array;
  receiver: Uint8Array;
  kind: Kind;
  type: string;
  msgId: number;
  /** -1 when the message belongs to no block. */
  blockId: number;
  /** REP/ERR: sequence number of the request attempt answered; -1 otherwise. */
  ref: number;
}

const aadPackr = new Packr({ useRecords: false });
export const payloadPackr = new Packr({ useRecords: false });

export function encodeAad(a: Aad): Buffer {
  return Buffer.from(aadPackr.pack([a.version, a.direction, a.seq, a.sender, a.receiver, a.kind, a.type, a.msgId, a.blockId, a.ref]));
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);

/**
 * Parses the (not yet authenticated) aad. Only the fields needed to pick the pad are trusted
 * before the tag is checked; the rest is used only after verification succeeded.
 */
export function decodeAad(buf: Uint8Array): Aad {
  let a: unknown;
  try {
    a = aadPackr.unpack(buf);
  } catch (cause) {
    throw new ProtocolError('CHANNEL_MALFORMED', 'Channel message header is not valid msgpack.', { cause });
  }
  if (!Array.isArray(a) || a.length < 1) throw new ProtocolError('CHANNEL_MALFORMED', 'Channel message header is not a versioned array.');
  if (a[0] !== CHANNEL_VERSION) {
    throw new ProtocolError('CHANNEL_VERSION', `Channel protocol version ${String(a[0])} is not supported (this node speaks ${CHANNEL_VERSION}): run both nodes from compatible releases.`);
  }
  const [, dir, seq, sender, receiver, kind, type, msgId, blockId, ref] = a;
  if (a.length !== 10 || !isInt(ref) || (dir !== 0 && dir !== 1) || !isInt(seq) || seq < 0 || !(sender instanceof Uint8Array) || sender.length !== 16 ||
    !(receiver instanceof Uint8Array) || (receiver.length !== 16 && receiver.length !== 0) || !isInt(kind) || kind < 0 || kind > 5 ||
    typeof type !== 'string' || !isInt(msgId) || !isInt(blockId)) {
    throw new ProtocolError('CHANNEL_MALFORMED', 'Channel message header has wrong fields.');
  }
  return { version: 1, direction: dir, seq, sender, receiver, kind: kind as Kind, type, msgId, blockId, ref };
}
