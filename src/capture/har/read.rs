//! Reading a HAR file as a stream: [`HarReader::open`] walks to
//! `log.entries`, [`HarReader::next_entry`] reads one entry at a time.
//!
//! Nothing is read whole: body strings (`postData.text`,
//! `content.text`) come through struson's string reader and only the part
//! a capture keeps is held (for base64, enough text to decode the cap);
//! other strings are refused past [`MAX_SHORT`]; unknown members are
//! skipped without being kept. A wrong type, a missing `request` or JSON
//! cut short is an error naming the entry and the field.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use struson::reader::{JsonReader, JsonStreamReader, ReaderError, SyntaxErrorKind, ValueType};

use super::{HarBody, HarEntry, HarError, HarRequest, HarResponse, HarWsMessage};
use crate::capture::socket::MAX_FRAME_PAYLOAD;

/// Longest string outside bodies and WebSocket messages (a URL, a header
/// value): a longer one is refused, not held.
pub const MAX_SHORT: usize = 1024 * 1024;

/// WebSocket frames kept per socket, and payload bytes (as recording's
/// defaults); later ones are counted in [`HarEntry::ws_dropped`].
const WS_MAX_FRAMES: usize = 100_000;
const WS_MAX_BYTES: usize = 64 * 1024 * 1024;

/// A HAR file positioned in its `log.entries`.
pub struct HarReader {
    json: JsonStreamReader<BufReader<File>>,
    path: PathBuf,
    cap: usize,
    next_index: usize,
    done: bool,
}

impl std::fmt::Debug for HarReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarReader")
            .field("path", &self.path)
            .field("next_index", &self.next_index)
            .finish_non_exhaustive()
    }
}

/// An error inside an entry, before the file's path is known to it.
struct Problem {
    field: String,
    problem: String,
}

type Found<T> = Result<T, Problem>;

fn problem(field: &str, problem: impl Into<String>) -> Problem {
    Problem {
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// A reader error at `field`: a type found where another was expected, or
/// JSON broken or cut short (struson names the line and column).
fn broken(field: &str, e: ReaderError) -> Problem {
    let cut = match &e {
        ReaderError::IoError { error, .. } => cut_short(error),
        ReaderError::SyntaxError(s) => s.kind == SyntaxErrorKind::IncompleteDocument,
        _ => false,
    };
    problem(field, describe(cut, &e))
}

/// What went wrong reading JSON: the file cut short, or malformed.
fn describe(cut: bool, e: &dyn std::fmt::Display) -> String {
    match cut {
        true => format!("the file ends inside this entry (truncated?): {e}"),
        false => format!("malformed JSON: {e}"),
    }
}

/// Whether a read error is the file ending early. A string reader's
/// syntax error comes wrapped in an `io::Error`: its kind is read from
/// the wrapped reader error (or its text).
fn cut_short(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::UnexpectedEof
        || e.get_ref()
            .is_some_and(|inner| match inner.downcast_ref::<ReaderError>() {
                Some(ReaderError::SyntaxError(s)) => s.kind == SyntaxErrorKind::IncompleteDocument,
                Some(ReaderError::IoError { error, .. }) => {
                    error.kind() == std::io::ErrorKind::UnexpectedEof
                }
                _ => inner.to_string().contains("IncompleteDocument"),
            })
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Array => "an array",
        ValueType::Object => "an object",
        ValueType::String => "a string",
        ValueType::Number => "a number",
        ValueType::Boolean => "a boolean",
        ValueType::Null => "null",
    }
}

impl HarReader {
    /// Opens a HAR file and walks to its first entry; bodies will be kept
    /// up to `cap` bytes.
    ///
    /// # Errors
    /// When the file cannot be read or is not a HAR document.
    pub fn open(path: &Path, cap: usize) -> Result<HarReader, HarError> {
        let file = File::open(path).map_err(|source| HarError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = HarReader {
            json: JsonStreamReader::new(BufReader::with_capacity(256 * 1024, file)),
            path: path.to_path_buf(),
            cap,
            next_index: 0,
            done: false,
        };
        reader.walk_to_entries().map_err(|p| HarError::NotHar {
            path: path.to_path_buf(),
            problem: format!("{}: {}", p.field, p.problem),
        })?;
        Ok(reader)
    }

    /// The next entry, or `None` after the last one (when the rest of the
    /// document has been read and found whole).
    ///
    /// # Errors
    /// When the entry is malformed, or the document after the last entry is.
    pub fn next_entry(&mut self) -> Result<Option<HarEntry>, HarError> {
        if self.done {
            return Ok(None);
        }
        let index = self.next_index;
        let at = |p: Problem, path: &Path| HarError::Entry {
            path: path.to_path_buf(),
            index,
            field: p.field,
            problem: p.problem,
        };
        let more = self
            .json
            .has_next()
            .map_err(|e| broken("", e))
            .map_err(|p| at(p, &self.path))?;
        if !more {
            self.done = true;
            return self.finish().map(|()| None).map_err(|p| HarError::NotHar {
                path: self.path.clone(),
                problem: format!("after the last entry ({} entries): {}", index, p.problem),
            });
        }
        self.next_index += 1;
        let entry = self.entry(index).map_err(|p| at(p, &self.path))?;
        Ok(Some(entry))
    }

    /// `{"log": {… "entries": [` — anything else in `log` before the
    /// entries is skipped.
    fn walk_to_entries(&mut self) -> Found<()> {
        self.expect("(the document)", ValueType::Object)?;
        self.json.begin_object().map_err(|e| broken("", e))?;
        loop {
            if !self.json.has_next().map_err(|e| broken("", e))? {
                return Err(problem("log", "missing"));
            }
            let name = self.name("")?;
            if name == "log" {
                break;
            }
            self.json.skip_value().map_err(|e| broken(&name, e))?;
        }
        self.expect("log", ValueType::Object)?;
        self.json.begin_object().map_err(|e| broken("log", e))?;
        loop {
            if !self.json.has_next().map_err(|e| broken("log", e))? {
                return Err(problem("log.entries", "missing"));
            }
            let name = self.name("log")?;
            match name.as_str() {
                "entries" => break,
                "version" => {
                    let version = self.short("log.version")?;
                    if !version.starts_with("1.") {
                        return Err(problem(
                            "log.version",
                            format!("`{version}`: HAR 1.1 and 1.2 are read"),
                        ));
                    }
                }
                _ => self.json.skip_value().map_err(|e| broken("log", e))?,
            }
        }
        self.expect("log.entries", ValueType::Array)?;
        self.json
            .begin_array()
            .map_err(|e| broken("log.entries", e))
    }

    /// `]` of the entries, the rest of `log` and of the document.
    fn finish(&mut self) -> Found<()> {
        let json = &mut self.json;
        json.end_array().map_err(|e| broken("log.entries", e))?;
        while json.has_next().map_err(|e| broken("log", e))? {
            json.skip_name().map_err(|e| broken("log", e))?;
            json.skip_value().map_err(|e| broken("log", e))?;
        }
        json.end_object().map_err(|e| broken("log", e))?;
        while json.has_next().map_err(|e| broken("", e))? {
            json.skip_name().map_err(|e| broken("", e))?;
            json.skip_value().map_err(|e| broken("", e))?;
        }
        json.end_object().map_err(|e| broken("", e))?;
        Ok(())
    }

    fn entry(&mut self, index: usize) -> Found<HarEntry> {
        let mut entry = HarEntry {
            index,
            ..HarEntry::default()
        };
        let mut started = None;
        let mut request = None;
        let mut timings_ms: Option<f64> = None;
        let mut ws = Vec::new();
        self.object("", |r, name| {
            match name {
                "pageref" => entry.pageref = r.opt_short("pageref")?,
                "startedDateTime" => {
                    let text = r.short("startedDateTime")?;
                    started = Some(crate::time::parse_rfc3339_us(&text).ok_or_else(|| {
                        problem(
                            "startedDateTime",
                            format!("`{text}` is not an RFC 3339 time"),
                        )
                    })?);
                }
                "time" => entry.time_us = r.opt_number("time")?.map(ms_to_us),
                "request" => request = Some(r.request()?),
                "response" => entry.response = Some(r.response()?),
                "timings" => timings_ms = r.timings()?,
                "_webSocketMessages" => {
                    r.expect("_webSocketMessages", ValueType::Array)?;
                    entry.ws_dropped = r.ws_messages(&mut ws)?;
                }
                _ => r.skip(name)?,
            }
            Ok(())
        })?;
        entry.request = request.ok_or_else(|| problem("request", "missing"))?;
        entry.started_at_us = started.ok_or_else(|| problem("startedDateTime", "missing"))?;
        entry.ttfb_us = timings_ms.map(ms_to_us);
        entry.ws_messages = ws;
        Ok(entry)
    }

    fn request(&mut self) -> Found<HarRequest> {
        let mut req = HarRequest::default();
        let (mut method, mut url) = (None, None);
        self.object("request", |r, name| {
            match name {
                "method" => method = Some(r.short("request.method")?),
                "url" => url = Some(r.short("request.url")?),
                "httpVersion" => req.http_version = r.short("request.httpVersion")?,
                "headers" => req.headers = r.headers("request.headers")?,
                "postData" => req.body = r.body("request.postData")?,
                "bodySize" => {
                    req.body_size = r
                        .opt_number("request.bodySize")?
                        .filter(|n| *n >= 0.0)
                        .map(|n| n as u64)
                }
                _ => r.skip(name)?,
            }
            Ok(())
        })?;
        req.method = method.ok_or_else(|| problem("request.method", "missing"))?;
        req.url = url.ok_or_else(|| problem("request.url", "missing"))?;
        if req.method.is_empty() || !req.method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(problem(
                "request.method",
                format!("`{}` is not an HTTP method", req.method),
            ));
        }
        Ok(req)
    }

    fn response(&mut self) -> Found<HarResponse> {
        let mut resp = HarResponse::default();
        self.object("response", |r, name| {
            match name {
                "status" => {
                    let n = r.number("response.status")?;
                    if !(0.0..=999.0).contains(&n) || n.fract() != 0.0 {
                        return Err(problem("response.status", format!("{n} is not a status")));
                    }
                    resp.status = n as u16;
                }
                "headers" => resp.headers = r.headers("response.headers")?,
                "content" => {
                    if let Some(body) = r.body("response.content")? {
                        resp.body = body;
                    }
                }
                _ => r.skip(name)?,
            }
            Ok(())
        })?;
        Ok(resp)
    }

    /// `postData` or `content`: `text` (or a form's `params`), `encoding`,
    /// `mimeType`, `size`; `None` for `null`.
    fn body(&mut self, field: &str) -> Found<Option<HarBody>> {
        if self.peek(field)? == ValueType::Null {
            self.json.next_null().map_err(|e| broken(field, e))?;
            return Ok(None);
        }
        let keep = self.cap / 3 * 4 + 8;
        let mut text: Option<(Vec<u8>, u64, Vec<u8>)> = None;
        let mut params: Option<String> = None;
        let (mut encoding, mut mime, mut size) = (None, None, None);
        let text_field = format!("{field}.text");
        self.object(field, |r, name| {
            match name {
                "text" => {
                    if r.peek(&text_field)? == ValueType::Null {
                        r.json.next_null().map_err(|e| broken(&text_field, e))?;
                    } else {
                        r.expect(&text_field, ValueType::String)?;
                        text = Some(r.streamed(&text_field, keep)?);
                    }
                }
                "encoding" => encoding = r.opt_short(&format!("{field}.encoding"))?,
                "mimeType" => mime = r.opt_short(&format!("{field}.mimeType"))?,
                "size" => size = r.opt_number(&format!("{field}.size"))?,
                "params" => params = Some(r.form_params(&format!("{field}.params"))?),
                _ => r.skip(name)?,
            }
            Ok(())
        })?;
        let cap = self.cap;
        let mut body = HarBody {
            mime_type: mime,
            ..HarBody::default()
        };
        match (text, params) {
            (Some((kept, len, tail)), _) => match encoding.as_deref() {
                Some("base64") => {
                    let whole = (kept.len() as u64) == len;
                    // Decode whole quadruples only, then cut at the cap.
                    let usable = if whole {
                        kept.len()
                    } else {
                        kept.len() / 4 * 4
                    };
                    let mut bytes = STANDARD.decode(&kept[..usable]).map_err(|e| {
                        problem(
                            &text_field,
                            format!("`encoding` is base64 but the text is not: {e}"),
                        )
                    })?;
                    let padding = tail.iter().rev().take_while(|b| **b == b'=').count() as u64;
                    body.len = (len / 4 * 3).saturating_sub(padding.min(2));
                    bytes.truncate(cap);
                    body.bytes = bytes;
                }
                None | Some("") => {
                    let mut bytes = kept;
                    bytes.truncate(cap);
                    body.bytes = bytes;
                    body.len = len;
                }
                Some(other) => {
                    return Err(problem(
                        &format!("{field}.encoding"),
                        format!("`{other}`: only base64 (or none) is read"),
                    ));
                }
            },
            (None, Some(form)) => {
                body.len = form.len() as u64;
                body.bytes = form.into_bytes();
                body.bytes.truncate(cap);
            }
            (None, None) => {}
        }
        body.size = size.filter(|s| *s >= 0.0).map(|s| s as u64);
        body.truncated = (body.bytes.len() as u64) < body.len;
        Ok(Some(body))
    }

    /// A form's `params` as `application/x-www-form-urlencoded` text.
    fn form_params(&mut self, field: &str) -> Found<String> {
        let mut pairs = Vec::new();
        self.array(field, |r, i| {
            let item = format!("{field}[{i}]");
            let (mut name, mut value) = (String::new(), String::new());
            r.object(&item, |r, member| {
                match member {
                    "name" => name = r.short(&format!("{item}.name"))?,
                    "value" => value = r.opt_short(&format!("{item}.value"))?.unwrap_or_default(),
                    _ => r.skip(member)?,
                }
                Ok(())
            })?;
            let enc = |s: &str| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            pairs.push(format!("{}={}", enc(&name), enc(&value)));
            Ok(())
        })?;
        Ok(pairs.join("&"))
    }

    fn headers(&mut self, field: &str) -> Found<Vec<(String, String)>> {
        let mut headers = Vec::new();
        self.array(field, |r, i| {
            let item = format!("{field}[{i}]");
            let (mut name, mut value) = (None, None);
            r.object(&item, |r, member| {
                match member {
                    "name" => name = Some(r.short(&format!("{item}.name"))?),
                    "value" => value = Some(r.short(&format!("{item}.value"))?),
                    _ => r.skip(member)?,
                }
                Ok(())
            })?;
            let name = name.ok_or_else(|| problem(&format!("{item}.name"), "missing"))?;
            headers.push((name, value.unwrap_or_default()));
            Ok(())
        })?;
        Ok(headers)
    }

    /// The time to the response head from `timings`, ms: blocked, dns,
    /// connect, send and wait (each when given and not -1).
    fn timings(&mut self) -> Found<Option<f64>> {
        let mut sum = None;
        self.object("timings", |r, name| {
            match name {
                "blocked" | "dns" | "connect" | "send" | "wait" => {
                    if let Some(ms) = r
                        .opt_number(&format!("timings.{name}"))?
                        .filter(|n| *n >= 0.0)
                    {
                        sum = Some(sum.unwrap_or(0.0) + ms);
                    }
                }
                _ => r.skip(name)?,
            }
            Ok(())
        })?;
        Ok(sum)
    }

    /// Reads `_webSocketMessages` into `out`; returns how many were past
    /// the bounds.
    fn ws_messages(&mut self, out: &mut Vec<HarWsMessage>) -> Found<u64> {
        let (mut dropped, mut bytes) = (0u64, 0usize);
        self.array("_webSocketMessages", |r, i| {
            let item = format!("_webSocketMessages[{i}]");
            let mut m = HarWsMessage::default();
            let (mut kind, mut opcode) = (None, None);
            r.object(&item, |r, member| {
                match member {
                    "type" => kind = Some(r.short(&format!("{item}.type"))?),
                    "time" => m.time_s = r.number(&format!("{item}.time"))?,
                    "opcode" => opcode = Some(r.number(&format!("{item}.opcode"))?),
                    "data" => {
                        let field = format!("{item}.data");
                        r.expect(&field, ValueType::String)?;
                        let (kept, len, _) = r.streamed(&field, MAX_FRAME_PAYLOAD)?;
                        m.data = String::from_utf8_lossy(&kept).into_owned();
                        m.len = len;
                        m.truncated = len > kept.len() as u64;
                    }
                    "_closeCode" => {
                        m.close_code = r
                            .opt_number(&format!("{item}._closeCode"))?
                            .map(|n| n as u16)
                    }
                    _ => r.skip(member)?,
                }
                Ok(())
            })?;
            m.outgoing = match kind.as_deref() {
                Some("send") => true,
                Some("receive") => false,
                other => {
                    return Err(problem(
                        &format!("{item}.type"),
                        format!("{other:?}: `send` or `receive` expected"),
                    ));
                }
            };
            m.opcode = match opcode {
                Some(n) if (0.0..=15.0).contains(&n) => n as u8,
                _ => return Err(problem(&format!("{item}.opcode"), "missing or not 0-15")),
            };
            if m.opcode == 2 {
                // Chromium writes binary payloads as base64.
                let padding = m.data.bytes().rev().take_while(|b| *b == b'=').count() as u64;
                m.len = (m.len / 4 * 3).saturating_sub(padding);
            }
            if m.opcode != 8 && (out.len() >= WS_MAX_FRAMES || bytes + m.data.len() > WS_MAX_BYTES)
            {
                dropped += 1;
            } else {
                bytes += m.data.len();
                out.push(m);
            }
            Ok(())
        })?;
        Ok(dropped)
    }

    // The walking helpers: each checks the type first, so a wrong one is
    // an error naming the field (never a struson panic), and consumes
    // exactly one value.

    fn peek(&mut self, field: &str) -> Found<ValueType> {
        self.json.peek().map_err(|e| broken(field, e))
    }

    fn expect(&mut self, field: &str, want: ValueType) -> Found<()> {
        match self.peek(field)? {
            t if t == want => Ok(()),
            t => Err(problem(
                field,
                format!("expected {}, found {}", type_name(want), type_name(t)),
            )),
        }
    }

    fn name(&mut self, field: &str) -> Found<String> {
        self.json.next_name_owned().map_err(|e| broken(field, e))
    }

    fn skip(&mut self, field: &str) -> Found<()> {
        self.json.skip_value().map_err(|e| broken(field, e))
    }

    /// Calls `member` with each member's name, positioned at its value.
    fn object(
        &mut self,
        field: &str,
        mut member: impl FnMut(&mut Self, &str) -> Found<()>,
    ) -> Found<()> {
        self.expect(
            if field.is_empty() { "(entry)" } else { field },
            ValueType::Object,
        )?;
        self.json.begin_object().map_err(|e| broken(field, e))?;
        while self.json.has_next().map_err(|e| broken(field, e))? {
            let name = self.name(field)?;
            member(self, &name)?;
        }
        self.json.end_object().map_err(|e| broken(field, e))
    }

    /// Calls `item` with each item's index, positioned at it.
    fn array(
        &mut self,
        field: &str,
        mut item: impl FnMut(&mut Self, usize) -> Found<()>,
    ) -> Found<()> {
        self.expect(field, ValueType::Array)?;
        self.json.begin_array().map_err(|e| broken(field, e))?;
        let mut i = 0;
        while self.json.has_next().map_err(|e| broken(field, e))? {
            item(self, i)?;
            i += 1;
        }
        self.json.end_array().map_err(|e| broken(field, e))
    }

    /// A string of at most [`MAX_SHORT`] bytes.
    fn short(&mut self, field: &str) -> Found<String> {
        self.expect(field, ValueType::String)?;
        let (kept, len, _) = self.streamed(field, MAX_SHORT)?;
        if len > kept.len() as u64 {
            return Err(problem(
                field,
                format!("{len} bytes long; at most {MAX_SHORT} are read here"),
            ));
        }
        String::from_utf8(kept).map_err(|_| problem(field, "not UTF-8"))
    }

    fn opt_short(&mut self, field: &str) -> Found<Option<String>> {
        if self.peek(field)? == ValueType::Null {
            self.json.next_null().map_err(|e| broken(field, e))?;
            return Ok(None);
        }
        self.short(field).map(Some)
    }

    fn number(&mut self, field: &str) -> Found<f64> {
        self.expect(field, ValueType::Number)?;
        let text = self
            .json
            .next_number_as_str()
            .map_err(|e| broken(field, e))?;
        text.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| problem(field, format!("`{text}` is not a usable number")))
    }

    fn opt_number(&mut self, field: &str) -> Found<Option<f64>> {
        if self.peek(field)? == ValueType::Null {
            self.json.next_null().map_err(|e| broken(field, e))?;
            return Ok(None);
        }
        self.number(field).map(Some)
    }

    /// Reads the string value through, keeping its first `keep` bytes;
    /// returns them, its whole length and its last two bytes.
    fn streamed(&mut self, field: &str, keep: usize) -> Found<(Vec<u8>, u64, Vec<u8>)> {
        let mut reader = self
            .json
            .next_string_reader()
            .map_err(|e| broken(field, e))?;
        let mut kept = Vec::new();
        let mut len = 0u64;
        let mut tail = Vec::with_capacity(4);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(problem(field, describe(cut_short(&e), &e))),
            };
            let chunk = &buf[..n];
            if kept.len() < keep {
                let room = keep - kept.len();
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
            len += n as u64;
            tail.extend_from_slice(&chunk[n.saturating_sub(2)..]);
            let excess = tail.len().saturating_sub(2);
            tail.drain(..excess);
        }
        Ok((kept, len, tail))
    }
}

fn ms_to_us(ms: f64) -> i64 {
    (ms * 1000.0).round().clamp(0.0, i64::MAX as f64) as i64
}
