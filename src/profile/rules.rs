//! The `[rules]` tables of a profile: their TOML shape and its validation.
//! Compiling a profile's rules checks every rule (its table's keys, one
//! place, a route written as reports print routes, JSON paths, regexes,
//! injects of variables some rule extracts) and gives the checked
//! [`RuleSet`] that replay's correlation applies. Pure: no request is read
//! or written here.
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

use regex::Regex;
use serde::Deserialize;

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

/// Checked rules, in the order the profile gives them.
#[derive(Debug, Default)]
pub(crate) struct RuleSet {
    /// Values taken from live responses.
    pub extract: Vec<ExtractRule>,
    /// What happens at places of requests (inject, generate, keep).
    pub apply: Vec<ApplyRule>,
}

/// A checked `[[rules.extract]]`.
#[derive(Debug)]
pub(crate) struct ExtractRule {
    /// Variable name.
    pub var: String,
    /// Routes whose responses hand it out.
    pub route: RouteMatch,
    /// Where in the response it is.
    pub from: Source,
}

/// Where an extract rule finds its value in a response.
#[derive(Debug)]
pub(crate) enum Source {
    /// A JSON pointer into the body.
    Json(String),
    /// A header (lower case), optionally narrowed by a regex.
    Header(String, Option<Regex>),
    /// A regex over the body.
    Body(Regex),
}

/// A checked `[[rules.inject]]`, `[[rules.generate]]` or `[[rules.keep]]`.
#[derive(Debug)]
pub(crate) struct ApplyRule {
    /// Routes whose requests it applies to.
    pub route: RouteMatch,
    /// The place in those requests.
    pub at: Place,
    /// What it does there.
    pub action: RuleAction,
}

/// What an apply rule does at its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RuleAction {
    /// Send the recorded value.
    Keep,
    /// Send this variable's live value.
    Inject(String),
    /// Send a fresh value per world and recorded value.
    Generate {
        /// What to make.
        kind: GenerateKind,
        /// Length of `random` values.
        length: usize,
    },
}

/// A place in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
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
/// `(None, path)` the path with any method. In the path, `*` matches any
/// run of characters (`/api/conversations/*/messages`); a method of `*`
/// is any method.
#[derive(Debug)]
pub(crate) struct RouteMatch(Option<(Option<String>, String)>);

impl RouteMatch {
    /// Reads a rule's `route`.
    ///
    /// # Errors
    /// When the path does not start with `/`.
    pub fn parse(route: Option<&str>) -> Result<RouteMatch, String> {
        let Some(route) = route.map(str::trim) else {
            return Ok(RouteMatch(None));
        };
        let (method, path) = match route.split_once(' ') {
            Some(("*", p)) => (None, p.trim()),
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

    /// Whether a normalized route (`GET /api/items/{id}`) is one of these.
    pub fn matches(&self, route: &str) -> bool {
        let Some((method, path)) = &self.0 else {
            return true;
        };
        let (m, p) = route.split_once(' ').unwrap_or(("", route));
        glob(path.as_bytes(), p.as_bytes()) && method.as_deref().is_none_or(|want| want == m)
    }

    /// The routes as `--explain` names them.
    pub fn describe(&self) -> String {
        match &self.0 {
            None => "every route".to_string(),
            Some((Some(m), p)) => format!("{m} {p}"),
            Some((None, p)) => format!("* {p}"),
        }
    }
}

/// Whether `text` matches `pattern`, whose `*` matches any run of bytes
/// (none included), backtracking only to the last `*` seen.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl RuleConfig {
    /// Checks the rules of a profile.
    ///
    /// # Errors
    /// A message naming the rule (`rules.inject[2]`) and the problem.
    pub(crate) fn check(&self) -> Result<RuleSet, String> {
        let config = self;
        let mut rules = RuleSet::default();
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
            rules.extract.push(ExtractRule {
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
                        RuleAction::Inject(raw.var(&at)?)
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
                        RuleAction::Generate { kind, length }
                    }
                    _ => {
                        raw.only(&at, &["route", "json", "header", "query", "path"])?;
                        RuleAction::Keep
                    }
                };
                rules.apply.push(ApplyRule {
                    route: RouteMatch::parse(raw.route.as_deref())
                        .map_err(|e| format!("{at}: {e}"))?,
                    at: raw.place(&at)?,
                    action,
                });
            }
        }
        // An inject of a variable nothing extracts is a typo.
        for apply in &rules.apply {
            if let RuleAction::Inject(var) = &apply.action
                && !rules.extract.iter().any(|e| &e.var == var)
            {
                return Err(format!(
                    "rules.inject: var = {var:?} is not extracted by any [[rules.extract]]"
                ));
            }
        }
        Ok(rules)
    }
}

impl RuleAction {
    /// The action as `--explain` names it.
    pub fn describe(&self) -> String {
        match self {
            RuleAction::Keep => "keep as recorded".to_string(),
            RuleAction::Inject(var) => format!("inject {var}"),
            RuleAction::Generate { kind, .. } => format!("generate {kind:?}").to_lowercase(),
        }
    }
}

impl Source {
    /// The source as `--explain` names it.
    pub fn describe(&self) -> String {
        match self {
            Source::Json(p) => format!("body {p}"),
            Source::Header(h, None) => format!("header {h}"),
            Source::Header(h, Some(r)) => format!("header {h} /{r}/"),
            Source::Body(r) => format!("body /{r}/"),
        }
    }
}

impl Place {
    /// The place as `--explain` names it.
    pub fn describe(&self) -> String {
        match self {
            Place::Path(n) => format!("path segment {n}"),
            Place::Query(q) => format!("query {q}"),
            Place::Json(p) => format!("body {p}"),
            Place::Header(h) => format!("header {h}"),
        }
    }
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

fn compile_regex(at: &str, r: &str) -> Result<Regex, String> {
    Regex::new(r).map_err(|e| format!("{at}: regex {r:?}: {e}"))
}

/// A JSON pointer (RFC 6901) from a pointer or a simple JSON path
/// (`$.a.b[0]`, `$['a b']`); wildcards and filters are refused.
pub(crate) fn pointer(path: &str) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rules as a profile holds them, under `[rules]`.
    fn rules(toml_text: &str) -> Result<RuleSet, String> {
        #[derive(Deserialize)]
        struct Profile {
            rules: RuleConfig,
        }
        let profile: Profile = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        profile.rules.check()
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
}
