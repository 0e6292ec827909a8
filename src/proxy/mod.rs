//! The recording reverse proxy.
//!
//! The accept loop here serves HTTP/1.1 and h2c connections and drains
//! them on shutdown; `forward` turns one client request into one upstream request
//! and answers 502/504/403/405 itself where it must; `tap` copies bodies up
//! to the cap and hands finished exchanges to the capture sink; `session`
//! keys requests into user sessions and `sample` decides which sessions are
//! recorded; `admin` serves health and metrics.
//! The proxy depends on `capture` for types, the sink and (at start) the
//! store's redaction key and run row; it never waits on the store while
//! serving: recording can fail without a request failing.

pub mod admin;
pub(crate) mod forward;
pub mod import;
pub mod metrics;
pub mod sample;
pub mod session;
pub mod tap;
pub(crate) mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::either::Either;

use crate::capture::redact::{RedactionConfig, Redactor};
use crate::capture::writer::{self, DropReason, WriterConfig};
use crate::capture::{CaptureError, CaptureSink, NewRun, RunSummary, Store};
use crate::shutdown::Shutdown;
use crate::tls::{ClientTls, Connector};
use crate::upstream::{Upstream, UpstreamError};
use metrics::ProxyMetrics;
use session::{SessionConfig, SessionTracker};
use tap::RequestBody;
pub use websocket::WsLimits;

/// Errors that stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream URL is unusable.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
    /// The capture store failed.
    #[error(transparent)]
    Capture(#[from] CaptureError),
}

/// Path filters: which requests are recorded (all are forwarded).
#[derive(Debug, Clone, Default)]
pub struct PathFilter {
    /// Record only paths matching one of these globs (`*` matches any run
    /// of characters); empty means all.
    pub include: Vec<String>,
    /// Never record paths matching one of these globs.
    pub exclude: Vec<String>,
}

impl PathFilter {
    /// Whether a request path is recorded.
    pub fn records(&self, path: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob_match(p, path)))
            && !self.exclude.iter().any(|p| glob_match(p, path))
    }
}

/// `*` matches any run of characters, everything else itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Everything `tapedeck record` is configured with.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// Where requests go.
    pub upstream: Upstream,
    /// Body cap in bytes (default 1 MiB).
    pub max_body: usize,
    /// Longest wait for the upstream's response head before a 504.
    pub upstream_timeout: Duration,
    /// Forward the client's Host header instead of the upstream's.
    pub preserve_host: bool,
    /// Largest request head accepted (431 beyond it).
    pub max_header_bytes: usize,
    /// Session keying.
    pub session: SessionConfig,
    /// Redaction.
    pub redaction: RedactionConfig,
    /// Which paths are recorded.
    pub filter: PathFilter,
    /// The writer queue.
    pub writer: WriterConfig,
    /// How much of each WebSocket is kept.
    pub websocket: WsLimits,
    /// Longest wait for in-flight requests on shutdown.
    pub drain_timeout: Duration,
    /// Serve TLS on the listener (`--tls-cert`, `--tls-key`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How the upstream's certificate is checked.
    pub upstream_tls: ClientTls,
}

impl RecordConfig {
    /// Defaults for an upstream, as docs/recording.md gives them.
    pub fn new(upstream: Upstream) -> Self {
        RecordConfig {
            upstream,
            max_body: 1024 * 1024,
            upstream_timeout: Duration::from_secs(30),
            preserve_host: false,
            max_header_bytes: 32 * 1024,
            session: SessionConfig::default(),
            redaction: RedactionConfig::default(),
            filter: PathFilter::default(),
            writer: WriterConfig::default(),
            websocket: WsLimits::default(),
            drain_timeout: Duration::from_secs(30),
            tls: None,
            upstream_tls: ClientTls::default(),
        }
    }
}

/// State shared by every connection of a recording proxy.
#[derive(Debug)]
pub(crate) struct ProxyState {
    config: RecordConfig,
    client: Client<Connector, RequestBody>,
    /// HTTP/1.1 only, for protocol upgrades: an upstream that offers h2
    /// cannot switch an h2 stream to WebSocket with `Upgrade`.
    upgrade_client: Client<Connector, RequestBody>,
    pub(crate) sink: CaptureSink,
    pub(crate) redactor: Redactor,
    pub(crate) sessions: SessionTracker,
    pub(crate) metrics: Arc<ProxyMetrics>,
    pub(crate) run_started: Instant,
    /// Fires when the proxy stops: switched connections are cut and
    /// recorded.
    pub(crate) shutdown: Shutdown,
    /// Exchanges that have arrived and are not yet queued for the writer.
    pub(crate) in_flight: Arc<InFlight>,
}

/// Counts exchanges between arrival and the writer's queue, so that
/// stopping waits until each is recorded. An h2 stream's response body is
/// dropped by a task of its own, possibly after its connection has ended,
/// and a WebSocket's handshake is recorded when the socket closes: neither
/// is covered by waiting for the connections.
///
/// When the drain timeout ends the wait, [`InFlight::seal`] counts the
/// exchanges still open, and from then on they are no longer queued: each
/// is counted as dropped exactly once, before the run is closed.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    active: std::sync::atomic::AtomicUsize,
    /// Write-locked only by `seal`; queueing an exchange holds it for
    /// reading, so no exchange is half queued while the open ones are
    /// counted.
    sealed: std::sync::RwLock<bool>,
    idle: tokio::sync::Notify,
}

/// Held by one exchange until it is queued (see [`InFlight`]).
#[derive(Debug)]
pub(crate) struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub(crate) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.active
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// Waits until every exchange that arrived has been queued.
    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.active.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Stops queueing and returns how many exchanges are still open; they
    /// are the caller's to count as dropped.
    fn seal(&self) -> u64 {
        let mut sealed = self.sealed.write().unwrap_or_else(|p| p.into_inner());
        *sealed = true;
        self.active.load(std::sync::atomic::Ordering::SeqCst) as u64
    }
}

impl InFlightGuard {
    /// Queues the exchange with `send`, unless the proxy has stopped
    /// waiting for it (then it was counted as dropped already).
    pub(crate) fn queue(self, send: impl FnOnce()) {
        let in_flight = self.0.clone();
        let sealed = in_flight.sealed.read().unwrap_or_else(|p| p.into_inner());
        if !*sealed {
            send();
        }
        // The count drops while the lock is held.
        drop(self);
        drop(sealed);
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self
            .0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

/// A running recording proxy.
#[derive(Debug)]
pub struct Recording {
    addr: SocketAddr,
    run_id: i64,
    metrics: Arc<ProxyMetrics>,
    shutdown: Shutdown,
    task: JoinHandle<Result<RunSummary, CaptureError>>,
}

impl Recording {
    /// Starts a recording run on `store` and serves `listener` until
    /// `shutdown` fires (or [`Recording::stop`] is called).
    ///
    /// # Errors
    /// When the store cannot start a run or a setting is invalid.
    pub async fn start(
        listener: TcpListener,
        store: Store,
        config: RecordConfig,
        shutdown: Shutdown,
    ) -> Result<Recording, ProxyError> {
        let addr = listener
            .local_addr()
            .map_err(|e| ProxyError::Config(format!("listener has no address: {e}")))?;
        let key = store.redaction_key().await?;
        let redactor = Redactor::new(key, &config.redaction).map_err(ProxyError::Config)?;
        let redaction = redactor.describe();
        tracing::info!(redaction = %redaction, "redacting");
        let run_id = store
            .begin_run(&NewRun {
                upstream: config.upstream.as_str(),
                listen: &addr.to_string(),
                max_body_bytes: config.max_body as u64,
                redaction: &redaction,
                sample_fraction: config.session.sample.get(),
            })
            .await?;
        let lock = store.lock_run(run_id).await?;
        let metrics = Arc::new(ProxyMetrics::default());
        let (sink, writer) = writer::spawn(
            store,
            run_id,
            lock,
            config.writer.clone(),
            metrics.writer.clone(),
            redactor.clone(),
        );

        let tls = &config.upstream_tls;
        let pooled = |connector| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_timer(TokioTimer::new())
                .build(connector)
        };
        let client = pooled(
            tls.connector(config.upstream_timeout)
                .map_err(ProxyError::Config)?,
        );
        let upgrade_client = pooled(
            tls.http1_connector(config.upstream_timeout)
                .map_err(ProxyError::Config)?,
        );
        let state = Arc::new(ProxyState {
            sessions: SessionTracker::new(config.session.clone(), metrics.live_sessions.clone()),
            config,
            client,
            upgrade_client,
            sink,
            redactor,
            metrics: metrics.clone(),
            run_started: Instant::now(),
            shutdown: shutdown.clone(),
            in_flight: Arc::default(),
        });
        let task = tokio::spawn(accept_loop(listener, state, shutdown.clone(), writer));
        Ok(Recording {
            addr,
            run_id,
            metrics,
            shutdown,
            task,
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The id of the recording run in the store.
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// The proxy's metrics (for the admin endpoint).
    pub fn metrics(&self) -> Arc<ProxyMetrics> {
        self.metrics.clone()
    }

    /// Waits until the proxy has stopped (after `shutdown` fired), drained
    /// and flushed; returns the run's summary.
    ///
    /// # Errors
    /// When the store fails while closing the run.
    pub async fn finished(self) -> Result<RunSummary, CaptureError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(CaptureError::Open {
                path: Default::default(),
                source: format!("proxy task failed: {e}").into(),
            }),
        }
    }

    /// Stops accepting, drains in-flight requests, flushes the capture.
    ///
    /// # Errors
    /// When the store fails while closing the run.
    pub async fn stop(self) -> Result<RunSummary, CaptureError> {
        self.shutdown.trigger();
        self.finished().await
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: Shutdown,
    writer: writer::WriterHandle,
) -> Result<RunSummary, CaptureError> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(state.config.max_header_bytes.max(8192));
    // RFC 8441: WebSockets over h2 streams (extended CONNECT).
    builder
        .http2()
        .enable_connect_protocol()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(state.config.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning, keep serving established connections.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let tls = state.config.tls.clone();
        let metrics = state.metrics.clone();
        let state = state.clone();
        let service =
            hyper::service::service_fn(move |req| forward::handle(state.clone(), peer, local, req));
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let io = match tls {
                None => Either::Left(stream),
                Some(config) => {
                    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                    match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                        Ok(Ok(tls)) => Either::Right(tls),
                        failed => {
                            let error = match failed {
                                Ok(Err(e)) => e.to_string(),
                                _ => "timed out".to_string(),
                            };
                            // The first failure is a warning (a client
                            // without the certificate --tls-client-ca asks
                            // for, a client that does not trust ours); the
                            // rest are counted.
                            if metrics.tls_handshake_failures.inc() == 0 {
                                tracing::warn!(%peer, %error, "a client's TLS handshake failed; further failures are counted in tapedeck_tls_handshake_failures_total");
                            } else {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                            }
                            return;
                        }
                    }
                }
            };
            let served = watcher
                .watch(
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(io), service)
                        .into_owned(),
                )
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drain_timeout = state.config.drain_timeout;
    let in_flight = state.in_flight.clone();
    let metrics = state.metrics.clone();
    drop(state);
    // Switched connections are cut by the shutdown signal itself and
    // record what they saw; wait for them as for requests.
    let drained = async {
        graceful.shutdown().await;
        in_flight.idle().await;
    };
    tokio::select! {
        () = drained => {}
        () = tokio::time::sleep(drain_timeout) => {}
    }
    let cut = in_flight.seal();
    if cut > 0 {
        metrics.writer.drop_records(DropReason::DrainTimeout, cut);
        tracing::warn!(
            drain_timeout = %humantime::format_duration(drain_timeout),
            exchanges = cut,
            "exchanges still open after the drain timeout are counted as dropped; closing the capture"
        );
    }
    writer.close().await
}
