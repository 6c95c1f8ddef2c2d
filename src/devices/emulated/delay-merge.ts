/**
 * The emulated tagger's per-channel delays when they differ: tags may swap order, and the output
 * must stay in time order. Each channel's tags keep their order (same shift), so a pull's output
 * is a k-way merge of the per-channel sequences and of the tags held from the previous pull. Only
 * tags no later pull can precede are released: a later raw tag is >= the last raw time seen, so
 * its output is >= that + the smallest delay. Ties: held tags first, then the channels in the
 * order they first appear in the pull.
 *
 * Two implementations, the same bit for bit (test/devices/tags-native.test.ts): `nativeDelayMerge`
 * (Rust, native/core/src/lab_tagger.rs `DelayMerger`; the tagger's default) and `DelayMergeTs`,
 * the TypeScript reference (the tagger's `nativeRecords: false`).
 */
import { native } from '../../core/native.ts';
import { callNative } from '../../core/native-call.ts';
import { TAG_RECORD_BYTES } from '../tags.ts';

export interface DelayMerge {
  /** One pull: raw tags in time order (at least one) and each channel's delay; the time-tag
   * records released (in time order; empty when every tag is held). */
  push(times: BigInt64Array, chans: Uint8Array, delays: readonly bigint[]): Uint8Array;
  /** Every held tag as records (delays became equal, an overflow, a stop). */
  flush(): Uint8Array;
  /** Drops the held tags (the stream stopped). */
  clear(): void;
  /** Tags held back. */
  readonly held: number;
}

/** The Rust merge. */
export function nativeDelayMerge(): DelayMerge {
  const m = callNative(() => new (native().TagDelayMerger)());
  return {
    push: (times, chans, delays) => callNative(() => m.push(times, chans, BigInt64Array.from(delays))),
    flush: () => callNative(() => m.flush()),
    clear: () => m.clear(),
    get held() {
      return m.held();
    },
  };
}

/**
 * The TypeScript reference. Arithmetic is on doubles relative to a 64-bit base (exact below 2^53
 * ps of span, i.e. far beyond one pull) with the base re-set every pull, so no BigInt is made per
 * tag and the times stay exact however long the run.
 */
export class DelayMergeTs implements DelayMerge {
  /** Held tags: output times relative to the 64-bit base (baseHi * 2^32 + baseLo), sorted. */
  private heldT = new Float64Array(0);
  private heldC = new Uint8Array(0);
  private baseHi = 0;
  private baseLo = 0;

  get held(): number {
    return this.heldT.length;
  }

  clear(): void {
    this.heldT = new Float64Array(0);
    this.heldC = new Uint8Array(0);
  }

  flush(): Uint8Array {
    const out = this.encodeRel(this.heldT, this.heldC, this.heldT.length);
    this.clear();
    return out;
  }

  push(times: BigInt64Array, chans: Uint8Array, delays: readonly bigint[]): Uint8Array {
    const n = times.length;
    if (!n) return new Uint8Array(0);
    const t32 = new Int32Array(times.buffer, times.byteOffset, n * 2);
    const dl = delays.map(Number);
    // Re-base on the earliest held tag, or on the first new tag.
    if (this.heldT.length) {
      const shift = this.heldT[0];
      this.addToBase(shift);
      for (let i = 0; i < this.heldT.length; i++) this.heldT[i] -= shift;
    } else {
      this.baseHi = t32[1];
      this.baseLo = t32[0] >>> 0;
    }
    const bHi = this.baseHi;
    const bLo = this.baseLo;
    // Per-channel output sequences (relative to the base), each sorted.
    const counts = new Map<number, number>();
    for (let i = 0; i < n; i++) counts.set(chans[i], (counts.get(chans[i]) ?? 0) + 1);
    const lists: { t: Float64Array; ch: number; n: number }[] = [];
    const listOf = new Map<number, { t: Float64Array; ch: number; n: number }>();
    for (const [c, k] of counts) {
      const l = { t: new Float64Array(k), ch: c, n: 0 };
      lists.push(l);
      listOf.set(c, l);
    }
    for (let i = 0, j = 0; i < n; i++, j += 2) {
      const c = chans[i];
      const l = listOf.get(c)!;
      l.t[l.n++] = (t32[j + 1] - bHi) * 4294967296 + ((t32[j] >>> 0) - bLo) + (dl[c] ?? 0);
    }
    const lastRaw = (t32[2 * n - 1] - bHi) * 4294967296 + ((t32[2 * n - 2] >>> 0) - bLo);
    const horizon = lastRaw + Math.min(...dl);
    // k-way merge (k <= channels + 1): held tags first among equals, then by channel order.
    const total = n + this.heldT.length;
    const outT = new Float64Array(total);
    const outC = new Uint8Array(total);
    const srcT: Float64Array[] = [this.heldT, ...lists.map((l) => l.t)];
    const srcC: (Uint8Array | number)[] = [this.heldC, ...lists.map((l) => l.ch)];
    const pos = new Int32Array(srcT.length);
    for (let o = 0; o < total; o++) {
      let best = -1;
      let bestT = Infinity;
      for (let k = 0; k < srcT.length; k++) {
        const p = pos[k];
        if (p < srcT[k].length && srcT[k][p] < bestT) {
          bestT = srcT[k][p];
          best = k;
        }
      }
      const c = srcC[best];
      outC[o] = typeof c === 'number' ? c : c[pos[best]];
      outT[o] = bestT;
      pos[best]++;
    }
    let cut = 0;
    while (cut < total && outT[cut] <= horizon) cut++;
    const released = this.encodeRel(outT, outC, cut);
    this.heldT = outT.slice(cut);
    this.heldC = outC.slice(cut);
    return released;
  }

  private addToBase(rel: number): void {
    const hi = Math.floor(rel / 4294967296);
    let lo = this.baseLo + (rel - hi * 4294967296);
    let carry = 0;
    if (lo >= 4294967296) {
      lo -= 4294967296;
      carry = 1;
    }
    this.baseLo = lo;
    this.baseHi = (this.baseHi + hi + carry) | 0;
  }

  /** The first `count` tags given relative to the base, as time-tag records. */
  private encodeRel(rel: Float64Array, ch: Uint8Array, count: number): Uint8Array {
    const bytes = new Uint8Array(count * TAG_RECORD_BYTES);
    const o32 = new Int32Array(bytes.buffer);
    const bHi = this.baseHi;
    const bLo = this.baseLo;
    for (let i = 0, j = 0; i < count; i++, j += 4) {
      const r = rel[i];
      const hi = Math.floor(r / 4294967296);
      let lo = bLo + (r - hi * 4294967296);
      let carry = 0;
      if (lo >= 4294967296) {
        lo -= 4294967296;
        carry = 1;
      }
      o32[j] = 0;
      o32[j + 1] = ch[i];
      o32[j + 2] = lo | 0;
      o32[j + 3] = (bHi + hi + carry) | 0;
    }
    return bytes;
  }
}
