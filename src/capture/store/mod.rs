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
//! This file owns the pool: opening, creating, migrating, the redaction key
//! and closing. The statements live beside it by direction: `write.rs`
//! (runs and batches from the single writer task, [`super::writer`]),
//! `read.rs` (what `captures`, replay, the demo and tests read), `copy.rs`
//! (a capture into another store), `remove.rs` (runs out of a capture,
//! and their traces out of the file) and `rows.rs` (the row shapes between
//! the capture's plain types and the columns). Input and output are the
//! capture's plain types; nothing here knows replay, report, proxy or demo.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::CaptureError;

/// (version, description, SQLite script, PostgreSQL script).
const MIGRATIONS: [(i64, &str, &str, &str); 5] = [
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
        include_str!("../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "response chunks",
        include_str!("../migrations/sqlite/0002_response_chunks.sql"),
        include_str!("../migrations/postgres/0002_response_chunks.sql"),
    ),
    (
        3,
        "websocket frames",
        include_str!("../migrations/sqlite/0003_ws_frames.sql"),
        include_str!("../migrations/postgres/0003_ws_frames.sql"),
    ),
    (
        4,
        "sample fraction",
        include_str!("../migrations/sqlite/0004_sample_fraction.sql"),
        include_str!("../migrations/postgres/0004_sample_fraction.sql"),
    ),
    (
        5,
        "websocket frame parts",
        include_str!("../migrations/sqlite/0005_ws_frame_parts.sql"),
        include_str!("../migrations/postgres/0005_ws_frame_parts.sql"),
    ),
];

fn migrator(postgres: bool) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sqlite, pg)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                SqlStr::from_static(if postgres { pg } else { sqlite }),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

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
    /// Opens a capture for recording: a SQLite file, created (mode 0600)
    /// with its parent folders when missing, or a `postgres://` database
    /// (which must exist); the schema is applied either way.
    ///
    /// # Errors
    /// When the file cannot be created or is not a SQLite database, or the
    /// database cannot be reached or holds other tables.
    pub async fn create(path: &Path) -> Result<Store, CaptureError> {
        if !is_postgres_url(path) {
            let open_err = |source: Box<dyn std::error::Error + Send + Sync>| CaptureError::Open {
                path: path.to_path_buf(),
                source,
            };
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| open_err(Box::new(e)))?;
            }
            create_private_file(path).map_err(|e| open_err(Box::new(e)))?;
        }
        let store = Self::connect(path, true).await?;
        if !store.has_schema().await? && store.has_foreign_tables().await? {
            return Err(CaptureError::NotACapture {
                path: store.path.clone(),
                reason: "it is a database of something else; choose a new file or database".into(),
            });
        }
        store.migrate().await?;
        Ok(store)
    }

    /// Opens an existing capture for reading (and appending).
    ///
    /// # Errors
    /// When the file is missing, not SQLite, or not a tapedeck capture, or
    /// the database cannot be reached or holds no capture.
    pub async fn open(path: &Path) -> Result<Store, CaptureError> {
        if !is_postgres_url(path) && !path.is_file() {
            return Err(CaptureError::Open {
                path: path.to_path_buf(),
                source: "no such file; record one with `tapedeck record` or `tapedeck demo`".into(),
            });
        }
        let store = Self::connect(path, false).await?;
        if !store.has_schema().await? {
            return Err(CaptureError::NotACapture {
                path: store.path.clone(),
                reason: "it has no tapedeck tables".into(),
            });
        }
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the embedded schema migrations (on PostgreSQL under the
    /// migrator's advisory lock, so replicas starting together agree).
    async fn migrate(&self) -> Result<(), CaptureError> {
        let migrated = match &self.pool {
            Pool::Sqlite(p) => migrator(false).run(p).await,
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => migrator(true).run(p).await,
        };
        migrated.map_err(|e| CaptureError::NotACapture {
            path: self.path.clone(),
            reason: format!("schema migration failed: {e}"),
        })
    }

    async fn connect(path: &Path, create: bool) -> Result<Store, CaptureError> {
        if is_postgres_url(path) {
            return Self::connect_postgres(path).await;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .page_size(16384)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(2));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| classify_open_error(path, e))?;
        Ok(Store {
            pool: Pool::Sqlite(pool),
            path: path.to_path_buf(),
        })
    }

    #[cfg(feature = "postgres")]
    async fn connect_postgres(url: &Path) -> Result<Store, CaptureError> {
        use std::str::FromStr;
        let text = url.to_str().unwrap_or_default();
        let shown = PathBuf::from(without_password(text));
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| CaptureError::Open {
            path: shown.clone(),
            source,
        };
        let options = sqlx::postgres::PgConnectOptions::from_str(text)
            .map_err(|e| open_err(format!("not a PostgreSQL URL: {e}").into()))?
            .application_name("tapedeck");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| {
                open_err(
                    format!("{e} (is the server running, and does the database exist?)").into(),
                )
            })?;
        Ok(Store {
            pool: Pool::Postgres(pool),
            path: shown,
        })
    }

    #[cfg(not(feature = "postgres"))]
    async fn connect_postgres(url: &Path) -> Result<Store, CaptureError> {
        Err(CaptureError::Open {
            path: PathBuf::from(without_password(url.to_str().unwrap_or_default())),
            source: "this tapedeck was built without the `postgres` feature; \
                     build it with default features to use a PostgreSQL capture"
                .into(),
        })
    }

    async fn has_schema(&self) -> Result<bool, CaptureError> {
        let n: i64 = match &self.pool {
            Pool::Sqlite(p) => sqlx::query_scalar(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'store_meta'",
            )
            .fetch_one(p)
            .await
            .map_err(|e| classify_open_error(&self.path, e))?,
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => {
                sqlx::query_scalar(
                    "SELECT count(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = 'store_meta'",
                )
                .fetch_one(p)
                .await?
            }
        };
        Ok(n > 0)
    }

    async fn has_foreign_tables(&self) -> Result<bool, CaptureError> {
        let n: i64 = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
                     AND name <> '_sqlx_migrations'",
                )
                .fetch_one(p)
                .await?
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => {
                sqlx::query_scalar(
                    "SELECT count(*) FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
                )
                .fetch_one(p)
                .await?
            }
        };
        Ok(n > 0)
    }

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
        let stored: Vec<u8> = on_pool!(self, p => {
            sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'redaction_key'")
                .fetch_one(p)
                .await?
        });
        stored.try_into().map_err(|_| CaptureError::NotACapture {
            path: self.path.clone(),
            reason: "its redaction key is damaged".into(),
        })
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

/// A database URL as it may be shown: the password replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let path = &rest[authority.len()..];
    match authority.rsplit_once('@') {
        Some((credentials, host)) if credentials.contains(':') => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_string(),
    }
}

fn classify_open_error(path: &Path, e: sqlx::Error) -> CaptureError {
    let text = e.to_string();
    if text.contains("not a database") || text.contains("malformed") {
        CaptureError::NotACapture {
            path: path.to_path_buf(),
            reason: text,
        }
    } else {
        CaptureError::Open {
            path: path.to_path_buf(),
            source: Box::new(e),
        }
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

#[cfg(test)]
mod tests {
    #[test]
    fn database_urls_are_shown_without_their_password() {
        use super::without_password as shown;
        assert_eq!(
            shown("postgres://tapedeck:s3cret@db:5432/captures?sslmode=require"),
            "postgres://tapedeck:***@db:5432/captures?sslmode=require"
        );
        assert_eq!(
            shown("postgres://tapedeck:s3cret@db"),
            "postgres://tapedeck:***@db"
        );
        assert_eq!(
            shown("postgres://tapedeck@db/c"),
            "postgres://tapedeck@db/c"
        );
        assert_eq!(shown("captures/a.db"), "captures/a.db");
    }
}
