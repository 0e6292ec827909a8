//! What the terminal and Markdown both show (the HTML capacity table
//! borrows the SLO cell), defined once: the tables — a
//! report's stages and a comparison's metrics — column by column (headers,
//! alignment, terminal width, cell), and the cells and sentences both use
//! (SLO result, verdict of a change, capacity multipliers). [`terminal`]
//! pads the cells into columns, [`markdown`] puts them between pipes; each
//! renderer picks the columns it shows and their order. The words that
//! differ between the outputs (an empty cell, a failure, a regression) are
//! a [`Style`].
//!
//! Input is report-model values; output is text appended to a `String`.
//! The judgements come from [`crate::report::verdict`] and
//! [`crate::report::compare`]; nothing is decided here.

use std::fmt::Write;

use crate::report::compare::{Change, MetricDiff};
use crate::report::model::{Capacity, Report, ResourceStat, StageReport};
use crate::report::resources::{self, Unit};
use crate::report::verdict::failed_slos;

/// How one output words what a cell may hold.
pub(super) struct Style {
    /// An empty cell.
    pub none: &'static str,
    /// Before the names of the SLOs a stage failed.
    pub fail: &'static str,
    /// A regression verdict.
    pub regression: &'static str,
    /// Whether a verdict shows the p-value of its noise test.
    pub p_values: bool,
}

/// The terminal's words.
pub(super) const TERMINAL: Style = Style {
    none: "-",
    fail: "FAIL",
    regression: "REGRESSION",
    p_values: true,
};

/// Markdown's words.
pub(super) const MARKDOWN: Style = Style {
    none: "–",
    fail: "**fail**",
    regression: "**regression**",
    p_values: false,
};

/// The HTML capacity table's words (its comparison verdicts carry CSS
/// classes and are worded by the page).
pub(super) const HTML: Style = Style {
    none: "–",
    fail: "fail",
    regression: "regression",
    p_values: false,
};

/// One column: `Cell` is the function that fills it from a row.
#[derive(Clone, Copy)]
pub(super) struct Column<Cell> {
    /// Header in the terminal.
    terminal: &'static str,
    /// Header in Markdown.
    markdown: &'static str,
    /// Numbers align right, text left.
    right: bool,
    /// Terminal width; 0 for the unpadded last column.
    width: usize,
    /// Spaces before the column in the terminal (the first column's gap
    /// indents the table).
    gap: usize,
    /// The cell's text.
    cell: Cell,
}

/// Fills a cell of the stage table from the report and one of its stages.
pub(super) type StageCell = fn(&Report, &StageReport, &Style) -> String;

/// Fills a cell of a comparison's metric table.
pub(super) type MetricCell = fn(&MetricDiff, &Style) -> String;

/// Appends the header and one padded line per row.
pub(super) fn terminal<C>(
    out: &mut String,
    columns: &[Column<C>],
    rows: impl IntoIterator<Item = Vec<String>>,
) {
    let header = columns.iter().map(|c| c.terminal.to_string()).collect();
    for cells in std::iter::once(header).chain(rows) {
        for (c, text) in columns.iter().zip(&cells) {
            let (gap, width) = (c.gap, c.width);
            let _ = if c.right {
                write!(out, "{:gap$}{text:>width$}", "")
            } else {
                write!(out, "{:gap$}{text:<width$}", "")
            };
        }
        out.push('\n');
    }
}

/// Appends the header, the alignment line and one line per row.
pub(super) fn markdown<C>(
    out: &mut String,
    columns: &[Column<C>],
    rows: impl IntoIterator<Item = Vec<String>>,
) {
    let line = |out: &mut String, cells: &[String]| {
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    };
    let header: Vec<String> = columns.iter().map(|c| c.markdown.to_string()).collect();
    line(out, &header);
    out.push('|');
    for c in columns {
        out.push_str(if c.right { "---:|" } else { "---|" });
    }
    out.push('\n');
    for cells in rows {
        line(out, &cells);
    }
}

/// The cells of the stage table, a row per stage.
pub(super) fn stage_rows<'a>(
    report: &'a Report,
    columns: &'a [Column<StageCell>],
    style: &'a Style,
) -> impl Iterator<Item = Vec<String>> + 'a {
    report
        .stages
        .iter()
        .map(move |s| columns.iter().map(|c| (c.cell)(report, s, style)).collect())
}

/// The cells of a comparison's metric table, a row per metric.
pub(super) fn metric_rows<'a>(
    metrics: &'a [MetricDiff],
    style: &'a Style,
) -> impl Iterator<Item = Vec<String>> + 'a {
    metrics
        .iter()
        .map(move |m| METRICS.iter().map(|c| (c.cell)(m, style)).collect())
}

/// Whether a stage met its SLOs: `pass`, the failed ones, or none set.
pub(super) fn slo_cell(s: &StageReport, style: &Style) -> String {
    match failed_slos(s) {
        None => style.none.to_string(),
        Some(failed) if failed.is_empty() => "pass".to_string(),
        Some(failed) => format!("{} ({})", style.fail, failed.join(", ")),
    }
}

/// The capacity verdict's multipliers: `safe 5x, peak 5x, breaking 10x`.
pub(super) fn capacity_summary(c: &Capacity, style: &Style) -> String {
    let m = |v: Option<u32>| v.map_or_else(|| style.none.to_string(), |m| format!("{m}x"));
    format!(
        "safe {}, peak {}, breaking {}",
        m(c.safe_multiplier),
        m(c.peak_multiplier),
        m(c.breaking_multiplier)
    )
}

/// A compared metric's verdict.
pub(super) fn change_cell(m: &MetricDiff, style: &Style) -> String {
    let word = match m.change {
        Change::Regression => style.regression,
        Change::Improvement => "improvement",
        Change::WithinNoise => "within noise",
        Change::TooFewRequests => return "too few requests to judge".to_string(),
        Change::Unchanged => return style.none.to_string(),
    };
    match m.p_value.filter(|_| style.p_values) {
        Some(p) => format!("{word} (p={p:.3})"),
        None => word.to_string(),
    }
}

const fn number<C>(header: &'static str, width: usize, cell: C) -> Column<C> {
    Column {
        terminal: header,
        markdown: header,
        right: true,
        width,
        gap: 1,
        cell,
    }
}

/// Stage name.
pub(super) const STAGE: Column<StageCell> = Column {
    terminal: "stage",
    markdown: "stage",
    right: false,
    width: 10,
    gap: 0,
    cell: |_, s, _| s.name.clone(),
};

/// Worlds played, `5x`.
pub(super) const MULTIPLIER: Column<StageCell> = Column {
    terminal: "mult",
    markdown: "multiplier",
    ..number("", 5, |_, s, _| format!("{}x", s.multiplier))
};

/// Time compression.
pub(super) const SPEED: Column<StageCell> = number("speed", 5, |_, s, _| s.speed.to_string());

/// Virtual users.
pub(super) const VUS: Column<StageCell> = number("vus", 5, |_, s, _| s.vus.to_string());

/// Requests sent.
pub(super) const REQUESTS: Column<StageCell> =
    number("requests", 8, |_, s, _| s.requests.to_string());

/// Errors.
pub(super) const ERRORS: Column<StageCell> = number("errors", 7, |_, s, _| s.errors.to_string());

/// Requests per second.
pub(super) const RPS: Column<StageCell> = Column {
    terminal: "rps",
    markdown: "req/s",
    ..number("", 8, |_, s, _| format!("{:.1}", s.throughput_rps))
};

/// Median service latency.
pub(super) const P50: Column<StageCell> =
    number("p50 ms", 8, |_, s, _| format!("{:.1}", s.latency_ms.p50));

/// 95th percentile service latency.
pub(super) const P95: Column<StageCell> =
    number("p95 ms", 8, |_, s, _| format!("{:.1}", s.latency_ms.p95));

/// 99th percentile service latency.
pub(super) const P99: Column<StageCell> =
    number("p99 ms", 8, |_, s, _| format!("{:.1}", s.latency_ms.p99));

/// Highest observed CPU of the stage (`--observe`, `--observe-pid`).
pub(super) const CPU: Column<StageCell> = number("cpu max", 11, |_, s, style| {
    highest(resources::highest(&s.resources, Unit::Cores), style)
});

/// Highest observed resident memory of the stage.
pub(super) const RSS: Column<StageCell> = number("rss max", 9, |_, s, style| {
    highest(resources::highest_rss(&s.resources), style)
});

/// A stage's highest reading of a series, for people.
fn highest(found: Option<(&str, &ResourceStat)>, style: &Style) -> String {
    found.map_or_else(
        || style.none.to_string(),
        |(series, stat)| resources::human(series, stat.max),
    )
}

/// The resource columns, when a stage of `report` has readings.
pub(super) fn resource_columns(report: &Report) -> &'static [Column<StageCell>] {
    if report.stages.iter().any(|s| !s.resources.is_empty()) {
        &[CPU, RSS]
    } else {
        &[]
    }
}

/// 99th percentile from the planned send.
pub(super) const CORRECTED_P99: Column<StageCell> = number("corr p99", 9, |_, s, _| {
    format!("{:.1}", s.corrected_latency_ms.p99)
});

/// Late sends.
pub(super) const LATE: Column<StageCell> = number("late", 6, |_, s, _| s.late_requests.to_string());

/// The load a stage carried and its service latency: the columns both
/// outputs show between a stage's multiplier and its verdicts.
pub(super) const LOAD: [Column<StageCell>; 6] = [REQUESTS, ERRORS, RPS, P50, P95, P99];

/// The stage's role in the capacity verdict.
pub(super) const CAPACITY: Column<StageCell> = Column {
    terminal: "capacity",
    markdown: "capacity",
    right: false,
    width: 8,
    gap: 2,
    cell: |r, s, style| {
        r.capacity
            .role(s.multiplier)
            .unwrap_or(style.none)
            .to_string()
    },
};

/// The SLO result.
pub(super) const SLO: Column<StageCell> = Column {
    terminal: "slo",
    markdown: "SLO",
    right: false,
    width: 0,
    gap: 2,
    cell: |_, s, style| slo_cell(s, style),
};

/// A comparison's metric table, the same columns in both outputs.
pub(super) const METRICS: [Column<MetricCell>; 6] = [
    Column {
        terminal: "metric",
        markdown: "metric",
        right: false,
        width: 16,
        gap: 2,
        cell: |m, _| m.metric.clone(),
    },
    number("base", 10, |m, _| format!("{:.1}", m.base)),
    number("candidate", 10, |m, _| format!("{:.1}", m.candidate)),
    number("delta", 10, |m, _| format!("{:+.1}", m.delta)),
    Column {
        terminal: "rel",
        markdown: "change",
        ..number("", 8, |m, _| format!("{:+.1}%", m.delta_rel * 100.0))
    },
    Column {
        terminal: "verdict",
        markdown: "verdict",
        right: false,
        width: 0,
        gap: 2,
        cell: change_cell,
    },
];

/// Each grouping header's values with their share of the answers, one
/// line per header: `x-cache: HIT 62.5 % (120), MISS 37.5 % (72)`.
pub fn shares(by_header: &crate::report::model::ByHeader) -> Vec<String> {
    crate::report::model::header_shares(by_header)
        .into_iter()
        .map(|(name, values)| {
            let parts: Vec<String> = values
                .into_iter()
                .map(|(value, share)| {
                    let n = by_header[name][value].requests;
                    format!("{value} {:.1} % ({n})", share * 100.0)
                })
                .collect();
            format!("{name}: {}", parts.join(", "))
        })
        .collect()
}

/// A compared header value's share in words:
/// `x-cache HIT: 60.0 % -> 80.0 % (+20.0 pp)`, with its route when not
/// stage-wide.
pub fn share_line(s: &crate::report::compare::ShareDiff) -> String {
    let scope = if s.scope == "stage" {
        String::new()
    } else {
        format!(" ({})", s.scope)
    };
    format!(
        "{} {}: {:.1} % -> {:.1} % ({:+.1} pp){scope}",
        s.header, s.value, s.base_pct, s.candidate_pct, s.delta_pp
    )
}
