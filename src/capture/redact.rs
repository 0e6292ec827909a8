//! Credential redaction (docs/capture-format.md, redaction).
//!
//! Credential headers and secret-named JSON or form fields are replaced by
//! markers `redacted:<keyed hash>`. The key is made once per store and kept
//! in it, so equal values give equal markers across runs and replicas:
//! sessions still group and replay can still map a marker to the live value
//! learned from a replayed login. Works on bytes and header maps only; the
//! proxy calls it before a record is queued, so the writer never sees a
//! clear credential unless `--keep-credentials` asked for that.

use std::borrow::Cow;
use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::codec::Coding;

/// Prefix of every marker.
pub const MARKER_PREFIX: &str = "redacted:";

/// Header names redacted by default.
pub const DEFAULT_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// JSON / form field names redacted by default. Each also matches in
/// lower-case, Capitalized and UPPER-case spelling.
pub const DEFAULT_FIELDS: [&str; 10] = [
    "password",
    "passwd",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "accessToken",
    "refreshToken",
    "apiKey",
];

/// Whether a JSON or form field of this name holds a secret by default
/// ([`DEFAULT_FIELDS`], in any case). Replay reads the same list: such a
/// value is a credential, never a value to regenerate.
pub fn is_secret_field(name: &str) -> bool {
    DEFAULT_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// Whether a header of this name carries a credential by default
/// ([`DEFAULT_HEADERS`]).
pub fn is_credential_header(name: &str) -> bool {
    DEFAULT_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

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

/// What to redact.
#[derive(Debug, Clone)]
pub struct RedactionConfig {
    /// Store clear values instead of markers.
    pub keep_credentials: bool,
    /// Header names to redact in addition to [`DEFAULT_HEADERS`].
    pub extra_headers: Vec<String>,
    /// Body field names to redact ([`DEFAULT_FIELDS`] unless changed).
    pub fields: Vec<String>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            keep_credentials: false,
            extra_headers: Vec::new(),
            fields: DEFAULT_FIELDS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Applies a [`RedactionConfig`] with one store's key.
#[derive(Debug, Clone)]
pub struct Redactor {
    key: [u8; 32],
    keep: bool,
    headers: Vec<HeaderName>,
    fields: Vec<String>,
    /// Finds `"field"` (JSON) and `field=` (form) occurrences in one pass.
    finder: Option<AhoCorasick>,
}

impl Redactor {
    /// A redactor using the store's key.
    ///
    /// # Errors
    /// When an extra header name is not a valid HTTP header name.
    pub fn new(key: [u8; 32], config: &RedactionConfig) -> Result<Self, String> {
        let mut headers: Vec<HeaderName> = DEFAULT_HEADERS
            .iter()
            .map(|h| HeaderName::from_static(h))
            .collect();
        for name in &config.extra_headers {
            let parsed = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("`{name}` is not a valid header name"))?;
            if !headers.contains(&parsed) {
                headers.push(parsed);
            }
        }
        let fields: Vec<String> = config.fields.iter().map(|f| f.trim().to_string()).collect();
        // Each name as given, lower-case, Capitalized and UPPER-case. Exact
        // patterns (no case folding) let aho-corasick use its SIMD searcher:
        // the scan runs on every JSON body, so it must be cheap.
        let mut patterns: Vec<String> = Vec::new();
        for f in fields.iter().filter(|f| !f.is_empty()) {
            let lower = f.to_ascii_lowercase();
            let mut capitalized = lower.clone();
            if let Some(first) = capitalized.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            for p in [
                f.clone(),
                lower.clone(),
                capitalized,
                f.to_ascii_uppercase(),
            ] {
                if !patterns.contains(&p) {
                    patterns.push(p);
                }
            }
        }
        let finder = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .map_err(|e| format!("redaction field list: {e}"))?,
            )
        };
        Ok(Redactor {
            key,
            keep: config.keep_credentials,
            headers,
            fields,
            finder,
        })
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
        let headers: Vec<&str> = self.headers.iter().map(|h| h.as_str()).collect();
        format!(
            "headers [{}]; body fields [{}]",
            headers.join(", "),
            self.fields.join(", ")
        )
    }

    /// The marker for a secret value: `redacted:` and 32 hex digits of a
    /// keyed BLAKE3 hash.
    pub fn marker(&self, value: &[u8]) -> String {
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
    /// `--keep-credentials`).
    pub fn redact_headers(&self, headers: &mut HeaderMap) {
        if self.keep {
            return;
        }
        for (name, value) in headers.iter_mut() {
            if self.headers.contains(name) {
                *value = self.redact_header_value(name, value.as_bytes());
            }
        }
    }

    fn redact_header_value(&self, name: &HeaderName, value: &[u8]) -> HeaderValue {
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
                            basic_credential(&user, &self.marker(password.as_bytes()))
                        });
                    let credential = kept.unwrap_or_else(|| self.marker(credential));
                    format!("{scheme} {credential}")
                }
                None => self.marker(value),
            }
        } else if *name == header::COOKIE {
            value
                .split(|b| *b == b';')
                .map(|pair| self.redact_cookie_pair(trim(pair)))
                .collect::<Vec<_>>()
                .join("; ")
        } else if *name == header::SET_COOKIE {
            // Only the first pair is the cookie; the rest are attributes.
            let end = value.iter().position(|b| *b == b';').unwrap_or(value.len());
            format!(
                "{}{}",
                self.redact_cookie_pair(trim(&value[..end])),
                String::from_utf8_lossy(&value[end..])
            )
        } else {
            self.marker(value)
        };
        // Markers and the kept parts are visible ASCII, so this cannot fail;
        // fall back to a bare marker if a kept part had odd bytes.
        HeaderValue::from_str(&text).unwrap_or_else(|_| {
            HeaderValue::from_str(&self.marker(value))
                .unwrap_or(HeaderValue::from_static(MARKER_PREFIX))
        })
    }

    fn redact_cookie_pair(&self, pair: &[u8]) -> String {
        match pair.iter().position(|b| *b == b'=') {
            Some(i) => format!(
                "{}={}",
                String::from_utf8_lossy(&pair[..i]),
                self.marker(&pair[i + 1..])
            ),
            None => String::from_utf8_lossy(pair).into_owned(),
        }
    }

    /// Byte ranges of secret-named field values in a JSON or form body.
    ///
    /// A scanner, not a parser: it works on truncated bodies and leaves
    /// every other byte as it was. A JSON value is the string or scalar
    /// after `"field"` and a colon; a form value runs from `field=` to the
    /// next `&` at the start of a pair.
    pub fn secret_ranges(&self, body: &[u8]) -> Vec<Range<usize>> {
        let Some(finder) = &self.finder else {
            return Vec::new();
        };
        let mut ranges = Vec::new();
        for m in finder.find_iter(body) {
            let before = m.start().checked_sub(1).map(|i| body[i]);
            let after = body.get(m.end()).copied();
            let range = match (before, after) {
                // A JSON key: the name in quotes.
                (Some(b'"'), Some(b'"')) => json_value_after(body, m.end() + 1),
                // A form field: at the start of a pair.
                (None | Some(b'&'), Some(b'=')) => {
                    let start = m.end() + 1;
                    let end = body[start..]
                        .iter()
                        .position(|b| *b == b'&')
                        .map_or(body.len(), |i| start + i);
                    Some(start..end)
                }
                _ => None,
            };
            if let Some(r) = range.filter(|r| !r.is_empty())
                && ranges
                    .last()
                    .is_none_or(|prev: &Range<usize>| prev.end <= r.start)
            {
                ranges.push(r);
            }
        }
        ranges
    }

    /// [`Redactor::redact_body`] of a body's `content` (as [`scannable`]
    /// gives it), encoded again in its `coding`.
    pub fn redact_content(&self, content: &[u8], coding: Option<Coding>) -> Option<Bytes> {
        let redacted = self.redact_body(content)?;
        Some(match coding {
            Some(c) => Bytes::from(c.encode(&redacted)),
            None => redacted,
        })
    }

    /// Replaces secret field values in a body by markers. Returns `None`
    /// when nothing was replaced (the stored body is then the received one,
    /// byte for byte) or with `--keep-credentials`.
    pub fn redact_body(&self, body: &[u8]) -> Option<Bytes> {
        if self.keep {
            return None;
        }
        let ranges = self.secret_ranges(body);
        if ranges.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(body.len() + ranges.len() * 48);
        let mut at = 0;
        for r in ranges {
            out.extend_from_slice(&body[at..r.start]);
            out.extend_from_slice(self.marker(&body[r.clone()]).as_bytes());
            at = r.end;
        }
        out.extend_from_slice(&body[at..]);
        Some(Bytes::from(out))
    }
}

/// What of a body with these headers can be scanned for secret fields:
/// its content (decoded when it is content-encoded) and its coding, for a
/// JSON or form body; `None` for other types and codings this cannot read.
pub fn scannable<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
) -> Option<(Cow<'a, [u8]>, Option<Coding>)> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let ct = ct.to_ascii_lowercase();
    if !(ct.contains("json") || ct.starts_with("application/x-www-form-urlencoded")) {
        return None;
    }
    let coding = match headers.get(header::CONTENT_ENCODING) {
        Some(v) => match Coding::parse(v.as_bytes()) {
            Ok(c) => c,
            Err(_) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        content_encoding = ?v,
                        "a JSON or form body in a Content-Encoding other than gzip, deflate, br or zstd \
                         is stored as received: its secret fields are not redacted (warned once)"
                    );
                });
                return None;
            }
        },
        None => None,
    };
    match coding {
        None => Some((Cow::Borrowed(body), None)),
        Some(c) => Some((Cow::Owned(c.decode(body)?), Some(c))),
    }
}

/// The value after `"key"` in JSON: skips blanks and a colon, then a string
/// (to its closing quote, or the end of a truncated body) or a bare scalar.
fn json_value_after(body: &[u8], mut i: usize) -> Option<Range<usize>> {
    let skip_blank = |mut i: usize| {
        while i < body.len() && body[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    i = skip_blank(i);
    if body.get(i) != Some(&b':') {
        return None; // a string value that happens to equal a field name
    }
    i = skip_blank(i + 1);
    match body.get(i)? {
        b'"' => {
            let start = i + 1;
            let mut j = start;
            while j < body.len() {
                match body[j] {
                    b'\\' => j += 2,
                    b'"' => return Some(start..j),
                    _ => j += 1,
                }
            }
            Some(start..body.len())
        }
        b'{' | b'[' => None,
        _ => {
            let end = body[i..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                .map_or(body.len(), |k| i + k);
            let scalar = &body[i..end];
            // Leave literals alone: `null`, `true` and `false` are not secrets.
            if matches!(scalar, b"null" | b"true" | b"false") {
                None
            } else {
                Some(i..end)
            }
        }
    }
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
        let (content, coding) = scannable(&headers, &gz).expect("scannable");
        assert_eq!((&content[..], coding), (&json[..], Some(Coding::Gzip)));
        let stored = redactor()
            .redact_content(&content, coding)
            .expect("has a secret");
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
        let out = r.redact_body(body).expect("has secrets");
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
            .redact_body(br#"{"access_token":"abc\"def"#)
            .expect("secret");
        assert_eq!(
            out,
            format!(r#"{{"access_token":"{}"#, r.marker(br#"abc\"def"#))
        );
        let form = r
            .redact_body(b"user=ann&password=pw&xpassword=no")
            .expect("secret");
        assert_eq!(
            form,
            format!("user=ann&password={}&xpassword=no", r.marker(b"pw"))
        );
        assert!(
            r.redact_body(br#"{"user":"ann","note":"no secrets"}"#)
                .is_none()
        );
    }

    #[test]
    fn keep_credentials_stores_clear_values() {
        let config = RedactionConfig {
            keep_credentials: true,
            ..RedactionConfig::default()
        };
        let r = Redactor::new([1; 32], &config).expect("valid");
        assert!(r.redact_body(br#"{"password":"x"}"#).is_none());
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        r.redact_headers(&mut h);
        assert_eq!(h[header::AUTHORIZATION], "Bearer t");
    }
}
