//! W3C Trace Context on replayed requests, through the real binary:
//! every request the target sees carries a fresh, valid `traceparent`
//! (never the recorded one), and the report's slowest requests per route
//! name trace ids the target saw.

use std::collections::HashSet;

use bytes::Bytes;
use http::Method;
use tapedeck::report::model::RouteReport;

use crate::support::{self, TestProxy, TestUpstream, replay_capture, synthetic_capture};

const RECORDED_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

const PROFILE: &str = "version = 1\n[[stage]]\nname = \"2x\"\nmultiplier = 2\nspeed = 4\n";

/// Replays `capture` at 2x against `target` with `extra` flags: the
/// report's routes.
async fn replay(capture: &std::path::Path, target: &str, extra: &[&str]) -> Vec<RouteReport> {
    let (code, output, report) = replay_capture(capture, target, PROFILE, extra).await;
    assert_eq!(code, 0, "{output}");
    report.stages[0].routes.clone()
}

/// The trace id of a valid version-00 `traceparent`, or why it is not one.
fn trace_id(value: &str) -> Result<&str, String> {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && s.bytes().any(|b| b != b'0')
    };
    match parts.as_slice() {
        ["00", trace, parent, "01"] if hex(trace, 32) && hex(parent, 16) => Ok(trace),
        _ => Err(format!("not a sampled version-00 traceparent: {value:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replayed_request_carries_a_fresh_traceparent_and_slowest_names_them() {
    let mut upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url()).await;
    // A client that was itself traced: its traceparent and tracestate
    // are recorded with the requests.
    let recorded = format!("00-{RECORDED_TRACE}-00f067aa0ba902b7-01");
    let headers = [
        ("traceparent", recorded.as_str()),
        ("tracestate", "vendor=recorded"),
    ];
    let client = support::client();
    for i in 0..12 {
        let path = match i % 3 {
            0 => format!("/slow?ms={}", 20 + i),
            _ => format!("/items/{i}"),
        };
        support::send(
            &client,
            Method::GET,
            &proxy.url(&path),
            &headers,
            Bytes::new(),
        )
        .await;
    }
    proxy.stop().await;
    upstream.drain();

    let routes = replay(&proxy.capture, &upstream.url(), &[]).await;
    let seen = upstream.drain();
    assert_eq!(seen.len(), 24, "every request twice at 2x");
    let mut traces = HashSet::new();
    for s in &seen {
        let value = s.headers["traceparent"].to_str().expect("ascii");
        let id = trace_id(value).unwrap_or_else(|e| panic!("{} {}: {e}", s.path, value));
        assert_ne!(id, RECORDED_TRACE, "the recorded trace is never resent");
        assert_eq!(s.headers.get_all("traceparent").iter().count(), 1);
        assert!(s.headers.get("tracestate").is_none(), "{:?}", s.headers);
        traces.insert(id.to_string());
    }
    assert_eq!(traces.len(), 24, "a fresh trace id per request");

    let slowest = |route: &str| {
        routes
            .iter()
            .find(|r| r.route == route)
            .unwrap_or_else(|| panic!("no route {route}: {routes:?}"))
            .slowest
            .clone()
    };
    // 8 slow requests (all kept), 16 item reads (the 10 slowest kept).
    let (slow, items) = (slowest("GET /slow"), slowest("GET /items/{id}"));
    assert_eq!((slow.len(), items.len()), (8, 10));
    for entry in slow.iter().chain(&items) {
        let id = entry.trace_id.as_deref().expect("trace id");
        assert!(traces.contains(id), "{id} was never seen by the target");
        assert_eq!(entry.status, Some(200));
        assert!(entry.started_at.ends_with('Z'), "{entry:?}");
    }
    let ms: Vec<f64> = slow.iter().map(|e| e.latency_ms).collect();
    assert!(ms.windows(2).all(|w| w[0] >= w[1]), "slowest first: {ms:?}");
    // The slowest recorded answer took 29 ms (`/slow?ms=29`).
    assert!(ms[0] >= 29.0, "{ms:?}");

    // Off: no traceparent at all, recorded or fresh; no trace ids kept.
    let routes = replay(&proxy.capture, &upstream.url(), &["--no-traceparent"]).await;
    assert!(routes.iter().any(|r| !r.slowest.is_empty()));
    let seen = upstream.drain();
    assert_eq!(seen.len(), 24);
    for s in &seen {
        assert!(
            s.headers.get("traceparent").is_none() && s.headers.get("tracestate").is_none(),
            "{:?}",
            s.headers
        );
    }
    assert!(
        routes
            .iter()
            .flat_map(|r| &r.slowest)
            .all(|e| e.trace_id.is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_timed_out_is_among_the_slowest_with_the_trace_id_it_carried() {
    let mut upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("c.db");
    // `/hang` never answers.
    let session = vec![(0, 5, "GET", "/hang".to_string(), 200)];
    synthetic_capture(&capture, &[session]).await.close().await;
    let profile = "version = 1\n[safety]\nrequest_timeout = \"300ms\"\n[[stage]]\nname = \"1x\"\n";
    let (_, output, report) = replay_capture(&capture, &upstream.url(), profile, &[]).await;
    let seen = upstream.drain();
    assert_eq!(seen.len(), 1, "{output}");
    let sent = trace_id(seen[0].headers["traceparent"].to_str().expect("ascii"))
        .expect("a valid traceparent")
        .to_string();
    let slowest = &report.stages[0].routes[0].slowest;
    assert_eq!(slowest.len(), 1, "{slowest:?}");
    assert_eq!(slowest[0].trace_id.as_deref(), Some(sent.as_str()));
    assert_eq!(slowest[0].error.as_deref(), Some("timeout"));
    assert_eq!(slowest[0].status, None);
    assert!(slowest[0].latency_ms >= 300.0, "{slowest:?}");
}
