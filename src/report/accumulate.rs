//! The exact accumulation behind a stage report: histograms and counters
//! ([`StageData`] and its per-route, per-window, stream and WebSocket
//! parts) that add exactly, so a report rebuilt from its JSON, or merged
//! with a shard's, derives the same numbers.
//!
//! Filled by `collect` from replay's outcomes, or rebuilt from a report
//! file's histograms for merging; its output is the serde model of
//! [`super::model`], with SLOs evaluated by [`super::verdict`]. No I/O, no
//! rendering.

use std::collections::BTreeMap;
use std::time::Duration;

use super::grouped::ByHeaderData;
use super::histogram::{HistogramError, LatencyHistogram};
use super::model::{
    DependentSkip, ERROR_KINDS, EffectResult, Percentiles, ResourceStat, RouteReport, StageReport,
    StreamReport, Ttfb, Window, WsReport,
};
use super::resources::{self, Reading, Tally};
use super::slowest::Slowest;
use super::verdict;
use crate::profile::Slo;

/// The exact data behind a [`WsReport`].
#[derive(Debug, Clone, Default)]
pub struct WsData {
    /// Sockets opened.
    pub sockets: u64,
    /// Connect and handshake.
    pub connect: LatencyHistogram,
    /// Round trips.
    pub rtt: LatencyHistogram,
    /// Client frames sent.
    pub frames_sent: u64,
    /// Server frames received.
    pub frames_received: u64,
    /// Close codes.
    pub close_codes: BTreeMap<String, u64>,
}

impl WsData {
    fn add(&mut self, other: &WsData) {
        self.sockets += other.sockets;
        self.connect.add(&other.connect);
        self.rtt.add(&other.rtt);
        self.frames_sent += other.frames_sent;
        self.frames_received += other.frames_received;
        for (k, n) in &other.close_codes {
            *self.close_codes.entry(k.clone()).or_insert(0) += n;
        }
    }

    fn report(&self) -> WsReport {
        WsReport {
            sockets: self.sockets,
            connect_ms: Ttfb::of(&self.connect),
            rtt_ms: Ttfb::of(&self.rtt),
            frames_sent: self.frames_sent,
            frames_received: self.frames_received,
            close_codes: self.close_codes.clone(),
            connect_hdr: self.connect.encode(),
            rtt_hdr: self.rtt.encode(),
        }
    }

    fn from_report(r: &WsReport) -> Result<WsData, HistogramError> {
        Ok(WsData {
            sockets: r.sockets,
            connect: LatencyHistogram::decode(&r.connect_hdr)?,
            rtt: LatencyHistogram::decode(&r.rtt_hdr)?,
            frames_sent: r.frames_sent,
            frames_received: r.frames_received,
            close_codes: r.close_codes.clone(),
        })
    }
}

/// The exact data behind a [`StreamReport`].
#[derive(Debug, Clone, Default)]
pub struct StreamData {
    /// Streamed responses.
    pub responses: u64,
    /// Request sent to response head.
    pub ttfb: LatencyHistogram,
    /// Between consecutive chunks.
    pub gap: LatencyHistogram,
    /// Request sent to the last chunk.
    pub total: LatencyHistogram,
}

impl StreamData {
    fn add(&mut self, other: &StreamData) {
        self.responses += other.responses;
        self.ttfb.add(&other.ttfb);
        self.gap.add(&other.gap);
        self.total.add(&other.total);
    }

    fn report(&self) -> StreamReport {
        StreamReport {
            responses: self.responses,
            ttfb_ms: Ttfb::of(&self.ttfb),
            gap_ms: Ttfb::of(&self.gap),
            total_ms: Ttfb::of(&self.total),
            ttfb_hdr: self.ttfb.encode(),
            gap_hdr: self.gap.encode(),
            total_hdr: self.total.encode(),
        }
    }

    fn from_report(r: &StreamReport) -> Result<StreamData, HistogramError> {
        Ok(StreamData {
            responses: r.responses,
            ttfb: LatencyHistogram::decode(&r.ttfb_hdr)?,
            gap: LatencyHistogram::decode(&r.gap_hdr)?,
            total: LatencyHistogram::decode(&r.total_hdr)?,
        })
    }
}

/// Exact accumulation of one route.
#[derive(Debug, Clone, Default)]
pub struct RouteData {
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// Suspected dedup.
    pub suspected_dedup: u64,
    /// Recorded values that would have mapped to two live values.
    pub conflicting_values: u64,
    /// Answers whose JSON lacked what the recorded answer had.
    pub shape_mismatches: u64,
    /// Long-poll route.
    pub long_poll: bool,
    /// Service latency.
    pub latency: LatencyHistogram,
    /// Streamed responses, if any.
    pub stream: Option<StreamData>,
    /// Replayed WebSockets, if any.
    pub websocket: Option<WsData>,
    /// Answers by `--group-by-header` value.
    pub by_header: ByHeaderData,
    /// The slowest requests.
    pub slowest: Slowest,
}

/// Exact accumulation of one timeline window.
#[derive(Debug, Clone, Default)]
pub struct WindowData {
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// Service latency.
    pub latency: LatencyHistogram,
    /// Observed resources read in the window, per series.
    pub resources: BTreeMap<String, Tally>,
}

/// Everything a stage report is derived from; adds exactly.
#[derive(Debug, Clone, Default)]
pub struct StageData {
    /// Name.
    pub name: String,
    /// Multiplier.
    pub multiplier: u32,
    /// Speed.
    pub speed: f64,
    /// Start, µs since the epoch.
    pub started_at_us: i64,
    /// End, µs since the epoch.
    pub finished_at_us: i64,
    /// VUs.
    pub vus: u64,
    /// Requests sent.
    pub requests: u64,
    /// Status counts.
    pub status_counts: BTreeMap<String, u64>,
    /// Error kinds.
    pub error_kinds: BTreeMap<String, u64>,
    /// Status class mismatches.
    pub status_mismatches: u64,
    /// Late sends.
    pub late_requests: u64,
    /// Substitutions by kind.
    pub substitutions_by_kind: BTreeMap<String, u64>,
    /// Unresolved values.
    pub unresolved_values: u64,
    /// Dependent skips.
    pub dependent_skipped: u64,
    /// (skipped route, route whose answer failed) → (skips, the first
    /// recorded value waited for).
    pub dependent_skips: BTreeMap<(String, String), (u64, String)>,
    /// Truncated skips.
    pub truncated_skipped: u64,
    /// Read-only skips.
    pub read_only_skipped: u64,
    /// Service latency of SLO routes.
    pub latency: LatencyHistogram,
    /// Corrected latency of SLO routes.
    pub corrected: LatencyHistogram,
    /// TTFB of SLO routes.
    pub ttfb: LatencyHistogram,
    /// Send lag (actual send − planned send).
    pub send_lag: LatencyHistogram,
    /// Per route.
    pub routes: BTreeMap<String, RouteData>,
    /// Per window, keyed by the window's start second since the epoch.
    pub windows: BTreeMap<i64, WindowData>,
    /// Thresholds that apply.
    pub slo: Slo,
    /// The effects' readings (`name`, `route`, `before`, `after`,
    /// `error`; the rest is judged when the report is made).
    pub effects: Vec<EffectResult>,
    /// Answers by `--group-by-header` value.
    pub by_header: ByHeaderData,
    /// Observed resources over the stage, per series.
    pub resources: BTreeMap<String, ResourceStat>,
    /// Failed reads of observed sources, per source.
    pub observe_failures: BTreeMap<String, u64>,
}

/// Adds another shard's readings of an effect: the earliest `before`,
/// the latest `after` (shards run together, each seeing all writes).
fn add_readings(mine: &mut EffectResult, other: &EffectResult) {
    let pick = |a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64| match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    };
    mine.before = pick(mine.before, other.before, f64::min);
    mine.after = pick(mine.after, other.after, f64::max);
    if mine.error.is_none() {
        mine.error.clone_from(&other.error);
    }
}

impl StageData {
    /// Errors: the sum of the error kinds.
    pub fn errors(&self) -> u64 {
        self.error_kinds.values().sum()
    }

    /// Adds the readings of observed resources taken during the stage
    /// and the reads that failed: the stage's statistic per series, and
    /// each window's mean of the readings in its second (a second without
    /// a window, no request completing in it, keeps none).
    pub fn observe(&mut self, readings: &[Reading], failures: &BTreeMap<String, u64>) {
        resources::add_stats(&mut self.resources, &resources::stats(readings));
        add_map(&mut self.observe_failures, failures);
        for (second, tallies) in resources::per_second(readings) {
            let Some(window) = self.windows.get_mut(&second) else {
                continue;
            };
            for (series, t) in tallies {
                window.resources.entry(series).or_default().add(&t);
            }
        }
    }

    /// Adds another shard's data of the same stage.
    pub fn add(&mut self, other: &StageData) {
        self.started_at_us = self.started_at_us.min(other.started_at_us);
        self.finished_at_us = self.finished_at_us.max(other.finished_at_us);
        self.vus += other.vus;
        self.requests += other.requests;
        add_map(&mut self.status_counts, &other.status_counts);
        add_map(&mut self.error_kinds, &other.error_kinds);
        self.status_mismatches += other.status_mismatches;
        self.late_requests += other.late_requests;
        add_map(
            &mut self.substitutions_by_kind,
            &other.substitutions_by_kind,
        );
        self.unresolved_values += other.unresolved_values;
        self.dependent_skipped += other.dependent_skipped;
        for (key, (n, value)) in &other.dependent_skips {
            self.dependent_skips
                .entry(key.clone())
                .or_insert((0, value.clone()))
                .0 += n;
        }
        self.truncated_skipped += other.truncated_skipped;
        self.read_only_skipped += other.read_only_skipped;
        for e in &other.effects {
            match self.effects.iter_mut().find(|m| m.name == e.name) {
                Some(mine) => add_readings(mine, e),
                None => self.effects.push(e.clone()),
            }
        }
        self.latency.add(&other.latency);
        self.corrected.add(&other.corrected);
        self.ttfb.add(&other.ttfb);
        self.send_lag.add(&other.send_lag);
        for (k, r) in &other.routes {
            let mine = self.routes.entry(k.clone()).or_default();
            mine.requests += r.requests;
            mine.errors += r.errors;
            mine.suspected_dedup += r.suspected_dedup;
            mine.conflicting_values += r.conflicting_values;
            mine.shape_mismatches += r.shape_mismatches;
            mine.long_poll |= r.long_poll;
            mine.latency.add(&r.latency);
            if let Some(s) = &r.stream {
                mine.stream.get_or_insert_default().add(s);
            }
            if let Some(w) = &r.websocket {
                mine.websocket.get_or_insert_default().add(w);
            }
            mine.by_header.add(&r.by_header);
            mine.slowest.add(&r.slowest);
        }
        self.by_header.add(&other.by_header);
        for (k, w) in &other.windows {
            let mine = self.windows.entry(*k).or_default();
            mine.requests += w.requests;
            mine.errors += w.errors;
            mine.latency.add(&w.latency);
            for (series, t) in &w.resources {
                mine.resources.entry(series.clone()).or_default().add(t);
            }
        }
        resources::add_stats(&mut self.resources, &other.resources);
        add_map(&mut self.observe_failures, &other.observe_failures);
    }

    /// The report of this stage, SLOs evaluated.
    pub fn report(&self) -> StageReport {
        let duration_s =
            Duration::from_micros((self.finished_at_us - self.started_at_us).max(0) as u64)
                .as_secs_f64();
        let errors = self.errors();
        let mut error_kinds = self.error_kinds.clone();
        for k in ERROR_KINDS {
            error_kinds.entry(k.to_string()).or_insert(0);
        }
        let mut routes: Vec<RouteReport> = self
            .routes
            .iter()
            .map(|(route, r)| RouteReport {
                route: route.clone(),
                requests: r.requests,
                errors: r.errors,
                latency_ms: Percentiles::of(&r.latency),
                suspected_dedup: r.suspected_dedup,
                conflicting_values: r.conflicting_values,
                shape_mismatches: r.shape_mismatches,
                long_poll: r.long_poll,
                hdr: r.latency.encode(),
                stream: r.stream.as_ref().map(StreamData::report),
                websocket: r.websocket.as_ref().map(WsData::report),
                by_header: r.by_header.report(),
                slowest: r.slowest.report(),
            })
            .collect();
        routes.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.route.cmp(&b.route)));
        let first_window = self.windows.keys().next().copied().unwrap_or(0);
        let stage_second = self.started_at_us.div_euclid(1_000_000);
        let base = stage_second.min(first_window);
        let timeline = self
            .windows
            .iter()
            .map(|(sec, w)| Window {
                t_s: (sec - base) as f64,
                at_us: sec * 1_000_000,
                requests: w.requests,
                errors: w.errors,
                p50_ms: w.latency.quantile_ms(0.5),
                p95_ms: w.latency.quantile_ms(0.95),
                p99_ms: w.latency.quantile_ms(0.99),
                hdr: w.latency.encode(),
                resources: w
                    .resources
                    .iter()
                    .map(|(series, t)| (series.clone(), t.mean()))
                    .collect(),
                resource_readings: w
                    .resources
                    .iter()
                    .map(|(series, t)| (series.clone(), t.count))
                    .collect(),
            })
            .collect();
        let suspected_dedup = self.routes.values().map(|r| r.suspected_dedup).sum();
        let conflicting_values = self.routes.values().map(|r| r.conflicting_values).sum();
        let shape_mismatches = self.routes.values().map(|r| r.shape_mismatches).sum();
        let mut report = StageReport {
            name: self.name.clone(),
            multiplier: self.multiplier,
            speed: self.speed,
            started_at: crate::time::timestamp(self.started_at_us),
            started_at_us: self.started_at_us,
            duration_s: (duration_s * 1000.0).round() / 1000.0,
            vus: self.vus,
            requests: self.requests,
            errors,
            throughput_rps: if duration_s > 0.0 {
                ((self.requests as f64 / duration_s) * 10.0).round() / 10.0
            } else {
                0.0
            },
            latency_ms: Percentiles::of(&self.latency),
            corrected_latency_ms: Percentiles::of(&self.corrected),
            ttfb_ms: Ttfb::of(&self.ttfb),
            send_lag_ms: Ttfb::of(&self.send_lag),
            status_counts: self.status_counts.clone(),
            error_kinds,
            status_mismatches: self.status_mismatches,
            late_requests: self.late_requests,
            substitutions: self.substitutions_by_kind.values().sum(),
            substitutions_by_kind: self.substitutions_by_kind.clone(),
            unresolved_values: self.unresolved_values,
            dependent_skipped: self.dependent_skipped,
            dependent_skips: self
                .dependent_skips
                .iter()
                .map(|((route, from), (count, value))| DependentSkip {
                    route: route.clone(),
                    waited_for: value.clone(),
                    from: from.clone(),
                    count: *count,
                })
                .collect(),
            truncated_skipped: self.truncated_skipped,
            read_only_skipped: self.read_only_skipped,
            suspected_dedup,
            conflicting_values,
            shape_mismatches,
            routes,
            timeline,
            hdr: self.latency.encode(),
            corrected_hdr: self.corrected.encode(),
            ttfb_hdr: self.ttfb.encode(),
            send_lag_hdr: self.send_lag.encode(),
            slo: Vec::new(),
            invalid: None,
            effects: Vec::new(),
            by_header: self.by_header.report(),
            resources: self.resources.clone(),
            observe_failures: self.observe_failures.clone(),
        };
        report.slo = verdict::evaluate(&self.slo, &report, |route| {
            self.routes.get(route).map(|r| &r.latency)
        });
        report.effects = self
            .effects
            .iter()
            .map(|e| verdict::judge_effect(e.clone(), &report.routes))
            .collect();
        report
    }

    /// Rebuilds the exact data from a stage report (for merging).
    ///
    /// # Errors
    /// When a histogram blob is damaged.
    pub fn from_report(r: &StageReport, slo: Slo) -> Result<StageData, HistogramError> {
        let mut routes = BTreeMap::new();
        for route in &r.routes {
            routes.insert(
                route.route.clone(),
                RouteData {
                    requests: route.requests,
                    errors: route.errors,
                    suspected_dedup: route.suspected_dedup,
                    conflicting_values: route.conflicting_values,
                    shape_mismatches: route.shape_mismatches,
                    long_poll: route.long_poll,
                    latency: LatencyHistogram::decode(&route.hdr)?,
                    stream: route
                        .stream
                        .as_ref()
                        .map(StreamData::from_report)
                        .transpose()?,
                    websocket: route
                        .websocket
                        .as_ref()
                        .map(WsData::from_report)
                        .transpose()?,
                    by_header: ByHeaderData::from_report(&route.by_header)?,
                    slowest: Slowest::from_report(&route.slowest),
                },
            );
        }
        let mut windows = BTreeMap::new();
        for w in &r.timeline {
            windows.insert(
                w.at_us.div_euclid(1_000_000),
                WindowData {
                    requests: w.requests,
                    errors: w.errors,
                    latency: LatencyHistogram::decode(&w.hdr)?,
                    resources: w
                        .resources
                        .iter()
                        .map(|(series, mean)| {
                            let count = w.resource_readings.get(series).copied().unwrap_or(1);
                            (series.clone(), Tally::of_mean(*mean, count))
                        })
                        .collect(),
                },
            );
        }
        Ok(StageData {
            name: r.name.clone(),
            multiplier: r.multiplier,
            speed: r.speed,
            started_at_us: r.started_at_us,
            finished_at_us: r.started_at_us + (r.duration_s * 1e6).round() as i64,
            vus: r.vus,
            requests: r.requests,
            status_counts: r.status_counts.clone(),
            error_kinds: r
                .error_kinds
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| (k.clone(), *n))
                .collect(),
            status_mismatches: r.status_mismatches,
            late_requests: r.late_requests,
            substitutions_by_kind: r.substitutions_by_kind.clone(),
            unresolved_values: r.unresolved_values,
            dependent_skipped: r.dependent_skipped,
            dependent_skips: r
                .dependent_skips
                .iter()
                .map(|d| {
                    (
                        (d.route.clone(), d.from.clone()),
                        (d.count, d.waited_for.clone()),
                    )
                })
                .collect(),
            truncated_skipped: r.truncated_skipped,
            read_only_skipped: r.read_only_skipped,
            latency: LatencyHistogram::decode(&r.hdr)?,
            corrected: LatencyHistogram::decode(&r.corrected_hdr)?,
            ttfb: LatencyHistogram::decode(&r.ttfb_hdr)?,
            send_lag: LatencyHistogram::decode(&r.send_lag_hdr)?,
            routes,
            windows,
            slo,
            effects: r.effects.clone(),
            by_header: ByHeaderData::from_report(&r.by_header)?,
            resources: r.resources.clone(),
            observe_failures: r.observe_failures.clone(),
        })
    }
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}
