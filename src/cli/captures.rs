//! `tapedeck captures …`: the subcommands that inspect, copy and remove
//! runs of capture files. Plain flags (`--older-than` is parsed here);
//! `commands::captures` runs them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::parse::{parse_duration, parse_size};
use tapedeck::capture::redact::RedactionConfig;
use tapedeck::proxy::import::ImportConfig;
use tapedeck::proxy::session::{KeySource, SessionConfig};

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
    /// Import a HAR file (DevTools, mitmproxy, Charles, k6) as a new run,
    /// grouped into sessions and redacted as recording does.
    Import(Box<ImportArgs>),
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

/// `tapedeck captures import`: a HAR file into a new run.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The HAR file (HAR 1.1 or 1.2: browser DevTools, mitmproxy's
    /// hardump, Charles, k6).
    pub har: PathBuf,
    /// Capture to add the run to, or postgres://USER@HOST/DB; a missing
    /// file is created [default: captures/<UTC timestamp>.db].
    #[arg(long)]
    pub capture: Option<PathBuf>,
    /// Import only entries of this origin (http://host:port); the HAR of a
    /// browser also holds other sites' requests [default: all entries].
    #[arg(long, value_name = "URL")]
    pub origin: Option<String>,
    /// Session key sources, first match wins; `client` is the entry's HAR
    /// page, or the whole file when entries name no page
    /// [default: header:x-session-id,bearer,cookie:session,client].
    #[arg(long, value_delimiter = ',')]
    pub session_key: Vec<String>,
    /// Idle gap that starts a new session [default: 30m].
    #[arg(long)]
    pub session_idle: Option<String>,
    /// Largest body stored per request or response; longer ones are
    /// stored cut, with their true length [default: 1MiB].
    #[arg(long)]
    pub max_body: Option<String>,
    /// Store credentials in clear instead of redaction markers.
    #[arg(long)]
    pub keep_credentials: bool,
    /// Another header to redact (repeatable).
    #[arg(long = "redact-header")]
    pub redact_header: Vec<String>,
    /// A header redacted by default to keep in clear (repeatable).
    #[arg(long = "keep-header")]
    pub keep_header: Vec<String>,
    /// Field and query-parameter names to redact, replacing the default
    /// rules (as `record --redact-field`).
    #[arg(long = "redact-field", value_delimiter = ',')]
    pub redact_field: Vec<String>,
}

impl ImportArgs {
    /// The HAR, the capture and the library's import settings.
    ///
    /// # Errors
    /// A flag that does not parse, naming it.
    pub fn into_plan(self) -> anyhow::Result<(PathBuf, PathBuf, ImportConfig)> {
        let mut session = SessionConfig::default();
        if !self.session_key.is_empty() {
            session.sources = self
                .session_key
                .iter()
                .map(|s| s.parse::<KeySource>().map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<_>>()
                .context("--session-key")?;
        }
        if let Some(s) = &self.session_idle {
            session.idle_gap = parse_duration(s).context("--session-idle")?;
        }
        let max_body = match &self.max_body {
            Some(s) => parse_size(s).context("--max-body")?,
            None => 1024 * 1024,
        };
        let origin = match self.origin {
            Some(o) => Some(
                tapedeck::proxy::import::origin_of(o.trim_end_matches('/'))
                    .with_context(|| format!("--origin `{o}`: give it as http://host:port"))?,
            ),
            None => None,
        };
        let capture = self.capture.unwrap_or_else(|| {
            PathBuf::from(format!("captures/{}.db", tapedeck::capture::utc_stamp()))
        });
        let config = ImportConfig {
            max_body,
            session,
            redaction: RedactionConfig {
                keep_credentials: self.keep_credentials,
                extra_headers: self.redact_header,
                keep_headers: self.keep_header,
                fields: self.redact_field,
            },
            origin,
        };
        Ok((self.har, capture, config))
    }
}

fn older_than(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| format!("{e:#}"))
}
