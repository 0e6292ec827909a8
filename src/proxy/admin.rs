//! The admin endpoint: `GET /healthz` (is it recording), `GET /livez` (is
//! it serving) and Prometheus `GET /metrics`.
//!
//! A separate listener so that probes and scrapes are never recorded and
//! never compete with proxied traffic for the proxy's port. `/healthz`
//! answers 503 with the reason while the capture store refuses batches
//! (records are being dropped for it), and `ok` otherwise.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::metrics::ProxyMetrics;
use crate::shutdown::Shutdown;

/// Serves the admin endpoint until `shutdown` fires.
pub async fn serve(listener: TcpListener, metrics: Arc<ProxyMetrics>, shutdown: Shutdown) {
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
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
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

fn respond(req: &Request<Incoming>, metrics: &ProxyMetrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => match metrics.writer.storage_fault() {
            None => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
            // Traffic still flows; what is said is that it is not being
            // recorded, so a probe or an alert can tell.
            Some((reason, error)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                Bytes::from(format!(
                    "recording degraded: dropping records ({}): {error}\n",
                    reason.as_str()
                )),
            ),
        },
        // The process serves: for Kubernetes probes, which must not take
        // a proxy whose recording is degraded out of rotation (traffic is
        // forwarded either way) or restart it.
        (&Method::GET, "/livez") => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(metrics.encode()),
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
