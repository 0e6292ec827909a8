//! `tapedeck demo`: the whole product end to end against the built-in demo
//! backend: start it, record the scripted population through the proxy,
//! replay twice, compare, and print each step with the paths it wrote. The
//! steps themselves are `tapedeck::demo`'s.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::Exit;
use super::output::{counting_bar, progress_line, write_page};
use crate::cli::demo::DemoArgs;
use tapedeck::demo::backend::{BackendConfig, DemoBackend};
use tapedeck::demo::script::{self, Population, Progress};
use tapedeck::profile::Profile;
use tapedeck::report::Report;
use tapedeck::report::outcome::LiveStats;
use tapedeck::report::render::{html, terminal};
use tapedeck::shutdown::Shutdown;

/// Runs `tapedeck demo`.
pub async fn run(args: DemoArgs) -> anyhow::Result<Exit> {
    if args.users == 0 {
        anyhow::bail!("--users must be at least 1");
    }
    let out = args.out.unwrap_or_else(script::default_out_dir);
    let population = Population {
        users: args.users,
        seed: args.seed,
        ..Population::default()
    };
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding a loopback port for the demo backend")?;
    let backend_shutdown = Shutdown::new();
    let config = BackendConfig {
        accounts: Some(Arc::new(population.accounts())),
        ..BackendConfig::default()
    };
    let backend = DemoBackend::start(listener, config, backend_shutdown.clone())
        .context("starting the demo backend")?;
    println!("tapedeck demo: chat backend on {}", backend.url());
    println!(
        "recording {} scripted chat users through the proxy into {}",
        args.users,
        out.join("capture.db").display()
    );

    let bar = counting_bar(
        args.users as u64,
        "{spinner} {elapsed:>3} users done {pos}/{len} {wide_bar} {msg}",
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let bar_task = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut requests = 0u64;
            while let Some(event) = rx.recv().await {
                match event {
                    Progress::Request => {
                        requests += 1;
                        bar.set_message(format!("{requests} requests"));
                    }
                    Progress::UserDone => bar.inc(1),
                }
            }
        })
    };
    let recorded = tapedeck::demo::record(&backend.url(), &out, population.clone(), tx).await?;
    let _ = bar_task.await;
    bar.finish_and_clear();

    let script = &recorded.script;
    println!(
        "script: {} requests, {} with the expected status",
        script.requests, script.as_expected
    );
    for m in script.mismatches.iter().take(10) {
        let got = m
            .got
            .map_or_else(|| "no response".to_string(), |s| s.to_string());
        println!(
            "  user {:02} {}: expected {}, got {got}: {}",
            m.user, m.request, m.expected, m.detail
        );
    }
    println!();
    println!("capture {}", recorded.capture.display());
    print!(
        "{}",
        terminal::run_details(
            &recorded.run,
            &recorded.sessions,
            &recorded.routes,
            &recorded.sockets,
            8
        )
    );
    let credentials = tapedeck::demo::write_credentials(&out, &population)
        .with_context(|| format!("writing the credentials file into {}", out.display()))?;
    println!(
        "passwords of the scripted users (redacted in the capture) {}",
        credentials.display()
    );
    println!();
    println!(
        "replaying the capture with the capacity profile (1x, 5x, 10x) and the credentials file \
         against a fresh demo backend with 4 workers and 20 ms service time"
    );
    let report_path = out.join("replay.json");
    let report = demo_replay(
        &recorded.capture,
        &credentials,
        tapedeck::demo::constrained_backend(Duration::from_millis(20), &population),
        tapedeck::demo::capacity_profile()?,
        &report_path,
    )
    .await?;
    print!("{}", terminal::stages_table(&report));
    print!("{}", terminal::capacity(&report));
    print!("{}", terminal::warnings_text(&report));
    let page_path = out.join("replay.html");
    write_page(&page_path, html::report_page(&report))?;
    println!(
        "report {} and {}",
        report_path.display(),
        page_path.display()
    );
    println!();
    println!(
        "the next build got slower: replaying at 5x against a backend with 30 ms service time"
    );
    let next_path = out.join("replay-next.json");
    let next = demo_replay(
        &recorded.capture,
        &credentials,
        tapedeck::demo::constrained_backend(Duration::from_millis(30), &population),
        Profile::single(5, 1.0),
        &next_path,
    )
    .await?;
    print!("{}", terminal::stages_table(&next));
    print!("{}", terminal::warnings_text(&next));
    let diff = tapedeck::report::compare::compare(&report, &next, &Default::default());
    let compare_path = out.join("compare.json");
    std::fs::write(&compare_path, serde_json::to_string_pretty(&diff)? + "\n")
        .with_context(|| format!("writing {}", compare_path.display()))?;
    let compare_page = out.join("compare.html");
    write_page(&compare_page, html::compare_page(&report, &next, &diff))?;
    println!();
    print!("{}", terminal::comparison(&diff, 5));
    println!(
        "comparison {} and {}",
        compare_path.display(),
        compare_page.display()
    );
    println!();
    println!(
        "next: tapedeck captures show {}",
        recorded.capture.display()
    );
    println!("      tapedeck report render {}", report_path.display());
    println!(
        "      tapedeck compare {} {}",
        report_path.display(),
        next_path.display()
    );

    if args.keep {
        println!(
            "demo backend still running on {} (Ctrl-C stops it)",
            backend.url()
        );
        backend_shutdown.on_signals();
        backend.finished().await;
    } else {
        backend.stop().await;
    }
    Ok(Exit::Success)
}

/// One of the demo's replays, with the live progress line.
async fn demo_replay(
    capture: &Path,
    credentials: &Path,
    backend: BackendConfig,
    profile: Profile,
    report: &Path,
) -> anyhow::Result<Report> {
    let live = Arc::new(LiveStats::default());
    let stages = profile.stages.iter().map(|s| s.name.clone()).collect();
    let progress = progress_line(live.clone(), stages);
    let result = tapedeck::demo::replay(capture, credentials, backend, profile, report, live).await;
    progress.abort();
    Ok(result?)
}
