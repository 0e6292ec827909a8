//! What replay emits: one event per planned request (sent or skipped) and
//! per started virtual user, with the timing of streamed responses and
//! replayed WebSockets, and the live counters the progress line reads.
//!
//! These types belong to the report side so that replay depends on report
//! and never the other way: replay builds them and sends them over a
//! channel; `report::collect` turns them into statistics. Plain data (and
//! the guard that counts a VU alive), no I/O here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::live::LiveMetrics;

/// The result of one sent request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Normalized route, `METHOD /path/{id}`.
    pub route: std::sync::Arc<str>,
    /// When the plan wanted it sent.
    pub planned: Instant,
    /// When it was sent.
    pub sent: Instant,
    /// Wall-clock send time, µs since the Unix epoch.
    pub sent_at_us: i64,
    /// Time to the response head, if one came.
    pub ttfb: Option<Duration>,
    /// When the response ended (or the request failed).
    pub finished: Instant,
    /// Wall-clock completion, µs since the Unix epoch.
    pub finished_at_us: i64,
    /// Live status, if a response came.
    pub status: Option<u16>,
    /// Recorded status.
    pub recorded_status: Option<u16>,
    /// Transport failure: `connect`, `timeout`, `reset`, `tls`.
    pub failure: Option<&'static str>,
    /// Another world's replay of this recorded write got the same live id.
    pub suspected_dedup: bool,
    /// Recorded values this answer would have mapped to a second live
    /// value in its world (dropped; the first mapping kept).
    pub conflicting_values: u64,
    /// The answer succeeded as recorded, but its JSON lacks what the
    /// recorded answer had ("200 but wrong").
    pub shape_mismatch: bool,
    /// A streamed response's chunk timing.
    pub stream: Option<StreamTiming>,
    /// A replayed WebSocket.
    pub ws: Option<WsTiming>,
    /// The answer's value of each `--group-by-header` header (lowercase
    /// name; `(none)` when it lacked the header); empty without an answer
    /// or without grouping.
    pub by_header: Vec<(std::sync::Arc<str>, String)>,
    /// The W3C trace id the request carried (`traceparent`), if any.
    pub trace_id: Option<u128>,
}

/// Everything replay reports to the collector.
///
/// Moved by value through the collector's channel: an outcome per
/// request is the common event, and boxing it would cost an allocation
/// per request for the rarer, smaller ones' sake.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// A virtual user started.
    VuStarted,
    /// A request was sent and finished.
    Outcome(Outcome),
    /// A request was not sent because its recorded body was truncated.
    TruncatedSkipped,
    /// A request or WebSocket was not sent because the replay is
    /// `--read-only` and it writes.
    ReadOnlySkipped,
    /// A request was not sent because a response it needs failed.
    DependentSkipped {
        /// The skipped request's route.
        route: std::sync::Arc<str>,
        /// The recorded value it needed and the route whose answer failed
        /// to hand it out (none when a profile rule's variable was missing).
        waited_for: Option<(String, std::sync::Arc<str>)>,
    },
    /// Values substituted in a request about to be sent.
    Substitutions {
        /// One entry per substitution: `correlated`, `credential`, `nonce`.
        kinds: Vec<&'static str>,
        /// Handed-out values with no live value, sent as recorded.
        unresolved: u64,
    },
}

/// Counters the progress line reads while a stage runs.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Requests finished in the current stage.
    pub requests: AtomicU64,
    /// Of which errors.
    pub errors: AtomicU64,
    /// Requests sent but not finished.
    pub inflight: AtomicU64,
    /// p95 service latency so far, µs.
    pub p95_us: AtomicU64,
    /// Index of the running stage.
    pub stage: AtomicU64,
    /// Virtual users started and not finished (see [`LiveStats::vu_alive`]).
    pub vus: AtomicU64,
    /// The Prometheus series `replay --admin` serves; `None` without it,
    /// and then nothing is counted for them.
    pub metrics: Option<Arc<LiveMetrics>>,
}

impl LiveStats {
    /// Counts a virtual user in [`LiveStats::vus`] until the guard drops.
    pub fn vu_alive(&self) -> VuAlive<'_> {
        self.vus.fetch_add(1, Ordering::Relaxed);
        VuAlive(self)
    }
}

/// A virtual user counted as alive; see [`LiveStats::vu_alive`].
#[derive(Debug)]
pub struct VuAlive<'a>(&'a LiveStats);

impl Drop for VuAlive<'_> {
    fn drop(&mut self) {
        self.0.vus.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one replayed WebSocket did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WsTiming {
    /// Connect and handshake.
    pub connect: Duration,
    /// Client frame to the next server frame.
    pub rtts: Vec<Duration>,
    /// Client frames sent.
    pub sent: u64,
    /// Server frames received.
    pub received: u64,
    /// The close code the server sent (1005: a close without a code).
    pub close_code: Option<u16>,
}

/// When the chunks of a streamed response arrived.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamTiming {
    /// Gaps between consecutive chunks.
    pub gaps: Vec<Duration>,
    /// Response head to the last chunk.
    pub total: Duration,
}
