//! The production backend: a PostgreSQL server (the `postgres` crate, synchronous client; one
//! connection per store, which the KMS serialises behind its mutex anyway).
//!
//! Same schema semantics as SQLite: `BIGINT` for integers, `BYTEA` for blobs, the audit table
//! append-only by triggers (UPDATE, DELETE and TRUNCATE refused). Every write transaction first
//! takes a transaction-scoped advisory lock, so write transactions are serialised across every
//! connection to the database, like SQLite's single writer: two `dec_keys` for one key_ID (from one
//! KMS or from two processes on one database) have exactly one winner, and the audit chain's
//! sequence has no gaps or forks. `synchronous_commit=on` is set for the session: a commit that
//! returned is on the server's disk (the KMS answers 201 to a push only after that).
//!
//! Erasure: an erased key's wrapped bytes are overwritten (zeros, same length) and then set to
//! NULL, in the transaction that hands the key out, as on SQLite. PostgreSQL's MVCC keeps the old
//! row versions until VACUUM reclaims them, and VACUUM does not zero the space; the WAL holds them
//! until recycled. What remains there is ciphertext under the KEK; see docs/delivery.md.
use crate::db::{Db, Row, Val};
use crate::{Result, StoreError};
use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, Config, NoTls, Statement};
use std::collections::HashMap;

/// Advisory lock key of the store's write transactions ("qkd-kms").
const WRITE_LOCK: i64 = 0x716b_642d_6b6d_73;

/// The SQLite schema (sqlite.rs) in PostgreSQL's types: one definition, the same columns and keys.
fn tables() -> String {
    let schema = format!("{} {}", crate::sqlite::SCHEMA, crate::sqlite::EXPIRY_INDEXES);
    schema.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT PRIMARY KEY").replace("INTEGER", "BIGINT").replace("BLOB", "BYTEA")
}

/// The audit table's append-only triggers (UPDATE, DELETE, TRUNCATE refused), made once.
const TRIGGERS: &str = "CREATE OR REPLACE FUNCTION qkd_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
       $f$ BEGIN RAISE EXCEPTION 'audit trail is append-only'; END $f$;
     DO $d$ BEGIN
       IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'audit_no_update' AND tgrelid = 'audit'::regclass) THEN
         CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION qkd_audit_append_only();
         CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit FOR EACH ROW EXECUTE FUNCTION qkd_audit_append_only();
         CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION qkd_audit_append_only();
       END IF;
     END $d$;";

/// Any integer/real/text/blob parameter, encoded as the type the server inferred for it.
impl ToSql for Val {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::I(v) => match *ty {
                Type::INT2 => (*v as i16).to_sql(ty, out),
                Type::INT4 => (*v as i32).to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Val::F(v) => match *ty {
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Val::T(v) => v.as_str().to_sql(ty, out),
            Val::B(v) => v.as_slice().to_sql(ty, out),
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    postgres::types::to_sql_checked!();
}

/// The SQLite-dialect SQL of lib.rs in PostgreSQL's: `?N` -> `$N`, and the two functions that differ.
fn translate(sql: &str) -> String {
    let sql = sql
        .replace("json_extract(meta, '$.epsilon')", "(meta::jsonb->>'epsilon')::float8")
        .replace("zeroblob(length(wrapped))", "decode(repeat('00', length(wrapped)), 'hex')")
        .replace("zeroblob(12)", "decode(repeat('00', 12), 'hex')");
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

pub struct Pg {
    client: Client,
    config: Config,
    stmts: HashMap<String, Statement>,
    in_tx: bool,
    what: String,
}

/// user@host:port/database of a configuration: never the password.
fn describe(c: &Config) -> String {
    use postgres::config::Host;
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let user = c.get_user().unwrap_or("(no user)");
    format!("{user}@{host}:{port}/{}", c.get_dbname().unwrap_or(user))
}

/// Start-up errors that say what was wrong and what to do.
fn connect_error(what: &str, e: postgres::Error) -> StoreError {
    let code = e.code().cloned();
    let text = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(x) = src {
            s = format!("{s}: {x}");
            src = x.source();
        }
        s
    });
    let hint = match code {
        Some(c) if c == SqlState::INVALID_PASSWORD || c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            "authentication failed: check the user and password in `database` (or a pg_hba.conf entry for this host and user)"
        }
        Some(c) if c == SqlState::INVALID_CATALOG_NAME => "the database does not exist: create it (createdb -O USER NAME) or fix its name in `database`",
        Some(c) if c == SqlState::INSUFFICIENT_PRIVILEGE => "the user may not use this database: GRANT it CONNECT and CREATE, or use the database's owner",
        Some(_) => "the server refused the connection",
        None => "cannot reach the PostgreSQL server: is it running and listening at that host and port (pg_lsclusters, listen_addresses), and does a firewall let the KMS through?",
    };
    StoreError::Server(format!("PostgreSQL {what}: {hint} ({text})"))
}

impl Pg {
    /// Connects to `url` (postgres://user:password@host:port/database; TLS is not offered, so use
    /// a local socket, a loopback address or a protected network) and creates the schema.
    pub fn connect(url: &str) -> Result<Pg> {
        let mut config: Config = url.parse().map_err(|e: postgres::Error| {
            StoreError::Server(format!("`database` is not a valid PostgreSQL URL ({e}); write postgres://USER:PASSWORD@HOST:PORT/DATABASE"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.application_name("qkd-kms");
        let what = describe(&config);
        let mut client = config.connect(NoTls).map_err(|e| connect_error(&what, e))?;
        client.batch_execute("SET synchronous_commit = on").map_err(|e| connect_error(&what, e))?;
        client
            .batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK}); {} {TRIGGERS} COMMIT;", tables()))
            .map_err(|e| StoreError::Server(format!("PostgreSQL {what}: cannot create the key store's tables: {} (the user needs CREATE on the database)", db_text(&e))))?;
        Ok(Pg { client, config, stmts: HashMap::new(), in_tx: false, what })
    }

    /// A lost connection (server restarted) is re-opened before the next transaction.
    fn reconnect_if_closed(&mut self) -> Result<()> {
        if self.client.is_closed() && !self.in_tx {
            self.client = self.config.connect(NoTls).map_err(|e| connect_error(&self.what, e))?;
            self.client.batch_execute("SET synchronous_commit = on").map_err(|e| connect_error(&self.what, e))?;
            self.stmts.clear();
        }
        Ok(())
    }

    fn stmt(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        self.reconnect_if_closed()?;
        let s = self.client.prepare(&translate(sql)).map_err(|e| self.err(e))?;
        self.stmts.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn err(&self, e: postgres::Error) -> StoreError {
        if self.client.is_closed() {
            return StoreError::Server(format!("PostgreSQL {}: connection lost ({}); the next request reconnects", self.what, db_text(&e)));
        }
        StoreError::Db(db_text(&e))
    }
}

fn db_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

impl Db for Pg {
    fn kind(&self) -> &'static str {
        "postgres"
    }
    fn describe(&self) -> String {
        format!("PostgreSQL {}", self.what)
    }
    fn begin(&mut self) -> Result<()> {
        self.reconnect_if_closed()?;
        self.client.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})")).map_err(|e| self.err(e))?;
        self.in_tx = true;
        Ok(())
    }
    fn commit(&mut self) -> Result<()> {
        self.in_tx = false;
        self.client.batch_execute("COMMIT").map_err(|e| self.err(e))
    }
    fn rollback(&mut self) -> Result<()> {
        self.in_tx = false;
        if self.client.is_closed() {
            return Ok(()); // the server rolled it back when the connection ended
        }
        self.client.batch_execute("ROLLBACK").map_err(|e| self.err(e))
    }
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let st = self.stmt(sql)?;
        let ps: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.client.execute(&st, &ps).map_err(|e| self.err(e))
    }
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>> {
        let st = self.stmt(sql)?;
        let ps: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let rows = self.client.query(&st, &ps).map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut v = Vec::with_capacity(r.len());
            for (i, c) in r.columns().iter().enumerate() {
                let x = match *c.type_() {
                    Type::INT8 => r.try_get::<_, Option<i64>>(i).map(|o| o.map(Val::I)),
                    Type::INT4 => r.try_get::<_, Option<i32>>(i).map(|o| o.map(|x| Val::I(x as i64))),
                    Type::INT2 => r.try_get::<_, Option<i16>>(i).map(|o| o.map(|x| Val::I(x as i64))),
                    Type::FLOAT8 => r.try_get::<_, Option<f64>>(i).map(|o| o.map(Val::F)),
                    Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i).map(|o| o.map(Val::B)),
                    _ => r.try_get::<_, Option<String>>(i).map(|o| o.map(Val::T)),
                }
                .map_err(|e| StoreError::Db(format!("column {}: {e}", c.name())))?;
                v.push(x.unwrap_or(Val::Null));
            }
            out.push(v);
        }
        Ok(out)
    }
    fn batch(&mut self, sql: &str) -> Result<()> {
        self.reconnect_if_closed()?;
        self.client.batch_execute(sql).map_err(|e| self.err(e))
    }
    fn checkpoint(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{tables, translate};

    #[test]
    fn schema_is_the_sqlite_one_in_postgres_types() {
        let t = tables();
        assert!(t.contains("idx BIGINT NOT NULL") && t.contains("digest BYTEA NOT NULL") && t.contains("seq BIGINT PRIMARY KEY,"));
        assert!(!t.contains("INTEGER") && !t.contains("BLOB") && !t.contains("AUTOINCREMENT"));
    }

    #[test]
    fn translates_the_sqlite_dialect() {
        assert_eq!(translate("SELECT a FROM t WHERE x=?1 AND y=?12"), "SELECT a FROM t WHERE x=$1 AND y=$12");
        assert_eq!(
            translate("UPDATE keys SET wrapped=zeroblob(length(wrapped)), nonce=zeroblob(12)"),
            "UPDATE keys SET wrapped=decode(repeat('00', length(wrapped)), 'hex'), nonce=decode(repeat('00', 12), 'hex')"
        );
        assert!(translate("json_extract(meta, '$.epsilon') <= ?4").starts_with("(meta::jsonb->>'epsilon')::float8 <= $4"));
    }
}
