//! `captures import`: a HAR file recorded into a capture run, as the proxy
//! would have recorded the same traffic.
//!
//! The HAR is read twice, as a stream both times (`capture::har::read`):
//! [`check`] reads every entry and says what is wrong before any store is
//! touched; [`import`] reads it again on a thread of its own, which keys
//! each entry into a session with the recording proxy's
//! [`SessionTracker`] (the `client` source becomes the entry's page, or
//! the file), binds credentials an answer hands out as recording does,
//! and redacts the record with the store's key; the async side writes
//! batches in transactions. Bodies arrive already cut at the cap, with
//! their true length.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::session::{Fallback, SessionConfig, SessionTracker};
use super::tap::BIND_SCAN;
use crate::capture::har::{HarEntry, HarError, HarReader};
use crate::capture::redact::{RedactionConfig, Redactor};
use crate::capture::{
    CaptureError, CapturedBody, ExchangeFailure, ExchangeRecord, NewRun, RunSummary, SessionInfo,
    Store, WsFrame,
};

/// Most distinct origins counted by [`check`]; more are counted together.
const MAX_ORIGINS: usize = 64;
/// A batch is written when it holds this many records or bytes.
const BATCH_RECORDS: usize = 256;
const BATCH_BYTES: usize = 16 * 1024 * 1024;

/// How a HAR is imported.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// Body cap in bytes, as `record --max-body`.
    pub max_body: usize,
    /// Session keying, as `record --session-key` and `--session-idle`.
    pub session: SessionConfig,
    /// Redaction, as recording's.
    pub redaction: RedactionConfig,
    /// Import only entries of this origin (`http://host:port`); all when
    /// `None`.
    pub origin: Option<String>,
}

/// Errors of an import.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The HAR file.
    #[error(transparent)]
    Har(#[from] HarError),
    /// The capture store.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
}

/// What [`check`] found: the HAR is whole and can be imported.
#[derive(Debug, Clone, Default)]
pub struct HarCheck {
    /// Entries in the file.
    pub entries: u64,
    /// Entries of the chosen origin (all without `--origin`).
    pub kept: u64,
    /// Earliest `startedDateTime` of a kept entry, µs since the epoch.
    pub first_us: i64,
    /// Latest end of a kept entry, µs since the epoch.
    pub last_end_us: i64,
    /// Entries per origin, in order of first appearance of each.
    pub origins: Vec<(String, u64)>,
}

impl HarCheck {
    /// The run's upstream: the chosen origin, or the most frequent one.
    pub fn upstream(&self, chosen: Option<&str>) -> String {
        match chosen {
            Some(o) => o.to_string(),
            None => self
                .origins
                .iter()
                .max_by_key(|(_, n)| *n)
                .map(|(o, _)| o.clone())
                .unwrap_or_default(),
        }
    }
}

/// What an import stored.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    /// The new run.
    pub run: RunSummary,
    /// Entries left out because of another origin.
    pub other_origins: u64,
    /// Bodies stored truncated at the cap.
    pub truncated_bodies: u64,
}

/// Reads the whole HAR and says whether it can be imported, and what it
/// holds. Blocking: run it off the async threads.
///
/// # Errors
/// The first malformed entry or field, by index and field.
pub fn check(har: &Path, config: &ImportConfig) -> Result<HarCheck, ImportError> {
    let mut reader = HarReader::open(har, config.max_body)?;
    let mut found = HarCheck {
        first_us: i64::MAX,
        last_end_us: i64::MIN,
        ..HarCheck::default()
    };
    while let Some(entry) = reader.next_entry()? {
        found.entries += 1;
        let origin = origin_of(&entry.request.url).ok_or_else(|| HarError::Entry {
            path: har.to_path_buf(),
            index: entry.index,
            field: "request.url".into(),
            problem: format!(
                "`{}` is not an absolute http(s) or ws(s) URL",
                entry.request.url
            ),
        })?;
        let room = found.origins.len() < MAX_ORIGINS;
        match found.origins.iter_mut().find(|(o, _)| *o == origin) {
            Some((_, n)) => *n += 1,
            None if room => found.origins.push((origin.clone(), 1)),
            None => {}
        }
        if config.origin.as_deref().is_some_and(|o| o != origin) {
            continue;
        }
        found.kept += 1;
        found.first_us = found.first_us.min(entry.started_at_us);
        let end = entry.started_at_us + entry.time_us.unwrap_or(0);
        found.last_end_us = found.last_end_us.max(end);
    }
    if found.kept == 0 {
        found.first_us = crate::capture::now_epoch_us();
        found.last_end_us = found.first_us;
    }
    Ok(found)
}

/// Imports a HAR that [`check`] accepted into a new run of `store`.
/// On an error the run may be partly written: the caller removes it.
///
/// # Errors
/// When the store fails, or the file changed since it was checked.
pub async fn import(
    har: &Path,
    checked: &HarCheck,
    store: &Store,
    config: &ImportConfig,
    run_id_out: &mut Option<i64>,
) -> Result<ImportSummary, ImportError> {
    let key = store.redaction_key().await?;
    let redactor = Redactor::new(key, &config.redaction).map_err(ImportError::Config)?;
    let upstream = checked.upstream(config.origin.as_deref());
    let listen = format!(
        "har:{}",
        har.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    let run_id = store
        .begin_run_started(
            &NewRun {
                upstream: &upstream,
                listen: &listen,
                max_body_bytes: config.max_body as u64,
                redaction: &redactor.describe(),
                sample_fraction: 1.0,
            },
            checked.first_us,
        )
        .await?;
    *run_id_out = Some(run_id);
    let lock = store.lock_run(run_id).await?;

    let (tx, mut rx) = mpsc::channel::<Result<ExchangeRecord, ImportError>>(16);
    let reader = Reader {
        har: har.to_path_buf(),
        config: config.clone(),
        redactor,
        first_us: checked.first_us,
        file_page: listen.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("har-import".into())
        .spawn(move || reader.run(&tx))
        .map_err(|e| ImportError::Config(format!("cannot start the HAR reader thread: {e}")))?;

    let mut summary_other = 0;
    let mut truncated = 0;
    let mut batch: Vec<ExchangeRecord> = Vec::new();
    let mut new_sessions: Vec<Arc<SessionInfo>> = Vec::new();
    let mut weight = 0;
    let mut written = Ok(());
    while let Some(next) = rx.recv().await {
        let record = match next {
            Ok(r) => r,
            Err(e) => {
                written = Err(e);
                break;
            }
        };
        if record.seq == 0 {
            summary_other += 1;
            continue;
        }
        truncated +=
            u64::from(record.request_body.truncated) + u64::from(record.response_body.truncated);
        if record.seq == 1 {
            new_sessions.push(record.session.clone());
        }
        weight += record.weight();
        batch.push(record);
        if batch.len() >= BATCH_RECORDS || weight >= BATCH_BYTES {
            if let Err(e) = store
                .insert_batch(run_id, &new_sessions, &batch, &[], 0)
                .await
            {
                written = Err(e.into());
                break;
            }
            batch.clear();
            new_sessions.clear();
            weight = 0;
        }
    }
    drop(rx);
    // The thread ends at its next send once the channel is closed.
    let _ = thread.join();
    written?;
    if !batch.is_empty() {
        store
            .insert_batch(run_id, &new_sessions, &batch, &[], 0)
            .await?;
    }
    let run = store.finish_run_at(run_id, checked.last_end_us, 0).await?;
    lock.release().await;
    Ok(ImportSummary {
        run,
        other_origins: summary_other,
        truncated_bodies: truncated,
    })
}

/// The reading thread: entries in, redacted records out.
struct Reader {
    har: PathBuf,
    config: ImportConfig,
    redactor: Redactor,
    first_us: i64,
    /// The session key of entries that name no page.
    file_page: String,
}

impl Reader {
    fn run(self, tx: &mpsc::Sender<Result<ExchangeRecord, ImportError>>) {
        let sessions = SessionTracker::new(self.config.session.clone(), Gauge::default());
        let clock = Instant::now();
        let mut reader = match HarReader::open(&self.har, self.config.max_body) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        };
        loop {
            let next = match reader.next_entry() {
                Ok(Some(entry)) => Ok(self.record(entry, &sessions, clock)),
                Ok(None) => return,
                Err(e) => Err(e.into()),
            };
            let failed = next.is_err();
            if tx.blocking_send(next).is_err() || failed {
                return;
            }
        }
    }

    /// The entry as recording would have stored it (`seq` 0: left out,
    /// another origin).
    fn record(&self, entry: HarEntry, sessions: &SessionTracker, clock: Instant) -> ExchangeRecord {
        let request_headers = header_map(&entry.request.headers);
        let offset_us = entry.started_at_us.saturating_sub(self.first_us).max(0);
        let offset = Duration::from_micros(offset_us as u64);
        let origin = origin_of(&entry.request.url).unwrap_or_default();
        let page = entry.pageref.as_deref().unwrap_or(&self.file_page);
        let (status, response_headers, response_body) = match entry.response {
            Some(r) if r.status > 0 => {
                let mut body = r.body;
                // `content.size` is the decoded length (HAR 1.2), and a
                // HAR that left the text out, or cut it, says so there;
                // but some tools count an encoded body as it was sent,
                // so a size is believed only for a body sent unencoded.
                let encoded = r.headers.iter().any(|(n, v)| {
                    n.eq_ignore_ascii_case("content-encoding")
                        && !v.eq_ignore_ascii_case("identity")
                });
                if !encoded && let Some(size) = body.size {
                    body.len = body.len.max(size);
                }
                (Some(r.status), header_map(&r.headers), body)
            }
            _ => (None, HeaderMap::new(), Default::default()),
        };
        let mut record = ExchangeRecord {
            session: Arc::new(SessionInfo {
                session_no: 0,
                key_kind: crate::capture::SessionKeyKind::Page,
                key: String::new(),
                client_addr: String::new(),
                user_agent: None,
                started_at_us: entry.started_at_us,
            }),
            seq: 0,
            started_at_us: entry.started_at_us,
            offset,
            method: entry.request.method,
            uri: origin_form(&entry.request.url),
            http_version: http_version(&entry.request.http_version),
            request_headers,
            request_body: CapturedBody::default(),
            status,
            response_headers,
            response_body: captured(response_body.bytes, response_body.len),
            ttfb: entry.ttfb_us.map(|us| Duration::from_micros(us as u64)),
            duration: Duration::from_micros(entry.time_us.unwrap_or(0) as u64),
            failure: status.is_none().then(|| ExchangeFailure {
                kind: "upstream_error",
                message: "the HAR entry has no response (status 0)".into(),
            }),
            response_chunks: Vec::new(),
            ws_frames: Vec::new(),
            ws_frames_dropped: entry.ws_dropped,
        };
        if self.config.origin.as_deref().is_some_and(|o| o != origin) {
            return record;
        }
        if let Some(body) = entry.request.body {
            // A body cut by the tool that wrote the HAR (a file upload
            // Chromium leaves out) says so in `bodySize`.
            let len = body.len.max(entry.request.body_size.unwrap_or(0));
            record.request_body = captured(body.bytes, len);
        }
        let switch_us = entry.started_at_us + entry.ttfb_us.unwrap_or(0);
        record.ws_frames = entry
            .ws_messages
            .into_iter()
            .map(|m| ws_frame(m, switch_us))
            .collect();
        // A HAR's `time` for a WebSocket is its handshake's; the socket
        // lasted until its last message, and replay orders the requests
        // after it by when it ended.
        if let Some(last) = record.ws_frames.iter().map(|f| f.t_us).max() {
            let socket = Duration::from_micros(entry.ttfb_us.unwrap_or(0) as u64 + last);
            record.duration = record.duration.max(socket);
        }
        let assigned = sessions.assign_at(
            &record.request_headers,
            Fallback::Page(page),
            &self.redactor,
            clock + offset,
            entry.started_at_us,
        );
        if status.is_some_and(|s| (200..300).contains(&s)) {
            sessions.bind_answer(
                assigned.session.session_no,
                &self.redactor,
                &record.response_headers,
                &record.response_body.bytes,
                BIND_SCAN,
            );
        }
        record.session = assigned.session;
        record.seq = assigned.seq;
        self.redactor.redact_record(&mut record);
        record
    }
}

fn captured(bytes: Vec<u8>, len: u64) -> CapturedBody {
    let len = len.max(bytes.len() as u64);
    CapturedBody {
        truncated: (bytes.len() as u64) < len,
        bytes: Bytes::from(bytes),
        len,
    }
}

/// A HAR's headers as a capture keeps them: HTTP/2 pseudo-headers and
/// hop-by-hop headers left out, and `Content-Encoding` and
/// `Content-Length` too, since HAR bodies are written decoded (replay
/// computes the length again). Pairs that are not valid HTTP are skipped.
fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        if crate::upstream::HOP_BY_HOP.contains(&name.as_str())
            || name == http::header::CONTENT_ENCODING
            || name == http::header::CONTENT_LENGTH
        {
            continue;
        }
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            map.append(name, value);
        }
    }
    map
}

fn ws_frame(m: crate::capture::har::HarWsMessage, switch_us: i64) -> WsFrame {
    let at_us = (m.time_s * 1e6).round() as i64;
    WsFrame {
        t_us: at_us.saturating_sub(switch_us).max(0) as u64,
        dir: if m.outgoing { "client" } else { "server" }.into(),
        op: match m.opcode {
            0 => "continuation",
            1 => "text",
            2 => "binary",
            8 => "close",
            9 => "ping",
            10 => "pong",
            _ => "binary",
        }
        .into(),
        fin: true,
        len: m.len,
        data: m.data,
        truncated: m.truncated,
        close_code: m.close_code,
    }
}

/// `http://host:port` of an absolute URL (ws and wss as http and https);
/// `None` for anything else.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "http",
        "https" | "wss" => "https",
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// The request target of an absolute URL: path and query, no fragment.
fn origin_form(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let start = rest.find(['/', '?']).unwrap_or(rest.len());
    let target = &rest[start..];
    let target = target.split('#').next().unwrap_or("");
    match target {
        "" => "/".into(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.into(),
    }
}

fn http_version(text: &str) -> &'static str {
    match text.to_ascii_lowercase().as_str() {
        "http/1.0" => "HTTP/1.0",
        "h2" | "http/2" | "http/2.0" | "h2c" => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_origins_and_request_targets() {
        assert_eq!(
            origin_of("https://Chat.example:8443/api/x?y=1#f").as_deref(),
            Some("https://chat.example:8443")
        );
        assert_eq!(
            origin_of("wss://chat.example/ws").as_deref(),
            Some("https://chat.example")
        );
        assert_eq!(origin_of("data:text/plain,hi"), None);
        assert_eq!(origin_of("/relative"), None);
        assert_eq!(origin_form("http://h:1/api/x?y=1#frag"), "/api/x?y=1");
        assert_eq!(origin_form("http://h:1"), "/");
        assert_eq!(origin_form("http://h:1?q=2"), "/?q=2");
    }

    #[test]
    fn pseudo_hop_by_hop_and_coding_headers_are_left_out() {
        let pairs: Vec<(String, String)> = [
            (":authority", "h"),
            ("Connection", "keep-alive"),
            ("content-encoding", "gzip"),
            ("Content-Length", "10"),
            ("Authorization", "Bearer t"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let map = header_map(&pairs);
        assert_eq!(map.len(), 1, "{map:?}");
        assert_eq!(map["authorization"], "Bearer t");
    }
}
