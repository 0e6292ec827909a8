//! The executor: starts virtual users at their planned instants and sends
//! their requests at absolute deadlines (`sleep_until(origin + due)`, never
//! sleeps between requests), keeping the recorded happens-before order
//! within each VU and the in-flight cap across all of them.
//!
//! HTTP is behind [`Dispatch`] and the capture behind [`SessionSource`],
//! so exact timing is tested under tokio's paused clock with fakes.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until};

use super::outcome::{Event, LiveStats, Outcome};
use super::plan::{self, SessionSpan, VuSchedule};
use crate::capture::{CaptureError, StoredExchange, now_epoch_us};
use crate::route;
use crate::shutdown::Shutdown;

/// How long before its planned start a VU is set up (its session read).
const LOOKAHEAD: Duration = Duration::from_millis(100);

/// What a dispatcher reports about one request.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Live status, if a response came.
    pub status: Option<u16>,
    /// Time to the response head.
    pub ttfb: Option<Duration>,
    /// Transport failure kind.
    pub failure: Option<&'static str>,
    /// When the response ended or the request failed.
    pub finished: Instant,
}

impl Sent {
    /// A transport failure observed now.
    pub fn failed(kind: &'static str) -> Sent {
        Sent {
            status: None,
            ttfb: None,
            failure: Some(kind),
            finished: Instant::now(),
        }
    }
}

/// Sends one recorded request somewhere and measures it.
pub trait Dispatch: Send + Sync + 'static {
    /// Sends `ex` and waits for the whole response.
    fn send(&self, ex: Arc<StoredExchange>) -> impl Future<Output = Sent> + Send;
}

/// Loads the recorded exchanges of a session.
pub trait SessionSource: Send + Sync + 'static {
    /// The session's exchanges in send order.
    fn load(
        &self,
        session_no: i64,
    ) -> impl Future<Output = Result<Vec<StoredExchange>, CaptureError>> + Send;
}

/// One stage to run.
#[derive(Debug, Clone)]
pub struct StageRun {
    /// Worlds.
    pub multiplier: u32,
    /// Speed.
    pub speed: f64,
    /// Stage length; requests planned later are not sent.
    pub duration: Option<Duration>,
    /// Loop the capture to fill the duration.
    pub repeat: bool,
    /// Plan seed.
    pub seed: u64,
    /// Send only safe methods (GET, HEAD, OPTIONS).
    pub read_only: bool,
    /// This shard's share: VU `k` (in plan order) belongs to shard
    /// `k % count == index - 1`.
    pub shard: Option<(u32, u32)>,
}

/// Shared by every VU of a stage.
struct Ctx<D, S> {
    dispatch: Arc<D>,
    source: Arc<S>,
    inflight: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
    live: Arc<LiveStats>,
    abort: Shutdown,
    deadline: Option<Instant>,
    speed: f64,
    read_only: bool,
}

/// Runs one stage to its end (all planned requests done, the duration
/// reached, or `abort` fired). Returns the instant the stage started.
#[allow(clippy::too_many_arguments)]
pub async fn run_stage<D: Dispatch, S: SessionSource>(
    stage: &StageRun,
    sessions: &[SessionSpan],
    span_us: i64,
    dispatch: Arc<D>,
    source: Arc<S>,
    inflight: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
    live: Arc<LiveStats>,
    abort: Shutdown,
) -> Instant {
    let origin = Instant::now();
    let ctx = Arc::new(Ctx {
        dispatch,
        source,
        inflight,
        events,
        live,
        abort: abort.clone(),
        deadline: stage.duration.map(|d| origin + d),
        speed: stage.speed,
        read_only: stage.read_only,
    });
    let schedule = VuSchedule::new(
        sessions,
        span_us,
        stage.multiplier,
        stage.speed,
        stage.seed,
        stage.duration,
        stage.repeat,
    );
    let mut vus = JoinSet::new();
    for (k, vu) in schedule.enumerate() {
        if let Some((index, count)) = stage.shard
            && k as u64 % u64::from(count) != u64::from(index - 1)
        {
            continue;
        }
        // Start the VU a little early: it reads its session from the capture
        // first, then waits for its own deadline, so the read is not late.
        let wake = (origin + vu.start)
            .checked_sub(LOOKAHEAD)
            .unwrap_or(origin)
            .max(origin);
        tokio::select! {
            () = sleep_until(wake) => {}
            () = abort.wait() => break,
        }
        let session_no = sessions[vu.session].session_no;
        vus.spawn(run_vu(ctx.clone(), session_no, origin + vu.start));
        while vus.try_join_next().is_some() {}
    }
    while vus.join_next().await.is_some() {}
    origin
}

fn is_safe(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

async fn run_vu<D: Dispatch, S: SessionSource>(
    ctx: Arc<Ctx<D, S>>,
    session_no: i64,
    start: Instant,
) {
    let exchanges = match ctx.source.load(session_no).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(session_no, error = %e, "cannot read a session from the capture; skipped");
            return;
        }
    };
    let _ = ctx.events.send(Event::VuStarted);
    let recorded: Vec<(i64, i64)> = exchanges
        .iter()
        .map(|e| (e.offset_us, e.duration_us))
        .collect();
    let planned = plan::requests(&recorded, ctx.speed);
    let mut handles: Vec<Option<JoinHandle<()>>> = Vec::with_capacity(exchanges.len());
    for (ex, p) in exchanges.into_iter().zip(planned) {
        for dep in p.after {
            if let Some(h) = handles.get_mut(dep).and_then(Option::take) {
                let _ = h.await;
            }
        }
        let due = start + p.due;
        if ctx.deadline.is_some_and(|d| due >= d) || ctx.abort.is_triggered() {
            break;
        }
        if ctx.read_only && !is_safe(&ex.method) {
            handles.push(None);
            continue;
        }
        if ex.request_truncated {
            let _ = ctx.events.send(Event::TruncatedSkipped);
            handles.push(None);
            continue;
        }
        tokio::select! {
            () = sleep_until(due) => {}
            () = ctx.abort.wait() => break,
        }
        let ctx2 = ctx.clone();
        handles.push(Some(tokio::spawn(async move {
            // The in-flight cap: waiting here makes the send late, and the
            // corrected latency shows it.
            let Ok(_permit) = ctx2.inflight.clone().acquire_owned().await else {
                return;
            };
            let sent_at = Instant::now();
            let route = route::normalize(&ex.method, &ex.uri);
            let recorded_status = ex.status.and_then(|s| u16::try_from(s).ok());
            ctx2.live.inflight.fetch_add(1, Ordering::Relaxed);
            let sent = ctx2.dispatch.send(Arc::new(ex)).await;
            ctx2.live.inflight.fetch_sub(1, Ordering::Relaxed);
            let _ = ctx2.events.send(Event::Outcome(Outcome {
                route,
                planned: due,
                sent: sent_at,
                ttfb: sent.ttfb,
                finished: sent.finished,
                finished_at_us: now_epoch_us(),
                status: sent.status,
                recorded_status,
                failure: sent.failure,
            }));
        })));
    }
    for h in handles.into_iter().flatten() {
        let _ = h.await;
    }
}
