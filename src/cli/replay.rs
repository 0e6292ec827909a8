//! `tapedeck replay`: its flags, applied over the replay profile and
//! checked into the library's `ReplayConfig` plus what only the command
//! uses (report paths, `--explain`, the `--token-file` tokens). Reads the
//! profile, credentials, token and TLS files named; never the capture.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::client_tls::ClientTlsArgs;
use super::parse::parse_duration;
use tapedeck::capture::RunChoice;
use tapedeck::upstream::Upstream;

/// `tapedeck replay`
#[derive(Debug, Args)]
#[command(mut_args(ClientTlsArgs::help_for("target")))]
pub struct ReplayArgs {
    /// Capture file to replay.
    pub capture: PathBuf,
    /// Base URL to replay against, e.g. http://chat-next:8000.
    #[arg(long)]
    pub target: String,
    /// Replay profile (TOML); without it, one stage at --multiplier.
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Worlds: copies of the recorded population played at once
    /// [default: 1; with --profile, overrides every stage].
    #[arg(long)]
    pub multiplier: Option<u32>,
    /// Divide recorded offsets and gaps by this [default: 1].
    #[arg(long)]
    pub speed: Option<f64>,
    /// Stage length, e.g. 60s (requests planned later are not sent).
    #[arg(long)]
    pub duration: Option<String>,
    /// Repeat the capture to fill --duration.
    #[arg(long = "loop")]
    pub repeat: bool,
    /// Only these sessions, e.g. `1-20,31`.
    #[arg(long)]
    pub sessions: Option<String>,
    /// Plan seed [default: derived from the capture and the profile].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Most requests in flight at once.
    #[arg(long)]
    pub max_inflight: Option<usize>,
    /// Request timeout, e.g. 10s.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Run id to replay, or `all`: every run on one timeline aligned by
    /// wall time (proxy replicas that recorded at once) [default: the latest].
    #[arg(long)]
    pub run: Option<String>,
    /// Report path [default: reports/<UTC timestamp>.json].
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Also write the report as a self-contained HTML page.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Also write the checks as JUnit XML for CI: a test suite per stage,
    /// a test case per SLO, route SLO and effect.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Send only GET, HEAD and OPTIONS requests, and no WebSocket whose
    /// client sent data; what is left out is counted (`read_only_skipped`).
    #[arg(long)]
    pub read_only: bool,
    /// Do not send the X-Tapedeck-Replay header.
    #[arg(long)]
    pub no_replay_header: bool,
    /// Do not send a W3C traceparent (by default each request carries a
    /// fresh trace id; a recorded one is never resent either way).
    #[arg(long)]
    pub no_traceparent: bool,
    /// Send recorded values verbatim: no learned ids or tokens, no fresh
    /// nonces (the target rewrite still applies).
    #[arg(long)]
    pub no_correlation: bool,
    /// Speak HTTP/2 to the target even without ALPN (h2c prior knowledge
    /// for http:// targets).
    #[arg(long)]
    pub http2: bool,
    /// How an https:// target is verified, and the certificate shown to it.
    #[command(flatten)]
    pub target_tls: ClientTlsArgs,
    /// TOML file with clear values for redacted credentials: `[markers]`
    /// (marker = value) and `[users]` (user = password for their logins).
    #[arg(long)]
    pub credentials_file: Option<PathBuf>,
    /// Set a header on every request, e.g. 'X-Env: staging' (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Print, per route, what will be substituted and why; send nothing.
    #[arg(long)]
    pub explain: bool,
    /// File of bearer tokens, one per line: the Nth distinct recorded
    /// credential (first-seen order) is replaced by the Nth token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Play a deterministic share of the VUs: K/N, K from 0 to N-1 (whole
    /// VUs, balanced by planned requests).
    #[arg(long)]
    pub shard: Option<String>,
    /// Start at this UTC time (RFC 3339, e.g. 2026-11-22T23:00:00Z), so
    /// that shards begin together; past it, start at once with a warning.
    #[arg(long, value_parser = parse_start_at)]
    pub start_at: Option<std::time::SystemTime>,
    /// SLO: highest p95 latency in ms (every stage).
    #[arg(long)]
    pub slo_p95_ms: Option<f64>,
    /// SLO: highest p99 latency in ms (every stage).
    #[arg(long)]
    pub slo_p99_ms: Option<f64>,
    /// SLO: highest error rate as a fraction, e.g. 0.01.
    #[arg(long)]
    pub slo_error_rate: Option<f64>,
    /// Find the highest multiplier that meets every SLO: stages at 1, 2,
    /// 4, 8, … then bisection between the last that passed and the first
    /// that failed (the profile's first stage gives speed and duration;
    /// its `[search]` table, the start and resolution).
    #[arg(long)]
    pub find_capacity: bool,
    /// The highest multiplier a capacity search tries (default 64).
    #[arg(long, value_name = "N")]
    pub max_multiplier: Option<u32>,
    /// Split each route's and stage's answers by this response header's
    /// value, e.g. X-Cache for a cache's hit ratio (repeatable; adds to
    /// the profile's `group_by_header`).
    #[arg(long = "group-by-header", value_name = "NAME")]
    pub group_by_header: Vec<String>,
    /// A stage whose transport errors or unsent requests pass this
    /// fraction of its requests is not a valid measurement (default 0.05).
    #[arg(long, value_name = "FRACTION")]
    pub max_invalid: Option<f64>,
    /// Scrape this Prometheus endpoint every second and report its
    /// process CPU and memory (and the profile's [observe] series) per
    /// stage, e.g. http://chat:8000/metrics (repeatable).
    #[arg(long = "observe", value_name = "URL")]
    pub observe: Vec<String>,
    /// Sample this local process's CPU and resident memory from /proc
    /// every second (repeatable).
    #[arg(long = "observe-pid", value_name = "PID")]
    pub observe_pids: Vec<u32>,
    /// Serve /healthz, /livez and Prometheus /metrics on this address
    /// while the replay runs (live requests, errors, latency by stage and
    /// route), e.g. 127.0.0.1:9091.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<std::net::SocketAddr>,
    /// Keep serving --admin this long after the report is written, so a
    /// Prometheus scrape every 15 s still sees the final values (a stop
    /// signal ends it early), e.g. 30s [default: 0].
    #[arg(long, value_name = "DURATION", requires = "admin")]
    pub admin_linger: Option<String>,
}

/// What `replay` runs with.
#[derive(Debug)]
pub struct ReplayPlan {
    pub capture: PathBuf,
    pub report: PathBuf,
    pub html: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub explain: bool,
    pub tokens: Vec<String>,
    pub admin: Option<std::net::SocketAddr>,
    pub admin_linger: std::time::Duration,
    pub config: tapedeck::replay::ReplayConfig,
}

/// `1-20,31` → inclusive ranges.
pub fn parse_session_filter(text: &str) -> anyhow::Result<Vec<(i64, i64)>> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let part = part.trim();
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: i64 = a
                .trim()
                .parse()
                .with_context(|| format!("`{part}` is not a session number or range like 1-20"))?;
            let b: i64 = b
                .trim()
                .parse()
                .with_context(|| format!("`{part}` is not a session number or range like 1-20"))?;
            if b < a {
                bail!("session range `{part}` runs backwards");
            }
            Ok((a, b))
        })
        .collect()
}

impl ReplayArgs {
    /// Loads the profile, applies the flags over it, validates.
    pub fn into_plan(self) -> anyhow::Result<ReplayPlan> {
        use tapedeck::profile::Profile;
        let target = Upstream::parse(&self.target).context("--target")?;
        let mut profile = match &self.profile {
            Some(path) => Profile::load(path)?,
            None => Profile::single(self.multiplier.unwrap_or(1), self.speed.unwrap_or(1.0)),
        };
        let duration = self
            .duration
            .as_deref()
            .map(parse_duration)
            .transpose()
            .context("--duration")?;
        for stage in &mut profile.stages {
            if let Some(m) = self.multiplier {
                stage.multiplier = m;
            }
            if let Some(s) = self.speed {
                stage.speed = s;
            }
            if duration.is_some() {
                stage.duration = duration;
            }
            if self.repeat {
                stage.repeat = true;
            }
        }
        if self.profile.is_none() && self.multiplier.is_some() {
            let m = profile.stages[0].multiplier;
            profile.stages[0].name = format!("{m}x");
            profile.name = format!("{m}x");
        }
        if let Some(n) = self.max_inflight {
            profile.safety.max_inflight = n;
        }
        if let Some(f) = self.max_invalid {
            profile.safety.max_invalid = f;
        }
        if let Some(t) = &self.timeout {
            profile.safety.request_timeout = parse_duration(t).context("--timeout")?;
        }
        profile.slo.p95_ms = self.slo_p95_ms.or(profile.slo.p95_ms);
        profile.slo.p99_ms = self.slo_p99_ms.or(profile.slo.p99_ms);
        profile.slo.error_rate = self.slo_error_rate.or(profile.slo.error_rate);
        profile
            .group_by_header
            .extend(self.group_by_header.iter().cloned());
        if self.find_capacity {
            if self.multiplier.is_some() {
                bail!(
                    "--multiplier with --find-capacity: the search chooses the multipliers; \
                     drop --multiplier (--max-multiplier caps the search)"
                );
            }
            profile.search.get_or_insert_default();
        }
        if let Some(max) = self.max_multiplier {
            let Some(search) = &mut profile.search else {
                bail!(
                    "--max-multiplier caps a capacity search: add --find-capacity (or a \
                     [search] table to the profile)"
                );
            };
            search.max_multiplier = max;
        }
        if profile.search.is_some() && self.shard.is_some() {
            bail!(
                "--shard with a capacity search: each step's pass or fail needs the whole \
                 load's numbers; run the search unsharded"
            );
        }
        profile
            .validate()
            .map_err(|m| anyhow::anyhow!("{m}"))
            .context(match &self.profile {
                Some(p) => format!("profile {} with the command-line overrides", p.display()),
                None => "the command-line replay settings".to_string(),
            })?;
        let run = match self.run.as_deref() {
            None => RunChoice::Latest,
            Some("all") => RunChoice::All,
            Some(id) => RunChoice::Id(
                id.parse::<i64>()
                    .with_context(|| format!("--run {id}: expected a run id or `all`"))?,
            ),
        };
        let shard = match self.shard.as_deref() {
            None => None,
            Some(text) => {
                let (k, n) = text
                    .split_once('/')
                    .with_context(|| format!("--shard {text}: expected K/N, e.g. 0/4"))?;
                let (k, n): (u32, u32) = (
                    k.trim()
                        .parse()
                        .with_context(|| format!("--shard {text}: K is not a number"))?,
                    n.trim()
                        .parse()
                        .with_context(|| format!("--shard {text}: N is not a number"))?,
                );
                if k >= n {
                    bail!("--shard {text}: K counts from 0 and must be below N (0/3, 1/3, 2/3)");
                }
                Some((k, n))
            }
        };
        let sessions = self
            .sessions
            .as_deref()
            .map(parse_session_filter)
            .transpose()
            .context("--sessions")?;
        let tokens: Vec<String> = match &self.token_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading --token-file {}", path.display()))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        };
        if self.token_file.is_some() && tokens.is_empty() {
            bail!("--token-file holds no token (one per line)");
        }
        let credentials = match &self.credentials_file {
            Some(path) => {
                tapedeck::replay::correlate::Credentials::load(path).map_err(anyhow::Error::msg)?
            }
            None => Default::default(),
        };
        let headers = self
            .headers
            .iter()
            .map(|h| {
                let (name, value) = h
                    .split_once(':')
                    .with_context(|| format!("--header `{h}`: expected 'Name: value'"))?;
                let (name, value) = (name.trim(), value.trim());
                http::HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("--header `{h}`: `{name}` is not a header name"))?;
                http::HeaderValue::from_str(value)
                    .with_context(|| format!("--header `{h}`: the value is not valid"))?;
                Ok((name.to_string(), value.to_string()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let observe = self
            .observe
            .iter()
            .map(|url| {
                tapedeck::replay::observe::ScrapeTarget::parse(url)
                    .map_err(|e| anyhow::anyhow!("--observe {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for pid in &self.observe_pids {
            if *pid == 0 {
                bail!("--observe-pid 0: give the process id of a running process");
            }
            if !tapedeck::replay::observe::process::exists(*pid) {
                bail!("--observe-pid {pid}: no such process (is it running on this machine?)");
            }
        }
        let admin_linger = self
            .admin_linger
            .as_deref()
            .map(parse_duration)
            .transpose()
            .context("--admin-linger")?
            .unwrap_or_default();
        if admin_linger > std::time::Duration::from_secs(7 * 24 * 3600) {
            bail!("--admin-linger: at most a week (7d)");
        }
        let report = self.report.unwrap_or_else(|| {
            PathBuf::from(format!("reports/{}.json", tapedeck::capture::utc_stamp()))
        });
        Ok(ReplayPlan {
            config: tapedeck::replay::ReplayConfig {
                target,
                profile,
                capture_path: self.capture.display().to_string(),
                run,
                seed: self.seed,
                read_only: self.read_only,
                replay_header: !self.no_replay_header,
                traceparent: !self.no_traceparent,
                shard,
                sessions,
                correlate: !self.no_correlation,
                credentials: std::sync::Arc::new(credentials),
                tls: self.target_tls.into_client_tls()?,
                http2: self.http2,
                headers,
                start_at: self.start_at,
                interrupt: tapedeck::shutdown::Shutdown::new(),
                observe,
                observe_pids: self.observe_pids,
            },
            capture: self.capture,
            report,
            html: self.html,
            junit: self.junit,
            explain: self.explain,
            tokens,
            admin: self.admin,
            admin_linger,
        })
    }
}

fn parse_start_at(text: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{e}: expected a UTC time in RFC 3339, e.g. 2026-11-22T23:00:00Z"))
}
