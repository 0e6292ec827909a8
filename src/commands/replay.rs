//! `tapedeck replay`: opens the capture, gives the `--token-file` tokens to
//! the recorded credentials, then either prints the `--explain` table or
//! runs the replay with a live progress line (and, with `--admin`, live
//! metrics on an endpoint of their own), saves the report (and page) and
//! prints its tables. Assigning tokens, explaining and replaying are the
//! library's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use super::Exit;
use super::output::{check_writable, progress_line, write_page};
use crate::cli::replay::ReplayArgs;
use tapedeck::capture::Store;
use tapedeck::replay::{ReplayConfig, ReplayRun, explain, tokens};
use tapedeck::report::Verdict;
use tapedeck::report::live::LiveMetrics;
use tapedeck::report::outcome::LiveStats;
use tapedeck::report::render::{html, junit, terminal};
use tapedeck::shutdown::Shutdown;

/// Runs `tapedeck replay`.
pub async fn run(args: ReplayArgs) -> anyhow::Result<Exit> {
    let plan = args.into_plan()?;
    if !plan.explain {
        check_writable(&plan.report, "--report")?;
        if let Some(path) = &plan.html {
            check_writable(path, "--html")?;
        }
        if let Some(path) = &plan.junit {
            check_writable(path, "--junit")?;
        }
    }
    let metrics = plan
        .admin
        .filter(|_| !plan.explain)
        .map(|_| Arc::new(LiveMetrics::default()));
    let live = Arc::new(LiveStats {
        metrics: metrics.clone(),
        ..LiveStats::default()
    });
    let admin = match (plan.admin, metrics) {
        (Some(addr), Some(metrics)) => Some(Admin::start(addr, live.clone(), metrics).await?),
        _ => None,
    };
    let interrupt = plan.config.interrupt.clone();
    let store = Store::open_read_only(&plan.capture).await?;
    let played = play(&store, plan.config, &plan.tokens, plan.explain, live).await;
    // Closed whatever happened: the last connection removes SQLite's WAL
    // files from beside the capture.
    store.close().await;
    let Some(run) = played? else {
        return Ok(Exit::Success);
    };
    tapedeck::report::save(&run.report, &plan.report)?;
    if let Some(path) = &plan.html {
        write_page(path, html::report_page(&run.report))?;
    }
    if let Some(path) = &plan.junit {
        write_page(path, Ok(junit::report_junit(&run.report)))?;
    }
    if let Some(admin) = &admin {
        admin.metrics.finish();
    }
    print!("{}", terminal::stages_table(&run.report));
    println!();
    for s in &run.report.stages {
        print!("{}", terminal::stage_details(s, 10));
    }
    println!();
    print!("{}", terminal::capacity(&run.report));
    print!("{}", terminal::warnings_text(&run.report));
    let interrupted = match run.report.interrupted {
        true => " (interrupted by a stop signal: partial)",
        false => "",
    };
    println!(
        "verdict: {}{interrupted} — report {}",
        run.report.verdict,
        plan.report.display()
    );
    if let Some(admin) = admin {
        admin.linger(plan.admin_linger, &interrupt).await;
    }
    Ok(match run.report.verdict {
        Verdict::Pass => Exit::Success,
        Verdict::Fail => Exit::Failed,
        Verdict::Aborted => Exit::Aborted,
    })
}

/// Gives the tokens to the recorded credentials, then prints the
/// explanation (`None`) or runs the replay with a live progress line.
async fn play(
    store: &Store,
    mut config: ReplayConfig,
    token_list: &[String],
    explain_only: bool,
    live: Arc<LiveStats>,
) -> anyhow::Result<Option<ReplayRun>> {
    if !token_list.is_empty() {
        let credentials =
            tokens::assign_tokens(store, config.run, token_list, &config.credentials).await?;
        config.credentials = Arc::new(credentials);
    }
    if explain_only {
        let explanation = explain::explain(store, &config).await?;
        print!("{}", explanation.render());
        return Ok(None);
    }
    let stage_names: Vec<String> = config
        .profile
        .stages
        .iter()
        .map(|s| s.name.clone())
        .collect();
    config.interrupt.on_signals_or_exit(
        "stop signal: stopping (a replay still running writes a partial report; \
         a second signal exits at once, without one)",
        i32::from(crate::EXIT_ABORTED),
    );
    let progress = progress_line(live.clone(), stage_names);
    let outcome = tapedeck::replay::run(store, config, live).await;
    progress.abort();
    Ok(Some(outcome?))
}

/// `replay --admin`: bound before the capture is opened (a taken address
/// is exit 2 before anything is sent) and served from then until the
/// linger after the report ends.
struct Admin {
    metrics: Arc<LiveMetrics>,
    stop: Shutdown,
}

/// What a replay's admin endpoint answers: the live series, with the
/// engine's in-flight and VU counts read at each scrape.
struct Endpoint {
    live: Arc<LiveStats>,
    metrics: Arc<LiveMetrics>,
}

impl tapedeck::admin::Endpoints for Endpoint {
    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    fn metrics(&self) -> String {
        self.metrics.encode(&self.live.inflight, &self.live.vus)
    }
}

impl Admin {
    async fn start(
        addr: SocketAddr,
        live: Arc<LiveStats>,
        metrics: Arc<LiveMetrics>,
    ) -> anyhow::Result<Admin> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for --admin"))?;
        let bound = listener.local_addr().context("admin listener address")?;
        // On stderr, beside the progress line: stdout stays the report.
        eprintln!("tapedeck: admin on http://{bound} (/healthz, /livez, /metrics)");
        let stop = Shutdown::new();
        let endpoint = Arc::new(Endpoint {
            live,
            metrics: metrics.clone(),
        });
        tokio::spawn(tapedeck::admin::serve(listener, endpoint, stop.clone()));
        Ok(Admin { metrics, stop })
    }

    /// Keeps serving for `linger` after the report is written, so that a
    /// scrape every 15 s still takes the final values; a stop signal (or
    /// one that already stopped the replay) ends it at once.
    async fn linger(self, linger: Duration, interrupt: &Shutdown) {
        if !linger.is_zero() && !interrupt.is_triggered() {
            eprintln!(
                "tapedeck: replay done; serving the final metrics for {} (Ctrl-C ends it)",
                humantime::format_duration(linger)
            );
            tokio::select! {
                () = tokio::time::sleep(linger) => {}
                () = interrupt.wait() => {}
            }
        }
        self.stop.trigger();
    }
}
