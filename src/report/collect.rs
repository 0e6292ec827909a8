//! The collector: the one owner of a stage's statistics. Replay's events
//! arrive over a channel; the collector classifies errors (disjoint kinds,
//! docs/report-format.md), fills the histograms, keeps live counters
//! for the progress line, and fires the abort signal when the error rate
//! over the sliding window passes the safety bound.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::accumulate::StageData;
use super::live::StageMetrics;
use super::outcome::{Event, LiveStats, Outcome};
use crate::shutdown::Shutdown;

/// A send this much after its planned instant counts as late. tokio's
/// timer ticks in milliseconds, so an on-time send can lag by up to ~1 ms.
pub const LATE: Duration = Duration::from_millis(2);

/// The abort rule of the safety limits.
#[derive(Debug, Clone, Copy)]
pub struct AbortRule {
    /// Error rate bound (fraction).
    pub error_rate: f64,
    /// Sliding window.
    pub window: Duration,
    /// Requests needed in the window before the rule applies.
    pub min_requests: u64,
}

/// Accumulates one stage.
#[derive(Debug)]
pub struct Collector {
    data: StageData,
    long_poll: HashSet<String>,
    abort_rule: Option<AbortRule>,
    abort: Shutdown,
    recent: VecDeque<(i64, u64, u64)>,
    aborted: bool,
    live: Arc<LiveStats>,
    /// This stage's live series (`replay --admin`), counted from the same
    /// events at the same places as `data`.
    metrics: Option<StageMetrics>,
}

/// The error kind of an outcome, if it is an error.
pub fn error_kind(o: &Outcome) -> Option<&'static str> {
    if let Some(f) = o.failure {
        return Some(f);
    }
    let status = o.status?;
    let recorded_4xx = o.recorded_status.is_some_and(|r| (400..500).contains(&r));
    match status {
        429 => Some("http_429"),
        500..=599 => Some("http_5xx"),
        400..=499 if !recorded_4xx => Some("http_4xx"),
        _ => None,
    }
}

impl Collector {
    /// A collector for `data` (name, multiplier, SLOs filled in).
    pub fn new(
        data: StageData,
        long_poll: HashSet<String>,
        abort_rule: Option<AbortRule>,
        abort: Shutdown,
        live: Arc<LiveStats>,
    ) -> Self {
        live.requests.store(0, Ordering::Relaxed);
        live.errors.store(0, Ordering::Relaxed);
        live.p95_us.store(0, Ordering::Relaxed);
        let metrics = live.metrics.as_ref().map(|m| {
            m.stage_started(
                live.stage.load(Ordering::Relaxed),
                &data.name,
                data.multiplier,
            )
        });
        Collector {
            data,
            long_poll,
            abort_rule,
            abort,
            recent: VecDeque::new(),
            aborted: false,
            live,
            metrics,
        }
    }

    /// Takes one event.
    pub fn observe(&mut self, event: Event) {
        let metrics = self.metrics.as_ref();
        match event {
            Event::VuStarted => {
                self.data.vus += 1;
                if let Some(m) = metrics {
                    m.vu_started();
                }
            }
            Event::TruncatedSkipped => {
                self.data.truncated_skipped += 1;
                if let Some(m) = metrics {
                    m.skipped("truncated");
                }
            }
            Event::ReadOnlySkipped => {
                self.data.read_only_skipped += 1;
                if let Some(m) = metrics {
                    m.skipped("read_only");
                }
            }
            Event::DependentSkipped { route, waited_for } => {
                self.data.dependent_skipped += 1;
                if let Some(m) = metrics {
                    m.skipped("dependent");
                }
                if let Some((value, from)) = waited_for {
                    let skip = self
                        .data
                        .dependent_skips
                        .entry((route.to_string(), from.to_string()))
                        .or_insert((0, value));
                    skip.0 += 1;
                }
            }
            Event::Substitutions { kinds, unresolved } => {
                for k in kinds {
                    *self
                        .data
                        .substitutions_by_kind
                        .entry(k.to_string())
                        .or_insert(0) += 1;
                }
                self.data.unresolved_values += unresolved;
            }
            Event::Outcome(o) => self.outcome(&o),
        }
    }

    fn outcome(&mut self, o: &Outcome) {
        let d = &mut self.data;
        d.requests += 1;
        let kind = error_kind(o);
        if let Some(k) = kind {
            *d.error_kinds.entry(k.to_string()).or_insert(0) += 1;
        }
        if let Some(s) = o.status {
            *d.status_counts.entry(s.to_string()).or_insert(0) += 1;
            if let Some(r) = o.recorded_status
                && r / 100 != s / 100
            {
                d.status_mismatches += 1;
            }
        }
        let lag = o.sent.saturating_duration_since(o.planned);
        d.send_lag.record(lag);
        if lag > LATE {
            d.late_requests += 1;
        }
        let service = o.finished.saturating_duration_since(o.sent);
        let corrected = o.finished.saturating_duration_since(o.planned);
        let long_poll = self.long_poll.contains(&*o.route);
        if !long_poll {
            d.latency.record(service);
            d.corrected.record(corrected);
            if let Some(t) = o.ttfb {
                d.ttfb.record(t);
            }
        }
        if !d.routes.contains_key(&*o.route) {
            d.routes.insert(o.route.to_string(), Default::default());
        }
        let Some(route) = d.routes.get_mut(&*o.route) else {
            return;
        };
        route.requests += 1;
        route.suspected_dedup += u64::from(o.suspected_dedup);
        route.conflicting_values += o.conflicting_values;
        route.shape_mismatches += u64::from(o.shape_mismatch);
        route.long_poll = long_poll;
        route.latency.record(service);
        route
            .slowest
            .record(service, o.sent_at_us, o.trace_id, o.status, kind);
        if let Some(ws) = &o.ws {
            let data = route.websocket.get_or_insert_default();
            data.sockets += 1;
            data.connect.record(ws.connect);
            for rtt in &ws.rtts {
                data.rtt.record(*rtt);
            }
            data.frames_sent += ws.sent;
            data.frames_received += ws.received;
            let code = ws
                .close_code
                .map_or_else(|| "none".to_string(), |c| c.to_string());
            *data.close_codes.entry(code).or_insert(0) += 1;
        }
        if let (Some(stream), Some(ttfb)) = (&o.stream, o.ttfb) {
            let data = route.stream.get_or_insert_default();
            data.responses += 1;
            data.ttfb.record(ttfb);
            data.total.record(ttfb + stream.total);
            for gap in &stream.gaps {
                data.gap.record(*gap);
            }
        }
        let second = o.finished_at_us.div_euclid(1_000_000);
        let window = d.windows.entry(second).or_default();
        window.requests += 1;
        window.latency.record(service);
        if !o.by_header.is_empty() {
            route
                .by_header
                .record(&o.by_header, Some(service), kind.is_some());
            d.by_header.record(
                &o.by_header,
                (!long_poll).then_some(service),
                kind.is_some(),
            );
        }
        if kind.is_some() {
            route.errors += 1;
            window.errors += 1;
            self.live.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(m) = &mut self.metrics {
            m.outcome(&o.route, service, kind, lag > LATE);
        }
        let n = self.live.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(64) {
            let p95 = (d.latency.quantile_ms(0.95) * 1000.0) as u64;
            self.live.p95_us.store(p95, Ordering::Relaxed);
        }
        self.check_abort(second, kind.is_some());
    }

    fn check_abort(&mut self, second: i64, error: bool) {
        let Some(rule) = self.abort_rule else { return };
        match self.recent.back_mut() {
            Some((s, req, err)) if *s == second => {
                *req += 1;
                *err += u64::from(error);
            }
            _ => self.recent.push_back((second, 1, u64::from(error))),
        }
        let window = rule.window.as_secs().max(1) as i64;
        while self
            .recent
            .front()
            .is_some_and(|(s, _, _)| *s <= second - window)
        {
            self.recent.pop_front();
        }
        let (req, err) = self
            .recent
            .iter()
            .fold((0, 0), |(r, e), (_, rr, ee)| (r + rr, e + ee));
        if !self.aborted && req >= rule.min_requests && err as f64 / req as f64 > rule.error_rate {
            self.aborted = true;
            tracing::warn!(
                errors = err,
                requests = req,
                bound = rule.error_rate,
                "error rate over the abort window passed the safety bound: aborting"
            );
            self.abort.trigger();
        }
    }

    /// Whether this stage fired the abort.
    pub fn aborted(&self) -> bool {
        self.aborted
    }

    /// The stage's data, with its wall-clock span.
    pub fn finish(mut self, started_at_us: i64, finished_at_us: i64) -> StageData {
        self.data.started_at_us = started_at_us;
        self.data.finished_at_us = finished_at_us;
        self.data
    }
}

/// Drains events into the collector until every sender is gone.
pub async fn run(
    mut collector: Collector,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Collector {
    while let Some(e) = events.recv().await {
        collector.observe(e);
    }
    collector
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::histogram::LatencyHistogram;
    use crate::report::merge;
    use crate::report::model::StageReport;
    use crate::report::model::{Report, test_report};
    use tokio::time::Instant;

    fn outcomes() -> Vec<Outcome> {
        let base = Instant::now();
        (0..400u64)
            .map(|i| {
                let planned = base + Duration::from_millis(i * 5);
                let sent = planned + Duration::from_micros(i % 7 * 700);
                let finished = sent + Duration::from_micros(500 + i * i % 90_000);
                let status = match i % 50 {
                    0 => Some(503),
                    1 => Some(429),
                    2 => None,
                    _ => Some(200),
                };
                Outcome {
                    route: format!("GET /r/{}", i % 3).into(),
                    planned,
                    sent,
                    sent_at_us: 1_700_000_000_000_000 + i as i64 * 5_000 - 500,
                    ttfb: status.map(|_| Duration::from_micros(300)),
                    finished,
                    finished_at_us: 1_700_000_000_000_000 + i as i64 * 5_000,
                    status,
                    recorded_status: Some(200),
                    failure: if status.is_none() {
                        Some("reset")
                    } else {
                        None
                    },
                    suspected_dedup: false,
                    conflicting_values: u64::from(i % 11 == 0),
                    shape_mismatch: i % 13 == 0,
                    stream: None,
                    ws: None,
                    // A cache header on most answers, absent on some.
                    by_header: match (status, i % 4) {
                        (None, _) => Vec::new(),
                        (Some(_), 3) => vec![("x-cache".into(), "(none)".into())],
                        (Some(_), k) => {
                            vec![("x-cache".into(), ["HIT", "MISS", "HIT"][k as usize].into())]
                        }
                    },
                    trace_id: Some(u128::from(i) + 1),
                }
            })
            .collect()
    }

    fn collect(outcomes: &[Outcome]) -> StageData {
        use crate::profile::{RouteSlo, Slo};
        let data = StageData {
            name: "s".into(),
            multiplier: 2,
            speed: 1.0,
            // Stage-wide and route thresholds: a merge evaluates them again.
            slo: Slo {
                p95_ms: Some(500.0),
                route: vec![
                    RouteSlo {
                        p95_ms: Some(500.0),
                        ..RouteSlo::new("GET /r/*")
                    },
                    RouteSlo {
                        error_rate: Some(0.01),
                        p99_ms: Some(900.0),
                        ..RouteSlo::new("/r/*")
                    },
                ],
                ..Slo::default()
            },
            ..StageData::default()
        };
        let mut c = Collector::new(
            data,
            HashSet::new(),
            None,
            Shutdown::new(),
            Arc::new(LiveStats::default()),
        );
        for o in outcomes {
            c.observe(Event::Outcome(o.clone()));
            // A request of the same route skipped after each failure.
            if o.status.is_none() {
                c.observe(Event::DependentSkipped {
                    route: o.route.clone(),
                    waited_for: Some(("c_Ab12Cd34Ef56".into(), "POST /rooms".into())),
                });
            }
        }
        c.finish(1_700_000_000_000_000, 1_700_000_002_000_000)
    }

    fn report(stage: &StageData) -> Report {
        test_report(vec![stage.report()])
    }

    fn without_blobs(s: &StageReport) -> StageReport {
        let mut s = s.clone();
        s.hdr.clear();
        s.corrected_hdr.clear();
        s.ttfb_hdr.clear();
        s.send_lag_hdr.clear();
        s.routes.iter_mut().for_each(|r| {
            r.hdr.clear();
            clear_groups(&mut r.by_header);
        });
        clear_groups(&mut s.by_header);
        s.timeline.iter_mut().for_each(|w| w.hdr.clear());
        s
    }

    fn clear_groups(by_header: &mut crate::report::model::ByHeader) {
        by_header
            .values_mut()
            .flat_map(|v| v.values_mut())
            .for_each(|g| g.hdr.clear());
    }

    #[test]
    fn merging_two_halves_equals_the_report_of_the_union() {
        let all = outcomes();
        let (a, b) = all.split_at(173);
        // The halves are the two shards of one replay (two unsharded
        // reports would be the whole replay twice, which merge refuses).
        let shard = |r: Report, index| Report {
            shard: Some(crate::report::Shard { index, count: 2 }),
            ..r
        };
        let merged = merge(
            &[
                ("a".into(), shard(report(&collect(a)), 0)),
                ("b".into(), shard(report(&collect(b)), 1)),
            ],
            None,
        )
        .expect("merge");
        let union = collect(&all).report();
        // Every number is equal; the blobs may encode equal histograms
        // differently (array sizes), so compare what they decode to.
        assert_eq!(without_blobs(&merged.stages[0]), without_blobs(&union));
        // Each route's 10 slowest, with trace ids, kept across the merge.
        assert!(union.routes.iter().all(|r| r.slowest.len() == 10));
        let decoded = |s: &str| LatencyHistogram::decode(s).expect("blob");
        for (m, u) in [
            (&merged.stages[0].hdr, &union.hdr),
            (&merged.stages[0].corrected_hdr, &union.corrected_hdr),
        ] {
            let (m, u) = (decoded(m), decoded(u));
            assert_eq!(m.len(), u.len());
            for q in [0.0, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
                assert_eq!(m.quantile_ms(q), u.quantile_ms(q));
            }
        }
        let routes: Vec<_> = merged.stages[0]
            .slo
            .iter()
            .map(|r| (r.name.as_str(), r.route.as_deref(), r.routes_matched))
            .collect();
        assert_eq!(
            routes,
            [
                ("p95_ms", None, None),
                ("p95_ms", Some("GET /r/*"), Some(3)),
                ("p99_ms", Some("/r/*"), Some(3)),
                ("error_rate", Some("/r/*"), Some(3)),
            ]
        );
        assert_eq!(union.requests, 400);
        assert_eq!(union.error_kinds["http_5xx"], 8);
        assert_eq!(union.error_kinds["http_429"], 8);
        assert_eq!(union.error_kinds["reset"], 8);
        assert_eq!(union.errors, 24);
        let cache: Vec<_> = union.by_header["x-cache"]
            .iter()
            .map(|(v, g)| (v.as_str(), g.requests))
            .collect();
        assert_eq!(cache, [("(none)", 100), ("HIT", 192), ("MISS", 100)]);
        assert!(
            merged.stages[0]
                .routes
                .iter()
                .all(|r| !r.by_header.is_empty())
        );
        assert_eq!(
            union.status_mismatches, 16,
            "transport failures have no status to compare"
        );
        assert_eq!(union.conflicting_values, 37);
        assert_eq!(union.shape_mismatches, 31);
        assert_eq!(union.dependent_skipped, 8);
        assert_eq!(
            union
                .dependent_skips
                .iter()
                .map(|d| (d.route.as_str(), d.count))
                .collect::<Vec<_>>(),
            [("GET /r/0", 2), ("GET /r/1", 3), ("GET /r/2", 3)]
        );
    }

    /// Readings of two series over the two seconds the outcomes span
    /// (and one in a second without a window), `shift` apart in value.
    fn readings(shift: f64) -> Vec<crate::report::resources::Reading> {
        let at = |ms: i64| 1_700_000_000_000_000 + ms * 1000;
        let r = |ms, series: &str, value: f64| crate::report::resources::Reading {
            at_us: at(ms),
            series: series.into(),
            value: value + shift,
            cores: series.starts_with("process_cpu").then_some(4),
        };
        vec![
            r(100, "process_cpu_cores{pid=\"7\"}", 1.0),
            r(600, "process_cpu_cores{pid=\"7\"}", 2.0),
            r(1200, "process_cpu_cores{pid=\"7\"}", 3.5),
            r(1400, "queue_depth{source=\"q:9\"}", 40.0),
            r(5000, "queue_depth{source=\"q:9\"}", 10.0),
        ]
    }

    #[test]
    fn merged_shards_add_observed_resources_exactly() {
        let all = outcomes();
        // Interleaved, so both shards have a window in each second (a
        // reading in a second without one counts for the stage only).
        let (a, b): (Vec<Outcome>, Vec<Outcome>) = (
            all.iter().step_by(2).cloned().collect(),
            all.iter().skip(1).step_by(2).cloned().collect(),
        );
        let failures = |n| [("q:9".to_string(), n)].into_iter().collect();
        let observed = |outcomes: &[Outcome], shift, failed| {
            let mut data = collect(outcomes);
            data.observe(&readings(shift), &failures(failed));
            data
        };
        let shard = |r: Report, index| Report {
            shard: Some(crate::report::Shard { index, count: 2 }),
            ..r
        };
        let merged = merge(
            &[
                ("a".into(), shard(report(&observed(&a, 0.0, 1)), 0)),
                ("b".into(), shard(report(&observed(&b, 0.5, 2)), 1)),
            ],
            None,
        )
        .expect("merge");
        let mut union = collect(&all);
        union.observe(&[readings(0.0), readings(0.5)].concat(), &failures(3));
        let union = union.report();
        let m = &merged.stages[0];
        assert_eq!(m.resources, union.resources);
        assert_eq!(m.observe_failures, union.observe_failures);
        let cpu = &m.resources["process_cpu_cores{pid=\"7\"}"];
        assert_eq!((cpu.min, cpu.max, cpu.count), (1.0, 4.0, 6));
        assert_eq!((cpu.sum, cpu.mean, cpu.cores), (14.5, 14.5 / 6.0, Some(4)));
        assert_eq!(m.observe_failures["q:9"], 3);
        let windows = |s: &StageReport| {
            s.timeline
                .iter()
                .map(|w| (w.at_us, w.resources.clone(), w.resource_readings.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(windows(m), windows(&union));
        let first = &m.timeline[0];
        assert_eq!(first.resources["process_cpu_cores{pid=\"7\"}"], 1.75);
        assert_eq!(first.resource_readings["process_cpu_cores{pid=\"7\"}"], 4);
        assert!(
            m.timeline.iter().all(|w| w.at_us < 1_700_000_005_000_000),
            "a reading in a second without a window makes none"
        );
        let text = serde_json::to_string(&merged).expect("json");
        let back: Report = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.stages[0].resources, m.resources);
    }

    #[test]
    fn a_report_without_observation_has_no_resource_keys() {
        let text = serde_json::to_string(&report(&collect(&outcomes()))).expect("json");
        for key in ["resources", "resource_readings", "observe_failures"] {
            assert!(!text.contains(key), "{key} written without observation");
        }
    }

    #[test]
    fn error_kinds_follow_the_recording() {
        let base = Instant::now();
        let o = |status: u16, recorded: u16| Outcome {
            route: "GET /".into(),
            planned: base,
            sent: base,
            sent_at_us: 0,
            ttfb: None,
            finished: base,
            finished_at_us: 0,
            status: Some(status),
            recorded_status: Some(recorded),
            failure: None,
            suspected_dedup: false,
            conflicting_values: 0,
            shape_mismatch: false,
            stream: None,
            ws: None,
            by_header: Vec::new(),
            trace_id: None,
        };
        assert_eq!(
            error_kind(&o(404, 404)),
            None,
            "a faithful 404 is not an error"
        );
        assert_eq!(error_kind(&o(404, 200)), Some("http_4xx"));
        assert_eq!(error_kind(&o(429, 429)), Some("http_429"));
        assert_eq!(error_kind(&o(503, 200)), Some("http_5xx"));
        assert_eq!(
            error_kind(&o(500, 500)),
            Some("http_5xx"),
            "a 5xx is an error even if recorded"
        );
        assert_eq!(error_kind(&o(201, 200)), None);
    }
}
