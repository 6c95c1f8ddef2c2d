//! qkd-store: the reference KMS's durable key store.
//!
//! One SQLite database (rusqlite, `bundled`) in WAL mode with `synchronous=FULL`, so a `put` that
//! returned has been fsynced: the KMS answers 201 to a key-material push only after `put` returns.
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
//! The `audit` table is append-only (triggers refuse UPDATE and DELETE); it never holds key bytes.
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rusqlite::{params, Connection, OptionalExtension};
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
}
impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Db(m) => write!(f, "STORE_DB: {m}"),
            StoreError::Crypto(m) => write!(f, "STORE_CRYPTO: {m}"),
            StoreError::Invalid(m) => write!(f, "STORE_INVALID: {m}"),
        }
    }
}
impl std::error::Error for StoreError {}
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}
pub type Result<T> = std::result::Result<T, StoreError>;

/// Outcome of a `put`: results, not errors (the KMS maps them to 201 / 201 / 409 / 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    Duplicate,
    Conflict,
    Full,
}

/// One key to store (see `Store::put_many`). The key is zeroised on drop.
pub struct PutItem {
    pub sid: String,
    pub index: u32,
    pub key_id: String,
    pub key: Zeroizing<Vec<u8>>,
    pub meta: String,
    pub expires_ms: i64,
}

/// A key taken out of the store. Zeroised on drop.
pub struct TakenKey {
    pub index: u32,
    pub key_id: String,
    pub key: Zeroizing<Vec<u8>>,
}

pub struct Candidate {
    pub index: u32,
    pub key_id: String,
    pub digest: [u8; 32],
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
    conn: Connection,
    cipher: Aes256Gcm,
    capacity: u64,
}

impl Store {
    /// Opens (creating if needed) the database at `path` (":memory:" for tests). `kek` must be 32
    /// bytes; `capacity` is the most keys held (with ciphertext) at once; beyond it `put` answers
    /// `Full`.
    pub fn open(path: &str, kek: &[u8], capacity: u64) -> Result<Store> {
        if kek.len() != 32 {
            return Err(StoreError::Crypto(format!(
                "the key-encryption key must be 32 bytes (AES-256), got {}",
                kek.len()
            )));
        }
        let cipher = Aes256Gcm::new_from_slice(kek).map_err(|_| StoreError::Crypto("bad KEK".into()))?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS keys(
               stream_id TEXT NOT NULL, idx INTEGER NOT NULL, key_id TEXT NOT NULL UNIQUE,
               digest BLOB NOT NULL, nonce BLOB, wrapped BLOB, size INTEGER NOT NULL,
               meta TEXT NOT NULL, stored_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
               state INTEGER NOT NULL, holder TEXT,
               PRIMARY KEY(stream_id, idx));
             CREATE INDEX IF NOT EXISTS keys_state ON keys(state, stream_id, idx);
             CREATE TABLE IF NOT EXISTS audit(
               seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, stream_id TEXT NOT NULL,
               idx INTEGER NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL);
             CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
               BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
             CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
               BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;",
        )?;
        Ok(Store { conn, cipher, capacity })
    }

    fn audit_tx(tx: &Connection, now_ms: i64, sid: &str, idx: i64, event: &str, detail: &str) -> Result<()> {
        tx.execute(
            "INSERT INTO audit(at_ms, stream_id, idx, event, detail) VALUES(?1,?2,?3,?4,?5)",
            params![now_ms, sid, idx, event, detail],
        )?;
        Ok(())
    }

    /// Appends an audit record (no key bytes may be passed in `detail`).
    pub fn audit(&self, now_ms: i64, sid: &str, idx: i64, event: &str, detail: &str) -> Result<()> {
        Self::audit_tx(&self.conn, now_ms, sid, idx, event, detail)
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
            key: Zeroizing::new(key.to_vec()),
            meta: meta_json.to_string(),
            expires_ms,
        };
        Ok(self.put_many(std::slice::from_ref(&item), now_ms)?[0])
    }

    /// Stores several keys in ONE transaction (one fsync): group commit for concurrent pushes.
    /// Outcomes are per item, in order, as if `put` had been called for each in turn.
    pub fn put_many(&mut self, items: &[PutItem], now_ms: i64) -> Result<Vec<PutOutcome>> {
        if items.iter().any(|i| i.key.is_empty()) {
            return Err(StoreError::Invalid("empty key".into()));
        }
        let tx = self.conn.transaction()?;
        let mut held: i64 = tx.query_row("SELECT COUNT(*) FROM keys WHERE state IN (0,1)", [], |r| r.get(0))?;
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let (sid, index, key) = (it.sid.as_str(), it.index, &it.key[..]);
            let d = digest(sid, index, key);
            let existing: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT digest FROM keys WHERE stream_id=?1 AND idx=?2",
                    params![sid, index as i64],
                    |r| r.get(0),
                )
                .optional()?;
            let outcome = if let Some(old) = existing {
                if ct_eq(&old, &d) {
                    Self::audit_tx(&tx, now_ms, sid, index as i64, "duplicate", "same bytes pushed again; kept one copy")?;
                    PutOutcome::Duplicate
                } else {
                    Self::audit_tx(&tx, now_ms, sid, index as i64, "conflict", "different bytes under a used index; refused")?;
                    PutOutcome::Conflict
                }
            } else if held as u64 >= self.capacity {
                PutOutcome::Full
            } else {
                let mut nonce = [0u8; 12];
                getrandom::getrandom(&mut nonce).map_err(|e| StoreError::Crypto(e.to_string()))?;
                let a = aad(sid, index);
                let wrapped = self
                    .cipher
                    .encrypt(Nonce::from_slice(&nonce), Payload { msg: key, aad: &a })
                    .map_err(|_| StoreError::Crypto("wrap failed".into()))?;
                tx.execute(
                    "INSERT INTO keys(stream_id, idx, key_id, digest, nonce, wrapped, size, meta,
                       stored_ms, expires_ms, state, holder) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,0,NULL)",
                    params![sid, index as i64, it.key_id, &d[..], &nonce[..], wrapped, key.len() as i64,
                        it.meta, now_ms, it.expires_ms],
                )?;
                Self::audit_tx(&tx, now_ms, sid, index as i64, "stored", &format!("size={} key_id={}", key.len(), it.key_id))?;
                held += 1;
                PutOutcome::Stored
            };
            out.push(outcome);
        }
        tx.commit()?;
        Ok(out)
    }

    /// Up to `limit` held (not reserved) keys of `sid` in index order, with their digests.
    /// `descending` draws from the newest end: the two KMSs of a link draw from opposite ends so
    /// that SAEs on both sides asking at once rarely pick the same keys.
    pub fn candidates(&self, sid: &str, limit: u32, now_ms: i64, descending: bool) -> Result<Vec<Candidate>> {
        let mut st = self.conn.prepare_cached(if descending {
            "SELECT idx, key_id, digest FROM keys WHERE stream_id=?1 AND state=0 AND expires_ms>?2
             ORDER BY idx DESC LIMIT ?3"
        } else {
            "SELECT idx, key_id, digest FROM keys WHERE stream_id=?1 AND state=0 AND expires_ms>?2
             ORDER BY idx LIMIT ?3"
        })?;
        let rows = st.query_map(params![sid, now_ms, limit as i64], |r| {
            let dg: Vec<u8> = r.get(2)?;
            let mut digest = [0u8; 32];
            if dg.len() == 32 {
                digest.copy_from_slice(&dg);
            }
            Ok(Candidate { index: r.get::<_, i64>(0)? as u32, key_id: r.get(1)?, digest })
        })?;
        Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// Digest of a held key, if this store holds `(sid, index)` with its ciphertext.
    pub fn held_digest(&self, sid: &str, index: u32) -> Result<Option<([u8; 32], i64)>> {
        let r: Option<(Vec<u8>, i64)> = self
            .conn
            .query_row(
                "SELECT digest, state FROM keys WHERE stream_id=?1 AND idx=?2",
                params![sid, index as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(r.map(|(d, s)| {
            let mut out = [0u8; 32];
            if d.len() == 32 {
                out.copy_from_slice(&d);
            }
            (out, s)
        }))
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
        let tx = self.conn.transaction()?;
        let mut ok = Vec::new();
        for (idx, dg) in items {
            let row: Option<(Vec<u8>, i64)> = tx
                .query_row(
                    "SELECT digest, state FROM keys WHERE stream_id=?1 AND idx=?2 AND expires_ms>?3",
                    params![sid, *idx as i64, now_ms],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((d, STATE_HELD)) = row {
                if ct_eq(&d, dg) {
                    tx.execute(
                        "UPDATE keys SET state=1, holder=?3 WHERE stream_id=?1 AND idx=?2",
                        params![sid, *idx as i64, holder],
                    )?;
                    Self::audit_tx(&tx, now_ms, sid, *idx as i64, "reserved", &format!("confirmed with peer; for {holder}"))?;
                    ok.push(*idx);
                } else {
                    Self::audit_tx(&tx, now_ms, sid, *idx as i64, "mismatch", "peer digest differs; not released")?;
                }
            }
        }
        if all_or_nothing && ok.len() != items.len() {
            drop(tx); // rolls back
            return Ok(Vec::new());
        }
        tx.commit()?;
        Ok(ok)
    }

    /// Returns reserved keys of `holder` to the held pool (a release that could not complete on
    /// the peer). Returns the indices released.
    pub fn unreserve(&mut self, sid: &str, indices: &[u32], holder: &str, now_ms: i64) -> Result<Vec<u32>> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::new();
        for idx in indices {
            let n = tx.execute(
                "UPDATE keys SET state=0, holder=NULL WHERE stream_id=?1 AND idx=?2 AND state=1 AND holder=?3",
                params![sid, *idx as i64, holder],
            )?;
            if n == 1 {
                Self::audit_tx(&tx, now_ms, sid, *idx as i64, "unreserved", &format!("release for {holder} did not complete"))?;
                out.push(*idx);
            }
        }
        tx.commit()?;
        Ok(out)
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
        let tx = self.conn.transaction()?;
        let mut out = Vec::with_capacity(key_ids.len());
        for key_id in key_ids {
            let row: Option<(String, i64, Vec<u8>, Vec<u8>)> = tx
                .query_row(
                    "SELECT stream_id, idx, nonce, wrapped FROM keys
                     WHERE key_id=?1 AND state=1 AND holder=?2 AND wrapped IS NOT NULL",
                    params![key_id, holder],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((sid, idx, nonce, mut wrapped)) = row else {
                out.push(None);
                continue;
            };
            let a = aad(&sid, idx as u32);
            let plain = self
                .cipher
                .decrypt(Nonce::from_slice(&nonce), Payload { msg: &wrapped, aad: &a })
                .map_err(|_| StoreError::Crypto("a wrapped key failed to authenticate (wrong KEK or tampered row)".into()))?;
            wrapped.zeroize();
            tx.execute(
                "UPDATE keys SET state=2, wrapped=NULL, nonce=NULL WHERE stream_id=?1 AND idx=?2",
                params![sid, idx],
            )?;
            Self::audit_tx(&tx, now_ms, &sid, idx, "delivered", &format!("handed out to {holder}; erased"))?;
            out.push(Some(TakenKey { index: idx as u32, key_id: key_id.to_string(), key: Zeroizing::new(plain) }));
        }
        tx.commit()?;
        Ok(out)
    }

    /// Erases every key whose `expires_ms <= now_ms`. Returns `(stream_id, index)` of each.
    pub fn expire(&mut self, now_ms: i64) -> Result<Vec<(String, u32)>> {
        let tx = self.conn.transaction()?;
        let gone: Vec<(String, u32)> = {
            let mut st = tx.prepare(
                "SELECT stream_id, idx FROM keys WHERE state IN (0,1) AND expires_ms<=?1 ORDER BY stream_id, idx",
            )?;
            let rows = st.query_map(params![now_ms], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u32)))?;
            rows.collect::<std::result::Result<Vec<_>, _>>()?
        };
        for (sid, idx) in &gone {
            tx.execute(
                "UPDATE keys SET state=3, wrapped=NULL, nonce=NULL WHERE stream_id=?1 AND idx=?2",
                params![sid, *idx as i64],
            )?;
            Self::audit_tx(&tx, now_ms, sid, *idx as i64, "expired", "TTL reached; erased")?;
        }
        tx.commit()?;
        Ok(gone)
    }

    pub fn counts(&self, sid: Option<&str>) -> Result<Counts> {
        let mut c = Counts::default();
        let mut st = self.conn.prepare_cached(
            "SELECT state, COUNT(*) FROM keys WHERE (?1 IS NULL OR stream_id=?1) GROUP BY state",
        )?;
        let rows = st.query_map(params![sid], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64)))?;
        for row in rows {
            let (s, n) = row?;
            match s {
                STATE_HELD => c.held = n,
                STATE_RESERVED => c.reserved = n,
                STATE_DELIVERED => c.delivered = n,
                STATE_EXPIRED => c.expired = n,
                _ => {}
            }
        }
        Ok(c)
    }

    pub fn audit_trail(&self, sid: &str, idx: Option<u32>) -> Result<Vec<AuditRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, at_ms, stream_id, idx, event, detail FROM audit
             WHERE stream_id=?1 AND (?2 IS NULL OR idx=?2) ORDER BY seq",
        )?;
        let rows = st.query_map(params![sid, idx.map(|i| i as i64)], |r| {
            Ok(AuditRow {
                seq: r.get(0)?,
                at_ms: r.get(1)?,
                key_stream_id: r.get(2)?,
                index: r.get(3)?,
                event: r.get(4)?,
                detail: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// Runs raw SQL (tests use it to show the audit trail refuses updates).
    pub fn exec_raw(&self, sql: &str) -> Result<()> {
        self.conn.execute_batch(sql)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            key: Zeroizing::new(vec![k; 4]),
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
}
