//! The HTML pages: one self-contained file per report or comparison (inline
//! CSS, SVG charts and a few lines of script to sort tables; nothing loaded
//! from the network). Templates are minijinja, compiled into the binary.

use minijinja::value::Serde;
use minijinja::{Environment, Value, context};
use serde::Serialize;

use super::charts::{self, BASE, P50, P95, P99, Series, XAxis};
use super::table;
use crate::report::compare::{Change, MIN_LATENCY_DELTA_MS, MIN_WINDOWS, MetricDiff, ReportDiff};
use crate::report::histogram::LatencyHistogram;
use crate::report::model::{Report, StageReport, Window, header_shares};
use crate::report::resources::{self, Unit};
use crate::report::verdict::warnings;

const LAYOUT: &str = include_str!("templates/layout.html");
const REPORT: &str = include_str!("templates/report.html");
const COMPARE: &str = include_str!("templates/compare.html");

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Templates are part of the binary; a broken one fails the tests.
    for (name, source) in [
        ("layout.html", LAYOUT),
        ("report.html", REPORT),
        ("compare.html", COMPARE),
    ] {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "a built-in template does not compile");
        }
    }
    env
}

fn render(name: &str, ctx: Value) -> Result<String, String> {
    environment()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("rendering {name}: {e}"))
}

/// One row of the capacity table.
#[derive(Debug, Serialize)]
struct CapacityRow<'a> {
    name: &'a str,
    multiplier: u32,
    rps: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    errors: u64,
    error_pct: f64,
    slo: String,
    /// `safe`, `peak`, `breaking` or empty.
    capacity: &'a str,
}

#[derive(Debug, Serialize)]
struct StageView<'a> {
    stage: &'a StageReport,
    error_pct: f64,
    charts: Vec<String>,
    /// Observed resources over the same time axis as `charts`.
    resource_charts: Vec<String>,
    error_kinds: Vec<(&'a String, &'a u64)>,
    /// The stage's answers, then each route's, by grouping header value.
    header_rows: Vec<HeaderRow<'a>>,
}

/// One value of a grouping header in one scope (the stage or a route).
#[derive(Debug, Serialize)]
struct HeaderRow<'a> {
    scope: &'a str,
    header: &'a str,
    value: &'a str,
    share_pct: f64,
    requests: u64,
    errors: u64,
    p95: f64,
}

fn header_rows(s: &StageReport) -> Vec<HeaderRow<'_>> {
    let scopes = std::iter::once(("stage", &s.by_header))
        .chain(s.routes.iter().map(|r| (r.route.as_str(), &r.by_header)));
    let mut rows = Vec::new();
    for (scope, by_header) in scopes {
        for (header, shares) in header_shares(by_header) {
            for (value, share) in shares {
                let g = &by_header[header][value];
                rows.push(HeaderRow {
                    scope,
                    header,
                    value,
                    share_pct: share * 100.0,
                    requests: g.requests,
                    errors: g.errors,
                    p95: g.latency_ms.p95,
                });
            }
        }
    }
    rows
}

fn error_pct(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        errors as f64 * 100.0 / requests as f64
    }
}

fn capacity_rows(report: &Report) -> Vec<CapacityRow<'_>> {
    let c = &report.capacity;
    report
        .stages
        .iter()
        .map(|s| CapacityRow {
            name: &s.name,
            multiplier: s.multiplier,
            rps: s.throughput_rps,
            p50: s.latency_ms.p50,
            p95: s.latency_ms.p95,
            p99: s.latency_ms.p99,
            errors: s.errors,
            error_pct: error_pct(s.errors, s.requests),
            slo: table::slo_cell(s, &table::HTML),
            capacity: c.role(s.multiplier).unwrap_or_default(),
        })
        .collect()
}

/// The percentile curve of a serialized histogram, on the nines axis, up
/// to the last percentile its count resolves (99.9% needs 1,000 values).
fn distribution(hdr: &str) -> Vec<(f64, f64)> {
    let Ok(h) = LatencyHistogram::decode(hdr) else {
        return Vec::new();
    };
    if h.is_empty() {
        return Vec::new();
    }
    let resolved = charts::nines(100.0 * (1.0 - 1.0 / h.len() as f64));
    let mut points: Vec<(f64, f64)> = h
        .percentile_curve()
        .into_iter()
        .map(|(ms, p)| (charts::nines(p), ms))
        .filter(|(x, _)| *x < resolved)
        .collect();
    points.push((resolved, h.max_ms()));
    points
}

fn series(name: &str, color: plotters::style::RGBColor, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.to_string(),
        color,
        points,
    }
}

fn stage_charts(s: &StageReport) -> Vec<String> {
    let over_time = |f: fn(&Window) -> f64| -> Vec<(f64, f64)> {
        s.timeline.iter().map(|w| (w.t_s, f(w))).collect()
    };
    let with_requests = |f: fn(&Window) -> f64| -> Vec<(f64, f64)> {
        s.timeline
            .iter()
            .filter(|w| w.requests > 0)
            .map(|w| (w.t_s, f(w)))
            .collect()
    };
    [
        charts::line_chart(
            &format!("{}: service latency over time", s.name),
            XAxis::Seconds,
            "ms",
            &[
                series("p50", P50, with_requests(|w| w.p50_ms)),
                series("p95", P95, with_requests(|w| w.p95_ms)),
                series("p99", P99, with_requests(|w| w.p99_ms)),
            ],
        ),
        charts::line_chart(
            &format!("{}: throughput and errors", s.name),
            XAxis::Seconds,
            "per second",
            &[
                series("requests/s", P50, over_time(|w| w.requests as f64)),
                series("errors/s", P99, over_time(|w| w.errors as f64)),
            ],
        ),
        charts::line_chart(
            &format!("{}: latency distribution", s.name),
            XAxis::Nines,
            "ms",
            &[
                series("service", P50, distribution(&s.hdr)),
                series(
                    "corrected (from the planned start)",
                    P95,
                    distribution(&s.corrected_hdr),
                ),
            ],
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The observed resources of a stage over time, one chart per unit: CPU
/// in cores, memory in MB, the profile's other series together.
fn resource_charts(s: &StageReport) -> Vec<String> {
    let over_time = |name: &str, scale: f64| -> Vec<(f64, f64)> {
        s.timeline
            .iter()
            .filter_map(|w| w.resources.get(name).map(|v| (w.t_s, v / scale)))
            .collect()
    };
    let colors = [P50, P95, P99, BASE];
    let mut groups: [(&str, &str, f64, Vec<Series>); 3] = [
        ("CPU", "cores", 1.0, Vec::new()),
        ("memory", "MB", 1e6, Vec::new()),
        ("other observed series", "value", 1.0, Vec::new()),
    ];
    for name in s.resources.keys() {
        let group = match resources::unit(name) {
            Unit::Cores => 0,
            Unit::Bytes => 1,
            Unit::Plain => 2,
        };
        let (.., scale, lines) = &mut groups[group];
        let color = colors[lines.len() % colors.len()];
        let points = over_time(name, *scale);
        lines.push(series(name, color, points));
    }
    groups
        .iter()
        .filter_map(|(what, unit, _, lines)| {
            charts::line_chart(
                &format!("{}: {what} (observed)", s.name),
                XAxis::Seconds,
                unit,
                lines,
            )
        })
        .collect()
}

/// The capacity charts: latency, throughput and error rate against the
/// multiplier over the stages (in multiplier order), the stage-wide SLO
/// bounds drawn across, the safe, peak and breaking multipliers marked;
/// none for a single stage.
fn capacity_charts(report: &Report) -> Vec<String> {
    if report.stages.len() < 2 {
        return Vec::new();
    }
    let mut stages: Vec<&StageReport> = report.stages.iter().collect();
    stages.sort_by_key(|s| s.multiplier);
    let points = |f: &dyn Fn(&StageReport) -> f64| -> Vec<(f64, f64)> {
        stages
            .iter()
            .map(|s| (f64::from(s.multiplier), f(s)))
            .collect()
    };
    let c = &report.capacity;
    let marks: Vec<(String, f64)> = [
        ("safe", c.safe_multiplier),
        ("peak", c.peak_multiplier),
        ("breaking", c.breaking_multiplier),
    ]
    .into_iter()
    .filter_map(|(name, m)| m.map(|m| (format!("{name} {m}x"), f64::from(m))))
    .collect();
    let bounds = |names: &[&str], scale: f64| -> Vec<(String, f64)> {
        let Some(first) = report.stages.first() else {
            return Vec::new();
        };
        first
            .slo
            .iter()
            .filter(|r| r.route.is_none() && names.contains(&r.name.as_str()))
            .map(|r| (format!("{} bound", r.name), r.threshold * scale))
            .collect()
    };
    let chart = |title: &str, unit: &str, lines: &[Series], bounds: Vec<(String, f64)>| {
        let guides = charts::Guides {
            bounds,
            marks: marks.clone(),
        };
        charts::line_chart_with(title, XAxis::Multiplier, unit, lines, &guides)
    };
    [
        chart(
            "capacity: service latency against load",
            "ms",
            &[
                series("p95", P95, points(&|s| s.latency_ms.p95)),
                series("p99", P99, points(&|s| s.latency_ms.p99)),
            ],
            bounds(&["p95_ms", "p99_ms"], 1.0),
        ),
        chart(
            "capacity: throughput against load",
            "requests/s",
            &[series("requests/s", P50, points(&|s| s.throughput_rps))],
            Vec::new(),
        ),
        chart(
            "capacity: error rate against load",
            "% of requests",
            &[series(
                "error rate",
                P99,
                points(&|s| error_pct(s.errors, s.requests)),
            )],
            bounds(&["error_rate"], 100.0),
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The page of one report.
///
/// # Errors
/// A message when the page cannot be rendered.
pub fn report_page(report: &Report) -> Result<String, String> {
    let stages: Vec<StageView<'_>> = report
        .stages
        .iter()
        .map(|s| StageView {
            stage: s,
            error_pct: error_pct(s.errors, s.requests),
            charts: stage_charts(s),
            resource_charts: resource_charts(s),
            error_kinds: s.error_kinds.iter().filter(|(_, n)| **n > 0).collect(),
            header_rows: header_rows(s),
        })
        .collect();
    render(
        "report.html",
        context! {
            title => format!("tapedeck replay: {}", report.profile.name),
            report => Value::from(Serde(report)),
            capacity_rows => Value::from(Serde(capacity_rows(report))),
            capacity_charts => capacity_charts(report),
            warnings => warnings(report),
            stages => Value::from(Serde(stages)),
            min_abs_ms => MIN_LATENCY_DELTA_MS,
            min_windows => MIN_WINDOWS,
        },
    )
}

#[derive(Debug, Serialize)]
struct MetricView<'a> {
    metric: &'a str,
    base: f64,
    candidate: f64,
    delta: f64,
    delta_pct: f64,
    /// CSS class and text of the verdict.
    class: &'static str,
    verdict: String,
}

fn metric_view(m: &MetricDiff) -> MetricView<'_> {
    let (class, verdict) = match m.change {
        Change::Regression => ("regression", "regression"),
        Change::Improvement => ("improvement", "improvement"),
        Change::WithinNoise => ("noise", "within noise"),
        Change::TooFewRequests => ("noise", "too few requests to judge"),
        Change::Unchanged => ("", "–"),
    };
    let noise = match (m.change, m.p_value) {
        (Change::Regression | Change::Improvement | Change::WithinNoise, Some(p)) => {
            format!(" (p = {p:.3})")
        }
        (Change::Regression | Change::Improvement, None) => " (thresholds only)".to_string(),
        _ => String::new(),
    };
    MetricView {
        metric: &m.metric,
        base: m.base,
        candidate: m.candidate,
        delta: m.delta,
        delta_pct: m.delta_rel * 100.0,
        class,
        verdict: format!("{verdict}{noise}"),
    }
}

#[derive(Debug, Serialize)]
struct RouteView<'a> {
    route: &'a str,
    only_in: Option<&'a str>,
    requests: (u64, u64),
    p99: Option<MetricView<'a>>,
    changed: bool,
    regression: bool,
    /// The metrics' verdicts, once when they agree.
    verdict: String,
}

/// The verdict cell of a route: `p95_ms regression; p99_ms within noise`,
/// or one verdict when every judged metric has the same one.
fn route_verdict(metrics: &[MetricView<'_>]) -> String {
    let judged: Vec<&MetricView<'_>> = metrics.iter().filter(|m| !m.class.is_empty()).collect();
    match judged.as_slice() {
        [] => String::new(),
        [first, rest @ ..] if rest.iter().all(|m| m.verdict == first.verdict) => {
            first.verdict.clone()
        }
        _ => judged
            .iter()
            .map(|m| format!("{} {}", m.metric, m.verdict))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

#[derive(Debug, Serialize)]
struct StageDiffView<'a> {
    name: &'a str,
    only_in: Option<&'a str>,
    windows: (usize, usize),
    metrics: Vec<MetricView<'a>>,
    routes: Vec<RouteView<'a>>,
    charts: Vec<String>,
}

fn overlay_charts(name: &str, base: &StageReport, cand: &StageReport) -> Vec<String> {
    let p99 = |s: &StageReport| -> Vec<(f64, f64)> {
        s.timeline
            .iter()
            .filter(|w| w.requests > 0)
            .map(|w| (w.t_s, w.p99_ms))
            .collect()
    };
    let rps = |s: &StageReport| -> Vec<(f64, f64)> {
        s.timeline
            .iter()
            .map(|w| (w.t_s, w.requests as f64))
            .collect()
    };
    let overlay = |what: &str, x: XAxis, unit: &str, b: Vec<(f64, f64)>, c: Vec<(f64, f64)>| {
        charts::line_chart(
            &format!("{name}: {what}, both runs"),
            x,
            unit,
            &[series("base", BASE, b), series("candidate", P95, c)],
        )
    };
    [
        overlay(
            "latency distribution",
            XAxis::Nines,
            "ms",
            distribution(&base.hdr),
            distribution(&cand.hdr),
        ),
        overlay("p99 over time", XAxis::Seconds, "ms", p99(base), p99(cand)),
        overlay(
            "throughput",
            XAxis::Seconds,
            "requests/s",
            rps(base),
            rps(cand),
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The page of a comparison: both runs overlaid, the delta tables with
/// regressions highlighted.
///
/// # Errors
/// A message when the page cannot be rendered.
pub fn compare_page(
    base: &Report,
    candidate: &Report,
    diff: &ReportDiff,
) -> Result<String, String> {
    let stage = |r: &'_ Report, name: &str| r.stages.iter().find(|s| s.name == name).cloned();
    let stages: Vec<StageDiffView<'_>> =
        diff.stages
            .iter()
            .map(|s| {
                let charts = match (stage(base, &s.name), stage(candidate, &s.name)) {
                    (Some(b), Some(c)) => overlay_charts(&s.name, &b, &c),
                    _ => Vec::new(),
                };
                StageDiffView {
                    name: &s.name,
                    only_in: s.only_in.as_deref(),
                    windows: s.windows,
                    metrics: s.metrics.iter().map(metric_view).collect(),
                    routes: s
                        .routes
                        .iter()
                        .map(|r| RouteView {
                            route: &r.route,
                            only_in: r.only_in.as_deref(),
                            requests: r.requests,
                            p99: r
                                .metrics
                                .iter()
                                .find(|m| m.metric == "p99_ms")
                                .map(metric_view),
                            changed: r.metrics.iter().any(|m| {
                                matches!(m.change, Change::Regression | Change::Improvement)
                            }),
                            regression: r.metrics.iter().any(|m| m.change == Change::Regression),
                            verdict: route_verdict(
                                &r.metrics.iter().map(metric_view).collect::<Vec<_>>(),
                            ),
                        })
                        .collect(),
                    charts,
                }
            })
            .collect();
    render(
        "compare.html",
        context! {
            title => "tapedeck compare",
            diff => Value::from(Serde(diff)),
            base => Value::from(Serde(base)),
            candidate => Value::from(Serde(candidate)),
            stages => Value::from(Serde(stages)),
            min_abs_ms => MIN_LATENCY_DELTA_MS,
            min_windows => MIN_WINDOWS,
        },
    )
}
