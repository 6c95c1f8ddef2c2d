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
}

#[derive(Clone, Debug)]
pub struct SecurityStatement {
    /// The finite-key analysis used ("lim2014", "rusca2018", "chernoff2020") and its reference.
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

/// Computes the bounds, applies the abort rule and returns the statement (the PA output length).
pub fn plan(inp: &BlockInput) -> Result<SecurityStatement> {
    let e = &inp.estimate;
    let b = finite_key::bounds(e)?;
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
        lambda_ec: lambda,
        ell_raw: raw,
        ell,
        auth_bits_consumed: inp.auth_bits_consumed,
        replenish_bits: replenish,
        deliverable_bits: ell - replenish,
        net_loss: inp.auth_bits_consumed - replenish,
    })
}
