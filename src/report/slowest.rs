//! Each route's slowest requests, kept with the W3C trace id they carried
//! so that one can be found in the target's tracing backend (Jaeger,
//! Tempo, Honeycomb). Bounded: the [`SLOWEST`] slowest per route and
//! stage. Exact across `report merge`: the slowest of a union are the
//! slowest of the parts' slowest.

use std::borrow::Cow;
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

/// One kept request, compact: formatted only for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slow {
    latency_us: u64,
    started_at_us: i64,
    trace_id: Option<u128>,
    status: Option<u16>,
    error: Option<Cow<'static, str>>,
}

impl Slow {
    /// Slower first; among equals the earlier, then by trace id, status
    /// and error, so that the order never depends on arrival.
    fn rank(&self, other: &Slow) -> Ordering {
        other
            .latency_us
            .cmp(&self.latency_us)
            .then(self.started_at_us.cmp(&other.started_at_us))
            .then(self.trace_id.cmp(&other.trace_id))
            .then(self.status.cmp(&other.status))
            .then_with(|| self.error.cmp(&other.error))
    }
}

/// A route's slowest requests, slowest first.
#[derive(Debug, Clone, Default)]
pub struct Slowest(Vec<Slow>);

impl Slowest {
    /// Offers one request: nothing is allocated or formatted for it, and
    /// once the list is full, one comparison turns away a request that is
    /// not among the slowest.
    pub fn record(
        &mut self,
        latency: Duration,
        started_at_us: i64,
        trace_id: Option<u128>,
        status: Option<u16>,
        error: Option<&'static str>,
    ) {
        self.insert(Slow {
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            started_at_us,
            trace_id,
            status,
            error: error.map(Cow::Borrowed),
        });
    }

    fn insert(&mut self, slow: Slow) {
        if self.0.len() == SLOWEST
            && self
                .0
                .last()
                .is_some_and(|last| last.rank(&slow) != Ordering::Greater)
        {
            return;
        }
        let at = self
            .0
            .partition_point(|kept| kept.rank(&slow) == Ordering::Less);
        self.0.insert(at, slow);
        self.0.truncate(SLOWEST);
    }

    /// Adds another part's slowest (a shard's).
    pub fn add(&mut self, other: &Slowest) {
        for slow in &other.0 {
            self.insert(slow.clone());
        }
    }

    /// The report's list, slowest first.
    pub fn report(&self) -> Vec<SlowRequest> {
        self.0
            .iter()
            .map(|s| SlowRequest {
                trace_id: s.trace_id.map(|t| format!("{t:032x}")),
                started_at: crate::time::timestamp_ms(s.started_at_us),
                started_at_us: s.started_at_us,
                latency_ms: s.latency_us as f64 / 1000.0,
                status: s.status,
                error: s.error.as_deref().map(str::to_string),
            })
            .collect()
    }

    /// Read back from a report (for merging); at most [`SLOWEST`] kept. A
    /// trace id that is not 32 hex digits (an edited report) is dropped.
    pub fn from_report(list: &[SlowRequest]) -> Slowest {
        let mut s = Slowest::default();
        for r in list {
            s.insert(Slow {
                latency_us: (r.latency_ms * 1000.0).round().max(0.0) as u64,
                started_at_us: r.started_at_us,
                trace_id: r
                    .trace_id
                    .as_deref()
                    .and_then(|t| u128::from_str_radix(t, 16).ok()),
                status: r.status,
                error: r.error.clone().map(Cow::Owned),
            });
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(list: &Slowest) -> Vec<f64> {
        list.report().iter().map(|s| s.latency_ms).collect()
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
    fn equal_latencies_keep_the_earliest_whatever_the_arrival_order() {
        let (mut forward, mut backward) = (Slowest::default(), Slowest::default());
        for i in 0..30 {
            forward.record(Duration::from_millis(5), i, None, Some(200), None);
            backward.record(Duration::from_millis(5), 29 - i, None, Some(200), None);
        }
        let starts: Vec<i64> = forward.report().iter().map(|s| s.started_at_us).collect();
        assert_eq!(starts, (0..10).collect::<Vec<_>>());
        assert_eq!(forward.report(), backward.report());
    }

    #[test]
    fn merged_halves_keep_the_slowest_of_the_union() {
        let (mut a, mut b, mut whole) =
            (Slowest::default(), Slowest::default(), Slowest::default());
        for i in 0..60u64 {
            // Ties included: 60 requests over 40 latencies.
            let latency = Duration::from_micros((i * 7919) % 40);
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
