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
use std::io::BufReader;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use struson::reader::{JsonReader, JsonStreamReader, ValueType};

pub use super::json::MAX_SHORT;
use super::json::{Found, Problem, Walker, broken, problem};
use super::{HarBody, HarEntry, HarError, HarRequest, HarResponse, HarWsMessage};
use crate::capture::socket::MAX_FRAME_PAYLOAD;

/// WebSocket frames kept per socket, and payload bytes (as recording's
/// defaults); later ones are counted in [`HarEntry::ws_dropped`].
const WS_MAX_FRAMES: usize = 100_000;
const WS_MAX_BYTES: usize = 64 * 1024 * 1024;

/// A HAR file positioned in its `log.entries`.
pub struct HarReader {
    walk: Walker,
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
            walk: Walker {
                json: JsonStreamReader::new(BufReader::with_capacity(256 * 1024, file)),
            },
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
            .walk
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
        self.walk.expect("(the document)", ValueType::Object)?;
        self.walk.json.begin_object().map_err(|e| broken("", e))?;
        loop {
            if !self.walk.json.has_next().map_err(|e| broken("", e))? {
                return Err(problem("log", "missing"));
            }
            let name = self.walk.name("")?;
            if name == "log" {
                break;
            }
            self.walk.json.skip_value().map_err(|e| broken(&name, e))?;
        }
        self.walk.expect("log", ValueType::Object)?;
        self.walk
            .json
            .begin_object()
            .map_err(|e| broken("log", e))?;
        loop {
            if !self.walk.json.has_next().map_err(|e| broken("log", e))? {
                return Err(problem("log.entries", "missing"));
            }
            let name = self.walk.name("log")?;
            match name.as_str() {
                "entries" => break,
                "version" => {
                    let version = self.walk.short("log.version")?;
                    if !version.starts_with("1.") {
                        return Err(problem(
                            "log.version",
                            format!("`{version}`: HAR 1.1 and 1.2 are read"),
                        ));
                    }
                }
                _ => self.walk.json.skip_value().map_err(|e| broken("log", e))?,
            }
        }
        self.walk.expect("log.entries", ValueType::Array)?;
        self.walk
            .json
            .begin_array()
            .map_err(|e| broken("log.entries", e))
    }

    /// `]` of the entries, the rest of `log` and of the document.
    fn finish(&mut self) -> Found<()> {
        let json = &mut self.walk.json;
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
                "pageref" => entry.pageref = r.walk.opt_short("pageref")?,
                "startedDateTime" => {
                    let text = r.walk.short("startedDateTime")?;
                    started = Some(crate::time::parse_rfc3339_us(&text).ok_or_else(|| {
                        problem(
                            "startedDateTime",
                            format!("`{text}` is not an RFC 3339 time"),
                        )
                    })?);
                }
                "time" => entry.time_us = r.walk.opt_number("time")?.map(ms_to_us),
                "request" => request = Some(r.request()?),
                "response" => entry.response = Some(r.response()?),
                "timings" => timings_ms = r.timings()?,
                "_webSocketMessages" => {
                    r.walk.expect("_webSocketMessages", ValueType::Array)?;
                    entry.ws_dropped = r.ws_messages(&mut ws)?;
                }
                _ => r.walk.skip(name)?,
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
                "method" => method = Some(r.walk.short("request.method")?),
                "url" => url = Some(r.walk.short("request.url")?),
                "httpVersion" => req.http_version = r.walk.short("request.httpVersion")?,
                "headers" => req.headers = r.headers("request.headers")?,
                "postData" => req.body = r.body("request.postData")?,
                "bodySize" => {
                    req.body_size = r
                        .walk
                        .opt_number("request.bodySize")?
                        .filter(|n| *n >= 0.0)
                        .map(|n| n as u64)
                }
                _ => r.walk.skip(name)?,
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
                    let n = r.walk.number("response.status")?;
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
                _ => r.walk.skip(name)?,
            }
            Ok(())
        })?;
        Ok(resp)
    }

    /// `postData` or `content`: `text` (or a form's `params`), `encoding`,
    /// `mimeType`, `size`; `None` for `null`.
    fn body(&mut self, field: &str) -> Found<Option<HarBody>> {
        if self.walk.peek(field)? == ValueType::Null {
            self.walk.json.next_null().map_err(|e| broken(field, e))?;
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
                    if r.walk.peek(&text_field)? == ValueType::Null {
                        r.walk
                            .json
                            .next_null()
                            .map_err(|e| broken(&text_field, e))?;
                    } else {
                        r.walk.expect(&text_field, ValueType::String)?;
                        text = Some(r.walk.streamed(&text_field, keep)?);
                    }
                }
                "encoding" => encoding = r.walk.opt_short(&format!("{field}.encoding"))?,
                "mimeType" => mime = r.walk.opt_short(&format!("{field}.mimeType"))?,
                "size" => size = r.walk.opt_number(&format!("{field}.size"))?,
                "params" => params = Some(r.form_params(&format!("{field}.params"))?),
                _ => r.walk.skip(name)?,
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
                    "name" => name = r.walk.short(&format!("{item}.name"))?,
                    "value" => {
                        value = r
                            .walk
                            .opt_short(&format!("{item}.value"))?
                            .unwrap_or_default()
                    }
                    _ => r.walk.skip(member)?,
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
                    "name" => name = Some(r.walk.short(&format!("{item}.name"))?),
                    "value" => value = Some(r.walk.short(&format!("{item}.value"))?),
                    _ => r.walk.skip(member)?,
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
                        .walk
                        .opt_number(&format!("timings.{name}"))?
                        .filter(|n| *n >= 0.0)
                    {
                        sum = Some(sum.unwrap_or(0.0) + ms);
                    }
                }
                _ => r.walk.skip(name)?,
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
                    "type" => kind = Some(r.walk.short(&format!("{item}.type"))?),
                    "time" => m.time_s = r.walk.number(&format!("{item}.time"))?,
                    "opcode" => opcode = Some(r.walk.number(&format!("{item}.opcode"))?),
                    "data" => {
                        let field = format!("{item}.data");
                        r.walk.expect(&field, ValueType::String)?;
                        let (kept, len, _) = r.walk.streamed(&field, MAX_FRAME_PAYLOAD)?;
                        m.data = String::from_utf8_lossy(&kept).into_owned();
                        m.len = len;
                        m.truncated = len > kept.len() as u64;
                    }
                    "_closeCode" => {
                        m.close_code = r
                            .walk
                            .opt_number(&format!("{item}._closeCode"))?
                            .map(|n| n as u16)
                    }
                    _ => r.walk.skip(member)?,
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

    /// Calls `member` with each member's name, positioned at its value.
    fn object(
        &mut self,
        field: &str,
        mut member: impl FnMut(&mut Self, &str) -> Found<()>,
    ) -> Found<()> {
        self.walk.expect(
            if field.is_empty() { "(entry)" } else { field },
            ValueType::Object,
        )?;
        self.walk
            .json
            .begin_object()
            .map_err(|e| broken(field, e))?;
        while self.walk.json.has_next().map_err(|e| broken(field, e))? {
            let name = self.walk.name(field)?;
            member(self, &name)?;
        }
        self.walk.json.end_object().map_err(|e| broken(field, e))
    }

    /// Calls `item` with each item's index, positioned at it.
    fn array(
        &mut self,
        field: &str,
        mut item: impl FnMut(&mut Self, usize) -> Found<()>,
    ) -> Found<()> {
        self.walk.expect(field, ValueType::Array)?;
        self.walk.json.begin_array().map_err(|e| broken(field, e))?;
        let mut i = 0;
        while self.walk.json.has_next().map_err(|e| broken(field, e))? {
            item(self, i)?;
            i += 1;
        }
        self.walk.json.end_array().map_err(|e| broken(field, e))
    }
}

fn ms_to_us(ms: f64) -> i64 {
    (ms * 1000.0).round().clamp(0.0, i64::MAX as f64) as i64
}
