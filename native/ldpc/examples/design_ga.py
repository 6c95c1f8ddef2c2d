#!/usr/bin/env python3
"""Variable-degree distributions for the BSC by linear programming under a Gaussian approximation.

Design tool for family.rs (not used at run time). Method: Chung, Richardson, Urbanke, "Analysis of
sum-product decoding of LDPC codes using a Gaussian approximation", IEEE Trans. IT 47(2), 2001,
§IV (check-node messages Gaussian N(r, 2r); for fixed rho the convergence condition is linear in
lambda, so the rate is maximised by an LP), with the variable-node side kept exact for the BSC:
the channel LLR is +-L (not Gaussian), so a degree-i message is a two-component Gaussian mixture
and E[tanh(X/2)] is integrated by Gauss-Hermite quadrature. Check concentrated on one degree dc.
Extra linear constraints: BSC stability lambda_2 (dc-1) <= 0.9 / B, B = 2 sqrt(q(1-q)) (Richardson,
Shokrollahi, Urbanke 2001, Thm. 5), and at most m degree-2 nodes (lambda_2 / 2 <= 1 / dc) so the
construction's degree-2 chain exists.

usage: design_ga.py <rate> [dmax] [degrees...]    prints the best (dc, q*, f*, lambda)
       design_ga.py eval <rate> <dc> d:l,d:l,...   GA threshold of a given lambda
"""
import sys
import numpy as np
from scipy.optimize import linprog

GH_X, GH_W = np.polynomial.hermite_e.hermegauss(80)  # probabilists' Hermite: E f(Z), Z ~ N(0,1)
GH_W = GH_W / GH_W.sum()


def e_tanh(mu, var):
    """E[tanh(X/2)], X ~ N(mu, var) (var may be 0)."""
    mu = np.asarray(mu, dtype=float)
    sd = np.sqrt(np.maximum(var, 0.0))
    x = mu[..., None] + sd[..., None] * GH_X
    return (np.tanh(x / 2) * GH_W).sum(-1)


def phi(m):
    """1 - E[tanh(X/2)], X ~ N(m, 2m)."""
    m = np.asarray(m, dtype=float)
    return 1.0 - e_tanh(m, 2 * m)


# phi inverse by table interpolation (phi is decreasing from 1 at 0).
_M = np.concatenate([np.linspace(0, 1, 200), np.geomspace(1.001, 400, 2000)])
_P = phi(_M)


def phi_inv(y):
    y = np.clip(y, _P[-1], 1.0)
    return np.interp(-y, -_P, _M)


def h2(q):
    return -q * np.log2(q) - (1 - q) * np.log2(1 - q)


def t_table(q, degrees, r):
    """t[i, k] = E tanh(V/2) for a degree-degrees[i] variable, incoming check mean r[k]."""
    L = np.log((1 - q) / q)
    out = []
    for d in degrees:
        mu = (d - 1) * r
        var = 2 * (d - 1) * r
        out.append((1 - q) * e_tanh(L + mu, var) + q * e_tanh(-L + mu, var))
    return np.array(out)


R_GRID = np.concatenate([np.linspace(0, 2, 60), np.geomspace(2.05, 60, 120)])


def lp(q, dc, degrees, t=None, margin=1e-3):
    """Max sum lambda_i / i subject to convergence at crossover q; returns (rate, lambda) or None."""
    r = R_GRID
    need = (1 - phi(r * (1 + margin) + 1e-6)) ** (1.0 / (dc - 1))  # T(r) must exceed this
    if t is None:
        t = t_table(q, degrees, r)
    c = -np.array([1.0 / d for d in degrees])
    a_ub = [-t[:, k] for k in range(len(r))]
    b_ub = [-need[k] for k in range(len(r))]
    b = 2 * np.sqrt(q * (1 - q))
    row = np.zeros(len(degrees))
    if 2 in degrees:
        row[degrees.index(2)] = 1.0
        a_ub.append(row.copy())
        b_ub.append(min(0.9 / (b * (dc - 1)), 2.0 / dc))
    res = linprog(c, A_ub=np.array(a_ub), b_ub=np.array(b_ub), A_eq=np.ones((1, len(degrees))), b_eq=[1.0],
                  bounds=[(0, 1)] * len(degrees), method="highs")
    if not res.success:
        return None
    s = -res.fun
    return 1 - (1.0 / dc) / s, res.x


def best_at(q, degrees, dcs):
    """(rate, dc, lambda) of the best check degree at crossover q."""
    t = t_table(q, degrees, R_GRID)
    best = None
    for dc in dcs:
        x = lp(q, dc, degrees, t)
        if x is not None and (best is None or x[0] > best[0]):
            best = (x[0], dc, x[1])
    return best


def design(rate, degrees, dcs):
    """Largest crossover q* at which some dc reaches `rate`: (dc, q*, lambda)."""
    lo, hi = 1e-3, 0.2
    for _ in range(20):
        mid = 0.5 * (lo + hi)
        b = best_at(mid, degrees, dcs)
        if b is not None and b[0] >= rate:
            lo = mid
        else:
            hi = mid
    b = best_at(lo, degrees, dcs)
    return b[1], lo, b[2]


def threshold(lam, dc):
    """GA threshold of a fixed lambda (bisection on q, iterate the mean recursion)."""
    degrees = [d for d, _ in lam]
    w = np.array([l for _, l in lam])
    w = w / w.sum()
    lo, hi = 1e-4, 0.2
    for _ in range(30):
        q = 0.5 * (lo + hi)
        r = 0.0
        ok = False
        for _ in range(3000):
            T = float(w @ t_table(q, degrees, np.array([r]))[:, 0])
            rn = float(phi_inv(1 - T ** (dc - 1)))
            if rn > 50:
                ok = True
                break
            if rn <= r + 1e-9:
                break
            r = rn
        lo, hi = (q, hi) if ok else (lo, q)
    return lo


if __name__ == "__main__":
    if sys.argv[1] == "eval":
        rate, dc = float(sys.argv[2]), float(sys.argv[3])
        lam = [(int(a), float(b)) for a, b in (t.split(":") for t in sys.argv[4].split(","))]
        q = threshold(lam, dc)
        print(f"rate {rate} dc {dc} GA threshold q* = {q:.5f}  f* = {(1 - rate) / h2(q):.4f}")
        sys.exit(0)
    rate = float(sys.argv[1])
    dmax = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    degrees = [int(x) for x in sys.argv[3:]] or list(range(2, dmax + 1))
    dcs = range(int(sys.argv[-1]) if False else 10, 130, 2)
    dc, q, lam = design(rate, degrees, dcs)
    terms = [(d, l) for d, l in zip(degrees, lam) if l > 1e-5]
    s = sum(l for _, l in terms)
    print(f"rate {rate} dmax {dmax} dc {dc} q* {q:.5f} f* {(1 - rate) / h2(q):.4f}")
    print("lambda " + ",".join(f"{d}:{l / s:.5f}" for d, l in terms))
