//! qkd-store: the reference KMS's durable key store.
//!
//! Two backends behind the `db::Db` trait: one SQLite database file (sqlite.rs: rusqlite,
//! `bundled`, WAL, `synchronous=FULL`), the embedded default, or a PostgreSQL server (pg.rs,
//! `postgres://` URL, `synchronous_commit=on`), the production backend. Either way a `put` that
//! returned is durable: the KMS answers 201 to a key-material push only after `put` returns. The
//! logic below (wrapping, digests, audit chain, erasure, rotation) is the same for both.
//!
//! Keys are wrapped at rest with AES-256-GCM (NIST SP 800-38D) under a key-encryption key (KEK)
//! the KMS loads from its configuration; each row has a fresh 96-bit random nonce and the
//! associated data binds the ciphertext to its `(key_stream_id, index)`, so a wrapped key moved to
//! another row fails to unwrap. Rows are never deleted while the KMS runs: a key handed out or
//! expired loses its ciphertext (set to NULL) but keeps its digest, so a late retry of the same
//! push is still recognised as a duplicate and a different key under a used index as a conflict.
//!
//! The digest is `SHA-256("qkd-store/v1" || 0x00 || key_stream_id || 0x00 || index_be32 || key)`.
//! The two KMSs compare digests (never keys) to confirm which indices both hold.
//!
//! The `audit` table is append-only (triggers refuse UPDATE and DELETE) and hash-chained: row n
//! carries `SHA-256("qkd-audit/v1" ‖ hash(n-1) ‖ seq ‖ at_ms ‖ stream_id ‖ idx ‖ event ‖ detail)`
//! (integers big-endian, strings length-prefixed, hash(0) = 32 zero bytes), so an altered,
//! reordered or deleted row breaks the chain at that row (`verify_audit`). It never holds key bytes.
//!
//! Custody (keystore.rs, pkcs11.rs): the KEK is behind the `KeyWrapper` trait; each row records
//! the KEK generation it is wrapped under (`kek_gen`), so rotation re-wraps row by row while the
//! store keeps serving. Erasure: `PRAGMA secure_delete=ON` makes SQLite overwrite the freed
//! content of an erased ciphertext with zeros in the database file; close checkpoints and
//! truncates the WAL.
#[macro_use]
pub mod db;
pub mod keystore;
pub mod merkle;
pub mod pg;
pub mod pkcs11;
pub mod secmem;
pub mod shamir;
pub mod sqlite;

use db::{Db, Row, Val};
use keystore::{KeyWrapper, SoftwareKeystore};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Row states. `Held` and `Reserved` carry a wrapped key; the others are tombstones.
pub const STATE_HELD: i64 = 0;
pub const STATE_RESERVED: i64 = 1;
pub const STATE_DELIVERED: i64 = 2;
pub const STATE_EXPIRED: i64 = 3;

#[derive(Debug)]
pub enum StoreError {
    /// The database failed (I/O, corruption, locked). Message has no key material.
    Db(String),
    /// The KEK is not 32 bytes, or a wrapped key did not authenticate under it.
    Crypto(String),
    /// Caller passed something invalid (empty key, bad size).
    Invalid(String),
    /// The PostgreSQL server is unreachable, refused the login, or lacks the database (message
    /// says what to fix; never the password).
    Server(String),
    /// Custody set-up: keystore file, PKCS#11 module, token, PIN or key missing or wrong.
    Custody(String),
    /// A share refused, or shares that do not reconstruct the master key (nothing revealed).
    Seal(String),
}
impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Db(m) => write!(f, "STORE_DB: {m}"),
            StoreError::Crypto(m) => write!(f, "STORE_CRYPTO: {m}"),
            StoreError::Invalid(m) => write!(f, "STORE_INVALID: {m}"),
            StoreError::Custody(m) => write!(f, "STORE_CUSTODY: {m}"),
            StoreError::Server(m) => write!(f, "STORE_SERVER: {m}"),
            StoreError::Seal(m) => write!(f, "STORE_SEAL: {m}"),
        }
    }
}
impl std::error::Error for StoreError {}
pub type Result<T> = std::result::Result<T, StoreError>;

/// Outcome of a `put`: results, not errors (the KMS maps them to 201 / 201 / 409 / 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    Duplicate,
    Conflict,
    Full,
}

/// One key to store (see `Store::put_many`). The key is in protected memory (secmem), zeroised
/// on drop: its own `SecretBuf`, or a `SecretSlice` of one shared by a batch.
pub struct PutItem<K = secmem::SecretBuf> {
    pub sid: String,
    pub index: u32,
    pub key_id: String,
    pub key: K,
    pub meta: String,
    pub expires_ms: i64,
}

/// `take_all` refusal reasons.
pub const TAKE_UNKNOWN: u8 = 1;
pub const TAKE_FOREIGN: u8 = 2;

/// Result of `take_all`: every key, or (nothing taken) the refused positions with their reason.
pub struct TakeAll {
    pub keys: Vec<TakenKey>,
    pub refused: Vec<(u32, u8)>,
}

/// A key taken out of the store, in protected memory (secmem: locked, guarded, not dumped);
/// zeroised on drop.
pub struct TakenKey {
    pub index: u32,
    pub key_id: String,
    pub key: secmem::SecretBuf,
}

pub struct Candidate {
    pub index: u32,
    pub key_id: String,
    pub digest: [u8; 32],
    /// The key's provenance (JSON, no key bytes): labels, the node's commitment.
    pub meta: String,
}

/// Result of `verify_audit`: rows checked, the chain head, and the first broken row if any.
pub struct ChainReport {
    pub rows: u64,
    pub head: [u8; 32],
    pub broken: Option<(i64, String)>,
}

/// A key whose TTL is near (see `Store::expiring`).
pub struct Expiring {
    pub key_stream_id: String,
    pub index: u32,
    pub expires_ms: i64,
}

pub struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    pub key_stream_id: String,
    pub index: i64,
    pub event: String,
    pub detail: String,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Counts {
    pub held: u64,
    pub reserved: u64,
    pub delivered: u64,
    pub expired: u64,
}

pub fn digest(key_stream_id: &str, index: u32, key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"qkd-store/v1\0");
    h.update(key_stream_id.as_bytes());
    h.update([0u8]);
    h.update(index.to_be_bytes());
    h.update(key);
    h.finalize().into()
}

/// Hash of audit row `seq` chained to the previous row's hash (see the module doc).
pub fn chain_hash(prev: &[u8], seq: i64, at_ms: i64, sid: &str, idx: i64, event: &str, detail: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"qkd-audit/v1");
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    h.update((sid.len() as u64).to_be_bytes());
    h.update(sid.as_bytes());
    h.update(idx.to_be_bytes());
    for s in [event, detail] {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    h.finalize().into()
}

fn aad(key_stream_id: &str, index: u32) -> Vec<u8> {
    let mut a = Vec::with_capacity(key_stream_id.len() + 5);
    a.extend_from_slice(key_stream_id.as_bytes());
    a.push(0);
    a.extend_from_slice(&index.to_be_bytes());
    a
}

/// Constant-time equality of two digests.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    d == 0
}

pub struct Store {
    db: Box<dyn Db>,
    wrapper: Box<dyn KeyWrapper>,
    capacity: u64,
}

/// Opens the backend `database` names: a PostgreSQL URL (postgres://...) or a SQLite file path.
pub fn open_db(database: &str) -> Result<Box<dyn Db>> {
    if db::is_postgres(database) {
        Ok(Box::new(pg::Pg::connect(database)?))
    } else {
        Ok(Box::new(sqlite::Sqlite::open(database)?))
    }
}

/// Checks the audit hash chain of the database `database` names (a SQLite file is opened
/// read-only; the KMS may be running).
pub fn verify_audit_file(database: &str) -> Result<ChainReport> {
    if db::is_postgres(database) {
        let mut d = pg::Pg::connect(database)?;
        return verify_audit_db(&mut d);
    }
    verify_audit_db(&mut sqlite::Sqlite::open_read_only(database)?)
}

fn verify_audit_db(db: &mut dyn Db) -> Result<ChainReport> {
    let rows = db.query("SELECT seq, at_ms, stream_id, idx, event, detail, hash FROM audit ORDER BY seq", p![])?;
    let mut prev = [0u8; 32];
    let mut last_seq = 0i64;
    let mut n = 0u64;
    for r in rows {
        let mut r = r.into_iter();
        let mut next = || r.next().unwrap_or(Val::Null);
        let (seq, at) = (next().i()?, next().i()?);
        let (sid, idx) = (next().s()?, next().i()?);
        let (ev, det, h) = (next().s()?, next().s()?, next().ob()?);
        n += 1;
        if seq != last_seq + 1 {
            let why = format!("row(s) {}..{} are missing (deleted)", last_seq + 1, seq - 1);
            return Ok(ChainReport { rows: n, head: prev, broken: Some((seq, why)) });
        }
        let want = chain_hash(&prev, seq, at, &sid, idx, &ev, &det);
        match h {
            Some(h) if ct_eq(&h, &want) => {}
            Some(_) => {
                return Ok(ChainReport { rows: n, head: prev, broken: Some((seq, "content altered, or an earlier row changed (hash mismatch)".into())) })
            }
            None => return Ok(ChainReport { rows: n, head: prev, broken: Some((seq, "row has no hash".into())) }),
        }
        prev = want;
        last_seq = seq;
    }
    Ok(ChainReport { rows: n, head: prev, broken: None })
}

fn digest32(d: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if d.len() == 32 {
        out.copy_from_slice(d);
    }
    out
}

/// Appends an audit row chained to the last one (inside the caller's transaction).
fn audit_tx(db: &mut dyn Db, now_ms: i64, sid: &str, idx: i64, event: &str, detail: &str) -> Result<()> {
    let last = db.query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", p![])?;
    let (seq, prev) = match last {
        Some(mut r) => (r[0].i()? + 1, std::mem::replace(&mut r[1], Val::Null).b()?),
        None => (1, vec![0u8; 32]),
    };
    let h = chain_hash(&prev, seq, now_ms, sid, idx, event, detail);
    db.exec(
        "INSERT INTO audit(seq, at_ms, stream_id, idx, event, detail, hash) VALUES(?1,?2,?3,?4,?5,?6,?7)",
        p![seq, now_ms, sid, idx, event, detail, &h[..]],
    )?;
    Ok(())
}

/// Keys held or reserved (the `counters` row every write keeps; see `Store::on`).
fn held_count(db: &mut dyn Db) -> Result<i64> {
    db.query_one("SELECT value FROM counters WHERE name='held'", p![])?[0].i()
}

/// Cryptographic erasure of one row's ciphertext: the wrapped bytes are first overwritten in
/// place (same length, zeros), then dropped. SQLite (`secure_delete=ON`) zeroes the freed space
/// in the file; on PostgreSQL old row versions stay until VACUUM (see docs/delivery.md). The
/// digest stays (duplicate detection).
fn erase(db: &mut dyn Db, sid: &str, idx: i64, state: i64) -> Result<()> {
    // The held count (`counters`) loses the row if it was held or reserved.
    db.exec(
        "UPDATE counters SET value = value - (SELECT COUNT(*) FROM keys WHERE stream_id=?1 AND idx=?2 AND state IN (0,1)) WHERE name='held'",
        p![sid, idx],
    )?;
    db.exec(
        "UPDATE keys SET wrapped=zeroblob(length(wrapped)), nonce=zeroblob(12) WHERE stream_id=?1 AND idx=?2 AND wrapped IS NOT NULL",
        p![sid, idx],
    )?;
    db.exec("UPDATE keys SET state=?3, wrapped=NULL, nonce=NULL WHERE stream_id=?1 AND idx=?2", p![sid, idx, state])?;
    Ok(())
}

/// Unwraps one reserved key, erases its row and audits the delivery (inside the caller's
/// transaction); `wrapped` is zeroised.
#[allow(clippy::too_many_arguments)]
fn hand_out(wrapper: &mut dyn KeyWrapper, db: &mut dyn Db, sid: &str, idx: i64, nonce: &[u8], wrapped: &mut Vec<u8>, gen: i64,
    holder: &str, now_ms: i64) -> Result<secmem::SecretBuf> {
    let plain = wrapper.unwrap(gen as u32, nonce, &aad(sid, idx as u32), wrapped)?;
    wrapped.zeroize();
    erase(db, sid, idx, STATE_DELIVERED)?;
    audit_tx(db, now_ms, sid, idx, "delivered", &format!("handed out to {holder}"))?;
    audit_tx(db, now_ms, sid, idx, "destroyed", "wrapped bytes erased")?;
    Ok(plain)
}

/// Rows of `(String, u32)`: stream id and index.

/// ` INDEXED BY <index>` on SQLite, nothing on PostgreSQL (its planner has statistics). The expiry
/// queries run every second; without a hint SQLite chose `keys_state` (equality on `state`) and
/// scanned every held key twice a second: 15 ms each at 43 000 keys, growing with the store (a
/// KMS nobody takes keys from holds a day's production). The partial indexes hold only live keys.
fn indexed_by(db: &dyn Db, index: &str) -> String {
    if db.kind() == "sqlite" { format!(" INDEXED BY {index}") } else { String::new() }
}

fn sid_idx(rows: Vec<Row>) -> Result<Vec<(String, u32)>> {
    rows.into_iter()
        .map(|mut r| {
            let i = r[1].i()? as u32;
            Ok((std::mem::replace(&mut r[0], Val::Null).s()?, i))
        })
        .collect()
}

impl Store {
    /// Opens (creating if needed) the database `database` names (a SQLite path, ":memory:" for
    /// tests, or a postgres:// URL) with a development keystore: `kek` (32 bytes) is the KEK of
    /// generation 0, nothing persisted. `capacity` is the most keys held (with ciphertext) at
    /// once; beyond it `put` answers `Full`.
    pub fn open(database: &str, kek: &[u8], capacity: u64) -> Result<Store> {
        Self::open_with(database, Box::new(SoftwareKeystore::development(kek, None)?), capacity)
    }

    /// Opens the database with any `KeyWrapper` (software keystore or PKCS#11 token).
    pub fn open_with(database: &str, wrapper: Box<dyn KeyWrapper>, capacity: u64) -> Result<Store> {
        Self::on(open_db(database)?, wrapper, capacity)
    }

    /// A store on an open backend.
    pub fn on(db: Box<dyn Db>, wrapper: Box<dyn KeyWrapper>, capacity: u64) -> Result<Store> {
        let mut st = Store { db, wrapper, capacity };
        // The number of keys held or reserved, kept in `counters` by every write that changes it,
        // so a push's capacity check is one row read, not a count over the held keys (which made
        // each group commit O(keys held): ~15 % of a KMS's CPU at 40 000 keys, growing with the
        // store). Recounted at every open: a crash or an older version's writes cannot leave it stale.
        st.tx(|db, _| {
            let n = db.query_one("SELECT COUNT(*) FROM keys WHERE state IN (0,1)", p![])?[0].i()?;
            db.exec("DELETE FROM counters WHERE name='held'", p![])?;
            db.exec("INSERT INTO counters(name, value) VALUES('held', ?1)", p![n])?;
            Ok(((), true))
        })?;
        // Every row must be unwrappable by a generation the keystore still has: a keystore file
        // restored from an older backup (missing a newer KEK) is caught at start-up.
        let gens = st.db.query("SELECT DISTINCT kek_gen FROM keys WHERE wrapped IS NOT NULL", p![])?;
        let have = st.wrapper.generations();
        for g in gens {
            let g = g[0].i()?;
            if !have.contains(&(g as u32)) {
                return Err(StoreError::Custody(format!(
                    "stored keys are wrapped under KEK generation {g}, which {} does not hold (keystore restored from an older \
                     backup, or another keystore); restore the matching keystore",
                    st.wrapper.describe()
                )));
            }
        }
        Ok(st)
    }

    /// What holds the KEK (for logs).
    pub fn custody(&self) -> String {
        self.wrapper.describe()
    }

    /// Where the keys are (for logs): the SQLite file or the PostgreSQL server, no password.
    pub fn backend(&self) -> String {
        self.db.describe()
    }

    /// Runs `f` in one write transaction: committed when it returns `(value, true)`, rolled back
    /// when it returns `(value, false)` or an error.
    fn tx<T>(&mut self, f: impl FnOnce(&mut dyn Db, &mut dyn KeyWrapper) -> Result<(T, bool)>) -> Result<T> {
        self.db.begin()?;
        match f(self.db.as_mut(), self.wrapper.as_mut()) {
            Ok((v, true)) => {
                self.db.commit()?;
                Ok(v)
            }
            Ok((v, false)) => {
                self.db.rollback()?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.db.rollback();
                Err(e)
            }
        }
    }

    /// Appends an audit record (no key bytes may be passed in `detail`).
    pub fn audit(&mut self, now_ms: i64, sid: &str, idx: i64, event: &str, detail: &str) -> Result<()> {
        self.tx(|db, _| audit_tx(db, now_ms, sid, idx, event, detail).map(|_| ((), true)))
    }

    /// Stores `key` under `(sid, index)` durably (committed and fsynced when this returns).
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &mut self,
        sid: &str,
        index: u32,
        key_id: &str,
        key: &[u8],
        meta_json: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<PutOutcome> {
        let item = PutItem {
            sid: sid.to_string(),
            index,
            key_id: key_id.to_string(),
            key: secmem::SecretBuf::from_slice(key),
            meta: meta_json.to_string(),
            expires_ms,
        };
        Ok(self.put_many(std::slice::from_ref(&item), now_ms)?[0])
    }

    /// Stores several keys in ONE transaction (one fsync): group commit for concurrent pushes.
    /// Outcomes are per item, in order, as if `put` had been called for each in turn.
    pub fn put_many<K: AsRef<[u8]>>(&mut self, items: &[PutItem<K>], now_ms: i64) -> Result<Vec<PutOutcome>> {
        if items.iter().any(|i| i.key.as_ref().is_empty()) {
            return Err(StoreError::Invalid("empty key".into()));
        }
        let capacity = self.capacity;
        self.tx(|db, wrapper| {
            let mut held = held_count(db)?;
            let held_before = held;
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                let (sid, index, key) = (it.sid.as_str(), it.index, it.key.as_ref());
                let d = digest(sid, index, key);
                let existing = db.query_opt("SELECT digest FROM keys WHERE stream_id=?1 AND idx=?2", p![sid, index])?;
                let outcome = if let Some(mut old) = existing {
                    if ct_eq(&std::mem::replace(&mut old[0], Val::Null).b()?, &d) {
                        audit_tx(db, now_ms, sid, index as i64, "duplicate", "same bytes pushed again; kept one copy")?;
                        PutOutcome::Duplicate
                    } else {
                        audit_tx(db, now_ms, sid, index as i64, "conflict", "different bytes under a used index; refused")?;
                        PutOutcome::Conflict
                    }
                } else if held as u64 >= capacity {
                    PutOutcome::Full
                } else {
                    let (nonce, wrapped) = wrapper.wrap(&aad(sid, index), key)?;
                    let gen = wrapper.active();
                    db.exec(
                        "INSERT INTO keys(stream_id, idx, key_id, digest, nonce, wrapped, size, meta,
                           stored_ms, expires_ms, state, holder, kek_gen) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,0,NULL,?11)",
                        p![sid, index, &it.key_id, &d[..], &nonce[..], wrapped, key.len() as i64, &it.meta, now_ms, it.expires_ms, gen],
                    )?;
                    audit_tx(db, now_ms, sid, index as i64, "stored",
                        &format!("generated by the node and stored; size={} key_id={} kek_gen={gen} provenance={}", key.len(), it.key_id, it.meta))?;
                    held += 1;
                    PutOutcome::Stored
                };
                out.push(outcome);
            }
            if held != held_before {
                db.exec("UPDATE counters SET value = value + ?1 WHERE name='held'", p![held - held_before])?;
            }
            Ok((out, true))
        })
    }

    /// Up to `limit` held (not reserved) keys of `sid` in index order, with their digests.
    /// `descending` draws from the newest end: the two KMSs of a link draw from opposite ends so
    /// that SAEs on both sides asking at once rarely pick the same keys.
    pub fn candidates(&mut self, sid: &str, limit: u32, now_ms: i64, descending: bool) -> Result<Vec<Candidate>> {
        self.candidates_at_level(sid, limit, now_ms, descending, None)
    }

    /// `candidates` restricted to keys whose provenance states an `epsilon` (the composable
    /// security parameter of the block they came from) of at most `max_epsilon`; keys without an
    /// ε label never qualify when a level is asked for.
    pub fn candidates_at_level(&mut self, sid: &str, limit: u32, now_ms: i64, descending: bool, max_epsilon: Option<f64>) -> Result<Vec<Candidate>> {
        let rows = self.db.query(
            if descending {
                "SELECT idx, key_id, digest, meta FROM keys WHERE stream_id=?1 AND state=0 AND expires_ms>?2
                 AND (CAST(?4 AS DOUBLE PRECISION) IS NULL OR json_extract(meta, '$.epsilon') <= CAST(?4 AS DOUBLE PRECISION)) ORDER BY idx DESC LIMIT ?3"
            } else {
                "SELECT idx, key_id, digest, meta FROM keys WHERE stream_id=?1 AND state=0 AND expires_ms>?2
                 AND (CAST(?4 AS DOUBLE PRECISION) IS NULL OR json_extract(meta, '$.epsilon') <= CAST(?4 AS DOUBLE PRECISION)) ORDER BY idx LIMIT ?3"
            },
            p![sid, now_ms, limit, max_epsilon],
        )?;
        rows.into_iter()
            .map(|r| {
                let mut r = r.into_iter();
                let index = r.next().unwrap_or(Val::Null).i()? as u32;
                let key_id = r.next().unwrap_or(Val::Null).s()?;
                let digest = digest32(&r.next().unwrap_or(Val::Null).b()?);
                Ok(Candidate { index, key_id, digest, meta: r.next().unwrap_or(Val::Null).s()? })
            })
            .collect()
    }

    /// The provenance (JSON) of `(sid, index)`, if this store ever held it.
    pub fn meta_of(&mut self, sid: &str, index: u32) -> Result<Option<String>> {
        match self.db.query_opt("SELECT meta FROM keys WHERE stream_id=?1 AND idx=?2", p![sid, index])? {
            Some(mut r) => Ok(Some(std::mem::replace(&mut r[0], Val::Null).s()?)),
            None => Ok(None),
        }
    }

    /// Digest of a held key, if this store holds `(sid, index)` with its ciphertext.
    pub fn held_digest(&mut self, sid: &str, index: u32) -> Result<Option<([u8; 32], i64)>> {
        match self.db.query_opt("SELECT digest, state FROM keys WHERE stream_id=?1 AND idx=?2", p![sid, index])? {
            Some(mut r) => {
                let s = r[1].i()?;
                Ok(Some((digest32(&std::mem::replace(&mut r[0], Val::Null).b()?), s)))
            }
            None => Ok(None),
        }
    }

    /// Marks held keys as reserved for `holder` (an SAE pair), in one transaction. Returns the
    /// indices actually reserved (those held and matching `digests`); others are left alone.
    /// With `all_or_nothing`, nothing is reserved (and nothing audited) unless every item matches.
    pub fn reserve(
        &mut self,
        sid: &str,
        items: &[(u32, [u8; 32])],
        holder: &str,
        now_ms: i64,
        all_or_nothing: bool,
    ) -> Result<Vec<u32>> {
        self.tx(|db, _| {
            let mut ok = Vec::new();
            for (idx, dg) in items {
                let row = db.query_opt("SELECT digest, state FROM keys WHERE stream_id=?1 AND idx=?2 AND expires_ms>?3", p![sid, *idx, now_ms])?;
                let Some(mut row) = row else { continue };
                if row[1].i()? != STATE_HELD {
                    continue;
                }
                if ct_eq(&std::mem::replace(&mut row[0], Val::Null).b()?, dg) {
                    db.exec("UPDATE keys SET state=1, holder=?3 WHERE stream_id=?1 AND idx=?2", p![sid, *idx, holder])?;
                    audit_tx(db, now_ms, sid, *idx as i64, "confirmed", &format!("digest confirmed with the peer KMS; reserved for {holder}"))?;
                    ok.push(*idx);
                } else {
                    audit_tx(db, now_ms, sid, *idx as i64, "mismatch", "peer digest differs; not released")?;
                }
            }
            if all_or_nothing && ok.len() != items.len() {
                return Ok((Vec::new(), false)); // rolls back
            }
            Ok((ok, true))
        })
    }

    /// Returns reserved keys of `holder` to the held pool (a release that could not complete on
    /// the peer). Returns the indices released.
    pub fn unreserve(&mut self, sid: &str, indices: &[u32], holder: &str, now_ms: i64) -> Result<Vec<u32>> {
        self.tx(|db, _| {
            let mut out = Vec::new();
            for idx in indices {
                let n = db.exec(
                    "UPDATE keys SET state=0, holder=NULL WHERE stream_id=?1 AND idx=?2 AND state=1 AND holder=?3",
                    p![sid, *idx, holder],
                )?;
                if n == 1 {
                    audit_tx(db, now_ms, sid, *idx as i64, "unreserved", &format!("release for {holder} did not complete"))?;
                    out.push(*idx);
                }
            }
            Ok((out, true))
        })
    }

    /// Unwraps and erases a reserved key (by key_id) held for `holder`: the ciphertext is
    /// overwritten by NULL in the same transaction, so a key is handed out once.
    pub fn take(&mut self, key_id: &str, holder: &str, now_ms: i64) -> Result<Option<TakenKey>> {
        Ok(self.take_many(&[key_id], holder, now_ms)?.pop().flatten())
    }

    /// `take` for several key_IDs in ONE transaction (one fsync). One entry per key_ID, in order;
    /// None where the key is unknown, not reserved for `holder`, or already handed out. If any
    /// wrapped key fails to authenticate, nothing is handed out (the transaction rolls back).
    pub fn take_many(&mut self, key_ids: &[&str], holder: &str, now_ms: i64) -> Result<Vec<Option<TakenKey>>> {
        self.tx(|db, wrapper| {
            let mut out = Vec::with_capacity(key_ids.len());
            for key_id in key_ids {
                let row = db.query_opt(
                    "SELECT stream_id, idx, nonce, wrapped, kek_gen FROM keys
                     WHERE key_id=?1 AND state=1 AND holder=?2 AND wrapped IS NOT NULL",
                    p![*key_id, holder],
                )?;
                let Some(row) = row else {
                    out.push(None);
                    continue;
                };
                let (sid, idx, nonce, mut wrapped, gen) = wrapped_row(row)?;
                let plain = hand_out(wrapper, db, &sid, idx, &nonce, &mut wrapped, gen, holder, now_ms)?;
                out.push(Some(TakenKey { index: idx as u32, key_id: key_id.to_string(), key: plain }));
            }
            Ok((out, true))
        })
    }

    /// Hands out the reserved keys named by `key_ids` to `holder`, all or nothing, in ONE
    /// transaction: if any key_ID is not available to `holder`, nothing is erased and the refusals
    /// are returned instead (so a request naming one bad key_ID does not cost the pair its good
    /// keys). A row whose key_id is `id` or `id + suffix` matches (multicast copies carry the
    /// slave SAE as suffix). Two concurrent calls for one key_ID: write transactions are
    /// serialised (the store's lock; on PostgreSQL also an advisory lock across connections) and
    /// the second finds the ciphertext gone.
    pub fn take_all(&mut self, key_ids: &[&str], holder: &str, suffix: &str, now_ms: i64) -> Result<TakeAll> {
        self.tx(|db, wrapper| {
            let mut keys = Vec::with_capacity(key_ids.len());
            let mut refused = Vec::new();
            for (pos, key_id) in key_ids.iter().enumerate() {
                let alt = format!("{key_id}{suffix}");
                let row = db.query_opt(
                    "SELECT stream_id, idx, nonce, wrapped, kek_gen FROM keys
                     WHERE key_id IN (?1, ?3) AND state=1 AND holder=?2 AND wrapped IS NOT NULL AND expires_ms>?4",
                    p![*key_id, holder, &alt, now_ms],
                )?;
                let Some(row) = row else {
                    // Reserved for another pair (or a copy for another slave): the caller is not
                    // entitled (401); anything else is unknown or gone (400).
                    // A copy this holder had (already handed out or expired) is "gone", not foreign.
                    let own = db.query_one("SELECT COUNT(*) FROM keys WHERE key_id IN (?1, ?3) AND holder=?2", p![*key_id, holder, &alt])?[0].i()?;
                    let foreign = if own > 0 {
                        0
                    } else {
                        db.query_one(
                            "SELECT COUNT(*) FROM keys WHERE (key_id=?1 OR substr(key_id, 1, length(?1) + 1)=?1 || '#') AND state=1",
                            p![*key_id],
                        )?[0]
                            .i()?
                    };
                    refused.push((pos as u32, if foreign > 0 { TAKE_FOREIGN } else { TAKE_UNKNOWN }));
                    continue;
                };
                let (sid, idx, nonce, mut wrapped, gen) = wrapped_row(row)?;
                if !refused.is_empty() {
                    wrapped.zeroize();
                    continue;
                }
                let plain = hand_out(wrapper, db, &sid, idx, &nonce, &mut wrapped, gen, holder, now_ms)?;
                keys.push(TakenKey { index: idx as u32, key_id: key_id.to_string(), key: plain });
            }
            if !refused.is_empty() {
                // rolls back: every key stays reserved
                return Ok((TakeAll { keys: Vec::new(), refused }, false));
            }
            Ok((TakeAll { keys, refused }, true))
        })
    }

    /// Reformats stored key material to the requested sizes, in ONE transaction: the chunks
    /// `items` of `sid` (held with the given digests, or reserved for `from_holder`) are unwrapped
    /// and concatenated in the given order; output key j is the next `sizes[j]` bytes of that
    /// string (no byte used twice; a remainder is discarded). Each output `(key_id, holder, j)`
    /// becomes a new row of the pseudo stream `<sid>/r`, wrapped like any key and reserved for
    /// `holder` (a key for several slaves is several rows); the chunks are erased. Returns false
    /// (nothing changed) unless every chunk is available.
    #[allow(clippy::too_many_arguments)]
    pub fn reformat(
        &mut self,
        sid: &str,
        items: &[(u32, [u8; 32])],
        from_holder: Option<&str>,
        sizes: &[u32],
        outputs: &[(String, String, u32)],
        meta: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let need: u64 = sizes.iter().map(|s| *s as u64).sum();
        if sizes.iter().any(|s| *s == 0) || outputs.iter().any(|o| o.2 as usize >= sizes.len()) {
            return Err(StoreError::Invalid("reformat: empty size or output naming no key".into()));
        }
        self.tx(|db, wrapper| {
            // Each chunk's plaintext stays in its own protected buffer; they are joined once the
            // total is known (a growing Vec would leave unzeroised copies behind at every reallocation).
            let mut plains: Vec<secmem::SecretBuf> = Vec::with_capacity(items.len());
            let mut expires = i64::MAX;
            for (idx, dg) in items {
                let row = db.query_opt(
                    "SELECT digest, state, holder, nonce, wrapped, kek_gen, expires_ms FROM keys
                     WHERE stream_id=?1 AND idx=?2 AND expires_ms>?3",
                    p![sid, *idx, now_ms],
                )?;
                let Some(row) = row else { return Ok((false, false)) };
                let mut r = row.into_iter();
                let mut next = || r.next().unwrap_or(Val::Null);
                let (d, state, holder) = (next().b()?, next().i()?, next().os()?);
                let (nonce, wrapped, gen, exp) = (next().ob()?, next().ob()?, next().i()?, next().i()?);
                let (Some(nonce), Some(mut wrapped)) = (nonce, wrapped) else { return Ok((false, false)) };
                let ok = match from_holder {
                    Some(h) => state == STATE_RESERVED && holder.as_deref() == Some(h),
                    None => state == STATE_HELD,
                };
                if !ok || !ct_eq(&d, dg) {
                    wrapped.zeroize();
                    return Ok((false, false));
                }
                let plain = wrapper.unwrap(gen as u32, &nonce, &aad(sid, *idx), &wrapped)?;
                wrapped.zeroize();
                plains.push(plain);
                expires = expires.min(exp);
            }
            let mut material = secmem::SecretBuf::zeroed(plains.iter().map(|p| p.len()).sum());
            let mut at = 0usize;
            for p in plains.drain(..) {
                material[at..at + p.len()].copy_from_slice(&p);
                at += p.len();
            }
            if need > material.len() as u64 {
                return Err(StoreError::Invalid(format!("reformat: {need} bytes asked from {} bytes of chunks", material.len())));
            }
            let rsid = format!("{sid}/r");
            let mut next = db.query_one("SELECT COALESCE(MAX(idx), -1) + 1 FROM keys WHERE stream_id=?1", p![&rsid])?[0].i()?;
            let mut offs = Vec::with_capacity(sizes.len());
            let mut o = 0usize;
            for s in sizes {
                offs.push(o);
                o += *s as usize;
            }
            for (key_id, holder, j) in outputs {
                let (off, len) = (offs[*j as usize], sizes[*j as usize] as usize);
                let key = &material[off..off + len];
                let index = next as u32;
                let d = digest(&rsid, index, key);
                let (nonce, wrapped) = wrapper.wrap(&aad(&rsid, index), key)?;
                db.exec(
                    "INSERT INTO keys(stream_id, idx, key_id, digest, nonce, wrapped, size, meta,
                       stored_ms, expires_ms, state, holder, kek_gen) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,1,?11,?12)",
                    p![&rsid, next, key_id, &d[..], &nonce[..], wrapped, len as i64, meta, now_ms, expires, holder, wrapper.active()],
                )?;
                audit_tx(db, now_ms, &rsid, next, "reformatted",
                    &format!("key_id={key_id} size={len} from {sid} bytes {off}..{} of the chunks; reserved for {holder}", off + len))?;
                next += 1;
            }
            db.exec("UPDATE counters SET value = value + ?1 WHERE name='held'", p![outputs.len() as i64])?;
            for (idx, _) in items {
                erase(db, sid, *idx as i64, STATE_DELIVERED)?;
                audit_tx(db, now_ms, sid, *idx as i64, "reformatted", &format!("consumed into {} key(s) of {rsid}", sizes.len()))?;
                audit_tx(db, now_ms, sid, *idx as i64, "destroyed", "wrapped bytes erased")?;
            }
            Ok((true, true))
        })
    }

    /// Index ranges `[first, last]` of the held (unreserved, unexpired) keys of `sid`, ascending:
    /// what this KMS could still confirm with its peer (ETSI 014 counts deliverable keys only).
    pub fn held_ranges(&mut self, sid: &str, now_ms: i64, max_epsilon: Option<f64>) -> Result<Vec<(u32, u32)>> {
        let rows = self.db.query(
            "SELECT idx FROM keys WHERE stream_id=?1 AND state=0 AND expires_ms>?2
             AND (CAST(?3 AS DOUBLE PRECISION) IS NULL OR json_extract(meta, '$.epsilon') <= CAST(?3 AS DOUBLE PRECISION)) ORDER BY idx",
            p![sid, now_ms, max_epsilon],
        )?;
        let mut out: Vec<(u32, u32)> = Vec::new();
        for r in rows {
            let i = r[0].i()? as u32;
            match out.last_mut() {
                Some(last) if last.1.checked_add(1) == Some(i) => last.1 = i,
                _ => out.push((i, i)),
            }
        }
        Ok(out)
    }

    /// Erases every key whose `expires_ms <= now_ms`. Returns `(stream_id, index)` of each.
    pub fn expire(&mut self, now_ms: i64) -> Result<Vec<(String, u32)>> {
        self.tx(|db, _| {
            let sql = format!(
                "SELECT stream_id, idx FROM keys{} WHERE state IN (0,1) AND expires_ms<=?1 ORDER BY stream_id, idx",
                indexed_by(db, "keys_live_expiry")
            );
            let gone = sid_idx(db.query(&sql, p![now_ms])?)?;
            for (sid, idx) in &gone {
                erase(db, sid, *idx as i64, STATE_EXPIRED)?;
                audit_tx(db, now_ms, sid, *idx as i64, "expired", "TTL reached")?;
                audit_tx(db, now_ms, sid, *idx as i64, "destroyed", "wrapped bytes erased")?;
            }
            Ok((gone, true))
        })
    }

    /// Keys (held or reserved) whose TTL ends within `horizon_ms` of `now_ms` and that were not
    /// reported before; marks them reported (one warning per key).
    pub fn expiring(&mut self, now_ms: i64, horizon_ms: i64) -> Result<Vec<Expiring>> {
        self.tx(|db, _| {
            let sql = format!(
                "SELECT stream_id, idx, expires_ms FROM keys{} WHERE state IN (0,1) AND warned=0 AND expires_ms>?1
                 AND expires_ms<=?2 ORDER BY stream_id, idx",
                indexed_by(db, "keys_unwarned_expiry")
            );
            let rows = db.query(&sql, p![now_ms, now_ms.saturating_add(horizon_ms)])?;
            let mut v = Vec::with_capacity(rows.len());
            for mut r in rows {
                let (index, expires_ms) = (r[1].i()? as u32, r[2].i()?);
                v.push(Expiring { key_stream_id: std::mem::replace(&mut r[0], Val::Null).s()?, index, expires_ms });
            }
            for e in &v {
                db.exec("UPDATE keys SET warned=1 WHERE stream_id=?1 AND idx=?2", p![&e.key_stream_id, e.index])?;
            }
            Ok((v, true))
        })
    }

    /// KEK generation new keys are wrapped under, and every generation still loaded.
    pub fn kek_generations(&self) -> (u32, Vec<u32>) {
        (self.wrapper.active(), self.wrapper.generations())
    }

    /// Starts a KEK rotation: a new generation becomes active (persisted first), unless a
    /// previous rotation is unfinished (more than one generation loaded, or keys under an older
    /// one), which is then resumed. Returns (active generation, keys still to re-wrap, resumed).
    pub fn begin_rotation(&mut self, now_ms: i64) -> Result<(u32, u64, bool)> {
        let pending = self.rotation_pending()?;
        let resumed = self.wrapper.generations().len() > 1 || pending > 0;
        if !resumed {
            let g = self.wrapper.new_generation()?;
            let d = format!("new KEK generation {g}; {}", self.wrapper.describe());
            self.audit(now_ms, "*", -1, "kek-rotation-started", &d)?;
        } else {
            let d = format!("active KEK generation {}", self.wrapper.active());
            self.audit(now_ms, "*", -1, "kek-rotation-resumed", &d)?;
        }
        Ok((self.wrapper.active(), self.rotation_pending()?, resumed))
    }

    fn rotation_pending(&mut self) -> Result<u64> {
        let active = self.wrapper.active();
        Ok(self.db.query_one("SELECT COUNT(*) FROM keys WHERE wrapped IS NOT NULL AND kek_gen<>?1", p![active])?[0].i()? as u64)
    }

    /// Re-wraps up to `batch` keys still under an older KEK in one transaction; returns how many
    /// remain. Callers run it in a loop, releasing the store between batches so requests go on.
    pub fn rotate_step(&mut self, batch: u32) -> Result<u64> {
        let active = self.wrapper.active();
        self.tx(|db, wrapper| {
            let rows = db.query(
                "SELECT stream_id, idx, nonce, wrapped, kek_gen FROM keys WHERE wrapped IS NOT NULL AND kek_gen<>?1 LIMIT ?2",
                p![active, batch],
            )?;
            for row in rows {
                let (sid, idx, nonce, wrapped, gen) = wrapped_row(row)?;
                let (n, w) = wrapper.rewrap(gen as u32, &nonce, &aad(&sid, idx as u32), &wrapped)?;
                db.exec("UPDATE keys SET nonce=?3, wrapped=?4, kek_gen=?5 WHERE stream_id=?1 AND idx=?2", p![&sid, idx, &n[..], w, active])?;
            }
            Ok(((), true))
        })?;
        self.rotation_pending()
    }

    /// Ends a rotation once no key uses an older KEK: every older generation is destroyed (its
    /// sealed copy removed from the keystore file, or its token object deleted). Returns them.
    pub fn finish_rotation(&mut self, now_ms: i64, rewrapped: u64) -> Result<Vec<u32>> {
        if self.rotation_pending()? > 0 {
            return Err(StoreError::Invalid("keys are still wrapped under an older KEK; run rotate_step until none remain".into()));
        }
        let active = self.wrapper.active();
        let old: Vec<u32> = self.wrapper.generations().into_iter().filter(|g| *g != active).collect();
        for g in &old {
            self.wrapper.retire(*g)?;
        }
        self.audit(now_ms, "*", -1, "kek-rotated",
            &format!("{rewrapped} key(s) re-wrapped under KEK generation {active}; generation(s) {old:?} destroyed"))?;
        self.checkpoint()?;
        Ok(old)
    }

    /// Replaces the master key after a share was lost or exposed: a new master key, split into
    /// `n` new share files in `out_dir` (any `k` reconstruct it), and the keystore re-sealed under
    /// it. The old shares reconstruct a key this keystore no longer accepts. Follow with a KEK
    /// rotation, so that an old copy of the keystore file opened with old shares wraps nothing.
    pub fn reshare(&mut self, n: u8, k: u8, out_dir: &std::path::Path, kms_id: &str, now_ms: i64) -> Result<Vec<std::path::PathBuf>> {
        if k < 2 || k > n {
            return Err(StoreError::Invalid(format!("need 2 <= threshold <= shares <= 255, got threshold {k} of {n}")));
        }
        let mk: Zeroizing<[u8; 32]> = Zeroizing::new(keystore::random()?);
        let set_id: [u8; 8] = keystore::random()?;
        // Shares first: if the keystore cannot be re-sealed, the old shares still work and the
        // new files are removed.
        let files = keystore::write_shares(&mk, &set_id, n, k, out_dir, kms_id)?;
        if let Err(e) = self.wrapper.reseal(&mk, set_id, k, n) {
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
            return Err(e);
        }
        self.audit(now_ms, "*", -1, "master-key-reshared",
            &format!("new master key, {k} of {n} shares (set {}); previous shares revoked", set_id.iter().map(|b| format!("{b:02x}")).collect::<String>()))?;
        Ok(files)
    }

    /// SQLite: checkpoints the WAL into the database file and truncates it (erased ciphertexts'
    /// old page images leave the WAL). PostgreSQL: nothing (see docs/delivery.md on VACUUM).
    pub fn checkpoint(&mut self) -> Result<()> {
        self.db.checkpoint()
    }

    /// Verifies the audit hash chain (see `verify_audit_file`).
    pub fn verify_audit(&mut self) -> Result<ChainReport> {
        verify_audit_db(self.db.as_mut())
    }

    /// The wrapped bytes of a key (tests: show they are gone from the files after erasure).
    pub fn wrapped_of(&mut self, key_id: &str) -> Result<Option<Vec<u8>>> {
        match self.db.query_opt("SELECT wrapped FROM keys WHERE key_id=?1", p![key_id])? {
            Some(mut r) => std::mem::replace(&mut r[0], Val::Null).ob(),
            None => Ok(None),
        }
    }

    pub fn counts(&mut self, sid: Option<&str>) -> Result<Counts> {
        let mut c = Counts::default();
        let rows = self.db.query("SELECT state, COUNT(*) FROM keys WHERE (CAST(?1 AS TEXT) IS NULL OR stream_id=?1) GROUP BY state", p![sid])?;
        for r in rows {
            let n = r[1].i()? as u64;
            match r[0].i()? {
                STATE_HELD => c.held = n,
                STATE_RESERVED => c.reserved = n,
                STATE_DELIVERED => c.delivered = n,
                STATE_EXPIRED => c.expired = n,
                _ => {}
            }
        }
        Ok(c)
    }

    pub fn audit_trail(&mut self, sid: &str, idx: Option<u32>) -> Result<Vec<AuditRow>> {
        let rows = self.db.query(
            "SELECT seq, at_ms, stream_id, idx, event, detail FROM audit
             WHERE stream_id=?1 AND (CAST(?2 AS BIGINT) IS NULL OR idx=?2) ORDER BY seq",
            p![sid, idx],
        )?;
        rows.into_iter()
            .map(|r| {
                let mut r = r.into_iter();
                let mut next = || r.next().unwrap_or(Val::Null);
                Ok(AuditRow {
                    seq: next().i()?,
                    at_ms: next().i()?,
                    key_stream_id: next().s()?,
                    index: next().i()?,
                    event: next().s()?,
                    detail: next().s()?,
                })
            })
            .collect()
    }

    /// Runs raw SQL (tests use it to show the audit trail refuses updates).
    pub fn exec_raw(&mut self, sql: &str) -> Result<()> {
        self.db.batch(sql)
    }
}

/// `(stream_id, idx, nonce, wrapped, kek_gen)` of a row holding a wrapped key.
fn wrapped_row(row: Row) -> Result<(String, i64, Vec<u8>, Vec<u8>, i64)> {
    let mut r = row.into_iter();
    let mut next = || r.next().unwrap_or(Val::Null);
    Ok((next().s()?, next().i()?, next().b()?, next().b()?, next().i()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{params, Connection};

    fn kek() -> [u8; 32] {
        [7u8; 32]
    }

    #[test]
    fn put_duplicate_conflict_full() {
        let mut s = Store::open(":memory:", &kek(), 2).unwrap();
        assert_eq!(s.put("s", 0, "k0", &[1, 2, 3], "{}", 0, 100).unwrap(), PutOutcome::Stored);
        assert_eq!(s.put("s", 0, "k0", &[1, 2, 3], "{}", 1, 100).unwrap(), PutOutcome::Duplicate);
        assert_eq!(s.put("s", 0, "k0", &[1, 2, 4], "{}", 1, 100).unwrap(), PutOutcome::Conflict);
        assert_eq!(s.put("s", 1, "k1", &[9], "{}", 1, 100).unwrap(), PutOutcome::Stored);
        assert_eq!(s.put("s", 2, "k2", &[9], "{}", 1, 100).unwrap(), PutOutcome::Full);
        assert_eq!(s.counts(None).unwrap().held, 2);
    }

    #[test]
    fn put_many_is_put_in_sequence() {
        let mut a = Store::open(":memory:", &kek(), 3).unwrap();
        let mut b = Store::open(":memory:", &kek(), 3).unwrap();
        let mk = |i: u32, k: u8| PutItem {
            sid: "s".into(),
            index: i,
            key_id: format!("k{i}"),
            key: secmem::SecretBuf::from_slice(&[k; 4]),
            meta: "{}".into(),
            expires_ms: 100,
        };
        let items = vec![mk(0, 1), mk(1, 2), mk(0, 1), mk(0, 9), mk(2, 3), mk(3, 4)];
        let many = a.put_many(&items, 0).unwrap();
        let one: Vec<_> = items.iter().map(|i| b.put(&i.sid, i.index, &i.key_id, &i.key, "{}", 0, 100).unwrap()).collect();
        assert_eq!(many, one);
        use PutOutcome::*;
        assert_eq!(many, vec![Stored, Stored, Duplicate, Conflict, Stored, Full]);
    }

    #[test]
    fn put_many_of_shared_slices_is_put_many_of_own_buffers() {
        let mut a = Store::open(":memory:", &kek(), 10).unwrap();
        let mut b = Store::open(":memory:", &kek(), 10).unwrap();
        let keys: Vec<u8> = (1..=24u8).collect();
        let slices = secmem::SecretSlice::split(secmem::SecretBuf::from_slice(&keys), &[4, 8, 4, 8]).unwrap();
        let idx = [0u32, 1, 0, 2];
        fn mk<K: AsRef<[u8]>>(index: u32, key: K) -> PutItem<K> {
            PutItem { sid: "s".into(), index, key_id: format!("k{index}"), key, meta: "{}".into(), expires_ms: 100 }
        }
        let own: Vec<_> = slices.iter().enumerate().map(|(i, k)| mk(idx[i], secmem::SecretBuf::from_slice(k))).collect();
        let shared: Vec<_> = slices.into_iter().enumerate().map(|(i, k)| mk(idx[i], k)).collect();
        assert_eq!(a.put_many(&shared, 0).unwrap(), b.put_many(&own, 0).unwrap());
        let ca = a.candidates("s", 10, 0, false).unwrap();
        let cb = b.candidates("s", 10, 0, false).unwrap();
        assert_eq!(ca.iter().map(|c| (c.index, c.digest)).collect::<Vec<_>>(),
            cb.iter().map(|c| (c.index, c.digest)).collect::<Vec<_>>());
        assert_eq!(ca[2].digest, digest("s", 2, &keys[16..24]));
    }

    #[test]
    fn take_all_is_all_or_nothing_and_names_foreign_keys() {
        let mut s = Store::open(":memory:", &kek(), 10).unwrap();
        for i in 0..3u32 {
            s.put("s", i, &format!("k{i}"), &[i as u8 + 1; 4], "{}", 0, 1000).unwrap();
        }
        let c = s.candidates("s", 3, 0, false).unwrap();
        s.reserve("s", &[(0, c[0].digest), (1, c[1].digest)], "a>b", 1, true).unwrap();
        s.reserve("s", &[(2, c[2].digest)], "a>x", 1, true).unwrap();
        // one unknown key_ID: nothing taken, both good keys kept
        let r = s.take_all(&["k0", "nope", "k1"], "a>b", "#b", 2).unwrap();
        assert!(r.keys.is_empty());
        assert_eq!(r.refused, vec![(1, TAKE_UNKNOWN)]);
        // a key reserved for another pair: foreign
        let r = s.take_all(&["k2"], "a>b", "#b", 2).unwrap();
        assert_eq!(r.refused, vec![(0, TAKE_FOREIGN)]);
        let r = s.take_all(&["k0", "k1"], "a>b", "#b", 2).unwrap();
        assert!(r.refused.is_empty());
        assert_eq!(r.keys.iter().map(|k| k.key[0]).collect::<Vec<_>>(), vec![1, 2]);
        // handed out once
        assert_eq!(s.take_all(&["k0"], "a>b", "#b", 3).unwrap().refused, vec![(0, TAKE_UNKNOWN)]);
    }

    /// The kept held count equals a count over the rows.
    fn assert_held_count(st: &mut Store) {
        let kept = held_count(st.db.as_mut()).unwrap();
        let c = st.counts(None).unwrap();
        assert_eq!(kept as u64, c.held + c.reserved, "the held counter against a count of the rows");
    }

    #[test]
    fn held_counter_follows_every_write_and_enforces_capacity() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut st = Store::open(":memory:", &kek(), 40).unwrap();
        let mut idx = 0u32;
        for step in 0..400i64 {
            match next() % 6 {
                0 | 1 => {
                    let n = 1 + (next() % 5) as u32;
                    for _ in 0..n {
                        let _ = st.put("s", idx, &format!("k{idx}"), &[idx as u8; 8], "{}", step, step + 50 + (next() % 100) as i64).unwrap();
                        idx += 1;
                    }
                }
                2 => {
                    let c = st.candidates("s", 3, step, false).unwrap();
                    let items: Vec<(u32, [u8; 32])> = c.iter().map(|x| (x.index, x.digest)).collect();
                    st.reserve("s", &items, "a>b", step, false).unwrap();
                }
                3 => {
                    let c = st.candidates("s", 2, step, true).unwrap();
                    if !c.is_empty() {
                        let items: Vec<(u32, [u8; 32])> = c.iter().map(|x| (x.index, x.digest)).collect();
                        st.reformat("s", &items, None, &[4], &[(format!("r{step}"), "a>b".into(), 0)], "{}", step).unwrap();
                    }
                }
                4 => {
                    let _ = st.take(&format!("r{}", next() % 400), "a>b", step).unwrap();
                }
                _ => {
                    st.expire(step).unwrap();
                }
            }
            assert_held_count(&mut st);
        }
        // Capacity: full at 40 held or reserved, whatever the path that filled it.
        let c = st.counts(None).unwrap();
        let room = 40 - (c.held + c.reserved) as i64;
        let mut stored = 0;
        for k in 0..(room + 3) {
            if st.put("t", k as u32, &format!("t{k}"), &[1; 8], "{}", 1000, 10_000).unwrap() == PutOutcome::Stored {
                stored += 1;
            }
        }
        assert_eq!(stored, room);
        // Reopening recounts (the counter row is rebuilt from the rows).
        st.exec_raw("UPDATE counters SET value = 12345 WHERE name='held'").unwrap();
        let db = std::mem::replace(&mut st.db, open_db(":memory:").unwrap());
        let mut st = Store::on(db, Box::new(SoftwareKeystore::development(&kek(), None).unwrap()), 40).unwrap();
        assert_held_count(&mut st);
    }

    #[test]
    fn reformat_splits_and_merges_without_reusing_a_byte() {
        // Two stores with the same chunks reformat alike (as the two KMSs do).
        let chunk = |i: u32| (0..8u8).map(|b| i as u8 * 16 + b).collect::<Vec<u8>>();
        let mut a = Store::open(":memory:", &kek(), 100).unwrap();
        for i in 0..4u32 {
            a.put("s", i, &format!("k{i}"), &chunk(i), r#"{"epsilon":1e-10}"#, 0, 1000 + i as i64).unwrap();
        }
        let c = a.candidates("s", 4, 0, false).unwrap();
        // chunks 2, 0, 1 in that order: 24 bytes -> keys of 4, 12 and 6 bytes (2 discarded)
        let items = [(2, c[2].digest), (0, c[0].digest), (1, c[1].digest)];
        let outs = vec![("x0".to_string(), "a>b".to_string(), 0), ("x1".into(), "a>b".into(), 1),
            ("x2#b".into(), "a>b".into(), 2), ("x2#c".into(), "a>c".into(), 2)];
        // a wrong digest changes nothing
        let bad = [(2, c[2].digest), (0, [0u8; 32])];
        assert!(!a.reformat("s", &bad, None, &[4], &outs[..1], "{}", 1).unwrap());
        assert_eq!(a.counts(Some("s")).unwrap().held, 4);
        assert!(a.reformat("s", &items, None, &[4, 12, 6], &outs, "{}", 1).unwrap());
        // the chunks are gone (and cannot be reformatted again), chunk 3 is untouched
        assert!(!a.reformat("s", &items, None, &[4], &outs[..1], "{}", 2).unwrap());
        assert_eq!(a.counts(Some("s")).unwrap().held, 1);
        assert_eq!(a.counts(Some("s")).unwrap().delivered, 3);
        let cat: Vec<u8> = [chunk(2), chunk(0), chunk(1)].concat();
        let r = a.take_all(&["x0", "x1", "x2"], "a>b", "#b", 3).unwrap();
        assert!(r.refused.is_empty());
        assert_eq!(&r.keys[0].key[..], &cat[0..4]);
        assert_eq!(&r.keys[1].key[..], &cat[4..16]);
        assert_eq!(&r.keys[2].key[..], &cat[16..22]);
        // the multicast copy for the other slave is still there, for it only
        assert_eq!(a.take_all(&["x2"], "a>b", "#b", 3).unwrap().refused, vec![(0, TAKE_UNKNOWN)]);
        let r = a.take_all(&["x2"], "a>c", "#c", 3).unwrap();
        assert_eq!(&r.keys[0].key[..], &cat[16..22]);
        // reformatted keys expire with their earliest chunk
        a.put("s", 9, "k9", &chunk(9), "{}", 0, 1000).unwrap();
        let c9 = a.candidates("s", 1, 0, true).unwrap();
        assert!(a.reformat("s", &[(9, c9[0].digest)], None, &[8], &[("y".into(), "a>b".into(), 0)], "{}", 4).unwrap());
        assert_eq!(a.expire(1000).unwrap().iter().filter(|(s, _)| s == "s/r").count(), 1);
        assert!(a.verify_audit().unwrap().broken.is_none());
    }

    #[test]
    fn reformat_from_a_reservation_and_security_levels() {
        let mut a = Store::open(":memory:", &kek(), 100).unwrap();
        a.put("s", 0, "k0", &[1; 8], r#"{"epsilon":1e-12}"#, 0, 1000).unwrap();
        a.put("s", 1, "k1", &[2; 8], r#"{"epsilon":1e-6}"#, 0, 1000).unwrap();
        a.put("s", 2, "k2", &[3; 8], "{}", 0, 1000).unwrap();
        a.put("s", 4, "k4", &[3; 8], "{}", 0, 1000).unwrap();
        // an unlabelled key never meets a requested level
        assert_eq!(a.candidates_at_level("s", 9, 0, false, Some(1e-9)).unwrap().iter().map(|c| c.index).collect::<Vec<_>>(), vec![0]);
        assert_eq!(a.candidates_at_level("s", 9, 0, false, Some(1e-5)).unwrap().len(), 2);
        assert_eq!(a.held_ranges("s", 0, None).unwrap(), vec![(0, 2), (4, 4)]);
        assert_eq!(a.held_ranges("s", 0, Some(1e-5)).unwrap(), vec![(0, 1)]);
        let c = a.candidates("s", 1, 0, false).unwrap();
        a.reserve("s", &[(0, c[0].digest)], "a>b", 1, true).unwrap();
        // held-only reformat refuses a reserved chunk; the reservation's holder may reformat it
        assert!(!a.reformat("s", &[(0, c[0].digest)], None, &[4], &[("z".into(), "a>b".into(), 0)], "{}", 2).unwrap());
        assert!(!a.reformat("s", &[(0, c[0].digest)], Some("a>x"), &[4], &[("z".into(), "a>b".into(), 0)], "{}", 2).unwrap());
        assert!(a.reformat("s", &[(0, c[0].digest)], Some("a>b"), &[4], &[("z".into(), "a>b".into(), 0)], "{}", 2).unwrap());
        assert_eq!(&a.take_all(&["z"], "a>b", "#b", 3).unwrap().keys[0].key[..], &[1; 4]);
        // asking for more bytes than the chunks hold is a caller error
        let c1 = a.candidates("s", 1, 0, false).unwrap();
        assert!(a.reformat("s", &[(1, c1[0].digest)], None, &[9], &[("w".into(), "a>b".into(), 0)], "{}", 2).is_err());
    }

    #[test]
    fn expiry_queries_match_a_scan_and_use_the_live_key_indexes() {
        // Random expiries, a third of the keys taken (no longer live): expire and expiring return
        // exactly what a filter over every key says, through the partial indexes (INDEXED BY
        // fails the query if SQLite cannot use them).
        let dir = std::env::temp_dir().join(format!("qkd-expiry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.db");
        let _ = std::fs::remove_file(&path);
        let mut s = Store::open(path.to_str().unwrap(), &kek(), 10_000).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut live = std::collections::BTreeMap::new();
        for i in 0..600u32 {
            let exp = 100 + rnd(10_000) as i64;
            s.put("s", i, &format!("k{i}"), &[i as u8; 8], "{}", 0, exp).unwrap();
            live.insert(i, exp);
        }
        for c in s.candidates("s", 600, 0, false).unwrap() {
            if c.index % 3 == 0 {
                assert_eq!(s.reserve("s", &[(c.index, c.digest)], "a>b", 1, true).unwrap(), vec![c.index]);
                assert!(s.take(&format!("k{}", c.index), "a>b", 1).unwrap().is_some());
                live.remove(&c.index);
            }
        }
        let soon: Vec<u32> = live.iter().filter(|(_, &e)| e > 2_000 && e <= 2_500).map(|(&i, _)| i).collect();
        let warned: Vec<u32> = s.expiring(2_000, 500).unwrap().iter().map(|e| e.index).collect();
        assert_eq!(warned, soon);
        assert!(s.expiring(2_000, 500).unwrap().is_empty(), "each key is warned about once");
        let due: Vec<u32> = live.iter().filter(|(_, &e)| e <= 3_000).map(|(&i, _)| i).collect();
        let gone: Vec<u32> = s.expire(3_000).unwrap().into_iter().map(|(_, i)| i).collect();
        assert_eq!(gone, due);
        assert!(s.expire(3_000).unwrap().is_empty());
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reserve_take_once_and_expire() {
        let mut s = Store::open(":memory:", &kek(), 10).unwrap();
        s.put("s", 5, "k5", b"abcdef", "{}", 0, 1000).unwrap();
        s.put("s", 6, "k6", b"ghijkl", "{}", 0, 50).unwrap();
        let c = s.candidates("s", 10, 0, false).unwrap();
        assert_eq!(s.candidates("s", 1, 0, true).unwrap()[0].index, 6);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].digest, digest("s", 5, b"abcdef"));
        // a wrong digest does not reserve
        assert!(s.reserve("s", &[(5, [0u8; 32])], "a>b", 1, false).unwrap().is_empty());
        assert!(s.reserve("s", &[(5, c[0].digest), (99, [0u8; 32])], "a>b", 1, true).unwrap().is_empty());
        assert_eq!(s.reserve("s", &[(5, c[0].digest)], "a>b", 1, true).unwrap(), vec![5]);
        assert!(s.take("k5", "x>y", 2).unwrap().is_none());
        assert!(s.unreserve("s", &[5], "x>y", 2).unwrap().is_empty());
        assert_eq!(s.unreserve("s", &[5], "a>b", 2).unwrap(), vec![5]);
        assert_eq!(s.reserve("s", &[(5, c[0].digest)], "a>b", 2, true).unwrap(), vec![5]);
        let k = s.take("k5", "a>b", 2).unwrap().unwrap();
        assert_eq!(&k.key[..], b"abcdef");
        // Unwrapped straight into protected memory (secmem's own tests check the pages).
        assert!(k.key.is_locked(), "a taken key is not in mlock'd pages");
        assert!(s.take("k5", "a>b", 3).unwrap().is_none());
        // still a duplicate / conflict after erasure
        assert_eq!(s.put("s", 5, "k5", b"abcdef", "{}", 4, 1000).unwrap(), PutOutcome::Duplicate);
        assert_eq!(s.put("s", 5, "k5", b"abcdeX", "{}", 4, 1000).unwrap(), PutOutcome::Conflict);
        let gone = s.expire(60).unwrap();
        assert_eq!(gone, vec![("s".to_string(), 6)]);
        let cnt = s.counts(Some("s")).unwrap();
        assert_eq!((cnt.held, cnt.delivered, cnt.expired), (0, 1, 1));
        assert!(s.exec_raw("DELETE FROM audit").is_err());
        assert!(s.exec_raw("UPDATE audit SET event='x'").is_err());
        assert!(s.audit_trail("s", Some(5)).unwrap().iter().any(|r| r.event == "delivered"));
    }

    #[test]
    fn wrapped_at_rest_and_wrong_kek_fails() {
        let dir = std::env::temp_dir().join(format!("qkd-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k.db");
        let path = p.to_str().unwrap();
        let canary = b"CANARY-KEY-BYTES-0123456789abcdef";
        {
            let mut s = Store::open(path, &kek(), 10).unwrap();
            s.put("s", 1, "k1", canary, "{}", 0, 1000).unwrap();
            let c = s.candidates("s", 1, 0, false).unwrap();
            s.reserve("s", &[(1, c[0].digest)], "h", 0, false).unwrap();
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            assert!(!bytes.windows(canary.len()).any(|w| w == canary));
        }
        let mut s = Store::open(path, &[8u8; 32], 10).unwrap();
        assert!(matches!(s.take("k1", "h", 1), Err(StoreError::Crypto(_))));
        drop(s);
        let mut s = Store::open(path, &kek(), 10).unwrap();
        assert_eq!(&s.take("k1", "h", 1).unwrap().unwrap().key[..], canary);
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("qkd-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().any(|f| {
            let b = std::fs::read(f.unwrap().path()).unwrap_or_default();
            b.windows(needle.len()).any(|w| w == needle)
        })
    }

    #[test]
    fn audit_chain_detects_tampering_and_names_the_row() {
        let d = tmpdir("chain");
        let p = d.join("a.db");
        let path = p.to_str().unwrap();
        {
            let mut s = Store::open(path, &kek(), 100).unwrap();
            for i in 0..5u32 {
                s.put("s", i, &format!("k{i}"), &[i as u8 + 1; 8], "{}", i as i64, 1000).unwrap();
            }
            let r = s.verify_audit().unwrap();
            assert_eq!((r.rows, r.broken.is_none()), (5, true));
        }
        assert!(verify_audit_file(path).unwrap().broken.is_none());
        // an insider with the database: lift the trigger, change row 3's detail
        let c = Connection::open(path).unwrap();
        c.execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET detail='nothing to see' WHERE seq=3;").unwrap();
        let r = verify_audit_file(path).unwrap();
        assert_eq!(r.broken.as_ref().map(|b| b.0), Some(3), "first broken row named");
        // recomputing row 3's own hash moves the break to row 4 (the chain links rows)
        let (at, sid, idx, ev, det): (i64, String, i64, String, String) = c
            .query_row("SELECT at_ms, stream_id, idx, event, detail FROM audit WHERE seq=3", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap();
        let prev: Vec<u8> = c.query_row("SELECT hash FROM audit WHERE seq=2", [], |r| r.get(0)).unwrap();
        let h = chain_hash(&prev, 3, at, &sid, idx, &ev, &det);
        c.execute("UPDATE audit SET hash=?1 WHERE seq=3", params![&h[..]]).unwrap();
        assert_eq!(verify_audit_file(path).unwrap().broken.map(|b| b.0), Some(4));
        // a deleted row
        c.execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq=2;").unwrap();
        let b = verify_audit_file(path).unwrap().broken.unwrap();
        assert_eq!(b.0, 3);
        assert!(b.1.contains("missing"));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn migrates_a_pre_custody_database() {
        let d = tmpdir("migrate");
        let p = d.join("old.db");
        let path = p.to_str().unwrap();
        {
            // the schema and rows as the store wrote them before custody (no kek_gen, no hash)
            let c = Connection::open(path).unwrap();
            c.execute_batch(
                "CREATE TABLE keys(stream_id TEXT NOT NULL, idx INTEGER NOT NULL, key_id TEXT NOT NULL UNIQUE,
                   digest BLOB NOT NULL, nonce BLOB, wrapped BLOB, size INTEGER NOT NULL, meta TEXT NOT NULL,
                   stored_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, state INTEGER NOT NULL, holder TEXT,
                   PRIMARY KEY(stream_id, idx));
                 CREATE TABLE audit(seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, stream_id TEXT NOT NULL,
                   idx INTEGER NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL);
                 CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
                 INSERT INTO audit(at_ms, stream_id, idx, event, detail) VALUES(1,'s',0,'stored','x'),(2,'s',0,'reserved','y');",
            )
            .unwrap();
            // a key wrapped directly under the wrap key, as before
            use aes_gcm::aead::{Aead, KeyInit, Payload};
            let c2 = aes_gcm::Aes256Gcm::new_from_slice(&kek()).unwrap();
            let n = [3u8; 12];
            let w = c2.encrypt(aes_gcm::Nonce::from_slice(&n), Payload { msg: b"old-key!", aad: &aad("s", 7) }).unwrap();
            c.execute(
                "INSERT INTO keys VALUES('s',7,'k7',?1,?2,?3,8,'{}',0,1000,1,'h')",
                params![&digest("s", 7, b"old-key!")[..], &n[..], w],
            )
            .unwrap();
        }
        let mut s = Store::open(path, &kek(), 10).unwrap();
        assert!(s.verify_audit().unwrap().broken.is_none(), "existing rows chained");
        assert_eq!(s.verify_audit().unwrap().rows, 2);
        assert_eq!(&s.take("k7", "h", 5).unwrap().unwrap().key[..], b"old-key!", "generation 0 = the wrap key");
        assert!(s.exec_raw("UPDATE audit SET event='x'").is_err(), "append-only again after the migration");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn erased_ciphertext_leaves_the_files() {
        let d = tmpdir("erase");
        let p = d.join("e.db");
        let path = p.to_str().unwrap();
        let mut s = Store::open(path, &kek(), 100).unwrap();
        // enough keys that pages hold several rows (freed cells would otherwise survive beside live ones)
        for i in 0..40u32 {
            s.put("s", i, &format!("k{i}"), &[i as u8; 32], "{}", 0, if i % 2 == 0 { 10 } else { 1000 }).unwrap();
        }
        let c = s.candidates("s", 1, 20, false).unwrap();
        s.reserve("s", &[(c[0].index, c[0].digest)], "h", 20, true).unwrap();
        let taken_ct = s.wrapped_of(&c[0].key_id).unwrap().unwrap();
        let expired_ct = s.wrapped_of("k0").unwrap().unwrap();
        let kept_ct = s.wrapped_of("k3").unwrap().unwrap();
        s.take(&c[0].key_id, "h", 21).unwrap().unwrap();
        assert_eq!(s.expire(20).unwrap().len(), 20);
        s.checkpoint().unwrap();
        assert!(files_contain(&d, &kept_ct[..16]), "the test can see a ciphertext that is still held");
        assert!(!files_contain(&d, &taken_ct[..16]), "a delivered key's ciphertext is gone from every file");
        assert!(!files_contain(&d, &expired_ct[..16]), "an expired key's ciphertext is gone from every file");
        let ev: Vec<String> = s.audit_trail("s", Some(0)).unwrap().into_iter().map(|r| r.event).collect();
        assert_eq!(ev, vec!["stored", "expired", "destroyed"]);
        drop(s);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn rotation_rewraps_everything_while_serving() {
        let d = tmpdir("rotate");
        let p = d.join("r.db");
        let ksp = d.join("r.keystore");
        let path = p.to_str().unwrap();
        let w = SoftwareKeystore::development(&kek(), Some(&ksp)).unwrap();
        let mut s = Store::open_with(path, Box::new(w), 10_000).unwrap();
        for i in 0..1000u32 {
            s.put("s", i, &format!("k{i}"), &i.to_be_bytes(), "{}", 0, 1_000_000).unwrap();
        }
        let (g, pending, resumed) = s.begin_rotation(1).unwrap();
        assert_eq!((g, pending, resumed), (1, 1000, false));
        // keys stored mid-rotation go under the new KEK at once; old ones still unwrap
        s.put("s", 5000, "k5000", b"new!", "{}", 1, 1_000_000).unwrap();
        assert_eq!(s.rotate_step(300).unwrap(), 700);
        let c = s.candidates("s", 1, 2, true).unwrap();
        s.reserve("s", &[(c[0].index, c[0].digest)], "h", 2, true).unwrap();
        assert_eq!(&s.take("k5000", "h", 2).unwrap().unwrap().key[..], b"new!");
        assert!(s.finish_rotation(3, 300).is_err(), "cannot finish with keys under the old KEK");
        while s.rotate_step(300).unwrap() > 0 {}
        assert_eq!(s.finish_rotation(3, 1000).unwrap(), vec![0]);
        drop(s);
        // reopened with the same wrapKeyFile: everything unwraps under generation 1
        let w = SoftwareKeystore::development(&kek(), Some(&ksp)).unwrap();
        let mut s = Store::open_with(path, Box::new(w), 10_000).unwrap();
        assert_eq!(s.kek_generations().0, 1);
        let all: Vec<(u32, [u8; 32])> = s.candidates("s", 2000, 4, false).unwrap().into_iter().map(|c| (c.index, c.digest)).collect();
        assert_eq!(all.len(), 1000);
        s.reserve("s", &all, "h", 4, true).unwrap();
        let ids: Vec<String> = all.iter().map(|(i, _)| format!("k{i}")).collect();
        let r: Vec<&str> = ids.iter().map(|x| x.as_str()).collect();
        let got = s.take_many(&r, "h", 5).unwrap();
        assert!(got.iter().enumerate().all(|(i, k)| k.as_ref().unwrap().key[..] == all[i].0.to_be_bytes()));
        assert!(s.verify_audit().unwrap().broken.is_none());
        // a second rotation retires generation 1 for good: the keystore no longer holds it
        let (g, _, _) = s.begin_rotation(6).unwrap();
        assert_eq!(g, 2);
        assert_eq!(s.finish_rotation(7, 0).unwrap(), vec![1]);
        let f = keystore::KeystoreFile::load(&ksp).unwrap();
        assert_eq!(f.keks.iter().map(|k| k.gen).collect::<Vec<_>>(), vec![2]);
        std::fs::remove_dir_all(&d).ok();
    }

    /// PKCS#11 against a real SoftHSM2 token in a temp directory (SOFTHSM2_CONF points there, so
    /// no system token is touched). Skipped, by name, only when SoftHSM2 is not installed.
    #[test]
    fn pkcs11_softhsm2_token() {
        let module = "/usr/lib/softhsm/libsofthsm2.so";
        if !std::path::Path::new(module).exists() || std::process::Command::new("softhsm2-util").arg("--version").output().is_err() {
            eprintln!("SKIP pkcs11_softhsm2_token: SoftHSM2 is not installed (apt-get install softhsm2)");
            return;
        }
        let d = tmpdir("hsm");
        std::fs::create_dir_all(d.join("tokens")).unwrap();
        let conf = d.join("softhsm2.conf");
        std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", d.join("tokens").display())).unwrap();
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let out = std::process::Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", "qkd-test", "--so-pin", "5678", "--pin", "1234"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let cfg = pkcs11::TokenConfig {
            module: module.into(),
            token_label: Some("qkd-test".into()),
            slot: None,
            key_label: "qkd-kek".into(),
            pin_source: "test".into(),
        };
        let ksp = d.join("t.keystore");
        // a wrong PIN before any login of this process (PKCS#11 login state is per application)
        let wrong = pkcs11::open_session(&cfg, b"0000").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(wrong.contains("wrong PIN") && wrong.contains("from test"), "{wrong}");
        let (sess, _) = pkcs11::open_session(&cfg, b"1234").unwrap();
        let mut mk_key = |g: u32| pkcs11::generate_key(&sess, "qkd-kek", g).map(|_| ());
        let r = keystore::init(&ksp, keystore::Kind::Pkcs11, 3, 2, &d.join("shares"), "kmsT", Some(&mut mk_key)).unwrap();
        let h = pkcs11::find_key(&sess, "qkd-kek", 1).unwrap().unwrap();
        assert!(pkcs11::key_is_protected(&sess, h).unwrap(), "sensitive and not extractable");
        assert!(pkcs11::try_read_value(&sess, h).is_none(), "the token refuses to reveal the KEK");
        let mut u = keystore::Unsealer::load(&ksp).unwrap();
        u.add(&std::fs::read(&r.share_files[0]).unwrap()).unwrap();
        u.add(&std::fs::read(&r.share_files[2]).unwrap()).unwrap();
        let mk = u.master().unwrap();
        // errors that name what to fix
        let e = |r: Result<pkcs11::TokenKeystore>| r.err().map(|e| e.to_string()).unwrap_or_default();
        let f = || keystore::KeystoreFile::load(&ksp).unwrap();
        let mut c2 = cfg.clone();
        c2.token_label = Some("nope".into());
        assert!(e(pkcs11::TokenKeystore::open(&c2, b"1234", &mk, &ksp, f())).contains("no PKCS#11 token labelled 'nope'"));
        c2 = cfg.clone();
        c2.key_label = "other".into();
        assert!(e(pkcs11::TokenKeystore::open(&c2, b"1234", &mk, &ksp, f())).contains("holds no AES key labelled 'other'"));
        c2 = cfg.clone();
        c2.module = "/nonexistent/libpkcs11.so".into();
        assert!(e(pkcs11::TokenKeystore::open(&c2, b"1234", &mk, &ksp, f())).contains("does not exist"));

        let tk = pkcs11::TokenKeystore::open(&cfg, b"1234", &mk, &ksp, f()).unwrap();
        let p = d.join("t.db");
        let path = p.to_str().unwrap();
        let mut s = Store::open_with(path, Box::new(tk), 1000).unwrap();
        let canary = b"PKCS11-CANARY-KEY-0123456789abcd";
        for i in 0..50u32 {
            let k = [i as u8; 32];
            s.put("s", i, &format!("k{i}"), if i == 7 { canary } else { &k }, "{}", 0, 1_000_000).unwrap();
        }
        s.checkpoint().unwrap();
        assert!(!files_contain(&d, canary), "no key in clear in the database files");
        s.begin_rotation(1).unwrap();
        while s.rotate_step(16).unwrap() > 0 {}
        assert_eq!(s.finish_rotation(2, 50).unwrap(), vec![1]);
        let (sess2, _) = pkcs11::open_session(&cfg, b"1234").unwrap();
        assert!(pkcs11::find_key(&sess2, "qkd-kek", 1).unwrap().is_none(), "the old KEK is destroyed in the token");
        assert!(pkcs11::find_key(&sess2, "qkd-kek", 2).unwrap().is_some());
        let c = s.candidates("s", 50, 3, false).unwrap();
        let items: Vec<(u32, [u8; 32])> = c.iter().map(|c| (c.index, c.digest)).collect();
        s.reserve("s", &items, "h", 3, true).unwrap();
        assert_eq!(&s.take("k7", "h", 4).unwrap().unwrap().key[..], canary, "unwrapped in the token after rotation");
        // a lost share: reshare; the old shares no longer unseal, the new ones do, keys intact
        let newf = s.reshare(4, 3, &d.join("shares2"), "kmsT", 5).unwrap();
        assert_eq!(newf.len(), 4);
        drop(s);
        let mut old = keystore::Unsealer::load(&ksp).unwrap();
        let e = old.add(&std::fs::read(&r.share_files[0]).unwrap()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("another share set"), "{e}");
        let mut nu = keystore::Unsealer::load(&ksp).unwrap();
        for f in &newf[1..] {
            nu.add(&std::fs::read(f).unwrap()).unwrap();
        }
        let mk2 = nu.master().unwrap();
        assert!(pkcs11::TokenKeystore::open(&cfg, b"1234", &mk, &ksp, f()).is_err(), "the old master key opens nothing");
        let tk = pkcs11::TokenKeystore::open(&cfg, b"1234", &mk2, &ksp, f()).unwrap();
        let mut s = Store::open_with(path, Box::new(tk), 1000).unwrap();
        assert_eq!(&s.take("k9", "h", 6).unwrap().unwrap().key[..], &[9u8; 32], "keys intact after reshare");
        drop(s);
        // the same rows with the token but shares of another master key: the inner layer refuses
        let d2 = tmpdir("hsm2");
        let r2 = keystore::init(&d2.join("x.keystore"), keystore::Kind::Software, 2, 2, &d2.join("s"), "x", None).unwrap();
        let mut u2 = keystore::Unsealer::load(&d2.join("x.keystore")).unwrap();
        u2.add(&std::fs::read(&r2.share_files[0]).unwrap()).unwrap();
        u2.add(&std::fs::read(&r2.share_files[1]).unwrap()).unwrap();
        let other_mk = u2.master().unwrap();
        let e = pkcs11::TokenKeystore::open(&cfg, b"1234", &other_mk, &ksp, f()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("inner-layer key does not unseal"), "token + PIN without the shares open nothing: {e}");
        std::fs::remove_dir_all(&d).ok();
        std::fs::remove_dir_all(&d2).ok();
    }
}
