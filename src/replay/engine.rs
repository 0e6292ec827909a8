//! The executor: starts virtual users at their planned instants and sends
//! their requests at absolute deadlines (`sleep_until(origin + due)`, never
//! sleeps between requests), keeping the recorded happens-before order
//! within each VU and the in-flight cap across all of them.
//!
//! HTTP is behind [`Dispatch`] and the capture behind [`SessionSource`],
//! so exact timing is tested under tokio's paused clock with fakes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OnceCell, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until};

use super::correlate::{Answer, Correlation, SessionValues, SocketValues, World};
use super::plan::{self, ShardSplit, VuSchedule};
use crate::capture::{CaptureError, SessionSpan, StoredExchange, now_epoch_us};
use crate::report::grouped;
use crate::report::outcome::{Event, LiveStats, Outcome, StreamTiming, WsTiming};
use crate::route;
use crate::shutdown::Shutdown;
use bytes::Bytes;

/// How long before its planned start a VU is set up (its session read).
const LOOKAHEAD: Duration = Duration::from_millis(100);

/// What a dispatcher reports about one request.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Live status, if a response came.
    pub status: Option<u16>,
    /// Time to the response head.
    pub ttfb: Option<Duration>,
    /// Transport failure kind.
    pub failure: Option<&'static str>,
    /// When the response ended or the request failed.
    pub finished: Instant,
    /// Response headers (kept for correlation).
    pub headers: Vec<(String, String)>,
    /// Response body (kept for correlation; empty when not collected).
    pub body: Bytes,
    /// The body went past what the client keeps: `body` is its start.
    pub body_truncated: bool,
    /// For a streamed response (SSE, NDJSON): its chunk timing.
    pub stream: Option<StreamTiming>,
    /// For a replayed WebSocket: what the socket did.
    pub ws: Option<WsTiming>,
    /// The W3C trace id the request carried, if it carried one.
    pub trace_id: Option<u128>,
}

impl Sent {
    /// The 2xx status of a side read (an effect, a scrape) of `path`, or
    /// what went wrong in words.
    ///
    /// # Errors
    /// A status outside 2xx, or no answer.
    pub fn success(&self, path: &str) -> Result<u16, String> {
        match (self.status, self.failure) {
            (Some(s), _) if (200..300).contains(&s) => Ok(s),
            (Some(s), _) => Err(format!("GET {path} answered {s}")),
            (None, kind) => Err(format!(
                "GET {path} failed ({})",
                kind.unwrap_or("no answer")
            )),
        }
    }

    /// A transport failure observed now.
    pub fn failed(kind: &'static str) -> Sent {
        Sent {
            status: None,
            ttfb: None,
            failure: Some(kind),
            finished: Instant::now(),
            headers: Vec::new(),
            body: Bytes::new(),
            body_truncated: false,
            stream: None,
            ws: None,
            trace_id: None,
        }
    }
}

/// Sends one recorded request somewhere and measures it.
pub trait Dispatch: Send + Sync + 'static {
    /// Sends `ex` and waits for the whole response. With `socket`, what
    /// arrives before the end (a WebSocket's server frames) is learned on
    /// the way, and later parts of the exchange (the client's frames) use
    /// what the world knows when they are sent.
    fn send(
        &self,
        ex: Arc<StoredExchange>,
        socket: Option<SocketValues>,
    ) -> impl Future<Output = Sent> + Send;
}

/// Loads the recorded exchanges of a session.
pub trait SessionSource: Send + Sync + 'static {
    /// The session's exchanges in send order.
    fn load(
        &self,
        run_id: i64,
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
    /// This shard's share (`index` from 0, `count`): see [`ShardSplit`].
    pub shard: Option<(u32, u32)>,
    /// Most VUs alive at once.
    pub max_vus: usize,
    /// Dynamic values (docs/replay.md, "Dynamic values"): every decision about
    /// what a request carries and what an answer hands out.
    pub correlation: Arc<Correlation>,
    /// Response headers (lowercase) whose values each outcome reports
    /// (`--group-by-header`).
    pub group_by: Arc<[Arc<str>]>,
    /// Fired by a stop signal: unlike a safety abort, which lets requests
    /// already sent finish and be measured, requests in flight are dropped
    /// at once, unmeasured (the report says it was interrupted).
    pub interrupt: Shutdown,
}

/// A VU's identity for the dedup detector: (world, pass).
type VuId = (u32, u32);

/// (recorded exchange id, recorded value) → the first VU that got a live
/// value for it, and that value.
type FirstReplays = HashMap<(i64, String), (VuId, String)>;

/// Shared by every VU of a stage.
struct Ctx<D, S> {
    dispatch: Arc<D>,
    source: Arc<S>,
    inflight: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
    live: Arc<LiveStats>,
    abort: Shutdown,
    interrupt: Shutdown,
    deadline: Option<Instant>,
    speed: f64,
    read_only: bool,
    correlation: Arc<Correlation>,
    group_by: Arc<[Arc<str>]>,
    worlds: Mutex<HashMap<(u32, u32), Arc<World>>>,
    /// (recorded exchange, recorded value) → (VU identity, live value) of
    /// the first replay of a write that handed out a live value.
    writes: Mutex<FirstReplays>,
    /// Sessions being played, shared by the VUs of every world that play
    /// them at once: read and prepared once, dropped with the last VU.
    sessions: Mutex<HashMap<(i64, i64), Weak<SessionCell>>>,
}

/// A recorded session made ready to play: the same for every world.
struct LoadedSession {
    exchanges: Vec<Arc<StoredExchange>>,
    /// Normalized route of each exchange.
    routes: Vec<Arc<str>>,
    planned: Vec<plan::PlannedRequest>,
    values: Arc<SessionValues>,
}

/// Filled by the first VU that needs the session; `None` when it could not
/// be read.
type SessionCell = OnceCell<Option<Arc<LoadedSession>>>;

impl<D, S: SessionSource> Ctx<D, S> {
    /// The session, read from the capture by the first VU that asks while
    /// no other VU holds it. The caller keeps the returned cell while it
    /// plays, so that VUs of other worlds starting meanwhile share it.
    async fn session(&self, key: (i64, i64)) -> Arc<SessionCell> {
        let cell = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            match sessions.get(&key).and_then(Weak::upgrade) {
                Some(cell) => cell,
                None => {
                    let cell = Arc::new(SessionCell::new());
                    sessions.insert(key, Arc::downgrade(&cell));
                    cell
                }
            }
        };
        cell.get_or_init(|| async {
            let (run_id, session_no) = key;
            match self.source.load(run_id, session_no).await {
                Ok(exchanges) => Some(Arc::new(LoadedSession::new(
                    exchanges,
                    self.speed,
                    &self.correlation,
                ))),
                Err(e) => {
                    tracing::warn!(run_id, session_no, error = %e, "cannot read a session from the capture; skipped");
                    None
                }
            }
        })
        .await;
        cell
    }
}

impl LoadedSession {
    fn new(
        mut exchanges: Vec<StoredExchange>,
        speed: f64,
        correlation: &Correlation,
    ) -> LoadedSession {
        let values = correlation.analyze_session(&mut exchanges);
        let recorded: Vec<(i64, i64)> = exchanges
            .iter()
            .map(|e| (e.offset_us, e.client_duration_us()))
            .collect();
        // Requests of one route share one string.
        let mut distinct: HashMap<String, Arc<str>> = HashMap::new();
        let routes = exchanges
            .iter()
            .map(|e| {
                let route = route::normalize(&e.method, &e.uri);
                distinct
                    .entry(route)
                    .or_insert_with_key(|r| Arc::from(r.as_str()))
                    .clone()
            })
            .collect();
        LoadedSession {
            planned: plan::requests(&recorded, speed),
            exchanges: exchanges
                .into_iter()
                .map(|mut e| {
                    // A WebSocket's frames keep the stage's pace too.
                    for f in &mut e.ws_frames {
                        f.t_us = (f.t_us as f64 / speed) as u64;
                    }
                    Arc::new(e)
                })
                .collect(),
            routes,
            values: Arc::new(values),
        }
    }
}

impl<D, S> Ctx<D, S> {
    fn world(&self, world: u32, pass: u32) -> Arc<World> {
        let mut worlds = self.worlds.lock().unwrap_or_else(|p| p.into_inner());
        worlds
            .entry((world, pass))
            .or_insert_with(|| Arc::new(self.correlation.new_world()))
            .clone()
    }

    /// Whether another world already got one of these live values for the
    /// same recorded write: a deduplicating backend answering a clone with
    /// the first one's id.
    fn suspected_dedup(&self, exchange: i64, who: (u32, u32), pairs: &[(String, String)]) -> bool {
        let mut writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let mut dedup = false;
        for (rec, live) in pairs {
            match writes.get(&(exchange, rec.clone())) {
                Some((first, first_live)) => dedup |= *first != who && first_live == live,
                None => {
                    writes.insert((exchange, rec.clone()), (who, live.clone()));
                }
            }
        }
        dedup
    }
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
        interrupt: stage.interrupt.clone(),
        deadline: stage.duration.map(|d| origin + d),
        speed: stage.speed,
        read_only: stage.read_only,
        correlation: stage.correlation.clone(),
        group_by: stage.group_by.clone(),
        worlds: Mutex::new(HashMap::new()),
        writes: Mutex::new(HashMap::new()),
        sessions: Mutex::new(HashMap::new()),
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
    let vu_slots = Arc::new(Semaphore::new(
        stage.max_vus.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut split = stage.shard.map(ShardSplit::new);
    for vu in schedule {
        if let Some(split) = &mut split
            && !split.mine(sessions[vu.session].requests)
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
        if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // The VU cap bounds memory when the target falls behind the plan:
        // further VUs wait for a slot (and their sends show up as late).
        let slot = tokio::select! {
            slot = vu_slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = abort.wait() => break,
        };
        let session = (sessions[vu.session].run_id, sessions[vu.session].session_no);
        let ctx = ctx.clone();
        vus.spawn(async move {
            run_vu(ctx, session, (vu.world, vu.pass), origin + vu.start).await;
            drop(slot);
        });
        while vus.try_join_next().is_some() {}
    }
    while vus.join_next().await.is_some() {}
    origin
}

/// Sends one request (after the in-flight cap), has correlation learn
/// from its answer and reports the outcome.
async fn send_one<D: Dispatch, S: SessionSource>(
    ctx: Arc<Ctx<D, S>>,
    session: Arc<LoadedSession>,
    index: usize,
    to_send: Arc<StoredExchange>,
    due: Instant,
    world: Arc<World>,
    who: VuId,
) {
    let ex = &session.exchanges[index];
    let route = &session.routes[index];
    // The in-flight cap: waiting here makes the send late, and the
    // corrected latency shows it. An abort ends the wait: what has not
    // been sent by then is not sent.
    let _permit = tokio::select! {
        permit = ctx.inflight.clone().acquire_owned() => match permit {
            Ok(permit) => permit,
            Err(_) => return,
        },
        () = ctx.abort.wait() => return,
    };
    if ctx.abort.is_triggered() || ctx.deadline.is_some_and(|d| Instant::now() >= d) {
        return;
    }
    let sent_at = Instant::now();
    let sent_at_us = now_epoch_us();
    let recorded_status = ex.status.and_then(|s| u16::try_from(s).ok());
    ctx.live.inflight.fetch_add(1, Ordering::Relaxed);
    let sent = tokio::select! {
        sent = ctx.dispatch.send(to_send.clone(), ctx.correlation.socket_values(&world)) => Some(sent),
        () = ctx.interrupt.wait() => None,
    };
    ctx.live.inflight.fetch_sub(1, Ordering::Relaxed);
    let Some(sent) = sent else {
        return;
    };
    let answer = Answer {
        status: sent.status,
        failure: sent.failure,
        headers: &sent.headers,
        body: &sent.body,
    };
    let learned = ctx
        .correlation
        .learn(route, ex, &to_send, answer, &session.values, &world);
    let suspected_dedup =
        !learned.handed_out.is_empty() && ctx.suspected_dedup(ex.id, who, &learned.handed_out);
    let _ = ctx.events.send(Event::Outcome(Outcome {
        route: route.clone(),
        planned: due,
        sent: sent_at,
        sent_at_us,
        ttfb: sent.ttfb,
        finished: sent.finished,
        finished_at_us: now_epoch_us(),
        status: sent.status,
        recorded_status,
        failure: sent.failure,
        suspected_dedup,
        conflicting_values: learned.conflicts,
        shape_mismatch: learned.shape_mismatch,
        by_header: grouping(&ctx.group_by, &sent),
        stream: sent.stream,
        ws: sent.ws,
        trace_id: sent.trace_id,
    }));
}

/// The answer's value of each grouping header (the first, if repeated;
/// [`grouped::ABSENT`] when missing); nothing when no answer came.
fn grouping(names: &[Arc<str>], sent: &Sent) -> Vec<(Arc<str>, String)> {
    if sent.status.is_none() {
        return Vec::new();
    }
    names
        .iter()
        .map(|name| {
            let value = sent
                .headers
                .iter()
                .find(|(k, _)| k.as_str() == &**name)
                .map_or(grouped::ABSENT, |(_, v)| v.as_str());
            (name.clone(), value.to_string())
        })
        .collect()
}

/// Whether a `--read-only` replay leaves the exchange out: a method other
/// than GET, HEAD and OPTIONS, or a WebSocket whose client sent data (its
/// upgrade is a GET, its frames are the writes: chat messages, joins).
fn writes(ex: &StoredExchange) -> bool {
    !matches!(ex.method.as_str(), "GET" | "HEAD" | "OPTIONS")
        || (ex.status == Some(101)
            && ex.ws_frames.iter().any(|f| {
                f.dir == "client" && matches!(f.op.as_str(), "text" | "binary" | "continuation")
            }))
}

async fn run_vu<D: Dispatch, S: SessionSource>(
    ctx: Arc<Ctx<D, S>>,
    (run_id, session_no): (i64, i64),
    who: (u32, u32),
    start: Instant,
) {
    let cell = ctx.session((run_id, session_no)).await;
    let Some(session) = cell.get().cloned().flatten() else {
        return;
    };
    let _ = ctx.events.send(Event::VuStarted);
    let _alive = ctx.live.vu_alive();
    let world = ctx.world(who.0, who.1);
    let LoadedSession {
        exchanges,
        planned,
        values,
        ..
    } = &*session;
    let mut handles: Vec<Option<JoinHandle<()>>> = Vec::with_capacity(exchanges.len());
    for (index, ex) in exchanges.iter().enumerate() {
        let ex = ex.clone();
        let p = &planned[index];
        for &dep in &p.after {
            if let Some(h) = handles.get_mut(dep).and_then(Option::take) {
                let _ = h.await;
            }
        }
        let due = start + p.due;
        if ctx.deadline.is_some_and(|d| due >= d) || ctx.abort.is_triggered() {
            break;
        }
        if ctx.read_only && writes(&ex) {
            let _ = ctx.events.send(Event::ReadOnlySkipped);
            handles.push(None);
            continue;
        }
        if ex.request_truncated {
            let _ = ctx.events.send(Event::TruncatedSkipped);
            ctx.correlation.lost(&ex, &world);
            handles.push(None);
            continue;
        }
        // A send that is already due (a VU behind its plan) goes at once,
        // without a timer entry.
        if due > Instant::now() {
            tokio::select! {
                () = sleep_until(due) => {}
                () = ctx.abort.wait() => break,
            }
        } else if ctx.abort.is_triggered() {
            break;
        }
        // A VU that fell behind stops at the end of the stage.
        if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // Prepared at its due time, so it carries what the world learned
        // until then (another session's create, a socket's push).
        let to_send = match ctx.correlation.prepare(&ex, index, values, &world) {
            None => ex,
            Some(prepared) if prepared.skip => {
                let _ = ctx.events.send(Event::DependentSkipped {
                    route: session.routes[index].clone(),
                    waited_for: prepared.waited_for,
                });
                ctx.correlation.lost(&ex, &world);
                handles.push(None);
                continue;
            }
            Some(prepared) => {
                if !prepared.substitutions.is_empty() || prepared.unresolved > 0 {
                    let _ = ctx.events.send(Event::Substitutions {
                        kinds: prepared.substitutions,
                        unresolved: prepared.unresolved,
                    });
                }
                Arc::new(prepared.exchange)
            }
        };
        let request = send_one(
            ctx.clone(),
            session.clone(),
            index,
            to_send,
            due,
            world.clone(),
            who,
        );
        // A request the next one waits for (or the last one) runs inline:
        // a chain of sequential requests costs no task per request.
        let next_waits = planned
            .get(index + 1)
            .is_none_or(|n| n.after.contains(&index));
        if next_waits {
            request.await;
            handles.push(None);
        } else {
            handles.push(Some(tokio::spawn(request)));
        }
    }
    for h in handles.into_iter().flatten() {
        let _ = h.await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    fn exchange(session_no: i64, seq: i64, offset_ms: i64, duration_ms: i64) -> StoredExchange {
        StoredExchange {
            id: session_no * 100 + seq,
            session_no,
            seq,
            started_at_us: 0,
            offset_us: offset_ms * 1000,
            method: "GET".into(),
            uri: format!("/s{session_no}/{seq}"),
            http_version: "HTTP/1.1".into(),
            request_headers: Vec::new(),
            request_body: Vec::new(),
            request_body_len: 0,
            request_truncated: false,
            status: Some(200),
            response_headers: Vec::new(),
            response_body: Vec::new(),
            response_body_len: 0,
            response_truncated: false,
            ttfb_us: Some(duration_ms * 1000),
            duration_us: duration_ms * 1000,
            error_kind: None,
            error_message: None,
            response_chunks: Vec::new(),
            ws_frames: Vec::new(),
            ws_frames_dropped: 0,
        }
    }

    /// Sessions in memory; counts the reads.
    struct Memory(
        HashMap<i64, Vec<StoredExchange>>,
        std::sync::atomic::AtomicUsize,
    );

    impl SessionSource for Memory {
        async fn load(
            &self,
            _run: i64,
            session_no: i64,
        ) -> Result<Vec<StoredExchange>, CaptureError> {
            self.1.fetch_add(1, Ordering::Relaxed);
            Ok(self.0.get(&session_no).cloned().unwrap_or_default())
        }
    }

    /// Answers after the given service time per exchange id, with the
    /// given body per exchange id (empty otherwise); logs send instants.
    struct Fake {
        service: HashMap<i64, Duration>,
        answers: HashMap<i64, &'static str>,
        sends: Mutex<Vec<(i64, Instant)>>,
    }

    impl Dispatch for Fake {
        async fn send(&self, ex: Arc<StoredExchange>, _: Option<SocketValues>) -> Sent {
            self.sends
                .lock()
                .expect("lock")
                .push((ex.id, Instant::now()));
            let service = self
                .service
                .get(&ex.id)
                .copied()
                .unwrap_or(Duration::from_millis(1));
            tokio::time::sleep(service).await;
            Sent {
                status: Some(200),
                ttfb: Some(service),
                failure: None,
                finished: Instant::now(),
                headers: Vec::new(),
                body: Bytes::from_static(
                    self.answers.get(&ex.id).copied().unwrap_or("").as_bytes(),
                ),
                body_truncated: false,
                stream: None,
                ws: None,
                trace_id: None,
            }
        }
    }

    async fn run(
        sessions: Vec<Vec<StoredExchange>>,
        service: HashMap<i64, Duration>,
        stage: StageRun,
        max_inflight: usize,
    ) -> (Vec<(i64, Duration)>, Vec<Event>, usize) {
        run_answering(sessions, service, HashMap::new(), stage, max_inflight).await
    }

    /// [`run`], with live answer bodies by exchange id.
    async fn run_answering(
        sessions: Vec<Vec<StoredExchange>>,
        service: HashMap<i64, Duration>,
        answers: HashMap<i64, &'static str>,
        stage: StageRun,
        max_inflight: usize,
    ) -> (Vec<(i64, Duration)>, Vec<Event>, usize) {
        let spans: Vec<SessionSpan> = sessions
            .iter()
            .map(|s| SessionSpan {
                run_id: 1,
                session_no: s[0].session_no,
                first_offset_us: s[0].offset_us,
                requests: s.len() as u64,
            })
            .collect();
        let span_us = sessions
            .iter()
            .flatten()
            .map(|e| e.offset_us + e.duration_us)
            .max()
            .unwrap_or(0);
        let source = Arc::new(Memory(
            sessions.into_iter().map(|s| (s[0].session_no, s)).collect(),
            Default::default(),
        ));
        let fake = Arc::new(Fake {
            service,
            answers,
            sends: Mutex::new(Vec::new()),
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let origin = run_stage(
            &stage,
            &spans,
            span_us,
            fake.clone(),
            source.clone(),
            Arc::new(Semaphore::new(max_inflight)),
            tx,
            Arc::new(LiveStats::default()),
            Shutdown::new(),
        )
        .await;
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        let mut sends: Vec<(i64, Duration)> = fake
            .sends
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, at)| (*id, *at - origin))
            .collect();
        sends.sort_by_key(|(id, at)| (*at, *id));
        (sends, events, source.1.load(Ordering::Relaxed))
    }

    fn stage(multiplier: u32, speed: f64) -> StageRun {
        StageRun {
            multiplier,
            speed,
            duration: None,
            repeat: false,
            seed: 1,
            read_only: false,
            shard: None,
            max_vus: 100_000,
            correlation: Arc::new(Correlation::new(true, Arc::default(), Default::default())),
            group_by: Arc::new([]),
            interrupt: Shutdown::new(),
        }
    }

    /// One stage of four one-request sessions due at once, each answered
    /// after a minute, one in flight at a time; `stop` fires after a
    /// second. Returns the sends, the outcomes and the stage's length.
    async fn stopped_after_a_second(interrupt: bool) -> (usize, usize, Duration) {
        let sessions: Vec<Vec<StoredExchange>> =
            (1..=4).map(|s| vec![exchange(s, 1, 0, 5)]).collect();
        let spans: Vec<SessionSpan> = (1..=4)
            .map(|s| SessionSpan {
                run_id: 1,
                session_no: s,
                first_offset_us: 0,
                requests: 1,
            })
            .collect();
        let fake = Arc::new(Fake {
            service: (1..=4)
                .map(|s| (s * 100 + 1, Duration::from_secs(60)))
                .collect(),
            answers: HashMap::new(),
            sends: Mutex::new(Vec::new()),
        });
        let source = Arc::new(Memory(
            sessions.into_iter().map(|s| (s[0].session_no, s)).collect(),
            Default::default(),
        ));
        let stage = stage(1, 1.0);
        let abort = Shutdown::new();
        let stop = match interrupt {
            true => stage.interrupt.clone(),
            false => abort.clone(),
        };
        let also_abort = abort.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.trigger();
            also_abort.trigger();
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        run_stage(
            &stage,
            &spans,
            5_000,
            fake.clone(),
            source,
            Arc::new(Semaphore::new(1)),
            tx,
            Arc::new(LiveStats::default()),
            abort,
        )
        .await;
        let mut outcomes = 0;
        while let Ok(e) = rx.try_recv() {
            outcomes += usize::from(matches!(e, Event::Outcome(_)));
        }
        let sends = fake.sends.lock().expect("lock").len();
        (sends, outcomes, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_cancels_sends_waiting_for_an_in_flight_permit() {
        // The request in flight finishes and is measured; the three
        // waiting for its permit are never sent.
        let (sends, outcomes, took) = stopped_after_a_second(false).await;
        assert_eq!((sends, outcomes), (1, 1));
        assert!(took < Duration::from_secs(61), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_interrupt_drops_requests_in_flight_unmeasured() {
        let (sends, outcomes, took) = stopped_after_a_second(true).await;
        assert_eq!((sends, outcomes), (1, 0));
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn sends_leave_exactly_at_their_planned_instants() {
        // Session 1: 0, 200, 700 ms (each 10 ms). Session 2 starts at 100 ms
        // with two overlapping requests (100..200 and 150..160).
        let sessions = vec![
            vec![
                exchange(1, 1, 0, 10),
                exchange(1, 2, 200, 10),
                exchange(1, 3, 700, 10),
            ],
            vec![exchange(2, 1, 100, 100), exchange(2, 2, 150, 10)],
        ];
        let (sends, events, _) = run(sessions, HashMap::new(), stage(1, 2.0), 100).await;
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(
            sends,
            [
                (101, ms(0)),
                (201, ms(50)),
                (202, ms(75)),
                (102, ms(100)),
                (103, ms(350))
            ],
            "speed 2 halves every offset, exactly"
        );
        let vus = events
            .iter()
            .filter(|e| matches!(e, Event::VuStarted))
            .count();
        assert_eq!(vus, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_response_delays_what_followed_it_and_the_delay_is_late() {
        // Recorded: 1 takes 10 ms, 2 starts at 50 ms. Replayed, 1 takes 80 ms.
        let sessions = vec![vec![exchange(1, 1, 0, 10), exchange(1, 2, 50, 10)]];
        let service = HashMap::from([(101, Duration::from_millis(80))]);
        let (sends, events, _) = run(sessions, service, stage(1, 1.0), 100).await;
        assert_eq!(
            sends,
            [(101, Duration::ZERO), (102, Duration::from_millis(80))]
        );
        let late: Vec<Duration> = events
            .iter()
            .filter_map(|e| match e {
                Event::Outcome(o) => Some(o.sent - o.planned),
                _ => None,
            })
            .collect();
        assert_eq!(late, [Duration::ZERO, Duration::from_millis(30)]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_inflight_cap_makes_sends_wait() {
        // Two sessions send at 0 ms; each request takes 100 ms; cap 1.
        let sessions = vec![vec![exchange(1, 1, 0, 100)], vec![exchange(2, 1, 0, 100)]];
        let service = HashMap::from([
            (101, Duration::from_millis(100)),
            (201, Duration::from_millis(100)),
        ]);
        let (sends, _, _) = run(sessions, service, stage(1, 1.0), 1).await;
        let at: Vec<Duration> = sends.iter().map(|(_, d)| *d).collect();
        assert_eq!(at, [Duration::ZERO, Duration::from_millis(100)]);
    }

    #[tokio::test(start_paused = true)]
    async fn multiplier_3_sends_every_request_three_times_at_distinct_instants() {
        let sessions = vec![vec![exchange(1, 1, 0, 10), exchange(1, 2, 300, 10)]];
        let (sends, events, loads) = run(sessions, HashMap::new(), stage(3, 1.0), 100).await;
        // The three worlds play the session at overlapping times: one read.
        assert_eq!(loads, 1);
        assert_eq!(sends.iter().filter(|(id, _)| *id == 101).count(), 3);
        assert_eq!(sends.iter().filter(|(id, _)| *id == 102).count(), 3);
        let mut firsts: Vec<Duration> = sends
            .iter()
            .filter(|(id, _)| *id == 101)
            .map(|(_, d)| *d)
            .collect();
        firsts.dedup();
        assert_eq!(firsts.len(), 3);
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::VuStarted))
                .count(),
            3
        );
    }

    /// The kinds of each request's substitutions, in event order.
    fn substitution_kinds(events: &[Event]) -> Vec<&Vec<&'static str>> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Substitutions { kinds, .. } => Some(kinds),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_prepared_at_its_due_time_with_what_its_world_learned_meanwhile() {
        // Session 2 starts first and asks for a room at 500 ms; session 1 of
        // the same world creates it at 100 ms. Prepared before its VU slept,
        // the read would go out before the create's answer and take the
        // room's id for a nonce; prepared when due, it sends the live id.
        let mut create = exchange(1, 1, 100, 10);
        create.method = "POST".into();
        create.uri = "/api/rooms".into();
        create.response_body = br#"{"id":"c_Rec12Cd34Ef56"}"#.to_vec();
        let mut read = exchange(2, 2, 500, 10);
        read.uri = "/api/rooms/c_Rec12Cd34Ef56/messages".into();
        let sessions = vec![vec![create], vec![exchange(2, 1, 0, 10), read]];
        let answers = HashMap::from([(101, r#"{"id":"c_Liv12Cd34Ef56"}"#)]);
        let (sends, events, _) =
            run_answering(sessions, HashMap::new(), answers, stage(1, 1.0), 100).await;
        assert_eq!(sends.len(), 3);
        let kinds = substitution_kinds(&events);
        assert_eq!(kinds, [&vec!["correlated"]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_generated_in_one_session_is_what_the_worlds_other_sessions_send() {
        // Session 1 creates a room under a name it made up (a nonce) at
        // 300 ms; session 2 of the same world looks the room up and joins
        // it by that name at 500 and 600 ms. Both must send the world's
        // fresh name, not the recorded one that finds the recorded room.
        let mut create = exchange(1, 1, 300, 10);
        create.method = "POST".into();
        create.uri = "/api/rooms".into();
        create.request_body = br#"{"name":"room-Ab12Cd34"}"#.to_vec();
        let mut lookup = exchange(2, 2, 500, 10);
        lookup.uri = "/api/rooms?name=room-Ab12Cd34".into();
        let mut join = exchange(2, 3, 600, 10);
        join.method = "POST".into();
        join.uri = "/api/rooms/join".into();
        join.request_body = br#"{"name":"room-Ab12Cd34"}"#.to_vec();
        let sessions = vec![vec![create], vec![exchange(2, 1, 0, 10), lookup, join]];
        let (_, events, _) = run(sessions, HashMap::new(), stage(1, 1.0), 100).await;
        let kinds = substitution_kinds(&events);
        assert_eq!(
            kinds,
            [&vec!["nonce"], &vec!["correlated"], &vec!["correlated"]]
        );
    }

    #[test]
    fn a_websockets_frames_follow_the_stage_speed() {
        let mut socket = exchange(1, 1, 0, 10);
        socket.ws_frames = vec![crate::capture::WsFrame {
            t_us: 3_000_000,
            dir: "client".into(),
            op: "text".into(),
            fin: true,
            len: 2,
            data: "hi".into(),
            truncated: false,
            close_code: None,
        }];
        let loaded = LoadedSession::new(vec![socket], 2.0, &Correlation::default());
        assert_eq!(loaded.exchanges[0].ws_frames[0].t_us, 1_500_000);
    }

    #[test]
    fn a_request_sent_after_a_sockets_last_frame_waits_for_the_socket() {
        // The socket switched 5 ms in, its close frame passed at 200 ms
        // (195 ms after the switch); the relay finished at 260 ms. The
        // client's next request went at 230 ms: after the socket, as the
        // client saw it.
        let mut socket = exchange(1, 1, 0, 260);
        socket.ttfb_us = Some(5_000);
        socket.ws_frames = vec![crate::capture::WsFrame {
            t_us: 195_000,
            dir: "server".into(),
            op: "close".into(),
            fin: true,
            len: 2,
            data: String::new(),
            truncated: false,
            close_code: Some(1000),
        }];
        let next = exchange(1, 2, 230, 10);
        let loaded = LoadedSession::new(vec![socket, next], 1.0, &Correlation::default());
        assert_eq!(loaded.planned[1].after, vec![0]);
    }
}
