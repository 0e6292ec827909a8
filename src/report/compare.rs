//! Comparing two reports: did this build get slower?
//!
//! Stages are matched by name, routes by template. A change counts as a
//! regression only when it passes its threshold (relative for latency, and
//! at least 2 ms absolute; percentage points for the error rate) AND is
//! larger than the runs' own noise. Noise for stage latency comes from the
//! per-second timeline: the per-window percentiles of each side are compared
//! with a one-sided Mann-Whitney U test (normal approximation, ties
//! corrected) at 5%. Fewer than 5 windows on a side gives no estimate: the
//! thresholds alone decide, and the comparison says so. The error rate uses
//! a two-proportion z-test. Routes have no timeline of their own, so their
//! latency is judged by the thresholds, and only with at least 20 requests
//! a side.
//! Pure: reports in, a [`ReportDiff`] out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::histogram::LatencyHistogram;
use super::model::{ByHeader, Report, StageReport, header_shares};

/// The `format` of comparison files.
pub const FORMAT: &str = "tapedeck-compare/1";

/// Fewest timeline windows a side needs for a noise estimate.
pub const MIN_WINDOWS: usize = 5;

/// Fewest requests a route needs on each side to be judged.
pub const MIN_ROUTE_REQUESTS: u64 = 20;

/// Latency changes below this are never regressions, whatever the ratio.
pub const MIN_LATENCY_DELTA_MS: f64 = 2.0;

/// Regression thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Relative p95 increase, e.g. 0.10 for +10%.
    pub p95: f64,
    /// Relative p99 increase.
    pub p99: f64,
    /// Error-rate increase in percentage points, e.g. 0.5.
    pub errors_pp: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            p95: 0.10,
            p99: 0.15,
            errors_pp: 0.5,
        }
    }
}

impl Thresholds {
    /// Parses `p95=+10%,p99=+15%,errors=+0.5pp` (any subset; the rest keep
    /// their defaults).
    ///
    /// # Errors
    /// A message naming the part that is wrong.
    pub fn parse(text: &str) -> Result<Thresholds, String> {
        let mut t = Thresholds::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected KEY=VALUE, e.g. p95=+10%"))?;
            let value = value.trim().trim_start_matches('+');
            let number = |suffix: &str| -> Result<f64, String> {
                value
                    .strip_suffix(suffix)
                    .ok_or_else(|| format!("`{part}`: {key} takes a value ending in {suffix}"))?
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| format!("`{part}`: not a non-negative number"))
            };
            match key.trim() {
                "p95" => t.p95 = number("%")? / 100.0,
                "p99" => t.p99 = number("%")? / 100.0,
                "errors" => t.errors_pp = number("pp")?,
                other => return Err(format!("`{other}`: thresholds are p95, p99 and errors")),
            }
        }
        Ok(t)
    }
}

/// What a change amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Worse past the threshold and the noise.
    Regression,
    /// Better past the threshold and the noise.
    Improvement,
    /// Past the threshold, but within the runs' noise.
    WithinNoise,
    /// Past the threshold on a route with fewer than
    /// [`MIN_ROUTE_REQUESTS`] requests on a side: too few to judge.
    TooFewRequests,
    /// Within the threshold.
    Unchanged,
}

/// How the noise was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Noise {
    /// A test over per-window values ran.
    Estimated,
    /// Too few windows (or a route): thresholds alone decided.
    NoEstimate,
}

/// One compared number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricDiff {
    /// `p50_ms`, `p95_ms`, `p99_ms`, `error_rate_pct`, `throughput_rps`.
    pub metric: String,
    /// Base value.
    pub base: f64,
    /// Candidate value.
    pub candidate: f64,
    /// candidate − base.
    pub delta: f64,
    /// delta / base (0 when base is 0).
    pub delta_rel: f64,
    /// The verdict.
    pub change: Change,
    /// How noise was judged.
    pub noise: Noise,
    /// One-sided p-value of the noise test, when it ran.
    pub p_value: Option<f64>,
}

/// A route's comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteDiff {
    /// Route template.
    pub route: String,
    /// `base` or `candidate` when the route is in one report only.
    pub only_in: Option<String>,
    /// Requests on each side.
    pub requests: (u64, u64),
    /// Compared numbers (empty when in one report only).
    pub metrics: Vec<MetricDiff>,
}

/// A stage's comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageDiff {
    /// Stage name.
    pub name: String,
    /// `base` or `candidate` when the stage is in one report only.
    pub only_in: Option<String>,
    /// Timeline windows on each side.
    pub windows: (usize, usize),
    /// Compared numbers.
    pub metrics: Vec<MetricDiff>,
    /// Routes, regressions first.
    pub routes: Vec<RouteDiff>,
    /// Each grouping header value's share of the answers on both sides
    /// (stage-wide, then per route present in both); informational, never
    /// a regression. Absent when neither report grouped answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_shares: Vec<ShareDiff>,
}

/// One header value's share of the answers, base against candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareDiff {
    /// `stage` or the route template.
    pub scope: String,
    /// Header name (lowercase).
    pub header: String,
    /// Header value (`(none)`: answers without it).
    pub value: String,
    /// Share on the base side, percent (0 when absent there).
    pub base_pct: f64,
    /// Share on the candidate side, percent.
    pub candidate_pct: f64,
    /// candidate − base, percentage points.
    pub delta_pp: f64,
}

/// The shares of every value either side saw, for one scope.
fn share_diffs(scope: &str, b: &ByHeader, c: &ByHeader, out: &mut Vec<ShareDiff>) {
    let (sb, sc) = (header_shares(b), header_shares(c));
    let headers: std::collections::BTreeSet<&str> = sb.keys().chain(sc.keys()).copied().collect();
    for header in headers {
        let (vb, vc) = (sb.get(header), sc.get(header));
        let values: std::collections::BTreeSet<&str> = vb
            .into_iter()
            .chain(vc)
            .flat_map(|v| v.keys().copied())
            .collect();
        for value in values {
            let pct = |side: Option<&BTreeMap<&str, f64>>| {
                round(side.and_then(|v| v.get(value)).copied().unwrap_or(0.0) * 100.0)
            };
            let (base_pct, candidate_pct) = (pct(vb), pct(vc));
            out.push(ShareDiff {
                scope: scope.to_string(),
                header: header.to_string(),
                value: value.to_string(),
                base_pct,
                candidate_pct,
                delta_pp: round(candidate_pct - base_pct),
            });
        }
    }
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportDiff {
    /// `tapedeck-compare/1`.
    pub format: String,
    /// Base report's target and start.
    pub base: String,
    /// Candidate report's target and start.
    pub candidate: String,
    /// Thresholds used.
    pub thresholds: Thresholds,
    /// Whether any stage or route regressed.
    pub regression: bool,
    /// Stages.
    pub stages: Vec<StageDiff>,
}

/// Compares a candidate report with a base one.
pub fn compare(base: &Report, candidate: &Report, t: &Thresholds) -> ReportDiff {
    let mut stages = Vec::new();
    for b in &base.stages {
        match candidate.stages.iter().find(|c| c.name == b.name) {
            Some(c) => stages.push(stage_diff(b, c, t)),
            None => stages.push(only(b, "base")),
        }
    }
    for c in candidate
        .stages
        .iter()
        .filter(|c| !base.stages.iter().any(|b| b.name == c.name))
    {
        stages.push(only(c, "candidate"));
    }
    let regression = stages.iter().any(|s| {
        s.metrics.iter().any(|m| m.change == Change::Regression)
            || s.routes
                .iter()
                .any(|r| r.metrics.iter().any(|m| m.change == Change::Regression))
    });
    ReportDiff {
        format: FORMAT.to_string(),
        base: format!("{} at {}", base.target, base.started_at),
        candidate: format!("{} at {}", candidate.target, candidate.started_at),
        thresholds: *t,
        regression,
        stages,
    }
}

fn only(s: &StageReport, side: &str) -> StageDiff {
    StageDiff {
        name: s.name.clone(),
        only_in: Some(side.to_string()),
        windows: (0, 0),
        metrics: Vec::new(),
        routes: Vec::new(),
        header_shares: Vec::new(),
    }
}

fn window_quantiles(s: &StageReport, q: f64) -> Vec<f64> {
    s.timeline
        .iter()
        .filter(|w| w.requests > 0)
        .filter_map(|w| LatencyHistogram::decode(&w.hdr).ok())
        .map(|h| h.quantile_ms(q))
        .collect()
}

fn rate_pct(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        errors as f64 * 100.0 / requests as f64
    }
}

fn stage_diff(b: &StageReport, c: &StageReport, t: &Thresholds) -> StageDiff {
    let mut metrics = Vec::new();
    for (metric, q, base, cand, rel) in [
        (
            "p95_ms",
            0.95,
            b.latency_ms.p95,
            c.latency_ms.p95,
            Some(t.p95),
        ),
        (
            "p99_ms",
            0.99,
            b.latency_ms.p99,
            c.latency_ms.p99,
            Some(t.p99),
        ),
        ("p50_ms", 0.5, b.latency_ms.p50, c.latency_ms.p50, None),
    ] {
        let (wb, wc) = (window_quantiles(b, q), window_quantiles(c, q));
        let p_worse = (wb.len() >= MIN_WINDOWS && wc.len() >= MIN_WINDOWS)
            .then(|| mann_whitney_greater(&wc, &wb));
        let p_better = (wb.len() >= MIN_WINDOWS && wc.len() >= MIN_WINDOWS)
            .then(|| mann_whitney_greater(&wb, &wc));
        metrics.push(latency_metric(metric, base, cand, rel, p_worse, p_better));
    }
    let (rb, rc) = (
        rate_pct(b.errors, b.requests),
        rate_pct(c.errors, c.requests),
    );
    let p_err_worse = two_proportion_greater(c.errors, c.requests, b.errors, b.requests);
    let p_err_better = two_proportion_greater(b.errors, b.requests, c.errors, c.requests);
    let delta = rc - rb;
    let change = if delta > t.errors_pp {
        if p_err_worse < 0.05 {
            Change::Regression
        } else {
            Change::WithinNoise
        }
    } else if -delta > t.errors_pp {
        if p_err_better < 0.05 {
            Change::Improvement
        } else {
            Change::WithinNoise
        }
    } else {
        Change::Unchanged
    };
    metrics.push(MetricDiff {
        metric: "error_rate_pct".into(),
        base: round(rb),
        candidate: round(rc),
        delta: round(delta),
        delta_rel: rel_of(rb, rc),
        change,
        noise: Noise::Estimated,
        p_value: Some(round(if delta >= 0.0 {
            p_err_worse
        } else {
            p_err_better
        })),
    });
    metrics.push(MetricDiff {
        metric: "throughput_rps".into(),
        base: b.throughput_rps,
        candidate: c.throughput_rps,
        delta: round(c.throughput_rps - b.throughput_rps),
        delta_rel: rel_of(b.throughput_rps, c.throughput_rps),
        change: Change::Unchanged,
        noise: Noise::NoEstimate,
        p_value: None,
    });

    let mut routes = Vec::new();
    let base_routes: BTreeMap<&str, _> = b.routes.iter().map(|r| (r.route.as_str(), r)).collect();
    let cand_routes: BTreeMap<&str, _> = c.routes.iter().map(|r| (r.route.as_str(), r)).collect();
    for (name, rb) in &base_routes {
        match cand_routes.get(name) {
            None => routes.push(RouteDiff {
                route: name.to_string(),
                only_in: Some("base".into()),
                requests: (rb.requests, 0),
                metrics: Vec::new(),
            }),
            Some(rc) => {
                let enough = rb.requests >= MIN_ROUTE_REQUESTS && rc.requests >= MIN_ROUTE_REQUESTS;
                let metrics = [
                    ("p95_ms", rb.latency_ms.p95, rc.latency_ms.p95, t.p95),
                    ("p99_ms", rb.latency_ms.p99, rc.latency_ms.p99, t.p99),
                ]
                .into_iter()
                .map(|(m, x, y, thr)| {
                    let mut d = latency_metric(m, x, y, Some(thr), None, None);
                    if !enough && d.change != Change::Unchanged {
                        d.change = Change::TooFewRequests;
                    }
                    d
                })
                .collect();
                routes.push(RouteDiff {
                    route: name.to_string(),
                    only_in: None,
                    requests: (rb.requests, rc.requests),
                    metrics,
                });
            }
        }
    }
    for (name, rc) in cand_routes
        .iter()
        .filter(|(n, _)| !base_routes.contains_key(*n))
    {
        routes.push(RouteDiff {
            route: name.to_string(),
            only_in: Some("candidate".into()),
            requests: (0, rc.requests),
            metrics: Vec::new(),
        });
    }
    let rank = |r: &RouteDiff| {
        if r.metrics.iter().any(|m| m.change == Change::Regression) {
            0
        } else if r.only_in.is_some() {
            1
        } else {
            2
        }
    };
    routes.sort_by_key(|r| rank(r));
    let mut header_shares = Vec::new();
    share_diffs("stage", &b.by_header, &c.by_header, &mut header_shares);
    for (name, rb) in &base_routes {
        if let Some(rc) = cand_routes.get(name) {
            share_diffs(name, &rb.by_header, &rc.by_header, &mut header_shares);
        }
    }
    StageDiff {
        name: b.name.clone(),
        only_in: None,
        windows: (
            window_quantiles(b, 0.5).len(),
            window_quantiles(c, 0.5).len(),
        ),
        metrics,
        routes,
        header_shares,
    }
}

fn latency_metric(
    metric: &str,
    base: f64,
    cand: f64,
    rel_threshold: Option<f64>,
    p_worse: Option<f64>,
    p_better: Option<f64>,
) -> MetricDiff {
    let delta = cand - base;
    let rel = rel_of(base, cand);
    let past = |d: f64, r: f64| rel_threshold.is_some_and(|t| d >= MIN_LATENCY_DELTA_MS && r > t);
    let (change, p) = if past(delta, rel) {
        match p_worse {
            Some(p) if p >= 0.05 => (Change::WithinNoise, Some(p)),
            p => (Change::Regression, p),
        }
    } else if past(-delta, -rel) {
        match p_better {
            Some(p) if p >= 0.05 => (Change::WithinNoise, Some(p)),
            p => (Change::Improvement, p),
        }
    } else {
        (
            Change::Unchanged,
            p_worse.filter(|_| delta >= 0.0).or(p_better),
        )
    };
    MetricDiff {
        metric: metric.to_string(),
        base,
        candidate: cand,
        delta: round(delta),
        delta_rel: rel,
        change,
        noise: if p_worse.is_some() {
            Noise::Estimated
        } else {
            Noise::NoEstimate
        },
        p_value: p.map(round),
    }
}

fn rel_of(base: f64, cand: f64) -> f64 {
    if base == 0.0 {
        0.0
    } else {
        round((cand - base) / base)
    }
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// One-sided p-value that values in `a` tend to be greater than in `b`
/// (Mann-Whitney U, normal approximation with tie correction).
pub fn mann_whitney_greater(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() {
        return 1.0;
    }
    let mut all: Vec<(f64, usize)> = a
        .iter()
        .map(|v| (*v, 0))
        .chain(b.iter().map(|v| (*v, 1)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut ranks = vec![0.0; all.len()];
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for r in ranks.iter_mut().take(j + 1).skip(i) {
            *r = avg;
        }
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        i = j + 1;
    }
    let r1: f64 = all
        .iter()
        .zip(&ranks)
        .filter(|((_, side), _)| *side == 0)
        .map(|(_, r)| r)
        .sum();
    let u1 = r1 - n1 * (n1 + 1.0) / 2.0;
    let n = n1 + n2;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if var <= 0.0 {
        return 1.0;
    }
    let z = (u1 - n1 * n2 / 2.0 - 0.5) / var.sqrt();
    1.0 - normal_cdf(z)
}

/// One-sided p-value that proportion `x1/n1` is greater than `x2/n2`.
pub fn two_proportion_greater(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let p = (x1 + x2) as f64 / (n1 + n2) as f64;
    let se = (p * (1.0 - p) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if se == 0.0 {
        return if p1 > p2 { 0.0 } else { 1.0 };
    }
    1.0 - normal_cdf((p1 - p2) / se)
}

/// Standard normal CDF (Abramowitz-Stegun 7.1.26 erf, |error| < 1.5e-7).
fn normal_cdf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    let erf = if x >= 0.0 { erf } else { -erf };
    0.5 * (1.0 + erf)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::profile::Slo;
    use crate::report::accumulate::{StageData, WindowData};
    use crate::report::model::test_report;

    /// A report whose one stage has `windows` seconds of `per_window`
    /// requests, latencies around `ms` (with a little spread per window), and
    /// `errors` errors.
    fn report(ms: f64, windows: i64, errors: u64, route_ms: f64) -> Report {
        let mut d = StageData {
            name: "5x".into(),
            multiplier: 5,
            speed: 1.0,
            started_at_us: 1_700_000_000_000_000,
            finished_at_us: 1_700_000_000_000_000 + windows * 1_000_000,
            slo: Slo::default(),
            ..StageData::default()
        };
        let per_window = 100u64;
        for w in 0..windows {
            let mut wd = WindowData::default();
            for i in 0..per_window {
                let v = ms
                    * (0.9 + 0.2 * ((w as f64 * 7.0 + i as f64) % 10.0) / 10.0)
                    * (0.5 + i as f64 / per_window as f64);
                let dur = Duration::from_secs_f64(v / 1000.0);
                wd.latency.record(dur);
                d.latency.record(dur);
                d.corrected.record(dur);
                let r = d.routes.entry("GET /a".into()).or_default();
                r.requests += 1;
                r.latency.record(Duration::from_secs_f64(
                    route_ms * (0.5 + i as f64 / 100.0) / 1000.0,
                ));
            }
            wd.requests = per_window;
            d.windows.insert(1_700_000_000 + w, wd);
            d.requests += per_window;
        }
        if errors > 0 {
            d.error_kinds.insert("http_5xx".into(), errors);
        }
        test_report(vec![d.report()])
    }

    fn change(d: &ReportDiff, metric: &str) -> Change {
        d.stages[0]
            .metrics
            .iter()
            .find(|m| m.metric == metric)
            .map(|m| m.change)
            .expect("metric")
    }

    #[test]
    fn a_clear_slowdown_is_a_regression_beyond_noise() {
        let d = compare(
            &report(50.0, 10, 0, 20.0),
            &report(80.0, 10, 0, 40.0),
            &Thresholds::default(),
        );
        assert_eq!(change(&d, "p95_ms"), Change::Regression);
        assert!(d.regression);
        let route = &d.stages[0].routes[0];
        assert_eq!(route.metrics[0].change, Change::Regression, "{route:?}");
        let back = compare(
            &report(80.0, 10, 0, 40.0),
            &report(50.0, 10, 0, 20.0),
            &Thresholds::default(),
        );
        assert_eq!(change(&back, "p95_ms"), Change::Improvement);
        assert!(!back.regression);
    }

    #[test]
    fn small_changes_are_unchanged_and_tiny_absolute_ones_never_count() {
        let d = compare(
            &report(50.0, 10, 0, 20.0),
            &report(52.0, 10, 0, 20.0),
            &Thresholds::default(),
        );
        assert_eq!(change(&d, "p95_ms"), Change::Unchanged);
        // +50% but under 2 ms absolute.
        let d = compare(
            &report(1.0, 10, 0, 1.0),
            &report(1.5, 10, 0, 1.5),
            &Thresholds::default(),
        );
        assert_eq!(change(&d, "p95_ms"), Change::Unchanged);
    }

    #[test]
    fn with_few_windows_the_thresholds_alone_decide_and_say_so() {
        let d = compare(
            &report(50.0, 3, 0, 20.0),
            &report(80.0, 3, 0, 20.0),
            &Thresholds::default(),
        );
        let m = d.stages[0]
            .metrics
            .iter()
            .find(|m| m.metric == "p95_ms")
            .expect("p95");
        assert_eq!((m.change, m.noise), (Change::Regression, Noise::NoEstimate));
    }

    #[test]
    fn a_change_past_the_threshold_but_inside_the_spread_is_within_noise() {
        // Base windows alternate fast and slow; the candidate's p95 moved up
        // past 10% but its windows sit inside the base's spread.
        let mut base = report(50.0, 10, 0, 20.0);
        let mut cand = report(50.0, 10, 0, 20.0);
        for (i, w) in base.stages[0].timeline.iter_mut().enumerate() {
            let ms = if i % 2 == 0 { 20.0 } else { 100.0 };
            let mut h = LatencyHistogram::new();
            h.record(Duration::from_secs_f64(ms / 1000.0));
            w.hdr = h.encode();
        }
        for (i, w) in cand.stages[0].timeline.iter_mut().enumerate() {
            let ms = if i % 2 == 0 { 25.0 } else { 95.0 };
            let mut h = LatencyHistogram::new();
            h.record(Duration::from_secs_f64(ms / 1000.0));
            w.hdr = h.encode();
        }
        cand.stages[0].latency_ms.p95 = base.stages[0].latency_ms.p95 * 1.3;
        let d = compare(&base, &cand, &Thresholds::default());
        assert_eq!(change(&d, "p95_ms"), Change::WithinNoise);
        assert!(!d.regression);
    }

    #[test]
    fn error_rates_compare_in_percentage_points() {
        let d = compare(
            &report(50.0, 10, 0, 20.0),
            &report(50.0, 10, 30, 20.0),
            &Thresholds::default(),
        );
        assert_eq!(change(&d, "error_rate_pct"), Change::Regression);
        let d = compare(
            &report(50.0, 10, 0, 20.0),
            &report(50.0, 10, 2, 20.0),
            &Thresholds::default(),
        );
        assert_eq!(
            change(&d, "error_rate_pct"),
            Change::Unchanged,
            "0.2pp is under 0.5pp"
        );
    }

    #[test]
    fn thresholds_parse_and_reject_nonsense() {
        let t = Thresholds::parse("p95=+20%, errors=+1pp").expect("valid");
        assert_eq!((t.p95, t.p99, t.errors_pp), (0.2, 0.15, 1.0));
        assert!(Thresholds::parse("p95=20").is_err());
        assert!(Thresholds::parse("p42=+1%").is_err());
    }

    #[test]
    fn the_rank_test_separates_shifted_samples() {
        let a: Vec<f64> = (0..10).map(|i| 10.0 + f64::from(i)).collect();
        let b: Vec<f64> = (0..10).map(|i| 30.0 + f64::from(i)).collect();
        assert!(mann_whitney_greater(&b, &a) < 0.001);
        assert!(mann_whitney_greater(&a, &b) > 0.99);
        assert!((mann_whitney_greater(&a, &a) - 0.5).abs() < 0.2);
    }
}

#[cfg(test)]
mod shape_tests {
    use super::*;
    use crate::report::accumulate::StageData;
    use crate::report::model::test_report;
    use crate::report::verdict::capacity;

    fn stage(
        name: &str,
        multiplier: u32,
        routes: &[&str],
        p95_ms: u64,
        errors: u64,
    ) -> StageReport {
        let mut d = StageData {
            name: name.into(),
            multiplier,
            speed: 1.0,
            started_at_us: 0,
            finished_at_us: 1_000_000,
            slo: crate::profile::Slo {
                p95_ms: Some(100.0),
                error_rate: Some(0.01),
                ..Default::default()
            },
            ..StageData::default()
        };
        for r in routes {
            let rd = d.routes.entry((*r).to_string()).or_default();
            for _ in 0..50 {
                rd.requests += 1;
                rd.latency.record(std::time::Duration::from_millis(p95_ms));
                d.latency.record(std::time::Duration::from_millis(p95_ms));
                d.requests += 1;
            }
        }
        if errors > 0 {
            d.error_kinds.insert("http_5xx".into(), errors);
        }
        d.report()
    }

    fn report(stages: Vec<StageReport>) -> Report {
        test_report(stages)
    }

    #[test]
    fn routes_and_stages_on_one_side_only_are_listed_as_such() {
        let base = report(vec![
            stage("1x", 1, &["GET /a", "GET /old"], 10, 0),
            stage("5x", 5, &["GET /a"], 10, 0),
        ]);
        let cand = report(vec![
            stage("1x", 1, &["GET /a", "GET /new"], 10, 0),
            stage("10x", 10, &["GET /a"], 10, 0),
        ]);
        let d = compare(&base, &cand, &Thresholds::default());
        let only: Vec<(&str, Option<&str>)> = d
            .stages
            .iter()
            .map(|s| (s.name.as_str(), s.only_in.as_deref()))
            .collect();
        assert_eq!(
            only,
            [
                ("1x", None),
                ("5x", Some("base")),
                ("10x", Some("candidate"))
            ]
        );
        let routes: Vec<(&str, Option<&str>)> = d.stages[0]
            .routes
            .iter()
            .map(|r| (r.route.as_str(), r.only_in.as_deref()))
            .collect();
        assert!(routes.contains(&("GET /old", Some("base"))), "{routes:?}");
        assert!(
            routes.contains(&("GET /new", Some("candidate"))),
            "{routes:?}"
        );
        assert!(!d.regression, "a missing route is listed, not a regression");
    }

    #[test]
    fn a_route_with_few_requests_is_not_judged() {
        let few = |ms: u64| {
            let mut s = stage("1x", 1, &["GET /a", "GET /rare"], 10, 0);
            let rare = s.routes.iter_mut().find(|r| r.route == "GET /rare");
            let rare = rare.expect("route");
            rare.requests = MIN_ROUTE_REQUESTS - 1;
            (rare.latency_ms.p95, rare.latency_ms.p99) = (ms as f64, ms as f64);
            report(vec![s])
        };
        let d = compare(&few(10), &few(50), &Thresholds::default());
        let rare = d.stages[0].routes.iter().find(|r| r.route == "GET /rare");
        let changes: Vec<Change> = rare
            .expect("route")
            .metrics
            .iter()
            .map(|m| m.change)
            .collect();
        assert_eq!(changes, [Change::TooFewRequests, Change::TooFewRequests]);
        assert!(!d.regression, "{d:?}");
    }

    #[test]
    fn the_capacity_verdict_names_the_safe_peak_and_breaking_stages() {
        let stages = vec![
            stage("1x", 1, &["GET /a"], 20, 0),
            stage("5x", 5, &["GET /a"], 150, 0),
            stage("10x", 10, &["GET /a"], 900, 40),
        ];
        let c = capacity(&stages, Some(0.1));
        assert_eq!(c.safe_multiplier, Some(1), "5x fails the 100 ms p95 SLO");
        assert_eq!(
            c.peak_multiplier,
            Some(5),
            "10x has 80% errors, past the 10% bound"
        );
        assert_eq!(c.breaking_multiplier, Some(10));
        assert!(
            c.notes.iter().any(|n| n.contains("10x broke")),
            "{:?}",
            c.notes
        );
        assert!(
            c.notes.iter().any(|n| n.contains("5x fails p95_ms")),
            "{:?}",
            c.notes
        );
        assert!(
            c.notes.iter().any(|n| n.contains("p95 rose")),
            "{:?}",
            c.notes
        );
        let none = capacity(&[stage("1x", 1, &["GET /a"], 20, 0)], None);
        assert_eq!(none.safe_multiplier, Some(1));
    }
}
