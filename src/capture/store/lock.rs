//! Whether a run's recorder is alive, decided without writing to the store.
//!
//! A recorder holds a lock for its run's whole life: beside a SQLite
//! capture an exclusive OS file lock on `<capture>-run<ID>.lock`, in
//! PostgreSQL a session advisory lock on a connection kept for the run.
//! The operating system or the database server releases it when the
//! process dies, however it dies (kill -9 included), so a reader tells a
//! live recording from an interrupted one at once: an open run (no stop
//! time) whose lock nobody holds was interrupted. A clean stop closes the
//! run first and then lets the lock go (and removes the file).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::{Pool, Store};
use crate::capture::{CaptureError, RunState};

/// First key of the PostgreSQL advisory lock pair; the second is the run id.
#[cfg(feature = "postgres")]
const PG_LOCK_CLASS: i32 = 0x7464_7263; // "tdrc"

/// Held by the recorder of a run; dropped (or [`RunLock::release`]d) when
/// the recorder stops.
#[derive(Debug)]
pub struct RunLock {
    held: Held,
}

#[derive(Debug)]
enum Held {
    File {
        _file: File,
        path: PathBuf,
    },
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgConnection),
}

impl RunLock {
    /// Lets the lock go after the run was closed: the file is removed, the
    /// advisory lock's connection closed.
    pub async fn release(self) {
        match self.held {
            Held::File { _file, path } => {
                drop(_file);
                let _ = std::fs::remove_file(path);
            }
            #[cfg(feature = "postgres")]
            Held::Postgres(conn) => {
                let _ = sqlx::Connection::close(conn).await;
            }
        }
    }
}

/// The lock file of run `run_id` of the SQLite capture `capture`.
fn lock_path(capture: &Path, run_id: i64) -> PathBuf {
    let mut name = capture.as_os_str().to_owned();
    name.push(format!("-run{run_id}.lock"));
    PathBuf::from(name)
}

impl Store {
    /// Takes the lock that says run `run_id` is being recorded (see the
    /// module docs); hold it until the run is closed.
    ///
    /// # Errors
    /// When the lock file cannot be made or locked, or the database refuses
    /// the advisory lock.
    pub async fn lock_run(&self, run_id: i64) -> Result<RunLock, CaptureError> {
        match &self.pool {
            Pool::Sqlite(_) => {
                let path = lock_path(&self.path, run_id);
                let open_err = |e: std::io::Error| CaptureError::Open {
                    path: path.clone(),
                    source: Box::new(e),
                };
                let file = private_lock_file(&path).map_err(open_err)?;
                file.try_lock().map_err(|e| {
                    open_err(match e {
                        TryLockError::Error(e) => e,
                        TryLockError::WouldBlock => {
                            std::io::Error::other("another recorder holds this run's lock")
                        }
                    })
                })?;
                Ok(RunLock {
                    held: Held::File { _file: file, path },
                })
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => {
                let mut conn = p.acquire().await?.detach();
                sqlx::query("SELECT pg_advisory_lock($1, $2)")
                    .bind(PG_LOCK_CLASS)
                    .bind(run_key(run_id))
                    .execute(&mut conn)
                    .await?;
                Ok(RunLock {
                    held: Held::Postgres(conn),
                })
            }
        }
    }

    /// How a run stands: stopped (it has a stop time), recording (its
    /// recorder holds the run's lock) or interrupted (neither). Reads only.
    pub(super) async fn run_state(
        &self,
        run_id: i64,
        stopped: bool,
    ) -> Result<RunState, CaptureError> {
        if stopped {
            return Ok(RunState::Stopped);
        }
        let alive =
            match &self.pool {
                Pool::Sqlite(_) => file_lock_held(&lock_path(&self.path, run_id)),
                #[cfg(feature = "postgres")]
                Pool::Postgres(p) => sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 2)",
                )
                .bind(i64::from(PG_LOCK_CLASS as u32))
                .bind(i64::from(run_key(run_id) as u32))
                .fetch_one(p)
                .await?,
            };
        Ok(if alive {
            RunState::Recording
        } else {
            RunState::Interrupted
        })
    }
}

impl Store {
    /// Removes the lock file a removed run may have left beside a SQLite
    /// capture (an interrupted run's recorder could not remove it); a later
    /// run that gets the same id makes its own.
    pub(super) fn forget_run_lock(&self, run_id: i64) {
        if let Pool::Sqlite(_) = &self.pool {
            let _ = std::fs::remove_file(lock_path(&self.path, run_id));
        }
    }
}

/// The advisory lock's second key: the run id (ids past 2^31 wrap, which
/// only risks calling a dead run alive while another run holds the key).
#[cfg(feature = "postgres")]
fn run_key(run_id: i64) -> i32 {
    run_id as i32
}

/// Whether some process holds the lock on `path`: a missing file or one we
/// can lock ourselves means no recorder is there.
fn file_lock_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
}

fn private_lock_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_reads_as_alive_and_a_released_or_missing_one_as_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = lock_path(&dir.path().join("c.db"), 3);
        assert!(path.ends_with("c.db-run3.lock"));
        assert!(!file_lock_held(&path), "no file: no recorder");
        let file = private_lock_file(&path).expect("create");
        file.try_lock().expect("lock");
        assert!(file_lock_held(&path), "locked by a live holder");
        drop(file);
        assert!(!file_lock_held(&path), "the holder is gone");
    }
}
