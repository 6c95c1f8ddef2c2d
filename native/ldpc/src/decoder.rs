//! Fast decoder: layered normalised min-sum in 8-bit fixed point, frames interleaved across SIMD
//! lanes.
//!
//! Algorithm: layered (turbo-decoding message passing) schedule of Mansour & Shanbhag, IEEE Trans.
//! VLSI 11(6), 2003, §III, with the normalised min-sum check update of Chen & Fossorier, "Near
//! optimum universal belief propagation based decoding of LDPC codes", IEEE Trans. Comm. 50(3),
//! 2002, eq. (6) (normalisation α = 3/4). Syndrome decoding: the check constraint is
//! Σ x_v = s_c, i.e. the outgoing sign is flipped when Alice's syndrome bit is 1.
//!
//! Per check c with neighbours v_j (edge messages R_j, posteriors L_v):
//!   t_j = L_{v_j} − R_j;  σ = (−1)^{s_c} Π sign(t_j);  μ1, μ2 = two smallest |t_j|;
//!   R_j ← σ·sign(t_j)·α·(j = argmin ? μ2 : μ1);  L_{v_j} ← t_j + R_j.
//!
//! Layout for SIMD: W frames of the same code and rate split are decoded together, one per lane;
//! every message is a `[i8; W]`, so each arithmetic step is one (or a few) vector instructions and
//! memory access is contiguous per edge. The lanes never interact, so a frame's result does not
//! depend on which other frames share its batch (a property test checks this). Values stay in
//! [−127, 127] (saturating ops then a clamp) so negation never overflows.
//!
//! Frozen positions (shortened, or revealed by a blind retry) hold ±127 and are never updated.
//! Punctured positions start at 0 (erasure). Early stop: after every iteration each lane's hard
//! decision is checked against its syndrome; a lane that matches is snapshotted with its iteration
//! count and ignored from then on; the batch stops when all lanes are done.
//!
//! `Kernel::Portable` runs the same code compiled for the baseline target (SSE2 on x86-64);
//! `Kernel::Auto` dispatches at run time to an AVX-512BW or AVX2 build of the same functions.
//! Integer arithmetic is identical in both, so results are bit-identical (tested).

use crate::code::Code;
use zeroize::Zeroizing;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Auto,
    Portable,
}

pub const MAXV: i8 = 127;

/// Result for one lane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaneOutcome {
    pub iterations: u32,
    pub converged: bool,
}

/// Input of one batch: posteriors initialised from the channel (per variable, per lane), which
/// variables are frozen, and the syndrome as sign masks (0 or −1 per check, per lane).
pub struct LaneBatch<const W: usize> {
    pub llr: Zeroizing<Vec<[i8; W]>>,
    pub frozen: Vec<bool>,
    pub synd: Zeroizing<Vec<[i8; W]>>,
    /// Lanes in use (the rest are padding and count as done from the start).
    pub active: usize,
}

/// Hard decisions: `out[v][lane]` ∈ {0, 1}.
pub struct LaneDecision<const W: usize> {
    pub bits: Zeroizing<Vec<[u8; W]>>,
    pub outcome: [LaneOutcome; W],
}

pub fn kernel_name(k: Kernel) -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if k == Kernel::Auto {
            if std::is_x86_feature_detected!("avx512bw") {
                return "avx512bw";
            }
            if std::is_x86_feature_detected!("avx2") {
                return "avx2";
            }
        }
    }
    let _ = k;
    "portable"
}

pub fn decode_lanes<const W: usize>(code: &Code, batch: LaneBatch<W>, max_iter: u32, kernel: Kernel) -> LaneDecision<W> {
    #[cfg(target_arch = "x86_64")]
    {
        if kernel == Kernel::Auto {
            if std::is_x86_feature_detected!("avx512bw") {
                // SAFETY: the CPU supports AVX-512F/BW (checked just above).
                return unsafe { decode_avx512::<W>(code, batch, max_iter) };
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { decode_avx2::<W>(code, batch, max_iter) };
            }
        }
    }
    let _ = kernel;
    decode_generic::<W>(code, batch, max_iter)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
unsafe fn decode_avx512<const W: usize>(code: &Code, batch: LaneBatch<W>, max_iter: u32) -> LaneDecision<W> {
    decode_generic::<W>(code, batch, max_iter)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn decode_avx2<const W: usize>(code: &Code, batch: LaneBatch<W>, max_iter: u32) -> LaneDecision<W> {
    decode_generic::<W>(code, batch, max_iter)
}

#[inline(always)]
fn decode_generic<const W: usize>(code: &Code, batch: LaneBatch<W>, max_iter: u32) -> LaneDecision<W> {
    let LaneBatch { mut llr, frozen, synd, active } = batch;
    let n = code.n;
    let mut r: Zeroizing<Vec<[i8; W]>> = Zeroizing::new(vec![[0i8; W]; code.edges()]);
    let mut tbuf: Zeroizing<Vec<[i8; W]>> = Zeroizing::new(vec![[0i8; W]; code.max_check_degree.max(1)]);
    let mut out: Zeroizing<Vec<[u8; W]>> = Zeroizing::new(vec![[0u8; W]; n]);
    let mut outcome = [LaneOutcome::default(); W];
    let mut done = [false; W];
    for (k, d) in done.iter_mut().enumerate() {
        *d = k >= active;
    }

    let mut it = 0u32;
    loop {
        let sat = syndrome_ok::<W>(code, &llr, &synd);
        let mut newly = [false; W];
        let mut any = false;
        for k in 0..W {
            if !done[k] && (sat[k] || it == max_iter) {
                newly[k] = true;
                any = true;
                outcome[k] = LaneOutcome { iterations: it, converged: sat[k] };
            }
        }
        if any {
            snapshot::<W>(&llr, &mut out, &newly);
            for k in 0..W {
                done[k] |= newly[k];
            }
        }
        if done.iter().all(|&d| d) || it == max_iter {
            break;
        }
        layer_pass::<W>(code, &mut llr, &mut r, &mut tbuf, &frozen, &synd);
        it += 1;
    }
    LaneDecision { bits: out, outcome }
}

#[inline(always)]
fn snapshot<const W: usize>(llr: &[[i8; W]], out: &mut [[u8; W]], mask: &[bool; W]) {
    for (o, l) in out.iter_mut().zip(llr.iter()) {
        for k in 0..W {
            if mask[k] {
                o[k] = u8::from(l[k] < 0);
            }
        }
    }
}

/// Per lane: does the hard decision of `llr` have syndrome `synd`?
#[inline(always)]
fn syndrome_ok<const W: usize>(code: &Code, llr: &[[i8; W]], synd: &[[i8; W]]) -> [bool; W] {
    let mut bad = [0i8; W];
    for c in 0..code.m {
        let mut acc = synd[c];
        for &v in code.row(c) {
            let l = &llr[v as usize];
            for k in 0..W {
                acc[k] ^= l[k] >> 7;
            }
        }
        for k in 0..W {
            bad[k] |= acc[k];
        }
    }
    let mut ok = [false; W];
    for k in 0..W {
        ok[k] = bad[k] == 0;
    }
    ok
}

#[inline(always)]
fn layer_pass<const W: usize>(
    code: &Code,
    llr: &mut [[i8; W]],
    r: &mut [[i8; W]],
    tbuf: &mut [[i8; W]],
    frozen: &[bool],
    synd: &[[i8; W]],
) {
    for c in 0..code.m {
        let base = code.row_ptr[c] as usize;
        let row = code.row(c);
        let mut sgn = synd[c];
        let mut min1 = [MAXV; W];
        let mut min2 = [MAXV; W];
        let mut idx = [0u8; W];
        for (j, &v) in row.iter().enumerate() {
            let v = v as usize;
            let l = &llr[v];
            let re = &r[base + j];
            let mut t = [0i8; W];
            if frozen[v] {
                t = *l;
            } else {
                for k in 0..W {
                    t[k] = l[k].saturating_sub(re[k]).max(-MAXV);
                }
            }
            let jj = j as u8;
            for k in 0..W {
                let a = t[k].abs();
                sgn[k] ^= t[k] >> 7;
                let lt = a < min1[k];
                min2[k] = if lt { min1[k] } else { min2[k].min(a) };
                min1[k] = min1[k].min(a);
                idx[k] = if lt { jj } else { idx[k] };
            }
            tbuf[j] = t;
        }
        let mut m1 = [0i8; W];
        let mut m2 = [0i8; W];
        for k in 0..W {
            m1[k] = min1[k] - (min1[k] >> 2);
            m2[k] = min2[k] - (min2[k] >> 2);
        }
        for (j, &v) in row.iter().enumerate() {
            let v = v as usize;
            let t = tbuf[j];
            let jj = j as u8;
            let mut rn = [0i8; W];
            for k in 0..W {
                let s = sgn[k] ^ (t[k] >> 7);
                let mag = if idx[k] == jj { m2[k] } else { m1[k] };
                rn[k] = (mag ^ s).wrapping_sub(s);
            }
            r[base + j] = rn;
            if !frozen[v] {
                let l = &mut llr[v];
                for k in 0..W {
                    l[k] = t[k].saturating_add(rn[k]).max(-MAXV);
                }
            }
        }
    }
}
