//! One file per command: glue between the validated configurations of
//! `cli` and the library, and the command's terminal output. No flag
//! parsing (that is `cli`'s) and no replay, report or capture logic (that is
//! the library's). Each command returns an [`Exit`] or an error; `main` maps
//! them to the exit code.

pub mod captures;
pub mod compare;
pub mod demo;
pub mod demo_backend;
pub mod manual;
pub mod output;
pub mod record;
pub mod replay;
pub mod report;

/// How a command that ran to its end finished. Usage and input errors are
/// the commands' `Err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done; thresholds met, no regression.
    Success,
    /// Failed thresholds or a regression.
    Failed,
    /// A replay aborted by a safety limit.
    Aborted,
}

/// The log target of the binary's own lines, kept from when they were
/// written in `main.rs`, so log filters and readers see no change.
pub const LOG_TARGET: &str = "tapedeck";
