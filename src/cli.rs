//! Command-line definitions (clap) and their translation into the
//! library's validated configurations. Nothing in the library sees clap.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use tapedeck::capture::RunChoice;
use tapedeck::capture::redact::{DEFAULT_FIELDS, RedactionConfig};
use tapedeck::demo::backend::BackendConfig;
use tapedeck::proxy::session::{KeySource, SessionConfig};
use tapedeck::proxy::{PathFilter, RecordConfig};
use tapedeck::tls::{ClientIdentity, ClientTls};
use tapedeck::upstream::Upstream;

/// Record real chat-backend traffic, replay it at scale, compare the reports.
#[derive(Debug, Parser)]
#[command(name = "tapedeck", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// tapedeck's commands.
// Parsed once per process; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a recording reverse proxy in front of a chat backend.
    Record(RecordArgs),
    /// Inspect capture files.
    #[command(subcommand)]
    Captures(CapturesCommand),
    /// The whole product end to end against the built-in demo chat backend.
    Demo(DemoArgs),
    /// Serve the built-in demo chat backend.
    DemoBackend(DemoBackendArgs),
    /// Replay a capture against a target at scaled load and report.
    Replay(Box<ReplayArgs>),
    /// Work with replay reports.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Compare a candidate report with a base one (exit 1 on regression).
    Compare(CompareArgs),
}

/// `tapedeck compare`
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The base report (e.g. the last build's).
    pub base: PathBuf,
    /// The candidate report (e.g. this build's).
    pub candidate: PathBuf,
    /// Regression thresholds.
    #[arg(long, default_value = "p95=+10%,p99=+15%,errors=+0.5pp")]
    pub threshold: String,
    /// Also write the comparison as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write a self-contained HTML page: both runs overlaid, deltas.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Print Markdown for a pull request instead of terminal tables.
    #[arg(long)]
    pub markdown: bool,
}

/// How https:// upstreams and targets are verified, and the client
/// certificate shown to them; checked now, so a bad `--ca-file` or
/// `--client-cert` stops the command at start.
fn client_tls(
    ca_file: Option<PathBuf>,
    insecure_skip_verify: bool,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
) -> anyhow::Result<ClientTls> {
    let identity = match (client_cert, client_key) {
        (Some(cert), Some(key)) => Some(ClientIdentity { cert, key }),
        (None, None) => None,
        _ => bail!("--client-cert and --client-key go together: pass both, or neither"),
    };
    let tls = ClientTls {
        ca_file,
        insecure_skip_verify,
        identity,
    };
    tls.config().map_err(anyhow::Error::msg)?;
    Ok(tls)
}

/// `tapedeck record`. Every option can also come from `--config FILE`
/// (TOML, same names with `_` for `-`); the command line wins.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RecordArgs {
    /// Backend to forward to, e.g. http://chat:8000 (required here or in --config).
    #[arg(long)]
    pub upstream: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Capture file [default: captures/<UTC timestamp>.db].
    #[arg(long)]
    pub capture: Option<PathBuf>,
    /// TOML file with any of these options.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Serve /healthz and Prometheus /metrics on this address.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Serve HTTPS (ALPN h2 and http/1.1) with this PEM certificate chain.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require clients to present a certificate signed by this PEM CA
    /// (mutual TLS); needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Also trust this PEM CA certificate for an https:// upstream.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Accept any upstream certificate (self-signed staging; warned once).
    #[arg(long)]
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Present this PEM certificate chain to an https:// upstream that asks
    /// for one (mutual TLS).
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Largest body stored per request or response; bodies are always
    /// forwarded whole [default: 1MiB]. Accepts 512KiB, 4MiB, 1000000.
    #[arg(long)]
    pub max_body: Option<String>,
    /// Pending-record budget of the capture writer [default: 64MiB].
    #[arg(long)]
    pub queue_bytes: Option<String>,
    /// Longest wait for the upstream's response head before answering 504 [default: 30s].
    #[arg(long)]
    pub upstream_timeout: Option<String>,
    /// Forward the client's Host header instead of the upstream's.
    #[arg(long)]
    #[serde(default)]
    pub preserve_host: bool,
    /// Session key sources, first match wins
    /// [default: header:x-session-id,bearer,cookie:session,client].
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    pub session_key: Vec<String>,
    /// Idle gap that starts a new session [default: 30m].
    #[arg(long)]
    pub session_idle: Option<String>,
    /// Store credentials in clear instead of redaction markers.
    #[arg(long)]
    #[serde(default)]
    pub keep_credentials: bool,
    /// Another header to redact (repeatable).
    #[arg(long = "redact-header")]
    #[serde(default)]
    pub redact_header: Vec<String>,
    /// JSON/form field names to redact, replacing the default list
    /// (password, passwd, secret, token, access_token, refresh_token, api_key).
    #[arg(long = "redact-field", value_delimiter = ',')]
    #[serde(default)]
    pub redact_field: Vec<String>,
    /// Record only paths matching this glob (repeatable; `*` matches anything).
    #[arg(long)]
    #[serde(default)]
    pub include: Vec<String>,
    /// Never record paths matching this glob (repeatable).
    #[arg(long)]
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Largest request head accepted; larger ones get 431 [default: 32KiB].
    #[arg(long)]
    pub max_header_bytes: Option<String>,
}

/// What `record` runs with, after merging the file and the flags.
#[derive(Debug)]
pub struct RecordPlan {
    pub listen: SocketAddr,
    pub capture: PathBuf,
    pub admin: Option<SocketAddr>,
    pub config: RecordConfig,
}

fn read_config_file(path: &Path) -> anyhow::Result<RecordArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
}

fn or_vec(a: Vec<String>, b: Vec<String>) -> Vec<String> {
    if a.is_empty() { b } else { a }
}

/// A size such as `1MiB`, `512KiB`, `64kb` or `1000000`.
pub fn parse_size(text: &str) -> anyhow::Result<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .with_context(|| format!("`{text}` is not a size; use e.g. 1MiB, 512KiB or 1000000"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        other => bail!("unknown size unit `{other}` in `{text}`; use B, KiB, MiB or GiB"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("size `{text}` is too large"))
}

/// A duration such as `30s`, `500ms`, `30m`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text.trim())
        .with_context(|| format!("`{text}` is not a duration; use e.g. 500ms, 30s, 30m"))
}

impl RecordArgs {
    /// Merges `--config`, checks every value and builds the plan.
    pub fn into_plan(self) -> anyhow::Result<RecordPlan> {
        let file = match &self.config {
            Some(path) => read_config_file(path)?,
            None => RecordArgs::default(),
        };
        let upstream = self.upstream.or(file.upstream).context(
            "no upstream: pass --upstream http://host:port (or `upstream = \"…\"` in --config)",
        )?;
        let mut config = RecordConfig::new(Upstream::parse(&upstream)?);
        if let Some(s) = self.max_body.or(file.max_body) {
            config.max_body = parse_size(&s).context("--max-body")?;
        }
        if let Some(s) = self.queue_bytes.or(file.queue_bytes) {
            config.writer.queue_bytes = parse_size(&s).context("--queue-bytes")?;
        }
        if let Some(s) = self.upstream_timeout.or(file.upstream_timeout) {
            config.upstream_timeout = parse_duration(&s).context("--upstream-timeout")?;
        }
        if let Some(s) = self.max_header_bytes.or(file.max_header_bytes) {
            config.max_header_bytes = parse_size(&s).context("--max-header-bytes")?;
        }
        config.preserve_host = self.preserve_host || file.preserve_host;
        config.upstream_tls = client_tls(
            self.ca_file.or(file.ca_file),
            self.insecure_skip_verify || file.insecure_skip_verify,
            self.client_cert.or(file.client_cert),
            self.client_key.or(file.client_key),
        )?;
        let client_ca = self.tls_client_ca.or(file.tls_client_ca);
        match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => {
                config.tls = Some(
                    tapedeck::tls::server_config(&cert, &key, client_ca.as_deref())
                        .map_err(anyhow::Error::msg)?,
                );
            }
            (None, None) if client_ca.is_some() => {
                bail!(
                    "--tls-client-ca needs --tls-cert and --tls-key: client certificates are a TLS listener's"
                )
            }
            (None, None) => {}
            _ => bail!("--tls-cert and --tls-key go together: pass both, or neither"),
        }
        let sources = or_vec(self.session_key, file.session_key);
        let mut session = SessionConfig::default();
        if !sources.is_empty() {
            session.sources = sources
                .iter()
                .map(|s| s.parse::<KeySource>().map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<_>>()
                .context("--session-key")?;
        }
        if let Some(s) = self.session_idle.or(file.session_idle) {
            session.idle_gap = parse_duration(&s).context("--session-idle")?;
        }
        config.session = session;
        let fields = or_vec(self.redact_field, file.redact_field);
        config.redaction = RedactionConfig {
            keep_credentials: self.keep_credentials || file.keep_credentials,
            extra_headers: or_vec(self.redact_header, file.redact_header),
            fields: if fields.is_empty() {
                DEFAULT_FIELDS.iter().map(|s| s.to_string()).collect()
            } else {
                fields
            },
        };
        config.filter = PathFilter {
            include: or_vec(self.include, file.include),
            exclude: or_vec(self.exclude, file.exclude),
        };
        let capture = self.capture.or(file.capture).unwrap_or_else(|| {
            PathBuf::from(format!("captures/{}.db", tapedeck::capture::utc_stamp()))
        });
        Ok(RecordPlan {
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            capture,
            admin: self.admin.or(file.admin),
            config,
        })
    }
}

/// `tapedeck captures …`
#[derive(Debug, Subcommand)]
pub enum CapturesCommand {
    /// List the recording runs in a capture.
    List {
        /// Capture file, or postgres://USER@HOST/DB.
        path: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one run: counters, routes, sessions.
    Show {
        /// Capture file, or postgres://USER@HOST/DB.
        path: PathBuf,
        /// Run id [default: the latest].
        #[arg(long)]
        run: Option<i64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Most routes and sessions listed in text output.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Copy every run of a capture into another, SQLite or PostgreSQL
    /// either way (a staging PostgreSQL capture into a laptop file).
    Copy {
        /// The capture to read.
        from: PathBuf,
        /// The capture to add the runs to (created when missing).
        to: PathBuf,
    },
}

/// `tapedeck demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the capture (and, later, reports) [default: tapedeck-demo-<UTC timestamp>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Chat users in the scripted population.
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Seed for the script's think times and texts.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Leave the demo backend running afterwards and print its address.
    #[arg(long)]
    pub keep: bool,
}

/// `tapedeck demo-backend`
#[derive(Debug, Args)]
pub struct DemoBackendArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Worker slots: requests served at once.
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Time each request holds a worker slot.
    #[arg(long, default_value = "2ms")]
    pub service_time: String,
    /// Longest wait for a worker before answering 503.
    #[arg(long, default_value = "2s")]
    pub queue_timeout: String,
    /// Requests per second per token before answering 429.
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// Tokens in a streamed bot reply.
    #[arg(long, default_value_t = 12)]
    pub reply_tokens: usize,
    /// Pause between streamed tokens.
    #[arg(long, default_value = "15ms")]
    pub token_interval: String,
    /// Only these accounts log in: the `[users]` table (user = password) of
    /// a credentials file, the one `replay --credentials-file` reads
    /// [default: any user and password log in].
    #[arg(long)]
    pub accounts: Option<PathBuf>,
}

impl DemoBackendArgs {
    /// The backend configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<BackendConfig> {
        if self.workers == 0 {
            bail!("--workers must be at least 1");
        }
        if let Some(r) = self.rate_limit.filter(|r| !(r.is_finite() && *r > 0.0)) {
            bail!("--rate-limit must be a positive number of requests per second, got {r}");
        }
        Ok(BackendConfig {
            workers: self.workers,
            service_time: parse_duration(&self.service_time).context("--service-time")?,
            queue_timeout: parse_duration(&self.queue_timeout).context("--queue-timeout")?,
            rate_limit: self.rate_limit,
            reply_tokens: self.reply_tokens,
            token_interval: parse_duration(&self.token_interval).context("--token-interval")?,
            accounts: match &self.accounts {
                Some(path) => {
                    let users = tapedeck::replay::correlate::Credentials::load(path)
                        .map_err(anyhow::Error::msg)?
                        .users;
                    if users.is_empty() {
                        bail!(
                            "--accounts {}: no account; list them as `\"user\" = \"password\"` under `[users]`",
                            path.display()
                        );
                    }
                    Some(Arc::new(users))
                }
                None => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_size("1MiB").expect("valid"), 1024 * 1024);
        assert_eq!(parse_size("512KiB").expect("valid"), 512 * 1024);
        assert_eq!(parse_size("1000").expect("valid"), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("record.toml");
        std::fs::write(
            &file,
            "upstream = \"http://127.0.0.1:9\"\nmax_body = \"2MiB\"\nexclude = [\"/health*\"]\n",
        )
        .expect("write");
        let args = RecordArgs {
            config: Some(file),
            max_body: Some("4KiB".into()),
            ..RecordArgs::default()
        };
        let plan = args.into_plan().expect("valid");
        assert_eq!(plan.config.max_body, 4096);
        assert_eq!(plan.config.upstream.as_str(), "http://127.0.0.1:9");
        assert!(!plan.config.filter.records("/healthz"));
        assert!(plan.config.filter.records("/api/x"));
    }

    #[test]
    fn unknown_config_keys_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("record.toml");
        std::fs::write(&file, "upstrem = \"http://x\"\n").expect("write");
        let args = RecordArgs {
            config: Some(file),
            ..RecordArgs::default()
        };
        let err = format!("{:#}", args.into_plan().expect_err("typo"));
        assert!(err.contains("upstrem"), "{err}");
    }
}

/// `tapedeck replay`
#[derive(Debug, Args)]
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
    /// Send only GET, HEAD and OPTIONS requests.
    #[arg(long)]
    pub read_only: bool,
    /// Do not send the X-Tapedeck-Replay header.
    #[arg(long)]
    pub no_replay_header: bool,
    /// Send recorded values verbatim: no learned ids or tokens, no fresh
    /// nonces (the target rewrite still applies).
    #[arg(long)]
    pub no_correlation: bool,
    /// Speak HTTP/2 to the target even without ALPN (h2c prior knowledge
    /// for http:// targets).
    #[arg(long)]
    pub http2: bool,
    /// Also trust this PEM CA certificate for an https:// target.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Accept any target certificate (self-signed staging; warned once).
    #[arg(long)]
    pub insecure_skip_verify: bool,
    /// Present this PEM certificate chain to an https:// target that asks
    /// for one (mutual TLS).
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
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
}

/// What `replay` runs with.
#[derive(Debug)]
pub struct ReplayPlan {
    pub capture: PathBuf,
    pub report: PathBuf,
    pub html: Option<PathBuf>,
    pub explain: bool,
    pub tokens: Vec<String>,
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
        if let Some(t) = &self.timeout {
            profile.safety.request_timeout = parse_duration(t).context("--timeout")?;
        }
        profile.slo.p95_ms = self.slo_p95_ms.or(profile.slo.p95_ms);
        profile.slo.p99_ms = self.slo_p99_ms.or(profile.slo.p99_ms);
        profile.slo.error_rate = self.slo_error_rate.or(profile.slo.error_rate);
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
                shard,
                sessions,
                correlate: !self.no_correlation,
                credentials: std::sync::Arc::new(credentials),
                tls: client_tls(
                    self.ca_file,
                    self.insecure_skip_verify,
                    self.client_cert,
                    self.client_key,
                )?,
                http2: self.http2,
                headers,
                start_at: self.start_at,
            },
            capture: self.capture,
            report,
            html: self.html,
            explain: self.explain,
            tokens,
        })
    }
}

/// `tapedeck report …`
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Combine shard reports of one replay exactly.
    Merge {
        /// Shard reports.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where to write the merged report.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print a saved report's tables.
    Render {
        /// Report file.
        file: PathBuf,
        /// Markdown for a pull request instead of terminal tables.
        #[arg(long)]
        markdown: bool,
        /// Write a self-contained HTML page here.
        #[arg(long)]
        html: Option<PathBuf>,
    },
}

fn parse_start_at(text: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{e}: expected a UTC time in RFC 3339, e.g. 2026-11-22T23:00:00Z"))
}
