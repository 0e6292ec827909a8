//! The judgements on a report's numbers: SLOs evaluated against a stage,
//! the overall verdict, the capacity verdict over the stages (and a
//! stage's role in it), which SLOs failed, and the warnings that say a
//! stage's load was not what it claims.
//!
//! Input is the serde model ([`super::model`]), as built by `accumulate`
//! or read from a file; output is model values (`SloResult`, `Verdict`,
//! `Capacity`) and plain sentences the renderers lay out. Nothing here
//! formats tables or writes output.

use super::histogram::LatencyHistogram;
use super::model::{
    Capacity, EffectResult, Percentiles, Report, RouteReport, SearchReport, SloResult, StageReport,
    Verdict,
};
use super::resources::{self, Unit};
use crate::profile::{SLO_NAMES, Slo, route_matcher};

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

/// Evaluates thresholds against a stage report: the stage-wide ones over
/// its SLO routes, each `[[slo.route]]` one over the pooled requests of
/// the routes its pattern matches. `latency_of` gives a route's service
/// latency histogram by name.
pub fn evaluate<'a>(
    slo: &Slo,
    r: &StageReport,
    latency_of: impl Fn(&str) -> Option<&'a LatencyHistogram>,
) -> Vec<SloResult> {
    let mut out = Vec::new();
    let stage = [
        r.latency_ms.p50,
        r.latency_ms.p95,
        r.latency_ms.p99,
        error_rate(r.errors, r.requests),
    ];
    push_checks(&mut out, slo.bounds(), stage, None);
    for rs in &slo.route {
        let matches = route_matcher(&rs.route);
        let matched: Vec<_> = r.routes.iter().filter(|x| matches(&x.route)).collect();
        let mut pooled = LatencyHistogram::default();
        for m in &matched {
            if let Some(h) = latency_of(&m.route) {
                pooled.add(h);
            }
        }
        let p = Percentiles::of(&pooled);
        let requests = matched.iter().map(|m| m.requests).sum();
        let errors = matched.iter().map(|m| m.errors).sum();
        let actual = [p.p50, p.p95, p.p99, error_rate(errors, requests)];
        push_checks(
            &mut out,
            rs.bounds(),
            actual,
            Some((&rs.route, matched.len() as u64)),
        );
    }
    out
}

/// Judges an effect's readings (`name`, `route`, `before`, `after`,
/// `error`): what its counted routes answered without error, against how
/// far its number rose.
pub fn judge_effect(mut e: EffectResult, routes: &[RouteReport]) -> EffectResult {
    let counted = route_matcher(&e.route);
    e.expected = routes
        .iter()
        .filter(|r| counted(&r.route))
        .map(|r| r.requests - r.errors)
        .sum();
    e.delta = e.before.zip(e.after).map(|(b, a)| a - b);
    e.pass = e.error.is_none() && e.delta.is_some_and(|d| d >= e.expected as f64);
    e
}

/// One result per threshold set; a route pattern that matched nothing
/// passes none.
fn push_checks(
    out: &mut Vec<SloResult>,
    bounds: [Option<f64>; 4],
    actual: [f64; 4],
    route: Option<(&str, u64)>,
) {
    for ((name, bound), actual) in SLO_NAMES.into_iter().zip(bounds).zip(actual) {
        if let Some(threshold) = bound {
            out.push(SloResult {
                name: name.to_string(),
                threshold,
                actual,
                pass: actual <= threshold && route.is_none_or(|(_, n)| n > 0),
                route: route.map(|(pattern, _)| pattern.to_string()),
                routes_matched: route.map(|(_, n)| n),
            });
        }
    }
}

/// errors / requests to four decimals; 0 without requests.
fn error_rate(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        return 0.0;
    }
    ((errors as f64 / requests as f64) * 10000.0).round() / 10000.0
}

/// The capacity verdict over stage reports, given the abort bound.
pub fn capacity(stages: &[StageReport], abort_error_rate: Option<f64>) -> Capacity {
    let mut c = Capacity::default();
    let has_slo = stages.iter().any(|s| !s.slo.is_empty());
    let bound = abort_error_rate.unwrap_or(0.05);
    let mut first_failure = true;
    for s in stages {
        let rate = if s.requests == 0 {
            0.0
        } else {
            s.errors as f64 / s.requests as f64
        };
        if has_slo && stage_passes(s) {
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
            c.notes.push(match (&failed.route, failed.routes_matched) {
                (Some(pattern), Some(0)) => format!(
                    "{}x: the route SLO {pattern:?} matches no route of the stage, so its {} \
                     is not met (routes are named as the stage tables print them)",
                    s.multiplier, failed.name
                ),
                _ => format!(
                    "{}x fails {}: {} against a bound of {}",
                    s.multiplier,
                    slo_label(failed),
                    failed.actual,
                    failed.threshold
                ),
            });
        }
        let mut failed: Vec<String> = s.slo.iter().filter(|r| !r.pass).map(slo_label).collect();
        if rate > bound {
            failed.push("the error-rate bound".into());
        }
        if !failed.is_empty() && std::mem::take(&mut first_failure) {
            c.notes.extend(resources_note(s, &failed));
        }
        for e in &s.effects {
            c.notes.push(match (&e.error, e.delta) {
                (None, Some(delta)) if e.pass => format!(
                    "{}x: {} rose by {delta} for {} counted writes: confirmed",
                    s.multiplier, e.name, e.expected
                ),
                (Some(error), _) => format!(
                    "{}x: effect {} could not be confirmed: {error}",
                    s.multiplier, e.name
                ),
                (None, delta) => {
                    let delta = delta.unwrap_or(0.0);
                    format!(
                        "{}x: writes confirmed {delta} of {} by {}: the backend dropped or \
                         merged {}",
                        s.multiplier,
                        e.expected,
                        e.name,
                        e.expected as f64 - delta
                    )
                }
            });
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

/// The highest CPU and resident memory read during `s`, which failed
/// `failed`: "10x fails p95_ms; CPU 1.96 cores (98 % of 2), RSS 1.1 GB".
/// The source is named when several were observed; `None` without
/// readings of either.
fn resources_note(s: &StageReport, failed: &[String]) -> Option<String> {
    let parts = highest_readings(s)?;
    Some(format!(
        "{}x fails {}; {parts}",
        s.multiplier,
        failed.join(", ")
    ))
}

/// "CPU 1.96 cores (98 % of 2), RSS 1.1 GB": the highest CPU and resident
/// memory read during `s`; `None` without readings of either.
fn highest_readings(s: &StageReport) -> Option<String> {
    // ` (pid 12)`, ` (db:9187)`: which source, when several share a kind.
    let named = |series: &str, several: bool| {
        let label = series.split_once('{').map(|(_, l)| l.trim_end_matches('}'));
        match label.and_then(|l| l.split_once('=')) {
            Some((key, value)) if several => {
                let value = value.trim_matches('"');
                match key {
                    "pid" => format!(" (pid {value})"),
                    _ => format!(" ({value})"),
                }
            }
            _ => String::new(),
        }
    };
    let count = |test: &dyn Fn(&str) -> bool| s.resources.keys().filter(|k| test(k)).count();
    let mut parts = Vec::new();
    if let Some((series, cpu)) = resources::highest(&s.resources, Unit::Cores) {
        let share = cpu
            .cores
            .filter(|n| *n > 0)
            .map(|n| format!(" ({:.0} % of {n})", 100.0 * cpu.max / f64::from(n)))
            .unwrap_or_default();
        let several = count(&|k| resources::unit(k) == Unit::Cores) > 1;
        parts.push(format!(
            "CPU {}{share}{}",
            resources::human(series, cpu.max),
            named(series, several)
        ));
    }
    if let Some((series, mem)) = resources::highest_rss(&s.resources) {
        parts.push(format!(
            "RSS {}{}",
            resources::human(series, mem.max),
            named(series, count(&resources::is_rss) > 1)
        ));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The verdict of a set of stages: aborted, or a fail when a stage is not
/// a valid measurement or failed an SLO.
pub fn overall(stages: &[StageReport], aborted: bool) -> Verdict {
    if aborted {
        Verdict::Aborted
    } else if stages.iter().all(stage_passes) {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

/// Whether a stage met every SLO and effect and is a valid measurement.
pub fn stage_passes(s: &StageReport) -> bool {
    s.invalid.is_none() && s.slo.iter().all(|r| r.pass) && s.effects.iter().all(|e| e.pass)
}

/// The verdict of a capacity search: `pass` when it found a multiplier
/// meeting every SLO (the stages above it failing is what a search is
/// for), `fail` when none did, `aborted` when it was stopped.
pub fn search_verdict(search: &SearchReport, aborted: bool) -> Verdict {
    if aborted {
        Verdict::Aborted
    } else if search.safe_multiplier.is_some() {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

/// The search's sentence, first among the capacity notes: what it found
/// and the steps it took.
pub fn search_note(search: &SearchReport, stages: &[StageReport]) -> String {
    let steps = |phase: &str| {
        let m: Vec<String> = search
            .steps
            .iter()
            .filter(|s| s.phase == phase)
            .map(|s| format!("{}x {}", s.multiplier, if s.pass { "pass" } else { "fail" }))
            .collect();
        m.join(", ")
    };
    let mut path = format!("doubling {}", steps("doubling"));
    let bisection = steps("bisection");
    if !bisection.is_empty() {
        path.push_str(&format!("; bisection {bisection}"));
    }
    let why = |m: u32| {
        let failed = stages.iter().find(|s| s.multiplier == m)?;
        let mut reasons: Vec<String> = failed
            .slo
            .iter()
            .filter(|r| !r.pass)
            .map(|r| format!("{} {} against {}", slo_label(r), r.actual, r.threshold))
            .collect();
        reasons.extend(
            failed
                .effects
                .iter()
                .filter(|e| !e.pass)
                .map(|e| format!("effect {}", e.name)),
        );
        reasons.extend(failed.invalid.clone());
        Some(reasons.join(", "))
    };
    let found = match (search.safe_multiplier, search.failing_multiplier) {
        (Some(safe), Some(failing)) => format!(
            "search: {safe}x is the highest multiplier that met every SLO; {failing}x failed ({})",
            why(failing).unwrap_or_default()
        ),
        (Some(safe), None) => format!(
            "search: every step met every SLO up to the maximum, {safe}x; raise \
             --max-multiplier to find where it breaks"
        ),
        (None, Some(failing)) => format!(
            "search: no multiplier met every SLO; {failing}x failed ({})",
            why(failing).unwrap_or_default()
        ),
        (None, None) => "search: stopped before its first step finished".to_string(),
    };
    let stopped = if search.outcome == "interrupted" {
        " (stopped early)"
    } else {
        ""
    };
    // What the backend used at the multiplier it can take.
    let at_safe = search
        .safe_multiplier
        .and_then(|m| Some((m, stages.iter().find(|s| s.multiplier == m)?)))
        .and_then(|(m, s)| Some(format!("; at {m}x: {}", highest_readings(s)?)))
        .unwrap_or_default();
    format!(
        "{found}{stopped}{at_safe}; {} steps: {path}",
        search.steps.len()
    )
}

/// Error kinds that say the request never got a whole answer from the
/// target: it was not measured, it failed to be.
const TRANSPORT: [&str; 4] = ["connect", "reset", "timeout", "tls"];

/// Marks each stage that is not a valid measurement, with a sentence
/// saying why: it sent nothing; or its transport errors, or its requests
/// not sent, are more than `max_invalid` of its requests. Such a stage
/// fails the verdict whether SLOs were set or not.
pub fn judge_validity(stages: &mut [StageReport], max_invalid: f64) {
    let pct = |n: u64, of: u64| 100.0 * n as f64 / of.max(1) as f64;
    let bound = 100.0 * max_invalid;
    for s in stages {
        let unsent = s.dependent_skipped + s.truncated_skipped;
        let planned = s.requests + unsent;
        let transport: Vec<(&str, u64)> = TRANSPORT
            .iter()
            .filter_map(|k| s.error_kinds.get(*k).map(|n| (*k, *n)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let failed: u64 = transport.iter().map(|(_, n)| n).sum();
        s.invalid = if s.requests == 0 {
            Some(match unsent {
                0 => "it sent no request, so nothing was measured (is the capture's run empty \
                      for this stage, or were its sessions unreadable?)"
                    .to_string(),
                _ => format!("it sent no request: all {unsent} planned were not sent"),
            })
        } else if pct(failed, s.requests) > bound {
            let kinds: Vec<String> = transport.iter().map(|(k, n)| format!("{k} {n}")).collect();
            Some(format!(
                "{failed} of its {} requests ({:.1} %) got no answer ({}), over the {bound:.1} % \
                 bound (--max-invalid): the target was unreachable or failing, not measured",
                s.requests,
                pct(failed, s.requests),
                kinds.join(", ")
            ))
        } else if pct(unsent, planned) > bound {
            Some(format!(
                "{unsent} of its {planned} planned requests ({:.1} %) were not sent ({} needed a \
                 value from a failed response, {} had a truncated recorded body), over the \
                 {bound:.1} % bound (--max-invalid)",
                pct(unsent, planned),
                s.dependent_skipped,
                s.truncated_skipped
            ))
        } else {
            None
        };
    }
}

/// The names of the SLOs a stage failed; `None` when none applied.
pub(crate) fn failed_slos(s: &StageReport) -> Option<Vec<String>> {
    (!s.slo.is_empty()).then(|| s.slo.iter().filter(|r| !r.pass).map(slo_label).collect())
}

/// A threshold's name, with its route pattern for a route SLO:
/// `p95_ms` or `p95_ms of GET /api/conversations/*/messages`.
pub(crate) fn slo_label(r: &SloResult) -> String {
    match &r.route {
        Some(pattern) => format!("{} of {pattern}", r.name),
        None => r.name.clone(),
    }
}

/// What makes a stage's load not what it claims: sends a deduplicating
/// backend likely swallowed, requests not sent, recorded values that went
/// out as recorded. One line each; none for a faithful replay.
pub fn warnings(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = &report.capacity.partial {
        out.push(format!("partial report: {p}"));
    }
    for s in &report.stages {
        if let Some(why) = &s.invalid {
            out.push(format!("{}: not a valid measurement: {why}", s.name));
        }
        for r in s.routes.iter().filter(|r| r.suspected_dedup > 0) {
            out.push(format!(
                "{}: {} of {} sends of {} got back a server-made id that another copy of the same \
                 recorded write already got: the backend likely deduplicated them, so that load \
                 never happened (a resent idempotency key or client id? see `replay --explain`)",
                s.name, r.suspected_dedup, r.requests, r.route
            ));
        }
        for r in s.routes.iter().filter(|r| r.shape_mismatches > 0) {
            out.push(format!(
                "{}: {} of {} answers of {} succeeded but lacked what the recorded answer had \
                 (a key, a type, a list's items): 200 but wrong, likely another user's or an \
                 empty view",
                s.name, r.shape_mismatches, r.requests, r.route
            ));
        }
        for r in s.routes.iter().filter(|r| r.conflicting_values > 0) {
            out.push(format!(
                "{}: {} values in answers of {} would have mapped a recorded value to a second \
                 live one (lists the replay could not pair by identity); the first mapping was \
                 kept (see `replay --explain`, or a profile rule for the list's id)",
                s.name, r.conflicting_values, r.route
            ));
        }
        if s.dependent_skipped > 0 {
            out.push(format!(
                "{}: {} requests not sent: they needed a value from a response that failed",
                s.name, s.dependent_skipped
            ));
            for d in &s.dependent_skips {
                out.push(format!(
                    "{}: {} × {} waited for {} from the {} answer, which failed or was not sent",
                    s.name, d.count, d.route, d.waited_for, d.from
                ));
            }
        }
        for (source, n) in &s.observe_failures {
            out.push(format!(
                "{}: {n} reads of the observed {source} failed; its resources come from the \
                 reads that succeeded",
                s.name
            ));
        }
        if s.unresolved_values > 0 {
            out.push(format!(
                "{}: {} recorded ids, tokens or redaction markers had no live value and went out \
                 as recorded (`replay --explain` names them; a redacted password needs \
                 --credentials-file)",
                s.name, s.unresolved_values
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::profile::{RouteSlo, Slo};
    use crate::report::accumulate::StageData;

    /// A stage with `n` requests of each route, the i-th taking `ms[i]`.
    fn stage(routes: &[(&str, u64, u64)], slo: Slo) -> StageData {
        let mut d = StageData {
            name: "1x".into(),
            multiplier: 1,
            slo,
            ..StageData::default()
        };
        for &(route, n, ms) in routes {
            let r = d.routes.entry(route.into()).or_default();
            for _ in 0..n {
                r.latency.record(Duration::from_millis(ms));
                r.requests += 1;
                d.latency.record(Duration::from_millis(ms));
                d.requests += 1;
            }
        }
        d
    }

    #[test]
    fn a_route_slo_pools_the_routes_its_pattern_matches() {
        let slo = Slo {
            route: vec![RouteSlo {
                p95_ms: Some(30.0),
                ..RouteSlo::new("GET /a/*")
            }],
            ..Slo::default()
        };
        // 90 fast requests on one matched route, 10 slow on the other:
        // pooled, p95 is slow; each alone would not say so.
        let d = stage(
            &[
                ("GET /a/{id}", 90, 10),
                ("GET /a/{id}/b", 10, 50),
                ("GET /c", 100, 80),
            ],
            slo,
        );
        let r = d.report();
        let [check] = &r.slo[..] else {
            panic!("one check: {:?}", r.slo)
        };
        assert_eq!(check.route.as_deref(), Some("GET /a/*"));
        assert_eq!(check.routes_matched, Some(2));
        assert!(!check.pass && check.actual >= 49.0, "{check:?}");
    }

    #[test]
    fn a_route_slo_that_matches_no_route_is_not_a_pass() {
        let slo = Slo {
            route: vec![RouteSlo {
                p95_ms: Some(1000.0),
                ..RouteSlo::new("GET /typo/*")
            }],
            ..Slo::default()
        };
        let r = stage(&[("GET /a/{id}", 10, 1)], slo).report();
        assert_eq!(r.slo[0].routes_matched, Some(0));
        assert!(!r.slo[0].pass);
        assert_eq!(
            super::overall(std::slice::from_ref(&r), false),
            super::Verdict::Fail
        );
        let c = super::capacity(std::slice::from_ref(&r), None);
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("\"GET /typo/*\" matches no route")),
            "{:?}",
            c.notes
        );
    }
}

#[cfg(test)]
mod effect_tests {
    use crate::report::accumulate::{RouteData, StageData};
    use crate::report::model::EffectResult;

    fn shard(before: f64, after: f64, sends: u64, failed: u64) -> StageData {
        let mut d = StageData {
            name: "2x".into(),
            multiplier: 2,
            effects: vec![EffectResult {
                name: "messages".into(),
                route: "POST /rooms/*/messages".into(),
                before: Some(before),
                after: Some(after),
                ..EffectResult::default()
            }],
            ..StageData::default()
        };
        d.routes.insert(
            "POST /rooms/{id}/messages".into(),
            RouteData {
                requests: sends,
                errors: failed,
                ..RouteData::default()
            },
        );
        d
    }

    #[test]
    fn shards_merge_an_effect_from_the_first_reading_to_the_last() {
        // Two shards running together each see the other's writes.
        let mut merged = shard(100.0, 130.0, 20, 2);
        merged.add(&shard(104.0, 134.0, 16, 0));
        let e = &merged.report().effects[0];
        assert_eq!(
            (e.before, e.after, e.delta),
            (Some(100.0), Some(134.0), Some(34.0))
        );
        assert_eq!((e.expected, e.pass), (34, true));
        let mut short = shard(100.0, 120.0, 20, 0);
        let e = &short.report().effects[0];
        assert_eq!((e.delta, e.expected, e.pass), (Some(20.0), 20, true));
        short
            .routes
            .get_mut("POST /rooms/{id}/messages")
            .expect("route")
            .requests = 21;
        assert!(!short.report().effects[0].pass, "one write not confirmed");
    }
}

#[cfg(test)]
mod resource_tests {
    use crate::profile::Slo;
    use crate::report::accumulate::{RouteData, StageData};
    use crate::report::histogram::LatencyHistogram;
    use crate::report::resources::Reading;

    /// A stage at `multiplier` whose 10 requests took `ms` each, with a
    /// p95 bound of 100 ms, and these readings.
    fn stage(multiplier: u32, ms: u64, readings: &[(&str, f64, Option<u32>)]) -> StageData {
        let mut latency = LatencyHistogram::default();
        for _ in 0..10 {
            latency.record(std::time::Duration::from_millis(ms));
        }
        let mut d = StageData {
            name: format!("{multiplier}x"),
            multiplier,
            requests: 10,
            latency: latency.clone(),
            slo: Slo {
                p95_ms: Some(100.0),
                ..Slo::default()
            },
            ..StageData::default()
        };
        d.routes.insert(
            "GET /".into(),
            RouteData {
                requests: 10,
                latency,
                ..RouteData::default()
            },
        );
        let readings: Vec<Reading> = readings
            .iter()
            .map(|(series, value, cores)| Reading {
                at_us: 0,
                series: (*series).into(),
                value: *value,
                cores: *cores,
            })
            .collect();
        d.observe(&readings, &Default::default());
        d
    }

    #[test]
    fn the_first_failing_stage_names_its_highest_cpu_and_memory() {
        let stages = [
            stage(1, 10, &[("process_cpu_cores{pid=\"9\"}", 0.4, Some(2))]),
            stage(
                10,
                500,
                &[
                    ("process_cpu_cores{pid=\"9\"}", 1.2, Some(2)),
                    ("process_cpu_cores{pid=\"9\"}", 1.96, Some(2)),
                    ("process_resident_memory_bytes{pid=\"9\"}", 1.1e9, None),
                ],
            ),
            stage(20, 900, &[("process_cpu_cores{pid=\"9\"}", 2.0, Some(2))]),
        ]
        .map(|s| s.report());
        let c = super::capacity(&stages, None);
        let notes: Vec<&String> = c.notes.iter().filter(|n| n.contains("CPU")).collect();
        assert_eq!(
            notes,
            ["10x fails p95_ms; CPU 1.96 cores (98 % of 2), RSS 1.1 GB"],
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn several_sources_are_named_and_scraped_cpu_has_no_share() {
        let s = stage(
            5,
            500,
            &[
                ("process_cpu_cores{pid=\"9\"}", 0.5, Some(4)),
                ("process_cpu_cores{source=\"db:9187\"}", 3.0, None),
                (
                    "process_resident_memory_bytes{source=\"db:9187\"}",
                    2.5e8,
                    None,
                ),
            ],
        )
        .report();
        let c = super::capacity(std::slice::from_ref(&s), None);
        assert!(
            c.notes
                .iter()
                .any(|n| n == "5x fails p95_ms; CPU 3.00 cores (db:9187), RSS 250 MB"),
            "{:?}",
            c.notes
        );
        let failures = [("db:9187".to_string(), 3)].into_iter().collect();
        let mut d = stage(5, 10, &[]);
        d.observe(&[], &failures);
        let report = crate::report::model::test_report(vec![d.report()]);
        assert!(
            super::warnings(&report)
                .iter()
                .any(|w| w.contains("3 reads of the observed db:9187 failed")),
            "{:?}",
            super::warnings(&report)
        );
    }
}
