/**
 * The wire side of ETSI 004 application streams (etsi004-app.ts): the stream record the KMSs
 * exchange and its checks, the state file's records, group ranges, the answer shape (ETSI status
 * in the body, HTTP code from it) and the key_IDs and holder of a stream's keys.
 */
import type { Res } from './http.ts';
import { deriveKeyId } from './keyid.ts';
import { STATUS, QOS_FIELDS, isUuid, type Qos } from './types.ts';

export interface Item {
  index: number;
  digest: string;
}

export type Side = 'source' | 'destination';

/** What both KMSs know of a stream (sent to the peer KMS when it opens). */
export interface StreamBase {
  id: string;
  source: string;
  destination: string;
  qos: Qos;
  /** The link stream and its chunk size. */
  sid: string;
  chunkBytes: number;
  connected: Record<Side, boolean>;
}

export interface WireStream extends StreamBase {
  ttlLeftMs: number;
}

export const HOLDER = (id: string) => `qkd004:${id}`;
/** key_ID of key `index` of application stream `id` (a domain of its own: never a link chunk's). */
export const appKeyId = (id: string, index: number) => deriveKeyId(`qkd004:${id}`, index);
export const PEER_PATH = '/api/v1/kms-peer/qkd004';

export const httpOf = (status: number): number =>
  status === STATUS.OK || status === STATUS.PEER_NOT_CONNECTED ? 200
    : status === STATUS.INSUFFICIENT_KEY || status === STATUS.NO_QKD_CONNECTION || status === STATUS.TIMEOUT ? 503 : 400;

export const answer = (status: number, body: Record<string, unknown> = {}, http = httpOf(status)): Res =>
  ({ status: http, body: { status, ...body } });

/** A stream record from the peer KMS, checked field by field (undefined if malformed). */
export function checkWire(v: unknown): WireStream | undefined {
  const w = v as WireStream;
  const pos = (x: unknown) => Number.isInteger(x) && (x as number) > 0;
  if (!w || typeof w !== 'object' || !isUuid(w.id) || typeof w.source !== 'string' || typeof w.destination !== 'string' ||
    typeof w.sid !== 'string' || !pos(w.chunkBytes) || typeof w.ttlLeftMs !== 'number' || !w.qos || typeof w.qos !== 'object' ||
    !pos(w.qos.key_chunk_size) || !QOS_FIELDS.every((f) => f === 'metadata_mimetype' ? typeof w.qos[f] === 'string'
      : Number.isInteger(w.qos[f])) || !w.connected || typeof w.connected !== 'object') return undefined;
  return { ...w, id: w.id.toLowerCase(), connected: { source: w.connected.source === true, destination: w.connected.destination === true } };
}

/** One stream of a previous run, as `save` wrote it. */
export interface Leftover {
  id: string;
  sid: string;
  keysPerGroup: number;
  chunksPerGroup: number;
  spare: Item[];
  groups: [number, Item[]][];
  /** Every group cut here, as [first, last] ranges. */
  cut: [number, number][];
  /** Cut groups with keys not handed out yet (erased at the restart). */
  pending: number[];
}

/** Sorted [first, last] ranges of a set of group numbers (what a close tells the peer: compact). */
export function toRanges(xs: Iterable<number>): [number, number][] {
  const out: [number, number][] = [];
  for (const x of [...xs].sort((a, b) => a - b)) {
    const last = out[out.length - 1];
    if (last && x === last[1] + 1) last[1] = x;
    else if (!last || x > last[1]) out.push([x, x]);
  }
  return out;
}

export function inRanges(r: [number, number][], x: number): boolean {
  return r.some(([a, b]) => x >= a && x <= b);
}

export function checkRanges(v: unknown): [number, number][] {
  return Array.isArray(v) ? v.filter((p): p is [number, number] => Array.isArray(p) && p.length === 2 &&
    Number.isInteger(p[0]) && Number.isInteger(p[1])) : [];
}

export function checkItems(v: unknown): Item[] | undefined {
  if (!Array.isArray(v) || !v.every((i) => Number.isInteger(i?.index) && typeof i.digest === 'string' &&
    /^[0-9a-f]{64}$/.test(i.digest))) return undefined;
  return v as Item[];
}
