/**
 * Shared vocabulary of the emulated lab. The protocol's part (choice packing, bases, intensities,
 * detector mapping) lives in src/protocol/choices.ts and the tag batch in src/devices/types.ts:
 * the lab reads them like the node does. Re-exported here for the lab's own modules.
 *
 * - Times are integer picoseconds. On the wire and in files: int64. In hot loops: Float64Array of
 *   integers relative to a batch epoch (exact below 2^53 ps = 2.5 h).
 */
export * from '../protocol/choices.ts';
export type { TagBatch } from '../devices/types.ts';
