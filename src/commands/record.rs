//! `tapedeck record`: binds the listeners the plan names, opens the
//! capture, starts the recording proxy and prints its status lines until a
//! signal stops it. The proxy itself is the library's.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use super::{Exit, LOG_TARGET};
use crate::cli::record::RecordArgs;
use tapedeck::capture::Store;
use tapedeck::proxy::{Recording, admin};
use tapedeck::report::render::terminal;
use tapedeck::shutdown::Shutdown;

/// Runs `tapedeck record`.
pub async fn run(args: RecordArgs) -> anyhow::Result<Exit> {
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
                target: LOG_TARGET,
                upstream = upstream.as_str(),
                "the upstream does not answer yet: {e}; requests get 502 until it does"
            );
        }
    });
    if let Some(l) = admin_listener {
        let addr = l.local_addr().context("admin listener address")?;
        status_line(format_args!(
            "tapedeck: admin on http://{addr} (/healthz, /livez, /metrics)"
        ));
        tokio::spawn(admin::serve(l, recording.metrics(), shutdown.clone()));
    }
    let metrics = recording.metrics();
    let run = recording.finished().await?;
    store.close().await;
    status_line(format_args!(
        "tapedeck: stopped; {} -> {}",
        terminal::recorded_line(&run, metrics.unsampled.get()),
        store.path().display()
    ));
    // The capture is closed and usable, so this is still a success; the
    // line says what it lacks.
    if run.dropped > 0 {
        let reasons: Vec<String> = metrics
            .writer
            .dropped_by_reason()
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        status_line(format_args!(
            "tapedeck: warning: {} exchanges were answered but not recorded ({}); the capture holds the rest",
            run.dropped,
            reasons.join(", ")
        ));
    }
    Ok(Exit::Success)
}

/// A status line of the long-running proxy. Its stdout may be gone (a
/// supervisor that stopped reading): the proxy keeps recording and stops
/// cleanly all the same, so a failed write is not an error.
fn status_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}
