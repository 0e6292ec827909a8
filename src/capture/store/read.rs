//! Reading a capture: runs, sessions, route counts, exchanges (a socket's
//! frames assembled from its parts and its row), what a run's sockets
//! hold, the session spans the replay plan starts from, and a run's
//! credentials in order.
//!
//! Callers are `captures`, replay, the demo and tests; what they get back
//! are the capture's plain read-side types, made from rows by `rows.rs`.
//! Nothing here writes.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row};

use super::rows::{
    OwnedSessionRow, exchange_from_row, part_frames, run_from_row, session_from_row,
};
use super::{Pool, Store};
use crate::capture::socket::assemble;
use crate::capture::{
    CaptureError, RouteCount, RunChoice, RunSummary, SessionSpan, SessionSummary, SocketSummary,
    StoredExchange, WsFrame,
};
use crate::route;

const RUN_SELECT: &str = "SELECT c.id, c.upstream, c.listen, c.tool_version, c.started_at_us, \
    c.stopped_at_us, c.max_body_bytes, c.redaction, c.sample_fraction, c.dropped, \
    (SELECT count(*) FROM exchanges e WHERE e.capture_id = c.id) AS exchanges, \
    (SELECT count(*) FROM sessions s WHERE s.capture_id = c.id) AS sessions \
    FROM captures c";

impl Store {
    /// Every run, oldest first.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn runs(&self) -> Result<Vec<RunSummary>, CaptureError> {
        on_pool!(self, p => {
            let rows = sqlx::query(AssertSqlSafe(format!("{RUN_SELECT} ORDER BY c.id")))
                .fetch_all(p)
                .await?;
            let mut runs: Vec<RunSummary> = rows.iter().map(run_from_row).collect::<Result<_, _>>()?;
            for run in &mut runs {
                run.state = self.run_state(run.id, run.stopped_at_us.is_some()).await?;
            }
            Ok(runs)
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
            let mut run = run_from_row(&row)?;
            run.state = self.run_state(run.id, run.stopped_at_us.is_some()).await?;
            Ok(run)
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
    pub(super) async fn session_rows(
        &self,
        run_id: i64,
    ) -> Result<Vec<OwnedSessionRow>, CaptureError> {
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
        let exchanges = on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT * FROM exchanges WHERE capture_id = $1 ORDER BY session_no, seq",
            )
            .bind(run_id)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| exchange_from_row(&self.path, r))
                .collect::<Result<Vec<_>, _>>()?
        });
        self.with_parts(run_id, None, exchanges).await
    }

    /// Puts each socket's stored parts before the frames its row holds, in
    /// time order, so readers see one list; `session_no` limits the lookup
    /// to one session.
    async fn with_parts(
        &self,
        run_id: i64,
        session_no: Option<i64>,
        mut exchanges: Vec<StoredExchange>,
    ) -> Result<Vec<StoredExchange>, CaptureError> {
        if !exchanges.iter().any(|e| e.status == Some(101)) {
            return Ok(exchanges);
        }
        let sql = match session_no {
            Some(_) => {
                "SELECT session_no, seq, frames FROM ws_frame_parts \
                 WHERE capture_id = $1 AND session_no = $2 ORDER BY seq, part_no"
            }
            None => {
                "SELECT session_no, seq, frames FROM ws_frame_parts \
                 WHERE capture_id = $1 ORDER BY session_no, seq, part_no"
            }
        };
        let mut parts: HashMap<(i64, i64), Vec<Vec<WsFrame>>> = HashMap::new();
        on_pool!(self, p => {
            let mut query = sqlx::query(sql).bind(run_id);
            if let Some(s) = session_no {
                query = query.bind(s);
            }
            let rows = query.fetch_all(p).await?;
            for r in &rows {
                let text: String = r.try_get("frames")?;
                parts
                    .entry((r.try_get("session_no")?, r.try_get("seq")?))
                    .or_default()
                    .push(part_frames(&self.path, &text)?);
            }
        });
        for e in &mut exchanges {
            if let Some(parts) = parts.remove(&(e.session_no, e.seq)) {
                e.ws_frames = assemble(parts, std::mem::take(&mut e.ws_frames));
            }
        }
        Ok(exchanges)
    }

    /// What the sockets of a run hold: handshakes, frames stored, frames
    /// not stored. Parts of sockets still open (no exchange row yet) are
    /// not counted.
    ///
    /// # Errors
    /// On a store failure.
    pub async fn socket_summary(&self, run_id: i64) -> Result<SocketSummary, CaptureError> {
        // Counting a JSON array is each database's own function.
        let length = match &self.pool {
            Pool::Sqlite(_) => "json_array_length(ws_frames)",
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => "json_array_length(ws_frames::json)",
        };
        let sockets = format!(
            "SELECT count(*) AS sockets, CAST(coalesce(sum(ws_frames_dropped), 0) AS BIGINT) AS dropped, \
                    CAST(coalesce(sum({length}), 0) AS BIGINT) AS frames \
             FROM exchanges WHERE capture_id = $1 AND status = 101"
        );
        const PARTS: &str = "SELECT CAST(coalesce(sum(p.frame_count), 0) AS BIGINT) \
             FROM ws_frame_parts p WHERE p.capture_id = $1 AND EXISTS \
             (SELECT 1 FROM exchanges e WHERE e.capture_id = p.capture_id \
              AND e.session_no = p.session_no AND e.seq = p.seq)";
        on_pool!(self, p => {
            let row = sqlx::query(AssertSqlSafe(sockets))
                .bind(run_id)
                .fetch_one(p)
                .await?;
            let in_parts: i64 = sqlx::query_scalar(PARTS).bind(run_id).fetch_one(p).await?;
            Ok(SocketSummary {
                sockets: row.try_get("sockets")?,
                frames: row.try_get::<i64, _>("frames")? + in_parts,
                frames_dropped: row.try_get("dropped")?,
            })
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
        let exchanges = on_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT * FROM exchanges WHERE capture_id = $1 AND session_no = $2 ORDER BY seq",
            )
            .bind(run_id)
            .bind(session_no)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| exchange_from_row(&self.path, r))
                .collect::<Result<Vec<_>, _>>()?
        });
        self.with_parts(run_id, Some(session_no), exchanges).await
    }
}
