//! Markdown for a pull request: a report's stage table with the capacity
//! verdict and warnings, and a comparison's metric tables. Input is the
//! report model (with the judgements of [`crate::report::verdict`]) or a
//! [`ReportDiff`]; output is a `String` the binary prints. No I/O here.

use std::fmt::Write;

use crate::report::compare::ReportDiff;
use crate::report::model::Report;
use crate::report::verdict::{failed_slos, warnings};

/// A report as Markdown for a pull request: the stage table, the capacity
/// verdict and the error kinds.
pub fn report_markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### tapedeck replay: {} against `{}` — {}\n",
        report.profile.name, report.target, report.verdict
    );
    let _ = writeln!(
        out,
        "| stage | multiplier | requests | errors | req/s | p50 ms | p95 ms | p99 ms | SLO | capacity |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for s in &report.stages {
        let slo = match failed_slos(s) {
            None => "–".to_string(),
            Some(failed) if failed.is_empty() => "pass".to_string(),
            Some(failed) => format!("**fail** ({})", failed.join(", ")),
        };
        let _ = writeln!(
            out,
            "| {} | {}x | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            s.name,
            s.multiplier,
            s.requests,
            s.errors,
            s.throughput_rps,
            s.latency_ms.p50,
            s.latency_ms.p95,
            s.latency_ms.p99,
            slo,
            report.capacity.role(s.multiplier).unwrap_or("–")
        );
    }
    let c = &report.capacity;
    let m = |v: Option<u32>| v.map_or_else(|| "–".to_string(), |m| format!("{m}x"));
    let _ = writeln!(
        out,
        "\n**Capacity:** safe {}, peak {}, breaking {}.",
        m(c.safe_multiplier),
        m(c.peak_multiplier),
        m(c.breaking_multiplier)
    );
    for n in &c.notes {
        let _ = writeln!(out, "- {n}");
    }
    for w in warnings(report) {
        let _ = writeln!(out, "- **Warning:** {w}");
    }
    out
}

/// A comparison as Markdown for a pull request.
pub fn comparison_markdown(d: &ReportDiff) -> String {
    use crate::report::compare::Change;
    let verdict = |c: Change| match c {
        Change::Regression => "**regression**",
        Change::Improvement => "improvement",
        Change::WithinNoise => "within noise",
        Change::TooFewRequests => "too few requests to judge",
        Change::Unchanged => "–",
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### tapedeck compare: {}\n",
        if d.regression {
            "regression"
        } else {
            "no regression"
        }
    );
    let _ = writeln!(out, "Base: {}  \nCandidate: {}\n", d.base, d.candidate);
    for s in &d.stages {
        if let Some(side) = &s.only_in {
            let _ = writeln!(out, "Stage **{}**: only in the {side} report.\n", s.name);
            continue;
        }
        let _ = writeln!(
            out,
            "Stage **{}** ({} / {} one-second windows)\n",
            s.name, s.windows.0, s.windows.1
        );
        let _ = writeln!(
            out,
            "| metric | base | candidate | delta | change | verdict |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
        for m in &s.metrics {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} | {:+.1} | {:+.1}% | {} |",
                m.metric,
                m.base,
                m.candidate,
                m.delta,
                m.delta_rel * 100.0,
                verdict(m.change)
            );
        }
        let regressed: Vec<String> = s
            .routes
            .iter()
            .filter(|r| r.metrics.iter().any(|m| m.change == Change::Regression))
            .map(|r| format!("`{}`", r.route))
            .collect();
        if !regressed.is_empty() {
            let _ = writeln!(out, "\nRoutes that regressed: {}.", regressed.join(", "));
        }
        let _ = writeln!(out);
    }
    out
}
