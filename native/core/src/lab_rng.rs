//! The emulated lab's random streams, defined exactly as the TypeScript reference defines them
//! (src/lab/rng.ts, src/lab/alice.ts), so that the Rust physics (lab_link.rs) draws the same
//! numbers in the same order and produces the same tags bit for bit.
//!
//! - [`Xoshiro128`]: xoshiro128** (Blackman and Vigna, ACM TOMS 47, 2021) on 32-bit words;
//!   `uniform()` = (u32 + 0.5)·2^-32 (exact in f64), `gauss()` Marsaglia's polar method truncated
//!   at ±6 with the spare value cached, as rng.ts.
//! - [`js_log`]: the natural logarithm as V8's `Math.log` computes it (fdlibm's `__ieee754_log`,
//!   which V8 ships as `base::ieee754::log`). The platform's `ln` may differ in the last bit, and
//!   one bit of difference in a geometric skip moves a click to another pulse.
//! - [`mix32`], [`pulse_hash`], [`alice_choice`], [`bob_basis`]: the counter-based choice
//!   generator of alice.ts (lowbias32 mixer). Emulation only, never key material.
//!
//! Everything here is plain IEEE-754 double arithmetic without fused multiply-add (Rust does not
//! contract), evaluated in the same order as the TypeScript.

/// xoshiro128** with the TypeScript class's seeding (the caller passes the four state words).
#[derive(Clone, Debug)]
pub struct Xoshiro128 {
    s: [u32; 4],
    spare: f64,
    has_spare: bool,
}

const INV32: f64 = 1.0 / 4294967296.0;

/// The uniform `Xoshiro128::uniform` makes of the word `r`: (r + 0.5)·2^-32.
#[inline(always)]
pub fn uniform_of(r: u32) -> f64 {
    (r as f64 + 0.5) * INV32
}

impl Xoshiro128 {
    /// From the state words (as `Xoshiro128.state()` in rng.ts returns them); all-zero becomes s0 = 1.
    pub fn from_state(s: [u32; 4]) -> Self {
        let mut s = s;
        if s == [0; 4] {
            s[0] = 1;
        }
        Xoshiro128 { s, spare: 0.0, has_spare: false }
    }

    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        let [s0, s1, s2, s3] = self.s;
        let r = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s1 << 9;
        let n2 = s2 ^ s0;
        let n3 = s3 ^ s1;
        self.s = [s0 ^ n3, s1 ^ n2, n2 ^ t, n3.rotate_left(11)];
        r
    }

    /// Uniform in the open interval (0, 1).
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        uniform_of(self.next_u32())
    }

    /// The cached second value of the last polar pair, if any (taken: the next `gauss` draws anew).
    #[inline]
    pub fn take_spare(&mut self) -> Option<f64> {
        if self.has_spare {
            self.has_spare = false;
            Some(self.spare)
        } else {
            None
        }
    }

    /// Caches `z` as the spare the next `gauss` returns (the second value of a pair drawn outside).
    pub fn set_spare(&mut self, z: f64) {
        self.spare = z;
        self.has_spare = true;
    }

    /// Standard normal truncated at ±6 (polar method, spare cached), as rng.ts.
    #[inline]
    pub fn gauss(&mut self) -> f64 {
        if self.has_spare {
            self.has_spare = false;
            return self.spare;
        }
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s >= 1.0 || s == 0.0 {
                continue;
            }
            let f = ((-2.0 * js_log(s)) / s).sqrt();
            let z0 = u * f;
            let z1 = v * f;
            if z0.abs() > 6.0 || z1.abs() > 6.0 {
                continue;
            }
            self.spare = z1;
            self.has_spare = true;
            return z0;
        }
    }
}

const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
const TWO54: f64 = f64::from_bits(0x4350_0000_0000_0000);
const LG1: f64 = f64::from_bits(0x3FE5_5555_5555_5593);
const LG2: f64 = f64::from_bits(0x3FD9_9999_9997_FA04);
const LG3: f64 = f64::from_bits(0x3FD2_4924_9422_9359);
const LG4: f64 = f64::from_bits(0x3FCC_71C5_1D8E_78AF);
const LG5: f64 = f64::from_bits(0x3FC7_4664_96CB_03DE);
const LG6: f64 = f64::from_bits(0x3FC3_9A09_D078_C69F);
const LG7: f64 = f64::from_bits(0x3FC2_F112_DF3E_5244);

/// `Math.log` as V8 computes it: fdlibm's __ieee754_log (e_log.c), transcribed.
pub fn js_log(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut hx = (bits >> 32) as i32;
    let lx = bits as u32;
    let mut x = x;
    let mut k: i32 = 0;
    if hx < 0x0010_0000 {
        if ((hx & 0x7fff_ffff) as u32 | lx) == 0 {
            return f64::NEG_INFINITY;
        }
        if hx < 0 {
            return f64::NAN;
        }
        k -= 54;
        x *= TWO54;
        hx = (x.to_bits() >> 32) as i32;
    }
    if hx >= 0x7ff0_0000 {
        return x + x;
    }
    k += (hx >> 20) - 1023;
    hx &= 0x000f_ffff;
    let i = (hx.wrapping_add(0x95f64)) & 0x0010_0000;
    let hi = (hx | (i ^ 0x3ff0_0000)) as u32;
    x = f64::from_bits(((hi as u64) << 32) | (x.to_bits() & 0xffff_ffff));
    k += i >> 20;
    let f = x - 1.0;
    if (0x000f_ffff & (2 + hx)) < 3 {
        if f == 0.0 {
            if k == 0 {
                return 0.0;
            }
            let dk = k as f64;
            return dk * LN2_HI + dk * LN2_LO;
        }
        let r = f * f * (0.5 - 0.333_333_333_333_333_3 * f);
        if k == 0 {
            return f - r;
        }
        let dk = k as f64;
        return dk * LN2_HI - ((r - dk * LN2_LO) - f);
    }
    let s = f / (2.0 + f);
    let dk = k as f64;
    let z = s * s;
    let mut i = hx - 0x6147a;
    let w = z * z;
    let j = 0x6b851 - hx;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    i |= j;
    let r = t2 + t1;
    if i > 0 {
        let hfsq = 0.5 * f * f;
        if k == 0 {
            f - (hfsq - s * (hfsq + r))
        } else {
            dk * LN2_HI - ((hfsq - (s * (hfsq + r) + dk * LN2_LO)) - f)
        }
    } else if k == 0 {
        f - s * (f - r)
    } else {
        dk * LN2_HI - ((s * (f - r) - dk * LN2_LO) - f)
    }
}

/// The geometric skip `floor(js_log(u) / logq)` of a uniform `u = (n + 0.5)·2^-32` (`n` the
/// stream's u32, as `Xoshiro128::uniform` maps it), by table for a fixed `logq` (the photon skip of
/// a configuration: one per photon candidate), bit for bit the direct formula.
///
/// Why it is exact: `g(n) = floor(js_log((n + 0.5)·2^-32) / logq)` is non-increasing in `n`
/// (`js_log` is non-decreasing on the 2^32 values `uniform` can take: checked exhaustively by the
/// ignored test `js_log_is_monotone_on_every_uniform`; IEEE division by a fixed negative number
/// and floor are monotone). So `g(n) >= k` exactly when `n < t[k]`, with `t[k]` the first `n`
/// where `g` drops below `k`, and `g(n)` is the largest `k` with `n < t[k]`. The table holds
/// `t[1..=kmax]`, computed with `g` itself, and per bucket of 2^20 consecutive `n` the values of
/// `g` at its ends: most buckets have one value (the answer) or two (one comparison with a
/// threshold). Buckets reaching above `kmax` (the smallest uniforms at long distances) and
/// configurations without a usable table (`logq` not negative, `g(2^32 − 1) > 0`) take the
/// direct formula.
#[derive(Clone, Debug, Default)]
pub struct SkipTable {
    logq_bits: u64,
    /// Per bucket: g at its first n (the bucket's largest value) and at its last n.
    hi: Vec<u32>,
    lo: Vec<u32>,
    /// t[k]: the first n with g(n) < k, for k in 1..=kmax (t[0] unused).
    t: Vec<u32>,
    kmax: u32,
    usable: bool,
}

const SKIP_SHIFT: u32 = 20;
const SKIP_KCAP: f64 = 65_536.0;

impl SkipTable {
    /// The direct formula (the reference the table reproduces).
    #[inline]
    pub fn direct(n: u32, logq: f64) -> f64 {
        floor_fast(js_log(uniform_of(n)) / logq)
    }

    /// A table for `logq` (built once per value; `ensure` rebuilds only when it changes).
    pub fn new(logq: f64) -> Self {
        let mut t = SkipTable { logq_bits: !logq.to_bits(), ..Default::default() };
        t.ensure(logq);
        t
    }

    /// Rebuilds the table if `logq` differs from the one it was built for.
    pub fn ensure(&mut self, logq: f64) {
        if logq.to_bits() == self.logq_bits {
            return;
        }
        *self = SkipTable { logq_bits: logq.to_bits(), ..Default::default() };
        let g = |n: u32| SkipTable::direct(n, logq);
        if !(logq < 0.0) || g(u32::MAX) != 0.0 {
            return;
        }
        let kmax = g(0).min(SKIP_KCAP) as u32;
        // t[k] = first n with g(n) < k: non-increasing in k; found from the continuous inverse
        // (only a starting point) by galloping and bisection on g itself.
        let mut t = vec![0u32; kmax as usize + 1];
        for k in 1..=kmax {
            let kf = k as f64;
            let guess = ((kf * logq).exp() * 4_294_967_296.0 - 0.5).clamp(0.0, 4_294_967_295.0) as u64;
            // invariant sought: g(below) >= k (or below = -1), g(above) < k
            let (mut below, mut above): (i64, i64);
            if g(guess as u32) < kf {
                above = guess as i64;
                let mut step = 1i64;
                loop {
                    let c = above - step;
                    if c < 0 {
                        below = -1;
                        break;
                    }
                    if g(c as u32) >= kf {
                        below = c;
                        break;
                    }
                    above = c;
                    step *= 2;
                }
            } else {
                below = guess as i64;
                let mut step = 1i64;
                loop {
                    let c = below + step;
                    // g(2^32 - 1) = 0 < k: the search ends there at the latest
                    let c = c.min(u32::MAX as i64);
                    if g(c as u32) < kf {
                        above = c;
                        break;
                    }
                    below = c;
                    step *= 2;
                }
            }
            while above - below > 1 {
                let mid = below + (above - below) / 2;
                if g(mid as u32) < kf {
                    above = mid;
                } else {
                    below = mid;
                }
            }
            t[k as usize] = above as u32;
        }
        let buckets = 1usize << (32 - SKIP_SHIFT);
        let mut hi = Vec::with_capacity(buckets);
        let mut lo = Vec::with_capacity(buckets);
        for b in 0..buckets {
            let first = (b as u32) << SKIP_SHIFT;
            let last = first | ((1u32 << SKIP_SHIFT) - 1);
            let (h, l) = (g(first), g(last));
            // above kmax: the bucket takes the direct formula (marked by hi > kmax)
            hi.push(h.min(u32::MAX as f64) as u32);
            lo.push(l.min(u32::MAX as f64) as u32);
        }
        // Consistency of what was built with a non-increasing g (a failure would mean js_log is
        // not monotone somewhere: then no table, the direct formula everywhere).
        let ok = t.windows(2).skip(1).all(|w| w[0] >= w[1])
            && (0..buckets).all(|b| hi[b] >= lo[b] && (b + 1 == buckets || lo[b] >= hi[b + 1]))
            && (1..=kmax as usize).all(|k| {
                let n = t[k];
                g(n) < k as f64 && (n == 0 || g(n - 1) >= k as f64)
            });
        if !ok {
            return;
        }
        self.hi = hi;
        self.lo = lo;
        self.t = t;
        self.kmax = kmax;
        self.usable = true;
    }

    /// `floor(js_log((n + 0.5)·2^-32) / logq)` for the table's `logq`.
    #[inline(always)]
    pub fn skip(&self, n: u32, logq: f64) -> f64 {
        debug_assert_eq!(logq.to_bits(), self.logq_bits);
        if !self.usable {
            return SkipTable::direct(n, logq);
        }
        let b = (n >> SKIP_SHIFT) as usize;
        // SAFETY-free bounds: b < 2^12 = hi.len() = lo.len()
        let (h, l) = (self.hi[b], self.lo[b]);
        if h == l {
            return h as f64;
        }
        if h > self.kmax {
            return SkipTable::direct(n, logq);
        }
        // the largest k in [l, h] with k == l or n < t[k]
        let (mut a, mut z) = (l, h);
        if z - a <= 8 {
            while z > a && self.t[z as usize] <= n {
                z -= 1;
            }
            return z as f64;
        }
        // bisection: invariant k = a qualifies, every k > z does not
        while a < z {
            let mid = a + (z - a + 1) / 2;
            if self.t[mid as usize] > n {
                a = mid;
            } else {
                z = mid - 1;
            }
        }
        a as f64
    }
}

/// The polar method's factor `sqrt(-2 js_log(s) / s)` of every `s`, in place (rng.ts `gauss`, its
/// expression and order), bit for bit the scalar one: the lanes take `js_log`'s main path with its
/// branches as selects (both sides computed, the same IEEE operations in the same order), four at
/// a time; a group with a lane outside that path (not a positive normal, or within 2^-20 of a
/// power of two: fdlibm's short cut) takes the scalar `js_log`. Vectorised with AVX2 where the
/// CPU has it. Tested equal to the scalar expression below.
pub fn polar_factors(xs: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { polar_factors_avx2(xs) };
            return;
        }
    }
    polar_factors_plain(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn polar_factors_avx2(xs: &mut [f64]) {
    polar_factors_plain(xs)
}

#[inline(always)]
fn polar_factor_scalar(x: f64) -> f64 {
    ((-2.0 * js_log(x)) / x).sqrt()
}

/// js_log's main path (x a positive normal, `(0x000f_ffff & (2 + hx)) >= 3` after the mantissa
/// mask) without branches: the caller checks the conditions.
#[inline(always)]
fn js_log_main(x: f64) -> f64 {
    let bits = x.to_bits();
    let hx0 = (bits >> 32) as i32;
    let mut k: i32 = (hx0 >> 20) - 1023;
    let hx = hx0 & 0x000f_ffff;
    let i = (hx.wrapping_add(0x95f64)) & 0x0010_0000;
    let hi = (hx | (i ^ 0x3ff0_0000)) as u32;
    let xn = f64::from_bits(((hi as u64) << 32) | (bits & 0xffff_ffff));
    k += i >> 20;
    let f = xn - 1.0;
    let s = f / (2.0 + f);
    let dk = k as f64;
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let big = ((hx - 0x6147a) | (0x6b851 - hx)) > 0;
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    let a0 = f - (hfsq - s * (hfsq + r));
    let a1 = dk * LN2_HI - ((hfsq - (s * (hfsq + r) + dk * LN2_LO)) - f);
    let b0 = f - s * (f - r);
    let b1 = dk * LN2_HI - ((s * (f - r) - dk * LN2_LO) - f);
    let a = if k == 0 { a0 } else { a1 };
    let b = if k == 0 { b0 } else { b1 };
    if big {
        a
    } else {
        b
    }
}

#[inline(always)]
fn js_log_main_applies(x: f64) -> bool {
    let hx = (x.to_bits() >> 32) as i32;
    hx >= 0x0010_0000 && hx < 0x7ff0_0000 && (0x000f_ffff & (2 + (hx & 0x000f_ffff))) >= 3
}

#[inline(always)]
fn polar_factors_plain(xs: &mut [f64]) {
    let mut chunks = xs.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = [c[0], c[1], c[2], c[3]];
        if !(js_log_main_applies(v[0]) & js_log_main_applies(v[1]) & js_log_main_applies(v[2]) & js_log_main_applies(v[3])) {
            for x in c.iter_mut() {
                *x = polar_factor_scalar(*x);
            }
            continue;
        }
        for l in 0..4 {
            c[l] = ((-2.0 * js_log_main(v[l])) / v[l]).sqrt();
        }
    }
    for x in chunks.into_remainder() {
        *x = polar_factor_scalar(*x);
    }
}

/// `f64::floor`, bit for bit, without a libm call where the integer part fits an i64 (x86-64's
/// baseline has no `roundsd`, so `floor` is a function call: 1.5 % of a link's CPU in the lab's
/// per-candidate arithmetic). ±0, NaN, infinities and |x| >= 2^52 (already integers) go to libm.
#[inline(always)]
pub fn floor_fast(x: f64) -> f64 {
    if x.abs() < 4_503_599_627_370_496.0 && x != 0.0 {
        let t = x as i64 as f64;
        if t > x {
            t - 1.0
        } else {
            t
        }
    } else {
        x.floor()
    }
}

/// `Math.round` (halves towards +∞) for finite doubles.
#[inline]
pub fn js_round(x: f64) -> f64 {
    let r = floor_fast(x);
    if x - r >= 0.5 {
        r + 1.0
    } else {
        r
    }
}

/// lowbias32 (alice.ts `mix32`).
#[inline]
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The two 32-bit keys of alice.ts `seedKeys` (computed there; passed in).
#[derive(Clone, Copy, Debug, Default)]
pub struct SeedKeys {
    pub k0: u32,
    pub k1: u32,
}

/// alice.ts `pulseHash` of an integer pulse index in [0, 2^53).
#[inline]
pub fn pulse_hash(keys: SeedKeys, pulse: f64) -> u32 {
    let p = pulse as u64;
    let lo = p as u32;
    let hi = (p >> 32) as u32;
    let a = mix32(lo ^ keys.k0);
    mix32((a ^ keys.k1).wrapping_add((hi ^ 0x9e37_79b9).wrapping_mul(0x85eb_ca6b)))
}

/// Alice's choice thresholds (alice.ts `aliceThresholds`), each in [0, 2^32].
#[derive(Clone, Copy, Debug, Default)]
pub struct AliceThresholds {
    pub basis_z: u64,
    pub signal: u64,
    pub decoy: u64,
}

/// alice.ts `aliceChoiceFast`: packed bit | basis << 1 | intensity << 2.
#[inline]
pub fn alice_choice(keys: SeedKeys, th: AliceThresholds, pulse: f64) -> u8 {
    let h = pulse_hash(keys, pulse);
    let w_basis = mix32(h ^ 0x68e3_1da4) as u64;
    let w_int = mix32(h.wrapping_add(0xb529_7a4d)) as u64;
    let bit = (mix32(h ^ 0x1b56_c4e9) >> 31) as u8;
    let basis = if w_basis < th.basis_z { 0 } else { 1 };
    let intensity = if w_int < th.signal { 0 } else if w_int < th.decoy { 1 } else { 2 };
    bit | (basis << 1) | (intensity << 2)
}

/// alice.ts `bobBasisFast`: an active Bob's modulator basis (0 Z, 1 X).
#[inline]
pub fn bob_basis(keys: SeedKeys, threshold_z: u64, pulse: f64) -> u8 {
    if (mix32(pulse_hash(keys, pulse) ^ 0x7a3c_5e1f) as u64) < threshold_z {
        0
    } else {
        1
    }
}

/// `bob_basis` at every pulse of `pulses` (integers in [0, 2^53), unchecked), appended to `out`
/// as 0/1 bytes: the lab's active Bob at a batch's photon candidates. Vectorised where the CPU has
/// AVX2 (the same integer arithmetic on eight lanes; tested equal to `bob_basis`).
pub fn bob_bases_extend(keys: SeedKeys, threshold_z: u64, pulses: &[f64], out: &mut Vec<i8>) {
    let start = out.len();
    out.resize(start + pulses.len(), 0);
    bob_bases_fill(keys, threshold_z, pulses, &mut out[start..]);
}

/// `bob_basis` at every pulse of `pulses` (unchecked) into `o`, vectorised where the CPU can.
fn bob_bases_fill(keys: SeedKeys, threshold_z: u64, pulses: &[f64], o: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { bob_bases_avx2(keys, threshold_z, pulses, o) };
            return;
        }
    }
    bob_bases_plain(keys, threshold_z, pulses, o);
}

#[inline(always)]
fn bob_bases_plain(keys: SeedKeys, threshold_z: u64, pulses: &[f64], o: &mut [i8]) {
    // Below 2^52 the pulse's bits are those of p + 2^52 minus 2^52's (a conversion the vector
    // units have; f64 -> u64 they have not without AVX-512); at or above, the plain cast.
    const TWO52: f64 = 4_503_599_627_370_496.0;
    #[inline(always)]
    fn one(keys: SeedKeys, threshold_z: u64, k: u64) -> i8 {
        let (lo, hi) = (k as u32, (k >> 32) as u32);
        let a = mix32(lo ^ keys.k0);
        let h = mix32((a ^ keys.k1).wrapping_add((hi ^ 0x9e37_79b9).wrapping_mul(0x85eb_ca6b)));
        i8::from(mix32(h ^ 0x7a3c_5e1f) as u64 >= threshold_z)
    }
    if pulses.iter().all(|&p| p < TWO52) {
        for (b, &p) in o.iter_mut().zip(pulses) {
            *b = one(keys, threshold_z, (p + TWO52).to_bits() - TWO52.to_bits());
        }
    } else {
        for (b, &p) in o.iter_mut().zip(pulses) {
            *b = one(keys, threshold_z, p as u64);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn bob_bases_avx2(keys: SeedKeys, threshold_z: u64, pulses: &[f64], o: &mut [i8]) {
    bob_bases_plain(keys, threshold_z, pulses, o)
}

/// alice.ts `bobBasisChoicesAt`: an active Bob's modulator basis at each listed pulse, into `out`
/// (same length). A pulse that is not an integer in [0, 2^53) stops the walk: `Err(i)` names the
/// first such entry (the TypeScript reference throws there).
/// Checked first, then computed as `bob_bases_extend` (eight lanes at a time; one at a time it
/// was ~1.4 % of a 25 km link's CPU, called by Bob's node for every detection).
pub fn bob_bases_at(keys: SeedKeys, threshold_z: u64, pulses: &[f64], out: &mut [u8]) -> Result<(), usize> {
    assert_eq!(pulses.len(), out.len(), "bob_bases_at: one output byte per pulse");
    // SAFETY: u8 and i8 have the same size and alignment, and every value written is 0 or 1.
    let o = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<i8>(), out.len()) };
    // Checked and computed a slice at a time, so that the pulses are read from memory once (a
    // block's 10^7 pulses are 80 MB: two passes over them cost more than the hashing)
    const SLICE: usize = 1 << 13;
    for (k, (p, o)) in pulses.chunks(SLICE).zip(o.chunks_mut(SLICE)).enumerate() {
        if let Some(i) = p.iter().position(|&x| !is_pulse_index(x)) {
            return Err(k * SLICE + i);
        }
        bob_bases_fill(keys, threshold_z, p, o);
    }
    Ok(())
}

/// `p >= 0 && Number.isSafeInteger(p)`: an integer in [0, 2^53 - 1] (the cast round trip instead
/// of `fract`, whose libm `trunc` call showed in a link profile).
#[inline]
pub fn is_pulse_index(p: f64) -> bool {
    // within the range the signed conversion is exact (and one instruction; the unsigned one is not)
    p >= 0.0 && p <= 9_007_199_254_740_991.0 && (p as i64) as f64 == p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "2^32 logarithms (about a minute): run once when js_log changes (SkipTable relies on it)"]
    fn js_log_is_monotone_on_every_uniform() {
        let mut prev = js_log(0.5 * INV32);
        for n in 1..=u32::MAX {
            let x = js_log((n as f64 + 0.5) * INV32);
            assert!(x >= prev, "js_log decreases at n = {n}");
            prev = x;
        }
    }

    #[test]
    fn polar_factors_equal_the_scalar_expression() {
        let mut r = Xoshiro128::from_state([2, 7, 1, 8]);
        let mut xs: Vec<f64> = Vec::new();
        // the polar method's s (u² + v² of uniforms on (-1, 1), below 1), any doubles in (0, 1),
        // near js_log's case boundaries (k = 0 at sqrt(2)/2, the i > 0 window, the 2^-20 short cut
        // around powers of two), and values outside the main path mixed into groups
        for _ in 0..1_500_000 {
            let u = 2.0 * r.uniform() - 1.0;
            let v = 2.0 * r.uniform() - 1.0;
            let s = u * u + v * v;
            if s < 1.0 && s > 0.0 {
                xs.push(s);
            }
            xs.push(r.uniform());
            xs.push(f64::from_bits((r.next_u32() as u64) << 32 | r.next_u32() as u64).abs());
        }
        for e in -60i32..3 {
            for hx in [0x6147a, 0x6147b, 0x61479, 0x6b851, 0x6b850, 0x6b852, 0x6a09e, 0x6a09f, 0x95f64, 0xfffff, 0xffffe, 0xffffd, 0, 1, 2, 3] {
                for lo in [0u32, 1, 0xffff_ffff, r.next_u32()] {
                    let bits = (((e + 1023) as u64) << 52) | ((hx as u64) << 32) | lo as u64;
                    xs.push(f64::from_bits(bits));
                }
            }
        }
        xs.extend([0.0, -0.0, -1.0, 1.0, 0.5, 2.0, f64::MIN_POSITIVE, 5e-324, 1e-310, f64::INFINITY, f64::NAN, 1.0 - f64::EPSILON / 2.0]);
        for shift in 0..4 {
            let mut got = xs[shift..].to_vec();
            polar_factors(&mut got);
            let mut plain = xs[shift..].to_vec();
            polar_factors_plain(&mut plain);
            for (i, &x) in xs[shift..].iter().enumerate() {
                let want = polar_factor_scalar(x);
                assert_eq!(got[i].to_bits(), want.to_bits(), "x = {x:e} ({:#x})", x.to_bits());
                assert_eq!(plain[i].to_bits(), want.to_bits(), "plain, x = {x:e}");
            }
        }
        // the log itself on its main path
        for &x in &xs {
            if js_log_main_applies(x) {
                assert_eq!(js_log_main(x).to_bits(), js_log(x).to_bits(), "log {x:e}");
            }
        }
    }

    #[test]
    fn skip_table_equals_the_direct_formula() {
        // logq of p in (0, 1) from the lab's range (0 km to beyond 100 km, dark counts), p = 1
        // (-inf), and values without a table (0, positive, NaN, tiny |logq|)
        let mut r = Xoshiro128::from_state([9, 8, 7, 6]);
        let mut logqs: Vec<f64> = [0.9, 0.5, 0.1, 0.0228, 6.69e-3, 2.1e-3, 2.14e-4, 1.79e-5, 1e-7, 1.7e-6, 1e-12]
            .iter()
            .map(|&p: &f64| (-p).ln_1p())
            .collect();
        logqs.extend([f64::NEG_INFINITY, 0.0, 1.0, f64::NAN, -1e-300]);
        for _ in 0..6 {
            logqs.push((-(10f64.powf(-6.0 * r.uniform()))).ln_1p());
        }
        for &logq in &logqs {
            let tab = SkipTable::new(logq);
            let check = |n: u32| {
                let (a, b) = (tab.skip(n, logq), SkipTable::direct(n, logq));
                assert_eq!(a.to_bits(), b.to_bits(), "logq {logq:e}, n {n}: table {a} vs {b}");
            };
            // every threshold and its neighbours, every bucket edge, random n, the ends
            for k in 1..tab.t.len() {
                let n = tab.t[k];
                for d in [0u32, 1, 2] {
                    check(n.saturating_sub(d));
                    check(n.saturating_add(d));
                }
            }
            for b in 0u32..1 << (32 - SKIP_SHIFT) {
                let first = b << SKIP_SHIFT;
                for n in [first, first + 1, first | ((1 << SKIP_SHIFT) - 1), first + (1 << (SKIP_SHIFT - 1))] {
                    check(n);
                }
            }
            for _ in 0..200_000 {
                check(r.next_u32());
                check(r.next_u32() >> (r.next_u32() & 31));
            }
            for n in (0..5000).chain(u32::MAX - 5000..=u32::MAX) {
                check(n);
            }
        }
        // the lab's photon skips (p_max of reference-decoy at 0-100 km) do use a table
        for p in [0.0228f64, 6.69e-3, 2.1e-3, 2.14e-4] {
            assert!(SkipTable::new((-p).ln_1p()).usable, "p {p}");
        }
    }

    #[test]
    fn floor_fast_is_floor_bit_for_bit() {
        let special = [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 2.0f64.powi(52) - 0.5, -(2.0f64.powi(52) - 0.5), 2.0f64.powi(52),
            2.0f64.powi(63), -2.0f64.powi(63), 1e300, -1e300, f64::MIN_POSITIVE, -f64::MIN_POSITIVE, f64::INFINITY, f64::NEG_INFINITY, f64::NAN];
        let mut r = Xoshiro128::from_state([5, 6, 7, 8]);
        let random = (0..200_000).map(|i| {
            let u = r.uniform();
            match i % 4 {
                0 => (u - 0.5) * 10.0,
                1 => js_log(u) / js_log(1.0 - 1e-4 * u),
                2 => f64::from_bits((r.next_u32() as u64) << 32 | r.next_u32() as u64),
                _ => -(u * 1e12),
            }
        });
        for x in special.into_iter().chain(random) {
            assert_eq!(floor_fast(x).to_bits(), x.floor().to_bits(), "floor({x:e})");
        }
    }

    #[test]
    fn pulse_index_check() {
        for (p, ok) in [(0.0, true), (-0.0, true), (1.0, true), (9_007_199_254_740_991.0, true), (9_007_199_254_740_992.0, false), (0.5, false),
            (-1.0, false), (1e300, false), (f64::NAN, false), (f64::INFINITY, false), (4_503_599_627_370_495.5, false)] {
            assert_eq!(is_pulse_index(p), ok, "{p}");
        }
    }

    #[test]
    fn log_known_values() {
        assert_eq!(js_log(1.0), 0.0);
        assert_eq!(js_log(0.0), f64::NEG_INFINITY);
        assert!(js_log(-1.0).is_nan());
        assert_eq!(js_log(std::f64::consts::E), 1.0);
        assert_eq!(js_log(2.0), std::f64::consts::LN_2);
        // within one ulp of the platform's log everywhere we use it (0, 1)
        let mut r = Xoshiro128::from_state([1, 2, 3, 4]);
        for _ in 0..100_000 {
            let u = r.uniform();
            let (a, b) = (js_log(u), u.ln());
            assert!((a - b).abs() <= 2.0 * f64::EPSILON * b.abs(), "{u}: {a} vs {b}");
        }
    }

    #[test]
    fn xoshiro128_reference_output() {
        // xoshiro128** from the state [1, 2, 3, 4] (the authors' C code gives 11520, 0, 5927040, 70819200)
        let mut r = Xoshiro128::from_state([1, 2, 3, 4]);
        let got: Vec<u32> = (0..4).map(|_| r.next_u32()).collect();
        assert_eq!(got, vec![11520, 0, 5927040, 70819200]);
    }

    #[test]
    fn bob_bases_extend_equals_bob_basis() {
        let mut r = Xoshiro128::from_state([3, 1, 4, 1]);
        for &th in &[0u64, 1, 1 << 31, 2_576_980_378, (1 << 32) - 1, 1 << 32] {
            let keys = SeedKeys { k0: r.next_u32(), k1: r.next_u32() };
            let mut pulses: Vec<f64> = (0..5000).map(|_| ((r.next_u32() as u64) << 21 | r.next_u32() as u64 >> 11) as f64).collect();
            pulses.extend([0.0, 1.0, 4_294_967_295.0, 4_294_967_296.0, 4_503_599_627_370_495.0, 4_503_599_627_370_496.0,
                4_503_599_627_370_497.0, 9_007_199_254_740_991.0, 9_007_199_254_740_990.0]);
            pulses.extend((0..2000).map(|_| (4_503_599_627_370_496u64 + ((r.next_u32() as u64) << 20 | r.next_u32() as u64 >> 12)) as f64));
            for n in [0, 1, 7, 8, 9, pulses.len()] {
                let mut out = vec![5i8; 3];
                bob_bases_extend(keys, th, &pulses[..n], &mut out);
                assert_eq!(&out[..3], &[5, 5, 5]);
                for (i, &p) in pulses[..n].iter().enumerate() {
                    assert_eq!(out[3 + i] as u8, bob_basis(keys, th, p), "pulse {p}, threshold {th}");
                }
                let mut plain = vec![0i8; n];
                bob_bases_plain(keys, th, &pulses[..n], &mut plain);
                assert_eq!(&out[3..], &plain[..]);
            }
        }
    }

    #[test]
    fn bob_bases_at_checks_indices() {
        let keys = SeedKeys { k0: 0x1234_5678, k1: 0x9abc_def0 };
        let th = 1u64 << 31;
        let pulses = [0.0, 1.0, 9_007_199_254_740_991.0, 4_294_967_296.0];
        let mut out = [9u8; 4];
        bob_bases_at(keys, th, &pulses, &mut out).unwrap();
        for (i, &p) in pulses.iter().enumerate() {
            assert_eq!(out[i], bob_basis(keys, th, p));
        }
        for bad in [-1.0, 0.5, f64::NAN, f64::INFINITY, 9_007_199_254_740_992.0] {
            let mut o = [0u8; 2];
            assert_eq!(bob_bases_at(keys, th, &[3.0, bad], &mut o), Err(1), "{bad}");
        }
        // a bad pulse in a later slice of a long list: the first one is named
        let mut long: Vec<f64> = (0..20_000).map(|i| i as f64 * 7.0).collect();
        long[17_001] = -3.0;
        long[19_000] = 0.5;
        let mut o = vec![0u8; long.len()];
        assert_eq!(bob_bases_at(keys, th, &long, &mut o), Err(17_001));
        long[9_000] = f64::NAN;
        assert_eq!(bob_bases_at(keys, th, &long, &mut o), Err(9_000));
        // threshold 2^32: always Z; 0: always X
        let mut o = [9u8; 4];
        bob_bases_at(keys, 1 << 32, &pulses, &mut o).unwrap();
        assert_eq!(o, [0; 4]);
        bob_bases_at(keys, 0, &pulses, &mut o).unwrap();
        assert_eq!(o, [1; 4]);
        // long lists (the vector path, with a tail), random pulses below and above 2^52
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for (n, top) in [(1003usize, 1u64 << 40), (517, 1 << 53)] {
            let ps: Vec<f64> = (0..n).map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % top) as f64
            }).collect();
            let mut o = vec![9u8; n];
            bob_bases_at(keys, th, &ps, &mut o).unwrap();
            for (i, &p) in ps.iter().enumerate() {
                assert_eq!(o[i], bob_basis(keys, th, p), "pulse {p}");
            }
        }
    }

    #[test]
    fn round_like_js() {
        assert_eq!(js_round(2.5), 3.0);
        assert_eq!(js_round(-2.5), -2.0);
        assert_eq!(js_round(-2.6), -3.0);
        assert_eq!(js_round(1e15 + 0.5), 1e15 + 1.0);
    }
}
