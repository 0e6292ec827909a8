//! Text for the terminal: capture runs (`captures list`, `captures show`,
//! what `captures delete` and `captures prune` removed),
//! a report's stage table, per-stage details, capacity and warnings, and a
//! comparison. Input is the capture's summaries and the report model (with
//! the judgements of [`crate::report::verdict`]); output is a `String` the
//! binary prints. No I/O and no judgement of its own here.

use std::fmt::Write;

use super::table::{self, Column, StageCell, TERMINAL};
use crate::capture::{Removal, RouteCount, RunState, RunSummary, SessionSummary, SocketSummary};
use crate::report::model::{Report, StageReport};
use crate::report::verdict::warnings;
use crate::time::timestamp;

/// `12.3 s` from microseconds.
pub fn seconds(us: i64) -> String {
    format!("{:.1} s", us as f64 / 1e6)
}

/// The width of a route column: the longest route, at least the header's.
fn route_width<'a>(routes: impl Iterator<Item = &'a str>) -> usize {
    routes.map(str::len).max().unwrap_or(5).max(5)
}

/// The one-line summary of a finished run.
pub fn run_line(run: &RunSummary) -> String {
    counts_line(run, None)
}

/// The recorder's summary of its run: [`run_line`] with the exchanges
/// left out of the sample when the run sampled sessions.
pub fn recorded_line(run: &RunSummary, unsampled: u64) -> String {
    counts_line(run, Some(unsampled))
}

fn counts_line(run: &RunSummary, unsampled: Option<u64>) -> String {
    let took = run.stopped_at_us.map_or_else(
        || run.state.as_str().to_string(),
        |s| seconds(s - run.started_at_us),
    );
    let (sample, unsampled) = match (run.sample_fraction < 1.0, unsampled) {
        (false, _) => (String::new(), String::new()),
        (true, None) => (
            format!(" (a {} sample)", run.sample_fraction),
            String::new(),
        ),
        (true, Some(n)) => (
            format!(" (a {} sample)", run.sample_fraction),
            format!(", {n} unsampled"),
        ),
    };
    format!(
        "run {}: {} exchanges in {} sessions{sample}, {} dropped{unsampled}, {took}",
        run.id, run.exchanges, run.sessions, run.dropped
    )
}

/// The line of `captures delete` and `captures prune`: what left the
/// capture, in plain numbers (bytes unscaled, so scripts read them).
pub fn removal_line(removal: &Removal, capture: &std::path::Path) -> String {
    let ids: Vec<String> = removal.runs.iter().map(i64::to_string).collect();
    let runs = match ids.len() {
        0 => "0 runs".to_string(),
        1 => format!("1 run ({})", ids[0]),
        n => format!("{n} runs ({})", ids.join(",")),
    };
    let freed = match removal.bytes_freed {
        Some(bytes) => format!(", {bytes} bytes freed"),
        None if removal.runs.is_empty() => String::new(),
        None => " (the server's VACUUM reclaims their space)".to_string(),
    };
    format!(
        "removed {runs}: {} sessions, {} exchanges{freed} from {}",
        removal.sessions,
        removal.exchanges,
        capture.display()
    )
}

/// The table of `captures list`.
pub fn runs_table(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4}  {:<20}  {:>9}  {:>9}  {:>8}  {:>9}  upstream",
        "run", "started (UTC)", "duration", "exchanges", "sessions", "dropped"
    );
    for r in runs {
        let took = r.stopped_at_us.map_or_else(
            || r.state.as_str().to_string(),
            |s| seconds(s - r.started_at_us),
        );
        let _ = writeln!(
            out,
            "{:>4}  {:<20}  {:>9}  {:>9}  {:>8}  {:>9}  {}",
            r.id,
            timestamp(r.started_at_us),
            took,
            r.exchanges,
            r.sessions,
            r.dropped,
            r.upstream
        );
    }
    out
}

/// The text of `captures show`: the run, its busiest routes and sessions.
pub fn run_details(
    run: &RunSummary,
    sessions: &[SessionSummary],
    routes: &[RouteCount],
    sockets: &SocketSummary,
    max_rows: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", run_line(run));
    let state = match run.state {
        RunState::Recording => "recording (its recorder is running)",
        RunState::Stopped => "stopped cleanly",
        RunState::Interrupted => {
            "interrupted (its recorder is gone without closing the run; the rows committed before are counted above)"
        }
    };
    let _ = writeln!(out, "  state      {state}");
    let _ = writeln!(out, "  upstream   {}", run.upstream);
    let _ = writeln!(out, "  started    {}", timestamp(run.started_at_us));
    let _ = writeln!(out, "  redaction  {}", run.redaction);
    let _ = writeln!(out, "  body cap   {} bytes", run.max_body_bytes);
    let sample = match run.sample_fraction < 1.0 {
        true => format!("{} of the sessions (record --sample)", run.sample_fraction),
        false => "every session".to_string(),
    };
    let _ = writeln!(out, "  sampled    {sample}");
    if sockets.sockets > 0 {
        let _ = write!(
            out,
            "  websocket  {} sockets, {} frames stored",
            sockets.sockets, sockets.frames
        );
        match sockets.frames_dropped {
            0 => {
                let _ = writeln!(out);
            }
            n => {
                let _ = writeln!(
                    out,
                    ", {n} not stored (past --ws-max-frames/--ws-max-bytes, or the writer's queue was full)"
                );
            }
        }
    }
    let _ = writeln!(out);
    let width = route_width(routes.iter().map(|r| r.route.as_str()));
    let _ = writeln!(
        out,
        "  {:<width$}  {:>9}  {:>6}",
        "route", "exchanges", "errors"
    );
    for r in routes.iter().take(max_rows) {
        let _ = writeln!(
            out,
            "  {:<width$}  {:>9}  {:>6}",
            r.route, r.exchanges, r.errors
        );
    }
    if routes.len() > max_rows {
        let _ = writeln!(out, "  … {} more routes", routes.len() - max_rows);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:>7}  {:<6}  {:>9}  {:>6}  {:>9}  key",
        "session", "kind", "exchanges", "failed", "span"
    );
    for s in sessions.iter().take(max_rows) {
        let key: String = s.key.chars().take(48).collect();
        let _ = writeln!(
            out,
            "  {:>7}  {:<6}  {:>9}  {:>6}  {:>9}  {}",
            s.session_no,
            s.key_kind,
            s.exchanges,
            s.failed,
            seconds(s.last_end_us - s.first_offset_us),
            key
        );
    }
    if sessions.len() > max_rows {
        let _ = writeln!(out, "  … {} more sessions", sessions.len() - max_rows);
    }
    out
}

/// The columns of the terminal's stage table, in order.
fn stage_columns(report: &Report) -> Vec<Column<StageCell>> {
    use table::{CAPACITY, CORRECTED_P99, LATE, MULTIPLIER, SLO, SPEED, STAGE, VUS};
    [
        &[STAGE, MULTIPLIER, SPEED, VUS][..],
        &table::LOAD,
        &[CORRECTED_P99, LATE],
        table::resource_columns(report),
        &[CAPACITY, SLO],
    ]
    .concat()
}

/// The per-stage table of a report: one row per stage.
pub fn stages_table(report: &Report) -> String {
    let mut out = String::new();
    let columns = stage_columns(report);
    let rows = table::stage_rows(report, &columns, &TERMINAL);
    table::terminal(&mut out, &columns, rows);
    out
}

/// Routes of one stage, busiest first, with errors and the error kinds.
pub fn stage_details(s: &StageReport, max_rows: usize) -> String {
    let mut out = String::new();
    let kinds: Vec<String> = s
        .error_kinds
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "stage {}: {} errors{}, {} status mismatches, {} shape mismatches, {} late, {} skipped (truncated){}",
        s.name,
        s.errors,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        },
        s.status_mismatches,
        s.shape_mismatches,
        s.late_requests,
        s.truncated_skipped,
        if s.read_only_skipped > 0 {
            format!(", {} not sent (read-only)", s.read_only_skipped)
        } else {
            String::new()
        }
    );
    let width = route_width(s.routes.iter().map(|r| r.route.as_str()));
    let _ = writeln!(
        out,
        "  {:<width$} {:>8} {:>7} {:>8} {:>8} {:>8}",
        "route", "requests", "errors", "p50 ms", "p95 ms", "p99 ms"
    );
    for r in s.routes.iter().take(max_rows) {
        let _ = writeln!(
            out,
            "  {:<width$} {:>8} {:>7} {:>8.1} {:>8.1} {:>8.1}{}",
            r.route,
            r.requests,
            r.errors,
            r.latency_ms.p50,
            r.latency_ms.p95,
            r.latency_ms.p99,
            if r.long_poll { "  (long-poll)" } else { "" }
        );
    }
    if s.routes.len() > max_rows {
        let _ = writeln!(out, "  … {} more routes", s.routes.len() - max_rows);
    }
    for line in table::shares(&s.by_header) {
        let _ = writeln!(out, "  {line}");
    }
    for r in s.routes.iter().take(max_rows) {
        for line in table::shares(&r.by_header) {
            let _ = writeln!(out, "  {line}  ({})", r.route);
        }
    }
    for r in &s.routes {
        if let Some(ws) = &r.websocket {
            let codes: Vec<String> = ws
                .close_codes
                .iter()
                .map(|(code, n)| format!("{code}×{n}"))
                .collect();
            let _ = writeln!(
                out,
                "  websocket {}: {} sockets, connect p95 {:.1} ms, round trip p50 {:.1} / p95 {:.1} ms, frames {} sent / {} received, close {}",
                r.route,
                ws.sockets,
                ws.connect_ms.p95,
                ws.rtt_ms.p50,
                ws.rtt_ms.p95,
                ws.frames_sent,
                ws.frames_received,
                codes.join(", ")
            );
        }
        if let Some(st) = &r.stream {
            let _ = writeln!(
                out,
                "  stream {}: {} responses, ttfb p95 {:.1} ms, chunk gap p50 {:.1} / p95 {:.1} ms, total p95 {:.1} ms",
                r.route,
                st.responses,
                st.ttfb_ms.p95,
                st.gap_ms.p50,
                st.gap_ms.p95,
                st.total_ms.p95
            );
        }
    }
    out.push_str(&resources(s));
    out
}

/// A stage's observed resources, one line per series (min, mean, max in
/// human units), and the reads that failed; empty without observation.
pub fn resources(s: &StageReport) -> String {
    use crate::report::resources::human;
    let mut out = String::new();
    if !s.resources.is_empty() {
        let width = route_width(s.resources.keys().map(String::as_str)).max(8);
        let _ = writeln!(
            out,
            "  {:<width$} {:>12} {:>12} {:>12} {:>8}",
            "resource", "min", "mean", "max", "readings"
        );
        for (series, r) in &s.resources {
            let _ = writeln!(
                out,
                "  {:<width$} {:>12} {:>12} {:>12} {:>8}",
                series,
                human(series, r.min),
                human(series, r.mean),
                human(series, r.max),
                r.count
            );
        }
    }
    for (source, n) in &s.observe_failures {
        let _ = writeln!(out, "  observe {source}: {n} reads failed");
    }
    out
}

/// [`warnings`] for the terminal, one `warning:` line each.
pub fn warnings_text(report: &Report) -> String {
    warnings(report)
        .iter()
        .map(|w| format!("warning: {w}\n"))
        .collect()
}

/// The capacity verdict in sentences.
pub fn capacity(report: &Report) -> String {
    let c = &report.capacity;
    let mut out = format!("capacity: {}\n", table::capacity_summary(c, &TERMINAL));
    for n in &c.notes {
        let _ = writeln!(out, "  {n}");
    }
    out
}

/// The text of `compare`: per stage, the metrics side by side with deltas
/// and verdicts, then the routes that changed or exist on one side only.
pub fn comparison(d: &crate::report::compare::ReportDiff, max_routes: usize) -> String {
    use crate::report::compare::{Change, Noise};
    let t = &d.thresholds;
    let mut out = String::new();
    let _ = writeln!(out, "base      {}", d.base);
    let _ = writeln!(out, "candidate {}", d.candidate);
    let _ = writeln!(
        out,
        "thresholds: p95 +{:.0}%, p99 +{:.0}%, errors +{}pp; a latency change must also exceed 2 ms",
        t.p95 * 100.0,
        t.p99 * 100.0,
        t.errors_pp
    );
    for s in &d.stages {
        let _ = writeln!(out);
        if let Some(side) = &s.only_in {
            let _ = writeln!(out, "stage {}: only in the {side} report", s.name);
            continue;
        }
        let noise = if s
            .metrics
            .iter()
            .any(|m| m.noise == Noise::Estimated && m.metric.ends_with("_ms"))
        {
            format!(
                "noise from {} / {} one-second windows",
                s.windows.0, s.windows.1
            )
        } else {
            format!(
                "fewer than 5 windows on a side ({} / {}): no noise estimate, thresholds alone decide",
                s.windows.0, s.windows.1
            )
        };
        let _ = writeln!(out, "stage {} ({noise})", s.name);
        let rows = table::metric_rows(&s.metrics, &TERMINAL);
        table::terminal(&mut out, &table::METRICS, rows);
        let changed: Vec<_> = s
            .routes
            .iter()
            .filter(|r| {
                r.only_in.is_some() || r.metrics.iter().any(|m| m.change != Change::Unchanged)
            })
            .collect();
        for r in changed.iter().take(max_routes) {
            match &r.only_in {
                Some(side) => {
                    let _ = writeln!(out, "  route {}: only in the {side} report", r.route);
                }
                None => {
                    for m in r.metrics.iter().filter(|m| m.change != Change::Unchanged) {
                        let _ = writeln!(
                            out,
                            "  route {} {}: {:.1} -> {:.1} ms ({:+.1}%)  {}",
                            r.route,
                            m.metric,
                            m.base,
                            m.candidate,
                            m.delta_rel * 100.0,
                            table::change_cell(m, &TERMINAL)
                        );
                    }
                }
            }
        }
        if changed.len() > max_routes {
            let _ = writeln!(
                out,
                "  … {} more routes changed",
                changed.len() - max_routes
            );
        }
        // Stage-wide shares always; a route's only when it moved a point.
        let (stage_wide, by_route): (Vec<_>, Vec<_>) =
            s.header_shares.iter().partition(|h| h.scope == "stage");
        let moved = by_route.into_iter().filter(|h| h.delta_pp.abs() >= 1.0);
        for share in stage_wide.into_iter().chain(moved.take(max_routes)) {
            let _ = writeln!(out, "  {}", table::share_line(share));
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "verdict: {}",
        if d.regression {
            "regression"
        } else {
            "no regression"
        }
    );
    out
}
