//! The SQLite capture store: the only module that speaks SQL.
//!
//! One file (WAL, 16 KiB pages) holds any number of recording runs. The
//! schema lives in `migrations/sqlite/` and is applied by an embedded
//! migrator, so a capture opened by a newer tapedeck is upgraded in place.
//! Writes come from the single writer task ([`super::writer`]); reads serve
//! `captures list|show`, tests and replay.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, SqlStr};

use super::{CaptureError, ExchangeRecord, RunChoice, SessionInfo, as_us, now_epoch_us};
use crate::route;

/// Rows per multi-row INSERT: many rows per statement is what makes SQLite
/// fast through sqlx (each statement is a hand-off to its worker thread).
const ROWS_PER_STATEMENT: usize = 64;

const EXCHANGE_COLUMNS: &str = "capture_id, session_no, seq, started_at_us, offset_us, method, uri, \
     http_version, request_headers, request_body, request_body_len, request_truncated, status, \
     response_headers, response_body, response_body_len, response_truncated, ttfb_us, \
     duration_us, error_kind, error_message, response_chunks, ws_frames";
const EXCHANGE_PARAMS: usize = 23;

fn migrator() -> Migrator {
    let initial = Migration::new(
        1,
        Cow::Borrowed("initial"),
        MigrationType::Simple,
        SqlStr::from_static(include_str!("migrations/sqlite/0001_initial.sql")),
        false,
    );
    let chunks = Migration::new(
        2,
        Cow::Borrowed("response chunks"),
        MigrationType::Simple,
        SqlStr::from_static(include_str!("migrations/sqlite/0002_response_chunks.sql")),
        false,
    );
    let ws = Migration::new(
        3,
        Cow::Borrowed("websocket frames"),
        MigrationType::Simple,
        SqlStr::from_static(include_str!("migrations/sqlite/0003_ws_frames.sql")),
        false,
    );
    Migrator {
        migrations: Cow::Owned(vec![initial, chunks, ws]),
        ..Migrator::DEFAULT
    }
}

/// An open capture store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
}

/// One recording run as listed by `captures list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Run id.
    pub id: i64,
    /// Upstream URL the proxy forwarded to.
    pub upstream: String,
    /// Address the proxy listened on.
    pub listen: String,
    /// tapedeck version that recorded it.
    pub tool_version: String,
    /// Start, µs since the Unix epoch.
    pub started_at_us: i64,
    /// Stop, µs since the Unix epoch; `None` while recording (or if the
    /// recorder was killed).
    pub stopped_at_us: Option<i64>,
    /// Body cap in bytes.
    pub max_body_bytes: i64,
    /// What was redacted.
    pub redaction: String,
    /// Exchanges stored.
    pub exchanges: i64,
    /// Sessions stored.
    pub sessions: i64,
    /// Exchanges observed but not stored (full queue or store failure).
    pub dropped: i64,
}

/// One session of a run, with its exchange count.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionSummary {
    /// Session number within the run.
    pub session_no: i64,
    /// `header`, `bearer`, `cookie` or `client`.
    pub key_kind: String,
    /// The session key (credentials as markers).
    pub key: String,
    /// Client address of the first request.
    pub client_addr: String,
    /// Exchanges stored for the session.
    pub exchanges: i64,
    /// Exchanges that failed (no response, upstream error).
    pub failed: i64,
    /// First arrival, µs from the run start.
    pub first_offset_us: i64,
    /// Last response end, µs from the run start.
    pub last_end_us: i64,
}

/// Exchanges of one normalized route.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RouteCount {
    /// `METHOD /path/{id}/...`
    pub route: String,
    /// Exchanges.
    pub exchanges: u64,
    /// Of which failed or answered 5xx.
    pub errors: u64,
}

/// One stored exchange, as read back.
#[derive(Debug, Clone)]
pub struct StoredExchange {
    /// Row id.
    pub id: i64,
    /// Session number within the run.
    pub session_no: i64,
    /// Position in the session.
    pub seq: i64,
    /// Wall-clock arrival, µs since the Unix epoch.
    pub started_at_us: i64,
    /// Arrival, µs since the run start.
    pub offset_us: i64,
    /// Method.
    pub method: String,
    /// Origin-form request target.
    pub uri: String,
    /// HTTP version as recorded.
    pub http_version: String,
    /// Request headers, in order.
    pub request_headers: Vec<(String, String)>,
    /// Request body (maybe truncated).
    pub request_body: Vec<u8>,
    /// True request body length.
    pub request_body_len: i64,
    /// Whether the stored request body is truncated.
    pub request_truncated: bool,
    /// Response status.
    pub status: Option<i64>,
    /// Response headers, in order.
    pub response_headers: Vec<(String, String)>,
    /// Response body (maybe truncated).
    pub response_body: Vec<u8>,
    /// True response body length.
    pub response_body_len: i64,
    /// Whether the stored response body is truncated.
    pub response_truncated: bool,
    /// Time to the response head, µs.
    pub ttfb_us: Option<i64>,
    /// Time to the end of the response, µs.
    pub duration_us: i64,
    /// Failure kind, if any.
    pub error_kind: Option<String>,
    /// Failure detail, if any.
    pub error_message: Option<String>,
    /// Streamed responses: (µs since the response head, bytes) per chunk.
    pub response_chunks: Vec<(i64, i64)>,
    /// A WebSocket handshake: the socket's frames.
    pub ws_frames: Vec<super::WsFrame>,
}

impl StoredExchange {
    /// What a replay sends: the request side (and a WebSocket's frames),
    /// without the recorded response's headers and body.
    pub fn request_copy(&self) -> StoredExchange {
        StoredExchange {
            method: self.method.clone(),
            uri: self.uri.clone(),
            http_version: self.http_version.clone(),
            request_headers: self.request_headers.clone(),
            request_body: self.request_body.clone(),
            response_headers: Vec::new(),
            response_body: Vec::new(),
            error_kind: None,
            error_message: None,
            response_chunks: Vec::new(),
            ws_frames: self.ws_frames.clone(),
            ..*self
        }
    }

    /// The first value of a request header (names compare without case).
    pub fn request_header(&self, name: &str) -> Option<&str> {
        header_in(&self.request_headers, name)
    }

    /// The first value of a response header.
    pub fn response_header(&self, name: &str) -> Option<&str> {
        header_in(&self.response_headers, name)
    }
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Settings of a new recording run.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// Upstream URL.
    pub upstream: &'a str,
    /// Listen address.
    pub listen: &'a str,
    /// Body cap in bytes.
    pub max_body_bytes: u64,
    /// Redaction description.
    pub redaction: &'a str,
}

impl Store {
    /// Opens a capture for recording, creating the file (mode 0600) and its
    /// parent folders when missing, and applying the schema.
    ///
    /// # Errors
    /// When the file cannot be created or is not a SQLite database.
    pub async fn create(path: &Path) -> Result<Store, CaptureError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| CaptureError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| open_err(Box::new(e)))?;
        }
        create_private_file(path).map_err(|e| open_err(Box::new(e)))?;
        let store = Self::connect(path, true).await?;
        if !store.has_schema().await? && store.has_foreign_tables().await? {
            return Err(CaptureError::NotACapture {
                path: path.to_path_buf(),
                reason: "it is a SQLite database of something else; choose a new file".into(),
            });
        }
        store.migrate().await?;
        Ok(store)
    }

    /// Opens an existing capture for reading (and appending).
    ///
    /// # Errors
    /// When the file is missing, not SQLite, or not a tapedeck capture.
    pub async fn open(path: &Path) -> Result<Store, CaptureError> {
        if !path.is_file() {
            return Err(CaptureError::Open {
                path: path.to_path_buf(),
                source: "no such file; record one with `tapedeck record` or `tapedeck demo`".into(),
            });
        }
        let store = Self::connect(path, false).await?;
        if !store.has_schema().await? {
            return Err(CaptureError::NotACapture {
                path: path.to_path_buf(),
                reason: "it has no tapedeck tables".into(),
            });
        }
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the embedded schema migrations.
    async fn migrate(&self) -> Result<(), CaptureError> {
        migrator()
            .run(&self.pool)
            .await
            .map_err(|e| CaptureError::NotACapture {
                path: self.path.clone(),
                reason: format!("schema migration failed: {e}"),
            })
    }

    async fn connect(path: &Path, create: bool) -> Result<Store, CaptureError> {
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
            pool,
            path: path.to_path_buf(),
        })
    }

    async fn has_schema(&self) -> Result<bool, CaptureError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'store_meta'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| classify_open_error(&self.path, e))?;
        Ok(n > 0)
    }

    async fn has_foreign_tables(&self) -> Result<bool, CaptureError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name <> '_sqlx_migrations'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// The capture file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's redaction key, made on first use and kept in the store.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn redaction_key(&self) -> Result<[u8; 32], CaptureError> {
        let fresh: [u8; 32] = rand::random();
        sqlx::query("INSERT OR IGNORE INTO store_meta (key, value) VALUES ('redaction_key', ?)")
            .bind(&fresh[..])
            .execute(&self.pool)
            .await?;
        let stored: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'redaction_key'")
                .fetch_one(&self.pool)
                .await?;
        stored.try_into().map_err(|_| CaptureError::NotACapture {
            path: self.path.clone(),
            reason: "its redaction key is damaged".into(),
        })
    }

    /// Starts a recording run and returns its id.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn begin_run(&self, run: &NewRun<'_>) -> Result<i64, CaptureError> {
        let id = sqlx::query(
            "INSERT INTO captures (upstream, listen, tool_version, started_at_us, max_body_bytes, redaction) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(run.upstream)
        .bind(run.listen)
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(now_epoch_us())
        .bind(i64::try_from(run.max_body_bytes).unwrap_or(i64::MAX))
        .bind(run.redaction)
        .execute(&self.pool)
        .await?
        .last_insert_rowid();
        Ok(id)
    }

    /// Records the dropped count of a run (called as it changes).
    ///
    /// # Errors
    /// On a store failure.
    pub async fn set_dropped(&self, run_id: i64, dropped: u64) -> Result<(), CaptureError> {
        sqlx::query("UPDATE captures SET dropped = ? WHERE id = ?")
            .bind(i64::try_from(dropped).unwrap_or(i64::MAX))
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes a run: stop time, final counters.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn finish_run(&self, run_id: i64, dropped: u64) -> Result<RunSummary, CaptureError> {
        sqlx::query(
            "UPDATE captures SET stopped_at_us = ?, dropped = ?, \
             exchanges = (SELECT count(*) FROM exchanges WHERE capture_id = captures.id), \
             sessions = (SELECT count(*) FROM sessions WHERE capture_id = captures.id) \
             WHERE id = ?",
        )
        .bind(now_epoch_us())
        .bind(i64::try_from(dropped).unwrap_or(i64::MAX))
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        self.run(Some(run_id)).await
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
        let mut tx = self.pool.begin().await?;
        for s in new_sessions {
            sqlx::query(
                "INSERT OR IGNORE INTO sessions (capture_id, session_no, key_kind, key, client_addr, user_agent, started_at_us) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(run_id)
            .bind(s.session_no)
            .bind(s.key_kind.as_str())
            .bind(&s.key)
            .bind(&s.client_addr)
            .bind(&s.user_agent)
            .bind(s.started_at_us)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let headers: Vec<(String, String)> = chunk
                .iter()
                .map(|r| {
                    (
                        headers_json(&r.request_headers),
                        headers_json(&r.response_headers),
                    )
                })
                .collect();
            let mut q = sqlx::query(insert_sql(chunk.len()));
            for (r, (req_h, resp_h)) in chunk.iter().zip(headers) {
                q = q
                    .bind(run_id)
                    .bind(r.session.session_no)
                    .bind(r.seq)
                    .bind(r.started_at_us)
                    .bind(as_us(r.offset))
                    .bind(r.method.as_str())
                    .bind(r.uri.as_str())
                    .bind(r.http_version)
                    .bind(req_h)
                    .bind(&r.request_body.bytes[..])
                    .bind(len_i64(r.request_body.len))
                    .bind(r.request_body.truncated)
                    .bind(r.status.map(i64::from))
                    .bind(resp_h)
                    .bind(&r.response_body.bytes[..])
                    .bind(len_i64(r.response_body.len))
                    .bind(r.response_body.truncated)
                    .bind(r.ttfb.map(as_us))
                    .bind(as_us(r.duration))
                    .bind(r.failure.as_ref().map(|f| f.kind))
                    .bind(r.failure.as_ref().map(|f| f.message.as_str()))
                    .bind(json_unless_empty(&r.response_chunks))
                    .bind(json_unless_empty(&r.ws_frames));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every run, oldest first.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn runs(&self) -> Result<Vec<RunSummary>, CaptureError> {
        let rows = sqlx::query(AssertSqlSafe(format!("{RUN_SELECT} ORDER BY c.id")))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// One run (`None`: the latest).
    ///
    /// # Errors
    /// [`CaptureError::NoSuchRun`] or [`CaptureError::Empty`].
    pub async fn run(&self, id: Option<i64>) -> Result<RunSummary, CaptureError> {
        let row = match id {
            Some(id) => sqlx::query(AssertSqlSafe(format!("{RUN_SELECT} WHERE c.id = ?")))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(CaptureError::NoSuchRun(id))?,
            None => sqlx::query(AssertSqlSafe(format!(
                "{RUN_SELECT} ORDER BY c.id DESC LIMIT 1"
            )))
            .fetch_optional(&self.pool)
            .await?
            .ok_or(CaptureError::Empty)?,
        };
        run_from_row(&row)
    }

    /// Sessions of a run with their exchange counts.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn sessions(&self, run_id: i64) -> Result<Vec<SessionSummary>, CaptureError> {
        let rows = sqlx::query(
            "SELECT s.session_no, s.key_kind, s.key, s.client_addr, count(e.id) AS exchanges, \
                    coalesce(sum(e.error_kind IS NOT NULL), 0) AS failed, \
                    coalesce(min(e.offset_us), 0) AS first_offset_us, \
                    coalesce(max(e.offset_us + e.duration_us), 0) AS last_end_us \
             FROM sessions s LEFT JOIN exchanges e \
               ON e.capture_id = s.capture_id AND e.session_no = s.session_no \
             WHERE s.capture_id = ? GROUP BY s.session_no ORDER BY s.session_no",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
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
            })
            .collect()
    }

    /// Exchange counts per normalized route, busiest first.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn route_counts(&self, run_id: i64) -> Result<Vec<RouteCount>, CaptureError> {
        use futures_util::TryStreamExt;
        let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
        let mut rows = sqlx::query(
            "SELECT method, uri, status, error_kind IS NOT NULL AS failed FROM exchanges WHERE capture_id = ?",
        )
        .bind(run_id)
        .fetch(&self.pool);
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
        let rows =
            sqlx::query("SELECT * FROM exchanges WHERE capture_id = ? ORDER BY session_no, seq")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| exchange_from_row(&self.path, r))
            .collect()
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
    ) -> Result<(Vec<crate::replay::plan::SessionSpan>, i64), CaptureError> {
        let ids = serde_json::to_string(run_ids).unwrap_or_else(|_| "[]".into());
        let rows = sqlx::query(
            "SELECT capture_id, session_no, min(started_at_us) AS first_us, count(*) AS requests, \
                    max(started_at_us + duration_us) AS last_end_us \
             FROM exchanges WHERE capture_id IN (SELECT value FROM json_each(?)) \
             GROUP BY capture_id, session_no ORDER BY first_us, capture_id, session_no",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        let mut spans = Vec::with_capacity(rows.len());
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        for r in &rows {
            let first_us: i64 = r.try_get("first_us")?;
            first = first.min(first_us);
            last = last.max(r.try_get("last_end_us")?);
            spans.push(crate::replay::plan::SessionSpan {
                run_id: r.try_get("capture_id")?,
                session_no: r.try_get("session_no")?,
                first_offset_us: first_us,
                requests: r.try_get::<i64, _>("requests")?.max(0) as u64,
            });
        }
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
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT j.value ->> 1 FROM exchanges AS e, json_each(e.request_headers) AS j \
             WHERE e.capture_id = ? AND lower(j.value ->> 0) = 'authorization' ORDER BY e.started_at_us, e.id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
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
        let rows = sqlx::query(
            "SELECT * FROM exchanges WHERE capture_id = ? AND session_no = ? ORDER BY seq",
        )
        .bind(run_id)
        .bind(session_no)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| exchange_from_row(&self.path, r))
            .collect()
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

const RUN_SELECT: &str = "SELECT c.id, c.upstream, c.listen, c.tool_version, c.started_at_us, \
    c.stopped_at_us, c.max_body_bytes, c.redaction, c.dropped, \
    (SELECT count(*) FROM exchanges e WHERE e.capture_id = c.id) AS exchanges, \
    (SELECT count(*) FROM sessions s WHERE s.capture_id = c.id) AS sessions \
    FROM captures c";

fn run_from_row(r: &SqliteRow) -> Result<RunSummary, CaptureError> {
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

fn exchange_from_row(path: &Path, r: &SqliteRow) -> Result<StoredExchange, CaptureError> {
    let headers = |col: &str| -> Result<Vec<(String, String)>, CaptureError> {
        let text: String = r.try_get(col)?;
        serde_json::from_str(&text).map_err(|e| CaptureError::NotACapture {
            path: path.to_path_buf(),
            reason: format!("column {col} does not hold a header list: {e}"),
        })
    };
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
        response_chunks: json_column(path, r, "response_chunks")?,
        ws_frames: json_column(path, r, "ws_frames")?,
    })
}

/// A nullable JSON list column; NULL is the empty list.
fn json_column<T: serde::de::DeserializeOwned>(
    path: &Path,
    r: &SqliteRow,
    col: &str,
) -> Result<Vec<T>, CaptureError> {
    match r.try_get::<Option<String>, _>(col)? {
        Some(text) => serde_json::from_str(&text).map_err(|e| CaptureError::NotACapture {
            path: path.to_path_buf(),
            reason: format!("column {col} does not hold what tapedeck wrote there: {e}"),
        }),
        None => Ok(Vec::new()),
    }
}

/// A list as JSON text, NULL when empty.
fn json_unless_empty<T: serde::Serialize>(items: &[T]) -> Option<String> {
    (!items.is_empty())
        .then(|| serde_json::to_string(items).ok())
        .flatten()
}

/// `INSERT ... VALUES (...), (...)` for `rows` rows, built once per size.
fn insert_sql(rows: usize) -> SqlStr {
    static CACHE: OnceLock<Vec<Arc<str>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        (0..=ROWS_PER_STATEMENT)
            .map(|n| {
                let one = format!("({})", vec!["?"; EXCHANGE_PARAMS].join(", "));
                let values = vec![one; n].join(", ");
                Arc::from(format!(
                    "INSERT INTO exchanges ({EXCHANGE_COLUMNS}) VALUES {values}"
                ))
            })
            .collect()
    });
    // Callers pass chunks of at most ROWS_PER_STATEMENT rows.
    sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(cache[rows.min(ROWS_PER_STATEMENT)].clone()))
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
/// credentials).
fn create_private_file(path: &Path) -> std::io::Result<()> {
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
