//! The demo: a built-in chat backend ([`backend`]) and a scripted
//! population of chat users ([`script`]) recorded through the proxy.
//!
//! `tapedeck demo` shows the whole product on a fresh machine with nothing
//! else installed; tests and benchmarks use the backend as a realistic
//! target on an ephemeral loopback port.

pub mod backend;
pub mod script;

use std::path::{Path, PathBuf};

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::capture::{RunSummary, SessionSummary, Store, store::RouteCount};
use crate::proxy::{ProxyError, RecordConfig, Recording, Upstream};
use crate::shutdown::Shutdown;
use script::{Population, Progress, ScriptOutcome};

/// What the recording part of the demo produced.
#[derive(Debug)]
pub struct RecordedDemo {
    /// The proxy's address while it ran.
    pub proxy_url: String,
    /// The capture file.
    pub capture: PathBuf,
    /// The recording run.
    pub run: RunSummary,
    /// Its sessions.
    pub sessions: Vec<SessionSummary>,
    /// Its routes.
    pub routes: Vec<RouteCount>,
    /// What the script saw.
    pub script: ScriptOutcome,
}

/// Records the scripted population through a proxy in front of
/// `backend_url`, into `out/capture.db`.
///
/// # Errors
/// When the capture cannot be created or the proxy cannot start.
pub async fn record(
    backend_url: &str,
    out: &Path,
    population: Population,
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<RecordedDemo, ProxyError> {
    let capture = out.join("capture.db");
    let store = Store::create(&capture).await?;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
        ProxyError::Config(format!("cannot bind a loopback port for the proxy: {e}"))
    })?;
    let config = RecordConfig::new(Upstream::parse(backend_url)?);
    let recording = Recording::start(listener, store.clone(), config, Shutdown::new()).await?;
    let proxy_addr = recording.local_addr();
    let script = script::drive(proxy_addr, population, progress).await;
    let run = recording.stop().await?;
    let sessions = store.sessions(run.id).await?;
    let routes = store.route_counts(run.id).await?;
    store.close().await;
    Ok(RecordedDemo {
        proxy_url: format!("http://{proxy_addr}"),
        capture,
        run,
        sessions,
        routes,
        script,
    })
}
