//! The capture store: the only module that speaks SQL.
//!
//! A capture is a SQLite file (WAL, 16 KiB pages) or, given a
//! `postgres://` URL, a PostgreSQL database that several recording proxies
//! write at once. Either holds any number of recording runs. The schema
//! lives in `migrations/sqlite/` and `migrations/postgres/` (the same
//! tables and columns in each database's types) and is applied by an
//! embedded migrator, so a capture opened by a newer tapedeck is upgraded in
//! place. Every query is written once, with `$N` parameters that both
//! databases read (but the batch insert, see [`insert_sql`]), and runs on
//! whichever pool the store has ([`on_pool!`]);
//! the few statements that differ (catalog lookups, JSON functions, WAL
//! checkpoints) say so where they branch. Writes come from the single
//! writer task ([`super::writer`]); reads serve `captures`, tests and replay.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, SqlStr};

use super::{
    CaptureError, ExchangeRecord, NewRun, RouteCount, RunChoice, RunSummary, SessionInfo,
    SessionSpan, SessionSummary, StoredExchange, as_us, now_epoch_us,
};
use crate::route;

/// Rows per multi-row INSERT: many rows per statement is what makes SQLite
/// fast through sqlx (each statement is a hand-off to its worker thread).
const ROWS_PER_STATEMENT: usize = 64;

const EXCHANGE_COLUMNS: &str = "capture_id, session_no, seq, started_at_us, offset_us, method, uri, \
     http_version, request_headers, request_body, request_body_len, request_truncated, status, \
     response_headers, response_body, response_body_len, response_truncated, ttfb_us, \
     duration_us, error_kind, error_message, response_chunks, ws_frames";
const EXCHANGE_PARAMS: usize = 23;

/// (version, description, SQLite script, PostgreSQL script).
const MIGRATIONS: [(i64, &str, &str, &str); 3] = [
    (
        1,
        "initial",
        include_str!("migrations/sqlite/0001_initial.sql"),
        include_str!("migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "response chunks",
        include_str!("migrations/sqlite/0002_response_chunks.sql"),
        include_str!("migrations/postgres/0002_response_chunks.sql"),
    ),
    (
        3,
        "websocket frames",
        include_str!("migrations/sqlite/0003_ws_frames.sql"),
        include_str!("migrations/postgres/0003_ws_frames.sql"),
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

    /// Starts a recording run and returns its id.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn begin_run(&self, run: &NewRun<'_>) -> Result<i64, CaptureError> {
        self.begin_run_at(run, env!("CARGO_PKG_VERSION"), now_epoch_us())
            .await
    }

    /// Records the dropped count of a run (called as it changes).
    ///
    /// # Errors
    /// On a store failure.
    pub async fn set_dropped(&self, run_id: i64, dropped: u64) -> Result<(), CaptureError> {
        on_pool!(self, p => {
            sqlx::query("UPDATE captures SET dropped = $1 WHERE id = $2")
                .bind(i64::try_from(dropped).unwrap_or(i64::MAX))
                .bind(run_id)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Closes a run: stop time, final counters.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn finish_run(&self, run_id: i64, dropped: u64) -> Result<RunSummary, CaptureError> {
        self.close_run(run_id, now_epoch_us(), dropped).await?;
        match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(p)
                    .await?;
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => {}
        }
        self.run(Some(run_id)).await
    }

    async fn close_run(
        &self,
        run_id: i64,
        stopped_at_us: i64,
        dropped: u64,
    ) -> Result<(), CaptureError> {
        on_pool!(self, p => {
            sqlx::query(
                "UPDATE captures SET stopped_at_us = $1, dropped = $2, \
                 exchanges = (SELECT count(*) FROM exchanges WHERE capture_id = captures.id), \
                 sessions = (SELECT count(*) FROM sessions WHERE capture_id = captures.id) \
                 WHERE id = $3",
            )
            .bind(stopped_at_us)
            .bind(i64::try_from(dropped).unwrap_or(i64::MAX))
            .bind(run_id)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Writes sessions first seen in this batch and a batch of exchanges, in
    /// one transaction.
    ///
    /// # Errors
    /// On a store failure; nothing of the batch is then stored.
    pub async fn insert_batch(
        &self,
        run_id: i64,
        new_sessions: &[Arc<SessionInfo>],
        records: &[ExchangeRecord],
    ) -> Result<(), CaptureError> {
        let sessions: Vec<SessionRow<'_>> = new_sessions
            .iter()
            .map(|s| SessionRow {
                session_no: s.session_no,
                key_kind: s.key_kind.as_str(),
                key: &s.key,
                client_addr: &s.client_addr,
                user_agent: s.user_agent.as_deref(),
                started_at_us: s.started_at_us,
            })
            .collect();
        let rows: Vec<ExchangeRow<'_>> = records
            .iter()
            .map(|r| ExchangeRow {
                session_no: r.session.session_no,
                seq: r.seq,
                started_at_us: r.started_at_us,
                offset_us: as_us(r.offset),
                method: r.method.as_str(),
                uri: r.uri.as_str(),
                http_version: r.http_version,
                request_headers: Cow::Owned(headers_json(&r.request_headers)),
                request_body: &r.request_body.bytes,
                request_body_len: len_i64(r.request_body.len),
                request_truncated: r.request_body.truncated,
                status: r.status.map(i64::from),
                response_headers: Cow::Owned(headers_json(&r.response_headers)),
                response_body: &r.response_body.bytes,
                response_body_len: len_i64(r.response_body.len),
                response_truncated: r.response_body.truncated,
                ttfb_us: r.ttfb.map(as_us),
                duration_us: as_us(r.duration),
                error_kind: r.failure.as_ref().map(|f| f.kind),
                error_message: r.failure.as_ref().map(|f| f.message.as_str()),
                response_chunks: json_unless_empty(&r.response_chunks),
                ws_frames: json_unless_empty(&r.ws_frames),
            })
            .collect();
        self.insert_rows(run_id, &sessions, &rows).await
    }

    /// Writes session and exchange rows of a run in one transaction.
    async fn insert_rows(
        &self,
        run_id: i64,
        sessions: &[SessionRow<'_>],
        rows: &[ExchangeRow<'_>],
    ) -> Result<(), CaptureError> {
        let numbered = self.is_postgres();
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for s in sessions {
                sqlx::query(
                    "INSERT INTO sessions (capture_id, session_no, key_kind, key, client_addr, user_agent, started_at_us) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(run_id)
                .bind(s.session_no)
                .bind(s.key_kind)
                .bind(s.key)
                .bind(s.client_addr)
                .bind(s.user_agent)
                .bind(s.started_at_us)
                .execute(&mut *tx)
                .await?;
            }
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::query(insert_sql(chunk.len(), numbered));
                for r in chunk {
                    q = q
                        .bind(run_id)
                        .bind(r.session_no)
                        .bind(r.seq)
                        .bind(r.started_at_us)
                        .bind(r.offset_us)
                        .bind(r.method)
                        .bind(r.uri)
                        .bind(r.http_version)
                        .bind(r.request_headers.as_ref())
                        .bind(r.request_body)
                        .bind(r.request_body_len)
                        .bind(r.request_truncated)
                        .bind(r.status)
                        .bind(r.response_headers.as_ref())
                        .bind(r.response_body)
                        .bind(r.response_body_len)
                        .bind(r.response_truncated)
                        .bind(r.ttfb_us)
                        .bind(r.duration_us)
                        .bind(r.error_kind)
                        .bind(r.error_message)
                        .bind(r.response_chunks.as_deref())
                        .bind(r.ws_frames.as_deref());
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every run, oldest first.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn runs(&self) -> Result<Vec<RunSummary>, CaptureError> {
        on_pool!(self, p => {
            let rows = sqlx::query(AssertSqlSafe(format!("{RUN_SELECT} ORDER BY c.id")))
                .fetch_all(p)
                .await?;
            rows.iter().map(run_from_row).collect()
        })
    }

    /// One run (`None`: the latest).
    ///
    /// # Errors
    /// [`CaptureError::NoSuchRun`] or [`CaptureError::Empty`].
    pub async fn run(&self, id: Option<i64>) -> Result<RunSummary, CaptureError> {
        on_pool!(self, p => {
            let row = match id {
                Some(id) => sqlx::query(AssertSqlSafe(format!("{RUN_SELECT} WHERE c.id = $1")))
                    .bind(id)
                    .fetch_optional(p)
                    .await?
                    .ok_or(CaptureError::NoSuchRun(id))?,
                None => sqlx::query(AssertSqlSafe(format!(
                    "{RUN_SELECT} ORDER BY c.id DESC LIMIT 1"
                )))
                .fetch_optional(p)
                .await?
                .ok_or(CaptureError::Empty)?,
            };
            run_from_row(&row)
        })
    }

    /// Sessions of a run with their exchange counts.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn sessions(&self, run_id: i64) -> Result<Vec<SessionSummary>, CaptureError> {
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT s.session_no, s.key_kind, s.key, s.client_addr, count(e.id) AS exchanges, \
                        count(e.error_kind) AS failed, \
                        coalesce(min(e.offset_us), 0) AS first_offset_us, \
                        coalesce(max(e.offset_us + e.duration_us), 0) AS last_end_us \
                 FROM sessions s LEFT JOIN exchanges e \
                   ON e.capture_id = s.capture_id AND e.session_no = s.session_no \
                 WHERE s.capture_id = $1 \
                 GROUP BY s.session_no, s.key_kind, s.key, s.client_addr ORDER BY s.session_no",
            )
            .bind(run_id)
            .fetch_all(p)
            .await?;
            rows.iter().map(session_from_row).collect()
        })
    }

    /// Every session row of a run as stored (for copying a capture).
    async fn session_rows(&self, run_id: i64) -> Result<Vec<OwnedSessionRow>, CaptureError> {
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT session_no, key_kind, key, client_addr, user_agent, started_at_us \
                 FROM sessions WHERE capture_id = $1 ORDER BY session_no",
            )
            .bind(run_id)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(OwnedSessionRow {
                        session_no: r.try_get("session_no")?,
                        key_kind: r.try_get("key_kind")?,
                        key: r.try_get("key")?,
                        client_addr: r.try_get("client_addr")?,
                        user_agent: r.try_get("user_agent")?,
                        started_at_us: r.try_get("started_at_us")?,
                    })
                })
                .collect()
        })
    }

    /// Exchange counts per normalized route, busiest first.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn route_counts(&self, run_id: i64) -> Result<Vec<RouteCount>, CaptureError> {
        use futures_util::TryStreamExt;
        let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
        on_pool!(self, p => {
            let mut rows = sqlx::query(
                "SELECT method, uri, status, error_kind IS NOT NULL AS failed FROM exchanges WHERE capture_id = $1",
            )
            .bind(run_id)
            .fetch(p);
            while let Some(row) = rows.try_next().await? {
                let method: String = row.try_get("method")?;
                let uri: String = row.try_get("uri")?;
                let status: Option<i64> = row.try_get("status")?;
                let failed: bool = row.try_get("failed")?;
                let entry = counts.entry(route::normalize(&method, &uri)).or_default();
                entry.0 += 1;
                if failed || status.is_none_or(|s| s >= 500) {
                    entry.1 += 1;
                }
            }
        });
        let mut out: Vec<RouteCount> = counts
            .into_iter()
            .map(|(route, (exchanges, errors))| RouteCount {
                route,
                exchanges,
                errors,
            })
            .collect();
        out.sort_by(|a, b| b.exchanges.cmp(&a.exchanges).then(a.route.cmp(&b.route)));
        Ok(out)
    }

    /// Every exchange of a run, by session and sequence.
    ///
    /// # Errors
    /// On a store failure or a damaged header column.
    pub async fn exchanges(&self, run_id: i64) -> Result<Vec<StoredExchange>, CaptureError> {
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT * FROM exchanges WHERE capture_id = $1 ORDER BY session_no, seq",
            )
            .bind(run_id)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| exchange_from_row(&self.path, r))
                .collect()
        })
    }

    /// The runs a replay plays, oldest first.
    ///
    /// # Errors
    /// [`CaptureError::NoSuchRun`], [`CaptureError::Empty`], or a store
    /// failure.
    pub async fn select_runs(&self, choice: RunChoice) -> Result<Vec<RunSummary>, CaptureError> {
        match choice {
            RunChoice::Latest => Ok(vec![self.run(None).await?]),
            RunChoice::Id(id) => Ok(vec![self.run(Some(id)).await?]),
            RunChoice::All => {
                let runs = self.runs().await?;
                if runs.is_empty() {
                    return Err(CaptureError::Empty);
                }
                Ok(runs)
            }
        }
    }

    /// What the replay plan needs of the sessions of these runs: each
    /// session's first request in µs from the first request of them all
    /// (wall time, so runs recorded side by side interleave as they
    /// happened), and the span from that first request to the last
    /// response's end.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn session_spans(
        &self,
        run_ids: &[i64],
    ) -> Result<(Vec<SessionSpan>, i64), CaptureError> {
        if run_ids.is_empty() {
            return Ok((Vec::new(), 0));
        }
        // Run ids are numbers: written into the statement as they are.
        let ids: Vec<String> = run_ids.iter().map(i64::to_string).collect();
        let sql = format!(
            "SELECT capture_id, session_no, min(started_at_us) AS first_us, count(*) AS requests, \
                    max(started_at_us + duration_us) AS last_end_us \
             FROM exchanges WHERE capture_id IN ({}) \
             GROUP BY capture_id, session_no ORDER BY first_us, capture_id, session_no",
            ids.join(", ")
        );
        let mut spans = Vec::new();
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        on_pool!(self, p => {
            let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(p).await?;
            spans.reserve(rows.len());
            for r in &rows {
                let first_us: i64 = r.try_get("first_us")?;
                first = first.min(first_us);
                last = last.max(r.try_get("last_end_us")?);
                spans.push(SessionSpan {
                    run_id: r.try_get("capture_id")?,
                    session_no: r.try_get("session_no")?,
                    first_offset_us: first_us,
                    requests: r.try_get::<i64, _>("requests")?.max(0) as u64,
                });
            }
        });
        if spans.is_empty() {
            return Ok((spans, 0));
        }
        // The plan counts from the first request.
        for s in &mut spans {
            s.first_offset_us -= first;
        }
        Ok((spans, last - first))
    }

    /// Distinct `Authorization` credentials (the part after the scheme) of
    /// a run, in the order they were first sent.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn credentials_in_order(&self, run_id: i64) -> Result<Vec<String>, CaptureError> {
        // The header column is a JSON array of [name, value] pairs; each
        // database unnests it with its own functions.
        let rows: Vec<String> =
            match &self.pool {
                Pool::Sqlite(p) => sqlx::query_scalar(
                    "SELECT j.value ->> 1 FROM exchanges AS e, json_each(e.request_headers) AS j \
                     WHERE e.capture_id = $1 AND lower(j.value ->> 0) = 'authorization' \
                     ORDER BY e.started_at_us, e.id",
                )
                .bind(run_id)
                .fetch_all(p)
                .await?,
                #[cfg(feature = "postgres")]
                Pool::Postgres(p) => {
                    sqlx::query_scalar(
                        "SELECT j.value ->> 1 FROM exchanges AS e, \
                            jsonb_array_elements(e.request_headers::jsonb) AS j(value) \
                     WHERE e.capture_id = $1 AND lower(j.value ->> 0) = 'authorization' \
                     ORDER BY e.started_at_us, e.id",
                    )
                    .bind(run_id)
                    .fetch_all(p)
                    .await?
                }
            };
        let mut seen = std::collections::HashSet::new();
        Ok(rows
            .into_iter()
            .map(|v| {
                v.split_once(' ')
                    .map_or(v.as_str(), |(_, c)| c.trim())
                    .to_string()
            })
            .filter(|c| seen.insert(c.clone()))
            .collect())
    }

    /// The exchanges of one session, in send order.
    ///
    /// # Errors
    /// On a store failure or a damaged header column.
    pub async fn session_exchanges(
        &self,
        run_id: i64,
        session_no: i64,
    ) -> Result<Vec<StoredExchange>, CaptureError> {
        on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT * FROM exchanges WHERE capture_id = $1 AND session_no = $2 ORDER BY seq",
            )
            .bind(run_id)
            .bind(session_no)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| exchange_from_row(&self.path, r))
                .collect()
        })
    }

    /// Copies every run of `self` into `to`, run by run (new run ids,
    /// everything else as stored); a fresh `to` gets this store's redaction
    /// key, so recording into it later keeps the same markers. Returns the
    /// (source id, new id) of each run copied.
    ///
    /// # Errors
    /// On a failure of either store; runs copied before it stay copied.
    pub async fn copy_into(
        &self,
        to: &Store,
        mut progress: impl FnMut(u64),
    ) -> Result<Vec<(i64, i64)>, CaptureError> {
        let key = self.redaction_key().await?;
        to.set_redaction_key_if_missing(&key).await?;
        let mut copied = Vec::new();
        for run in self.runs().await? {
            let id = to
                .begin_run_at(
                    &NewRun {
                        upstream: &run.upstream,
                        listen: &run.listen,
                        max_body_bytes: run.max_body_bytes.max(0) as u64,
                        redaction: &run.redaction,
                    },
                    &run.tool_version,
                    run.started_at_us,
                )
                .await?;
            let sessions = self.session_rows(run.id).await?;
            let sessions: Vec<SessionRow<'_>> =
                sessions.iter().map(OwnedSessionRow::borrow).collect();
            to.insert_rows(id, &sessions, &[]).await?;
            for session in &sessions {
                let exchanges = self.session_exchanges(run.id, session.session_no).await?;
                let rows: Vec<ExchangeRow<'_>> =
                    exchanges.iter().map(ExchangeRow::stored).collect();
                to.insert_rows(id, &[], &rows).await?;
                progress(rows.len() as u64);
            }
            match run.stopped_at_us {
                Some(at) => to.close_run(id, at, run.dropped.max(0) as u64).await?,
                None => to.set_dropped(id, run.dropped.max(0) as u64).await?,
            }
            copied.push((run.id, id));
        }
        Ok(copied)
    }

    /// [`Store::begin_run`] with a given version and start (a copied run).
    async fn begin_run_at(
        &self,
        run: &NewRun<'_>,
        tool_version: &str,
        started_at_us: i64,
    ) -> Result<i64, CaptureError> {
        let id = on_pool!(self, p => {
            sqlx::query_scalar(
                "INSERT INTO captures (upstream, listen, tool_version, started_at_us, max_body_bytes, redaction) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(run.upstream)
            .bind(run.listen)
            .bind(tool_version)
            .bind(started_at_us)
            .bind(i64::try_from(run.max_body_bytes).unwrap_or(i64::MAX))
            .bind(run.redaction)
            .fetch_one(p)
            .await?
        });
        Ok(id)
    }

    /// Closes the pool (a SQLite WAL is checkpointed).
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await);
    }
}

/// A session row to write.
struct SessionRow<'a> {
    session_no: i64,
    key_kind: &'a str,
    key: &'a str,
    client_addr: &'a str,
    user_agent: Option<&'a str>,
    started_at_us: i64,
}

/// A session row as read.
struct OwnedSessionRow {
    session_no: i64,
    key_kind: String,
    key: String,
    client_addr: String,
    user_agent: Option<String>,
    started_at_us: i64,
}

impl OwnedSessionRow {
    fn borrow(&self) -> SessionRow<'_> {
        SessionRow {
            session_no: self.session_no,
            key_kind: &self.key_kind,
            key: &self.key,
            client_addr: &self.client_addr,
            user_agent: self.user_agent.as_deref(),
            started_at_us: self.started_at_us,
        }
    }
}

/// An exchange row to write, in column order.
struct ExchangeRow<'a> {
    session_no: i64,
    seq: i64,
    started_at_us: i64,
    offset_us: i64,
    method: &'a str,
    uri: &'a str,
    http_version: &'a str,
    request_headers: Cow<'a, str>,
    request_body: &'a [u8],
    request_body_len: i64,
    request_truncated: bool,
    status: Option<i64>,
    response_headers: Cow<'a, str>,
    response_body: &'a [u8],
    response_body_len: i64,
    response_truncated: bool,
    ttfb_us: Option<i64>,
    duration_us: i64,
    error_kind: Option<&'a str>,
    error_message: Option<&'a str>,
    response_chunks: Option<String>,
    ws_frames: Option<String>,
}

impl<'a> ExchangeRow<'a> {
    /// A stored exchange written again as it is (copying a capture).
    fn stored(e: &'a StoredExchange) -> ExchangeRow<'a> {
        let headers = |h: &[(String, String)]| {
            Cow::Owned(serde_json::to_string(h).unwrap_or_else(|_| "[]".into()))
        };
        ExchangeRow {
            session_no: e.session_no,
            seq: e.seq,
            started_at_us: e.started_at_us,
            offset_us: e.offset_us,
            method: &e.method,
            uri: &e.uri,
            http_version: &e.http_version,
            request_headers: headers(&e.request_headers),
            request_body: &e.request_body,
            request_body_len: e.request_body_len,
            request_truncated: e.request_truncated,
            status: e.status,
            response_headers: headers(&e.response_headers),
            response_body: &e.response_body,
            response_body_len: e.response_body_len,
            response_truncated: e.response_truncated,
            ttfb_us: e.ttfb_us,
            duration_us: e.duration_us,
            error_kind: e.error_kind.as_deref(),
            error_message: e.error_message.as_deref(),
            response_chunks: json_unless_empty(&e.response_chunks),
            ws_frames: json_unless_empty(&e.ws_frames),
        }
    }
}

const RUN_SELECT: &str = "SELECT c.id, c.upstream, c.listen, c.tool_version, c.started_at_us, \
    c.stopped_at_us, c.max_body_bytes, c.redaction, c.dropped, \
    (SELECT count(*) FROM exchanges e WHERE e.capture_id = c.id) AS exchanges, \
    (SELECT count(*) FROM sessions s WHERE s.capture_id = c.id) AS sessions \
    FROM captures c";

// The row readers are generic over the database; Rust wants every column
// type's decoding spelled out as a bound.
fn run_from_row<R>(r: &R) -> Result<RunSummary, CaptureError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(RunSummary {
        id: r.try_get("id")?,
        upstream: r.try_get("upstream")?,
        listen: r.try_get("listen")?,
        tool_version: r.try_get("tool_version")?,
        started_at_us: r.try_get("started_at_us")?,
        stopped_at_us: r.try_get("stopped_at_us")?,
        max_body_bytes: r.try_get("max_body_bytes")?,
        redaction: r.try_get("redaction")?,
        exchanges: r.try_get("exchanges")?,
        sessions: r.try_get("sessions")?,
        dropped: r.try_get("dropped")?,
    })
}

fn session_from_row<R>(r: &R) -> Result<SessionSummary, CaptureError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SessionSummary {
        session_no: r.try_get("session_no")?,
        key_kind: r.try_get("key_kind")?,
        key: r.try_get("key")?,
        client_addr: r.try_get("client_addr")?,
        exchanges: r.try_get("exchanges")?,
        failed: r.try_get("failed")?,
        first_offset_us: r.try_get("first_offset_us")?,
        last_end_us: r.try_get("last_end_us")?,
    })
}

fn exchange_from_row<R>(path: &Path, r: &R) -> Result<StoredExchange, CaptureError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let headers = |col: &str| -> Result<Vec<(String, String)>, CaptureError> {
        let text: String = r.try_get(col)?;
        serde_json::from_str(&text).map_err(|e| CaptureError::NotACapture {
            path: path.to_path_buf(),
            reason: format!("column {col} does not hold a header list: {e}"),
        })
    };
    // A nullable JSON list column; NULL is the empty list.
    fn list<T: serde::de::DeserializeOwned>(
        path: &Path,
        text: Option<String>,
        col: &str,
    ) -> Result<Vec<T>, CaptureError> {
        match text {
            Some(text) => serde_json::from_str(&text).map_err(|e| CaptureError::NotACapture {
                path: path.to_path_buf(),
                reason: format!("column {col} does not hold what tapedeck wrote there: {e}"),
            }),
            None => Ok(Vec::new()),
        }
    }
    Ok(StoredExchange {
        id: r.try_get("id")?,
        session_no: r.try_get("session_no")?,
        seq: r.try_get("seq")?,
        started_at_us: r.try_get("started_at_us")?,
        offset_us: r.try_get("offset_us")?,
        method: r.try_get("method")?,
        uri: r.try_get("uri")?,
        http_version: r.try_get("http_version")?,
        request_headers: headers("request_headers")?,
        request_body: r.try_get("request_body")?,
        request_body_len: r.try_get("request_body_len")?,
        request_truncated: r.try_get("request_truncated")?,
        status: r.try_get("status")?,
        response_headers: headers("response_headers")?,
        response_body: r.try_get("response_body")?,
        response_body_len: r.try_get("response_body_len")?,
        response_truncated: r.try_get("response_truncated")?,
        ttfb_us: r.try_get("ttfb_us")?,
        duration_us: r.try_get("duration_us")?,
        error_kind: r.try_get("error_kind")?,
        error_message: r.try_get("error_message")?,
        response_chunks: list(path, r.try_get("response_chunks")?, "response_chunks")?,
        ws_frames: list(path, r.try_get("ws_frames")?, "ws_frames")?,
    })
}

/// A list as JSON text, NULL when empty.
fn json_unless_empty<T: serde::Serialize>(items: &[T]) -> Option<String> {
    (!items.is_empty())
        .then(|| serde_json::to_string(items).ok())
        .flatten()
}

/// `INSERT ... VALUES (…), (…)` for `rows` rows, built once per size and
/// placeholder style. SQLite gets anonymous `?` here: it looks a numbered
/// parameter up by name on every execution, which made 64-row statements
/// (1,472 parameters) three times slower. PostgreSQL needs `$N`.
fn insert_sql(rows: usize, numbered: bool) -> SqlStr {
    static CACHE: OnceLock<[Vec<Arc<str>>; 2]> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        [false, true].map(|numbered| {
            (0..=ROWS_PER_STATEMENT)
                .map(|n| {
                    let values = (0..n)
                        .map(|row| {
                            let params: Vec<String> = (1..=EXCHANGE_PARAMS)
                                .map(|col| match numbered {
                                    true => format!("${}", row * EXCHANGE_PARAMS + col),
                                    false => "?".to_string(),
                                })
                                .collect();
                            format!("({})", params.join(", "))
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    Arc::from(format!(
                        "INSERT INTO exchanges ({EXCHANGE_COLUMNS}) VALUES {values}"
                    ))
                })
                .collect()
        })
    });
    // Callers pass chunks of at most ROWS_PER_STATEMENT rows.
    let sql = cache[usize::from(numbered)][rows.min(ROWS_PER_STATEMENT)].clone();
    sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(sql))
}

/// Headers as a JSON array of `[name, value]` pairs: order and repeats
/// kept, readable with SQLite's `json_each`.
fn headers_json(headers: &http::HeaderMap) -> String {
    let mut out = String::with_capacity(64 * headers.len() + 2);
    out.push('[');
    for (i, (name, value)) in headers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("[\"");
        // Header names are lower-case tokens: nothing to escape.
        out.push_str(name.as_str());
        out.push_str("\",");
        push_json_string(&mut out, &String::from_utf8_lossy(value.as_bytes()));
        out.push(']');
    }
    out.push(']');
    out
}

/// Appends `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
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

fn len_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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
    use super::headers_json;

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
    use http::{HeaderMap, HeaderValue};

    #[test]
    fn headers_serialize_as_json_pairs_in_order_with_escapes() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-b", HeaderValue::from_static("say \"hi\" \\ there"));
        h.append("x-a", HeaderValue::from_static("2"));
        let text = headers_json(&h);
        let parsed: Vec<(String, String)> = serde_json::from_str(&text).expect("valid JSON");
        let pairs: Vec<(&str, &str)> = parsed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("x-a", "1"), ("x-a", "2"), ("x-b", "say \"hi\" \\ there")]
        );
    }
}
