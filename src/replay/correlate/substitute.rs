//! Substitution: a recorded request made ready to send in one world. The
//! profile's rules decide first; then (when correlating) every path
//! segment, query value, dynamic header, JSON or form value and client
//! WebSocket frame (JSON, JSON behind a Socket.IO prefix, a STOMP frame's
//! headers and body, a SASL `<auth>`'s password) gets the world's live
//! value, a nonce's fresh copy or a credential; a request that needs a value whose answer failed is marked
//! to be skipped.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use serde_json::Value;

use super::analyze::SessionValues;
use super::rules::{Decision, RequestPlace, Rules};
use super::values::{
    STATIC_HEADERS, is_dynamic, is_form, is_random, is_text, regenerate, rewrite_pairs,
    rewrite_uri, walk_strings,
};
use super::world::{Known, World};
use crate::capture::StoredExchange;
use crate::capture::redact::frames::{
    SaslAuth, packet_json, sasl_auth, sasl_plain_parts, sasl_plain_payload, splice, stomp,
};
use crate::capture::redact::{MARKER_PREFIX, basic_credential, basic_parts};
use crate::route;

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
    /// With `skip`, the first such value and the route whose answer
    /// failed to hand it out (none for a rule's variable).
    pub waited_for: Option<(String, Arc<str>)>,
}

struct Rewriter<'a> {
    world: &'a World,
    session: &'a SessionValues,
    index: usize,
    substitutions: Vec<&'static str>,
    unresolved: u64,
    skip: bool,
    waited_for: Option<(String, Arc<str>)>,
    cache: HashMap<String, Option<(String, &'static str)>>,
}

impl Rewriter<'_> {
    /// The live value for a recorded one, if any; every replaced
    /// occurrence counts as a substitution of its kind.
    fn subst(&mut self, v: &str) -> Option<String> {
        let (live, kind) = self.decided(v).or_else(|| self.inside(v))?;
        self.substitutions.push(kind);
        Some(live)
    }

    /// [`Rewriter::decide`], once per distinct value of the request.
    fn decided(&mut self, v: &str) -> Option<(String, &'static str)> {
        if let Some(done) = self.cache.get(v) {
            return done.clone();
        }
        if v.len() < 6 {
            return None;
        }
        let done = self.decide(v);
        self.cache.insert(v.to_string(), done.clone());
        done
    }

    /// A value that holds ids inside it (`(room='c_Ab12Cd34Ef56')`, a
    /// GraphQL query, `room:c_Ab12Cd34Ef56`): each whole token of it that
    /// is long and opaque ([`is_random`]) and has a live value is
    /// replaced, and so is a long id learned from an answer whatever its
    /// digits; short or common tokens never are.
    fn inside(&mut self, v: &str) -> Option<(String, &'static str)> {
        let part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if v.chars().all(part) {
            return None;
        }
        let mut out = String::with_capacity(v.len());
        let mut kind = None;
        let mut rest = v;
        while !rest.is_empty() {
            let start = rest.find(part).unwrap_or(rest.len());
            out.push_str(&rest[..start]);
            rest = &rest[start..];
            let end = rest.find(|c: char| !part(c)).unwrap_or(rest.len());
            let token = &rest[..end];
            let found = if is_random(token) {
                self.decided(token)
            } else if token.len() >= 10 && route::is_id(token) {
                // A server's random id need not hold two digits
                // (`c_bdhgNTJNUbzM`): one an answer handed out is replaced
                // too, never a nonce or a word.
                self.decided(token).filter(|(_, k)| *k == "correlated")
            } else {
                None
            };
            match found {
                Some((live, k)) => {
                    out.push_str(&live);
                    kind.get_or_insert(k);
                }
                None => out.push_str(token),
            }
            rest = &rest[end..];
        }
        Some((out, kind?))
    }

    /// What to send for a recorded value, decided once per request.
    fn decide(&mut self, v: &str) -> Option<(String, &'static str)> {
        let marker = v.starts_with(MARKER_PREFIX);
        // Nonces and credential markers never overlap (analysis keeps
        // markers out of the nonces), so the world answers both at once.
        let nonce = is_dynamic(v) && self.session.nonces.contains(v);
        let fresh: Option<fn(&str) -> String> = nonce.then_some(regenerate);
        let known = self.world.resolve(v, fresh);
        if let Known::Live(live) = known {
            let kind = if marker { "credential" } else { "correlated" };
            return Some((live, kind));
        }
        if marker && let Some(secret) = self.session.frame_secrets.get(v) {
            return Some((secret.clone(), "credential"));
        }
        if marker && let Some(secret) = self.session.secrets.get(self.index).cloned().flatten() {
            return Some((secret, "credential"));
        }
        match known {
            Known::Fresh(fresh) => return Some((fresh, "nonce")),
            Known::Poisoned(from) => {
                self.skip = true;
                self.waited_for.get_or_insert((v.to_string(), from));
                return None;
            }
            Known::Live(_) | Known::Unknown => {}
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
        waited_for: None,
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
        waited_for: r.waited_for,
    }
}

impl Rewriter<'_> {
    /// The heuristics: every path segment, query value, dynamic header and
    /// JSON string of the request.
    fn rewrite(&mut self, ex: &StoredExchange, out: &mut StoredExchange) {
        out.uri = rewrite_uri(&ex.uri, &mut |v| self.subst(v));
        for (name, value) in out.request_headers.iter_mut() {
            if let Some(live) = self.header(name, value, &ex.uri) {
                *value = live;
            }
        }
        if let Some(body) = self.rewrite_json(&ex.request_body, &ex.uri) {
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
        } else if is_text(ex)
            && let Ok(text) = std::str::from_utf8(&ex.request_body)
            && let Some((live, kind)) = self.inside(text)
        {
            // An XML query naming an id, an iCalendar carrying its UID.
            self.substitutions.push(kind);
            out.request_body = live.into_bytes();
        }
        // A WebSocket's text frames from the client (a join naming a
        // conversation, a message to it, a login).
        for frame in out
            .ws_frames
            .iter_mut()
            .filter(|f| f.dir == "client" && f.op == "text")
        {
            if let Some(text) = self.rewrite_frame(&frame.data, &ex.uri) {
                frame.data = text;
            }
        }
    }

    /// A request header's (or a STOMP frame header's) value with its
    /// values substituted: the credential of `Authorization` (a Basic
    /// one's password), each cookie value, the whole value of any other
    /// dynamic header, or a version a conditional header names; `None`
    /// when nothing changes.
    fn header(&mut self, name: &str, value: &str, uri: &str) -> Option<String> {
        let lower = name.to_ascii_lowercase();
        if STATIC_HEADERS.contains(&lower.as_str()) {
            return None;
        }
        match lower.as_str() {
            "authorization" | "proxy-authorization" => match value.split_once(' ') {
                Some((scheme, cred)) => {
                    let live = match self.subst(cred.trim()) {
                        Some(live) => live,
                        None if scheme.eq_ignore_ascii_case("basic") => self.basic(cred)?,
                        None => return None,
                    };
                    Some(format!("{scheme} {live}"))
                }
                None => self.subst(value),
            },
            "cookie" => Some(
                value
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
            ),
            _ => self.subst(value.trim()).or_else(|| {
                // `If-Match: W/"3"`: a version an answer's body gave.
                let live = self.world.conditional(&lower, value, uri)?;
                self.substitutions.push("correlated");
                Some(live)
            }),
        }
    }

    /// A client's text frame with its values substituted: a SASL
    /// `<auth>`'s password (encoded again), a STOMP frame's headers and
    /// JSON body, or JSON (behind a Socket.IO packet prefix too); `None`
    /// when nothing changes.
    fn rewrite_frame(&mut self, text: &str, uri: &str) -> Option<String> {
        if let Some(auth) = sasl_auth(text) {
            return self.sasl(text, &auth);
        }
        if let Some(frame) = stomp(text) {
            let values: Vec<(Range<usize>, String)> = frame
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    let live = self.header(&text[name.clone()], &text[value.clone()], uri)?;
                    (live != text[value.clone()]).then(|| (value.clone(), live))
                })
                .collect();
            let body = self
                .rewrite_json(text[frame.body.clone()].as_bytes(), uri)
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            return (!values.is_empty() || body.is_some())
                .then(|| frame.rebuild(text, values, body));
        }
        let at = packet_json(text).unwrap_or(0);
        let json = self.rewrite_json(&text.as_bytes()[at..], uri)?;
        Some(format!("{}{}", &text[..at], String::from_utf8_lossy(&json)))
    }

    /// A SASL `<auth>` whose password (or whole payload) recording
    /// replaced by a marker, with the clear value the credentials file
    /// gives (by marker, or by the kept user name) and its payload encoded
    /// again; `None` when there is none.
    fn sasl(&mut self, text: &str, auth: &SaslAuth) -> Option<String> {
        let payload = &text[auth.payload.clone()];
        let live = match sasl_plain_parts(payload) {
            Some((authzid, user, password)) if password.starts_with(MARKER_PREFIX) => {
                sasl_plain_payload(&authzid, &user, &self.subst(&password)?)
            }
            Some(_) => return None,
            None if payload.starts_with(MARKER_PREFIX) => self.subst(payload)?,
            None => return None,
        };
        Some(splice(text, vec![(auth.payload.clone(), live)]))
    }

    /// A Basic credential whose password recording replaced by a marker,
    /// with the password the credentials file gives (by marker or by the
    /// kept user name).
    fn basic(&mut self, credential: &str) -> Option<String> {
        let (user, password) = basic_parts(credential)?;
        if !password.starts_with(MARKER_PREFIX) {
            return None;
        }
        let live = self.subst(&password)?;
        Some(basic_credential(&user, &live))
    }

    /// A JSON document with its version fields (numbers too, for the
    /// objects it or the request path `uri` names) and string values
    /// substituted; `None` when it is not JSON or nothing changed.
    fn rewrite_json(&mut self, bytes: &[u8], uri: &str) -> Option<Vec<u8>> {
        let mut json = serde_json::from_slice::<Value>(bytes).ok()?;
        let versions = self.world.substitute_versions(&mut json, uri);
        self.substitutions
            .extend(std::iter::repeat_n("correlated", versions));
        let mut changed = versions > 0;
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
