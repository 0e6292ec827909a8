//! `tapedeck completions SHELL` and `tapedeck man`: shell completion
//! scripts and manual pages generated from the clap definitions, so they
//! always hold the binary's own commands and flags.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::Exit;
use crate::cli::Cli;

/// Prints the completion script for `shell`.
pub fn completions(shell: Shell) -> anyhow::Result<Exit> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "tapedeck", &mut script);
    print(&script)
}

/// Prints the top-level manual page, or writes one page per command into
/// `out_dir`.
pub fn man(out_dir: Option<&Path>) -> anyhow::Result<Exit> {
    let Some(dir) = out_dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut page)
            .context("rendering the manual page")?;
        return print(&page);
    };
    std::fs::create_dir_all(dir)
        .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
        .with_context(|| format!("--out-dir {}: cannot write the manual pages", dir.display()))?;
    Ok(Exit::Success)
}

fn print(bytes: &[u8]) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("writing to standard output")?;
    Ok(Exit::Success)
}
