//! The tap: bodies that stream through untouched while a copy of up to the
//! body cap is kept, and the hand-off of the finished exchange to the
//! capture sink.
//!
//! Chunks are kept as `Bytes` handles (reference counts, not copies). The
//! exchange is complete when the response body ends, fails or is dropped
//! (client gone); exactly one record is emitted in each case. The tap
//! never awaits: the sink's `try_send` either queues or counts a drop.
//! An exchange of a session outside the sample (`record --sample`) is
//! tapped only for the credentials its response hands out, which keep the
//! session's later requests in it; it emits no record.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::ProxyState;
use crate::capture::{CapturedBody, ExchangeFailure, ExchangeRecord, SessionInfo, WsFrame};

/// Up to `cap` bytes of a body, as chunks, plus its true length.
#[derive(Debug, Default)]
pub(crate) struct BodyCapture {
    chunks: Vec<Bytes>,
    stored: usize,
    len: u64,
    truncated: bool,
}

impl BodyCapture {
    pub(crate) fn observe(&mut self, data: &Bytes, cap: usize) {
        self.len += data.len() as u64;
        let room = cap - self.stored;
        if data.len() <= room {
            if !data.is_empty() {
                self.chunks.push(data.clone());
                self.stored += data.len();
            }
        } else {
            if room > 0 {
                self.chunks.push(data.slice(..room));
                self.stored = cap;
            }
            self.truncated = true;
        }
    }

    /// The kept bytes in one allocation of their own size: the chunks are
    /// views into the connection's read buffers, which a queued record
    /// must not keep alive (64 MiB of queued small records held ten times
    /// that). This is the one copy recording makes of a body.
    pub(crate) fn finish(self, complete: bool) -> CapturedBody {
        let bytes = match &self.chunks[..] {
            [] => Bytes::new(),
            [one] => Bytes::copy_from_slice(one),
            _ => {
                let mut all = BytesMut::with_capacity(self.stored);
                for c in &self.chunks {
                    all.extend_from_slice(c);
                }
                all.freeze()
            }
        };
        CapturedBody {
            bytes,
            len: self.len,
            truncated: self.truncated || !complete,
        }
    }
}

/// What the request side shares with the response side.
#[derive(Debug, Default)]
pub(crate) struct RequestCapture {
    body: BodyCapture,
    complete: bool,
}

impl RequestCapture {
    fn take(&mut self) -> CapturedBody {
        std::mem::take(&mut self.body).finish(self.complete)
    }
}

/// The request body on its way upstream.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    capture: Option<Arc<Mutex<RequestCapture>>>,
    cap: usize,
    /// Set when reading the client's body failed (the client went away
    /// mid-upload): the forwarding error that follows is the client's.
    client_failed: Arc<AtomicBool>,
}

impl RequestBody {
    pub(crate) fn new(
        inner: Incoming,
        capture: Option<Arc<Mutex<RequestCapture>>>,
        cap: usize,
        client_failed: Arc<AtomicBool>,
    ) -> Self {
        // An empty body may never be polled: it is complete from the start.
        if inner.is_end_stream()
            && let Some(c) = &capture
        {
            c.lock().unwrap_or_else(|p| p.into_inner()).complete = true;
        }
        RequestBody {
            inner,
            capture,
            cap,
            client_failed,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Err(_)) = &frame {
            this.client_failed.store(true, Ordering::SeqCst);
        }
        if let Some(capture) = &this.capture {
            let mut c = capture.lock().unwrap_or_else(|p| p.into_inner());
            match &frame {
                Some(Ok(f)) => {
                    if let Some(data) = f.data_ref() {
                        c.body.observe(data, this.cap);
                    }
                    if this.inner.is_end_stream() {
                        c.complete = true;
                    }
                }
                None => c.complete = true,
                Some(Err(_)) => {}
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Everything about an exchange except the response body, waiting for the
/// response to end.
#[derive(Debug)]
pub(crate) struct Pending {
    pub state: Arc<ProxyState>,
    pub session: Arc<SessionInfo>,
    pub seq: i64,
    pub arrived: Instant,
    pub started_at_us: i64,
    pub method: String,
    pub uri: String,
    pub http_version: &'static str,
    pub request_headers: HeaderMap,
    pub request_capture: Option<Arc<Mutex<RequestCapture>>>,
    pub status: Option<u16>,
    pub response_headers: HeaderMap,
    pub ttfb: Option<Duration>,
    /// Streamed responses: (µs since the response head, bytes) per chunk.
    pub response_chunks: Vec<(u64, u64)>,
    /// A WebSocket handshake: the socket's frames after the last part
    /// queued while it was open.
    pub ws_frames: Vec<WsFrame>,
    /// A WebSocket handshake: frames of the socket not stored.
    pub ws_frames_dropped: u64,
    /// Keeps the proxy from closing the capture before this is queued.
    /// `None` for an exchange of an unsampled session: it is never queued,
    /// so stopping neither waits for it nor counts it as dropped.
    pub in_flight: Option<super::InFlightGuard>,
}

/// How much of an answer (decoded, when it is encoded) is scanned on the
/// client's path for credentials to bind: a login's answer is far
/// smaller, and the scan stays cheap and bounded whatever the answer's
/// size (a streaming decoder stops there too).
pub(crate) const BIND_SCAN: usize = 64 * 1024;

impl Pending {
    /// Binds credentials the response handed out to the session, and
    /// queues the record. Redaction happens in the writer, off the
    /// client's path.
    pub(crate) fn complete(
        mut self,
        response_body: CapturedBody,
        failure: Option<ExchangeFailure>,
    ) {
        let state = &self.state;
        let duration = self.arrived.elapsed();
        state.metrics.latency.observe(duration.as_secs_f64());
        let request_body = match &self.request_capture {
            Some(c) => c.lock().unwrap_or_else(|p| p.into_inner()).take(),
            None => CapturedBody::default(),
        };
        if self.status.is_some_and(|s| (200..300).contains(&s)) {
            bind_handed_out(
                state,
                self.session.session_no,
                &self.response_headers,
                &response_body.bytes,
            );
        }
        // Unsampled: the session knows its credentials now; nothing to record.
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        let record = ExchangeRecord {
            offset: self.arrived.saturating_duration_since(state.run_started),
            session: self.session,
            seq: self.seq,
            started_at_us: self.started_at_us,
            method: self.method,
            uri: self.uri,
            http_version: self.http_version,
            request_headers: self.request_headers,
            request_body,
            status: self.status,
            response_headers: self.response_headers,
            response_body,
            ttfb: self.ttfb,
            duration,
            failure,
            response_chunks: self.response_chunks,
            ws_frames: self.ws_frames,
            ws_frames_dropped: self.ws_frames_dropped,
        };
        in_flight.queue(|| {
            state.sink.try_send(record);
        });
    }
}

/// Binds what a successful answer hands out (secret fields such as a
/// login's `token`, the session cookie) to the session that asked for
/// it, before the answer's last bytes reach the client: the client's next
/// request, presenting it, lands in the same session. Only the first
/// [`BIND_SCAN`] bytes of content are scanned.
fn bind_handed_out(state: &ProxyState, session_no: i64, headers: &HeaderMap, body: &Bytes) {
    state
        .sessions
        .bind_answer(session_no, &state.redactor, headers, body, BIND_SCAN);
}

/// The upstream's response body on its way to the client.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Incoming,
    capture: BodyCapture,
    cap: usize,
    pending: Option<Box<Pending>>,
    /// For streamed responses: when the head arrived, and each chunk.
    chunks: Option<(Instant, Vec<(Instant, u64)>)>,
}

impl ResponseBody {
    pub(crate) fn new(inner: Incoming, cap: usize, pending: Option<Box<Pending>>) -> Self {
        let chunks = pending.as_ref().and_then(|p| {
            crate::capture::is_stream(
                p.response_headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.as_bytes()),
            )
            .then(|| (Instant::now(), Vec::new()))
        });
        ResponseBody {
            inner,
            capture: BodyCapture::default(),
            cap,
            pending,
            chunks,
        }
    }

    fn finish(&mut self, complete: bool, failure: Option<ExchangeFailure>) {
        if let Some(mut p) = self.pending.take() {
            if let Some((head, chunks)) = self.chunks.take() {
                p.response_chunks = chunks
                    .into_iter()
                    .map(|(at, len)| (at.saturating_duration_since(head).as_micros() as u64, len))
                    .collect();
            }
            p.complete(std::mem::take(&mut self.capture).finish(complete), failure);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if this.pending.is_none() {
            return Poll::Ready(frame);
        }
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    this.capture.observe(data, this.cap);
                    if let Some((_, chunks)) = &mut this.chunks
                        && chunks.len() < crate::capture::MAX_CHUNKS
                    {
                        chunks.push((Instant::now(), data.len() as u64));
                    }
                }
                // Finish before the last bytes go out, so a client that
                // reacts to them at once already finds its session updated.
                if this.inner.is_end_stream() {
                    this.finish(true, None);
                }
            }
            Some(Err(e)) => {
                let failure = ExchangeFailure {
                    kind: "upstream_reset",
                    message: format!("upstream response body failed: {e}"),
                };
                this.state_metrics_error("upstream_reset");
                this.finish(false, Some(failure));
            }
            None => this.finish(true, None),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl ResponseBody {
    fn state_metrics_error(&self, kind: &'static str) {
        if let Some(p) = &self.pending {
            p.state.metrics.upstream_error(kind);
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.pending.is_none() {
            return;
        }
        if self.inner.is_end_stream() {
            self.finish(true, None);
        } else {
            let failure = ExchangeFailure {
                kind: "downstream_closed",
                message: "client went away before the end of the response".into(),
            };
            self.finish(false, Some(failure));
        }
    }
}
