//! Explicit dynamic-value rules from a profile's `[rules]` tables: what the
//! heuristics of [`super::rewrite`] cannot know, such as a short numeric id
//! or a client value that must stay as recorded. Rules override the
//! heuristics and still apply under `--no-correlation`.
//!
//! ```toml
//! [[rules.extract]]          # a value a live response hands out, by name
//! var = "item"
//! route = "POST /api/items"  # a route as reports print it; no method = any
//! json = "$.id"              # or a JSON pointer "/id"; or header = "location";
//!                            # regex = '…' on the body or on that header
//!
//! [[rules.inject]]           # where later requests of the world carry it
//! var = "item"
//! route = "/api/items/{id}"
//! path = 3                   # or query = "item", json = "$.item", header = "x-item"
//!
//! [[rules.generate]]         # a fresh value per world and recorded value
//! header = "idempotency-key"
//! kind = "uuid"              # uuid | counter | random (length = 16)
//!
//! [[rules.keep]]             # sent as recorded, whatever the heuristics say
//! json = "$.device_id"
//! ```
//!
//! Variables live in the world: a value one user's response hands out is
//! what the other users of that world send.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rand::Rng;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::rewrite::{World, percent_decode, percent_encode};
use crate::capture::StoredExchange;
use crate::route;

/// The `[rules]` tables of a profile, as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Values taken from responses.
    #[serde(default)]
    pub extract: Vec<RawRule>,
    /// Where requests carry extracted values.
    #[serde(default)]
    pub inject: Vec<RawRule>,
    /// Places that get a fresh value.
    #[serde(default)]
    pub generate: Vec<RawRule>,
    /// Places sent as recorded.
    #[serde(default)]
    pub keep: Vec<RawRule>,
}

/// One rule as written; which keys a rule needs depends on its table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Variable name (extract, inject).
    pub var: Option<String>,
    /// Route the rule applies to: `METHOD /path/{id}` or `/path/{id}`.
    pub route: Option<String>,
    /// JSON pointer (`/a/0/b`) or path (`$.a[0].b`) in a body.
    pub json: Option<String>,
    /// Header name.
    pub header: Option<String>,
    /// Query parameter name.
    pub query: Option<String>,
    /// Path segment, 1-based (`/api/items/17`: 3 is `17`).
    pub path: Option<usize>,
    /// Regex over the response body or `header` (extract); the first
    /// group, or the whole match.
    pub regex: Option<String>,
    /// What to generate.
    pub kind: Option<GenerateKind>,
    /// Length of `random` values.
    pub length: Option<usize>,
}

/// What a `generate` rule makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerateKind {
    /// A random version-4 UUID.
    Uuid,
    /// 1, 2, 3, … across the whole replay.
    Counter,
    /// Random letters and digits.
    Random,
}

/// Compiled rules.
#[derive(Debug, Default)]
pub struct Rules {
    extract: Vec<Extract>,
    apply: Vec<Apply>,
}

#[derive(Debug)]
struct Extract {
    var: String,
    route: RouteMatch,
    from: Source,
}

#[derive(Debug)]
enum Source {
    Json(String),
    Header(String, Option<Regex>),
    Body(Regex),
}

#[derive(Debug)]
struct Apply {
    route: RouteMatch,
    at: Place,
    action: Action,
}

#[derive(Debug)]
enum Action {
    Keep,
    Inject(String),
    Generate {
        kind: GenerateKind,
        length: usize,
        counter: AtomicU64,
    },
}

/// A place in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Path segment, 1-based.
    Path(usize),
    /// Query parameter.
    Query(String),
    /// JSON pointer into the body.
    Json(String),
    /// Header, lower case.
    Header(String),
}

/// `None` matches every route; `(Some(method), path)` one route;
/// `(None, path)` the path with any method.
#[derive(Debug)]
struct RouteMatch(Option<(Option<String>, String)>);

impl RouteMatch {
    fn parse(route: Option<&str>) -> Result<RouteMatch, String> {
        let Some(route) = route.map(str::trim) else {
            return Ok(RouteMatch(None));
        };
        let (method, path) = match route.split_once(' ') {
            Some((m, p)) => (Some(m.trim().to_ascii_uppercase()), p.trim()),
            None => (None, route),
        };
        if !path.starts_with('/') {
            return Err(format!(
                "route = {route:?}: write `METHOD /path` or `/path`, as reports print routes"
            ));
        }
        // Written with a literal id (`/api/items/17`) or a template: both
        // normalize to the report's form.
        let normalized = route::normalize("", path);
        Ok(RouteMatch(Some((method, normalized[1..].to_string()))))
    }

    fn matches(&self, route: &str) -> bool {
        let Some((method, path)) = &self.0 else {
            return true;
        };
        let (m, p) = route.split_once(' ').unwrap_or(("", route));
        p == path && method.as_deref().is_none_or(|want| want == m)
    }
}

impl Rules {
    /// Compiles and checks the rules of a profile.
    ///
    /// # Errors
    /// A message naming the rule (`rules.inject[2]`) and the problem.
    pub fn compile(config: &RuleConfig) -> Result<Rules, String> {
        let mut rules = Rules::default();
        for (i, raw) in config.extract.iter().enumerate() {
            let at = format!("rules.extract[{i}]");
            raw.only(&at, &["var", "route", "json", "header", "regex"])?;
            let var = raw.var(&at)?;
            let from = match (&raw.json, &raw.header, &raw.regex) {
                (Some(json), None, None) => {
                    Source::Json(pointer(json).map_err(|e| format!("{at}: {e}"))?)
                }
                (None, Some(h), regex) => Source::Header(
                    h.to_ascii_lowercase(),
                    regex
                        .as_deref()
                        .map(|r| compile_regex(&at, r))
                        .transpose()?,
                ),
                (None, None, Some(r)) => Source::Body(compile_regex(&at, r)?),
                _ => {
                    return Err(format!(
                        "{at}: say where the value is: `json`, `header` (optionally with `regex`), or `regex` on the body"
                    ));
                }
            };
            rules.extract.push(Extract {
                var,
                route: RouteMatch::parse(raw.route.as_deref()).map_err(|e| format!("{at}: {e}"))?,
                from,
            });
        }
        let tables: [(&str, &[RawRule]); 3] = [
            ("inject", &config.inject),
            ("generate", &config.generate),
            ("keep", &config.keep),
        ];
        for (table, raws) in tables {
            for (i, raw) in raws.iter().enumerate() {
                let at = format!("rules.{table}[{i}]");
                let action = match table {
                    "inject" => {
                        raw.only(&at, &["var", "route", "json", "header", "query", "path"])?;
                        Action::Inject(raw.var(&at)?)
                    }
                    "generate" => {
                        raw.only(
                            &at,
                            &["route", "json", "header", "query", "path", "kind", "length"],
                        )?;
                        let kind = raw.kind.ok_or_else(|| {
                            format!("{at}: add `kind = \"uuid\"`, `\"counter\"` or `\"random\"`")
                        })?;
                        let length = raw.length.unwrap_or(16);
                        if raw.length.is_some() && kind != GenerateKind::Random {
                            return Err(format!(
                                "{at}: `length` applies to kind = \"random\" only"
                            ));
                        }
                        if !(1..=4096).contains(&length) {
                            return Err(format!("{at}: length = {length}: use 1 to 4096"));
                        }
                        Action::Generate {
                            kind,
                            length,
                            counter: AtomicU64::new(0),
                        }
                    }
                    _ => {
                        raw.only(&at, &["route", "json", "header", "query", "path"])?;
                        Action::Keep
                    }
                };
                rules.apply.push(Apply {
                    route: RouteMatch::parse(raw.route.as_deref())
                        .map_err(|e| format!("{at}: {e}"))?,
                    at: raw.place(&at)?,
                    action,
                });
            }
        }
        // An inject of a variable nothing extracts is a typo.
        for apply in &rules.apply {
            if let Action::Inject(var) = &apply.action
                && !rules.extract.iter().any(|e| &e.var == var)
            {
                return Err(format!(
                    "rules.inject: var = {var:?} is not extracted by any [[rules.extract]]"
                ));
            }
        }
        Ok(rules)
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
            let Some(live) = e.from.find(live_headers, live_body) else {
                tracing::debug!(var = %e.var, route, "an extract rule found nothing in the live response");
                continue;
            };
            if let Some(rec) = e
                .from
                .find(&recorded.response_headers, &recorded.response_body)
            {
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
            if world.var(&e.var).is_none() {
                world.set_var(&e.var, None);
            }
        }
    }

    /// What the rules do to a request of `route` in `world`.
    pub(crate) fn actions(
        &self,
        route: &str,
        ex: &StoredExchange,
        world: &World,
    ) -> Vec<RuleAction> {
        let mut out = Vec::new();
        for a in self.apply.iter().filter(|a| a.route.matches(route)) {
            let recorded = a.at.read(ex);
            let decision = match &a.action {
                Action::Keep => match &recorded {
                    Some(v) => Decision::Keep(v.clone()),
                    None => continue,
                },
                Action::Inject(var) => match world.var(var) {
                    Some(Some(live)) => Decision::Set(live, "rule"),
                    Some(None) => Decision::Skip,
                    None => Decision::Missing,
                },
                Action::Generate {
                    kind,
                    length,
                    counter,
                } => {
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
            out.push(RuleAction {
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
            .filter(|a| a.route.matches(route))
            .map(|a| (a.at.describe(), format!("rule: {}", a.action.describe())))
            .collect()
    }

    /// One line per rule, for `--explain`.
    pub fn describe(&self) -> Vec<String> {
        let route = |r: &RouteMatch| match &r.0 {
            None => "every route".to_string(),
            Some((Some(m), p)) => format!("{m} {p}"),
            Some((None, p)) => format!("* {p}"),
        };
        let mut out: Vec<String> = self
            .extract
            .iter()
            .map(|e| {
                format!(
                    "extract {} from {} of {} responses",
                    e.var,
                    e.from.describe(),
                    route(&e.route)
                )
            })
            .collect();
        out.extend(self.apply.iter().map(|a| {
            format!(
                "{} at {} of {} requests",
                a.action.describe(),
                a.at.describe(),
                route(&a.route)
            )
        }));
        out
    }
}

impl Action {
    fn describe(&self) -> String {
        match self {
            Action::Keep => "keep as recorded".to_string(),
            Action::Inject(var) => format!("inject {var}"),
            Action::Generate { kind, .. } => format!("generate {kind:?}").to_lowercase(),
        }
    }
}

/// A rule's decision for one place of one request.
#[derive(Debug)]
pub(crate) struct RuleAction {
    pub at: Place,
    /// The value recorded there.
    pub recorded: Option<String>,
    pub decision: Decision,
}

#[derive(Debug)]
pub(crate) enum Decision {
    /// Send the recorded value.
    Keep(String),
    /// Send this value; the substitution kind.
    Set(String, &'static str),
    /// The variable's response failed: do not send the request.
    Skip,
    /// The variable has no value yet: sent as recorded, counted unresolved.
    Missing,
}

impl RawRule {
    fn var(&self, at: &str) -> Result<String, String> {
        match self.var.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(format!("{at}: add `var = \"name\"`")),
        }
    }

    /// Refuses keys the rule's table does not use.
    fn only(&self, at: &str, allowed: &[&str]) -> Result<(), String> {
        let set = [
            ("var", self.var.is_some()),
            ("route", self.route.is_some()),
            ("json", self.json.is_some()),
            ("header", self.header.is_some()),
            ("query", self.query.is_some()),
            ("path", self.path.is_some()),
            ("regex", self.regex.is_some()),
            ("kind", self.kind.is_some()),
            ("length", self.length.is_some()),
        ];
        match set.iter().find(|(k, on)| *on && !allowed.contains(k)) {
            Some((k, _)) => Err(format!(
                "{at}: `{k}` does not apply here; use {}",
                allowed.join(", ")
            )),
            None => Ok(()),
        }
    }

    fn place(&self, at: &str) -> Result<Place, String> {
        let places = [
            self.path.map(Place::Path),
            self.query.clone().map(Place::Query),
            self.json
                .as_deref()
                .map(|j| pointer(j).map(Place::Json))
                .transpose()
                .map_err(|e| format!("{at}: {e}"))?,
            self.header
                .as_ref()
                .map(|h| Place::Header(h.to_ascii_lowercase())),
        ];
        let mut given = places.into_iter().flatten();
        match (given.next(), given.next()) {
            (Some(Place::Path(0)), None) => Err(format!("{at}: path segments count from 1")),
            (Some(place), None) => Ok(place),
            _ => Err(format!(
                "{at}: name exactly one place: `path`, `query`, `json` or `header`"
            )),
        }
    }
}

impl Source {
    fn find(&self, headers: &[(String, String)], body: &[u8]) -> Option<String> {
        match self {
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

    fn describe(&self) -> String {
        match self {
            Source::Json(p) => format!("body {p}"),
            Source::Header(h, None) => format!("header {h}"),
            Source::Header(h, Some(r)) => format!("header {h} /{r}/"),
            Source::Body(r) => format!("body /{r}/"),
        }
    }
}

impl Place {
    /// The value at this place of a request.
    pub fn read(&self, ex: &StoredExchange) -> Option<String> {
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

    /// Puts `value` at this place; a missing header or query parameter is
    /// added, a missing path segment or JSON member is left alone.
    pub fn write(&self, ex: &mut StoredExchange, value: &str) {
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

    fn describe(&self) -> String {
        match self {
            Place::Path(n) => format!("path segment {n}"),
            Place::Query(q) => format!("query {q}"),
            Place::Json(p) => format!("body {p}"),
            Place::Header(h) => format!("header {h}"),
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

fn compile_regex(at: &str, r: &str) -> Result<Regex, String> {
    Regex::new(r).map_err(|e| format!("{at}: regex {r:?}: {e}"))
}

fn first_group(r: &Regex, text: &str) -> Option<String> {
    let c = r.captures(text)?;
    c.get(1)
        .or_else(|| c.get(0))
        .map(|m| m.as_str().to_string())
}

/// A JSON pointer (RFC 6901) from a pointer or a simple JSON path
/// (`$.a.b[0]`, `$['a b']`); wildcards and filters are refused.
pub fn pointer(path: &str) -> Result<String, String> {
    if path.is_empty() || path.starts_with('/') {
        return Ok(path.to_string());
    }
    let bad = || {
        format!(
            "json = {path:?}: write a JSON pointer (\"/a/0/b\") or a simple path (\"$.a[0].b\")"
        )
    };
    let mut rest = path.strip_prefix('$').ok_or_else(bad)?;
    let mut out = String::new();
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if key.is_empty() || key == "*" {
                return Err(bad());
            }
            out.push('/');
            out.push_str(&escape(key));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(bad)?;
            let inner = r[..end].trim();
            let key = inner
                .strip_prefix('\'')
                .and_then(|k| k.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|k| k.strip_suffix('"')));
            match key {
                Some(k) => {
                    out.push('/');
                    out.push_str(&escape(k));
                }
                None if !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()) => {
                    out.push('/');
                    out.push_str(inner);
                }
                None => return Err(bad()),
            }
            rest = &r[end + 1..];
        } else {
            return Err(bad());
        }
    }
    Ok(out)
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
    use super::*;
    use crate::replay::rewrite::tests::ex;
    use crate::replay::rewrite::{SessionValues, prepare};

    /// Rules as a profile holds them, under `[rules]`.
    fn rules(toml_text: &str) -> Result<Rules, String> {
        #[derive(Deserialize)]
        struct Profile {
            rules: RuleConfig,
        }
        let profile: Profile = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        Rules::compile(&profile.rules)
    }

    #[test]
    fn json_paths_become_pointers() {
        assert_eq!(
            pointer("$.data.items[0].id").as_deref(),
            Ok("/data/items/0/id")
        );
        assert_eq!(pointer("$['a/b'].c").as_deref(), Ok("/a~1b/c"));
        assert_eq!(pointer("/already/0").as_deref(), Ok("/already/0"));
        assert!(pointer("$.items[*].id").is_err());
        assert!(pointer("items.id").is_err());
    }

    #[test]
    fn bad_rules_name_the_rule_and_the_fix() {
        let err = |t: &str| rules(t).expect_err("refused");
        assert!(err("[[rules.inject]]\nvar = \"x\"\npath = 3\n").contains("not extracted"));
        assert!(err("[[rules.extract]]\nvar = \"x\"\n").contains("rules.extract[0]: say where"));
        assert!(
            err("[[rules.keep]]\njson = \"/a\"\nheader = \"b\"\n").contains("exactly one place")
        );
        assert!(err("[[rules.keep]]\npath = 0\n").contains("count from 1"));
        assert!(err("[[rules.generate]]\nheader = \"k\"\n").contains("kind"));
        assert!(
            err("[[rules.keep]]\nheader = \"k\"\nkind = \"uuid\"\n")
                .contains("`kind` does not apply")
        );
        assert!(err("[[rules.extract]]\nvar = \"x\"\nregex = \"(\"\n").contains("regex"));
        assert!(
            err("[[rules.keep]]\nroute = \"api/x\"\nheader = \"k\"\n").contains("METHOD /path")
        );
    }

    #[test]
    fn routes_match_as_reports_print_them() {
        let m = |r: &str| RouteMatch::parse(Some(r)).expect("route");
        assert!(m("DELETE /api/items/{id}").matches("DELETE /api/items/{id}"));
        assert!(m("delete /api/items/17").matches("DELETE /api/items/{id}"));
        assert!(m("/api/items/{id}").matches("GET /api/items/{id}"));
        assert!(!m("POST /api/items").matches("GET /api/items"));
        assert!(!m("/api/items").matches("GET /api/items/{id}"));
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
        let values = crate::replay::rewrite::analyze(&session);
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
