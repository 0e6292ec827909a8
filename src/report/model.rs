//! The report: the versioned JSON contract other tools read
//! (`tapedeck-report/1`; keys are added, never renamed), and [`StageData`],
//! the exact accumulation (histograms and counters) every stage report is
//! derived from — so a report rebuilt from its JSON, or merged with a
//! shard's, derives the same numbers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::histogram::{HistogramError, LatencyHistogram};
use crate::profile::Slo;

/// The `format` of reports this version writes.
pub const FORMAT: &str = "tapedeck-report/1";

/// Error kinds, disjoint; `errors` is their sum.
pub const ERROR_KINDS: [&str; 7] = [
    "connect", "timeout", "reset", "tls", "http_429", "http_4xx", "http_5xx",
];

/// Overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every SLO held.
    Pass,
    /// An SLO failed.
    Fail,
    /// A safety limit stopped the run.
    Aborted,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Aborted => "aborted",
        })
    }
}

/// Which capture was replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureRef {
    /// Capture file as given.
    pub path: String,
    /// Run id, or `all`.
    pub run: String,
    /// Recorded exchanges replayed per world.
    pub exchanges: u64,
    /// Recorded sessions per world.
    pub sessions: u64,
    /// Hash of the replayed runs' identity (start times, counts): equal for
    /// copies of one capture wherever they lie, different for other
    /// captures. Empty in reports written before it existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
}

/// Which profile drove the replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileRef {
    /// Profile name.
    pub name: String,
    /// Hash of the profile's effective settings (shards must agree).
    pub fingerprint: String,
}

/// The share of VUs one report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Index, from 0 (as a Kubernetes Indexed Job numbers its pods).
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// From a histogram.
    pub fn of(h: &LatencyHistogram) -> Percentiles {
        Percentiles {
            p50: h.quantile_ms(0.5),
            p90: h.quantile_ms(0.9),
            p95: h.quantile_ms(0.95),
            p99: h.quantile_ms(0.99),
            p999: h.quantile_ms(0.999),
            max: h.max_ms(),
            mean: (h.mean_ms() * 1000.0).round() / 1000.0,
        }
    }
}

/// Short percentiles (time to first byte, send lag), milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ttfb {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    #[serde(default)]
    pub max: f64,
}

impl Ttfb {
    /// From a histogram.
    pub fn of(h: &LatencyHistogram) -> Ttfb {
        Ttfb {
            p50: h.quantile_ms(0.5),
            p95: h.quantile_ms(0.95),
            p99: h.quantile_ms(0.99),
            max: h.max_ms(),
        }
    }
}

/// One route's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteReport {
    /// `METHOD /path/{id}`.
    pub route: String,
    /// Requests sent.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// Service latency.
    pub latency_ms: Percentiles,
    /// Writes whose live id repeated across worlds (dedup suspected).
    pub suspected_dedup: u64,
    /// Marked long-poll: kept out of SLO percentiles.
    pub long_poll: bool,
    /// Service latency histogram.
    pub hdr: String,
    /// Streamed responses (SSE, NDJSON) of this route, when it had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamReport>,
    /// Replayed WebSockets of this route, when it had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WsReport>,
}

/// What a route's replayed WebSockets did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WsReport {
    /// Sockets opened.
    pub sockets: u64,
    /// Connect and handshake.
    pub connect_ms: Ttfb,
    /// Client frame to the next server frame.
    pub rtt_ms: Ttfb,
    /// Client frames sent.
    pub frames_sent: u64,
    /// Server frames received.
    pub frames_received: u64,
    /// Close codes the server sent (`none`: the socket ended without one).
    pub close_codes: BTreeMap<String, u64>,
    /// Connect histogram, for merging.
    pub connect_hdr: String,
    /// Round-trip histogram.
    pub rtt_hdr: String,
}

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

/// Chunk timing of a route's streamed responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamReport {
    /// Streamed responses.
    pub responses: u64,
    /// Request sent to response head.
    pub ttfb_ms: Ttfb,
    /// Between consecutive chunks of one response.
    pub gap_ms: Ttfb,
    /// Request sent to the last chunk.
    pub total_ms: Ttfb,
    /// Histograms of the three, for merging.
    pub ttfb_hdr: String,
    /// Gap histogram.
    pub gap_hdr: String,
    /// Total histogram.
    pub total_hdr: String,
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

/// One window of the per-second timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Window start, seconds since the stage started.
    pub t_s: f64,
    /// Window start, µs since the Unix epoch (aligns shards when merging).
    pub at_us: i64,
    /// Requests that completed in the window.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// Median service latency, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Service latency histogram of the window.
    pub hdr: String,
}

/// One evaluated threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloResult {
    /// `p95_ms`, `error_rate`, …
    pub name: String,
    /// The bound.
    pub threshold: f64,
    /// What was measured.
    pub actual: f64,
    /// Whether `actual` is within the bound.
    pub pass: bool,
}

/// A stage's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// Stage name.
    pub name: String,
    /// Worlds played.
    pub multiplier: u32,
    /// Time compression.
    pub speed: f64,
    /// Wall-clock start, RFC 3339.
    pub started_at: String,
    /// Wall-clock start, µs since the Unix epoch.
    pub started_at_us: i64,
    /// Stage length, seconds.
    pub duration_s: f64,
    /// Virtual users played.
    pub vus: u64,
    /// Requests sent.
    pub requests: u64,
    /// Sum of `error_kinds`.
    pub errors: u64,
    /// Requests per second over the stage.
    pub throughput_rps: f64,
    /// From the actual send (service time), SLO routes only.
    pub latency_ms: Percentiles,
    /// From the planned send (corrected for coordinated omission).
    pub corrected_latency_ms: Percentiles,
    /// Time to the response head.
    pub ttfb_ms: Ttfb,
    /// How late sends left against their planned instant (timer and
    /// in-flight waits; dependency waits included).
    pub send_lag_ms: Ttfb,
    /// Responses by status code.
    pub status_counts: BTreeMap<String, u64>,
    /// Disjoint error kinds.
    pub error_kinds: BTreeMap<String, u64>,
    /// Responses whose status class differs from the recording's.
    pub status_mismatches: u64,
    /// Requests sent more than 2 ms after their planned start.
    pub late_requests: u64,
    /// Values substituted in requests (correlation, nonces, credentials).
    pub substitutions: u64,
    /// Substitutions by kind.
    pub substitutions_by_kind: BTreeMap<String, u64>,
    /// Recorded values with no live value to substitute.
    pub unresolved_values: u64,
    /// Requests not sent because a response they depend on failed.
    pub dependent_skipped: u64,
    /// Requests not sent because their recorded body was truncated.
    pub truncated_skipped: u64,
    /// Writes whose live ids repeated across worlds.
    pub suspected_dedup: u64,
    /// Per route, busiest first.
    pub routes: Vec<RouteReport>,
    /// Per second.
    pub timeline: Vec<Window>,
    /// Service latency histogram (SLO routes).
    pub hdr: String,
    /// Corrected latency histogram.
    pub corrected_hdr: String,
    /// TTFB histogram.
    pub ttfb_hdr: String,
    /// Send lag histogram.
    pub send_lag_hdr: String,
    /// Thresholds evaluated for this stage.
    pub slo: Vec<SloResult>,
}

/// The capacity verdict over the stages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// Highest multiplier whose stage met every SLO.
    pub safe_multiplier: Option<u32>,
    /// Highest multiplier whose error rate stayed under the abort bound.
    pub peak_multiplier: Option<u32>,
    /// First multiplier past that bound.
    pub breaking_multiplier: Option<u32>,
    /// Sentences explaining the above.
    pub notes: Vec<String>,
}

impl Capacity {
    /// What the stage at `multiplier` is in the verdict: `breaking`,
    /// `safe` or `peak` (in that order when one stage is several).
    pub fn role(&self, multiplier: u32) -> Option<&'static str> {
        [
            (self.breaking_multiplier, "breaking"),
            (self.safe_multiplier, "safe"),
            (self.peak_multiplier, "peak"),
        ]
        .into_iter()
        .find_map(|(m, role)| (m == Some(multiplier)).then_some(role))
    }
}

/// A whole replay report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `tapedeck-report/1`.
    pub format: String,
    /// tapedeck version.
    pub tool_version: String,
    /// The capture replayed.
    pub capture: CaptureRef,
    /// Base URL replayed against.
    pub target: String,
    /// The profile.
    pub profile: ProfileRef,
    /// The shard, when sharded.
    pub shard: Option<Shard>,
    /// Plan seed (shards agree on it).
    pub seed: u64,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// Overall verdict.
    pub verdict: Verdict,
    /// Stages in order.
    pub stages: Vec<StageReport>,
    /// Capacity verdict.
    pub capacity: Capacity,
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
    /// Long-poll route.
    pub long_poll: bool,
    /// Service latency.
    pub latency: LatencyHistogram,
    /// Streamed responses, if any.
    pub stream: Option<StreamData>,
    /// Replayed WebSockets, if any.
    pub websocket: Option<WsData>,
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
    /// Truncated skips.
    pub truncated_skipped: u64,
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
}

impl StageData {
    /// Errors: the sum of the error kinds.
    pub fn errors(&self) -> u64 {
        self.error_kinds.values().sum()
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
        self.truncated_skipped += other.truncated_skipped;
        self.latency.add(&other.latency);
        self.corrected.add(&other.corrected);
        self.ttfb.add(&other.ttfb);
        self.send_lag.add(&other.send_lag);
        for (k, r) in &other.routes {
            let mine = self.routes.entry(k.clone()).or_default();
            mine.requests += r.requests;
            mine.errors += r.errors;
            mine.suspected_dedup += r.suspected_dedup;
            mine.long_poll |= r.long_poll;
            mine.latency.add(&r.latency);
            if let Some(s) = &r.stream {
                mine.stream.get_or_insert_default().add(s);
            }
            if let Some(w) = &r.websocket {
                mine.websocket.get_or_insert_default().add(w);
            }
        }
        for (k, w) in &other.windows {
            let mine = self.windows.entry(*k).or_default();
            mine.requests += w.requests;
            mine.errors += w.errors;
            mine.latency.add(&w.latency);
        }
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
                long_poll: r.long_poll,
                hdr: r.latency.encode(),
                stream: r.stream.as_ref().map(StreamData::report),
                websocket: r.websocket.as_ref().map(WsData::report),
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
            })
            .collect();
        let suspected_dedup = self.routes.values().map(|r| r.suspected_dedup).sum();
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
            truncated_skipped: self.truncated_skipped,
            suspected_dedup,
            routes,
            timeline,
            hdr: self.latency.encode(),
            corrected_hdr: self.corrected.encode(),
            ttfb_hdr: self.ttfb.encode(),
            send_lag_hdr: self.send_lag.encode(),
            slo: Vec::new(),
        };
        report.slo = evaluate(&self.slo, &report);
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
            truncated_skipped: r.truncated_skipped,
            latency: LatencyHistogram::decode(&r.hdr)?,
            corrected: LatencyHistogram::decode(&r.corrected_hdr)?,
            ttfb: LatencyHistogram::decode(&r.ttfb_hdr)?,
            send_lag: LatencyHistogram::decode(&r.send_lag_hdr)?,
            routes,
            windows,
            slo,
        })
    }
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

/// Evaluates thresholds against a stage report.
pub fn evaluate(slo: &Slo, r: &StageReport) -> Vec<SloResult> {
    let mut out = Vec::new();
    let mut check = |name: &str, threshold: Option<f64>, actual: f64| {
        if let Some(t) = threshold {
            out.push(SloResult {
                name: name.to_string(),
                threshold: t,
                actual,
                pass: actual <= t,
            });
        }
    };
    check("p50_ms", slo.p50_ms, r.latency_ms.p50);
    check("p95_ms", slo.p95_ms, r.latency_ms.p95);
    check("p99_ms", slo.p99_ms, r.latency_ms.p99);
    let rate = if r.requests == 0 {
        0.0
    } else {
        r.errors as f64 / r.requests as f64
    };
    check(
        "error_rate",
        slo.error_rate,
        (rate * 10000.0).round() / 10000.0,
    );
    out
}

/// The capacity verdict over stage reports, given the abort bound.
pub fn capacity(stages: &[StageReport], abort_error_rate: Option<f64>) -> Capacity {
    let mut c = Capacity::default();
    let has_slo = stages.iter().any(|s| !s.slo.is_empty());
    let bound = abort_error_rate.unwrap_or(0.05);
    for s in stages {
        let rate = if s.requests == 0 {
            0.0
        } else {
            s.errors as f64 / s.requests as f64
        };
        if has_slo && s.slo.iter().all(|r| r.pass) {
            c.safe_multiplier = Some(
                c.safe_multiplier
                    .map_or(s.multiplier, |m| m.max(s.multiplier)),
            );
        }
        if rate <= bound {
            if c.breaking_multiplier.is_none() {
                c.peak_multiplier = Some(
                    c.peak_multiplier
                        .map_or(s.multiplier, |m| m.max(s.multiplier)),
                );
            }
        } else if c.breaking_multiplier.is_none() {
            c.breaking_multiplier = Some(s.multiplier);
            c.notes.push(format!(
                "{}x broke: error rate {:.1}% is past the {:.1}% bound",
                s.multiplier,
                rate * 100.0,
                bound * 100.0
            ));
        }
        for failed in s.slo.iter().filter(|r| !r.pass) {
            c.notes.push(format!(
                "{}x fails {}: {} against a bound of {}",
                s.multiplier, failed.name, failed.actual, failed.threshold
            ));
        }
    }
    if let (Some(first), Some(last)) = (stages.first(), stages.last())
        && stages.len() > 1
    {
        let (a, b) = (first.latency_ms.p95, last.latency_ms.p95);
        let verb = if b > a * 1.1 {
            "rose"
        } else if b < a * 0.9 {
            "fell"
        } else {
            "held"
        };
        c.notes.push(format!(
            "p95 {verb} from {a:.1} ms at {}x to {b:.1} ms at {}x",
            first.multiplier, last.multiplier
        ));
    }
    if !has_slo {
        c.notes
            .push("no SLOs were set, so no stage is called safe".into());
    }
    c
}

/// A report around `stages` with fixed metadata, for unit tests.
#[cfg(test)]
pub(crate) fn test_report(stages: Vec<StageReport>) -> Report {
    Report {
        format: FORMAT.into(),
        tool_version: "test".into(),
        capture: CaptureRef {
            path: "c.db".into(),
            run: "1".into(),
            exchanges: 1,
            sessions: 1,
            fingerprint: String::new(),
        },
        target: "http://t".into(),
        profile: ProfileRef {
            name: "p".into(),
            fingerprint: "f".into(),
        },
        shard: None,
        seed: 1,
        started_at: String::new(),
        finished_at: String::new(),
        verdict: Verdict::Pass,
        stages,
        capacity: Capacity::default(),
    }
}
