//! Each route's slowest requests, kept with the W3C trace id they carried
//! so that one can be found in the target's tracing backend (Jaeger,
//! Tempo, Honeycomb). Bounded: the [`SLOWEST`] slowest per route and
//! stage. Exact across `report merge`: the slowest of a union are the
//! slowest of the parts' slowest.

use std::cmp::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One of a route's slowest requests: what finds it in a tracing backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlowRequest {
    /// The W3C trace id its `traceparent` carried (32 hex digits); absent
    /// with `--no-traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// When it was sent, RFC 3339 UTC to the millisecond.
    pub started_at: String,
    /// When it was sent, µs since the Unix epoch.
    pub started_at_us: i64,
    /// Service latency.
    pub latency_ms: f64,
    /// Live status; absent when no answer came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Its error kind, when it was an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Requests kept per route and stage.
pub const SLOWEST: usize = 10;

/// A route's slowest requests, slowest first.
#[derive(Debug, Clone, Default)]
pub struct Slowest(Vec<SlowRequest>);

/// Slower first; among equals the earlier, then by trace id, so that the
/// order does not depend on arrival.
fn rank(a: &SlowRequest, b: &SlowRequest) -> Ordering {
    b.latency_ms
        .total_cmp(&a.latency_ms)
        .then(a.started_at_us.cmp(&b.started_at_us))
        .then_with(|| a.trace_id.cmp(&b.trace_id))
}

impl Slowest {
    /// Offers one request. What it would keep is built only when the
    /// request is among the slowest so far: a comparison per request once
    /// the list is full.
    pub fn record(
        &mut self,
        latency: Duration,
        started_at_us: i64,
        trace_id: Option<u128>,
        status: Option<u16>,
        error: Option<&str>,
    ) {
        let latency_ms = latency.as_micros() as f64 / 1000.0;
        if self.0.len() == SLOWEST && self.0.last().is_some_and(|l| l.latency_ms >= latency_ms) {
            return;
        }
        self.insert(SlowRequest {
            trace_id: trace_id.map(|t| format!("{t:032x}")),
            started_at: crate::time::timestamp_ms(started_at_us),
            started_at_us,
            latency_ms,
            status,
            error: error.map(str::to_string),
        });
    }

    fn insert(&mut self, slow: SlowRequest) {
        let at = self
            .0
            .partition_point(|kept| rank(kept, &slow) == Ordering::Less);
        if at < SLOWEST {
            self.0.insert(at, slow);
            self.0.truncate(SLOWEST);
        }
    }

    /// Adds another part's slowest (a shard's, another worker's).
    pub fn add(&mut self, other: &Slowest) {
        for slow in &other.0 {
            self.insert(slow.clone());
        }
    }

    /// The report's list, slowest first.
    pub fn report(&self) -> Vec<SlowRequest> {
        self.0.clone()
    }

    /// Read back from a report (for merging); kept in order, at most
    /// [`SLOWEST`].
    pub fn from_report(list: &[SlowRequest]) -> Slowest {
        let mut s = Slowest::default();
        for slow in list {
            s.insert(slow.clone());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(list: &Slowest) -> Vec<f64> {
        list.0.iter().map(|s| s.latency_ms).collect()
    }

    #[test]
    fn the_ten_slowest_are_kept_slowest_first_whatever_the_arrival_order() {
        let mut s = Slowest::default();
        // 1..=100 ms in a scrambled order.
        for i in 0..100u64 {
            let ms = (i * 37) % 100 + 1;
            s.record(
                Duration::from_millis(ms),
                i as i64,
                Some(u128::from(i) + 1),
                Some(200),
                None,
            );
        }
        assert_eq!(
            ms(&s),
            (91..=100).rev().map(|m| m as f64).collect::<Vec<_>>()
        );
        let top = &s.report()[0];
        // 100 ms came at i = 27 (27 * 37 % 100 = 99).
        assert_eq!(
            top.trace_id.as_deref(),
            Some("0000000000000000000000000000001c")
        );
        assert_eq!(top.started_at_us, 27);
    }

    #[test]
    fn merged_halves_keep_the_slowest_of_the_union() {
        let (mut a, mut b, mut whole) =
            (Slowest::default(), Slowest::default(), Slowest::default());
        for i in 0..60u64 {
            let latency = Duration::from_micros((i * 7919) % 1000);
            let part = if i % 3 == 0 { &mut a } else { &mut b };
            part.record(latency, i as i64, None, None, Some("timeout"));
            whole.record(latency, i as i64, None, None, Some("timeout"));
        }
        a.add(&b);
        assert_eq!(a.report(), whole.report());
        assert_eq!(
            Slowest::from_report(&whole.report()).report(),
            whole.report()
        );
        assert_eq!(whole.report()[0].error.as_deref(), Some("timeout"));
    }
}
