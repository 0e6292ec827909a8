//! `tapedeck captures list|show|copy|delete|prune`: reads a capture
//! through the store and prints its runs or one run's details, copies every
//! run into another capture, or removes runs and prints what left.
//! Renderings are the library's.

use super::Exit;
use super::output::counting_bar;
use crate::cli::captures::CapturesCommand;
use tapedeck::capture::{Removal, Store, as_us, now_epoch_us};
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
    }
    Ok(Exit::Success)
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
