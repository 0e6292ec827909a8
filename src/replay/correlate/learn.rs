//! Learning from live answers: a live answer is aligned with the recorded
//! answer to the same request (same JSON paths, JSON object keys paired as
//! ids, `Location`, `Link` and other URL parts, `Set-Cookie`, headers that
//! may hand out a value; version fields, numbers included, per object),
//! and a replayed socket's server frames with the recorded frames of the
//! same shape. What is learned goes into the world;
//! what a failed answer would have handed out is marked as never coming.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::analyze::response_values;
use super::values::{
    VersionPair, cookie_pair, decode_query_value, is_token, is_validator, link_of, link_urls,
    may_hand_out, object_id, path_ids, percent_decode, text_frames, version_field, version_text,
};
use super::world::World;
use crate::capture::StoredExchange;
use crate::route;

/// Recorded → live pairs found by aligning a live response with the
/// recorded response to the same request.
pub fn learned_pairs(
    recorded: &StoredExchange,
    live_headers: &[(String, String)],
    live_body: &Bytes,
) -> Vec<(String, String)> {
    let bodies = Bodies::parse(recorded, live_body);
    pairs_of(recorded, live_headers, &bodies)
}

/// The recorded and the live answer's JSON bodies, parsed once for
/// learning and for the shape check.
pub(super) struct Bodies {
    recorded: Option<Value>,
    live: Option<Value>,
}

impl Bodies {
    /// Both bodies, each `None` when it is not JSON.
    pub(super) fn parse(recorded: &StoredExchange, live_body: &Bytes) -> Bodies {
        Bodies {
            recorded: serde_json::from_slice(&recorded.response_body).ok(),
            live: serde_json::from_slice(live_body).ok(),
        }
    }

    /// "200 but wrong": the live JSON answer lacks what the recorded one
    /// had (a key, a value's type, the items of a list). Extra keys are
    /// fine; `null` on either side matches anything (a last page's
    /// `"next": null` where the recording had a cursor is not wrong).
    pub(super) fn shape_differs(&self) -> bool {
        fn differs(rec: &Value, live: &Value, depth: usize) -> bool {
            match (rec, live) {
                (Value::Null, _) | (_, Value::Null) => false,
                (Value::Object(a), Value::Object(b)) => {
                    depth < 8
                        && a.iter()
                            .any(|(k, v)| b.get(k).is_none_or(|w| differs(v, w, depth + 1)))
                }
                // The recorded first item against any of the first live
                // ones: a list in another order whose items differ in
                // optional keys is the same answer.
                (Value::Array(a), Value::Array(b)) => match (a.first(), b.is_empty()) {
                    (Some(_), true) => true,
                    (Some(x), false) => {
                        depth < 8 && b.iter().take(32).all(|y| differs(x, y, depth + 1))
                    }
                    _ => false,
                },
                (a, b) => std::mem::discriminant(a) != std::mem::discriminant(b),
            }
        }
        match (&self.recorded, &self.live) {
            (Some(rec), Some(live)) => differs(rec, live, 0),
            _ => false,
        }
    }

    /// The version fields the live answer gives for the recorded one's
    /// ([`align_versions`]); an object with no id of its own belongs to
    /// the last id-like segment of the recorded request's path.
    pub(super) fn version_pairs(&self, recorded: &StoredExchange) -> Vec<VersionPair> {
        let mut out = Vec::new();
        if let (Some(rec), Some(live)) = (&self.recorded, &self.live) {
            let owner = path_ids(&recorded.uri).into_iter().next();
            align_versions(rec, live, owner.as_deref(), &mut out);
        }
        out
    }
}

/// [`learned_pairs`] over bodies already parsed.
pub(super) fn pairs_of(
    recorded: &StoredExchange,
    live_headers: &[(String, String)],
    bodies: &Bodies,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let (Some(rec), Some(live)) = (&bodies.recorded, &bodies.live) {
        align(rec, live, &mut pairs);
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
        } else if is_validator(name) {
            // Whole, as conditional requests send it back: `"r1-8f3k"`,
            // `W/"…"`, an HTTP date.
            let (rec, live) = (rec.trim(), live.trim());
            if rec != live && rec.len() >= 6 {
                pairs.push((rec.to_string(), live.to_string()));
            }
        } else {
            // A URL or path in any other header (`X-Next-Page`) is taken
            // apart like a Location, so the cursor inside it is learned.
            align_urls(rec, live, &mut pairs);
            if is_token(rec) {
                pairs.push((rec.clone(), live.clone()));
            }
        }
    }
    pairs
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

/// Learns from a replayed socket's server frames as they arrive, into the
/// world its later frames and requests are sent in.
#[derive(Debug)]
pub struct FrameLearner {
    world: Arc<World>,
    aligner: FrameAligner,
}

impl FrameLearner {
    /// A learner for the socket `ex` recorded; `None` when its recorded
    /// server frames hold nothing to learn from.
    pub fn new(ex: &StoredExchange, world: Arc<World>) -> Option<FrameLearner> {
        let aligner = FrameAligner::new(ex);
        (!aligner.is_empty()).then_some(FrameLearner { world, aligner })
    }

    /// One live server text frame.
    pub fn server_frame(&mut self, text: &str) {
        self.world.absorb(&self.aligner.pairs(text));
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
    let route: Arc<str> = route::normalize(&recorded.method, &recorded.uri).into();
    world.poison(response_values(recorded), &route);
}

/// Pairs recorded and live values at the same JSON paths; for objects whose
/// keys are ids, pairs the id keys in order.
pub(super) fn align(rec: &Value, live: &Value, out: &mut Vec<(String, String)>) {
    match (rec, live) {
        // Equal pairs too: the dedup detector compares live ids across
        // worlds even when a backend answered with the recorded one.
        (Value::String(a), Value::String(b)) if is_token(a) => {
            out.push((a.clone(), b.clone()));
        }
        // `"next": "https://…/messages?cursor=…"`: the parts of a link.
        (Value::String(a), Value::String(b)) => align_urls(a, b, out),
        (Value::Array(a), Value::Array(b)) => align_items(a, b, out),
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if let Some(w) = b.get(k) {
                    align(v, w, out);
                }
            }
            for ((rk, rv), (lk, lv)) in id_key_pairs(a, b) {
                out.push((rk.clone(), lk.clone()));
                align(rv, lv, out);
            }
        }
        _ => {}
    }
}

/// Pairs the parts of a recorded and a live link: path segments in order
/// Pairs the items of a recorded and a live list. Lists of objects are
/// paired by identity, never by position when identities differ: a
/// recorded object goes with the one live object that has the same content
/// once ids are left out (`{"author":"alice","text":"one"}`); a list of
/// one object on each side pairs them; any other object is not paired (a
/// live page in another order, or with another world's writes in between,
/// would otherwise teach one user's id for another's). Lists of plain
/// values pair by position.
fn align_items(rec: &[Value], live: &[Value], out: &mut Vec<(String, String)>) {
    for (r, l) in item_pairs(rec, live) {
        align(r, l, out);
    }
}

/// The items of a recorded and a live list that go together
/// ([`align_items`]).
fn item_pairs<'a>(rec: &'a [Value], live: &'a [Value]) -> Vec<(&'a Value, &'a Value)> {
    let objects = |l: &[Value]| l.iter().all(Value::is_object);
    if !(objects(rec) && objects(live)) {
        return rec.iter().zip(live).collect();
    }
    if let ([r], [l]) = (rec, live) {
        return vec![(r, l)];
    }
    let content: Vec<String> = live.iter().map(identity).collect();
    let mut pairs = Vec::new();
    for r in rec {
        let key = identity(r);
        if key.is_empty() {
            continue;
        }
        let mut same = content.iter().enumerate().filter(|(_, c)| **c == key);
        if let (Some((i, _)), None) = (same.next(), same.next()) {
            pairs.push((r, &live[i]));
        }
    }
    pairs
}

/// The keys of a recorded and a live object that are ids found on one
/// side only, paired in order (`{"c_Ab12…": {…}}` and `{"c_Zz98…": {…}}`).
fn id_key_pairs<'a>(
    a: &'a serde_json::Map<String, Value>,
    b: &'a serde_json::Map<String, Value>,
) -> impl Iterator<Item = ((&'a String, &'a Value), (&'a String, &'a Value))> {
    let rec_ids = a.iter().filter(|(k, _)| is_token(k) && !b.contains_key(*k));
    let live_ids = b.iter().filter(|(k, _)| is_token(k) && !a.contains_key(*k));
    rec_ids.zip(live_ids)
}

/// Pairs the version fields ([`version_field`]) of a recorded and a live
/// answer where [`align`] pairs values: the same paths, list items paired
/// by identity, objects under id keys. Each belongs to the recorded object
/// named by its nearest `id` up (or the id key it sits under), else to
/// `owner` (the recorded request's object).
pub(super) fn align_versions(
    rec: &Value,
    live: &Value,
    owner: Option<&str>,
    out: &mut Vec<VersionPair>,
) {
    match (rec, live) {
        (Value::Array(a), Value::Array(b)) => {
            for (r, l) in item_pairs(a, b) {
                align_versions(r, l, owner, out);
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            let own = object_id(a);
            let owner = own.as_deref().or(owner);
            for (k, v) in a {
                let Some(w) = b.get(k) else { continue };
                match (version_field(k), version_text(v)) {
                    (Some(field), Some(recorded)) if version_text(w).is_some() => {
                        out.push(VersionPair {
                            field,
                            owner: owner.map(str::to_string),
                            recorded,
                            live: w.clone(),
                        });
                    }
                    _ => align_versions(v, w, owner, out),
                }
            }
            for ((rk, rv), (_, lv)) in id_key_pairs(a, b) {
                align_versions(rv, lv, Some(rk), out);
            }
        }
        _ => {}
    }
}

/// An object's content with its ids and tokens left out: what stays the
/// same between the recording and a replay of the same item.
fn identity(v: &Value) -> String {
    fn walk(v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::String(s) if !is_token(s) => out.push(format!("{at}={s}")),
            Value::Bool(b) => out.push(format!("{at}={b}")),
            Value::Object(map) => map
                .iter()
                .filter(|(k, _)| !is_token(k))
                .for_each(|(k, v)| walk(v, &format!("{at}.{k}"), out)),
            _ => {}
        }
    }
    let mut parts = Vec::new();
    walk(v, "", &mut parts);
    parts.sort();
    parts.join("\n")
}

/// when there are as many, query values by name.
pub(super) fn align_urls(rec: &str, live: &str, out: &mut Vec<(String, String)>) {
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
    // A repeated name pairs its n-th recorded value with its n-th live one.
    for (i, (k, a)) in rec.query.iter().enumerate() {
        let nth = rec.query[..i].iter().filter(|(rk, _)| rk == k).count();
        if let Some((_, b)) = live.query.iter().filter(|(lk, _)| lk == k).nth(nth) {
            push(decode_query_value(a), decode_query_value(b));
        }
    }
}
