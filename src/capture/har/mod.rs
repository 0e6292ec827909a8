//! HAR 1.2 (HTTP Archive) in: `captures import`.
//!
//! `read` walks a HAR file as a stream (struson's pull reader over a
//! buffered file) and yields one [`HarEntry`] at a time, each body kept up
//! to the capture's cap with its true length, so neither the number of
//! entries nor the size of a body sets the memory used. Session keying
//! and redaction of imported entries are the recording pipeline's
//! (`proxy::import`): this module knows the format only, and nothing here
//! speaks HTTP or SQL.

mod json;
pub mod read;

use std::path::PathBuf;

pub use read::HarReader;

/// Why a HAR file cannot be imported or a run exported.
#[derive(Debug, thiserror::Error)]
pub enum HarError {
    /// The file cannot be opened or read.
    #[error("cannot read HAR {path}: {source}")]
    Io {
        /// The HAR file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a HAR document (no `log.entries`, another format,
    /// broken JSON before the first entry).
    #[error("{path} is not a HAR 1.2 file: {problem}; export it again from the tool that wrote it")]
    NotHar {
        /// The HAR file.
        path: PathBuf,
        /// What is missing or wrong.
        problem: String,
    },
    /// One entry is malformed or cut short.
    #[error(
        "{path}: HAR entry {index} (log.entries[{index}]), field `{field}`: {problem}; \
         fix or remove that entry (entries count from 0)"
    )]
    Entry {
        /// The HAR file.
        path: PathBuf,
        /// The entry's position in `log.entries`, from 0.
        index: usize,
        /// The field, as a path inside the entry (`request.method`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// One HAR entry, as much of it as a capture keeps.
#[derive(Debug, Clone, Default)]
pub struct HarEntry {
    /// Position in `log.entries`, from 0.
    pub index: usize,
    /// `pageref`: the page the entry belongs to.
    pub pageref: Option<String>,
    /// `startedDateTime`, µs since the Unix epoch.
    pub started_at_us: i64,
    /// `time`: the whole exchange, µs; `None` when not given.
    pub time_us: Option<i64>,
    /// The request.
    pub request: HarRequest,
    /// The response; `None` when the entry has none.
    pub response: Option<HarResponse>,
    /// From `timings`: blocked, dns, connect, send and wait added up
    /// (those given and not -1), µs; the time to the response head.
    pub ttfb_us: Option<i64>,
    /// Chromium's `_webSocketMessages`: the socket's frames.
    pub ws_messages: Vec<HarWsMessage>,
    /// WebSocket messages past the import's bounds, counted only.
    pub ws_dropped: u64,
}

/// A HAR request.
#[derive(Debug, Clone, Default)]
pub struct HarRequest {
    /// `method`.
    pub method: String,
    /// `url`: absolute.
    pub url: String,
    /// `httpVersion` as written (`HTTP/1.1`, `h2`, `http/2.0`).
    pub http_version: String,
    /// `headers`: name and value pairs in order.
    pub headers: Vec<(String, String)>,
    /// `postData`, or `None`.
    pub body: Option<HarBody>,
    /// `bodySize` when it is given and not -1.
    pub body_size: Option<u64>,
}

/// A HAR response.
#[derive(Debug, Clone, Default)]
pub struct HarResponse {
    /// `status`; 0 when the request got no answer (Chromium).
    pub status: u16,
    /// `headers`.
    pub headers: Vec<(String, String)>,
    /// `content`.
    pub body: HarBody,
}

/// A body read from `postData` or `content`: up to the cap, and its true
/// length.
#[derive(Debug, Clone, Default)]
pub struct HarBody {
    /// The body's bytes (base64 decoded when `encoding` says so), at most
    /// the cap.
    pub bytes: Vec<u8>,
    /// The true length in bytes.
    pub len: u64,
    /// `bytes` holds less than the whole body.
    pub truncated: bool,
    /// `mimeType`.
    pub mime_type: Option<String>,
    /// `content.size`: the body's length as the tool that wrote the HAR
    /// counted it (decoded for DevTools, as sent for mitmproxy); `None`
    /// when not given.
    pub size: Option<u64>,
}

/// One message of Chromium's `_webSocketMessages`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HarWsMessage {
    /// `send` (client to server) or `receive`.
    pub outgoing: bool,
    /// `time`: seconds since the Unix epoch.
    pub time_s: f64,
    /// `opcode`: 1 text, 2 binary, 8 close, 9 ping, 10 pong.
    pub opcode: u8,
    /// `data`, at most the frame payload a capture keeps: text as is,
    /// binary as base64 (as Chromium writes it).
    pub data: String,
    /// The payload's true length in bytes.
    pub len: u64,
    /// `data` holds less than the whole payload.
    pub truncated: bool,
    /// tapedeck's `_closeCode` of a close frame.
    pub close_code: Option<u16>,
}
