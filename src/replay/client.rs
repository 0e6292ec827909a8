//! The replay's HTTP client: one recorded request in, one measured
//! response out. Bodies are read to the end (streams included), so the
//! measured time is the whole response, and the time to the response head
//! is kept apart.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::correlate::{AnswerNeeds, SocketValues};
use super::engine::{Dispatch, Sent};
use super::trace;
use crate::capture::StoredExchange;
use crate::codec;
use crate::report::outcome::StreamTiming;
use crate::tls::{ClientTls, Connector};
use crate::upstream::{HOP_BY_HOP, Upstream};

/// Largest response body kept for correlation.
const MAX_KEPT_BODY: usize = 1024 * 1024;

/// Header marking replayed traffic, so backends can mute side effects.
pub const REPLAY_HEADER: &str = "x-tapedeck-replay";

/// Recorded headers the client sets itself for the replayed request.
const SET_BY_CLIENT: [&str; 3] = ["host", "content-length", "x-tapedeck-replay"];

fn replayed(name: &str) -> bool {
    !SET_BY_CLIENT
        .iter()
        .chain(HOP_BY_HOP.iter())
        .chain(trace::RECORDED_TRACE.iter())
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// Sends recorded requests to the target.
#[derive(Debug, Clone)]
pub struct ReplayClient {
    client: Client<Connector, Full<Bytes>>,
    target: Arc<Upstream>,
    host: HeaderValue,
    timeout: Duration,
    replay_id: Option<HeaderValue>,
    /// Send a fresh `traceparent` with every request.
    traceparent: bool,
    overrides: Vec<(HeaderName, HeaderValue)>,
    /// The parts of answers correlation reads; the rest is dropped.
    needs: AnswerNeeds,
    /// TLS for sockets to an https:// target (they connect on their own,
    /// ALPN http/1.1), made once.
    socket_tls: Arc<rustls::ClientConfig>,
}

impl ReplayClient {
    /// A pooled client for `target` (http or https, h2 when the target
    /// offers it over ALPN, or always with `http2`: prior knowledge for
    /// http://, streams multiplexed on one connection); `replay_id` is
    /// sent as `X-Tapedeck-Replay` unless `None`.
    ///
    /// # Errors
    /// When the TLS settings cannot be used (a bad `--ca-file`).
    pub fn new(
        target: Upstream,
        timeout: Duration,
        replay_id: Option<&str>,
        tls: &ClientTls,
        http2: bool,
    ) -> Result<Self, String> {
        let connector = tls.connector(timeout)?;
        let mut socket_tls = tls.config()?;
        socket_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(connector);
        let host = HeaderValue::from_str(target.authority().as_str())
            .unwrap_or(HeaderValue::from_static("localhost"));
        Ok(ReplayClient {
            client,
            target: Arc::new(target),
            host,
            timeout,
            replay_id: replay_id.and_then(|id| HeaderValue::from_str(id).ok()),
            traceparent: false,
            overrides: Vec::new(),
            needs: AnswerNeeds::default(),
            socket_tls: Arc::new(socket_tls),
        })
    }

    /// Sends a fresh W3C `traceparent` with every request (off: none;
    /// a recorded one is never resent either way).
    pub fn tracing(mut self, on: bool) -> Self {
        self.traceparent = on;
        self
    }

    /// Keeps of each answer what correlation reads (by default
    /// `Location`, `Set-Cookie` and JSON bodies).
    pub fn keeping(mut self, needs: AnswerNeeds) -> Self {
        self.needs = needs;
        self
    }

    /// Sets these headers on every request, replacing recorded ones
    /// (names and values were checked when the flags were read; invalid
    /// ones are skipped).
    pub fn with_headers(mut self, headers: &[(String, String)]) -> Self {
        self.overrides = headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        self
    }

    fn build(
        &self,
        ex: &StoredExchange,
        traceparent: Option<HeaderValue>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let method = Method::from_bytes(ex.method.as_bytes())
            .map_err(|e| format!("method {}: {e}", ex.method))?;
        let uri = self
            .target
            .join(&ex.uri)
            .map_err(|e| format!("uri {}: {e}", ex.uri))?;
        // Bodies were decoded to substitute values; encode as recorded.
        let body = match codec::coding_of(&ex.request_headers) {
            Ok(Some(coding)) => Bytes::from(coding.encode(&ex.request_body)),
            _ => Bytes::copy_from_slice(&ex.request_body),
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        for (name, value) in &ex.request_headers {
            if !replayed(name) {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(n, v);
            }
        }
        headers.insert(header::HOST, self.host.clone());
        for (name, value) in &self.overrides {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(id) = &self.replay_id {
            headers.insert(HeaderName::from_static(REPLAY_HEADER), id.clone());
        }
        if let Some(value) = traceparent {
            headers.insert(HeaderName::from_static(trace::TRACEPARENT), value);
        }
        Ok(req)
    }
}

impl Dispatch for ReplayClient {
    async fn send(&self, ex: Arc<StoredExchange>, socket: Option<SocketValues>) -> Sent {
        let (trace_id, traceparent) = match self.traceparent.then(trace::fresh) {
            Some((id, value)) => (Some(id), Some(value)),
            None => (None, None),
        };
        // A recorded WebSocket: play its frames.
        if ex.status == Some(101) && !ex.ws_frames.is_empty() {
            let mut headers = self.overrides.clone();
            if let Some(id) = &self.replay_id {
                headers.push((HeaderName::from_static(REPLAY_HEADER), id.clone()));
            }
            if let Some(value) = traceparent {
                headers.push((HeaderName::from_static(trace::TRACEPARENT), value));
            }
            let target = super::websocket::Target {
                upstream: &self.target,
                tls: &self.socket_tls,
                headers,
                timeout: self.timeout,
            };
            // Boxed: a socket's future is large, and every VU's request
            // future would otherwise be as large as it.
            let mut sent = Box::pin(super::websocket::replay(&target, &ex, socket)).await;
            sent.trace_id = trace_id;
            return sent;
        }
        let started = Instant::now();
        let req = match self.build(&ex, traceparent) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(exchange = ex.id, error = %e, "recorded request cannot be rebuilt; counted as a reset");
                return Sent::failed("reset");
            }
        };
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                if crate::tls::failure(&e).is_some() {
                    "tls"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "reset"
                }
            })?;
            let ttfb = started.elapsed();
            let status = resp.status().as_u16();
            // Only what correlation reads is kept (bodies up to a cap);
            // everything else is read and dropped.
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .filter(|(k, _)| self.needs.keeps_header(k))
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let streamed = crate::capture::is_stream(
                resp.headers()
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.as_bytes()),
            );
            let keep_body = self
                .needs
                .keeps_body(resp.headers().get(header::CONTENT_TYPE));
            let coding = resp.headers().get(header::CONTENT_ENCODING).cloned();
            let mut kept = BytesMut::new();
            let mut truncated = false;
            let mut body = resp.into_body();
            let head = Instant::now();
            // (last chunk, timing) of a streamed response.
            let mut stream = streamed.then(|| (None::<Instant>, StreamTiming::default()));
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| "reset")?;
                let Some(d) = frame.data_ref() else { continue };
                if let Some((last, timing)) = &mut stream {
                    let now = Instant::now();
                    if let Some(l) = *last
                        && timing.gaps.len() < crate::capture::MAX_CHUNKS
                    {
                        timing.gaps.push(now - l);
                    }
                    *last = Some(now);
                    timing.total = now - head;
                }
                // Past the cap, nothing more is kept: the body's start,
                // never a start and a later piece joined.
                if keep_body && !truncated {
                    if kept.len() + d.len() <= MAX_KEPT_BODY {
                        kept.extend_from_slice(d);
                    } else {
                        truncated = true;
                    }
                }
            }
            let stream = stream.map(|(_, timing)| timing);
            let kept = (kept.freeze(), coding, truncated);
            Ok::<_, &'static str>((status, ttfb, headers, kept, stream))
        };
        let mut sent = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok((status, ttfb, headers, (body, coding, body_truncated), stream))) => {
                let finished = Instant::now();
                // Correlation reads the content: an encoded body is decoded,
                // after the clock stopped.
                let body =
                    codec::decoded(coding.as_ref().map(|v| v.as_bytes()), body).unwrap_or_default();
                Sent {
                    status: Some(status),
                    ttfb: Some(ttfb),
                    failure: None,
                    finished,
                    headers,
                    body,
                    body_truncated,
                    stream,
                    ws: None,
                    trace_id: None,
                }
            }
            Ok(Err(kind)) => Sent::failed(kind),
            Err(_) => Sent::failed("timeout"),
        };
        // A request that failed or timed out carried its trace id too.
        sent.trace_id = trace_id;
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every VU that waits holds a request future, so its size is memory
    /// per VU (100,000 VUs by default): a socket's much larger future
    /// stays boxed out of it.
    #[tokio::test]
    async fn a_request_future_stays_small() {
        let target = Upstream::parse("http://127.0.0.1:9").expect("target");
        let client = ReplayClient::new(
            target,
            Duration::from_secs(1),
            None,
            &ClientTls::default(),
            false,
        )
        .expect("client");
        let ex = Arc::new(StoredExchange::default());
        let send = client.send(ex, None);
        let size = std::mem::size_of_val(&send);
        assert!(size < 2048, "a request future takes {size} bytes");
    }
}
