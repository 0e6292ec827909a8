//! What capacity campaigns report, through the real binary against an
//! in-process upstream or the demo backend: per-route SLOs and effects.

use tapedeck::report::Report;

use crate::support::{self, Rec, TestUpstream, replay_capture, synthetic_capture};

/// Replays a one-session capture of `session` against `target` with the
/// profile `profile` (and `extra` flags): (exit code, stdout and stderr,
/// the report).
async fn replay_profile(
    session: Vec<Rec>,
    target: &str,
    profile: &str,
    extra: &[&str],
) -> (i32, String, Report) {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("c.db");
    synthetic_capture(&capture, &[session]).await.close().await;
    replay_capture(&capture, target, profile, extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_slo_one_route_meets_and_another_misses_fails_the_stage_naming_the_route() {
    let mut upstream = TestUpstream::start().await;
    // Fast reads of many ids, and a slow route answering after 60 ms.
    let mut session: Vec<Rec> = (0..20)
        .map(|i| (i * 10, 1, "GET", format!("/msg/{i}"), 200))
        .collect();
    session.extend((0..6).map(|i| (i * 30, 60, "GET", "/slow?ms=60".to_string(), 200)));
    let profile = r#"
version = 1
[[slo.route]]
route = "GET /msg/*"
p95_ms = 1000
[[slo.route]]
route = "GET /slow"
p95_ms = 20
[[stage]]
name = "1x"
speed = 4
"#;
    let (code, output, report) = replay_profile(session, &upstream.url(), profile, &[]).await;
    assert_eq!(code, 1, "a failed route SLO fails the run: {output}");
    assert_eq!(upstream.drain().len(), 26, "the target saw every request");
    let slo: Vec<_> = report.stages[0]
        .slo
        .iter()
        .map(|r| {
            (
                r.route.as_deref(),
                r.name.as_str(),
                r.pass,
                r.routes_matched,
            )
        })
        .collect();
    assert_eq!(
        slo,
        [
            (Some("GET /msg/*"), "p95_ms", true, Some(1)),
            (Some("GET /slow"), "p95_ms", false, Some(1)),
        ]
    );
    assert!(
        report.stages[0].slo[1].actual >= 60.0,
        "{:?}",
        report.stages[0].slo
    );
    assert!(
        report
            .capacity
            .notes
            .iter()
            .any(|n| n.starts_with("1x fails p95_ms of GET /slow:")),
        "{:?}",
        report.capacity.notes
    );
    assert!(output.contains("FAIL (p95_ms of GET /slow)"), "{output}");
}

/// A store of items: `POST /items` adds one (with `dedupe`, only the first
/// of each `x-test-id`, as a backend honouring an idempotency key would),
/// `GET /count` answers `{"items": N}`; every `GET /count` must carry the
/// replay header.
fn item_store(
    dedupe: bool,
) -> impl Fn(&http::Request<hyper::body::Incoming>) -> http::Response<http_body_util::Full<bytes::Bytes>>
{
    use std::collections::HashSet;
    use std::sync::Mutex;
    let seen: Mutex<(u64, HashSet<String>)> = Mutex::default();
    move |req| {
        let mut state = seen.lock().expect("state");
        let body = match (req.method().as_str(), req.uri().path()) {
            ("GET", "/count") => {
                assert!(
                    req.headers().contains_key("x-tapedeck-replay"),
                    "an effect read is marked"
                );
                format!(r#"{{"items": {}}}"#, state.0)
            }
            ("POST", "/items") => {
                let key = req
                    .headers()
                    .get("x-test-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                if !dedupe || state.1.insert(key) {
                    state.0 += 1;
                }
                "{}".into()
            }
            _ => "{}".into(),
        };
        http::Response::builder()
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("response")
    }
}

/// Replays 8 recorded `POST /items` at multiplier 3 against `store` with an
/// `[[effect]]` on its count: (exit code, the stage's effects, notes).
async fn replay_items(
    store: &str,
) -> (i32, Vec<tapedeck::report::model::EffectResult>, Vec<String>) {
    let mut session: Vec<Rec> = (0..8)
        .map(|i| (i * 5, 1, "POST", "/items".to_string(), 201))
        .collect();
    session.push((50, 1, "GET", "/items".to_string(), 200));
    let profile = r#"
version = 1
[[effect]]
name = "items stored"
url = "/count"
json_path = "$.items"
route = "POST /items"
[[stage]]
name = "3x"
multiplier = 3
speed = 4
"#;
    let (code, _, report) = replay_profile(session, store, profile, &["--no-correlation"]).await;
    let stage = report.stages.into_iter().next().expect("a stage");
    (code, stage.effects, report.capacity.notes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_confirms_every_write_the_backend_stored() {
    let store = support::serve(item_store(false)).await;
    let (code, effects, notes) = replay_items(&store.url).await;
    assert_eq!(code, 0, "{notes:?}");
    let [e] = &effects[..] else {
        panic!("one effect: {effects:?}")
    };
    assert_eq!((e.before, e.after), (Some(0.0), Some(24.0)), "{e:?}");
    assert_eq!(
        (e.delta, e.expected, e.pass),
        (Some(24.0), 24, true),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_fails_the_run_when_the_backend_merged_the_writes() {
    let store = support::serve(item_store(true)).await;
    let (code, effects, notes) = replay_items(&store.url).await;
    assert_eq!(code, 1, "{notes:?}");
    let e = &effects[0];
    assert_eq!(
        (e.delta, e.expected, e.pass),
        (Some(8.0), 24, false),
        "{e:?}"
    );
    assert!(
        notes.iter().any(|n| n
            == "3x: writes confirmed 8 of 24 by items stored: the backend dropped or merged 16"),
        "{notes:?}"
    );
}

/// The demo backend's PUT sends at 5x, counted by its own `/api/stats`.
const PUTS_STORED: &str = r#"
version = 1
[[effect]]
name = "messages put"
url = "/api/stats"
json_path = "$.messages_via.put"
route = "PUT /api/conversations/*/messages/*"
[[stage]]
name = "5x"
multiplier = 5
speed = 4
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_on_the_demo_backend_counts_each_replayed_send_and_fails_when_keys_repeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("demo.db");
    let recorded_on = support::demo_backend().await;
    // Kept credentials: the recorded tokens still work on the backend that
    // handed them out, so a replay without correlation is accepted there.
    support::record_population(&recorded_on, &capture, population(), true).await;

    // Correlated, on a fresh backend: every world's PUT carries its own
    // transaction id, and each 2xx stores one message.
    let fresh = support::demo_backend().await;
    let (code, output, report) = replay_capture(&capture, &fresh.url(), PUTS_STORED, &[]).await;
    assert_eq!(code, 0, "{output}");
    let stage = &report.stages[0];
    let puts: u64 = stage
        .routes
        .iter()
        .filter(|r| r.route.starts_with("PUT /api/conversations/"))
        .map(|r| r.requests - r.errors)
        .sum();
    let stored = support::demo_stats(&fresh).await.messages_via.put;
    assert_eq!(puts, 5 * 4 * 2, "{:?}", stage.routes);
    let [e] = &stage.effects[..] else {
        panic!("one effect: {:?}", stage.effects)
    };
    assert_eq!(
        (e.expected, e.delta, e.pass),
        (puts, Some(stored as f64), true),
        "{e:?}"
    );
    assert_eq!(stored, puts);

    // Verbatim, on the backend that recorded them: the recorded transaction
    // ids repeat, the backend answers each from its record and stores
    // nothing, and the run fails on the effect alone.
    let before = support::demo_stats(&recorded_on).await;
    let (code, output, report) = replay_capture(
        &capture,
        &recorded_on.url(),
        PUTS_STORED,
        &["--no-correlation"],
    )
    .await;
    assert_eq!(code, 1, "{output}");
    let after = support::demo_stats(&recorded_on).await;
    let e = &report.stages[0].effects[0];
    assert_eq!(
        (e.expected, e.delta, e.pass),
        (puts, Some(0.0), false),
        "{e:?}"
    );
    assert_eq!(after.messages_via.put, before.messages_via.put);
    assert!(
        after.duplicate_sends_suppressed >= before.duplicate_sends_suppressed + puts,
        "{before:?} {after:?}"
    );
    assert!(
        report.capacity.notes.iter().any(|n| n
            == &format!("5x: writes confirmed 0 of {puts} by messages put: the backend dropped or merged {puts}")),
        "{:?}",
        report.capacity.notes
    );
}

/// Four users, two PUT sends each (the demo script's), quickly.
fn population() -> tapedeck::demo::script::Population {
    tapedeck::demo::script::Population {
        users: 4,
        messages_per_user: 4,
        ramp: std::time::Duration::from_millis(50),
        think: (
            std::time::Duration::from_millis(5),
            std::time::Duration::from_millis(20),
        ),
        seed: 3,
    }
}

/// A cache in front of items: `GET /items/{n}` answers `X-Cache: HIT` when
/// `n` is a multiple of the current `every`, else `MISS`; `GET /health`
/// answers without the header.
fn cache(
    every: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> impl Fn(&http::Request<hyper::body::Incoming>) -> http::Response<http_body_util::Full<bytes::Bytes>>
{
    move |req| {
        let mut answer = http::Response::builder();
        if let Some(n) = req.uri().path().strip_prefix("/items/") {
            let n: u64 = n.parse().expect("item number");
            let every = every.load(std::sync::atomic::Ordering::Relaxed);
            answer = answer.header(
                "x-cache",
                if n.is_multiple_of(every) {
                    "HIT"
                } else {
                    "MISS"
                },
            );
        }
        answer
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
            .expect("response")
    }
}

/// `(value, requests)` of each value of `x-cache` in `by_header`.
fn cache_counts(by_header: &tapedeck::report::model::ByHeader) -> Vec<(&str, u64)> {
    by_header["x-cache"]
        .iter()
        .map(|(v, g)| (v.as_str(), g.requests))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_split_by_a_response_header_count_exactly_the_known_subset() {
    let every = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(3));
    let upstream = support::serve(cache(every.clone())).await;
    // 24 items (8 of them multiples of 3) and 4 health checks, at 2x.
    let mut session: Vec<Rec> = (0..24)
        .map(|i| (i * 3, 1, "GET", format!("/items/{i}"), 200))
        .collect();
    session.extend((0..4).map(|i| (80 + i, 1, "GET", "/health".to_string(), 200)));
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("c.db");
    synthetic_capture(&capture, &[session]).await.close().await;
    let profile = "version = 1\n[[stage]]\nname = \"2x\"\nmultiplier = 2\nspeed = 4\n";
    let flags = ["--group-by-header", "X-Cache"];
    let (code, output, base) = replay_capture(&capture, &upstream.url, profile, &flags).await;
    assert_eq!(code, 0, "{output}");
    let stage = &base.stages[0];
    assert_eq!(
        cache_counts(&stage.by_header),
        [("(none)", 8), ("HIT", 16), ("MISS", 32)]
    );
    let route = |name: &str| {
        let r = stage.routes.iter().find(|r| r.route == name);
        r.unwrap_or_else(|| panic!("{name} in {:?}", stage.routes))
    };
    assert_eq!(
        cache_counts(&route("GET /items/{id}").by_header),
        [("HIT", 16), ("MISS", 32)]
    );
    assert_eq!(
        cache_counts(&route("GET /health").by_header),
        [("(none)", 8)]
    );
    assert!(
        output.contains("x-cache: (none) 14.3 % (8), HIT 28.6 % (16), MISS 57.1 % (32)"),
        "{output}"
    );
    assert!(
        output.contains("x-cache: HIT 33.3 % (16), MISS 66.7 % (32)  (GET /items/{id})"),
        "{output}"
    );

    // Every second item a hit now: compare says how the shares moved.
    every.store(2, std::sync::atomic::Ordering::Relaxed);
    let (code, output, candidate) = replay_capture(&capture, &upstream.url, profile, &flags).await;
    assert_eq!(code, 0, "{output}");
    assert_eq!(
        cache_counts(&candidate.stages[0].by_header),
        [("(none)", 8), ("HIT", 24), ("MISS", 24)]
    );
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    std::fs::write(&a, serde_json::to_vec(&base).expect("json")).expect("write");
    std::fs::write(&b, serde_json::to_vec(&candidate).expect("json")).expect("write");
    let (code, stdout, stderr) = support::output(&[
        "compare",
        a.to_str().expect("utf-8"),
        b.to_str().expect("utf-8"),
    ])
    .await;
    assert!(code == 0 || code == 1, "{stdout}{stderr}");
    for line in [
        "x-cache HIT: 28.6 % -> 42.9 % (+14.3 pp)",
        "x-cache MISS: 57.1 % -> 42.9 % (-14.3 pp)",
        "x-cache HIT: 33.3 % -> 50.0 % (+16.7 pp) (GET /items/{id})",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capacity_search_finds_the_knee_of_a_two_worker_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("demo.db");
    let recorded_on = support::demo_backend().await;
    support::record_population(&recorded_on, &capture, population(), false).await;
    // Two workers of 20 ms each: about 100 requests/s, queueing past it.
    let slow = support::demo_backend_with(tapedeck::demo::backend::BackendConfig {
        workers: 2,
        service_time: std::time::Duration::from_millis(20),
        ..Default::default()
    })
    .await;
    let profile = r#"
version = 1
[[slo.route]]
route = "POST /api/conversations/*/messages"
p95_ms = 100
[search]
max_multiplier = 32
[[stage]]
name = "search"
speed = 0.2
"#;
    // The backend runs in this process: the search reports its readings.
    let pid = std::process::id().to_string();
    let observe = ["--observe-pid", pid.as_str()];
    let (code, output, report) = replay_capture(&capture, &slow.url(), profile, &observe).await;
    assert_eq!(code, 0, "{output}");
    let search = report.capacity.search.as_ref().expect("a search");
    let (Some(safe), Some(failing)) = (search.safe_multiplier, search.failing_multiplier) else {
        panic!("a safe and a failing multiplier: {search:?}\n{output}")
    };
    assert_eq!(search.outcome, "found", "{search:?}");
    assert_eq!(failing - safe, 1, "bisected to the resolution: {search:?}");
    assert!(
        search.steps.iter().any(|s| s.phase == "bisection"),
        "{search:?}"
    );
    // One stage per step, in order, judged as the step says.
    let run: Vec<(u32, bool)> = report
        .stages
        .iter()
        .map(|s| (s.multiplier, s.slo.iter().all(|r| r.pass)))
        .collect();
    let steps: Vec<(u32, bool)> = search
        .steps
        .iter()
        .map(|s| (s.multiplier, s.pass))
        .collect();
    assert_eq!(run, steps);
    assert_eq!(report.capacity.safe_multiplier, Some(safe));
    let sentence = format!(
        "search: {safe}x is the highest multiplier that met every SLO; {failing}x failed (p95_ms of "
    );
    assert!(
        report.capacity.notes[0].starts_with(&sentence),
        "{:?}",
        report.capacity.notes
    );
    assert!(output.contains(&sentence), "{output}");
    assert!(
        report.capacity.notes[0].contains(&format!("; at {safe}x: CPU ")),
        "{:?}",
        report.capacity.notes
    );
}
