//! The node's at-rest key in a PKCS#11 token (issue 14, custody): the 32-byte key from which the
//! node derives its spool key and the key wrapping its classical-channel state (hash key and
//! one-time-pad pool) is kept on disk only sealed by a non-extractable AES-256 key inside the
//! token (`C_Encrypt`/`C_Decrypt` with CKM_AES_GCM happen in the token). A copied state directory
//! opens nothing without the token and its PIN.
//!
//! Why not the pads themselves in the token: Wegman–Carter tags are a polynomial hash over
//! GF(2^128) plus a one-time pad, which no PKCS#11 mechanism computes; the pads must be in host
//! memory while in use, so the token guards them at rest.
//!
//! Sealed file: "QKDTOK01" ‖ key id (4 bytes, big-endian) ‖ GCM nonce (12) ‖ ciphertext ‖ tag (16),
//! associated data "qkd-node at-rest key v1" ‖ 0 ‖ node id.
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qkd_store::keystore::random;
use qkd_store::pkcs11 as p11;
use qkd_store::StoreError;
use zeroize::Zeroizing;

const MAGIC: &[u8; 8] = b"QKDTOK01";
/// The token key's CKA_ID: one generation (rotation re-seals under a new label).
const KEY_ID: u32 = 1;

// The token is named as for the KMS's keystore (module, token label or slot, key label, where
// the PIN came from); the PIN is passed apart, never configured.
use crate::store::{token_cfg as cfg, TokenConfigJs as NodeTokenJs};

fn custody_err(msg: impl AsRef<str>) -> Error {
    Error::new(Status::GenericFailure, format!("NODE_CUSTODY: {}", msg.as_ref()))
}

fn store_err(e: StoreError) -> Error {
    custody_err(e.to_string())
}

fn aad(node_id: &str) -> Vec<u8> {
    let mut a = b"qkd-node at-rest key v1\0".to_vec();
    a.extend_from_slice(node_id.as_bytes());
    a
}

/// Seals `plain` (the node's 32-byte at-rest key) under the token's key `keyLabel`, generating
/// that key (non-extractable, sensitive) when the token has none. Returns the sealed file bytes.
#[napi]
pub fn node_token_seal(token: NodeTokenJs, pin: Uint8Array, node_id: String, plain: Uint8Array) -> Result<Buffer> {
    if plain.len() != 32 {
        return Err(custody_err(format!("the at-rest key to seal must be 32 bytes, got {}", plain.len())));
    }
    let c = cfg(&token);
    let pin = Zeroizing::new(pin.to_vec());
    let (s, label) = p11::open_session(&c, &pin).map_err(store_err)?;
    let h = match p11::find_key(&s, &c.key_label, KEY_ID).map_err(store_err)? {
        Some(h) => h,
        None => p11::generate_key(&s, &c.key_label, KEY_ID).map_err(store_err)?,
    };
    if !p11::key_is_protected(&s, h).map_err(store_err)? {
        return Err(custody_err(format!("the key '{}' in token '{label}' is extractable or not sensitive: refusing to seal with it", c.key_label)));
    }
    let mut iv: [u8; 12] = random().map_err(store_err)?;
    let a = aad(&node_id);
    let p = GcmParams::new(&mut iv, &a, 128.into()).map_err(|e| custody_err(format!("CK_GCM_PARAMS: {e}")))?;
    let ct = s.encrypt(&Mechanism::AesGcm(p), h, &plain).map_err(|e| custody_err(format!("C_Encrypt (CKM_AES_GCM) in token '{label}' failed: {e}")))?;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&KEY_ID.to_be_bytes());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&ct);
    Ok(out.into())
}

/// True iff `bytes` is a sealed at-rest key file (its magic).
#[napi]
pub fn node_token_is_sealed(bytes: Uint8Array) -> bool {
    is_sealed(&bytes)
}

fn is_sealed(b: &[u8]) -> bool {
    b.len() >= MAGIC.len() && &b[..MAGIC.len()] == MAGIC
}

/// Opens a sealed at-rest key inside the token. Returns the 32-byte key (the caller wipes it).
#[napi]
pub fn node_token_unseal(token: NodeTokenJs, pin: Uint8Array, node_id: String, sealed: Uint8Array) -> Result<Buffer> {
    if !is_sealed(&sealed) || sealed.len() != 8 + 4 + 12 + 32 + 16 {
        return Err(custody_err(format!(
            "the at-rest key file is not a token-sealed key ({} bytes; expected 72 starting with QKDTOK01): seal it with `qkd node seal-key`",
            sealed.len()
        )));
    }
    let c = cfg(&token);
    let pin = Zeroizing::new(pin.to_vec());
    let (s, label) = p11::open_session(&c, &pin).map_err(store_err)?;
    let id = u32::from_be_bytes(sealed[8..12].try_into().unwrap());
    let h = p11::find_key(&s, &c.key_label, id).map_err(store_err)?.ok_or_else(|| {
        custody_err(format!(
            "token '{label}' holds no AES key labelled '{}' (id {id}) that sealed this node's at-rest key: restore the token \
             from its backup or fix custody.pkcs11.keyLabel; without it the node's spool and channel state cannot be opened",
            c.key_label
        ))
    })?;
    let mut iv = sealed[12..24].to_vec();
    let a = aad(&node_id);
    let p = GcmParams::new(&mut iv, &a, 128.into()).map_err(|e| custody_err(format!("CK_GCM_PARAMS: {e}")))?;
    let plain = Zeroizing::new(s.decrypt(&Mechanism::AesGcm(p), h, &sealed[24..]).map_err(|_| {
        custody_err(format!(
            "the sealed at-rest key failed to authenticate in token '{label}' (another node's file, another token's key, or a \
             tampered file): nothing was opened"
        ))
    })?);
    Ok(Buffer::from(plain.to_vec()))
}
