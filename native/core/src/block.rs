//! One block's security statement: parameter estimation -> counted leak -> finite-key length ->
//! authentication-key accounting. The statement travels with every block's output.
use crate::finite_key::{self, Bounds, EstimateInput};
use crate::{verify, Result};

#[derive(Clone, Debug)]
pub struct BlockInput {
    pub estimate: EstimateInput,
    /// Bits disclosed by error correction (syndromes, punctured/shortened reveals, retries),
    /// counted by the reconciliation, not estimated.
    pub leak_ec_bits: u64,
    /// Verification tag length in bits (see verify::tag_bits); counted in λ_EC too.
    pub verify_tag_bits: u32,
    /// Secret bits the classical channel's MAC consumed for this block (from the auth pool).
    pub auth_bits_consumed: u64,
    /// Z bits of the frames discarded after decoding (`estimate` counts every framed Z bit, kept
    /// or not). The kept frames are a data-dependent subset, so the bounds are corrected for it:
    /// see `drop_frames`.
    pub dropped_z_bits: u64,
}

#[derive(Clone, Debug)]
pub struct SecurityStatement {
    /// The finite-key analysis used ("chernoff2020", "lim2014", "rusca2018", or a "*-paper-gamma"
    /// variant, whose reference starts with "APPROXIMATE") and its reference.
    pub analysis: &'static str,
    pub analysis_reference: &'static str,
    pub eps_sec: f64,
    pub eps_cor: f64,
    /// ε_sec = split · ε: each statistical estimate of the analysis (count bounds, phase-error
    /// sampling bound, smoothing terms) fails with probability ≤ `eps_estimate` = ε_sec / split.
    pub eps_split: f64,
    pub eps_estimate: f64,
    /// Sifted key (Z) bits entering PA.
    pub n: u64,
    pub bounds: Bounds,
    pub leak_ec_bits: u64,
    pub verify_tag_bits: u32,
    /// Z bits of discarded frames the bounds were corrected for (0: every frame kept).
    pub dropped_z_bits: u64,
    /// λ_EC used in the formula = leak_ec_bits + verify_tag_bits.
    pub lambda_ec: u64,
    /// Collision probability of the verification tag for this n (≤ ε_cor when t was chosen by
    /// verify::tag_bits).
    pub verify_collision: f64,
    /// ℓ before flooring/clamping (can be negative).
    pub ell_raw: f64,
    /// Secret bits produced (the Toeplitz output length).
    pub ell: u64,
    pub auth_bits_consumed: u64,
    /// Of the ℓ output bits, the first `replenish_bits` go back to the MAC key pool ...
    pub replenish_bits: u64,
    /// ... and the rest may be delivered (ℓ − consumed, or 0 when the block did not pay for its
    /// own authentication: `net_loss` then says by how much the pool shrank).
    pub deliverable_bits: u64,
    pub net_loss: u64,
}

/// Bounds for the kept frames from the bounds of all framed Z bits, when `d` of them were in
/// frames discarded after decoding. Which frames fail depends on their errors, so the kept ones
/// are not a random sample and their phase-error rate may exceed the block's. Deterministically,
/// without a further statistical estimate (no ε added): the kept single-photon (vacuum) events
/// number at least s_Z1 − d (s_Z0 − d), and they carry at most all of the block's phase errors,
/// φ·S ≤ φ·s_Z1·S/s_Z1; with S ≤ S_kept + d that gives φ_kept ≤ φ·(s_Z1 − d + d)/(s_Z1 − d)
/// = φ·s_Z1/(s_Z1 − d) (x/(x−d) falls with x, so the lower bound s_Z1 is the worst case).
pub fn drop_frames(mut b: Bounds, d: u64) -> Result<Bounds> {
    if d == 0 {
        return Ok(b);
    }
    if d > b.n_z_total {
        return Err(crate::CoreError::new("PE_BAD_COUNTS", format!(
            "{d} dropped Z bits but only {} framed: the reconciliation's frame accounting is wrong", b.n_z_total)));
    }
    let df = d as f64;
    let s1 = b.s_z1 - df;
    b.phi_z = if s1 <= 0.0 || b.phi_z >= 0.5 { 0.5 } else { (b.phi_z * b.s_z1 / s1).min(0.5) };
    b.s_z1 = s1.max(0.0);
    b.s_z0 = (b.s_z0 - df).max(0.0);
    b.n_z_total -= d;
    Ok(b)
}

/// Computes the bounds, applies the abort rule and returns the statement (the PA output length).
pub fn plan(inp: &BlockInput) -> Result<SecurityStatement> {
    let e = &inp.estimate;
    let b = drop_frames(finite_key::bounds(e)?, inp.dropped_z_bits)?;
    finite_key::check_abort(e, &b)?;
    let lambda = inp.leak_ec_bits + inp.verify_tag_bits as u64;
    let (raw, ell) = finite_key::secret_length(&b, lambda as f64, e.eps_sec, e.eps_cor, e.protocol);
    let replenish = inp.auth_bits_consumed.min(ell);
    Ok(SecurityStatement {
        analysis: e.protocol.name(),
        analysis_reference: e.protocol.reference(),
        eps_sec: e.eps_sec,
        eps_cor: e.eps_cor,
        eps_split: e.protocol.split(),
        eps_estimate: e.eps_sec / e.protocol.split(),
        n: b.n_z_total,
        verify_collision: verify::collision_probability(b.n_z_total as usize, inp.verify_tag_bits),
        bounds: b,
        leak_ec_bits: inp.leak_ec_bits,
        verify_tag_bits: inp.verify_tag_bits,
        dropped_z_bits: inp.dropped_z_bits,
        lambda_ec: lambda,
        ell_raw: raw,
        ell,
        auth_bits_consumed: inp.auth_bits_consumed,
        replenish_bits: replenish,
        deliverable_bits: ell - replenish,
        net_loss: inp.auth_bits_consumed - replenish,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(s_z0: f64, s_z1: f64, phi_z: f64, n: u64) -> Bounds {
        Bounds { s_z0, s_z1, s_x0: 0.0, s_x1: 1e4, v_x1: 100.0, phi_z, qber_x: 0.03, qber_x_by_intensity: [0.03; 3], n_z_total: n }
    }

    #[test]
    fn no_dropped_frame_changes_nothing() {
        let b = drop_frames(bounds(10.0, 5e5, 0.04, 1_000_000), 0).unwrap();
        assert_eq!((b.s_z0, b.s_z1, b.phi_z, b.n_z_total), (10.0, 5e5, 0.04, 1_000_000));
    }

    #[test]
    fn dropped_bits_leave_the_worst_case_for_the_kept_frames() {
        // 50 000 dropped of 1e6: every dropped bit may have been a single-photon event without a
        // phase error, so the kept ones hold all the block's phase errors.
        let b = drop_frames(bounds(100.0, 5e5, 0.04, 1_000_000), 50_000).unwrap();
        assert_eq!(b.n_z_total, 950_000);
        assert_eq!(b.s_z1, 450_000.0);
        assert_eq!(b.s_z0, 0.0);
        assert!((b.phi_z - 0.04 * 5e5 / 4.5e5).abs() < 1e-15);
        // Brute force over what the bounds allow: the true single-photon count S ≥ s_Z1, its phase
        // errors P ≤ φ·S, d1 ≤ d of them dropped carrying e ≤ min(d1, P) phase errors. The kept
        // rate (P − e)/(S − d1) never exceeds the corrected bound.
        let (s_lo, phi, d) = (5e5_f64, 0.04_f64, 50_000.0_f64);
        let mut worst = 0.0_f64;
        for si in 0..=20 {
            let s_true = s_lo * (1.0 + si as f64 * 0.05);
            let p = phi * s_true;
            for di in 0..=20 {
                let d1 = d * di as f64 / 20.0;
                for ei in 0..=20 {
                    let e = p.min(d1) * ei as f64 / 20.0;
                    worst = worst.max((p - e) / (s_true - d1));
                }
            }
        }
        assert!(worst <= b.phi_z * (1.0 + 1e-12), "worst kept rate {worst} above the bound {}", b.phi_z);
        assert!(worst >= b.phi_z * (1.0 - 1e-12), "the bound is attained (tight): {worst} vs {}", b.phi_z);
    }

    #[test]
    fn more_dropped_than_single_photon_events_leaves_no_key() {
        let b = drop_frames(bounds(0.0, 1e4, 0.04, 1_000_000), 20_000).unwrap();
        assert_eq!((b.s_z1, b.phi_z), (0.0, 0.5));
        assert!(drop_frames(bounds(0.0, 1e4, 0.04, 1_000), 2_000).is_err(), "more dropped than framed bits");
    }
}
