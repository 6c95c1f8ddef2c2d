//! napi adapters for qkd-store (the reference KMS's durable key store). See native/store.
//!
//! The database is a SQLite file path or a `postgres://` URL (qkd-store picks the backend).
//! `put` and `take` commit durably (SQLite fsync, PostgreSQL synchronous commit), so they run off the JS thread as
//! `AsyncTask`s; the store sits behind a mutex shared with those tasks. Key bytes come in as a
//! caller-owned Uint8Array, copied once into a zeroising buffer; `take` hands the key back in a
//! fresh Buffer the caller owns (and must zero after use). Errors carry a code prefix
//! (`STORE_DB:`, `STORE_CRYPTO:`, `STORE_INVALID:`, `STORE_CLOSED:`, `STORE_CUSTODY:`,
//! `STORE_SEAL:`, `STORE_SERVER:` PostgreSQL unreachable or refusing) the TypeScript side maps.
//!
//! Custody: `KmsUnsealer` collects Shamir shares (raw bytes from the caller, copied into zeroising
//! buffers; never echoed) and, with K valid ones, opens the store with the software or PKCS#11
//! keystore; `kmsCustodyInit` writes the keystore and the share files itself, so share text never
//! becomes a JavaScript string. KEK rotation runs as `rotateStep` batches (each an `AsyncTask`
//! holding the store's lock for one transaction), so requests are served between batches.
use napi::bindgen_prelude::*;
use napi::{Env, Task};
use napi_derive::napi;
use qkd_store::keystore::{self, Kind, KeystoreFile, SoftwareKeystore, Unsealer};
use qkd_store::pkcs11::{self as p11, TokenConfig};
use qkd_store::{PutOutcome, Store, StoreError};
use std::path::Path;
use std::sync::{Arc, Mutex};
use zeroize::{Zeroize, Zeroizing};

type Shared = Arc<Mutex<Option<Store>>>;

fn err(e: StoreError) -> Error {
    Error::new(Status::GenericFailure, e.to_string())
}

fn with<T>(s: &Shared, f: impl FnOnce(&mut Store) -> std::result::Result<T, StoreError>) -> Result<T> {
    let mut g = s
        .lock()
        .map_err(|_| Error::new(Status::GenericFailure, "STORE_DB: store lock poisoned; restart the KMS"))?;
    match g.as_mut() {
        Some(st) => f(st).map_err(err),
        None => Err(Error::new(Status::GenericFailure, "STORE_CLOSED: the key store is closed")),
    }
}

#[napi(object)]
pub struct StoreCandidate {
    pub index: u32,
    pub key_id: String,
    /// Hex SHA-256 digest (domain-separated, see qkd-store), never the key.
    pub digest: String,
    /// Provenance JSON (labels, the node's commitment; never key bytes).
    pub meta: String,
}

#[napi(object)]
pub struct StoreCounts {
    pub held: f64,
    pub reserved: f64,
    pub delivered: f64,
    pub expired: f64,
}

#[napi(object)]
pub struct StoreAuditRow {
    pub seq: f64,
    pub at_ms: f64,
    pub key_stream_id: String,
    pub index: f64,
    pub event: String,
    pub detail: String,
}

#[napi(object)]
pub struct StoreExpired {
    pub key_stream_id: String,
    pub index: u32,
}

#[napi(object)]
pub struct StoreExpiring {
    pub key_stream_id: String,
    pub index: u32,
    pub expires_ms: f64,
}

#[napi(object)]
pub struct RotationState {
    /// KEK generation keys are (re-)wrapped under.
    pub active: u32,
    /// Keys still under an older generation.
    pub pending: f64,
    /// An unfinished rotation was resumed (no new generation made).
    pub resumed: bool,
}

#[napi(object)]
pub struct ChainReportJs {
    pub rows: f64,
    /// Hex hash of the last verified row (the chain head, to anchor elsewhere).
    pub head: String,
    /// The first broken row's seq, if any.
    pub broken_seq: Option<f64>,
    pub reason: Option<String>,
}

fn chain_js(r: qkd_store::ChainReport) -> ChainReportJs {
    ChainReportJs {
        rows: r.rows as f64,
        head: hex(&r.head),
        broken_seq: r.broken.as_ref().map(|b| b.0 as f64),
        reason: r.broken.map(|b| b.1),
    }
}

pub struct RotateTask {
    store: Shared,
    batch: u32,
}

impl Task for RotateTask {
    type Output = u64;
    type JsValue = f64;
    fn compute(&mut self) -> Result<u64> {
        let b = self.batch;
        with(&self.store, |s| s.rotate_step(b))
    }
    fn resolve(&mut self, _env: Env, o: u64) -> Result<f64> {
        Ok(o as f64)
    }
}

/// Where a PKCS#11 KEK lives. The PIN is passed separately (never part of a configuration).
#[napi(object)]
#[derive(Clone)]
pub struct TokenConfigJs {
    /// Path of the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    pub module: String,
    pub token_label: Option<String>,
    pub slot: Option<f64>,
    pub key_label: String,
    /// Where the PIN came from ("environment variable X", "file Y"), for error messages.
    pub pin_source: String,
}

pub(crate) fn token_cfg(c: &TokenConfigJs) -> TokenConfig {
    TokenConfig {
        module: c.module.clone(),
        token_label: c.token_label.clone(),
        slot: c.slot.map(|s| s as u64),
        key_label: c.key_label.clone(),
        pin_source: c.pin_source.clone(),
    }
}

fn pin_of(pin: &Option<Uint8Array>) -> Result<Zeroizing<Vec<u8>>> {
    pin.as_ref()
        .map(|p| Zeroizing::new(p.to_vec()))
        .ok_or_else(|| Error::new(Status::InvalidArg, "STORE_CUSTODY: the PKCS#11 keystore needs a PIN (pinEnv or pinFile)"))
}

/// Writes a new keystore and `shares` share files (any `threshold` reconstruct the master key)
/// into `out_dir`; `kind` "software" or "pkcs11" (then the first KEK is generated in the token).
/// Returns the share files' paths.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn kms_custody_init(
    keystore_file: String,
    kind: String,
    shares: u32,
    threshold: u32,
    out_dir: String,
    kms_id: String,
    token: Option<TokenConfigJs>,
    pin: Option<Uint8Array>,
) -> Result<Vec<String>> {
    if !(2..=255).contains(&shares) || !(2..=255).contains(&threshold) {
        return Err(Error::new(Status::InvalidArg, "STORE_INVALID: need 2 <= threshold <= shares <= 255"));
    }
    let r = match kind.as_str() {
        "software" => keystore::init(Path::new(&keystore_file), Kind::Software, shares as u8, threshold as u8, Path::new(&out_dir), &kms_id, None),
        "pkcs11" => {
            let cfg = token_cfg(token.as_ref().ok_or_else(|| Error::new(Status::InvalidArg, "STORE_CUSTODY: pkcs11 needs its token configuration"))?);
            let pin = pin_of(&pin)?;
            let (sess, _) = p11::open_session(&cfg, &pin).map_err(err)?;
            let label = cfg.key_label.clone();
            let mut made = Vec::new();
            let mut mk = |g: u32| {
                let h = p11::generate_key(&sess, &label, g)?;
                made.push(h);
                Ok(())
            };
            let r = keystore::init(Path::new(&keystore_file), Kind::Pkcs11, shares as u8, threshold as u8, Path::new(&out_dir), &kms_id, Some(&mut mk));
            if r.is_err() {
                for h in made {
                    let _ = sess.destroy_object(h); // no orphan KEK in the token after a failed init
                }
            }
            r
        }
        _ => return Err(Error::new(Status::InvalidArg, "STORE_INVALID: keystore kind must be 'software' or 'pkcs11'")),
    }
    .map_err(err)?;
    Ok(r.share_files.into_iter().map(|p| p.display().to_string()).collect())
}

/// Checks a PKCS#11 keystore's token at start-up, before any share is given: module, token,
/// PIN and every KEK generation the keystore file lists. Returns a description.
#[napi]
pub fn kms_probe_token(keystore_file: String, token: TokenConfigJs, pin: Option<Uint8Array>) -> Result<String> {
    let cfg = token_cfg(&token);
    let pin = pin_of(&pin)?;
    let f = KeystoreFile::load(Path::new(&keystore_file)).map_err(err)?;
    if f.kind != Kind::Pkcs11 {
        return Err(err(StoreError::Custody(format!("keystore {keystore_file} is a software keystore, but the configuration names a PKCS#11 token"))));
    }
    let (sess, label) = p11::open_session(&cfg, &pin).map_err(err)?;
    for k in &f.keks {
        let h = p11::find_key(&sess, &cfg.key_label, k.gen).map_err(err)?.ok_or_else(|| {
            err(StoreError::Custody(format!(
                "PKCS#11 token '{label}' holds no AES key labelled '{}' with id {} (KEK generation {} of keystore {keystore_file}): \
                 restore the token from its backup or fix custody.pkcs11.keyLabel",
                cfg.key_label, k.gen, k.gen
            )))
        })?;
        if !p11::key_is_protected(&sess, h).map_err(err)? {
            return Err(err(StoreError::Custody(format!("the key '{}' id {} in token '{label}' is extractable: refusing it as a KEK", cfg.key_label, k.gen))));
        }
    }
    Ok(format!("PKCS#11 token '{label}' key '{}' ({})", cfg.key_label, cfg.module))
}

/// Verifies the audit hash chain of a KMS database (read-only; the KMS may be running).
#[napi]
pub fn kms_audit_verify(db_path: String) -> Result<ChainReportJs> {
    Ok(chain_js(qkd_store::verify_audit_file(&db_path).map_err(err)?))
}

/// Collects Shamir shares for a sealed KMS. One per KMS process, used from the JS thread.
#[napi]
pub struct KmsUnsealer {
    u: Mutex<Unsealer>,
}

#[napi(object)]
pub struct UnsealProgress {
    /// Shares this call added (a share given twice counts once).
    pub accepted: u32,
    /// Distinct valid shares held so far.
    pub have: u32,
    pub threshold: u32,
    /// Shares made at init (N).
    pub shares: u32,
    /// "software" | "pkcs11"
    pub kind: String,
}

#[napi]
impl KmsUnsealer {
    /// Reads the keystore file made by `kmsCustodyInit`.
    #[napi(factory)]
    pub fn load(keystore_file: String) -> Result<KmsUnsealer> {
        Ok(KmsUnsealer { u: Mutex::new(Unsealer::load(Path::new(&keystore_file)).map_err(err)?) })
    }

    fn progress(u: &Unsealer, accepted: usize) -> UnsealProgress {
        let ks = u.keystore();
        UnsealProgress {
            accepted: accepted as u32,
            have: u.have() as u32,
            threshold: u.threshold() as u32,
            shares: ks.shares as u32,
            kind: if ks.kind == Kind::Software { "software" } else { "pkcs11" }.into(),
        }
    }

    /// Progress without adding anything.
    #[napi]
    pub fn status(&self) -> Result<UnsealProgress> {
        let u = self.u.lock().map_err(|_| Error::new(Status::GenericFailure, "STORE_SEAL: lock poisoned"))?;
        Ok(Self::progress(&u, 0))
    }

    /// Adds the share lines in `text` (all or nothing; the caller zeroes `text` afterwards).
    #[napi]
    pub fn add(&self, text: Uint8Array) -> Result<UnsealProgress> {
        let mut u = self.u.lock().map_err(|_| Error::new(Status::GenericFailure, "STORE_SEAL: lock poisoned"))?;
        let buf = Zeroizing::new(text.to_vec());
        let n = u.add(&buf).map_err(err)?;
        Ok(Self::progress(&u, n))
    }

    /// Forgets every share given so far.
    #[napi]
    pub fn reset(&self) -> Result<()> {
        self.u.lock().map_err(|_| Error::new(Status::GenericFailure, "STORE_SEAL: lock poisoned"))?.reset();
        Ok(())
    }

    /// With K shares: reconstructs the master key, checks it, opens the keystore (software, or
    /// the PKCS#11 token with `token` and `pin`) and the database. Shares are forgotten either way.
    #[napi]
    pub fn open_store(&self, db_path: String, capacity: f64, token: Option<TokenConfigJs>, pin: Option<Uint8Array>) -> Result<KmsStore> {
        let mut u = self.u.lock().map_err(|_| Error::new(Status::GenericFailure, "STORE_SEAL: lock poisoned"))?;
        let mk = u.master().map_err(err)?;
        let path = u.path().to_path_buf();
        let f = u.keystore().clone();
        let w: Box<dyn keystore::KeyWrapper> = match f.kind {
            Kind::Software => Box::new(SoftwareKeystore::unsealed(&mk, &path, f).map_err(err)?),
            Kind::Pkcs11 => {
                let cfg = token_cfg(token.as_ref().ok_or_else(|| {
                    Error::new(Status::InvalidArg, "STORE_CUSTODY: this keystore is in a PKCS#11 token: configure custody.pkcs11")
                })?);
                let pin = pin_of(&pin)?;
                Box::new(p11::TokenKeystore::open(&cfg, &pin, &mk, &path, f).map_err(err)?)
            }
        };
        let s = Store::open_with(&db_path, w, capacity.max(0.0) as u64).map_err(err)?;
        Ok(KmsStore { inner: Arc::new(Mutex::new(Some(s))) })
    }
}

#[napi(object)]
pub struct StoreDigest {
    pub digest: String,
    pub state: u32,
}

#[napi(object)]
pub struct StoreTaken {
    pub index: u32,
    pub key_id: String,
    pub key: Buffer,
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub struct PutTask {
    store: Shared,
    sid: String,
    index: u32,
    key_id: String,
    key: qkd_store::secmem::SecretBuf,
    meta: String,
    now_ms: i64,
    expires_ms: i64,
}

impl Task for PutTask {
    type Output = PutOutcome;
    type JsValue = String;
    fn compute(&mut self) -> Result<PutOutcome> {
        let (sid, key_id, meta) = (&self.sid, &self.key_id, &self.meta);
        let (index, key, now, exp) = (self.index, &self.key, self.now_ms, self.expires_ms);
        with(&self.store, |s| s.put(sid, index, key_id, key, meta, now, exp))
    }
    fn resolve(&mut self, _env: Env, o: PutOutcome) -> Result<String> {
        Ok(match o {
            PutOutcome::Stored => "stored",
            PutOutcome::Duplicate => "duplicate",
            PutOutcome::Conflict => "conflict",
            PutOutcome::Full => "full",
        }
        .to_string())
    }
}

/// The keys arrive as a zeroised-on-drop copy and move into protected memory on the worker
/// thread: mlock (and munlock/munmap on drop) can stall for milliseconds (the kernel drains
/// every CPU's LRU lists), which on the JS thread held up every other request of the KMS.
pub struct PutManyTask {
    store: Shared,
    keys: Zeroizing<Vec<u8>>,
    lens: Vec<usize>,
    items: Vec<qkd_store::PutItem<()>>,
    now_ms: i64,
}

impl Task for PutManyTask {
    type Output = Vec<PutOutcome>;
    type JsValue = Vec<String>;
    fn compute(&mut self) -> Result<Vec<PutOutcome>> {
        // One protected mapping for the whole batch (see SecretSlice), not one per key.
        let slices = qkd_store::secmem::SecretSlice::split(qkd_store::secmem::SecretBuf::from_slice(&self.keys), &self.lens)
            .ok_or_else(|| Error::new(Status::InvalidArg, "STORE_INVALID: sizes do not add up to the keys buffer length"))?;
        self.keys.zeroize();
        let items: Vec<_> = std::mem::take(&mut self.items).into_iter().zip(slices).map(|(it, key)| qkd_store::PutItem {
            sid: it.sid, index: it.index, key_id: it.key_id, key, meta: it.meta, expires_ms: it.expires_ms }).collect();
        let now = self.now_ms;
        // `items` (the protected mapping) is dropped here, on the worker thread, too.
        with(&self.store, |s| s.put_many(&items, now))
    }
    fn resolve(&mut self, _env: Env, o: Vec<PutOutcome>) -> Result<Vec<String>> {
        Ok(o.into_iter()
            .map(|o| match o {
                PutOutcome::Stored => "stored",
                PutOutcome::Duplicate => "duplicate",
                PutOutcome::Conflict => "conflict",
                PutOutcome::Full => "full",
            }
            .to_string())
            .collect())
    }
}

pub struct TakeTask {
    store: Shared,
    key_ids: Vec<String>,
    holder: String,
    now_ms: i64,
}

impl Task for TakeTask {
    type Output = Vec<Option<qkd_store::TakenKey>>;
    type JsValue = Vec<Option<StoreTaken>>;
    fn compute(&mut self) -> Result<Self::Output> {
        let ids: Vec<&str> = self.key_ids.iter().map(|s| s.as_str()).collect();
        let (h, n) = (&self.holder, self.now_ms);
        with(&self.store, |s| s.take_many(&ids, h, n))
    }
    fn resolve(&mut self, _env: Env, o: Self::Output) -> Result<Vec<Option<StoreTaken>>> {
        // The Buffer copies the key out of the zeroising Vec, which is wiped when `o` drops.
        Ok(o.iter()
            .map(|t| t.as_ref().map(|t| StoreTaken { index: t.index, key_id: t.key_id.clone(), key: Buffer::from(t.key.to_vec()) })) // into JS: the HTTPS body needs the bytes; kms.ts wipes them
            .collect())
    }
}

pub struct TakeAllTask {
    store: Shared,
    key_ids: Vec<String>,
    holder: String,
    suffix: String,
    now_ms: i64,
}

#[napi(object)]
pub struct StoreTakeAll {
    pub keys: Vec<StoreTaken>,
    pub refused: Vec<Vec<u32>>,
}

impl Task for TakeAllTask {
    type Output = qkd_store::TakeAll;
    type JsValue = StoreTakeAll;
    fn compute(&mut self) -> Result<Self::Output> {
        let ids: Vec<&str> = self.key_ids.iter().map(|s| s.as_str()).collect();
        let (h, x, n) = (&self.holder, &self.suffix, self.now_ms);
        with(&self.store, |s| s.take_all(&ids, h, x, n))
    }
    fn resolve(&mut self, _env: Env, o: Self::Output) -> Result<StoreTakeAll> {
        // The Buffers copy the keys out of the zeroising Vecs, which are wiped when `o` drops.
        Ok(StoreTakeAll {
            keys: o.keys.iter().map(|t| StoreTaken { index: t.index, key_id: t.key_id.clone(), key: Buffer::from(t.key.to_vec()) }).collect(),
            refused: o.refused.iter().map(|(p, r)| vec![*p, *r as u32]).collect(),
        })
    }
}

/// The KMS key store. One per KMS process; methods may be called from the JS thread at any time
/// (a mutex serialises them with the background put/take tasks).
#[napi]
pub struct KmsStore {
    inner: Shared,
}

#[napi]
impl KmsStore {
    /// Opens or creates the database at `path` (a SQLite file, or a postgres:// URL) with a development keystore: `kek` is the 32-byte
    /// wrapKeyFile (copied; the caller should zero its array). With `keystore_file`, KEK
    /// generations made by rotation persist there (sealed under `kek`). `capacity` = most keys held.
    #[napi(factory)]
    pub fn open(path: String, kek: Uint8Array, capacity: f64, keystore_file: Option<String>) -> Result<KmsStore> {
        let k = Zeroizing::new(kek.to_vec());
        let w = SoftwareKeystore::development(&k, keystore_file.as_deref().map(Path::new)).map_err(err)?;
        let s = Store::open_with(&path, Box::new(w), capacity.max(0.0) as u64).map_err(err)?;
        Ok(KmsStore { inner: Arc::new(Mutex::new(Some(s))) })
    }

    /// Where the keys are: "SQLite database PATH" or "PostgreSQL user@host:port/db" (no password).
    #[napi]
    pub fn backend(&self) -> Result<String> {
        with(&self.inner, |s| Ok(s.backend()))
    }

    /// What holds the KEK ("software keystore ...", "PKCS#11 token '...' key '...'").
    #[napi]
    pub fn custody(&self) -> Result<String> {
        with(&self.inner, |s| Ok(s.custody()))
    }

    /// Keys whose TTL ends within `horizon_ms`, each reported once.
    #[napi]
    pub fn expiring(&self, now_ms: f64, horizon_ms: f64) -> Result<Vec<StoreExpiring>> {
        let v = with(&self.inner, |s| s.expiring(now_ms as i64, horizon_ms as i64))?;
        Ok(v.into_iter().map(|e| StoreExpiring { key_stream_id: e.key_stream_id, index: e.index, expires_ms: e.expires_ms as f64 }).collect())
    }

    /// Starts (or resumes) a KEK rotation; see qkd-store `begin_rotation`.
    #[napi]
    pub fn begin_rotation(&self, now_ms: f64) -> Result<RotationState> {
        let (active, pending, resumed) = with(&self.inner, |s| s.begin_rotation(now_ms as i64))?;
        Ok(RotationState { active, pending: pending as f64, resumed })
    }

    /// Re-wraps up to `batch` keys in one transaction off the JS thread; resolves how many remain.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn rotate_step(&self, batch: u32) -> AsyncTask<RotateTask> {
        AsyncTask::new(RotateTask { store: self.inner.clone(), batch })
    }

    /// Ends the rotation: destroys older KEK generations; returns them.
    #[napi]
    pub fn finish_rotation(&self, now_ms: f64, rewrapped: f64) -> Result<Vec<u32>> {
        with(&self.inner, |s| s.finish_rotation(now_ms as i64, rewrapped as u64))
    }

    /// Replaces the master key (a share lost or exposed): writes `shares` new share files into
    /// `out_dir` (any `threshold` reconstruct it) and re-seals the keystore; old shares are revoked.
    #[napi]
    pub fn reshare(&self, shares: u32, threshold: u32, out_dir: String, kms_id: String, now_ms: f64) -> Result<Vec<String>> {
        if !(2..=255).contains(&shares) || !(2..=255).contains(&threshold) {
            return Err(Error::new(Status::InvalidArg, "STORE_INVALID: need 2 <= threshold <= shares <= 255"));
        }
        let v = with(&self.inner, |s| s.reshare(shares as u8, threshold as u8, Path::new(&out_dir), &kms_id, now_ms as i64))?;
        Ok(v.into_iter().map(|p| p.display().to_string()).collect())
    }

    /// Active KEK generation and every generation loaded.
    #[napi]
    pub fn kek_generations(&self) -> Result<Vec<u32>> {
        let (a, mut all) = with(&self.inner, |s| Ok(s.kek_generations()))?;
        all.retain(|g| *g != a);
        all.insert(0, a);
        Ok(all)
    }

    /// Verifies the audit hash chain.
    #[napi]
    pub fn verify_audit(&self) -> Result<ChainReportJs> {
        let r = with(&self.inner, |s| s.verify_audit())?;
        Ok(chain_js(r))
    }

    /// Checkpoints and truncates the WAL.
    #[napi]
    pub fn checkpoint(&self) -> Result<()> {
        with(&self.inner, |s| s.checkpoint())
    }

    /// The wrapped bytes of a key, or null once erased (tests only: ciphertext, never a key).
    #[napi]
    pub fn wrapped_of(&self, key_id: String) -> Result<Option<Buffer>> {
        Ok(with(&self.inner, |s| s.wrapped_of(&key_id))?.map(Buffer::from))
    }

    /// Stores a key durably; resolves to "stored" | "duplicate" | "conflict" | "full".
    #[napi(ts_return_type = "Promise<'stored' | 'duplicate' | 'conflict' | 'full'>")]
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        key_stream_id: String,
        index: u32,
        key_id: String,
        key: Uint8Array,
        meta_json: String,
        now_ms: f64,
        expires_ms: f64,
    ) -> AsyncTask<PutTask> {
        AsyncTask::new(PutTask {
            store: self.inner.clone(),
            sid: key_stream_id,
            index,
            key_id,
            key: qkd_store::secmem::SecretBuf::from_slice(&key),
            meta: meta_json,
            now_ms: now_ms as i64,
            expires_ms: expires_ms as i64,
        })
    }

    /// Stores several keys in one transaction (one fsync). `keys` is the concatenation of the keys,
    /// `sizes` their lengths in bytes; the other arrays have one entry per key. Resolves to one
    /// outcome per key, in order.
    #[napi(ts_return_type = "Promise<Array<'stored' | 'duplicate' | 'conflict' | 'full'>>")]
    #[allow(clippy::too_many_arguments)]
    pub fn put_many(
        &self,
        key_stream_ids: Vec<String>,
        indices: Vec<u32>,
        key_ids: Vec<String>,
        keys: Uint8Array,
        sizes: Vec<u32>,
        meta_jsons: Vec<String>,
        expires_ms: Vec<f64>,
        now_ms: f64,
    ) -> Result<AsyncTask<PutManyTask>> {
        let n = key_stream_ids.len();
        if indices.len() != n || key_ids.len() != n || sizes.len() != n || meta_jsons.len() != n || expires_ms.len() != n {
            return Err(Error::new(Status::InvalidArg, "STORE_INVALID: putMany arrays differ in length"));
        }
        let total: usize = sizes.iter().map(|&s| s as usize).sum();
        if total != keys.len() {
            return Err(Error::new(Status::InvalidArg, "STORE_INVALID: sizes do not add up to the keys buffer length"));
        }
        let mut sids = key_stream_ids.into_iter();
        let mut kids = key_ids.into_iter();
        let mut metas = meta_jsons.into_iter();
        let items = indices.iter().zip(&expires_ms).map(|(&index, &exp)| qkd_store::PutItem {
            sid: sids.next().unwrap_or_default(),
            index,
            key_id: kids.next().unwrap_or_default(),
            key: (),
            meta: metas.next().unwrap_or_default(),
            expires_ms: exp as i64,
        }).collect();
        Ok(AsyncTask::new(PutManyTask { store: self.inner.clone(), keys: Zeroizing::new(keys.to_vec()),
            lens: sizes.iter().map(|&s| s as usize).collect(), items, now_ms: now_ms as i64 }))
    }

    /// Held, unreserved, unexpired keys of a stream in index order, ascending or descending (digests, never keys).
    #[napi]
    /// With `max_epsilon`, only keys whose provenance states an epsilon at most that.
    pub fn candidates(&self, key_stream_id: String, limit: u32, now_ms: f64, descending: bool, max_epsilon: Option<f64>) -> Result<Vec<StoreCandidate>> {
        let v = with(&self.inner, |s| s.candidates_at_level(&key_stream_id, limit, now_ms as i64, descending, max_epsilon))?;
        Ok(v.into_iter().map(|c| StoreCandidate { index: c.index, key_id: c.key_id, digest: hex(&c.digest), meta: c.meta }).collect())
    }

    /// Reserves the listed `(index, hex digest)` keys for `holder` where this store holds the same
    /// digest. Returns the indices reserved (none at all with `all_or_nothing` unless all match).
    #[napi]
    pub fn reserve(&self, key_stream_id: String, indices: Vec<u32>, digests: Vec<String>, holder: String, now_ms: f64, all_or_nothing: bool) -> Result<Vec<u32>> {
        if indices.len() != digests.len() {
            return Err(Error::new(Status::InvalidArg, "STORE_INVALID: indices and digests differ in length"));
        }
        let mut items = Vec::with_capacity(indices.len());
        for (i, d) in indices.iter().zip(&digests) {
            let d = unhex32(d).ok_or_else(|| Error::new(Status::InvalidArg, "STORE_INVALID: digest must be 64 hex digits"))?;
            items.push((*i, d));
        }
        with(&self.inner, |s| s.reserve(&key_stream_id, &items, &holder, now_ms as i64, all_or_nothing))
    }

    /// Provenance JSON of `(stream, index)` or null.
    #[napi]
    pub fn meta_of(&self, key_stream_id: String, index: u32) -> Result<Option<String>> {
        with(&self.inner, |s| s.meta_of(&key_stream_id, index))
    }

    /// Returns keys reserved for `holder` to the held pool; resolves the indices released.
    #[napi]
    pub fn unreserve(&self, key_stream_id: String, indices: Vec<u32>, holder: String, now_ms: f64) -> Result<Vec<u32>> {
        with(&self.inner, |s| s.unreserve(&key_stream_id, &indices, &holder, now_ms as i64))
    }

    /// Hex digest and state (0 held, 1 reserved, 2 delivered, 3 expired) of `(stream, index)`, or
    /// null when this store never held it.
    #[napi]
    pub fn digest_of(&self, key_stream_id: String, index: u32) -> Result<Option<StoreDigest>> {
        let d = with(&self.inner, |s| s.held_digest(&key_stream_id, index))?;
        Ok(d.map(|(d, state)| StoreDigest { digest: hex(&d), state: state as u32 }))
    }

    /// Unwraps, erases and returns the keys reserved for `holder`, in one transaction: one entry
    /// per key_ID, null where there is none for this holder.
    #[napi(ts_return_type = "Promise<Array<StoreTaken | null>>")]
    pub fn take_many(&self, key_ids: Vec<String>, holder: String, now_ms: f64) -> AsyncTask<TakeTask> {
        AsyncTask::new(TakeTask { store: self.inner.clone(), key_ids, holder, now_ms: now_ms as i64 })
    }

    /// All or nothing: unwraps, erases and returns the keys reserved for `holder` (a row named
    /// `id` or `id + suffix`), in one transaction; if any key_ID is not available, nothing is
    /// taken and `refused` lists `[position, 1 unknown | 2 reserved for another pair]`.
    #[napi(ts_return_type = "Promise<{ keys: StoreTaken[]; refused: number[][] }>")]
    pub fn take_all(&self, key_ids: Vec<String>, holder: String, suffix: String, now_ms: f64) -> AsyncTask<TakeAllTask> {
        AsyncTask::new(TakeAllTask { store: self.inner.clone(), key_ids, holder, suffix, now_ms: now_ms as i64 })
    }

    /// Reformats the chunks `(indices, digests)` of a stream (held, or reserved for `from_holder`)
    /// into keys of `sizes` bytes; `outputs` are `[key_id, holder, key number]` rows of the pseudo
    /// stream `<stream>/r`, reserved for their holders. False (nothing changed) unless every
    /// chunk is available. See qkd-store `Store::reformat`.
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn reformat(&self, key_stream_id: String, indices: Vec<u32>, digests: Vec<String>, from_holder: Option<String>,
        sizes: Vec<u32>, out_key_ids: Vec<String>, out_holders: Vec<String>, out_keys: Vec<u32>, meta: String, now_ms: f64) -> Result<bool> {
        if indices.len() != digests.len() || out_key_ids.len() != out_holders.len() || out_key_ids.len() != out_keys.len() {
            return Err(Error::new(Status::InvalidArg, "STORE_INVALID: reformat arrays differ in length"));
        }
        let mut items = Vec::with_capacity(indices.len());
        for (i, d) in indices.iter().zip(&digests) {
            let d = unhex32(d).ok_or_else(|| Error::new(Status::InvalidArg, "STORE_INVALID: digest must be 64 hex digits"))?;
            items.push((*i, d));
        }
        let outs: Vec<(String, String, u32)> =
            out_key_ids.into_iter().zip(out_holders).zip(out_keys).map(|((k, h), j)| (k, h, j)).collect();
        with(&self.inner, |s| s.reformat(&key_stream_id, &items, from_holder.as_deref(), &sizes, &outs, &meta, now_ms as i64))
    }

    /// `[first, last]` index ranges of the held (unreserved, unexpired) keys of a stream.
    #[napi]
    pub fn held_ranges(&self, key_stream_id: String, now_ms: f64, max_epsilon: Option<f64>) -> Result<Vec<Vec<u32>>> {
        let v = with(&self.inner, |s| s.held_ranges(&key_stream_id, now_ms as i64, max_epsilon))?;
        Ok(v.into_iter().map(|(a, b)| vec![a, b]).collect())
    }

    /// Erases every key whose expiry is at or before `now_ms`; returns them.
    #[napi]
    pub fn expire(&self, now_ms: f64) -> Result<Vec<StoreExpired>> {
        let v = with(&self.inner, |s| s.expire(now_ms as i64))?;
        Ok(v.into_iter().map(|(key_stream_id, index)| StoreExpired { key_stream_id, index }).collect())
    }

    #[napi]
    pub fn counts(&self, key_stream_id: Option<String>) -> Result<StoreCounts> {
        let c = with(&self.inner, |s| s.counts(key_stream_id.as_deref()))?;
        Ok(StoreCounts { held: c.held as f64, reserved: c.reserved as f64, delivered: c.delivered as f64, expired: c.expired as f64 })
    }

    /// Appends an audit record. `detail` must not contain key bytes.
    #[napi]
    pub fn audit(&self, now_ms: f64, key_stream_id: String, index: f64, event: String, detail: String) -> Result<()> {
        with(&self.inner, |s| s.audit(now_ms as i64, &key_stream_id, index as i64, &event, &detail))
    }

    #[napi]
    pub fn audit_trail(&self, key_stream_id: String, index: Option<u32>) -> Result<Vec<StoreAuditRow>> {
        let v = with(&self.inner, |s| s.audit_trail(&key_stream_id, index))?;
        Ok(v.into_iter()
            .map(|r| StoreAuditRow { seq: r.seq as f64, at_ms: r.at_ms as f64, key_stream_id: r.key_stream_id, index: r.index as f64, event: r.event, detail: r.detail })
            .collect())
    }

    /// Runs raw SQL (tests: shows the audit trail refuses UPDATE/DELETE).
    #[napi]
    pub fn exec_raw(&self, sql: String) -> Result<()> {
        with(&self.inner, |s| s.exec_raw(&sql))
    }

    /// Closes the database (checkpoints the WAL). Later calls fail with STORE_CLOSED.
    #[napi]
    pub fn close(&self) -> Result<()> {
        let mut g = self.inner.lock().map_err(|_| Error::new(Status::GenericFailure, "STORE_DB: lock poisoned"))?;
        g.take();
        Ok(())
    }
}
