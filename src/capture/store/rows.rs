//! Rows: the shapes between the capture's plain types and the tables'
//! columns, in both directions.
//!
//! Records ([`SessionInfo`], [`ExchangeRecord`], [`FramePart`]) and stored
//! exchanges (a copy) become [`SessionRow`]s, [`ExchangeRow`]s and
//! [`PartRow`]s for `write.rs`; database rows become [`RunSummary`],
//! [`SessionSummary`] and [`StoredExchange`] for `read.rs`. Headers and
//! lists are stored as JSON text. No query runs here.

use std::borrow::Cow;
use std::path::Path;

use sqlx::Row;

use crate::capture::socket::split_parts;
use crate::capture::{
    CaptureError, ExchangeRecord, FramePart, RunSummary, SessionInfo, SessionSummary,
    StoredExchange, WsFrame, as_us,
};

/// A session row to write.
pub(super) struct SessionRow<'a> {
    pub(super) session_no: i64,
    pub(super) key_kind: &'a str,
    pub(super) key: &'a str,
    pub(super) client_addr: &'a str,
    pub(super) user_agent: Option<&'a str>,
    pub(super) started_at_us: i64,
}

impl<'a> SessionRow<'a> {
    /// A session the writer saw for the first time in this batch.
    pub(super) fn first_seen(s: &'a SessionInfo) -> SessionRow<'a> {
        SessionRow {
            session_no: s.session_no,
            key_kind: s.key_kind.as_str(),
            key: &s.key,
            client_addr: &s.client_addr,
            user_agent: s.user_agent.as_deref(),
            started_at_us: s.started_at_us,
        }
    }
}

/// A session row as read.
pub(super) struct OwnedSessionRow {
    pub(super) session_no: i64,
    pub(super) key_kind: String,
    pub(super) key: String,
    pub(super) client_addr: String,
    pub(super) user_agent: Option<String>,
    pub(super) started_at_us: i64,
}

impl OwnedSessionRow {
    pub(super) fn borrow(&self) -> SessionRow<'_> {
        SessionRow {
            session_no: self.session_no,
            key_kind: &self.key_kind,
            key: &self.key,
            client_addr: &self.client_addr,
            user_agent: self.user_agent.as_deref(),
            started_at_us: self.started_at_us,
        }
    }
}

/// An exchange row to write, in column order.
pub(super) struct ExchangeRow<'a> {
    pub(super) session_no: i64,
    pub(super) seq: i64,
    pub(super) started_at_us: i64,
    pub(super) offset_us: i64,
    pub(super) method: &'a str,
    pub(super) uri: &'a str,
    pub(super) http_version: &'a str,
    pub(super) request_headers: Cow<'a, str>,
    pub(super) request_body: &'a [u8],
    pub(super) request_body_len: i64,
    pub(super) request_truncated: bool,
    pub(super) status: Option<i64>,
    pub(super) response_headers: Cow<'a, str>,
    pub(super) response_body: &'a [u8],
    pub(super) response_body_len: i64,
    pub(super) response_truncated: bool,
    pub(super) ttfb_us: Option<i64>,
    pub(super) duration_us: i64,
    pub(super) error_kind: Option<&'a str>,
    pub(super) error_message: Option<&'a str>,
    pub(super) response_chunks: Option<String>,
    pub(super) ws_frames: Option<String>,
    pub(super) ws_frames_dropped: i64,
}

/// A part of a socket's frames to write (`ws_frame_parts`). Its JSON is
/// made when its statement runs ([`PartRow::frames_json`]), so a batch
/// holds one part's text at a time, not the batch's.
pub(super) struct PartRow<'a> {
    pub(super) session_no: i64,
    pub(super) seq: i64,
    pub(super) part_no: i64,
    pub(super) frames: &'a [WsFrame],
}

impl<'a> PartRow<'a> {
    /// A part the proxy queued while its socket was open.
    pub(super) fn recorded(p: &'a FramePart) -> PartRow<'a> {
        PartRow {
            session_no: p.session_no,
            seq: p.seq,
            part_no: p.part_no,
            frames: &p.frames,
        }
    }

    /// The `frames` column.
    pub(super) fn frames_json(&self) -> String {
        serde_json::to_string(self.frames).unwrap_or_else(|_| "[]".into())
    }
}

impl<'a> ExchangeRow<'a> {
    /// A recorded exchange as the proxy's tap saw it.
    pub(super) fn recorded(r: &'a ExchangeRecord) -> ExchangeRow<'a> {
        ExchangeRow {
            session_no: r.session.session_no,
            seq: r.seq,
            started_at_us: r.started_at_us,
            offset_us: as_us(r.offset),
            method: r.method.as_str(),
            uri: r.uri.as_str(),
            http_version: r.http_version,
            request_headers: Cow::Owned(headers_json(&r.request_headers)),
            request_body: &r.request_body.bytes,
            request_body_len: len_i64(r.request_body.len),
            request_truncated: r.request_body.truncated,
            status: r.status.map(i64::from),
            response_headers: Cow::Owned(headers_json(&r.response_headers)),
            response_body: &r.response_body.bytes,
            response_body_len: len_i64(r.response_body.len),
            response_truncated: r.response_body.truncated,
            ttfb_us: r.ttfb.map(as_us),
            duration_us: as_us(r.duration),
            error_kind: r.failure.as_ref().map(|f| f.kind),
            error_message: r.failure.as_ref().map(|f| f.message.as_str()),
            response_chunks: json_unless_empty(&r.response_chunks),
            ws_frames: json_unless_empty(&r.ws_frames),
            ws_frames_dropped: len_i64(r.ws_frames_dropped),
        }
    }

    /// A stored exchange written again as it is (copying a capture), with
    /// its frames cut into parts as recording cuts them (the row keeps the
    /// rest), so no row holds a long socket whole.
    pub(super) fn stored(e: &'a StoredExchange) -> (ExchangeRow<'a>, Vec<PartRow<'a>>) {
        let (parts, rest) = split_parts(&e.ws_frames);
        let parts = parts
            .into_iter()
            .zip(1..)
            .map(|(frames, part_no)| PartRow {
                session_no: e.session_no,
                seq: e.seq,
                part_no,
                frames,
            })
            .collect();
        let headers = |h: &[(String, String)]| {
            Cow::Owned(serde_json::to_string(h).unwrap_or_else(|_| "[]".into()))
        };
        let row = ExchangeRow {
            session_no: e.session_no,
            seq: e.seq,
            started_at_us: e.started_at_us,
            offset_us: e.offset_us,
            method: &e.method,
            uri: &e.uri,
            http_version: &e.http_version,
            request_headers: headers(&e.request_headers),
            request_body: &e.request_body,
            request_body_len: e.request_body_len,
            request_truncated: e.request_truncated,
            status: e.status,
            response_headers: headers(&e.response_headers),
            response_body: &e.response_body,
            response_body_len: e.response_body_len,
            response_truncated: e.response_truncated,
            ttfb_us: e.ttfb_us,
            duration_us: e.duration_us,
            error_kind: e.error_kind.as_deref(),
            error_message: e.error_message.as_deref(),
            response_chunks: json_unless_empty(&e.response_chunks),
            ws_frames: json_unless_empty(rest),
            ws_frames_dropped: e.ws_frames_dropped,
        };
        (row, parts)
    }
}

// The row readers are generic over the database; Rust wants every column
// type's decoding spelled out as a bound.
pub(super) fn run_from_row<R>(r: &R) -> Result<RunSummary, CaptureError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(RunSummary {
        id: r.try_get("id")?,
        upstream: r.try_get("upstream")?,
        listen: r.try_get("listen")?,
        tool_version: r.try_get("tool_version")?,
        started_at_us: r.try_get("started_at_us")?,
        stopped_at_us: r.try_get("stopped_at_us")?,
        // Decided by the reader (`lock.rs`), which knows the store.
        state: crate::capture::RunState::Stopped,
        max_body_bytes: r.try_get("max_body_bytes")?,
        redaction: r.try_get("redaction")?,
        sample_fraction: r.try_get("sample_fraction")?,
        exchanges: r.try_get("exchanges")?,
        sessions: r.try_get("sessions")?,
        dropped: r.try_get("dropped")?,
    })
}

pub(super) fn session_from_row<R>(r: &R) -> Result<SessionSummary, CaptureError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SessionSummary {
        session_no: r.try_get("session_no")?,
        key_kind: r.try_get("key_kind")?,
        key: r.try_get("key")?,
        client_addr: r.try_get("client_addr")?,
        exchanges: r.try_get("exchanges")?,
        failed: r.try_get("failed")?,
        first_offset_us: r.try_get("first_offset_us")?,
        last_end_us: r.try_get("last_end_us")?,
    })
}

pub(super) fn exchange_from_row<R>(path: &Path, r: &R) -> Result<StoredExchange, CaptureError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let headers = |col: &str| -> Result<Vec<(String, String)>, CaptureError> {
        let text: String = r.try_get(col)?;
        serde_json::from_str(&text).map_err(|e| CaptureError::NotACapture {
            path: path.to_path_buf(),
            reason: format!("column {col} does not hold a header list: {e}"),
        })
    };
    // A nullable JSON list column; NULL is the empty list.
    fn list<T: serde::de::DeserializeOwned>(
        path: &Path,
        text: Option<String>,
        col: &str,
    ) -> Result<Vec<T>, CaptureError> {
        match text {
            Some(text) => serde_json::from_str(&text).map_err(|e| CaptureError::NotACapture {
                path: path.to_path_buf(),
                reason: format!("column {col} does not hold what tapedeck wrote there: {e}"),
            }),
            None => Ok(Vec::new()),
        }
    }
    Ok(StoredExchange {
        id: r.try_get("id")?,
        session_no: r.try_get("session_no")?,
        seq: r.try_get("seq")?,
        started_at_us: r.try_get("started_at_us")?,
        offset_us: r.try_get("offset_us")?,
        method: r.try_get("method")?,
        uri: r.try_get("uri")?,
        http_version: r.try_get("http_version")?,
        request_headers: headers("request_headers")?,
        request_body: r.try_get("request_body")?,
        request_body_len: r.try_get("request_body_len")?,
        request_truncated: r.try_get("request_truncated")?,
        status: r.try_get("status")?,
        response_headers: headers("response_headers")?,
        response_body: r.try_get("response_body")?,
        response_body_len: r.try_get("response_body_len")?,
        response_truncated: r.try_get("response_truncated")?,
        ttfb_us: r.try_get("ttfb_us")?,
        duration_us: r.try_get("duration_us")?,
        error_kind: r.try_get("error_kind")?,
        error_message: r.try_get("error_message")?,
        response_chunks: list(path, r.try_get("response_chunks")?, "response_chunks")?,
        ws_frames: list(path, r.try_get("ws_frames")?, "ws_frames")?,
        ws_frames_dropped: r.try_get("ws_frames_dropped")?,
    })
}

/// The frames of a `ws_frame_parts` row.
pub(super) fn part_frames(path: &Path, text: &str) -> Result<Vec<WsFrame>, CaptureError> {
    serde_json::from_str(text).map_err(|e| CaptureError::NotACapture {
        path: path.to_path_buf(),
        reason: format!("a row of ws_frame_parts does not hold what tapedeck wrote there: {e}"),
    })
}

/// A list as JSON text, NULL when empty.
fn json_unless_empty<T: serde::Serialize>(items: &[T]) -> Option<String> {
    (!items.is_empty())
        .then(|| serde_json::to_string(items).ok())
        .flatten()
}

/// Headers as a JSON array of `[name, value]` pairs: order and repeats
/// kept, readable with SQLite's `json_each`.
fn headers_json(headers: &http::HeaderMap) -> String {
    let mut out = String::with_capacity(64 * headers.len() + 2);
    out.push('[');
    for (i, (name, value)) in headers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("[\"");
        // Header names are lower-case tokens: nothing to escape.
        out.push_str(name.as_str());
        out.push_str("\",");
        push_json_string(&mut out, &String::from_utf8_lossy(value.as_bytes()));
        out.push(']');
    }
    out.push(']');
    out
}

/// Appends `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn len_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::headers_json;
    use http::{HeaderMap, HeaderValue};

    #[test]
    fn headers_serialize_as_json_pairs_in_order_with_escapes() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-b", HeaderValue::from_static("say \"hi\" \\ there"));
        h.append("x-a", HeaderValue::from_static("2"));
        let text = headers_json(&h);
        let parsed: Vec<(String, String)> = serde_json::from_str(&text).expect("valid JSON");
        let pairs: Vec<(&str, &str)> = parsed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("x-a", "1"), ("x-a", "2"), ("x-b", "say \"hi\" \\ there")]
        );
    }
}
