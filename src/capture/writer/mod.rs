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
//! redacted ([`Redactor::redact_record`], [`Redactor::redact_part`])
//! before its first try, on a thread of its own at a lower priority
//! ([`Background`]), so decoding, scanning and re-encoding bodies never
//! runs on the client's path, holds up a runtime worker, or takes CPU that
//! forwarding needs.
//!
//! An open WebSocket's frames come in parts ([`FramePart`]) through the
//! same queue, budget and batches; a part is not an exchange: it counts
//! neither as recorded nor as dropped. A part the writer has to drop (the
//! store failed) has its frames added to its exchange's
//! `ws_frames_dropped` when that exchange's record comes through (always
//! after its parts: the queue is first in, first out).
//!
//! Closing ([`WriterHandle::close`]) writes what is queued, trying each
//! batch once, for at most [`FLUSH_LIMIT`]; what cannot be written then is
//! counted as dropped, and the run is closed.

mod metrics;
mod sink;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::redact::{Background, Redactor};
use super::{
    CaptureError, ExchangeRecord, FramePart, RunLock, RunSummary, SessionInfo, Store, StoreFault,
};
pub use metrics::{DropLabels, DropReason, WriterMetrics};
pub use sink::CaptureSink;
use sink::{Item, Queued};

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
    /// Most records (and frame parts) written in one transaction.
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
    let sink = CaptureSink::new(tx, budget_total, metrics.clone());
    let writer = Writer {
        store,
        run_id,
        metrics,
        rx,
        seen_sessions: HashSet::new(),
        lost_frames: HashMap::new(),
        redaction: (!redactor.keeps_credentials()).then(|| Background::spawn(redactor)),
    };
    let task = tokio::spawn(writer.run(config, closed, lock));
    (sink, WriterHandle { close, task })
}

/// Records and frame parts taken from the queue, with the budget they hold
/// until they are written or dropped.
#[derive(Default)]
struct Batch {
    records: Vec<ExchangeRecord>,
    parts: Vec<FramePart>,
    held: Vec<(OwnedSemaphorePermit, usize)>,
    tries: u32,
    /// The records were redacted (once, before the first try).
    redacted: bool,
}

impl Batch {
    fn len(&self) -> usize {
        self.records.len() + self.parts.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the batch and gives its budget back to the queue.
    fn release(&mut self, metrics: &WriterMetrics) {
        self.records.clear();
        self.parts.clear();
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
    /// Frames of parts dropped here, by their exchange (session, seq),
    /// until its record comes through and counts them.
    lost_frames: HashMap<(i64, i64), u64>,
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
            if batch.is_empty() {
                if flush_until.is_none() {
                    tokio::select! {
                        biased;
                        queued = self.rx.recv() => match queued {
                            Some(q) => self.take(&mut batch, q),
                            None => flush_until = Some(Instant::now() + FLUSH_LIMIT),
                        },
                        _ = closed.wait_for(|c| *c) => flush_until = Some(Instant::now() + FLUSH_LIMIT),
                    }
                }
                // Take whatever else is already queued, so a busy proxy
                // gets large transactions and an idle one gets each record
                // written at once.
                while batch.len() < max_batch {
                    match self.rx.try_recv() {
                        Ok(q) => self.take(&mut batch, q),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
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
            let full = batch.len() == max_batch;
            self.redact(&mut batch).await;
            if batch.is_empty() {
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

    /// Puts an item taken from the queue into the batch. A record gets the
    /// frames of its socket's parts that were dropped here counted.
    fn take(&mut self, batch: &mut Batch, queued: Queued) {
        match queued.item {
            Item::Exchange(mut record) => {
                let key = (record.session.session_no, record.seq);
                if let Some(lost) = self.lost_frames.remove(&key) {
                    record.ws_frames_dropped += lost;
                }
                batch.records.push(*record);
            }
            Item::Part(part) => batch.parts.push(*part),
        }
        batch.held.push((queued.permit, queued.weight));
    }

    /// Has a batch taken from the queue redacted (once, before its first
    /// try). A batch that cannot be is dropped and counted: nothing
    /// unredacted is stored.
    async fn redact(&mut self, batch: &mut Batch) {
        let Some(redaction) = &self.redaction else {
            return;
        };
        if batch.redacted {
            return;
        }
        batch.redacted = true;
        let records = std::mem::take(&mut batch.records);
        let parts = std::mem::take(&mut batch.parts);
        let count = records.len();
        let part_frames: Vec<((i64, i64), u64)> = parts
            .iter()
            .map(|p| ((p.session_no, p.seq), p.frames.len() as u64))
            .collect();
        let redacted = match redaction {
            Ok(thread) => thread.redact(records, parts).await,
            Err(_) => None,
        };
        match redacted {
            Some(redacted) => {
                batch.records = redacted.records;
                batch.parts = redacted.parts;
                if redacted.failed_records > 0 {
                    self.metrics
                        .drop_records(DropReason::RedactionFailed, redacted.failed_records);
                }
                for part in &redacted.failed_parts {
                    self.lose(part);
                }
            }
            None => {
                tracing::error!(
                    records = count,
                    "the redaction thread is gone; records dropped"
                );
                self.metrics
                    .drop_records(DropReason::RedactionFailed, count as u64);
                for (exchange, n) in part_frames {
                    self.lose_frames(exchange, n);
                }
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
                &batch.parts,
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

    fn drop_batch(&mut self, batch: &mut Batch, reason: DropReason) {
        self.metrics
            .drop_records(reason, batch.records.len() as u64);
        tracing::warn!(
            records = batch.records.len(),
            frame_parts = batch.parts.len(),
            reason = reason.as_str(),
            "capture records dropped"
        );
        for part in std::mem::take(&mut batch.parts) {
            self.lose(&part);
        }
        batch.release(&self.metrics);
    }

    /// Counts everything still in the queue as dropped: records as
    /// exchanges, parts as frames.
    fn drop_queued(&mut self, reason: DropReason) {
        let mut n = 0;
        while let Ok(queued) = self.rx.try_recv() {
            self.metrics.queue_bytes.dec_by(queued.weight as i64);
            match queued.item {
                Item::Exchange(_) => n += 1,
                Item::Part(part) => self.lose(&part),
            }
        }
        self.metrics.drop_records(reason, n);
    }

    /// Counts a dropped part's frames, to be added to its exchange.
    fn lose(&mut self, part: &FramePart) {
        self.lose_frames((part.session_no, part.seq), part.frames.len() as u64);
    }

    fn lose_frames(&mut self, exchange: (i64, i64), n: u64) {
        self.metrics.drop_frames(n);
        *self.lost_frames.entry(exchange).or_default() += n;
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
