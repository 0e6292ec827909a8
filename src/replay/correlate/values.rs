//! The leaf of correlation: how values sit in requests and answers, with
//! no decision about them. Percent coding, query and form pairs, links
//! taken apart (`Location`, `Link`, next-page URLs), cookies, JSON leaves,
//! version fields and conditional headers, WebSocket text frames, and what
//! a value looks like (an id, a token, a nonce's fresh copy). Pure functions over strings and JSON; no world, no
//! session, no I/O.

use rand::Rng;
use serde_json::Value;

use crate::capture::StoredExchange;
use crate::capture::redact::MARKER_PREFIX;
use crate::route;

/// Headers whose values are never dynamic.
pub(super) const STATIC_HEADERS: [&str; 18] = [
    "host",
    "content-type",
    "content-length",
    "accept",
    "accept-encoding",
    "accept-language",
    "user-agent",
    "connection",
    "cache-control",
    "pragma",
    "origin",
    "referer",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-tapedeck-replay",
    // The recorded trace's, never resent (replay::trace).
    "traceparent",
    "tracestate",
];

/// Whether a response header may hand out an id or token that later
/// requests send (`X-Auth-Token`, `X-Session-Id`, a validator such as
/// `ETag` that a conditional request sends back in `If-Match`): any but
/// Location and Set-Cookie (read on their own) and those that never do
/// (`Date`, `Server`, caching, CORS and security headers;
/// `Sec-WebSocket-Accept` derives from the client's key). Asked for every header of every live
/// answer while correlating, so it matches instead of searching.
pub fn may_hand_out(name: &str) -> bool {
    let lower;
    let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = name.to_ascii_lowercase();
        lower.as_str()
    } else {
        name
    };
    !(matches!(
        name,
        "location"
            | "set-cookie"
            | "content-type"
            | "content-length"
            | "content-encoding"
            | "content-language"
            | "content-disposition"
            | "content-security-policy"
            | "date"
            | "server"
            | "vary"
            | "cache-control"
            | "pragma"
            | "expires"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "accept-ranges"
            | "age"
            | "via"
            | "alt-svc"
            | "retry-after"
            | "strict-transport-security"
            | "referrer-policy"
            | "upgrade"
            | "sec-websocket-accept"
            | "x-content-type-options"
            | "x-frame-options"
            | "x-xss-protection"
    ) || name.starts_with("access-control-"))
}

/// Whether a response header is a validator (`ETag`, `Last-Modified`):
/// its value, quotes and dates included, is what a later conditional
/// request (`If-Match`, `If-None-Match`, `If-Unmodified-Since`) sends back.
pub(super) fn is_validator(name: &str) -> bool {
    name.eq_ignore_ascii_case("etag") || name.eq_ignore_ascii_case("last-modified")
}

/// Field names (compared in lower case without `_` and `-`, so
/// `lock_version`, `lockVersion` and `lock-version` are one) whose value
/// an answer hands out for concurrency control and a later write sends
/// back: `version`, `_version`, `rev`, `_rev` (CouchDB), `revision`,
/// `etag`, `_etag`, `lock_version` (Rails), `version_id`,
/// `version_number`, `last_modified`, `modified_at`, `updated_at`,
/// `_seq_no` and `_primary_term` (Elasticsearch). Their values, numbers
/// included, are learned per field and per object ([`VersionPair`]).
const VERSION_FIELDS: [&str; 13] = [
    "version",
    "rev",
    "revision",
    "etag",
    "lockversion",
    "versionid",
    "versionnumber",
    "lastmodified",
    "modifiedat",
    "updatedat",
    "seqno",
    "primaryterm",
    "lastmodifiedat",
];

/// A JSON key as a concurrency field ([`VERSION_FIELDS`]): its normalized
/// name, or `None` for any other key.
pub(super) fn version_field(key: &str) -> Option<String> {
    if key.len() > 32 {
        return None;
    }
    let name: String = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    VERSION_FIELDS.contains(&name.as_str()).then_some(name)
}

/// A version field's value as text, the key it is learned and looked up
/// by: a number as JSON writes it (`3`), a string as it is; `None` for
/// anything else (an object, a list, `null`, `true`, an empty string).
pub(super) fn version_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() && s.len() <= 256 => Some(s.clone()),
        _ => None,
    }
}

/// The identity of a JSON object as requests name it: its `id`, `_id`,
/// `uuid` or `guid` (a string or a number), as text.
pub(super) fn object_id(map: &serde_json::Map<String, Value>) -> Option<String> {
    ["id", "_id", "uuid", "guid"]
        .iter()
        .find_map(|k| match map.get(*k)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// A recorded version field and its live counterpart, learned from one
/// answer: `{"id": "n_1", "version": 3}` answered live with version 8
/// gives field `version`, owner `n_1`, recorded `3`, live `8`.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionPair {
    /// The field's normalized name ([`version_field`]).
    pub field: String,
    /// The recorded identity of the object it belongs to: the nearest
    /// [`object_id`] up from it, a key that is an id, or the recorded
    /// request's last id-like path segment; `None` when nothing names it.
    pub owner: Option<String>,
    /// The recorded value as text ([`version_text`]).
    pub recorded: String,
    /// The live value, a number or a string as the answer had it.
    pub live: Value,
}

/// Visits every version field of a JSON document whose value is a number
/// or a string, with the identity of the object it belongs to (the
/// nearest [`object_id`] up from it, else `owner`).
pub(super) fn walk_versions(
    v: &mut Value,
    owner: Option<&str>,
    f: &mut impl FnMut(&str, Option<&str>, &mut Value),
) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| walk_versions(i, owner, f)),
        Value::Object(map) => {
            let own = object_id(map);
            let owner = own.as_deref().or(owner);
            for (k, item) in map.iter_mut() {
                match version_field(k) {
                    Some(field) if version_text(item).is_some() => f(&field, owner, item),
                    _ => walk_versions(item, owner, f),
                }
            }
        }
        _ => {}
    }
}

/// The id-like segments of a request path ([`route::is_id`]),
/// percent-decoded, the last first: the objects a request names, most
/// specific first (`/notes/n_1/items/7` gives `7`, `n_1`).
pub(super) fn path_ids(uri: &str) -> Vec<String> {
    let path = uri.split('?').next().unwrap_or("");
    path.rsplit('/')
        .filter(|s| route::is_id(s))
        .map(percent_decode)
        .collect()
}

/// A conditional request header (`If-Match`, `If-None-Match`,
/// `If-Unmodified-Since`) with each validator that `f` has a live value
/// for replaced, its wrapping kept: `If-Match: 3`, `"3"` or `W/"3"` ask
/// `f("3")`; the entity tags of a list one by one. `None` for another
/// header, or when nothing changed.
pub(super) fn rewrite_conditional(
    name: &str,
    value: &str,
    f: &mut impl FnMut(&str) -> Option<String>,
) -> Option<String> {
    let list = name.eq_ignore_ascii_case("if-match") || name.eq_ignore_ascii_case("if-none-match");
    if !list && !name.eq_ignore_ascii_case("if-unmodified-since") {
        return None;
    }
    // An HTTP date holds a comma: only entity tags come as a list.
    let parts: Vec<&str> = if list {
        value.split(',').collect()
    } else {
        vec![value]
    };
    let mut changed = false;
    let out: Vec<String> = parts
        .iter()
        .map(|part| {
            let tag = part.trim();
            let (weak, rest) = tag
                .strip_prefix("W/")
                .map_or(("", tag), |rest| ("W/", rest));
            let quoted = rest.len() >= 2 && rest.starts_with('"') && rest.ends_with('"');
            let inner = if quoted {
                &rest[1..rest.len() - 1]
            } else {
                rest
            };
            match (!inner.is_empty() && inner != "*")
                .then(|| f(inner))
                .flatten()
            {
                Some(live) => {
                    changed = true;
                    let q = if quoted { "\"" } else { "" };
                    format!("{weak}{q}{live}{q}")
                }
                None => tag.to_string(),
            }
        })
        .collect();
    changed.then(|| out.join(", "))
}

/// Whether a recorded value looks like an id, token, cursor or key the
/// client invented (strict: nonces are regenerated only when this holds).
pub fn is_dynamic(v: &str) -> bool {
    v.starts_with(MARKER_PREFIX) || (v.len() >= 6 && v.len() <= 512 && route::is_id(v))
}

/// Whether a value looks random rather than chosen by a person: an id of
/// 10 or more characters mixing letters and digits (a UUID, `txn0a1b2c3d`,
/// `c_Ab12Cd34Ef56`). `user-07`, `general` and `2026` are not.
pub(super) fn is_random(v: &str) -> bool {
    let b = v.as_bytes();
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    b.len() >= 10 && digits >= 2 && letters >= 2 && route::is_id(v)
}

/// What a path segment names: the random stem of a file name
/// (`<uuid>.ics`, `<id>.json`, as WebDAV and file APIs address what a
/// client created), else the whole segment.
pub(super) fn segment_value(segment: &str) -> &str {
    match segment.rsplit_once('.') {
        Some((stem, ext))
            if (1..=5).contains(&ext.len())
                && ext.bytes().all(|b| b.is_ascii_alphanumeric())
                && is_random(stem) =>
        {
            stem
        }
        _ => segment,
    }
}

/// Whether a value a response handed out can be a server-made token: any
/// id-like value, or 8+ characters of token alphabet that are not a word
/// (random cursors that happen to have no digit included, but not
/// `messages` or `nextCursor`). Used to learn, never to invent.
pub fn is_token(v: &str) -> bool {
    if is_dynamic(v) {
        return true;
    }
    let b = v.as_bytes();
    let alphabet = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || b"-_.~=:+/!$@%".contains(c));
    let upper = b.iter().filter(|c| c.is_ascii_uppercase()).count();
    let other = b
        .iter()
        .any(|c| !c.is_ascii_alphabetic() && !matches!(c, b'_' | b'-'));
    (8..=4096).contains(&b.len()) && alphabet && (upper >= 2 || other)
}

/// The JSON text frames one side of a recorded WebSocket sent, numbered
/// among all the socket's frames.
pub(super) fn text_frames<'a>(
    ex: &'a StoredExchange,
    dir: &'a str,
) -> impl Iterator<Item = (usize, Value)> + 'a {
    ex.ws_frames
        .iter()
        .enumerate()
        .filter(move |(_, f)| f.dir == dir && f.op == "text" && !f.truncated)
        .filter_map(|(i, f)| Some((i, serde_json::from_str(&f.data).ok()?)))
}

pub(super) fn json_leaves(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((format!("body {at}"), s.clone())),
        Value::Array(items) => items
            .iter()
            .for_each(|i| json_leaves(i, &format!("{at}[]"), out)),
        Value::Object(map) => map
            .iter()
            .for_each(|(k, i)| json_leaves(i, &format!("{at}.{k}"), out)),
        _ => {}
    }
}

pub(super) fn collect_json(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            // A next-page link hands out the cursor inside it.
            out.extend(url_parts(s));
            out.push(s.clone());
        }
        Value::Array(items) => items.iter().for_each(|i| collect_json(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                collect_json(v, out);
            }
        }
        _ => {}
    }
}

pub(super) fn walk_strings(v: &mut Value, f: &mut impl FnMut(&str) -> Option<String>) {
    match v {
        Value::String(s) => {
            if let Some(new) = f(s) {
                *s = new;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| walk_strings(i, f)),
        Value::Object(map) => map.values_mut().for_each(|i| walk_strings(i, f)),
        _ => {}
    }
}

/// Rewrites path segments and query values (compared percent-decoded,
/// written back percent-encoded when the original was).
pub(super) fn rewrite_uri(uri: &str, f: &mut impl FnMut(&str) -> Option<String>) -> String {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let mut out = String::with_capacity(uri.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let decoded = percent_decode(seg);
        match f(&decoded) {
            Some(live) => out.push_str(&percent_encode(&live)),
            None => out.push_str(seg),
        }
    }
    if let Some(q) = query {
        out.push('?');
        rewrite_pairs(q, &mut out, f);
    }
    out
}

/// `k=v&k=v` (a query, a form body) into `out`, each value that `f` has a
/// live value for replaced (percent-encoded), the rest byte for byte.
pub(super) fn rewrite_pairs(
    pairs: &str,
    out: &mut String,
    f: &mut impl FnMut(&str) -> Option<String>,
) {
    for (i, pair) in pairs.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, v)) => match f(&decode_query_value(v)) {
                Some(live) => {
                    out.push_str(k);
                    out.push('=');
                    out.push_str(&percent_encode(&live));
                }
                None => out.push_str(pair),
            },
            None => out.push_str(pair),
        }
    }
}

/// Whether a request's body is a form (`application/x-www-form-urlencoded`).
pub(super) fn is_form(ex: &StoredExchange) -> bool {
    ex.request_header("content-type").is_some_and(|ct| {
        ct.trim_start()
            .get(..33)
            .is_some_and(|t| t.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    })
}

/// Whether a request body is text other than JSON and forms (XML, an
/// iCalendar or vCard, plain text), where ids are found as whole tokens.
pub(super) fn is_text(ex: &StoredExchange) -> bool {
    ex.request_header("content-type").is_some_and(|ct| {
        let ct = ct.trim_start().to_ascii_lowercase();
        ct.starts_with("text/") || ct.split(';').next().is_some_and(|t| t.ends_with("xml"))
    })
}

/// The fields of a form body, values decoded; none for other bodies.
pub(super) fn form_fields(ex: &StoredExchange) -> impl Iterator<Item = (String, String)> + '_ {
    let body = if is_form(ex) {
        std::str::from_utf8(&ex.request_body).unwrap_or("")
    } else {
        ""
    };
    body.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode_query_value(k), decode_query_value(v)))
}

/// A link's raw path segments and query pairs.
pub(super) struct Link<'a> {
    pub(super) path: Vec<&'a str>,
    pub(super) query: Vec<(&'a str, &'a str)>,
}

/// A link — an http(s) URL or an absolute path, as in a Location or a
/// `next` page — taken apart; `None` for any other string (free text is
/// never taken apart).
pub(super) fn link_of(link: &str) -> Option<Link<'_>> {
    let link = link.trim();
    let rest = match link.split_once("://") {
        Some((scheme, rest))
            if ["http", "https", "ws", "wss"]
                .iter()
                .any(|s| scheme.eq_ignore_ascii_case(s)) =>
        {
            &rest[rest.find('/').unwrap_or(rest.len())..]
        }
        Some(_) => return None,
        None if link.starts_with('/') && !link.starts_with("//") => link,
        None => return None,
    };
    if rest.contains(char::is_whitespace) {
        return None;
    }
    let rest = rest.split('#').next().unwrap_or("");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    Some(Link {
        path: path.split('/').collect(),
        query: query.split('&').filter_map(|p| p.split_once('=')).collect(),
    })
}

pub(super) fn decode_query_value(v: &str) -> String {
    percent_decode(&v.replace('+', " "))
}

/// The path segments and query values of a link ([`link_of`]),
/// percent-decoded.
pub(super) fn url_parts(link: &str) -> Vec<String> {
    link_of(link).map_or_else(Vec::new, |l| {
        l.path
            .into_iter()
            .map(percent_decode)
            .chain(l.query.into_iter().map(|(_, v)| decode_query_value(v)))
            .collect()
    })
}

/// The URLs of a `Link` header, in order: `<url>; rel="next", <url>; …`.
pub(super) fn link_urls(link: &str) -> impl Iterator<Item = &str> {
    link.split('<')
        .skip(1)
        .filter_map(|part| part.split_once('>').map(|(url, _)| url))
}

pub(super) fn cookie_pair(set_cookie: &str) -> Option<(String, String)> {
    let first = set_cookie.split(';').next()?.trim();
    let (k, v) = first.split_once('=')?;
    Some((k.trim().to_string(), v.trim().to_string()))
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A fresh value of the same shape: a short prefix (`idem-`, `txn`, `c_`)
/// stays, then digits stay digits, letters keep their case (hex stays
/// hex), separators stay.
pub fn regenerate(v: &str) -> String {
    let mut rng = rand::rng();
    let prefix_len = v
        .char_indices()
        .take(8)
        .find(|(_, c)| matches!(c, '-' | '_' | ':' | '.'))
        .map(|(i, _)| i + 1)
        .or_else(|| {
            let letters = v.chars().take_while(char::is_ascii_alphabetic).count();
            (letters > 0 && letters <= 5 && letters < v.len()).then_some(letters)
        })
        .unwrap_or(0);
    let (prefix, rest) = v.split_at(prefix_len);
    let hex = rest.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let fresh: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                char::from(b'0' + rng.random_range(0..10u8))
            } else if hex && c.is_ascii_hexdigit() {
                let d = rng.random_range(0..16u8);
                char::from_digit(u32::from(d), 16).unwrap_or('0')
            } else if c.is_ascii_lowercase() {
                char::from(b'a' + rng.random_range(0..26u8))
            } else if c.is_ascii_uppercase() {
                char::from(b'A' + rng.random_range(0..26u8))
            } else {
                c
            }
        })
        .collect();
    format!("{prefix}{fresh}")
}
