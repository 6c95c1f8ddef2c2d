//! qkd-core: the post-processing pipeline of the QKD node, pure Rust (no napi).
//! The napi adapter crate (`../node`, module `pipeline.rs`) exposes it to TypeScript.
//!
//! Stages (one module each, every fast path has a slow reference next to it in `reference`):
//! - [`sift`]: BB84 + decoy sifting, per-party steps, compact announcements, squashing.
//! - [`finite_key`]: decoy-state parameter estimation and the finite-key length of
//!   Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014).
//! - [`verify`]: polynomial universal hash over GF(2^128) for key verification.
//! - [`toeplitz`]: Toeplitz-hash privacy amplification (additive FFT over GF(2^64) in
//!   [`gf2x_fft`], carry-less Karatsuba for small blocks; multi-threaded).
//! - [`block`]: the per-block security statement and the authentication-key accounting.
//!
//! Bit strings are packed LSB-first: bit `i` is bit `i % 64` of word `i / 64` (equivalently bit
//! `i % 8` of byte `i / 8` on the little-endian hosts we support).

pub mod bits;
pub mod block;
pub mod clmul;
pub mod emulated_choice;
pub mod emulated_record;
pub mod finite_key;
pub mod gf2x_fft;
pub mod gf64;
pub mod lab_chacha;
pub mod lab_link;
pub mod lab_rng;
pub mod lab_tagger;
pub mod pulse_list;
pub mod reference;
pub mod rng;
pub mod sift;
pub mod source_health;
pub mod sync_track;
#[cfg(test)]
mod test_rng;
pub mod toeplitz;
pub mod verify;

pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Errors of the core. `code()` is the stable string the TypeScript facade switches on; the
/// message never contains key material (only lengths, indices, counts).
#[derive(Debug, Clone, PartialEq)]
pub struct CoreError {
    pub code: &'static str,
    pub message: String,
}

impl CoreError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        CoreError { code, message: message.into() }
    }
}

impl std::fmt::Display for CoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for CoreError {}

pub type Result<T> = std::result::Result<T, CoreError>;
