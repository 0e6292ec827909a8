//! Retention and volume (the real binary): `captures delete` and `captures
//! prune` take runs out of a capture so that no byte of their bodies stays
//! in the file or beside it, refuse a run that is being recorded, and
//! `record --sample` records a consistent share of the sessions whole.
//! docs/reliability.md ("Retention") lists the promises these check.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tapedeck::capture::Store;

use crate::support::admin::{admin_address, dropped, get, wait_for};
use crate::support::{self, TestUpstream, output, pattern, send};

/// A string no other run sends: the run's mark in its bodies.
fn marker(run: &str) -> String {
    format!("RETENTION-{run}-{:016x}", rand::random::<u64>())
}

/// The capture file and the `-wal` and `-shm` files beside it that exist.
fn capture_files(capture: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut name = capture.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        })
        .filter(|p| p.exists())
        .collect()
}

/// The files of [`capture_files`] that hold `needle` anywhere in their
/// bytes.
fn files_holding(capture: &Path, needle: &str) -> Vec<PathBuf> {
    capture_files(capture)
        .into_iter()
        .filter(|p| {
            let bytes = std::fs::read(p).expect("read capture file");
            memchr::memmem::find(&bytes, needle.as_bytes()).is_some()
        })
        .collect()
}

/// Sends `requests` POSTs to `/echo` through a recorder at `addr`, in two
/// sessions, each body carrying `marker` (and one of them 100 KiB, so the
/// run has overflow pages too); the echo puts it in the response bodies.
async fn post_marked(addr: &str, marker: &str, requests: usize) {
    let client = support::client();
    for i in 0..requests {
        let mut body = format!("message {i} {marker} ").into_bytes();
        if i == 0 {
            for chunk in 0..1600 {
                body.extend_from_slice(&pattern(chunk, 48));
                body.extend_from_slice(marker.as_bytes());
            }
        }
        let session = format!("sess-{}-{}", &marker[10..14], i % 2);
        let (status, _, answer) = send(
            &client,
            Method::POST,
            &format!("http://{addr}/echo"),
            &[("x-session-id", &session)],
            Bytes::from(body),
        )
        .await;
        assert_eq!(status, 200);
        assert!(memchr::memmem::find(&answer, marker.as_bytes()).is_some());
    }
}

/// Records one run of `requests` marked POSTs into `capture` with the real
/// binary and stops it with SIGTERM.
async fn record_marked_run(capture: &Path, upstream: &TestUpstream, marker: &str, requests: usize) {
    let (mut child, addr, _lines) =
        support::record_process(&upstream.url(), capture.as_os_str()).await;
    post_marked(&addr, marker, requests).await;
    assert_eq!(support::terminate(&mut child).await, Some(0));
}

/// The run ids `captures list --json` shows.
async fn listed_runs(capture: &str) -> Vec<i64> {
    let (code, json, err) = output(&["captures", "list", capture, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let runs: Vec<serde_json::Value> = serde_json::from_str(&json).expect("runs as JSON");
    runs.iter().map(|r| r["id"].as_i64().expect("id")).collect()
}

/// The number before `what` in a summary line (`12 exchanges`).
fn count(line: &str, what: &str) -> u64 {
    let before = line
        .split(what)
        .next()
        .and_then(|s| s.split_whitespace().last())
        .unwrap_or_else(|| panic!("no `{what}` in {line:?}"));
    before
        .trim_start_matches('(')
        .parse()
        .unwrap_or_else(|_| panic!("no count before `{what}` in {line:?}"))
}

fn assert_private(capture: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for file in capture_files(capture) {
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_a_run_so_no_byte_of_its_bodies_stays_in_the_file_or_its_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("retention.db");
    let path = capture.to_str().expect("utf8 path");
    let upstream = TestUpstream::start().await;
    let (first, second) = (marker("first"), marker("second"));
    record_marked_run(&capture, &upstream, &first, 12).await;
    record_marked_run(&capture, &upstream, &second, 12).await;
    assert!(
        !files_holding(&capture, &first).is_empty(),
        "the first run's bodies are in the capture before the delete"
    );

    let (code, out, err) = output(&["captures", "delete", path, "--run", "1"]).await;
    assert_eq!(code, 0, "{err}");
    let line = out.trim();
    assert!(line.starts_with("removed 1 run (1): "), "{line}");
    assert_eq!(count(line, " sessions"), 2, "{line}");
    assert_eq!(count(line, " exchanges"), 12, "{line}");
    assert_eq!(
        files_holding(&capture, &first),
        Vec::<PathBuf>::new(),
        "no byte of the removed run is left"
    );
    assert!(count(line, " bytes freed") > 100_000, "{line}");
    assert!(
        !files_holding(&capture, &second).is_empty(),
        "the other run is still there"
    );
    assert_eq!(listed_runs(path).await, [2]);
    assert_private(&capture);
    let store = Store::open(&capture).await.expect("open");
    let kept = store.exchanges(2).await.expect("run 2 reads");
    assert_eq!(kept.len(), 12);
    store.close().await;

    let (code, _, err) = output(&["captures", "delete", path, "--run", "1"]).await;
    assert_eq!(code, 2, "a run that is not there");
    assert!(
        err.contains("no run 1") && err.contains("captures list"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_the_runs_older_than_the_duration_and_keeps_the_newer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("prune.db");
    let path = capture.to_str().expect("utf8 path");
    let upstream = TestUpstream::start().await;
    let (old, new) = (marker("old"), marker("new"));
    record_marked_run(&capture, &upstream, &old, 6).await;
    record_marked_run(&capture, &upstream, &new, 6).await;
    // The first run becomes eight days old, as if it had been recorded then.
    let aged = std::process::Command::new("sqlite3")
        .arg(&capture)
        .arg(
            "UPDATE captures SET started_at_us = started_at_us - 8 * 86400000000, \
             stopped_at_us = stopped_at_us - 8 * 86400000000 WHERE id = 1",
        )
        .status()
        .expect("sqlite3");
    assert!(aged.success());

    let (code, out, err) = output(&["captures", "prune", path, "--older-than", "7d"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.trim()
            .starts_with("removed 1 run (1): 2 sessions, 6 exchanges, "),
        "{out}"
    );
    assert_eq!(files_holding(&capture, &old), Vec::<PathBuf>::new());
    assert!(!files_holding(&capture, &new).is_empty());
    assert_eq!(listed_runs(path).await, [2]);

    let (code, out, _) = output(&["captures", "prune", path, "--older-than", "1w"]).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("removed 0 runs: 0 sessions, 0 exchanges"),
        "{out}"
    );
    // Every finished run started before now.
    let (code, out, _) = output(&["captures", "prune", path, "--older-than", "0s"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("removed 1 run (2): "), "{out}");
    assert_eq!(files_holding(&capture, &new), Vec::<PathBuf>::new());
    assert_eq!(listed_runs(path).await, Vec::<i64>::new());
    assert_private(&capture);

    let (code, _, err) = output(&["captures", "prune", path, "--older-than", "7"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("7d"), "the accepted forms are named: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_being_recorded_is_refused_by_delete_and_kept_by_prune() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("live.db");
    let path = capture.to_str().expect("utf8 path");
    let upstream = TestUpstream::start().await;
    let (done, live) = (marker("done"), marker("live"));
    record_marked_run(&capture, &upstream, &done, 4).await;
    let (mut child, addr, _lines) =
        support::record_process(&upstream.url(), capture.as_os_str()).await;
    post_marked(&addr, &live, 4).await;

    let (code, _, err) = output(&["captures", "delete", path, "--run", "2"]).await;
    assert_eq!(code, 2, "a live run is not deleted");
    assert!(
        err.contains("run 2 is still being recorded") && err.contains("SIGTERM"),
        "the error names the run and what to do: {err}"
    );
    let (code, out, err) = output(&["captures", "delete", path, "--run", "1", "--run", "2"]).await;
    assert_eq!(code, 2, "all or nothing: {out}");
    assert!(err.contains("run 2"), "{err}");
    assert_eq!(listed_runs(path).await, [1, 2]);

    let (code, out, err) = output(&["captures", "prune", path, "--older-than", "0s"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("removed 1 run (1): "), "{out}");
    assert!(err.contains("run 2") && err.contains("kept"), "{err}");
    assert_eq!(
        files_holding(&capture, &done),
        Vec::<PathBuf>::new(),
        "the finished run is gone while the other one records"
    );

    // The recorder goes on after its file was compacted under it.
    post_marked(&addr, &live, 4).await;
    assert_eq!(support::terminate(&mut child).await, Some(0));
    let store = Store::open(&capture).await.expect("open");
    let run = store.run(Some(2)).await.expect("run 2");
    assert_eq!((run.exchanges, run.dropped), (8, 0));
    store.close().await;
    let (code, out, err) = output(&["captures", "delete", path, "--run", "2"]).await;
    assert_eq!(code, 0, "a stopped run can go: {err}");
    assert!(
        out.starts_with("removed 1 run (2): 2 sessions, 8 exchanges"),
        "{out}"
    );
    assert_eq!(files_holding(&capture, &live), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_delete_refuses_a_live_run_and_removes_a_stopped_one() {
    let capture = support::pg_capture().await;
    let upstream = TestUpstream::start().await;
    let (done, live) = (marker("done"), marker("live"));
    record_marked_run(Path::new(&capture), &upstream, &done, 4).await;
    let (mut child, addr, _lines) =
        support::record_process(&upstream.url(), std::ffi::OsStr::new(&capture)).await;
    post_marked(&addr, &live, 4).await;

    let (code, _, err) = output(&["captures", "delete", &capture, "--run", "2"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("run 2 is still being recorded"), "{err}");
    let (code, out, err) = output(&["captures", "delete", &capture, "--run", "1"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("removed 1 run (1): 2 sessions, 4 exchanges (the server's VACUUM"),
        "{out}"
    );
    let store = Store::open(Path::new(&capture)).await.expect("open");
    assert!(store.exchanges(1).await.expect("read").is_empty());
    assert_eq!(listed_runs(&capture).await, [2]);

    assert_eq!(support::terminate(&mut child).await, Some(0));
    let (code, out, err) = output(&["captures", "prune", &capture, "--older-than", "0s"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("removed 1 run (2): 2 sessions, 4 exchanges"),
        "{out}"
    );
    assert!(store.exchanges(2).await.expect("read").is_empty());
    store.close().await;
}

/// Sessions of the sampling test, requests per session, the fraction.
const SESSIONS: usize = 400;
const PER_SESSION: usize = 3;
const SAMPLE: f64 = 0.25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_records_about_a_quarter_of_the_sessions_each_whole_and_counts_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("sampled.db");
    let mut upstream = TestUpstream::start().await;
    let (mut child, addr, mut lines) = support::record_process_with(
        &upstream.url(),
        capture.as_os_str(),
        &["--sample", "0.25", "--admin", "127.0.0.1:0"],
    )
    .await;
    let admin = admin_address(&mut lines).await;

    // Eight clients, each with its share of the sessions; the requests of
    // a session go one after another.
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let client = support::client();
                for s in (w..SESSIONS).step_by(8) {
                    let session = format!("user-{s:04}");
                    for r in 0..PER_SESSION {
                        let (status, _, _) = send(
                            &client,
                            Method::GET,
                            &format!("http://{addr}/api/rooms/{s}/messages?page={r}"),
                            &[("x-session-id", &session)],
                            Bytes::new(),
                        )
                        .await;
                        assert_eq!(status, 200, "every request is forwarded");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("client");
    }
    let answered = (SESSIONS * PER_SESSION) as u64;
    assert_eq!(upstream.drain().len() as u64, answered);
    let m = wait_for(
        &admin,
        Duration::from_secs(30),
        "every answer counted",
        |m| {
            get(m, "tapedeck_exchanges_recorded_total")
                + dropped(m)
                + get(m, "tapedeck_exchanges_unsampled_total")
                == answered
        },
    )
    .await;
    let recorded = get(&m, "tapedeck_exchanges_recorded_total");
    let unsampled = get(&m, "tapedeck_exchanges_unsampled_total");
    assert_eq!(dropped(&m), 0);

    assert_eq!(support::terminate(&mut child).await, Some(0));
    let summary = lines
        .next_line()
        .await
        .expect("read")
        .expect("summary line");
    assert!(
        summary.contains(&format!("{recorded} exchanges"))
            && summary.contains("(a 0.25 sample)")
            && summary.contains(&format!("0 dropped, {unsampled} unsampled")),
        "{summary}"
    );

    let store = Store::open(&capture).await.expect("open");
    let run = store.run(None).await.expect("run");
    assert_eq!(run.sample_fraction, SAMPLE);
    let sessions = store.sessions(run.id).await.expect("sessions");
    let n = sessions.len();
    assert!(
        (SESSIONS * 15 / 100..=SESSIONS * 35 / 100).contains(&n),
        "{n} of {SESSIONS} sessions recorded at {SAMPLE}"
    );
    assert!(
        sessions.iter().all(|s| s.exchanges == PER_SESSION as i64),
        "every recorded session is whole: {:?}",
        sessions.iter().map(|s| s.exchanges).collect::<Vec<_>>()
    );
    let numbers: Vec<i64> = sessions.iter().map(|s| s.session_no).collect();
    assert_eq!(numbers, (1..=n as i64).collect::<Vec<_>>(), "numbered 1..n");
    assert_eq!(recorded, (n * PER_SESSION) as u64);
    assert_eq!(run.exchanges as u64, recorded);
    assert_eq!(unsampled, answered - recorded);
    store.close().await;

    let path = capture.to_str().expect("utf8 path");
    let (code, show, _) = output(&["captures", "show", path]).await;
    assert_eq!(code, 0);
    assert!(show.contains("sampled    0.25 of the sessions"), "{show}");

    for bad in ["0", "1.5", "-0.1"] {
        let (code, _, err) = output(&[
            "record",
            "--upstream",
            &upstream.url(),
            "--capture",
            path,
            &format!("--sample={bad}"),
        ])
        .await;
        assert_eq!(code, 2, "--sample {bad}");
        assert!(err.contains("above 0 and at most 1"), "{err}");
    }
}
