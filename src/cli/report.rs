//! `tapedeck report …` and `tapedeck compare`: the flags that read, merge,
//! render and compare saved reports. Plain flags; the thresholds are parsed
//! by the library when `commands::compare` runs.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `tapedeck report …`
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Combine shard reports of one replay exactly.
    Merge {
        /// Shard reports.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where to write the merged report.
        #[arg(short, long)]
        output: PathBuf,
        /// Merge even when shards are missing; the merged report is marked
        /// `capacity.partial` with the missing shards.
        #[arg(long)]
        allow_partial: bool,
    },
    /// Print a saved report's tables.
    Render {
        /// Report file.
        file: PathBuf,
        /// Markdown for a pull request instead of terminal tables.
        #[arg(long)]
        markdown: bool,
        /// Write a self-contained HTML page here.
        #[arg(long)]
        html: Option<PathBuf>,
    },
}

/// `tapedeck compare`
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The base report (e.g. the last build's).
    pub base: PathBuf,
    /// The candidate report (e.g. this build's).
    pub candidate: PathBuf,
    /// Regression thresholds.
    #[arg(long, default_value = "p95=+10%,p99=+15%,errors=+0.5pp")]
    pub threshold: String,
    /// Also write the comparison as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write a self-contained HTML page: both runs overlaid, deltas.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Also write JUnit XML for CI: a test case per compared metric and
    /// route metric, a regression a failure.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Print Markdown for a pull request instead of terminal tables.
    #[arg(long)]
    pub markdown: bool,
}
