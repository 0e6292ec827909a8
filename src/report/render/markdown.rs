//! Markdown for a pull request: a report's stage table with the capacity
//! verdict, warnings and observed resources, and a comparison's metric tables. Input is the
//! report model (with the judgements of [`crate::report::verdict`]) or a
//! [`ReportDiff`]; output is a `String` the binary prints. No I/O here.

use std::fmt::Write;

use super::table::{self, Column, MARKDOWN, StageCell};
use crate::report::compare::ReportDiff;
use crate::report::model::Report;
use crate::report::verdict::warnings;

/// The columns of the Markdown stage table, in order.
fn stage_columns(report: &Report) -> Vec<Column<StageCell>> {
    use table::{CAPACITY, MULTIPLIER, SLO, STAGE};
    [
        &[STAGE, MULTIPLIER][..],
        &table::LOAD,
        table::resource_columns(report),
        &[SLO, CAPACITY],
    ]
    .concat()
}

/// A report as Markdown for a pull request: the stage table, the capacity
/// verdict and the error kinds.
pub fn report_markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### tapedeck replay: {} against `{}` — {}\n",
        report.profile.name, report.target, report.verdict
    );
    let columns = stage_columns(report);
    let rows = table::stage_rows(report, &columns, &MARKDOWN);
    table::markdown(&mut out, &columns, rows);
    let c = &report.capacity;
    let _ = writeln!(
        out,
        "\n**Capacity:** {}.",
        table::capacity_summary(c, &MARKDOWN)
    );
    for n in &c.notes {
        let _ = writeln!(out, "- {n}");
    }
    for s in &report.stages {
        for line in table::shares(&s.by_header) {
            let _ = writeln!(out, "- {}: {line}", s.name);
        }
    }
    for w in warnings(report) {
        let _ = writeln!(out, "- **Warning:** {w}");
    }
    resources(&mut out, report);
    out
}

/// The observed resources of every stage, one row per stage and series;
/// nothing without observation.
fn resources(out: &mut String, report: &Report) {
    use crate::report::resources::human;
    if report.stages.iter().all(|s| s.resources.is_empty()) {
        return;
    }
    let _ = writeln!(
        out,
        "\n**Resources:**\n\n| Stage | Series | Min | Mean | Max |\n|---|---|--:|--:|--:|"
    );
    for s in &report.stages {
        for (series, r) in &s.resources {
            let _ = writeln!(
                out,
                "| {} | `{series}` | {} | {} | {} |",
                s.name,
                human(series, r.min),
                human(series, r.mean),
                human(series, r.max)
            );
        }
    }
}

/// A comparison as Markdown for a pull request.
pub fn comparison_markdown(d: &ReportDiff) -> String {
    use crate::report::compare::Change;
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
        let rows = table::metric_rows(&s.metrics, &MARKDOWN);
        table::markdown(&mut out, &table::METRICS, rows);
        let regressed: Vec<String> = s
            .routes
            .iter()
            .filter(|r| r.metrics.iter().any(|m| m.change == Change::Regression))
            .map(|r| format!("`{}`", r.route))
            .collect();
        if !regressed.is_empty() {
            let _ = writeln!(out, "\nRoutes that regressed: {}.", regressed.join(", "));
        }
        if !s.header_shares.is_empty() {
            let _ = writeln!(out);
        }
        for share in &s.header_shares {
            let _ = writeln!(out, "- {}", table::share_line(share));
        }
        let _ = writeln!(out);
    }
    out
}
