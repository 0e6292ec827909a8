//! The admin endpoint of a long-running command, on a listener of its own:
//! `GET /healthz` (is it doing its job), `GET /livez` (is it serving) and
//! Prometheus `GET /metrics`.
//!
//! One HTTP server for both commands that have one: `record --admin`
//! (`proxy::admin` says what recording health is) and `replay --admin`
//! (`report::live` keeps the replay's series). What the answers say comes
//! from an [`Endpoints`]; this file only serves them. A leaf: it knows
//! nothing of the proxy, replay or reports.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::shutdown::Shutdown;

/// The latency histogram both `--admin` endpoints export (the proxy's
/// request durations, replay's per-route latency): 100 µs .. ~105 s in
/// 21 doubling buckets, so their panels read alike.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

/// What an admin endpoint answers.
pub trait Endpoints: Send + Sync + 'static {
    /// `/healthz`: `Ok` answers 200 `ok`; `Err(reason)` answers 503 with
    /// the reason.
    ///
    /// # Errors
    /// The reason the command is not doing its job (e.g. records dropped).
    fn health(&self) -> Result<(), String>;

    /// `/metrics`: the OpenMetrics text exposition of every series.
    fn metrics(&self) -> String;
}

/// The content type of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoint on `listener` until `shutdown` fires.
pub async fn serve<E: Endpoints>(listener: TcpListener, endpoints: Arc<E>, shutdown: Shutdown) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    continue;
                }
            },
            () = shutdown.wait() => return,
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let endpoints = endpoints.clone();
                async move { Ok::<_, Infallible>(respond(&req, &*endpoints)) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn respond<E: Endpoints>(req: &Request<Incoming>, endpoints: &E) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => match endpoints.health() {
            Ok(()) => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
            Err(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                Bytes::from(format!("{reason}\n")),
            ),
        },
        // The process serves: for Kubernetes probes, which must not take
        // a proxy whose recording is degraded out of rotation (traffic is
        // forwarded either way) or restart it.
        (&Method::GET, "/livez") => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            OPENMETRICS,
            Bytes::from(endpoints.metrics()),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"admin endpoints: /healthz, /livez, /metrics\n"),
        ),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
