//! `tapedeck captures …`: the subcommands that inspect, copy and remove
//! runs of capture files. Plain flags (`--older-than` is parsed here);
//! `commands::captures` runs them.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use super::parse::parse_duration;

/// `tapedeck captures …`
#[derive(Debug, Subcommand)]
pub enum CapturesCommand {
    /// List the recording runs in a capture.
    List {
        /// Capture file, or postgres://USER@HOST/DB.
        path: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one run: counters, routes, sessions.
    Show {
        /// Capture file, or postgres://USER@HOST/DB.
        path: PathBuf,
        /// Run id [default: the latest].
        #[arg(long)]
        run: Option<i64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Most routes and sessions listed in text output.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Copy every run of a capture into another, SQLite or PostgreSQL
    /// either way (a staging PostgreSQL capture into a laptop file).
    Copy {
        /// The capture to read.
        from: PathBuf,
        /// The capture to add the runs to (created when missing).
        to: PathBuf,
    },
    /// Remove runs with their sessions and exchanges; a SQLite file is
    /// compacted so that nothing of them stays in it.
    Delete {
        /// Capture file, or postgres://USER@HOST/DB.
        path: PathBuf,
        /// The run to remove (repeatable); a run being recorded is refused.
        #[arg(long = "run", required = true, value_name = "ID")]
        runs: Vec<i64>,
    },
    /// Remove every run that started longer ago than a duration (runs
    /// still being recorded stay); a SQLite file is compacted.
    Prune {
        /// Capture file, or postgres://USER@HOST/DB.
        path: PathBuf,
        /// Age of the runs to remove: 7d, 12h, 2w, 90m, 30s.
        #[arg(long, value_name = "DURATION", value_parser = older_than)]
        older_than: Duration,
    },
}

fn older_than(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| format!("{e:#}"))
}
