/**
 * Test helpers for the emulated lab: a sifting-style tally of gains and error rates per intensity
 * computed from the tags alone (slot from the documented clock model, Alice's choice regenerated
 * from the seed, Bob's basis from his detector or his modulator seed), as a downstream stage would.
 */
import { aliceChoice, bobBasisChoice } from '../lab/alice.ts';
import { FIBRE_DELAY_PS_PER_KM, type EmulatedLink, type LinkBatch } from '../lab/link.ts';
import { periodPs, type LinkPreset } from '../lab/presets.ts';
import { choiceBasis, choiceBit, choiceIntensity } from '../lab/types.ts';

/**
 * Pulse slot of a tag, inverting t_B = (1 + drift)(kT + fibreDelay) + offset + delay[ch] (docs/lab.md)
 * from the preset's nominal parameters, to the nearest slot.
 */
export function slotOfTag(preset: LinkPreset, timePs: number, channel: number): number {
  const T = periodPs(preset);
  const fibre = Math.round(preset.distanceKm * FIBRE_DELAY_PS_PER_KM);
  const t = (timePs - preset.clock.offsetPs - preset.channelDelaysPs[channel]) / (1 + preset.clock.driftPpm * 1e-6);
  return Math.round((t - fibre) / T);
}

export interface Tally {
  pulses: number;
  /** Slots with at least one click, per intensity. */
  clickedSlots: [number, number, number];
  /** Clicked slots where Bob's basis equals Alice's, per intensity. */
  matched: [number, number, number];
  /** Errors among matched (a double click with both bits counts 1/2, the squashing model). */
  errors: [number, number, number];
  /** Tags whose time-derived slot disagreed with the emulator's truthSlot. */
  slotMismatches: number;
  tags: number;
  /** Slots with more than one click (double clicks). */
  multiClicks: number;
}

export function newTally(): Tally {
  return { pulses: 0, clickedSlots: [0, 0, 0], matched: [0, 0, 0], errors: [0, 0, 0], slotMismatches: 0, tags: 0, multiClicks: 0 };
}

/** Adds one batch to the tally. `preset` must be link.preset (distance etc. as run). */
export function tallyBatch(link: EmulatedLink, b: LinkBatch, tally: Tally): void {
  const p = link.preset;
  const n = b.tags.timePs.length;
  tally.pulses += b.pulses;
  const slots = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const s = slotOfTag(p, Number(b.tags.timePs[i]), b.tags.channel[i]);
    if (s !== b.truthSlot[i]) tally.slotMismatches++;
    slots[i] = s;
  }
  tallyClicks(p, link.seed, link.bobSeed, slots, b.tags.channel, tally);
}

/**
 * Adds clicks given as (slot, channel) pairs, in any order, to the tally: per slot, Alice's choice
 * is regenerated from `seed`, Bob's basis comes from his active modulator (`bobSeed`) or from
 * the detectors that clicked (passive), and bits are compared the way sifting squashes them.
 */
export function tallyClicks(p: LinkPreset, seed: bigint, bobSeed: bigint, slots: Float64Array, channels: Uint8Array, tally: Tally): void {
  const n = slots.length;
  tally.tags += n;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, c) => slots[a] - slots[c]);
  const byChannel = new Map(p.detectors.map((m) => [m.channel, m]));
  for (let g = 0; g < n;) {
    const s = slots[order[g]];
    let bitsSeen = 0; // bit0: saw bit 0, bit1: saw bit 1
    let basesSeen = 0;
    let h = g;
    for (; h < n && slots[order[h]] === s; h++) {
      const m = byChannel.get(channels[order[h]])!;
      bitsSeen |= 1 << m.bit;
      basesSeen |= 1 << m.basis;
    }
    if (h - g > 1) tally.multiClicks++;
    g = h;
    const c = aliceChoice(p, seed, s);
    const i = choiceIntensity(c);
    tally.clickedSlots[i]++;
    let bobBasis: number;
    if (p.bobBasisChoice === 'active') bobBasis = bobBasisChoice(p, bobSeed, s);
    else if (basesSeen === 3) continue; // passive cross-basis double click: no basis, discarded by sifting
    else bobBasis = basesSeen === 1 ? 0 : 1;
    if (bobBasis !== choiceBasis(c)) continue;
    tally.matched[i]++;
    if (bitsSeen === 3) tally.errors[i] += 0.5;
    else if ((bitsSeen === 1 ? 0 : 1) !== choiceBit(c)) tally.errors[i] += 1;
  }
}

/** Runs `pulses` pulses in batches of `batch` and tallies them. */
export function runTally(link: EmulatedLink, pulses: number, batch = 50_000_000): Tally {
  const tally = newTally();
  for (let done = 0; done < pulses;) {
    const k = Math.min(batch, pulses - done);
    tallyBatch(link, link.nextPulses(k), tally);
    done += k;
  }
  return tally;
}

/**
 * Two-sample z of proportions x1/n1 and x2/n2 (pooled variance); 0 when both are empty.
 */
export function twoSampleZ(x1: number, n1: number, x2: number, n2: number): number {
  const p = (x1 + x2) / (n1 + n2);
  const sd = Math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2));
  return sd > 0 ? (x1 / n1 - x2 / n2) / sd : 0;
}

/** |x − expected| in units of the binomial standard deviation sqrt(p(1−p)/n) at p = expected. */
export function zScore(successes: number, trials: number, expected: number): number {
  const sd = Math.sqrt((expected * (1 - expected)) / trials);
  return (successes / trials - expected) / sd;
}
