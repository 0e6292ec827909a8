//! Command-line definitions (clap), one file per command, and their
//! translation into the library's validated configurations. Nothing in the
//! library sees clap. The binary's `commands` take what these produce;
//! nothing here runs a command.

pub mod captures;
pub mod client_tls;
pub mod demo;
pub mod parse;
pub mod record;
pub mod replay;
pub mod report;

use clap::{Parser, Subcommand};

use captures::CapturesCommand;
use demo::{DemoArgs, DemoBackendArgs};
use record::RecordArgs;
use replay::ReplayArgs;
use report::{CompareArgs, ReportCommand};

/// Record real chat-backend traffic, replay it at scale, compare the reports.
#[derive(Debug, Parser)]
#[command(name = "tapedeck", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// tapedeck's commands.
// Parsed once per process; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a recording reverse proxy in front of a chat backend.
    Record(RecordArgs),
    /// Inspect capture files.
    #[command(subcommand)]
    Captures(CapturesCommand),
    /// The whole product end to end against the built-in demo chat backend.
    Demo(DemoArgs),
    /// Serve the built-in demo chat backend.
    DemoBackend(DemoBackendArgs),
    /// Replay a capture against a target at scaled load and report.
    Replay(Box<ReplayArgs>),
    /// Work with replay reports.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Compare a candidate report with a base one (exit 1 on regression).
    Compare(CompareArgs),
    /// Print the completion script for a shell, e.g.
    /// `source <(tapedeck completions bash)`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `tapedeck man | man -l -`; with
    /// `--out-dir`, write a page per command there instead (tapedeck.1,
    /// tapedeck-replay.1, …).
    Man {
        /// Where to write the pages (created when missing).
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
}
