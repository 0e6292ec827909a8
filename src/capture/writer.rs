//! The single writer task and the byte-bounded queue in front of it.
//!
//! The proxy hands records to a [`CaptureSink`], which never waits: a record
//! that does not fit in the queue's byte budget is dropped and counted. One
//! task drains the queue in batches (whatever is queued, up to
//! `max_batch`), each batch one transaction of multi-row INSERTs. A batch
//! the store refuses is counted as dropped too; the proxy never notices.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::{CaptureError, ExchangeRecord, RunSummary, SessionInfo, Store};

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

/// Counters the writer keeps; the admin endpoint exports them.
#[derive(Debug, Clone, Default)]
pub struct WriterMetrics {
    /// Exchanges committed to the store.
    pub recorded: Counter,
    /// Exchanges observed but not stored.
    pub dropped: Counter,
    /// Bytes of records waiting in the queue.
    pub queue_bytes: Gauge,
}

enum Msg {
    Record(Box<ExchangeRecord>, OwnedSemaphorePermit, usize),
    Close,
}

/// Where the proxy's tap puts records. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct CaptureSink {
    tx: mpsc::UnboundedSender<Msg>,
    budget: Arc<Semaphore>,
    budget_total: usize,
    metrics: WriterMetrics,
    warned_full: Arc<AtomicBool>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Record(..) => "Record",
            Msg::Close => "Close",
        })
    }
}

impl CaptureSink {
    /// Queues a record without waiting. Returns `false` (and counts the
    /// record as dropped) when the queue is full or the writer is gone.
    pub fn try_send(&self, record: ExchangeRecord) -> bool {
        let weight = record.weight();
        let permits = u32::try_from(weight)
            .ok()
            .filter(|_| weight <= self.budget_total);
        let permit = permits.and_then(|n| self.budget.clone().try_acquire_many_owned(n).ok());
        let Some(permit) = permit else {
            self.metrics.dropped.inc();
            if !self.warned_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    queue_bytes = self.budget_total,
                    "capture queue full: dropping records (counted in tapedeck_records_dropped_total) \
                     until the store catches up; requests are still forwarded"
                );
            }
            return false;
        };
        self.metrics.queue_bytes.inc_by(weight as i64);
        if self
            .tx
            .send(Msg::Record(Box::new(record), permit, weight))
            .is_err()
        {
            self.metrics.queue_bytes.dec_by(weight as i64);
            self.metrics.dropped.inc();
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
    tx: mpsc::UnboundedSender<Msg>,
    task: JoinHandle<Result<RunSummary, CaptureError>>,
}

impl WriterHandle {
    /// Writes everything queued so far, closes the run (stop time, final
    /// counters) and returns its summary.
    ///
    /// # Errors
    /// When the store fails while closing the run.
    pub async fn close(self) -> Result<RunSummary, CaptureError> {
        // The task may already be gone; then the join result says why.
        let _ = self.tx.send(Msg::Close);
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(CaptureError::Open {
                path: Default::default(),
                source: format!("capture writer task failed: {join}").into(),
            }),
        }
    }
}

/// Starts the writer for run `run_id` of `store`.
pub fn spawn(
    store: Store,
    run_id: i64,
    config: WriterConfig,
    metrics: WriterMetrics,
) -> (CaptureSink, WriterHandle) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget_total = config.queue_bytes.min(Semaphore::MAX_PERMITS);
    let sink = CaptureSink {
        tx: tx.clone(),
        budget: Arc::new(Semaphore::new(budget_total)),
        budget_total,
        metrics: metrics.clone(),
        warned_full: Arc::new(AtomicBool::new(false)),
    };
    let task = tokio::spawn(run(store, run_id, config, metrics, rx));
    (sink, WriterHandle { tx, task })
}

async fn run(
    store: Store,
    run_id: i64,
    config: WriterConfig,
    metrics: WriterMetrics,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) -> Result<RunSummary, CaptureError> {
    let max_batch = config.max_batch.max(1);
    let mut seen_sessions: HashSet<i64> = HashSet::new();
    let mut records: Vec<ExchangeRecord> = Vec::with_capacity(max_batch);
    let mut held: Vec<(OwnedSemaphorePermit, usize)> = Vec::with_capacity(max_batch);
    let mut dropped_stored = 0;
    let mut closing = false;
    while !closing {
        match rx.recv().await {
            Some(Msg::Record(r, permit, weight)) => {
                records.push(*r);
                held.push((permit, weight));
            }
            Some(Msg::Close) | None => closing = true,
        }
        // Take whatever else is already queued, so a busy proxy gets large
        // transactions and an idle one gets each record written at once.
        while records.len() < max_batch {
            match rx.try_recv() {
                Ok(Msg::Record(r, permit, weight)) => {
                    records.push(*r);
                    held.push((permit, weight));
                }
                Ok(Msg::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let batch_was_full = records.len() == max_batch;
        if !records.is_empty() {
            let new_sessions: Vec<Arc<SessionInfo>> = records
                .iter()
                .filter(|r| seen_sessions.insert(r.session.session_no))
                .map(|r| r.session.clone())
                .collect();
            match store.insert_batch(run_id, &new_sessions, &records).await {
                Ok(()) => {
                    metrics.recorded.inc_by(records.len() as u64);
                }
                Err(e) => {
                    metrics.dropped.inc_by(records.len() as u64);
                    for s in &new_sessions {
                        seen_sessions.remove(&s.session_no);
                    }
                    tracing::warn!(error = %e, records = records.len(), "capture store refused a batch; records dropped");
                }
            }
            records.clear();
            for (permit, weight) in held.drain(..) {
                metrics.queue_bytes.dec_by(weight as i64);
                drop(permit);
            }
        }
        let dropped = metrics.dropped.get();
        if dropped != dropped_stored && store.set_dropped(run_id, dropped).await.is_ok() {
            dropped_stored = dropped;
        }
        if !closing && !batch_was_full && !config.linger.is_zero() {
            tokio::time::sleep(config.linger).await;
        }
    }
    // Nothing may be sent from here on; count any straggler as dropped.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Record(_, _, weight) = msg {
            metrics.queue_bytes.dec_by(weight as i64);
            metrics.dropped.inc();
        }
    }
    store.finish_run(run_id, metrics.dropped.get()).await
}
