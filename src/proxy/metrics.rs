//! Prometheus metrics of a recording proxy, served by [`super::admin`].

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::capture::writer::WriterMetrics;

/// Label set of `tapedeck_upstream_errors_total`: `kind`.
pub type ErrorLabels = Vec<(&'static str, &'static str)>;

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct ProxyMetrics {
    registry: Registry,
    /// Requests received (recorded or not).
    pub requests: Counter,
    /// Requests the proxy refused itself (CONNECT, foreign absolute-form).
    pub refused: Counter,
    /// Client TLS handshakes that failed or timed out.
    pub tls_handshake_failures: Counter,
    /// Upstream failures by kind.
    pub upstream_errors: Family<ErrorLabels, Counter>,
    /// Time from request arrival to the end of the response, seconds.
    pub latency: Histogram,
    /// Sessions tracked in memory.
    pub live_sessions: Gauge,
    /// Exchanges of sessions outside the sample (`record --sample`):
    /// forwarded, neither recorded nor dropped.
    pub unsampled: Counter,
    /// The capture writer's counters.
    pub writer: WriterMetrics,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tapedeck");
        let requests = Counter::default();
        let refused = Counter::default();
        let tls_handshake_failures = Counter::default();
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        let latency = crate::admin::latency_histogram();
        let live_sessions = Gauge::default();
        let unsampled = Counter::default();
        let writer = WriterMetrics::default();
        registry.register(
            "requests",
            "Requests received by the proxy",
            requests.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests refused by the proxy (CONNECT, other hosts)",
            refused.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Client TLS handshakes that failed or timed out (no or an untrusted client certificate, a client that does not trust the proxy's)",
            tls_handshake_failures.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures by kind",
            upstream_errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Arrival to end of response",
            latency.clone(),
        );
        registry.register(
            "live_sessions",
            "Sessions tracked in memory",
            live_sessions.clone(),
        );
        registry.register(
            "exchanges_recorded",
            "Exchanges committed to the capture",
            writer.recorded.clone(),
        );
        registry.register(
            "exchanges_unsampled",
            "Exchanges of sessions outside the sample (record --sample): forwarded, not recorded, not dropped",
            unsampled.clone(),
        );
        registry.register(
            "records_dropped",
            "Exchanges observed but not stored, by reason: queue_full, disk_full, store_busy, store_error, drain_timeout, flush_timeout, redaction_failed",
            writer.dropped.clone(),
        );
        registry.register(
            "ws_frames_dropped",
            "WebSocket frames not stored: past --ws-max-frames/--ws-max-bytes, or in a part of a socket's frames the writer's queue had no room for",
            writer.ws_frames_dropped.clone(),
        );
        registry.register(
            "writer_queue_bytes",
            "Bytes of records waiting for the capture writer",
            writer.queue_bytes.clone(),
        );
        ProxyMetrics {
            registry,
            requests,
            refused,
            tls_handshake_failures,
            upstream_errors,
            latency,
            live_sessions,
            unsampled,
            writer,
        }
    }
}

impl ProxyMetrics {
    /// Counts an upstream failure of `kind`.
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&vec![("kind", kind)])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
