//! What the recording proxy's admin endpoint says: `GET /healthz` (is it
//! recording), `GET /livez` (is it serving) and Prometheus `GET /metrics`
//! ([`super::metrics`]), served by the shared [`crate::admin`] server.
//!
//! A separate listener so that probes and scrapes are never recorded and
//! never compete with proxied traffic for the proxy's port. `/healthz`
//! answers 503 with the reason while the capture store refuses batches
//! (records are being dropped for it), and `ok` otherwise.

use std::sync::Arc;

use tokio::net::TcpListener;

use super::metrics::ProxyMetrics;
use crate::admin::Endpoints;
use crate::shutdown::Shutdown;

/// Serves the admin endpoint until `shutdown` fires.
pub async fn serve(listener: TcpListener, metrics: Arc<ProxyMetrics>, shutdown: Shutdown) {
    crate::admin::serve(listener, metrics, shutdown).await;
}

impl Endpoints for ProxyMetrics {
    fn health(&self) -> Result<(), String> {
        match self.writer.storage_fault() {
            None => Ok(()),
            // Traffic still flows; what is said is that it is not being
            // recorded, so a probe or an alert can tell.
            Some((reason, error)) => Err(format!(
                "recording degraded: dropping records ({}): {error}",
                reason.as_str()
            )),
        }
    }

    fn metrics(&self) -> String {
        self.encode()
    }
}
