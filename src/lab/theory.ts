/**
 * The standard decoy-state BB84 model of Ma, Qi, Zhao and Lo, "Practical decoy state for quantum
 * key distribution", Phys. Rev. A 72, 012326 (2005) (cited as [Ma05] with its equation numbers),
 * used as the reference the emulator is tested against and as the asymptotic key-rate yardstick.
 *
 *   η      = η_Bob · 10^(−αL/10)                                  [Ma05 eq. 2–3]
 *   Q_μ    = Y₀ + 1 − e^(−ημ)                                      [Ma05 eq. 7]
 *   E_μQ_μ = e₀Y₀ + e_d(1 − e^(−ημ)),  e₀ = 1/2                   [Ma05 eq. 8]
 *   Y₁     = Y₀ + η  (≈ Y₀ + η − Y₀η),  Q₁ = Y₁ μ e^(−μ)          [Ma05 eq. 4–5]
 *   e₁     = (e₀Y₀ + e_d η) / Y₁                                   [Ma05 eq. 6]
 *   R      = q{ −Q_μ f(E_μ) H₂(E_μ) + Q₁[1 − H₂(e₁)] }             [Ma05 eq. 1, GLLP]
 *
 * Q and E are "per pulse of that intensity": the probability that Bob's measuring detector pair
 * clicks, and the error rate of those clicks when Alice's and Bob's bases agree. They describe the
 * emulator exactly (up to O(Y₀η) and three-photon squashing terms, far below test error bars)
 * when Bob's basis choice is active, there is no dead time or afterpulsing, and no Eve.
 *
 * q (sifting/key fraction per pulse sent) is taken as p_signal · p_Z^Alice · p_Z^Bob: the key
 * comes from signal pulses measured in Z by both (efficient BB84, Lo–Chau–Ardehali), with the
 * phase error estimated from X, which asymptotically costs nothing. Ma05 used q = 1/2 for
 * symmetric BB84 with every pulse counted; divide by our q and multiply by 1/2 to compare.
 */
import type { IntensitySet, LinkPreset } from './presets.ts';

export function h2(p: number): number {
  if (p <= 0 || p >= 1) return 0;
  return -p * Math.log2(p) - (1 - p) * Math.log2(1 - p);
}

/** Overall transmittance η = η_Bob · 10^(−αL/10) (fibre and Bob's optics and detectors). */
export function transmittance(preset: LinkPreset, distanceKm: number): number {
  return preset.etaBob * Math.pow(10, (-preset.fibreLossDbPerKm * distanceKm) / 10);
}

export interface DecoyModel {
  eta: number;
  gain: IntensitySet;
  errorRate: IntensitySet;
  q1: number;
  e1: number;
  y1: number;
  /** Secret bits per pulse sent (all intensities), asymptotic; negative means no key. */
  asymptoticKeyRatePerPulse: number;
  /** The factor q used in the rate (see module doc). */
  q: number;
  /** Error-correction inefficiency f used in the rate. */
  f: number;
}

/**
 * Ma05 model of `preset` at `distanceKm`. `f` is the error-correction inefficiency (default 1.16,
 * the value the GYS-parameter plots of that literature commonly use is 1.16–1.22).
 */
export function decoyModel(preset: LinkPreset, distanceKm: number, opts: { f?: number } = {}): DecoyModel {
  const f = opts.f ?? 1.16;
  const eta = transmittance(preset, distanceKm);
  const y0 = preset.y0;
  const ed = preset.misalignment;
  const one = (mu: number): { q: number; e: number } => {
    const signalPart = 1 - Math.exp(-eta * mu);
    const q = y0 + signalPart;
    const e = q > 0 ? (0.5 * y0 + ed * signalPart) / q : 0.5;
    return { q, e };
  };
  const s = one(preset.intensities.signal);
  const d = one(preset.intensities.decoy);
  const v = one(preset.intensities.vacuum);
  const mu = preset.intensities.signal;
  const y1 = y0 + eta;
  const q1 = y1 * mu * Math.exp(-mu);
  const e1 = (0.5 * y0 + ed * eta) / y1;
  const q = preset.intensityProbs.signal * preset.aliceBasisProbZ * preset.bobBasisProbZ;
  const r = q * (-s.q * f * h2(s.e) + q1 * (1 - h2(e1)));
  return {
    eta,
    gain: { signal: s.q, decoy: d.q, vacuum: v.q },
    errorRate: { signal: s.e, decoy: d.e, vacuum: v.e },
    q1, e1, y1,
    asymptoticKeyRatePerPulse: r,
    q, f,
  };
}
