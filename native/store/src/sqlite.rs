//! The embedded backend: one SQLite database file (rusqlite, `bundled`) in WAL mode with
//! `synchronous=FULL` (a commit that returned has been fsynced) and `secure_delete=ON` (freed
//! content, e.g. an erased ciphertext, is overwritten with zeros in the file).
use crate::db::{Db, Row, Val};
use crate::{chain_hash, Result, StoreError};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Val::Null => ValueRef::Null,
            Val::I(v) => ValueRef::Integer(*v),
            Val::F(v) => ValueRef::Real(*v),
            Val::T(v) => ValueRef::Text(v.as_bytes()),
            Val::B(v) => ValueRef::Blob(v),
        }))
    }
}

pub struct Sqlite {
    conn: Connection,
    path: String,
}

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS keys(
       stream_id TEXT NOT NULL, idx INTEGER NOT NULL, key_id TEXT NOT NULL UNIQUE,
       digest BLOB NOT NULL, nonce BLOB, wrapped BLOB, size INTEGER NOT NULL,
       meta TEXT NOT NULL, stored_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
       state INTEGER NOT NULL, holder TEXT, kek_gen INTEGER NOT NULL DEFAULT 0,
       warned INTEGER NOT NULL DEFAULT 0,
       PRIMARY KEY(stream_id, idx));
     CREATE INDEX IF NOT EXISTS keys_state ON keys(state, stream_id, idx);
     CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
     CREATE TABLE IF NOT EXISTS audit(
       seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, stream_id TEXT NOT NULL,
       idx INTEGER NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL, hash BLOB);";

/// Live keys by expiry (the expiry queries, every second; lib.rs `indexed_by`). After `migrate`:
/// an older database gets `warned` there.
pub(crate) const EXPIRY_INDEXES: &str = "CREATE INDEX IF NOT EXISTS keys_live_expiry ON keys(expires_ms) WHERE state IN (0,1);
     CREATE INDEX IF NOT EXISTS keys_unwarned_expiry ON keys(expires_ms) WHERE state IN (0,1) AND warned=0;";

const TRIGGERS: &str = "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
       BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
     CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
       BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;";

pub(crate) fn has_column(conn: &Connection, table: &str, col: &str) -> Result<bool> {
    let mut st = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = st.query_map([], |r| r.get::<_, String>(1))?.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(names.iter().any(|n| n == col))
}

/// Brings a database made before custody up to the current schema: `kek_gen` (0: wrapped under
/// the wrapKeyFile itself), `warned`, and the audit hash chain over the existing rows (the
/// append-only trigger is lifted for that one transaction).
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction()?;
    if !has_column(&tx, "keys", "kek_gen")? {
        tx.execute_batch("ALTER TABLE keys ADD COLUMN kek_gen INTEGER NOT NULL DEFAULT 0")?;
    }
    if !has_column(&tx, "keys", "warned")? {
        tx.execute_batch("ALTER TABLE keys ADD COLUMN warned INTEGER NOT NULL DEFAULT 0")?;
    }
    if !has_column(&tx, "audit", "hash")? {
        tx.execute_batch("ALTER TABLE audit ADD COLUMN hash BLOB")?;
    }
    let unchained: i64 = tx.query_row("SELECT COUNT(*) FROM audit WHERE hash IS NULL", [], |r| r.get(0))?;
    if unchained > 0 {
        tx.execute_batch("DROP TRIGGER IF EXISTS audit_no_update")?;
        let rows: Vec<(i64, i64, String, i64, String, String)> = {
            let mut st = tx.prepare("SELECT seq, at_ms, stream_id, idx, event, detail FROM audit ORDER BY seq")?;
            let v = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?;
            v.collect::<std::result::Result<Vec<_>, _>>()?
        };
        let mut prev = [0u8; 32];
        for (seq, at, sid, idx, ev, det) in rows {
            prev = chain_hash(&prev, seq, at, &sid, idx, &ev, &det);
            tx.execute("UPDATE audit SET hash=?1 WHERE seq=?2", params![&prev[..], seq])?;
        }
    }
    tx.execute_batch(TRIGGERS)?;
    tx.commit()?;
    Ok(())
}

impl Sqlite {
    /// Opens (creating and migrating if needed) the database file at `path` (":memory:" for tests).
    pub fn open(path: &str) -> Result<Sqlite> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Freed content (an erased ciphertext, a re-wrapped one) is overwritten with zeros.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&mut conn)?;
        conn.execute_batch(EXPIRY_INDEXES)?;
        Ok(Sqlite { conn, path: path.to_string() })
    }

    /// Read-only handle for `verify_audit_file` (the KMS may be running).
    pub fn open_read_only(path: &str) -> Result<Sqlite> {
        if !std::path::Path::new(path).exists() {
            return Err(StoreError::Db(format!("no database at {path}")));
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        if !has_column(&conn, "audit", "hash")? {
            return Err(StoreError::Db("this database predates the audit hash chain; open it once with the KMS to chain it".into()));
        }
        Ok(Sqlite { conn, path: path.to_string() })
    }
}

impl Db for Sqlite {
    fn kind(&self) -> &'static str {
        "sqlite"
    }
    fn describe(&self) -> String {
        format!("SQLite database {}", self.path)
    }
    fn begin(&mut self) -> Result<()> {
        Ok(self.conn.execute_batch("BEGIN")?)
    }
    fn commit(&mut self) -> Result<()> {
        Ok(self.conn.execute_batch("COMMIT")?)
    }
    fn rollback(&mut self) -> Result<()> {
        Ok(self.conn.execute_batch("ROLLBACK")?)
    }
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let mut st = self.conn.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(params.iter()))? as u64)
    }
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>> {
        let mut st = self.conn.prepare_cached(sql)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(match r.get_ref(i)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(x) => Val::I(x),
                    ValueRef::Real(x) => Val::F(x),
                    ValueRef::Text(t) => Val::T(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Val::B(b.to_vec()),
                });
            }
            out.push(v);
        }
        Ok(out)
    }
    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.conn.execute_batch(sql)?)
    }
    fn checkpoint(&mut self) -> Result<()> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}
