//! The single writer task and the byte-bounded queue in front of it.
//!
//! The proxy hands records to a [`CaptureSink`], which never waits: a record
//! that does not fit in the queue's byte budget is dropped and counted. One
//! task drains the queue in batches (whatever is queued, up to
//! `max_batch`), each batch one transaction of multi-row INSERTs that also
//! brings the run's counters up to date; only a committed batch counts as
//! recorded.
//!
//! A batch the store refuses stays in hand and is tried again, at least
//! once a second, while the fault may pass (a full disk, a lock held
//! elsewhere); meanwhile the queue fills and what does not fit is dropped
//! under the fault's reason, and [`WriterMetrics::storage_fault`] says why
//! (the admin endpoint's `/healthz` answers 503 with it). When space
//! returns the batch commits and recording goes on. Other failures drop the
//! batch after a few tries. Every record is either committed or counted in
//! `tapedeck_records_dropped_total{reason}`, and the run's `dropped` column
//! and the summary give the same total.
//!
//! Records arrive as the proxy saw them; the writer has each batch
//! redacted ([`Redactor::redact_record`]) before its first try, on a
//! thread of its own at a lower priority ([`Background`]), so decoding,
//! scanning and re-encoding bodies never runs on the client's path, holds
//! up a runtime worker, or takes CPU that forwarding needs.
//!
//! Closing ([`WriterHandle::close`]) writes what is queued, trying each
//! batch once, for at most [`FLUSH_LIMIT`]; what cannot be written then is
//! counted as dropped, and the run is closed.

mod metrics;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::redact::{Background, Redactor};
use super::{CaptureError, ExchangeRecord, RunLock, RunSummary, SessionInfo, Store, StoreFault};
pub use metrics::{DropLabels, DropReason, WriterMetrics};

/// Longest a closing writer spends writing what is still queued.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(10);
/// Longest pause between two tries of a batch the store refused.
const RETRY_MAX: Duration = Duration::from_secs(1);
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Tries of a batch refused for a reason that is not known to pass.
const TRIES_OTHER: u32 = 3;

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Budget of pending records, in bytes (default 64 MiB).
    pub queue_bytes: usize,
    /// Most records written in one transaction.
    pub max_batch: usize,
    /// After writing a batch that was not full, wait this long before taking
    /// the next one. Records queue up meanwhile without waking the writer,
    /// so a busy proxy pays for a few large transactions instead of a
    /// thread wake-up and a small transaction per request.
    pub linger: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue_bytes: 64 * 1024 * 1024,
            max_batch: 1024,
            linger: Duration::from_millis(5),
        }
    }
}

type Queued = (Box<ExchangeRecord>, OwnedSemaphorePermit, usize);

/// Where the proxy's tap puts records. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct CaptureSink {
    tx: mpsc::UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
    budget_total: usize,
    metrics: WriterMetrics,
    warned_full: Arc<AtomicBool>,
}

impl CaptureSink {
    /// Queues a record without waiting. Returns `false` (and counts the
    /// record as dropped) when the queue is full or the writer is gone.
    pub fn try_send(&self, mut record: ExchangeRecord) -> bool {
        record.compact();
        let weight = record.weight();
        let permits = u32::try_from(weight)
            .ok()
            .filter(|_| weight <= self.budget_total);
        let permit = permits.and_then(|n| self.budget.clone().try_acquire_many_owned(n).ok());
        let Some(permit) = permit else {
            // A full queue while the store refuses batches is the store's
            // fault, and counted as such.
            let reason = self
                .metrics
                .storage_fault()
                .map_or(DropReason::QueueFull, |(r, _)| r);
            self.metrics.drop_records(reason, 1);
            if !self.warned_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    queue_bytes = self.budget_total,
                    reason = reason.as_str(),
                    "capture queue full: dropping records (counted in tapedeck_records_dropped_total) \
                     until the store catches up; requests are still forwarded"
                );
            }
            return false;
        };
        self.metrics.queue_bytes.inc_by(weight as i64);
        if self.tx.send((Box::new(record), permit, weight)).is_err() {
            self.metrics.queue_bytes.dec_by(weight as i64);
            self.metrics.drop_records(DropReason::DrainTimeout, 1);
            return false;
        }
        true
    }

    /// The writer's counters.
    pub fn metrics(&self) -> &WriterMetrics {
        &self.metrics
    }
}

/// Owns the writer task; [`WriterHandle::close`] flushes and ends the run.
#[derive(Debug)]
pub struct WriterHandle {
    close: watch::Sender<bool>,
    task: JoinHandle<Result<RunSummary, CaptureError>>,
}

impl WriterHandle {
    /// Writes what is queued (bounded by [`FLUSH_LIMIT`]; the rest is
    /// counted as dropped), closes the run (stop time, final counters),
    /// lets the run's lock go and returns the run's summary. Call it after
    /// the last record was sent.
    ///
    /// # Errors
    /// When the store fails while closing the run.
    pub async fn close(self) -> Result<RunSummary, CaptureError> {
        let _ = self.close.send(true);
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(CaptureError::Open {
                path: Default::default(),
                source: format!("capture writer task failed: {join}").into(),
            }),
        }
    }
}

/// Starts the writer for run `run_id` of `store`, redacting with
/// `redactor`; it holds `lock` until the run is closed.
pub fn spawn(
    store: Store,
    run_id: i64,
    lock: RunLock,
    config: WriterConfig,
    metrics: WriterMetrics,
    redactor: Redactor,
) -> (CaptureSink, WriterHandle) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (close, closed) = watch::channel(false);
    let budget_total = config.queue_bytes.min(Semaphore::MAX_PERMITS);
    let sink = CaptureSink {
        tx,
        budget: Arc::new(Semaphore::new(budget_total)),
        budget_total,
        metrics: metrics.clone(),
        warned_full: Arc::new(AtomicBool::new(false)),
    };
    let writer = Writer {
        store,
        run_id,
        metrics,
        rx,
        seen_sessions: HashSet::new(),
        redaction: (!redactor.keeps_credentials()).then(|| Background::spawn(redactor)),
    };
    let task = tokio::spawn(writer.run(config, closed, lock));
    (sink, WriterHandle { close, task })
}

/// Records taken from the queue, with the budget they hold until they are
/// written or dropped.
#[derive(Default)]
struct Batch {
    records: Vec<ExchangeRecord>,
    held: Vec<(OwnedSemaphorePermit, usize)>,
    tries: u32,
    /// The records were redacted (once, before the first try).
    redacted: bool,
}

impl Batch {
    fn push(&mut self, (record, permit, weight): Queued) {
        self.records.push(*record);
        self.held.push((permit, weight));
    }

    /// Empties the batch and gives its budget back to the queue.
    fn release(&mut self, metrics: &WriterMetrics) {
        self.records.clear();
        self.tries = 0;
        self.redacted = false;
        for (permit, weight) in self.held.drain(..) {
            metrics.queue_bytes.dec_by(weight as i64);
            drop(permit);
        }
    }
}

struct Writer {
    store: Store,
    run_id: i64,
    metrics: WriterMetrics,
    rx: mpsc::UnboundedReceiver<Queued>,
    seen_sessions: HashSet<i64>,
    /// `None` with `--keep-credentials`; `Some(Err)` when the redaction
    /// thread could not start (every record is dropped, counted).
    redaction: Option<std::io::Result<Background>>,
}

impl Writer {
    async fn run(
        mut self,
        config: WriterConfig,
        mut closed: watch::Receiver<bool>,
        lock: RunLock,
    ) -> Result<RunSummary, CaptureError> {
        let max_batch = config.max_batch.max(1);
        let mut batch = Batch::default();
        let mut backoff = RETRY_FIRST;
        let mut flush_until: Option<Instant> = None;
        loop {
            if batch.records.is_empty() {
                if flush_until.is_none() {
                    tokio::select! {
                        biased;
                        queued = self.rx.recv() => match queued {
                            Some(q) => batch.push(q),
                            None => flush_until = Some(Instant::now() + FLUSH_LIMIT),
                        },
                        _ = closed.wait_for(|c| *c) => flush_until = Some(Instant::now() + FLUSH_LIMIT),
                    }
                }
                // Take whatever else is already queued, so a busy proxy
                // gets large transactions and an idle one gets each record
                // written at once.
                while batch.records.len() < max_batch {
                    match self.rx.try_recv() {
                        Ok(q) => batch.push(q),
                        Err(_) => break,
                    }
                }
                if batch.records.is_empty() {
                    if flush_until.is_some() {
                        break;
                    }
                    continue;
                }
            }
            if flush_until.is_some_and(|until| Instant::now() >= until) {
                self.drop_batch(&mut batch, DropReason::FlushTimeout);
                self.drop_queued(DropReason::FlushTimeout);
                break;
            }
            let full = batch.records.len() == max_batch;
            self.redact(&mut batch).await;
            if batch.records.is_empty() {
                continue;
            }
            match self.write(&batch).await {
                Ok(()) => {
                    batch.release(&self.metrics);
                    backoff = RETRY_FIRST;
                    if let Some((reason, _)) = self.metrics.storage_fault() {
                        self.metrics.set_fault(None);
                        tracing::warn!(
                            after = reason.as_str(),
                            dropped = self.metrics.dropped_total(),
                            "capture store accepts batches again; recording resumed"
                        );
                    }
                    if flush_until.is_none() && !full && !config.linger.is_zero() {
                        tokio::time::sleep(config.linger).await;
                    }
                }
                Err(e) => {
                    let fault = e.fault();
                    let reason = DropReason::of(fault);
                    batch.tries += 1;
                    if self.metrics.storage_fault().is_none() {
                        tracing::warn!(error = %e, reason = reason.as_str(),
                            "capture store refused a batch; retrying at least once a second, \
                             dropping what does not fit in the queue meanwhile (tapedeck_records_dropped_total)");
                    }
                    self.metrics.set_fault(Some((reason, e.to_string())));
                    if flush_until.is_some() {
                        // Stopping: no waiting for the store to come back.
                        self.drop_batch(&mut batch, reason);
                        self.drop_queued(reason);
                        break;
                    }
                    if fault == StoreFault::Other && batch.tries >= TRIES_OTHER {
                        self.drop_batch(&mut batch, reason);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = closed.wait_for(|c| *c) => {
                            flush_until = Some(Instant::now() + FLUSH_LIMIT);
                        }
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
        self.rx.close();
        self.drop_queued(DropReason::DrainTimeout);
        let closed = self.finish().await;
        if closed.is_ok() {
            lock.release().await;
        }
        closed
    }

    /// Has a batch taken from the queue redacted (once, before its first
    /// try). A batch that cannot be is dropped and counted: nothing
    /// unredacted is stored.
    async fn redact(&self, batch: &mut Batch) {
        let Some(redaction) = &self.redaction else {
            return;
        };
        if batch.redacted {
            return;
        }
        batch.redacted = true;
        let records = std::mem::take(&mut batch.records);
        let redacted = match redaction {
            Ok(thread) => thread.redact(records).await,
            Err(_) => None,
        };
        match redacted {
            Some(records) => batch.records = records,
            None => {
                tracing::error!(
                    records = batch.held.len(),
                    "the redaction thread is gone; records dropped"
                );
                self.metrics
                    .drop_records(DropReason::StoreError, batch.held.len() as u64);
                batch.release(&self.metrics);
            }
        }
    }

    /// One try at committing the batch.
    async fn write(&mut self, batch: &Batch) -> Result<(), CaptureError> {
        let new_sessions: Vec<Arc<SessionInfo>> = batch
            .records
            .iter()
            .filter(|r| self.seen_sessions.insert(r.session.session_no))
            .map(|r| r.session.clone())
            .collect();
        let written = self
            .store
            .insert_batch(
                self.run_id,
                &new_sessions,
                &batch.records,
                self.metrics.dropped_total(),
            )
            .await;
        match written {
            Ok(()) => {
                self.metrics.recorded.inc_by(batch.records.len() as u64);
                Ok(())
            }
            Err(e) => {
                for s in &new_sessions {
                    self.seen_sessions.remove(&s.session_no);
                }
                Err(e)
            }
        }
    }

    fn drop_batch(&self, batch: &mut Batch, reason: DropReason) {
        self.metrics
            .drop_records(reason, batch.records.len() as u64);
        tracing::warn!(
            records = batch.records.len(),
            reason = reason.as_str(),
            "capture records dropped"
        );
        batch.release(&self.metrics);
    }

    /// Counts everything still in the queue as dropped.
    fn drop_queued(&mut self, reason: DropReason) {
        let mut n = 0;
        while let Ok((_, _, weight)) = self.rx.try_recv() {
            self.metrics.queue_bytes.dec_by(weight as i64);
            n += 1;
        }
        self.metrics.drop_records(reason, n);
    }

    /// Closes the run with the final dropped count; a store that fails is
    /// tried a few more times within [`FLUSH_LIMIT`].
    async fn finish(&self) -> Result<RunSummary, CaptureError> {
        let until = Instant::now() + FLUSH_LIMIT;
        let mut pause = RETRY_FIRST;
        loop {
            match self
                .store
                .finish_run(self.run_id, self.metrics.dropped_total())
                .await
            {
                Ok(run) => return Ok(run),
                Err(e) if Instant::now() + pause < until => {
                    tracing::warn!(error = %e, "closing the run failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }
}
