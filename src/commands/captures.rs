//! `tapedeck captures list|show|copy`: reads a capture through the store
//! and prints its runs, one run's details, or copies every run into another
//! capture. Renderings are the library's.

use super::Exit;
use super::output::counting_bar;
use crate::cli::captures::CapturesCommand;
use tapedeck::capture::Store;
use tapedeck::report::render::terminal;

/// Runs `tapedeck captures …`.
pub async fn run(cmd: CapturesCommand) -> anyhow::Result<Exit> {
    match cmd {
        CapturesCommand::List { path, json } => {
            let store = Store::open(&path).await?;
            let runs = store.runs().await?;
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
            let store = Store::open(&path).await?;
            let run = store.run(run).await?;
            let sessions = store.sessions(run.id).await?;
            let routes = store.route_counts(run.id).await?;
            let sockets = store.socket_summary(run.id).await?;
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
            let source = Store::open(&from).await?;
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
    }
    Ok(Exit::Success)
}
