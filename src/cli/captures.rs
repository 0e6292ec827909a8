//! `tapedeck captures …`: the subcommands that inspect and copy capture
//! files. Plain flags, nothing to validate; `commands::captures` runs them.

use std::path::PathBuf;

use clap::Subcommand;

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
}
