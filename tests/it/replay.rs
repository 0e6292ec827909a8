//! Replay against an in-process upstream that timestamps arrivals.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tapedeck::capture::Store;
use tapedeck::profile::Profile;
use tapedeck::report::Report;
use tapedeck::upstream::Upstream;

use crate::support::{Rec, Seen, TestUpstream, replay_with, synthetic_capture};

fn get(offset_ms: u64, duration_ms: u64, uri: &str) -> Rec {
    (offset_ms, duration_ms, "GET", uri.to_string(), 200)
}

fn by_id(seen: &[Seen]) -> HashMap<String, Vec<&Seen>> {
    let mut map: HashMap<String, Vec<&Seen>> = HashMap::new();
    for s in seen {
        let id = s
            .headers
            .get("x-test-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        map.entry(id.to_string()).or_default().push(s);
    }
    for v in map.values_mut() {
        v.sort_by_key(|s| s.at);
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_gaps_are_kept_at_1x() {
    let mut upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let session = vec![get(0, 1, "/a"), get(200, 1, "/b"), get(700, 1, "/c")];
    let store = synthetic_capture(&dir.path().join("c.db"), &[session]).await;
    let report = replay_with(&store, &upstream.url(), Profile::single(1, 1.0), |_| {}).await;
    assert_eq!(report.stages[0].requests, 3);
    let seen = upstream.drain();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/a", "/b", "/c"], "arrivals in recorded order");
    // Sends never leave early, but one may leave late (tokio's millisecond
    // timer, a busy machine), which shortens the following gap by as much:
    // allow the largest lag the replay measured, plus 2 ms on the wire.
    let lag = Duration::from_secs_f64(report.stages[0].send_lag_ms.max / 1000.0);
    let slack = lag + Duration::from_millis(2);
    assert!(
        seen[1].at - seen[0].at + slack >= Duration::from_millis(200),
        "lag {lag:?}"
    );
    assert!(
        seen[2].at - seen[1].at + slack >= Duration::from_millis(500),
        "lag {lag:?}"
    );
    for s in &seen {
        assert!(
            s.headers.contains_key("x-tapedeck-replay"),
            "replayed requests are marked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplier_5_plays_five_users_per_session_and_nothing_else() {
    let mut upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sessions: Vec<Vec<Rec>> = (0..10u64)
        .map(|s| {
            vec![
                get(s * 30, 1, &format!("/s{s}/first")),
                get(s * 30 + 100, 1, &format!("/s{s}/second")),
            ]
        })
        .collect();
    let store = synthetic_capture(&dir.path().join("c.db"), &sessions).await;
    let report = replay_with(&store, &upstream.url(), Profile::single(5, 1.0), |_| {}).await;
    let stage = &report.stages[0];
    assert_eq!((stage.vus, stage.requests), (50, 100));
    let seen = upstream.drain();
    assert_eq!(
        seen.len(),
        100,
        "the target sees exactly the planned requests"
    );
    let ids = by_id(&seen);
    for s in 0..10 {
        let first = &ids[&format!("s{s}-0")];
        let second = &ids[&format!("s{s}-1")];
        assert_eq!((first.len(), second.len()), (5, 5));
        // Matching clones in arrival order: each second request follows a first.
        for (a, b) in first.iter().zip(second.iter()) {
            assert!(
                b.at > a.at,
                "session {s}: a clone's second request came before its first"
            );
        }
        let mut starts: Vec<_> = first.iter().map(|x| x.at).collect();
        starts.dedup();
        assert_eq!(starts.len(), 5, "clones of session {s} are spread");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_requests_overlap_and_sequential_ones_wait_and_count_as_late() {
    let mut upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Recorded: A 0-100 ms; B at 50 ms overlaps A; C at 150 ms after A ended.
    // Replayed, A takes 400 ms: B must still go at ~50 ms, C must wait for A.
    let session = vec![
        get(0, 100, "/slow?ms=400"),
        get(50, 10, "/b"),
        get(150, 10, "/c"),
    ];
    let store = synthetic_capture(&dir.path().join("c.db"), &[session]).await;
    let report = replay_with(&store, &upstream.url(), Profile::single(1, 1.0), |_| {}).await;
    let seen = upstream.drain();
    let find = |p: &str| {
        seen.iter()
            .find(|s| s.path == p)
            .unwrap_or_else(|| panic!("{p} not seen"))
    };
    let (a, b, c) = (find("/slow"), find("/b"), find("/c"));
    assert!(
        b.at < a.answered_at,
        "B overlapped A in the recording and is sent while A runs"
    );
    assert!(
        c.at >= a.answered_at,
        "C followed A's response in the recording and waits for it"
    );
    let stage = &report.stages[0];
    assert!(
        stage.late_requests >= 1,
        "C was sent after its planned start"
    );
    assert!(stage.corrected_latency_ms.max >= stage.latency_ms.max);
    assert!(
        stage.send_lag_ms.max >= 200.0,
        "C waited ~250 ms past its plan: {:?}",
        stage.send_lag_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_kinds_are_disjoint_and_a_faithful_404_is_not_an_error() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sessions = vec![
        vec![
            get(0, 1, "/status/500"),
            get(10, 1, "/status/429"),
            (20, 1, "GET", "/status/404".to_string(), 200),
            (30, 1, "GET", "/status/404".to_string(), 404),
            get(40, 1, "/hang"),
        ],
        // The upstream dies at 600 ms, after /hang timed out (40 + 300 ms);
        // the request at 900 ms finds the port closed.
        vec![get(600, 1, "/die"), get(900, 1, "/after")],
    ];
    let store = synthetic_capture(&dir.path().join("c.db"), &sessions).await;
    let mut profile = Profile::single(1, 1.0);
    profile.safety.request_timeout = Duration::from_millis(300);
    let report = replay_with(&store, &upstream.url(), profile, |_| {}).await;
    let s = &report.stages[0];
    let kinds = &s.error_kinds;
    assert_eq!(kinds["http_5xx"], 1);
    assert_eq!(kinds["http_429"], 1);
    assert_eq!(
        kinds["http_4xx"], 1,
        "only the 404 the recording did not get"
    );
    assert_eq!(kinds["timeout"], 1);
    assert_eq!(kinds["connect"], 1, "{kinds:?}");
    // 500, 429 and the unfaithful 404 changed status class; the faithful 404 did not.
    assert_eq!(s.status_mismatches, 3);
    assert_eq!(s.status_counts["404"], 2);
    // /die's own answer may be cut with its connection.
    let reset = kinds["reset"];
    assert!(reset <= 1, "{kinds:?}");
    assert_eq!(
        s.errors,
        5 + reset,
        "errors is the sum of the disjoint kinds: {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_has_every_contract_key_and_shards_add_up_to_the_whole() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sessions: Vec<Vec<Rec>> = (0..6u64)
        .map(|s| vec![get(s * 10, 1, &format!("/items/{s}"))])
        .collect();
    let store = synthetic_capture(&dir.path().join("c.db"), &sessions).await;
    let whole = replay_with(&store, &upstream.url(), Profile::single(3, 4.0), |_| {}).await;
    let json = serde_json::to_value(&whole).expect("serialize");
    for key in [
        "format",
        "tool_version",
        "capture",
        "target",
        "profile",
        "shard",
        "started_at",
        "finished_at",
        "verdict",
        "stages",
        "capacity",
    ] {
        assert!(json.get(key).is_some(), "report lacks {key}");
    }
    assert_eq!(json["format"], "tapedeck-report/1");
    let stage = &json["stages"][0];
    for key in [
        "name",
        "multiplier",
        "speed",
        "started_at",
        "duration_s",
        "vus",
        "requests",
        "errors",
        "throughput_rps",
        "latency_ms",
        "corrected_latency_ms",
        "ttfb_ms",
        "status_counts",
        "error_kinds",
        "status_mismatches",
        "late_requests",
        "substitutions",
        "substitutions_by_kind",
        "unresolved_values",
        "dependent_skipped",
        "truncated_skipped",
        "suspected_dedup",
        "conflicting_values",
        "routes",
        "timeline",
        "hdr",
        "slo",
    ] {
        assert!(stage.get(key).is_some(), "stage lacks {key}");
    }
    for key in ["p50", "p90", "p95", "p99", "p999", "max", "mean"] {
        assert!(
            stage["latency_ms"].get(key).is_some(),
            "latency_ms lacks {key}"
        );
    }
    for key in [
        "connect", "timeout", "reset", "tls", "http_429", "http_4xx", "http_5xx",
    ] {
        assert!(
            stage["error_kinds"].get(key).is_some(),
            "error_kinds lacks {key}"
        );
    }
    assert_eq!(stage["routes"][0]["route"], "GET /items/{id}");
    assert_eq!(stage["routes"][0]["conflicting_values"], 0);
    for key in [
        "t_s", "requests", "errors", "p50_ms", "p95_ms", "p99_ms", "hdr",
    ] {
        assert!(
            stage["timeline"][0].get(key).is_some(),
            "timeline lacks {key}"
        );
    }
    for key in [
        "safe_multiplier",
        "peak_multiplier",
        "breaking_multiplier",
        "notes",
    ] {
        assert!(json["capacity"].get(key).is_some(), "capacity lacks {key}");
    }
    // Round trip through JSON.
    let back: Report = serde_json::from_value(json).expect("deserialize");
    assert_eq!(back, whole);

    let one = replay_with(&store, &upstream.url(), Profile::single(3, 4.0), |c| {
        c.shard = Some((0, 2))
    })
    .await;
    let two = replay_with(&store, &upstream.url(), Profile::single(3, 4.0), |c| {
        c.shard = Some((1, 2))
    })
    .await;
    let merged = tapedeck::report::merge(
        &[("1".into(), one.clone()), ("2".into(), two.clone())],
        None,
    )
    .expect("merge");
    let (m, w) = (&merged.stages[0], &whole.stages[0]);
    assert_eq!(
        (m.vus, m.requests, &m.status_counts),
        (w.vus, w.requests, &w.status_counts)
    );
    assert!(
        one.stages[0].vus > 0 && two.stages[0].vus > 0,
        "both shards got VUs"
    );
    let mut other = two.clone();
    other.seed += 1;
    let err = tapedeck::report::merge(&[("1".into(), one), ("2".into(), other)], None)
        .expect_err("seeds differ");
    assert!(err.to_string().contains("seed"), "{err}");
}

#[tokio::test]
async fn every_shipped_profile_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("replay-profiles");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("replay-profiles/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let p = Profile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            names.push(p.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        ["10x", "1x", "5x", "capacity", "progressive", "smoke"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capacity_profile_shows_p95_rising_with_load_on_a_small_backend() {
    use tapedeck::demo::backend::{BackendConfig, DemoBackend};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = BackendConfig {
        workers: 4,
        service_time: Duration::from_millis(20),
        ..BackendConfig::default()
    };
    let backend =
        DemoBackend::start(listener, config, tapedeck::shutdown::Shutdown::new()).expect("backend");
    let dir = tempfile::tempdir().expect("tempdir");
    // 20 users, 4 requests each over ~1 s: ~80 rps at 1x, well under the
    // backend's 200 rps (4 workers x 20 ms); 10x is far over it. The route
    // is unknown to the backend, which answers 404 after the service time,
    // as the recording did: faithful, not errors.
    let sessions: Vec<Vec<Rec>> = (0..20u64)
        .map(|s| {
            (0..4u64)
                .map(|i| (s * 12 + i * 250, 20, "GET", "/api/nothing".to_string(), 404))
                .collect()
        })
        .collect();
    let store = synthetic_capture(&dir.path().join("c.db"), &sessions).await;
    let profile_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("replay-profiles/capacity.toml");
    let profile = Profile::load(&profile_path).expect("capacity profile");
    let report = replay_with(&store, &backend.url(), profile, |_| {}).await;
    let p95: Vec<f64> = report.stages.iter().map(|s| s.latency_ms.p95).collect();
    assert_eq!(report.stages.len(), 3, "{p95:?}");
    assert!(p95[2] > p95[0] * 2.0, "p95 rises from 1x to 10x: {p95:?}");
    let notes = report.capacity.notes.join("\n");
    assert!(notes.contains("p95 rose"), "the report says so: {notes}");
    backend.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_file_restores_redacted_passwords_and_headers_are_overridden() {
    use bytes::Bytes;
    use http::Method;
    let mut upstream = TestUpstream::start().await;
    let mut proxy = crate::support::TestProxy::start(&upstream.url()).await;
    let body = Bytes::from_static(br#"{"user":"ann","password":"hunter2"}"#);
    crate::support::send(
        &crate::support::client(),
        Method::POST,
        &proxy.url("/login"),
        &[("content-type", "application/json"), ("x-env", "recorded")],
        body,
    )
    .await;
    proxy.stop().await;
    upstream.drain();

    let credentials: tapedeck::replay::correlate::Credentials =
        toml::from_str("[users]\nann = \"hunter2\"\n").expect("valid credentials");
    let report = replay_with(
        &proxy.store,
        &upstream.url(),
        Profile::single(2, 1.0),
        |c| {
            c.credentials = Arc::new(credentials);
            c.headers = vec![("x-env".into(), "staging".into())];
        },
    )
    .await;
    assert_eq!(report.stages[0].requests, 2);
    assert_eq!(
        report.stages[0].substitutions_by_kind.get("credential"),
        Some(&2)
    );
    for seen in upstream.drain() {
        let sent: serde_json::Value = serde_json::from_slice(&seen.body).expect("json body");
        assert_eq!(
            sent,
            serde_json::json!({"user": "ann", "password": "hunter2"}),
            "a listed user stays itself"
        );
        assert_eq!(seen.headers["x-env"], "staging");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_plays_every_run_on_one_wall_time_timeline() {
    use tapedeck::capture::RunChoice;
    let mut upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Replica A's run starts at 0, replica B's 150 ms later (wall time).
    let a = vec![vec![get(0, 1, "/a1"), get(300, 1, "/a2")]];
    let b = vec![vec![get(0, 1, "/b1"), get(300, 1, "/b2")]];
    let store = crate::support::synthetic_runs(&dir.path().join("c.db"), &[(0, a), (150, b)]).await;
    let paths = |seen: Vec<Seen>| -> Vec<String> { seen.into_iter().map(|s| s.path).collect() };

    let all = replay_with(&store, &upstream.url(), Profile::single(1, 1.0), |c| {
        c.run = RunChoice::All;
    })
    .await;
    assert_eq!(
        (all.capture.run.as_str(), all.stages[0].requests),
        ("all", 4)
    );
    // Per-run offsets would send a1 and b1 together; wall time interleaves.
    assert_eq!(paths(upstream.drain()), ["/a1", "/b1", "/a2", "/b2"]);

    let latest = replay_with(&store, &upstream.url(), Profile::single(1, 1.0), |_| {}).await;
    assert_eq!(latest.capture.run, "2");
    assert_eq!(paths(upstream.drain()), ["/b1", "/b2"]);
    let first = replay_with(&store, &upstream.url(), Profile::single(1, 1.0), |c| {
        c.run = RunChoice::Id(1);
    })
    .await;
    assert_eq!(first.capture.run, "1");
    assert_eq!(paths(upstream.drain()), ["/a1", "/a2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxy_replicas_record_into_one_capture_at_once() {
    use tapedeck::capture::RunChoice;
    use tapedeck::proxy::{RecordConfig, Recording};
    let mut upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::create(&dir.path().join("c.db"))
        .await
        .expect("capture");
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let config = RecordConfig::new(Upstream::parse(&upstream.url()).expect("url"));
        replicas.push(
            Recording::start(
                listener,
                store.clone(),
                config,
                tapedeck::shutdown::Shutdown::new(),
            )
            .await
            .expect("record"),
        );
    }
    let client = crate::support::client();
    for (replica, id) in [(0, "a1"), (1, "b1"), (0, "a2"), (1, "b2"), (1, "b3")] {
        let url = format!("http://{}/{id}", replicas[replica].local_addr());
        let headers = [("x-test-id", id)];
        crate::support::send(
            &client,
            http::Method::GET,
            &url,
            &headers,
            bytes::Bytes::new(),
        )
        .await;
    }
    for r in replicas {
        let run = r.stop().await.expect("stop");
        assert_eq!(run.dropped, 0);
    }
    upstream.drain();
    let runs = store.runs().await.expect("runs");
    let counts: Vec<i64> = runs.iter().map(|r| r.exchanges).collect();
    assert_eq!(counts, [2, 3]);
    let all = replay_with(&store, &upstream.url(), Profile::single(1, 1.0), |c| {
        c.run = RunChoice::All;
    })
    .await;
    assert_eq!(all.stages[0].requests, 5);
    let mut seen: Vec<String> = upstream.drain().into_iter().map(|s| s.path).collect();
    seen.sort();
    assert_eq!(seen, ["/a1", "/a2", "/b1", "/b2", "/b3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_websocket_replays_at_5x_frame_by_frame() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let (recorded_on, _) = crate::support::ws_echo_upstream().await;
    let mut proxy = crate::support::TestProxy::start(&recorded_on).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/api/ws", proxy.addr))
        .await
        .expect("handshake");
    let script = ["join:c_1", "typing", "msg:hello"];
    for text in script {
        ws.send(Message::text(text)).await.expect("send");
        assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
    }
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
    .await
    .expect("close");
    while let Some(Ok(_)) = ws.next().await {}
    proxy.stop().await;

    let (fresh, sockets) = crate::support::ws_echo_upstream().await;
    let report = replay_with(&proxy.store, &fresh, Profile::single(5, 1.0), |_| {}).await;
    let seen = sockets.lock().expect("log").clone();
    assert_eq!(seen.len(), 5, "one socket per world");
    for socket in &seen {
        assert_eq!(socket, &script, "every socket's frames in order");
    }
    let stage = &report.stages[0];
    assert_eq!(
        (stage.requests, stage.errors),
        (5, 0),
        "{:?}",
        stage.error_kinds
    );
    let ws = stage
        .routes
        .iter()
        .find(|r| r.route == "GET /api/ws")
        .and_then(|r| r.websocket.as_ref())
        .expect("websocket statistics");
    assert_eq!(
        (ws.sockets, ws.frames_sent),
        (5, 20),
        "3 texts and a close each"
    );
    assert_eq!(ws.frames_received, 20, "3 echoes and a close each");
    assert_eq!(ws.close_codes.get("1000"), Some(&5));
    assert!(ws.rtt_ms.p50 > 0.0 && ws.connect_ms.p50 > 0.0, "{ws:?}");
}
