//! Replay: re-issue a run's captured sessions against a target at scaled
//! load, stage by stage, and produce the report.
//!
//! `plan` (pure: sessions × profile → schedule, shard split), `engine`
//! (absolute deadlines, in-flight and VU caps, happens-before; it schedules
//! and measures), `correlate` (every decision about dynamic values, behind
//! `prepare` and `learn`), `client` and `websocket` (one recorded request
//! or socket in, one measured answer out), `explain` (`--explain`: what
//! correlation would do, from the capture alone), `tokens`
//! (`--token-file`), `trace` (the `traceparent` each request carries), `observe` (`--observe`, `--observe-pid`: the
//! backend's resources, read beside the stages). Reads the capture through `capture::Store`; emits
//! `report::outcome` events to `report::collect`, which keeps the
//! statistics; nothing in `report` depends on replay.

pub mod client;
pub mod correlate;
mod effects;
pub mod engine;
pub mod explain;
pub mod observe;
pub mod plan;
mod search;
pub mod tokens;
pub mod trace;
mod websocket;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use crate::capture::{CaptureError, RunChoice, Store, StoredExchange, now_epoch_us};
use crate::profile::{Profile, Stage};
use crate::report::accumulate::StageData;
use crate::report::collect::{self, AbortRule, Collector};
use crate::report::model::{self, Capacity, CaptureRef, EffectResult, ProfileRef, Report, Shard};
use crate::report::outcome::LiveStats;
use crate::report::verdict;
use crate::shutdown::Shutdown;
use crate::upstream::Upstream;
use client::ReplayClient;
use correlate::{Correlation, Credentials, Rules};
use engine::{SessionSource, StageRun};
use search::CapacitySearch;

/// Errors that stop a replay from starting.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture cannot be read.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The run has nothing to replay.
    #[error("run {0} of the capture holds no exchanges to replay")]
    EmptyRun(String),
    /// The target does not accept connections.
    #[error("target {target} is unreachable: {reason}; start it or fix --target")]
    Unreachable {
        /// The target URL.
        target: String,
        /// The connect error.
        reason: String,
    },
    /// The TLS settings for the target cannot be used.
    #[error("target TLS: {0}")]
    Tls(String),
    /// The profile's rules do not compile.
    #[error("profile rules: {0}")]
    Rules(String),
}

/// Everything a replay runs with.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Where requests go.
    pub target: Upstream,
    /// Stages, SLOs, safety.
    pub profile: Profile,
    /// Capture file as given (for the report).
    pub capture_path: String,
    /// Runs to play.
    pub run: RunChoice,
    /// Plan seed (`None`: derived from the capture and the profile).
    pub seed: Option<u64>,
    /// Send only GET, HEAD and OPTIONS.
    pub read_only: bool,
    /// Send `X-Tapedeck-Replay`.
    pub replay_header: bool,
    /// Send a fresh W3C `traceparent` with every request.
    pub traceparent: bool,
    /// This shard's share (`index` from 0, `count`).
    pub shard: Option<(u32, u32)>,
    /// Only sessions in these inclusive ranges of session numbers.
    pub sessions: Option<Vec<(i64, i64)>>,
    /// Learn live values and rewrite requests; off sends recorded values
    /// verbatim (the target rewrite aside).
    pub correlate: bool,
    /// How the target's certificate is checked (https targets).
    pub tls: crate::tls::ClientTls,
    /// Speak HTTP/2 to the target even without ALPN (h2c prior knowledge).
    pub http2: bool,
    /// Clear values for redacted credentials (`--credentials-file`).
    pub credentials: Arc<Credentials>,
    /// Headers set on every replayed request (`--header`).
    pub headers: Vec<(String, String)>,
    /// Start the first stage at this wall-clock time (`--start-at`), so
    /// that shards started apart begin together.
    pub start_at: Option<std::time::SystemTime>,
    /// Fired by a stop signal: the replay stops scheduling, drops what is
    /// in flight and reports what it measured until then, marked
    /// interrupted (verdict `aborted`).
    pub interrupt: Shutdown,
    /// Prometheus endpoints scraped every second (`--observe`).
    pub observe: Vec<observe::ScrapeTarget>,
    /// Local processes sampled every second (`--observe-pid`).
    pub observe_pids: Vec<u32>,
}

impl ReplayConfig {
    /// Defaults as docs/replay.md gives them: the latest run, the derived seed,
    /// correlation on, `X-Tapedeck-Replay` and `traceparent` sent, every session, no TLS
    /// extras, no credentials or header overrides.
    pub fn new(target: Upstream, profile: Profile, capture_path: impl Into<String>) -> Self {
        ReplayConfig {
            target,
            profile,
            capture_path: capture_path.into(),
            run: RunChoice::Latest,
            seed: None,
            read_only: false,
            replay_header: true,
            traceparent: true,
            shard: None,
            sessions: None,
            correlate: true,
            tls: crate::tls::ClientTls::default(),
            http2: false,
            credentials: Arc::default(),
            start_at: None,
            headers: Vec::new(),
            interrupt: Shutdown::new(),
            observe: Vec::new(),
            observe_pids: Vec::new(),
        }
    }

    /// Whether `--sessions` keeps the session numbered `session_no` (every
    /// session without it).
    pub fn plays_session(&self, session_no: i64) -> bool {
        self.sessions
            .as_ref()
            .is_none_or(|ranges| ranges.iter().any(|(a, b)| (*a..=*b).contains(&session_no)))
    }
}

/// What a finished replay tells its caller.
#[derive(Debug)]
pub struct ReplayRun {
    /// The report.
    pub report: Report,
    /// Whether a safety limit or a stop signal stopped it.
    pub aborted: bool,
}

struct StoreSource {
    store: Store,
    /// Reads queue here, not in the connection pool (whose waits time out
    /// and warn when thousands of VUs start at one instant).
    reads: Semaphore,
}

impl SessionSource for StoreSource {
    async fn load(
        &self,
        run_id: i64,
        session_no: i64,
    ) -> Result<Vec<StoredExchange>, CaptureError> {
        let _turn = self.reads.acquire().await;
        self.store.session_exchanges(run_id, session_no).await
    }
}

/// A stable fingerprint of the profile's effective settings.
pub fn profile_fingerprint(profile: &Profile) -> String {
    let text = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        profile.stages, profile.slo, profile.safety, profile.long_poll_routes, profile.rules
    );
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

/// See [`CaptureRef::fingerprint`].
fn capture_fingerprint(
    runs: &[crate::capture::RunSummary],
    exchanges: u64,
    sessions: usize,
) -> String {
    let mut basis = format!("{exchanges}|{sessions}");
    for r in runs {
        basis.push_str(&format!("|{}@{}", r.id, r.started_at_us));
    }
    blake3::hash(basis.as_bytes()).to_hex()[..16].to_string()
}

/// Waits until `at`; past it, starts at once and says how late.
async fn wait_for_start(at: std::time::SystemTime) {
    let stamp = humantime::format_rfc3339_seconds(at);
    match at.duration_since(std::time::SystemTime::now()) {
        Ok(wait) => {
            tracing::info!(start_at = %stamp, wait = ?wait, "waiting for --start-at");
            tokio::time::sleep(wait).await;
        }
        Err(late) => tracing::warn!(
            start_at = %stamp,
            late = %humantime::format_duration(Duration::from_millis(late.duration().as_millis() as u64)),
            "--start-at has passed; starting at once, behind the other shards"
        ),
    }
}

/// Replays the capture in `store` as `config` says, reporting live counters
/// into `live`.
///
/// # Errors
/// When the capture cannot be read, the run is empty, or the target does
/// not accept a TCP connection at start.
pub async fn run(
    store: &Store,
    config: ReplayConfig,
    live: Arc<LiveStats>,
) -> Result<ReplayRun, ReplayError> {
    let runs = store.select_runs(config.run).await?;
    let run_ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let run_label = match config.run {
        RunChoice::All => "all".to_string(),
        _ => runs[0].id.to_string(),
    };
    let (mut sessions, span_us) = store.session_spans(&run_ids).await?;
    sessions.retain(|s| config.plays_session(s.session_no));
    if sessions.is_empty() {
        return Err(ReplayError::EmptyRun(run_label));
    }
    let rules = Rules::compile(&config.profile.rules).map_err(ReplayError::Rules)?;
    let correlation = Arc::new(Correlation::new(
        config.correlate,
        config.credentials.clone(),
        rules,
    ));
    check_reachable(&config.target).await?;
    let group_by: Arc<[Arc<str>]> = config
        .profile
        .grouping_headers()
        .into_iter()
        .map(Arc::from)
        .collect();

    let fingerprint = profile_fingerprint(&config.profile);
    let exchanges: u64 = sessions.iter().map(|s| s.requests).sum();
    let seed = config.seed.unwrap_or_else(|| {
        let basis = format!(
            "{}|{}|{}|{}",
            run_label, runs[0].started_at_us, exchanges, fingerprint
        );
        let h = blake3::hash(basis.as_bytes());
        u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
    });
    let report_id = format!("{}-{:016x}", crate::capture::utc_stamp(), seed);
    let client = Arc::new(
        ReplayClient::new(
            config.target.clone(),
            config.profile.safety.request_timeout,
            config.replay_header.then_some(report_id.as_str()),
            &config.tls,
            config.http2,
        )
        .map_err(ReplayError::Tls)?
        .with_headers(&config.headers)
        .tracing(config.traceparent)
        .keeping(correlation.needs().with_headers(&group_by)),
    );
    let source = Arc::new(StoreSource {
        store: store.clone(),
        reads: Semaphore::new(4),
    });
    let safety = &config.profile.safety;
    let inflight = Arc::new(Semaphore::new(
        safety.max_inflight.min(Semaphore::MAX_PERMITS),
    ));
    let abort_rule = safety.abort_error_rate.map(|error_rate| AbortRule {
        error_rate,
        window: safety.abort_window,
        min_requests: safety.abort_min_requests,
    });
    let long_poll: HashSet<String> = config.profile.long_poll_routes.iter().cloned().collect();

    if let Some(at) = config.start_at {
        tokio::select! {
            () = wait_for_start(at) => {}
            () = config.interrupt.wait() => {}
        }
    }
    // Started after any --start-at wait: nothing is read before the run.
    let observer = observe::Observer::start(
        &config.observe,
        &config.observe_pids,
        observe::Scraping {
            replay_id: config.replay_header.then_some(report_id.as_str()),
            tls: &config.tls,
            target: &config.target,
            headers: &config.headers,
            series: &config.profile.observe.series,
        },
    )
    .map_err(ReplayError::Tls)?;
    let started_at_us = now_epoch_us();
    let mut stages = Vec::new();
    let mut aborted = false;
    let mut search = config.profile.search.map(CapacitySearch::new);
    let max_invalid = config.profile.safety.max_invalid;
    for index in 0.. {
        // A search makes its stages from the profile's first one.
        let (stage, phase) = match &search {
            Some(search) => match search.next() {
                Some((multiplier, phase)) => (
                    Stage {
                        name: format!("{multiplier}x"),
                        multiplier,
                        ..config.profile.stages[0].clone()
                    },
                    Some(phase),
                ),
                None => break,
            },
            None => match config.profile.stages.get(index) {
                Some(stage) => (stage.clone(), None),
                None => break,
            },
        };
        if config.interrupt.is_triggered() {
            break;
        }
        live.stage
            .store(index as u64, std::sync::atomic::Ordering::Relaxed);
        // A stop signal stops the stage as a safety abort does, and also
        // drops what is in flight (`StageRun::interrupt`).
        let abort = Shutdown::new();
        let stop_on_interrupt = {
            let (interrupt, abort) = (config.interrupt.clone(), abort.clone());
            tokio::spawn(async move {
                interrupt.wait().await;
                abort.trigger();
            })
        };
        let data = StageData {
            name: stage.name.clone(),
            multiplier: stage.multiplier,
            speed: stage.speed,
            slo: stage.slo.or(&config.profile.slo),
            ..StageData::default()
        };
        let collector = Collector::new(
            data,
            long_poll.clone(),
            abort_rule,
            abort.clone(),
            live.clone(),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let collecting = tokio::spawn(collect::run(collector, rx));
        let stage_run = StageRun {
            multiplier: stage.multiplier,
            speed: stage.speed,
            duration: stage.duration,
            repeat: stage.repeat,
            seed: seed ^ u64::from(stage.multiplier).rotate_left(32),
            read_only: config.read_only,
            shard: config.shard,
            max_vus: config.profile.safety.max_vus,
            correlation: correlation.clone(),
            group_by: group_by.clone(),
            interrupt: config.interrupt.clone(),
        };
        let before = effects::read_all(&*client, &config.profile.effects).await;
        tracing::info!(stage = %stage.name, multiplier = stage.multiplier, speed = stage.speed, "stage starting");
        let stage_started_us = now_epoch_us();
        // The start reading is taken as the stage starts, not before it,
        // so that a scrape does not delay the first request.
        tokio::join!(
            engine::run_stage(
                &stage_run,
                &sessions,
                span_us,
                client.clone(),
                source.clone(),
                inflight.clone(),
                tx,
                live.clone(),
                abort.clone(),
            ),
            async {
                if let Some(o) = &observer {
                    o.read_now().await;
                }
            }
        );
        let stage_finished_us = now_epoch_us();
        stop_on_interrupt.abort();
        let observed = match &observer {
            Some(o) => {
                o.read_now().await;
                Some(o.take(stage_started_us, now_epoch_us()).await)
            }
            None => None,
        };
        let collector = match collecting.await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "statistics task failed");
                break;
            }
        };
        let after = effects::read_all(&*client, &config.profile.effects).await;
        let stage_aborted = collector.aborted();
        let mut data = collector.finish(stage_started_us, stage_finished_us);
        if let Some(o) = observed {
            data.observe(&o.readings, &o.failures);
        }
        data.effects = config
            .profile
            .effects
            .iter()
            .zip(before.into_iter().zip(after))
            .map(|(e, (before, after))| EffectResult {
                name: e.name.clone(),
                route: e.route.clone(),
                error: before.as_ref().err().or(after.as_ref().err()).cloned(),
                before: before.ok(),
                after: after.ok(),
                ..EffectResult::default()
            })
            .collect();
        let mut report = data.report();
        match (&mut search, phase) {
            // In a search, a stage stopped by the safety limit failed: the
            // search goes on below it. A stop signal ends it.
            (Some(search), Some(phase)) if !config.interrupt.is_triggered() => {
                verdict::judge_validity(std::slice::from_mut(&mut report), max_invalid);
                let pass = !stage_aborted && verdict::stage_passes(&report);
                tracing::info!(stage = %stage.name, pass, "search step done");
                search.record(stage.multiplier, phase, pass);
                stages.push(report);
            }
            _ => {
                stages.push(report);
                aborted |= stage_aborted;
                if aborted {
                    break;
                }
            }
        }
    }
    let interrupted = config.interrupt.is_triggered();
    aborted |= interrupted;
    let finished_at_us = now_epoch_us();
    verdict::judge_validity(&mut stages, max_invalid);
    let search = search.map(|s| s.report(interrupted));
    let abort_bound = config.profile.safety.abort_error_rate;
    let capacity = match &search {
        // A search runs its stages out of multiplier order; the verdict
        // reads them in it, and its safe multiplier is the search's.
        Some(search) => {
            let mut by_load = stages.clone();
            by_load.sort_by_key(|s| s.multiplier);
            let mut c = verdict::capacity(&by_load, abort_bound);
            c.safe_multiplier = search.safe_multiplier;
            c.notes.insert(0, verdict::search_note(search, &stages));
            c
        }
        None => verdict::capacity(&stages, abort_bound),
    };
    let report = Report {
        format: model::FORMAT.to_string(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        capture: CaptureRef {
            path: config.capture_path.clone(),
            run: run_label,
            exchanges,
            sessions: sessions.len() as u64,
            fingerprint: capture_fingerprint(&runs, exchanges, sessions.len()),
        },
        target: config.target.as_str().to_string(),
        profile: ProfileRef {
            name: config.profile.name.clone(),
            fingerprint,
        },
        shard: config.shard.map(|(index, count)| Shard { index, count }),
        seed,
        started_at: crate::time::timestamp(started_at_us),
        finished_at: crate::time::timestamp(finished_at_us),
        verdict: match &search {
            Some(search) => verdict::search_verdict(search, aborted),
            None => verdict::overall(&stages, aborted),
        },
        capacity: Capacity { search, ..capacity },
        stages,
        interrupted,
        max_invalid,
    };
    Ok(ReplayRun { report, aborted })
}

/// A TCP connect to the target: no HTTP request, so the target sees only
/// planned requests.
async fn check_reachable(target: &Upstream) -> Result<(), ReplayError> {
    target
        .probe(None, Duration::from_secs(5))
        .await
        .map_err(|reason| ReplayError::Unreachable {
            target: target.as_str().to_string(),
            reason,
        })
}
