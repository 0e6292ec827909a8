//! The capture store: the only module that speaks SQL.
//!
//! A capture is a SQLite file (WAL, 16 KiB pages) or, given a
//! `postgres://` URL, a PostgreSQL database that several recording proxies
//! write at once. Either holds any number of recording runs. The schema
//! lives in `capture/migrations/sqlite/` and `capture/migrations/postgres/`
//! (the same tables and columns in each database's types) and is applied by
//! an embedded migrator, so a capture opened by a newer tapedeck is upgraded
//! in place. Every query is written once, with `$N` parameters that both
//! databases read (but the batch insert, see `write.rs`), and runs on
//! whichever pool the store has (`on_pool!`); the few statements that
//! differ (catalog lookups, JSON functions, WAL checkpoints) say so where
//! they branch.
//!
//! This file owns the pool, the redaction key and closing; `open.rs`
//! creates and opens stores (for writing or only reading) and migrates
//! them. The statements live beside it by direction: `write.rs`
//! (runs and batches from the single writer task, [`super::writer`]),
//! `read.rs` (what `captures`, replay, the demo and tests read), `copy.rs`
//! (a capture into another store), `remove.rs` (runs out of a capture,
//! and their traces out of the file) and `rows.rs` (the row shapes between
//! the capture's plain types and the columns). Input and output are the
//! capture's plain types; nothing here knows replay, report, proxy or demo.

use std::path::{Path, PathBuf};

use sqlx::sqlite::SqlitePool;

use super::CaptureError;

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

/// Runs `$body` with `$p` bound to the store's pool, whichever database it
/// is: the body is compiled once per database, so its SQL suits both.
macro_rules! on_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($p) => $body,
            #[cfg(feature = "postgres")]
            Pool::Postgres($p) => $body,
        }
    };
}

/// Whether a capture argument names a PostgreSQL database.
pub fn is_postgres_url(capture: &Path) -> bool {
    capture
        .to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// An open capture store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    /// The file, or the database URL without its password.
    path: PathBuf,
}

// Declared after `on_pool!` so the statements in them can use it.
mod copy;
mod lock;
mod open;
mod read;
mod remove;
mod rows;
mod write;

pub use lock::RunLock;

/// What kind of failure a store error is, for the writer's counting and
/// retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    /// The disk (or the database server's) is full: SQLITE_FULL,
    /// PostgreSQL class 53 (insufficient resources).
    Full,
    /// Another connection holds the lock: SQLITE_BUSY or SQLITE_LOCKED, a
    /// PostgreSQL lock or serialization failure.
    Busy,
    /// Anything else: I/O errors, a lost connection.
    Other,
}

impl CaptureError {
    /// What kind of store failure this is.
    pub fn fault(&self) -> StoreFault {
        let CaptureError::Sql(sqlx::Error::Database(db)) = self else {
            return StoreFault::Other;
        };
        let code = db.code().unwrap_or_default();
        if let Ok(extended) = code.parse::<i64>() {
            // SQLite: the primary result code is the low byte.
            return match extended & 0xff {
                13 => StoreFault::Full,
                5 | 6 => StoreFault::Busy,
                _ => StoreFault::Other,
            };
        }
        match code.get(..2) {
            Some("53") => StoreFault::Full,
            Some("40" | "55") => StoreFault::Busy,
            _ => StoreFault::Other,
        }
    }
}

impl Store {
    /// Whether the store is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        !matches!(self.pool, Pool::Sqlite(_))
    }

    /// The capture file, or the database URL without its password.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's redaction key, made on first use and kept in the store
    /// (every replica writing one store shares it).
    ///
    /// # Errors
    /// On a store failure.
    pub async fn redaction_key(&self) -> Result<[u8; 32], CaptureError> {
        let fresh: [u8; 32] = rand::random();
        self.set_redaction_key_if_missing(&fresh).await?;
        Ok(self.stored_redaction_key().await?.unwrap_or(fresh))
    }

    /// The store's redaction key if it has one; reads only.
    ///
    /// # Errors
    /// On a store failure, or a key of the wrong length.
    pub async fn stored_redaction_key(&self) -> Result<Option<[u8; 32]>, CaptureError> {
        let stored: Option<Vec<u8>> = on_pool!(self, p => {
            sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'redaction_key'")
                .fetch_optional(p)
                .await?
        });
        stored
            .map(|key| {
                key.try_into().map_err(|_| CaptureError::NotACapture {
                    path: self.path.clone(),
                    reason: "its redaction key is damaged".into(),
                })
            })
            .transpose()
    }

    async fn set_redaction_key_if_missing(&self, key: &[u8]) -> Result<(), CaptureError> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO store_meta (key, value) VALUES ('redaction_key', $1) ON CONFLICT DO NOTHING",
            )
            .bind(key)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Closes the pool (a SQLite WAL is checkpointed).
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await);
    }
}

/// Creates the file with mode 0600 if it is missing; tightens an existing
/// file to 0600 (a capture may hold request bodies and, on request, clear
/// credentials; the demo's credentials file holds passwords).
pub(crate) fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
