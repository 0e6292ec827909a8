//! The `tapedeck` binary: parse, set up logging, run, map the outcome to an
//! exit code (0 ok, 1 failed thresholds or regression, 2 usage or input
//! error, 3 aborted by a safety limit).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use cli::{CapturesCommand, Cli, Command, DemoArgs, DemoBackendArgs, RecordArgs};
use tapedeck::capture::Store;
use tapedeck::demo::backend::{BackendConfig, DemoBackend};
use tapedeck::demo::script::{self, Population, Progress};
use tapedeck::proxy::{Recording, admin};
use tapedeck::render;
use tapedeck::shutdown::Shutdown;

/// Usage or input error.
const EXIT_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Record(_) | Command::DemoBackend(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("tapedeck={default_level},warn"))
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
    let recording =
        Recording::start(listener, store.clone(), plan.config, shutdown.clone()).await?;
    println!(
        "tapedeck: recording http://{} -> {} into {} (run {})",
        recording.local_addr(),
        upstream,
        plan.capture.display(),
        recording.run_id()
    );
    if let Some(l) = admin_listener {
        let addr = l.local_addr().context("admin listener address")?;
        println!("tapedeck: admin on http://{addr} (/healthz, /metrics)");
        tokio::spawn(admin::serve(l, recording.metrics(), shutdown.clone()));
    }
    let run = recording.finished().await?;
    store.close().await;
    println!(
        "tapedeck: stopped; {} -> {}",
        render::run_line(&run),
        plan.capture.display()
    );
    Ok(0)
}

async fn captures(cmd: CapturesCommand) -> anyhow::Result<u8> {
    match cmd {
        CapturesCommand::List { path, json } => {
            let store = Store::open(&path).await?;
            let runs = store.runs().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else if runs.is_empty() {
                println!("{} holds no recording run yet", path.display());
            } else {
                print!("{}", render::runs_table(&runs));
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
                print!("{}", render::run_details(&run, &sessions, &routes, limit));
            }
        }
    }
    Ok(0)
}

async fn demo(args: DemoArgs) -> anyhow::Result<u8> {
    if args.users == 0 {
        anyhow::bail!("--users must be at least 1");
    }
    let out = args.out.unwrap_or_else(script::default_out_dir);
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding a loopback port for the demo backend")?;
    let backend_shutdown = Shutdown::new();
    let backend = DemoBackend::start(listener, BackendConfig::default(), backend_shutdown.clone())
        .context("starting the demo backend")?;
    println!("tapedeck demo: chat backend on {}", backend.url());
    println!(
        "recording {} scripted chat users through the proxy into {}",
        args.users,
        out.join("capture.db").display()
    );

    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(args.users as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed:>3} users done {pos}/{len} {wide_bar} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        bar
    } else {
        ProgressBar::hidden()
    };
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
    let population = Population {
        users: args.users,
        seed: args.seed,
        ..Population::default()
    };
    let recorded = tapedeck::demo::record(&backend.url(), &out, population, tx).await?;
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
        render::run_details(&recorded.run, &recorded.sessions, &recorded.routes, 8)
    );
    println!();
    println!(
        "next: tapedeck captures show {}",
        recorded.capture.display()
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
