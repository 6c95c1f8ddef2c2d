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
pub const RATES_PERMILLE: [u32; 16] = [500, 550, 600, 650, 700, 750, 775, 800, 825, 850, 865, 880, 895, 910, 925, 940];
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

/// BSC-optimised variable degree distributions (edge perspective, (degree, λ_d)) found by
/// differential evolution over discretised density evolution (sum-product decoding) by Elkouss,
/// Leverrier, Alléaume, Boutros, "Efficient reconciliation protocol for discrete-variable quantum
/// key distribution", ISIT 2009 (arXiv:0901.2140), Table I: rate, BSC threshold, λ(x). Their ρ(x)
/// is concentrated on two consecutive degrees for rates ≥ 0.7 and close to it below; the
/// construction concentrates check degrees (⌊E/m⌋ or ⌈E/m⌉) for every rate. Table I lists
/// x^(d−1) terms; here the node degree d is written.
pub const ELKOUSS_2009: [(f64, f64, &[(usize, f64)]); 9] = [
    (0.90, 0.0109, &[(2, 0.07689), (3, 0.28096), (5, 0.08933), (9, 0.19620), (12, 0.30631), (21, 0.05031)]),
    (0.85, 0.0199, &[(2, 0.04528), (3, 0.20537), (4, 0.05878), (5, 0.094274), (6, 0.08454), (7, 0.01176), (9, 0.05137), (21, 0.50015)]),
    (0.80, 0.0298, &[(2, 0.09420), (3, 0.18088), (6, 0.11972), (7, 0.08550), (8, 0.09816), (17, 0.07194), (26, 0.34960)]),
    (0.75, 0.0392, &[(2, 0.10805), (3, 0.09511), (4, 0.01449), (5, 0.13764), (6, 0.10667), (7, 0.05288), (28, 0.01107), (31, 0.47408)]),
    (
        0.70,
        0.0504,
        &[(2, 0.05343), (3, 0.29406), (6, 0.00896), (9, 0.15571), (12, 0.12189), (25, 0.19872), (46, 0.09572), (62, 0.02741), (65, 0.04056), (73, 0.00354)],
    ),
    (
        0.65,
        0.0633,
        &[(2, 0.10451), (3, 0.15652), (4, 0.08057), (5, 0.00056), (9, 0.12151), (13, 0.10485), (15, 0.10719), (21, 0.00771), (51, 0.31656)],
    ),
    (0.60, 0.0766, &[(2, 0.11040), (3, 0.20804), (8, 0.14163), (9, 0.14858), (26, 0.14438), (27, 0.08909), (46, 0.00748), (71, 0.15038)]),
    (0.55, 0.0904, &[(2, 0.16880), (3, 0.20994), (6, 0.18095), (15, 0.03846), (16, 0.02635), (18, 0.23454), (19, 0.05815), (31, 0.08280)]),
    (
        0.50,
        0.1071,
        &[
            (2, 0.14438), (3, 0.19026), (4, 0.01836), (5, 0.00233), (6, 0.04697), (8, 0.053943), (9, 0.05590), (10, 0.01290),
            (11, 0.00162), (14, 0.06159), (15, 0.13115), (17, 0.01481), (47, 0.00879), (49, 0.00650), (55, 0.00210), (56, 0.00099),
            (57, 0.11178), (58, 0.06238), (59, 0.05094), (66, 0.02230),
        ],
    ),
];

/// Variable degree distributions (edge perspective) designed for this crate's decoder at the high
/// rates, where Table I is weakest: `examples/design_de.py` (hill climbing on λ at a fixed rate and
/// concentrated check degree, scored by discretised density evolution of the decoder's own 8-bit
/// arithmetic — the saturating box-plus of decoder.rs on integer LLRs at LLR_SCALE, messages
/// clipped to ±127 — with 10 % of the positions shortened, as the rate adaptation does; flooding
/// schedule, 120 iterations ≈ the 60 layered ones of the decoder). Columns: design rate, the
/// density-evolution efficiency f* = (1 − R)/(0.9·h(q*)) the design reached (120 iterations,
/// node error < 1e-6), λ. The starting point was Table I's 0.85 row; see docs/ldpc.md.
pub const DE_DESIGNS: [(f64, f64, &[(usize, f64)]); 4] = [
    (
        0.91,
        1.105,
        &[
            (2, 0.05652), (3, 0.18968), (4, 0.00922), (5, 0.04614), (6, 0.11002), (7, 0.05248), (8, 0.03891), (9, 0.04826),
            (12, 0.01834), (14, 0.00512), (16, 0.00656), (18, 0.00092), (21, 0.39392), (25, 0.00626), (30, 0.01765),
        ],
    ),
    (
        0.865,
        1.10,
        &[
            (2, 0.05510), (3, 0.18532), (4, 0.06008), (5, 0.06275), (6, 0.07375), (7, 0.02274), (9, 0.02509), (12, 0.01989),
            (14, 0.05121), (16, 0.00327), (21, 0.38871), (25, 0.01942), (30, 0.02228), (40, 0.01039),
        ],
    ),
    (
        0.85,
        1.09,
        &[
            (2, 0.06177), (3, 0.18047), (4, 0.05755), (5, 0.05949), (6, 0.07182), (7, 0.02215), (9, 0.04664), (12, 0.00877),
            (14, 0.04987), (21, 0.34701), (25, 0.02247), (30, 0.05468), (40, 0.01731),
        ],
    ),
    (
        0.80,
        1.07,
        &[
            (2, 0.07228), (3, 0.22986), (5, 0.00293), (6, 0.06037), (7, 0.12949), (8, 0.07157), (10, 0.00217), (12, 0.02224),
            (14, 0.00371), (17, 0.03242), (21, 0.03027), (26, 0.30548), (30, 0.02996), (35, 0.00724),
        ],
    ),
];

/// Edge-perspective variable degree distribution for a mother code of rate R: for R ≥ 0.85 the
/// `DE_DESIGNS` row with the largest design rate ≤ R (0.85; 0.865 for 0.865 … 0.895; 0.91 for
/// 0.91 … 0.94); below, the Table I entry of Elkouss et al. 2009 (`ELKOUSS_2009`) with the largest
/// rate ≤ R (the 0.90 and 0.85 entries are no longer used: with this decoder the 0.85 row had
/// beaten the 0.90 one at rates 0.90 … 0.94, and the designs beat the 0.85 row), renormalised. λ2 is capped at 90 % of the
/// BSC stability bound λ2·ρ'(1) < 1/B, B = 2√(q*(1−q*)) (Richardson, Shokrollahi, Urbanke,
/// IEEE Trans. IT 47(2), 2001, Thm. 5; eq. (8) of Elkouss et al.), q* = h⁻¹(1 − R) the capacity
/// crossover of the rate; the capped mass moves to degree 3 (only borrowed rows can need it).
pub fn lambda_for_rate(rate: f64) -> Vec<(usize, f64)> {
    let terms: &[(usize, f64)] = match DE_DESIGNS.iter().find(|r| r.0 <= rate + 1e-9) {
        Some(r) => r.2,
        None => ELKOUSS_2009.iter().skip(3).find(|r| r.0 <= rate + 1e-9).unwrap_or(&ELKOUSS_2009[ELKOUSS_2009.len() - 1]).2,
    };
    let total: f64 = terms.iter().map(|x| x.1).sum();
    let mut lam: Vec<(usize, f64)> = terms.iter().map(|&(d, l)| (d, l / total)).collect();
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

/// Code families. `Random`: the socket construction of code.rs (the shipped table). `Qc`: the same
/// degree distributions on a protograph of n/QC_BASE_COLS columns lifted by circulants of size
/// Z = n/4096 with shifts chosen by QC-PEG (qc.rs). A QC code is named by rate‰ + `QC_TAG` in
/// `CodeId::rate_permille` (so the parameters that travel with a syndrome need no new field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Random,
    Qc,
}

/// Added to the rate‰ of a QC code in `CodeId::rate_permille`.
pub const QC_TAG: u32 = 1000;
/// Protograph columns of every QC code (Z = n / QC_BASE_COLS = 64 at 2^18; with 1024 columns and
/// Z = 256 the high-rate lifts kept girth 6 and decoded worse, docs/ldpc.md).
pub const QC_BASE_COLS: usize = 4096;
/// Frame sizes with a QC family (the only one measured).
pub const QC_LOG2N: [u32; 1] = [18];

impl CodeId {
    pub fn new(log2n: u32, rate_permille: u32, family: Family) -> CodeId {
        CodeId { log2n, rate_permille: rate_permille + if family == Family::Qc { QC_TAG } else { 0 } }
    }
    pub fn family(&self) -> Family {
        if self.rate_permille > QC_TAG {
            Family::Qc
        } else {
            Family::Random
        }
    }
    /// The code's design rate in per mille (without the family tag).
    pub fn rate(&self) -> u32 {
        self.rate_permille % QC_TAG
    }
    /// Lifting factor of a QC code.
    pub fn lift(&self) -> usize {
        (1usize << self.log2n) / QC_BASE_COLS
    }
    pub fn spec(&self) -> CodeSpec {
        if self.family() == Family::Qc {
            let n = 1usize << self.log2n;
            let r = self.rate() as usize;
            let mb = (QC_BASE_COLS * (1000 - r)).div_ceil(1000);
            return CodeSpec {
                n,
                m: mb * self.lift(),
                lambda: lambda_for_rate(r as f64 / 1000.0),
                seed: (SEED_BASE ^ 0x5143_0000) + 1000 * self.log2n as u64 + r as u64,
                d: n * D_PERMILLE / 1000,
            };
        }
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
        if self.family() == Family::Qc {
            return QC_LOG2N.contains(&self.log2n) && RATES_PERMILLE.contains(&self.rate());
        }
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
    cell.get_or_init(|| {
        Arc::new(match id.family() {
            Family::Random => construct(&id.spec()),
            Family::Qc => crate::qc::construct_qc(&id.spec(), id.lift()).code,
        })
    })
    .clone()
}

/// Builds (and caches) every shipped code of length 2^log2n, the rates in parallel on the rayon
/// pool (16 codes: ≈ 2× faster on 2 cores than one after the other). Returns how many.
pub fn prepare(log2n: u32) -> usize {
    use rayon::prelude::*;
    RATES_PERMILLE.par_iter().for_each(|&r| {
        let _ = code(CodeId { log2n, rate_permille: r });
    });
    RATES_PERMILLE.len()
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

/// `layout` of the code of `fp` (as `check_params` returned it), kept for the last few
/// parameter sets: every encode, reveal and decode call needs it, and at 2^18 its seeded shuffle
/// of the key positions cost ≈ 1 % of a node block's CPU, recomputed per call (Alice's reveals:
/// per frame and round). Public parameters only; the result is the same as `layout`'s.
pub fn layout_shared(code: &Code, fp: &FrameParams) -> Result<Arc<Layout>, ParamError> {
    static CACHE: Mutex<Vec<((CodeId, usize, usize), Arc<Layout>)>> = Mutex::new(Vec::new());
    let key = (fp.code, fp.punctured, fp.shortened);
    if let Some((_, l)) = CACHE.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|(k, _)| *k == key) {
        return Ok(l.clone());
    }
    let l = Arc::new(layout(code, fp.punctured, fp.shortened)?);
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= 8 {
        c.remove(0);
    }
    c.push((key, l.clone()));
    Ok(l)
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
/// at which this decoder's first-pass frame error rate was ≲ 1–3 % (2^16: 128 frames per point;
/// 2^18: 32; 2^20: 16) in the sweeps of docs/ldpc.md, interpolated linearly in QBER between the
/// measured points. Below 1 % the 1 % value grows by 0.1 per −1 %; above 8 % the 8 % value is kept
/// (both extrapolated). 2^12 and 2^14 frames use the 2^16 points plus a margin (2^14 checked at
/// QBER 2 % only). Blind retries handle the remaining failures (each revealed bit counted).
pub fn target_efficiency(qber: f64, log2n: u32) -> f64 {
    const P16: [(f64, f64); 7] =
        [(0.01, 1.27), (0.015, 1.18), (0.02, 1.16), (0.03, 1.13), (0.04, 1.13), (0.05, 1.11), (0.08, 1.11)];
    const P18: [(f64, f64); 5] = [(0.01, 1.19), (0.02, 1.13), (0.03, 1.11), (0.05, 1.09), (0.08, 1.10)];
    // 2^20: QBER 2, 5, 8 % measured; 1 and 3 % from the 2^18 points minus 0.02.
    const P20: [(f64, f64); 5] = [(0.01, 1.17), (0.02, 1.12), (0.03, 1.09), (0.05, 1.09), (0.08, 1.09)];
    // 2^16 at 1 %: 1.235 (rate-0.91 code, 13 punctured) gave first-pass FER 6/128 but those frames
    // needed 31 blind rounds each (revealing key bits barely helps there): f after retries 1.272.
    // 1.27 (rate 0.895, 829 punctured, revealed first on a retry) gives 1.271 with 0.03 rounds.
    let (points, margin): (&[(f64, f64)], f64) = match log2n {
        0..=12 => (&P16, 0.25),
        13..=14 => (&P16, 0.10),
        15..=16 => (&P16, 0.0),
        17..=18 => (&P18, 0.0),
        _ => (&P20, 0.0),
    };
    let base = interpolate(points, qber, 0.1);
    base + margin
}

/// Piecewise-linear interpolation in QBER between measured (qber, value) points; below the first
/// point the value grows by `below_slope` per −(first qber), above the last it is kept.
fn interpolate(points: &[(f64, f64)], qber: f64, below_slope: f64) -> f64 {
    let (first, last) = (points[0], points[points.len() - 1]);
    if qber <= first.0 {
        first.1 + below_slope * (first.0 - qber) / first.0
    } else if qber >= last.0 {
        last.1
    } else {
        let i = points.iter().position(|p| p.0 > qber).unwrap();
        let (a, b) = (points[i - 1], points[i]);
        a.1 + (b.1 - a.1) * (qber - a.0) / (b.0 - a.0)
    }
}

/// Blind reconciliation schedule (Martinez-Mateo, Elkouss, Martin, QIC 12 (2012)): the efficiency
/// of the first attempt f0 and the step Δf added per retry (revealed bits = ⌈Δf·k·h(Q)⌉), per
/// QBER and frame size. Measured with `examples/blind.rs` (docs/ldpc.md): every frame was retried
/// in steps of 0.01 from a low start, giving the distribution of the smallest f at which each
/// frame decodes; f0 sits near its 30–40 % quantile and Δf near its spread, so a frame needs about
/// one retry on average and the mean leak stays within ≈ Δf/2 of that distribution's mean
/// (2^16: 128 frames per point, 2^18: 64, 2^20: 24). 2^12 and 2^14 use the 2^16 points plus a margin.
pub fn blind_schedule(qber: f64, log2n: u32) -> BlindSchedule {
    // (qber, f0, Δf, headroom): the mother code must cover f0 + headroom with punctured fill.
    // At 8 % the headroom is larger so that the rate-0.55 mother is used: with it 2^18 frames
    // decode at f = 1.072 on average, with the rate-0.60 one at 1.088 (64 frames each).
    // 3.15-4 %: first-pass sweeps as for 2^18 below (32 frames per f0): 3.15 % 1.10 → 9/32,
    // 3.32 % 1.10 → 10/32, 3.5 % 1.09 → 11/32, 4 % 1.09 → 10/32 (the interpolation gave 3/32).
    const B16: [(f64, f64, f64, f64); 8] = [
        (0.01, 1.12, 0.015, 0.05), (0.02, 1.09, 0.015, 0.045), (0.03, 1.08, 0.015, 0.045), (0.0315, 1.10, 0.015, 0.045),
        (0.035, 1.09, 0.015, 0.045), (0.04, 1.09, 0.015, 0.045), (0.05, 1.065, 0.01, 0.03), (0.08, 1.07, 0.015, 0.06),
    ];
    // Between 3 % and 5 % the plan's mother codes are the rate-0.775 and 0.75 ones (Table I rows,
    // not DE-designed), which first decode higher than the 0.80 code at 3 %: the f0 interpolated
    // from the 3 % and 5 % points had 0/15 frames decoding at the first pass in the node (QBER
    // 3.3 %: two wasted rounds per block). Points at 3.15, 3.5 and 4 % from first-pass sweeps
    // (32 frames per f0, docs/ldpc.md): 3.15 % 1.10 → 4/32, 1.11 → 14/32; 3.32 % 1.10 → 8/32,
    // 1.11 → 25/32; 4 % 1.09 → 14/32.
    const B18: [(f64, f64, f64, f64); 8] = [
        (0.01, 1.12, 0.01, 0.04), (0.02, 1.10, 0.01, 0.03), (0.03, 1.085, 0.01, 0.03), (0.0315, 1.105, 0.01, 0.03),
        (0.035, 1.10, 0.01, 0.03), (0.04, 1.088, 0.01, 0.03), (0.05, 1.065, 0.01, 0.03), (0.08, 1.065, 0.01, 0.06),
    ];
    // 2^20: 1 % measured (24 frames); the others from first-pass sweeps (16 frames per f0, BSC;
    // docs/ldpc.md "Between the measured points"): the f0 decoding ~30-40 % of frames at the first
    // pass (2 % 1.10 → 11/16; 2.5 % 1.09 → 5/16; 3 % 1.08 → 6/16; 3.32 % 1.10 → 4/16; 4 % 1.09 → 8/16;
    // 4.5 % 1.08 → 12/16; 5 % 1.06 → 0/16, 1.07 → 16/16; 8 % likewise).
    const B20: [(f64, f64, f64, f64); 11] = [
        (0.01, 1.15, 0.01, 0.03), (0.02, 1.095, 0.01, 0.03), (0.025, 1.09, 0.01, 0.03), (0.03, 1.08, 0.01, 0.03),
        (0.0315, 1.105, 0.01, 0.03), (0.035, 1.095, 0.01, 0.03), (0.04, 1.087, 0.01, 0.03), (0.045, 1.077, 0.01, 0.03),
        (0.05, 1.065, 0.01, 0.03), (0.065, 1.058, 0.01, 0.03), (0.08, 1.065, 0.01, 0.06),
    ];
    let (table, margin): (&[(f64, f64, f64, f64)], f64) = match log2n {
        0..=12 => (&B16, 0.2),
        13..=14 => (&B16, 0.08),
        15..=16 => (&B16, 0.0),
        17..=18 => (&B18, 0.0),
        _ => (&B20, 0.0),
    };
    let col = |j: usize| -> Vec<(f64, f64)> { table.iter().map(|t| (t.0, [t.1, t.2, t.3][j])).collect() };
    let short = if margin > 0.0 { 2.0 } else { 1.0 }; // short frames: coarser steps
    BlindSchedule {
        first_efficiency: interpolate(&col(0), qber, 0.1) + margin,
        step: interpolate(&col(1), qber, 0.0) * short,
        headroom: interpolate(&col(2), qber, 0.0) * short,
    }
}

/// Parameters of the blind schedule in units of f (leak / (k·h(Q))).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlindSchedule {
    pub first_efficiency: f64,
    pub step: f64,
    /// How far above `first_efficiency` retries may go on punctured fill alone (beyond it, key
    /// bits are revealed: 1 leaked bit for only h(Q) bits of help).
    pub headroom: f64,
}

/// A blind-reconciliation plan: the first attempt's parameters and the bits revealed per retry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlindPlan {
    pub params: FrameParams,
    /// Bits Alice reveals per retry round (punctured fill first, then key bits).
    pub step_bits: usize,
    /// Efficiency of the first attempt, (m − p)/(k·h(Q)).
    pub first_efficiency: f64,
}

/// Blind reconciliation: the mother code is the highest-rate one whose syndrome covers
/// f0 + headroom (so retries reveal punctured fill: 1 leaked bit = 1 bit of help, like a syndrome
/// bit), punctured down to f0 (`blind_schedule`). More headroom means a lower-rate mother and more
/// puncturing, which costs efficiency at QBER 1–5 % (2^16, headroom 8 steps instead of 3: f 1.196
/// vs 1.176 at 1 %, 1.125 vs 1.099 at 3 %).
pub fn choose_blind(qber: f64, frame_bits: usize) -> BlindPlan {
    let log2n = frame_log2n(frame_bits);
    choose_blind_in(qber, frame_bits, default_family(qber, log2n))
}

/// The family `choose_blind` uses at this QBER and frame size (docs/ldpc.md, "QC codes").
pub fn default_family(_qber: f64, _log2n: u32) -> Family {
    Family::Random
}

/// `choose_blind` within one family (a QC family exists only for `QC_LOG2N`; other sizes fall
/// back to the random one).
pub fn choose_blind_in(qber: f64, frame_bits: usize, family: Family) -> BlindPlan {
    let q = qber.clamp(1e-4, 0.2);
    let log2n = frame_log2n(frame_bits);
    let family = if QC_LOG2N.contains(&log2n) { family } else { Family::Random };
    let n = 1usize << log2n;
    let d = n * D_PERMILLE / 1000;
    let hk = (n - d) as f64 * h2(q);
    let sched = blind_schedule(q, log2n);
    let (f0, df) = (sched.first_efficiency, sched.step);
    let t0 = (f0 * hk).ceil() as usize;
    let tmax = ((f0 + sched.headroom) * hk).ceil() as usize;
    let rate = RATES_PERMILLE.iter().rev().copied().find(|&r| CodeId::new(log2n, r, family).spec().m >= tmax);
    let id = CodeId::new(log2n, rate.unwrap_or(RATES_PERMILLE[0]), family);
    let c = code(id);
    let p = c.m.saturating_sub(t0).min(c.punct_order.len()).min(d);
    let params = FrameParams { code: id, punctured: p, shortened: d - p };
    BlindPlan { params, step_bits: (df * hk).ceil().max(1.0) as usize, first_efficiency: params.base_leak() as f64 / hk }
}

/// log2 of the mother length for a preferred number of key bits per frame: the largest shipped
/// frame with k ≤ `frame_bits`, or the smallest one.
pub fn frame_log2n(frame_bits: usize) -> u32 {
    let mut log2n = LOG2N[0];
    for &l in LOG2N.iter() {
        let n = 1usize << l;
        if n - n * D_PERMILLE / 1000 <= frame_bits {
            log2n = l;
        }
    }
    log2n
}

/// Picks mother code, puncturing and shortening for a measured QBER and a preferred number of key
/// bits per frame (the largest shipped frame with k ≤ `frame_bits`, or the smallest one).
pub fn choose(qber: f64, frame_bits: usize, efficiency: Option<f64>) -> FrameParams {
    let q = qber.clamp(1e-4, 0.2);
    let log2n = frame_log2n(frame_bits);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_layouts_equal_fresh_ones() {
        // More parameter sets than the cache holds, each asked twice: always `layout`'s value.
        let id = CodeId { log2n: 12, rate_permille: 800 };
        let c = code(id);
        for round in 0..2 {
            for p in (0..c.punct_order.len().min(c.spec.d)).step_by(37) {
                let fp = FrameParams { code: id, punctured: p, shortened: c.spec.d - p };
                let (a, b) = (layout_shared(&c, &fp).unwrap(), layout(&c, p, c.spec.d - p).unwrap());
                assert_eq!((&a.kind, &a.key_pos, &a.punct_pos, &a.reveal_order), (&b.kind, &b.key_pos, &b.punct_pos, &b.reveal_order), "p = {p}, round {round}");
            }
        }
        let bad = FrameParams { code: id, punctured: c.spec.d + 1, shortened: 0 };
        assert!(layout_shared(&c, &bad).is_err());
    }
}
