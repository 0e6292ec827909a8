//! Finding secret values in bodies without parsing them: scanners that
//! work on truncated bodies and leave every other byte as it was.

use std::borrow::Cow;
use std::ops::Range;

use http::header::{self, HeaderMap};

use crate::codec::{Coding, MAX_DECODED};

/// What kind of body a scan reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    /// JSON (the value of every key whose name is a secret's).
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `multipart/form-data` with its boundary: text parts named like a
    /// secret.
    Multipart(String),
    /// Other text (`text/*`, XML): no fields, but a request's secrets are
    /// still found where an answer repeats them.
    Text,
}

impl BodyKind {
    /// The kind of a body of this content type; `None` for types whose
    /// bodies are not scanned.
    pub fn of(content_type: &str) -> Option<BodyKind> {
        let ct = content_type.trim().to_ascii_lowercase();
        if ct.starts_with("multipart/form-data") {
            let boundary = content_type.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("boundary")
                    .then(|| v.trim().trim_matches('"').to_string())
            })?;
            return (!boundary.is_empty()).then_some(BodyKind::Multipart(boundary));
        }
        if ct.starts_with("application/x-www-form-urlencoded") {
            return Some(BodyKind::Form);
        }
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence.contains("json") {
            Some(BodyKind::Json)
        } else if essence.starts_with("text/") || essence.ends_with("xml") {
            Some(BodyKind::Text)
        } else {
            None
        }
    }
}

/// Byte ranges of the values of secret-named fields (by `secret`).
pub fn secret_ranges(
    body: &[u8],
    kind: &BodyKind,
    secret: &impl Fn(&str) -> bool,
) -> Vec<Range<usize>> {
    match kind {
        BodyKind::Json => json(body, secret),
        BodyKind::Form => form(body, secret),
        BodyKind::Multipart(boundary) => multipart(body, boundary.as_bytes(), secret),
        BodyKind::Text => Vec::new(),
    }
}

/// Every key of a JSON text (any depth) and the string or scalar after it.
///
/// Only keys are judged, each distinct name once (an array of objects
/// repeats the same few names), and string values are skipped whole: the
/// scan costs about one pass over the bytes, which matters on the client's
/// path (docs/recording.md).
fn json(body: &[u8], secret: &impl Fn(&str) -> bool) -> Vec<Range<usize>> {
    /// Distinct names remembered; past that, names are judged each time.
    const JUDGED: usize = 64;
    let mut judged: Vec<(&[u8], bool)> = Vec::new();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(q) = memchr::memchr(b'"', &body[i..]) {
        let start = i + q + 1;
        let end = string_end(body, start);
        i = end + 1;
        if end >= body.len() {
            break;
        }
        // A key is a string followed by a colon.
        let Some(v) = after_colon(body, end + 1) else {
            continue;
        };
        let name = &body[start..end];
        let is_secret = match judged.iter().find(|(n, _)| *n == name) {
            Some(&(_, verdict)) => verdict,
            None => {
                let verdict = std::str::from_utf8(name).is_ok_and(secret);
                if judged.len() < JUDGED {
                    judged.push((name, verdict));
                }
                verdict
            }
        };
        match body.get(v) {
            Some(b'"') => {
                // A string value is not a key: continue after it.
                let value_end = string_end(body, v + 1);
                if is_secret && value_end > v + 1 {
                    out.push(v + 1..value_end);
                }
                i = (value_end + 1).min(body.len());
            }
            // Objects, arrays and `null`/`true`/`false` are not secrets.
            Some(b'{' | b'[') | None => {}
            Some(_) if is_secret => {
                let scalar_end = body[v..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                    .map_or(body.len(), |k| v + k);
                if !matches!(&body[v..scalar_end], b"" | b"null" | b"true" | b"false") {
                    out.push(v..scalar_end);
                }
                // What the value covers is not a key: a quote inside a
                // damaged scalar must not start a range inside this one.
                i = i.max(scalar_end);
            }
            Some(_) => {}
        }
    }
    out
}

/// Where a key's value starts: after blanks, a colon and blanks following
/// the key's closing quote at `i - 1`; `None` when no colon follows (a
/// string value, not a key).
fn after_colon(body: &[u8], i: usize) -> Option<usize> {
    let skip_blank = |mut i: usize| {
        while i < body.len() && body[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let i = skip_blank(i);
    (body.get(i) == Some(&b':')).then(|| skip_blank(i + 1))
}

/// The index of the quote that ends the JSON string starting at `start`
/// (or the body's length when it is cut).
fn string_end(body: &[u8], start: usize) -> usize {
    let mut j = start;
    while j < body.len() {
        match body[j] {
            b'\\' => j += 2,
            b'"' => return j,
            _ => j += 1,
        }
    }
    body.len()
}

/// `k=v&k=v`: each value whose (decoded) name is a secret's.
fn form(body: &[u8], secret: &impl Fn(&str) -> bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    for pair in body.split(|b| *b == b'&') {
        if let Some(eq) = pair.iter().position(|b| *b == b'=') {
            let name = percent_decode(&pair[..eq]);
            if secret(&name) && eq + 1 < pair.len() {
                out.push(at + eq + 1..at + pair.len());
            }
        }
        at += pair.len() + 1;
    }
    out
}

/// The content of each multipart part whose `Content-Disposition` names a
/// secret field and that is not a file.
fn multipart(body: &[u8], boundary: &[u8], secret: &impl Fn(&str) -> bool) -> Vec<Range<usize>> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let finder = memchr::memmem::Finder::new(&delimiter);
    let starts: Vec<usize> = finder.find_iter(body).collect();
    let mut out = Vec::new();
    for (n, at) in starts.iter().enumerate() {
        let part_start = at + delimiter.len();
        // The part ends before the CRLF of the next delimiter (or the end
        // of a cut body).
        let part_end = starts.get(n + 1).map_or(body.len(), |next| {
            if body[..*next].ends_with(b"\r\n") {
                next - 2
            } else {
                *next
            }
        });
        let part = &body[part_start.min(part_end)..part_end];
        let Some(head_end) = memchr::memmem::find(part, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..head_end]);
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"));
        let Some(disposition) = disposition else {
            continue;
        };
        let param = |key: &str| {
            disposition.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case(key)
                    .then(|| v.trim().trim_matches('"').to_string())
            })
        };
        if param("filename").is_none() && param("name").is_some_and(|name| secret(&name)) {
            let start = part_start + head_end + 4;
            if start < part_end {
                out.push(start..part_end);
            }
        }
    }
    out
}

/// `%XX` and `+` decoded, as forms and queries encode.
pub(crate) fn percent_decode(b: &[u8]) -> String {
    let spaced: Vec<u8> = b
        .iter()
        .map(|c| if *c == b'+' { b' ' } else { *c })
        .collect();
    percent_encoding::percent_decode(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// A body's content as [`scannable`] gives it: decoded when it is
/// content-encoded.
pub struct Scannable<'a> {
    /// The content.
    pub content: Cow<'a, [u8]>,
    /// What kind of body it is.
    pub kind: BodyKind,
    /// Its coding, to encode a redacted copy again.
    pub coding: Option<Coding>,
}

/// What of a body with these headers can be scanned for secret fields:
/// its content (decoded when it is content-encoded), kind and coding, for
/// a JSON, form or multipart body; `None` for other types and codings this
/// cannot read.
pub fn scannable<'a>(headers: &HeaderMap, body: &'a [u8]) -> Option<Scannable<'a>> {
    scannable_up_to(headers, body, MAX_DECODED)
}

/// [`scannable`], decoding at most `limit` bytes of an encoded body: a
/// longer content is cut there (check its length to tell).
pub fn scannable_up_to<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    limit: u64,
) -> Option<Scannable<'a>> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let kind = BodyKind::of(ct)?;
    let coding = match headers.get(header::CONTENT_ENCODING) {
        Some(v) => match Coding::parse(v.as_bytes()) {
            Ok(c) => c,
            Err(_) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        content_encoding = ?v,
                        "a JSON, form or text body in a Content-Encoding other than gzip, deflate, br or zstd \
                         is stored as received: its secret fields are not redacted (warned once)"
                    );
                });
                return None;
            }
        },
        None => None,
    };
    let content = match coding {
        None => Cow::Borrowed(body),
        Some(c) => Cow::Owned(c.decode_up_to(body, limit)?),
    };
    Some(Scannable {
        content,
        kind,
        coding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::redact::is_secret_field;

    fn values(body: &str, kind: BodyKind) -> Vec<&str> {
        secret_ranges(body.as_bytes(), &kind, &is_secret_field)
            .into_iter()
            .map(|r| &body[r])
            .collect()
    }

    #[test]
    fn json_keys_at_any_depth_by_name_and_suffix() {
        let body = r#"{"user":"ann","auth":{"clientSecret":"cs1","id_token":"it1"},
            "note":"token","idempotency_key":"k1","items":[{"api_key":42}],"password":"pw"#;
        assert_eq!(values(body, BodyKind::Json), ["cs1", "it1", "42", "pw"]);
    }

    #[test]
    fn json_names_judged_once_still_find_every_value_and_only_keys() {
        // Past the names remembered, and repeated names, judged alike; a
        // value that reads like a key's name and a key-like text inside a
        // string are not keys.
        let mut body = String::from("{");
        for k in 0..100 {
            body.push_str(&format!(r#""field{k}":"token","#));
        }
        body.push_str(r#""items":[{"token":"t1","text":"\"token\":\"no\""},{"token":"t2"}],"#);
        body.push_str(r#""late":{"token":"t3"},"cut":{"secret":"t4"#);
        assert_eq!(values(&body, BodyKind::Json), ["t1", "t2", "t3", "t4"]);
    }

    #[test]
    fn form_and_multipart_fields() {
        assert_eq!(
            values(
                "user=ann&pass%77ord=pw&xpassword=no&refresh_token=",
                BodyKind::Form
            ),
            ["pw", "no"]
        );
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nann\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nhunter2\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"token\"; filename=\"t.txt\"\r\n\r\nfile\r\n\
                    --XyZ--\r\n";
        let kind = BodyKind::of("multipart/form-data; boundary=\"XyZ\"").expect("multipart");
        assert_eq!(values(body, kind), ["hunter2"]);
    }

    #[test]
    fn a_quote_inside_a_secret_scalar_starts_no_second_range() {
        // Found by the redact fuzz target: the second key sat inside the
        // first value's range, and redact_body sliced backwards.
        let body = r#"{"password":nu"x":"t1","token":cdefg}"#;
        assert_eq!(values(body, BodyKind::Json), [r#"nu"x":"t1""#, "cdefg"]);
    }
}
