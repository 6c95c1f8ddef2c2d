/**
 * The slow, obviously correct emulator: one loop iteration per pulse, every random variable drawn
 * as the physics states it (Poisson photon number, each photon kept with probability η, each
 * surviving photon routed to a detector, each detector's dark count drawn per gate). No dead
 * time, afterpulsing or jitter (the presets used with it set those to zero or they are ignored).
 *
 * It exists to check the fast event-driven EmulatedLink (test/lab/reference.test.ts compares
 * their statistics) and as the benchmark baseline. It shares only aliceChoices (Alice's choices
 * are defined by that generator) and the preset.
 */
import { aliceChoices, bobBasisChoices, defaultBobSeed } from './alice.ts';
import type { LinkPreset } from './presets.ts';
import { Xoshiro128 } from './rng.ts';
import { transmittance } from './theory.ts';

export interface ReferenceClicks {
  /** Pulse slot of each click (one entry per detector that clicked). */
  slot: Float64Array;
  channel: Uint8Array;
  /** 0 photon (a photon reached that detector, dark count or not), 1 dark only. */
  kind: Uint8Array;
}

/** Simulates pulses [firstPulse, firstPulse + count) pulse by pulse. */
export function referenceClicks(preset: LinkPreset, seed: bigint, firstPulse: number, count: number, rngSeed = seed ^ 0x5eedn): ReferenceClicks {
  const rng = new Xoshiro128(rngSeed, 0x52_45_46_21);
  const eta = transmittance(preset, preset.distanceKm);
  const mus = [preset.intensities.signal, preset.intensities.decoy, preset.intensities.vacuum];
  const expNegMu = mus.map((m) => Math.exp(-m));
  const pDark = 1 - Math.sqrt(1 - preset.y0);
  const choices = aliceChoices(preset, seed, firstPulse, count);
  const bobBases = preset.bobBasisChoice === 'active' ? bobBasisChoices(preset, defaultBobSeed(seed), firstPulse, count) : null;
  const detOf = (basis: number, bit: number): number =>
    preset.detectors.findIndex((m) => (bobBases ? m.bit === bit : m.basis === basis && m.bit === bit));
  const table = [detOf(0, 0), detOf(0, 1), detOf(1, 0), detOf(1, 1)];
  const slots: number[] = [];
  const chans: number[] = [];
  const kinds: number[] = [];
  for (let i = 0; i < count; i++) {
    const c = choices[i];
    const bit = c & 1;
    const basis = (c >> 1) & 1;
    const intensity = (c >> 2) & 3;
    // Poisson photon number (Knuth's product of uniforms)
    let n = 0;
    for (let prod = rng.uniform(); prod > expNegMu[intensity]; prod *= rng.uniform()) n++;
    let sBasis = basis;
    let sBit = bit;
    if (n > 0 && preset.eveFraction > 0 && rng.uniform() < preset.eveFraction) {
      const eb = rng.uniform() < 0.5 ? 0 : 1;
      sBit = eb === basis ? bit : rng.uniform() < 0.5 ? 0 : 1;
      sBasis = eb;
    }
    let photonMask = 0;
    for (let j = 0; j < n; j++) {
      if (rng.uniform() >= eta) continue; // lost in the fibre or Bob's optics/detector
      const g = bobBases ? bobBases[i] : rng.uniform() < preset.bobBasisProbZ ? 0 : 1;
      const out = g === sBasis ? (rng.uniform() < preset.misalignment ? sBit ^ 1 : sBit) : rng.uniform() < 0.5 ? 0 : 1;
      photonMask |= 1 << table[g * 2 + out];
    }
    for (let d = 0; d < preset.detectors.length; d++) {
      const dark = rng.uniform() < pDark;
      if ((photonMask >> d) & 1) { slots.push(firstPulse + i); chans.push(preset.detectors[d].channel); kinds.push(0); }
      else if (dark) { slots.push(firstPulse + i); chans.push(preset.detectors[d].channel); kinds.push(1); }
    }
  }
  return { slot: Float64Array.from(slots), channel: Uint8Array.from(chans), kind: Uint8Array.from(kinds) };
}
