//! Explicit rules applied: a profile's checked `[rules]` (their TOML shape
//! and checks live in `profile`) at work on requests and live answers.
//! Extract rules learn variables into the world, inject, generate and keep
//! rules decide places of requests before the heuristics look. Rules
//! override the heuristics and still apply under `--no-correlation`.
//! Variables live in the world: a value one user's answer hands out is
//! what the other users of that world send.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rand::Rng;
use regex::Regex;
use serde_json::Value;

use super::values::{percent_decode, percent_encode};
use super::world::World;
use crate::capture::StoredExchange;
use crate::profile::{ApplyRule, ExtractRule, GenerateKind, Place, RuleAction, RuleConfig, Source};
use crate::route;

/// A profile's rules, ready to apply.
#[derive(Debug, Default)]
pub struct Rules {
    extract: Vec<ExtractRule>,
    /// Each apply rule with its `counter` generator's count.
    apply: Vec<(ApplyRule, AtomicU64)>,
}

impl Rules {
    /// Checks and readies the rules of a profile.
    ///
    /// # Errors
    /// A message naming the rule (`rules.inject[2]`) and the problem.
    pub fn compile(config: &RuleConfig) -> Result<Rules, String> {
        let set = config.check()?;
        Ok(Rules {
            extract: set.extract,
            apply: set
                .apply
                .into_iter()
                .map(|a| (a, AtomicU64::new(0)))
                .collect(),
        })
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.extract.is_empty() && self.apply.is_empty()
    }

    /// Response headers extract rules read (besides `Location` and
    /// `Set-Cookie`), and whether any reads a non-JSON body.
    pub fn response_needs(&self) -> (Vec<String>, bool) {
        let mut headers = Vec::new();
        let mut text_bodies = false;
        for e in &self.extract {
            match &e.from {
                Source::Header(h, _) => headers.push(h.clone()),
                Source::Body(_) => text_bodies = true,
                Source::Json(_) => {}
            }
        }
        (headers, text_bodies)
    }

    /// Learns the variables a live response of `route` hands out into the
    /// world; returns the recorded → live pairs found at the same places,
    /// for the heuristics to apply elsewhere.
    pub fn extract(
        &self,
        route: &str,
        recorded: &StoredExchange,
        live_headers: &[(String, String)],
        live_body: &Bytes,
        world: &World,
    ) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for e in self.extract.iter().filter(|e| e.route.matches(route)) {
            let Some(live) = find(&e.from, live_headers, live_body) else {
                tracing::debug!(var = %e.var, route, "an extract rule found nothing in the live response");
                continue;
            };
            if let Some(rec) = find(&e.from, &recorded.response_headers, &recorded.response_body) {
                pairs.push((rec, live.clone()));
            }
            world.set_var(&e.var, Some(live));
        }
        pairs
    }

    /// A response of `ex`'s route failed or was never asked for: the
    /// variables it would have handed out will not come, and requests that
    /// inject them are skipped.
    pub fn fail(&self, ex: &StoredExchange, world: &World) {
        if self.extract.is_empty() {
            return;
        }
        let route = route::normalize(&ex.method, &ex.uri);
        for e in self.extract.iter().filter(|e| e.route.matches(&route)) {
            world.fail_var(&e.var);
        }
    }

    /// What the rules do to a request of `route` in `world`.
    pub(super) fn actions(
        &self,
        route: &str,
        ex: &StoredExchange,
        world: &World,
    ) -> Vec<RuledPlace> {
        let mut out = Vec::new();
        for (a, counter) in self.apply.iter().filter(|(a, _)| a.route.matches(route)) {
            let recorded = a.at.read(ex);
            let decision = match &a.action {
                RuleAction::Keep => match &recorded {
                    Some(v) => Decision::Keep(v.clone()),
                    None => continue,
                },
                RuleAction::Inject(var) => match world.var(var) {
                    Some(Some(live)) => Decision::Set(live, "rule"),
                    Some(None) => Decision::Skip,
                    None => Decision::Missing,
                },
                RuleAction::Generate { kind, length } => {
                    let make = || match kind {
                        GenerateKind::Uuid => uuid_v4(),
                        GenerateKind::Counter => {
                            (counter.fetch_add(1, Ordering::Relaxed) + 1).to_string()
                        }
                        GenerateKind::Random => random_string(*length),
                    };
                    let live = match &recorded {
                        // The same recorded value (a retry) gets the same
                        // fresh one within the world.
                        Some(v) => world.live_or_insert(v, make),
                        None => make(),
                    };
                    Decision::Set(live, "generated")
                }
            };
            out.push(RuledPlace {
                at: a.at.clone(),
                recorded,
                decision,
            });
        }
        out
    }

    /// What the rules do to requests of `route`, as (place, what) for
    /// `--explain`.
    pub fn places(&self, route: &str) -> Vec<(String, String)> {
        self.apply
            .iter()
            .map(|(a, _)| a)
            .filter(|a| a.route.matches(route))
            .map(|a| (a.at.describe(), format!("rule: {}", a.action.describe())))
            .collect()
    }

    /// One line per rule, for `--explain`.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .extract
            .iter()
            .map(|e| {
                format!(
                    "extract {} from {} of {} responses",
                    e.var,
                    e.from.describe(),
                    e.route.describe()
                )
            })
            .collect();
        out.extend(self.apply.iter().map(|(a, _)| {
            format!(
                "{} at {} of {} requests",
                a.action.describe(),
                a.at.describe(),
                a.route.describe()
            )
        }));
        out
    }
}

/// A rule's decision for one place of one request.
#[derive(Debug)]
pub(super) struct RuledPlace {
    pub(super) at: Place,
    /// The value recorded there.
    pub(super) recorded: Option<String>,
    pub(super) decision: Decision,
}

#[derive(Debug)]
pub(super) enum Decision {
    /// Send the recorded value.
    Keep(String),
    /// Send this value; the substitution kind.
    Set(String, &'static str),
    /// The variable's response failed: do not send the request.
    Skip,
    /// The variable has no value yet: sent as recorded, counted unresolved.
    Missing,
}

/// The value an extract rule finds in an answer's headers and body.
fn find(source: &Source, headers: &[(String, String)], body: &[u8]) -> Option<String> {
    match source {
        Source::Json(p) => {
            let v: Value = serde_json::from_slice(body).ok()?;
            scalar(v.pointer(p)?)
        }
        Source::Header(name, regex) => {
            let value = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))?
                .1
                .as_str();
            match regex {
                Some(r) => first_group(r, value),
                None => Some(value.trim().to_string()),
            }
        }
        Source::Body(r) => first_group(r, &String::from_utf8_lossy(body)),
    }
}

/// Reading and writing a rule's place in a request.
pub(super) trait RequestPlace {
    /// The value at this place of a request.
    fn read(&self, ex: &StoredExchange) -> Option<String>;
    /// Puts `value` at this place; a missing header or query parameter is
    /// added, a missing path segment or JSON member is left alone.
    fn write(&self, ex: &mut StoredExchange, value: &str);
}

impl RequestPlace for Place {
    fn read(&self, ex: &StoredExchange) -> Option<String> {
        let (path, query) = ex.uri.split_once('?').unwrap_or((&ex.uri, ""));
        match self {
            Place::Path(n) => path.split('/').nth(*n).map(percent_decode),
            Place::Query(name) => query
                .split('&')
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| percent_decode(k) == *name)
                .map(|(_, v)| percent_decode(&v.replace('+', " "))),
            Place::Json(p) => {
                let v: Value = serde_json::from_slice(&ex.request_body).ok()?;
                scalar(v.pointer(p)?)
            }
            Place::Header(h) => ex.request_header(h).map(|v| v.trim().to_string()),
        }
    }

    fn write(&self, ex: &mut StoredExchange, value: &str) {
        let (path, query) = match ex.uri.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (ex.uri.clone(), None),
        };
        match self {
            Place::Path(n) => {
                let mut segments: Vec<String> = path.split('/').map(str::to_string).collect();
                if let Some(s) = segments.get_mut(*n) {
                    *s = percent_encode(value);
                    ex.uri =
                        segments.join("/") + &query.map(|q| format!("?{q}")).unwrap_or_default();
                }
            }
            Place::Query(name) => {
                let fresh = format!("{}={}", percent_encode(name), percent_encode(value));
                let mut found = false;
                let mut pairs: Vec<String> = query
                    .as_deref()
                    .unwrap_or("")
                    .split('&')
                    .filter(|p| !p.is_empty())
                    .map(|p| match p.split_once('=') {
                        Some((k, _)) if percent_decode(k) == *name => {
                            found = true;
                            fresh.clone()
                        }
                        _ => p.to_string(),
                    })
                    .collect();
                if !found {
                    pairs.push(fresh);
                }
                ex.uri = format!("{path}?{}", pairs.join("&"));
            }
            Place::Json(p) => {
                let Ok(mut body) = serde_json::from_slice::<Value>(&ex.request_body) else {
                    return;
                };
                if let Some(slot) = body.pointer_mut(p) {
                    // A number stays a number when the new value is one.
                    *slot = match (&*slot, value.parse::<serde_json::Number>()) {
                        (Value::Number(_), Ok(n)) => Value::Number(n),
                        _ => Value::String(value.to_string()),
                    };
                    if let Ok(bytes) = serde_json::to_vec(&body) {
                        ex.request_body = bytes;
                    }
                }
            }
            Place::Header(h) => {
                match ex
                    .request_headers
                    .iter_mut()
                    .find(|(k, _)| k.eq_ignore_ascii_case(h))
                {
                    Some((_, v)) => *v = value.to_string(),
                    None => ex.request_headers.push((h.clone(), value.to_string())),
                }
            }
        }
    }
}

/// A JSON value as the text a request would carry; objects and arrays are
/// not values.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn first_group(r: &Regex, text: &str) -> Option<String> {
    let c = r.captures(text)?;
    c.get(1)
        .or_else(|| c.get(0))
        .map(|m| m.as_str().to_string())
}

fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn random_string(length: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::substitute::prepare;
    use super::super::tests::ex;
    use super::*;
    use crate::replay::correlate::SessionValues;

    /// Rules as a profile holds them, under `[rules]`.
    fn rules(toml_text: &str) -> Result<Rules, String> {
        #[derive(serde::Deserialize)]
        struct Profile {
            rules: RuleConfig,
        }
        let profile: Profile = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        Rules::compile(&profile.rules)
    }

    #[test]
    fn places_read_and_write_every_part_of_a_request() {
        let mut e = ex(
            "PUT",
            "/api/c/42/m/txn-1?cursor=a%2Fb&x=1",
            &[("X-Seq", "7")],
            r#"{"n":3,"to":{"id":"u1"}}"#,
            "",
        );
        assert_eq!(Place::Path(2).read(&e).as_deref(), Some("c"));
        assert_eq!(
            Place::Query("cursor".into()).read(&e).as_deref(),
            Some("a/b")
        );
        assert_eq!(Place::Json("/n".into()).read(&e).as_deref(), Some("3"));
        assert_eq!(Place::Header("x-seq".into()).read(&e).as_deref(), Some("7"));
        Place::Path(3).write(&mut e, "9 9");
        Place::Query("cursor".into()).write(&mut e, "z");
        Place::Query("new".into()).write(&mut e, "y");
        Place::Json("/n".into()).write(&mut e, "12");
        Place::Json("/to/id".into()).write(&mut e, "u2");
        Place::Header("x-seq".into()).write(&mut e, "8");
        Place::Header("x-new".into()).write(&mut e, "n");
        assert_eq!(e.uri, "/api/c/9%209/m/txn-1?cursor=z&x=1&new=y");
        assert_eq!(e.request_body, br#"{"n":12,"to":{"id":"u2"}}"#);
        assert_eq!(e.request_header("x-seq"), Some("8"));
        assert_eq!(e.request_header("x-new"), Some("n"));
    }

    #[test]
    fn generated_values_are_fresh_per_world_and_stable_within_one() {
        let r = rules(
            "[[rules.generate]]\nheader = \"x-req\"\nkind = \"uuid\"\n\
             [[rules.generate]]\njson = \"$.seq\"\nkind = \"counter\"\n",
        )
        .expect("rules");
        let sent = ex("POST", "/api/m", &[("X-Req", "r-1")], r#"{"seq":1}"#, "");
        let values = SessionValues::default();
        let (a, b) = (World::default(), World::default());
        let first = prepare(&sent, 0, &values, &a, &r, false).exchange;
        let retry = prepare(&sent, 0, &values, &a, &r, false).exchange;
        let other = prepare(&sent, 0, &values, &b, &r, false).exchange;
        let uuid = first.request_header("x-req").expect("header");
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4", "version 4: {uuid}");
        assert_eq!(
            retry.request_header("x-req"),
            Some(uuid),
            "a retry keeps its value"
        );
        assert_ne!(other.request_header("x-req"), Some(uuid));
        assert_eq!(first.request_body, br#"{"seq":1}"#);
        assert_eq!(other.request_body, br#"{"seq":2}"#);
    }

    #[test]
    fn kept_values_are_not_regenerated_and_injects_wait_for_their_extract() {
        let r = rules(
            "[[rules.keep]]\nheader = \"x-device\"\n\
             [[rules.extract]]\nvar = \"item\"\nroute = \"POST /api/items\"\njson = \"$.id\"\n\
             [[rules.inject]]\nvar = \"item\"\nroute = \"GET /api/items/{id}\"\npath = 3\n",
        )
        .expect("rules");
        let session = vec![
            ex(
                "POST",
                "/api/items",
                &[("X-Device", "dev-8f3k2m9q")],
                "{}",
                r#"{"id":1}"#,
            ),
            ex("GET", "/api/items/1", &[], "", ""),
        ];
        let values = crate::replay::correlate::analyze(&session);
        assert!(
            values.nonces.contains("dev-8f3k2m9q"),
            "the heuristic alone regenerates it"
        );
        let world = World::default();
        let create = prepare(&session[0], 0, &values, &world, &r, true);
        assert_eq!(
            create.exchange.request_header("x-device"),
            Some("dev-8f3k2m9q")
        );
        assert!(create.substitutions.is_empty());
        let early = prepare(&session[1], 1, &values, &world, &r, true);
        assert_eq!((early.unresolved, early.skip), (1, false));
        let pairs = r.extract(
            "POST /api/items",
            &session[0],
            &[],
            &Bytes::from_static(br#"{"id":7}"#),
            &world,
        );
        assert_eq!(pairs, [("1".to_string(), "7".to_string())]);
        let read = prepare(&session[1], 1, &values, &world, &r, true);
        assert_eq!(read.exchange.uri, "/api/items/7");
        assert_eq!(read.substitutions, ["rule"]);
        let failed = World::default();
        r.fail(&session[0], &failed);
        assert!(prepare(&session[1], 1, &values, &failed, &r, true).skip);
    }
}
