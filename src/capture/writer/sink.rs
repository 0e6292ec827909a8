//! The sink: where the proxy puts what it recorded, without waiting.
//!
//! Two kinds of item share one queue and one byte budget: exchange records
//! (one per exchange, counted as recorded or dropped) and parts of an open
//! WebSocket's frames ([`FramePart`], not exchanges: an item that does not
//! fit is the caller's to count in its exchange). Admission is a semaphore
//! of bytes; the queue itself is an unbounded channel to the writer task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::metrics::{DropReason, WriterMetrics};
use crate::capture::{ExchangeRecord, FramePart};

/// What the queue carries.
pub(super) enum Item {
    /// A finished exchange.
    Exchange(Box<ExchangeRecord>),
    /// A part of an open socket's frames.
    Part(Box<FramePart>),
}

/// An item with the share of the budget it holds until it is written or
/// dropped.
pub(super) struct Queued {
    pub(super) item: Item,
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) weight: usize,
}

/// Where the proxy's tap puts records. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct CaptureSink {
    tx: mpsc::UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
    budget_total: usize,
    metrics: WriterMetrics,
    /// Warnings given once: a full queue, a record larger than the whole
    /// budget, a socket's part that found no room.
    warned_full: Arc<AtomicBool>,
    warned_oversized: Arc<AtomicBool>,
    warned_part: Arc<AtomicBool>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued")
            .field("weight", &self.weight)
            .finish()
    }
}

impl CaptureSink {
    /// A sink in front of `tx` with a budget of `budget_total` bytes.
    pub(super) fn new(
        tx: mpsc::UnboundedSender<Queued>,
        budget_total: usize,
        metrics: WriterMetrics,
    ) -> Self {
        CaptureSink {
            tx,
            budget: Arc::new(Semaphore::new(budget_total)),
            budget_total,
            metrics,
            warned_full: Arc::default(),
            warned_oversized: Arc::default(),
            warned_part: Arc::default(),
        }
    }

    /// Queues a record without waiting. Returns `false` (and counts the
    /// record as dropped) when the queue is full or the writer is gone.
    pub fn try_send(&self, mut record: ExchangeRecord) -> bool {
        record.compact();
        let weight = record.weight();
        let Some(permit) = self.admit(weight) else {
            // A full queue while the store refuses batches is the store's
            // fault, and counted as such.
            let reason = self
                .metrics
                .storage_fault()
                .map_or(DropReason::QueueFull, |(r, _)| r);
            self.metrics.drop_records(reason, 1);
            if weight > self.budget_total {
                if !self.warned_oversized.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        record_bytes = weight,
                        queue_bytes = self.budget_total,
                        "a record larger than the capture queue's whole budget was dropped \
                         (counted in tapedeck_records_dropped_total); raise --queue-bytes or \
                         lower --max-body to keep such records"
                    );
                }
            } else if !self.warned_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    queue_bytes = self.budget_total,
                    reason = reason.as_str(),
                    "capture queue full: dropping records (counted in tapedeck_records_dropped_total) \
                     until the store catches up; requests are still forwarded"
                );
            }
            return false;
        };
        self.queue(Item::Exchange(Box::new(record)), permit, weight)
            .inspect_err(|_| self.metrics.drop_records(DropReason::DrainTimeout, 1))
            .is_ok()
    }

    /// Queues a part of an open socket's frames without waiting. Returns
    /// `false` when the queue has no room for it or the writer is gone:
    /// its frames are then the caller's to count as not stored (a part is
    /// not an exchange, and no record is counted as dropped for it).
    pub fn try_send_part(&self, part: FramePart) -> bool {
        let weight = part.weight();
        let Some(permit) = self.admit(weight) else {
            if !self.warned_part.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    part_bytes = weight,
                    queue_bytes = self.budget_total,
                    frames = part.frames.len(),
                    "capture queue full: a part of a WebSocket's frames was not queued; its frames \
                     are counted in the exchange's ws_frames_dropped and in \
                     tapedeck_ws_frames_dropped_total, and the socket is relayed as usual"
                );
            }
            return false;
        };
        self.queue(Item::Part(Box::new(part)), permit, weight)
            .is_ok()
    }

    /// The budget for `weight` bytes, if the queue has room for it.
    fn admit(&self, weight: usize) -> Option<OwnedSemaphorePermit> {
        let permits = u32::try_from(weight)
            .ok()
            .filter(|_| weight <= self.budget_total)?;
        self.budget.clone().try_acquire_many_owned(permits).ok()
    }

    fn queue(&self, item: Item, permit: OwnedSemaphorePermit, weight: usize) -> Result<(), ()> {
        self.metrics.queue_bytes.inc_by(weight as i64);
        let queued = Queued {
            item,
            permit,
            weight,
        };
        if self.tx.send(queued).is_err() {
            self.metrics.queue_bytes.dec_by(weight as i64);
            return Err(());
        }
        Ok(())
    }

    /// The writer's counters.
    pub fn metrics(&self) -> &WriterMetrics {
        &self.metrics
    }
}
