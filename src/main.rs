//! The `tapedeck` binary: parse, set up logging, run, map the outcome to an
//! exit code (0 ok, 1 failed thresholds or regression, 2 usage or input
//! error, 3 aborted by a safety limit).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use cli::{
    CapturesCommand, Cli, Command, CompareArgs, DemoArgs, DemoBackendArgs, RecordArgs, ReplayArgs,
    ReportCommand,
};
use tapedeck::capture::Store;
use tapedeck::demo::backend::{BackendConfig, DemoBackend};
use tapedeck::demo::script::{self, Population, Progress};
use tapedeck::proxy::{Recording, admin};
use tapedeck::report::Verdict;
use tapedeck::report::outcome::LiveStats;
use tapedeck::report::render::{html, markdown, terminal};
use tapedeck::shutdown::Shutdown;

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
            Command::Record(args) => record(args).await,
            Command::Captures(cmd) => captures(cmd).await,
            Command::Demo(args) => demo(args).await,
            Command::DemoBackend(args) => demo_backend(args).await,
            Command::Replay(args) => replay(*args).await,
            Command::Report(cmd) => report(cmd).await,
            Command::Compare(args) => compare(args),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_INPUT)
        }
    }
}

async fn record(args: RecordArgs) -> anyhow::Result<u8> {
    let plan = args.into_plan()?;
    let store = Store::create(&plan.capture).await?;
    let listener = TcpListener::bind(plan.listen)
        .await
        .with_context(|| format!("listening on {}", plan.listen))?;
    let admin_listener = match plan.admin {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} for --admin"))?,
        ),
        None => None,
    };
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let upstream = plan.config.upstream.as_str().to_string();
    let probe = (
        plan.config.upstream.clone(),
        plan.config.upstream_tls.clone(),
    );
    let scheme = if plan.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let recording =
        Recording::start(listener, store.clone(), plan.config, shutdown.clone()).await?;
    status_line(format_args!(
        "tapedeck: recording {scheme}://{} -> {} into {} (run {})",
        recording.local_addr(),
        upstream,
        store.path().display(),
        recording.run_id()
    ));
    // Recording starts either way (the upstream may come up later), but a
    // wrong address or CA is said now rather than by the first 502s.
    tokio::spawn(async move {
        let (upstream, tls) = probe;
        if let Err(e) = upstream.probe(Some(&tls), Duration::from_secs(5)).await {
            tracing::warn!(
                upstream = upstream.as_str(),
                "the upstream does not answer yet: {e}; requests get 502 until it does"
            );
        }
    });
    if let Some(l) = admin_listener {
        let addr = l.local_addr().context("admin listener address")?;
        status_line(format_args!(
            "tapedeck: admin on http://{addr} (/healthz, /metrics)"
        ));
        tokio::spawn(admin::serve(l, recording.metrics(), shutdown.clone()));
    }
    let run = recording.finished().await?;
    store.close().await;
    status_line(format_args!(
        "tapedeck: stopped; {} -> {}",
        terminal::run_line(&run),
        store.path().display()
    ));
    Ok(0)
}

/// A status line of the long-running proxy. Its stdout may be gone (a
/// supervisor that stopped reading): the proxy keeps recording and stops
/// cleanly all the same, so a failed write is not an error.
fn status_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

async fn captures(cmd: CapturesCommand) -> anyhow::Result<u8> {
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
            if json {
                let doc = serde_json::json!({ "run": run, "routes": routes, "sessions": sessions });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", terminal::run_details(&run, &sessions, &routes, limit));
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
    Ok(0)
}

async fn demo(args: DemoArgs) -> anyhow::Result<u8> {
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
        terminal::run_details(&recorded.run, &recorded.sessions, &recorded.routes, 8)
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
        tapedeck::profile::Profile::single(5, 1.0),
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
    Ok(0)
}

async fn demo_backend(args: DemoBackendArgs) -> anyhow::Result<u8> {
    let config = args.config()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let backend =
        DemoBackend::start(listener, config, shutdown).context("starting the demo backend")?;
    println!(
        "tapedeck demo-backend: serving the demo chat API on {}",
        backend.url()
    );
    backend.finished().await;
    Ok(0)
}

async fn replay(args: ReplayArgs) -> anyhow::Result<u8> {
    let mut plan = args.into_plan()?;
    let store = Store::open(&plan.capture).await?;
    if !plan.tokens.is_empty() {
        let mut recorded: Vec<String> = Vec::new();
        for run in store.select_runs(plan.config.run).await? {
            for credential in store.credentials_in_order(run.id).await? {
                if !recorded.contains(&credential) {
                    recorded.push(credential);
                }
            }
        }
        if recorded.len() > plan.tokens.len() {
            tracing::warn!(
                credentials = recorded.len(),
                tokens = plan.tokens.len(),
                "fewer tokens than recorded credentials: tokens are reused in turn"
            );
        }
        let mut credentials = (*plan.config.credentials).clone();
        for (i, credential) in recorded.into_iter().enumerate() {
            let token = plan.tokens[i % plan.tokens.len()].clone();
            credentials.markers.insert(credential, token);
        }
        plan.config.credentials = Arc::new(credentials);
    }
    if plan.explain {
        let runs: Vec<i64> = store
            .select_runs(plan.config.run)
            .await?
            .iter()
            .map(|r| r.id)
            .collect();
        let rules = tapedeck::replay::rules::Rules::compile(&plan.config.profile.rules)
            .map_err(tapedeck::replay::ReplayError::Rules)?;
        let mut explanation = tapedeck::replay::explain::Explanation::with_rules(rules);
        for span in store.session_spans(&runs).await?.0 {
            if let Some(ranges) = &plan.config.sessions
                && !ranges
                    .iter()
                    .any(|(a, b)| (*a..=*b).contains(&span.session_no))
            {
                continue;
            }
            let exchanges = store
                .session_exchanges(span.run_id, span.session_no)
                .await?;
            explanation.add_session(exchanges, &plan.config.credentials);
        }
        print!("{}", explanation.render());
        return Ok(0);
    }
    let stage_names: Vec<String> = plan
        .config
        .profile
        .stages
        .iter()
        .map(|s| s.name.clone())
        .collect();
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
    println!(
        "verdict: {} — report {}",
        run.report.verdict,
        plan.report.display()
    );
    Ok(match run.report.verdict {
        Verdict::Pass => 0,
        Verdict::Fail => EXIT_FAILED,
        Verdict::Aborted => EXIT_ABORTED,
    })
}

/// A bar counting to `len` on a terminal; hidden otherwise, so output
/// stays parseable.
fn counting_bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

/// A live line on a terminal (stage, requests, rate, p95, errors, in flight);
/// nothing otherwise, so output stays parseable.
fn progress_line(live: Arc<LiveStats>, stages: Vec<String>) -> tokio::task::JoinHandle<()> {
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
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
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

async fn report(cmd: ReportCommand) -> anyhow::Result<u8> {
    match cmd {
        ReportCommand::Merge { files, output } => {
            let mut reports = Vec::new();
            for f in files {
                let r = tapedeck::report::load(&f)?;
                reports.push((f, r));
            }
            let merged = tapedeck::report::merge(&reports, None)?;
            tapedeck::report::save(&merged, &output)?;
            print!("{}", terminal::stages_table(&merged));
            println!("merged {} reports into {}", reports.len(), output.display());
        }
        ReportCommand::Render {
            file,
            markdown,
            html: page,
        } => {
            let r = tapedeck::report::load(&file)?;
            if let Some(path) = &page {
                write_page(path, html::report_page(&r))?;
                println!("page {}", path.display());
                return Ok(0);
            }
            if markdown {
                print!("{}", markdown::report_markdown(&r));
                return Ok(0);
            }
            print!("{}", terminal::stages_table(&r));
            println!();
            for s in &r.stages {
                print!("{}", terminal::stage_details(s, 20));
            }
            println!();
            print!("{}", terminal::capacity(&r));
            print!("{}", terminal::warnings_text(&r));
            println!("verdict: {}", r.verdict);
        }
    }
    Ok(0)
}

fn compare(args: CompareArgs) -> anyhow::Result<u8> {
    use tapedeck::report::compare::{self, Thresholds};
    let thresholds = Thresholds::parse(&args.threshold)
        .map_err(anyhow::Error::msg)
        .context("--threshold")?;
    let base = tapedeck::report::load(&args.base)?;
    let candidate = tapedeck::report::load(&args.candidate)?;
    let diff = compare::compare(&base, &candidate, &thresholds);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&diff)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        write_page(path, html::compare_page(&base, &candidate, &diff))?;
    }
    if args.markdown {
        print!("{}", markdown::comparison_markdown(&diff));
    } else {
        print!("{}", terminal::comparison(&diff, 10));
    }
    Ok(if diff.regression { EXIT_FAILED } else { 0 })
}

/// Writes an HTML page, creating its folder.
fn write_page(path: &std::path::Path, page: Result<String, String>) -> anyhow::Result<()> {
    let page = page.map_err(anyhow::Error::msg)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))
}

/// One of the demo's replays, with the live progress line.
async fn demo_replay(
    capture: &std::path::Path,
    credentials: &std::path::Path,
    backend: tapedeck::demo::backend::BackendConfig,
    profile: tapedeck::profile::Profile,
    report: &std::path::Path,
) -> anyhow::Result<tapedeck::report::Report> {
    let live = Arc::new(LiveStats::default());
    let stages = profile.stages.iter().map(|s| s.name.clone()).collect();
    let progress = progress_line(live.clone(), stages);
    let result = tapedeck::demo::replay(capture, credentials, backend, profile, report, live).await;
    progress.abort();
    Ok(result?)
}
