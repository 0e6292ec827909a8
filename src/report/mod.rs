//! Reports: what replay emits (`outcome`), the collector that turns it into
//! statistics (`collect`), the exact per-stage accumulation (`accumulate`,
//! over the HDR histograms of `histogram`), the versioned JSON contract
//! (`model`), the judgements on it (`verdict`), comparing two reports
//! (`compare`) and every human rendering (`render`). This file reads,
//! writes and merges report files.
//!
//! Input comes from replay's outcomes or from report files; output is JSON
//! for tools and, through `render`, text, Markdown and HTML. Nothing here
//! depends on replay, the proxy or the demo.

pub mod accumulate;
pub mod collect;
pub mod compare;
pub mod histogram;
pub mod model;
pub mod outcome;
pub mod render;
pub mod verdict;

use std::path::{Path, PathBuf};

pub use accumulate::StageData;
pub use model::{Report, StageReport, Verdict};

use crate::profile::Slo;

/// Errors reading or combining reports.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not a report this version reads.
    #[error("{path} is not a tapedeck report: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reports that cannot be merged.
    #[error("cannot merge {path}: {reason}")]
    Mismatch {
        /// The report that differs from the first.
        path: PathBuf,
        /// How it differs.
        reason: String,
    },
}

/// Reads a report file.
///
/// # Errors
/// When the file is missing, not JSON, or not `tapedeck-report/1`.
pub fn load(path: &Path) -> Result<Report, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let report: Report = serde_json::from_str(&text).map_err(|e| ReportError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if report.format != model::FORMAT {
        return Err(ReportError::Invalid {
            path: path.to_path_buf(),
            reason: format!(
                "format {:?}; this tapedeck reads {}",
                report.format,
                model::FORMAT
            ),
        });
    }
    Ok(report)
}

/// Writes a report as pretty JSON, creating parent folders.
///
/// # Errors
/// When the file cannot be written.
pub fn save(report: &Report, path: &Path) -> Result<(), ReportError> {
    let io = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let text = serde_json::to_string_pretty(report).map_err(|e| io(std::io::Error::other(e)))?;
    std::fs::write(path, text + "\n").map_err(io)
}

/// Combines shard reports of one replay exactly: counts add, histograms
/// add, timelines align on wall-clock seconds; SLOs and the capacity
/// verdict are evaluated again on the merged numbers.
///
/// # Errors
/// When the reports come from different captures, profiles or seeds, or
/// their stages differ.
pub fn merge(
    reports: &[(PathBuf, Report)],
    abort_error_rate: Option<f64>,
) -> Result<Report, ReportError> {
    let Some((_, first)) = reports.first() else {
        return Err(ReportError::Invalid {
            path: PathBuf::new(),
            reason: "no reports to merge".into(),
        });
    };
    let mut stages: Vec<StageData> = Vec::new();
    let mut aborted = false;
    for (path, r) in reports {
        let mismatch = |reason: String| ReportError::Mismatch {
            path: path.clone(),
            reason,
        };
        let (a, b) = (&r.capture, &first.capture);
        let same_capture = if a.fingerprint.is_empty() || b.fingerprint.is_empty() {
            a.path == b.path
        } else {
            a.fingerprint == b.fingerprint
        };
        if !same_capture || a.run != b.run {
            return Err(mismatch(format!(
                "it replayed capture {} run {} ({} exchanges in {} sessions), not {} run {} \
                 ({} exchanges in {} sessions) like the first report; merge only the shard \
                 reports of one replay",
                a.path, a.run, a.exchanges, a.sessions, b.path, b.run, b.exchanges, b.sessions
            )));
        }
        if r.profile.fingerprint != first.profile.fingerprint {
            return Err(mismatch(format!(
                "profile {:?} differs from {:?}",
                r.profile.name, first.profile.name
            )));
        }
        if r.seed != first.seed {
            return Err(mismatch(format!(
                "seed {} differs from {}: shards must share one plan",
                r.seed, first.seed
            )));
        }
        if r.stages.len() != first.stages.len() {
            return Err(mismatch(format!(
                "{} stages against {}",
                r.stages.len(),
                first.stages.len()
            )));
        }
        aborted |= r.verdict == Verdict::Aborted;
        for (i, s) in r.stages.iter().enumerate() {
            let slo = slo_of(&first.stages[i]);
            let data = StageData::from_report(s, slo).map_err(|e| ReportError::Invalid {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            match stages.get_mut(i) {
                Some(existing) => {
                    if existing.name != data.name || existing.multiplier != data.multiplier {
                        return Err(mismatch(format!(
                            "stage {i} is {} ({}x), not {}",
                            data.name, data.multiplier, existing.name
                        )));
                    }
                    existing.add(&data);
                }
                None => stages.push(data),
            }
        }
    }
    let mut stage_reports: Vec<StageReport> = stages.iter().map(StageData::report).collect();
    verdict::judge_validity(&mut stage_reports, first.max_invalid);
    let mut merged = first.clone();
    merged.shard = None;
    merged.started_at = reports
        .iter()
        .map(|(_, r)| r.started_at.clone())
        .min()
        .unwrap_or_default();
    merged.finished_at = reports
        .iter()
        .map(|(_, r)| r.finished_at.clone())
        .max()
        .unwrap_or_default();
    // A shard stopped by a signal leaves the whole replay partial.
    merged.interrupted = reports.iter().any(|(_, r)| r.interrupted);
    merged.verdict = verdict::overall(&stage_reports, aborted);
    merged.capacity = verdict::capacity(&stage_reports, abort_error_rate);
    merged.stages = stage_reports;
    Ok(merged)
}

/// The thresholds a stage report was evaluated with.
fn slo_of(s: &StageReport) -> Slo {
    let mut slo = Slo::default();
    for r in &s.slo {
        match r.name.as_str() {
            "p50_ms" => slo.p50_ms = Some(r.threshold),
            "p95_ms" => slo.p95_ms = Some(r.threshold),
            "p99_ms" => slo.p99_ms = Some(r.threshold),
            "error_rate" => slo.error_rate = Some(r.threshold),
            _ => {}
        }
    }
    slo
}
