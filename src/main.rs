//! The `tapedeck` binary: parse, set up logging, run, map the outcome to an
//! exit code (0 ok, 1 failed thresholds or regression, 2 usage or input
//! error, 3 aborted by a safety limit).
//!
//! `cli` turns flags into validated configurations; `commands` runs one
//! command each on the library. Both are modules of the binary, not of the
//! library: the library never sees clap, the terminal or exit codes.

mod cli;
mod commands;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use commands::Exit;

/// Failed thresholds or a regression.
const EXIT_FAILED: u8 = 1;
/// Usage or input error.
const EXIT_INPUT: u8 = 2;
/// Aborted by a safety limit.
const EXIT_ABORTED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Record(_) | Command::DemoBackend(_) => "info",
        _ => "warn",
    };
    // rustls warns once per connection about clients (wrk, curl with an IP
    // URL) that send an IP address as SNI; the proxy logs handshake failures
    // itself.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("tapedeck={default_level},warn,rustls=error"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_INPUT);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Record(args) => commands::record::run(args).await,
            Command::Captures(cmd) => commands::captures::run(cmd).await,
            Command::Demo(args) => commands::demo::run(args).await,
            Command::DemoBackend(args) => commands::demo_backend::run(args).await,
            Command::Replay(args) => commands::replay::run(*args).await,
            Command::Report(cmd) => commands::report::run(cmd).await,
            Command::Compare(args) => commands::compare::run(args),
            Command::Completions { shell } => commands::manual::completions(shell),
            Command::Man { out_dir } => commands::manual::man(out_dir.as_deref()),
        }
    });
    match result {
        Ok(Exit::Success) => ExitCode::SUCCESS,
        Ok(Exit::Failed) => ExitCode::from(EXIT_FAILED),
        Ok(Exit::Aborted) => ExitCode::from(EXIT_ABORTED),
        Err(e) => {
            eprintln!("error: {}", said_once(&e));
            ExitCode::from(EXIT_INPUT)
        }
    }
}

/// The error and its causes, each said once: a cause whose text is
/// already in what was said (an error that prints its own source) is left
/// out, so no message repeats itself.
fn said_once(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
