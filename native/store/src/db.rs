//! The storage trait behind `Store`: a small SQL surface (transactions, statements with
//! positional parameters, rows of plain values) that SQLite (sqlite.rs, the embedded default) and
//! PostgreSQL (pg.rs, the production backend) implement. The store's logic, the key wrapping, the
//! audit chain and the erasure are written once, in lib.rs, against this trait.
//!
//! SQL is written in the SQLite dialect with `?N` placeholders; the PostgreSQL backend rewrites
//! the few constructs that differ (placeholders, `json_extract`, `zeroblob`).
use crate::{Result, StoreError};

/// One SQL value (parameter or column).
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    I(i64),
    F(f64),
    T(String),
    B(Vec<u8>),
}

impl Val {
    pub fn i(&self) -> Result<i64> {
        match self {
            Val::I(v) => Ok(*v),
            other => Err(StoreError::Db(format!("expected an integer column, got {}", other.kind()))),
        }
    }
    pub fn s(self) -> Result<String> {
        match self {
            Val::T(v) => Ok(v),
            other => Err(StoreError::Db(format!("expected a text column, got {}", other.kind()))),
        }
    }
    pub fn os(self) -> Result<Option<String>> {
        match self {
            Val::Null => Ok(None),
            v => v.s().map(Some),
        }
    }
    pub fn b(self) -> Result<Vec<u8>> {
        match self {
            Val::B(v) => Ok(v),
            other => Err(StoreError::Db(format!("expected a blob column, got {}", other.kind()))),
        }
    }
    pub fn ob(self) -> Result<Option<Vec<u8>>> {
        match self {
            Val::Null => Ok(None),
            v => v.b().map(Some),
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Val::Null => "NULL",
            Val::I(_) => "integer",
            Val::F(_) => "real",
            Val::T(_) => "text",
            Val::B(_) => "blob",
        }
    }
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::I(v)
    }
}
impl From<u32> for Val {
    fn from(v: u32) -> Self {
        Val::I(v as i64)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::T(v.to_string())
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::T(v.clone())
    }
}
impl From<&[u8]> for Val {
    fn from(v: &[u8]) -> Self {
        Val::B(v.to_vec())
    }
}
impl From<Vec<u8>> for Val {
    fn from(v: Vec<u8>) -> Self {
        Val::B(v)
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(Val::Null)
    }
}
impl From<f64> for Val {
    fn from(v: f64) -> Self {
        Val::F(v)
    }
}

/// `p![a, b]` builds a parameter list.
#[macro_export]
macro_rules! p {
    ($($x:expr),* $(,)?) => { &[$($crate::db::Val::from($x)),*][..] };
}

pub type Row = Vec<Val>;

/// A database connection the store runs on. Write transactions are serialised: SQLite has one
/// writer at a time; the PostgreSQL backend takes a transaction-scoped advisory lock in `begin`,
/// so several KMS processes (or store handles) on one database behave like one SQLite writer.
pub trait Db: Send {
    /// "sqlite" | "postgres"
    fn kind(&self) -> &'static str;
    /// Where the data is, without secrets (a path, or user@host:port/database).
    fn describe(&self) -> String;
    fn begin(&mut self) -> Result<()>;
    fn commit(&mut self) -> Result<()>;
    fn rollback(&mut self) -> Result<()>;
    /// Runs one statement; returns the rows it changed.
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64>;
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>>;
    /// Runs several statements without parameters.
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// Makes erased bytes leave the storage where the backend can (SQLite: checkpoint and
    /// truncate the WAL; PostgreSQL: nothing the KMS can do alone, see docs/delivery.md).
    fn checkpoint(&mut self) -> Result<()>;

    fn query_opt(&mut self, sql: &str, params: &[Val]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
    fn query_one(&mut self, sql: &str, params: &[Val]) -> Result<Row> {
        self.query_opt(sql, params)?.ok_or_else(|| StoreError::Db("query returned no row".into()))
    }
}

/// True when `database` names a PostgreSQL server rather than a SQLite file.
pub fn is_postgres(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}
