//! Live metrics of a running replay, for `replay --admin`: the Prometheus
//! series a dashboard watches while the stages run (docs/replay.md, "Live
//! metrics").
//!
//! Fed by `collect` from the same events, at the same place, as the
//! report's numbers, so a scrape taken after the last stage agrees with the
//! report exactly; the two gauges the engine keeps as atomics (requests in
//! flight, VUs alive) are read at scrape time. Served by the shared
//! `crate::admin` server; nothing here does I/O.
//!
//! The request path stays cheap: a stage's collector holds its own handles
//! to every (route) and (route, error kind) series it has seen and to its
//! skip counters, so an outcome costs a hash lookup, an atomic add and a histogram observation
//! (one uncontended mutex of its own), never a lock on a family's map.
//! Without `--admin` none of this exists.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::grouped::OTHER;
use crate::admin::latency_histogram;

/// Distinct route labels kept; later routes are counted under `(other)`,
/// so a capture whose paths defeat route normalization cannot grow the
/// scrape without bound (each route holds a histogram per stage).
pub const ROUTE_LABELS: usize = 100;

/// `stage`, `multiplier`, `route`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    stage: String,
    multiplier: String,
    route: String,
}

/// `stage`, `route`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    stage: String,
    route: String,
}

/// `stage`, `route`, `kind`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    stage: String,
    route: String,
    kind: String,
}

/// `stage`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

/// `stage`, `reason`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    stage: String,
    reason: String,
}

/// `stage`, `multiplier`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CurrentLabels {
    stage: String,
    multiplier: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Every series of a running replay (one per process).
#[derive(Debug)]
pub struct LiveMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    latency: HistogramFamily,
    late_sends: Family<StageLabels, Counter>,
    skipped: Family<SkipLabels, Counter>,
    vus_started: Family<StageLabels, Counter>,
    in_flight: Gauge,
    active_vus: Gauge,
    stage: Gauge,
    multiplier: Gauge,
    current: Family<CurrentLabels, Gauge>,
    finished: Gauge,
    /// The route labels handed out so far (at most [`ROUTE_LABELS`]).
    routes: Mutex<HashSet<Arc<str>>>,
    /// The labels of the `current_stage` series now at 1.
    current_labels: Mutex<Option<CurrentLabels>>,
}

impl Default for LiveMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tapedeck_replay");
        let requests = Family::default();
        let errors = Family::default();
        let latency = HistogramFamily::new_with_constructor(latency_histogram);
        let late_sends = Family::default();
        let skipped = Family::default();
        let vus_started = Family::default();
        let (in_flight, active_vus) = (Gauge::default(), Gauge::default());
        let (stage, multiplier) = (Gauge::default(), Gauge::default());
        let current = Family::default();
        let finished = Gauge::default();
        registry.register(
            "requests",
            "Requests whose answer ended (or failed), by stage, multiplier and route; the report's `requests`",
            requests.clone(),
        );
        registry.register(
            "errors",
            "Errors by stage, route and kind (connect, timeout, reset, tls, http_429, http_4xx, http_5xx); the report's `error_kinds`",
            errors.clone(),
        );
        registry.register(
            "latency_seconds",
            "Service latency (sent to the end of the answer) by stage and route",
            latency.clone(),
        );
        registry.register(
            "late_sends",
            "Requests sent more than 2 ms after their planned instant; the report's `late_requests`",
            late_sends.clone(),
        );
        registry.register(
            "skipped",
            "Planned requests not sent, by reason: dependent, truncated, read_only",
            skipped.clone(),
        );
        registry.register(
            "vus_started",
            "Virtual users started; the report's `vus`",
            vus_started.clone(),
        );
        registry.register(
            "in_flight",
            "Requests sent and not yet answered",
            in_flight.clone(),
        );
        registry.register(
            "active_vus",
            "Virtual users started and not yet finished",
            active_vus.clone(),
        );
        registry.register(
            "stage",
            "Index of the running (or last) stage, from 0",
            stage.clone(),
        );
        registry.register(
            "multiplier",
            "Multiplier of the running (or last) stage",
            multiplier.clone(),
        );
        registry.register(
            "current_stage",
            "1 for the running (or last) stage",
            current.clone(),
        );
        registry.register(
            "finished",
            "1 once the replay has ended and its report is written: every value is final",
            finished.clone(),
        );
        LiveMetrics {
            registry,
            requests,
            errors,
            latency,
            late_sends,
            skipped,
            vus_started,
            in_flight,
            active_vus,
            stage,
            multiplier,
            current,
            finished,
            routes: Mutex::new(HashSet::new()),
            current_labels: Mutex::new(None),
        }
    }
}

impl LiveMetrics {
    /// A stage starts: the current-stage series move to it, and its
    /// collector gets the handles it counts with.
    pub fn stage_started(
        self: &Arc<Self>,
        index: u64,
        name: &str,
        multiplier: u32,
    ) -> StageMetrics {
        self.stage.set(i64::try_from(index).unwrap_or(i64::MAX));
        self.multiplier.set(i64::from(multiplier));
        let labels = CurrentLabels {
            stage: name.to_string(),
            multiplier: multiplier.to_string(),
        };
        self.current.get_or_create(&labels).set(1);
        // A poisoned lock only means another stage's start panicked; the
        // labels it holds are still the last ones set.
        let mut current = self
            .current_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = current.replace(labels.clone())
            && old != labels
        {
            self.current.remove(&old);
        }
        let stage = StageLabels {
            stage: name.to_string(),
        };
        let skipped = SKIP_REASONS.map(|reason| {
            self.skipped.get_or_create_owned(&SkipLabels {
                stage: name.to_string(),
                reason: reason.to_string(),
            })
        });
        StageMetrics {
            late_sends: self.late_sends.get_or_create_owned(&stage),
            vus_started: self.vus_started.get_or_create_owned(&stage),
            skipped,
            metrics: self.clone(),
            stage: name.to_string(),
            multiplier: multiplier.to_string(),
            routes: HashMap::new(),
        }
    }

    /// The replay has ended and its report is written.
    pub fn finish(&self) {
        self.finished.set(1);
    }

    /// The text exposition, with the engine's gauges as read now.
    pub fn encode(&self, in_flight: &AtomicU64, active_vus: &AtomicU64) -> String {
        let gauge = |a: &AtomicU64| i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        self.in_flight.set(gauge(in_flight));
        self.active_vus.set(gauge(active_vus));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The label a route is counted under: itself, or `(other)` past the
    /// first [`ROUTE_LABELS`].
    fn route_label(&self, route: &Arc<str>) -> String {
        let mut routes = self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if routes.contains(route) || routes.len() < ROUTE_LABELS {
            routes.insert(route.clone());
            route.to_string()
        } else {
            OTHER.to_string()
        }
    }
}

/// One route's series in one stage; its error counters by kind, made
/// when the kind first happens (few kinds: a short list).
#[derive(Debug)]
struct RouteHandles {
    label: String,
    requests: Counter,
    latency: Histogram,
    errors: Vec<(&'static str, Counter)>,
}

/// Why a planned request was not sent, as `skipped_total` labels it.
pub const SKIP_REASONS: [&str; 3] = ["dependent", "truncated", "read_only"];

/// One stage's handles, owned by its collector (no lock per request).
#[derive(Debug)]
pub struct StageMetrics {
    metrics: Arc<LiveMetrics>,
    stage: String,
    multiplier: String,
    late_sends: Counter,
    vus_started: Counter,
    /// By [`SKIP_REASONS`].
    skipped: [Counter; 3],
    routes: HashMap<Arc<str>, RouteHandles>,
}

impl StageMetrics {
    /// Counts one finished request: its route, service latency, error kind
    /// (if an error) and whether it was sent late.
    pub fn outcome(
        &mut self,
        route: &Arc<str>,
        service: Duration,
        error: Option<&'static str>,
        late: bool,
    ) {
        let handles = match self.routes.get_mut(route) {
            Some(handles) => handles,
            None => {
                let label = self.metrics.route_label(route);
                let handles = RouteHandles {
                    requests: self.metrics.requests.get_or_create_owned(&RequestLabels {
                        stage: self.stage.clone(),
                        multiplier: self.multiplier.clone(),
                        route: label.clone(),
                    }),
                    latency: self.metrics.latency.get_or_create_owned(&RouteLabels {
                        stage: self.stage.clone(),
                        route: label.clone(),
                    }),
                    label,
                    errors: Vec::new(),
                };
                self.routes.entry(route.clone()).or_insert(handles)
            }
        };
        handles.requests.inc();
        handles.latency.observe(service.as_secs_f64());
        if let Some(kind) = error {
            let at = match handles.errors.iter().position(|(k, _)| *k == kind) {
                Some(at) => at,
                None => {
                    let counter = self.metrics.errors.get_or_create_owned(&ErrorLabels {
                        stage: self.stage.clone(),
                        route: handles.label.clone(),
                        kind: kind.to_string(),
                    });
                    handles.errors.push((kind, counter));
                    handles.errors.len() - 1
                }
            };
            handles.errors[at].1.inc();
        }
        if late {
            self.late_sends.inc();
        }
    }

    /// Counts a virtual user started.
    pub fn vu_started(&self) {
        self.vus_started.inc();
    }

    /// Counts a planned request not sent, for `reason` (one of
    /// [`SKIP_REASONS`]; another is not counted).
    pub fn skipped(&self, reason: &'static str) {
        if let Some(at) = SKIP_REASONS.iter().position(|r| *r == reason) {
            self.skipped[at].inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn a_stage_counts_requests_errors_and_latency_under_its_labels() {
        let metrics = Arc::new(LiveMetrics::default());
        let mut warm = metrics.stage_started(0, "warm", 1);
        let route: Arc<str> = Arc::from("GET /api/rooms/{id}");
        warm.outcome(&route, Duration::from_millis(3), None, false);
        warm.outcome(&route, Duration::from_millis(30), Some("http_5xx"), true);
        warm.vu_started();
        warm.skipped("dependent");
        let mut peak = metrics.stage_started(1, "peak", 5);
        peak.outcome(&route, Duration::from_millis(300), None, false);
        let text = metrics.encode(&AtomicU64::new(4), &AtomicU64::new(2));
        let get = |s: &str| sample(&text, s);
        let r = "route=\"GET /api/rooms/{id}\"";
        assert_eq!(
            get(&format!(
                "tapedeck_replay_requests_total{{stage=\"warm\",multiplier=\"1\",{r}}}"
            )),
            Some(2.0)
        );
        assert_eq!(
            get(&format!(
                "tapedeck_replay_requests_total{{stage=\"peak\",multiplier=\"5\",{r}}}"
            )),
            Some(1.0)
        );
        assert_eq!(
            get(&format!(
                "tapedeck_replay_errors_total{{stage=\"warm\",{r},kind=\"http_5xx\"}}"
            )),
            Some(1.0)
        );
        assert_eq!(
            get(&format!(
                "tapedeck_replay_latency_seconds_bucket{{le=\"0.0064\",stage=\"warm\",{r}}}"
            )),
            Some(1.0)
        );
        assert_eq!(
            get(&format!(
                "tapedeck_replay_latency_seconds_count{{stage=\"warm\",{r}}}"
            )),
            Some(2.0)
        );
        assert_eq!(
            get("tapedeck_replay_late_sends_total{stage=\"warm\"}"),
            Some(1.0)
        );
        assert_eq!(
            get("tapedeck_replay_skipped_total{stage=\"warm\",reason=\"dependent\"}"),
            Some(1.0)
        );
        assert_eq!(get("tapedeck_replay_in_flight"), Some(4.0));
        assert_eq!(get("tapedeck_replay_active_vus"), Some(2.0));
        assert_eq!(get("tapedeck_replay_stage"), Some(1.0));
        assert_eq!(get("tapedeck_replay_multiplier"), Some(5.0));
        assert_eq!(
            get("tapedeck_replay_current_stage{stage=\"peak\",multiplier=\"5\"}"),
            Some(1.0)
        );
        assert!(
            !text.contains("current_stage{stage=\"warm\""),
            "only the running stage is current:\n{text}"
        );
        assert_eq!(get("tapedeck_replay_finished"), Some(0.0));
        metrics.finish();
        let text = metrics.encode(&AtomicU64::new(0), &AtomicU64::new(0));
        assert_eq!(sample(&text, "tapedeck_replay_finished"), Some(1.0));
    }

    #[test]
    fn routes_past_the_cap_count_as_other() {
        let metrics = Arc::new(LiveMetrics::default());
        let mut stage = metrics.stage_started(0, "s", 1);
        for i in 0..ROUTE_LABELS + 3 {
            let route: Arc<str> = Arc::from(format!("GET /r{i}"));
            stage.outcome(&route, Duration::from_millis(1), None, false);
        }
        // A route seen before the cap keeps its label in a later stage.
        let mut next = metrics.stage_started(1, "t", 1);
        next.outcome(&Arc::from("GET /r0"), Duration::from_millis(1), None, false);
        let text = metrics.encode(&AtomicU64::new(0), &AtomicU64::new(0));
        let other =
            "tapedeck_replay_requests_total{stage=\"s\",multiplier=\"1\",route=\"(other)\"}";
        assert_eq!(sample(&text, other), Some(3.0));
        let r0 = "tapedeck_replay_requests_total{stage=\"t\",multiplier=\"1\",route=\"GET /r0\"}";
        assert_eq!(sample(&text, r0), Some(1.0));
        let labelled = text
            .lines()
            .filter(|l| l.starts_with("tapedeck_replay_requests_total{stage=\"s\""))
            .count();
        assert_eq!(labelled, ROUTE_LABELS + 1);
    }
}
