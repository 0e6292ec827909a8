//! `tapedeck record`: its flags, merged over the `--config` TOML file and
//! checked into the library's `RecordConfig` plus the addresses and capture
//! path the command opens. Reads the config and TLS files named; binds and
//! opens nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

use super::client_tls::ClientTlsArgs;
use super::parse::{parse_duration, parse_size};
use tapedeck::capture::redact::RedactionConfig;
use tapedeck::proxy::sample::SampleFraction;
use tapedeck::proxy::session::{KeySource, SessionConfig};
use tapedeck::proxy::{PathFilter, RecordConfig};
use tapedeck::upstream::Upstream;

/// `tapedeck record`. Every option can also come from `--config FILE`
/// (TOML, same names with `_` for `-`); the command line wins.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
#[command(mut_args(ClientTlsArgs::help_for("upstream")))]
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
    /// Serve /healthz, /livez and Prometheus /metrics on this address.
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
    /// How an https:// upstream is verified, and the certificate shown to it.
    #[command(flatten)]
    #[serde(skip)]
    pub upstream_tls: ClientTlsArgs,
    // The same four options as `--config` keys, read only from the file.
    // Not `#[serde(flatten)]` of the group: that buffers the table, and a
    // typo would lose its position and the list of known keys in the error.
    #[arg(skip)]
    ca_file: Option<PathBuf>,
    #[arg(skip)]
    #[serde(default)]
    insecure_skip_verify: bool,
    #[arg(skip)]
    client_cert: Option<PathBuf>,
    #[arg(skip)]
    client_key: Option<PathBuf>,
    /// Largest body stored per request or response; bodies are always
    /// forwarded whole [default: 1MiB]. Accepts 512KiB, 4MiB, 1000000.
    #[arg(long)]
    pub max_body: Option<String>,
    /// Pending-record budget of the capture writer [default: 64MiB].
    #[arg(long)]
    pub queue_bytes: Option<String>,
    /// WebSocket frames kept per socket; later ones are counted in the
    /// exchange (`ws_frames_dropped`), not kept, but close frames are
    /// always kept [default: 100000].
    #[arg(long, value_name = "N")]
    pub ws_max_frames: Option<usize>,
    /// WebSocket payload bytes kept per socket (each frame keeps at most
    /// 64KiB of its payload); past it frames are counted, not kept, but
    /// close frames are always kept [default: 64MiB].
    #[arg(long, value_name = "SIZE")]
    pub ws_max_bytes: Option<String>,
    /// Longest wait for the upstream's response head before answering 504 [default: 30s].
    #[arg(long)]
    pub upstream_timeout: Option<String>,
    /// On SIGINT/SIGTERM, longest wait for in-flight requests (long
    /// streams, open sockets) before closing the capture; those still open
    /// are counted as dropped [default: 30s].
    #[arg(long)]
    pub drain_timeout: Option<String>,
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
    /// Share of sessions to record, above 0 and at most 1: a session is
    /// recorded whole or not at all, by a hash of its key; every request
    /// is forwarded [default: 1].
    #[arg(long, value_name = "FRACTION")]
    pub sample: Option<f64>,
    /// Store credentials in clear instead of redaction markers.
    #[arg(long)]
    #[serde(default)]
    pub keep_credentials: bool,
    /// Another header to redact (repeatable).
    #[arg(long = "redact-header")]
    #[serde(default)]
    pub redact_header: Vec<String>,
    /// A header redacted by default to keep in clear (repeatable).
    #[arg(long = "keep-header")]
    #[serde(default)]
    pub keep_header: Vec<String>,
    /// Field and query-parameter names to redact, replacing the default
    /// rules (names with `password` in them, `secret`, `token`, `api_key`,
    /// `id_token`, `client_secret`, and names ending in `_token`, `_secret`
    /// or `_key`).
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
        if let Some(n) = self.ws_max_frames.or(file.ws_max_frames) {
            config.websocket.max_frames = n;
        }
        if let Some(s) = self.ws_max_bytes.or(file.ws_max_bytes) {
            config.websocket.max_bytes = parse_size(&s).context("--ws-max-bytes")?;
        }
        if let Some(s) = self.upstream_timeout.or(file.upstream_timeout) {
            config.upstream_timeout = parse_duration(&s).context("--upstream-timeout")?;
        }
        if let Some(s) = self.drain_timeout.or(file.drain_timeout) {
            config.drain_timeout = parse_duration(&s).context("--drain-timeout")?;
        }
        if let Some(s) = self.max_header_bytes.or(file.max_header_bytes) {
            config.max_header_bytes = parse_size(&s).context("--max-header-bytes")?;
        }
        config.preserve_host = self.preserve_host || file.preserve_host;
        let file_tls = ClientTlsArgs {
            ca_file: file.ca_file,
            insecure_skip_verify: file.insecure_skip_verify,
            client_cert: file.client_cert,
            client_key: file.client_key,
        };
        config.upstream_tls = self.upstream_tls.or(file_tls).into_client_tls()?;
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
        if let Some(f) = self.sample.or(file.sample) {
            session.sample = SampleFraction::new(f)
                .map_err(anyhow::Error::msg)
                .context("--sample")?;
        }
        config.session = session;
        config.redaction = RedactionConfig {
            keep_credentials: self.keep_credentials || file.keep_credentials,
            extra_headers: or_vec(self.redact_header, file.redact_header),
            keep_headers: or_vec(self.keep_header, file.keep_header),
            fields: or_vec(self.redact_field, file.redact_field),
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_config_files_tls_keys_reach_the_upstream_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("record.toml");
        std::fs::write(
            &file,
            "upstream = \"http://127.0.0.1:9\"\ninsecure_skip_verify = true\nclient_cert = \"c.pem\"\n",
        )
        .expect("write");
        let args = RecordArgs {
            config: Some(file),
            ..RecordArgs::default()
        };
        let plan = args.into_plan();
        let err = format!("{:#}", plan.expect_err("a cert without its key"));
        assert!(err.contains("--client-cert and --client-key"), "{err}");

        let file = dir.path().join("insecure.toml");
        std::fs::write(
            &file,
            "upstream = \"http://127.0.0.1:9\"\ninsecure_skip_verify = true\n",
        )
        .expect("write");
        let args = RecordArgs {
            config: Some(file),
            ..RecordArgs::default()
        };
        let plan = args.into_plan().expect("valid");
        assert!(plan.config.upstream_tls.insecure_skip_verify);
    }

    #[test]
    fn a_sample_outside_zero_to_one_is_refused_with_the_range() {
        let args = |sample| RecordArgs {
            upstream: Some("http://127.0.0.1:9".into()),
            sample: Some(sample),
            ..RecordArgs::default()
        };
        let plan = args(0.25).into_plan().expect("valid");
        assert_eq!(plan.config.session.sample.get(), 0.25);
        for bad in [0.0, 1.5, -1.0] {
            let err = format!("{:#}", args(bad).into_plan().expect_err("out of range"));
            assert!(
                err.contains("--sample") && err.contains("above 0 and at most 1"),
                "{err}"
            );
        }
    }

    #[test]
    fn websocket_bounds_come_from_flags_or_the_file_and_default_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("record.toml");
        std::fs::write(
            &file,
            "upstream = \"http://127.0.0.1:9\"\nws_max_frames = 500\nws_max_bytes = \"2MiB\"\n",
        )
        .expect("write");
        let args = RecordArgs {
            config: Some(file.clone()),
            ws_max_bytes: Some("1MiB".into()),
            ..RecordArgs::default()
        };
        let plan = args.into_plan().expect("valid");
        assert_eq!(
            (
                plan.config.websocket.max_frames,
                plan.config.websocket.max_bytes
            ),
            (500, 1024 * 1024)
        );
        let args = RecordArgs {
            upstream: Some("http://127.0.0.1:9".into()),
            ..RecordArgs::default()
        };
        let plan = args.into_plan().expect("valid");
        assert_eq!(
            plan.config.websocket,
            tapedeck::proxy::WsLimits {
                max_frames: 100_000,
                max_bytes: 64 * 1024 * 1024
            }
        );
        let args = RecordArgs {
            upstream: Some("http://127.0.0.1:9".into()),
            ws_max_bytes: Some("lots".into()),
            ..RecordArgs::default()
        };
        let err = format!("{:#}", args.into_plan().expect_err("not a size"));
        assert!(err.contains("--ws-max-bytes"), "{err}");
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
