//! The demo: a built-in chat backend ([`backend`]) and a scripted
//! population of chat users ([`script`]) recorded through the proxy.
//!
//! `tapedeck demo` shows the whole product on a fresh machine with nothing
//! else installed; tests and benchmarks use the backend as a realistic
//! target on an ephemeral loopback port.

pub mod backend;
pub mod client;
pub mod script;

use std::path::{Path, PathBuf};

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use std::sync::Arc;
use std::time::Duration;

use crate::capture::{RouteCount, RunSummary, SessionSummary, SocketSummary, Store};
use crate::profile::{Effect, Profile, RouteSlo};
use crate::proxy::{ProxyError, RecordConfig, Recording};
use crate::replay::correlate::Credentials;
use crate::replay::{ReplayConfig, ReplayError};
use crate::report::Report;
use crate::report::outcome::LiveStats;
use crate::shutdown::Shutdown;
use crate::upstream::Upstream;
use backend::{BackendConfig, DemoBackend};
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
    /// What its WebSockets hold.
    pub sockets: SocketSummary,
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
    let sockets = store.socket_summary(run.id).await?;
    store.close().await;
    Ok(RecordedDemo {
        proxy_url: format!("http://{proxy_addr}"),
        capture,
        run,
        sessions,
        routes,
        sockets,
        script,
    })
}

/// The replay target of the demo: a demo backend with a small capacity
/// (4 workers, `service_time` each: 200 requests/s at 20 ms), so that 10x
/// of the scripted population bends it, and the scripted users' accounts.
pub fn constrained_backend(service_time: Duration, population: &Population) -> BackendConfig {
    BackendConfig {
        workers: 4,
        service_time,
        accounts: Some(Arc::new(population.accounts())),
        ..BackendConfig::default()
    }
}

/// Writes `out/credentials.toml` (mode 0600): the scripted users'
/// passwords as the `[users]` table of a credentials file, which `replay
/// --credentials-file` reads and `demo-backend --accounts` serves. The
/// capture holds the passwords redacted, so a replay needs them.
///
/// # Errors
/// When the file cannot be written.
pub fn write_credentials(out: &Path, population: &Population) -> std::io::Result<PathBuf> {
    #[derive(serde::Serialize)]
    struct File {
        users: std::collections::BTreeMap<String, String>,
    }
    let text = toml::to_string(&File {
        users: population.accounts().into_iter().collect(),
    })
    .map_err(std::io::Error::other)?;
    let path = out.join("credentials.toml");
    crate::capture::store::create_private_file(&path)?;
    std::fs::write(
        &path,
        format!(
            "# The demo users' passwords (redacted in capture.db), for\n\
             # tapedeck replay --credentials-file and demo-backend --accounts.\n{text}"
        ),
    )?;
    Ok(path)
}

/// Errors of the demo's replay part.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Setting up failed.
    #[error("{0}")]
    Setup(String),
    /// The replay failed to start.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The capture failed.
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    /// The report could not be written.
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
}

/// Replays `capture` with `profile` and the credentials file `credentials`
/// against a fresh demo backend configured as `backend`, and writes the
/// report to `report`.
///
/// # Errors
/// When the credentials file cannot be read, the backend cannot start, the
/// capture cannot be read, or the report cannot be written.
pub async fn replay(
    capture: &Path,
    credentials: &Path,
    backend: BackendConfig,
    profile: Profile,
    report: &Path,
    live: Arc<LiveStats>,
) -> Result<Report, DemoError> {
    let credentials = Arc::new(Credentials::load(credentials).map_err(DemoError::Setup)?);
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
        DemoError::Setup(format!(
            "cannot bind a loopback port for the replay target: {e}"
        ))
    })?;
    let target = DemoBackend::start(listener, backend, Shutdown::new())
        .map_err(|e| DemoError::Setup(format!("cannot start the replay target: {e}")))?;
    let store = Store::open(capture).await?;
    let mut config = ReplayConfig::new(
        Upstream::parse(&target.url()).map_err(|e| DemoError::Setup(e.to_string()))?,
        profile,
        capture.display().to_string(),
    );
    config.credentials = credentials;
    // The backend serves from this process, beside the replay: what it
    // reads is the two together, as a backend and its load generator on
    // one staging box would be.
    config.observe_pids = vec![std::process::id()];
    let result = crate::replay::run(&store, config, live).await;
    target.stop().await;
    store.close().await;
    let out = result?.report;
    crate::report::save(&out, report)?;
    Ok(out)
}

/// The built-in capacity profile (1x, 5x, 10x), with what the demo
/// backend offers on top: per-route SLOs for sending and reading messages,
/// and its `/api/stats` message count as the proof that the sends were
/// stored.
///
/// # Errors
/// Never for the shipped file; a message if it were broken.
pub fn capacity_profile() -> Result<Profile, DemoError> {
    let mut profile = Profile::parse(crate::profile::CAPACITY, Path::new("capacity.toml"))
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    profile.slo.route = vec![
        RouteSlo {
            p95_ms: Some(250.0),
            ..RouteSlo::new("POST /api/conversations/*/messages")
        },
        RouteSlo {
            p95_ms: Some(350.0),
            ..RouteSlo::new("GET /api/conversations/*/messages")
        },
    ];
    profile.effects.push(Effect {
        name: "messages stored".into(),
        url: "/api/stats".into(),
        json_path: "$.messages".into(),
        route: "POST /api/conversations/*/messages".into(),
    });
    Ok(profile)
}
