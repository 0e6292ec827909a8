//! `tapedeck demo` and `tapedeck demo-backend`: their flags, and the demo
//! backend's configuration checked from them. The commands in
//! `commands::demo` and `commands::demo_backend` start what these describe.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;

use super::parse::parse_duration;
use tapedeck::demo::backend::BackendConfig;

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
