//! Terminal output shared by several commands: progress bars and live
//! lines (on a terminal only, so piped output stays parseable) and HTML
//! pages written to disk. The renderings themselves come from the library.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use tapedeck::report::outcome::LiveStats;

/// Checks, before a long run, that `path` can be written as `flag` says
/// (`--report`, `--html`): its directory is created and the file opened
/// for writing (a file that was not there is removed again), so a path
/// that cannot be written fails before anything is sent, not after.
pub fn check_writable(path: &Path, flag: &str) -> anyhow::Result<()> {
    let fail = |why: String| {
        anyhow::anyhow!(
            "{flag} {}: {why}; give a path that can be written",
            path.display()
        )
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Some(file) = dir.ancestors().find(|a| a.is_file()) {
            return Err(fail(format!(
                "{} is a file, not a directory",
                file.display()
            )));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    }
    if path.is_dir() {
        return Err(fail("that is a directory".into()));
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// A bar counting to `len` on a terminal; hidden otherwise, so output
/// stays parseable.
pub fn counting_bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// A live line on a terminal (stage, requests, rate, p95, errors, in flight);
/// nothing otherwise, so output stays parseable.
pub fn progress_line(live: Arc<LiveStats>, stages: Vec<String>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let started = tokio::time::Instant::now();
        let mut last = (0u64, started);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let stage = live.stage.load(Ordering::Relaxed) as usize;
            let requests = live.requests.load(Ordering::Relaxed);
            let now = tokio::time::Instant::now();
            let rps = if requests >= last.0 {
                (requests - last.0) as f64 / now.duration_since(last.1).as_secs_f64().max(0.001)
            } else {
                0.0
            };
            last = (requests, now);
            bar.set_message(format!(
                "stage {} | {requests} requests | {rps:.0} rps | p95 {:.1} ms | {} errors | {} in flight",
                stages.get(stage).map_or("?", String::as_str),
                live.p95_us.load(Ordering::Relaxed) as f64 / 1000.0,
                live.errors.load(Ordering::Relaxed),
                live.inflight.load(Ordering::Relaxed)
            ));
            bar.tick();
        }
    })
}

/// Writes an HTML page, creating its folder.
pub fn write_page(path: &Path, page: Result<String, String>) -> anyhow::Result<()> {
    let page = page.map_err(anyhow::Error::msg)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))
}
