//! Beyond one machine: replay shards started together, merged exactly.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tapedeck::demo::backend::DemoBackend;
use tapedeck::demo::script::Population;
use tapedeck::report::Report;
use tapedeck::report::histogram::LatencyHistogram;
use tapedeck::report::model::Percentiles;

use crate::support::{demo_backend, demo_stats, output, record_population};

/// Six demo users recorded through the proxy.
async fn record(capture: &Path) {
    let upstream = demo_backend().await;
    let population = Population {
        users: 6,
        messages_per_user: 2,
        ramp: Duration::from_millis(100),
        think: (Duration::from_millis(5), Duration::from_millis(30)),
        seed: 5,
    };
    record_population(&upstream, capture, population, false).await;
    upstream.stop().await;
}

fn load(path: &Path) -> Report {
    let text = std::fs::read_to_string(path).expect("report written");
    serde_json::from_str(&text).expect("report json")
}

/// `replay` of `capture` at 3x with one seed, plus `extra` arguments.
async fn replay(capture: &Path, target: &DemoBackend, report: &Path, extra: &[&str]) {
    let url = target.url();
    let mut args = vec![
        "replay",
        capture.to_str().expect("utf8"),
        "--target",
        &url,
        "--multiplier",
        "3",
        "--speed",
        "4",
        "--seed",
        "5",
        "--report",
        report.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = output(&args).await;
    assert_eq!(code, 0, "{args:?}\nstdout:\n{out}\nstderr:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_started_together_send_one_runs_requests_and_merge_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture.db");
    record(&capture).await;

    // One unsharded run: what the backend must see in all.
    let whole_target = demo_backend().await;
    let whole_path = dir.path().join("whole.json");
    replay(&capture, &whole_target, &whole_path, &[]).await;
    let whole = load(&whole_path);
    let whole_seen = demo_stats(&whole_target).await;

    // Three shards as three processes, one start time for all.
    let target = demo_backend().await;
    let start_at = SystemTime::now() + Duration::from_secs(3);
    let stamp = humantime::format_rfc3339_millis(start_at).to_string();
    let paths: Vec<_> = (0..3)
        .map(|k| dir.path().join(format!("shard-{k}.json")))
        .collect();
    let shard_args: Vec<[String; 4]> = (0..3)
        .map(|k| {
            [
                "--shard".to_string(),
                format!("{k}/3"),
                "--start-at".to_string(),
                stamp.clone(),
            ]
        })
        .collect();
    let runs = paths.iter().zip(&shard_args).map(|(path, args)| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let capture = capture.clone();
        let target = &target;
        async move { replay(&capture, target, path, &args).await }
    });
    futures_util::future::join_all(runs).await;
    let seen = demo_stats(&target).await;
    assert_eq!(
        (
            seen.requests,
            seen.logins,
            seen.messages,
            seen.sockets,
            seen.reads
        ),
        (
            whole_seen.requests,
            whole_seen.logins,
            whole_seen.messages,
            whole_seen.sockets,
            whole_seen.reads
        ),
        "the shards together sent exactly one run's requests"
    );

    let shards: Vec<Report> = paths.iter().map(|p| load(p)).collect();
    let start_us = start_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("epoch")
        .as_micros() as i64;
    for (k, s) in shards.iter().enumerate() {
        let shard = s.shard.expect("the shard is in its report");
        assert_eq!((shard.index, shard.count), (k as u32, 3));
        assert!(s.stages[0].vus > 0, "shard {k} got VUs");
        // None began before the agreed time (the clock's millisecond
        // rounding aside).
        assert!(s.stages[0].started_at_us >= start_us - 1_000, "shard {k}");
    }

    let merged_path = dir.path().join("merged.json");
    let mut args = vec!["report", "merge"];
    args.extend(paths.iter().map(|p| p.to_str().expect("utf8")));
    args.extend(["-o", merged_path.to_str().expect("utf8")]);
    let (code, out, err) = output(&args).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let merged = load(&merged_path);
    let m = &merged.stages[0];
    let sum = |f: fn(&tapedeck::report::StageReport) -> u64| -> u64 {
        shards.iter().map(|s| f(&s.stages[0])).sum()
    };
    assert_eq!(m.requests, sum(|s| s.requests));
    assert_eq!(m.vus, sum(|s| s.vus));
    assert_eq!(m.errors, sum(|s| s.errors));
    assert_eq!(
        (m.requests, m.vus),
        (whole.stages[0].requests, whole.stages[0].vus)
    );
    // Percentiles of the merged report are those of one histogram holding
    // every shard's samples.
    let mut all = LatencyHistogram::new();
    for s in &shards {
        all.add(&LatencyHistogram::decode(&s.stages[0].hdr).expect("hdr"));
    }
    assert_eq!(all.len(), m.requests);
    assert_eq!(m.latency_ms, Percentiles::of(&all));
    let route_requests: u64 = m.routes.iter().map(|r| r.requests).sum();
    assert_eq!(route_requests, m.requests);

    // A report of another capture is refused, with a reason.
    let other = dir.path().join("other.db");
    record(&other).await;
    let other_report = dir.path().join("other.json");
    replay(&other, &target, &other_report, &[]).await;
    let (code, _, err) = output(&[
        "report",
        "merge",
        paths[0].to_str().expect("utf8"),
        other_report.to_str().expect("utf8"),
        "-o",
        dir.path().join("bad.json").to_str().expect("utf8"),
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("capture") && err.contains("merge only the shard reports of one replay"),
        "{err}"
    );
    assert!(!dir.path().join("bad.json").exists());
}
