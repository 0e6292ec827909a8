//! The capture: what a recording run stores and how it gets there.
//!
//! Owns the plain data types: the records written ([`NewRun`],
//! [`SessionInfo`], [`ExchangeRecord`] with its [`CapturedBody`] and
//! [`WsFrame`]s) and the ones read back ([`RunSummary`], [`SessionSummary`],
//! [`RouteCount`], [`SessionSpan`], [`StoredExchange`]); a long
//! WebSocket's frames in parts (`socket`); the store (`store`,
//! SQLite or PostgreSQL, the only module that speaks SQL), the single writer
//! task behind a byte-bounded queue (`writer`) and credential redaction
//! (`redact`). Records come in from the proxy's tap; rows go out to the
//! store and come back to `captures`, replay and the demo. Nothing here
//! speaks HTTP, and nothing here uses replay, report, proxy, demo or
//! profile: they depend on the capture, never the other way round.

pub mod har;
pub mod redact;
pub mod socket;
pub mod store;
pub mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

pub use socket::{FramePart, Handshake, SocketSummary};
pub use store::{RunLock, Store, StoreFault};
pub use writer::{CaptureSink, WriterConfig, WriterHandle};

/// Errors of the capture store.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The store could not be opened or created.
    #[error("cannot open capture {path}: {source}")]
    Open {
        /// The capture file.
        path: PathBuf,
        /// What SQLite or the file system said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file exists but is not a tapedeck capture (or is damaged).
    #[error("{path} is not a usable tapedeck capture: {reason}")]
    NotACapture {
        /// The capture file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A run id that the store does not hold.
    #[error("capture has no run {0}; `tapedeck captures list` shows the runs it holds")]
    NoSuchRun(i64),
    /// The store holds no recording run at all.
    #[error("capture holds no recording run yet")]
    Empty,
    /// A run that cannot be removed because its recorder is alive.
    #[error(
        "run {0} is still being recorded (its recorder holds the run's lock); stop that \
         `tapedeck record` with SIGINT or SIGTERM, then remove the run"
    )]
    RunRecording(i64),
    /// A query failed.
    #[error("capture store: {0}")]
    Sql(#[from] sqlx::Error),
}

/// Which recording runs of a capture a replay plays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunChoice {
    /// The latest run.
    #[default]
    Latest,
    /// One run by id.
    Id(i64),
    /// Every run on one timeline aligned by wall time (several proxy
    /// replicas recording at once).
    All,
}

impl std::fmt::Display for RunChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunChoice::Latest => f.write_str("latest"),
            RunChoice::Id(id) => write!(f, "{id}"),
            RunChoice::All => f.write_str("all"),
        }
    }
}

/// How the session of an exchange was recognised (docs/capture-format.md, sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionKeyKind {
    /// An explicit session header such as `X-Session-Id`.
    Header,
    /// A keyed hash of the bearer credential.
    Bearer,
    /// A named cookie.
    Cookie,
    /// Client IP address plus User-Agent.
    Client,
    /// An imported HAR's page (or the whole file when its entries name no
    /// page): HAR entries name no client.
    Page,
}

impl SessionKeyKind {
    /// The name stored in `sessions.key_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKeyKind::Header => "header",
            SessionKeyKind::Bearer => "bearer",
            SessionKeyKind::Cookie => "cookie",
            SessionKeyKind::Client => "client",
            SessionKeyKind::Page => "page",
        }
    }
}

/// Settings of a new recording run.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// Upstream URL.
    pub upstream: &'a str,
    /// Listen address.
    pub listen: &'a str,
    /// Body cap in bytes.
    pub max_body_bytes: u64,
    /// Redaction description.
    pub redaction: &'a str,
    /// Share of sessions recorded, in (0, 1]; 1 records every session.
    pub sample_fraction: f64,
}

/// One user session of a recording run, as first seen.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Number of the session within its run, from 1.
    pub session_no: i64,
    /// Which source the key came from.
    pub key_kind: SessionKeyKind,
    /// The key (credentials appear only as redaction markers).
    pub key: String,
    /// Client address of the first request.
    pub client_addr: String,
    /// User-Agent of the first request.
    pub user_agent: Option<String>,
    /// Wall-clock start, µs since the Unix epoch.
    pub started_at_us: i64,
}

/// A body as seen by the tap: the bytes up to the cap, and the true length.
#[derive(Debug, Clone, Default)]
pub struct CapturedBody {
    /// Up to `max_body` bytes, as received (content-encoding kept).
    pub bytes: Bytes,
    /// The true length of the body in bytes.
    pub len: u64,
    /// Whether `bytes` holds less than the whole body.
    pub truncated: bool,
}

/// Why an exchange did not complete normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeFailure {
    /// Stable short name: `upstream_unreachable`, `upstream_timeout`,
    /// `upstream_reset`, `upstream_error`, `downstream_closed`, `refused`.
    pub kind: &'static str,
    /// Human-readable detail.
    pub message: String,
}

/// One request/response pair observed by the proxy, ready to be stored.
#[derive(Debug, Clone)]
pub struct ExchangeRecord {
    /// The session this exchange belongs to.
    pub session: Arc<SessionInfo>,
    /// Position within the session in arrival order, from 1.
    pub seq: i64,
    /// Wall-clock arrival, µs since the Unix epoch.
    pub started_at_us: i64,
    /// Arrival relative to the start of the run.
    pub offset: Duration,
    /// Request method.
    pub method: String,
    /// Request target as the client sent it (origin form: path and query).
    pub uri: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub http_version: &'static str,
    /// Request headers as received, hop-by-hop headers removed.
    pub request_headers: HeaderMap,
    /// Request body.
    pub request_body: CapturedBody,
    /// Response status; `None` when no response head was produced.
    pub status: Option<u16>,
    /// Response headers as sent to the client.
    pub response_headers: HeaderMap,
    /// Response body.
    pub response_body: CapturedBody,
    /// Time from arrival to the response head.
    pub ttfb: Option<Duration>,
    /// Time from arrival to the end of the response body.
    pub duration: Duration,
    /// Set when the exchange failed.
    pub failure: Option<ExchangeFailure>,
    /// Streamed responses (SSE, NDJSON): (µs since the response head,
    /// bytes) per body chunk, at most [`MAX_CHUNKS`]; empty otherwise.
    pub response_chunks: Vec<(u64, u64)>,
    /// A WebSocket handshake: the frames of the socket that followed, after
    /// those queued in parts while it was open ([`FramePart`]).
    pub ws_frames: Vec<WsFrame>,
    /// A WebSocket handshake: frames of the socket not stored (past the
    /// bounds, or in a part the writer's queue had no room for).
    pub ws_frames_dropped: u64,
}

/// One WebSocket frame as it passed the proxy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WsFrame {
    /// µs since the connection switched.
    pub t_us: u64,
    /// `client` or `server`: who sent it.
    pub dir: String,
    /// `text`, `binary`, `continuation`, `close`, `ping`, `pong`.
    pub op: String,
    /// Final fragment of its message.
    pub fin: bool,
    /// True payload length.
    pub len: u64,
    /// The payload (unmasked, up to [`socket::MAX_FRAME_PAYLOAD`]): text as
    /// is, binary as base64.
    pub data: String,
    /// The payload was longer than what is kept.
    pub truncated: bool,
    /// A close frame's status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_code: Option<u16>,
}

impl WsFrame {
    /// A whole text frame sent by `dir` (`client` or `server`) at the
    /// switch (`t_us` 0), kept in full.
    pub fn text(dir: &str, data: &str) -> WsFrame {
        WsFrame {
            t_us: 0,
            dir: dir.into(),
            op: "text".into(),
            fin: true,
            len: data.len() as u64,
            data: data.into(),
            truncated: false,
            close_code: None,
        }
    }
}

/// Chunks timed per streamed response; later ones are not listed.
pub const MAX_CHUNKS: usize = 4096;

/// Whether a response is a stream whose chunk timing matters: server-sent
/// events or newline-delimited JSON.
pub fn is_stream(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|v| {
        let v = v.to_ascii_lowercase();
        v.starts_with(b"text/event-stream")
            || v.starts_with(b"application/x-ndjson")
            || v.starts_with(b"application/jsonl")
    })
}

impl ExchangeRecord {
    /// Copies header values into allocations of their own size. As
    /// parsed, they are views into the connection's read buffers, and a
    /// queued record would keep each whole buffer alive. Bodies must come
    /// in allocations of their own already (the proxy's tap copies each
    /// body out once).
    pub fn compact(&mut self) {
        own_headers(&mut self.request_headers);
        own_headers(&mut self.response_headers);
    }

    /// Approximate memory held by this record (after [`Self::compact`]),
    /// used to bound the writer queue.
    pub fn weight(&self) -> usize {
        // The record itself, its queue slot and the allocator's share; a
        // header map entry with its name and value handles. Measured: 64 MiB
        // of queued small records hold about 64 MiB (docs/reliability.md).
        const FIXED: usize = 1024;
        let headers = |h: &HeaderMap| {
            h.iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 128)
                .sum::<usize>()
        };
        FIXED
            + self.uri.len()
            + headers(&self.request_headers)
            + headers(&self.response_headers)
            + self.request_body.bytes.len()
            + self.response_body.bytes.len()
            + socket::frames_weight(&self.ws_frames)
    }
}

/// Copies header values into allocations of their own size (see
/// [`ExchangeRecord::compact`]).
pub fn own_headers(h: &mut HeaderMap) {
    for v in h.values_mut() {
        if let Ok(mut own) = http::HeaderValue::from_bytes(v.as_bytes()) {
            own.set_sensitive(v.is_sensitive());
            *v = own;
        }
    }
}

/// One recording run as listed by `captures list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Run id.
    pub id: i64,
    /// Upstream URL the proxy forwarded to.
    pub upstream: String,
    /// Address the proxy listened on.
    pub listen: String,
    /// tapedeck version that recorded it.
    pub tool_version: String,
    /// Start, µs since the Unix epoch.
    pub started_at_us: i64,
    /// Stop, µs since the Unix epoch; `None` while recording (or if the
    /// recorder was killed).
    pub stopped_at_us: Option<i64>,
    /// Recording, stopped, or interrupted (its recorder is gone without
    /// closing it); decided when the run is read, not stored.
    pub state: RunState,
    /// Body cap in bytes.
    pub max_body_bytes: i64,
    /// What was redacted.
    pub redaction: String,
    /// Share of sessions recorded (`record --sample`), in (0, 1].
    pub sample_fraction: f64,
    /// Exchanges stored.
    pub exchanges: i64,
    /// Sessions stored.
    pub sessions: i64,
    /// Exchanges observed but not stored (full queue or store failure).
    pub dropped: i64,
}

/// What `captures delete` or `captures prune` took out of a capture.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Removal {
    /// The runs removed, by id.
    pub runs: Vec<i64>,
    /// Sessions removed with them.
    pub sessions: u64,
    /// Exchanges removed with them (bodies, chunk timings and frames).
    pub exchanges: u64,
    /// How many bytes smaller the SQLite file and its WAL are; `None` on
    /// PostgreSQL, where the server's VACUUM reclaims the space.
    pub bytes_freed: Option<u64>,
    /// Runs left in place because their recorder is alive (prune only).
    pub kept_recording: Vec<i64>,
    /// Why bytes of the removed rows may still be in a SQLite file (its
    /// compaction failed), and how to finish; `None` when none are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leftover: Option<String>,
}

/// How a recording run stands when it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Its recorder is running.
    Recording,
    /// Closed cleanly: it has a stop time and final counters.
    Stopped,
    /// Never closed and its recorder is gone (killed, crashed, the machine
    /// lost): the rows committed before are there, counted in the run.
    Interrupted,
}

impl RunState {
    /// `recording`, `stopped` or `interrupted`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Recording => "recording",
            RunState::Stopped => "stopped",
            RunState::Interrupted => "interrupted",
        }
    }
}

/// One session of a run, with its exchange count.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionSummary {
    /// Session number within the run.
    pub session_no: i64,
    /// `header`, `bearer`, `cookie` or `client`.
    pub key_kind: String,
    /// The session key (credentials as markers).
    pub key: String,
    /// Client address of the first request.
    pub client_addr: String,
    /// Exchanges stored for the session.
    pub exchanges: i64,
    /// Exchanges that failed (no response, upstream error).
    pub failed: i64,
    /// First arrival, µs from the run start.
    pub first_offset_us: i64,
    /// Last response end, µs from the run start.
    pub last_end_us: i64,
}

/// Exchanges of one normalized route.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RouteCount {
    /// `METHOD /path/{id}/...`
    pub route: String,
    /// Exchanges.
    pub exchanges: u64,
    /// Of which failed or answered 5xx.
    pub errors: u64,
}

/// What the replay plan needs to know of a recorded session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpan {
    /// The recording run.
    pub run_id: i64,
    /// Session number in the run.
    pub session_no: i64,
    /// First request, µs from the first request replayed.
    pub first_offset_us: i64,
    /// Requests in the session.
    pub requests: u64,
}

/// One stored exchange, as read back.
#[derive(Debug, Clone, Default)]
pub struct StoredExchange {
    /// Row id.
    pub id: i64,
    /// Session number within the run.
    pub session_no: i64,
    /// Position in the session.
    pub seq: i64,
    /// Wall-clock arrival, µs since the Unix epoch.
    pub started_at_us: i64,
    /// Arrival, µs since the run start.
    pub offset_us: i64,
    /// Method.
    pub method: String,
    /// Origin-form request target.
    pub uri: String,
    /// HTTP version as recorded.
    pub http_version: String,
    /// Request headers, in order.
    pub request_headers: Vec<(String, String)>,
    /// Request body (maybe truncated).
    pub request_body: Vec<u8>,
    /// True request body length.
    pub request_body_len: i64,
    /// Whether the stored request body is truncated.
    pub request_truncated: bool,
    /// Response status.
    pub status: Option<i64>,
    /// Response headers, in order.
    pub response_headers: Vec<(String, String)>,
    /// Response body (maybe truncated).
    pub response_body: Vec<u8>,
    /// True response body length.
    pub response_body_len: i64,
    /// Whether the stored response body is truncated.
    pub response_truncated: bool,
    /// Time to the response head, µs.
    pub ttfb_us: Option<i64>,
    /// Time to the end of the response, µs.
    pub duration_us: i64,
    /// Failure kind, if any.
    pub error_kind: Option<String>,
    /// Failure detail, if any.
    pub error_message: Option<String>,
    /// Streamed responses: (µs since the response head, bytes) per chunk.
    pub response_chunks: Vec<(i64, i64)>,
    /// A WebSocket handshake: the socket's frames, in time order (its
    /// stored parts and the row's own frames, as one list).
    pub ws_frames: Vec<WsFrame>,
    /// A WebSocket handshake: frames of the socket that were not stored.
    pub ws_frames_dropped: i64,
}

impl StoredExchange {
    /// What a replay sends: the request side (and a WebSocket's frames),
    /// without the recorded response's headers and body.
    pub fn request_copy(&self) -> StoredExchange {
        StoredExchange {
            method: self.method.clone(),
            uri: self.uri.clone(),
            http_version: self.http_version.clone(),
            request_headers: self.request_headers.clone(),
            request_body: self.request_body.clone(),
            response_headers: Vec::new(),
            response_body: Vec::new(),
            error_kind: None,
            error_message: None,
            response_chunks: Vec::new(),
            ws_frames: self.ws_frames.clone(),
            ..*self
        }
    }

    /// How long the exchange lasted as its client saw it, µs: a WebSocket
    /// until its last frame (the relay notices the close a little later,
    /// and a request the client sends right after the close must still
    /// count as after the socket), anything else to the end of the
    /// response.
    pub fn client_duration_us(&self) -> i64 {
        match self.ws_frames.iter().map(|f| f.t_us).max() {
            Some(last) => (self.ttfb_us.unwrap_or(0) + i64::try_from(last).unwrap_or(i64::MAX))
                .min(self.duration_us),
            None => self.duration_us,
        }
    }

    /// The first value of a request header (names compare without case).
    pub fn request_header(&self, name: &str) -> Option<&str> {
        header_in(&self.request_headers, name)
    }

    /// The first value of a response header.
    pub fn response_header(&self, name: &str) -> Option<&str> {
        header_in(&self.response_headers, name)
    }
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Microseconds since the Unix epoch, now.
pub fn now_epoch_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whole microseconds of a duration, saturating, for storage.
pub fn as_us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The current UTC time as `20261122T162500Z`, for default file names.
pub fn utc_stamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "")
}
