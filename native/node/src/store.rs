//! napi adapters for qkd-store (the reference KMS's durable key store). See native/store.
//!
//! `put` and `take` commit with fsync (WAL, synchronous=FULL), so they run off the JS thread as
//! `AsyncTask`s; the store sits behind a mutex shared with those tasks. Key bytes come in as a
//! caller-owned Uint8Array, copied once into a zeroising buffer; `take` hands the key back in a
//! fresh Buffer the caller owns (and must zero after use). Errors carry a code prefix
//! (`STORE_DB:`, `STORE_CRYPTO:`, `STORE_INVALID:`, `STORE_CLOSED:`) the TypeScript side maps.
use napi::bindgen_prelude::*;
use napi::{Env, Task};
use napi_derive::napi;
use qkd_store::{PutOutcome, Store, StoreError};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

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
    key: Zeroizing<Vec<u8>>,
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

pub struct PutManyTask {
    store: Shared,
    items: Vec<qkd_store::PutItem>,
    now_ms: i64,
}

impl Task for PutManyTask {
    type Output = Vec<PutOutcome>;
    type JsValue = Vec<String>;
    fn compute(&mut self) -> Result<Vec<PutOutcome>> {
        let (items, now) = (&self.items, self.now_ms);
        with(&self.store, |s| s.put_many(items, now))
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
            .map(|t| t.as_ref().map(|t| StoreTaken { index: t.index, key_id: t.key_id.clone(), key: Buffer::from(t.key.to_vec()) }))
            .collect())
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
    /// Opens or creates the database at `path`. `kek` is the 32-byte key-encryption key (copied
    /// into the cipher state; the caller should zero its array). `capacity` = most keys held.
    #[napi(factory)]
    pub fn open(path: String, kek: Uint8Array, capacity: f64) -> Result<KmsStore> {
        let k = Zeroizing::new(kek.to_vec());
        let s = Store::open(&path, &k, capacity.max(0.0) as u64).map_err(err)?;
        Ok(KmsStore { inner: Arc::new(Mutex::new(Some(s))) })
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
            key: Zeroizing::new(key.to_vec()),
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
        let mut items = Vec::with_capacity(n);
        let mut off = 0usize;
        let mut sids = key_stream_ids.into_iter();
        let mut kids = key_ids.into_iter();
        let mut metas = meta_jsons.into_iter();
        for ((&size, &index), &exp) in sizes.iter().zip(&indices).zip(&expires_ms) {
            let len = size as usize;
            items.push(qkd_store::PutItem {
                sid: sids.next().unwrap_or_default(),
                index,
                key_id: kids.next().unwrap_or_default(),
                key: Zeroizing::new(keys[off..off + len].to_vec()),
                meta: metas.next().unwrap_or_default(),
                expires_ms: exp as i64,
            });
            off += len;
        }
        Ok(AsyncTask::new(PutManyTask { store: self.inner.clone(), items, now_ms: now_ms as i64 }))
    }

    /// Held, unreserved, unexpired keys of a stream in index order, ascending or descending (digests, never keys).
    #[napi]
    pub fn candidates(&self, key_stream_id: String, limit: u32, now_ms: f64, descending: bool) -> Result<Vec<StoreCandidate>> {
        let v = with(&self.inner, |s| s.candidates(&key_stream_id, limit, now_ms as i64, descending))?;
        Ok(v.into_iter().map(|c| StoreCandidate { index: c.index, key_id: c.key_id, digest: hex(&c.digest) }).collect())
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
