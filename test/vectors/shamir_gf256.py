#!/usr/bin/env python3
"""Independent reference for the KMS's Shamir secret sharing over GF(2^8) (native/store/src/shamir.rs).

Written separately from the Rust code and on purpose by a different method: multiplication and
inversion through log/antilog tables built from the generator 3 (the Rust side multiplies bit by
bit in constant time and inverts by exponentiation). Field: GF(2^8) mod x^8+x^4+x^3+x+1 (0x11B,
FIPS 197). Share i = (i, f_j(i) for each secret byte j), f_j(x) = s_j + a_1 x + ... + a_{K-1} x^{K-1}.

    python3 test/vectors/shamir_gf256.py > test/vectors/shamir-gf256.txt

Output lines: secret_hex K N coeffs_hex|- x:share_hex ...   (coeffs for byte j: a_1..a_{K-1})
Coefficients come from a fixed-seed PRNG so the file is reproducible; they are test data only.
"""
import random

EXP = [0] * 512
LOG = [0] * 256
x = 1
for i in range(255):
    EXP[i] = x
    LOG[x] = i
    # multiply by the generator 3 = x + 1: x*2 xor x, reduced mod 0x11B
    x2 = x << 1
    if x2 & 0x100:
        x2 ^= 0x11B
    x = x2 ^ x
for i in range(255, 512):
    EXP[i] = EXP[i - 255]


def mul(a, b):
    if a == 0 or b == 0:
        return 0
    return EXP[LOG[a] + LOG[b]]


def inv(a):
    assert a != 0
    return EXP[255 - LOG[a]]


def split(secret, k, n, coeffs):
    d = k - 1
    shares = []
    for xi in range(1, n + 1):
        ys = []
        for j, s in enumerate(secret):
            y = s
            p = 1
            for t in range(d):
                p = mul(p, xi)
                y ^= mul(coeffs[j * d + t], p)
            ys.append(y)
        shares.append((xi, bytes(ys)))
    return shares


def combine(shares):
    out = bytearray(len(shares[0][1]))
    for i, (xi, yi) in enumerate(shares):
        l = 1
        for j, (xj, _) in enumerate(shares):
            if i != j:
                l = mul(l, mul(xj, inv(xj ^ xi)))
        for b in range(len(out)):
            out[b] ^= mul(yi[b], l)
    return bytes(out)


def main():
    rng = random.Random(20261205)
    cases = [(1, 2, 2), (1, 2, 3), (2, 3, 5), (16, 2, 2), (32, 3, 5), (32, 2, 3), (32, 5, 5),
             (32, 4, 7), (32, 7, 10), (33, 3, 255), (8, 255, 255), (32, 10, 12)]
    print("# Shamir over GF(2^8) mod 0x11B: secret K N coeffs x:share... (see shamir_gf256.py)")
    for length, k, n in cases:
        secret = bytes(rng.randrange(256) for _ in range(length))
        coeffs = bytes(rng.randrange(256) for _ in range(length * (k - 1)))
        shares = split(secret, k, n, coeffs)
        # self-check with this implementation: the first and the last K shares give the secret
        assert combine(shares[:k]) == secret and combine(shares[-k:]) == secret
        print(secret.hex(), k, n, coeffs.hex() or "-", " ".join(f"{xi}:{yi.hex()}" for xi, yi in shares))
    # hand-checkable case: secret 0x00, K=2, a_1 = 1 -> f(x) = x
    print("00 2 3 01 1:01 2:02 3:03")
    # FIPS 197 §4.2: 0x57 * 0x83 = 0xc1 -> secret 0, a_1 = 0x57, share at x=0x83 needs N >= 0x83
    assert mul(0x57, 0x83) == 0xC1


if __name__ == "__main__":
    main()
