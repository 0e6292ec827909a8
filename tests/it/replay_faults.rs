//! Replay under faults and bad input, through the real binary: a stop
//! signal mid-run, a report path that cannot be written, a target that
//! dies mid-run, and numbers past their bounds.

use std::path::Path;
use std::time::Duration;

use tapedeck::report::Report;

use crate::support::{self, Rec, TestUpstream, synthetic_capture};

/// One session of `n` GETs `gap_ms` apart.
fn steady(n: u64, gap_ms: u64) -> Vec<Rec> {
    (0..n)
        .map(|i| (i * gap_ms, 1, "GET", format!("/msg/{i}"), 200))
        .collect()
}

fn replay_args<'a>(capture: &'a str, target: &'a str, report: &'a str) -> Vec<&'a str> {
    vec![
        "replay",
        capture,
        "--target",
        target,
        "--report",
        report,
        "--multiplier",
        "1",
    ]
}

fn read_report(path: &Path) -> Report {
    let text = std::fs::read_to_string(path).expect("report written");
    serde_json::from_str(&text).expect("report JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_mid_replay_writes_a_partial_report_and_exits_3() {
    let mut upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("c.db");
    // A minute of traffic: the signal comes long before its end.
    synthetic_capture(&capture, &[steady(600, 100)]).await;
    let report = dir.path().join("r.json");
    let child = support::tapedeck()
        .args(replay_args(
            capture.to_str().expect("utf-8"),
            &upstream.url(),
            report.to_str().expect("utf-8"),
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn replay");
    // Mid-run: once the target has seen 20 requests.
    let mut seen = 0;
    while seen < 20 {
        let s = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let got = upstream.drain().len();
                if got > 0 {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the replay sends");
        seen += s;
    }
    let pid = child.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("exits after the signal")
        .expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "stdout {stdout}");
    assert!(stdout.contains("interrupted"), "{stdout}");
    let seen = seen + upstream.drain().len();
    let r = read_report(&report);
    assert!(r.interrupted);
    assert_eq!(r.verdict.to_string(), "aborted");
    let requests = r.stages[0].requests as usize;
    // What the report measured is what the target answered, less at most
    // the one request in flight when the signal came.
    assert!(
        requests < 600 && requests <= seen && seen <= requests + 1,
        "report {requests}, target {seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_report_path_exits_2_before_sending_anything() {
    let mut upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("c.db");
    synthetic_capture(&capture, &[steady(5, 10)]).await;
    // A path under a regular file cannot be written, even by root.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").expect("write");
    let report = file.join("r.json");
    let (code, _, stderr) = support::output(&replay_args(
        capture.to_str().expect("utf-8"),
        &upstream.url(),
        report.to_str().expect("utf-8"),
    ))
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--report") && stderr.contains("is a file, not a directory"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("not a directory").count(),
        1,
        "said once: {stderr}"
    );
    assert!(upstream.drain().is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_dies_mid_run_is_not_a_pass() {
    let mut upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("c.db");
    // Two seconds of traffic; the target stops at 0.3 s (`/die`), so most
    // requests find its port closed.
    let mut session = steady(40, 50);
    session[6].3 = "/die".into();
    synthetic_capture(&capture, &[session]).await;
    let report = dir.path().join("r.json");
    let (code, stdout, stderr) = support::output(&replay_args(
        capture.to_str().expect("utf-8"),
        &upstream.url(),
        report.to_str().expect("utf-8"),
    ))
    .await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("not a valid measurement"), "{stdout}");
    let r = read_report(&report);
    assert_eq!(r.verdict.to_string(), "fail");
    let why = r.stages[0].invalid.as_deref().expect("marked invalid");
    assert!(why.contains("connect"), "{why}");
    // The target saw the requests before it stopped, and no more.
    let seen = upstream.drain().len();
    assert!((6..=8).contains(&seen), "target saw {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_past_their_bounds_exit_2_naming_the_flag_without_a_large_allocation() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("c.db");
    synthetic_capture(&capture, &[steady(5, 10)]).await;
    let report = dir.path().join("r.json");
    let (capture, report, target) = (
        capture.to_str().expect("utf-8"),
        report.to_str().expect("utf-8"),
        upstream.url(),
    );
    for (flag, value, named) in [
        ("--speed", "1e-300", "speed"),
        ("--speed", "inf", "speed"),
        ("--multiplier", "4000000000", "multiplier"),
        ("--duration", "5000000h", "duration"),
        ("--timeout", "100000d", "request_timeout"),
        ("--max-invalid", "1.5", "max_invalid"),
    ] {
        let mut args = replay_args(capture, &target, report);
        args.retain(|a| *a != "--multiplier" && *a != "1");
        args.extend([flag, value]);
        let (code, _, stderr, peak) = support::output_with_peak_rss(&args).await;
        assert_eq!(code, 2, "{flag} {value}: {stderr}");
        assert!(stderr.contains(named), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(peak < 200 << 20, "{flag} {value}: peak RSS {peak} bytes");
    }
}
