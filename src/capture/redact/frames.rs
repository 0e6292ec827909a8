//! Credentials inside WebSocket text frames: the formats chat clients
//! speak over a socket, read just far enough to find where a secret sits,
//! so that recording can store a marker there and keep the frame
//! well-formed, and replay can put a clear value back.
//!
//! - XMPP SASL (RFC 6120 over RFC 7395): an `<auth mechanism='PLAIN'>`
//!   whose base64 payload is `authzid NUL user NUL password` keeps its
//!   user parts and gets a marker for the password, encoded again (as a
//!   Basic credential keeps its user); another mechanism's payload (a
//!   token) becomes a marker whole.
//! - STOMP: a frame's headers are redacted as HTTP headers are (`passcode`
//!   and `Authorization` included; `login`, the user name, kept), its body
//!   as JSON, and `content-length` follows the body.
//! - Anything else (JSON, and JSON behind a Socket.IO or Engine.IO packet
//!   prefix such as `42["login",{…}]` or `40/chat,{"token":…}`): secret
//!   fields, by the JSON scanner, which reads past the prefix.
//!
//! Frames arrive from the proxy's tap (through [`Redactor::redact_frames`])
//! and from a capture read for replay (the parsers here). Work is linear in
//! the frame's kept payload (at most 64 KiB); nothing here allocates per
//! byte or loops without bound.

use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderName;

use super::{BodyKind, ECHO_MIN, Redactor};
use crate::capture::WsFrame;

/// Clear values taken from a socket's frames that are also replaced where
/// later frames repeat them: at most this many, so a long socket costs a
/// bounded number of searches per frame.
const FRAME_ECHOES: usize = 16;

/// Longest packet prefix before a frame's JSON (`430/admin/users,` and
/// the like).
const MAX_PREFIX: usize = 128;

/// SASL mechanisms whose payload carries no secret.
const NO_SECRET_MECHANISMS: [&str; 2] = ["ANONYMOUS", "EXTERNAL"];

/// STOMP commands (1.0 to 1.2), client's and server's.
const STOMP_COMMANDS: [&str; 15] = [
    "CONNECT",
    "STOMP",
    "SEND",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "ACK",
    "NACK",
    "BEGIN",
    "COMMIT",
    "ABORT",
    "DISCONNECT",
    "CONNECTED",
    "MESSAGE",
    "RECEIPT",
    "ERROR",
];

/// A SASL `<auth>` element at the start of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslAuth {
    /// The `mechanism` attribute (`PLAIN`, `X-OAUTH2`, …).
    pub mechanism: String,
    /// Where the payload (base64) sits in the frame, blanks trimmed; empty
    /// for `<auth …/>`.
    pub payload: Range<usize>,
}

/// The SASL `<auth>` element a frame is, if it is one: `<auth` (after
/// blanks) with a `mechanism` attribute. A frame cut inside the element
/// has its payload run to the end.
pub fn sasl_auth(text: &str) -> Option<SaslAuth> {
    let start = text.len() - text.trim_start().len();
    let rest = &text[start..];
    let after = rest.strip_prefix("<auth")?;
    if !after.starts_with(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/') {
        return None;
    }
    let head_end = start + rest.find('>')?;
    let head = &text[start..head_end];
    let mechanism = attribute(head, "mechanism")?.to_string();
    if head.ends_with('/') {
        return Some(SaslAuth {
            mechanism,
            payload: head_end + 1..head_end + 1,
        });
    }
    let content_start = head_end + 1;
    let content_end = text[content_start..]
        .find('<')
        .map_or(text.len(), |i| content_start + i);
    let content = &text[content_start..content_end];
    let lead = content.len() - content.trim_start().len();
    let payload = content_start + lead..content_start + content.trim_end().len();
    Some(SaslAuth {
        mechanism,
        payload: payload.start..payload.end.max(payload.start),
    })
}

/// The value of attribute `name` in an XML start tag (either quote).
fn attribute<'t>(head: &'t str, name: &str) -> Option<&'t str> {
    head.match_indices(name).find_map(|(i, _)| {
        let before = head[..i].chars().next_back()?;
        if !before.is_ascii_whitespace() {
            return None;
        }
        let rest = head[i + name.len()..].trim_start().strip_prefix('=')?;
        let rest = rest.trim_start();
        let quote = rest.chars().next().filter(|q| *q == '\'' || *q == '"')?;
        let value = &rest[1..];
        Some(&value[..value.find(quote)?])
    })
}

/// The three parts of a SASL PLAIN payload (base64 of `authzid NUL user
/// NUL password`): authzid, user, password; `None` when it is not one.
pub fn sasl_plain_parts(payload: &str) -> Option<(String, String, String)> {
    let decoded = STANDARD.decode(payload.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let mut parts = text.splitn(3, '\0');
    let (authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    Some((authzid.to_string(), user.to_string(), password.to_string()))
}

/// A SASL PLAIN payload: base64 of `authzid NUL user NUL password`.
/// Recording stores a redacted one with the password's marker, so the
/// frame stays valid and replay can put a password back.
pub fn sasl_plain_payload(authzid: &str, user: &str, password: &str) -> String {
    STANDARD.encode(format!("{authzid}\0{user}\0{password}"))
}

/// A STOMP frame, by byte ranges of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stomp {
    /// The command (`CONNECT`, `SEND`, …).
    pub command: String,
    /// Each header's name and value, in order (a repeated header's first
    /// value is the one that counts).
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    /// The body, up to its NUL terminator (or the end of a cut frame).
    pub body: Range<usize>,
}

/// The STOMP frame a text is, if it is one: a known command alone on the
/// first line (heart-beat newlines before it skipped), then `name:value`
/// header lines up to a blank line, which must be there. Values are taken
/// as they stand (`CONNECT` frames are not escaped).
pub fn stomp(text: &str) -> Option<Stomp> {
    let start = text.len() - text.trim_start_matches(['\r', '\n']).len();
    let line_end = |from: usize| text[from..].find('\n').map(|i| from + i);
    // A command is a short word: only the first bytes are looked at, so a
    // long frame of another kind is not searched for a line end.
    let command_end = start
        + text.as_bytes()[start..]
            .iter()
            .take(16)
            .position(|b| *b == b'\n')?;
    let command = text[start..command_end].trim_end_matches('\r');
    if !STOMP_COMMANDS.contains(&command) {
        return None;
    }
    let mut headers = Vec::new();
    let mut at = command_end + 1;
    let body_start = loop {
        // Every frame's head ends with a blank line; a text without one
        // is not STOMP (a chat line that starts with `ERROR`).
        let end = line_end(at)?;
        let line = text[at..end].trim_end_matches('\r');
        if line.is_empty() {
            break end + 1;
        }
        if let Some(colon) = line.find(':') {
            headers.push((at..at + colon, at + colon + 1..at + line.len()));
        }
        at = end + 1;
    };
    let body_end = text[body_start..]
        .find('\0')
        .map_or(text.len(), |i| body_start + i);
    Some(Stomp {
        command: command.to_string(),
        headers,
        body: body_start..body_end,
    })
}

impl Stomp {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header<'t>(&self, text: &'t str, name: &str) -> Option<&'t str> {
        self.headers
            .iter()
            .find(|(n, _)| text[n.clone()].eq_ignore_ascii_case(name))
            .map(|(_, v)| &text[v.clone()])
    }

    /// The frame with header values replaced (`values`: a value's range
    /// and its new text) and, with `body`, a new body; a `content-length`
    /// header follows the body's new length.
    pub fn rebuild(
        &self,
        text: &str,
        mut values: Vec<(Range<usize>, String)>,
        body: Option<String>,
    ) -> String {
        if let Some(body) = body {
            let delta = body.len() as i64 - self.body.len() as i64;
            let length = self
                .headers
                .iter()
                .find(|(n, _)| text[n.clone()].eq_ignore_ascii_case("content-length"));
            if let Some((_, v)) = length
                && let Ok(old) = text[v.clone()].trim().parse::<i64>()
            {
                values.retain(|(r, _)| r != v);
                values.push((v.clone(), (old + delta).max(0).to_string()));
            }
            values.push((self.body.clone(), body));
        }
        splice(text, values)
    }
}

/// `text` with each range replaced by its text; a range that overlaps an
/// earlier one or does not fall on character boundaries is skipped.
pub fn splice(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|(r, _)| r.start);
    let mut out = String::with_capacity(text.len() + edits.len() * 48);
    let mut at = 0;
    for (range, with) in edits {
        let fits = at <= range.start && range.start <= range.end;
        if !fits || !text.is_char_boundary(range.start) || !text.is_char_boundary(range.end) {
            continue;
        }
        out.push_str(&text[at..range.start]);
        out.push_str(&with);
        at = range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Where the JSON of a frame starts: at its first `{` or `[` when that
/// comes first (after blanks) or after a short packet prefix of digits,
/// `-`, and a `/namespace,` (Engine.IO and Socket.IO: `42[…]`,
/// `430[…]`, `451-[…]`, `40/chat,{…}`); `None` for other frames.
pub fn packet_json(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    while i < b.len() && i < MAX_PREFIX && (b[i].is_ascii_digit() || b[i] == b'-') {
        i += 1;
    }
    if b.get(i) == Some(&b'/') {
        let comma = b[i..].iter().take(MAX_PREFIX).position(|c| *c == b',')?;
        i += comma + 1;
        while i < b.len() && i < MAX_PREFIX && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    matches!(b.get(i), Some(b'{' | b'[')).then_some(i)
}

/// The user name and the password a login frame sends: a SASL `<auth>`
/// whose payload is PLAIN-shaped, or a STOMP `CONNECT` (or `STOMP`)
/// frame's `login` and `passcode`; `None` for other frames.
pub fn login_parts(text: &str) -> Option<(String, String)> {
    if let Some(auth) = sasl_auth(text) {
        let (_, user, password) = sasl_plain_parts(&text[auth.payload])?;
        return Some((user, password));
    }
    let frame = stomp(text)?;
    if !matches!(frame.command.as_str(), "CONNECT" | "STOMP") {
        return None;
    }
    let user = frame.header(text, "login")?;
    let password = frame.header(text, "passcode")?;
    Some((user.to_string(), password.to_string()))
}

impl Redactor {
    /// Replaces credentials in a socket's text frames by markers (no-op
    /// with `--keep-credentials`): each frame as [`Redactor::redact_frame`]
    /// says, with `echoes` (clear values redacted from the handshake) and
    /// the clear values earlier frames gave up replaced wherever a later
    /// frame repeats them.
    pub fn redact_frames(&self, frames: &mut [WsFrame], echoes: &[Vec<u8>]) {
        if self.keep {
            return;
        }
        let mut echoes = echoes.to_vec();
        let base = echoes.len();
        for frame in frames.iter_mut() {
            for clear in self.redact_frame(frame, &echoes) {
                if clear.len() >= ECHO_MIN
                    && echoes.len() < base + FRAME_ECHOES
                    && !echoes.contains(&clear)
                {
                    echoes.push(clear);
                }
            }
        }
    }

    /// Replaces the credentials of one text frame by markers, keeping the
    /// frame well-formed (see the module's list), and each of `echoes`
    /// wherever it recurs. Returns the clear values it replaced (the
    /// base64 a SASL payload was sent as among them). Other opcodes are
    /// left alone.
    pub fn redact_frame(&self, frame: &mut WsFrame, echoes: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut found = Vec::new();
        if self.keep || frame.op != "text" {
            return found;
        }
        let text = &frame.data;
        let redacted = if let Some(auth) = sasl_auth(text) {
            self.redact_sasl(text, &auth, &mut found)
        } else if let Some(stomp) = stomp(text) {
            self.redact_stomp(text, &stomp, &mut found)
        } else {
            self.redact_json(text, &mut found)
        };
        let text = redacted.as_deref().unwrap_or(text);
        let echoed = self
            .redact_body(text.as_bytes(), &BodyKind::Text, echoes)
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        if let Some(text) = echoed.or(redacted) {
            frame.data = text;
        }
        found
    }

    /// A SASL `<auth>` with its password (PLAIN-shaped payloads: the user
    /// parts kept, encoded again) or its whole payload marked; `None` when
    /// it carries no secret.
    fn redact_sasl(&self, text: &str, auth: &SaslAuth, found: &mut Vec<Vec<u8>>) -> Option<String> {
        let payload = &text[auth.payload.clone()];
        let mechanism = auth.mechanism.to_ascii_uppercase();
        if payload.is_empty()
            || payload == "="
            || NO_SECRET_MECHANISMS.contains(&mechanism.as_str())
        {
            return None;
        }
        let stored = match sasl_plain_parts(payload) {
            Some((authzid, user, password)) => {
                let marker = self.mark(password.as_bytes(), found);
                sasl_plain_payload(&authzid, &user, &marker)
            }
            None => self.marker(payload.as_bytes()),
        };
        found.push(payload.as_bytes().to_vec());
        Some(splice(text, vec![(auth.payload.clone(), stored)]))
    }

    /// A STOMP frame with its credential headers redacted as HTTP headers
    /// are and its body as JSON; `None` when nothing changed.
    fn redact_stomp(&self, text: &str, frame: &Stomp, found: &mut Vec<Vec<u8>>) -> Option<String> {
        let values: Vec<(Range<usize>, String)> = frame
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let stored =
                    self.redact_stomp_header(&text[name.clone()], &text[value.clone()], found)?;
                Some((value.clone(), stored))
            })
            .collect();
        let body = self.redact_json(&text[frame.body.clone()], found);
        (!values.is_empty() || body.is_some()).then(|| frame.rebuild(text, values, body))
    }

    /// A STOMP header's value to store, when its name is a credential
    /// header's ([`Redactor::redacts_header`]).
    fn redact_stomp_header(
        &self,
        name: &str,
        value: &str,
        found: &mut Vec<Vec<u8>>,
    ) -> Option<String> {
        let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
        if value.is_empty() || !self.redacts_header(&name) {
            return None;
        }
        let stored = self.redact_header_value(&name, value.as_bytes(), found);
        Some(match stored.to_str() {
            Ok(s) => s.to_string(),
            Err(_) => self.marker(value.as_bytes()),
        })
    }

    /// Text with its secret JSON fields marked (the scanner reads past a
    /// packet prefix); `None` when it has none.
    fn redact_json(&self, text: &str, found: &mut Vec<Vec<u8>>) -> Option<String> {
        let ranges = self.secret_ranges(text.as_bytes(), &BodyKind::Json);
        if ranges.is_empty() {
            return None;
        }
        let edits = ranges
            .into_iter()
            .map(|r| {
                let marker = self.mark(&text.as_bytes()[r.clone()], found);
                (r, marker)
            })
            .collect();
        Some(splice(text, edits))
    }
}

#[cfg(test)]
mod tests;
