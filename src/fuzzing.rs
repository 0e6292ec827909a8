//! Fuzz target bodies: one function per target, each taking arbitrary
//! bytes, that must never panic and that asserts what holds for every
//! input (docs/testing.md, "Fuzzing"; docs/reliability.md, "Parsers under
//! hostile input").
//!
//! The cargo-fuzz crate in fuzz/ calls these under libFuzzer (nightly), and
//! tests/fuzz_corpus.rs replays fuzz/corpus/ and fuzz/regressions/ through
//! them on stable, so a crash once found stays fixed. Not a public API:
//! hidden from the docs, used by nothing else in the crate.
//!
//! Inputs are read as the parsers meet them: request and answer bodies and
//! their codings, WebSocket bytes off the wire, report files, profile
//! files, recorded and live answers, request targets.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};

use crate::capture::redact::frames::{login_parts, packet_json, sasl_auth, stomp};
use crate::capture::redact::{
    BodyKind, MARKER_PREFIX, RedactionConfig, Redactor, percent_decode, scannable,
};
use crate::capture::socket::MAX_FRAME_PAYLOAD;
use crate::capture::{StoredExchange, WsFrame};
use crate::codec::{Coding, MAX_DECODED};
use crate::profile::Profile;
use crate::proxy::websocket::FrameReader;
use crate::replay::correlate::{Answer, Correlation, Credentials, Rules};
use crate::report::compare::{self, Thresholds};
use crate::report::model::{self, Report};
use crate::report::render::markdown;
use crate::route;

/// A target: any bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus folder and fuzz binary have.
pub const TARGETS: [(&str, Target); 6] = [
    ("redact", redact),
    ("ws_frames", ws_frames),
    ("report", report),
    ("profile", profile),
    ("correlate", correlate),
    ("route", route),
];

/// The redactor every target uses: default rules, a fixed key.
fn redactor() -> Redactor {
    // The default configuration names no header, so it is valid.
    Redactor::new([7; 32], &RedactionConfig::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Length of a marker: the prefix and 32 hex digits.
const MARKER_LEN: usize = MARKER_PREFIX.len() + 32;

/// Whether `out` holds `clear` anywhere outside a marker: a clear secret
/// that redaction left in. An occurrence that overlaps a marker is the
/// marker's text, not the secret.
fn leaks(out: &[u8], clear: &[u8]) -> bool {
    let mut covered = vec![false; out.len()];
    for at in memchr::memmem::find_iter(out, MARKER_PREFIX.as_bytes()) {
        let hex = &out[at + MARKER_PREFIX.len()..out.len().min(at + MARKER_LEN)];
        if hex.len() == 32 && hex.iter().all(u8::is_ascii_hexdigit) {
            covered[at..at + MARKER_LEN].fill(true);
        }
    }
    memchr::memmem::find_iter(out, clear).any(|at| !covered[at..at + clear.len()].contains(&true))
}

/// Clear values redaction promises to replace wherever they recur: those
/// long enough not to be common text.
fn echo_worthy(v: &[u8]) -> bool {
    v.len() >= 8
}

/// The redaction scanner: `data[0]` picks the body kind (bits 0-1), the
/// content coding (bits 2-4) and whether the rest is the encoded body as
/// received (bit 7) or its content, encoded here first; a multipart body's
/// boundary is its first line.
///
/// Asserts: secret ranges are in bounds, non-empty, sorted and apart;
/// decoding stays within [`MAX_DECODED`]; a body encoded here decodes back
/// to itself; a redacted body holds no secret it redacted (nor an echo)
/// outside a marker; a body without secrets or echoes is left alone.
pub fn redact(data: &[u8]) {
    let Some((&select, rest)) = data.split_first() else {
        return;
    };
    let (kind, content_type, body) = match select & 3 {
        0 => (BodyKind::Json, "application/json".to_string(), rest),
        1 => (
            BodyKind::Form,
            "application/x-www-form-urlencoded".into(),
            rest,
        ),
        2 => {
            let line = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let boundary = String::from_utf8_lossy(&rest[..line]).trim().to_string();
            let body = rest.get(line + 1..).unwrap_or_default();
            if boundary.is_empty() || boundary.contains(['"', ';', '\r']) {
                return;
            }
            let ct = format!("multipart/form-data; boundary=\"{boundary}\"");
            (BodyKind::Multipart(boundary), ct, body)
        }
        _ => (BodyKind::Text, "text/plain".into(), rest),
    };
    let r = redactor();
    check_redaction(&r, body, &kind);

    let coding = match (select >> 2) & 7 {
        1 => Coding::Gzip,
        2 => Coding::Deflate,
        3 => Coding::Brotli,
        4 => Coding::Zstd,
        _ => return,
    };
    let received = select & 0x80 != 0;
    let encoded = match received {
        true => Cow::Borrowed(body),
        false => Cow::Owned(coding.encode(body)),
    };
    let name = match coding {
        Coding::Gzip => "gzip",
        Coding::Deflate => "deflate",
        Coding::Brotli => "br",
        Coding::Zstd => "zstd",
    };
    let mut headers = HeaderMap::new();
    let Ok(ct) = HeaderValue::from_str(&content_type) else {
        return;
    };
    headers.insert(header::CONTENT_TYPE, ct);
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(name));
    let Some(s) = scannable(&headers, &encoded) else {
        assert!(
            received || body.is_empty(),
            "{name} of {} bytes",
            body.len()
        );
        return;
    };
    assert!(s.content.len() as u64 <= MAX_DECODED, "decoding is bounded");
    assert_eq!(s.kind, kind);
    if !received {
        assert_eq!(&s.content[..], body, "{name} round trip");
    }
    let secrets = secret_values(&r, &s.content, &kind);
    if let Some(again) = r.redact_content(&s, &secrets) {
        let plain = coding.decode(&again).unwrap_or_default();
        for clear in secrets.iter().filter(|c| echo_worthy(c)) {
            assert!(!leaks(&plain, clear), "a {name} body kept a secret");
        }
    }
}

/// The values of the secret fields of `body`, after checking their ranges.
fn secret_values(r: &Redactor, body: &[u8], kind: &BodyKind) -> Vec<Vec<u8>> {
    let ranges = r.secret_ranges(body, kind);
    let mut at = 0;
    for range in &ranges {
        assert!(
            at <= range.start && range.start < range.end && range.end <= body.len(),
            "ranges in bounds, non-empty, sorted and apart: {ranges:?} of {}",
            body.len()
        );
        at = range.end;
    }
    ranges
        .iter()
        .map(|range| body[range.clone()].to_vec())
        .collect()
}

/// [`Redactor::redact_body`] with the body's own secrets as echoes.
fn check_redaction(r: &Redactor, body: &[u8], kind: &BodyKind) {
    let secrets = secret_values(r, body, kind);
    let echoes: Vec<Vec<u8>> = secrets.iter().filter(|s| echo_worthy(s)).cloned().collect();
    match r.redact_body(body, kind, &echoes) {
        Some(out) => {
            for clear in &echoes {
                assert!(
                    !leaks(&out, clear),
                    "redacted body still holds {:?}",
                    String::from_utf8_lossy(clear)
                );
            }
        }
        None => assert!(secrets.is_empty(), "secrets found but nothing redacted"),
    }
}

/// The WebSocket frame reader and the frame redaction: `data[0]` is the
/// size of the reads the stream arrives in (1 to 64 bytes), the rest is
/// one direction's bytes; each text frame read, and the rest as one text,
/// go through the frame formats' parsers and [`Redactor::redact_frames`].
///
/// Asserts: the frames read do not depend on how the bytes were split; a
/// frame keeps at most its length and says when it kept less; parsed
/// ranges fall on the text's character boundaries; a login frame's
/// password is gone from the redacted frame.
pub fn ws_frames(data: &[u8]) {
    let Some((&chunk, wire)) = data.split_first() else {
        return;
    };
    let whole = FrameReader::default().feed(wire, 0, "client", true);
    let mut reader = FrameReader::default();
    let mut split = Vec::new();
    for part in wire.chunks(usize::from(chunk % 64) + 1) {
        split.extend(reader.feed(part, 0, "client", true));
    }
    assert_eq!(whole, split, "frames depend on how the bytes were split");
    for f in &whole {
        assert_eq!(
            f.truncated,
            f.len > MAX_FRAME_PAYLOAD as u64,
            "truncated {f:?}"
        );
    }
    let mut texts: Vec<WsFrame> = whole.into_iter().filter(|f| f.op == "text").collect();
    texts.push(WsFrame::text("client", &String::from_utf8_lossy(wire)));
    let logins: Vec<_> = texts.iter().map(|f| check_frame(&f.data)).collect();
    let mut redacted = texts.clone();
    redactor().redact_frames(&mut redacted, &[]);
    for ((before, after), login) in texts.iter().zip(&redacted).zip(logins) {
        let Some((_, password)) = login else {
            continue;
        };
        assert!(
            login_parts(&after.data).is_none_or(|(_, p)| p != password || p.is_empty()),
            "password kept in {:?} -> {:?}",
            before.data,
            after.data
        );
    }
}

/// Parses one text frame every way the frame redaction does, checking
/// ranges; returns its login parts when the password must be redacted.
fn check_frame(text: &str) -> Option<(String, String)> {
    let in_text = |r: &std::ops::Range<usize>| {
        r.start <= r.end
            && r.end <= text.len()
            && text.is_char_boundary(r.start)
            && text.is_char_boundary(r.end)
    };
    let auth = sasl_auth(text);
    if let Some(a) = &auth {
        assert!(in_text(&a.payload), "SASL payload {:?}", a.payload);
    }
    if let Some(s) = stomp(text) {
        assert!(in_text(&s.body), "STOMP body {:?}", s.body);
        for (name, value) in &s.headers {
            assert!(in_text(name) && in_text(value), "STOMP header");
        }
    }
    if let Some(i) = packet_json(text) {
        assert!(matches!(text.as_bytes()[i], b'{' | b'['));
    }
    let login = login_parts(text)?;
    // Mechanisms that carry no secret, and an empty payload, are kept.
    let kept = auth.is_some_and(|a| {
        let m = a.mechanism.to_ascii_uppercase();
        m == "ANONYMOUS" || m == "EXTERNAL" || text[a.payload].trim() == "="
    });
    (!kept).then_some(login)
}

/// A report file as `tapedeck compare` and `report merge` read it
/// ([`crate::report::load`]: UTF-8, JSON, the format), then merged with
/// itself (every histogram decoded and added), compared with itself and
/// rendered.
///
/// Asserts: a report saved again reads back; merging a report with
/// itself doubles its request counts.
pub fn report(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = serde_json::from_str::<Report>(text) else {
        return;
    };
    if r.format != model::FORMAT {
        return;
    }
    // Saved again, it loads again (equal up to the last bit of a float:
    // serde_json parses floats fast, not exactly).
    let json = serde_json::to_string(&r).unwrap_or_default();
    let back: Report = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(
        back.stages.len(),
        r.stages.len(),
        "a saved report reads back"
    );
    let path = PathBuf::from("fuzz.json");
    if let Ok(merged) = crate::report::merge(&[(path.clone(), r.clone()), (path, r.clone())], None)
    {
        for (m, s) in merged.stages.iter().zip(&r.stages) {
            assert_eq!(
                m.requests,
                s.requests.saturating_mul(2),
                "merged counts add"
            );
        }
        let _ = markdown::report_markdown(&merged);
    }
    let _ = compare::compare(&r, &r, &Thresholds::default());
    let _ = markdown::report_markdown(&r);
}

/// A replay profile's TOML, parsed and validated as `replay --profile`
/// reads it.
///
/// Asserts: a profile that parses validates again, and its rules compile.
pub fn profile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = Profile::parse(text, Path::new("fuzz.toml")) else {
        return;
    };
    assert_eq!(p.validate(), Ok(()));
    assert!(Rules::compile(&p.rules).is_ok(), "valid rules compile");
}

/// Correlation over a recorded session of two requests: NUL-separated
/// fields (recorded first request's target, its body, its recorded
/// answer, the live answer, the second request's target and body, a
/// client text frame). The session is analyzed, the first request made
/// ready, learned from with the live answer, and the second made ready in
/// the same world.
///
/// Asserts: a live answer identical to the recorded one teaches nothing
/// new: no conflict, no value handed out.
pub fn correlate(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let mut next = || fields.next().unwrap_or("");
    let (uri, body, answer, live, uri2, body2, frame) =
        (next(), next(), next(), next(), next(), next(), next());
    let json = vec![("content-type".to_string(), "application/json".to_string())];
    let first = exchange("POST", uri, &json, body, &json, answer);
    let auth = vec![
        ("authorization".to_string(), format!("Bearer {answer}")),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let second = exchange("POST", uri2, &auth, body2, &json, "{}");
    let c = Correlation::new(true, Arc::new(Credentials::default()), Rules::default());
    let mut session = vec![first, second];
    let values = c.analyze_session(&mut session);
    for same in [true, false] {
        let world = c.new_world();
        let sent = c.prepare(&session[0], 0, &values, &world);
        let sent = sent.map_or_else(|| session[0].clone(), |p| p.exchange);
        let live_body = Bytes::from(if same { answer } else { live }.to_string());
        let live = Answer {
            status: Some(200),
            failure: None,
            headers: &json,
            body: &live_body,
        };
        let route = route::normalize("POST", uri);
        let learned = c.learn(&route, &session[0], &sent, live, &values, &world);
        if same {
            assert_eq!(learned.conflicts, 0, "an identical answer conflicts");
            assert!(
                learned.handed_out.is_empty(),
                "an identical answer handed out {:?}",
                learned.handed_out
            );
        }
        let _ = c.prepare(&session[1], 1, &values, &world);
        if let Some(socket) = c.socket_values(&Arc::new(world)) {
            let _ = socket.client_frame(frame);
        }
    }
}

/// A recorded exchange answered 200.
fn exchange(
    method: &str,
    uri: &str,
    request_headers: &[(String, String)],
    body: &str,
    response_headers: &[(String, String)],
    answer: &str,
) -> StoredExchange {
    StoredExchange {
        method: method.into(),
        uri: uri.into(),
        http_version: "HTTP/1.1".into(),
        request_headers: request_headers.to_vec(),
        request_body: body.as_bytes().to_vec(),
        request_body_len: body.len() as i64,
        status: Some(200),
        response_headers: response_headers.to_vec(),
        response_body: answer.as_bytes().to_vec(),
        response_body_len: answer.len() as i64,
        ..StoredExchange::default()
    }
}

/// Route normalization and percent decoding: the first line is the
/// method, the rest the request target.
///
/// Asserts: a normalized route normalizes to itself; percent decoding
/// gives at most three bytes (a replacement character) per byte; a
/// redacted target keeps its path and holds no clear secret value.
pub fn route(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (method, uri) = text.split_once('\n').unwrap_or(("GET", &text));
    let once = route::normalize(method, uri);
    let path = &once[method.len() + 1..];
    assert_eq!(
        route::normalize(method, path),
        once,
        "normalize is idempotent"
    );

    let decoded = percent_decode(uri.as_bytes());
    assert!(decoded.len() <= uri.len() * 3);
    if !uri.contains(['%', '+']) {
        assert_eq!(decoded, uri, "nothing to decode");
    }
    let r = redactor();
    let mut found = Vec::new();
    if let Some(redacted) = r.redact_uri(uri, &mut found) {
        let (path, query) = redacted.split_once('?').unwrap_or((&redacted, ""));
        assert_eq!(
            Some(path),
            uri.split_once('?').map(|(p, _)| p),
            "the path is kept"
        );
        for (name, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
            if !value.is_empty() && r.redacts_field(&percent_decode(name.as_bytes())) {
                assert!(value.starts_with(MARKER_PREFIX), "{name}={value} kept");
            }
        }
    }
}
