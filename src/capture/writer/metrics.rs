//! The writer's counters: what was recorded, what was dropped and why,
//! what is waiting, and whether the store refuses batches. The proxy's
//! admin endpoint exports them (`proxy::metrics`); the writer, its sink and
//! the proxy's drain count into them.

use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::capture::StoreFault;

/// Why a record was not stored: the `reason` label of
/// `tapedeck_records_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue's byte budget was spent while the store kept up badly.
    QueueFull,
    /// The store's disk is full (SQLITE_FULL, PostgreSQL class 53).
    DiskFull,
    /// The store stayed locked by another connection.
    StoreBusy,
    /// Any other store failure (I/O error, lost connection).
    StoreError,
    /// Still in flight when the drain timeout ended the stop.
    DrainTimeout,
    /// Still queued when the bounded flush at stop ran out of time.
    FlushTimeout,
    /// Redacting the record failed (a bug: it panicked, or the redaction
    /// thread is gone); it is not stored unredacted.
    RedactionFailed,
}

impl DropReason {
    /// Every reason, in the order the metric lists them.
    pub const ALL: [DropReason; 7] = [
        DropReason::QueueFull,
        DropReason::DiskFull,
        DropReason::StoreBusy,
        DropReason::StoreError,
        DropReason::DrainTimeout,
        DropReason::FlushTimeout,
        DropReason::RedactionFailed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::DiskFull => "disk_full",
            DropReason::StoreBusy => "store_busy",
            DropReason::StoreError => "store_error",
            DropReason::DrainTimeout => "drain_timeout",
            DropReason::FlushTimeout => "flush_timeout",
            DropReason::RedactionFailed => "redaction_failed",
        }
    }

    pub(super) fn of(fault: StoreFault) -> DropReason {
        match fault {
            StoreFault::Full => DropReason::DiskFull,
            StoreFault::Busy => DropReason::StoreBusy,
            StoreFault::Other => DropReason::StoreError,
        }
    }
}

/// Label set of `tapedeck_records_dropped_total`: `reason`.
pub type DropLabels = Vec<(&'static str, &'static str)>;

/// Counters the writer keeps; the admin endpoint exports them.
#[derive(Debug, Clone)]
pub struct WriterMetrics {
    /// Exchanges committed to the store.
    pub recorded: Counter,
    /// Exchanges observed but not stored, by reason.
    pub dropped: Family<DropLabels, Counter>,
    /// Bytes of records waiting in the queue.
    pub queue_bytes: Gauge,
    /// WebSocket frames not stored (past the bounds, or in a part that was
    /// dropped); each is also counted in its exchange's
    /// `ws_frames_dropped` when that exchange is stored.
    pub ws_frames_dropped: Counter,
    /// The sum of `dropped` over its reasons.
    dropped_total: Counter,
    /// Set while the store refuses batches: the reason and what it said.
    fault: Arc<Mutex<Option<(DropReason, String)>>>,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        let dropped = Family::<DropLabels, Counter>::default();
        // Every reason is listed from the start, at 0.
        for reason in DropReason::ALL {
            let _ = dropped.get_or_create(&vec![("reason", reason.as_str())]);
        }
        WriterMetrics {
            recorded: Counter::default(),
            dropped,
            queue_bytes: Gauge::default(),
            ws_frames_dropped: Counter::default(),
            dropped_total: Counter::default(),
            fault: Arc::default(),
        }
    }
}

impl WriterMetrics {
    /// Counts `n` records dropped for `reason`.
    pub fn drop_records(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.dropped
                .get_or_create(&vec![("reason", reason.as_str())])
                .inc_by(n);
            self.dropped_total.inc_by(n);
        }
    }

    /// Counts `n` WebSocket frames not stored.
    pub fn drop_frames(&self, n: u64) {
        if n > 0 {
            self.ws_frames_dropped.inc_by(n);
        }
    }

    /// Records dropped so far, all reasons.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total.get()
    }

    /// Records dropped so far, by reason, leaving out reasons at 0.
    pub fn dropped_by_reason(&self) -> Vec<(&'static str, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| {
                let n = self
                    .dropped
                    .get_or_create(&vec![("reason", r.as_str())])
                    .get();
                (r.as_str(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// While the store refuses batches (records are being dropped for it):
    /// the reason and the store's error.
    pub fn storage_fault(&self) -> Option<(DropReason, String)> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn set_fault(&self, fault: Option<(DropReason, String)>) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }
}
