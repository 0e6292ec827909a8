//! `tapedeck captures list|show|copy|delete|prune|import`: reads a
//! capture through the store and prints its runs or one run's details,
//! copies every run into another capture, removes runs and prints what
//! left, or imports a HAR file as a run.
//! Renderings are the library's.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Exit;
use super::output::counting_bar;
use crate::cli::captures::{CapturesCommand, ImportArgs};
use tapedeck::capture::store::is_postgres_url;
use tapedeck::capture::{Removal, Store, as_us, now_epoch_us};
use tapedeck::proxy::import::{self, HarCheck, ImportConfig, ImportSummary};
use tapedeck::report::render::terminal;

/// Runs `tapedeck captures …`.
pub async fn run(cmd: CapturesCommand) -> anyhow::Result<Exit> {
    match cmd {
        CapturesCommand::List { path, json } => {
            let store = Store::open_read_only(&path).await?;
            let runs = store.runs().await;
            store.close().await;
            let runs = runs?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else if runs.is_empty() {
                println!("{} holds no recording run yet", store.path().display());
            } else {
                print!("{}", terminal::runs_table(&runs));
            }
        }
        CapturesCommand::Show {
            path,
            run,
            json,
            limit,
        } => {
            let store = Store::open_read_only(&path).await?;
            let read = async {
                let run = store.run(run).await?;
                let sessions = store.sessions(run.id).await?;
                let routes = store.route_counts(run.id).await?;
                let sockets = store.socket_summary(run.id).await?;
                Ok::<_, tapedeck::capture::CaptureError>((run, sessions, routes, sockets))
            };
            let read = read.await;
            store.close().await;
            let (run, sessions, routes, sockets) = read?;
            if json {
                let doc = serde_json::json!({
                    "run": run, "routes": routes, "sessions": sessions, "websockets": sockets
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!(
                    "{}",
                    terminal::run_details(&run, &sessions, &routes, &sockets, limit)
                );
            }
        }
        CapturesCommand::Copy { from, to } => {
            let source = Store::open_read_only(&from).await?;
            let target = Store::create(&to).await?;
            if source.path() == target.path() {
                anyhow::bail!(
                    "{} and {} are the same capture: copying it onto itself would store every run twice; \
                     name another file or database",
                    from.display(),
                    target.path().display()
                );
            }
            let runs = source.runs().await?;
            let total: i64 = runs.iter().map(|r| r.exchanges).sum();
            let bar = counting_bar(
                total.max(0) as u64,
                "{spinner} {elapsed:>3} exchanges copied {pos}/{len} {wide_bar}",
            );
            let copied = source.copy_into(&target, |n| bar.inc(n)).await?;
            bar.finish_and_clear();
            let sessions: i64 = runs.iter().map(|r| r.sessions).sum();
            println!(
                "copied {} runs, {total} exchanges in {sessions} sessions: {} -> {}",
                copied.len(),
                source.path().display(),
                target.path().display()
            );
            for (from_id, to_id) in copied {
                println!("  run {from_id} -> run {to_id}");
            }
            source.close().await;
            target.close().await;
        }
        CapturesCommand::Delete { path, runs } => {
            let store = Store::open(&path).await?;
            let removal = store.delete_runs(&runs).await?;
            store.close().await;
            print_removal(&removal, &store)?;
        }
        CapturesCommand::Prune { path, older_than } => {
            let store = Store::open(&path).await?;
            let cutoff = now_epoch_us().saturating_sub(as_us(older_than));
            let removal = store.prune_runs(cutoff).await?;
            store.close().await;
            print_removal(&removal, &store)?;
        }
        CapturesCommand::Import(args) => import_har(*args).await?,
    }
    Ok(Exit::Success)
}

/// `captures import`: the HAR is checked whole first, so a malformed one
/// leaves every capture as it was. A new capture file is written under a
/// temporary name and renamed at the end; a run added to an existing
/// capture is removed again if writing it fails.
async fn import_har(args: ImportArgs) -> anyhow::Result<()> {
    let (har, capture, config) = args.into_plan()?;
    let checked = {
        let (har, config) = (har.clone(), config.clone());
        tokio::task::spawn_blocking(move || import::check(&har, &config))
            .await
            .context("checking the HAR")??
    };
    if checked.kept == 0 {
        let origins: Vec<String> = checked
            .origins
            .iter()
            .map(|(o, n)| format!("{o} ({n})"))
            .collect();
        anyhow::bail!(
            "{} holds no entry to import{}; nothing was written",
            har.display(),
            match origins.is_empty() {
                true => String::new(),
                false => format!(" of that origin; its origins: {}", origins.join(", ")),
            }
        );
    }
    let existing = is_postgres_url(&capture) || capture.exists();
    let summary = match existing {
        true => import_into_existing(&har, &checked, &capture, &config).await?,
        false => import_into_new(&har, &checked, &capture, &config).await?,
    };
    let run = &summary.run;
    println!(
        "imported {} entries of {} into run {}: {} exchanges in {} sessions, {} bodies cut at the cap -> {}",
        checked.kept,
        har.display(),
        run.id,
        run.exchanges,
        run.sessions,
        summary.truncated_bodies,
        capture.display()
    );
    if checked.origins.len() > 1 && config.origin.is_none() {
        let origins: Vec<String> = checked
            .origins
            .iter()
            .map(|(o, n)| format!("{o} ({n})"))
            .collect();
        eprintln!(
            "tapedeck: note: the HAR holds requests to several origins: {}; replay sends them all to one \
             target, so pass --origin to import one",
            origins.join(", ")
        );
    }
    Ok(())
}

async fn import_into_existing(
    har: &Path,
    checked: &HarCheck,
    capture: &Path,
    config: &ImportConfig,
) -> anyhow::Result<ImportSummary> {
    let store = Store::open(capture).await?;
    let mut run_id = None;
    let imported = import::import(har, checked, &store, config, &mut run_id).await;
    if imported.is_err()
        && let Some(id) = run_id
        && let Err(e) = store.delete_runs(&[id]).await
    {
        eprintln!("tapedeck: warning: removing the half-imported run {id} failed: {e}");
    }
    store.close().await;
    Ok(imported?)
}

async fn import_into_new(
    har: &Path,
    checked: &HarCheck,
    capture: &Path,
    config: &ImportConfig,
) -> anyhow::Result<ImportSummary> {
    let mut name = capture.as_os_str().to_owned();
    name.push(format!(".importing-{}", std::process::id()));
    let temporary = PathBuf::from(name);
    let store = Store::create(&temporary).await?;
    let mut run_id = None;
    let imported = import::import(har, checked, &store, config, &mut run_id).await;
    store.close().await;
    let renamed = match &imported {
        Ok(_) => std::fs::rename(&temporary, capture)
            .with_context(|| format!("moving the new capture to {}", capture.display())),
        Err(_) => Ok(()),
    };
    if imported.is_err() || renamed.is_err() {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = temporary.as_os_str().to_owned();
            name.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(name));
        }
    }
    renamed?;
    Ok(imported?)
}

/// The removal line on stdout; on stderr, the runs a prune kept because
/// they are being recorded.
///
/// # Errors
/// When bytes of the removed runs may be left in the file: the removal
/// stands, but the command did not do all it promises.
fn print_removal(removal: &Removal, store: &Store) -> anyhow::Result<()> {
    println!("{}", terminal::removal_line(removal, store.path()));
    for id in &removal.kept_recording {
        eprintln!(
            "tapedeck: warning: run {id} is old enough to prune but still being recorded; \
             it was kept: prune again after its recorder stops"
        );
    }
    match &removal.leftover {
        Some(leftover) => anyhow::bail!("{leftover}"),
        None => Ok(()),
    }
}
