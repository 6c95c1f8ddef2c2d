//! The shipped family of mother codes and rate adaptation (puncturing + shortening + blind
//! revelation), after Elkouss, Martinez-Mateo, Lancho, Martin, "Rate compatible protocol for
//! information reconciliation: an application to QKD", ITW 2010 (arXiv:1006.2660), §III, and
//! Martinez-Mateo, Elkouss, Martin, "Blind reconciliation", QIC 12 (2012), §3.
//!
//! A mother code has length n, m checks and a modulation budget d: every frame places the caller's
//! k = n − d key bits at the key positions, p random (secret, caller-supplied) bits at the first p
//! untainted puncturing positions and zeros at the first s = d − p shortening positions. Alice
//! discloses the m-bit syndrome; because the punctured columns are independent (see code.rs), the
//! disclosure about the key is at most m − p bits. Each blind retry reveals r more bits (first the
//! punctured fill, then key bits in a fixed order): leak = m − p + r, counted, never estimated.

use crate::code::{construct, Code, CodeSpec};
use crate::rng::SplitMix64;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Mother code lengths shipped: 2^LOG2N for these exponents.
pub const LOG2N: [u32; 5] = [12, 14, 16, 18, 20];
/// Mother code rates shipped, in per mille.
pub const RATES_PERMILLE: [u32; 11] = [500, 550, 600, 650, 700, 750, 800, 850, 880, 910, 940];
/// Modulation budget d = n · D_PERMILLE / 1000.
pub const D_PERMILLE: usize = 100;

/// Base of every construction seed: seed = SEED_BASE + 1000·log2(n) + rate‰ (see docs/ldpc.md).
pub const SEED_BASE: u64 = 0x5144_4B4C_4450_0000; // "QDKLDP" + 0000

/// Binary entropy h(q) in bits.
pub fn h2(q: f64) -> f64 {
    if q <= 0.0 || q >= 1.0 {
        return 0.0;
    }
    -q * q.log2() - (1.0 - q) * (1.0 - q).log2()
}

/// Inverse of h on [0, 1/2] by bisection.
pub fn h2_inv(y: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 0.5f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if h2(mid) < y {
            lo = mid
        } else {
            hi = mid
        }
    }
    0.5 * (lo + hi)
}

/// Edge-perspective variable degree distribution for a mother code of rate R.
///
/// Heuristic, NOT density-evolution optimised (docs/ldpc.md says so): the shape
/// λ(x) = 0.16x + 0.22x² + 0.10x³ + 0.22x⁶ + 0.30x¹⁴ was the best of eight candidates in a short
/// empirical sweep (rate 0.8, n = 2^16, this decoder, 60 iterations; max degree above ~15 hurt
/// min-sum at this iteration budget). λ2 is capped at 90 % of the BSC stability bound
/// λ2·ρ'(1) < 1/B, B = 2√(q*(1−q*)) (Richardson, Shokrollahi, Urbanke, IEEE Trans. IT 47(2), 2001,
/// Thm. 5), q* = h⁻¹(1 − R) the capacity crossover of the rate; the capped mass moves to degree 3.
pub fn lambda_for_rate(rate: f64) -> Vec<(usize, f64)> {
    let base: [(usize, f64); 5] = [(2, 0.16), (3, 0.22), (4, 0.10), (7, 0.22), (15, 0.30)];
    let mut lam: Vec<(usize, f64)> = base.to_vec();
    let q = h2_inv(1.0 - rate);
    let b = 2.0 * (q * (1.0 - q)).sqrt();
    for _ in 0..4 {
        let avg_v = 1.0 / lam.iter().map(|&(d, l)| l / d as f64).sum::<f64>();
        let dc = avg_v / (1.0 - rate);
        let cap = 0.9 / (b * (dc - 1.0));
        if lam[0].1 > cap {
            let excess = lam[0].1 - cap;
            lam[0].1 = cap;
            lam[1].1 += excess;
        }
    }
    lam
}

/// Identifies one mother code of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CodeId {
    pub log2n: u32,
    pub rate_permille: u32,
}

impl CodeId {
    pub fn spec(&self) -> CodeSpec {
        let n = 1usize << self.log2n;
        let m = (n * (1000 - self.rate_permille as usize) + 999) / 1000;
        CodeSpec {
            n,
            m,
            lambda: lambda_for_rate(self.rate_permille as f64 / 1000.0),
            seed: SEED_BASE + 1000 * self.log2n as u64 + self.rate_permille as u64,
            d: n * D_PERMILLE / 1000,
        }
    }
    pub fn is_shipped(&self) -> bool {
        LOG2N.contains(&self.log2n) && RATES_PERMILLE.contains(&self.rate_permille)
    }
}

/// Process-wide cache of constructed codes (construction is deterministic; ~1 s for 2^20).
pub fn code(id: CodeId) -> Arc<Code> {
    static CACHE: OnceLock<Mutex<HashMap<CodeId, Arc<OnceLock<Arc<Code>>>>>> = OnceLock::new();
    let cell = {
        let mut map = CACHE.get_or_init(|| Mutex::new(HashMap::new())).lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id).or_insert_with(|| Arc::new(OnceLock::new())).clone()
    };
    // Built outside the map lock so different codes build concurrently.
    cell.get_or_init(|| Arc::new(construct(&id.spec()))).clone()
}

/// Rate-adaptation parameters of a frame: which mother code, how many punctured and shortened.
/// Both parties must use the same value (it travels with the syndrome).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameParams {
    pub code: CodeId,
    pub punctured: usize,
    pub shortened: usize,
}

impl FrameParams {
    pub fn n(&self) -> usize {
        1 << self.code.log2n
    }
    pub fn d(&self) -> usize {
        self.n() * D_PERMILLE / 1000
    }
    pub fn key_bits(&self) -> usize {
        self.n() - self.d()
    }
    pub fn syndrome_bits(&self) -> usize {
        self.code.spec().m
    }
    /// Bits disclosed by the syndrome alone (m − p).
    pub fn base_leak(&self) -> usize {
        self.syndrome_bits() - self.punctured
    }
}

/// Position roles within the mother word.
pub const KEY: u8 = 0;
pub const PUNCT: u8 = 1;
pub const SHORT: u8 = 2;

/// Where each bit goes, for one (code, p, s).
pub struct Layout {
    pub kind: Vec<u8>,
    /// key_pos[i] = position of key bit i (ascending).
    pub key_pos: Vec<u32>,
    /// Positions of the punctured fill, fill bit j at punct_pos[j].
    pub punct_pos: Vec<u32>,
    /// Order in which blind retries reveal positions: punctured first, then key positions.
    pub reveal_order: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    NotShipped,
    BadSplit { d: usize, p: usize, s: usize, pmax: usize },
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamError::NotShipped => write!(f, "the requested mother code is not in the shipped family"),
            ParamError::BadSplit { d, p, s, pmax } => write!(
                f,
                "punctured + shortened must equal the modulation budget d = {d} with punctured <= {pmax}, got p = {p}, s = {s}"
            ),
        }
    }
}

pub fn layout(code: &Code, p: usize, s: usize) -> Result<Layout, ParamError> {
    let d = code.spec.d;
    if p + s != d || p > code.punct_order.len() {
        return Err(ParamError::BadSplit { d, p, s, pmax: code.punct_order.len() });
    }
    let mut kind = vec![KEY; code.n];
    let punct_pos: Vec<u32> = code.punct_order[..p].to_vec();
    for &v in &punct_pos {
        kind[v as usize] = PUNCT;
    }
    for &v in &code.short_order[..s] {
        kind[v as usize] = SHORT;
    }
    let key_pos: Vec<u32> = (0..code.n as u32).filter(|&v| kind[v as usize] == KEY).collect();
    // Key bits are revealed in a seeded order so that revelations spread over the whole frame.
    let mut perm = key_pos.clone();
    SplitMix64::new(code.spec.seed ^ 0x5245_5645_414C).shuffle(&mut perm); // "REVEAL"
    let mut reveal_order = punct_pos.clone();
    reveal_order.extend_from_slice(&perm);
    Ok(Layout { kind, key_pos, punct_pos, reveal_order })
}

pub fn check_params(fp: &FrameParams) -> Result<Arc<Code>, ParamError> {
    if !fp.code.is_shipped() {
        return Err(ParamError::NotShipped);
    }
    let c = code(fp.code);
    if fp.punctured + fp.shortened != c.spec.d || fp.punctured > c.punct_order.len() {
        return Err(ParamError::BadSplit { d: c.spec.d, p: fp.punctured, s: fp.shortened, pmax: c.punct_order.len() });
    }
    Ok(c)
}

/// Target efficiency used by `choose` as a function of QBER and frame size: about the smallest f
/// at which this decoder's first-pass frame error rate was ≤ 1–2 % in a sweep with 128 frames of
/// 2^16 (docs/ldpc.md); shorter frames get more margin, longer ones a little less. Blind retries
/// handle the remaining failures (each revealed bit counted).
pub fn target_efficiency(qber: f64, log2n: u32) -> f64 {
    let base = if qber < 0.015 {
        1.45
    } else if qber < 0.025 {
        1.35
    } else if qber < 0.04 {
        1.30
    } else {
        1.27
    };
    let size_term = match log2n {
        0..=12 => 0.25,
        13..=14 => 0.08,
        15..=16 => 0.0,
        17..=18 => -0.02,
        _ => -0.04,
    };
    base + size_term
}

/// Picks mother code, puncturing and shortening for a measured QBER and a preferred number of key
/// bits per frame (the largest shipped frame with k ≤ `frame_bits`, or the smallest one).
pub fn choose(qber: f64, frame_bits: usize, efficiency: Option<f64>) -> FrameParams {
    let q = qber.clamp(1e-4, 0.2);
    let mut log2n = LOG2N[0];
    for &l in LOG2N.iter() {
        let n = 1usize << l;
        if n - n * D_PERMILLE / 1000 <= frame_bits {
            log2n = l;
        }
    }
    let n = 1usize << log2n;
    let d = n * D_PERMILLE / 1000;
    let k = n - d;
    let f = efficiency.unwrap_or_else(|| target_efficiency(q, log2n));
    let target = (f * k as f64 * h2(q)).ceil() as usize;
    // Codes from highest rate (fewest checks) down: the first whose m ≥ target.
    let mut chosen: Option<CodeId> = None;
    for &r in RATES_PERMILLE.iter().rev() {
        let id = CodeId { log2n, rate_permille: r };
        if id.spec().m >= target {
            chosen = Some(id);
            break;
        }
    }
    let id = chosen.unwrap_or(CodeId { log2n, rate_permille: RATES_PERMILLE[0] });
    let c = code(id);
    let m = c.m;
    let p = m.saturating_sub(target).min(c.punct_order.len()).min(d);
    FrameParams { code: id, punctured: p, shortened: d - p }
}

/// Header of native/ldpc/codes/checksums.txt.
pub const CHECKSUM_HEADER: &str =
    "# log2n rate_permille seed n m d edges punct_max four_cycles_accepted fnv1a64  (see docs/ldpc.md)";

/// One line of the provenance table (constructs the code).
pub fn provenance_line(id: CodeId) -> String {
    let c = code(id);
    format!(
        "{} {} {:#018x} {} {} {} {} {} {} {:016x}",
        id.log2n,
        id.rate_permille,
        c.spec.seed,
        c.n,
        c.m,
        c.spec.d,
        c.edges(),
        c.punct_order.len(),
        c.four_cycles_accepted,
        c.checksum()
    )
}

/// The shipped provenance table (regenerated and compared by tests/provenance.rs).
pub const SHIPPED_TABLE: &str = include_str!("../codes/checksums.txt");
