//! Custody of the key-encryption key (KEK): the keystore file, the master key and its Shamir
//! shares, and the software keystore.
//!
//! Key hierarchy:
//!
//! ```text
//!  N share files ──(any K, shamir.rs)──▶ master key MK (32 B, in memory only while unsealed)
//!     software keystore:  MK ─SHA-256("qkd-kms kek seal v1"‖0‖MK)─▶ seal key ─AES-256-GCM─▶ KEK_g (in the keystore file)
//!     PKCS#11 keystore:   KEK_g is a non-extractable AES key in the token (label, CKA_ID = g);
//!                         an inner-layer key IK (random, sealed under the seal key in the file)
//!                         wraps beneath the token's layer
//!  stored key ──AES-256-GCM under KEK_g (aad = key_stream_id‖0‖index)──▶ keys.wrapped, keys.kek_gen = g
//! ```
//!
//! The keystore file (text, 0600, replaced atomically) names the kind, the share set, the master
//! key's check value `SHA-256("qkd-kms master check v1"‖0‖MK)` and the KEK generations; it holds no
//! secret in clear. Everything the master key protects is a sealed record in this file, so
//! `reshare` (a lost share) replaces the master key by re-sealing the records and writing new
//! shares; the old shares then reconstruct a key no keystore accepts. A development keystore (no shares) uses the 32-byte `wrapKeyFile` as MK and
//! generation 0 as "MK itself is the KEK", which is how every store was wrapped before custody.
//!
//! ```text
//! qkd-kms-keystore v1
//! kind software|pkcs11
//! set <16 hex>|-
//! threshold <K>
//! shares <N>
//! check <64 hex>
//! active <g>
//! kek <g> [<nonce 24 hex> <sealed KEK hex>]     one line per live generation
//! inner <nonce 24 hex> <sealed IK hex>          PKCS#11 only
//! ```
use crate::secmem::SecretBuf;
use crate::shamir::{self, Share};
use crate::{Result, StoreError};
use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Software,
    Pkcs11,
}

#[derive(Clone)]
pub struct KekRecord {
    pub gen: u32,
    /// Software keystore: (nonce, KEK sealed under the seal key). PKCS#11: none (in the token).
    pub sealed: Option<([u8; 12], Vec<u8>)>,
}

#[derive(Clone)]
pub struct KeystoreFile {
    pub kind: Kind,
    /// None: development keystore (MK is the wrapKeyFile, no shares).
    pub set_id: Option<[u8; 8]>,
    pub threshold: u8,
    pub shares: u8,
    pub check: [u8; 32],
    pub active: u32,
    pub keks: Vec<KekRecord>,
    /// PKCS#11: the inner-layer key, sealed under the master key.
    pub inner: Option<([u8; 12], Vec<u8>)>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

pub fn derive(label: &str, mk: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update([0u8]);
    h.update(mk);
    Zeroizing::new(h.finalize().into())
}

pub fn master_check(mk: &[u8]) -> [u8; 32] {
    *derive("qkd-kms master check v1", mk)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

const INNER_AAD: &[u8] = b"qkd-kms inner v1";

fn seal_cipher_of(mk: &[u8]) -> Aes256Gcm {
    Aes256Gcm::new_from_slice(&*derive("qkd-kms kek seal v1", mk)).expect("32-byte key")
}

/// Opens the inner-layer key of a PKCS#11 keystore with the master key.
pub fn open_inner(f: &KeystoreFile, mk: &[u8], path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let (n, c) = f.inner.as_ref().ok_or_else(|| StoreError::Custody(format!("keystore {} has no inner-layer key", path.display())))?;
    gcm_open(&seal_cipher_of(mk), n, INNER_AAD, c)
        .map_err(|_| StoreError::Custody(format!("keystore {}: the inner-layer key does not unseal (file altered?)", path.display())))
}

/// The same keystore with every record re-sealed under `new_mk` and the new share set: the
/// master key changes, the KEKs (and the inner-layer key) do not.
pub fn reseal_file(f: &KeystoreFile, old_mk: &[u8], new_mk: &[u8; 32], set_id: [u8; 8], k: u8, n: u8, path: &Path) -> Result<KeystoreFile> {
    let (old, new) = (seal_cipher_of(old_mk), seal_cipher_of(new_mk));
    let mut out = f.clone();
    for r in out.keks.iter_mut() {
        if let Some((nonce, c)) = &r.sealed {
            let kek = gcm_open(&old, nonce, &kek_aad(r.gen), c)
                .map_err(|_| StoreError::Custody(format!("keystore {}: KEK generation {} does not unseal", path.display(), r.gen)))?;
            r.sealed = Some(gcm_seal(&new, &kek_aad(r.gen), &kek)?);
        }
    }
    if f.inner.is_some() {
        let ik = open_inner(f, old_mk, path)?;
        out.inner = Some(gcm_seal(&new, INNER_AAD, &ik)?);
    }
    out.set_id = Some(set_id);
    out.threshold = k;
    out.shares = n;
    out.check = master_check(new_mk);
    Ok(out)
}

fn kek_aad(gen: u32) -> Vec<u8> {
    let mut a = b"qkd-kms kek v1\0".to_vec();
    a.extend_from_slice(&gen.to_be_bytes());
    a
}

impl KeystoreFile {
    pub fn load(path: &Path) -> Result<KeystoreFile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StoreError::Custody(format!(
                "cannot read the keystore file {}: {e}; create it with `qkd kms init --shares N --threshold K --config FILE`",
                path.display()
            ))
        })?;
        let bad = |what: &str| StoreError::Custody(format!("keystore file {} is malformed ({what}); restore it from backup", path.display()));
        let mut lines = text.lines();
        if lines.next() != Some("qkd-kms-keystore v1") {
            return Err(bad("first line"));
        }
        let mut ks = KeystoreFile { kind: Kind::Software, set_id: None, threshold: 0, shares: 0, check: [0; 32], active: 0, keks: vec![], inner: None };
        let mut have_check = false;
        for l in lines.filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = l.split_whitespace().collect();
            match (f[0], f.len()) {
                ("kind", 2) => {
                    ks.kind = match f[1] {
                        "software" => Kind::Software,
                        "pkcs11" => Kind::Pkcs11,
                        _ => return Err(bad("kind")),
                    }
                }
                ("set", 2) => {
                    ks.set_id = if f[1] == "-" {
                        None
                    } else {
                        let v = unhex(f[1]).filter(|v| v.len() == 8).ok_or_else(|| bad("set"))?;
                        Some(v.try_into().unwrap())
                    }
                }
                ("threshold", 2) => ks.threshold = f[1].parse().map_err(|_| bad("threshold"))?,
                ("shares", 2) => ks.shares = f[1].parse().map_err(|_| bad("shares"))?,
                ("check", 2) => {
                    let v = unhex(f[1]).filter(|v| v.len() == 32).ok_or_else(|| bad("check"))?;
                    ks.check.copy_from_slice(&v);
                    have_check = true;
                }
                ("active", 2) => ks.active = f[1].parse().map_err(|_| bad("active"))?,
                ("inner", 3) => {
                    let n = unhex(f[1]).filter(|v| v.len() == 12).ok_or_else(|| bad("inner nonce"))?;
                    let c = unhex(f[2]).ok_or_else(|| bad("inner"))?;
                    ks.inner = Some((n.try_into().unwrap(), c));
                }
                ("kek", 2) => ks.keks.push(KekRecord { gen: f[1].parse().map_err(|_| bad("kek"))?, sealed: None }),
                ("kek", 4) => {
                    let n = unhex(f[2]).filter(|v| v.len() == 12).ok_or_else(|| bad("kek nonce"))?;
                    let s = unhex(f[3]).ok_or_else(|| bad("kek"))?;
                    ks.keks.push(KekRecord { gen: f[1].parse().map_err(|_| bad("kek"))?, sealed: Some((n.try_into().unwrap(), s)) });
                }
                _ => return Err(bad(f[0])),
            }
        }
        if !have_check {
            return Err(bad("no check line"));
        }
        Ok(ks)
    }

    /// Writes the file atomically (temp file, fsync, rename, fsync of the folder), mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut s = String::from("qkd-kms-keystore v1\n");
        s += &format!("kind {}\n", if self.kind == Kind::Software { "software" } else { "pkcs11" });
        s += &format!("set {}\n", self.set_id.map(|v| hex(&v)).unwrap_or_else(|| "-".into()));
        s += &format!("threshold {}\nshares {}\ncheck {}\nactive {}\n", self.threshold, self.shares, hex(&self.check), self.active);
        for k in &self.keks {
            match &k.sealed {
                Some((n, c)) => s += &format!("kek {} {} {}\n", k.gen, hex(n), hex(c)),
                None => s += &format!("kek {}\n", k.gen),
            }
        }
        if let Some((n, c)) = &self.inner {
            s += &format!("inner {} {}\n", hex(n), hex(c));
        }
        write_private(path, s.as_bytes(), true)
    }
}

/// Writes `bytes` to `path` with mode 0600 (via a temp file and rename when `replace`; refusing
/// to overwrite otherwise), fsynced.
pub fn write_private(path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| StoreError::Custody(format!("cannot write {}: {e}", path.display()));
    let tmp = if replace { path.with_extension("tmp") } else { path.to_path_buf() };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(!replace).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    if replace {
        std::fs::rename(&tmp, path).map_err(io)?;
    }
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Wraps and unwraps stored keys. Two implementations: `SoftwareKeystore` (KEKs in memory,
/// sealed at rest under the master key) and `pkcs11::TokenKeystore` (KEKs non-extractable in a
/// PKCS#11 token). Called with the store's lock held (one caller at a time).
pub trait KeyWrapper: Send {
    /// What holds the KEK, for logs ("software keystore", "PKCS#11 token 'x' key 'y'").
    fn describe(&self) -> String;
    /// The generation new keys are wrapped under.
    fn active(&self) -> u32;
    /// Every generation that can still unwrap.
    fn generations(&self) -> Vec<u32>;
    /// Wraps `key` under the active KEK: returns (nonce, ciphertext‖tag).
    fn wrap(&mut self, aad: &[u8], key: &[u8]) -> Result<([u8; 12], Vec<u8>)>;
    /// Unwraps what `wrap` made under generation `gen`.
    /// The plaintext key is returned in protected memory (crate::secmem: locked, guarded pages).
    fn unwrap(&mut self, gen: u32, nonce: &[u8], aad: &[u8], wrapped: &[u8]) -> Result<SecretBuf>;
    /// Re-wraps under the active KEK (the PKCS#11 keystore does it without the key in host memory).
    fn rewrap(&mut self, gen: u32, nonce: &[u8], aad: &[u8], wrapped: &[u8]) -> Result<([u8; 12], Vec<u8>)> {
        let k = self.unwrap(gen, nonce, aad, wrapped)?;
        self.wrap(aad, &k)
    }
    /// Creates a new KEK generation, makes it active and persists that (rotation start).
    fn new_generation(&mut self) -> Result<u32>;
    /// Destroys the KEK of generation `gen` (no stored key may still use it).
    fn retire(&mut self, gen: u32) -> Result<()>;
    /// Replaces the master key: re-seals the keystore file under `new_mk` with the new share set
    /// (the caller has written the new shares). Not for a development keystore.
    fn reseal(&mut self, new_mk: &[u8; 32], set_id: [u8; 8], k: u8, n: u8) -> Result<()>;
}

pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| StoreError::Crypto(format!("OS random source failed: {e}")))?;
    Ok(b)
}

pub(crate) fn gcm_seal(c: &Aes256Gcm, aad: &[u8], plain: &[u8]) -> Result<([u8; 12], Vec<u8>)> {
    let nonce: [u8; 12] = random()?;
    let ct = c
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| StoreError::Crypto("wrap failed".into()))?;
    Ok((nonce, ct))
}

/// Opens a wrapped stored key straight into protected memory: the ciphertext is copied into the
/// locked pages and decrypted in place, so the plaintext never sits in an ordinary heap buffer.
pub(crate) fn gcm_open_secret(c: &Aes256Gcm, nonce: &[u8], aad: &[u8], ct: &[u8]) -> Result<SecretBuf> {
    if nonce.len() != 12 || ct.len() < 16 {
        return Err(StoreError::Crypto("a wrapped key has a malformed nonce or is too short".into()));
    }
    let (body, tag) = ct.split_at(ct.len() - 16);
    let mut out = SecretBuf::from_slice(body);
    c.decrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut out, aes_gcm::Tag::from_slice(tag))
        .map_err(|_| StoreError::Crypto("a wrapped key failed to authenticate (wrong KEK or tampered row)".into()))?;
    Ok(out)
}

pub(crate) fn gcm_open(c: &Aes256Gcm, nonce: &[u8], aad: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if nonce.len() != 12 {
        return Err(StoreError::Crypto("a wrapped key has a malformed nonce".into()));
    }
    c.decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| StoreError::Crypto("a wrapped key failed to authenticate (wrong KEK or tampered row)".into()))
}

/// The software keystore: KEKs live in process memory, sealed at rest in the keystore file under
/// a key derived from the master key. The development default.
pub struct SoftwareKeystore {
    mk: Zeroizing<[u8; 32]>,
    keks: BTreeMap<u32, Aes256Gcm>,
    file: Option<(PathBuf, KeystoreFile)>,
}

impl SoftwareKeystore {
    /// Development keystore: `mk` is the wrapKeyFile's 32 bytes. Generation 0 (MK itself as the
    /// KEK) always unwraps; a keystore file, if present, adds the generations rotation made.
    /// With `path` = None nothing is persisted (tests).
    pub fn development(mk: &[u8], path: Option<&Path>) -> Result<SoftwareKeystore> {
        let mk: [u8; 32] = mk.try_into().map_err(|_| {
            StoreError::Crypto(format!("the key-encryption key must be 32 bytes (AES-256), got {}", mk.len()))
        })?;
        let gen0 = || Aes256Gcm::new_from_slice(&mk).map_err(|_| StoreError::Crypto("bad KEK".into()));
        let mut ks = SoftwareKeystore { mk: Zeroizing::new(mk), keks: BTreeMap::new(), file: None };
        match path {
            Some(p) if p.exists() => {
                let f = KeystoreFile::load(p)?;
                if f.kind != Kind::Software || f.set_id.is_some() {
                    return Err(StoreError::Custody(format!(
                        "keystore {} was made by `qkd kms init` (shares); this configuration uses a development wrapKeyFile instead: remove wrapKeyFile and configure custody",
                        p.display()
                    )));
                }
                ks.load_keks(&f, p)?;
                // Generation 0 (the wrapKeyFile itself) is live while the file lists it.
                if f.keks.iter().any(|k| k.gen == 0) {
                    ks.keks.insert(0, gen0()?);
                }
                ks.file = Some((p.to_path_buf(), f));
            }
            _ => {
                ks.keks.insert(0, gen0()?);
                if let Some(p) = path {
                    let f = KeystoreFile {
                        kind: Kind::Software,
                        set_id: None,
                        threshold: 0,
                        shares: 0,
                        check: master_check(&mk),
                        active: 0,
                        keks: vec![KekRecord { gen: 0, sealed: None }],
                        inner: None,
                    };
                    ks.file = Some((p.to_path_buf(), f));
                }
            }
        }
        Ok(ks)
    }

    /// Opens a keystore made by `init` with the master key reconstructed from shares.
    pub fn unsealed(mk: &[u8; 32], path: &Path, f: KeystoreFile) -> Result<SoftwareKeystore> {
        let mut ks = SoftwareKeystore { mk: Zeroizing::new(*mk), keks: BTreeMap::new(), file: None };
        ks.load_keks(&f, path)?;
        if !ks.keks.contains_key(&f.active) {
            return Err(StoreError::Custody(format!("keystore {} lists no KEK for its active generation {}", path.display(), f.active)));
        }
        ks.file = Some((path.to_path_buf(), f));
        Ok(ks)
    }

    fn seal_cipher(&self) -> Aes256Gcm {
        let k = derive("qkd-kms kek seal v1", &*self.mk);
        Aes256Gcm::new_from_slice(&*k).expect("32-byte key")
    }

    fn load_keks(&mut self, f: &KeystoreFile, p: &Path) -> Result<()> {
        if !ct_eq(&f.check, &master_check(&*self.mk)) {
            return Err(StoreError::Custody(format!("keystore {} belongs to another master key (its check value differs)", p.display())));
        }
        let seal = self.seal_cipher();
        for k in &f.keks {
            if k.gen == 0 && f.set_id.is_none() {
                continue; // development generation 0: the wrapKeyFile itself
            }
            let Some((n, c)) = &k.sealed else {
                return Err(StoreError::Custody(format!("keystore {}: generation {} has no sealed KEK", p.display(), k.gen)));
            };
            let kek = gcm_open(&seal, n, &kek_aad(k.gen), c)
                .map_err(|_| StoreError::Custody(format!("keystore {}: the KEK of generation {} does not unseal (file altered?)", p.display(), k.gen)))?;
            self.keks.insert(k.gen, Aes256Gcm::new_from_slice(&kek).map_err(|_| StoreError::Crypto("bad KEK".into()))?);
        }
        Ok(())
    }

    /// A new sealed KEK record (used by init and by rotation).
    pub fn seal_new_kek(mk: &[u8; 32], gen: u32) -> Result<(KekRecord, Aes256Gcm)> {
        let kek: Zeroizing<[u8; 32]> = Zeroizing::new(random()?);
        let seal = Aes256Gcm::new_from_slice(&*derive("qkd-kms kek seal v1", mk)).expect("32-byte key");
        let (n, c) = gcm_seal(&seal, &kek_aad(gen), &*kek)?;
        Ok((KekRecord { gen, sealed: Some((n, c)) }, Aes256Gcm::new_from_slice(&*kek).expect("32-byte key")))
    }
}

impl KeyWrapper for SoftwareKeystore {
    fn describe(&self) -> String {
        match &self.file {
            Some((p, f)) if f.set_id.is_some() => format!("software keystore {} (sealed by shares)", p.display()),
            _ => "software keystore (development: wrapKeyFile)".into(),
        }
    }
    fn active(&self) -> u32 {
        self.file.as_ref().map(|(_, f)| f.active).unwrap_or(0)
    }
    fn generations(&self) -> Vec<u32> {
        self.keks.keys().copied().collect()
    }
    fn wrap(&mut self, aad: &[u8], key: &[u8]) -> Result<([u8; 12], Vec<u8>)> {
        let c = self.keks.get(&self.active()).ok_or_else(|| StoreError::Custody("the active KEK is not loaded".into()))?;
        gcm_seal(c, aad, key)
    }
    fn unwrap(&mut self, gen: u32, nonce: &[u8], aad: &[u8], wrapped: &[u8]) -> Result<SecretBuf> {
        let c = self.keks.get(&gen).ok_or_else(|| StoreError::Crypto(format!("no KEK of generation {gen} in this keystore")))?;
        gcm_open_secret(c, nonce, aad, wrapped)
    }
    fn new_generation(&mut self) -> Result<u32> {
        let Some((path, f)) = &self.file else {
            return Err(StoreError::Custody("this store has no keystore file; rotation needs one".into()));
        };
        let gen = self.keks.keys().max().copied().unwrap_or(0) + 1;
        let (rec, c) = Self::seal_new_kek(&self.mk, gen)?;
        let mut nf = f.clone();
        nf.keks.push(rec);
        nf.active = gen;
        nf.save(path)?; // durable before any key is wrapped under it
        self.keks.insert(gen, c);
        let p = path.clone();
        self.file = Some((p, nf));
        Ok(gen)
    }
    fn retire(&mut self, gen: u32) -> Result<()> {
        if gen == self.active() {
            return Err(StoreError::Invalid("cannot retire the active KEK".into()));
        }
        if let Some((path, f)) = &self.file {
            let mut nf = f.clone();
            nf.keks.retain(|k| k.gen != gen);
            nf.save(path)?;
            let p = path.clone();
            self.file = Some((p, nf));
        }
        // Generation 0 of a development keystore is the wrapKeyFile itself: the file is the
        // operator's, but from now on it only opens the keystore, no stored key.
        self.keks.remove(&gen);
        Ok(())
    }
    fn reseal(&mut self, new_mk: &[u8; 32], set_id: [u8; 8], k: u8, n: u8) -> Result<()> {
        let Some((path, f)) = &self.file else {
            return Err(StoreError::Custody("this store has no keystore file".into()));
        };
        if f.set_id.is_none() {
            return Err(StoreError::Custody("a development keystore (wrapKeyFile) has no shares to replace; configure custody and run qkd kms init".into()));
        }
        let nf = reseal_file(f, &*self.mk, new_mk, set_id, k, n, path)?;
        nf.save(path)?;
        let p = path.clone();
        self.file = Some((p, nf));
        self.mk = Zeroizing::new(*new_mk);
        Ok(())
    }
}

/// Collects shares until K valid ones reconstruct the master key (see `master`).
pub struct Unsealer {
    path: PathBuf,
    ks: KeystoreFile,
    got: BTreeMap<u8, Share>,
}

impl Unsealer {
    pub fn load(path: &Path) -> Result<Unsealer> {
        let ks = KeystoreFile::load(path)?;
        if ks.set_id.is_none() {
            return Err(StoreError::Custody(format!(
                "keystore {} is a development keystore (wrapKeyFile), not sealed by shares",
                path.display()
            )));
        }
        Ok(Unsealer { path: path.to_path_buf(), ks, got: BTreeMap::new() })
    }
    pub fn keystore(&self) -> &KeystoreFile {
        &self.ks
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn have(&self) -> usize {
        self.got.len()
    }
    pub fn threshold(&self) -> usize {
        self.ks.threshold as usize
    }
    /// Forgets every share given so far.
    pub fn reset(&mut self) {
        self.got.clear();
    }

    /// Adds the share lines in `text` (lines starting with '#' and blank lines are skipped).
    /// All or nothing: if any line is refused, none of this call's shares is kept. Returns how
    /// many new shares were accepted. Errors never echo share data.
    pub fn add(&mut self, text: &[u8]) -> Result<usize> {
        let s = std::str::from_utf8(text).map_err(|_| StoreError::Seal("a share is not text".into()))?;
        let mut new: Vec<Share> = Vec::new();
        let set = self.ks.set_id.expect("checked in load");
        for (n, line) in s.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).enumerate() {
            let p = shamir::parse_share(line).map_err(|e| StoreError::Seal(format!("share {} refused: {e}", n + 1)))?;
            if p.set_id != set {
                return Err(StoreError::Seal(format!(
                    "share {} refused: it belongs to another share set (another KMS, or an older init), not to keystore {}",
                    n + 1,
                    self.path.display()
                )));
            }
            if p.threshold != self.ks.threshold || p.count != self.ks.shares {
                return Err(StoreError::Seal(format!("share {} refused: it says {} of {}, the keystore {} of {}", n + 1, p.threshold, p.count, self.ks.threshold, self.ks.shares)));
            }
            let x = p.share.x;
            let dup = self.got.get(&x).map(|o| &o.y[..]).or_else(|| new.iter().find(|o| o.x == x).map(|o| &o.y[..]));
            match dup {
                Some(y) if ct_eq(y, &p.share.y) => continue, // the same share again: harmless
                Some(_) => return Err(StoreError::Seal(format!("share {} refused: two different shares claim index {x}", n + 1))),
                None => new.push(p.share),
            }
        }
        let n = new.len();
        for sh in new {
            self.got.insert(sh.x, sh);
        }
        Ok(n)
    }

    /// With at least K shares: reconstructs MK and checks it against the keystore. Every share
    /// is forgotten afterwards, success or not; on a mismatch nothing about the shares or the
    /// key is revealed beyond "they do not reconstruct it".
    pub fn master(&mut self) -> Result<Zeroizing<[u8; 32]>> {
        if self.got.len() < self.threshold() {
            return Err(StoreError::Seal(format!("{} of {} shares given; the KMS stays sealed", self.got.len(), self.threshold())));
        }
        let sub: Vec<&Share> = self.got.values().take(self.threshold()).collect();
        let r = shamir::combine(&sub).map_err(|e| StoreError::Seal(e.to_string()));
        self.got.clear();
        let mk = r?;
        if mk.len() != 32 || !ct_eq(&master_check(&mk), &self.ks.check) {
            return Err(StoreError::Seal(format!(
                "the {} shares do not reconstruct this KMS's master key: at least one is wrong (altered, or from another \
                 KMS's set); all shares given so far were discarded, give K valid ones again",
                self.threshold()
            )));
        }
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&mk);
        Ok(out)
    }
}

/// Splits `mk` into `n` shares (any `k` reconstruct it) and writes one 0600 file per share into
/// `out_dir` (0700, created if needed), refusing to overwrite. Returns the files.
pub fn write_shares(mk: &[u8; 32], set_id: &[u8; 8], n: u8, k: u8, out_dir: &Path, kms_id: &str) -> Result<Vec<PathBuf>> {
    let shares = shamir::split(mk, n, k).map_err(|e| StoreError::Invalid(e.to_string()))?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(out_dir).map_err(|e| StoreError::Custody(format!("cannot create {}: {e}", out_dir.display())))?;
    }
    let mut files = Vec::new();
    let safe_id: String = kms_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    for s in &shares {
        let p = out_dir.join(format!("{safe_id}-share-{}-of-{n}-set-{}.txt", s.x, &hex(set_id)[..8]));
        let line = shamir::format_share(set_id, k, n, s);
        let text = Zeroizing::new(format!(
            "# qkd kms master-key share {x} of {n} for KMS {kms_id} (any {k} reconstruct the master key; set {set})\n\
             # Give it to one custodian. Keep it offline. It is needed to unseal the KMS after every start:\n\
             #   qkd kms unseal --config <kms.json> <this file>\n\
             # Never put its contents on a command line, in a configuration or in a ticket.\n{line}\n",
            x = s.x,
            set = hex(set_id),
            line = &*line
        ));
        if let Err(e) = write_private(&p, text.as_bytes(), false) {
            for q in &files {
                let _ = std::fs::remove_file(q);
            }
            return Err(e);
        }
        files.push(p);
    }
    Ok(files)
}

/// What `init` made: the share files it wrote.
pub struct InitResult {
    pub share_files: Vec<PathBuf>,
}

/// Creates a master key, the keystore (software: a first KEK sealed under it; PKCS#11: a first
/// non-extractable key in the token via `make_token_key`) and `n` share files in `out_dir`, any
/// `k` of which reconstruct the master key. Refuses to overwrite a keystore or a share file.
pub fn init(
    path: &Path,
    kind: Kind,
    n: u8,
    k: u8,
    out_dir: &Path,
    kms_id: &str,
    make_token_key: Option<&mut dyn FnMut(u32) -> Result<()>>,
) -> Result<InitResult> {
    if path.exists() {
        return Err(StoreError::Custody(format!(
            "keystore {} already exists: this KMS is initialised (a second init would orphan every stored key); \
             to start over, move the keystore and the database away first",
            path.display()
        )));
    }
    if k < 2 || k > n {
        return Err(StoreError::Invalid(format!("need 2 <= threshold <= shares <= 255, got threshold {k} of {n}")));
    }
    let mk: Zeroizing<[u8; 32]> = Zeroizing::new(random()?);
    let set_id: [u8; 8] = random()?;
    let mut f = KeystoreFile { kind, set_id: Some(set_id), threshold: k, shares: n, check: master_check(&*mk), active: 1, keks: vec![], inner: None };
    match kind {
        Kind::Software => f.keks.push(SoftwareKeystore::seal_new_kek(&mk, 1)?.0),
        Kind::Pkcs11 => {
            let mk_fn = make_token_key.ok_or_else(|| StoreError::Invalid("PKCS#11 init needs the token".into()))?;
            mk_fn(1)?;
            f.keks.push(KekRecord { gen: 1, sealed: None });
            let ik: Zeroizing<[u8; 32]> = Zeroizing::new(random()?);
            f.inner = Some(gcm_seal(&seal_cipher_of(&*mk), INNER_AAD, &*ik)?);
        }
    }
    let files = write_shares(&mk, &set_id, n, k, out_dir, kms_id)?;
    f.save(path)?;
    Ok(InitResult { share_files: files })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qkd-ks-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn init_unseal_k_of_n_and_refusals() {
        let d = tmp("init");
        let ks = d.join("k.keystore");
        let r = init(&ks, Kind::Software, 5, 3, &d.join("shares"), "kmsA", None).unwrap();
        assert_eq!(r.share_files.len(), 5);
        use std::os::unix::fs::PermissionsExt;
        for f in &r.share_files {
            assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(init(&ks, Kind::Software, 5, 3, &d.join("shares2"), "kmsA", None).is_err(), "no second init");
        let read = |i: usize| std::fs::read(&r.share_files[i]).unwrap();
        // two shares: still sealed
        let mut u = Unsealer::load(&ks).unwrap();
        assert_eq!(u.add(&read(0)).unwrap(), 1);
        assert_eq!(u.add(&read(0)).unwrap(), 0, "the same share twice counts once");
        u.add(&read(3)).unwrap();
        assert!(matches!(u.master(), Err(StoreError::Seal(_))));
        u.add(&read(4)).unwrap();
        let mk = u.master().unwrap();
        let f = KeystoreFile::load(&ks).unwrap();
        let mut w = SoftwareKeystore::unsealed(&mk, &ks, f).unwrap();
        let (n, c) = w.wrap(b"aad", b"secret").unwrap();
        assert_eq!(&w.unwrap(1, &n, b"aad", &c).unwrap()[..], b"secret");
        // a corrupted share: refused by its checksum, nothing kept from that call
        let mut u = Unsealer::load(&ks).unwrap();
        let mut bad = read(1);
        let pos = bad.len() - 20;
        bad[pos] = if bad[pos] == b'0' { b'1' } else { b'0' };
        assert!(matches!(u.add(&bad), Err(StoreError::Seal(m)) if m.contains("checksum")));
        assert_eq!(u.have(), 0);
        // another set's share: refused
        let d2 = tmp("init2");
        let r2 = init(&d2.join("k.keystore"), Kind::Software, 3, 2, &d2.join("s"), "kmsB", None).unwrap();
        assert!(matches!(u.add(&std::fs::read(&r2.share_files[0]).unwrap()), Err(StoreError::Seal(m)) if m.contains("another share set")));
        // a forged share with a valid checksum and the right set: caught at reconstruction
        let good = String::from_utf8(read(2)).unwrap();
        let line = good.lines().find(|l| l.starts_with("qkd-share-v1")).unwrap();
        let p = shamir::parse_share(line).unwrap();
        let mut y = p.share.y.clone();
        y[0] ^= 1;
        let forged = shamir::format_share(&p.set_id, p.threshold, p.count, &Share { x: p.share.x, y });
        u.add(forged.as_bytes()).unwrap();
        u.add(&read(0)).unwrap();
        u.add(&read(1)).unwrap();
        let e = u.master().err().unwrap();
        assert!(matches!(&e, StoreError::Seal(m) if m.contains("do not reconstruct")), "{e}");
        assert_eq!(u.have(), 0, "all shares forgotten after a failed attempt");
        std::fs::remove_dir_all(&d).ok();
        std::fs::remove_dir_all(&d2).ok();
    }

    #[test]
    fn development_keystore_rotates_and_persists() {
        let d = tmp("dev");
        let ks = d.join("dev.keystore");
        let mk = [5u8; 32];
        let mut w = SoftwareKeystore::development(&mk, Some(&ks)).unwrap();
        assert_eq!(w.active(), 0);
        let (n0, c0) = w.wrap(b"a", b"k0").unwrap();
        assert_eq!(w.new_generation().unwrap(), 1);
        let (n1, c1) = w.wrap(b"a", b"k1").unwrap();
        drop(w);
        let mut w = SoftwareKeystore::development(&mk, Some(&ks)).unwrap();
        assert_eq!(w.active(), 1);
        assert_eq!(&w.unwrap(0, &n0, b"a", &c0).unwrap()[..], b"k0");
        assert_eq!(&w.unwrap(1, &n1, b"a", &c1).unwrap()[..], b"k1");
        assert!(SoftwareKeystore::development(&[6u8; 32], Some(&ks)).is_err(), "another wrapKeyFile is refused at open");
        std::fs::remove_dir_all(&d).ok();
    }
}
