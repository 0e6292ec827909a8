//! The report: the versioned JSON contract other tools read
//! (`tapedeck-report/1`; keys are added, never renamed). Plain serde types
//! and the projection of a histogram into percentiles; nothing here
//! accumulates or judges. The numbers are filled in by `accumulate` (from
//! replay's outcomes or from report files), the SLO results, verdict and
//! capacity by `verdict`; readers are report files, `compare` and the
//! renderers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::histogram::LatencyHistogram;

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
    /// Recorded values an answer of this route would have mapped to a
    /// second live value in its world (the first mapping kept).
    #[serde(default)]
    pub conflicting_values: u64,
    /// Answers that succeeded as recorded but whose JSON lacked what the
    /// recorded answer had (a key, a type, a list's items).
    #[serde(default)]
    pub shape_mismatches: u64,
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
    /// This route's answers by the value of each `--group-by-header`
    /// header (absent without one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_header: ByHeader,
    /// This route's slowest requests (at most 10), slowest first, with the
    /// trace id each carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slowest: Vec<super::slowest::SlowRequest>,
}

/// Answers by a response header's value: header name (lowercase) → value
/// → the answers that carried it. `(none)` holds answers without the
/// header, `(other)` the values past the first [`GROUP_VALUES`] of a
/// header; requests that got no answer are in none.
pub type ByHeader = BTreeMap<String, BTreeMap<String, HeaderGroup>>;

/// Distinct values kept per header, route and stage; later ones count as
/// `(other)`: each value holds a latency histogram (tens of KB), and an
/// id-like header must not grow memory or a report without bound. A
/// cache's statuses (HIT, MISS, EXPIRED, STALE, BYPASS, …) fit.
pub const GROUP_VALUES: usize = 10;

/// The answers that carried one value of a grouping header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeaderGroup {
    /// Answers with this value.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// Their service latency.
    pub latency_ms: Percentiles,
    /// Their service latency histogram.
    pub hdr: String,
}

/// Each value's share of a header's answers (`(none)` included: answers
/// without the header), per header: header → value → fraction (0–1).
pub fn header_shares(by_header: &ByHeader) -> BTreeMap<&str, BTreeMap<&str, f64>> {
    by_header
        .iter()
        .map(|(name, values)| {
            let total: u64 = values.values().map(|g| g.requests).sum();
            let shares = values
                .iter()
                .map(|(v, g)| (v.as_str(), g.requests as f64 / total.max(1) as f64))
                .collect();
            (name.as_str(), shares)
        })
        .collect()
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
    /// Observed resources (`--observe`, `--observe-pid`): per series, the
    /// mean of the readings taken in this second (absent without any).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, f64>,
    /// How many readings each mean of `resources` is made of, so merged
    /// windows weigh them exactly.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resource_readings: BTreeMap<String, u64>,
}

/// One observed series over a stage (`--observe`, `--observe-pid`):
/// CPU in cores, memory in bytes, counters as per-second rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceStat {
    /// Lowest reading.
    pub min: f64,
    /// `sum / count`.
    pub mean: f64,
    /// Highest reading.
    pub max: f64,
    /// Readings taken.
    pub count: u64,
    /// Their sum (kept so that merged reports add exactly).
    pub sum: f64,
    /// For a `--observe-pid` CPU series: the cores of the machine the
    /// process runs on, which `max` is a share of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
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
    /// Whether `actual` is within the bound (a route pattern that matched
    /// no route does not pass).
    pub pass: bool,
    /// The route pattern as the profile wrote it, for a `[[slo.route]]`
    /// threshold (absent for stage-wide ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// How many of the stage's routes the pattern matched (their requests
    /// pooled); with `route` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes_matched: Option<u64>,
}

/// Requests of one route not sent because an answer they needed failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DependentSkip {
    /// The skipped requests' route.
    pub route: String,
    /// The first recorded value they needed.
    pub waited_for: String,
    /// The route whose answer failed to hand it out.
    pub from: String,
    /// Requests skipped.
    pub count: u64,
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
    /// What the skipped requests waited for, per skipped route and failed
    /// route (skips for a profile rule's variable are not listed).
    #[serde(default)]
    pub dependent_skips: Vec<DependentSkip>,
    /// Requests not sent because their recorded body was truncated.
    pub truncated_skipped: u64,
    /// Requests and WebSockets a `--read-only` replay did not send: methods
    /// other than GET, HEAD and OPTIONS, and sockets whose client sent
    /// data frames.
    #[serde(default)]
    pub read_only_skipped: u64,
    /// Writes whose live ids repeated across worlds.
    pub suspected_dedup: u64,
    /// Recorded values that would have mapped to a second live value in
    /// one world (the first mapping kept).
    #[serde(default)]
    pub conflicting_values: u64,
    /// Answers that succeeded as recorded but whose JSON lacked what the
    /// recorded answer had ("200 but wrong").
    #[serde(default)]
    pub shape_mismatches: u64,
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
    /// Why the stage is not a valid measurement (it sent nothing, or too
    /// many of its requests failed in transport or were not sent); absent
    /// when it is valid. Set by `verdict::judge_validity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// The profile's `[[effect]]` numbers, read before and after the
    /// stage (absent without effects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<EffectResult>,
    /// The stage's answers by the value of each `--group-by-header`
    /// header (absent without one); long-poll routes count but stay out
    /// of the latency, as in the stage's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_header: ByHeader,
    /// Observed resources over the stage, per series (absent when nothing
    /// was observed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, ResourceStat>,
    /// Reads of an observed source that failed during the stage, per
    /// source (`host:port`, `pid N`); absent when none failed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub observe_failures: BTreeMap<String, u64>,
}

/// A number on the backend read before and after a stage, against the
/// writes that should have raised it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EffectResult {
    /// The effect's name.
    pub name: String,
    /// The writes counted, as the profile's route pattern.
    pub route: String,
    /// The number before the stage.
    pub before: Option<f64>,
    /// The number after the stage.
    pub after: Option<f64>,
    /// `after - before`.
    pub delta: Option<f64>,
    /// Answers of the counted routes without error (status below 400):
    /// what the number should have risen by at least.
    pub expected: u64,
    /// Whether both readings were taken and `delta` reached `expected`.
    pub pass: bool,
    /// Why a reading failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The capacity verdict over the stages, made by
/// `verdict::capacity` (which also says a stage's role in it).
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
    /// Set on a report merged with `report merge --allow-partial` from
    /// fewer shards than the replay had: every count, and so this verdict,
    /// covers only the shards present. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Partial>,
    /// The capacity search that chose the stages (`--find-capacity`);
    /// absent for a profile's listed stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchReport>,
}

/// A capacity search: its settings, each step, what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchReport {
    /// The first multiplier tried.
    pub start: u32,
    /// The highest multiplier it could try.
    pub max_multiplier: u32,
    /// Bisection stopped when safe and failing were this close.
    pub resolution: u32,
    /// The stages run, in order.
    pub steps: Vec<SearchStep>,
    /// The highest multiplier that met every SLO (and effect, and was a
    /// valid measurement).
    pub safe_multiplier: Option<u32>,
    /// The lowest multiplier that did not.
    pub failing_multiplier: Option<u32>,
    /// `found` (a safe and a failing multiplier `resolution` apart),
    /// `max_reached` (every step passed), `fails_at_start` (nothing
    /// passed), `interrupted` (a stop signal ended it; a step the safety
    /// limit stopped is a failed step).
    pub outcome: String,
}

/// One stage of a capacity search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchStep {
    /// The stage's multiplier (its name is `{multiplier}x`).
    pub multiplier: u32,
    /// `doubling` or `bisection`.
    pub phase: String,
    /// Whether it met every SLO and effect and was a valid measurement.
    pub pass: bool,
}

/// Which shards a partial merge lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    /// Indexes of the shards not merged, ascending.
    pub missing_shards: Vec<u32>,
    /// Number of shards of the replay.
    pub of: u32,
}

impl std::fmt::Display for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let missing: Vec<String> = self.missing_shards.iter().map(u32::to_string).collect();
        write!(
            f,
            "merged without shard{} {} of {}: counts, throughput and capacity cover only {} of \
             the {} shards",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            self.of,
            self.of as usize - missing.len().min(self.of as usize),
            self.of
        )
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
    /// A stop signal ended the replay early: the stages hold what was
    /// measured until then, and the verdict is `aborted`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// The share of transport errors or unsent requests past which a
    /// stage is not a valid measurement (`--max-invalid`).
    #[serde(default = "default_max_invalid")]
    pub max_invalid: f64,
}

fn default_max_invalid() -> f64 {
    crate::profile::DEFAULT_MAX_INVALID
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
        interrupted: false,
        max_invalid: default_max_invalid(),
    }
}
