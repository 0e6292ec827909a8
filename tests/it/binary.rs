//! The real `tapedeck` binary: signals, exit codes, commands' output.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Method;
use tapedeck::capture::Store;
use tokio::sync::Notify;

use crate::support::{self, TestProxy, TestUpstream, output, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_keeps_every_answered_request_in_a_clean_capture() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("nested/run.db");
    let (mut child, addr, mut lines) =
        support::record_process(&upstream.url(), capture.as_os_str()).await;

    let answered = Arc::new(Mutex::new(HashSet::new()));
    let enough = Arc::new(Notify::new());
    let client = support::client();
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (client, addr, answered, enough) = (
                client.clone(),
                addr.clone(),
                answered.clone(),
                enough.clone(),
            );
            tokio::spawn(async move {
                for i in 0..100_000u64 {
                    let id = format!("{w}-{i}");
                    let req = http::Request::post(format!("http://{addr}/api/load?resp=200"))
                        .header("x-test-id", &id)
                        .header("x-session-id", format!("w{w}"))
                        .body(http_body_util::Full::new(support::pattern(i, 300)))
                        .expect("request");
                    let Ok(resp) = client.request(req).await else {
                        break;
                    };
                    let status = resp.status();
                    if http_body_util::BodyExt::collect(resp.into_body())
                        .await
                        .is_err()
                    {
                        break;
                    }
                    assert_eq!(status, 200);
                    let n = {
                        let mut set = answered.lock().expect("lock");
                        set.insert(id);
                        set.len()
                    };
                    if n == 300 {
                        enough.notify_one();
                    }
                }
            })
        })
        .collect();
    enough.notified().await;
    let code = support::terminate(&mut child).await;
    for w in workers {
        w.await.expect("worker");
    }
    assert_eq!(code, Some(0), "record exits 0 after SIGTERM");
    let mut rest = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push(line);
    }
    let summary = rest.join("\n");
    assert!(summary.contains("0 dropped"), "summary: {summary}");

    let answered = answered.lock().expect("lock").clone();
    assert!(answered.len() >= 300);
    let store = Store::open(&capture).await.expect("capture opens");
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(
            &sqlx::SqlitePool::connect(&format!("sqlite://{}", capture.display()))
                .await
                .expect("pool"),
        )
        .await
        .expect("integrity check");
    assert_eq!(integrity, "ok");
    let run = store.run(None).await.expect("run");
    assert!(run.stopped_at_us.is_some(), "the run was closed cleanly");
    assert_eq!(run.dropped, 0);
    let stored: HashSet<String> = store
        .exchanges(run.id)
        .await
        .expect("read")
        .into_iter()
        .filter_map(|e| e.request_header("x-test-id").map(str::to_string))
        .collect();
    let missing: Vec<_> = answered.difference(&stored).collect();
    assert!(missing.is_empty(), "answered but not recorded: {missing:?}");
}

#[tokio::test]
async fn captures_list_and_show_report_runs_routes_and_sessions() {
    let upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url()).await;
    let client = support::client();
    for i in 0..3 {
        let path = format!("/api/rooms/{}/messages", 1000 + i);
        let session = format!("s{i}");
        send(
            &client,
            Method::GET,
            &proxy.url(&path),
            &[("x-session-id", &session)],
            Bytes::new(),
        )
        .await;
    }
    proxy.stop().await;
    let path = proxy.capture.to_str().expect("utf8 path");

    let (code, out, err) = output(&["captures", "list", path, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let runs: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(runs[0]["exchanges"], 3);
    assert_eq!(runs[0]["sessions"], 3);
    assert_eq!(runs[0]["upstream"], upstream.url());

    let (code, out, err) = output(&["captures", "show", path, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["routes"][0]["route"], "GET /api/rooms/{id}/messages");
    assert_eq!(doc["routes"][0]["exchanges"], 3);
    assert_eq!(doc["sessions"].as_array().map(Vec::len), Some(3));
    assert_eq!(doc["sessions"][0]["key_kind"], "header");

    let (code, out, _) = output(&["captures", "show", path]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("run 1: 3 exchanges in 3 sessions, 0 dropped"),
        "{out}"
    );
    assert!(out.contains("GET /api/rooms/{id}/messages"), "{out}");
}

#[tokio::test]
async fn bad_input_exits_2_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = output(&["record", "--upstream", "ftp://chat:21"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("expected an http:// or https:// URL"), "{err}");

    let (code, _, err) = output(&["record"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("--upstream"), "{err}");

    let missing = dir.path().join("missing.db");
    let (code, _, err) = output(&["captures", "list", missing.to_str().expect("utf8")]).await;
    assert_eq!(code, 2);
    assert!(err.contains("no such file"), "{err}");

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192]).expect("write junk");
    let (code, _, err) = output(&["captures", "show", junk.to_str().expect("utf8")]).await;
    assert_eq!(code, 2);
    assert!(err.contains("not a usable tapedeck capture"), "{err}");
    assert_eq!(
        std::fs::read(&junk).expect("read"),
        vec![b'x'; 8192],
        "the file is left as it was"
    );

    let (code, _, err) = output(&[
        "record",
        "--upstream",
        "http://127.0.0.1:9",
        "--max-body",
        "lots",
    ])
    .await;
    assert_eq!(code, 2);
    assert!(
        err.contains("--max-body") && err.contains("not a size"),
        "{err}"
    );

    let (code, _, _) = output(&["no-such-command"]).await;
    assert_eq!(code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_end_to_end_and_every_scripted_request_gets_its_expected_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("demo");
    let (code, out, err) = output(&["demo", "--out", out_dir.to_str().expect("utf8")]).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let script = out
        .lines()
        .find(|l| l.starts_with("script: "))
        .unwrap_or_else(|| panic!("no script line in\n{out}"));
    let numbers: Vec<u64> = script
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches(',').parse().ok())
        .collect();
    assert_eq!(numbers.len(), 2, "{script}");
    assert!(numbers[0] > 0 && numbers[0] == numbers[1], "{script}");

    let capture = out_dir.join("capture.db");
    assert!(
        out.contains(&capture.display().to_string()),
        "the capture path is named:\n{out}"
    );
    assert_capture_has_sessions(&capture, numbers[0]).await;

    // The passwords are redacted in the capture and handed to the replays in
    // a private credentials file; with it every world's login succeeds.
    let credentials = out_dir.join("credentials.toml");
    let mode = std::fs::metadata(&credentials)
        .expect("credentials.toml")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let credentials = tapedeck::replay::correlate::Credentials::load(&credentials).expect("loads");
    assert_eq!(credentials.users.len(), 20);
    let stored = std::fs::read(&capture).expect("capture bytes");
    for password in credentials.users.values() {
        assert!(
            !stored
                .windows(password.len())
                .any(|w| w == password.as_bytes()),
            "{password} is stored in clear"
        );
    }
    let report = tapedeck::report::load(&out_dir.join("replay.json")).expect("report");
    for s in &report.stages {
        assert!(
            s.status_counts.keys().all(|k| !k.starts_with('4')),
            "{}: {:?}",
            s.name,
            s.status_counts
        );
        assert_eq!(
            (s.unresolved_values, s.suspected_dedup),
            (0, 0),
            "{}",
            s.name
        );
        assert_eq!(
            (s.shape_mismatches, s.conflicting_values),
            (0, 0),
            "{}",
            s.name
        );
        // The demo's profile has route SLOs, and its effect confirms that
        // the backend stored every message sent.
        assert_eq!(
            s.slo.iter().filter(|r| r.routes_matched == Some(1)).count(),
            2,
            "{}: {:?}",
            s.name,
            s.slo
        );
        let [effect] = &s.effects[..] else {
            panic!("{}: one effect: {:?}", s.name, s.effects)
        };
        // The demo observes its own process (backend and replay).
        let rss = s
            .resources
            .iter()
            .find(|(k, _)| k.starts_with("process_resident_memory_bytes"));
        assert!(
            rss.is_some_and(|(_, r)| r.count >= 2 && r.min > 1e6),
            "{}: {:?}",
            s.name,
            s.resources
        );
        // 80 recorded sends per world, less any the backend refused.
        let sends = 80 * u64::from(s.multiplier);
        assert!(
            effect.pass && effect.expected <= sends && effect.expected + s.errors >= sends,
            "{}: {effect:?}",
            s.name
        );
    }
    assert!(
        !out.contains("deduplicated") && !out.contains("went out as recorded"),
        "{out}"
    );
}

async fn assert_capture_has_sessions(capture: &Path, requests: u64) {
    let store = Store::open(capture).await.expect("capture opens");
    let run = store.run(None).await.expect("run");
    assert_eq!(run.sessions, 20, "one session per demo user");
    assert_eq!(
        run.exchanges as u64, requests,
        "every scripted request is recorded"
    );
    assert_eq!(run.dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_exit_codes_name_bad_profiles_dead_targets_and_failed_slos() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("c.db");
    let session = vec![
        (0, 1, "GET", "/status/500".to_string(), 200),
        (5, 1, "GET", "/ok".to_string(), 200),
    ];
    crate::support::synthetic_capture(&capture, &[session]).await;
    let capture = capture.to_str().expect("utf8");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "version = 1\n[[stage]]\nname = \"big\"\nmultiplier = 0\n",
    )
    .expect("write");
    let (code, _, err) = output(&[
        "replay",
        capture,
        "--target",
        &upstream.url(),
        "--profile",
        bad.to_str().expect("utf8"),
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.toml") && err.contains("multiplier = 0") && err.contains("1 or more"),
        "{err}"
    );

    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (code, _, err) = output(&["replay", capture, "--target", &format!("http://{dead}")]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unreachable"), "{err}");

    let report = dir.path().join("reports/r.json");
    let report_arg = report.to_str().expect("utf8");
    let args = [
        "replay",
        capture,
        "--target",
        &upstream.url(),
        "--slo-error-rate",
        "0.01",
        "--report",
        report_arg,
    ];
    let (code, out, err) = output(&args).await;
    assert_eq!(code, 1, "an SLO failed: {out}{err}");
    assert!(out.contains("FAIL (error_rate)"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report written"))
            .expect("json");
    assert_eq!(json["verdict"], "fail");
    assert_eq!(json["stages"][0]["error_kinds"]["http_5xx"], 1);

    let (code, out, _) = output(&["report", "render", report_arg]).await;
    assert_eq!(code, 0);
    assert!(out.contains("http_5xx 1"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_exits_1_on_a_slower_candidate_and_0_on_the_same_run() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut reports = Vec::new();
    for (name, ms) in [("fast", 5), ("slow", 60)] {
        let capture = dir.path().join(format!("{name}.db"));
        let sessions: Vec<Vec<crate::support::Rec>> = (0..10u64)
            .map(|s| vec![(s * 20, 1, "GET", format!("/slow?ms={ms}"), 200)])
            .collect();
        crate::support::synthetic_capture(&capture, &sessions).await;
        let report = dir.path().join(format!("{name}.json"));
        let args = [
            "replay",
            capture.to_str().expect("utf8"),
            "--target",
            &upstream.url(),
            "--report",
            report.to_str().expect("utf8"),
        ];
        let (code, _, err) = output(&args).await;
        assert_eq!(code, 0, "{err}");
        reports.push(report);
    }
    let (fast, slow) = (
        reports[0].to_str().expect("utf8"),
        reports[1].to_str().expect("utf8"),
    );
    let json = dir.path().join("compare.json");
    let (code, out, err) = output(&[
        "compare",
        fast,
        slow,
        "--json",
        json.to_str().expect("utf8"),
    ])
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("REGRESSION") && out.contains("verdict: regression"),
        "{out}"
    );
    assert!(
        out.contains("thresholds alone decide"),
        "a short run has no noise estimate: {out}"
    );
    let diff: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("json");
    assert_eq!(diff["format"], "tapedeck-compare/1");
    assert_eq!(diff["regression"], true);

    let (code, out, _) = output(&["compare", fast, fast]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict: no regression"), "{out}");

    let (code, _, err) = output(&["compare", fast, slow, "--threshold", "p95=lots"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("--threshold"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_demo_backend_is_a_regression_and_the_reverse_an_improvement() {
    use tapedeck::demo::backend::{BackendConfig, DemoBackend};
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("c.db");
    // 20 users, 8 requests each, 800 ms apart: over 6 one-second windows.
    let sessions: Vec<Vec<crate::support::Rec>> = (0..20u64)
        .map(|s| {
            (0..8u64)
                .map(|i| (s * 40 + i * 800, 5, "GET", "/api/nothing".to_string(), 404))
                .collect()
        })
        .collect();
    crate::support::synthetic_capture(&capture, &sessions).await;
    let mut reports = Vec::new();
    for ms in [5, 25] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let config = BackendConfig {
            service_time: std::time::Duration::from_millis(ms),
            ..BackendConfig::default()
        };
        let backend = DemoBackend::start(listener, config, tapedeck::shutdown::Shutdown::new())
            .expect("backend");
        let report = dir.path().join(format!("{ms}ms.json"));
        let args = [
            "replay",
            capture.to_str().expect("utf8"),
            "--target",
            &backend.url(),
            "--report",
            report.to_str().expect("utf8"),
        ];
        let (code, out, err) = output(&args).await;
        assert_eq!(code, 0, "{out}{err}");
        backend.stop().await;
        reports.push(report.to_str().expect("utf8").to_string());
    }
    let (code, out, _) = output(&["compare", &reports[0], &reports[1]]).await;
    assert_eq!(code, 1, "25 ms after 5 ms is a regression:\n{out}");
    assert!(out.contains("REGRESSION"), "{out}");
    let (code, out, _) = output(&["compare", &reports[1], &reports[0]]).await;
    assert_eq!(code, 0, "5 ms after 25 ms is an improvement:\n{out}");
    assert!(
        out.contains("improvement") && out.contains("verdict: no regression"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_gives_each_recorded_user_one_live_token_in_first_seen_order() {
    let mut upstream = TestUpstream::start().await;
    let mut proxy = TestProxy::start(&upstream.url()).await;
    let client = support::client();
    for (user, token) in [("a", "tok-first"), ("b", "tok-second"), ("a", "tok-first")] {
        let auth = format!("Bearer {token}");
        let headers = [("authorization", auth.as_str()), ("x-test-id", user)];
        send(
            &client,
            Method::GET,
            &proxy.url("/api/me"),
            &headers,
            Bytes::new(),
        )
        .await;
    }
    proxy.stop().await;
    upstream.drain();
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.txt");
    std::fs::write(&tokens, "# staging tokens\nlive-1\nlive-2\n").expect("write");
    let report = dir.path().join("r.json");
    let args = [
        "replay",
        proxy.capture.to_str().expect("utf8"),
        "--target",
        &upstream.url(),
        "--token-file",
        tokens.to_str().expect("utf8"),
        "--multiplier",
        "2",
        "--report",
        report.to_str().expect("utf8"),
    ];
    let (code, out, err) = output(&args).await;
    assert_eq!(code, 0, "{out}{err}");
    let seen = upstream.drain();
    assert_eq!(seen.len(), 6);
    for s in &seen {
        let expected = if s.headers["x-test-id"] == "a" {
            "Bearer live-1"
        } else {
            "Bearer live-2"
        };
        assert_eq!(
            s.headers["authorization"], expected,
            "a user stays one user in every world"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_keeps_recording_and_stops_cleanly_when_its_stdout_is_gone() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("c.db");
    let (mut child, addr, lines) =
        support::record_process(&upstream.url(), capture.as_os_str()).await;
    // Whoever read the proxy's stdout went away.
    drop(lines);
    let (status, _, _) = send(
        &support::client(),
        Method::GET,
        &format!("http://{addr}/api/me"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(support::terminate(&mut child).await, Some(0));
    let store = Store::open(&capture).await.expect("capture");
    assert_eq!(store.run(None).await.expect("run").exchanges, 1);
}

#[tokio::test]
async fn completions_and_manual_pages_come_from_the_binarys_own_flags() {
    // bash loads the script and completes a command and a subcommand's
    // flag with it, as it would at a prompt.
    let (code, script, stderr) = output(&["completions", "bash"]).await;
    assert_eq!(code, 0, "{stderr}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tapedeck.bash");
    std::fs::write(&path, &script).expect("script");
    let complete = |words: &str, cword: usize, cur: &str, prev: &str| {
        let line = format!(
            "source {} && complete -p tapedeck >/dev/null && COMP_WORDS=({words}) && \
             COMP_CWORD={cword} && _tapedeck tapedeck {cur} {prev} && echo \"${{COMPREPLY[@]}}\"",
            path.display()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &line])
            .output()
            .expect("bash runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        complete("tapedeck rep", 1, "rep", "tapedeck"),
        "replay report"
    );
    assert_eq!(
        complete("tapedeck replay --no-t", 2, "--no-t", "replay"),
        "--no-traceparent"
    );
    let (code, zsh, _) = output(&["completions", "zsh"]).await;
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef tapedeck"), "{zsh:.80}");
    let (code, fish, _) = output(&["completions", "fish"]).await;
    assert_eq!(code, 0);
    assert!(fish.contains("complete -c tapedeck"), "{fish:.80}");
    let (code, _, stderr) = output(&["completions", "tcsh"]).await;
    assert_eq!(code, 2, "an unknown shell is a usage error");
    assert!(stderr.contains("possible values"), "{stderr}");

    // The top page lists the commands; --out-dir writes one per command.
    let (code, page, stderr) = output(&["man"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(page.contains(".TH tapedeck 1") && page.contains("tapedeck\\-replay(1)"));
    let pages = dir.path().join("man/man1");
    let (code, _, stderr) = output(&["man", "--out-dir", pages.to_str().expect("utf-8")]).await;
    assert_eq!(code, 0, "{stderr}");
    let replay = std::fs::read_to_string(pages.join("tapedeck-replay.1")).expect("replay page");
    assert!(replay.contains(".TH tapedeck-replay 1") && replay.contains("\\-\\-no\\-traceparent"));
    assert!(pages.join("tapedeck-captures-list.1").exists());
}
