//! Opening a store: creating a capture for recording, opening one to
//! change it or only to read it, the schema's versions and migrations.
//! A SQLite file is checked before SQLite sees it (a missing or empty file
//! would become a new database); a store that only reads sets no pragma
//! that writes and runs no statement that would.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Pool, Store, create_private_file, is_postgres_url};
use crate::capture::CaptureError;

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

/// The newest schema this tapedeck reads and writes.
const LATEST_SCHEMA: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Created when missing, migrated (recording).
    Create,
    /// Read and written (`captures delete`, `prune`).
    Write,
    /// Read only (`query_only`); SQLite keeps its WAL index beside the
    /// file while it is open.
    Read,
    /// Read only from storage nobody can change (SQLite keeps nothing
    /// beside the file, and takes no locks).
    Immutable,
}

impl CaptureError {
    /// What went wrong, without the path the message names.
    fn cause(&self) -> String {
        match self {
            CaptureError::Open { source, .. } => source.to_string(),
            CaptureError::NotACapture { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }

    /// Whether SQLite could not open a read-only connection because it
    /// cannot keep its WAL index beside the file (read-only storage):
    /// SQLITE_CANTOPEN or SQLITE_READONLY.
    fn is_unwritable_storage(&self) -> bool {
        let sql = match self {
            CaptureError::Sql(e) => e,
            CaptureError::Open { source, .. } => match source.downcast_ref::<sqlx::Error>() {
                Some(e) => e,
                None => return false,
            },
            _ => return false,
        };
        let sqlx::Error::Database(db) = sql else {
            return false;
        };
        db.code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|code| matches!(code & 0xff, 8 | 14))
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
        let store = Self::connect(path, Access::Create).await?;
        if !store.has_schema().await? && store.has_foreign_tables().await? {
            return Err(CaptureError::NotACapture {
                path: store.path.clone(),
                reason: "it is a database of something else; choose a new file or database".into(),
            });
        }
        store.migrate().await?;
        Ok(store)
    }

    /// Opens an existing capture for reading and changing (`captures
    /// delete`, `prune`); a capture written by an older tapedeck is
    /// upgraded in place.
    ///
    /// # Errors
    /// When the file is missing, empty, not SQLite, or not a tapedeck
    /// capture, written by a newer tapedeck, or the database cannot be
    /// reached or holds no capture.
    pub async fn open(path: &Path) -> Result<Store, CaptureError> {
        check_capture_file(path)?;
        let opened = async {
            let store = Self::connect(path, Access::Write).await?;
            store.check_schema().await?;
            store.migrate().await?;
            // A write that changes nothing, so storage that refuses writes
            // says so here rather than halfway through a removal.
            on_pool!(store, p => {
                sqlx::query("DELETE FROM store_meta WHERE false").execute(p).await?;
            });
            Ok::<_, CaptureError>(store)
        };
        match opened.await {
            Err(e) if !is_postgres_url(path) && e.is_unwritable_storage() => {
                Err(CaptureError::Open {
                    path: path.to_path_buf(),
                    source: "the file or its folder cannot be written (read-only storage?); \
                             this command changes the capture: copy it to writable storage \
                             first (`tapedeck captures copy`)"
                        .into(),
                })
            }
            other => other,
        }
    }

    /// Opens an existing capture only to read it (`captures list`, `show`,
    /// `copy`'s source, `replay`): no statement that writes (SQLite
    /// `query_only`), nothing left beside the file, so a capture on
    /// read-only storage or a file still being recorded is read as it is.
    /// On storage where SQLite cannot keep its WAL index beside the file,
    /// the file is read as immutable (nobody can change it there). The one
    /// write left: a capture written by an older tapedeck is upgraded in
    /// place first (once), which read-only storage refuses with an error
    /// saying so.
    ///
    /// # Errors
    /// As [`Store::open`], and when an older capture cannot be upgraded.
    pub async fn open_read_only(path: &Path) -> Result<Store, CaptureError> {
        check_capture_file(path)?;
        let mut store = Self::connect(path, Access::Read).await?;
        let schema = match store.check_schema().await {
            Err(e) if !store.is_postgres() && e.is_unwritable_storage() => {
                store.close().await;
                store = Self::connect(path, Access::Immutable).await?;
                store.check_schema().await?
            }
            other => other?,
        };
        if schema == LATEST_SCHEMA {
            return Ok(store);
        }
        let shown = store.path.clone();
        store.close().await;
        let upgraded = Self::open(path).await.map_err(|e| CaptureError::NotACapture {
            path: shown,
            reason: format!(
                "it was written by an older tapedeck (schema {schema}; this one reads {LATEST_SCHEMA}) \
                 and upgrading it in place failed ({}); copy it to writable storage and run again",
                e.cause()
            ),
        })?;
        tracing::info!(
            capture = %upgraded.path.display(),
            from = schema,
            to = LATEST_SCHEMA,
            "upgraded the capture's schema in place"
        );
        Ok(upgraded)
    }

    /// That the store holds a tapedeck capture this tapedeck can read: its
    /// schema version (older ones are upgraded by [`Store::migrate`]).
    async fn check_schema(&self) -> Result<i64, CaptureError> {
        if !self.has_schema().await? {
            return Err(CaptureError::NotACapture {
                path: self.path.clone(),
                reason: "it has no tapedeck tables".into(),
            });
        }
        let version: i64 = on_pool!(self, p => {
            sqlx::query_scalar(
                "SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success",
            )
            .fetch_one(p)
            .await
            .map_err(|e| classify_open_error(&self.path, e))?
        });
        if version > LATEST_SCHEMA {
            return Err(CaptureError::NotACapture {
                path: self.path.clone(),
                reason: format!(
                    "it was written by a newer tapedeck (schema {version}; this one reads up to \
                     {LATEST_SCHEMA}); read it with that version or a later one"
                ),
            });
        }
        Ok(version)
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

    async fn connect(path: &Path, access: Access) -> Result<Store, CaptureError> {
        if is_postgres_url(path) {
            return Self::connect_postgres(path, access).await;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(2));
        let options = match access {
            Access::Create | Access::Write => options
                .create_if_missing(access == Access::Create)
                .page_size(16384)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal),
            // No pragma that writes (the journal mode is the file's own),
            // and no statement that would. Opened for writing all the same
            // where the file allows it, so the last connection to close
            // removes the WAL files it made beside the capture.
            Access::Read => options.pragma("query_only", "ON"),
            Access::Immutable => options.read_only(true).immutable(true),
        };
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
    async fn connect_postgres(url: &Path, access: Access) -> Result<Store, CaptureError> {
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
        let options = if matches!(access, Access::Read | Access::Immutable) {
            options.options([("default_transaction_read_only", "on")])
        } else {
            options
        };
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
    async fn connect_postgres(url: &Path, _: Access) -> Result<Store, CaptureError> {
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

/// That a capture file argument names a file with something in it (a
/// PostgreSQL URL is checked when connecting): SQLite would take a missing
/// or empty file for a new database and write one.
fn check_capture_file(path: &Path) -> Result<(), CaptureError> {
    if is_postgres_url(path) {
        return Ok(());
    }
    let reason = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => "it is a folder; name the capture file in it".to_string(),
        Ok(m) if m.len() == 0 => "it is empty (0 bytes); record into it with \
            `tapedeck record --capture FILE` or name another file"
            .to_string(),
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "no such file; record one with `tapedeck record` or `tapedeck demo`".to_string()
        }
        Err(e) => {
            return Err(CaptureError::Open {
                path: path.to_path_buf(),
                source: Box::new(e),
            });
        }
    };
    Err(CaptureError::NotACapture {
        path: path.to_path_buf(),
        reason,
    })
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
