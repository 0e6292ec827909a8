//! Copying a capture into another store (SQLite to PostgreSQL and back):
//! run by run, rows as stored, new run ids.
//!
//! Reads `self` through `read.rs` and writes `to` through `write.rs`, so the
//! copy goes through the same statements as recording; the rows in between
//! are `rows.rs`'s. A socket's frames are read as one list and written in
//! parts again, cut as recording cuts them.

use super::Store;
use super::rows::{ExchangeRow, OwnedSessionRow, PartRow, SessionRow};
use crate::capture::{CaptureError, NewRun};

impl Store {
    /// Copies every run of `self` into `to`, run by run (new run ids,
    /// everything else as stored); a fresh `to` gets this store's redaction
    /// key (when it has one), so recording into it later keeps the same markers. Returns the
    /// (source id, new id) of each run copied.
    ///
    /// # Errors
    /// On a failure of either store; runs copied before it stay copied.
    pub async fn copy_into(
        &self,
        to: &Store,
        mut progress: impl FnMut(u64),
    ) -> Result<Vec<(i64, i64)>, CaptureError> {
        if let Some(key) = self.stored_redaction_key().await? {
            to.set_redaction_key_if_missing(&key).await?;
        }
        let mut copied = Vec::new();
        for run in self.runs().await? {
            let id = to
                .begin_run_at(
                    &NewRun {
                        upstream: &run.upstream,
                        listen: &run.listen,
                        max_body_bytes: run.max_body_bytes.max(0) as u64,
                        redaction: &run.redaction,
                        sample_fraction: run.sample_fraction,
                    },
                    &run.tool_version,
                    run.started_at_us,
                )
                .await?;
            let sessions = self.session_rows(run.id).await?;
            let sessions: Vec<SessionRow<'_>> =
                sessions.iter().map(OwnedSessionRow::borrow).collect();
            to.insert_rows(id, &sessions, &[], &[], None).await?;
            for session in &sessions {
                let exchanges = self.session_exchanges(run.id, session.session_no).await?;
                let (rows, parts): (Vec<ExchangeRow<'_>>, Vec<Vec<PartRow<'_>>>) =
                    exchanges.iter().map(ExchangeRow::stored).unzip();
                let parts: Vec<PartRow<'_>> = parts.into_iter().flatten().collect();
                to.insert_rows(id, &[], &rows, &parts, None).await?;
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
}
