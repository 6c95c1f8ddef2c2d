//! napi adapter for qkd-core's source health tests (source_health.rs; reference
//! src/node/source-health.ts). Runs on Alice's JS thread over each read-back (~10^7 bytes a block).
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qkd_core::source_health::{HealthFailure, HealthState};

/// A failed test, with its counts: `kind` is "repetition" (`count` identical symbols in a row) or
/// "proportion" (`count` of the window's first `seen` symbols equal its reference).
#[napi(object)]
pub struct SourceHealthFailure {
    pub kind: String,
    pub count: u32,
    pub seen: u32,
}

/// The tests' state across read-backs.
#[napi]
pub struct SourceHealthTests {
    state: HealthState,
}

#[napi]
impl SourceHealthTests {
    #[napi(constructor)]
    pub fn new(rct_cutoff: u32, apt_cutoff: u32, window: u32) -> Result<Self> {
        if rct_cutoff < 2 || apt_cutoff < 2 || window < 2 || apt_cutoff > window {
            return Err(Error::new(Status::InvalidArg, format!("HEALTH_BAD_ARGUMENT: cutoffs {rct_cutoff}/{apt_cutoff} and window {window} are not a valid test")));
        }
        Ok(SourceHealthTests { state: HealthState::new(rct_cutoff, apt_cutoff, window) })
    }

    /// Runs both tests over `choices` (bytes whose low 2 bits are the symbol); the first failure, or null.
    #[napi]
    pub fn check(&mut self, choices: Uint8Array) -> Option<SourceHealthFailure> {
        match self.state.check(&choices) {
            Ok(()) => None,
            Err(HealthFailure::Repetition { run }) => Some(SourceHealthFailure { kind: "repetition".into(), count: run, seen: run }),
            Err(HealthFailure::Proportion { count, seen }) => Some(SourceHealthFailure { kind: "proportion".into(), count, seen }),
        }
    }
}
