//! Writing a capture: a run's start and end, and the batches of sessions,
//! exchanges and WebSocket frame parts the single writer task
//! (`capture::writer`) hands over, each batch in one transaction; and a
//! copied run's start, for `copy.rs`.
//!
//! Records come in as the capture's plain types and leave as rows
//! (`rows.rs` does the mapping); nothing here reads them back except the
//! run summary [`Store::finish_run`] returns.

use std::sync::{Arc, OnceLock};

use sqlx::{AssertSqlSafe, SqlStr};

use super::rows::{ExchangeRow, PartRow, SessionRow};
use super::{Pool, Store};
use crate::capture::{
    CaptureError, ExchangeRecord, FramePart, NewRun, RunSummary, SessionInfo, now_epoch_us,
};

/// Rows per multi-row INSERT: many rows per statement is what makes SQLite
/// fast through sqlx (each statement is a hand-off to its worker thread).
const ROWS_PER_STATEMENT: usize = 64;

const EXCHANGE_COLUMNS: &str = "capture_id, session_no, seq, started_at_us, offset_us, method, uri, \
     http_version, request_headers, request_body, request_body_len, request_truncated, status, \
     response_headers, response_body, response_body_len, response_truncated, ttfb_us, \
     duration_us, error_kind, error_message, response_chunks, ws_frames, ws_frames_dropped";
const EXCHANGE_PARAMS: usize = 24;

impl Store {
    /// Starts a recording run and returns its id.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn begin_run(&self, run: &NewRun<'_>) -> Result<i64, CaptureError> {
        self.begin_run_at(run, env!("CARGO_PKG_VERSION"), now_epoch_us())
            .await
    }

    /// Records the dropped count of a run (a copied run that was never
    /// closed).
    ///
    /// # Errors
    /// On a store failure.
    pub(super) async fn set_dropped(&self, run_id: i64, dropped: u64) -> Result<(), CaptureError> {
        on_pool!(self, p => {
            sqlx::query("UPDATE captures SET dropped = $1 WHERE id = $2")
                .bind(i64::try_from(dropped).unwrap_or(i64::MAX))
                .bind(run_id)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Closes a run: stop time, final counters. Frame parts of sockets
    /// whose exchange was not stored (dropped, or cut at the drain
    /// timeout) are deleted: nothing reads them.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn finish_run(&self, run_id: i64, dropped: u64) -> Result<RunSummary, CaptureError> {
        self.finish_run_at(run_id, now_epoch_us(), dropped).await
    }

    /// Starts a run whose traffic happened at `started_at_us` (µs since the
    /// Unix epoch), not now: an imported HAR's.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn begin_run_started(
        &self,
        run: &NewRun<'_>,
        started_at_us: i64,
    ) -> Result<i64, CaptureError> {
        self.begin_run_at(run, env!("CARGO_PKG_VERSION"), started_at_us)
            .await
    }

    /// [`Store::finish_run`] with the stop time given (an imported run's
    /// last answer), µs since the Unix epoch.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn finish_run_at(
        &self,
        run_id: i64,
        stopped_at_us: i64,
        dropped: u64,
    ) -> Result<RunSummary, CaptureError> {
        self.close_run(run_id, stopped_at_us, dropped).await?;
        on_pool!(self, p => {
            sqlx::query(
                "DELETE FROM ws_frame_parts WHERE capture_id = $1 AND NOT EXISTS \
                 (SELECT 1 FROM exchanges e WHERE e.capture_id = ws_frame_parts.capture_id \
                  AND e.session_no = ws_frame_parts.session_no AND e.seq = ws_frame_parts.seq)",
            )
            .bind(run_id)
            .execute(p)
            .await?;
        });
        match &self.pool {
            Pool::Sqlite(p) => {
                // The run is closed either way; a checkpoint that cannot
                // grow the file (a full disk) leaves the pages in the WAL,
                // where readers find them.
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(p)
                    .await
                {
                    tracing::warn!(error = %e, "checkpointing the capture's WAL failed; its pages stay in the -wal file");
                }
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => {}
        }
        self.run(Some(run_id)).await
    }

    /// Sets a run's stop time and its final counters.
    pub(super) async fn close_run(
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

    /// Writes sessions first seen in this batch, a batch of exchanges and
    /// frame parts of open sockets, and brings the run's counters up to
    /// date (`exchanges`, `sessions` and the `dropped` count so far), in
    /// one transaction: after a crash the run's row agrees with the rows
    /// that are there. Parts are not exchanges and count in neither.
    ///
    /// # Errors
    /// On a store failure; nothing of the batch is then stored, and the
    /// connection that failed is closed rather than reused (a failed
    /// commit can leave it inside a transaction).
    pub async fn insert_batch(
        &self,
        run_id: i64,
        new_sessions: &[Arc<SessionInfo>],
        records: &[ExchangeRecord],
        parts: &[FramePart],
        dropped: u64,
    ) -> Result<(), CaptureError> {
        let sessions: Vec<SessionRow<'_>> = new_sessions
            .iter()
            .map(|s| SessionRow::first_seen(s))
            .collect();
        let rows: Vec<ExchangeRow<'_>> = records.iter().map(ExchangeRow::recorded).collect();
        let parts: Vec<PartRow<'_>> = parts.iter().map(PartRow::recorded).collect();
        self.insert_rows(run_id, &sessions, &rows, &parts, Some(dropped))
            .await
    }

    /// Writes session, exchange and frame-part rows of a run in one
    /// transaction, with the run's counters (and, given, its dropped
    /// count).
    pub(super) async fn insert_rows(
        &self,
        run_id: i64,
        sessions: &[SessionRow<'_>],
        rows: &[ExchangeRow<'_>],
        parts: &[PartRow<'_>],
        dropped: Option<u64>,
    ) -> Result<(), CaptureError> {
        let numbered = self.is_postgres();
        on_pool!(self, p => {
            let mut conn = p.acquire().await?;
            let written = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
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
                        .bind(r.ws_frames.as_deref())
                        .bind(r.ws_frames_dropped);
                }
                q.execute(&mut *tx).await?;
            }
            // A part is large (up to a thousand frames): one statement
            // each costs little beside its bytes.
            for part in parts {
                sqlx::query(
                    "INSERT INTO ws_frame_parts (capture_id, session_no, seq, part_no, frame_count, frames) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(run_id)
                .bind(part.session_no)
                .bind(part.seq)
                .bind(part.part_no)
                .bind(part.frames.len() as i64)
                .bind(part.frames_json())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE captures SET exchanges = exchanges + $1, sessions = sessions + $2, \
                 dropped = coalesce($3, dropped) WHERE id = $4",
            )
            .bind(rows.len() as i64)
            .bind(sessions.len() as i64)
            .bind(dropped.map(|d| i64::try_from(d).unwrap_or(i64::MAX)))
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
            }
            .await;
            if written.is_err() {
                // SQLite may keep a transaction open after a failed
                // commit (a full disk); sqlx would then nest the next
                // batch in a savepoint that never reaches the file.
                conn.close_on_drop();
            }
            written?;
        });
        Ok(())
    }

    /// [`Store::begin_run`] with a given version and start (a copied run).
    pub(super) async fn begin_run_at(
        &self,
        run: &NewRun<'_>,
        tool_version: &str,
        started_at_us: i64,
    ) -> Result<i64, CaptureError> {
        let id = on_pool!(self, p => {
            sqlx::query_scalar(
                "INSERT INTO captures (upstream, listen, tool_version, started_at_us, max_body_bytes, \
                 redaction, sample_fraction) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(run.upstream)
            .bind(run.listen)
            .bind(tool_version)
            .bind(started_at_us)
            .bind(i64::try_from(run.max_body_bytes).unwrap_or(i64::MAX))
            .bind(run.redaction)
            .bind(run.sample_fraction)
            .fetch_one(p)
            .await?
        });
        Ok(id)
    }
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
