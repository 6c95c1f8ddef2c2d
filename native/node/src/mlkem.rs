//! ML-KEM-768 (FIPS 203) between two KMSs, and the hybrid key derivation (docs/delivery.md,
//! "Hybrid fallback"). The KEM is libcrux-ml-kem (Cryspen; its Rust code is formally verified
//! with hax/F* for panic freedom, functional correctness against the FIPS 203 spec, and secret
//! independence). Nothing secret crosses into JS except the derived keys themselves:
//!
//! - `MlKemInitiator` (the KMS that received enc_keys) holds the decapsulation key in Rust and
//!   shows JS only the encapsulation key; `finish` decapsulates the peer's ciphertext, derives the
//!   keys, and zeroes the decapsulation key and the shared secret (also on drop, if never finished).
//! - `mlkemRespond` (the peer KMS) encapsulates to that key and derives the same keys; the shared
//!   secret is zeroed before it returns.
//!
//! Derivation, per key i (HKDF-SHA-256, RFC 5869; the concatenation combiner of NIST SP 800-56C
//! Rev. 2 §2 with Z' = T ‖ Z: secure if either the QKD key T or the ML-KEM secret Z is):
//!   th      = SHA-256("qkd-node hybrid transcript v1" ‖ 0 ‖ len32(ctx) ‖ ctx ‖ ek ‖ ct)
//!   key_ID  = UUIDv8 of SHA-256("qkd-kms key_ID hybrid v1" ‖ 0 ‖ th ‖ i_be32)
//!   key_i   = HKDF(salt = th, ikm = len32(T_i) ‖ T_i ‖ Z,
//!                  info = "qkd-node hybrid key v1" ‖ 0 ‖ len32(ctx) ‖ ctx ‖ key_ID, L = bytes_i)
//!   confirm = HKDF(salt = th, ikm = Z, info = "qkd-node hybrid confirm v1" ‖ 0 ‖ ctx, L = 32)
//! `ctx` (built by src/delivery/hybrid.ts) names both KMSs, the SAE pair, sizes and the QKD key_IDs.
//! Errors carry a code prefix (`MLKEM_BAD_INPUT:`, `MLKEM_USED:`, `MLKEM_RNG:`).
use hkdf::Hkdf;
use libcrux_ml_kem::mlkem768::{self, MlKem768Ciphertext, MlKem768PrivateKey, MlKem768PublicKey};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use sha2::{Digest, Sha256};
use std::panic::{catch_unwind, AssertUnwindSafe};
use zeroize::{Zeroize, Zeroizing};

/// FIPS 203 Table 3, ML-KEM-768.
pub const EK_BYTES: usize = 1184;
pub const CT_BYTES: usize = 1088;
/// HKDF-SHA-256 can expand to 255 hash lengths.
const MAX_KEY_BYTES: u32 = 255 * 32;
const MAX_KEYS: usize = 4096;

fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(Error::new(Status::GenericFailure, "MLKEM_INTERNAL: internal error in the ML-KEM adapter")))
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::new(Status::InvalidArg, format!("MLKEM_BAD_INPUT: {msg}"))
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>> {
    let mut r = Zeroizing::new([0u8; N]);
    getrandom::getrandom(&mut r[..])
        .map_err(|e| Error::new(Status::GenericFailure, format!("MLKEM_RNG: no randomness from the OS: {e}")))?;
    Ok(r)
}

/// One key to derive: its QKD part (absent for a key made from ML-KEM alone) and its length.
#[napi(object)]
pub struct HybridKeySpec {
    pub qkd: Option<Buffer>,
    pub bytes: u32,
}

/// The outcome of an exchange, alike on both sides. `ciphertext` is empty at the initiator.
#[napi(object)]
pub struct HybridOutcome {
    pub ciphertext: Buffer,
    pub transcript_hash: Buffer,
    pub key_ids: Vec<String>,
    pub keys: Vec<Buffer>,
    /// Key confirmation (not secret, independent of the keys): the responder sends it, the
    /// initiator compares before releasing anything. Equal only with the same shared secret,
    /// context and transcript.
    pub confirmation: Buffer,
}

/// The transcript hash of an exchange (public values only).
pub fn transcript_hash(ctx: &[u8], ek: &[u8], ct: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"qkd-node hybrid transcript v1\0");
    h.update((ctx.len() as u32).to_be_bytes());
    h.update(ctx);
    h.update(ek);
    h.update(ct);
    h.finalize().into()
}

/// key_ID of the i-th key of an exchange: a UUIDv8 (RFC 9562 §5.8), as src/delivery/keyid.ts.
pub fn key_id(th: &[u8; 32], i: u32) -> String {
    let mut h: [u8; 32] = Sha256::new()
        .chain_update(b"qkd-kms key_ID hybrid v1\0")
        .chain_update(th)
        .chain_update(i.to_be_bytes())
        .finalize()
        .into();
    h[6] = (h[6] & 0x0f) | 0x80;
    h[8] = (h[8] & 0x3f) | 0x80;
    let x: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

/// The combiner: HKDF-SHA-256 over (len ‖ QKD key ‖ ML-KEM shared secret), bound to the context,
/// the transcript and the key_ID. `qkd` empty: the key is made from ML-KEM alone.
pub fn derive(ss: &[u8; 32], qkd: &[u8], th: &[u8; 32], ctx: &[u8], key_id: &str, out: &mut [u8]) {
    let mut ikm = Zeroizing::new(Vec::with_capacity(4 + qkd.len() + 32));
    ikm.extend_from_slice(&(qkd.len() as u32).to_be_bytes());
    ikm.extend_from_slice(qkd);
    ikm.extend_from_slice(ss);
    let mut info = Vec::with_capacity(32 + ctx.len() + key_id.len());
    info.extend_from_slice(b"qkd-node hybrid key v1\0");
    info.extend_from_slice(&(ctx.len() as u32).to_be_bytes());
    info.extend_from_slice(ctx);
    info.extend_from_slice(key_id.as_bytes());
    let hk = Hkdf::<Sha256>::new(Some(th), &ikm);
    // Lengths are checked by the callers (<= 255 * 32).
    hk.expand(&info, out).expect("HKDF output length checked");
}

fn check_specs(keys: &[HybridKeySpec]) -> Result<()> {
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(bad(format!("give 1..{MAX_KEYS} keys to derive, got {}", keys.len())));
    }
    for (i, k) in keys.iter().enumerate() {
        if k.bytes == 0 || k.bytes > MAX_KEY_BYTES {
            return Err(bad(format!("key {i}: length must be 1..{MAX_KEY_BYTES} bytes, got {}", k.bytes)));
        }
    }
    Ok(())
}

fn derive_all(ss: &[u8; 32], th: [u8; 32], ctx: &[u8], keys: &[HybridKeySpec], ct: Vec<u8>) -> HybridOutcome {
    let mut ids = Vec::with_capacity(keys.len());
    let mut out = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let id = key_id(&th, i as u32);
        let mut buf = vec![0u8; k.bytes as usize];
        derive(ss, k.qkd.as_deref().unwrap_or(&[]), &th, ctx, &id, &mut buf);
        ids.push(id);
        out.push(Buffer::from(buf));
    }
    let mut confirmation = vec![0u8; 32];
    let mut info = Vec::with_capacity(32 + ctx.len());
    info.extend_from_slice(b"qkd-node hybrid confirm v1\0");
    info.extend_from_slice(ctx);
    Hkdf::<Sha256>::new(Some(&th), ss).expand(&info, &mut confirmation).expect("32 bytes");
    HybridOutcome { ciphertext: Buffer::from(ct), transcript_hash: Buffer::from(th.to_vec()), key_ids: ids, keys: out,
        confirmation: Buffer::from(confirmation) }
}

/// The initiating KMS's half of an exchange: a fresh key pair per exchange, used once.
#[napi]
pub struct MlKemInitiator {
    dk: Option<Box<MlKem768PrivateKey>>,
    ek: Vec<u8>,
}

impl Drop for MlKemInitiator {
    fn drop(&mut self) {
        if let Some(dk) = self.dk.as_mut() {
            dk[0..].zeroize();
        }
    }
}

#[napi]
impl MlKemInitiator {
    /// A fresh ML-KEM-768 key pair from OS randomness (the 64-byte seed is zeroed).
    #[napi(constructor)]
    pub fn new() -> Result<Self> {
        guarded(|| {
            let seed = random::<64>()?;
            let (mut dk, ek) = mlkem768::generate_key_pair(*seed).into_parts();
            // Kept in a box of our own (a stable place to wipe); the stack copy is wiped now.
            let mut kept = Box::new(MlKem768PrivateKey::default());
            kept[0..].copy_from_slice(dk.as_ref());
            dk[0..].zeroize();
            Ok(MlKemInitiator { dk: Some(kept), ek: ek.as_ref().to_vec() })
        })
    }

    /// The encapsulation key (public), 1184 bytes.
    #[napi(getter)]
    pub fn encapsulation_key(&self) -> Buffer {
        Buffer::from(self.ek.clone())
    }

    /// Decapsulates the peer's ciphertext and derives `keys` as the peer did. Once only: the
    /// decapsulation key is zeroed here, whatever the outcome.
    #[napi]
    pub fn finish(&mut self, ciphertext: Buffer, context: Buffer, keys: Vec<HybridKeySpec>) -> Result<HybridOutcome> {
        guarded(|| {
            let mut dk = self.dk.take().ok_or_else(|| {
                Error::new(Status::GenericFailure, "MLKEM_USED: this exchange is finished; start a new one")
            })?;
            let r = (|| {
                check_specs(&keys)?;
                if ciphertext.len() != CT_BYTES {
                    return Err(bad(format!("ciphertext must be {CT_BYTES} bytes, got {}", ciphertext.len())));
                }
                let ct = MlKem768Ciphertext::try_from(&ciphertext[..]).map_err(|_| bad("ciphertext length"))?;
                let ss = Zeroizing::new(mlkem768::decapsulate(&dk, &ct));
                let th = transcript_hash(&context, &self.ek, &ciphertext);
                Ok(derive_all(&ss, th, &context, &keys, Vec::new()))
            })();
            dk[0..].zeroize();
            r
        })
    }
}

/// The responding KMS: encapsulates to the initiator's key (checked as FIPS 203 §7.2 requires)
/// and derives the keys. The shared secret is zeroed before returning.
#[napi]
pub fn mlkem_respond(encapsulation_key: Buffer, context: Buffer, keys: Vec<HybridKeySpec>) -> Result<HybridOutcome> {
    guarded(|| {
        check_specs(&keys)?;
        if encapsulation_key.len() != EK_BYTES {
            return Err(bad(format!("encapsulation key must be {EK_BYTES} bytes, got {}", encapsulation_key.len())));
        }
        let ek = MlKem768PublicKey::try_from(&encapsulation_key[..]).map_err(|_| bad("encapsulation key length"))?;
        if !mlkem768::validate_public_key(&ek) {
            return Err(bad("the encapsulation key fails the FIPS 203 modulus check (not a valid ML-KEM-768 key)"));
        }
        let m = random::<32>()?;
        let (ct, ss) = mlkem768::encapsulate(&ek, *m);
        let ss = Zeroizing::new(ss);
        let ctv = ct.as_ref().to_vec();
        let th = transcript_hash(&context, &encapsulation_key, &ctv);
        Ok(derive_all(&ss, th, &context, &keys, ctv))
    })
}

/// Known-answer checks only (tests): FIPS 203 ML-KEM.Encaps_internal with the given
/// encapsulation key and randomness m (32 bytes), as in the NIST ACVP encapsulation tests. Returns
/// the ciphertext and the SHA-256 digest of the shared secret (never the secret itself).
#[napi(object)]
pub struct MlKemEncapsKat {
    pub ct: Buffer,
    pub ss_sha256: Buffer,
}

#[napi]
pub fn mlkem768_encaps_kat(ek: Buffer, m: Buffer) -> Result<MlKemEncapsKat> {
    guarded(|| {
        let pk = MlKem768PublicKey::try_from(&ek[..]).map_err(|_| bad(format!("ek must be {EK_BYTES} bytes")))?;
        let m: [u8; 32] = m[..].try_into().map_err(|_| bad("m must be 32 bytes"))?;
        let (ct, mut ss) = mlkem768::encapsulate(&pk, m);
        let out = MlKemEncapsKat { ct: Buffer::from(ct.as_ref().to_vec()), ss_sha256: Buffer::from(Sha256::digest(ss).to_vec()) };
        ss.zeroize();
        Ok(out)
    })
}

/// Round trip for property tests: KeyGen_internal from d ‖ z (64 bytes), Encaps_internal with m,
/// then Decaps of `ciphertext` if given (e.g. a modified one: implicit rejection) or of our own.
/// Digests only for the decapsulation key and the shared secrets.
#[napi(object)]
pub struct MlKemRoundTrip {
    pub ek: Buffer,
    pub ct: Buffer,
    pub dk_sha256: Buffer,
    pub ss_sha256: Buffer,
    pub decaps_ss_sha256: Buffer,
}

#[napi]
pub fn mlkem768_round_trip(d_z: Buffer, m: Buffer, ciphertext: Option<Buffer>) -> Result<MlKemRoundTrip> {
    guarded(|| {
        let seed: [u8; 64] = d_z[..].try_into().map_err(|_| bad("d ‖ z must be 64 bytes"))?;
        let m: [u8; 32] = m[..].try_into().map_err(|_| bad("m must be 32 bytes"))?;
        let (mut dk, ek) = mlkem768::generate_key_pair(seed).into_parts();
        let (ct, mut ss) = mlkem768::encapsulate(&ek, m);
        let dct = match &ciphertext {
            Some(c) => MlKem768Ciphertext::try_from(&c[..]).map_err(|_| bad(format!("ciphertext must be {CT_BYTES} bytes")))?,
            None => ct.clone(),
        };
        let mut dss = mlkem768::decapsulate(&dk, &dct);
        let out = MlKemRoundTrip {
            ek: Buffer::from(ek.as_ref().to_vec()),
            ct: Buffer::from(ct.as_ref().to_vec()),
            dk_sha256: Buffer::from(Sha256::digest(dk.as_ref()).to_vec()),
            ss_sha256: Buffer::from(Sha256::digest(ss).to_vec()),
            decaps_ss_sha256: Buffer::from(Sha256::digest(dss).to_vec()),
        };
        dk[0..].zeroize();
        ss.zeroize();
        dss.zeroize();
        Ok(out)
    })
}

/// Test hook for the derivation against a slow reference (node:crypto HKDF): `derive` with the
/// given inputs. Tests only; the KMS never passes a shared secret through JS.
#[napi]
pub fn hybrid_derive_for_tests(ss: Buffer, qkd: Buffer, th: Buffer, ctx: Buffer, key_id: String, bytes: u32) -> Result<Buffer> {
    guarded(|| {
        let ss: [u8; 32] = ss[..].try_into().map_err(|_| bad("ss must be 32 bytes"))?;
        let th: [u8; 32] = th[..].try_into().map_err(|_| bad("th must be 32 bytes"))?;
        if bytes == 0 || bytes > MAX_KEY_BYTES {
            return Err(bad("bytes out of range"));
        }
        let mut out = vec![0u8; bytes as usize];
        derive(&ss, &qkd, &th, &ctx, &key_id, &mut out);
        Ok(Buffer::from(out))
    })
}
