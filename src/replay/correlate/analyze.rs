//! What a recorded session says about its values, read once per loaded
//! session and shared by every world that plays it: which values are
//! nonces (sent once, or retried, and never handed out), which values each
//! request carries that an earlier answer handed out, and which login
//! names a user of the credentials file. Also what a recorded request
//! carries and a recorded answer hands out, by place.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::values::{
    STATIC_HEADERS, collect_json, cookie_pair, decode_query_value, form_fields, is_dynamic,
    is_form, is_random, is_token, json_leaves, link_urls, may_hand_out, percent_decode,
    segment_value, text_frames, url_parts,
};
use super::world::Credentials;
use crate::capture::StoredExchange;
use crate::capture::redact::frames::{
    login_parts, packet_json, sasl_auth, sasl_plain_parts, stomp,
};
use crate::capture::redact::{MARKER_PREFIX, basic_parts, is_credential_header, is_secret_field};
use crate::codec;
use crate::route;

/// What one session's recording says about its values.
#[derive(Debug, Default, Clone)]
pub struct SessionValues {
    /// Values to regenerate per world.
    pub nonces: HashSet<String>,
    /// Per request: dynamic values that an earlier recorded response of the
    /// session handed out.
    pub handed_out: Vec<HashSet<String>>,
    /// Per request: the password of the user its body names, from the
    /// credentials file.
    pub secrets: Vec<Option<String>>,
    /// Marker → password, for the passwords a socket's login frames send
    /// (a SASL PLAIN `<auth>`, a STOMP `CONNECT`, a JSON login, behind a
    /// Socket.IO prefix too) whose user the credentials file lists.
    pub frame_secrets: HashMap<String, String>,
}

/// Makes a recorded exchange's bodies readable: a content-encoded request
/// or response body (gzip, deflate, br, zstd) is decoded in place. Its headers
/// stay as recorded; the client encodes the request body again as its
/// Content-Encoding says when it sends it. A request body that does not
/// decode cannot be sent as recorded, and is marked truncated (never sent).
pub fn decode_bodies(ex: &mut StoredExchange) {
    if let Ok(Some(coding)) = codec::coding_of(&ex.request_headers) {
        match coding.decode(&ex.request_body) {
            Some(body) => ex.request_body = body,
            None => ex.request_truncated = true,
        }
    }
    if let Ok(Some(coding)) = codec::coding_of(&ex.response_headers)
        && let Some(body) = coding.decode(&ex.response_body)
    {
        ex.response_body = body;
    }
}

/// Finds the nonces and handed-out values of a session.
pub fn analyze(exchanges: &[StoredExchange]) -> SessionValues {
    analyze_with(exchanges, &Credentials::default())
}

/// [`analyze`], with the users of a credentials file kept as recorded and
/// their passwords ready for their logins.
pub fn analyze_with(exchanges: &[StoredExchange], credentials: &Credentials) -> SessionValues {
    let mut seen_in_responses: HashSet<String> = HashSet::new();
    let mut first_use: HashMap<String, String> = HashMap::new();
    let mut nonce_candidates: HashMap<String, bool> = HashMap::new();
    // Values sent where credentials go: a secret is a credential, never a
    // nonce, even in clear (`record --keep-credentials`).
    let mut secret_values: HashSet<String> = HashSet::new();
    // Random-looking values a request made up for what it creates or
    // sends (a PUT target, a client message id, an idempotency key), before
    // any answer handed them out: fresh per world wherever they recur.
    let mut client_made: HashSet<String> = HashSet::new();
    let mut handed_out = Vec::with_capacity(exchanges.len());
    for ex in exchanges {
        let template = route::normalize(&ex.method, &ex.uri);
        let mut mine = HashSet::new();
        for (at, v) in request_values_at(ex) {
            if is_credential_place(&at) {
                secret_values.insert(v.clone());
            }
            if client_made.contains(&v) {
                continue;
            }
            if seen_in_responses.contains(&v) {
                mine.insert(v.clone());
                nonce_candidates.insert(v, false);
                continue;
            }
            match first_use.get(&v) {
                None => {
                    if is_random(&v) && names_what_it_creates(ex, &at) {
                        client_made.insert(v.clone());
                    }
                    first_use.insert(v.clone(), template.clone());
                    nonce_candidates.entry(v).or_insert(true);
                }
                // Seen before: a nonce only if every use is the same request
                // again (a client retry with the same key).
                Some(t) if *t == template => {}
                Some(_) => {
                    nonce_candidates.insert(v, false);
                }
            }
        }
        handed_out.push(mine);
        seen_in_responses.extend(response_values(ex));
    }
    let nonces = nonce_candidates
        .into_iter()
        .filter(|(v, ok)| {
            *ok && is_dynamic(v)
                && !v.starts_with(MARKER_PREFIX)
                && !secret_values.contains(v)
                && !credentials.users.contains_key(v)
        })
        .map(|(v, _)| v)
        .collect();
    let secrets = exchanges
        .iter()
        .map(|ex| {
            if credentials.users.is_empty() {
                return None;
            }
            login_password(&request_places(ex), credentials)
                .or_else(|| basic_password(ex, credentials))
        })
        .collect();
    let frame_secrets = exchanges
        .iter()
        .filter(|_| !credentials.users.is_empty())
        .flat_map(client_text)
        .flat_map(|(_, text)| frame_login(text, credentials))
        .collect();
    SessionValues {
        nonces,
        handed_out,
        secrets,
        frame_secrets,
    }
}

/// The password of a login's user from the credentials file: a request
/// that sends a marker where a secret goes in its body, form or query
/// (a redacted password) and names, anywhere in them, a user of the
/// file's `[users]` (`identity.login_id`, `phone`, a GraphQL variable).
fn login_password(places: &[(String, String)], credentials: &Credentials) -> Option<String> {
    let in_content = |at: &str| {
        ["body ", "form ", "query "]
            .iter()
            .any(|p| at.starts_with(p))
    };
    let login = places
        .iter()
        .any(|(at, v)| in_content(at) && v.starts_with(MARKER_PREFIX) && is_credential_place(at));
    if !login {
        return None;
    }
    places
        .iter()
        .filter(|(at, _)| in_content(at))
        .find_map(|(_, v)| credentials.users.get(v).cloned())
}

/// The password of a redacted `Authorization: Basic` (the user name kept,
/// the password a marker) whose user the credentials file lists.
fn basic_password(ex: &StoredExchange, credentials: &Credentials) -> Option<String> {
    let (_, value) = ex
        .request_headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))?;
    let (scheme, credential) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let (user, password) = basic_parts(credential)?;
    if !password.starts_with(MARKER_PREFIX) {
        return None;
    }
    credentials.users.get(&user).cloned()
}

/// The password markers a client frame logs in with, each with the
/// password the credentials file gives its user: a SASL PLAIN `<auth>` or
/// a STOMP `CONNECT` whose password recording replaced by a marker (the
/// user name kept), or JSON (behind a packet prefix too: `42["login",
/// {…}]`) that is a login as a body is.
fn frame_login(text: &str, credentials: &Credentials) -> Vec<(String, String)> {
    if let Some((user, password)) = login_parts(text) {
        return match credentials.users.get(&user) {
            Some(clear) if password.starts_with(MARKER_PREFIX) => vec![(password, clear.clone())],
            _ => Vec::new(),
        };
    }
    let Some(json) =
        packet_json(text).and_then(|at| serde_json::from_str::<Value>(&text[at..]).ok())
    else {
        return Vec::new();
    };
    let mut places = Vec::new();
    json_leaves(&json, "$", &mut places);
    let Some(clear) = login_password(&places, credentials) else {
        return Vec::new();
    };
    places
        .into_iter()
        .filter(|(at, v)| v.starts_with(MARKER_PREFIX) && is_credential_place(at))
        .map(|(_, marker)| (marker, clear.clone()))
        .collect()
}

/// A socket's client text frames, numbered among all its frames.
fn client_text(ex: &StoredExchange) -> impl Iterator<Item = (usize, &str)> {
    ex.ws_frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.dir == "client" && f.op == "text" && !f.truncated)
        .map(|(i, f)| (i, f.data.as_str()))
}

/// Markers in a socket's client frames that are not in plain JSON (which
/// [`request_places`] reads whole), with where they sit: `frame 2 sasl
/// password`, `frame 3 stomp passcode`, `body frame 4 $.token` (JSON
/// behind a packet prefix).
fn frame_markers(ex: &StoredExchange) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, text) in client_text(ex) {
        if let Some(auth) = sasl_auth(text) {
            let payload = &text[auth.payload];
            match sasl_plain_parts(payload) {
                Some((_, _, password)) => out.push((format!("frame {i} sasl password"), password)),
                None => out.push((format!("frame {i} sasl payload"), payload.to_string())),
            }
        } else if let Some(frame) = stomp(text) {
            out.extend(frame.headers.iter().map(|(name, value)| {
                // `Authorization: Bearer redacted:…`: the credential part.
                let value = &text[value.clone()];
                let value = value.split_once(' ').map_or(value, |(_, c)| c.trim());
                let name = text[name.clone()].to_ascii_lowercase();
                (format!("frame {i} stomp {name}"), value.to_string())
            }));
        } else if let Some(at) = packet_json(text).filter(|at| *at > 0)
            && let Ok(json) = serde_json::from_str::<Value>(&text[at..])
        {
            json_leaves(&json, &format!("frame {i} $"), &mut out);
        }
    }
    out.retain(|(_, v)| v.starts_with(MARKER_PREFIX));
    out
}

/// Whether the value at place `at` of `ex` names what the request creates
/// or sends, so that the client made it up: the target of a PUT (its last
/// path segment), an idempotency or transaction header, or a write's body
/// field named as a client-chosen id (`id`, `uuid`, `client_msg_id`,
/// `txn_id`). A value in any other place (a device header sent with every
/// request, a user name) is a stable identifier.
fn names_what_it_creates(ex: &StoredExchange, at: &str) -> bool {
    if let Some(header) = at.strip_prefix("header ") {
        return [
            "idempotency",
            "request-id",
            "txn",
            "transaction",
            "nonce",
            "dedup",
        ]
        .iter()
        .any(|k| header.contains(k));
    }
    if let Some(index) = at.strip_prefix("path segment ") {
        // Methods that create what their URI names (WebDAV's collections
        // too): the last segment, a trailing slash aside.
        let path = ex.uri.split('?').next().unwrap_or("");
        let last = path
            .trim_end_matches('/')
            .split('/')
            .count()
            .saturating_sub(1);
        let creates = matches!(ex.method.as_str(), "PUT" | "MKCOL" | "MKCALENDAR");
        return creates && index.parse::<usize>().is_ok_and(|i| i == last);
    }
    let write = matches!(ex.method.as_str(), "POST" | "PUT" | "PATCH");
    if write && (at.starts_with("body ") || at.starts_with("form ")) {
        let key = at
            .rsplit(['.', ' '])
            .next()
            .unwrap_or("")
            .trim_end_matches("[]")
            .to_ascii_lowercase();
        return matches!(key.as_str(), "id" | "_id" | "uuid" | "guid")
            || [
                "client",
                "txn",
                "transaction",
                "nonce",
                "idempotency",
                "dedup",
                "temp_id",
            ]
            .iter()
            .any(|k| key.contains(k));
    }
    false
}

/// Whether a place of a request (as [`request_values_at`] names it) holds
/// a credential: a credential header (`Authorization`), a cookie, or a
/// field named like a secret (`password`, `api_key`), by the list that
/// recording redacts.
fn is_credential_place(at: &str) -> bool {
    if let Some(header) = at.strip_prefix("header ") {
        return is_credential_header(header);
    }
    if at.starts_with("cookie ") {
        return true;
    }
    let name = at.rsplit(['.', ' ']).next().unwrap_or("");
    is_secret_field(name.trim_end_matches("[]"))
}

/// Dynamic values a request carries: path segments, query values, header
/// values (credentials, cookies), JSON body strings.
pub fn request_values(ex: &StoredExchange) -> Vec<String> {
    request_values_at(ex).into_iter().map(|(_, v)| v).collect()
}

/// [`request_values`] with where each one sits: `path segment 3`,
/// `query cursor`, `header idempotency-key`, `cookie sid`, `body $.text`.
pub fn request_values_at(ex: &StoredExchange) -> Vec<(String, String)> {
    let mut out = request_places(ex);
    out.retain(|(_, v)| is_token(v));
    out
}

/// Every value a request carries, with where it sits, whatever it looks
/// like (a user name included).
fn request_places(ex: &StoredExchange) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (path, query) = ex
        .uri
        .split_once('?')
        .map_or((ex.uri.as_str(), ""), |(p, q)| (p, q));
    for (i, seg) in path.split('/').enumerate() {
        let seg = percent_decode(seg);
        out.push((format!("path segment {i}"), segment_value(&seg).to_string()));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if let Some((k, v)) = pair.split_once('=') {
            out.push((format!("query {k}"), decode_query_value(v)));
        }
    }
    for (name, value) in &ex.request_headers {
        let lower = name.to_ascii_lowercase();
        if STATIC_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        match lower.as_str() {
            "authorization" | "proxy-authorization" => {
                let credential = value
                    .split_once(' ')
                    .map_or(value.as_str(), |(_, c)| c.trim());
                out.push((format!("header {lower}"), credential.to_string()));
            }
            "cookie" => out.extend(value.split(';').filter_map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (format!("cookie {}", k.trim()), v.trim().to_string()))
            })),
            _ => out.push((format!("header {lower}"), value.trim().to_string())),
        }
    }
    if let Ok(json) = serde_json::from_slice::<Value>(&ex.request_body) {
        json_leaves(&json, "$", &mut out);
    } else if is_form(ex) {
        out.extend(form_fields(ex).map(|(k, v)| (format!("form {k}"), v)));
    }
    for (i, json) in text_frames(ex, "client") {
        json_leaves(&json, &format!("frame {i} $"), &mut out);
    }
    out.extend(frame_markers(ex));
    out
}

/// Dynamic values a recorded response handed out: JSON strings and object
/// keys (of the body, or of the server's text frames on a WebSocket),
/// `Location` path segments, `Set-Cookie` values.
pub fn response_values(ex: &StoredExchange) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(json) = serde_json::from_slice::<Value>(&ex.response_body) {
        collect_json(&json, &mut out);
    }
    for (_, json) in text_frames(ex, "server") {
        collect_json(&json, &mut out);
    }
    for (name, value) in &ex.response_headers {
        if name.eq_ignore_ascii_case("location") {
            out.extend(url_parts(value));
        } else if name.eq_ignore_ascii_case("link") {
            out.extend(link_urls(value).flat_map(url_parts));
        } else if may_hand_out(name) {
            // A next-page URL in any header (`X-Next-Page`) hands out the
            // cursor inside it.
            out.extend(url_parts(value));
            out.push(value.trim().to_string());
        }
    }
    out.extend(
        ex.response_headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| cookie_pair(v).map(|(_, v)| v)),
    );
    out.retain(|v| is_token(v));
    out
}
