//! Credential redaction (docs/capture-format.md, redaction).
//!
//! Credential headers and secret-named JSON or form fields are replaced by
//! markers `redacted:<keyed hash>`. The key is made once per store and kept
//! in it, so equal values give equal markers across runs and replicas:
//! sessions still group and replay can still map a marker to the live value
//! learned from a replayed login. Works on bytes, header maps and records;
//! the capture writer redacts each record and each part of a socket's
//! frames before its batch is written ([`Redactor::redact_record`],
//! [`Redactor::redact_part`]), so no clear credential reaches the store
//! unless `--keep-credentials` asked for that.
//! WebSocket frames (SASL, STOMP, Socket.IO) are read in [`frames`].

use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub mod frames;
mod names;
mod record;
mod scan;

pub use names::{is_credential_header, is_secret_field};
pub use record::{Background, Redacted};
pub(crate) use scan::percent_decode;
pub use scan::{BodyKind, Scannable, scannable, scannable_up_to};

/// Prefix of every marker.
pub const MARKER_PREFIX: &str = "redacted:";

/// The user name and password of a Basic credential (base64 of
/// `user:password`); `None` when it is not one.
pub fn basic_parts(credential: &str) -> Option<(String, String)> {
    let decoded = STANDARD.decode(credential.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// A Basic credential: base64 of `user:password`. Recording stores a
/// redacted one as the user name and the password's marker, so the header
/// stays valid and replay can put a password back.
pub fn basic_credential(user: &str, password: &str) -> String {
    STANDARD.encode(format!("{user}:{password}"))
}

/// `value` when it is a marker (`redacted:` and 32 lowercase hex digits).
pub fn as_marker(value: &[u8]) -> Option<&str> {
    let hex = value.strip_prefix(MARKER_PREFIX.as_bytes())?;
    let is_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    (hex.len() == 32 && hex.iter().all(is_hex))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// What to redact.
#[derive(Debug, Clone, Default)]
pub struct RedactionConfig {
    /// Store clear values instead of markers.
    pub keep_credentials: bool,
    /// Header names to redact in addition to those [`is_credential_header`]
    /// names.
    pub extra_headers: Vec<String>,
    /// Header names [`is_credential_header`] names that are kept in clear.
    pub keep_headers: Vec<String>,
    /// Field names to redact instead of those [`is_secret_field`] names
    /// (empty: the default rules).
    pub fields: Vec<String>,
}

/// Applies a [`RedactionConfig`] with one store's key.
#[derive(Debug, Clone)]
pub struct Redactor {
    key: [u8; 32],
    keep: bool,
    extra_headers: Vec<HeaderName>,
    keep_headers: Vec<HeaderName>,
    /// Exact field names; empty for [`is_secret_field`].
    fields: Vec<String>,
}

/// Shortest value that is also replaced where a response echoes it: a
/// shorter one (`1`, `ann`) would replace unrelated text.
const ECHO_MIN: usize = 8;

impl Redactor {
    /// A redactor using the store's key.
    ///
    /// # Errors
    /// When a header name is not a valid HTTP header name.
    pub fn new(key: [u8; 32], config: &RedactionConfig) -> Result<Self, String> {
        let parse = |names: &[String]| {
            names
                .iter()
                .map(|name| {
                    HeaderName::from_bytes(name.trim().as_bytes())
                        .map_err(|_| format!("`{name}` is not a valid header name"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Redactor {
            key,
            keep: config.keep_credentials,
            extra_headers: parse(&config.extra_headers)?,
            keep_headers: parse(&config.keep_headers)?,
            fields: config
                .fields
                .iter()
                .map(|f| f.trim().to_string())
                .filter(|f| !f.is_empty())
                .collect(),
        })
    }

    /// Whether a header of this name is redacted.
    pub fn redacts_header(&self, name: &HeaderName) -> bool {
        !self.keep_headers.contains(name)
            && (is_credential_header(name.as_str()) || self.extra_headers.contains(name))
    }

    /// Whether a body field or query parameter of this name is redacted.
    pub fn redacts_field(&self, name: &str) -> bool {
        if self.fields.is_empty() {
            is_secret_field(name)
        } else {
            self.fields.iter().any(|f| f.eq_ignore_ascii_case(name))
        }
    }

    /// Whether clear values are stored.
    pub fn keeps_credentials(&self) -> bool {
        self.keep
    }

    /// One line saying what is redacted, for the log and the `captures` row.
    pub fn describe(&self) -> String {
        if self.keep {
            return "none (--keep-credentials)".to_string();
        }
        let list = |names: &[HeaderName]| {
            names
                .iter()
                .map(HeaderName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut headers = "credential headers".to_string();
        if !self.extra_headers.is_empty() {
            headers += &format!(" and [{}]", list(&self.extra_headers));
        }
        if !self.keep_headers.is_empty() {
            headers += &format!(" but [{}]", list(&self.keep_headers));
        }
        let fields = if self.fields.is_empty() {
            "secret-named".to_string()
        } else {
            format!("[{}]", self.fields.join(", "))
        };
        format!("headers: {headers}; body fields and query parameters: {fields}")
    }

    /// The marker for a secret value: `redacted:` and 32 hex digits of a
    /// keyed BLAKE3 hash. A value that is a marker already (a HAR that
    /// tapedeck exported, a replay that sent a marker verbatim) is kept as
    /// it is, so it keeps naming the credential a credentials file's
    /// `[markers]` give.
    pub fn marker(&self, value: &[u8]) -> String {
        if let Some(marker) = as_marker(value) {
            return marker.to_string();
        }
        let hash = blake3::keyed_hash(&self.key, value);
        let hex = hash.to_hex();
        format!("{MARKER_PREFIX}{}", &hex.as_str()[..32])
    }

    /// The credential part of an `Authorization` value (after the scheme).
    pub fn credential_of(value: &[u8]) -> &[u8] {
        match value.iter().position(|b| *b == b' ') {
            Some(i) => trim(&value[i + 1..]),
            None => value,
        }
    }

    /// Replaces credential headers by markers, in place (no-op with
    /// `--keep-credentials`). Returns the clear values it replaced.
    pub fn redact_headers(&self, headers: &mut HeaderMap) -> Vec<Vec<u8>> {
        let mut found = Vec::new();
        if self.keep {
            return found;
        }
        for (name, value) in headers.iter_mut() {
            if self.redacts_header(name) {
                *value = self.redact_header_value(name, value.as_bytes(), &mut found);
            }
        }
        found
    }

    /// The marker for `value`, which is noted in `found`.
    fn mark(&self, value: &[u8], found: &mut Vec<Vec<u8>>) -> String {
        found.push(value.to_vec());
        self.marker(value)
    }

    fn redact_header_value(
        &self,
        name: &HeaderName,
        value: &[u8],
        found: &mut Vec<Vec<u8>>,
    ) -> HeaderValue {
        let text = if *name == header::AUTHORIZATION || *name == header::PROXY_AUTHORIZATION {
            match value.iter().position(|b| *b == b' ') {
                Some(i) => {
                    let scheme = String::from_utf8_lossy(&value[..i]);
                    let credential = Self::credential_of(value);
                    // Basic keeps its user name, so a credentials file's
                    // `[users]` can give the password back.
                    let kept = std::str::from_utf8(credential)
                        .ok()
                        .filter(|_| scheme.eq_ignore_ascii_case("basic"))
                        .and_then(basic_parts)
                        .map(|(user, password)| {
                            basic_credential(&user, &self.mark(password.as_bytes(), found))
                        });
                    let credential = kept.unwrap_or_else(|| self.mark(credential, found));
                    format!("{scheme} {credential}")
                }
                None => self.mark(value, found),
            }
        } else if *name == header::COOKIE {
            value
                .split(|b| *b == b';')
                .map(|pair| self.redact_cookie_pair(trim(pair), found))
                .collect::<Vec<_>>()
                .join("; ")
        } else if *name == header::SET_COOKIE {
            // Only the first pair is the cookie; the rest are attributes.
            let end = value.iter().position(|b| *b == b';').unwrap_or(value.len());
            format!(
                "{}{}",
                self.redact_cookie_pair(trim(&value[..end]), found),
                String::from_utf8_lossy(&value[end..])
            )
        } else {
            self.mark(value, found)
        };
        // Markers and the kept parts are visible ASCII, so this cannot fail;
        // fall back to a bare marker if a kept part had odd bytes.
        HeaderValue::from_str(&text).unwrap_or_else(|_| {
            HeaderValue::from_str(&self.marker(value))
                .unwrap_or(HeaderValue::from_static(MARKER_PREFIX))
        })
    }

    fn redact_cookie_pair(&self, pair: &[u8], found: &mut Vec<Vec<u8>>) -> String {
        match pair.iter().position(|b| *b == b'=') {
            Some(i) => format!(
                "{}={}",
                String::from_utf8_lossy(&pair[..i]),
                self.mark(&pair[i + 1..], found)
            ),
            None => String::from_utf8_lossy(pair).into_owned(),
        }
    }

    /// A request URI with the values of secret-named query parameters
    /// replaced by markers (of their decoded values, so a token in a
    /// WebSocket URL gets the marker it gets in a header); `None` when
    /// nothing was replaced. The clear values go into `found`.
    pub fn redact_uri(&self, uri: &str, found: &mut Vec<Vec<u8>>) -> Option<String> {
        let (path, query) = uri.split_once('?')?;
        if self.keep {
            return None;
        }
        let ranges = self.secret_ranges(query.as_bytes(), &BodyKind::Form);
        if ranges.is_empty() {
            return None;
        }
        let mut out = format!("{path}?");
        let mut at = 0;
        for r in ranges {
            out.push_str(&query[at..r.start]);
            let clear = scan::percent_decode(&query.as_bytes()[r.clone()]);
            out.push_str(&self.mark(clear.as_bytes(), found));
            at = r.end;
        }
        out.push_str(&query[at..]);
        Some(out)
    }

    /// Byte ranges of secret-named field values in a body of this kind.
    ///
    /// A scanner, not a parser: it works on truncated bodies and leaves
    /// every other byte as it was.
    pub fn secret_ranges(&self, body: &[u8], kind: &BodyKind) -> Vec<Range<usize>> {
        scan::secret_ranges(body, kind, &|name| self.redacts_field(name))
    }

    /// The values of secret fields among the first `limit` bytes of a
    /// body's content (decoded when encoded; the decoder stops there):
    /// what an answer such as a login's hands out, found at a bounded cost
    /// whatever the body's size.
    pub fn secrets_in_head(&self, headers: &HeaderMap, body: &[u8], limit: usize) -> Vec<Vec<u8>> {
        let head = match headers.contains_key(header::CONTENT_ENCODING) {
            true => body,
            false => &body[..body.len().min(limit)],
        };
        let Some(s) = scannable_up_to(headers, head, limit as u64) else {
            return Vec::new();
        };
        self.secret_ranges(&s.content, &s.kind)
            .into_iter()
            .map(|range| s.content[range].to_vec())
            .collect()
    }

    /// [`Redactor::redact_body`] of a body as [`scannable`] gives it,
    /// encoded again in its coding.
    pub fn redact_content(&self, body: &Scannable<'_>, echoes: &[Vec<u8>]) -> Option<Bytes> {
        let redacted = self.redact_body(&body.content, &body.kind, echoes)?;
        Some(match body.coding {
            Some(c) => Bytes::from(c.encode(&redacted)),
            None => redacted,
        })
    }

    /// Replaces secret field values in a body by markers, and each of
    /// `echoes` (clear values redacted from the request this body
    /// answers) wherever it recurs, when it is long enough not to be
    /// common text. Returns `None` when nothing was replaced (the stored
    /// body is then the received one, byte for byte) or with
    /// `--keep-credentials`.
    pub fn redact_body(&self, body: &[u8], kind: &BodyKind, echoes: &[Vec<u8>]) -> Option<Bytes> {
        if self.keep {
            return None;
        }
        let ranges = self.secret_ranges(body, kind);
        let echoes: Vec<&Vec<u8>> = echoes.iter().filter(|e| e.len() >= ECHO_MIN).collect();
        if ranges.is_empty() && echoes.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(body.len() + ranges.len() * 48);
        let mut at = 0;
        for r in &ranges {
            out.extend_from_slice(&body[at..r.start]);
            out.extend_from_slice(self.marker(&body[r.clone()]).as_bytes());
            at = r.end;
        }
        out.extend_from_slice(&body[at..]);
        let mut changed = !ranges.is_empty();
        for clear in echoes {
            if let Some(replaced) = replace_all(&out, clear, self.marker(clear).as_bytes()) {
                out = replaced;
                changed = true;
            }
        }
        changed.then(|| Bytes::from(out))
    }

    /// Header values with each of `echoes` replaced by its marker, where a
    /// response repeats a request's credential (a `Location` with the
    /// token in its query).
    pub fn redact_echoed_headers(&self, headers: &mut HeaderMap, echoes: &[Vec<u8>]) {
        for value in headers.values_mut() {
            for clear in echoes.iter().filter(|e| e.len() >= ECHO_MIN) {
                if let Some(replaced) =
                    replace_all(value.as_bytes(), clear, self.marker(clear).as_bytes())
                    && let Ok(v) = HeaderValue::from_bytes(&replaced)
                {
                    *value = v;
                }
            }
        }
    }
}

/// `haystack` with every `needle` replaced; `None` when there is none.
fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    let finder = memchr::memmem::Finder::new(needle);
    let mut out = Vec::new();
    let mut at = 0;
    for i in finder.find_iter(haystack) {
        out.extend_from_slice(&haystack[at..i]);
        out.extend_from_slice(with);
        at = i + needle.len();
    }
    if at == 0 {
        return None;
    }
    out.extend_from_slice(&haystack[at..]);
    Some(out)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Coding;

    fn redactor() -> Redactor {
        Redactor::new([7; 32], &RedactionConfig::default()).expect("default config is valid")
    }

    #[test]
    fn encoded_bodies_are_scanned_decoded_and_stored_encoded() {
        let json = br#"{"token":"tok_secret_0123456789","user":"ann"}"#;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let gz = Coding::Gzip.encode(json);
        let body = scannable(&headers, &gz).expect("scannable");
        assert_eq!(
            (&body.content[..], body.coding),
            (&json[..], Some(Coding::Gzip))
        );
        let stored = redactor().redact_content(&body, &[]).expect("has a secret");
        let plain = Coding::Gzip.decode(&stored).expect("still gzip");
        let text = String::from_utf8(plain).expect("utf8");
        assert!(
            !text.contains("tok_secret") && text.contains(MARKER_PREFIX),
            "{text}"
        );
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("compress"),
        );
        assert!(scannable(&headers, &gz).is_none(), "unreadable codings");
    }

    #[test]
    fn equal_values_give_equal_markers_and_keys_change_them() {
        let r = redactor();
        assert_eq!(r.marker(b"abc"), r.marker(b"abc"));
        assert_ne!(r.marker(b"abc"), r.marker(b"abd"));
        let other = Redactor::new([8; 32], &RedactionConfig::default()).expect("valid");
        assert_ne!(r.marker(b"abc"), other.marker(b"abc"));
        assert!(r.marker(b"abc").starts_with(MARKER_PREFIX));
    }

    #[test]
    fn a_marker_is_kept_as_it_is_under_any_key() {
        let r = redactor();
        let marker = Redactor::new([8; 32], &RedactionConfig::default())
            .expect("valid")
            .marker(b"abc");
        assert_eq!(r.marker(marker.as_bytes()), marker);
        let mut h = HeaderMap::new();
        let bearer = format!("Bearer {marker}");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&bearer).expect("ascii"),
        );
        r.redact_headers(&mut h);
        assert_eq!(h[header::AUTHORIZATION], bearer.as_str());
        // Not quite a marker: hashed like any value.
        for near in ["redacted:abc", "redacted:0123456789ABCDEF0123456789abcdef"] {
            assert_ne!(r.marker(near.as_bytes()), near);
        }
    }

    #[test]
    fn authorization_keeps_scheme_and_marks_the_credential() {
        let r = redactor();
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; sid=xyz"));
        h.insert(
            header::SET_COOKIE,
            HeaderValue::from_static("sid=xyz; Path=/; HttpOnly"),
        );
        r.redact_headers(&mut h);
        let auth = h[header::AUTHORIZATION].to_str().expect("ascii");
        assert_eq!(auth, format!("Bearer {}", r.marker(b"s3cret")));
        let cookie = h[header::COOKIE].to_str().expect("ascii");
        assert_eq!(
            cookie,
            format!("a={}; sid={}", r.marker(b"1"), r.marker(b"xyz"))
        );
        let set = h[header::SET_COOKIE].to_str().expect("ascii");
        assert_eq!(set, format!("sid={}; Path=/; HttpOnly", r.marker(b"xyz")));
    }

    #[test]
    fn basic_credentials_keep_the_user_and_mark_the_password() {
        let r = redactor();
        let mut h = HeaderMap::new();
        let clear = format!("Basic {}", basic_credential("ann", "pa:ss"));
        h.insert(header::AUTHORIZATION, clear.parse().expect("ascii"));
        r.redact_headers(&mut h);
        let stored = h[header::AUTHORIZATION].to_str().expect("ascii");
        let (scheme, credential) = stored.split_once(' ').expect("scheme");
        assert_eq!(scheme, "Basic");
        let (user, password) = basic_parts(credential).expect("still Basic");
        assert_eq!((user.as_str(), password), ("ann", r.marker(b"pa:ss")));
        // Not base64 of `user:password`: a whole marker, as other schemes.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic not-base64!"),
        );
        r.redact_headers(&mut h);
        assert_eq!(
            h[header::AUTHORIZATION],
            format!("Basic {}", r.marker(b"not-base64!"))
        );
    }

    #[test]
    fn json_fields_are_marked_in_place_and_other_bytes_kept() {
        let r = redactor();
        let body = br#"{"user":"ann", "Password" : "hunter2", "n":{"token":42,"x":"token"}}"#;
        let out = r
            .redact_body(body, &BodyKind::Json, &[])
            .expect("has secrets");
        let expected = format!(
            r#"{{"user":"ann", "Password" : "{}", "n":{{"token":{},"x":"token"}}}}"#,
            r.marker(b"hunter2"),
            r.marker(b"42")
        );
        assert_eq!(std::str::from_utf8(&out).expect("utf8"), expected);
    }

    #[test]
    fn truncated_json_and_form_bodies_are_redacted() {
        let r = redactor();
        let out = r
            .redact_body(br#"{"access_token":"abc\"def"#, &BodyKind::Json, &[])
            .expect("secret");
        assert_eq!(
            out,
            format!(r#"{{"access_token":"{}"#, r.marker(br#"abc\"def"#))
        );
        let form = r
            .redact_body(b"user=ann&password=pw&x=no", &BodyKind::Form, &[])
            .expect("secret");
        assert_eq!(form, format!("user=ann&password={}&x=no", r.marker(b"pw")));
        assert!(
            r.redact_body(
                br#"{"user":"ann","note":"no secrets"}"#,
                &BodyKind::Json,
                &[]
            )
            .is_none()
        );
    }

    #[test]
    fn query_secrets_and_their_echoes_are_marked() {
        let r = redactor();
        let mut found = Vec::new();
        let uri = r
            .redact_uri("/ws?room=r1&access_token=ey%2BJ0k3n99&v=2", &mut found)
            .expect("a secret");
        assert_eq!(
            uri,
            format!("/ws?room=r1&access_token={}&v=2", r.marker(b"ey+J0k3n99"))
        );
        assert_eq!(found, [b"ey+J0k3n99".to_vec()]);
        let echo = br#"{"error":"bad token ey+J0k3n99","n":"ann"}"#;
        let out = r
            .redact_body(echo, &BodyKind::Json, &found)
            .expect("echoed");
        assert_eq!(
            out,
            format!(
                r#"{{"error":"bad token {}","n":"ann"}}"#,
                r.marker(b"ey+J0k3n99")
            )
        );
        assert!(r.redact_uri("/a?room=r1", &mut found).is_none());
    }

    #[test]
    fn keep_credentials_stores_clear_values() {
        let config = RedactionConfig {
            keep_credentials: true,
            ..RedactionConfig::default()
        };
        let r = Redactor::new([1; 32], &config).expect("valid");
        assert!(
            r.redact_body(br#"{"password":"x"}"#, &BodyKind::Json, &[])
                .is_none()
        );
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        r.redact_headers(&mut h);
        assert_eq!(h[header::AUTHORIZATION], "Bearer t");
    }
}
