//! napi adapters for qkd-auth (Wegman–Carter MAC of the classical channel). See native/auth.
//!
//! `WcAuthenticator` holds one side's hash key, pad pool and sequence state in Rust; key bytes
//! enter once (`fromPsk`, `replenish`, from caller-owned Uint8Arrays the caller should zero
//! afterwards) and never come back out: JS only ever sees tags (not secret) and counters.
//! sign/verify run on the JS thread: the hash runs at ~GB/s (PCLMULQDQ) and messages are capped
//! at 16 MiB, and keeping the state on one thread makes the strict sequence rules simple.
//! Errors carry a code prefix (`AUTH_TAG_MISMATCH:`, `AUTH_REPLAY:`, ...) that src/core/auth.ts
//! maps to SecurityError / QkdError.
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qkd_auth::{gf128, AuthError, Authenticator, Backend};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Runs `f`, turning a panic (a bug: none is expected) into a coded error instead of letting it
/// cross into Node.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(Error::new(Status::GenericFailure, "AUTH_INTERNAL: internal error in the authenticator")))
}

fn err(e: AuthError) -> Error {
    Error::new(Status::GenericFailure, format!("{}: {}", e.code(), e))
}

fn seq_of(x: f64) -> Result<u64> {
    if !((0.0..=9007199254740991.0).contains(&x) && x.fract() == 0.0) {
        return Err(Error::new(Status::InvalidArg, "AUTH_BAD_SEQ: sequence number must be an integer in [0, 2^53)"));
    }
    Ok(x as u64)
}

#[napi(object)]
pub struct WcAuthStats {
    pub direction: u32,
    pub signed: f64,
    pub verified: f64,
    pub rejected: f64,
    pub used_bits: f64,
    pub available_bits: f64,
    pub replenished_bits: f64,
    pub next_send_seq: f64,
    /// -1 when nothing was accepted yet.
    pub last_recv_seq: f64,
    pub messages_left: f64,
    pub tag_bits: u32,
}

#[napi]
pub struct WcAuthenticator {
    inner: Authenticator,
}

#[napi]
impl WcAuthenticator {
    /// From the pre-shared secret (>= 48 bytes: 16 hash key, then pads). direction 0 = Alice.
    #[napi(factory)]
    pub fn from_psk(psk: Uint8Array, direction: u32) -> Result<WcAuthenticator> {
        let d = u8::try_from(direction).map_err(|_| err(AuthError::BadKey("direction must be 0 or 1".into())))?;
        Ok(WcAuthenticator { inner: Authenticator::new(&psk, d).map_err(err)? })
    }

    /// Reopens a state file wrapped under `state_key` (32 bytes; the send sequence resumes at the
    /// on-disk reservation). The caller should zero `state_key` afterwards.
    #[napi(factory)]
    pub fn load(path: String, state_key: Uint8Array) -> Result<WcAuthenticator> {
        Ok(WcAuthenticator { inner: guarded(|| Authenticator::load(Path::new(&path), &state_key).map_err(err))? })
    }

    /// From now on the state lives in `path`, wrapped under `state_key` (32 bytes, AES-256-GCM).
    #[napi]
    pub fn attach_state_file(&mut self, path: String, state_key: Uint8Array) -> Result<()> {
        guarded(|| self.inner.attach_state_file(Path::new(&path), &state_key).map_err(err))
    }

    #[napi]
    pub fn save(&mut self) -> Result<()> {
        guarded(|| self.inner.save().map_err(err))
    }

    /// Forces the portable GF(2^128) multiplier (for tests and benchmarks).
    #[napi]
    pub fn use_portable(&mut self, portable: bool) {
        self.inner.set_backend(if portable { Backend::Portable } else { Backend::detect() });
    }

    #[napi(getter)]
    pub fn next_send_seq(&self) -> f64 {
        self.inner.next_send_seq() as f64
    }

    /// 16-byte tag of (aad, data) for send sequence number `seq` (>= nextSendSeq).
    #[napi]
    pub fn sign(&mut self, seq: f64, aad: Uint8Array, data: Uint8Array) -> Result<Buffer> {
        let seq = seq_of(seq)?;
        let tag = guarded(|| self.inner.sign(seq, &aad, &data).map_err(err))?;
        Ok(Buffer::from(tag.to_vec()))
    }

    /// Throws (AUTH_* code) unless `tag` authenticates (aad, data) as the peer's message `seq`.
    #[napi]
    pub fn verify(&mut self, seq: f64, aad: Uint8Array, data: Uint8Array, tag: Uint8Array) -> Result<()> {
        let seq = seq_of(seq)?;
        guarded(|| self.inner.verify(seq, &aad, &data, &tag).map_err(err))
    }

    /// Appends generated key to the pad pool (same bytes in the same order on both sides).
    #[napi]
    pub fn replenish(&mut self, bytes: Uint8Array) {
        self.inner.replenish(&bytes);
    }

    #[napi]
    pub fn stats(&self) -> WcAuthStats {
        let s = self.inner.stats();
        WcAuthStats {
            direction: self.inner.direction() as u32,
            signed: s.signed as f64,
            verified: s.verified as f64,
            rejected: s.rejected as f64,
            used_bits: s.used_bits as f64,
            available_bits: s.available_bits as f64,
            replenished_bits: s.replenished_bits as f64,
            next_send_seq: s.next_send_seq as f64,
            last_recv_seq: if s.last_recv_seq == u64::MAX { -1.0 } else { s.last_recv_seq as f64 },
            messages_left: self.inner.messages_left() as f64,
            tag_bits: qkd_auth::TAG_BITS as u32,
        }
    }
}

/// The bare polynomial hash H_k(aad, data) (16-byte key, big-endian), for known-answer and
/// differential tests against an independent reference. Not used by the channel.
#[napi]
pub fn auth_poly_hash(key: Uint8Array, aad: Uint8Array, data: Uint8Array, portable: bool) -> Result<Buffer> {
    if key.len() != 16 {
        return Err(Error::new(Status::InvalidArg, "AUTH_BAD_KEY: hash key must be 16 bytes"));
    }
    let k = u128::from_be_bytes(key[..16].try_into().unwrap());
    let b = if portable { Backend::Portable } else { Backend::detect() };
    Ok(Buffer::from(gf128::poly_hash(k, &aad, &data, b).to_be_bytes().to_vec()))
}

/// GF(2^128) product (big-endian 16-byte operands), for differential tests.
#[napi]
pub fn auth_gf128_mul(a: Uint8Array, b: Uint8Array, portable: bool) -> Result<Buffer> {
    if a.len() != 16 || b.len() != 16 {
        return Err(Error::new(Status::InvalidArg, "AUTH_BAD_ARG: operands must be 16 bytes"));
    }
    let x = u128::from_be_bytes(a[..16].try_into().unwrap());
    let y = u128::from_be_bytes(b[..16].try_into().unwrap());
    let be = if portable { Backend::Portable } else { Backend::detect() };
    Ok(Buffer::from(gf128::mul(x, y, be).to_be_bytes().to_vec()))
}
