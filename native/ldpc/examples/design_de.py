#!/usr/bin/env python3
"""Variable-degree distributions for the BSC scored by discretised density evolution of *this*
crate's decoder (design tool for family.rs `DE_DESIGNS`; not used at run time).

Density evolution (Richardson, Urbanke, IEEE Trans. IT 47(2), 2001) on the decoder's own integer
arithmetic (decoder.rs): LLRs in units of 1/12 nat (LLR_SCALE), channel +-quantised_llr(q), variable
to check messages clipped to +-127, the check update the saturating 8-bit box-plus
min(x, y) + (32 - (x + y))+ >> 2 - (32 - |x - y|)+ >> 2 applied along a chain, signs by parity.
Densities live on the 255 integer message values; the check side uses an exact 255x255 lookup table,
the variable side FFT convolutions. Flooding schedule (the decoder is layered: 120 flooding
iterations stand for its 60). A fraction sigma of the positions is shortened (known to Bob: their
edges vanish from the checks, so each other edge of a degree-j check survives with probability
1 - sigma), as the rate adaptation does with s ~ d = n/10. Convergence: node (posterior) error
probability < 1e-6. Efficiency of a design at crossover q: f = (1 - R) / ((1 - sigma) h(q)).

Search: random-perturbation hill climbing on lambda at a fixed rate R and concentrated check degree
dc (so the average variable degree dc (1 - R) is fixed; every candidate is projected back onto
sum lambda = 1, sum lambda_i / i = 1 / (dc (1 - R)), lambda_2 <= STAB / (dc - 1) by an L1 LP).
Score: flooding iterations to convergence at efficiency f (penalised by log10 of the residual error
when it does not converge within ITERS); whenever the best needs fewer than FAST iterations, f is
lowered by 0.005. Deterministic for a given SEED.

Note on lambda_2: with 8-bit messages a saturated wrong check message (about 98 units after a long
box-plus chain) outweighs a degree-2 node's channel LLR, so wrong messages circulate on degree-2
nodes unless lambda_2 (dc - 1) < 1 (BP's bound is 1/B, B = 2 sqrt(q(1-q))); the posteriors stay right
(ch + R - R), so this shows as a message-error floor, not a bit-error floor; STAB bounds lambda_2.

usage: design_de.py eval <rate> <sigma> d:l,d:l,...          DE threshold f* (bisection, 120 its)
       design_de.py climb <rate> <dc> <sigma> <f> <degrees> <lambda0>
       env: SEED (1), STEPS (400), ITERS (120), FAST (70), STAB (3)
"""
import math
import os
import random
import sys

import numpy as np
from scipy.optimize import linprog

M = 127
_A = np.arange(M + 1)
_X, _Y = np.meshgrid(_A, _A, indexing="ij")
_CP = np.maximum(32 - np.minimum(_X + _Y, 255), 0) >> 2
_CM = np.maximum(32 - np.abs(_X - _Y), 0) >> 2
BOXPLUS = np.maximum(np.minimum(_X, _Y) + _CP - _CM, 0)  # decoder.rs `boxplus` on magnitudes
_V = np.arange(-M, M + 1)
_S = np.where(_V < 0, -1, 1)
IDX = (M + (_S[:, None] * _S[None, :]) * BOXPLUS[np.abs(_V)[:, None], np.abs(_V)[None, :]]).ravel()
NF = 1 << 15  # FFT length for the variable-node sums (degrees up to ~120)


def h2(q):
    return -q * math.log2(q) - (1 - q) * math.log2(1 - q)


def qllr(q):
    """lib.rs quantised_llr."""
    return int(min(max(round(12 * math.log((1 - q) / q)), 1), 100))


def q_of(f, rate, sigma):
    """Crossover q at which a rate-R code shortened by sigma runs at efficiency f."""
    y = (1 - rate) / ((1 - sigma) * f)
    lo, hi = 1e-6, 0.5
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if h2(mid) < y else (lo, mid)
    return lo


def rho_dc(dc):
    """Concentrated check degrees (floor / ceil of dc), edge perspective."""
    lo = int(math.floor(dc))
    fr = dc - lo
    if fr < 1e-9:
        return {lo: 1.0}
    e_lo, e_hi = (1 - fr) * lo, fr * (lo + 1)
    return {lo: e_lo / (e_lo + e_hi), lo + 1: e_hi / (e_lo + e_hi)}


def _check_weights(rho, sigma):
    """w[k] = P(an edge's check has k other unshortened edges)."""
    w = np.zeros(max(rho))
    for j, r in rho.items():
        for k in range(j):
            w[k] += r * math.comb(j - 1, k) * (1 - sigma) ** k * sigma ** (j - 1 - k)
    return w


def _check_out(x, w):
    out = np.zeros(2 * M + 1)
    out[2 * M] += w[0]  # no other edge: the decoder sends +127
    p = x.copy()
    for k in range(1, int(np.nonzero(w > 1e-12)[0].max()) + 1):
        if k > 1:
            p = np.bincount(IDX, weights=np.outer(p, x).ravel(), minlength=2 * M + 1)
        if w[k] > 1e-12:
            out += w[k] * p
    return out


def density_evolution(lam, rho, q, sigma=0.0, iters=120, tol=1e-6):
    """(converged, iterations, node error per iteration)."""
    big = qllr(q)
    w = _check_weights(rho, sigma)
    ch = np.zeros(NF)
    ch[big], ch[-big] = 1 - q, q
    fch = np.fft.rfft(ch)
    x = np.zeros(2 * M + 1)
    x[M + big], x[M - big] = 1 - q, q
    z = sum(lv / d for d, lv in lam.items())
    node = {d: lv / d / z for d, lv in lam.items()}
    hist = []
    for it in range(iters):
        r = _check_out(x, w)
        rr = np.zeros(NF)
        rr[: M + 1], rr[NF - M:] = r[M:], r[:M]
        fr = np.fft.rfft(rr)
        xn = np.zeros(2 * M + 1)
        pe = 0.0
        for d, lv in lam.items():
            y = np.maximum(np.fft.irfft(fch * fr ** (d - 1), NF), 0)
            o = np.zeros(2 * M + 1)  # clip the i16 sum to the 8-bit message range
            o[M:2 * M] = y[:M]
            o[2 * M] += y[M:NF // 2].sum()
            o[:M] = y[NF - M:]
            o[0] += y[NF // 2:NF - M].sum()
            xn += lv * o / o.sum()
            post = np.fft.irfft(fch * fr ** d, NF)
            pe += node[d] * (np.maximum(post[NF // 2:], 0).sum() + 0.5 * max(post[0], 0))
        hist.append(pe)
        x = xn
        if pe < tol:
            return True, it, hist
    return False, iters, hist


def threshold(lam, rate, sigma, iters=120, steps=8):
    avgv = 1 / sum(lv / d for d, lv in lam.items())
    rho = rho_dc(avgv / (1 - rate))
    lo, hi = 1.0, 1.4
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = density_evolution(lam, rho, q_of(mid, rate, sigma), sigma, iters)[0]
        lo, hi = (lo, mid) if ok else (mid, hi)
    return hi


def project(lam, cand, avgv, l2cap):
    """L1-nearest lambda on `cand` with average degree avgv and lambda_2 <= l2cap."""
    n = len(cand)
    old = np.array([lam.get(d, 0.0) for d in cand])
    c = np.r_[np.zeros(n), np.ones(n)]
    a = np.block([[np.eye(n), -np.eye(n)], [-np.eye(n), -np.eye(n)]])
    aeq = [np.r_[np.ones(n), np.zeros(n)], np.r_[[1.0 / d for d in cand], np.zeros(n)]]
    bounds = [(0, l2cap if d == 2 else 1) for d in cand] + [(0, None)] * n
    res = linprog(c, A_ub=a, b_ub=np.r_[old, -old], A_eq=np.array(aeq), b_eq=[1, 1 / avgv], bounds=bounds,
                  method="highs")
    return {d: v for d, v in zip(cand, res.x[:n]) if v > 1e-7}


def fmt(lam):
    return ",".join(f"{d}:{lv:.5f}" for d, lv in sorted(lam.items()))


def climb(rate, dc, sigma, f, cand, lam):
    iters = int(os.environ.get("ITERS", "120"))
    fast = int(os.environ.get("FAST", "70"))
    l2cap = float(os.environ.get("STAB", "3")) / (dc - 1)
    avgv = dc * (1 - rate)
    rho = rho_dc(dc)
    rng = random.Random(int(os.environ.get("SEED", "1")))

    def score(lm, q):
        ok, it, hist = density_evolution(lm, rho, q, sigma, iters)
        return it if ok else iters + 30 * math.log10(max(hist[-1], 1e-6) / 1e-6)

    lam = project(lam, cand, avgv, l2cap)
    q = q_of(f, rate, sigma)
    best = score(lam, q)
    print(f"start f {f:.4f} J {best:.1f} {fmt(lam)}", flush=True)
    for step in range(int(os.environ.get("STEPS", "400"))):
        s = rng.choice([0.003, 0.01, 0.03])
        new = {d: max(0.0, lam.get(d, 0.0) + rng.gauss(0, s) * (1 if rng.random() < 0.5 else 0)) for d in cand}
        new = {d: v for d, v in new.items() if v > 0}
        t = sum(new.values())
        try:
            new = project({d: v / t for d, v in new.items()}, cand, avgv, l2cap)
        except Exception:  # infeasible projection
            continue
        j = score(new, q)
        if j < best:
            lam, best = new, j
            print(f"step {step} f {f:.4f} J {best:.1f} {fmt(lam)}", flush=True)
        while best < fast:
            f -= 0.005
            q = q_of(f, rate, sigma)
            best = score(lam, q)
            print(f"  -> f {f:.4f} J {best:.1f}", flush=True)
    print(f"FINAL f {f:.4f} J {best:.1f} {fmt(lam)}")


def parse_lam(s):
    lam = {int(a): float(b) for a, b in (t.split(":") for t in s.split(","))}
    t = sum(lam.values())
    return {d: v / t for d, v in lam.items()}


if __name__ == "__main__":
    if sys.argv[1] == "eval":
        rate, sigma = float(sys.argv[2]), float(sys.argv[3])
        print(f"rate {rate} sigma {sigma} DE f* = {threshold(parse_lam(sys.argv[4]), rate, sigma):.4f}")
    elif sys.argv[1] == "climb":
        rate, dc, sigma, f = (float(x) for x in sys.argv[2:6])
        climb(rate, dc, sigma, f, [int(x) for x in sys.argv[6].split(",")], parse_lam(sys.argv[7]))
    else:
        sys.exit(__doc__)
