//! Removing recording runs (`captures delete` and `captures prune`): a run
//! with its sessions and exchanges, in one transaction, and never a run
//! whose recorder is alive (the lock `lock.rs` tests).
//!
//! Removed means gone from the bytes on disk, not only from the tables. A
//! delete leaves the rows' bytes in free pages and in unused parts of live
//! pages, so in a SQLite file VACUUM then rebuilds every page, and a
//! `wal_checkpoint(TRUNCATE)` empties the `-wal` file, which would
//! otherwise keep older copies of the pages. A PostgreSQL capture gets a
//! plain DELETE; the server's own VACUUM reclaims the space.
//!
//! Called by `captures`; reads runs through `read.rs`, writes nothing but
//! the deletes.

use std::path::{Path, PathBuf};

use super::{Pool, Store};
use crate::capture::{CaptureError, Removal, RunState};

impl Store {
    /// Removes runs `ids` with their sessions and exchanges; either all of
    /// them or none.
    ///
    /// # Errors
    /// [`CaptureError::NoSuchRun`] for an id the store does not hold,
    /// [`CaptureError::RunRecording`] for a run whose recorder is alive
    /// (nothing is removed then), or a store failure.
    pub async fn delete_runs(&self, ids: &[i64]) -> Result<Removal, CaptureError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        for &id in &ids {
            if self.run(Some(id)).await?.state == RunState::Recording {
                return Err(CaptureError::RunRecording(id));
            }
        }
        self.remove(&ids).await
    }

    /// Removes every run that started before `started_before_us` (µs since
    /// the Unix epoch) but those still being recorded, which stay and are
    /// listed in [`Removal::kept_recording`].
    ///
    /// # Errors
    /// On a store failure.
    pub async fn prune_runs(&self, started_before_us: i64) -> Result<Removal, CaptureError> {
        let (live, old): (Vec<_>, Vec<_>) = self
            .runs()
            .await?
            .into_iter()
            .filter(|r| r.started_at_us < started_before_us)
            .partition(|r| r.state == RunState::Recording);
        let ids: Vec<i64> = old.iter().map(|r| r.id).collect();
        let mut removal = self.remove(&ids).await?;
        removal.kept_recording = live.iter().map(|r| r.id).collect();
        Ok(removal)
    }

    /// Deletes the rows of `ids` (checked already), then clears their
    /// traces from a SQLite file.
    async fn remove(&self, ids: &[i64]) -> Result<Removal, CaptureError> {
        let mut removal = Removal {
            runs: ids.to_vec(),
            ..Removal::default()
        };
        if ids.is_empty() {
            return Ok(removal);
        }
        let before = self.file_bytes();
        (removal.sessions, removal.exchanges) = self.delete_rows(ids).await?;
        for &id in ids {
            self.forget_run_lock(id);
        }
        if let Pool::Sqlite(p) = &self.pool {
            removal.leftover = compact(p, &self.path).await;
            removal.bytes_freed = before
                .zip(self.file_bytes())
                .map(|(before, after)| before.saturating_sub(after));
        }
        tracing::info!(runs = ?ids, sessions = removal.sessions, exchanges = removal.exchanges, "runs removed");
        Ok(removal)
    }

    /// Deletes the exchanges, sessions and run rows of `ids` in one
    /// transaction; returns the (sessions, exchanges) deleted.
    async fn delete_rows(&self, ids: &[i64]) -> Result<(u64, u64), CaptureError> {
        let (mut sessions, mut exchanges) = (0, 0);
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for &id in ids {
                exchanges += sqlx::query("DELETE FROM exchanges WHERE capture_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sessions += sqlx::query("DELETE FROM sessions WHERE capture_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM captures WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok((sessions, exchanges))
    }

    /// Bytes of a SQLite capture and its WAL on disk; `None` for
    /// PostgreSQL or when the file cannot be read.
    fn file_bytes(&self) -> Option<u64> {
        if self.is_postgres() {
            return None;
        }
        let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let main = std::fs::metadata(&self.path).ok()?.len();
        Some(main + len(&sidecar(&self.path, "-wal")))
    }
}

/// Rebuilds a SQLite capture without the bytes the delete left and
/// empties its WAL. Either step can fail while the rows are gone already
/// (VACUUM needs room for a copy of the file; another process reading the
/// capture holds the WAL): the removal stands, and what is returned says
/// what may be left and how to finish.
async fn compact(p: &sqlx::SqlitePool, path: &Path) -> Option<String> {
    let finish = format!(
        "run `sqlite3 {} 'VACUUM; PRAGMA wal_checkpoint(TRUNCATE)'` once that is resolved",
        path.display()
    );
    if let Err(e) = sqlx::query("VACUUM").execute(p).await {
        return Some(format!(
            "the runs were removed, but the file could not be compacted ({e}): bytes of them \
             stay in its free pages until VACUUM succeeds, which needs free space for a copy of \
             the capture; {finish}"
        ));
    }
    let checkpoint: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(p)
        .await;
    let refused = match checkpoint {
        Ok((0, _, _)) => return None,
        Ok(_) => "another process is reading or writing the capture".to_string(),
        Err(e) => e.to_string(),
    };
    Some(format!(
        "the runs were removed and the file compacted, but its -wal file could not be emptied \
         ({refused}) and may still hold old copies of their pages until the next checkpoint (a \
         recorder makes one when it stops); {finish}"
    ))
}

/// `<capture><suffix>`: the `-wal` and `-shm` files beside a SQLite
/// capture.
fn sidecar(capture: &Path, suffix: &str) -> PathBuf {
    let mut name = capture.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
