//! Dynamic values: what makes a 5x replay of a chat session measure the
//! backend instead of 401s, 400s and deduplication (DESIGN.md, "Dynamic
//! values").
//!
//! Per world, a map from recorded values to live ones is learned from every
//! live response by aligning it with the recorded response of the same
//! exchange (same JSON paths, JSON object keys, `Location`, `Set-Cookie`),
//! and applied to every later request of the world: path segments
//! (percent-encoded too), query values, headers (credential markers
//! included) and JSON body values. Nonces — values a session sends in one
//! request (or its identical retries) that no earlier response handed out —
//! are regenerated once per world. A request that needs a value whose
//! response failed is skipped (`dependent_skipped`). Pure data work: no
//! I/O, no clock.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::Bytes;
use rand::Rng;
use serde_json::Value;

use super::rules::{Decision, Rules};
use crate::capture::StoredExchange;
use crate::capture::redact::MARKER_PREFIX;
use crate::codec;
use crate::route;

/// Headers whose values are never dynamic.
const STATIC_HEADERS: [&str; 16] = [
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
];

/// Whether a response header may hand out an id or token that later
/// requests send (`X-Auth-Token`, `X-Session-Id`): any but Location and
/// Set-Cookie (read on their own) and those that never do (`Date`,
/// `Server`, caching, CORS and security headers; `Sec-WebSocket-Accept`
/// derives from the client's key). Asked for every header of every live
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
            | "last-modified"
            | "etag"
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

/// Whether a recorded value looks like an id, token, cursor or key the
/// client invented (strict: nonces are regenerated only when this holds).
pub fn is_dynamic(v: &str) -> bool {
    v.starts_with(MARKER_PREFIX) || (v.len() >= 6 && v.len() <= 512 && route::is_id(v))
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

/// Clear values for redacted credentials (`--credentials-file`, TOML):
///
/// ```toml
/// [markers]                      # a marker as stored in the capture -> its clear value
/// "redacted:0123…" = "s3cret"
/// [users]                        # a login whose body names this user -> its password
/// "alice@example.com" = "hunter2"
/// ```
///
/// A user listed here keeps its recorded name in every world (a real
/// account), instead of getting a fresh one.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Marker → clear value.
    #[serde(default)]
    pub markers: HashMap<String, String>,
    /// User name → password.
    #[serde(default)]
    pub users: HashMap<String, String>,
}

impl Credentials {
    /// Reads a credentials file.
    ///
    /// # Errors
    /// A message naming the file and the problem.
    pub fn load(path: &std::path::Path) -> Result<Credentials, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))
    }
}

/// JSON fields of a login body that name the user.
const USER_FIELDS: [&str; 5] = ["user", "username", "email", "login", "name"];

/// The recorded → live values of one world (one copy of the population in
/// one pass).
#[derive(Debug, Default)]
pub struct World {
    state: Mutex<WorldState>,
}

#[derive(Debug, Default)]
struct WorldState {
    live: HashMap<String, String>,
    poisoned: HashSet<String>,
    /// Rule variables: `None` once the response that hands one out failed.
    vars: HashMap<String, Option<String>>,
}

impl World {
    /// A world that starts out knowing the clear values of these markers.
    pub fn seeded(credentials: &Credentials) -> World {
        let world = World::default();
        world.lock().live.extend(
            credentials
                .markers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        world
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WorldState> {
        // A panic while holding the lock leaves plain maps; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live value learned for a recorded one.
    pub fn live(&self, recorded: &str) -> Option<String> {
        self.lock().live.get(recorded).cloned()
    }

    /// The live value for a recorded one, made now if there is none yet.
    pub fn live_or_insert(&self, recorded: &str, make: impl FnOnce() -> String) -> String {
        self.lock()
            .live
            .entry(recorded.to_string())
            .or_insert_with(make)
            .clone()
    }

    /// A rule variable: `Some(None)` when its response failed.
    pub fn var(&self, name: &str) -> Option<Option<String>> {
        self.lock().vars.get(name).cloned()
    }

    /// Sets a rule variable (`None`: its response failed).
    pub fn set_var(&self, name: &str, value: Option<String>) {
        self.lock().vars.insert(name.to_string(), value);
    }
}

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
    let mut first_use: HashMap<String, (usize, String)> = HashMap::new();
    let mut nonce_candidates: HashMap<String, bool> = HashMap::new();
    let mut handed_out = Vec::with_capacity(exchanges.len());
    for (i, ex) in exchanges.iter().enumerate() {
        let template = route::normalize(&ex.method, &ex.uri);
        let mut mine = HashSet::new();
        for v in request_values(ex) {
            if seen_in_responses.contains(&v) {
                mine.insert(v.clone());
                nonce_candidates.insert(v, false);
                continue;
            }
            match first_use.get(&v) {
                None => {
                    first_use.insert(v.clone(), (i, template.clone()));
                    nonce_candidates.entry(v).or_insert(true);
                }
                // Seen before: a nonce only if every use is the same request
                // again (a client retry with the same key).
                Some((_, t)) if *t == template => {}
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
            let user = |field: &str| match serde_json::from_slice::<Value>(&ex.request_body) {
                Ok(body) => body.get(field).and_then(Value::as_str).map(str::to_string),
                Err(_) => form_fields(ex).find(|(k, _)| k == field).map(|(_, v)| v),
            };
            USER_FIELDS
                .iter()
                .filter_map(|f| user(f))
                .find_map(|user| credentials.users.get(&user).cloned())
        })
        .collect();
    SessionValues {
        nonces,
        handed_out,
        secrets,
    }
}

/// A recorded request made ready to send in one world.
#[derive(Debug)]
pub struct Prepared {
    /// The request to send.
    pub exchange: StoredExchange,
    /// Substitutions by kind (`correlated`, `credential`, `nonce`).
    pub substitutions: Vec<&'static str>,
    /// Handed-out values with no live value.
    pub unresolved: u64,
    /// A value it needs came from a response that failed: do not send.
    pub skip: bool,
}

struct Rewriter<'a> {
    world: &'a World,
    session: &'a SessionValues,
    index: usize,
    substitutions: Vec<&'static str>,
    unresolved: u64,
    skip: bool,
    cache: HashMap<String, Option<(String, &'static str)>>,
}

impl Rewriter<'_> {
    /// The live value for a recorded one, if any; every replaced
    /// occurrence counts as a substitution of its kind.
    fn subst(&mut self, v: &str) -> Option<String> {
        let decided = match self.cache.get(v) {
            Some(done) => done.clone(),
            None if v.len() < 6 => return None,
            None => {
                let done = self.decide(v);
                self.cache.insert(v.to_string(), done.clone());
                done
            }
        };
        let (live, kind) = decided?;
        self.substitutions.push(kind);
        Some(live)
    }

    /// What to send for a recorded value, decided once per request.
    fn decide(&mut self, v: &str) -> Option<(String, &'static str)> {
        let mut state = self.world.lock();
        if let Some(live) = state.live.get(v) {
            let kind = if v.starts_with(MARKER_PREFIX) {
                "credential"
            } else {
                "correlated"
            };
            return Some((live.clone(), kind));
        }
        if v.starts_with(MARKER_PREFIX)
            && let Some(secret) = self.session.secrets.get(self.index).cloned().flatten()
        {
            return Some((secret, "credential"));
        }
        if is_dynamic(v) && self.session.nonces.contains(v) {
            let fresh = regenerate(v);
            state.live.insert(v.to_string(), fresh.clone());
            return Some((fresh, "nonce"));
        }
        if state.poisoned.contains(v) {
            self.skip = true;
            return None;
        }
        let handed_out = self
            .session
            .handed_out
            .get(self.index)
            .is_some_and(|h| h.contains(v));
        if handed_out || v.starts_with(MARKER_PREFIX) {
            tracing::debug!(
                value = v,
                "no live value for a recorded one; sent as recorded"
            );
            self.unresolved += 1;
        }
        None
    }
}

/// Rewrites request `index` of a session for `world`: the profile's
/// rules first, then (with `correlate`) the heuristics for everything the
/// rules do not name.
pub fn prepare(
    ex: &StoredExchange,
    index: usize,
    session: &SessionValues,
    world: &World,
    rules: &Rules,
    correlate: bool,
) -> Prepared {
    let mut r = Rewriter {
        world,
        session,
        index,
        substitutions: Vec::new(),
        unresolved: 0,
        skip: false,
        cache: HashMap::new(),
    };
    let mut writes = Vec::new();
    if !rules.is_empty() {
        let route = route::normalize(&ex.method, &ex.uri);
        for action in rules.actions(&route, ex, world) {
            match action.decision {
                // What a rule decides, the heuristics do not redecide.
                Decision::Keep(v) => {
                    r.cache.insert(v, None);
                }
                Decision::Set(live, kind) => {
                    if let Some(v) = action.recorded {
                        let same = v == live;
                        r.cache.insert(v, (!same).then(|| (live.clone(), kind)));
                    }
                    writes.push((action.at, live, kind));
                }
                Decision::Skip => r.skip = true,
                Decision::Missing => r.unresolved += 1,
            }
        }
    }
    let mut out = ex.request_copy();
    if correlate {
        r.rewrite(ex, &mut out);
    }
    // The rule's own place, also where the heuristics would not look (a
    // number, a short value).
    for (at, live, kind) in writes {
        if at.read(&out).as_deref() != Some(live.as_str()) {
            at.write(&mut out, &live);
            r.substitutions.push(kind);
        }
    }
    Prepared {
        exchange: out,
        substitutions: r.substitutions,
        unresolved: r.unresolved,
        skip: r.skip,
    }
}

impl Rewriter<'_> {
    /// The heuristics: every path segment, query value, dynamic header and
    /// JSON string of the request.
    fn rewrite(&mut self, ex: &StoredExchange, out: &mut StoredExchange) {
        out.uri = rewrite_uri(&ex.uri, &mut |v| self.subst(v));
        for (name, value) in out.request_headers.iter_mut() {
            let lower = name.to_ascii_lowercase();
            if STATIC_HEADERS.contains(&lower.as_str()) {
                continue;
            }
            *value = match lower.as_str() {
                "authorization" | "proxy-authorization" => match value.split_once(' ') {
                    Some((scheme, cred)) => match self.subst(cred.trim()) {
                        Some(live) => format!("{scheme} {live}"),
                        None => continue,
                    },
                    None => match self.subst(value) {
                        Some(live) => live,
                        None => continue,
                    },
                },
                "cookie" => value
                    .split(';')
                    .map(|pair| {
                        let pair = pair.trim();
                        match pair.split_once('=') {
                            Some((k, v)) => match self.subst(v) {
                                Some(live) => format!("{k}={live}"),
                                None => pair.to_string(),
                            },
                            None => pair.to_string(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                _ => match self.subst(value.trim()) {
                    Some(live) => live,
                    None => continue,
                },
            };
        }
        if let Some(body) = self.rewrite_json(&ex.request_body) {
            out.request_body = body;
        } else if is_form(ex) {
            let mut changed = false;
            let body = String::from_utf8_lossy(&ex.request_body);
            let mut form = String::with_capacity(body.len());
            rewrite_pairs(&body, &mut form, &mut |v| {
                let live = self.subst(v);
                changed |= live.is_some();
                live
            });
            if changed {
                out.request_body = form.into_bytes();
            }
        }
        // A WebSocket's JSON text frames from the client (a join naming a
        // conversation, a message to it).
        for frame in out
            .ws_frames
            .iter_mut()
            .filter(|f| f.dir == "client" && f.op == "text")
        {
            if let Some(text) = self.rewrite_json(frame.data.as_bytes()) {
                frame.data = String::from_utf8_lossy(&text).into_owned();
            }
        }
    }

    /// A JSON document with its string values substituted; `None` when it
    /// is not JSON or nothing changed.
    fn rewrite_json(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut json = serde_json::from_slice::<Value>(bytes).ok()?;
        let mut changed = false;
        walk_strings(&mut json, &mut |s| {
            let live = self.subst(s);
            changed |= live.is_some();
            live
        });
        if changed {
            serde_json::to_vec(&json).ok()
        } else {
            None
        }
    }
}

/// Recorded → live pairs found by aligning a live response with the
/// recorded response to the same request.
pub fn learned_pairs(
    recorded: &StoredExchange,
    live_headers: &[(String, String)],
    live_body: &Bytes,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let (Ok(rec), Ok(live)) = (
        serde_json::from_slice::<Value>(&recorded.response_body),
        serde_json::from_slice::<Value>(live_body),
    ) {
        align(&rec, &live, &mut pairs);
    }
    if let (Some(rec), Some(live)) = (
        recorded.response_header("location"),
        live_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.as_str()),
    ) {
        align_urls(rec, live, &mut pairs);
    }
    let live_cookies: HashMap<String, String> = live_headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| cookie_pair(v))
        .collect();
    for (name, value) in recorded
        .response_headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| cookie_pair(v))
    {
        if let Some(live) = live_cookies.get(&name)
            && *live != value
            && is_token(&value)
        {
            pairs.push((value, live.clone()));
        }
    }
    pairs
}

impl World {
    /// Records learned pairs: later requests of the world use the live values.
    pub fn absorb(&self, pairs: &[(String, String)]) {
        if pairs.is_empty() {
            return;
        }
        let mut state = self.lock();
        for (rec, live) in pairs.iter().filter(|(rec, live)| rec != live) {
            state.poisoned.remove(rec);
            state.live.insert(rec.clone(), live.clone());
        }
    }
}

/// Recorded → live pairs from the other response headers that may hand
/// out a value ([`may_hand_out`]): the same header of the live response.
/// Kept apart from [`learned_pairs`]: headers such as `X-Powered-By` repeat
/// one value in every answer, so they say nothing about deduplication.
pub fn header_pairs(
    recorded: &StoredExchange,
    live_headers: &[(String, String)],
) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (name, rec) in recorded
        .response_headers
        .iter()
        .filter(|(k, _)| may_hand_out(k))
    {
        let Some((_, live)) = live_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        else {
            continue;
        };
        if name.eq_ignore_ascii_case("link") {
            for (a, b) in link_urls(rec).zip(link_urls(live)) {
                align_urls(a, b, &mut pairs);
            }
        } else if is_token(rec) {
            pairs.push((rec.clone(), live.clone()));
        }
    }
    pairs
}

/// Learns from a live response into the world; returns the pairs learned.
pub fn learn(
    recorded: &StoredExchange,
    live_headers: &[(String, String)],
    live_body: &Bytes,
    world: &World,
) -> Vec<(String, String)> {
    let mut pairs = learned_pairs(recorded, live_headers, live_body);
    pairs.extend(header_pairs(recorded, live_headers));
    world.absorb(&pairs);
    pairs
}

impl World {
    /// A JSON text with every string the world has a live value for
    /// replaced; `None` when it is not JSON or nothing changed. Used for a
    /// WebSocket client's frames at the moment they are sent, so that what
    /// the server said earlier on the socket is used.
    pub fn substitute_json(&self, text: &str) -> Option<String> {
        let mut json = serde_json::from_str::<Value>(text).ok()?;
        let state = self.lock();
        let mut changed = false;
        walk_strings(&mut json, &mut |s| {
            let live = state.live.get(s).cloned();
            changed |= live.is_some();
            live
        });
        drop(state);
        changed.then(|| json.to_string())
    }
}

/// Pairs a replayed socket's server frames with the recorded ones, to learn
/// from them: a live frame is aligned with the first recorded server frame
/// not yet used that has the same shape (its top-level keys, the values of
/// its top-level strings that are words such as `"type": "ack"`, and the
/// keys of nested objects). Pushes that arrive in another order than
/// recorded still find their counterpart.
#[derive(Debug)]
pub struct FrameAligner {
    recorded: Vec<Option<(String, Value)>>,
}

impl FrameAligner {
    /// The recorded server text frames of a socket.
    pub fn new(ex: &StoredExchange) -> FrameAligner {
        FrameAligner {
            recorded: text_frames(ex, "server")
                .map(|(_, json)| Some((shape(&json), json)))
                .collect(),
        }
    }

    /// Whether there is nothing to learn from.
    pub fn is_empty(&self) -> bool {
        self.recorded.is_empty()
    }

    /// Recorded → live pairs from one live server frame.
    pub fn pairs(&mut self, live: &str) -> Vec<(String, String)> {
        let Ok(live) = serde_json::from_str::<Value>(live) else {
            return Vec::new();
        };
        let live_shape = shape(&live);
        let Some(slot) = self
            .recorded
            .iter_mut()
            .find(|r| r.as_ref().is_some_and(|(s, _)| *s == live_shape))
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some((_, rec)) = slot.take() {
            align(&rec, &live, &mut out);
        }
        out.retain(|(rec, live)| rec != live);
        out
    }
}

/// See [`FrameAligner`].
fn shape(v: &Value) -> String {
    fn keys(v: &Value, out: &mut String) {
        if let Value::Object(map) = v {
            let mut names: Vec<&String> = map.keys().filter(|k| !is_token(k)).collect();
            names.sort();
            for k in names {
                out.push_str(k);
                out.push('{');
                keys(&map[k], out);
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    match v {
        Value::Object(map) => {
            let mut names: Vec<&String> = map.keys().collect();
            names.sort();
            for k in names {
                out.push_str(k);
                match &map[k] {
                    Value::String(s) if s.len() <= 32 && !is_token(s) => {
                        out.push('=');
                        out.push_str(s);
                    }
                    nested => {
                        out.push('{');
                        keys(nested, &mut out);
                        out.push('}');
                    }
                }
                out.push(';');
            }
        }
        other => keys(other, &mut out),
    }
    out
}

/// The recorded response's values will never get live ones (its live
/// response failed, or its request was skipped): requests that need them
/// are skipped.
pub fn poison(recorded: &StoredExchange, world: &World) {
    let values = response_values(recorded);
    let mut state = world.lock();
    for v in values {
        if !state.live.contains_key(&v) {
            state.poisoned.insert(v);
        }
    }
}

/// Dynamic values a request carries: path segments, query values, header
/// values (credentials, cookies), JSON body strings.
pub fn request_values(ex: &StoredExchange) -> Vec<String> {
    request_values_at(ex).into_iter().map(|(_, v)| v).collect()
}

/// [`request_values`] with where each one sits: `path segment 3`,
/// `query cursor`, `header idempotency-key`, `cookie sid`, `body $.text`.
pub fn request_values_at(ex: &StoredExchange) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (path, query) = ex
        .uri
        .split_once('?')
        .map_or((ex.uri.as_str(), ""), |(p, q)| (p, q));
    for (i, seg) in path.split('/').enumerate() {
        out.push((format!("path segment {i}"), percent_decode(seg)));
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
    out.retain(|(_, v)| is_token(v));
    out
}

/// The JSON text frames one side of a recorded WebSocket sent, numbered
/// among all the socket's frames.
fn text_frames<'a>(
    ex: &'a StoredExchange,
    dir: &'a str,
) -> impl Iterator<Item = (usize, Value)> + 'a {
    ex.ws_frames
        .iter()
        .enumerate()
        .filter(move |(_, f)| f.dir == dir && f.op == "text" && !f.truncated)
        .filter_map(|(i, f)| Some((i, serde_json::from_str(&f.data).ok()?)))
}

fn json_leaves(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
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

fn collect_json(v: &Value, out: &mut Vec<String>) {
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

/// Pairs recorded and live values at the same JSON paths; for objects whose
/// keys are ids, pairs the id keys in order.
fn align(rec: &Value, live: &Value, out: &mut Vec<(String, String)>) {
    match (rec, live) {
        // Equal pairs too: the dedup detector compares live ids across
        // worlds even when a backend answered with the recorded one.
        (Value::String(a), Value::String(b)) if is_token(a) => {
            out.push((a.clone(), b.clone()));
        }
        // `"next": "https://…/messages?cursor=…"`: the parts of a link.
        (Value::String(a), Value::String(b)) => align_urls(a, b, out),
        (Value::Array(a), Value::Array(b)) => a.iter().zip(b).for_each(|(x, y)| align(x, y, out)),
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if let Some(w) = b.get(k) {
                    align(v, w, out);
                }
            }
            let rec_ids: Vec<(&String, &Value)> = a
                .iter()
                .filter(|(k, _)| is_token(k) && !b.contains_key(*k))
                .collect();
            let live_ids: Vec<(&String, &Value)> = b
                .iter()
                .filter(|(k, _)| is_token(k) && !a.contains_key(*k))
                .collect();
            for ((rk, rv), (lk, lv)) in rec_ids.into_iter().zip(live_ids) {
                out.push((rk.clone(), lk.clone()));
                align(rv, lv, out);
            }
        }
        _ => {}
    }
}

fn walk_strings(v: &mut Value, f: &mut impl FnMut(&str) -> Option<String>) {
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
fn rewrite_uri(uri: &str, f: &mut impl FnMut(&str) -> Option<String>) -> String {
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
fn rewrite_pairs(pairs: &str, out: &mut String, f: &mut impl FnMut(&str) -> Option<String>) {
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
fn is_form(ex: &StoredExchange) -> bool {
    ex.request_header("content-type").is_some_and(|ct| {
        ct.trim_start()
            .get(..33)
            .is_some_and(|t| t.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    })
}

/// The fields of a form body, values decoded; none for other bodies.
fn form_fields(ex: &StoredExchange) -> impl Iterator<Item = (String, String)> + '_ {
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
struct Link<'a> {
    path: Vec<&'a str>,
    query: Vec<(&'a str, &'a str)>,
}

/// A link — an http(s) URL or an absolute path, as in a Location or a
/// `next` page — taken apart; `None` for any other string (free text is
/// never taken apart).
fn link_of(link: &str) -> Option<Link<'_>> {
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

fn decode_query_value(v: &str) -> String {
    percent_decode(&v.replace('+', " "))
}

/// The path segments and query values of a link ([`link_of`]),
/// percent-decoded.
fn url_parts(link: &str) -> Vec<String> {
    link_of(link).map_or_else(Vec::new, |l| {
        l.path
            .into_iter()
            .map(percent_decode)
            .chain(l.query.into_iter().map(|(_, v)| decode_query_value(v)))
            .collect()
    })
}

/// Pairs the parts of a recorded and a live link: path segments in order
/// when there are as many, query values by name.
fn align_urls(rec: &str, live: &str, out: &mut Vec<(String, String)>) {
    let (Some(rec), Some(live)) = (link_of(rec), link_of(live)) else {
        return;
    };
    let mut push = |a: String, b: String| {
        if a != b && is_token(&a) {
            out.push((a, b));
        }
    };
    if rec.path.len() == live.path.len() {
        for (a, b) in rec.path.into_iter().zip(live.path) {
            push(percent_decode(a), percent_decode(b));
        }
    }
    for (k, a) in rec.query {
        if let Some((_, b)) = live.query.iter().find(|(lk, _)| *lk == k) {
            push(decode_query_value(a), decode_query_value(b));
        }
    }
}

/// The URLs of a `Link` header, in order: `<url>; rel="next", <url>; …`.
fn link_urls(link: &str) -> impl Iterator<Item = &str> {
    link.split('<')
        .skip(1)
        .filter_map(|part| part.split_once('>').map(|(url, _)| url))
}

fn cookie_pair(set_cookie: &str) -> Option<(String, String)> {
    let first = set_cookie.split(';').next()?.trim();
    let (k, v) = first.split_once('=')?;
    Some((k.trim().to_string(), v.trim().to_string()))
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(h) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(h);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A recorded exchange: request line, headers, body and response body.
    pub(crate) fn ex(
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
        resp: &str,
    ) -> StoredExchange {
        StoredExchange {
            id: 1,
            session_no: 1,
            seq: 1,
            started_at_us: 0,
            offset_us: 0,
            method: method.into(),
            uri: uri.into(),
            http_version: "HTTP/1.1".into(),
            request_headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            request_body: body.as_bytes().to_vec(),
            request_body_len: body.len() as i64,
            request_truncated: false,
            status: Some(200),
            response_headers: vec![("content-type".into(), "application/json".into())],
            response_body: resp.as_bytes().to_vec(),
            response_body_len: resp.len() as i64,
            response_truncated: false,
            ttfb_us: Some(1),
            duration_us: 1,
            error_kind: None,
            error_message: None,
            response_chunks: Vec::new(),
            ws_frames: Vec::new(),
        }
    }

    const MARK: &str = "redacted:0123456789abcdef0123456789abcdef";

    fn chat_session() -> Vec<StoredExchange> {
        let send = ex(
            "POST",
            "/api/conversations/c_Ab12Cd34Ef56/messages",
            &[
                ("authorization", &format!("Bearer {MARK}")),
                ("idempotency-key", "idem-4f2a9c01d3e5b7a8"),
            ],
            r#"{"text":"hi"}"#,
            r#"{"message":{"id":"m_Qw12Er34Ty56Ui78"}}"#,
        );
        vec![
            ex(
                "POST",
                "/api/login",
                &[],
                r#"{"user":"user-07"}"#,
                &format!(r#"{{"token":"{MARK}"}}"#),
            ),
            ex(
                "POST",
                "/api/conversations",
                &[("authorization", &format!("Bearer {MARK}"))],
                "{}",
                r#"{"id":"c_Ab12Cd34Ef56"}"#,
            ),
            send.clone(),
            // The client's retry of the same send: same key, same answer.
            send,
            ex(
                "PUT",
                "/api/conversations/c_Ab12Cd34Ef56/messages/txn0a1b2c3d4e5f",
                &[("authorization", &format!("Bearer {MARK}"))],
                r#"{"text":"yo"}"#,
                r#"{"message_id":"m_Zx98Cv76Bn54Mm32"}"#,
            ),
            ex(
                "GET",
                "/api/conversations/c_Ab12Cd34Ef56/messages?limit=2&cursor=cur_Pq12Rs34Tu56Vw78Xy90",
                &[("authorization", &format!("Bearer {MARK}"))],
                "",
                r#"{"messages":[],"next_cursor":null}"#,
            ),
        ]
    }

    #[test]
    fn nonces_are_values_sent_once_or_retried_and_never_handed_out() {
        let s = analyze(&chat_session());
        assert!(
            s.nonces.contains("idem-4f2a9c01d3e5b7a8"),
            "a retried idempotency key is a nonce"
        );
        assert!(
            s.nonces.contains("txn0a1b2c3d4e5f"),
            "a client transaction id in a PUT path is a nonce"
        );
        assert!(s.nonces.contains("user-07"));
        assert!(
            !s.nonces.contains("c_Ab12Cd34Ef56"),
            "a server-made id is correlated, not regenerated"
        );
        assert!(!s.nonces.contains(MARK), "markers are credentials");
        assert!(s.handed_out[2].contains("c_Ab12Cd34Ef56"));
        assert!(s.handed_out[1].contains(MARK));
    }

    #[test]
    fn live_values_flow_into_later_requests_of_the_world() {
        let session = chat_session();
        let values = analyze(&session);
        let world = World::default();
        // Login: the live token is learned for the recorded marker.
        let login = prepare(&session[0], 0, &values, &world, &Rules::default(), true);
        assert_eq!(
            login.substitutions,
            ["nonce"],
            "the user name is regenerated per world"
        );
        learn(
            &session[0],
            &[],
            &Bytes::from_static(br#"{"token":"tok_LIVE123456"}"#),
            &world,
        );
        let create = prepare(&session[1], 1, &values, &world, &Rules::default(), true);
        assert_eq!(
            create.exchange.request_header("authorization"),
            Some("Bearer tok_LIVE123456")
        );
        assert_eq!(create.substitutions, ["credential"]);
        learn(
            &session[1],
            &[],
            &Bytes::from_static(br#"{"id":"c_LiveConv9876"}"#),
            &world,
        );
        let post = prepare(&session[2], 2, &values, &world, &Rules::default(), true);
        assert_eq!(
            post.exchange.uri,
            "/api/conversations/c_LiveConv9876/messages"
        );
        let key = post
            .exchange
            .request_header("idempotency-key")
            .expect("key")
            .to_string();
        assert_ne!(key, "idem-4f2a9c01d3e5b7a8");
        assert_eq!(key.len(), "idem-4f2a9c01d3e5b7a8".len());
        let retry = prepare(&session[3], 3, &values, &world, &Rules::default(), true);
        assert_eq!(
            retry.exchange.request_header("idempotency-key"),
            Some(key.as_str()),
            "one nonce per world"
        );
        let put = prepare(&session[4], 4, &values, &world, &Rules::default(), true);
        assert!(
            put.exchange
                .uri
                .starts_with("/api/conversations/c_LiveConv9876/messages/txn")
        );
        assert!(!put.exchange.uri.ends_with("txn0a1b2c3d4e5f"));
        // Another world regenerates its own nonces.
        let other = World::default();
        let other_post = prepare(&session[2], 2, &values, &other, &Rules::default(), true);
        assert_ne!(
            other_post.exchange.request_header("idempotency-key"),
            Some(key.as_str())
        );
    }

    #[test]
    fn a_token_handed_out_in_a_response_header_is_learned_and_sent() {
        let mut login = ex("POST", "/api/session", &[], "{}", "{}");
        login.response_headers.extend([
            (
                "date".to_string(),
                "Mon, 23 Nov 2026 02:00:00 GMT".to_string(),
            ),
            ("x-auth-token".to_string(), "hdr_Rec0rded77Tok".to_string()),
        ]);
        let me = ex(
            "GET",
            "/api/me",
            &[("x-auth-token", "hdr_Rec0rded77Tok")],
            "",
            "{}",
        );
        let session = vec![login, me.clone(), me];
        let values = analyze(&session);
        assert!(
            values.handed_out[1].contains("hdr_Rec0rded77Tok"),
            "the header handed it out: not a nonce"
        );
        let world = World::default();
        let live = [
            (
                "date".to_string(),
                "Mon, 23 Nov 2026 03:00:00 GMT".to_string(),
            ),
            ("x-auth-token".to_string(), "hdr_L1veL1ve42Tok".to_string()),
        ];
        assert_eq!(
            header_pairs(&session[0], &live),
            [(
                "hdr_Rec0rded77Tok".to_string(),
                "hdr_L1veL1ve42Tok".to_string()
            )],
            "the date is not learned"
        );
        learn(&session[0], &live, &Bytes::new(), &world);
        let me = prepare(&session[1], 1, &values, &world, &Rules::default(), true);
        assert_eq!(
            me.exchange.request_header("x-auth-token"),
            Some("hdr_L1veL1ve42Tok")
        );
        assert!(!may_hand_out("Access-Control-Allow-Origin") && may_hand_out("X-Request-Id"));
    }

    #[test]
    fn cursors_inside_next_page_links_are_handed_out_and_learned() {
        let feed = |token: &str| {
            format!(
                r#"{{"items":[],"links":{{"next":"https://chat.example/api/feed?limit=2&page_token={token}"}}}}"#
            )
        };
        let first = ex(
            "GET",
            "/api/feed?limit=2",
            &[],
            "",
            &feed("pt_R3c0rdedPage1"),
        );
        let mut second = ex(
            "GET",
            "/api/feed?limit=2&page_token=pt_R3c0rdedPage1",
            &[],
            "",
            "{}",
        );
        second.response_headers.push((
            "link".into(),
            r#"</api/threads?after=ta_R3c0rdedAfter9>; rel="next""#.into(),
        ));
        let third = ex("GET", "/api/threads?after=ta_R3c0rdedAfter9", &[], "", "{}");
        let session = vec![first, second, third];
        let values = analyze(&session);
        for cursor in ["pt_R3c0rdedPage1", "ta_R3c0rdedAfter9"] {
            assert!(
                !values.nonces.contains(cursor),
                "{cursor} was handed out in a link"
            );
        }
        let world = World::default();
        learn(
            &session[0],
            &[],
            &Bytes::from(feed("pt_L1vePage1xyz")),
            &world,
        );
        let page = prepare(&session[1], 1, &values, &world, &Rules::default(), true);
        assert_eq!(
            page.exchange.uri,
            "/api/feed?limit=2&page_token=pt_L1vePage1xyz"
        );
        let link = r#"<https://chat.example/api/threads?after=ta_L1veAfter77>; rel="next""#;
        learn(
            &session[1],
            &[("link".into(), link.into())],
            &Bytes::new(),
            &world,
        );
        let threads = prepare(&session[2], 2, &values, &world, &Rules::default(), true);
        assert_eq!(threads.exchange.uri, "/api/threads?after=ta_L1veAfter77");
        // Free text that mentions a path is not a link.
        let mut pairs = Vec::new();
        align_urls("see /api/m/m_Rec12345", "see /api/m/m_Live6789", &mut pairs);
        assert!(pairs.is_empty());
    }

    #[test]
    fn form_bodies_are_read_and_rewritten_like_json_ones() {
        const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
        let auth = ("authorization", "Bearer xoxb-R3c0rded-T0ken");
        let session = vec![
            ex(
                "POST",
                "/api/auth.login",
                &[FORM],
                &format!("username=ann%40example.com&password={MARK}"),
                r#"{"ok":true,"token":"xoxb-R3c0rded-T0ken"}"#,
            ),
            ex(
                "POST",
                "/api/conversations.create",
                &[FORM, auth],
                "name=general",
                r#"{"channel":{"id":"C0R3C0RD3D"}}"#,
            ),
            ex(
                "POST",
                "/api/chat.postMessage",
                &[FORM, auth],
                "channel=C0R3C0RD3D&text=hello+there&client_msg_id=cm_9f8e7d6c5b4a",
                r#"{"ok":true}"#,
            ),
        ];
        let credentials = Credentials {
            users: [("ann@example.com".to_string(), "hunter 2".to_string())].into(),
            ..Credentials::default()
        };
        let values = analyze_with(&session, &credentials);
        assert!(values.nonces.contains("cm_9f8e7d6c5b4a"));
        let world = World::seeded(&credentials);
        let login = prepare(&session[0], 0, &values, &world, &Rules::default(), true);
        assert_eq!(
            login.exchange.request_body, b"username=ann%40example.com&password=hunter%202",
            "the user is kept and the password comes from the credentials file"
        );
        let live = |body: &'static [u8]| Bytes::from_static(body);
        learn(
            &session[0],
            &[],
            &live(br#"{"ok":true,"token":"xoxb-L1ve-T0ken99"}"#),
            &world,
        );
        learn(
            &session[1],
            &[],
            &live(br#"{"channel":{"id":"C0L1VE0001"}}"#),
            &world,
        );
        let post = prepare(&session[2], 2, &values, &world, &Rules::default(), true);
        let body = String::from_utf8(post.exchange.request_body.clone()).expect("utf8");
        assert!(
            body.starts_with("channel=C0L1VE0001&text=hello+there&client_msg_id=cm_"),
            "{body}"
        );
        assert!(
            !body.ends_with("cm_9f8e7d6c5b4a"),
            "a fresh client id per world"
        );
        assert_eq!(
            post.exchange.request_header("authorization"),
            Some("Bearer xoxb-L1ve-T0ken99")
        );
    }

    #[test]
    fn a_failed_response_skips_the_requests_that_need_its_values() {
        let session = chat_session();
        let values = analyze(&session);
        let world = World::default();
        poison(&session[1], &world);
        learn(
            &session[0],
            &[],
            &Bytes::from_static(br#"{"token":"tok_LIVE123456"}"#),
            &world,
        );
        let post = prepare(&session[2], 2, &values, &world, &Rules::default(), true);
        assert!(
            post.skip,
            "the conversation was never created in this world"
        );
    }

    #[test]
    fn a_credentials_file_supplies_passwords_and_keeps_real_users() {
        let session = chat_session();
        let creds: Credentials = toml::from_str(
            "[users]\n\"user-07\" = \"hunter2\"\n[markers]\n\"redacted:ffffffffffffffffffffffffffffffff\" = \"k\"\n",
        )
        .expect("valid");
        let values = analyze_with(&session, &creds);
        assert!(
            !values.nonces.contains("user-07"),
            "a listed user keeps its name"
        );
        let mut login = session[0].clone();
        login.request_body =
            br#"{"user":"user-07","password":"redacted:0123456789abcdef0123456789abcdef"}"#
                .to_vec();
        let values = analyze_with(&[login.clone()], &creds);
        let p = prepare(
            &login,
            0,
            &values,
            &World::seeded(&creds),
            &Rules::default(),
            true,
        );
        let body: Value = serde_json::from_slice(&p.exchange.request_body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"user": "user-07", "password": "hunter2"})
        );
        assert_eq!(
            World::seeded(&creds)
                .live("redacted:ffffffffffffffffffffffffffffffff")
                .as_deref(),
            Some("k")
        );
    }

    #[test]
    fn only_whole_values_are_replaced_and_short_or_common_ones_never_mapped() {
        let world = World::default();
        let recorded = ex(
            "POST",
            "/x",
            &[],
            "",
            r#"{"id":"c_Ab12Cd34Ef56","n":"1","ok":"true","items":[{"id":"m_Zx98Cv76Bn54"}]}"#,
        );
        let pairs = learn(
            &recorded,
            &[],
            &Bytes::from_static(br#"{"id":"c_Live99Live99","n":"2","ok":"false","items":[{"id":"m_LiveNested12"}]}"#),
            &world,
        );
        let learned: Vec<&str> = pairs.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(
            learned,
            ["c_Ab12Cd34Ef56", "m_Zx98Cv76Bn54"],
            "\"1\" and \"true\" are never mapped"
        );
        // The id inside a longer string stays; the whole value is replaced,
        // in nested JSON, arrays, path segments and query values.
        let send = ex(
            "POST",
            "/c/c_Ab12Cd34Ef56/m?ref=m_Zx98Cv76Bn54&q=1",
            &[],
            r#"{"text":"see c_Ab12Cd34Ef56 please","refs":["m_Zx98Cv76Bn54"],"n":"1"}"#,
            "{}",
        );
        let p = prepare(
            &send,
            0,
            &SessionValues::default(),
            &world,
            &Rules::default(),
            true,
        );
        assert_eq!(p.exchange.uri, "/c/c_Live99Live99/m?ref=m_LiveNested12&q=1");
        let body: Value = serde_json::from_slice(&p.exchange.request_body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"text": "see c_Ab12Cd34Ef56 please", "refs": ["m_LiveNested12"], "n": "1"})
        );
    }

    #[test]
    fn a_digitless_cursor_is_still_learned_but_never_invented() {
        assert!(is_token("cur_mldrbMhhbcbmvmvlSScX"));
        assert!(!is_token("messages") && !is_token("nextCursor") && !is_token("created_by"));
        assert!(!is_dynamic("conversations"), "a path word is not a nonce");
        let world = World::default();
        let recorded = ex(
            "GET",
            "/m",
            &[],
            "",
            r#"{"next_cursor":"cur_mldrbMhhbcbmvmvlSScX"}"#,
        );
        learn(
            &recorded,
            &[],
            &Bytes::from_static(br#"{"next_cursor":"cur_LIVEabcdefghijklmn"}"#),
            &world,
        );
        let next = ex(
            "GET",
            "/m?limit=2&cursor=cur_mldrbMhhbcbmvmvlSScX",
            &[],
            "",
            "{}",
        );
        let p = prepare(
            &next,
            0,
            &analyze(std::slice::from_ref(&next)),
            &world,
            &Rules::default(),
            true,
        );
        assert_eq!(p.exchange.uri, "/m?limit=2&cursor=cur_LIVEabcdefghijklmn");
    }

    #[test]
    fn percent_encoded_ids_and_object_keys_are_matched() {
        let world = World::default();
        let recorded = ex(
            "GET",
            "/sync",
            &[],
            "",
            r#"{"rooms":{"!abc123:host":{"n":1}}}"#,
        );
        learn(
            &recorded,
            &[],
            &Bytes::from_static(br#"{"rooms":{"!live987:host":{"n":1}}}"#),
            &world,
        );
        let values = SessionValues::default();
        let send = ex("PUT", "/rooms/%21abc123%3Ahost/send/txn1", &[], "", "{}");
        let p = prepare(&send, 0, &values, &world, &Rules::default(), true);
        assert_eq!(p.exchange.uri, "/rooms/%21live987%3Ahost/send/txn1");
        assert_eq!(percent_decode("%21a%3Ab"), "!a:b");
    }

    fn text_frame(dir: &str, data: &str) -> crate::capture::WsFrame {
        crate::capture::WsFrame {
            t_us: 0,
            dir: dir.into(),
            op: "text".into(),
            fin: true,
            len: data.len() as u64,
            data: data.into(),
            truncated: false,
            close_code: None,
        }
    }

    #[test]
    fn learned_ids_reach_the_json_text_frames_a_websocket_client_sends() {
        let frame = text_frame;
        let mut socket = ex("GET", "/api/ws", &[], "", "");
        socket.status = Some(101);
        socket.ws_frames = vec![
            frame("client", r#"{"type":"join","conversation":"c_9f8e7d6c"}"#),
            frame("server", r#"{"type":"joined","conversation":"c_9f8e7d6c"}"#),
            frame("client", "c_9f8e7d6c is not JSON"),
        ];
        let world = World::default();
        world.absorb(&[("c_9f8e7d6c".to_string(), "c_live1234".to_string())]);
        let p = prepare(
            &socket,
            0,
            &SessionValues::default(),
            &world,
            &Rules::default(),
            true,
        );
        let data: Vec<&str> = p
            .exchange
            .ws_frames
            .iter()
            .map(|f| f.data.as_str())
            .collect();
        assert_eq!(
            data,
            [
                r#"{"type":"join","conversation":"c_live1234"}"#,
                r#"{"type":"joined","conversation":"c_9f8e7d6c"}"#,
                "c_9f8e7d6c is not JSON",
            ]
        );
        assert_eq!(p.substitutions, ["correlated"]);
    }

    #[test]
    fn server_frames_are_learned_from_by_shape_whatever_order_they_come_in() {
        let mut socket = ex("GET", "/api/ws", &[], "", "");
        socket.status = Some(101);
        socket.ws_frames = vec![
            text_frame("client", r#"{"type":"join","conversation":"c_9f8e7d6c"}"#),
            text_frame(
                "server",
                r#"{"type":"joined","conversation":"c_9f8e7d6c","members":1}"#,
            ),
            text_frame(
                "client",
                r#"{"type":"send","client_id":"cl_00aa11bb22cc","text":"hi"}"#,
            ),
            text_frame(
                "server",
                r#"{"type":"message","message":{"id":"m_R3c0rded0ther","author":"user-01"}}"#,
            ),
            text_frame(
                "server",
                r#"{"type":"ack","client_id":"cl_00aa11bb22cc","message_id":"m_R3c0rdedAck1"}"#,
            ),
        ];
        // The client id is sent once and handed out by nothing before:
        // a nonce; the server's ids count as handed out.
        let values = analyze(std::slice::from_ref(&socket));
        assert!(values.nonces.contains("cl_00aa11bb22cc"), "{values:?}");
        assert!(response_values(&socket).contains(&"m_R3c0rdedAck1".to_string()));

        let mut aligner = FrameAligner::new(&socket);
        // The ack comes before the push this time.
        let ack = aligner
            .pairs(r#"{"type":"ack","client_id":"cl_99ff88ee77dd","message_id":"m_L1veAck00001"}"#);
        assert!(
            ack.contains(&("m_R3c0rdedAck1".into(), "m_L1veAck00001".into())),
            "{ack:?}"
        );
        let push = aligner
            .pairs(r#"{"type":"message","message":{"id":"m_L1ve0ther001","author":"user-01-w2"}}"#);
        assert!(
            push.contains(&("m_R3c0rded0ther".into(), "m_L1ve0ther001".into())),
            "{push:?}"
        );
        // Each recorded frame is used once; a frame of no recorded shape
        // teaches nothing.
        assert!(
            aligner
                .pairs(r#"{"type":"ack","client_id":"cl_1","message_id":"m_L1veAck00002"}"#)
                .is_empty()
        );
        assert!(aligner.pairs(r#"{"type":"typing","user":"x"}"#).is_empty());
        assert!(aligner.pairs("not json").is_empty());

        // What was learned reaches the next client frame when it is sent.
        let world = World::default();
        world.absorb(&ack);
        assert_eq!(
            world
                .substitute_json(r#"{"type":"read","message_id":"m_R3c0rdedAck1"}"#)
                .as_deref(),
            Some(r#"{"type":"read","message_id":"m_L1veAck00001"}"#)
        );
        assert_eq!(world.substitute_json(r#"{"type":"read"}"#), None);
    }
}
