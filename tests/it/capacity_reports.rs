//! What capacity campaigns report, through the real binary against an
//! in-process upstream: per-route SLOs.

use tapedeck::report::Report;

use crate::support::{self, Rec, TestUpstream, synthetic_capture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_slo_one_route_meets_and_another_misses_fails_the_stage_naming_the_route() {
    let mut upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("c.db");
    // Fast reads of many ids, and a slow route answering after 60 ms.
    let mut session: Vec<Rec> = (0..20)
        .map(|i| (i * 10, 1, "GET", format!("/msg/{i}"), 200))
        .collect();
    session.extend((0..6).map(|i| (i * 30, 60, "GET", "/slow?ms=60".to_string(), 200)));
    synthetic_capture(&capture, &[session]).await.close().await;
    let profile = dir.path().join("p.toml");
    std::fs::write(
        &profile,
        r#"
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
"#,
    )
    .expect("profile");
    let report = dir.path().join("r.json");
    let (code, stdout, stderr) = support::output(&[
        "replay",
        capture.to_str().expect("utf-8"),
        "--target",
        &upstream.url(),
        "--profile",
        profile.to_str().expect("utf-8"),
        "--report",
        report.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(
        code, 1,
        "a failed route SLO fails the run: {stdout}{stderr}"
    );
    assert_eq!(upstream.drain().len(), 26, "the target saw every request");
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("JSON");
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
    assert!(stdout.contains("FAIL (p95_ms of GET /slow)"), "{stdout}");
}
