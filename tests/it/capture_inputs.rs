//! Captures as input, through the real binary: an empty file, a capture on
//! read-only storage, and a `--read-only` replay of a capture that writes
//! (requests and WebSockets), judged by what the backend stored.

use std::path::Path;
use std::time::Duration;

use tapedeck::demo::script::Population;
use tapedeck::report::Report;

use crate::support::disk::SmallDisk;
use crate::support::{self, Rec, TestUpstream, output_with_peak_rss, synthetic_capture};

/// Peak RSS a command reading bad input may reach (the bound).
const MAX_RSS: u64 = 200 << 20;

fn read_report(path: &Path) -> Report {
    let text = std::fs::read_to_string(path).expect("report written");
    serde_json::from_str(&text).expect("report JSON")
}

/// The names in a folder, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_capture_file_is_refused_by_every_reader_and_left_empty() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("empty.db");
    std::fs::write(&capture, b"").expect("empty file");
    let path = capture.to_str().expect("utf-8");
    let out = tempfile::tempdir().expect("tempdir");
    let report = out.path().join("r.json");
    let target = upstream.url();
    let commands: [&[&str]; 5] = [
        &["captures", "list", path],
        &["captures", "show", path],
        &["captures", "delete", path, "--run", "1"],
        &["captures", "prune", path, "--older-than", "1d"],
        &[
            "replay",
            path,
            "--target",
            &target,
            "--report",
            report.to_str().expect("utf-8"),
        ],
    ];
    for args in commands {
        let (code, _, stderr, peak) = output_with_peak_rss(args).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(
            stderr.matches(path).count(),
            1,
            "{args:?} names the file once: {stderr}"
        );
        assert!(
            stderr.contains("empty (0 bytes)") && stderr.contains("tapedeck record"),
            "{args:?} says what is wrong and what to do: {stderr}"
        );
        assert!(peak < MAX_RSS, "{args:?} peaked at {peak} bytes");
        assert_eq!(
            std::fs::metadata(&capture).expect("still there").len(),
            0,
            "{args:?} wrote into the empty file"
        );
        assert_eq!(listing(dir.path()), ["empty.db"], "{args:?} left files");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_on_read_only_storage_is_listed_shown_copied_and_replayed() {
    let disk = SmallDisk::mount("16m");
    let capture = disk.path.join("capture.db");
    let gets: Vec<Rec> = (0..20)
        .map(|i| (i * 5, 1, "GET", format!("/msg/{i}"), 200))
        .collect();
    synthetic_capture(&capture, &[gets]).await.close().await;
    let bytes = std::fs::read(&capture).expect("capture");
    disk.remount_read_only();
    let path = capture.to_str().expect("utf-8");

    let (code, stdout, stderr, peak) =
        output_with_peak_rss(&["captures", "list", path, "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(peak < MAX_RSS, "list peaked at {peak} bytes");
    let runs: serde_json::Value = serde_json::from_str(&stdout).expect("runs JSON");
    assert_eq!(runs[0]["exchanges"], 20, "{stdout}");

    let (code, stdout, stderr) = support::output(&["captures", "show", path]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("/msg/"), "{stdout}");

    let out = tempfile::tempdir().expect("tempdir");
    let copy = out.path().join("copy.db");
    let (code, _, stderr) =
        support::output(&["captures", "copy", path, copy.to_str().expect("utf-8")]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        support::sqlite_count(&copy, "SELECT count(*) FROM exchanges"),
        20
    );

    let mut upstream = TestUpstream::start().await;
    let report = out.path().join("r.json");
    let (code, _, stderr, peak) = output_with_peak_rss(&[
        "replay",
        path,
        "--target",
        &upstream.url(),
        "--report",
        report.to_str().expect("utf-8"),
        "--multiplier",
        "1",
        "--speed",
        "10",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(peak < MAX_RSS, "replay peaked at {peak} bytes");
    assert_eq!(upstream.drain().len(), 20, "the target saw every request");
    assert_eq!(read_report(&report).stages[0].requests, 20);

    // Changing it is refused with a message that says why, once.
    let (code, _, stderr) = support::output(&["captures", "delete", path, "--run", "1"]).await;
    assert_ne!(code, 0, "deleting from read-only storage cannot succeed");
    assert!(
        stderr.contains("read-only") || stderr.contains("readonly"),
        "{stderr}"
    );
    assert_eq!(stderr.matches(path).count(), 1, "{stderr}");
    assert_eq!(std::fs::read(&capture).expect("capture"), bytes);
    assert_eq!(listing(&disk.path), ["capture.db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_capture_on_writable_storage_writes_nothing_to_it_or_beside_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture.db");
    let gets: Vec<Rec> = (0..5)
        .map(|i| (i * 5, 1, "GET", format!("/msg/{i}"), 200))
        .collect();
    synthetic_capture(&capture, &[gets]).await.close().await;
    let before = std::fs::read(&capture).expect("capture");
    let modified = std::fs::metadata(&capture)
        .and_then(|m| m.modified())
        .expect("mtime");
    let path = capture.to_str().expect("utf-8");
    let upstream = TestUpstream::start().await;
    let out = tempfile::tempdir().expect("tempdir");
    let report = out.path().join("r.json");
    for args in [
        vec!["captures", "list", path],
        vec!["captures", "show", path],
        vec![
            "replay",
            path,
            "--target",
            &upstream.url(),
            "--report",
            report.to_str().expect("utf-8"),
            "--speed",
            "10",
        ],
    ] {
        let (code, _, stderr) = support::output(&args).await;
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert_eq!(listing(dir.path()), ["capture.db"], "{args:?} left files");
    }
    assert_eq!(std::fs::read(&capture).expect("capture"), before);
    assert_eq!(
        std::fs::metadata(&capture)
            .and_then(|m| m.modified())
            .expect("mtime"),
        modified
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_replay_stores_nothing_on_the_backend_and_counts_what_it_left_out() {
    let recorded_on = support::demo_backend().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture.db");
    let population = Population {
        users: 3,
        messages_per_user: 3,
        ramp: Duration::from_millis(30),
        think: (Duration::from_millis(2), Duration::from_millis(10)),
        seed: 5,
    };
    support::record_population(&recorded_on, &capture, population, false).await;
    let writes = support::sqlite_count(
        &capture,
        "SELECT count(*) FROM exchanges WHERE method NOT IN ('GET', 'HEAD', 'OPTIONS')",
    );
    let sockets = support::sqlite_count(
        &capture,
        "SELECT count(*) FROM exchanges WHERE status = 101",
    );
    let all = support::sqlite_count(&capture, "SELECT count(*) FROM exchanges");
    assert!(
        writes > 0 && sockets > 0,
        "the demo's users write and open sockets"
    );
    // Every recorded socket of the demo joins a conversation: its client
    // sends data.
    assert_eq!(
        support::demo_stats(&recorded_on).await.sockets,
        sockets as u64
    );
    assert!(support::demo_stats(&recorded_on).await.socket_frames >= sockets as u64);

    let target = support::demo_backend().await;
    let report = dir.path().join("r.json");
    let (code, _, stderr) = support::output(&[
        "replay",
        capture.to_str().expect("utf-8"),
        "--target",
        &target.url(),
        "--report",
        report.to_str().expect("utf-8"),
        "--read-only",
        "--multiplier",
        "1",
        "--speed",
        "20",
    ])
    .await;
    let stored = support::demo_stats(&target).await;
    assert_eq!(
        (stored.logins, stored.messages, stored.conversations),
        (0, 0, 0),
        "a read-only replay wrote: {stored:?}"
    );
    assert_eq!(
        (stored.sockets, stored.socket_frames),
        (0, 0),
        "a read-only replay opened sockets or sent frames: {stored:?}"
    );
    let report = read_report(&report);
    let stage = &report.stages[0];
    assert_eq!(
        stage.read_only_skipped,
        (writes + sockets) as u64,
        "every write and socket is counted as not sent ({stderr})"
    );
    assert_eq!(stage.requests, (all - writes - sockets) as u64);
    assert_eq!(stored.requests, stage.requests, "the backend saw the reads");
    assert!(code == 0 || code == 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_replay_opens_no_socket_whose_client_sent_data() {
    // A backend that takes any socket, so one sent would show in its log.
    let (target, sockets) = support::ws_echo_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture.db");
    let session: Vec<Rec> = vec![
        (0, 1, "POST", "/messages".into(), 201),
        (5, 1, "GET", "/socket".into(), 101),
        (10, 1, "GET", "/feed".into(), 200),
    ];
    synthetic_capture(&capture, &[session]).await.close().await;
    let report = dir.path().join("r.json");
    let (code, _, stderr) = support::output(&[
        "replay",
        capture.to_str().expect("utf-8"),
        "--target",
        &target,
        "--report",
        report.to_str().expect("utf-8"),
        "--read-only",
    ])
    .await;
    assert!(code == 0 || code == 1, "{stderr}");
    assert!(
        sockets.lock().expect("log").is_empty(),
        "the target saw sockets: {:?}",
        sockets.lock().expect("log")
    );
    let report = read_report(&report);
    assert_eq!(report.stages[0].read_only_skipped, 2, "{stderr}");
    assert_eq!(report.stages[0].requests, 1);
}
