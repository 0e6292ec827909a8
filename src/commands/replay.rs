//! `tapedeck replay`: opens the capture, gives the `--token-file` tokens to
//! the recorded credentials, then either prints the `--explain` table or
//! runs the replay with a live progress line, saves the report (and page)
//! and prints its tables. Assigning tokens, explaining and replaying are
//! the library's.

use std::sync::Arc;

use super::Exit;
use super::output::{check_writable, progress_line, write_page};
use crate::cli::replay::ReplayArgs;
use tapedeck::capture::Store;
use tapedeck::replay::{ReplayConfig, ReplayRun, explain, tokens};
use tapedeck::report::Verdict;
use tapedeck::report::outcome::LiveStats;
use tapedeck::report::render::{html, junit, terminal};

/// Runs `tapedeck replay`.
pub async fn run(args: ReplayArgs) -> anyhow::Result<Exit> {
    let plan = args.into_plan()?;
    if !plan.explain {
        check_writable(&plan.report, "--report")?;
        if let Some(path) = &plan.html {
            check_writable(path, "--html")?;
        }
        if let Some(path) = &plan.junit {
            check_writable(path, "--junit")?;
        }
    }
    let store = Store::open_read_only(&plan.capture).await?;
    let played = play(&store, plan.config, &plan.tokens, plan.explain).await;
    // Closed whatever happened: the last connection removes SQLite's WAL
    // files from beside the capture.
    store.close().await;
    let Some(run) = played? else {
        return Ok(Exit::Success);
    };
    tapedeck::report::save(&run.report, &plan.report)?;
    if let Some(path) = &plan.html {
        write_page(path, html::report_page(&run.report))?;
    }
    if let Some(path) = &plan.junit {
        write_page(path, Ok(junit::report_junit(&run.report)))?;
    }
    print!("{}", terminal::stages_table(&run.report));
    println!();
    for s in &run.report.stages {
        print!("{}", terminal::stage_details(s, 10));
    }
    println!();
    print!("{}", terminal::capacity(&run.report));
    print!("{}", terminal::warnings_text(&run.report));
    let interrupted = match run.report.interrupted {
        true => " (interrupted by a stop signal: partial)",
        false => "",
    };
    println!(
        "verdict: {}{interrupted} — report {}",
        run.report.verdict,
        plan.report.display()
    );
    Ok(match run.report.verdict {
        Verdict::Pass => Exit::Success,
        Verdict::Fail => Exit::Failed,
        Verdict::Aborted => Exit::Aborted,
    })
}

/// Gives the tokens to the recorded credentials, then prints the
/// explanation (`None`) or runs the replay with a live progress line.
async fn play(
    store: &Store,
    mut config: ReplayConfig,
    token_list: &[String],
    explain_only: bool,
) -> anyhow::Result<Option<ReplayRun>> {
    if !token_list.is_empty() {
        let credentials =
            tokens::assign_tokens(store, config.run, token_list, &config.credentials).await?;
        config.credentials = Arc::new(credentials);
    }
    if explain_only {
        let explanation = explain::explain(store, &config).await?;
        print!("{}", explanation.render());
        return Ok(None);
    }
    let stage_names: Vec<String> = config
        .profile
        .stages
        .iter()
        .map(|s| s.name.clone())
        .collect();
    config.interrupt.on_signals_or_exit(
        "stop signal: stopping the replay and writing a partial report \
         (a second signal exits at once, without one)",
        i32::from(crate::EXIT_ABORTED),
    );
    let live = Arc::new(LiveStats::default());
    let progress = progress_line(live.clone(), stage_names);
    let outcome = tapedeck::replay::run(store, config, live).await;
    progress.abort();
    Ok(Some(outcome?))
}
