//! Replay profiles: versioned TOML, parsed and validated here; pure.
//!
//! A profile is a list of stages run in order (each with a multiplier, a
//! speed, and either one pass over the capture or a duration, optionally
//! looping the capture to fill it), SLO thresholds (global or per stage)
//! and safety limits. No SLOs apply unless a profile or flag sets them.
//! docs/replay-profiles.md has the key / meaning / type / default table.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod observe;
mod rules;
mod search;

pub use observe::{Observe, ObservedSeries, SeriesKind, label_name, metric_name};
pub(crate) use rules::{ApplyRule, ExtractRule, Place, RuleAction, Source};
pub use rules::{GenerateKind, RawRule, RuleConfig};
pub use search::Search;

/// The only profile format version so far.
pub const VERSION: u32 = 1;

/// The capacity profile shipped in replay-profiles/, built in so that
/// `tapedeck demo` runs from anywhere.
pub const CAPACITY: &str = include_str!("../../replay-profiles/capacity.toml");

/// A bad profile: which file, and what is wrong (key and problem).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read profile {path}: {source}")]
    Read {
        /// The profile file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not match the profile format.
    #[error("profile {path}: {message}")]
    Invalid {
        /// The profile file (or `<flags>`).
        path: PathBuf,
        /// Key and problem.
        message: String,
    },
}

/// Pass/fail thresholds. Latencies in milliseconds, the error rate as a
/// fraction (0.01 = 1%).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Highest acceptable p50 latency, ms.
    pub p50_ms: Option<f64>,
    /// Highest acceptable p95 latency, ms.
    pub p95_ms: Option<f64>,
    /// Highest acceptable p99 latency, ms.
    pub p99_ms: Option<f64>,
    /// Highest acceptable error rate (errors / requests).
    pub error_rate: Option<f64>,
    /// Thresholds for the requests of the routes a pattern matches
    /// (`[[slo.route]]`).
    #[serde(default)]
    pub route: Vec<RouteSlo>,
}

/// Thresholds over the pooled requests of every route a pattern matches.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSlo {
    /// A route template as reports print it (`GET /api/conversations/{id}`),
    /// `*` matching any run of characters; without a method (starting
    /// with `/`) it matches the path under every method.
    pub route: String,
    /// Highest acceptable p50 latency, ms.
    pub p50_ms: Option<f64>,
    /// Highest acceptable p95 latency, ms.
    pub p95_ms: Option<f64>,
    /// Highest acceptable p99 latency, ms.
    pub p99_ms: Option<f64>,
    /// Highest acceptable error rate (errors / requests).
    pub error_rate: Option<f64>,
}

/// The thresholds' names, in the order reports list them.
pub const SLO_NAMES: [&str; 4] = ["p50_ms", "p95_ms", "p99_ms", "error_rate"];

impl Slo {
    /// Whether any threshold is set.
    pub fn is_empty(&self) -> bool {
        self.bounds().iter().all(Option::is_none) && self.route.is_empty()
    }

    /// Thresholds of `self`, falling back to `base` for the unset ones;
    /// route thresholds are `self`'s when it lists any, else `base`'s.
    pub fn or(&self, base: &Slo) -> Slo {
        Slo {
            p50_ms: self.p50_ms.or(base.p50_ms),
            p95_ms: self.p95_ms.or(base.p95_ms),
            p99_ms: self.p99_ms.or(base.p99_ms),
            error_rate: self.error_rate.or(base.error_rate),
            route: if self.route.is_empty() {
                base.route.clone()
            } else {
                self.route.clone()
            },
        }
    }
}

/// `bounds` and `set` for a type with the four threshold fields (serde
/// cannot flatten them into both tables and still refuse unknown keys).
macro_rules! thresholds {
    ($t:ty) => {
        impl $t {
            /// The thresholds, in [`SLO_NAMES`] order.
            pub fn bounds(&self) -> [Option<f64>; 4] {
                [self.p50_ms, self.p95_ms, self.p99_ms, self.error_rate]
            }

            /// Sets the threshold named `name` (one of [`SLO_NAMES`]).
            pub fn set(&mut self, name: &str, bound: f64) {
                let fields = [
                    &mut self.p50_ms,
                    &mut self.p95_ms,
                    &mut self.p99_ms,
                    &mut self.error_rate,
                ];
                if let Some((_, field)) = SLO_NAMES.iter().zip(fields).find(|(n, _)| **n == name) {
                    *field = Some(bound);
                }
            }
        }
    };
}

thresholds!(Slo);
thresholds!(RouteSlo);

impl RouteSlo {
    /// No threshold yet, for `pattern`.
    pub fn new(pattern: &str) -> RouteSlo {
        RouteSlo {
            route: pattern.to_string(),
            ..RouteSlo::default()
        }
    }
}

/// Limits that protect the target and the run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Safety {
    /// Most requests in flight at once; further sends wait (and are late).
    pub max_inflight: usize,
    /// Most virtual users alive at once (bounds memory when the target
    /// falls behind); further VUs start late.
    pub max_vus: usize,
    /// A request without a complete response after this long fails as `timeout`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Abort (exit 3) when the error rate over `abort_window` passes this.
    pub abort_error_rate: Option<f64>,
    /// The sliding window of `abort_error_rate`.
    #[serde(with = "humantime_serde")]
    pub abort_window: Duration,
    /// The abort rule needs at least this many requests in the window.
    pub abort_min_requests: u64,
    /// A stage whose transport errors (connect, reset, timeout, tls), or
    /// whose requests not sent (dependent and truncated skips), pass this
    /// share is not a valid measurement, whatever its SLOs say
    /// (`verdict::judge_validity`).
    pub max_invalid: f64,
}

/// Most worlds a stage plays: each is a copy of every session, and one
/// process schedules them all (past this, shard the replay).
pub const MAX_MULTIPLIER: u32 = 100_000;
/// Slowest and fastest replay speeds: a day of traffic replayed at the
/// slowest speed still fits a timer, and at the fastest it is a burst.
pub const MIN_SPEED: f64 = 0.001;
/// See [`MIN_SPEED`].
pub const MAX_SPEED: f64 = 1_000_000.0;
/// Longest stage, request timeout or abort window: a week.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The default of [`Safety::max_invalid`]: 5 %.
pub const DEFAULT_MAX_INVALID: f64 = 0.05;

impl Default for Safety {
    fn default() -> Self {
        Safety {
            max_inflight: 10_000,
            max_vus: 100_000,
            request_timeout: Duration::from_secs(30),
            abort_error_rate: None,
            abort_window: Duration::from_secs(10),
            abort_min_requests: 50,
            max_invalid: DEFAULT_MAX_INVALID,
        }
    }
}

/// One stage of a replay.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Name shown in reports.
    pub name: String,
    /// Copies ("worlds") of the recorded population played at once.
    #[serde(default = "one_u32")]
    pub multiplier: u32,
    /// Recorded offsets and gaps are divided by this.
    #[serde(default = "one_f64")]
    pub speed: f64,
    /// How long the stage runs; without it the stage is one pass.
    #[serde(default, with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// Repeat the capture to fill `duration`.
    #[serde(default, rename = "loop")]
    pub repeat: bool,
    /// Thresholds for this stage (over the global ones).
    #[serde(default)]
    pub slo: Slo,
}

fn one_u32() -> u32 {
    1
}

fn one_f64() -> f64 {
    1.0
}

/// A whole profile.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Format version; must be 1.
    pub version: u32,
    /// Name shown in reports (default: the file name).
    #[serde(default)]
    pub name: String,
    /// Stages, run in order.
    #[serde(rename = "stage")]
    pub stages: Vec<Stage>,
    /// Thresholds for every stage.
    #[serde(default)]
    pub slo: Slo,
    /// Safety limits.
    #[serde(default)]
    pub safety: Safety,
    /// Routes (normalized, `METHOD /path/{id}`) that are long-polls: reported
    /// apart and kept out of SLO percentiles.
    #[serde(default)]
    pub long_poll_routes: Vec<String>,
    /// Explicit dynamic-value rules (docs/replay-profiles.md, "Rules").
    #[serde(default)]
    pub rules: RuleConfig,
    /// Numbers on the backend that the replayed writes should raise
    /// (`[[effect]]`), read before and after each stage.
    #[serde(default, rename = "effect")]
    pub effects: Vec<Effect>,
    /// Response headers whose values split each route's and stage's
    /// answers (`by_header` in reports: a cache's hit ratio).
    #[serde(default)]
    pub group_by_header: Vec<String>,
    /// Find the highest multiplier meeting every SLO instead of running
    /// the listed stages' multipliers (`[search]`, `--find-capacity`).
    #[serde(default)]
    pub search: Option<Search>,
    /// Series of the `--observe` scrapes reported beside the standard
    /// process ones (`[observe]`).
    #[serde(default)]
    pub observe: Observe,
}

/// A number the backend offers (a count, a stats field) that each
/// successful answer of a replayed write should raise by one: the proof
/// that the writes happened.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Effect {
    /// Shown in reports.
    pub name: String,
    /// A GET on the target, as a path (`/api/stats`).
    pub url: String,
    /// Where the number is in its JSON answer (`$.messages`).
    pub json_path: String,
    /// The writes that should each add one, as a route pattern
    /// (`POST /api/conversations/*/messages`).
    pub route: String,
}

impl Effect {
    /// `json_path` as a JSON pointer (checked when the profile was read).
    pub fn pointer(&self) -> String {
        rules::pointer(&self.json_path).unwrap_or_default()
    }
}

/// The test of a route pattern as profiles write them (`rules::RouteMatch`:
/// `*` globs, an optional method, literal ids), read once: whether a route
/// template (`METHOD /path/{id}`) is one it names. A pattern the profile
/// check would refuse names none.
pub fn route_matcher(pattern: &str) -> impl Fn(&str) -> bool + use<> {
    let parsed = rules::RouteMatch::parse(Some(pattern)).ok();
    move |route| parsed.as_ref().is_some_and(|m| m.matches(route))
}

impl Profile {
    /// One stage at `multiplier` and `speed`, one pass; what `replay` plays
    /// without `--profile`.
    pub fn single(multiplier: u32, speed: f64) -> Profile {
        Profile {
            version: VERSION,
            name: format!("{multiplier}x"),
            stages: vec![Stage {
                name: format!("{multiplier}x"),
                multiplier,
                speed,
                duration: None,
                repeat: false,
                slo: Slo::default(),
            }],
            slo: Slo::default(),
            safety: Safety::default(),
            long_poll_routes: Vec::new(),
            rules: RuleConfig::default(),
            effects: Vec::new(),
            group_by_header: Vec::new(),
            search: None,
            observe: Observe::default(),
        }
    }

    /// Reads and validates a profile file.
    ///
    /// # Errors
    /// [`ProfileError`] naming the file, the key and the problem.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut profile = Self::parse(&text, path)?;
        if profile.name.is_empty() {
            profile.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(profile)
    }

    /// Parses and validates profile text; `path` is only used in errors.
    ///
    /// # Errors
    /// [`ProfileError::Invalid`] naming the key and the problem.
    pub fn parse(text: &str, path: &Path) -> Result<Profile, ProfileError> {
        let invalid = |message: String| ProfileError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let profile: Profile =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_string()))?;
        profile.validate().map_err(invalid)?;
        Ok(profile)
    }

    /// Checks values serde cannot: ranges and combinations.
    ///
    /// # Errors
    /// A message naming the key and the problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != VERSION {
            return Err(format!(
                "version = {}: this tapedeck reads version {VERSION}",
                self.version
            ));
        }
        if self.stages.is_empty() {
            return Err("no [[stage]]: a profile needs at least one stage".into());
        }
        check_slo("slo", &self.slo)?;
        for (i, s) in self.stages.iter().enumerate() {
            let at = format!("stage[{i}] ({})", s.name);
            if s.name.trim().is_empty() {
                return Err(format!("stage[{i}].name is empty"));
            }
            if s.multiplier == 0 {
                return Err(format!("{at}.multiplier = 0: use 1 or more"));
            }
            if s.multiplier > MAX_MULTIPLIER {
                return Err(format!(
                    "{at}.multiplier = {}: use at most {MAX_MULTIPLIER} (for more load, run \
                     shards on several machines: --shard)",
                    s.multiplier
                ));
            }
            if !(s.speed.is_finite() && (MIN_SPEED..=MAX_SPEED).contains(&s.speed)) {
                return Err(format!(
                    "{at}.speed = {}: use a number from {MIN_SPEED} to {MAX_SPEED}",
                    s.speed
                ));
            }
            if s.repeat && s.duration.is_none() {
                return Err(format!("{at}.loop = true needs a duration to fill"));
            }
            if s.duration.is_some_and(|d| d.is_zero()) {
                return Err(format!("{at}.duration is zero"));
            }
            if let Some(d) = s.duration.filter(|d| *d > MAX_DURATION) {
                return Err(format!(
                    "{at}.duration = {}: at most {}",
                    humantime::format_duration(d),
                    humantime::format_duration(MAX_DURATION)
                ));
            }
            check_slo(&format!("{at}.slo"), &s.slo)?;
        }
        let safety = &self.safety;
        if safety.max_inflight == 0 {
            return Err("safety.max_inflight = 0: use 1 or more".into());
        }
        if safety.max_vus == 0 {
            return Err("safety.max_vus = 0: use 1 or more".into());
        }
        for (key, d) in [
            ("request_timeout", safety.request_timeout),
            ("abort_window", safety.abort_window),
        ] {
            if d.is_zero() || d > MAX_DURATION {
                return Err(format!(
                    "safety.{key} = {}: use more than 0 and at most {}",
                    humantime::format_duration(d),
                    humantime::format_duration(MAX_DURATION)
                ));
            }
        }
        if !(0.0..=1.0).contains(&safety.max_invalid) {
            return Err(format!(
                "safety.max_invalid = {}: use a fraction from 0 to 1",
                safety.max_invalid
            ));
        }
        if let Some(r) = safety.abort_error_rate
            && !(0.0..=1.0).contains(&r)
        {
            return Err(format!(
                "safety.abort_error_rate = {r}: use a fraction from 0 to 1"
            ));
        }
        self.rules.check()?;
        self.observe.check()?;
        for (i, e) in self.effects.iter().enumerate() {
            let at = format!("effect[{i}] ({})", e.name);
            if e.name.trim().is_empty() {
                return Err(format!("effect[{i}].name is empty"));
            }
            if self.effects[..i].iter().any(|o| o.name == e.name) {
                return Err(format!(
                    "{at}: two effects have this name; names must differ"
                ));
            }
            if !e.url.starts_with('/') {
                return Err(format!(
                    "{at}.url = {:?}: give a path on the target, like \"/api/stats\"",
                    e.url
                ));
            }
            rules::pointer(&e.json_path).map_err(|m| format!("{at}.json_path: {m}"))?;
            rules::RouteMatch::parse(Some(&e.route)).map_err(|m| format!("{at}.{m}"))?;
        }
        if let Some(search) = &self.search {
            search.check()?;
            let has_slo =
                |slo: &Slo| slo.bounds().iter().any(Option::is_some) || !slo.route.is_empty();
            // Its steps are made from the first stage.
            if !has_slo(&self.slo) && !has_slo(&self.stages[0].slo) {
                return Err(
                    "a capacity search needs an SLO to search against: set [slo] \
                            (p95_ms, p99_ms, error_rate or [[slo.route]]) or --slo-p95-ms"
                        .into(),
                );
            }
        }
        for name in &self.group_by_header {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!(
                    "group_by_header: {name:?} is not a header name: give one like \"X-Cache\""
                ));
            }
        }
        Ok(())
    }

    /// The distinct `group_by_header` names, lowercase, in order.
    pub fn grouping_headers(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for name in &self.group_by_header {
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

fn check_slo(at: &str, slo: &Slo) -> Result<(), String> {
    check_bounds(at, slo.bounds())?;
    for (i, r) in slo.route.iter().enumerate() {
        let at = format!("{at}.route[{i}]");
        rules::RouteMatch::parse(Some(&r.route)).map_err(|e| format!("{at}.{e}"))?;
        if r.bounds().iter().all(Option::is_none) {
            return Err(format!(
                "{at} ({}) sets no threshold: give p50_ms, p95_ms, p99_ms or error_rate",
                r.route
            ));
        }
        check_bounds(&at, r.bounds())?;
    }
    Ok(())
}

fn check_bounds(at: &str, bounds: [Option<f64>; 4]) -> Result<(), String> {
    for (key, value) in SLO_NAMES.into_iter().zip(bounds) {
        let Some(v) = value else { continue };
        if key == "error_rate" {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!(
                    "{at}.error_rate = {v}: use a fraction from 0 to 1 (0.01 = 1%)"
                ));
            }
        } else if !(v.is_finite() && v > 0.0) {
            return Err(format!(
                "{at}.{key} = {v}: use a number of milliseconds above 0"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Profile, String> {
        Profile::parse(text, Path::new("p.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn route_slos_apply_to_every_stage_unless_a_stage_lists_its_own() {
        let p = parse(
            r#"
            version = 1
            [[slo.route]]
            route = "GET /api/conversations/*/messages"
            p95_ms = 250
            [[slo.route]]
            route = "POST /api/conversations/{id}/messages"
            p95_ms = 300
            error_rate = 0.01
            [[stage]]
            name = "1x"
            [[stage]]
            name = "5x"
            multiplier = 5
            [[stage.slo.route]]
            route = "/api/*"
            p99_ms = 900
            "#,
        )
        .expect("valid");
        let first = p.stages[0].slo.or(&p.slo);
        assert_eq!(first.route.len(), 2);
        assert_eq!(first.route[1].error_rate, Some(0.01));
        let second = p.stages[1].slo.or(&p.slo);
        assert_eq!(second.route.len(), 1);
        assert_eq!(second.route[0].p99_ms, Some(900.0));
    }

    #[test]
    fn a_route_slo_must_name_a_route_and_set_a_threshold() {
        let e = parse("version = 1\n[[slo.route]]\nroute = \"GET /x\"\n[[stage]]\nname = \"a\"\n")
            .expect_err("no threshold");
        assert!(e.contains("slo.route[0] (GET /x) sets no threshold"), "{e}");
        let e = parse(
            "version = 1\n[[slo.route]]\nroute = \"messages\"\np95_ms = 1\n[[stage]]\nname = \"a\"\n",
        )
        .expect_err("not a route");
        assert!(e.contains("slo.route[0].route = \"messages\""), "{e}");
        let e = parse(
            "version = 1\n[[slo.route]]\nroute = \"/x\"\nerror_rate = 2\n[[stage]]\nname = \"a\"\n",
        )
        .expect_err("rate past 1");
        assert!(e.contains("slo.route[0].error_rate = 2"), "{e}");
    }

    #[test]
    fn route_patterns_match_templates_with_stars_and_without_a_method() {
        let m = |pattern: &str, route: &str| route_matcher(pattern)(route);
        assert!(m(
            "GET /api/conversations/*/messages",
            "GET /api/conversations/{id}/messages"
        ));
        assert!(!m(
            "GET /api/conversations/*/messages",
            "POST /api/conversations/{id}/messages"
        ));
        assert!(!m(
            "GET /api/conversations/*/messages",
            "GET /api/conversations/{id}"
        ));
        assert!(m(
            "GET /api/conversations/{id}",
            "GET /api/conversations/{id}"
        ));
        assert!(!m(
            "GET /api/conversations/{id}",
            "GET /api/conversations/{id}/messages"
        ));
        assert!(m("/api/*", "DELETE /api/messages/{id}"));
        assert!(m("* /api/*/messages", "PUT /api/a/b/messages"));
        assert!(!m("/api/*", "GET /health"));
        assert!(m("GET /*", "GET /"));
        // Written as rules write routes: a literal id, a lower-case method.
        assert!(m(
            "get /api/conversations/17/*",
            "GET /api/conversations/{id}/messages"
        ));
    }

    #[test]
    fn a_capacity_profile_parses_with_defaults() {
        let p = parse(
            r#"
            version = 1
            [slo]
            p95_ms = 250
            error_rate = 0.01
            [safety]
            request_timeout = "5s"
            abort_error_rate = 0.5
            [[stage]]
            name = "1x"
            [[stage]]
            name = "5x"
            multiplier = 5
            speed = 2.0
            duration = "30s"
            loop = true
            slo = { p99_ms = 800 }
            "#,
        )
        .expect("valid");
        assert_eq!(p.stages.len(), 2);
        assert_eq!((p.stages[0].multiplier, p.stages[0].speed), (1, 1.0));
        assert_eq!(p.stages[1].duration, Some(Duration::from_secs(30)));
        assert!(p.stages[1].repeat);
        let slo = p.stages[1].slo.or(&p.slo);
        assert_eq!(
            (slo.p95_ms, slo.p99_ms, slo.error_rate),
            (Some(250.0), Some(800.0), Some(0.01))
        );
        assert_eq!(p.safety.request_timeout, Duration::from_secs(5));
        assert_eq!(p.safety.max_inflight, Safety::default().max_inflight);
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_problem() {
        let e = parse("version = 1\n[[stage]]\nname = \"a\"\nmultiplyer = 5\n").expect_err("typo");
        assert!(e.contains("p.toml") && e.contains("multiplyer"), "{e}");
        let e = parse("version = 1\n[[stage]]\nname = \"a\"\nmultiplier = 0\n").expect_err("zero");
        assert!(e.contains("stage[0] (a).multiplier = 0"), "{e}");
        let e = parse("version = 1\n[[stage]]\nname = \"a\"\nloop = true\n").expect_err("loop");
        assert!(e.contains("loop = true needs a duration"), "{e}");
        let e = parse("version = 2\n[[stage]]\nname = \"a\"\n").expect_err("version");
        assert!(e.contains("version = 2"), "{e}");
        let e = parse("version = 1\n[slo]\nerror_rate = 5\n[[stage]]\nname = \"a\"\n")
            .expect_err("rate");
        assert!(e.contains("slo.error_rate = 5"), "{e}");
        let e = parse("version = 1\n[[stage]]\nname = \"a\"\nduration = \"soon\"\n")
            .expect_err("duration");
        assert!(e.contains("duration"), "{e}");
    }
}
