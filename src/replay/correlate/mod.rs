//! Dynamic values: what makes a 5x replay of a chat session measure the
//! backend instead of 401s, 400s and deduplication (docs/replay.md,
//! "Dynamic values"). Every decision about a value a replayed request
//! carries is made here, behind the calls the engine makes around each
//! send:
//!
//! ```text
//!  recorded session ──> Correlation::analyze_session (decode bodies, analyze: once per session)
//!  due request ───────> Correlation::prepare  (rules, then substitution, in the VU's world)
//!                         │ the request to send, or "skip: a value it needs will never come"
//!  live answer ───────> Correlation::learn    (rules' extracts, alignment with the recording)
//!                         │ Learned: the ids a write handed out, for the engine's dedup check
//!  failed answer ─────> Correlation::lost     (what it would have handed out never comes)
//! ```
//!
//! A socket learns while it is open, through [`SocketValues`]: its server
//! frames as they arrive, its client frames as they are sent.
//!
//! Inside, dependencies point one way: `values` (how values sit in
//! requests and answers; a leaf) ← `world` (what one world knows) ←
//! `analyze` (one recorded session) ← `learn` / `rules` ← `substitute`;
//! this face uses them all, and none of them uses it. Pure data work: no
//! network and no clock (the one file read is a credentials file). The
//! engine schedules and measures; the client sends.

mod analyze;
mod learn;
mod rules;
mod substitute;
mod values;
mod world;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};

use crate::capture::StoredExchange;

pub use analyze::{
    SessionValues, analyze, analyze_with, decode_bodies, request_values_at, response_values,
};
pub use learn::{FrameLearner, learned_pairs};
pub use rules::Rules;
pub use substitute::{Prepared, prepare};
pub use world::{Credentials, World};

use analyze::request_values;
use learn::{Bodies, header_pairs, pairs_of, poison};
use values::may_hand_out;

/// How a replay treats dynamic values: the heuristics on or off, the clear
/// credentials, the profile's rules. One per replay, shared by every VU.
#[derive(Debug, Default)]
pub struct Correlation {
    enabled: bool,
    credentials: Arc<Credentials>,
    rules: Rules,
}

/// What an open socket uses of its world: its server frames are learned
/// from as they arrive, its client frames get the world's live values as
/// they are sent. The client gets one only when correlating.
#[derive(Debug, Clone)]
pub struct SocketValues(Arc<World>);

impl SocketValues {
    /// A learner for the socket `ex` recorded; `None` when its recorded
    /// server frames hold nothing to learn from.
    pub fn learner(&self, ex: &StoredExchange) -> Option<FrameLearner> {
        FrameLearner::new(ex, self.0.clone())
    }

    /// A client's JSON text frame with the world's live values; `None`
    /// when nothing changes.
    pub fn client_frame(&self, text: &str) -> Option<String> {
        self.0.substitute_json(text)
    }
}

/// What a live answer said, as far as learning reads it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// Live status, if an answer came.
    pub status: Option<u16>,
    /// Transport failure kind, if the request failed.
    pub failure: Option<&'static str>,
    /// The headers the client kept ([`AnswerNeeds`]).
    pub headers: &'a [(String, String)],
    /// The body the client kept, decoded.
    pub body: &'a Bytes,
}

/// What one live answer handed out.
#[derive(Debug, Default)]
pub struct Learned {
    /// Recorded → live ids a write's answer handed out that can only be
    /// the backend's own (not echoes of the request, not accounts of the
    /// credentials file, not constants): if another world got the same
    /// live id for the same recorded write, the backend deduplicated.
    pub handed_out: Vec<(String, String)>,
    /// Recorded values this answer would have mapped to a second live
    /// value in the world; the first mapping was kept.
    pub conflicts: u64,
    /// Both answers succeeded but the live JSON lacks what the recorded
    /// one had: "200 but wrong".
    pub shape_mismatch: bool,
}

/// Which parts of a live answer the client keeps for learning; the rest is
/// read and dropped.
#[derive(Debug, Clone, Default)]
pub struct AnswerNeeds {
    /// Headers the profile's extract rules read.
    rule_headers: Vec<HeaderName>,
    /// Headers that may hand out a value (when correlating).
    handed_out_headers: bool,
    /// Bodies of any type, not only JSON (a rule searches one).
    all_bodies: bool,
}

impl AnswerNeeds {
    /// Also keeps these answer headers (lowercase names; the ones
    /// `--group-by-header` reports on).
    pub fn with_headers(mut self, names: &[std::sync::Arc<str>]) -> Self {
        self.rule_headers.extend(
            names
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()),
        );
        self
    }

    /// Every body kept, whatever its type, and no header beyond the
    /// defaults (a `--observe` scrape's text).
    pub fn bodies() -> AnswerNeeds {
        AnswerNeeds {
            all_bodies: true,
            ..AnswerNeeds::default()
        }
    }

    /// Whether to keep this answer header: `Location` and `Set-Cookie`
    /// always, what rules read, and (correlating) any header that may
    /// hand out a value — none of what a plain web server sends.
    pub fn keeps_header(&self, name: &HeaderName) -> bool {
        *name == header::LOCATION
            || *name == header::SET_COOKIE
            || self.rule_headers.contains(name)
            || self.handed_out_headers && may_hand_out(name.as_str())
    }

    /// Whether to keep an answer body of this content type: JSON, or any
    /// when a rule searches bodies.
    pub fn keeps_body(&self, content_type: Option<&HeaderValue>) -> bool {
        self.all_bodies
            || content_type.is_some_and(|v| {
                v.as_bytes()
                    .windows(4)
                    .any(|w| w.eq_ignore_ascii_case(b"json"))
            })
    }
}

impl Correlation {
    /// `enabled` switches the heuristics (off: `--no-correlation`); the
    /// rules apply either way.
    pub fn new(enabled: bool, credentials: Arc<Credentials>, rules: Rules) -> Correlation {
        Correlation {
            enabled,
            credentials,
            rules,
        }
    }

    /// What the client must keep of each answer for [`Correlation::learn`].
    pub fn needs(&self) -> AnswerNeeds {
        let (headers, all_bodies) = self.rules.response_needs();
        AnswerNeeds {
            rule_headers: headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            handed_out_headers: self.enabled,
            all_bodies,
        }
    }

    /// A fresh world: it starts out knowing the credentials file's markers.
    pub fn new_world(&self) -> World {
        World::seeded(&self.credentials)
    }

    /// What a socket replayed in `world` uses of it; `None` when not
    /// correlating.
    pub fn socket_values(&self, world: &Arc<World>) -> Option<SocketValues> {
        self.enabled.then(|| SocketValues(world.clone()))
    }

    /// Makes a recorded session ready to play in every world: bodies
    /// decoded (the client encodes request bodies again as recorded), and
    /// when correlating, what its values are.
    pub fn analyze_session(&self, exchanges: &mut [StoredExchange]) -> SessionValues {
        exchanges.iter_mut().for_each(decode_bodies);
        if self.enabled {
            analyze_with(exchanges, &self.credentials)
        } else {
            SessionValues::default()
        }
    }

    /// Request `index` of a session made ready to send in `world`, at its
    /// due time (so it uses everything the world learned until then).
    /// `None`: nothing to decide, send it as recorded.
    pub fn prepare(
        &self,
        ex: &StoredExchange,
        index: usize,
        values: &SessionValues,
        world: &World,
    ) -> Option<Prepared> {
        (self.enabled || !self.rules.is_empty())
            .then(|| prepare(ex, index, values, world, &self.rules, self.enabled))
    }

    /// Learns from the live answer to `sent` (request `recorded` of its
    /// session, on `route`) into `world`. A failed answer to a request the
    /// recording got through is [`Correlation::lost`].
    pub fn learn(
        &self,
        route: &str,
        recorded: &StoredExchange,
        sent: &StoredExchange,
        answer: Answer<'_>,
        values: &SessionValues,
        world: &World,
    ) -> Learned {
        let recorded_ok = recorded
            .status
            .and_then(|s| u16::try_from(s).ok())
            .is_some_and(|s| s < 400);
        let live_ok = answer.status.is_some_and(|s| s < 400);
        let write = matches!(recorded.method.as_str(), "POST" | "PUT" | "PATCH");
        if recorded_ok && !live_ok {
            tracing::debug!(
                exchange = recorded.id,
                session = recorded.session_no,
                seq = recorded.seq,
                recorded = %recorded.uri,
                status = ?answer.status,
                failure = ?answer.failure,
                "a request the recording got through failed"
            );
            self.lost(recorded, world);
            return Learned::default();
        }
        if !live_ok {
            return Learned::default();
        }
        let bodies = Bodies::parse(recorded, answer.body);
        let shape_mismatch = recorded_ok && bodies.shape_differs();
        if !(self.enabled || write || !self.rules.is_empty()) {
            return Learned {
                shape_mismatch,
                ..Learned::default()
            };
        }
        let extracted = self
            .rules
            .extract(route, recorded, answer.headers, answer.body, world);
        world.absorb(&extracted);
        let mut pairs = pairs_of(recorded, answer.headers, &bodies);
        // Echoes of what the session itself sent (a user name, a
        // regenerated key) say nothing about the backend's ids.
        pairs.retain(|(rec, _)| !values.nonces.contains(rec));
        // The ids a write hands out, less the accounts of the credentials
        // file (the same in every world) and, when correlating, values
        // that came back as recorded (a fresh backend never hands out the
        // recorded id again: those are constants like a version): only
        // the rest can be another world's ids handed out again.
        let mut handed_out: Vec<(String, String)> = if write {
            pairs
                .iter()
                .filter(|(rec, live)| {
                    !(self.credentials.users.contains_key(rec) || self.enabled && rec == live)
                })
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let mut conflicts = 0;
        if self.enabled {
            conflicts = world.absorb_aligned(&pairs);
            world.absorb_versions(&bodies.version_pairs(recorded));
            world.absorb(&header_pairs(recorded, answer.headers));
        }
        if !handed_out.is_empty() {
            // Echoes of what the request itself carried (a room id every
            // world posts to) are not the backend's answer.
            let carried = request_values(sent);
            handed_out.retain(|(_, live)| !carried.contains(live));
        }
        Learned {
            handed_out,
            conflicts,
            shape_mismatch,
        }
    }

    /// `ex`'s answer failed or was never asked for: what it would have
    /// handed out will not come, and the requests that need it are skipped.
    pub fn lost(&self, ex: &StoredExchange, world: &World) {
        if self.enabled {
            poison(ex, world);
        }
        self.rules.fail(ex, world);
    }
}
