// Verification hash: hand-derived known answers from the definition, native vs the BigInt
// reference (src/core/reference.ts) on random lengths with hardware and portable clmul, the
// single-bit-flip property, and the tag length / collision bound.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { forcePortableClmul, hardwareClmul, tagsEqual, verifyCollisionProbability, verifyTag, verifyTagBits } from '../../src/core/verify.ts';
import { bytesToBigLE, gf128MulRef, polyHashRef } from '../../src/core/reference.ts';

const key16 = (v: bigint): Uint8Array => {
  const b = new Uint8Array(16);
  for (let i = 0; i < 16; i++) b[i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return b;
};

t.test('known answers (derived by hand from the definition)', async (t) => {
  // Field: x * x^127 = x^128 = x^7 + x^2 + x + 1
  t.equal(gf128MulRef(2n, 1n << 127n), 0x87n);
  // n = 1, bit 0 set, k = x:  ((1·x) + 1)·x = x^2 + x = 6
  t.equal(bytesToBigLE(verifyTag(Uint8Array.from([1]), 1, key16(2n), 128)), 6n);
  // n = 128, only bit 127 set, k = x: x^127·x = 0x87; (0x87 + 128)·x = 0x07·x = 0x0e
  const m = new Uint8Array(16); m[15] = 0x80;
  t.equal(bytesToBigLE(verifyTag(m, 128, key16(2n), 128)), 0x0en);
  // k = 1: hash = (sum of blocks) + n
  t.equal(bytesToBigLE(verifyTag(Uint8Array.from([0xff, 0x01]), 9, key16(1n), 128)), 0x1ffn ^ 9n);
  // Empty key: n·k = 0
  t.equal(bytesToBigLE(verifyTag(new Uint8Array(0), 0, key16(12345n), 128)), 0n);
});

t.test('native equals the BigInt reference (hardware and portable clmul)', async (t) => {
  t.comment(`hardware clmul available: ${hardwareClmul()}`);
  for (const portable of [false, true]) {
    forcePortableClmul(portable);
    try {
      for (const n of [1, 7, 63, 64, 127, 128, 129, 255, 256, 257, 1000, 4097]) {
        const bits = randomBytes(Math.ceil(n / 8));
        if (n & 7) bits[bits.length - 1] &= (1 << (n & 7)) - 1;
        const hk = randomBytes(16);
        const want = polyHashRef(bits, n, bytesToBigLE(hk));
        t.equal(bytesToBigLE(verifyTag(bits, n, hk, 128)), want, `n=${n} portable=${portable}`);
        for (const tb of [1, 8, 50, 64, 77]) {
          t.equal(bytesToBigLE(verifyTag(bits, n, hk, tb)), want >> BigInt(128 - tb), `n=${n} t=${tb}`);
        }
      }
    } finally {
      forcePortableClmul(false);
    }
  }
});

t.test('any single-bit difference changes the 128-bit hash (nonzero k)', async (t) => {
  const n = 3001;
  const bits = randomBytes(Math.ceil(n / 8));
  bits[bits.length - 1] &= (1 << (n & 7)) - 1;
  const hk = randomBytes(16);
  hk[0] |= 1;
  const base = verifyTag(bits, n, hk, 128);
  let changed = 0;
  for (let i = 0; i < n; i += 7) {
    const b2 = Uint8Array.from(bits);
    b2[i >> 3] ^= 1 << (i & 7);
    if (!tagsEqual(verifyTag(b2, n, hk, 128), base)) changed++;
  }
  t.equal(changed, Math.ceil(n / 7));
});

t.test('tag length meets epsCor and is minimal', async (t) => {
  for (const n of [1000, 1e6, 1e8]) {
    for (const eps of [1e-9, 1e-12, 1e-15]) {
      const tb = verifyTagBits(n, eps);
      t.ok(verifyCollisionProbability(n, tb) <= eps, `n=${n} eps=${eps} t=${tb}`);
      t.ok(verifyCollisionProbability(n, tb - 1) > eps, 'one bit fewer would not do');
    }
  }
  t.throws(() => verifyTagBits(100, 0), { code: 'VERIFY_BAD_EPSILON' });
  t.throws(() => verifyTag(new Uint8Array(1), 8, new Uint8Array(15), 64), { code: 'CORE_BAD_ARG' });
});
