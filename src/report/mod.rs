//! Reports: what replay emits (`outcome`), the collector that turns it into
//! statistics (`collect`), the exact per-stage accumulation (`accumulate`,
//! over the HDR histograms of `histogram`), the live Prometheus series of
//! `replay --admin` (`live`), the versioned JSON contract (`model`),
//! observed resources (`resources`), each route's slowest requests with
//! their trace ids (`slowest`), the judgements on it (`verdict`),
//! comparing two reports (`compare`) and every human rendering (`render`). This file reads,
//! writes and merges report files.
//!
//! Input comes from replay's outcomes or from report files; output is JSON
//! for tools and, through `render`, text, Markdown and HTML. Nothing here
//! depends on replay, the proxy or the demo.

pub mod accumulate;
pub mod collect;
pub mod compare;
pub mod grouped;
pub mod histogram;
pub mod live;
pub mod model;
pub mod outcome;
pub mod render;
pub mod resources;
pub mod slowest;
pub mod verdict;

use std::path::{Path, PathBuf};

pub use accumulate::StageData;
pub use model::{Partial, Report, Shard, StageReport, Verdict};

use crate::profile::{RouteSlo, Slo};

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
    /// A histogram of a report file is damaged, forged or larger than any
    /// tapedeck writes.
    #[error(
        "{path}: {place}: histogram refused: {source}; the file was changed after replay \
         wrote it: restore it or replay again"
    )]
    Histogram {
        /// The file.
        path: PathBuf,
        /// Stage, route or window, and the field.
        place: String,
        /// What is wrong.
        source: histogram::HistogramError,
    },
    /// Shard reports that do not make up one replay.
    #[error("{0}")]
    Shards(String),
    /// Two reports with nothing to compare.
    #[error(
        "{base} and {candidate} have no stage in common (base: {base_stages}; candidate: \
         {candidate_stages}): compare reports of one profile's stages"
    )]
    NoCommonStage {
        /// The base report.
        base: PathBuf,
        /// The candidate report.
        candidate: PathBuf,
        /// The base's stage names.
        base_stages: String,
        /// The candidate's stage names.
        candidate_stages: String,
    },
}

/// Reads a report file and checks every histogram in it, so that nothing
/// downstream (merge, compare, the renderers) meets a damaged one.
///
/// # Errors
/// When the file is missing, not JSON, or not `tapedeck-report/1`, or a
/// histogram is damaged or larger than any tapedeck writes
/// ([`LatencyHistogram::decode`](histogram::LatencyHistogram::decode)).
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
    check_histograms(path, &report)?;
    Ok(report)
}

/// Decodes every histogram of `report`, bounded; the first damaged one is
/// an error naming where it is.
fn check_histograms(path: &Path, report: &Report) -> Result<(), ReportError> {
    for s in &report.stages {
        let stage = format!("stage {:?}", s.name);
        let mut blobs: Vec<(String, &str)> = vec![
            (format!("{stage}, hdr"), &s.hdr),
            (format!("{stage}, corrected_hdr"), &s.corrected_hdr),
            (format!("{stage}, ttfb_hdr"), &s.ttfb_hdr),
            (format!("{stage}, send_lag_hdr"), &s.send_lag_hdr),
        ];
        for r in &s.routes {
            let route = format!("{stage}, route {:?}", r.route);
            blobs.push((format!("{route}, hdr"), &r.hdr));
            if let Some(st) = &r.stream {
                blobs.push((format!("{route}, stream ttfb_hdr"), &st.ttfb_hdr));
                blobs.push((format!("{route}, stream gap_hdr"), &st.gap_hdr));
                blobs.push((format!("{route}, stream total_hdr"), &st.total_hdr));
            }
            if let Some(ws) = &r.websocket {
                blobs.push((format!("{route}, websocket connect_hdr"), &ws.connect_hdr));
                blobs.push((format!("{route}, websocket rtt_hdr"), &ws.rtt_hdr));
            }
        }
        for w in &s.timeline {
            blobs.push((
                format!("{stage}, timeline window at {} s, hdr", w.t_s),
                &w.hdr,
            ));
        }
        for (place, text) in blobs {
            histogram::LatencyHistogram::decode(text).map_err(|source| ReportError::Histogram {
                path: path.to_path_buf(),
                place,
                source,
            })?;
        }
    }
    Ok(())
}

/// Refuses two reports that share no stage name (nothing would be
/// compared, and "no regression" would be a false pass).
///
/// # Errors
/// [`ReportError::NoCommonStage`], naming each side's stages.
pub fn comparable(
    base_path: &Path,
    base: &Report,
    candidate_path: &Path,
    candidate: &Report,
) -> Result<(), ReportError> {
    let shared = base
        .stages
        .iter()
        .any(|b| candidate.stages.iter().any(|c| c.name == b.name));
    if shared {
        return Ok(());
    }
    let names = |r: &Report| {
        if r.stages.is_empty() {
            "none".to_string()
        } else {
            r.stages
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    Err(ReportError::NoCommonStage {
        base: base_path.to_path_buf(),
        candidate: candidate_path.to_path_buf(),
        base_stages: names(base),
        candidate_stages: names(candidate),
    })
}

/// Sentences on why a comparison of these reports may mislead, each worth
/// one warning: other captures replayed, or a partial merge on a side.
pub fn comparison_caveats(base: &Report, candidate: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let (b, c) = (&base.capture, &candidate.capture);
    if !b.fingerprint.is_empty() && !c.fingerprint.is_empty() && b.fingerprint != c.fingerprint {
        out.push(format!(
            "the reports replayed different captures (base {} run {}, fingerprint {}; \
             candidate {} run {}, fingerprint {}): differences may come from the traffic, \
             not the build",
            b.path, b.run, b.fingerprint, c.path, c.run, c.fingerprint
        ));
    }
    for (side, r) in [("base", base), ("candidate", candidate)] {
        if let Some(p) = &r.capacity.partial {
            out.push(format!("the {side} report was {p}"));
        }
    }
    out
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

/// Combines the shard reports of one replay exactly: counts add,
/// histograms add, timelines align on wall-clock seconds; SLOs and the
/// capacity verdict are evaluated again on the merged numbers. Every shard
/// must be there, once ([`merge_shards`] with `allow_partial` false).
///
/// # Errors
/// As [`merge_shards`].
pub fn merge(
    reports: &[(PathBuf, Report)],
    abort_error_rate: Option<f64>,
) -> Result<Report, ReportError> {
    merge_shards(reports, abort_error_rate, false)
}

/// [`merge`], and with `allow_partial` a merge of fewer shards than the
/// replay had, marked with [`Partial`] in its capacity (and so in every
/// rendering's warnings).
///
/// # Errors
/// When the reports come from different captures, profiles or seeds, or
/// their stages differ; when a shard is given twice, shard counts differ,
/// a whole replay is mixed with shards, or (without `allow_partial`) a
/// shard is missing; when a report is itself a partial merge.
pub fn merge_shards(
    reports: &[(PathBuf, Report)],
    abort_error_rate: Option<f64>,
    allow_partial: bool,
) -> Result<Report, ReportError> {
    let Some((_, first)) = reports.first() else {
        return Err(ReportError::Invalid {
            path: PathBuf::new(),
            reason: "no reports to merge".into(),
        });
    };
    for (path, r) in reports {
        same_replay(path, r, first)?;
    }
    let partial = check_shards(reports, allow_partial)?;
    let mut stages: Vec<StageData> = Vec::new();
    let mut aborted = false;
    for (path, r) in reports {
        aborted |= r.verdict == Verdict::Aborted;
        for (i, s) in r.stages.iter().enumerate() {
            let slo = slo_of(&first.stages[i]);
            // `load` checked every histogram already; a report built in
            // memory gets the same message.
            let data = StageData::from_report(s, slo).map_err(|source| ReportError::Histogram {
                path: path.clone(),
                place: format!("stage {:?}", s.name),
                source,
            })?;
            match stages.get_mut(i) {
                Some(existing) => {
                    if existing.name != data.name || existing.multiplier != data.multiplier {
                        return Err(ReportError::Mismatch {
                            path: path.clone(),
                            reason: format!(
                                "stage {i} is {} ({}x), not {}",
                                data.name, data.multiplier, existing.name
                            ),
                        });
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
    merged.capacity.partial = partial;
    merged.stages = stage_reports;
    Ok(merged)
}

/// Whether `r` (at `path`) is a report of the same replay as `first`: one
/// capture and run, one profile, one seed, as many stages.
fn same_replay(path: &Path, r: &Report, first: &Report) -> Result<(), ReportError> {
    let mismatch = |reason: String| ReportError::Mismatch {
        path: path.to_path_buf(),
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
    Ok(())
}

/// Checks that `reports` are the shards of one replay, each once: the
/// missing ones (with `allow_partial`) as a [`Partial`], `None` when all
/// are there. A report without a shard is the whole replay (shard 0 of 1),
/// so two of them are the same replay twice.
fn check_shards(
    reports: &[(PathBuf, Report)],
    allow_partial: bool,
) -> Result<Option<Partial>, ReportError> {
    let refuse = |text: String| Err(ReportError::Shards(text));
    for (path, r) in reports {
        if let Some(p) = &r.capacity.partial {
            return refuse(format!(
                "cannot merge {}: it is itself a partial merge ({p}); merge the shard reports \
                 instead",
                path.display()
            ));
        }
    }
    let describe = |s: Option<Shard>| match s {
        Some(s) => format!("shard {}/{}", s.index, s.count),
        None => "the whole replay (no --shard)".to_string(),
    };
    let (first_path, first) = &reports[0];
    for (path, r) in reports {
        let differs = match (r.shard, first.shard) {
            (Some(a), Some(b)) => a.count != b.count,
            (a, b) => a.is_some() != b.is_some(),
        };
        if differs {
            return refuse(format!(
                "cannot merge {} ({}) with {} ({}): merge the shard reports of one replay, all \
                 written with the same --shard K/N",
                path.display(),
                describe(r.shard),
                first_path.display(),
                describe(first.shard)
            ));
        }
    }
    let of = first.shard.map_or(1, |s| s.count);
    let mut seen: std::collections::BTreeMap<u32, &Path> = std::collections::BTreeMap::new();
    for (path, r) in reports {
        let index = r.shard.map_or(0, |s| s.index);
        if index >= of {
            return refuse(format!(
                "{}: shard {index}/{of} is out of range (shards are numbered 0 to {})",
                path.display(),
                of.saturating_sub(1)
            ));
        }
        if let Some(earlier) = seen.insert(index, path) {
            return refuse(format!(
                "{} and {} are both {}: pass each shard's report once (merging it twice would \
                 count its requests twice)",
                earlier.display(),
                path.display(),
                describe(r.shard)
            ));
        }
    }
    let missing: Vec<u32> = (0..of).filter(|i| !seen.contains_key(i)).collect();
    if missing.is_empty() {
        return Ok(None);
    }
    let partial = Partial {
        missing_shards: missing,
        of,
    };
    if allow_partial {
        return Ok(Some(partial));
    }
    let missing: Vec<String> = partial.missing_shards.iter().map(u32::to_string).collect();
    refuse(format!(
        "shard{} {} of {of} missing (given: {}); add the missing shards' reports, or pass \
         --allow-partial to merge these and mark the result partial",
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", "),
        seen.iter()
            .map(|(i, p)| format!("{i} in {}", p.display()))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The thresholds a stage report was evaluated with.
fn slo_of(s: &StageReport) -> Slo {
    let mut slo = Slo::default();
    for r in &s.slo {
        let Some(pattern) = &r.route else {
            slo.set(&r.name, r.threshold);
            continue;
        };
        let i = match slo.route.iter().position(|x| &x.route == pattern) {
            Some(i) => i,
            None => {
                slo.route.push(RouteSlo::new(pattern));
                slo.route.len() - 1
            }
        };
        slo.route[i].set(&r.name, r.threshold);
    }
    slo
}
