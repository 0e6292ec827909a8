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
use tapedeck::replay::{explain, tokens};
use tapedeck::report::Verdict;
use tapedeck::report::outcome::LiveStats;
use tapedeck::report::render::{html, terminal};

/// Runs `tapedeck replay`.
pub async fn run(args: ReplayArgs) -> anyhow::Result<Exit> {
    let mut plan = args.into_plan()?;
    if !plan.explain {
        check_writable(&plan.report, "--report")?;
        if let Some(path) = &plan.html {
            check_writable(path, "--html")?;
        }
    }
    let store = Store::open(&plan.capture).await?;
    if !plan.tokens.is_empty() {
        let credentials = tokens::assign_tokens(
            &store,
            plan.config.run,
            &plan.tokens,
            &plan.config.credentials,
        )
        .await?;
        plan.config.credentials = Arc::new(credentials);
    }
    if plan.explain {
        let explanation = explain::explain(&store, &plan.config).await?;
        print!("{}", explanation.render());
        return Ok(Exit::Success);
    }
    let stage_names: Vec<String> = plan
        .config
        .profile
        .stages
        .iter()
        .map(|s| s.name.clone())
        .collect();
    plan.config.interrupt.on_signals_or_exit(
        "stop signal: stopping the replay and writing a partial report \
         (a second signal exits at once, without one)",
        i32::from(crate::EXIT_ABORTED),
    );
    let live = Arc::new(LiveStats::default());
    let progress = progress_line(live.clone(), stage_names);
    let outcome = tapedeck::replay::run(&store, plan.config, live).await;
    progress.abort();
    let run = outcome?;
    tapedeck::report::save(&run.report, &plan.report)?;
    if let Some(path) = &plan.html {
        write_page(path, html::report_page(&run.report))?;
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
