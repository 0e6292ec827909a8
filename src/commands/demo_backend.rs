//! `tapedeck demo-backend`: serves the built-in demo chat backend on the
//! address given until a signal stops it. The backend is
//! `tapedeck::demo::backend`'s.

use anyhow::Context;
use tokio::net::TcpListener;

use super::Exit;
use crate::cli::demo::DemoBackendArgs;
use tapedeck::demo::backend::DemoBackend;
use tapedeck::shutdown::Shutdown;

/// Runs `tapedeck demo-backend`.
pub async fn run(args: DemoBackendArgs) -> anyhow::Result<Exit> {
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
    Ok(Exit::Success)
}
