//! Worlds: what one copy of the recorded population has learned. A world
//! maps recorded values to live ones (learned from answers, regenerated
//! nonces, clear credentials) and, per field and object, the versions
//! answers handed out for concurrency control; it knows which recorded
//! values will never get a live one (their answer failed) and holds the
//! profile rules' variables. Shared by the VUs of one world; every other
//! part of correlation reads and writes it through these methods only.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::values::{
    VersionPair, path_ids, rewrite_conditional, version_text, walk_strings, walk_versions,
};
use crate::capture::redact::frames::packet_json;

/// Clear values for redacted credentials (`--credentials-file`, TOML):
///
/// ```toml
/// [markers]                      # a marker as stored in the capture -> its clear value
/// "redacted:0123…" = "s3cret"
/// [users]                        # a login whose body names this user -> its password
/// "alice@example.com" = "hunter2"
/// ```
///
/// `[users]` also serves the user names recording keeps: a Basic
/// credential's, a socket's SASL PLAIN `<auth>` and STOMP `login`.
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

/// The recorded → live values of one world (one copy of the population in
/// one pass).
#[derive(Debug, Default)]
pub struct World {
    state: Mutex<WorldState>,
}

/// What a world knows of a recorded value ([`World::resolve`]).
#[derive(Debug)]
pub enum Known {
    /// The live value learned (or given) for it.
    Live(String),
    /// A nonce's fresh copy, made just now for this world.
    Fresh(String),
    /// The answer that would have handed it out failed: that answer's
    /// route.
    Poisoned(Arc<str>),
    /// Nothing yet.
    Unknown,
}

#[derive(Debug, Default)]
struct WorldState {
    live: HashMap<String, String>,
    /// Recorded values a live answer handed out unchanged: known, so a
    /// later failure elsewhere does not make them missing.
    resolved: HashSet<String>,
    /// Recorded values that will never get a live value → the route whose
    /// answer failed to hand them out.
    poisoned: HashMap<String, Arc<str>>,
    /// Rule variables: `None` once the response that hands one out failed.
    vars: HashMap<String, Option<String>>,
    /// Version fields: recorded value as text → what answers said of it,
    /// per field and object ([`World::absorb_versions`]).
    versions: HashMap<String, Vec<Learnt>>,
}

/// One learned version field: the live value of `recorded` for this field
/// of this object.
#[derive(Debug)]
struct Learnt {
    field: String,
    owner: Option<String>,
    live: Value,
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
        let mut state = self.lock();
        if let Some(live) = state.live.get(recorded) {
            return live.clone();
        }
        let live = make();
        state.live.insert(recorded.to_string(), live.clone());
        live
    }

    /// What the world knows of a recorded value, decided under one lock so
    /// that another VU of the world learning it meanwhile cannot split the
    /// answer: its live value; else, for a nonce (`fresh` given), a fresh
    /// copy made now and kept; else whether its answer failed.
    pub fn resolve(&self, recorded: &str, fresh: Option<fn(&str) -> String>) -> Known {
        let mut state = self.lock();
        if let Some(live) = state.live.get(recorded) {
            return Known::Live(live.clone());
        }
        if let Some(make) = fresh {
            let live = make(recorded);
            state.live.insert(recorded.to_string(), live.clone());
            return Known::Fresh(live);
        }
        if let Some(from) = state.poisoned.get(recorded) {
            Known::Poisoned(from.clone())
        } else {
            Known::Unknown
        }
    }

    /// A rule variable: `Some(None)` when its response failed.
    pub fn var(&self, name: &str) -> Option<Option<String>> {
        self.lock().vars.get(name).cloned()
    }

    /// Sets a rule variable (`None`: its response failed).
    pub fn set_var(&self, name: &str, value: Option<String>) {
        self.lock().vars.insert(name.to_string(), value);
    }

    /// Marks a rule variable as never coming, unless it already has a
    /// value (in one step: an extract landing meanwhile wins).
    pub fn fail_var(&self, name: &str) {
        self.lock().vars.entry(name.to_string()).or_insert(None);
    }

    /// Records learned pairs: later requests of the world use the live
    /// values; a value that came back as recorded is known as it is.
    pub fn absorb(&self, pairs: &[(String, String)]) {
        if pairs.is_empty() {
            return;
        }
        let mut state = self.lock();
        for (rec, live) in pairs {
            state.poisoned.remove(rec);
            if rec == live {
                state.resolved.insert(rec.clone());
            } else {
                state.live.insert(rec.clone(), live.clone());
            }
        }
    }

    /// Records pairs learned by aligning an answer with its recording, where
    /// the first mapping of a recorded value wins: a recorded value that
    /// would map to a second, different live value is a conflict (a list
    /// that could not be told apart, another world's item), dropped and
    /// counted. Returns the conflicts.
    pub fn absorb_aligned(&self, pairs: &[(String, String)]) -> u64 {
        let mut state = self.lock();
        let mut conflicts = 0;
        for (rec, live) in pairs {
            state.poisoned.remove(rec);
            if rec == live {
                state.resolved.insert(rec.clone());
                continue;
            }
            match state.live.get(rec) {
                Some(known) if known != live => conflicts += 1,
                Some(_) => {}
                None => {
                    state.live.insert(rec.clone(), live.clone());
                }
            }
        }
        conflicts
    }

    /// Records version fields learned from an answer. The newest answer
    /// wins for a field of an object (versions move on); a value that came
    /// back as recorded is kept too, so that it is never taken for another
    /// object's.
    pub fn absorb_versions(&self, pairs: &[VersionPair]) {
        if pairs.is_empty() {
            return;
        }
        let mut state = self.lock();
        for p in pairs {
            let known = state.versions.entry(p.recorded.clone()).or_default();
            match known
                .iter_mut()
                .find(|k| k.field == p.field && k.owner == p.owner)
            {
                Some(k) => k.live = p.live.clone(),
                None => known.push(Learnt {
                    field: p.field.clone(),
                    owner: p.owner.clone(),
                    live: p.live.clone(),
                }),
            }
        }
    }

    /// The live value of a recorded version (of `field`, or of any field
    /// for a conditional header) for the first object of `owners` (the
    /// objects a request names, most specific first) the world learned it
    /// for; never another object's. A request that names no object takes
    /// it only when everything the world learned for that recorded value
    /// agrees.
    pub fn live_version(
        &self,
        recorded: &str,
        field: Option<&str>,
        owners: &[String],
    ) -> Option<Value> {
        let state = self.lock();
        let known: Vec<&Learnt> = state
            .versions
            .get(recorded)?
            .iter()
            .filter(|k| field.is_none_or(|f| k.field == f))
            .collect();
        if let Some(k) = owners.iter().find_map(|o| {
            known
                .iter()
                .find(|k| k.owner.as_deref() == Some(o.as_str()))
        }) {
            return Some(k.live.clone());
        }
        if !owners.is_empty() {
            return None;
        }
        let mut rest = known.iter().map(|k| &k.live);
        let first = rest.next()?;
        rest.all(|l| l == first).then(|| first.clone())
    }

    /// Replaces in a request's JSON every version field the world learned
    /// a live value for ([`World::live_version`]; the object is the
    /// field's nearest `id`, else an id of the request's path `uri`). The
    /// request's JSON type is kept: `"version": 3` becomes `"version": 8`,
    /// `"version": "3"` becomes `"version": "8"`. Returns how many were
    /// replaced.
    pub fn substitute_versions(&self, json: &mut Value, uri: &str) -> usize {
        let path_ids = path_ids(uri);
        let mut replaced = 0;
        walk_versions(json, None, &mut |field, owner, value| {
            let Some(recorded) = version_text(value) else {
                return;
            };
            let owners: Vec<String> = owner
                .map(str::to_string)
                .into_iter()
                .chain(path_ids.iter().cloned())
                .collect();
            let Some(live) = self.live_version(&recorded, Some(field), &owners) else {
                return;
            };
            let live = match (&*value, live) {
                (Value::String(_), Value::Number(n)) => Value::String(n.to_string()),
                (Value::Number(_), Value::String(s)) => match s.parse::<serde_json::Number>() {
                    Ok(n) => Value::Number(n),
                    Err(_) => Value::String(s),
                },
                (_, live) => live,
            };
            if *value != live {
                *value = live;
                replaced += 1;
            }
        });
        replaced
    }

    /// A conditional request header (`If-Match`, `If-None-Match`,
    /// `If-Unmodified-Since`) naming a version an answer's body gave
    /// (`If-Match: 3`, `W/"3"`), with the live one for an object of the
    /// request's path `uri`; `None` when there is none.
    pub fn conditional(&self, name: &str, value: &str, uri: &str) -> Option<String> {
        let ids = path_ids(uri);
        rewrite_conditional(name, value, &mut |v| {
            let live = self.live_version(v, None, &ids)?;
            let live = version_text(&live).unwrap_or_else(|| live.to_string());
            (live != v).then_some(live)
        })
    }

    /// Marks recorded values that no live answer handed out yet as never
    /// coming: the answer of route `from` failed.
    pub fn poison(&self, recorded: impl IntoIterator<Item = String>, from: &Arc<str>) {
        let mut state = self.lock();
        for v in recorded {
            if !state.live.contains_key(&v) && !state.resolved.contains(&v) {
                state.poisoned.entry(v).or_insert_with(|| from.clone());
            }
        }
    }

    /// A JSON text (behind a Socket.IO packet prefix too: `42[…]`) with
    /// every string the world has a live value for replaced; `None` when
    /// it is not JSON or nothing changed. Used for a WebSocket client's
    /// frames at the moment they are sent, so that what the server said
    /// earlier on the socket is used.
    pub fn substitute_json(&self, text: &str) -> Option<String> {
        let at = packet_json(text).unwrap_or(0);
        let mut json = serde_json::from_str::<Value>(&text[at..]).ok()?;
        let state = self.lock();
        let mut changed = false;
        walk_strings(&mut json, &mut |s| {
            let live = state.live.get(s).cloned();
            changed |= live.is_some();
            live
        });
        drop(state);
        changed.then(|| format!("{}{json}", &text[..at]))
    }
}
